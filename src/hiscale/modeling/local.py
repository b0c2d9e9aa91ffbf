r"""A fit local to a target: the law's error as a pinned Brownian motion.

A scaling law is an approximation. Fitted to runs far from the target it
compromises over the whole range, and the compromise can miss the target by
more than any run's noise (on the corpus, fits to *every* small run of a
family often extrapolate worse than fits to a few large ones). A local fit
says so in the likelihood: the discrepancy ``δ`` of ``ln L`` from the law is
a random function that is zero at the target and wanders away from it,

.. math::

    \ln L_r = \ln \hat L(N_r, D_r) + \delta(s_r) + \text{run offset} + \text{noise},
    \qquad
    \delta(s) = \sum_{a \in \{N, D\}} B_a(s_a),

with ``s_a = ln(target_a / run_a)`` the signed distance on each axis and
``B_a`` a Brownian motion pinned at 0, one per axis and side (a run with more
tokens than the target lies on the other side of its ``D`` axis, independent
of those with fewer):

.. math::

    \mathrm{Cov}(\delta_r, \delta_q) = \sigma_\ell^2 \sum_a
        [\mathrm{sign}\, s_{ra} = \mathrm{sign}\, s_{qa}]\,
        \min(|s_{ra}|, |s_{qa}|).

Its variance grows with the distance, and it is Markov along each axis: given
the runs nearest the target, farther runs inform the law's *shape* (through
their differences) but not its level at the target, so many cheap far runs no
longer outvote a few near ones. Predictions at the target need no extra term
(``δ = 0`` there); their uncertainty comes from the law's parameters, which
the far runs now pin less.

The dense covariance costs ``O(R³)`` per likelihood evaluation, too slow
inside NUTS for families with hundreds of runs. Each ``B_a`` is therefore
represented by its values at ``K`` knots per side (a linear interpolant,
``Φ``) plus, on the diagonal, the variance of the Brownian bridge between
knots, so every run's marginal variance is exact and only the covariance of
two runs between the same two knots is approximated:

.. math::

    \Sigma = \mathrm{diag}(v_r + \sigma_\ell^2 b_r) + \sigma_\ell^2\, U U^\top,
    \qquad U = \Phi\, \mathrm{chol}(\Psi),\ \Psi_{jk} = [\text{same side}] \min(|t_j|, |t_k|),

and the Gaussian log density uses the Woodbury identity (``O(R G²)``, ``G``
knots in all).

In a local fit the run means are jointly *Gaussian*: the Student-t between-run
term of the ordinary fit (which lets one outlying run move its own mean) has no
closed-form multivariate counterpart here, so a bad run weighs as in a
Gaussian fit. The within-run terms are the ordinary fit's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "KNOTS_PER_SIDE",
    "LOCAL_SD_PRIOR_SD",
    "brownian_basis",
    "exact_cov",
    "local_between",
    "local_loo",
    "signed_distances",
]

#: Knots per axis and side of the low-rank Brownian motion.
KNOTS_PER_SIDE = 8

#: Prior sd of ``ln local_sd`` when the scale is learned (``FitOptions(local_learn=True)``):
#: a factor 1.65 either way at one sd (0.37x-2.7x the median at 95%). With sd 1 the
#: posterior reached scales where the law's level is barely pinned and NUTS diverged
#: in 88% of the backtest cells (median 11 divergences); sd 0.5 removed nearly all.
LOCAL_SD_PRIOR_SD = 0.5


def signed_distances(params, tokens, at) -> np.ndarray:
    """Signed distances ``ln(target / run)`` on the ``N`` and ``D`` axes.

    Parameters
    ----------
    params, tokens : array (R,)
        Each run's parameters and its last training tokens.
    at : (float, float)
        The target's ``(N, D)``.

    Returns
    -------
    ndarray (R, 2)

    Raises
    ------
    ValueError
        If the target or a run is not positive and finite.
    """
    n_t, d_t = (float(v) for v in at)
    if not (n_t > 0 and d_t > 0 and np.isfinite(n_t) and np.isfinite(d_t)):
        raise ValueError(f"local fit: target (N, D) must be positive and finite, got {at!r}")
    p = np.asarray(params, float)
    t = np.asarray(tokens, float)
    bad = ~(np.isfinite(p) & np.isfinite(t) & (p > 0) & (t > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"local fit: run {i} has params={p[i]!r}, tokens={t[i]!r}")
    return np.column_stack([np.log(n_t) - np.log(p), np.log(d_t) - np.log(t)])


def exact_cov(s: np.ndarray) -> np.ndarray:
    """Return the exact discrepancy covariance per unit ``σ_ℓ²`` (dense; for checks).

    Parameters
    ----------
    s : array (R, A)
        Signed distances.

    Returns
    -------
    ndarray (R, R)
    """
    s = np.asarray(s, float)
    same = np.sign(s[:, None, :]) == np.sign(s[None, :, :])
    return np.sum(same * np.minimum(np.abs(s[:, None, :]), np.abs(s[None, :, :])), axis=-1)


def _knots(s: np.ndarray, k: int) -> np.ndarray:
    """``k`` evenly spaced knots per side of one axis (up to the farthest run)."""
    pos = s[s > 0]
    neg = -s[s < 0]
    hi = float(pos.max()) if len(pos) else 1.0
    lo = float(neg.max()) if len(neg) else 1.0
    j = np.arange(1, k + 1) / k
    return np.concatenate([-lo * j[::-1], hi * j])


def brownian_basis(s, knots_per_side: int = KNOTS_PER_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank factor and bridge variances of the discrepancy covariance.

    Parameters
    ----------
    s : array (R, A)
        Signed distances of the runs (:func:`signed_distances`).
    knots_per_side : int
        Knots per axis and side.

    Returns
    -------
    U : ndarray (R, 2 A knots_per_side)
        ``Φ chol(Ψ)`` (see the module docstring).
    bridge : ndarray (R,)
        Bridge variance per run: ``U Uᵀ + diag(bridge)`` has the exact
        diagonal of :func:`exact_cov`.
    """
    s = np.asarray(s, float)
    R, A = s.shape
    blocks, bridge = [], np.zeros(R)
    for a in range(A):
        t = _knots(s[:, a], knots_per_side)
        # knot values of a pinned BM: the covariance of the interpolation nodes
        psi = exact_cov(t[:, None])
        chol = np.linalg.cholesky(psi + 1e-12 * np.eye(len(t)))
        phi = np.zeros((R, len(t)))
        for r in range(R):
            x = s[r, a]
            if x == 0:
                continue
            side = t[t > 0] if x > 0 else -t[t < 0][::-1]
            idx = np.flatnonzero(t > 0) if x > 0 else np.flatnonzero(t < 0)[::-1]
            ax = abs(x)
            j = int(np.searchsorted(side, ax))  # side[j-1] < ax <= side[j]
            j = min(j, len(side) - 1)
            left = side[j - 1] if j > 0 else 0.0
            right = side[j]
            wgt = (ax - left) / (right - left)
            phi[r, idx[j]] = wgt
            if j > 0:
                phi[r, idx[j - 1]] = 1.0 - wgt
            bridge[r] += (ax - left) * (right - ax) / (right - left)
        blocks.append(phi @ chol)
    return np.concatenate(blocks, axis=1), bridge


