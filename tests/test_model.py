"""Fast tests of the family model: log density against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest
from engine_sim import simulate_family
from numpyro.infer.util import log_density
from scipy import stats

import hiscale  # noqa: F401  (x64, host devices)
from hiscale.design import bucket, make_design, thin_rows
from hiscale.laws import LAWS
from hiscale.model import make_family_model, prior_arrays, run_loglik
from hiscale.priors import flat_prior


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


def _hand_loglik(frame, theta, sigma_run, sigma_obs, df, n_eff):
    """Between-run t term + tempered within-run t term, written with scipy."""
    total = 0.0
    for _, g in frame.groupby("run"):
        mu = np.log(np.asarray(LAWS["chinchilla"].loss(g["params"], g["tokens"], theta)))
        r = np.log(g["loss"].to_numpy()) - mu
        n = len(r)
        rbar = r.mean()
        total += stats.t.logpdf(rbar, df, scale=np.sqrt(sigma_run**2 + sigma_obs**2 / n))
        if n > 1:
            w = min(1.0, n_eff / n)
            scale = sigma_obs * np.sqrt((n - 1) / n)
            total += w * stats.t.logpdf(r - rbar, df, scale=scale).sum()
    return total


def test_log_density_matches_hand_computation():
    frame = simulate_family(n_ckpt=6, seed=3)
    design = make_design(frame, n_eff_per_run=4.0)
    prior = flat_prior()
    kw = _kwargs(design, prior)
    model = make_family_model("chinchilla")
    xi = np.array([0.3, -0.2, 0.1, 0.4])
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
        "log_sigma_run": np.log(0.02),
        "log_sigma_obs": np.log(0.004),
    }
    got, _ = log_density(model, (), kw, params)
    s = prior.settings
    expected = (
        stats.norm.logpdf(xi).sum()
        + stats.norm.logpdf(0.9, design.log_scale_loc, s["log_scale_sd"])
        + stats.norm.logpdf(np.log(0.02), *s["sigma_run"])
        + stats.norm.logpdf(np.log(0.004), *s["sigma_obs"])
        + _hand_loglik(frame, theta, 0.02, 0.004, s["df_obs"], 4.0)
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-9)


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
    frame = simulate_family(n_ckpt=1, seed=2)
    d = make_design(frame)
    resid = jnp.asarray(np.r_[0.01, -0.02, 0.0, 0.03, 0.01, np.zeros(d.x.shape[0] - 5)])
    ll = run_loglik(
        resid,
        jnp.asarray(d.run),
        jnp.asarray(d.weight),
        jnp.asarray(d.mask),
        d.n_runs_padded,
        0.02,
        0.004,
        4.0,
        4.0,
    )
    expected = stats.t.logpdf(np.asarray(resid[:5]), 4.0, scale=np.sqrt(0.02**2 + 0.004**2))
    np.testing.assert_allclose(np.asarray(ll[:5]), expected, rtol=1e-9)


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
