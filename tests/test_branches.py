"""Branch runs joined to their roots, and continue-a-run cells that predict them.

A small warmup-stable-decay study written out here: per size a constant-LR
root run ``r-N`` (family ``src-const``, 2e10 tokens) and two cooldown branches
(family ``src-wsd``) that start from it at 1.2e10 and 1.6e10 tokens and decay
linearly to 0 by 1.5e10 and 2e10 tokens; a branch holds only its rows after
its branch point (the corpus convention). One more branch ``c-N`` branches off
the second branch (a chain). The cells' rows are checked against pandas
selections written out here, not against the protocol's code.
"""

import numpy as np
import pandas as pd
import pytest

from hiscale.backtesting.methods import get_method
from hiscale.backtesting.paper import fit_paper
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import backtest
from hiscale.data.branches import attach_prefixes, branch_chain
from hiscale.data.curves import CurvesError, load_curves
from hiscale.data.schedule import lr_multiplier, schedule_from_runs_extra
from hiscale.infer.settings import FitOptions
from hiscale.testing import TEST_SAMPLER

TPS = 1e5  # tokens per step
SIZES = (1e8, 3e8, 1e9)


def _extra_rows():
    rows = []
    for n in SIZES:
        base = dict(tokens_per_step=TPS, warmup_steps=1000, warmup_shape="linear",
                    warmup_init_factor=0.0, final_lr_factor=0.0)  # fmt: skip
        rows.append(dict(run=f"r-{n:g}", prefix_run=np.nan, branch_step=np.nan,
                         total_steps=2e5, decay_shape="none", decay_start_step=np.nan,
                         **base))  # fmt: skip
        rows.append(dict(run=f"b1-{n:g}", prefix_run=f"r-{n:g}", branch_step=1.2e5,
                         total_steps=1.5e5, decay_shape="linear", decay_start_step=1.2e5,
                         **base))  # fmt: skip
        rows.append(dict(run=f"b2-{n:g}", prefix_run=f"r-{n:g}", branch_step=1.6e5,
                         total_steps=2e5, decay_shape="linear", decay_start_step=1.6e5,
                         **base))  # fmt: skip
        # a branch of a branch: leaves b2 at 1.8e10 (still constant there), decays to 2.4e10
        rows.append(dict(run=f"c-{n:g}", prefix_run=f"b2-{n:g}", branch_step=1.8e5,
                         total_steps=2.4e5, decay_shape="linear", decay_start_step=1.8e5,
                         **base))  # fmt: skip
    return pd.DataFrame(rows)


def _loss(n, d, h, rng):
    return (1.7 + (n / 1e8) ** -0.3 + 0.8 * (d / 1e9) ** -0.3 - 0.08 * (1 - h)) * np.exp(
        0.002 * rng.standard_normal(len(d))
    )


@pytest.fixture(scope="module")
def study():
    rx = _extra_rows()
    rng = np.random.default_rng(5)
    rows = []
    for r in rx.to_dict("records"):
        sched = schedule_from_runs_extra(r).schedule
        n = float(r["run"].split("-")[1])
        start = 0.02 * sched.horizon
        if isinstance(r["prefix_run"], str):
            start = r["branch_step"] * TPS * 1.02
        d = np.geomspace(start, sched.horizon, 40 if start < 1e9 else 8)
        fam = "src-const" if r["run"].startswith("r-") else "src-wsd"
        rows.append(pd.DataFrame({"family": fam, "run": r["run"], "params": n, "tokens": d,
                                  "loss": _loss(n, d, lr_multiplier(sched, d), rng),
                                  "run_tokens": sched.horizon}))  # fmt: skip
    return load_curves(pd.concat(rows, ignore_index=True)), rx


