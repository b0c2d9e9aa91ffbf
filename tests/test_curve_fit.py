"""Whole-curve fits: fit() with a curve law, predict_curve, predict_run, fallback, CLI.

The family is simulated from the whole-curve model itself (its generative
branch, known truth); the continuation of a run is checked against the
Gaussian conditional computed densely with numpy from the covariance's
definition.
"""

import json
import warnings

import jax
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from scipy.stats import multivariate_normal, norm
from test_arviz import same_groups

from hiscale.cli import main
from hiscale.data.schedule import reconstruct
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.result import load_fit
from hiscale.infer.settings import CURVE_SAMPLER
from hiscale.laws import D0, N0
from hiscale.modeling.curve import (
    ar1_paths,
    centred_xi,
    continuation_moments,
    curve_prior_arrays,
    make_curve_design,
    make_curve_model,
    offset_posterior,
    replicate_runs,
    select_curve_rows,
    thin_log_tokens,
)
from hiscale.testing import TEST_SAMPLER

HORIZON = 2e10
SCHEDULE = "cosine to 10% over 20B tokens, 100M-token warm-up"
TRUTH = {
    "xi": np.array([0.3, 0.2, 0.1, 0.2, 0.5, 0.0]),
    "log_loss_ref": np.log(3.0),
    "log_sigma_run": np.log(0.01),
    "log_sigma_obs": np.log(0.004),
    "logit_rho": 2.0,
}
CURVE = FitOptions(rows="all", residual="ar1")


def simulate_curves(seed=0, sizes=(1e8, 3e8, 1e9), n_rows=40):
    """One family, one cosine run per size, drawn from the h-term curve model at TRUTH."""
    rows = [
        {
            "family": "simc",
            "run": f"simc-{p:g}",
            "params": p,
            "tokens": d,
            "loss": 3.0,
            "schedule": SCHEDULE,
            "run_tokens": HORIZON,
        }
        for p in sizes
        for d in np.geomspace(0.05 * HORIZON, HORIZON, n_rows)
    ]
    frame = reconstruct(pd.DataFrame(rows))
    design = make_curve_design(frame, "h-term")
    prior = curve_prior_arrays("h-term", log_scale_loc=np.log(3.0))
    model = make_curve_model("h-term")
    tr = handlers.trace(
        handlers.seed(handlers.condition(model, TRUTH), jax.random.PRNGKey(seed))
    ).get_trace(**design.model_args(), prior=prior)
    out = frame.sort_values(["params", "run", "tokens"]).reset_index(drop=True)
    out["loss"] = np.exp(np.asarray(tr["log_loss"]["value"])[: design.n_rows])
    mu = np.asarray(tr["mu"]["value"])[: design.n_rows]
    return out[["family", "run", "params", "tokens", "loss", "schedule", "run_tokens"]], mu


@pytest.fixture(scope="module")
def sim():
    return simulate_curves()


@pytest.fixture(scope="module")
def curve_fit(sim):
    frame, _ = sim
    return fit(frame, family="simc", law="h-term", prior="flat", options=CURVE,
               sampler=TEST_SAMPLER, seed=1)  # fmt: skip


# --- the conditionals, against dense Gaussians ------------------------------------------


def dense_cov(t, sigma_run, sigma, rho, ell=1.0):
    """sigma_run^2 11^T + sigma^2 rho^{|t_i - t_j|/ell}, from the definition."""
    t = np.asarray(t)
    return sigma_run**2 + sigma**2 * rho ** (np.abs(t[:, None] - t[None, :]) / ell)


@pytest.mark.parametrize("rho, ell", [(0.9, 1.0), (0.3, 0.5), (0.99, 2.0)])
def test_continuation_is_the_dense_gaussian_conditional(rho, ell):
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(-3, -1, 7))
    t_new = np.sort(rng.uniform(-1, 0.5, 4))
    sr, sg = 0.02, 0.01
    e = rng.multivariate_normal(np.zeros(len(t)), dense_cov(t, sr, sg, rho, ell))
    mean, cov = continuation_moments(e, t, t_new, sr, sg, rho, ell)
    full = dense_cov(np.concatenate([t, t_new]), sr, sg, rho, ell)
    n = len(t)
    s11, s12, s22 = full[:n, :n], full[:n, n:], full[n:, n:]
    np.testing.assert_allclose(mean, s12.T @ np.linalg.solve(s11, e), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, s22 - s12.T @ np.linalg.solve(s11, s12), atol=1e-12)
    # the run offset's conditional: Cov(delta, e) = sigma_run^2 1
    m, v = offset_posterior(e, t, sr, sg, rho, ell)
    c = np.full(n, sr**2)
    assert m[0] == pytest.approx(c @ np.linalg.solve(s11, e), rel=1e-9)
    assert v[0] == pytest.approx(sr**2 - c @ np.linalg.solve(s11, c), rel=1e-9)


def test_continuation_refuses_points_before_the_last_row():
    with pytest.raises(ValueError, match="before the run's last observed row"):
        continuation_moments(np.zeros(3), [0.0, 1.0, 2.0], [1.5], 0.01, 0.01, 0.9)


def test_ar1_paths_have_the_ar1_covariance():
    t = np.array([0.0, 0.1, 0.5, 1.5])
    s = 40_000
    u = ar1_paths(np.random.default_rng(1), t, None, np.full(s, 0.02), np.full(s, 0.8))
    # MC sd of an entry ~ 4e-4 x sqrt(2 / 40000) ~ 3e-6
    np.testing.assert_allclose(np.cov(u, rowvar=False), dense_cov(t, 0.0, 0.02, 0.8), atol=2e-5)


