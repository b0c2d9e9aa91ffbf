"""Fast tests of the family model: log density against independent computations."""

import jax.numpy as jnp
import numpy as np
import pytest
from engine_sim import simulate_family
from numpyro.infer.util import log_density
from scipy import integrate, stats

from hiscale.data.selection import thin_rows
from hiscale.laws import LAWS, get_law
from hiscale.modeling.design import bucket, make_design
from hiscale.modeling.family import law_prior_tails, make_family_model, prior_arrays, run_loglik
from hiscale.priors.prior import flat_prior


def _kwargs(design, prior):
    return {
        **{k: jnp.asarray(v) for k, v in design.model_args().items()},
        "run_mask": jnp.arange(design.n_runs_padded) < design.n_runs,
        "prior": {
            k: jnp.asarray(v)
            for k, v in prior_arrays(prior, log_scale_loc=design.log_scale_loc).items()
        },
        "log_loss": jnp.asarray(design.log_loss),
    }


#: Degrees of freedom at which the Student-t is numerically Gaussian here (the
#: t - normal log-density gap is O(z**4 / df); much larger df loses precision
#: in the log-gamma differences of the t density).
GAUSS_DF = 1e7


def _ll(resid, run, n_runs, sigma_run, sigma_obs, df, *, weight=None, mask=None):
    """``run_loglik`` on plain arrays (one df for runs and rows)."""
    resid = np.asarray(resid, float)
    weight = np.ones(len(resid)) if weight is None else weight
    mask = np.ones(len(resid), bool) if mask is None else mask
    return np.asarray(
        run_loglik(
            jnp.asarray(resid),
            jnp.asarray(run),
            jnp.asarray(weight, float),
            jnp.asarray(mask),
            n_runs,
            sigma_run,
            sigma_obs,
            df,
            df,
        )
    )


def _mvn_run_logpdf(e, sigma_run, sigma_obs):
    """Exact Gaussian marginal of one run: e ~ N(0, σ_obs² I + σ_run² 11ᵀ)."""
    n = len(e)
    cov = sigma_obs**2 * np.eye(n) + sigma_run**2 * np.ones((n, n))
    return stats.multivariate_normal(np.zeros(n), cov).logpdf(e)


def _between_gauss(e, sigma_run, sigma_obs):
    """Gaussian log density of a run's mean residual in orthonormal coordinates.

    ``N(ē; 0, σ_run² + σ_obs²/n)`` is the density of ``ē``; the orthonormal
    coordinate along the mean direction is ``sqrt(n) ē`` (hence ``-½ log n``).
    """
    n = len(e)
    return stats.norm.logpdf(np.sqrt(n) * np.mean(e), 0.0, np.sqrt(n * sigma_run**2 + sigma_obs**2))


def test_gaussian_limit_is_the_exact_run_marginal():
    # runs of 1, 2, 3 and 7 rows, interleaved, plus masked rows holding garbage
    # (one pointing at a real run) and two padding runs
    sizes = (1, 2, 3, 7)
    rng = np.random.default_rng(0)
    run = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    order = rng.permutation(len(run))
    run = run[order]
    resid = 0.02 * rng.standard_normal(len(run)) + 0.03 * rng.standard_normal(len(sizes))[run]
    run_p = np.r_[run, 2, 5, 0]
    resid_p = np.r_[resid, 9.0, -4.0, 1.0]
    mask = np.r_[np.ones(len(run), bool), False, False, False]
    for sigma_run, sigma_obs in [(0.03, 0.02), (0.002, 0.05)]:
        got = _ll(resid_p, run_p, 6, sigma_run, sigma_obs, GAUSS_DF, mask=mask)
        want = [_mvn_run_logpdf(resid[run == i], sigma_run, sigma_obs) for i in range(4)]
        np.testing.assert_allclose(got[:4], want, rtol=0, atol=1e-4)
        assert np.all(got[4:] == 0)


