"""Fit: predictive maths on fake posteriors, diagnostics, smoke NUTS, recovery, determinism."""

import numpy as np
import pandas as pd
import pytest
from engine_sim import simulate_family, true_loss
from scipy import stats
from test_arviz import same_groups

import hiscale
from hiscale.data.curves import load_curves
from hiscale.infer.diagnostics import diagnose
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.result import FIT_FORMAT, load_fit
from hiscale.infer.settings import SamplerSettings
from hiscale.laws import LAWS
from hiscale.modeling.simulate import true_loss as sim_true_loss
from hiscale.priors.prior import flat_prior
from hiscale.testing import TEST_SAMPLER, fake_fit

SMALL = TEST_SAMPLER


def truth_loss(f, params, tokens):
    """The law at the simulated truth of a fake fit (independent of Fit.draws)."""
    truth = {"law": f.law, **f.provenance["truth"]}
    return sim_true_loss(truth, params, tokens)


def rows(pred, kind, ci_prob=None):
    """Rows of a tidy prediction frame for one kind (and interval probability)."""
    sel = pred["kind"] == kind
    if ci_prob is not None:
        sel &= np.isclose(pred["ci_prob"], ci_prob)
    return pred[sel].reset_index(drop=True)


def test_expected_curve_of_point_posterior_is_the_law():
    f = fake_fit(spread=0.0)
    pred = f.predict(([1e9, 7e9], [1e11, 2e11]))
    e80 = rows(pred, "expected", 0.8)
    np.testing.assert_allclose(e80["median"], truth_loss(f, [1e9, 7e9], [1e11, 2e11]))
    np.testing.assert_allclose(e80["lower"], e80["upper"])
    assert list(e80["point"]) == [0, 1] and list(e80["params"]) == [1e9, 7e9]


def test_predict_is_a_tidy_frame():
    f = fake_fit()
    pred = f.predict((1e9, [1e11, 2e11, 4e11]), ci_prob=(0.5, 0.9))
    assert list(pred.columns) == [
        "point", "params", "tokens", "kind", "ci_prob", "lower", "upper", "median", "mean",
        "flagged",
    ]  # fmt: skip
    # one row per (point, kind, ci_prob), point-major
    assert len(pred) == 3 * 2 * 2
    assert list(pred["point"][:4]) == [0, 0, 0, 0]
    assert list(pred["kind"][:4]) == ["expected", "expected", "new_run", "new_run"]
    assert list(pred["ci_prob"][:4]) == [0.5, 0.9, 0.5, 0.9]
    np.testing.assert_array_equal(pred["tokens"].unique(), [1e11, 2e11, 4e11])


def test_predict_uses_the_draws():
    """Quantiles of Fit.draws at the same seed, by NumPy directly."""
    f = fake_fit(seed=2)
    at = ([1e9, 3e9], [2e10, 6e10])
    expected, new = f.draws(*at, seed=4)
    pred = f.predict(at, ci_prob=0.8, seed=4)
    for kind, arr in (("expected", expected), ("new_run", new)):
        r = rows(pred, kind)
        np.testing.assert_array_equal(r["median"], np.median(arr, axis=0))
        np.testing.assert_array_equal(r["mean"], arr.mean(axis=0))
        lo, hi = np.quantile(arr, [(1 - 0.8) / 2, (1 + 0.8) / 2], axis=0)
        np.testing.assert_array_equal(r["lower"], lo)
        np.testing.assert_array_equal(r["upper"], hi)


def test_new_run_interval_is_the_run_offset_distribution():
    # point posterior + sigma_run only: ln L_new = ln L̂ + sigma_run * t_4
    f = fake_fit(n_draws=100_000, spread=0.0, sigma_run=0.02, sigma_obs=0.0)
    pred = rows(f.predict((7e9, 2e11), ci_prob=0.8), "new_run")
    mu = np.log(truth_loss(f, 7e9, 2e11))
    q = stats.t.ppf(0.9, f.prior.settings["df_run"]) * 0.02
    np.testing.assert_allclose(np.log(pred["upper"][0]), mu + q, atol=2e-3 * 0.02 * 50)
    np.testing.assert_allclose(np.log(pred["lower"][0]), mu - q, atol=2e-3 * 0.02 * 50)
    np.testing.assert_allclose(np.log(pred["median"][0]), mu, atol=1e-3)


