"""Joint hierarchical fit (research use): smoke run on simulated families."""

import json
from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from engine_sim import TRUTH, simulate_family

from hiscale.contrib.joint import fit_joint
from hiscale.data.curves import load_curves
from hiscale.infer.settings import JOINT_SAMPLER


def test_joint_needs_two_families():
    c = load_curves(simulate_family("a"))
    with pytest.raises(ValueError, match=">= 2 families"):
        fit_joint(c, families=["a"])


@pytest.mark.slow
def test_joint_fit_smoke():
    frames = [simulate_family(f"f{i}", seed=i) for i in range(3)]
    sampler = replace(JOINT_SAMPLER, num_warmup=200, num_samples=200)
    jf = fit_joint(load_curves(pd.concat(frames)), families=["f0", "f1", "f2"], sampler=sampler)
    post = jf.datatree["posterior"]
    assert post["log_alpha"].sizes["family"] == 3
    alpha = float(np.exp(post["log_alpha"]).mean())
    assert abs(np.log(alpha) - TRUTH["log_alpha"]) < 0.5
    assert "rhat_max" in jf.diagnostics
    assert json.loads(jf.datatree.attrs["sampler"])["num_samples"] == 200


def test_joint_fit_and_population_share_the_hyperpriors():
    """mu, tau and L_omega have the same prior in the joint fit as in the population step."""
    from numpyro import handlers
    from scipy import stats

    from hiscale.contrib.joint import make_joint_model
    from hiscale.population import _population_model
    from hiscale.priors.prior import flat_prior

    base = flat_prior("chinchilla")
    k, n_fam = len(base.names), 2
    m0, s0 = jnp.asarray(base.loc), jnp.asarray(base.sd)
    ones = jnp.ones((n_fam, 1))
    prior = {
        "loc": m0,
        "sd": s0,
        "log_scale_loc": jnp.zeros(n_fam),
        "log_scale_sd": jnp.asarray(1.0),
        "sigma_run": jnp.asarray([-4.6, 0.5]),
        "sigma_obs": jnp.asarray([-5.3, 1.0]),
        "df_run": jnp.asarray(4.0),
        "df_obs": jnp.asarray(4.0),
    }
    joint = handlers.trace(handlers.seed(make_joint_model("chinchilla"), 0)).get_trace(
        ones, ones, jnp.zeros((n_fam, 1), int), ones, ones > 0, ones > 0, prior, log_loss=ones
    )
    pop = handlers.trace(handlers.seed(_population_model, 0)).get_trace(
        jnp.zeros((n_fam, k)), jnp.zeros((n_fam, k, k)), m0, s0
    )
    rng = np.random.default_rng(0)
    mu = np.asarray(base.loc) + rng.normal(size=k)
    tau = np.abs(rng.normal(size=k))
    v = rng.normal(size=(k, k + 2))
    corr = (v @ v.T) / np.sqrt(np.outer(np.sum(v * v, 1), np.sum(v * v, 1)))
    for site, value in (("mu", mu), ("tau", tau), ("L_omega", np.linalg.cholesky(corr))):
        a = float(joint[site]["fn"].log_prob(jnp.asarray(value)))
        b = float(pop[site]["fn"].log_prob(jnp.asarray(value)))
        assert a == pytest.approx(b, rel=1e-12), site
    # and they are the documented ones: mu ~ N(m0, 2 s0), tau ~ HalfNormal(1)
    expect_mu = stats.norm(base.loc, 2 * base.sd).logpdf(mu).sum()
    assert float(pop["mu"]["fn"].log_prob(jnp.asarray(mu))) == pytest.approx(expect_mu)
    expect_tau = stats.halfnorm(scale=1.0).logpdf(tau).sum()
    assert float(pop["tau"]["fn"].log_prob(jnp.asarray(tau))) == pytest.approx(expect_tau)