def test_gaussian_limit_matches_integration_over_the_run_offset():
    # second, independent reference: ∫ N(δ; 0, σ_run²) Π N(e_i - δ; 0, σ_obs²) dδ
    e = np.array([0.012, -0.004, 0.021, 0.007])
    sigma_run, sigma_obs = 0.015, 0.008

    def integrand(delta):
        return np.exp(
            stats.norm.logpdf(delta, 0, sigma_run)
            + stats.norm.logpdf(e - delta, 0, sigma_obs).sum()
            - 20.0  # keep exp() in range; added back below
        )

    val, _ = integrate.quad(integrand, -0.2, 0.2, points=[0.0, e.mean()], epsabs=0, limit=200)
    got = _ll(e, np.zeros(4, int), 1, sigma_run, sigma_obs, GAUSS_DF)[0]
    np.testing.assert_allclose(got, np.log(val) + 20.0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_two_row_runs_are_not_counted_double(n):
    # the within-run evidence of n rows: the log-likelihood ratio between two
    # noise scales, with the run mean held at 0, equals the exact one
    e = 0.01 * np.linspace(-1.0, 1.0, n)
    e -= e.mean()
    run = np.zeros(n, int)
    got = _ll(e, run, 1, 0.02, 0.005, GAUSS_DF)[0] - _ll(e, run, 1, 0.02, 0.01, GAUSS_DF)[0]
    want = _mvn_run_logpdf(e, 0.02, 0.005) - _mvn_run_logpdf(e, 0.02, 0.01)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _integrate_run_density(n, sigma_run, sigma_obs, df, nodes=400):
    """Mass and covariance of ``exp(run_loglik)`` over R^n (Gauss-Legendre, x = c tan θ)."""
    theta, w = np.polynomial.legendre.leggauss(nodes)
    theta, w = theta * np.pi / 2, w * np.pi / 2
    c = sigma_run + sigma_obs
    x, wx = c * np.tan(theta), w * c / np.cos(theta) ** 2
    pts = np.stack([g.ravel() for g in np.meshgrid(*[x] * n, indexing="ij")], axis=1)
    wts = np.prod(np.meshgrid(*[wx] * n, indexing="ij"), axis=0).ravel()
    m = len(pts)
    ll = _ll(pts.ravel(), np.repeat(np.arange(m), n), m, sigma_run, sigma_obs, df)
    p = np.exp(ll) * wts
    mass = p.sum()
    return mass, (pts * p[:, None]).T @ pts / mass


@pytest.mark.parametrize("n", [1, 2])
def test_student_t_run_density_is_proper_with_the_model_covariance(n):
    # finite df: not the exact t marginal, but for runs of 1-2 rows a proper
    # density whose covariance is the generative model's,
    # df/(df-2) (σ_obs² I + σ_run² 11ᵀ)  (δ and ε independent t's)
    df, sigma_run, sigma_obs = 6.0, 0.02, 0.01
    mass, cov = _integrate_run_density(n, sigma_run, sigma_obs, df)
    model_cov = df / (df - 2) * (sigma_obs**2 * np.eye(n) + sigma_run**2 * np.ones((n, n)))
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)
    np.testing.assert_allclose(cov, model_cov, rtol=2e-3)


def test_log_density_is_priors_plus_tempered_exact_marginal():
    # Gaussian limit (df -> GAUSS_DF), 6 rows per run, n_eff 4: each run counts
    # its between term once and w = 4/6 of the rest of the exact marginal;
    # noise scales comparable to the residuals keep the t - normal gap small
    frame = simulate_family(n_ckpt=6, seed=3)
    design = make_design(frame, n_eff_per_run=4.0)
    prior = flat_prior()
    kw = _kwargs(design, prior)
    kw["prior"] |= {"df_run": jnp.asarray(GAUSS_DF), "df_obs": jnp.asarray(GAUSS_DF)}
    model = make_family_model("chinchilla")
    xi = np.array([0.3, -0.2, 0.1, 0.4])
    sigma_run, sigma_obs = 0.2, 0.05  # residuals are -0.05 to -0.75 here
    z = prior.loc + np.linalg.cholesky(prior.cov) @ xi
    theta = dict(zip(prior.names, z, strict=True)) | {"log_scale": 0.9}
    # the model samples the loss scale as ln L̂ at the rows' centre (geometric
    # means of N and D); the shear has unit Jacobian, so the density at
    # (xi, log_loss_ref) is the density of (xi, log_scale = 0.9)
    n_c = np.exp(np.log(frame["params"]).mean())
    d_c = np.exp(np.log(frame["tokens"]).mean())
    params = {
        "xi": xi,
        "log_loss_ref": float(np.log(LAWS["chinchilla"].loss(n_c, d_c, theta))),
        "log_sigma_run": np.log(sigma_run),
        "log_sigma_obs": np.log(sigma_obs),
    }
    got, _ = log_density(model, (), kw, params)
    s = prior.settings
    loglik = 0.0
    for _, g in frame.groupby("run"):
        mu = np.log(np.asarray(LAWS["chinchilla"].loss(g["params"], g["tokens"], theta)))
        e = np.log(g["loss"].to_numpy()) - mu
        between = _between_gauss(e, sigma_run, sigma_obs)
        loglik += between + 4.0 / 6.0 * (_mvn_run_logpdf(e, sigma_run, sigma_obs) - between)
    expected = (
        stats.norm.logpdf(xi).sum()
        + stats.norm.logpdf(0.9, design.log_scale_loc, s["log_scale_sd"])
        + stats.norm.logpdf(np.log(sigma_run), *s["sigma_run"])
        + stats.norm.logpdf(np.log(sigma_obs), *s["sigma_obs"])
        + loglik
    )
    np.testing.assert_allclose(float(got), expected, rtol=0, atol=1e-3)


