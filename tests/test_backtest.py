"""Backtest runner, result table, summaries and the ``hiscale backtest`` command."""

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from synthetic import make_frame

from hiscale.backtesting.methods import (
    METHODS,
    BayesMethod,
    CellPrediction,
    PaperMethod,
    get_method,
)
from hiscale.backtesting.paper import fit_paper_single
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import (
    COLUMNS,
    backtest,
    method_summary,
    summary_table,
    usable_families,
)
from hiscale.cli import main
from hiscale.data.curves import CurvesError, load_curves
from hiscale.priors.prior import Prior, PriorWarning, flat_prior, load_prior, prior_overlap


@pytest.fixture(scope="module")
def synth():
    """Three synthetic families: noiseless (5 sizes), noisy (4 sizes), unusable (2 sizes)."""
    frame = pd.concat(
        [
            make_frame("clean"),
            make_frame("noisy", sizes=(2e7, 6e7, 2e8, 6e8), noise=0.005, seed=1),
            make_frame("tiny", sizes=(1e7, 1e8)),
        ],
        ignore_index=True,
    )
    return load_curves(frame)


class ConstMethod:
    """A test method: predicts a constant, with optional intervals or failures."""

    name = "const"

    def __init__(self, value=3.0, *, fail=None, status="ok", width=None):
        self.value, self.fail, self.status, self.width = value, fail, status, width

    def prepare(self, corpus, family):
        return {"family": family}

    def __call__(self, cell, state, *, seed):
        assert state == {"family": cell.family}
        if self.fail is not None:
            raise self.fail
        n = len(cell.target.frame)
        med = np.full(n, self.value)
        intervals = {}
        if self.width is not None:
            intervals = {
                0.8: (med - self.width, med + self.width),
                0.5: (med - self.width / 4, med + self.width / 4),
            }
        return CellPrediction(
            median=med,
            intervals=intervals,
            pit=np.full(n, 0.25) if self.width else None,
            diagnostics={"rhat_max": 1.01, "ess_min": 400.0, "divergences": 0, "flagged": False},
            n_fit_rows=7,
            status=self.status,
        )


# --- result table ---------------------------------------------------------------------


def test_columns_and_one_row_per_cell(synth):
    res = backtest(synth, families=["clean"], grid="quick")
    cells = make_cells(synth.family("clean"), grid="quick")
    assert list(res.columns) == list(COLUMNS)
    assert len(res) == len(cells) == 9
    assert list(zip(res["k"], res["p"], strict=True)) == [(c.k, c.p) for c in cells]
    assert (res["status"] == "ok").all()
    assert (res["method"] == "paper").all() and (res["family"] == "clean").all()
    assert (res["direction"] == "up").all() and (res["target"] == "last30").all()
    assert (res["target_params"] == 1e9).all() and (res["target_run"] == "clean-4").all()
    assert (res["n_target_rows"] == 1).all()  # only 2e11 is >= 0.7 x 2e11 (next is 1.3e11)
    assert (res["n_fit_rows"] == res["n_train_rows"]).all()
    # noiseless data from the paper's law: exact from 3 sizes on; with 2 sizes
    # (e, a, alpha) are not identified by two model sizes, so only roughly right
    identified = res["k"] >= 3
    assert res.loc[identified, "are_pct"].max() < 1e-6
    assert res.loc[~identified, "are_pct"].max() < 5
    assert res[["lower80", "upper80", "covered80", "pit_mean", "rhat_max"]].isna().all().all()
    assert not res["flagged"].any()


class SleepMethod(ConstMethod):
    """ConstMethod that takes a known time per cell."""

    name = "sleep"

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    def __call__(self, cell, state, *, seed):
        time.sleep(self.delay)
        return super().__call__(cell, state, seed=seed)


def test_seconds_time_the_method_call(synth):
    grid = [(3, 1.0), (4, 1.0)]
    res = backtest(synth, families=["clean"], methods=[SleepMethod(0.1), ConstMethod()], grid=grid)
    slow = res.loc[res["method"] == "sleep", "seconds"]
    fast = res.loc[res["method"] == "const", "seconds"]
    assert len(slow) == len(fast) == 2
    assert (slow >= 0.1).all() and (slow < 5.0).all()  # sleep() waits at least its delay
    assert (fast < 0.1).all()