class _GivenNormals:
    """Stands in for a Generator: returns the given standard normals."""

    def __init__(self, z):
        self.z = z

    def standard_normal(self, shape):
        assert tuple(shape) == self.z.shape
        return self.z


def test_replicate_runs_draws_each_runs_conditional_offset_and_a_fresh_path():
    """All runs at once, by blocks of draws, equal run-by-run draws from the same normals.

    The reference is the run-by-run computation: the offset's conditional
    (:func:`offset_posterior`, tested against the dense Gaussian above) and
    :func:`ar1_paths` (tested for the AR(1) covariance above), fed the normals
    in the order ``replicate_runs`` documents.
    """
    rng = np.random.default_rng(3)
    lengths, n_draws, block, ell = [1, 4, 7], 5, 2, 0.7
    run_idx = np.repeat(np.arange(3), lengths)
    t = np.concatenate([np.sort(rng.uniform(-3, 0, k)) for k in lengths])
    mu = 1.0 + 0.01 * rng.standard_normal((n_draws, len(t)))
    obs = 1.0 + 0.01 * rng.standard_normal(len(t))
    sr, so, rho = (
        rng.uniform(0.005, 0.02, n_draws),
        rng.uniform(0.002, 0.01, n_draws),
        rng.uniform(0.2, 0.95, n_draws),
    )
    loglik, rep, run_rep = replicate_runs(
        mu, obs, t, run_idx, sr, so, rho, ell, rng=np.random.default_rng(9), block=block
    )
    # each run's log density: the dense multivariate normal of its residuals
    for s in range(n_draws):
        for i in range(3):
            rows = run_idx == i
            cov = dense_cov(t[rows], sr[s], so[s], rho[s], ell)
            dens = multivariate_normal(np.zeros(rows.sum()), cov).logpdf(obs[rows] - mu[s, rows])
            assert loglik[s, i] == pytest.approx(dens, rel=1e-10)
    g = np.random.default_rng(9)
    for lo in range(0, n_draws, block):
        d = slice(lo, min(lo + block, n_draws))
        b = d.stop - lo
        z_off, e1 = g.standard_normal((b, 3)), g.standard_normal((b, len(t)))
        z_new, e2 = g.standard_normal((b, 3)), g.standard_normal((b, len(t)))
        for i in range(3):
            rows = run_idx == i
            m, v = offset_posterior(obs[rows] - mu[d][:, rows], t[rows], sr[d], so[d], rho[d], ell)
            u1 = ar1_paths(_GivenNormals(e1[:, rows]), t[rows], None, so[d], rho[d], ell)
            expected = mu[d][:, rows] + (m + np.sqrt(v) * z_off[:, i])[:, None] + u1
            np.testing.assert_allclose(rep[d][:, rows], expected, rtol=1e-13, atol=1e-15)
            u2 = ar1_paths(_GivenNormals(e2[:, rows]), t[rows], None, so[d], rho[d], ell)
            new_mean = (mu[d][:, rows] + u2).mean(axis=1) + sr[d] * z_new[:, i]
            np.testing.assert_allclose(run_rep[d][:, i], new_mean, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "run_idx, message",
    [
        ([0, 1, 0, 1], r"run_idx 0 at row 2: .*adjacent"),
        ([0, 0, 0, 0], r"t 0\.5 at row 2 \(run 0\) does not exceed the row before \(1\)"),
    ],
)
def test_replicate_runs_refuses_rows_out_of_order(run_idx, message):
    t = np.array([0.0, 1.0, 0.5, 2.0])  # run 0 of the second case goes back at row 2
    with pytest.raises(ValueError, match=message):
        replicate_runs(
            np.zeros((2, 4)), np.zeros(4), t, np.array(run_idx), [0.01] * 2, [0.01] * 2,
            [0.9] * 2, rng=np.random.default_rng(0),
        )  # fmt: skip


def test_predict_run_draws_the_dense_conditional(curve_fit):
    """With every draw at one parameter value, the continuation is the MVN conditional."""
    dt = curve_fit.to_datatree().copy()
    post = dt["posterior"].to_dataset()
    pick = {"chain": 0, "draw": 0}
    fixed = post.copy()
    for name in fixed.data_vars:
        fixed[name] = post[name].isel(pick).broadcast_like(post[name])
    dt["posterior"] = fixed
    point = type(curve_fit)(dt)
    run = point.data["run"].iloc[-1]
    tokens = np.array([2.2e10, 3e10])
    pred = point.predict_run(run, tokens, ci_prob=0.8, seed=3)
    # independent: residuals of the run at the draw, dense conditional by numpy
    th = {k: float(v[0]) for k, v in point.theta().items()}
    data = point.data
    sel = data["run"] == run
    t = np.log(data.loc[sel, "tokens"].to_numpy() / D0)
    mu_obs = np.asarray(fixed["mu"].isel(pick).values)[sel.to_numpy()]
    e = np.log(data.loc[sel, "loss"].to_numpy()) - mu_obs
    t_new = np.log(tokens / D0)
    full = dense_cov(np.concatenate([t, t_new]), th["sigma_run"], th["sigma_obs"], th["rho"])
    n = len(t)
    s11, s12, s22 = full[:n, :n], full[n:, :n].T, full[n:, n:]
    mean = s12.T @ np.linalg.solve(s11, e)
    sd = np.sqrt(np.diag(s22 - s12.T @ np.linalg.solve(s11, s12)))
    law = pred[pred["kind"] == "expected"]
    mu_new = np.log(law["median"].to_numpy())
    np.testing.assert_allclose(law["lower"], law["upper"])  # one parameter value
    this = pred[pred["kind"] == "this_run"]
    s = len(point.theta()["rho"])
    # median of S draws: MC sd ~ 1.25 sd / sqrt(S); quantiles a little wider
    tol = 5 * 1.8 * sd / np.sqrt(s)
    z = norm.ppf(0.9)
    for col, k in (("median", 0.0), ("upper", z), ("lower", -z)):
        err = np.log(this[col].to_numpy()) - (mu_new + mean + k * sd)
        assert np.all(np.abs(err) < tol), (col, err, tol)