def test_padding_does_not_change_the_likelihood():
    frame = simulate_family(n_ckpt=5, seed=1)
    d = make_design(frame)
    assert d.x.shape[0] == bucket(d.n_rows, 16) and d.n_rows == len(frame)
    resid = np.zeros(d.x.shape[0])
    resid[: d.n_rows] = 0.01 * np.arange(d.n_rows)
    resid[d.n_rows :] = 123.0  # garbage in padding rows must be ignored
    args = (
        jnp.asarray(d.run),
        jnp.asarray(d.weight),
        jnp.asarray(d.mask),
        d.n_runs_padded,
        0.02,
        0.004,
        4.0,
        4.0,
    )
    ll = np.asarray(run_loglik(jnp.asarray(resid), *args))
    assert np.all(ll[d.n_runs :] == 0)
    resid2 = resid.copy()
    resid2[d.n_rows :] = -7.0
    np.testing.assert_allclose(ll, np.asarray(run_loglik(jnp.asarray(resid2), *args)))


def test_single_row_runs_have_no_within_term():
    # a one-row run is e = δ + ε: in the Gaussian limit N(e; 0, σ_run² + σ_obs²)
    frame = simulate_family(n_ckpt=1, seed=2)
    d = make_design(frame)
    resid = np.r_[0.01, -0.02, 0.0, 0.03, 0.01, np.zeros(d.x.shape[0] - 5)]
    ll = _ll(resid, d.run, d.n_runs_padded, 0.02, 0.004, GAUSS_DF, weight=d.weight, mask=d.mask)
    expected = stats.norm.logpdf(resid[:5], 0.0, np.hypot(0.02, 0.004))
    np.testing.assert_allclose(ll[:5], expected, rtol=0, atol=1e-6)


def test_tempering_weights():
    frame = simulate_family(n_ckpt=8)
    d = make_design(frame, n_eff_per_run=4.0)
    np.testing.assert_allclose(d.weight[: d.n_rows], 0.5)
    assert np.all(d.weight[d.n_rows :] == 0)
    d1 = make_design(frame, n_eff_per_run=0.0)
    np.testing.assert_allclose(d1.weight[: d1.n_rows], 1.0)


def test_thin_rows_keeps_last_checkpoint():
    frame = simulate_family(n_ckpt=50)
    thin = thin_rows(frame, 10)
    assert thin.groupby("run").size().max() == 10
    last = frame.groupby("run")["tokens"].max()
    assert (thin.groupby("run")["tokens"].max() == last).all()


def test_generative_branch_draws_data():
    from jax import random
    from numpyro.infer import Predictive

    frame = simulate_family(n_ckpt=4)
    d = make_design(frame)
    kw = _kwargs(d, flat_prior())
    kw.pop("log_loss")
    draws = Predictive(make_family_model("chinchilla"), num_samples=7)(random.PRNGKey(0), **kw)
    assert draws["log_loss"].shape == (7, d.x.shape[0])
    assert draws["delta"].shape == (7, d.n_runs_padded)
    assert np.all(np.isfinite(draws["log_loss"]))


@pytest.mark.parametrize("law", ["chinchilla", "chinchilla-nd"])
def test_model_sites_are_named_after_law_parameters(law):
    from numpyro import handlers

    frame = simulate_family(n_ckpt=3)
    d = make_design(frame)
    kw = _kwargs(d, flat_prior(law))
    tr = handlers.trace(handlers.seed(make_family_model(law), 0)).get_trace(**kw)
    for name in LAWS[law].params:
        assert name in tr
    assert "run_loglik" in tr


