"""Continue-a-run backtest cells: construction, the paper and bayes-curve methods, the CLI.

The family is simulated from the whole-curve model (tests/test_curve_fit.py):
one cosine run per size, 40 checkpoints from 5% to 100% of a 2e10-token
schedule. The cell's cut and target are checked against pandas selections
written out here, not against the protocol's code.
"""

import numpy as np
import pandas as pd
import pytest
from test_curve_fit import HORIZON, simulate_curves

from hiscale.backtesting.methods import get_method
from hiscale.backtesting.paper import fit_paper
from hiscale.backtesting.protocol import CONTINUE_P, make_cells
from hiscale.backtesting.runner import backtest
from hiscale.cli import main
from hiscale.data.curves import load_curves
from hiscale.testing import TEST_SAMPLER


@pytest.fixture(scope="module")
def frame():
    return simulate_curves(seed=2)[0]


@pytest.fixture(scope="module")
def curves(frame):
    return load_curves(frame)


def test_cells_cut_every_run_at_p_of_its_horizon_and_score_the_final_checkpoint(curves, frame):
    cells = make_cells(curves, target="continue", grid="paper", min_tokens=0)
    sizes = np.sort(frame["params"].unique())
    assert [(c.k, c.p) for c in cells] == [(k, p) for k in (1, 2, 3) for p in CONTINUE_P]
    for c in cells:
        assert c.kind == "continue" and c.note == ""
        tr = c.train.frame
        # every run (the held one too) keeps exactly its rows up to p x horizon
        want = frame[frame["tokens"] <= c.p * HORIZON]
        assert len(tr) == len(want) > 0
        assert tr["tokens"].max() <= c.p * HORIZON
        held = tr[tr["params"] == sizes[c.k - 1]]
        assert len(held) > 0 and held["tokens"].max() <= c.p * HORIZON
        # the target: the held size's final checkpoint, never a training row
        t = c.target.frame
        run = frame[frame["params"] == sizes[c.k - 1]]
        last = run[run["tokens"] == run["tokens"].max()]
        assert t["run"].tolist() == last["run"].tolist()
        assert t["tokens"].tolist() == last["tokens"].tolist() == [HORIZON]
        assert t["loss"].tolist() == last["loss"].tolist()
        assert not set(zip(t["run"], t["tokens"], strict=True)) & set(
            zip(tr["run"], tr["tokens"], strict=True)
        )
    assert [c.p for c in make_cells(curves, target="continue", grid="quick")] == [0.3] * 3
    # explicit (k, p) pairs (what a worker rebuilds) and bare fractions
    one = make_cells(curves, target="continue", grid=[(2, 0.3)], min_tokens=0)
    assert [(c.k, c.p) for c in one] == [(2, 0.3)]
    assert len(make_cells(curves, target="continue", grid=[0.2], min_tokens=0)) == 3


def test_unknown_horizon_uses_the_last_checkpoint_and_says_so(frame):
    f = frame.copy()
    small = f["params"] == f["params"].min()
    f.loc[small, "run_tokens"] = np.nan
    # a run stopped at half its schedule cannot be scored at p = 0.5
    mid = f["params"] == np.sort(f["params"].unique())[1]
    f = f[~mid | (f["tokens"] <= 0.5 * HORIZON)]
    cells = make_cells(load_curves(f), target="continue", grid=[0.5], min_tokens=0)
    run_small = f.loc[small, "run"].iloc[0]
    for c in cells:
        assert run_small in c.note and "last checkpoint" in c.note
        tr = c.train.frame
        cut_small = 0.5 * f.loc[small, "tokens"].max()
        assert tr.loc[tr["run"] == run_small, "tokens"].max() <= cut_small
    assert len(cells[1].target.frame) == 0 and "ends at or before 0.5 x horizon" in cells[1].note
    assert len(cells[0].target.frame) == 1 and len(cells[2].target.frame) == 1


def test_bad_continue_grid_is_a_one_line_error(curves):
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\), got 1.0"):
        make_cells(curves, target="continue", grid=[1.0], min_tokens=0)
    with pytest.raises(ValueError, match=r"k must be in 1..3, got 4"):
        make_cells(curves, target="continue", grid=[(4, 0.3)], min_tokens=0)


def test_paper_and_bayes_curve_through_the_backtest(curves, frame, tmp_path):
    out = tmp_path / "cont.csv"
    res = backtest(
        curves,
        methods=["paper", "bayes-curve"],
        grid=[(1, 0.3), (3, 0.3)],
        target="continue",
        min_tokens=0,
        method_options={"bayes-curve": {"sampler": TEST_SAMPLER}},
        out=out,
    )
    assert (res["status"] == "ok").all(), res["status"].tolist()
    assert "bayes-curve" in (tmp_path / "cont.csv.settings.json").read_text()
    assert res["target"].eq("continue").all() and len(res) == 4
    sizes = np.sort(frame["params"].unique())
    for _, r in res.iterrows():
        last = frame[(frame["params"] == sizes[r["k"] - 1]) & (frame["tokens"] == HORIZON)]
        assert r["actual"] == pytest.approx(float(last["loss"].iloc[0]))
        assert r["are_pct"] == pytest.approx(abs(r["predicted"] - r["actual"]) / r["actual"] * 100)
    # paper: the least-squares fit of the family's rows up to 0.3 x horizon
    tr = frame[frame["tokens"] <= 0.3 * HORIZON]
    want = fit_paper(tr["params"], tr["tokens"], tr["loss"]).predict([sizes[-1]], [HORIZON])
    got = res[(res["method"] == "paper") & (res["k"] == 3)]["predicted"].iloc[0]
    assert got == pytest.approx(float(np.asarray(want)[0]), rel=1e-9)
    bc = res[res["method"] == "bayes-curve"]
    assert bc["prior"].eq("flat").all() and bc["covered80"].notna().all()
    assert (bc["lower80"] < bc["predicted"]).all() and (bc["predicted"] < bc["upper80"]).all()
    # the held run's own early rows pin its offset: the continuation is close
    assert (bc["are_pct"] < 5).all()


