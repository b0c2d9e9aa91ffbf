"""The whole-curve likelihood (hiscale.modeling.curve), against dense Gaussians.

The O(n) log density is compared with scipy.stats.multivariate_normal on the
full covariance sigma_run^2 11^T + [sigma^2 rho^{|t_i - t_j|/ell}] built
directly from its definition, for uneven spacings, masked rows inside runs and
padding rows and runs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from hiscale.modeling.curve import run_loglik_ar1


def dense_loglik(e, t, sigma_run, sigma, rho, ell):
    """log N(e; 0, sigma_run^2 11^T + sigma^2 rho^{|t_i - t_j|/ell}) with a dense matrix."""
    lag = np.abs(t[:, None] - t[None, :])
    cov = sigma_run**2 + sigma**2 * rho ** (lag / ell)
    return multivariate_normal(mean=np.zeros(len(e)), cov=cov).logpdf(e)


def make_rows(seed, sizes, n_pad_rows=5, mask_frac=0.25):
    """Flat rows of several runs with uneven t, some masked rows inside runs, padding."""
    rng = np.random.default_rng(seed)
    resid, t, run, mask = [], [], [], []
    for r, n in enumerate(sizes):
        tt = np.sort(rng.uniform(-4.0, 1.0, n))
        resid.append(rng.normal(0.0, 0.02, n))
        t.append(tt)
        run.append(np.full(n, r))
        m = rng.uniform(size=n) > mask_frac
        m[rng.integers(n)] = True  # at least one real row
        mask.append(m)
    resid.append(rng.normal(size=n_pad_rows))
    t.append(np.zeros(n_pad_rows))
    run.append(np.zeros(n_pad_rows, int))
    mask.append(np.zeros(n_pad_rows, bool))
    return tuple(np.concatenate(v) for v in (resid, t, run, mask))


@pytest.mark.parametrize(
    ("sigma_run", "sigma", "rho", "ell"),
    [
        (0.01, 0.005, 0.9, 1.0),
        (0.03, 0.01, 0.3, 0.5),
        (0.0, 0.02, 0.99, 2.0),
        (0.02, 0.004, 0.05, 1.0),
    ],
)
def test_matches_dense_gaussian(sigma_run, sigma, rho, ell):
    sizes = [1, 2, 7, 30]
    resid, t, run, mask = make_rows(0, sizes)
    n_runs = len(sizes) + 2  # two padding runs
    out = np.asarray(
        run_loglik_ar1(
            jnp.asarray(resid),
            jnp.asarray(t),
            jnp.asarray(run),
            jnp.asarray(mask),
            n_runs,
            sigma_run,
            sigma,
            rho,
            ell,
        )
    )
    assert out.shape == (n_runs,)
    for r in range(len(sizes)):
        sel = (run == r) & mask
        ref = dense_loglik(resid[sel], t[sel], sigma_run, sigma, rho, ell)
        assert out[r] == pytest.approx(ref, rel=1e-9, abs=1e-9)
    np.testing.assert_array_equal(out[len(sizes) :], 0.0)


def test_masked_rows_and_padding_do_not_matter():
    """Changing masked rows' values or positions leaves the result unchanged."""
    resid, t, run, mask = make_rows(1, [5, 9])
    args = (2 + 1, 0.01, 0.006, 0.8, 1.0)
    base = run_loglik_ar1(resid, t, run, mask, *args)
    resid2, t2 = resid.copy(), t.copy()
    resid2[~mask] = 123.0
    t2[~mask & (run == 0)] = t[~mask & (run == 0)] + 1e-3  # keep order within the run
    np.testing.assert_allclose(run_loglik_ar1(resid2, t2, run, mask, *args), base, rtol=1e-12)


def test_single_row_run_is_offset_plus_marginal():
    out = run_loglik_ar1(
        np.array([0.03]), np.array([0.0]), np.array([0]), np.array([True]), 1, 0.02, 0.01, 0.9
    )
    ref = multivariate_normal(mean=[0.0], cov=[[0.02**2 + 0.01**2]]).logpdf([0.03])
    assert float(out[0]) == pytest.approx(ref, rel=1e-12)


def test_vmap_over_draws_and_jit():
    resid, t, run, mask = make_rows(2, [4, 6])
    sig = jnp.array([0.004, 0.006, 0.01])
    f = jax.jit(jax.vmap(lambda s: run_loglik_ar1(resid, t, run, mask, 2, 0.01, s, 0.7)))
    batch = np.asarray(f(sig))
    assert batch.shape == (3, 2)
    for i, s in enumerate(np.asarray(sig)):
        sel = (run == 1) & mask
        ref = dense_loglik(resid[sel], t[sel], 0.01, s, 0.7, 1.0)
        assert batch[i, 1] == pytest.approx(ref, rel=1e-9)
    g = jax.grad(lambda r: run_loglik_ar1(resid, t, run, mask, 2, 0.01, 0.005, r).sum())(0.7)
    assert np.isfinite(float(g))
