r"""Likelihood for whole training curves: run offset plus AR(1) residuals in ln D.

Residuals of one run, ``e_i = ln L_i - ln L̂_i`` at ``t_i = ln D_i`` (sorted),
are modelled as a run offset plus a stationary Gaussian AR(1) process in
``t`` (an Ornstein-Uhlenbeck process observed at uneven spacings):

.. math::

    e_i = \delta + u_i,\qquad \delta \sim \mathcal N(0, \sigma_{run}^2),\qquad
    \operatorname{Cov}(u_i, u_j) = \sigma^2 \rho^{|t_i - t_j| / \ell},

so ``e ~ N(0, Σ)`` with ``Σ = σ_run² 11ᵀ + Σ_AR``. ``σ`` is the *stationary*
(marginal) standard deviation of ``u``; between consecutive checkpoints
``φ_i = ρ^{(t_i - t_{i-1})/ℓ}`` and the innovation has standard deviation
``σ sqrt(1 - φ_i²)``. ``ρ`` is the correlation at a lag of ``ℓ`` in ``ln D``
(``ℓ = 1``: one e-fold of tokens).

The log density is computed exactly in O(n) per run. The AR(1) part is
Markov, so its precision factorises as ``Σ_AR⁻¹ = WᵀW`` with the whitening

.. math::

    (Wv)_1 = v_1 / \sigma,\qquad
    (Wv)_i = (v_i - \phi_i v_{i-1}) / (\sigma\sqrt{1 - \phi_i^2}),

and ``log det Σ_AR = 2 Σ_i log sd_i`` (``sd_1 = σ``, ``sd_i = σ sqrt(1-φ_i²)``).
The offset is integrated out by the matrix determinant lemma and Woodbury's
identity, with ``A = |W1|²``, ``B = (W1)·(We)``, ``Q = |We|²``:

.. math::

    \log \mathcal N(e; 0, Σ) = -\tfrac n2 \log 2\pi - \sum_i \log sd_i
      - \tfrac12 Q - \tfrac12 \log(1 + \sigma_{run}^2 A)
      + \tfrac12 \frac{\sigma_{run}^2 B^2}{1 + \sigma_{run}^2 A}.

Rows are flat arrays with a run index (as in
:func:`hiscale.modeling.family.run_loglik`): every quantity is a per-row
vector reduced with ``segment_sum``, so the function is jit-compiled once per
padded shape and vmaps over parameter draws. Masked rows (padding, or rows
dropped from a run) are skipped: each real row is linked to the previous
*real* row of its run, which is exactly the marginal of the process at the
real rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["run_loglik_ar1"]

_LOG_2PI = math.log(2.0 * math.pi)


def _previous_real_row(run, mask):
    """Index of the previous real row of the same run (``-1`` if none)."""
    idx = jnp.arange(run.shape[0])
    last_real = jax.lax.cummax(jnp.where(mask, idx, -1), axis=0)
    prev = jnp.concatenate([jnp.array([-1]), last_real[:-1]])
    safe = jnp.maximum(prev, 0)
    has_prev = (prev >= 0) & (run[safe] == run) & mask
    return safe, has_prev


def run_loglik_ar1(resid, t, run, mask, n_runs, sigma_run, sigma, rho, ell=1.0):
    r"""Per-run Gaussian log density of residuals under offset + AR(1) in ``t``.

    .. math::

        \log \mathcal N\big(e_r;\ 0,\ \sigma_{run}^2 11^T
            + [\sigma^2 \rho^{|t_i - t_j|/\ell}]_{ij}\big)

    evaluated in O(n) (module docstring). Exact for every run, including
    runs of one row (``N(0, σ_run² + σ²)``).

    Parameters
    ----------
    resid : array (R,)
        ``ln L - ln L̂`` per row.
    t : array (R,)
        Position of each row along the run, ``ln D`` (any affine scale works
        with ``ell``). Within a run, real rows must be sorted by ``t``
        (ascending); equal ``t`` give ``φ = 1`` and a degenerate density.
    run : int array (R,)
        Run index per row in ``[0, n_runs)``; rows of a run must be contiguous
        apart from masked rows.
    mask : bool array (R,)
        True for real rows.
    n_runs : int
        Number of (padded) runs; runs without a real row get 0.
    sigma_run, sigma, rho : float
        Run-offset sd, stationary AR sd and correlation per ``ell`` of ``t``
        (``0 < rho < 1``).
    ell : float
        Length scale of ``rho`` in units of ``t``.

    Returns
    -------
    array (n_runs,)
        Log density per run.
    """
    resid, t, run, mask = (jnp.asarray(v) for v in (resid, t, run, mask))
    m = mask.astype(resid.dtype)
    prev, has_prev = _previous_real_row(run, mask)
    dt = jnp.where(has_prev, t - t[prev], 0.0)
    phi = jnp.where(has_prev, jnp.exp(dt / ell * jnp.log(rho)), 0.0)
    one_m_phi2 = jnp.maximum(1.0 - phi**2, 1e-300)
    sd = sigma * jnp.sqrt(one_m_phi2)
    z_e = (resid - phi * resid[prev] * has_prev) / sd * m
    z_1 = (1.0 - phi * has_prev) / sd * m

    def per_run(v):
        return jax.ops.segment_sum(v, run, n_runs)

    n = per_run(m)
    log_sd = per_run(jnp.log(sd) * m)
    q = per_run(z_e**2)
    a = per_run(z_1**2)
    b = per_run(z_1 * z_e)
    s2 = sigma_run**2
    denom = 1.0 + s2 * a
    return -0.5 * n * _LOG_2PI - log_sd - 0.5 * q - 0.5 * jnp.log(denom) + 0.5 * s2 * b**2 / denom
