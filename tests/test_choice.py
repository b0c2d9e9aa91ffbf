"""Choosing the end-of-run or the whole-curve model by leave-future-out (law="auto").

The scores are checked against an independent route: each candidate fitted by
hand to the smaller sizes through the public API, and its ARE computed here;
the log score against SciPy's log-normal density.
"""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import lognorm
from test_curve_fit import simulate_curves

from hiscale.backtesting.runner import backtest
from hiscale.cli import main
from hiscale.data.curves import load_curves
from hiscale.infer.choice import CANDIDATES, log_score
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.result import load_fit
from hiscale.testing import TEST_SAMPLER


@pytest.fixture(scope="module")
def sim4():
    """Four sizes, one run each, drawn from the h-term curve model."""
    frame, _ = simulate_curves(seed=3, sizes=(1e8, 2e8, 4e8, 8e8), n_rows=24)
    return frame


@pytest.fixture(scope="module")
def auto_fit(sim4):
    return fit(sim4, family="simc", law="auto", prior="flat", sampler=TEST_SAMPLER, seed=2)


def test_log_score_is_the_lognormal_density():
    rng = np.random.default_rng(0)
    draws = np.exp(rng.normal([1.0, 0.5], [0.1, 0.3], size=(4000, 2)))
    actual = np.array([2.9, 1.4])
    logd = np.log(draws)
    ref = [
        lognorm.logpdf(actual[j], s=logd[:, j].std(ddof=1), scale=np.exp(logd[:, j].mean()))
        for j in range(2)
    ]
    assert log_score(draws, actual) == pytest.approx(np.mean(ref), rel=1e-12)


def test_auto_records_lfo_scores_that_match_fits_by_hand(auto_fit, sim4):
    choice = auto_fit.provenance["choice"]
    assert choice["held"] == {"params": 8e8, "runs": 1, "rows": 1}
    small = sim4[sim4["params"] < 8e8]
    held = sim4[sim4["params"] == 8e8].sort_values("tokens").tail(1)
    actual = float(held["loss"].iloc[0])
    for name, (law, rows, residual) in CANDIDATES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = fit(small, family="simc", law=law, prior="flat", sampler=TEST_SAMPLER, seed=2,
                    options=FitOptions(rows=rows, residual=residual))  # fmt: skip
        if f.is_curve:  # a new run of 8e8 over the schedule's horizon, as the backtest does
            _, draws = f.predict_curve(8e8, float(held["run_tokens"].iloc[0]),
                                       tokens=held["tokens"].to_numpy(), seed=2,
                                       return_draws=True)  # fmt: skip
        else:
            _, draws = f.draws(8e8, float(held["tokens"].iloc[0]), seed=2)
        are = abs(np.median(draws[:, 0]) - actual) / actual * 100
        assert choice["scores"][name]["are_pct"] == pytest.approx(are, rel=1e-12)
        assert choice["scores"][name]["law"] == law
    a = {k: v["are_pct"] for k, v in choice["scores"].items()}
    better = "whole-curve" if a["whole-curve"] < a["end-of-run"] else "end-of-run"
    assert choice["chosen"] == better
    law, rows, _ = CANDIDATES[choice["chosen"]]
    assert auto_fit.law == law and auto_fit.options.rows == rows
    notes = auto_fit.provenance["notes"]
    assert any(n.startswith(f"model chosen: {choice['chosen']}") for n in notes)
    assert choice["inner_flagged"] == any(s["flagged"] for s in choice["scores"].values())
    for s in choice["scores"].values():  # why a flagged LFO fit was flagged, "" if not
        assert bool(s["flag_reasons"]) == s["flagged"]
        assert s["retried"] == ""  # the caller's sampler runs as given: no re-run