def test_branch_chain_follows_prefixes_to_the_root(study):
    _, rx = study
    assert branch_chain("r-1e+08", rx) == []
    assert branch_chain("b1-1e+08", rx) == [("r-1e+08", 1.2e10)]
    assert branch_chain("c-1e+08", rx) == [("b2-1e+08", 1.8e10), ("r-1e+08", 1.6e10)]
    loop = pd.DataFrame({"run": ["a", "b"], "prefix_run": ["b", "a"], "branch_step": [1, 1],
                         "tokens_per_step": [1, 1]})  # fmt: skip
    with pytest.raises(CurvesError, match="loops"):
        branch_chain("a", loop)
    broken = rx.assign(branch_step=np.nan)
    with pytest.raises(CurvesError, match=r"column 'branch_step': run 'b1-1e\+08'"):
        branch_chain("b1-1e+08", broken)
    with pytest.raises(CurvesError, match="columns"):
        branch_chain("a", rx.drop(columns=["prefix_run"]))


def test_attach_prefixes_adds_each_root_once_and_logs_it(study):
    curves, rx = study
    wsd = curves.family("src-wsd")
    a = attach_prefixes(wsd, rx, source=curves)
    f, src = a.frame, curves.frame
    roots = src[src["family"] == "src-const"]
    # every root's rows once, relabelled to the branches' family, nothing else added
    assert len(f) == len(wsd) + len(roots)
    added = f[f["prefix_only"]]
    assert sorted(added["run"].unique()) == sorted(roots["run"].unique())
    assert added["family"].eq("src-wsd").all() and added["branch_diverge"].eq(np.inf).all()
    np.testing.assert_array_equal(
        added.sort_values(["run", "tokens"])["loss"].to_numpy(),
        roots.sort_values(["run", "tokens"])["loss"].to_numpy(),
    )
    own = f[~f["prefix_only"]].groupby("run")[["branch_root", "branch_diverge"]].first()
    assert own.loc["b1-3e+08"].tolist() == ["r-3e+08", 1.2e10]
    assert own.loc["c-3e+08"].tolist() == ["r-3e+08", 1.6e10]  # the chain's earliest branch
    rec = a.log[-1]
    assert rec.step == "attach_prefixes" and rec.removed == 0
    assert "added 120 rows of 3 root runs" in rec.reason and "9 branch runs" in rec.reason
    with pytest.raises(CurvesError, match="already present"):
        attach_prefixes(a, rx, source=curves)


def test_a_branch_whose_root_has_no_early_rows_stays_an_ordinary_run(study):
    curves, rx = study
    late = curves.frame[~((curves.frame["run"] == "r-1e+08") & (curves.frame["tokens"] < 1.3e10))]
    a = attach_prefixes(load_curves(late).family("src-wsd"), rx, source=load_curves(late))
    f = a.frame
    assert f.loc[f["run"] == "b1-1e+08", "branch_root"].eq("").all()
    assert "not joined: 1" in a.log[-1].reason  # b2 and c diverge later, at 1.6e10
    assert "b1-1e+08 (root r-1e+08: no rows at or before 1.2e+10 tokens)" in a.log[-1].reason


def test_continue_cells_train_on_the_roots_once_cut_below_every_members_p(study):
    curves, rx = study
    a = attach_prefixes(curves.family("src-wsd"), rx, source=curves)
    cells = make_cells(a, target="continue", grid=[0.3], min_tokens=0)
    assert [c.k for c in cells] == [1, 2, 3]
    src = curves.frame
    # shortest member horizon 1.5e10 (b1): every root is cut at 0.3 x 1.5e10, once
    want = src[(src["family"] == "src-const") & (src["tokens"] <= 0.3 * 1.5e10)]
    for c in cells:
        t = c.train.frame
        assert sorted(t["run"].unique()) == sorted(want["run"].unique())
        assert len(t) == len(want) and not t.duplicated(["run", "tokens"]).any()
        n = SIZES[c.k - 1]
        assert sorted(c.target.frame["run"]) == [f"b1-{n:g}", f"b2-{n:g}", f"c-{n:g}"]
        assert dict(c.continue_from) == {f"{b}-{n:g}": f"r-{n:g}" for b in ("b1", "b2", "c")}
        assert "3 branch run(s) continued from their root's rows" in c.note
        assert "2 target(s) whose root is shared see less than 0.3" in c.note
        assert "(lowest 0.19)" in c.note  # 4.5e9 / 2.4e10
    # at p = 0.9 the branch point (1.2e10) cuts before 0.9 x 1.5e10
    c = make_cells(a, target="continue", grid=[(1, 0.9)], min_tokens=0)[0]
    assert c.train.frame["tokens"].max() <= 1.2e10
    assert (
        c.train.frame["tokens"].max()
        == src.loc[(src["run"] == "r-1e+08") & (src["tokens"] <= 1.2e10), "tokens"].max()
    )