def test_are_is_mean_relative_error_over_target_rows(synth):
    res = backtest(synth, families=["noisy"], methods=[ConstMethod(3.0)], grid=[(2, 1.0)])
    t = make_cells(synth.family("noisy"), grid=[(2, 1.0)])[0].target.frame
    expected = np.mean(np.abs(t["loss"] - 3.0) / t["loss"]) * 100
    assert res["are_pct"].iloc[0] == pytest.approx(expected)
    assert res["actual"].iloc[0] == pytest.approx(t["loss"].mean())
    assert res["n_fit_rows"].iloc[0] == 7


def test_final_target_and_down_direction(synth):
    res = backtest(synth, families="clean", grid=[(3, 1.0)], target="final", direction="down")
    row = res.iloc[0]
    assert (row["target"], row["direction"], row["n_target_rows"]) == ("final", "down", 1)
    assert row["target_params"] == 1e7 and row["status"] == "ok"


def test_k1_uses_single_model_regime(synth):
    res = backtest(synth, families=["clean"], grid=[(1, 1.0)])
    row = res.iloc[0]
    assert row["n_sizes_used"] == 1 and row["status"] == "ok"
    (cell,) = make_cells(synth.family("clean"), grid=[(1, 1.0)])
    f = cell.train.frame
    fit = fit_paper_single(f["params"], f["tokens"], f["loss"])
    expected = fit.predict(cell.target.frame["params"], cell.target.frame["tokens"]).mean()
    assert row["predicted"] == pytest.approx(expected)


def test_include_k1_default_follows_methods(synth):
    paper_only = backtest(synth, families=["clean"], grid="quick")
    assert 1 not in set(paper_only["k"])
    with_k1 = backtest(synth, families=["clean"], grid="quick", include_k1=True)
    assert sorted(set(with_k1["k"])) == [1, 2, 3, 4]
    other = backtest(synth, families=["clean"], methods=[ConstMethod()], grid="quick")
    assert 1 in set(other["k"])


# --- failures become a status ---------------------------------------------------------


def test_empty_training_cell_is_a_status(synth):
    # T = 2e11 for k = 2; p = 0.05 keeps tokens < 1e10, which the 10B cut removes
    res = backtest(synth, families=["clean"], grid=[(2, 0.05)])
    row = res.iloc[0]
    assert row["status"] == "no training rows after filters"
    assert row["n_train_rows"] == 0 and np.isnan(row["are_pct"]) and np.isnan(row["predicted"])


def test_too_few_rows_is_a_status(synth):
    # p = 0.1 keeps 1.06e10 and 1.6e10 of each of the two runs: 4 rows < 5 parameters
    res = backtest(synth, families=["clean"], grid=[(2, 0.1), (2, 1.0)])
    assert list(res["status"]) == ["fit failed: 4 rows < 5 parameters", "ok"]
    assert np.isnan(res["are_pct"].iloc[0])


@pytest.mark.parametrize(
    ("method", "status"),
    [
        (ConstMethod(fail=ValueError("boom\nsecond line")), "error: ValueError: boom"),
        (ConstMethod(fail=RuntimeError("no convergence")), "error: RuntimeError: no convergence"),
        (ConstMethod(fail=CurvesError("bad")), "error: CurvesError: bad"),
        (ConstMethod(np.nan), "non-finite prediction"),
        (ConstMethod(status="sampler failed"), "sampler failed"),
    ],
)
def test_method_failures_become_status(synth, method, status):
    res = backtest(synth, families=["clean"], methods=[method], grid=[(2, 1.0), (3, 0.5)])
    assert len(res) == 2
    assert (res["status"] == status).all()
    assert res["are_pct"].isna().all() and res["predicted"].isna().all()


def test_programming_errors_are_not_hidden(synth):
    with pytest.raises(TypeError, match="oops"):
        backtest(synth, families=["clean"], methods=[ConstMethod(fail=TypeError("oops"))])