def test_centred_model_is_the_same_posterior(sim):
    """Log density differences agree between the plain and the centred coordinates."""
    from numpyro.infer.util import log_density

    frame, _ = sim
    design = make_curve_design(reconstruct(frame), "h-term")
    prior = curve_prior_arrays("h-term", log_scale_loc=design.log_scale_loc)
    kwargs = {**design.model_args(), "prior": prior, "log_loss": design.log_loss}
    plain, centred = make_curve_model("h-term"), make_curve_model("h-term", centred=True)
    rest = {"log_loss_ref": 1.1, "log_sigma_run": -4.5, "log_sigma_obs": -5.3, "logit_rho": 2.0}
    rng = np.random.default_rng(4)
    xis = [rng.normal(0, 1, 6) for _ in range(3)]
    lp_plain = [float(log_density(plain, (), kwargs, {**rest, "xi": xi})[0]) for xi in xis]
    lp_centred = [
        float(log_density(centred, (), kwargs, {**rest, "xi": centred_xi(xi, prior, "h-term",
                                                                          design)})[0])
        for xi in xis
    ]  # fmt: skip
    np.testing.assert_allclose(np.diff(lp_centred), np.diff(lp_plain), rtol=1e-9, atol=1e-9)
    assert lp_centred[0] == pytest.approx(lp_plain[0], rel=1e-12)  # same normalising constant
    # and the law parameters it implies are the plain model's
    tr = handlers.trace(
        handlers.condition(centred, {**rest, "xi": centred_xi(xis[0], prior, "h-term", design)})
    ).get_trace(**kwargs)
    z = prior["loc"] + prior["chol"] @ xis[0]
    np.testing.assert_allclose([float(tr["u_a"]["value"]), float(tr["log_beta"]["value"])],
                               [z[0], z[3]], rtol=1e-12)  # fmt: skip


# --- row selection ---------------------------------------------------------------------


def test_thinning_is_even_in_log_tokens_and_keeps_both_ends():
    d = np.geomspace(1e8, 1e11, 1000) ** 1.0
    d = np.sort(np.concatenate([d, np.linspace(5e10, 1e11, 500)]))  # dense at the end
    frame = pd.DataFrame({"run": "r", "tokens": d, "loss": 1.0})
    kept = thin_log_tokens(frame, 32)["tokens"].to_numpy()
    assert len(kept) <= 32 and kept[0] == d[0] and kept[-1] == d[-1]
    gaps = np.diff(np.log(kept))
    target = np.log(d[-1] / d[0]) / 31
    assert np.all(np.abs(gaps - target) < 0.2 * target)


def test_curve_selection_is_logged(sim):
    from hiscale.data.curves import load_curves

    frame, _ = sim
    c = select_curve_rows(load_curves(frame), min_tokens=0, start_fraction=0.1,
                          max_rows_per_run=16)  # fmt: skip
    steps = [r.step for r in c.log]
    assert steps[-2:] == ["curve_start", "thin_log_tokens"]
    assert "evenly spaced in ln D" in c.log[-1].reason
    assert c.frame.groupby("run").size().max() <= 16
    assert "end_of_run" not in steps


def test_rows_in_a_runs_warmup_are_left_out_of_whole_curve_fits():
    """A run cut early keeps rows of its warmup; the h-term would read their LR as a cooldown."""
    from hiscale.data.curves import load_curves
    from hiscale.data.schedule import reconstruct

    # 1000-step linear warmup at 1e5 tokens per step, constant to 1e5 steps; the run is
    # cut at 2e8 tokens (p = 0.02 of its horizon), so curve_start (0.1 x 2e8) keeps warmup rows
    d = np.linspace(1e7, 2e8, 20)
    extra = pd.DataFrame([{"run": "r", "tokens_per_step": 1e5, "total_steps": 1e5,
                           "warmup_steps": 1000, "warmup_shape": "linear",
                           "decay_shape": "none"}])  # fmt: skip
    frame = reconstruct(
        pd.DataFrame({"family": "w", "run": "r", "params": 1e8, "tokens": d, "loss": 3.0}), extra
    )
    assert np.all(frame["warmup_tokens"] == 1e8)
    c = select_curve_rows(load_curves(frame), min_tokens=0, start_fraction=0.1,
                          max_rows_per_run=0)  # fmt: skip
    steps = {r.step: r for r in c.log}
    assert np.array_equal(c.frame["tokens"].to_numpy(), d[d > 1e8])
    assert steps["warmup"].removed == int(np.sum((d >= 2e7) & (d <= 1e8)))
    assert "warmup" in steps["warmup"].reason
    # frames without the column (end-of-run laws, no schedule) have no such step
    bare = select_curve_rows(load_curves(frame.drop(columns="warmup_tokens")), min_tokens=0,
                             start_fraction=0.1, max_rows_per_run=0)  # fmt: skip
    assert "warmup" not in [r.step for r in bare.log]