def test_auto_reruns_flagged_inner_fits_and_says_so(sim4, monkeypatch):
    """Every fit flagged (r-hat threshold 0): each LFO fit and the final one is re-run.

    The default and the re-run settings are the short test sampler (so the test
    is quick); the rule is the engine's: no sampler given, so a flag re-runs.
    """
    import hiscale.infer.fit as fit_mod
    from hiscale.infer.choice import LFO_FLAGGED, LFO_RETRIED
    from hiscale.infer.settings import THRESHOLDS

    monkeypatch.setitem(THRESHOLDS, "rhat_max", 0.0)
    monkeypatch.setattr(fit_mod, "default_sampler", lambda options: TEST_SAMPLER)
    monkeypatch.setattr(fit_mod, "retry_sampler", lambda settings: TEST_SAMPLER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(sim4, family="simc", law="auto", prior="flat", seed=2)
    choice = f.provenance["choice"]
    for s in choice["scores"].values():
        assert s["retried"].startswith("r_hat") and s["flagged"]
    assert f"{LFO_RETRIED} (first run end-of-run: r_hat" in choice["reason"]
    assert ", whole-curve: r_hat" in choice["reason"].split(LFO_RETRIED)[1]
    assert LFO_FLAGGED in choice["reason"] and choice["inner_flagged"]
    assert f.retried.startswith("r_hat") and f.flagged
    assert f.provenance["retry"]["second_flagged"]


def test_auto_choice_survives_save_and_load(auto_fit, tmp_path):
    back = load_fit(auto_fit.save(tmp_path / "auto.nc"))
    assert back.provenance["choice"] == auto_fit.provenance["choice"]


def test_auto_is_deterministic(auto_fit, sim4):
    again = fit(sim4, family="simc", law="auto", prior="flat", sampler=TEST_SAMPLER, seed=2)
    assert again.provenance["choice"] == auto_fit.provenance["choice"]
    np.testing.assert_array_equal(again.theta()["log_scale"], auto_fit.theta()["log_scale"])


@pytest.mark.parametrize(
    "case, reason",
    [
        ("two sizes", "2 size(s), leave-future-out needs >= 3"),
        ("one row per run", "every run has one checkpoint"),
        ("no schedule", "schedule of 4 run(s) is unknown"),
    ],
)
def test_auto_without_a_measurement_keeps_the_end_of_run_model_and_says_why(sim4, case, reason):
    frame = sim4
    if case == "two sizes":
        frame = sim4[sim4["params"] <= 2e8]
    elif case == "one row per run":
        frame = sim4.sort_values("tokens").groupby("run").tail(1)
    else:
        frame = sim4.drop(columns=["schedule", "run_tokens"])
    f = fit(frame, family="simc", law="auto", prior="flat", sampler=TEST_SAMPLER, seed=0)
    choice = f.provenance["choice"]
    assert choice["chosen"] == "end-of-run" and choice["scores"] == {}
    assert reason in choice["reason"] and f.law == "chinchilla" and not f.is_curve


def test_auto_says_when_the_whole_curve_candidate_fell_back(sim4):
    """Smaller sizes with one checkpoint each: the LFO whole-curve fit is an end-of-run one."""
    last = sim4.sort_values("tokens").groupby("run").tail(1)
    frame = pd.concat([last[last["params"] < 8e8], sim4[sim4["params"] == 8e8]])
    f = fit(frame, family="simc", law="auto", prior="flat", sampler=TEST_SAMPLER, seed=0)
    choice = f.provenance["choice"]
    assert choice["scores"]["whole-curve"]["law"] == "chinchilla"
    assert "has one checkpoint" in choice["scores"]["whole-curve"]["fallback"]
    assert choice["chosen"] == "end-of-run"
    assert "but that fit used the end-of-run" in choice["reason"]


def test_auto_refuses_row_options(sim4):
    with pytest.raises(ValueError, match="law='auto' chooses the rows"):
        fit(sim4, family="simc", law="auto", options=FitOptions(rows="all", residual="ar1"))


def test_cli_fit_law_auto_reports_the_choice(sim4, tmp_path, capsys):
    csv = tmp_path / "sim4.csv"
    sim4.to_csv(csv, index=False)
    small = [f"--num-warmup={TEST_SAMPLER.num_warmup}", f"--num-samples={TEST_SAMPLER.num_samples}"]
    code = main(["fit", str(csv), "--law", "auto", "--prior", "flat", *small, "--seed", "2",
                 "--out", str(tmp_path / "f.nc"), "--json", "--quiet"])  # fmt: skip
    out = capsys.readouterr()
    payload = json.loads(out.out)
    assert code == 0 and payload["choice"]["chosen"] in CANDIDATES
    assert "model chosen:" in out.err
    code = main(["fit", str(csv), "--law", "auto", "--rows", "all", "--out", str(tmp_path / "g.nc"),
                 "--quiet"])  # fmt: skip
    assert code != 0 and "--law auto chooses the rows" in capsys.readouterr().err


def test_bayes_auto_cells_say_which_model_predicted(sim4, monkeypatch):
    """The note names the model; a flagged leave-future-out fit flags the cell.

    The LFO fits are part of the prediction's evidence. The end-of-run LFO
    fit's flag is forced (a wrapper around the real ``lfo_scores``) and the
    thresholds opened so that no fit of the short test sampler is flagged on
    its own: the k = 3 cell (choice measured) must be flagged, the k = 2 cell
    (no LFO fit) not.
    """
    import hiscale.infer.choice as choice_mod
    from hiscale.infer.choice import LFO_FLAGGED
    from hiscale.infer.settings import THRESHOLDS

    lax = {"rhat_max": np.inf, "ess_min": 0.0, "divergences": 10**9, "tree_depth_hits_frac": 1.0,
           "chain_disagreement": np.inf, "bfmi_min": 0.0}  # fmt: skip
    for key, value in lax.items():
        monkeypatch.setitem(THRESHOLDS, key, value)
    real = choice_mod.lfo_scores

    def forced(*a, **kw):
        scores, held = real(*a, **kw)
        assert not any(s["flagged"] for s in scores.values())  # the thresholds are open
        scores["end-of-run"]["flagged"] = True
        return scores, held

    monkeypatch.setattr(choice_mod, "lfo_scores", forced)
    res = backtest(
        load_curves(sim4),
        methods=["bayes-auto"],
        grid=[(3, 1.0), (2, 1.0)],
        target="final",
        min_tokens=0,
        method_options={"bayes-auto": {"sampler": TEST_SAMPLER}},
    )
    assert res["status"].eq("ok").all()
    by_k = res.set_index("k")
    assert "leave-future-out on N = 4e+08" in by_k.loc[3, "note"]
    assert by_k.loc[2, "note"].startswith("end-of-run model chosen: no choice measured: 2 size(s)")
    assert f"{LFO_FLAGGED} (end-of-run: flagged)" in by_k.loc[3, "note"]
    assert LFO_FLAGGED not in by_k.loc[2, "note"]
    assert by_k.loc[3, "flagged"] and not by_k.loc[2, "flagged"]


def test_bayes_auto_borrows_the_end_of_run_population_as_bayes_does(sim4):
    from dataclasses import replace

    from hiscale.backtesting.methods import BayesMethod, get_method
    from hiscale.priors.prior import flat_prior

    given = flat_prior("chinchilla")
    given = replace(given, name="given", loc=given.loc + 0.1)
    curves = load_curves(sim4)
    state = get_method("bayes-auto", prior=given).prepare(curves, "simc")
    ref = BayesMethod(prior=given).prepare(curves, "simc")
    assert state.label == ref.label and state.law == "chinchilla"
    np.testing.assert_array_equal(state.loc, ref.loc)
    # the flat default stays the h-term prior, so both candidates get weak defaults
    assert get_method("bayes-auto").prepare(curves, "simc").law == "h-term"


def test_loo_run_scores_match_refits_without_each_run():
    """PSIS leave-one-run-out against the brute force: refit without the run, predict it."""
    from engine_sim import simulate_family

    from hiscale.infer.choice import loo_run_scores

    sizes = (1e8, 1e8, 2e8, 2e8, 4e8, 4e8, 8e8, 8e8)
    frame = simulate_family("loo", sizes=sizes, sigma_run=0.01, seed=5)
    f = fit(frame, family="loo", prior="flat", sampler=TEST_SAMPLER, seed=0)
    got = loo_run_scores(f, seed=0, pointwise=True)
    assert got["loo_runs"] == len(sizes)
    last = frame.sort_values("tokens").groupby("run").tail(1).set_index("run")
    for run in ("loo-r6", "loo-r7"):  # the largest size's two runs: leaving one out matters
        assert got["pareto_k"][run] < 0.7
        at = float(last.loc[run, "params"]), float(last.loc[run, "tokens"])
        rest = frame[frame["run"] != run]
        g = fit(rest, family="loo", prior="flat", sampler=TEST_SAMPLER, seed=0)
        brute = float(np.median(g.draws(*at, seed=0)[1][:, 0]))
        full = float(np.median(f.draws(*at, seed=0)[1][:, 0]))
        # two Monte Carlo estimates of one median agree to 0.15%; the fit that kept
        # the run is further off (0.28-0.5% on the CPUs seen), so the check tells
        # them apart
        assert abs(full / brute - 1) > 1.5e-3
        assert got["loo_median"][run] == pytest.approx(brute, rel=1.5e-3)
    loss = last.loc[list(got["loo_median"]), "loss"].to_numpy()
    med = np.array(list(got["loo_median"].values()))
    assert got["loo_are_pct"] == pytest.approx(np.mean(np.abs(med - loss) / loss) * 100, rel=1e-12)
    assert np.isfinite(got["loo_log_score"]) and got["loo_bad_k"] >= 0


def test_auto_gives_each_candidate_its_own_prior(auto_fit, sim4):
    """A mapping prior: LFO scores as by hand with each candidate's prior; the record names them."""
    from dataclasses import replace

    from hiscale.priors.prior import flat_prior

    given = flat_prior("chinchilla")
    given = replace(given, name="given", loc=given.loc + 0.3)
    priors = {"end-of-run": given, "whole-curve": "flat"}
    f = fit(sim4, family="simc", law="auto", prior=priors, sampler=TEST_SAMPLER, seed=2)
    choice = f.provenance["choice"]
    assert choice["priors"] == {"end-of-run": given.label, "whole-curve": "flat"}
    # the whole-curve candidate saw the same flat prior as auto_fit's: identical score
    ref = auto_fit.provenance["choice"]["scores"]["whole-curve"]["are_pct"]
    assert choice["scores"]["whole-curve"]["are_pct"] == ref
    # the end-of-run candidate was fitted with the given prior, as by hand
    small = sim4[sim4["params"] < 8e8]
    held = sim4[sim4["params"] == 8e8].sort_values("tokens").tail(1)
    actual = float(held["loss"].iloc[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = fit(small, family="simc", law="chinchilla", prior=given, sampler=TEST_SAMPLER, seed=2)
    _, draws = g.draws(8e8, float(held["tokens"].iloc[0]), seed=2)
    are = abs(np.median(draws[:, 0]) - actual) / actual * 100
    assert choice["scores"]["end-of-run"]["are_pct"] == pytest.approx(are, rel=1e-12)
    assert are != pytest.approx(auto_fit.provenance["choice"]["scores"]["end-of-run"]["are_pct"])
    # the refit to every size uses the chosen candidate's prior
    assert f.prior.label == (given.label if choice["chosen"] == "end-of-run" else "flat")


@pytest.mark.parametrize(
    "prior, law, message",
    [
        ({"end-of-run": "flat"}, "auto", "no prior for candidate 'whole-curve'"),
        ({"end-of-run": "flat", "whole-curve": "flat", "x": "flat"}, "auto", "'x' is not a"),
        ({"end-of-run": "flat", "whole-curve": "flat"}, "chinchilla", "needs law='auto'"),
    ],
)
def test_a_prior_per_candidate_is_checked(sim4, prior, law, message):
    with pytest.raises(ValueError, match=message) as err:
        fit(sim4, family="simc", law=law, prior=prior, sampler=TEST_SAMPLER, seed=0)
    assert "\n" not in str(err.value)


def test_a_population_borrows_only_for_the_law_it_was_learned_for(sim4):
    """prior=P (learned for chinchilla) is the mapping {end-of-run: P, whole-curve: flat}."""
    from dataclasses import replace

    from hiscale.infer.choice import candidate_priors
    from hiscale.priors.prior import flat_prior

    given = replace(flat_prior("chinchilla"), name="given")
    given = replace(given, loc=given.loc + 0.3)
    f = fit(sim4, family="simc", law="auto", prior=given, sampler=TEST_SAMPLER, seed=2)
    g = fit(sim4, family="simc", law="auto", prior={"end-of-run": given, "whole-curve": "flat"},
            sampler=TEST_SAMPLER, seed=2)  # fmt: skip
    a, b = f.provenance["choice"], g.provenance["choice"]
    assert a["scores"] == b["scores"] and a["chosen"] == b["chosen"]
    assert a["priors"] == {"end-of-run": given.label, "whole-curve": "flat"}
    assert a["prior_given"] == given.label and b["prior_note"] is None
    assert "only the end-of-run candidate borrows" in a["prior_note"]
    assert a["prior_note"] in f.provenance["notes"]
    # a curve-law population goes to the whole-curve candidate only
    curve_pop = replace(flat_prior("h-term"), name="curvepop")
    priors, note = candidate_priors(curve_pop)
    assert priors == {"end-of-run": "flat", "whole-curve": curve_pop}
    assert "only the whole-curve candidate borrows" in note
    # flat serves both, and says nothing
    assert candidate_priors("flat") == ({"end-of-run": "flat", "whole-curve": "flat"}, None)


def test_every_fit_records_its_model_choice(sim4):
    """A given law is recorded as given (not measured); a fallback says what was asked."""
    from hiscale.infer.fit import GIVEN_RULE

    end = fit(sim4, family="simc", law="chinchilla", prior="flat", sampler=TEST_SAMPLER, seed=0)
    c = end.provenance["choice"]
    assert c["chosen"] == "end-of-run" and c["rule"] == GIVEN_RULE and c["scores"] == {}
    assert "law 'chinchilla' on rows='end', residual='iid'" in c["reason"]
    last = sim4.sort_values("tokens").groupby("run").tail(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb = fit(last, family="simc", law="h-term", prior="flat", sampler=TEST_SAMPLER, seed=0,
                 options=FitOptions(rows="all", residual="ar1"))  # fmt: skip
    c = fb.provenance["choice"]
    assert c["chosen"] == "end-of-run" and "requested 'h-term'" in c["reason"]
    assert "has one checkpoint" in c["reason"]
    # law="auto" replaces it with the measured record
    auto = fit(sim4, family="simc", law="auto", prior="flat", sampler=TEST_SAMPLER, seed=0)
    assert auto.provenance["choice"]["rule"] != GIVEN_RULE


def test_cli_curve_prior_sets_the_whole_curve_candidates_prior(sim4, tmp_path, capsys):
    csv = tmp_path / "sim4.csv"
    sim4.to_csv(csv, index=False)
    small = [f"--num-warmup={TEST_SAMPLER.num_warmup}", f"--num-samples={TEST_SAMPLER.num_samples}"]
    out = str(tmp_path / "f.nc")
    code = main(["fit", str(csv), "--law", "auto", "--prior", "flat", "--curve-prior", "flat",
                 *small, "--seed", "2", "--out", out, "--json", "--quiet"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert payload["choice"]["priors"] == {"end-of-run": "flat", "whole-curve": "flat"}
    code = main(["fit", str(csv), "--curve-prior", "flat", "--out", str(tmp_path / "g.nc"),
                 "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "--curve-prior is for --law auto" in err and err.count("\n") == 1


def test_bayes_auto_curve_prior_reaches_the_whole_curve_candidate(sim4):
    from hiscale.backtesting.methods import BayesCurveMethod, get_method

    with pytest.raises(ValueError, match="curve_prior needs law='auto'"):
        BayesCurveMethod(curve_prior="flat")
    m = get_method("bayes-auto", sampler=TEST_SAMPLER, curve_prior="flat")
    assert m.settings()["curve_prior"] == "flat"
    res = backtest(load_curves(sim4), methods=[m], grid=[(3, 1.0)], target="final", min_tokens=0)
    assert res["status"].eq("ok").all()
    assert "leave-future-out on N = 4e+08" in res["note"].iloc[0]