def test_interval_columns(synth):
    res = backtest(
        synth, families=["noisy"], methods=[ConstMethod(3.0, width=5.0)], grid=[(2, 1.0)]
    )
    row = res.iloc[0]
    assert (row["lower80"], row["upper80"]) == (-2.0, 8.0)
    assert (row["lower50"], row["upper50"]) == (1.75, 4.25)
    assert row["covered80"] == 1.0
    assert row["covered50"] == 1.0  # the losses lie in (1.75, 4.25)
    assert row["pit_mean"] == 0.25
    assert (row["rhat_max"], row["ess_min"], row["divergences"]) == (1.01, 400.0, 0)
    narrow = backtest(
        synth, families=["noisy"], methods=[ConstMethod(10.0, width=1.0)], grid=[(2, 1.0)]
    )
    assert narrow["covered80"].iloc[0] == 0.0


def test_resume_rejects_a_file_with_the_old_pit_column(synth, tmp_path):
    out = tmp_path / "bt.csv"
    kw = dict(families=["noisy"], methods=[ConstMethod(3.0, width=5.0)], grid=[(2, 1.0)], out=out)
    fresh = backtest(synth, **kw)
    header, body = out.read_text().split("\n", 1)
    assert header.split(",") == list(COLUMNS)
    # resuming the file as written works and runs nothing new
    pd.testing.assert_frame_equal(backtest(synth, resume=True, **kw), fresh)
    # the same rows under the old header (an older hiscale's file) are refused
    old = ",".join("pit" if c == "pit_mean" else c for c in COLUMNS)
    out.write_text(old + "\n" + body)
    with pytest.raises(ValueError, match="column 'pit' \\(now 'pit_mean'\\)") as err:
        backtest(synth, resume=True, **kw)
    assert "\n" not in str(err.value)
    assert str(out) in str(err.value)
    assert out.read_text() == old + "\n" + body  # left as it was


# --- families and methods -------------------------------------------------------------


def test_usable_families(synth):
    assert usable_families(synth) == ["clean", "noisy"]
    res = backtest(synth, grid=[(2, 1.0)])
    assert sorted(res["family"]) == ["clean", "noisy"]
    assert list(backtest(synth, families="all", grid=[(2, 1.0)])["family"]) == ["clean", "noisy"]


def test_family_errors(synth):
    with pytest.raises(CurvesError, match=r"unknown family 'nope'; known families: clean, noisy"):
        backtest(synth, families=["nope"])
    with pytest.raises(CurvesError, match=r"family 'tiny' has 2 distinct sizes"):
        backtest(synth, families=["tiny"])
    with pytest.raises(CurvesError, match="no usable family"):
        backtest(synth.family("tiny"))


def test_several_methods(synth):
    res = backtest(synth, families=["clean"], methods=["paper", ConstMethod()], grid="quick")
    assert len(res) == 2 * 12  # const adds k = 1 cells for both methods
    assert res.groupby("method").size().to_dict() == {"const": 12, "paper": 12}


def test_methods_by_name(monkeypatch):
    known = ["bayes", "bayes-auto", "bayes-auto-local", "bayes-curve", "bayes-disc",
             "bayes-disc3", "bayes-flat", "bayes-local", "bayes-local-choice",
             "bayes-local-learn"]  # fmt: skip
    assert sorted(METHODS) == [*known, "paper"]
    assert isinstance(get_method("paper"), PaperMethod)
    flat = get_method("bayes-flat")
    assert isinstance(flat, BayesMethod) and flat.prior == "flat" and flat.name == "bayes-flat"
    local = get_method("bayes-local-learn")
    assert local.local_sd == 0.01 and local.local_learn and local.name == "bayes-local-learn"
    assert get_method("bayes-local").local_sd == 0.01 and not get_method("bayes-local").local_learn
    choice = get_method("bayes-local-choice")
    assert choice.local_choice == 0.01 and choice.local_sd == 0.0 and choice.prior == "auto"
    with pytest.raises(
        ValueError,
        match="unknown method 'nope'; known: bayes, bayes-auto, bayes-auto-local, bayes-curve, "
        "bayes-disc, "
        "bayes-disc3, bayes-flat, bayes-local, bayes-local-choice, bayes-local-learn, paper",
    ):
        get_method("nope")
    monkeypatch.setitem(METHODS, "const", ConstMethod)
    m = get_method("const", value=2.0)
    assert isinstance(m, ConstMethod) and m.value == 2.0


def test_method_options_by_name(synth, monkeypatch):
    monkeypatch.setitem(METHODS, "const", ConstMethod)
    res = backtest(
        synth,
        families=["clean"],
        methods=["const"],
        grid=[(2, 1.0)],
        method_options={"const": {"value": 2.5}},
    )
    assert res["predicted"].iloc[0] == 2.5