def test_intervals_nest_and_widen():
    f = fake_fit(spread=0.05, sigma_run=0.01, sigma_obs=0.003)
    p = f.predict((3e9, 6e10))
    for kind in ("expected", "new_run"):
        lo = [rows(p, kind, c)["lower"][0] for c in (0.95, 0.8, 0.5)]
        hi = [rows(p, kind, c)["upper"][0] for c in (0.5, 0.8, 0.95)]
        assert lo[0] < lo[1] < lo[2] and hi[0] < hi[1] < hi[2]
    # a new run is more uncertain than the expected curve
    new, exp = rows(p, "new_run", 0.8), rows(p, "expected", 0.8)
    assert new["upper"][0] - new["lower"][0] > exp["upper"][0] - exp["lower"][0]


def test_predict_rejects_bad_input():
    f = fake_fit()
    with pytest.raises(ValueError, match="params N must be finite and > 0"):
        f.predict((-5, 1e10))
    with pytest.raises(ValueError, match="tokens D must be finite and > 0"):
        f.predict((1e9, np.inf))
    with pytest.raises(ValueError, match="ci_prob"):
        f.predict((1e9, 1e10), ci_prob=1.5)
    with pytest.raises(ValueError, match=r"at must be a target point \(N, D\)"):
        f.predict(1e9)
    with pytest.raises(ValueError, match=r"at must be a target point \(N, D\)"):
        f.predict((1e9, 1e10, 1e11))


