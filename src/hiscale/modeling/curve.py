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

:func:`make_curve_model` is the NumPyro family model for whole curves: a
curve law of :data:`hiscale.laws.CURVE_LAWS` (or any law, with its
covariates) as the mean of ``ln L``, the same non-centred law parameters and
``log_loss_ref`` shear as :func:`hiscale.modeling.family.make_family_model`,
and this likelihood instead of the tempered i.i.d. one. Its inputs come from
:func:`make_curve_design`, which refuses runs whose schedule is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd

from hiscale.laws import D0, N0, Law, get_law
from hiscale.modeling.design import bucket, fine_bucket
from hiscale.modeling.family import law_prior_tails, law_prior_xi
from hiscale.priors.defaults import (
    CURVE_NOISE_PRIORS,
)

__all__ = [
    "MIN_CURVE_ROWS_PER_RUN",
    "CurveDesign",
    "ar1_loglik_total",
    "ar1_paths",
    "centred_xi",
    "continuation_moments",
    "curve_factors",
    "curve_prior_arrays",
    "make_curve_design",
    "make_curve_model",
    "offset_posterior",
    "replicate_runs",
    "run_loglik_ar1",
    "select_curve_rows",
    "thin_log_tokens",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _previous_real_row(run, mask):
    """Index of the previous real row of the same run (``-1`` if none)."""
    run, mask = jnp.asarray(run), jnp.asarray(mask)
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


def _shift(v, fill):
    """``v`` moved one row down (row ``i`` holds ``v[i - 1]``), ``fill`` in row 0."""
    return jnp.concatenate([jnp.full((1,), fill, v.dtype), v[:-1]])


def ar1_loglik_total(resid, t, run, mask, n_runs, sigma_run, sigma, rho, ell=1.0, factors=None):
    """Sum over runs of :func:`run_loglik_ar1` for rows laid out as a design's.

    The same density, for the layout of :func:`make_curve_design`: the real
    rows of a run are *adjacent* (sorted by run, then ``t``) and masked rows
    never sit between two real rows of one run (padding goes at the end,
    with the last run's index, so the run column never decreases and the
    per-run sums are a sorted ``segment_sum``).
    Then a row's previous real row is the row above it, so the function
    shifts arrays by one row where :func:`run_loglik_ar1` finds the previous
    real row with a cumulative maximum and gathers, and it reduces per run
    only the two sums the offset needs (``A`` and ``B``). On 2 cores this
    halves the gradient's cost on the whole-curve model (see the README's
    whole-curve speed bullet). Parameters as :func:`run_loglik_ar1`; returns
    a scalar. Used by :func:`make_curve_model`; tested against
    :func:`run_loglik_ar1` and a dense multivariate normal.

    With ``factors`` (:func:`curve_factors` of the same rows) the spacings'
    ``exp``, ``sqrt`` and ``log`` are taken once per distinct spacing and
    gathered (a design's rows share few spacings: misfitting's 3,030 rows
    have 146); the same values, summed in another order.
    """
    resid, t, run, mask = (jnp.asarray(v) for v in (resid, t, run, mask))
    m = mask.astype(resid.dtype)
    if factors is None:
        has_prev = mask & _shift(mask, False) & (run == _shift(run, -1))
        dt = jnp.where(has_prev, t - _shift(t, 0.0), 0.0)
        phi = jnp.where(has_prev, jnp.exp(dt * (jnp.log(rho) / ell)), 0.0)
        one_m_phi2 = jnp.maximum(1.0 - phi**2, 1e-300)
        inv_sd = 1.0 / (sigma * jnp.sqrt(one_m_phi2))
        log_det = jnp.sum(jnp.log(one_m_phi2) * m)
    else:
        ok, dt_u, i = (jnp.asarray(factors[k]) for k in ("dt_ok", "dt_u", "dt_i"))
        phi_u = jnp.where(ok, jnp.exp(jnp.where(ok, dt_u, 0.0) * (jnp.log(rho) / ell)), 0.0)
        om_u = jnp.maximum(1.0 - phi_u**2, 1e-300)
        phi, inv_sd = phi_u[i], (1.0 / (sigma * jnp.sqrt(om_u)))[i]
        log_det = jnp.sum(jnp.log(om_u) * jnp.asarray(factors["dt_n"]))
    z_e = (resid - phi * _shift(resid, 0.0)) * inv_sd * m
    z_1 = (1.0 - phi) * inv_sd * m
    ab = jax.ops.segment_sum(
        jnp.stack([z_1**2, z_1 * z_e], axis=1), run, n_runs, indices_are_sorted=True
    )
    s2 = sigma_run**2
    denom = 1.0 + s2 * ab[:, 0]
    n = jnp.sum(m)
    return (
        -0.5 * n * _LOG_2PI
        - n * jnp.log(sigma)
        - 0.5 * log_det
        - 0.5 * jnp.sum(z_e**2)
        - 0.5 * jnp.sum(jnp.log(denom))
        + 0.5 * s2 * jnp.sum(ab[:, 1] ** 2 / denom)
    )


def _distinct(v: np.ndarray, minimum: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``v`` (padded to a power of two with copies of the first) and indices."""
    u, i = np.unique(v, return_inverse=True)
    out = np.full(bucket(len(u), minimum), u[0])
    out[: len(u)] = u
    return out, i.astype(np.int32).reshape(v.shape)


def curve_factors(x, y, run, mask) -> dict[str, np.ndarray]:
    """Distinct sizes, token counts and AR(1) spacings of a design's rows, for the model.

    The whole-curve model's cost is per row and per leapfrog step; most of it
    is ``exp`` and ``log`` of quantities that take few distinct values: the
    size terms (one per model size), the data term (one per distinct token
    count) and the AR(1) spacing terms (one per distinct spacing in ``ln D``).
    This gives them once each, with each row's index, so the model evaluates
    those functions on the distinct values and gathers (the same values; see
    :func:`hiscale.laws.Law.log_loss_factored` and :func:`ar1_loglik_total`).

    Parameters
    ----------
    x, y : array (R,)
        ``ln(N/N0)`` and ``ln(D/D0)`` of the padded rows.
    run, mask : array (R,)
        Run index and real-row mask of the padded rows (the design's layout:
        a run's rows adjacent, sorted by ``y``).

    Returns
    -------
    dict
        ``x_u, x_i``, ``y_u, y_i``: distinct values (padded to a power of two
        with copies of the first, so their maximum is the rows') and each
        row's index; ``dt_u, dt_ok, dt_i, dt_n``: distinct spacings ``y_i -
        y_{i-1}`` of rows that follow a real row of the same run, whether an
        entry is one (the last entries and a spacing-less entry are not),
        each row's index and the number of real rows per entry.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    run, mask = np.asarray(run), np.asarray(mask, bool)
    x_u, x_i = _distinct(x)
    y_u, y_i = _distinct(y)
    has_prev = mask & np.r_[False, mask[:-1]] & (run == np.r_[-1, run[:-1]])
    dt = np.where(has_prev, y - np.r_[0.0, y[:-1]], 0.0)
    # rows without a previous real row share one entry, marked not a spacing
    u, i = np.unique(np.where(has_prev, dt, -np.inf), return_inverse=True)
    n_u = len(u)
    size = bucket(n_u, 16)
    dt_u = np.zeros(size)
    dt_ok = np.zeros(size, bool)
    dt_u[:n_u] = np.where(np.isfinite(u), u, 0.0)
    dt_ok[:n_u] = np.isfinite(u)
    dt_n = np.bincount(i, weights=mask.astype(float), minlength=size)
    return {
        "x_u": x_u, "x_i": x_i, "y_u": y_u, "y_i": y_i,
        "dt_u": dt_u, "dt_ok": dt_ok, "dt_i": i.astype(np.int32), "dt_n": dt_n,
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# design and model


@dataclass(frozen=True)
class CurveDesign:
    """Padded inputs of the whole-curve model.

    Attributes
    ----------
    x, y : ndarray (R,)
        ``ln(N/N0)``, ``ln(D/D0)`` (``y`` is also the AR position ``t``).
    covariates : dict of ndarray (R,)
        The law's covariates (``s1``, ``anneal``, ``lr_mult``).
    run : int ndarray (R,)
        Run index; rows sorted by run, then tokens.
    mask : bool ndarray (R,)
        Real rows.
    log_loss : ndarray (R,)
        ``ln L`` (padding copies row 0).
    run_names : tuple of str
        Real runs in index order.
    n_rows, n_runs, n_runs_padded : int
        Real counts and the padded number of runs.
    log_scale_loc : float
        ``ln median(loss)`` of the real rows.
    factors : dict, optional
        :func:`curve_factors` of the rows (the model then evaluates the
        law's and the AR(1)'s transcendental functions once per distinct
        value); None: per row.
    """

    x: np.ndarray
    y: np.ndarray
    covariates: dict[str, np.ndarray]
    run: np.ndarray
    mask: np.ndarray
    log_loss: np.ndarray
    run_names: tuple[str, ...]
    n_rows: int
    n_runs: int
    n_runs_padded: int
    log_scale_loc: float
    factors: dict | None = None

    def model_args(self) -> dict:
        """Keyword arrays of :func:`make_curve_model`'s model (except priors, data)."""
        return {
            "x": self.x,
            "y": self.y,
            "covariates": self.covariates,
            "run": self.run,
            "mask": self.mask,
            "run_mask": np.arange(self.n_runs_padded) < self.n_runs,
            **({"factors": self.factors} if self.factors is not None else {}),
        }


def make_curve_design(frame: pd.DataFrame, law: str | Law) -> CurveDesign:
    """Build padded arrays of one family's rows for a curve law.

    For a law with covariates ``frame`` must carry the columns of
    :func:`hiscale.data.schedule.reconstruct`. Runs whose schedule is unknown
    are an error (naming them and why), never dropped or guessed: fit them
    with the end-of-run model instead. Two rows of one run at the same token
    count are an error too (the AR(1) density would be degenerate).
    """
    law = get_law(law)
    if len(frame) == 0:
        raise ValueError("no training rows: cannot build a design")
    needs = (*law.covariates, "schedule_known") if law.covariates else ()
    missing = [c for c in needs if c not in frame]
    if missing:
        raise ValueError(
            f"columns {missing} missing: add them with hiscale.data.schedule.reconstruct"
        )
    unknown = frame[~frame["schedule_known"].astype(bool)] if law.covariates else frame.iloc[:0]
    if len(unknown):
        first = unknown.iloc[0]
        raise ValueError(
            f"schedule unknown for {unknown['run'].nunique()} runs (first: run "
            f"{first['run']!r}: {first.get('schedule_note', '')}); the curve law needs it"
        )
    frame = frame.sort_values(["params", "run", "tokens"])
    dup = frame.duplicated(["run", "tokens"])
    if dup.any():
        first = frame[dup].iloc[0]
        raise ValueError(
            f"column 'tokens': run {first['run']!r} has two rows at tokens={first['tokens']:g}; "
            "the AR(1) likelihood needs distinct checkpoints per run"
        )
    runs = list(dict.fromkeys(frame["run"].tolist()))
    index = {r: i for i, r in enumerate(runs)}
    n = len(frame)
    rp, kp = fine_bucket(n, 16), bucket(len(runs), 4)

    def pad(a, fill):
        out = np.full(rp, fill, dtype=a.dtype)
        out[:n] = a
        return out

    x = np.log(frame["params"].to_numpy(float) / N0)
    y = np.log(frame["tokens"].to_numpy(float) / D0)
    ll = np.log(frame["loss"].to_numpy(float))
    cov = {c: frame[c].to_numpy(float) for c in law.covariates}
    x_p, y_p = pad(x, x[0]), pad(y, y[0])
    # padding takes the last run's index: the run column stays sorted (masked rows add 0)
    run_p, mask_p = (
        pad(frame["run"].map(index).to_numpy(int), len(runs) - 1),
        pad(np.ones(n, bool), False),
    )
    return CurveDesign(
        x=x_p,
        y=y_p,
        covariates={c: pad(v, v[0]) for c, v in cov.items()},
        run=run_p,
        mask=mask_p,
        factors=curve_factors(x_p, y_p, run_p, mask_p),
        log_loss=pad(ll, ll[0]),
        run_names=tuple(runs),
        n_rows=n,
        n_runs=len(runs),
        n_runs_padded=kp,
        log_scale_loc=float(np.log(np.median(frame["loss"].to_numpy(float)))),
    )


def curve_prior_arrays(law: str | Law, *, log_scale_loc: float, prior=None) -> dict:
    """Model-ready prior arrays for a curve law.

    Law parameters a population ``prior`` (a
    :class:`~hiscale.priors.prior.Prior`) has keep its mean and covariance;
    the others get the weak defaults (:data:`DEFAULT_LAW_PRIORS`, then
    :data:`CURVE_LAW_PRIORS`), independent. Noise priors: ``sigma_run`` from
    :data:`DEFAULT_PRIORS` (or the prior's settings), ``sigma_ar`` and ``rho``
    from :data:`CURVE_NOISE_PRIORS`.
    """
    from hiscale.priors.prior import flat_prior

    name = get_law(law).name
    on_law = prior.for_law(name) if prior is not None else flat_prior(name)
    k = len(on_law.names)
    loc, cov = np.asarray(on_law.loc, float), np.asarray(on_law.cov, float)
    settings = on_law.settings
    extra, chol = law_prior_tails(
        settings.get("df_law"), np.linalg.cholesky(cov + 1e-10 * np.eye(k)), on_law.name
    )
    return {
        **extra,
        "loc": loc,
        "chol": chol,
        "log_scale_loc": np.asarray(log_scale_loc + settings["log_scale_shift"], float),
        "log_scale_sd": np.asarray(settings["log_scale_sd"], float),
        "sigma_run": np.asarray(settings["sigma_run"], float),
        "sigma_ar": np.asarray(CURVE_NOISE_PRIORS["sigma_ar"], float),
        "rho": np.asarray(CURVE_NOISE_PRIORS["rho"], float),
    }


def _simulate_ar1(key, t, run, mask, sigma, rho, ell):
    """One draw of the stationary AR(1) at the real rows (0 on masked rows)."""
    t, mask = jnp.asarray(t), jnp.asarray(mask)
    prev, has_prev = _previous_real_row(run, mask)
    phi = jnp.where(has_prev, jnp.exp((t - t[prev]) / ell * jnp.log(rho)), 0.0)
    sd = sigma * jnp.sqrt(jnp.maximum(1.0 - phi**2, 0.0))
    eps = jax.random.normal(key, t.shape)

    def step(last, inp):
        ph, s, e, hp, m = inp
        u = jnp.where(hp, ph * last, 0.0) + s * e
        return jnp.where(m, u, last), jnp.where(m, u, 0.0)

    _, u = jax.lax.scan(step, jnp.asarray(0.0, t.dtype), (phi, sd, eps, has_prev, mask))
    return u


def _data_centre(x, y, covariates, mask):
    """Centre of the real rows: mean ``x``, mean data-term ``y`` (``ln(S1/D0)`` if used)."""
    m = mask.astype(x.dtype)
    n_real = jnp.maximum(jnp.sum(m), 1.0)
    x_c = jnp.sum(x * m) / n_real
    y_data = jnp.log(covariates["s1"] / D0) if "s1" in covariates else y
    return x_c, jnp.sum(y_data * m) / n_real


def _uncentre(z_c, names, x_c, y_c):
    """``z`` (shares at (N0, D0)) from the centred ``z_c`` (see :func:`make_curve_model`).

    ``u_a = v_a + alpha x_c``, ``u_b = v_b + beta y_c``; the others unchanged.
    """
    idx = {n: i for i, n in enumerate(names)}
    z_c = jnp.asarray(z_c)
    z = z_c
    if "u_a" in idx:
        z = z.at[idx["u_a"]].add(jnp.exp(z_c[idx["log_alpha"]]) * x_c)
    if "u_b" in idx:
        z = z.at[idx["u_b"]].add(jnp.exp(z_c[idx["log_beta"]]) * y_c)
    return z


def _centre(z, names, x_c, y_c):
    """Inverse of :func:`_uncentre`: ``z_c`` from ``z``."""
    idx = {n: i for i, n in enumerate(names)}
    z = jnp.asarray(z)
    z_c = z
    if "u_a" in idx:
        z_c = z_c.at[idx["u_a"]].add(-jnp.exp(z[idx["log_alpha"]]) * x_c)
    if "u_b" in idx:
        z_c = z_c.at[idx["u_b"]].add(-jnp.exp(z[idx["log_beta"]]) * y_c)
    return z_c


def centred_xi(xi, prior: dict, law: str | Law, design: CurveDesign) -> np.ndarray:
    """Convert the prior-whitened ``xi`` of a law to the centred model's ``xi``.

    The inverse of the map in :func:`make_curve_model` with ``centred=True``:
    ``z = loc + C xi``, ``z_c`` its centred coordinates, ``xi_c = C^-1 (z_c -
    loc)``.

    Parameters
    ----------
    xi : array (K,)
        Whitened law parameters (the plain model's ``xi``).
    prior : dict
        :func:`curve_prior_arrays` (``loc``, ``chol``).
    law : str or Law
        The law.
    design : CurveDesign
        The rows (their centre sets the shift).

    Returns
    -------
    ndarray (K,)
    """
    from scipy.linalg import solve_triangular

    names = get_law(law).params
    loc, chol = np.asarray(prior["loc"], float), np.asarray(prior["chol"], float)
    z = loc + chol @ np.asarray(xi, float)
    args = design.model_args()
    x_c, y_c = _data_centre(
        jnp.asarray(args["x"]), jnp.asarray(args["y"]),
        {k: jnp.asarray(v) for k, v in args["covariates"].items()}, jnp.asarray(args["mask"]),
    )  # fmt: skip
    z_c = np.asarray(_centre(jnp.asarray(z), names, x_c, y_c))
    return solve_triangular(chol, z_c - loc, lower=True)


@cache
def make_curve_model(law: str | Law, ell: float = 1.0, centred: bool = False) -> Callable:
    r"""NumPyro model of whole curves under ``law`` with offset + AR(1) residuals.

    .. math::

        z &= \mathrm{loc} + C\xi,\quad \xi \sim \mathcal N(0, I),\qquad
        \ln L_i = \ln \hat L(x_i, y_i, c_i; z, s) + \delta_r + u_i,\\
        \ln\sigma_{run}, \ln\sigma \sim \mathcal N(\cdot),\quad
        \operatorname{logit}\rho \sim \mathcal N(\cdot)

    with ``c_i`` the row's schedule covariates, ``δ_r`` the run offset and
    ``u`` the AR(1) in ``t = ln D`` (length scale ``ell``); both integrated
    out exactly by :func:`ar1_loglik_total` (:func:`run_loglik_ar1` summed
    over runs). Site names follow the family model
    (``xi``, ``log_loss_ref``, ``log_sigma_run``, and ``log_sigma_obs`` for
    the AR's stationary sd) plus ``logit_rho``. With ``log_loss=None`` the
    model generates data (offsets and AR paths drawn).

    ``centred=True`` samples the shares *at the rows' centre* ``(x_c, y_c)``
    instead of at ``(N0, D0)``: ``xi`` whitens ``z_c``, where ``v_a = u_a -
    alpha x_c`` and ``v_b = u_b - beta y_c`` are the log ratios ``a/e``,
    ``b/e`` where the data are; the prior density of ``z`` is added as a
    factor. The map is triangular with a unit diagonal (the shifts depend
    only on the exponents, which it leaves alone), so its Jacobian is 1 and
    the posterior of ``z`` is unchanged; only the sampler's coordinates
    change. Families far from ``(N0, D0)`` have a curved ridge between
    ``u_a`` and ``alpha`` that a dense mass matrix cannot straighten; in the
    centred coordinates it is nearly linear. (Also measuring ``u_f``
    relative to the whole loss at the centre, ``v_f = u_f + r_f x_c - ln(1 +
    e^{v_a} + e^{v_b})``, was tried and mixed worse on both families
    measured.)
    """
    law = get_law(law)
    names = law.params

    def curve_model(x, y, covariates, run, mask, run_mask, prior, log_loss=None, factors=None):
        """Whole-curve family model; see :func:`make_curve_model`."""
        k = len(names)
        if centred:
            xi = numpyro.sample("xi", dist.ImproperUniform(dist.constraints.real_vector, (), (k,)))
            z_c = prior["loc"] + prior["chol"] @ xi
            x_c, y_c = _data_centre(x, y, covariates, mask)
            z = _uncentre(z_c, names, x_c, y_c)
            w = jax.scipy.linalg.solve_triangular(prior["chol"], z - prior["loc"], lower=True)
            numpyro.factor("law_prior", jnp.sum(law_prior_xi(prior).log_prob(w)))
        else:
            xi = numpyro.sample("xi", law_prior_xi(prior).expand([k]).to_event(1))
            z = prior["loc"] + prior["chol"] @ xi
        theta = {n: numpyro.deterministic(n, z[i]) for i, n in enumerate(names)}
        m = mask.astype(x.dtype)
        n_real = jnp.maximum(jnp.sum(m), 1.0)

        def centre_of(v):
            return jnp.sum(v * m) / n_real

        cov_c = {c: centre_of(v) for c, v in covariates.items()}
        if "s1" in cov_c:  # geometric centre of the area
            cov_c["s1"] = jnp.exp(centre_of(jnp.log(covariates["s1"])))
        g = law.log_loss(centre_of(x), centre_of(y), {**theta, "log_scale": 0.0}, cov_c)
        log_loss_ref = numpyro.sample(
            "log_loss_ref", dist.Normal(prior["log_scale_loc"] + g, prior["log_scale_sd"])
        )
        theta["log_scale"] = numpyro.deterministic("log_scale", log_loss_ref - g)
        log_sigma_run = numpyro.sample(
            "log_sigma_run", dist.Normal(prior["sigma_run"][0], prior["sigma_run"][1])
        )
        log_sigma = numpyro.sample(
            "log_sigma_obs", dist.Normal(prior["sigma_ar"][0], prior["sigma_ar"][1])
        )
        logit_rho = numpyro.sample("logit_rho", dist.Normal(prior["rho"][0], prior["rho"][1]))
        sigma_run = numpyro.deterministic("sigma_run", jnp.exp(jnp.clip(log_sigma_run, -20.0, 3.0)))
        sigma = numpyro.deterministic("sigma_obs", jnp.exp(jnp.clip(log_sigma, -20.0, 3.0)))
        rho = numpyro.deterministic("rho", jax.nn.sigmoid(jnp.clip(logit_rho, -30.0, 30.0)))
        mu = numpyro.deterministic("mu", law.log_loss_factored(x, y, theta, covariates, factors))
        n_runs = run_mask.shape[0]
        if log_loss is None:
            with numpyro.plate("run", n_runs):
                delta = numpyro.sample("delta", dist.Normal(0.0, sigma_run))
            u = _simulate_ar1(numpyro.prng_key(), y, run, mask, sigma, rho, ell)
            numpyro.deterministic("log_loss", mu + delta[run] + u)
            return
        # runs without a real row add 0, so the padded runs need no mask
        ll = ar1_loglik_total(
            log_loss - mu, y, run, mask, n_runs, sigma_run, sigma, rho, ell, factors=factors
        )
        numpyro.factor("run_loglik", ll)

    curve_model.__name__ = f"curve_model_{law.name.replace('-', '_')}" + (
        "_centred" if centred else ""
    )
    return curve_model


# --------------------------------------------------------------------------------------
# rows of whole curves


def thin_log_tokens(frame: pd.DataFrame, max_rows_per_run: int) -> pd.DataFrame:
    """Keep at most ``max_rows_per_run`` rows per run, evenly spaced in ``ln D``.

    For each run (rows sorted by tokens) the targets are ``max_rows_per_run``
    points evenly spaced between its first and last ``ln D``; each target
    keeps the row nearest to it (duplicates merged), so the first and the last
    checkpoint are always kept. Evenly in ``ln D`` because the AR(1) residual
    lives in ``ln D``: rows closer than a small fraction of an e-fold are
    almost perfectly correlated and add nearly nothing, and the likelihood of
    the kept rows is the exact marginal of the process (no tempering needed).

    Parameters
    ----------
    frame : pandas.DataFrame
        Curves rows (``run``, ``tokens``).
    max_rows_per_run : int
        Rows to keep per run; 0 or less keeps everything.

    Returns
    -------
    pandas.DataFrame
        The kept rows, sorted by run and tokens.
    """
    if max_rows_per_run <= 0 or len(frame) == 0:
        return frame
    parts = []
    for _, g in frame.sort_values(["run", "tokens"]).groupby("run", sort=False):
        if len(g) <= max_rows_per_run:
            parts.append(g)
            continue
        t = np.log(g["tokens"].to_numpy(float))
        targets = np.linspace(t[0], t[-1], max_rows_per_run)
        pos = np.searchsorted(t, targets).clip(1, len(t) - 1)
        nearer_left = (targets - t[pos - 1]) <= (t[pos] - targets)
        idx = np.unique(np.where(nearer_left, pos - 1, pos))
        parts.append(g.iloc[idx])
    return pd.concat(parts)


#: Fewest rows per run the row budget of :func:`select_curve_rows` leaves
#: (measured: 4 rows per run moved misfitting's prediction by 5%, 16 by 0.9%
#: at no gain in time, see ``benchmarks/results/curve_fit_thinning_min4.json``
#: and ``curve_fit_thinning_min16.json``).
MIN_CURVE_ROWS_PER_RUN: int = 16


def select_curve_rows(
    curves,
    *,
    min_tokens: float,
    start_fraction: float,
    max_rows_per_run: int,
    max_rows: int = 0,
):
    """Rows of whole curves for the curve model, each step in the log.

    1. the token cut ``tokens > min_tokens`` (skipped when 0);
    2. ``tokens >= start_fraction x`` the run's last checkpoint (the laws do
       not describe the first steps of training: warmup and the initial
       transient), logged as ``curve_start``; then, where the rows carry
       ``warmup_tokens`` (:func:`hiscale.data.schedule.reconstruct`), rows at
       or before the end of their run's warmup, logged as ``warmup`` (a run
       cut early, as in a continue-a-run cell at small ``p``, would otherwise
       keep warmup rows, whose low learning rate the ``h``-term reads as a
       cooldown);
    3. thinning evenly in ``ln D`` to at most ``max_rows_per_run`` rows per
       run (:func:`thin_log_tokens`), logged as ``thin_log_tokens``; with a
       budget ``max_rows`` for all runs together, to the largest cap (not
       below :data:`MIN_CURVE_ROWS_PER_RUN`) whose rows fit the budget. When
       no such cap exists (very many runs) the budget is not applied and the
       log says so: fewer rows per run changed the prediction (by 5% on
       misfitting's 240 runs at 4 rows each) and, padded to a power of two
       (rows above 1024 pad to 3 * 2^k too, :func:`~hiscale.modeling.design.fine_bucket`),
       often saved no time.

    There is no end-of-run selection: every checkpoint is data.

    Parameters
    ----------
    curves : Curves
        Rows of one family.
    min_tokens, start_fraction : float
        The cuts of steps 1 and 2 (0 disables them).
    max_rows_per_run : int
        Step 3 (0 keeps every row).
    max_rows : int
        Step 3's budget for all runs together (0: none).

    Returns
    -------
    Curves
        The selected rows with one log record per step.
    """
    from hiscale.data.selection import filter_min_tokens

    c = filter_min_tokens(curves, min_tokens) if min_tokens > 0 else curves
    f = c.frame
    if start_fraction > 0:
        last = f.groupby("run")["tokens"].transform("max").to_numpy()
        c = c.with_frame(
            f[f["tokens"].to_numpy() >= start_fraction * last],
            step="curve_start",
            reason=f"tokens < {start_fraction:g} x the run's last token count (start of training)",
        )
    else:
        c = c.with_frame(f, step="curve_start", reason="disabled: every checkpoint kept")
    if "warmup_tokens" in c.frame:
        f = c.frame
        warm = f["warmup_tokens"].to_numpy(float)
        in_warmup = np.isfinite(warm) & (warm > 0) & (f["tokens"].to_numpy(float) <= warm)
        c = c.with_frame(
            f[~in_warmup],
            step="warmup",
            reason="tokens within the run's learning-rate warmup (the curve laws would read "
            "its low learning rate as annealing)",
        )
    per_run, why = max_rows_per_run, ""
    lengths = c.frame.groupby("run").size().to_numpy()
    if max_rows > 0 and len(lengths) and per_run > MIN_CURVE_ROWS_PER_RUN:
        cap = per_run
        fits = [m for m in range(cap, MIN_CURVE_ROWS_PER_RUN - 1, -1)
                if np.minimum(lengths, m).sum() <= max_rows]  # fmt: skip
        if fits and fits[0] < cap:
            per_run = fits[0]
            why = f" ({len(lengths)} runs share a budget of {max_rows} rows)"
        elif not fits:
            why = (
                f" (the budget of {max_rows} rows is not reached: {len(lengths)} runs would need"
                f" fewer than {MIN_CURVE_ROWS_PER_RUN} rows each)"
            )
    thinned = thin_log_tokens(c.frame, per_run)
    return c.with_frame(
        thinned,
        step="thin_log_tokens",
        reason=(
            f"thinned to at most {per_run} rows per run{why}, evenly spaced in ln D "
            "(first and last checkpoint kept; the AR(1) likelihood of the kept rows is exact)"
        ),
    )


# --------------------------------------------------------------------------------------
# conditionals: the run offset and a run's continuation


def _whiten_np(resid, t, sigma, rho, ell):
    """Whitened ``1`` and ``e`` of one run's AR(1) (numpy, draws on axis 0).

    ``resid``: ``(S, n)``; ``sigma, rho``: ``(S,)``; ``t``: ``(n,)`` sorted.
    Returns ``z_1, z_e`` of shape ``(S, n)`` (module docstring).
    """
    resid = np.atleast_2d(resid)
    sigma = np.asarray(sigma, float).reshape(-1, 1)
    log_rho = np.log(np.asarray(rho, float)).reshape(-1, 1)
    dt = np.diff(np.asarray(t, float))
    phi = np.concatenate([np.zeros((log_rho.shape[0], 1)), np.exp(dt[None, :] / ell * log_rho)], 1)
    sd = sigma * np.sqrt(np.maximum(1.0 - phi**2, 1e-300))
    prev = np.concatenate([np.zeros((resid.shape[0], 1)), resid[:, :-1]], 1)
    return (1.0 - phi) / sd, (resid - phi * prev) / sd


def offset_posterior(resid, t, sigma_run, sigma, rho, ell=1.0):
    r"""Gaussian conditional of a run's offset ``δ`` given its residuals.

    With ``e = δ 1 + u``, ``δ ~ N(0, σ_run²)``, ``u`` the AR(1):
    ``δ | e ~ N(σ_run² B / (1 + σ_run² A), σ_run² / (1 + σ_run² A))`` with
    ``A = 1ᵀΣ_AR⁻¹1``, ``B = 1ᵀΣ_AR⁻¹e`` (computed by the whitening of the
    module docstring).

    Parameters
    ----------
    resid : array (S, n) or (n,)
        Residuals ``ln L - ln L̂`` of one run per draw, sorted by ``t``.
    t : array (n,)
        ``ln D`` of the run's rows (strictly increasing).
    sigma_run, sigma, rho : float or array (S,)
        Noise parameters per draw.
    ell : float
        Length scale of ``rho``.

    Returns
    -------
    mean, var : ndarray (S,)
        Conditional mean and variance of ``δ``.
    """
    z1, ze = _whiten_np(resid, t, sigma, rho, ell)
    a, b = np.sum(z1**2, 1), np.sum(z1 * ze, 1)
    s2 = np.asarray(sigma_run, float).reshape(-1) ** 2
    denom = 1.0 + s2 * a
    return s2 * b / denom, s2 / denom


def continuation_moments(resid, t, t_new, sigma_run, sigma, rho, ell=1.0):
    r"""Mean and covariance of a run's future residuals given its past (one parameter set).

    Future points ``t_new >= t[-1]`` (sorted): the AR(1) is Markov, so given
    ``δ`` the future depends on the past only through ``u_n = e_n - δ``:
    with ``φ_j = ρ^{(t_j - t_n)/ℓ}`` and ``δ | e ~ N(m, v)``
    (:func:`offset_posterior`),

    .. math::

        E[e_j | e] = m + φ_j (e_n - m),\qquad
        \operatorname{Cov}(e_j, e_k | e) = v (1 - φ_j)(1 - φ_k)
            + σ^2 (ρ^{|t_j - t_k|/ℓ} - φ_j φ_k).

    Parameters
    ----------
    resid : array (n,)
        The run's residuals, sorted by ``t``.
    t, t_new : array
        ``ln D`` of the observed rows and of the future points.
    sigma_run, sigma, rho, ell : float
        Noise parameters.

    Returns
    -------
    mean : ndarray (m,)
    cov : ndarray (m, m)

    Raises
    ------
    ValueError
        If a future point lies before the run's last observed row.
    """
    t, t_new = np.asarray(t, float), np.asarray(t_new, float)
    if np.any(t_new < t[-1]):
        raise ValueError("continuation points must not lie before the run's last observed row")
    m, v = (float(a[0]) for a in offset_posterior(resid, t, sigma_run, sigma, rho, ell))
    phi = rho ** ((t_new - t[-1]) / ell)
    mean = m + phi * (float(np.asarray(resid)[-1]) - m)
    cov = v * np.outer(1 - phi, 1 - phi) + sigma**2 * (
        rho ** (np.abs(t_new[:, None] - t_new[None, :]) / ell) - np.outer(phi, phi)
    )
    return mean, cov


def ar1_paths(rng: np.random.Generator, t, start, sigma, rho, ell=1.0) -> np.ndarray:
    """Draw AR(1) paths at ``t`` (sorted), one per draw, vectorised over draws.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the innovations (drawn as one ``(S, n)`` standard normal block).
    t : array (n,)
        Positions, sorted ascending.
    start : None or (t0, u0)
        ``None``: the path is stationary (``u_1 ~ N(0, σ²)``); ``(t0, u0)``:
        the path continues from ``u(t0) = u0`` (``u0`` of shape ``(S,)``).
    sigma, rho : array (S,)
        Stationary sd and correlation per ``ell`` of each draw.
    ell : float
        Length scale.

    Returns
    -------
    ndarray (S, n)
    """
    sigma = np.asarray(sigma, float).reshape(-1)
    log_rho = np.log(np.asarray(rho, float)).reshape(-1)
    t = np.asarray(t, float)
    eps = rng.standard_normal((len(sigma), len(t)))
    out = np.empty_like(eps)
    if start is None:
        last_t, last_u = None, None
    else:
        last_t, last_u = float(start[0]), np.asarray(start[1], float).reshape(-1)
    for j, tj in enumerate(t):
        if last_t is None:
            out[:, j] = sigma * eps[:, j]
        else:
            phi = np.exp((tj - last_t) / ell * log_rho)
            out[:, j] = phi * last_u + sigma * np.sqrt(np.maximum(1 - phi**2, 0.0)) * eps[:, j]
        last_t, last_u = tj, out[:, j]
    return out


#: Draws per block of :func:`replicate_runs`: its arrays, ``(rows, block)``,
#: stay in cache instead of allocating (and page-faulting) whole
#: ``draws x rows`` temporaries.
REPLICATE_BLOCK = 128


def replicate_runs(mu, obs, t, run_idx, sigma_run, sigma, rho, ell=1.0, *, rng, block=None):
    r"""Each run's log density per draw, replicates of the runs, a new run's mean at their rows.

    Per draw: each run's exact offset + AR(1) log density of its residuals
    ``obs - mu`` (:func:`run_loglik_ar1`; leave-one-run-out PSIS-LOO uses it);
    each fitted run's offset from its Gaussian conditional given the
    run's residuals ``obs - mu`` (:func:`offset_posterior`) plus a fresh
    stationary AR(1) path (:func:`ar1_paths`) gives ``log_loss``; a new run's
    offset ``N(0, σ_run²)`` plus another fresh path, averaged over each run's
    rows, gives ``run_log_loss``. All runs at once, a block of draws at a time
    (:data:`REPLICATE_BLOCK`); per block, from ``rng`` in this order: the
    offsets' standard normals ``(block, run)``, the first paths' innovations
    ``(block, row)``, the new offsets ``(block, run)``, the second paths'.

    Parameters
    ----------
    mu : array (S, n)
        The law's ``ln L`` per draw and row.
    obs : array (n,)
        Observed ``ln L``.
    t : array (n,)
        ``ln D`` of the rows.
    run_idx : int array (n,)
        Run of each row, ``0 .. R - 1``; a run's rows adjacent and sorted by ``t``.
    sigma_run, sigma, rho : array (S,)
        Noise parameters per draw.
    ell : float
        Length scale of ``rho``.
    rng : numpy.random.Generator
        Source of the standard normals.
    block : int, optional
        Draws per block (default :data:`REPLICATE_BLOCK`); the numbers depend on it.

    Returns
    -------
    loglik : ndarray (S, R)
    log_loss : ndarray (S, n)
    run_log_loss : ndarray (S, R)

    Raises
    ------
    ValueError
        If a run's rows are not adjacent or not strictly increasing in ``t``.
    """
    mu = np.asarray(mu, float)
    obs, t = np.asarray(obs, float), np.asarray(t, float)
    run_idx = np.asarray(run_idx)
    n_draws, n_rows = mu.shape
    starts = np.flatnonzero(np.r_[True, run_idx[1:] != run_idx[:-1]])
    lengths = np.diff(np.r_[starts, n_rows])
    n_runs = len(starts)
    bad = np.flatnonzero(run_idx[starts] != np.arange(n_runs))
    if len(bad):
        row = int(starts[bad[0]])
        raise ValueError(
            f"replicate_runs: run_idx {run_idx[row]} at row {row}: each run's rows must be "
            f"adjacent and runs numbered 0, 1, ... in order (expected {bad[0]})"
        )
    first = np.zeros(n_rows, bool)
    first[starts] = True
    dt = np.where(first, 0.0, t - np.r_[t[:1], t[:-1]])
    bad = np.flatnonzero(~first & (dt <= 0))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"replicate_runs: t {t[row]:.6g} at row {row} (run {run_idx[row]}) does not exceed "
            f"the row before ({t[row - 1]:.6g}); t must increase strictly within each run"
        )
    sigma_run, sigma, rho = (np.asarray(a, float).reshape(-1) for a in (sigma_run, sigma, rho))
    loglik = np.empty((n_draws, n_runs))
    log_loss = np.empty_like(mu)
    run_log_loss = np.empty((n_draws, n_runs))
    block = block or REPLICATE_BLOCK
    for lo in range(0, n_draws, block):
        d = slice(lo, min(lo + block, n_draws))
        # (row, draw) layout: a run's rows are adjacent rows of every array
        mu_t = mu[d].T
        phi = np.exp(dt[:, None] / ell * np.log(rho[d])[None, :])
        phi[first] = 0.0
        root = np.sqrt(np.maximum(1.0 - phi**2, 1e-300))
        sd = sigma[d][None, :] * root
        resid = obs[:, None] - mu_t
        prev = np.zeros_like(resid)
        prev[1:] = resid[:-1]
        prev[first] = 0.0
        z_1 = (1.0 - phi) / sd
        z_e = (resid - phi * prev) / sd
        s2 = sigma_run[d] ** 2
        denom = 1.0 + s2 * np.add.reduceat(z_1**2, starts, axis=0)
        b = np.add.reduceat(z_1 * z_e, starts, axis=0)
        loglik[d] = (
            -0.5 * lengths[:, None] * _LOG_2PI
            - np.add.reduceat(np.log(sd), starts, axis=0)
            - 0.5 * np.add.reduceat(z_e**2, starts, axis=0)
            - 0.5 * np.log(denom)
            + 0.5 * s2 * b**2 / denom
        ).T
        mean = s2 * b / denom
        sd_offset = np.sqrt(s2 / denom)
        z_off = rng.standard_normal((d.stop - lo, n_runs)).T
        path = _ar1_rows(phi, sd, rng.standard_normal((d.stop - lo, n_rows)).T, starts, lengths)
        log_loss[d] = (mu_t + (mean + sd_offset * z_off)[run_idx] + path).T
        z_new = rng.standard_normal((d.stop - lo, n_runs)).T
        path = _ar1_rows(phi, sd, rng.standard_normal((d.stop - lo, n_rows)).T, starts, lengths)
        sums = np.add.reduceat(mu_t + path, starts, axis=0)
        run_log_loss[d] = (sums / lengths[:, None] + sigma_run[d][None, :] * z_new).T
    return loglik, log_loss, run_log_loss


def _ar1_rows(phi, sd, eps, starts, lengths) -> np.ndarray:
    """Stationary AR(1) paths of every run, ``(row, draw)``: position by position.

    ``u`` at a run's first row is ``sd * eps`` (``sd`` = ``σ`` there), then
    ``u_i = φ_i u_{i-1} + sd_i eps_i`` (``sd_i = σ sqrt(1 - φ_i²)``).
    """
    u = np.empty_like(eps)
    u[starts] = sd[starts] * eps[starts]
    for p in range(1, int(lengths.max())):
        rows = starts[lengths > p] + p
        u[rows] = phi[rows] * u[rows - 1] + sd[rows] * eps[rows]
    return u