def test_row_budget_is_shared_by_the_runs_and_logged():
    from hiscale.data.curves import load_curves
    from hiscale.modeling.curve import MIN_CURVE_ROWS_PER_RUN

    def family(n_runs):
        d = np.geomspace(1e9, 1e11, 50)
        return pd.DataFrame(
            [{"family": "b", "run": f"r{i}", "params": 1e8 * (1 + i), "tokens": t, "loss": 3.0}
             for i in range(n_runs) for t in d]
        )  # fmt: skip

    for n_runs, each, shared in ((10, 32, False), (20, 25, True), (300, 32, False)):
        c = select_curve_rows(load_curves(family(n_runs)), min_tokens=0, start_fraction=0,
                              max_rows_per_run=32, max_rows=512)  # fmt: skip
        sizes = c.frame.groupby("run").size()
        assert sizes.max() <= each and sizes.min() >= each - 1  # nearest rows may merge
        assert len(c.frame) <= 512 or not shared
        first_last = c.frame.groupby("run")["tokens"].agg(["min", "max"])
        assert (first_last["min"] == 1e9).all() and np.allclose(first_last["max"], 1e11)
        assert ("share a budget of 512 rows" in c.log[-1].reason) == shared
    # 300 runs cannot share 512 rows with >= 16 each: the budget is not applied, and said so
    assert f"fewer than {MIN_CURVE_ROWS_PER_RUN} rows each" in c.log[-1].reason
    # the budget is a whole-curve field: end-of-run provenance and cache keys are unchanged
    assert "max_curve_rows" not in FitOptions().to_dict()
    assert FitOptions(rows="all", residual="ar1").to_dict()["max_curve_rows"] == 512
    # no budget: the per-run cap alone
    c = select_curve_rows(load_curves(family(40)), min_tokens=0, start_fraction=0,
                          max_rows_per_run=32, max_rows=0)  # fmt: skip
    assert c.frame.groupby("run").size().max() == 32


# --- the fit ---------------------------------------------------------------------------


def test_curve_fit_end_to_end(curve_fit, sim):
    frame, mu_true = sim
    f = curve_fit
    assert f.is_curve and f.law == "h-term" and f.options == CURVE
    dt = f.to_datatree()
    assert {"rho", "u_f", "r_f", "sigma_run", "sigma_obs"} <= set(dt["posterior"].data_vars)
    assert {"lr_mult", "s1", "anneal"} <= set(dt["constant_data"].data_vars)
    assert dt["log_likelihood"]["run_log_loss"].dims[-1] == "run"
    assert dt["posterior_predictive"]["log_loss"].dims[-1] == "row"
    assert set(d["step"] for d in json.loads(dt.attrs["log_json"])) >= {
        "schedule", "curve_start", "thin_log_tokens"
    }  # fmt: skip
    for key in ("rhat_max", "ess_min", "divergences", "flagged"):
        assert key in f.diagnostics
    # the per-run log likelihood is the dense Gaussian of the run's residuals (one draw)
    th = {k: float(v[0]) for k, v in f.theta().items()}
    mu = np.asarray(dt["posterior"]["mu"].values)[0, 0]
    data = f.data
    runs = list(dt["log_likelihood"]["run"].values)
    for i, run in enumerate(runs):
        sel = (data["run"] == run).to_numpy()
        t = np.log(data["tokens"].to_numpy()[sel] / D0)
        e = np.log(data["loss"].to_numpy()[sel]) - mu[sel]
        cov = dense_cov(t, th["sigma_run"], th["sigma_obs"], th["rho"])
        ll = float(dt["log_likelihood"]["run_log_loss"].values[0, 0, i])
        assert ll == pytest.approx(multivariate_normal(np.zeros(len(t)), cov).logpdf(e), rel=1e-8)
    # the fitted mean curve is near the simulated truth (noise sd ~ 0.01 per run)
    fitted = np.median(np.asarray(dt["posterior"]["mu"].values).reshape(-1, len(data)), 0)
    sel = frame["tokens"] >= 0.1 * HORIZON
    assert np.max(np.abs(fitted - mu_true[sel.to_numpy()])) < 0.05


def test_curve_fit_save_load_is_bit_identical(curve_fit, tmp_path):
    back = load_fit(curve_fit.save(tmp_path / "curve.nc"))
    assert back.to_datatree().identical(curve_fit.to_datatree())
    assert same_groups(back.to_datatree(), curve_fit.to_datatree())
    assert back.curve == curve_fit.curve and back.options == curve_fit.options
    a = curve_fit.predict_curve(2e9, 3e10, seed=4)
    b = back.predict_curve(2e9, 3e10, seed=4)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_predict_curve_shapes_and_determinism(curve_fit):
    f = curve_fit
    c = f.predict_curve(2e9, 4e10, ci_prob=(0.5, 0.9), seed=2, n_points=20)
    assert list(c.columns) == ["tokens", "kind", "ci_prob", "lower", "upper", "median", "mean"]
    assert len(c) == 20 * 2 * 2
    assert c["tokens"].max() == pytest.approx(4e10)
    assert "usual schedule" in c.attrs["schedule"] and c.attrs["schedule_fields"]["horizon"] == 4e10
    assert np.all(c["lower"] <= c["median"]) and np.all(c["median"] <= c["upper"])
    e90 = c[(c["kind"] == "expected") & (c["ci_prob"] == 0.9)]
    n90 = c[(c["kind"] == "new_run") & (c["ci_prob"] == 0.9)]
    assert np.all(n90["upper"].to_numpy() - n90["lower"].to_numpy()
                  > e90["upper"].to_numpy() - e90["lower"].to_numpy())  # fmt: skip
    pd.testing.assert_frame_equal(c, f.predict_curve(2e9, 4e10, ci_prob=(0.5, 0.9), seed=2,
                                                     n_points=20), check_exact=True)  # fmt: skip
    # the expected curve falls along a cosine run and a constant schedule ends higher
    med = e90["median"].to_numpy()
    assert np.all(np.diff(med) < 0)
    const = f.predict_curve(2e9, 4e10, schedule="constant", tokens=[4e10], ci_prob=0.9)
    assert const.attrs["schedule"].startswith("constant")
    assert float(const[const["kind"] == "expected"]["median"].iloc[0]) > med[-1]
    # a point prediction is the end point of the family's schedule over D
    p = f.predict((2e9, 4e10), ci_prob=0.9)
    assert float(p[p["kind"] == "expected"]["median"].iloc[0]) == pytest.approx(med[-1], rel=1e-12)
    with pytest.raises(ValueError, match="schedule 'nope' unknown"):
        f.predict_curve(2e9, 4e10, schedule="nope")