def test_progress_lines(synth, capsys):
    backtest(synth, families=["clean"], grid=[(2, 1.0), (3, 1.0)], progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("[1/2] clean paper k=2 p=1.0 ARE=")
    assert " ok | failed 0 | ETA " in err[1]
    assert err[1].endswith("ETA 0:00:00")  # nothing left


# --- summaries --------------------------------------------------------------------------


def fake_results():
    rows = [
        # family, n_sizes_used, p, are, status, covered80
        ("a", 2, 0.5, 1.0, "ok", 1.0),
        ("a", 2, 0.5, 3.0, "ok", 0.0),
        ("b", 2, 0.5, 6.0, "ok", 1.0),
        ("a", 9, 0.5, 0.5, "ok", 1.0),
        ("b", 12, 0.5, 1.5, "ok", 1.0),
        ("a", 4, 1.0, 2.0, "ok", 0.0),
        ("b", 4, 1.0, np.nan, "fit failed: x", np.nan),
    ]
    frame = pd.DataFrame(
        rows, columns=["family", "n_sizes_used", "p", "are_pct", "status", "covered80"]
    )
    frame["method"] = "m"
    frame["covered50"] = np.nan
    frame["flagged"] = [False, True, False, False, False, False, False]
    frame["seconds"] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    return frame


def test_summary_table_is_a_macro_average():
    table = summary_table(fake_results())
    assert list(table.index) == ["2", "4", "8+"]
    assert list(table.columns) == [("m", 0.5), ("m", 1.0)]
    assert table.loc["2", ("m", 0.5)] == pytest.approx(((1 + 3) / 2 + 6) / 2)  # within, then across
    assert table.loc["8+", ("m", 0.5)] == pytest.approx(1.0)
    assert table.loc["4", ("m", 1.0)] == pytest.approx(2.0)  # the failed cell is left out
    assert np.isnan(table.loc["4", ("m", 0.5)])


def test_summary_table_bins_and_empty():
    res = fake_results().assign(n_sizes_used=[1, 3, 7, 8, 10, 2, 2])
    assert list(summary_table(res).index) == ["1", "2", "3", "7", "8+"]
    assert summary_table(fake_results().assign(status="failed")).empty


def test_method_summary():
    out = method_summary(fake_results())
    assert list(out.columns) == [
        "method",
        "cells",
        "failed",
        "fitted",
        "flagged",
        "macro_are",
        "macro_are_low_budget",
        "coverage80",
        "coverage50",
        "median_seconds",
    ]
    row = out.iloc[0]
    assert (row["method"], row["cells"], row["failed"], row["flagged"]) == ("m", 7, 1, 1)
    assert row["macro_are"] == pytest.approx(((1 + 3 + 0.5 + 2) / 4 + (6 + 1.5) / 2) / 2)
    assert row["macro_are_low_budget"] == pytest.approx(((1 + 3) / 2 + 6) / 2)
    assert row["coverage80"] == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert np.isnan(row["coverage50"])
    assert row["median_seconds"] == 4.0


def test_summaries_of_a_real_run(synth):
    res = backtest(synth, methods=["paper", ConstMethod()], grid="quick")
    table = summary_table(res)
    assert set(table.columns.get_level_values(0)) == {"paper", "const"}
    assert set(table.columns.get_level_values(1)) == {0.3, 0.5, 1.0}
    summ = method_summary(res)
    assert list(summ["method"]) == ["paper", "const"]
    assert (summ["cells"] == len(res) // 2).all()


# --- CLI ------------------------------------------------------------------------------------


def test_cli_backtest_gpt3(corpus_file, tmp_path, capsys):
    out = tmp_path / "x.csv"
    args = ["backtest", str(corpus_file), "--family", "gpt3", "--method", "paper"]
    rc = main([*args, "--grid", "quick", "--out", str(out), "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "Macro ARE (%), target=last30" in captured.out
    assert f"wrote 12 rows to {out}" in captured.out
    res = pd.read_csv(out)
    assert list(res.columns) == list(COLUMNS)
    assert len(res) == 12  # k in {2, 3, 5, 7} x p in {0.3, 0.5, 1.0}
    assert (res["family"] == "gpt3").all()
    cell = res[(res["k"] == 7) & (res["p"] == 1.0)]
    assert cell["are_pct"].iloc[0] == pytest.approx(1.61, abs=0.05)


def test_cli_json_and_progress(tmp_path, capsys):
    path = tmp_path / "synth.csv"
    make_frame("clean").to_csv(path, index=False)
    rc = main(["backtest", str(path), "--family", "all", "--grid", "quick", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["summary"][0]["method"] == "paper"
    assert payload["summary"][0]["cells"] == 9
    assert set(payload["heatmap"]) == {"paper|p=0.3", "paper|p=0.5", "paper|p=1.0"}
    assert len(captured.err.strip().splitlines()) == 9  # one progress line per cell


def test_cli_subprocess(corpus_file, tmp_path):
    out = tmp_path / "x.csv"
    cmd = [sys.executable, "-m", "hiscale", "backtest", str(corpus_file)]
    cmd += ["--family", "gpt3", "--method", "paper", "--grid", "quick", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Macro ARE" in proc.stdout
    assert len(pd.read_csv(out)) == 12


def test_cli_missing_file(tmp_path, capsys):
    rc = main(["backtest", str(tmp_path / "nope.csv"), "--family", "gpt3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("hiscale: error: file not found: ") and "nope.csv" in err


def test_cli_missing_file_subprocess(tmp_path):
    cmd = [sys.executable, "-m", "hiscale", "backtest", str(tmp_path / "nope.csv")]
    proc = subprocess.run(
        [*cmd, "--family", "gpt3"], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_family(tmp_path, capsys):
    path = tmp_path / "synth.csv"
    pd.concat([make_frame("clean"), make_frame("other")]).to_csv(path, index=False)
    rc = main(["backtest", str(path), "--family", "gpt3", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err == (
        "hiscale: error: column 'family': unknown family 'gpt3'; known families: clean, other\n"
    )


def test_cli_bad_data_and_arguments(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    make_frame("clean").assign(loss=-1.0).to_csv(path, index=False)
    assert main(["backtest", str(path), "--family", "clean"]) == 2
    assert "column 'loss': must be > 0: value -1.0 at row 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["backtest", str(path), "--family", "clean", "--min-tokens", "-1"])
    assert exc.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


# --- the prior column and bayes' prior choice ----------------------------------------------


class StubBayes(BayesMethod):
    """``bayes`` with its real prior choice (``prepare``) but no NUTS fit per cell."""

    def __call__(self, cell, state, *, seed):
        return CellPrediction(median=np.full(len(cell.target.frame), 3.0))


def words_table():
    """A family in nats per word: no population prior exists in that unit."""
    return make_frame("words", noise=0.005, seed=3).assign(loss_unit="nats per word")


def test_prior_column_new_family_uses_the_bundled_prior(synth):
    """A table without the corpus: bayes borrows from corpus-v1, and the row says so."""
    res = backtest(synth, families=["noisy"], methods=["paper", StubBayes()], grid=[(3, 1.0)])
    assert list(res.columns) == list(COLUMNS)
    assert list(res["method"]) == ["paper", "bayes"]
    assert list(res["prior"]) == ["none", "corpus-v1"]
    # the cell fit then borrows without fit()'s "prior saw this family" warning
    (cell,) = make_cells(synth.family("noisy"), grid=[(3, 1.0)])
    assert prior_overlap(load_prior("corpus-v1"), cell.train, "noisy") is None


def test_bayes_flat_is_labelled_flat_without_a_warning(synth):
    # pytest turns warnings into errors: this would fail if bayes-flat warned
    assert get_method("bayes-flat").prepare(synth, "noisy").label == "flat"


def test_prior_tails_are_in_the_label_and_the_settings(synth):
    p = get_method("bayes", prior_settings={"df_law": 4.0}).prepare(synth, "noisy")
    assert p.label == "corpus-v1 with Student-t(4) tails"
    assert p.settings["df_law"] == 4.0


def test_cli_backtest_passes_prior_tails(monkeypatch, tmp_path, capsys):
    import hiscale.backtesting.runner as bt

    seen = {}

    def fake_backtest(curves, **kw):
        seen.update(kw["method_options"])
        raise SystemExit(0)

    monkeypatch.setattr(bt, "backtest", fake_backtest)
    path = tmp_path / "synth.csv"
    make_frame("clean").to_csv(path, index=False)
    with pytest.raises(SystemExit):
        main(["backtest", str(path), "--family", "all", "--method", "paper", "--method",
              "bayes", "--method", "bayes-flat", "--method", "bayes-auto",
              "--prior-tails", "5"])  # fmt: skip
    assert seen["bayes"]["prior_settings"] == {"df_law": 5.0}
    assert seen["bayes-flat"]["prior_settings"] == {"df_law": 5.0}
    assert "paper" not in seen and "prior_settings" not in seen.get("bayes-auto", {})


def test_bayes_without_a_population_in_the_unit_runs_flat_and_says_so():
    curves = load_curves(words_table())
    with pytest.warns(PriorWarning) as record:
        res = backtest(curves, methods=[StubBayes()], grid=[(2, 1.0), (3, 1.0)])
    assert len(record) == 1  # one warning per family, not per cell
    assert str(record[0].message) == (
        "bayes on 'words' runs with the flat prior: no population prior for 'words': "
        "0 usable families outside group 'words' in loss unit 'nats/word', "
        "a population needs >= 2 groups"
    )
    assert (res["prior"] == "flat (no population in unit nats/word)").all()


def test_bayes_rebuilds_when_the_bundled_prior_saw_the_group():
    """A family of a group corpus-v1 was learned on gets a prior without that group.

    Here the table holds no other family, so the rebuilt prior is the flat
    fallback, labelled and warned about, never corpus-v1.
    """
    curves = load_curves(make_frame("gpt3-rerun", noise=0.005))
    with pytest.warns(PriorWarning, match="runs with the flat prior") as record:
        state = get_method("bayes").prepare(curves, "gpt3-rerun")
    assert len(record) == 1
    assert state.label == "flat (no population in unit nats/token)"
    assert "corpus-v1" in state.meta["replaces"] and "group 'gpt3'" in state.meta["replaces"]


def test_given_prior_that_saw_the_family_is_not_used(synth):
    meta = {"families_used": {"noisy": {}}, "loss_unit": "nats/token"}
    seen = Prior(**{**flat_prior().__dict__, "name": "mine", "meta": meta})
    with pytest.warns(PriorWarning) as record:
        state = BayesMethod(prior=seen).prepare(synth, "noisy")
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith("bayes on 'noisy': prior 'mine' was learned on noisy")
    assert messages[0].endswith("using 'flat (no population in unit nats/token)' instead")
    assert messages[1].startswith("bayes on 'noisy' runs with the flat prior")
    assert state.label == "flat (no population in unit nats/token)"
    # a prior that saw neither the family nor its group is used as given
    other = Prior(**{**seen.__dict__, "meta": {"families_used": {"elsewhere": {}}}})
    assert BayesMethod(prior=other).prepare(synth, "noisy").label == "mine"
    # nor is one in another loss unit
    words = Prior(**{**seen.__dict__, "meta": {"loss_unit": "nats/word"}})
    with pytest.warns(PriorWarning) as record:
        assert BayesMethod(prior=words).prepare(synth, "noisy").name == "flat"
    assert "prior 'mine' is in loss unit 'nats/word', 'noisy' in 'nats/token'" in str(
        record[0].message
    )


def test_cli_backtest_warns_once_and_labels_the_prior(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(BayesMethod, "__call__", StubBayes.__call__)
    path, out = tmp_path / "new.csv", tmp_path / "res.csv"
    words_table().to_csv(path, index=False)
    rc = main(["backtest", str(path), "--family", "words", "--method", "paper",
               "--method", "bayes", "--grid", "quick", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "hiscale: warning: bayes on 'words' runs with the flat prior: no population prior for "
        "'words': 0 usable families outside group 'words' in loss unit 'nats/word', a "
        "population needs >= 2 groups"
    ]
    res = pd.read_csv(out)
    assert set(res.loc[res["method"] == "paper", "prior"]) == {"none"}
    assert set(res.loc[res["method"] == "bayes", "prior"]) == {
        "flat (no population in unit nats/word)"
    }


# --- interval levels: one ci_prob argument ---------------------------------------------


class DrawsMethod(ConstMethod):
    """A method that returns predictive draws (no intervals of its own), like ``bayes``."""

    name = "draws"

    def __call__(self, cell, state, *, seed):
        n = len(cell.target.frame)
        rng = np.random.default_rng(seed)
        draws = cell.target.frame["loss"].to_numpy()[None, :] + rng.normal(0, 0.05, (4000, n))
        return CellPrediction(
            median=np.median(draws, axis=0),
            draws=draws,
            pit=np.full(n, 0.5),
            diagnostics={"rhat_max": 1.0, "ess_min": 900.0, "divergences": 0, "flagged": False},
        )


def test_interval_levels_come_from_one_ci_prob_argument(synth, tmp_path):
    from hiscale.backtesting.runner import result_columns

    grid = [(2, 1.0), (3, 0.5)]
    res = backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, ci_prob=(0.9,))
    assert list(res.columns) == list(result_columns((0.9,)))
    assert {"lower90", "upper90", "covered90"} <= set(res.columns)
    assert not any(c.endswith("80") or c.endswith("50") for c in res.columns)
    # the bounds are the 5% and 95% quantiles of the method's draws (numpy, independently)
    cell = make_cells(synth.family("noisy"), grid=grid)[0]
    n = len(cell.target.frame)
    rng = np.random.default_rng(0)
    draws = cell.target.frame["loss"].to_numpy()[None, :] + rng.normal(0, 0.05, (4000, n))
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    np.testing.assert_allclose(res["lower90"].iloc[0], lo.mean(), rtol=1e-12)
    np.testing.assert_allclose(res["upper90"].iloc[0], hi.mean(), rtol=1e-12)
    assert res["covered90"].iloc[0] == 1.0  # the draws are centred on the actual losses
    summ = method_summary(res, ci_prob=(0.9,))
    assert "coverage90" in summ.columns and "coverage80" not in summ.columns
    # a streamed file written with other levels is refused on resume, in one line
    out = tmp_path / "bt.csv"
    backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out)
    with pytest.raises(ValueError, match=r"other settings \(ci_prob differ") as err:
        backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out,
                 resume=True, ci_prob=(0.9,))  # fmt: skip
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("bad", "msg"), [((1.0,), "not in"), ((0.8, 0.8), "repeated"), ((), "at least")]
)
def test_bad_ci_prob_is_a_one_line_error(synth, bad, msg):
    with pytest.raises(ValueError, match=msg):
        backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=[(2, 1.0)], ci_prob=bad)


def test_cli_backtest_takes_ci_prob(synth, tmp_path, capsys):
    path = tmp_path / "c.csv"
    synth.frame.to_csv(path, index=False)
    code = main(["backtest", str(path), "--family", "noisy", "--grid", "quick", "--ci-prob",
                 "0.95", "--json", "--quiet", "--out", str(tmp_path / "o.csv")])  # fmt: skip
    assert code == 0
    summ = json.loads(capsys.readouterr().out)["summary"][0]
    assert "coverage95" in summ
    assert "covered95" in (tmp_path / "o.csv").read_text().splitlines()[0]


def test_resume_refuses_other_settings_in_one_line(synth, tmp_path):
    """The settings beside the stream are checked on resume (here: the seed and the method)."""
    out = tmp_path / "bt.csv"
    grid = [(2, 1.0), (3, 0.5)]
    first = backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out)
    saved = json.loads((tmp_path / "bt.csv.settings.json").read_text())
    assert saved["settings"]["seed"] == 0 and saved["settings"]["ci_prob"] == [0.8, 0.5]
    again = backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out,
                     resume=True)  # fmt: skip
    pd.testing.assert_frame_equal(again, first)
    with pytest.raises(ValueError, match=r"other settings \(seed differ") as err:
        backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out,
                 resume=True, seed=1)  # fmt: skip
    assert "\n" not in str(err.value)
    bayes = [BayesMethod(prior="flat")]
    with pytest.raises(ValueError, match=r"other settings \(methods differ"):
        backtest(synth, families=["noisy"], methods=bayes, grid=grid, out=out, resume=True)
    # a file without its settings (an older hiscale's) resumes with a one-line warning
    (tmp_path / "bt.csv.settings.json").unlink()
    with pytest.warns(UserWarning, match="without checking that the settings are the same"):
        backtest(synth, families=["noisy"], methods=[DrawsMethod()], grid=grid, out=out,
                 resume=True)  # fmt: skip