def _woodbury(rbar, v, U, local_sd):
    """``Σ⁻¹ ē``-related pieces for ``Σ = diag(v) + σ² U Uᵀ``."""
    dinv = 1.0 / v
    G = U.shape[1]
    Ud = U * dinv[:, None]
    M = jnp.eye(G) + local_sd**2 * (U.T @ Ud)
    cm = jnp.linalg.cholesky(M)
    return dinv, Ud, cm


def local_between(rbar, real, v, U, bridge, local_sd):
    """Joint Gaussian log density of the run means under a local fit.

    Parameters
    ----------
    rbar : array (R,)
        Mean residual per run slot.
    real : array of bool (R,)
        Real run slots (padding slots contribute nothing).
    v : array (R,)
        Each run's own variance of its mean (``σ_run² + σ_obs²/n``).
    U, bridge : array
        :func:`brownian_basis` (zero rows for padding slots).
    local_sd : float
        ``σ_ℓ``.

    Returns
    -------
    float
        ``log N(ē_real; 0, Σ_real)``.
    """
    e = jnp.where(real, rbar, 0.0)
    vv = jnp.where(real, v + local_sd**2 * bridge, 1.0)
    Ur = U * real[:, None]
    dinv, Ud, cm = _woodbury(e, vv, Ur, local_sd)
    q0 = jnp.sum(e * e * dinv)
    w = jax.scipy.linalg.solve_triangular(cm, Ud.T @ e, lower=True)
    quad = q0 - local_sd**2 * jnp.sum(w * w)
    logdet = jnp.sum(jnp.where(real, jnp.log(vv), 0.0)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(cm)))
    n = jnp.sum(real)
    return -0.5 * (quad + logdet + n * jnp.log(2 * jnp.pi))


def local_loo(rbar, real, v, U, bridge, local_sd):
    """Leave-one-run-out conditional log densities of the run means.

    ``log p(ē_r | ē_-r)`` for a Gaussian with precision ``Q = Σ⁻¹``:
    ``N(ē_r; ē_r - (Qē)_r / Q_rr, 1 / Q_rr)`` (the non-factorised LOO of
    Bürkner, Gabry & Vehtari 2021), for PSIS-LOO over runs.

    Parameters
    ----------
    rbar, real, v, U, bridge, local_sd
        As :func:`local_between`.

    Returns
    -------
    array (R,)
        One value per slot (0 for padding).
    """
    e = jnp.where(real, rbar, 0.0)
    vv = jnp.where(real, v + local_sd**2 * bridge, 1.0)
    Ur = U * real[:, None]
    dinv, Ud, cm = _woodbury(e, vv, Ur, local_sd)
    # Q = D⁻¹ - σ² D⁻¹U M⁻¹ UᵀD⁻¹ with M = cm cmᵀ
    V = jax.scipy.linalg.solve_triangular(cm, Ud.T, lower=True)  # (G, R)
    q_diag = dinv - local_sd**2 * jnp.sum(V * V, axis=0)
    qe = dinv * e - local_sd**2 * (V.T @ (V @ e))
    var = 1.0 / q_diag
    z = qe * var  # ē_r minus its conditional mean
    out = -0.5 * (z * z / var + jnp.log(2 * jnp.pi * var))
    return jnp.where(real, out, 0.0)