def test_predict_run_continues_from_the_run(curve_fit):
    f = curve_fit
    run = f.data["run"].iloc[0]
    with pytest.raises(ValueError, match="already at the end of its schedule"):
        f.predict_run(run)
    with pytest.raises(ValueError, match="lies before run"):
        f.predict_run(run, [1e9])
    with pytest.raises(ValueError, match="not in the fit"):
        f.predict_run("nope", [3e10])
    r = f.predict_run(run, [2.1e10, 3e10], ci_prob=0.8, seed=0)
    assert set(r["kind"]) == {"expected", "this_run"}
    assert r.attrs["run"] == run and r.attrs["last_tokens"] == pytest.approx(HORIZON)
    # right after the last row, the run stays near its last loss (its own offset + AR state)
    first = r[(r["kind"] == "this_run") & (r["tokens"] == 2.1e10)]
    assert abs(np.log(first["median"].iloc[0] / r.attrs["last_loss"])) < 0.02


def test_unknown_schedule_falls_back_and_says_so(sim):
    frame, _ = sim
    frame = frame.assign(schedule=np.nan)
    with pytest.warns(UserWarning, match="fitted with the end-of-run model"):
        f = fit(frame, family="simc", law="h-term", prior="flat", options=CURVE,
                sampler=TEST_SAMPLER, seed=0)  # fmt: skip
    assert f.law == "chinchilla" and not f.is_curve
    assert f.options.rows == "end" and f.options.residual == "iid"
    fb = f.provenance["fallback"]
    assert fb["requested"]["law"] == "h-term" and "schedule column empty" in fb["reason"]
    assert fb["reason"] in f.provenance["notes"]


def test_one_checkpoint_per_run_falls_back_and_says_so(sim):
    """Final-only rows: the offset/AR(1) split has no data; the end-of-run model is used."""
    frame, _ = sim
    last = frame.sort_values("tokens").groupby("run").tail(1)
    with pytest.warns(UserWarning, match="has one checkpoint: no curve to fit"):
        f = fit(last, family="simc", law="h-term", prior="flat", options=CURVE,
                sampler=TEST_SAMPLER, seed=0)  # fmt: skip
    assert f.law == "chinchilla" and not f.is_curve and f.options.residual == "iid"
    fb = f.provenance["fallback"]
    assert fb["requested"]["law"] == "h-term" and fb["requested"]["options"]["rows"] == "all"
    assert fb["reason"] in f.provenance["notes"] and len(f.data) == 3
    # the sampler a whole-curve fit would have defaulted to is not imposed on the fallback
    assert f.sampler == TEST_SAMPLER


def test_cli_sampler_defaults_follow_the_likelihood():
    import argparse

    from hiscale.cli.args import sampler_settings
    from hiscale.infer.settings import SamplerSettings

    unset = argparse.Namespace(num_warmup=None, num_samples=None, num_chains=None)
    assert sampler_settings(unset, CURVE) == CURVE_SAMPLER
    assert sampler_settings(unset, FitOptions()) == SamplerSettings()
    assert sampler_settings(unset) == SamplerSettings()
    given = argparse.Namespace(num_warmup=7, num_samples=None, num_chains=None)
    assert sampler_settings(given, CURVE).num_warmup == 7
    assert sampler_settings(given, CURVE).target_accept_prob == CURVE_SAMPLER.target_accept_prob


def test_curve_law_needs_the_ar1_likelihood(sim):
    frame, _ = sim
    with pytest.raises(ValueError, match="residual='ar1'"):
        fit(frame, family="simc", law="h-term", prior="flat")
    with pytest.raises(ValueError, match="needs residual='ar1'"):
        FitOptions(rows="all")


def test_default_options_keep_their_provenance_keys():
    # cache keys of end-of-run fits hold FitOptions().to_dict(): unchanged by the curve
    # fields; end_lr_tolerance (2026-12-02) changes which end-of-run rows are fitted, so it
    # is recorded
    assert set(FitOptions().to_dict()) == {
        "min_tokens", "end_of_run", "max_rows_per_run", "n_eff_per_run", "end_lr_tolerance"
    }  # fmt: skip
    assert CURVE.to_dict()["rows"] == "all"


# --- CLI -------------------------------------------------------------------------------