def test_bayes_curve_continues_the_root_under_each_branchs_schedule(study):
    curves, rx = study
    a = attach_prefixes(curves.family("src-wsd"), rx, source=curves)
    cell = make_cells(a, target="continue", grid=[(3, 0.3)], min_tokens=0)[0]
    m = get_method("bayes-curve", sampler=TEST_SAMPLER, runs_extra=rx)
    pred = m(cell, m.prepare(a, "src-wsd"), seed=3)
    (f,) = m._fits.values()
    assert set(f.data["run"]) == {f"r-{n:g}" for n in SIZES}
    t = cell.target.frame
    for j, (run, tokens) in enumerate(zip(t["run"], t["tokens"], strict=True)):
        sched = schedule_from_runs_extra(rx.set_index("run").loc[run].to_dict()).schedule
        _, want = f.predict_run("r-1e+09", [tokens], seed=3 + j, return_draws=True,
                                schedule=sched)  # fmt: skip
        np.testing.assert_array_equal(pred.draws[:, j], want[:, 0])
    # the cooldown bonus is in the prediction: the branch decayed to 0 ends lower than
    # the root continued at constant LR to the same token count
    _, const = f.predict_run("r-1e+09", [t["tokens"].iloc[0]], seed=3, return_draws=True)
    assert np.median(pred.draws[:, 0]) < np.median(const[:, 0])


def test_backtest_joins_branches_for_continue_targets_only(study):
    curves, rx = study
    res = backtest(curves, families=["src-wsd"], methods=["paper"], grid=[(2, 0.3)],
                   target="continue", min_tokens=0, runs_extra=rx)  # fmt: skip
    assert res["status"].eq("ok").all() and len(res) == 1
    src = curves.frame
    tr = src[(src["family"] == "src-const") & (src["tokens"] <= 0.3 * 1.5e10)]
    fp = fit_paper(tr["params"], tr["tokens"], tr["loss"])
    held = src[(src["family"] == "src-wsd") & (src["params"] == 3e8)]
    final = held[held["tokens"] == held.groupby("run")["tokens"].transform("max")]
    want = np.asarray(fp.predict(final["params"], final["tokens"]), float)
    # the row's prediction is the mean over the cell's target rows (3 branches); two
    # runs of one least-squares fit agree to the optimiser's tolerance, not to the last
    # digit (3e-9 apart on one AMD EPYC: the floating-point path differs between CPUs)
    assert res["predicted"].iloc[0] == pytest.approx(float(np.mean(want)), rel=1e-6)
    # without runs_extra the branches have no rows before 0.3 x horizon: nothing to score
    bare = backtest(curves, families=["src-wsd"], methods=["paper"], grid=[(2, 0.3)],
                    target="continue", min_tokens=0)  # fmt: skip
    assert bare["status"].iloc[0] != "ok"