def test_predict_is_deterministic_given_seed():
    f = fake_fit(spread=0.05)
    a = f.predict((1e9, 1e11), seed=3)
    b = f.predict((1e9, 1e11), seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(f.predict((1e9, 1e11), seed=4))


def _chains(shift):
    rng = np.random.default_rng(0)
    s = {
        "xi": rng.standard_normal((2, 2000, 4)),
        "log_scale": rng.standard_normal((2, 2000)),
        "log_sigma_run": rng.standard_normal((2, 2000)),
        "log_sigma_obs": rng.standard_normal((2, 2000)),
    }
    s["log_scale"][1] += shift
    return s


def test_diagnose_passes_good_chains_and_flags_disagreeing_ones():
    energy = np.random.default_rng(1).standard_normal((2, 2000))
    ok = diagnose(
        _chains(0.0),
        diverging=np.zeros((2, 2000), bool),
        num_steps=np.full((2, 2000), 7),
        max_tree_depth=8,
        energy=energy,
    )
    assert not ok["flagged"], ok["reasons"]
    bad = diagnose(
        _chains(5.0),
        diverging=np.zeros((2, 2000), bool),
        num_steps=np.full((2, 2000), 7),
        max_tree_depth=8,
        energy=energy,
    )
    assert bad["flagged"]
    assert "r_hat" in bad["reasons"] and "chains disagree" in bad["reasons"]
    assert bad["worst_site"] == "log_scale"
    div = diagnose(
        _chains(0.0),
        diverging=np.eye(2, 2000, dtype=bool),
        num_steps=np.full((2, 2000), 255),
        max_tree_depth=8,
        energy=np.cumsum(energy, axis=1),  # a random walk: E-BFMI ~ 0
    )
    assert div["flagged"] and div["divergences"] == 2 and div["tree_depth_hits"] == 4000
    assert div["bfmi_min"] < 0.3 and "E-BFMI" in div["reasons"]


@pytest.fixture(scope="module")
def small_fit():
    frame = simulate_family(seed=0)
    return fit(frame, prior="flat", seed=0, sampler=SMALL)


def test_smoke_nuts_runs_and_reports(small_fit):
    f = small_fit
    assert f.posterior["u_a"].shape == (SMALL.num_chains, SMALL.num_samples)
    for key in (
        "rhat_max",
        "ess_min",
        "ess_tail_min",
        "divergences",
        "tree_depth_hits",
        "bfmi_min",
        "chain_disagreement",
        "flagged",
    ):
        assert key in f.diagnostics
    assert f.diagnostics["rhat_max"] < 1.1
    assert "sampler:" in f.verdict() and "E-BFMI" in f.verdict()
    assert f.sampler == SMALL and f.options == FitOptions()
    # where each chain started is part of the fit's record
    inits = f.provenance["inits"]
    assert inits["method"] == "dispersed" and len(inits["chains"]) == 2
    assert inits["chains"][0].startswith("MAP")
    assert inits["paper_least_squares"].startswith("ok")


def test_small_recovery_of_the_target(small_fit):
    """Five sizes 5e7..8e8: predict a 4x larger model within a few percent."""
    target_n, target_d = 3.2e9, 40 * 3.2e9
    truth = true_loss(target_n, target_d)
    p = small_fit.predict((target_n, target_d), ci_prob=0.95)
    expected, new = p.iloc[0], p.iloc[1]
    assert (expected["kind"], new["kind"]) == ("expected", "new_run")
    assert abs(expected["median"] / truth - 1) < 0.03
    assert new["lower"] < truth < new["upper"]
    # the exponents are recovered roughly
    alpha = np.exp(small_fit.posterior["log_alpha"]).mean()
    assert 0.15 < alpha < 0.6


def test_fit_is_bit_identical_for_the_same_seed(small_fit):
    frame = simulate_family(seed=0)
    again = fit(frame, prior="flat", seed=0, sampler=SMALL)
    for k in ("u_a", "log_alpha", "sigma_run"):
        np.testing.assert_array_equal(small_fit.posterior[k], again.posterior[k])
    pd.testing.assert_frame_equal(small_fit.predict((1e9, 1e11)), again.predict((1e9, 1e11)))
    # the replicates are drawn once, from the seed: the whole tree is identical
    assert same_groups(small_fit.to_datatree(), again.to_datatree())


# five runs only: PSIS warns that some Pareto k are high, which is expected here
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_datatree_groups_and_loo(small_fit):
    import arviz as az

    dt = small_fit.to_datatree()
    for group in (
        "posterior",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    ):
        assert group in dt.children
    assert dt.attrs["family"] == "sim" and "prior_json" in dt.attrs
    # sample stats are per draw and agree with the fit's own diagnostics
    stats = dt["sample_stats"]
    n_steps = np.asarray(stats["n_steps"])
    assert n_steps.shape == (SMALL.num_chains, SMALL.num_samples)
    # a NUTS tree of depth d takes between 1 and 2**d - 1 leapfrog steps
    assert n_steps.min() >= 1 and n_steps.max() <= 2**SMALL.max_tree_depth - 1
    assert int(stats["reached_max_tree_depth"].sum()) == small_fit.diagnostics["tree_depth_hits"]
    assert int(stats["diverging"].sum()) == small_fit.diagnostics["divergences"]
    for name in ("energy", "lp", "diverging", "n_steps", "tree_depth", "step_size"):
        assert stats[name].shape == (SMALL.num_chains, SMALL.num_samples), name
    # ArviZ's E-BFMI from the stored energy is the one diagnose() flagged on
    bfmi = np.asarray(az.bfmi(dt)["energy"])
    assert bfmi.shape == (SMALL.num_chains,)
    np.testing.assert_allclose(bfmi.min(), small_fit.diagnostics["bfmi_min"], rtol=1e-10)
    # NUTS caps the tree depth; a draw that hit the cap has the largest depth
    depth = np.asarray(stats["tree_depth"])
    reached = np.asarray(stats["reached_max_tree_depth"])
    assert depth.min() >= 1 and depth.max() <= SMALL.max_tree_depth
    assert np.all(depth[reached] == SMALL.max_tree_depth)
    elpd = az.loo(dt, var_name="run_log_loss")
    assert np.isfinite(elpd.elpd) and elpd.elpd_i.shape == (dt["observed_data"].sizes["run"],)
    # the tree is the fit's state: the same object every time, nothing redrawn
    assert small_fit.to_datatree() is dt
    # the posterior holds the fitted rows' mu only (no padding)
    assert dt["posterior"]["mu"].shape == (SMALL.num_chains, SMALL.num_samples, len(small_fit.data))
    assert dt["posterior"]["u_a"].dtype == np.float64


def test_save_load_roundtrip_is_bit_identical(small_fit, tmp_path):
    path = small_fit.save(tmp_path / "fit.nc")
    back = load_fit(path)
    at = ([1e9, 4e9], [1e11, 2e11])
    pd.testing.assert_frame_equal(
        small_fit.predict(at, seed=5), back.predict(at, seed=5), check_exact=True
    )
    assert back.diagnostics == small_fit.diagnostics
    assert back.to_datatree().identical(small_fit.to_datatree())
    pd.testing.assert_frame_equal(back.data, small_fit.data, check_exact=True)
    for name in ("sampler", "options", "log", "provenance", "timings"):
        assert getattr(back, name) == getattr(small_fit, name), name
    assert back.prior.label == small_fit.prior.label
    np.testing.assert_array_equal(back.prior.cov, small_fit.prior.cov)
    # one tree on disk: no second copy of the draws
    import xarray as xr

    with xr.open_datatree(path, engine="h5netcdf") as on_disk:
        assert set(on_disk.children) == {
            "posterior", "sample_stats", "log_likelihood", "posterior_predictive",
            "observed_data", "constant_data",
        }  # fmt: skip


def test_load_rejects_non_fit_files(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a netcdf file")
    with pytest.raises(ValueError, match="is not a hiscale fit"):
        load_fit(bad)
    with pytest.raises(ValueError, match="not found"):
        load_fit(tmp_path / "missing.nc")


def test_load_rejects_the_old_format(tmp_path):
    f = fake_fit()
    path = f.save(tmp_path / "fit.nc")
    old = f.to_datatree().copy()
    old.attrs["hiscale_format"] = "hiscale-fit-1"
    old.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match=r"format 'hiscale-fit-1'.*reads 'hiscale-fit-2'"):
        load_fit(tmp_path / "old.nc")
    assert load_fit(path).to_datatree().attrs["hiscale_format"] == FIT_FORMAT


def test_retry_sampler_takes_smaller_steps_and_more_draws():
    from hiscale.infer.settings import CURVE_SAMPLER, retry_sampler

    s = retry_sampler(SamplerSettings())
    assert (s.num_warmup, s.num_samples, s.max_tree_depth) == (1000, 4000, 10)
    assert s.target_accept_prob == pytest.approx(0.99) and s.init_mass == "laplace"
    c = retry_sampler(CURVE_SAMPLER)  # already at 0.99: half its rejection rate
    assert c.target_accept_prob == pytest.approx(0.995) and c.num_samples == 4000


def test_flagged_fit_is_rerun_once_and_says_so(monkeypatch):
    """A flagged default-sampler fit is re-run once; given settings run as given.

    The r-hat threshold 0 flags every run, so the second run is flagged too;
    the default settings are the short test sampler, to keep the test quick.
    """
    from dataclasses import replace

    import hiscale.infer.fit as fit_mod
    from hiscale.infer.settings import THRESHOLDS

    frame = simulate_family(seed=0)
    # the short test sampler stands in for the defaults, and a short careful one for
    # retry_sampler's (tested above), to keep the test quick
    careful = replace(SMALL, num_samples=2 * SMALL.num_samples, target_accept_prob=0.95)
    monkeypatch.setattr(fit_mod, "default_sampler", lambda options: SMALL)
    monkeypatch.setattr(fit_mod, "retry_sampler", lambda settings: careful)
    monkeypatch.setitem(THRESHOLDS, "rhat_max", 0.0)
    f = fit(frame, prior="flat", seed=0)  # no sampler given: a flag re-runs
    r = f.provenance["retry"]
    assert r["first_sampler"] == SMALL.to_dict() and r["first_diagnostics"]["flagged"]
    assert f.retried == r["first_diagnostics"]["reasons"] and f.retried.startswith("r_hat")
    assert f.sampler == careful
    assert f.posterior["u_a"].shape == (careful.num_chains, 2 * SMALL.num_samples)
    assert f.flagged and r["second_flagged"]
    assert any("re-run once" in n and "still flagged" in n for n in f.provenance["notes"])
    assert f.verdict().endswith(f"(second run; the first was flagged: {f.retried})")
    # the second run is a run with the careful settings (same seed), given explicitly
    # here, so it is not re-run although flagged
    g = fit(frame, prior="flat", seed=0, sampler=careful)
    np.testing.assert_array_equal(f.posterior["u_a"], g.posterior["u_a"])
    assert g.flagged and g.retried == "" and "retry" not in g.provenance
    # retry=False: one run
    h = fit(frame, prior="flat", seed=0, retry=False)
    assert h.flagged and h.sampler == SMALL and "retry" not in h.provenance
    # an unflagged fit is not re-run
    monkeypatch.setitem(THRESHOLDS, "rhat_max", np.inf)
    for key, value in {"ess_min": 0.0, "divergences": 10**9, "tree_depth_hits_frac": 1.0,
                       "chain_disagreement": np.inf, "bfmi_min": 0.0}.items():  # fmt: skip
        monkeypatch.setitem(THRESHOLDS, key, value)
    k = fit(frame, prior="flat", seed=0)
    assert not k.flagged and k.sampler == SMALL and "retry" not in k.provenance


def test_fit_requires_family_when_several():
    frame = pd.concat([simulate_family("a"), simulate_family("b")])
    with pytest.raises(hiscale.CurvesError, match="pick one with family="):
        fit(load_curves(frame), prior="flat", sampler=SMALL)


def test_final_only_family_pins_checkpoint_noise():
    frame = simulate_family(n_ckpt=1, sizes=(5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9))
    f = fit(frame, prior="flat", sampler=SMALL)
    assert f.prior.settings["sigma_obs"][1] == pytest.approx(0.1)
    assert LAWS[f.law].params == ("u_a", "u_b", "log_alpha", "log_beta")


@pytest.mark.slow
def test_recovery_tightens_with_more_sizes():
    """Slow: more sizes -> smaller error on a 10x extrapolation (recovery)."""
    errs = []
    for sizes in [(5e7, 1e8, 2e8), (5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9)]:
        f = fit(simulate_family(sizes=sizes, seed=11), prior="flat", sampler=SamplerSettings())
        p = f.predict((1.6e10, 40 * 1.6e10))
        errs.append(abs(p["median"][0] / true_loss(1.6e10, 40 * 1.6e10) - 1))
    assert errs[1] < 0.02
    assert errs[1] <= errs[0] + 1e-3


@pytest.mark.slow
def test_simulated_coverage_of_80_percent_intervals():
    """Slow: families drawn from the prior; 80% new-run intervals cover ~80%."""
    rng = np.random.default_rng(0)
    prior = flat_prior()
    hits = []
    for i in range(30):
        z = rng.multivariate_normal(prior.loc, prior.cov * 0.25)
        truth = dict(zip(prior.names, z, strict=True)) | {"log_scale": np.log(2.5)}
        frame = simulate_family(
            f"s{i}", truth=truth, seed=i, sizes=(5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9)
        )
        target = frame[frame["params"] == 1.6e9]
        train = frame[frame["params"] < 1.6e9]
        f = fit(
            train, prior="flat", seed=i, sampler=SamplerSettings(num_warmup=300, num_samples=300)
        )
        row = target.iloc[-1]
        p = f.predict((row["params"], row["tokens"]), ci_prob=0.8)
        new = p[p["kind"] == "new_run"].iloc[0]
        hits.append(new["lower"] <= row["loss"] <= new["upper"])
    assert 0.6 <= np.mean(hits) <= 0.95