def test_bayes_curve_predicts_the_target_sizes_runs_on_size_cells(frame):
    # the size cell: fit sizes 1e8 and 3e8 (every row), predict the 1e9 run's last 30%
    # under its schedule; checked row by row against the simulation's true mean
    fr, mu = simulate_curves(seed=2)
    curves = load_curves(fr)
    m = get_method("bayes-curve", sampler=TEST_SAMPLER)
    cell = make_cells(curves, target="last30", grid=[(2, 1.0)], min_tokens=0)[0]
    assert cell.kind == "size"
    pred = m(cell, m.prepare(curves, "simc"), seed=0)
    t = cell.target.frame
    truth = fr.assign(mu=mu).merge(t[["run", "tokens"]], on=["run", "tokens"], how="right")
    want = np.exp(truth["mu"].to_numpy())
    assert pred.draws.shape[1] == len(t) >= 5
    np.testing.assert_allclose(pred.median, want, rtol=0.03)
    # the draws follow the rows: the annealing drop along the run is in the medians
    assert np.corrcoef(pred.median, want)[0, 1] > 0.95
    lo, hi = np.quantile(pred.draws, [0.1, 0.9], axis=0)
    assert np.mean((t["loss"].to_numpy() >= lo) & (t["loss"].to_numpy() <= hi)) > 0.5


def test_bayes_curve_without_a_schedule_scores_size_cells_with_the_end_of_run_model(frame):
    """What `hiscale predict --rows all` would give: the end-of-run fit, and the row says so."""
    no_sched = frame.drop(columns=["schedule", "run_tokens"])
    kw = dict(grid=[(2, 1.0)], target="final", min_tokens=0)
    with pytest.warns(UserWarning, match="needs each run's learning-rate schedule"):
        res = backtest(
            load_curves(no_sched),
            methods=["bayes-curve"],
            method_options={"bayes-curve": {"sampler": TEST_SAMPLER}},
            **kw,
        )
    flat = backtest(
        load_curves(no_sched),
        methods=["bayes-flat"],
        method_options={"bayes-flat": {"sampler": TEST_SAMPLER}},
        **kw,
    )
    assert res["status"].eq("ok").all()
    assert res["note"].str.startswith("end-of-run model: ").all()
    assert res["note"].str.contains("needs each run's learning-rate schedule").all()
    # the same fit as the end-of-run method with the same flat prior, seed and sampler
    np.testing.assert_array_equal(res["predicted"], flat["predicted"])
    assert flat["note"].eq("").all()


def test_bayes_curve_without_a_schedule_fails_continue_cells_with_the_reason(frame):
    no_sched = frame.drop(columns=["schedule", "run_tokens"])
    with pytest.warns(UserWarning, match="needs each run's learning-rate schedule"):
        res = backtest(
            load_curves(no_sched),
            methods=["bayes-curve"],
            grid=[(2, 0.3)],
            target="continue",
            min_tokens=0,
            method_options={"bayes-curve": {"sampler": TEST_SAMPLER}},
        )
    assert res["status"].str.contains("fell back to the end-of-run model").all()


def test_cli_backtest_target_continue(frame, tmp_path, capsys):
    path = tmp_path / "sim.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "cont.csv"
    code = main(["backtest", str(path), "--family", "simc", "--target", "continue",
                 "--grid", "quick", "--min-tokens", "0", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out)
    assert rows["k"].tolist() == [1, 2, 3] and rows["p"].eq(0.3).all()
    assert rows["status"].eq("ok").all() and rows["target"].eq("continue").all()
    assert "target=continue" in capsys.readouterr().out


def test_bayes_curve_reuses_the_fit_of_cells_sharing_their_rows(curves):
    """Cells of one p share their training rows: the second reuses the fit, same numbers."""
    cells = make_cells(curves, target="continue", grid=[(1, 0.2), (3, 0.2)], min_tokens=0)
    m = get_method("bayes-curve", sampler=TEST_SAMPLER)
    state = m.prepare(curves, "simc")
    m(cells[0], state, seed=4)
    reused = m(cells[1], state, seed=4)
    assert len(m._fits) == 1
    fresh = get_method("bayes-curve", sampler=TEST_SAMPLER)(cells[1], state, seed=4)
    np.testing.assert_array_equal(reused.draws, fresh.draws)
    assert reused.draws.shape == (TEST_SAMPLER.num_chains * TEST_SAMPLER.num_samples, 1)


def test_curve_law_populations_leave_out_families_without_schedules(frame):
    from hiscale.population import curve_law_families

    other = frame.assign(family="nosched", run=frame["run"] + "-x").drop(
        columns=["schedule", "run_tokens"]
    )
    both = load_curves(pd.concat([frame, other], ignore_index=True))
    why = curve_law_families(both, ["simc", "nosched"], "h-term")
    assert list(why) == ["nosched"]
    assert "needs every run's learning-rate schedule: unknown for 3 of 3 runs" in why["nosched"]
    # an end-of-run law needs no schedule
    assert curve_law_families(both, ["simc", "nosched"], "chinchilla") == {}