def test_cli_backtest_continue_with_runs_extra(study, tmp_path):
    from hiscale.cli import main

    curves, rx = study
    data, extra = tmp_path / "c.csv", tmp_path / "rx.csv"
    curves.frame.to_csv(data, index=False)
    rx.to_csv(extra, index=False)
    out = tmp_path / "cont.csv"
    code = main(["backtest", str(data), "--family", "src-wsd", "--target", "continue",
                 "--grid", "quick", "--min-tokens", "0", "--runs-extra", str(extra),
                 "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out)
    assert rows["status"].eq("ok").all() and rows["k"].tolist() == [1, 2, 3]
    assert rows["note"].str.contains("continued from their root's rows").all()
    assert '"branches"' in (tmp_path / "cont.csv.settings.json").read_text()


def test_a_root_left_only_with_warmup_rows_fails_its_cell_saying_why(study):
    curves, rx = study
    f = curves.frame
    r = f["run"] == "r-1e+08"
    warm = f[r].iloc[:2].assign(tokens=[5e7, 9e7])  # inside the 1e8-token warmup
    frame = pd.concat([f[~r | (f["tokens"] > 6e9)], warm], ignore_index=True)
    c = load_curves(frame)
    a = attach_prefixes(c.family("src-wsd"), rx, source=c)
    cell = make_cells(a, target="continue", grid=[(1, 0.3)], min_tokens=0)[0]
    assert set(cell.train.frame.loc[cell.train.frame["run"] == "r-1e+08", "tokens"]) == {5e7, 9e7}
    m = get_method("bayes-curve", sampler=TEST_SAMPLER, runs_extra=rx)
    with pytest.raises(ValueError, match=r"run 'r-1e\+08' has no row left .*warmup"):
        m(cell, m.prepare(a, "src-wsd"), seed=0)


def test_curve_law_population_takes_schedules_from_runs_extra(tmp_path):
    """Families whose schedule only runs_extra gives can feed an h-term population."""
    import json

    from test_curve_fit import HORIZON, simulate_curves

    from hiscale.cli import main
    from hiscale.population import build_prior, curve_law_families

    parts = []
    for name, seed in (("fa", 2), ("fb", 3)):
        f = simulate_curves(seed=seed)[0].drop(columns=["schedule", "run_tokens"])
        parts.append(f.assign(family=name, run=f["run"].str.replace("simc", name)))
    frame = pd.concat(parts, ignore_index=True)
    # the simulation's schedule: 100M-token warm-up, cosine to 10% at 2e10 tokens
    rx = pd.DataFrame({"run": sorted(frame["run"].unique()), "tokens_per_step": 1e6,
                       "total_steps": HORIZON / 1e6, "warmup_steps": 100, "decay_shape": "cosine",
                       "final_lr_factor": 0.1})  # fmt: skip
    curves = load_curves(frame)
    why = curve_law_families(curves, ["fa", "fb"], "h-term")
    assert set(why) == {"fa", "fb"} and "unknown for 3 of 3 runs" in why["fa"]
    assert curve_law_families(curves, ["fa", "fb"], "h-term", rx) == {}
    with pytest.raises(ValueError, match="need >= 2 families"):
        build_prior(curves, law="h-term", sampler=TEST_SAMPLER, use_cache=False)
    # a final-only family has no curve: left out up front, with the reason
    last = frame[frame["tokens"] == HORIZON].assign(family="fc")
    last = last.assign(run=last["run"].str.replace("fa", "fc").str.replace("fb", "fc2"))
    both = load_curves(pd.concat([frame, last], ignore_index=True))
    rx_c = pd.concat(
        [rx, rx.assign(run=rx["run"].str.replace("fa", "fc").str.replace("fb", "fc2"))]
    )
    assert "every run has one checkpoint" in curve_law_families(both, ["fc"], "h-term", rx_c)["fc"]
    # a step-1 fit that falls back to the end-of-run model cannot feed the population
    from hiscale.population import StepOneLawError, summarise_family

    with pytest.warns(UserWarning), pytest.raises(StepOneLawError, match="used law 'chinchilla'"):
        summarise_family(curves, "fa", law="h-term", sampler=TEST_SAMPLER, use_cache=False,
                         options=FitOptions(rows="all", residual="ar1"))  # fmt: skip
    data, extra, out = tmp_path / "c.csv", tmp_path / "rx.csv", tmp_path / "pop"
    frame.to_csv(data, index=False)
    rx.to_csv(extra, index=False)
    code = main(["prior", "build", str(data), "--law", "h-term", "--runs-extra", str(extra),
                 "--out", str(out), "--num-warmup", "200", "--num-samples", "300",
                 "--quiet", "--no-cache"])  # fmt: skip
    assert code == 0
    meta = json.loads((out / "prior.json").read_text())["meta"]
    assert set(meta["families_used"]) == {"fa", "fb"} and meta["families_left_out"] == {}
    assert meta["runs_extra"] and "--runs-extra" in meta["rebuild_command"]