def test_heavy_tailed_law_prior_keeps_the_covariance():
    # scipy: a Student-t with nu dof scaled by sqrt((nu - 2) / nu) has variance 1,
    # and at nu = 4 its 97.5% quantile is the standard normal's to 0.2% (1.963 vs 1.960)
    for nu in (3.0, 4.0, 10.0):
        _, c = law_prior_tails(nu, np.eye(2))
        assert stats.t(nu, scale=c[0, 0]).var() == pytest.approx(1.0, rel=1e-12)
    _, c = law_prior_tails(4.0, np.eye(1))
    assert stats.t(4.0, scale=c[0, 0]).ppf(0.975) == pytest.approx(stats.norm.ppf(0.975), rel=2e-3)
    assert law_prior_tails(None, np.eye(2))[0] == {}
    with pytest.raises(ValueError, match="df_law"):
        prior_arrays(flat_prior().with_settings(df_law=2.0), log_scale_loc=0.0)


def test_heavy_tailed_law_prior_changes_only_the_law_prior_density():
    # df_law = 3: at the same law parameters z the likelihood is unchanged and the
    # whitened coordinate is xi_t = C_t^-1 (z - loc), a standard Student-t
    # (scipy's density), against xi_g = C^-1 (z - loc), standard normal
    frame = simulate_family(n_ckpt=6, seed=3)
    design = make_design(frame, n_eff_per_run=4.0)
    gauss, heavy = flat_prior(), flat_prior().with_settings(df_law=3.0)
    model = make_family_model("chinchilla")
    xi_g = np.array([0.3, -2.5, 0.1, 4.0])
    xi_t = xi_g / np.sqrt(1.0 / 3.0)
    common = {"log_loss_ref": 1.0, "log_sigma_run": np.log(0.1), "log_sigma_obs": np.log(0.05)}
    lg, _ = log_density(model, (), _kwargs(design, gauss), common | {"xi": xi_g})
    lt, _ = log_density(model, (), _kwargs(design, heavy), common | {"xi": xi_t})
    expected = stats.t.logpdf(xi_t, 3.0).sum() - stats.norm.logpdf(xi_g).sum()
    np.testing.assert_allclose(float(lt) - float(lg), expected, rtol=1e-10)


def test_heavy_tailed_law_prior_in_the_centred_curve_model():
    from hiscale.modeling.curve import _data_centre, _uncentre, curve_prior_arrays, make_curve_model

    law = "h-term"
    k = len(get_law(law).params)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=12))
    y = jnp.asarray(np.tile(np.linspace(-1.0, 0.5, 4), 3))  # ln D rising along each run
    cov = {"lr_mult": jnp.asarray(rng.uniform(0.1, 1.0, 12))}
    base = {
        "x": x, "y": y, "covariates": cov, "run": jnp.asarray(np.repeat(np.arange(3), 4)),
        "mask": jnp.ones(12, bool), "run_mask": jnp.ones(3, bool),
        "log_loss": jnp.asarray(rng.normal(1.0, 0.01, 12)),
    }  # fmt: skip
    common = {"log_loss_ref": 1.0, "log_sigma_run": -3.0, "log_sigma_obs": -4.0, "logit_rho": 1.0}
    xi_g = rng.normal(size=k) * 0.5
    out, w = {}, {}
    for df, xi in ((None, xi_g), (5.0, xi_g / np.sqrt(3.0 / 5.0))):  # same z_c, both priors
        arrays = curve_prior_arrays(
            law, log_scale_loc=0.0, prior=flat_prior(law).with_settings(df_law=df)
        )
        kw = base | {"prior": {n: jnp.asarray(v) for n, v in arrays.items()}}
        out[df], _ = log_density(make_curve_model(law, centred=True), (), kw, common | {"xi": xi})
        # the centred model's law factor is the density of the whitened uncentred z
        z_c = arrays["loc"] + arrays["chol"] @ xi
        x_c, y_c = _data_centre(x, y, cov, base["mask"])
        z = np.asarray(_uncentre(jnp.asarray(z_c), get_law(law).params, x_c, y_c))
        w[df] = np.linalg.solve(arrays["chol"], z - arrays["loc"])
    expected = stats.t.logpdf(w[5.0], 5.0).sum() - stats.norm.logpdf(w[None]).sum()
    np.testing.assert_allclose(float(out[5.0]) - float(out[None]), expected, rtol=1e-8)