def test_cli_predict_curve_and_run(curve_fit, tmp_path, capsys):
    path = curve_fit.save(tmp_path / "curve.nc")
    out_csv = tmp_path / "curve.csv"
    code = main(["predict", "--fit", str(path), "--at", "2e9", "4e10", "--schedule", "wsd",
                 "--curve-out", str(out_csv), "--quiet"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and "expected loss" in out.out and "wsd" in out.err
    curve = pd.read_csv(out_csv)
    assert set(curve["kind"]) == {"expected", "new_run"} and curve["tokens"].max() == 4e10
    code = main(["predict", "--fit", str(path), "--at", "2e9", "4e10", "--json", "--quiet"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and "usual schedule" in payload["schedule"] and payload["curve"]
    run = curve_fit.data["run"].iloc[0]
    code = main(["predict", "--fit", str(path), "--run", run, "--run-tokens", "3e10", "--json",
                 "--quiet"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["run"] == run and payload["end_tokens"] == pytest.approx(3e10)
    code = main(["predict", "--fit", str(path), "--run", run, "--run-tokens", "3e10", "--quiet"])
    assert code == 0 and "this run" in capsys.readouterr().out


def test_cli_refuses_curve_options_on_end_of_run_fits(tmp_path, capsys):
    from hiscale.testing import fake_fit

    path = fake_fit().save(tmp_path / "f.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["predict", "--fit", str(path), "--at", "2e9", "4e10", "--schedule", "wsd"])
    assert code == 2 and "need a whole-curve fit" in capsys.readouterr().err


# --- figure ----------------------------------------------------------------------------


def test_curves_figure_draws_the_law_through_every_fitted_run(curve_fit, sim):
    import matplotlib.pyplot as plt

    from hiscale.plots.curves import plot_curves

    frame, _ = sim
    fig = plot_curves(frame, curve_fit, at=(2e9, 3e10), ci_prob=0.8)
    ax = fig.axes[0]
    # the title counts the table's runs and sizes (one run per size here; a run the fit
    # did not see, at a new size, must count too)
    first = frame[frame["run"] == frame["run"].iloc[0]]
    extra = first.assign(run="unseen", params=4 * frame["params"].max())
    fig2 = plot_curves(pd.concat([frame, extra]), curve_fit, ci_prob=0.8)
    n_sizes = frame["params"].nunique() + 1
    assert f"{frame['run'].nunique() + 1} runs, {n_sizes} sizes" in fig2.axes[0].get_title()
    plt.close(fig2)
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    runs = curve_fit.data.groupby("run", sort=False)
    assert len(dashed) == runs.ngroups
    # each dashed line is the posterior median of the law along its run's own schedule
    # times the run's own offset
    for ln, (run, g) in zip(dashed, runs, strict=True):
        x = np.asarray(ln.get_xdata())
        assert x[0] == pytest.approx(g["tokens"].min()) and x[-1] == pytest.approx(
            g["tokens"].max()
        )
        shift = np.exp(curve_fit.run_offset(run)[0])[:, None]
        med = np.median(curve_fit.expected_along_run(run, x) * shift, axis=0)
        np.testing.assert_allclose(ln.get_ydata(), med)
        # and it runs through the run's rows (noise sd ~ 0.01-0.02 in ln L), closer on
        # average than the law without the run's offset
        law = curve_fit.expected_along_run(run, g["tokens"])
        with_offset = np.log(g["loss"].to_numpy() / np.median(law * shift, axis=0))
        without = np.log(g["loss"].to_numpy() / np.median(law, axis=0))
        assert np.max(np.abs(with_offset)) < 0.08
        assert np.abs(with_offset.mean()) <= np.abs(without.mean()) + 1e-3
    plt.close(fig)


def test_run_lines_are_the_per_run_law_times_offset_medians(curve_fit):
    runs = list(dict.fromkeys(curve_fit.data["run"]))
    grids = {r: np.geomspace(1e9, 2e10, 7 + i) for i, r in enumerate(runs)}
    lines = curve_fit.run_lines(grids)
    assert list(lines) == runs
    for run, grid in grids.items():
        shift = np.exp(curve_fit.run_offset(run)[0])[:, None]
        expected = np.median(curve_fit.expected_along_run(run, grid) * shift, axis=0)
        np.testing.assert_array_equal(lines[run], expected)
    with pytest.raises(ValueError, match="not in the fit"):
        curve_fit.run_lines({"no-such-run": [1e9]})


def test_cli_fit_whole_curves(sim, tmp_path, capsys):
    frame, _ = sim
    csv = tmp_path / "simc.csv"
    frame.to_csv(csv, index=False)
    small = [f"--num-warmup={TEST_SAMPLER.num_warmup}", f"--num-samples={TEST_SAMPLER.num_samples}"]
    code = main(["fit", str(csv), "--law", "h-term", "--rows", "all", "--prior", "flat", *small,
                 "--seed", "1", "--out", str(tmp_path / "f.nc"), "--json", "--quiet",
                 "--max-curve-rows", "64"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["law"] == "h-term"
    assert {"u_f", "r_f", "rho"} <= set(payload["parameters"])
    back = load_fit(tmp_path / "f.nc")
    assert back.is_curve and back.options.rows == "all" and back.options.residual == "ar1"
    # --max-curve-rows: the 3 runs share 64 rows (21 each, evenly in ln D)
    assert back.options.max_curve_rows == 64
    assert back.data.groupby("run").size().max() <= 21 and len(back.data) <= 64
    # flags not given come from the whole-curve sampler preset, the given ones override it
    assert back.sampler.target_accept_prob == CURVE_SAMPLER.target_accept_prob
    assert back.sampler.max_tree_depth == CURVE_SAMPLER.max_tree_depth
    assert back.sampler.num_warmup == TEST_SAMPLER.num_warmup


def test_h_rel_fits_whole_curves_and_stays_above_the_floor(sim):
    """The bounded-bonus law through the same engine: its own parameter, a finite bounded curve."""
    frame, _ = sim
    f = fit(frame, family="simc", law="h-rel", prior="flat", options=CURVE,
            sampler=TEST_SAMPLER, seed=1)  # fmt: skip
    th = f.theta()
    assert f.law == "h-rel" and "v_f" in th and "u_f" not in th
    # a new run far beyond the data: finite, and above s·e in every draw
    _, draws = f.predict_curve(1e13, 2e13, tokens=np.array([2e13]), seed=0, return_draws=True)
    w = np.exp(np.stack([np.zeros_like(th["u_a"]), th["u_a"], th["u_b"]]))
    floor = np.exp(th["log_scale"]) * w[0] / w.sum(axis=0)
    assert np.all(np.isfinite(draws))
    expected = np.median(f.expected_along_run(f.data["run"].iloc[0], np.array([2e13])), axis=0)
    assert np.isfinite(expected).all() and np.median(draws[:, 0]) > np.median(floor) * 0.9


def test_laplace_mass_start_is_recorded_and_gives_the_same_posterior(sim):
    """init_mass='laplace' (CURVE_SAMPLER's): recorded, and the same posterior as identity."""
    from dataclasses import replace

    frame, _ = sim
    fits = {
        m: fit(frame, family="simc", law="h-term", prior="flat", options=CURVE, seed=1,
               sampler=replace(CURVE_SAMPLER, num_warmup=400, num_samples=600, init_mass=m))
        for m in ("identity", "laplace")
    }  # fmt: skip
    lap, ident = fits["laplace"], fits["identity"]
    assert lap.sampler.init_mass == "laplace" and CURVE_SAMPLER.init_mass == "laplace"
    assert lap.provenance["inits"]["mass"].startswith("warm-up starts from the Laplace covariance")
    assert "mass" not in ident.provenance["inits"]  # identity start: nothing to record
    a, b = lap.theta(), ident.theta()
    for k in ("log_alpha", "log_beta", "u_f", "rho", "sigma_obs"):
        # two runs of one posterior: medians agree within a fraction of the posterior sd
        sd = float(np.std(b[k]))
        assert abs(float(np.median(a[k])) - float(np.median(b[k]))) < 0.5 * sd, k


def test_laplace_mass_settings_are_checked():
    from hiscale.infer.nuts import run_nuts
    from hiscale.infer.settings import SamplerSettings

    with pytest.raises(ValueError, match="init_mass must be 'identity' or 'laplace', got 'eye'"):
        SamplerSettings(init_mass="eye")
    assert "init_mass" not in SamplerSettings().to_dict()  # earlier fits' cache keys hold
    assert CURVE_SAMPLER.to_dict()["init_mass"] == "laplace"
    init = {"xi": np.zeros((2, 3))}
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="needs an inverse_mass_matrix"):
        run_nuts(None, {}, rng_key=key, settings=SamplerSettings(init_mass="laplace"), init=init)
    with pytest.raises(ValueError, match=r"need a finite \(3, 3\) array, got \(2, 2\)"):
        run_nuts(None, {}, rng_key=key, settings=SamplerSettings(init_mass="laplace"), init=init,
                 inverse_mass_matrix=np.eye(2))  # fmt: skip
    with pytest.raises(ValueError, match="init_mass is 'identity'"):
        run_nuts(None, {}, rng_key=key, settings=SamplerSettings(), init=init,
                 inverse_mass_matrix=np.eye(3))  # fmt: skip


# --- continuing a run under a new decay (the warmup-stable-decay question) --------------


def test_with_decay_keeps_the_warmup_and_replaces_the_decay():
    """with_decay against the schedule written out by hand (piecewise closed form)."""
    from hiscale.data.schedule import Schedule, with_decay

    own = Schedule(horizon=1e10, warmup=1e8)  # constant after a linear warmup
    wsd = with_decay(own, "wsd", 2e10)
    u = np.array([0.0, 5e7, 1e8, 1e10, 1.6e10, 1.8e10, 2e10, 3e10])
    # warmup 0 -> 1 over 1e8, stable 1 until 0.8 x 2e10, then linear to 0 at 2e10, 0 after
    want = np.array([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(wsd.multiplier(u), want, atol=1e-12)
    now = with_decay(own, "linear", 2e10, decay_start=1.2e10)
    np.testing.assert_allclose(now.multiplier([1.2e10, 1.6e10, 2e10]), [1.0, 0.5, 0.0], atol=1e-12)
    assert with_decay(own, "constant", 2e10).multiplier([3e10])[0] == 1.0
    with pytest.raises(ValueError, match="decay_start"):
        with_decay(own, "linear", 2e10, decay_start=2.5e10)


@pytest.fixture(scope="module")
def stable_fit(sim):
    """The three cosine runs plus a run of the largest size in its stable phase (constant LR
    after the same 100M-token warm-up), fitted up to 30% of 2e10 tokens."""
    frame, _ = sim
    big = frame[frame["params"] == frame["params"].max()]
    stable = big[big["tokens"] <= 0.3 * HORIZON].assign(
        run="simc-stable", schedule="constant (no cooldown), 100M-token warm-up"
    )
    data = pd.concat([frame, stable], ignore_index=True)
    return fit(data, family="simc", law="h-term", prior="flat", options=CURVE,
               sampler=TEST_SAMPLER, seed=1)  # fmt: skip


def test_predict_run_under_a_new_decay(stable_fit):
    """A run in its stable phase continued under WSD: its own schedule gives the same
    draws as no schedule; the law at the end of the cooldown is the h-term law with
    h = 0, computed here from the posterior draws; a decay reaching into the fitted
    past is refused."""
    from hiscale.data.schedule import Schedule

    f = stable_fit
    own = f._schedule_of("simc-stable")
    assert own is not None and own.decay_shape == "none"
    last = float(f.data.loc[f.data["run"] == "simc-stable", "tokens"].max())
    t = [2e10]
    base, d0 = f.predict_run("simc-stable", t, seed=4, return_draws=True)
    _, d1 = f.predict_run("simc-stable", t, seed=4, return_draws=True, schedule=own)
    np.testing.assert_array_equal(d0, d1)
    assert base.attrs["schedule"] == "the run's own schedule"
    wsd, d2 = f.predict_run("simc-stable", t, seed=4, return_draws=True, schedule="wsd",
                            run_tokens=2e10)  # fmt: skip
    assert "wsd decay" in wsd.attrs["schedule"] and wsd.attrs["run_tokens"] == 2e10
    # the same draws of offset and AR path: the difference is the law's annealing bonus
    th = f.theta()
    lse = np.logaddexp(np.logaddexp(0.0, th["u_a"]), th["u_b"])
    e, a, b = np.exp(-lse), np.exp(th["u_a"] - lse), np.exp(th["u_b"] - lse)
    x, y = np.log(1e9 / N0), np.log(2e10 / D0)
    sep = e + a * np.exp(-np.exp(th["log_alpha"]) * x) + b * np.exp(-np.exp(th["log_beta"]) * y)
    bonus = e * np.exp(th["u_f"] + th["r_f"] * x)  # (1 - h) = 1 at the end of the cooldown
    want = np.exp(th["log_scale"]) * np.maximum(sep - bonus, 0.001 * sep)
    got = wsd[(wsd["kind"] == "expected")]["median"].iloc[0]
    assert got == pytest.approx(np.median(want), rel=1e-9)
    np.testing.assert_allclose((d2 / d0)[:, 0], want / (np.exp(th["log_scale"]) * sep), rtol=1e-9)
    # cooling down before the last fitted checkpoint would rewrite the run's past
    with pytest.raises(ValueError, match="cannot change the run's past"):
        f.predict_run("simc-stable", t, schedule="linear", run_tokens=2e10,
                      decay_start=0.5 * last)  # fmt: skip
    with pytest.raises(ValueError, match="cannot change the run's past"):
        f.predict_run("simc-stable", t, schedule=Schedule(horizon=2e10, decay_shape="cosine",
                                                         floor=0.1, warmup=1e8))  # fmt: skip
    with pytest.raises(ValueError, match="need a named schedule"):
        f.predict_run("simc-stable", t, run_tokens=2e10)


def test_cli_continues_a_run_under_a_new_decay(stable_fit, tmp_path, capsys):
    path = stable_fit.save(tmp_path / "stable.nc")
    last = float(stable_fit.data.loc[stable_fit.data["run"] == "simc-stable", "tokens"].max())
    code = main(["predict", "--fit", str(path), "--run", "simc-stable", "--schedule", "linear",
                 "--run-tokens", "2e10", "--decay-start", f"{last:.17g}", "--json",
                 "--quiet"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["end_tokens"] == pytest.approx(2e10)
    assert "linear decay" in payload["schedule"] and f"from {last:.4g}" in payload["schedule"]
    code = main(["predict", "--fit", str(path), "--run", "simc-stable", "--schedule", "wsd",
                 "--run-tokens", "2e10", "--decay-start", "1e9", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        code == 2 and "cannot change the run's past" in err and len(err.strip().splitlines()) == 1
    )
    code = main(["predict", "--fit", str(path), "--run", "simc-stable", "--decay-start", "1e9"])
    assert code == 2 and "needs --schedule" in capsys.readouterr().err


def test_predict_gives_whole_curves_of_the_target_runs(curve_fit):
    """Fit.predict(curve=True): one whole curve per target point, ending at its D, whose
    expected end equals the end-point prediction (a different code path: Fit.draws)."""
    f = curve_fit
    at = ([2e9, 5e9], [4e10, 1e11])
    ends = f.predict(at, ci_prob=0.8)
    curves = f.predict(at, ci_prob=0.8, curve=True)
    assert list(curves.columns) == list(ends.columns)
    assert sorted(curves["point"].unique()) == [0, 1]
    for i, (n, d) in enumerate(zip(*at, strict=True)):
        c = curves[(curves["point"] == i) & (curves["kind"] == "expected")]
        assert c["tokens"].max() == d and c["tokens"].nunique() >= 64 and (c["params"] == n).all()
        end = ends[(ends["point"] == i) & (ends["kind"] == "expected")]["median"].iloc[0]
        assert c.loc[c["tokens"] == d, "median"].iloc[0] == pytest.approx(end, rel=1e-12)
    assert all("usual schedule" in s for s in curves.attrs["schedules"])
    wsd = f.predict(at, curve=True, schedule="wsd", run_tokens=2e11)
    assert wsd["tokens"].max() == 2e11 and all("wsd" in s for s in wsd.attrs["schedules"])
    with pytest.raises(ValueError, match="apply to curve=True"):
        f.predict(at, schedule="wsd")


def test_predict_curve_option_needs_a_whole_curve_fit():
    from hiscale.testing import fake_fit

    with pytest.raises(ValueError, match="curve=True needs a whole-curve fit"):
        fake_fit().predict((1e9, 2e10), curve=True)
