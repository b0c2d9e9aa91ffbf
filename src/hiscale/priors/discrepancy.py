r"""The law's extrapolation discrepancy: its population across families (pure maths, no fitting).

The law's error when it extrapolates from a family's runs to a larger target
grows with the distance: ``ln y = ln ŷ + delta``, ``delta ~ N(0, (sigma_d
d)^2)``, with ``d`` the distance of the target from the nearest run
(:func:`distance` in ``ln N``, :func:`compute_distance` in ``ln 6ND``).
Evidence on ``sigma_d`` comes from leave-largest-size-out errors
(:class:`InnerError`, fitted in :mod:`hiscale.backtesting.discrepancy`);
this module holds what needs no fit: the population of ``log sigma_d``
learned from many families' errors (:func:`discrepancy_from_errors`,
:class:`DiscrepancyPrior`; every family group counts once), one family's
posterior of ``sigma_d`` on a grid (:func:`sigma_posterior`), widening
draws (:func:`widen`), and the ``discrepancy.json`` file a population prior
ships with (:func:`save_discrepancy`, :func:`load_discrepancy`), which the
planner reads (:mod:`hiscale.planning`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from hiscale._paths import bundled
from hiscale._util import json_default

__all__ = [
    "DISCREPANCY_FILE",
    "FALLBACK_PRIOR",
    "HYPERPRIOR",
    "U_GRID",
    "DiscrepancyPrior",
    "InnerError",
    "SigmaPosterior",
    "compute_distance",
    "discrepancy_from_errors",
    "distance",
    "fit_population",
    "load_discrepancy",
    "population_density",
    "run_compute",
    "save_discrepancy",
    "sigma_posterior",
    "widen",
]

#: ``(m, s)`` of ``log sigma_d`` used when fewer than two other groups give an
#: error (labelled ``fallback`` in the result): median ``sigma_d`` 0.02 (2% of
#: loss per e-fold of size), wide (a factor ``e^1.5`` per sd).
FALLBACK_PRIOR: tuple[float, float] = (float(np.log(0.02)), 1.5)

#: Hyperpriors of :func:`population_density`: ``m ~ N(log 0.02, 2^2)`` (95% of
#: median ``sigma_d`` between 0.0004 and 1), ``s ~ HalfNormal(1)``.
HYPERPRIOR: dict[str, float] = {"m_loc": float(np.log(0.02)), "m_sd": 2.0, "s_sd": 1.0}

#: Grid of ``log sigma_d`` the population prior and the cell posterior live on.
U_GRID: np.ndarray = np.linspace(np.log(1e-6), np.log(10.0), 2001)

#: Bounds of the marginal-likelihood search: ``m`` (log scale) and ``s``.
M_BOUNDS: tuple[float, float] = (float(np.log(1e-5)), float(np.log(10.0)))
S_BOUNDS: tuple[float, float] = (0.05, 3.0)


def distance(n_target: float, n_nearest: float) -> float:
    """Return the extrapolation distance ``d = |ln(n_target / n_nearest)|``.

    Parameters
    ----------
    n_target : float
        Target model size.
    n_nearest : float
        The training size nearest the target (largest for ``"up"``,
        smallest for ``"down"``).

    Returns
    -------
    float
        ``d >= 0``.
    """
    return float(abs(np.log(float(n_target) / float(n_nearest))))


def run_compute(frame) -> np.ndarray:
    """Training compute ``6 N D`` of each run at its last checkpoint.

    Parameters
    ----------
    frame : DataFrame
        Rows with ``run``, ``params`` and ``tokens``.

    Returns
    -------
    ndarray
        One value per run.
    """
    g = frame.groupby("run", sort=False).agg(params=("params", "first"), tokens=("tokens", "max"))
    return 6.0 * g["params"].to_numpy(float) * g["tokens"].to_numpy(float)


def compute_distance(c_target: float, c_runs) -> float:
    """Return ``min_i |ln(c_target / c_i)|``: the target's distance in training compute.

    Parameters
    ----------
    c_target : float
        Compute of the target (``6 N D``).
    c_runs : array
        Compute of the fitted runs.

    Returns
    -------
    float
        ``>= 0``; ``inf`` with no runs.
    """
    c = np.asarray(c_runs, float).reshape(-1)
    if c.size == 0:
        return float("inf")
    return float(np.min(np.abs(np.log(float(c_target)) - np.log(c))))


@dataclass(frozen=True)
class InnerError:
    """A leave-largest-size-out error: the evidence one fit gives on ``sigma_d``.

    Attributes
    ----------
    e : float
        Mean over the held-out size's end rows of ``ln y - ln median`` of the
        inner new-run predictive.
    s2 : float
        Predictive variance of that mean (variance over draws of the row-mean
        of ``ln`` new-run draws).
    d : float
        ``|ln(N_held / N_nearest fitted)|``.
    rows : int
        End rows averaged.
    n_fit_sizes : int
        Sizes of the inner fit.
    flagged : bool
        The inner fit's convergence flag.
    d_compute : float
        ``min_i |ln(C_held / C_i)|`` over the fitted runs, ``C = 6 N D`` at
        each run's last checkpoint (:func:`compute_distance`): the distance
        in training compute (NaN in errors written before it existed).
    """

    e: float
    s2: float
    d: float
    rows: int
    n_fit_sizes: int
    flagged: bool
    d_compute: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)


def _log_marginal(m: float, s: float, e, s2, d, n_nodes: int = 64) -> np.ndarray:
    """Per-family log marginal likelihood of ``(m, s)`` (Gauss-Hermite over ``log sigma_d``)."""
    x, w = np.polynomial.hermite_e.hermegauss(n_nodes)  # weight exp(-x^2/2)
    logw = np.log(w / np.sqrt(2 * np.pi))
    sig = np.exp(m + s * x)  # (nodes,)
    var = np.asarray(s2)[:, None] + (sig[None, :] * np.asarray(d)[:, None]) ** 2
    ll = stats.norm.logpdf(np.asarray(e)[:, None], scale=np.sqrt(var))
    return np.logaddexp.reduce(ll + logw[None, :], axis=1)


def fit_population(e, s2, d, weights=None) -> tuple[float, float, dict[str, Any]]:
    """Maximum marginal likelihood ``(m, s)`` of ``log sigma_d ~ N(m, s^2)`` from inner errors.

    Each error ``e_j ~ N(0, s2_j + sigma_j^2 d_j^2)`` with its own
    ``sigma_j``; ``sigma_j`` is integrated out (Gauss-Hermite, 64 nodes) and
    the weighted sum of log marginals maximised over ``m`` in
    :data:`M_BOUNDS` and ``s`` in :data:`S_BOUNDS` (L-BFGS-B).

    Parameters
    ----------
    e, s2, d : array_like
        Errors, their predictive variances and distances (one per family).
    weights : array_like, optional
        Log-likelihood weight per family (default 1).

    Returns
    -------
    m, s : float
        The estimate.
    info : dict
        ``loglik``, ``at_bound`` (names of parameters on a bound), ``n``.
    """
    e, s2, d = (np.asarray(v, dtype=float) for v in (e, s2, d))
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float)

    def nll(p: np.ndarray) -> float:
        return -float(np.sum(w * _log_marginal(p[0], p[1], e, s2, d)))

    # start from a moment estimate of sigma: e^2 ~ s2 + sigma^2 d^2
    raw = np.maximum(e**2 - s2, 1e-12) / np.maximum(d, 1e-6) ** 2
    m0 = float(np.clip(np.log(np.sqrt(np.median(raw))), *M_BOUNDS))
    best = None
    for start in ((m0, 0.5), (m0, 1.5), (m0 - 1.0, 1.0)):
        r = optimize.minimize(nll, np.array(start), method="L-BFGS-B", bounds=[M_BOUNDS, S_BOUNDS])
        if best is None or r.fun < best.fun:
            best = r
    m, s = float(best.x[0]), float(best.x[1])
    at = [
        n
        for n, v, (lo, hi) in (("m", m, M_BOUNDS), ("s", s, S_BOUNDS))
        if np.isclose(v, lo, atol=1e-6) or np.isclose(v, hi, atol=1e-6)
    ]
    return m, s, {"loglik": -float(best.fun), "at_bound": at, "n": len(e)}


def population_density(
    e, s2, d, weights=None, *, u: np.ndarray | None = None, n_m: int = 141, n_s: int = 60
) -> tuple[np.ndarray, dict[str, Any]]:
    """Predictive density of ``log sigma_d`` for a new family under the posterior of ``(m, s)``.

    The posterior of ``(m, s)`` is the weighted marginal likelihood of
    :func:`fit_population` times :data:`HYPERPRIOR`, on an ``n_m x n_s`` grid
    (``m`` over :data:`M_BOUNDS`, ``s`` over :data:`S_BOUNDS`); the
    predictive is ``sum over the grid of p(m, s | errors) N(u; m, s^2)``.

    Parameters
    ----------
    e, s2, d : array_like
        Errors, their predictive variances and distances (one per family).
    weights : array_like, optional
        Log-likelihood weight per family (default 1).
    u : ndarray, optional
        Grid of ``log sigma_d`` (default :data:`U_GRID`).
    n_m, n_s : int
        Grid sizes of ``m`` and ``s``.

    Returns
    -------
    density : ndarray
        Normalised density on ``u`` (trapezoid rule).
    info : dict
        Posterior means and sds of ``m`` and ``s``.
    """
    e, s2, d = (np.asarray(v, dtype=float) for v in (e, s2, d))
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float)
    u = U_GRID if u is None else np.asarray(u, dtype=float)
    ms = np.linspace(*M_BOUNDS, n_m)
    ss = np.linspace(*S_BOUNDS, n_s)
    x, gw = np.polynomial.hermite_e.hermegauss(64)  # as _log_marginal, vectorised over s
    logw = np.log(gw / np.sqrt(2 * np.pi))
    lp = np.empty((n_m, n_s))
    for i, m in enumerate(ms):
        sig2 = np.exp(2 * (m + ss[:, None] * x[None, :]))  # (s, nodes)
        var = s2[:, None, None] + sig2[None] * d[:, None, None] ** 2  # (family, s, nodes)
        ll = -0.5 * (np.log(2 * np.pi * var) + e[:, None, None] ** 2 / var)
        lp[i] = w @ np.logaddexp.reduce(ll + logw, axis=2)
    lp += stats.norm.logpdf(ms, HYPERPRIOR["m_loc"], HYPERPRIOR["m_sd"])[:, None]
    lp += stats.halfnorm.logpdf(ss, scale=HYPERPRIOR["s_sd"])[None, :]
    post = np.exp(lp - lp.max())
    post /= post.sum()
    dens = np.einsum("ij,kij->k", post, stats.norm.pdf(u[:, None, None], ms[:, None], ss[None, :]))
    dens /= np.trapezoid(dens, u)
    pm, ps = post.sum(1), post.sum(0)
    info = {
        "m_mean": float(pm @ ms),
        "m_sd": float(np.sqrt(pm @ (ms - pm @ ms) ** 2)),
        "s_mean": float(ps @ ss),
        "s_sd": float(np.sqrt(ps @ (ss - ps @ ss) ** 2)),
    }
    return dens, info


@dataclass(frozen=True)
class DiscrepancyPrior:
    """Population prior ``log sigma_d ~ N(m, s^2)`` for one held-out family.

    Attributes
    ----------
    m, s : float
        Location and scale of ``log sigma_d`` (the fallback's, or the
        maximum marginal likelihood estimate, recorded for reference).
    label : str
        ``"population (G groups, F families)"`` or ``"fallback (...)"``.
    families : tuple of str
        Families whose errors were used.
    errors : dict
        Their :class:`InnerError` dicts.
    info : dict
        :func:`fit_population`'s and :func:`population_density`'s ``info``
        (or the fallback's reason in ``note``).
    density : ndarray, optional
        Prior density of ``log sigma_d`` on :data:`U_GRID`
        (:func:`population_density`); None: ``N(m, s^2)``.
    distance : {"params", "compute"}
        What ``sigma_d`` is per unit of (see :func:`discrepancy_from_errors`).
    """

    m: float
    s: float
    label: str
    families: tuple[str, ...] = ()
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    density: np.ndarray | None = None
    distance: str = "params"

    def posterior(
        self, own: InnerError | Sequence[InnerError] | None, *, why_none: str = ""
    ) -> SigmaPosterior:
        """Return the cell's posterior of ``sigma_d`` (:func:`sigma_posterior`).

        Parameters
        ----------
        own : InnerError, sequence of InnerError or None
            The cell's inner error(s).
        why_none : str
            Why ``own`` is None (recorded in the posterior's ``source``).

        Returns
        -------
        SigmaPosterior
        """
        grid = None if self.density is None else (U_GRID, self.density)
        return sigma_posterior(self.m, self.s, own, why_none=why_none, prior_grid=grid)


def discrepancy_from_errors(
    errors: dict[str, InnerError],
    groups: dict[str, str],
    *,
    info: dict[str, Any] | None = None,
    prefix: str = "population",
    distance: str = "params",
) -> DiscrepancyPrior:
    """Learn the population of ``log sigma_d`` from families' leave-largest-size-out errors.

    Every group counts once (its families' log-likelihoods weighted by one
    over the group's size).

    Parameters
    ----------
    errors : dict of str to InnerError
        Each family's error (finite ``e`` and ``s2``).
    groups : dict of str to str
        Each family's group.
    info : dict, optional
        Extra entries recorded in the result's ``info``.
    prefix : str, default "population"
        Start of the label.
    distance : {"params", "compute"}, default "params"
        The distance ``sigma_d`` is per unit of: ``|ln(N_target / N)|``
        (``InnerError.d``) or ``|ln(C_target / C)|`` in training compute
        (``InnerError.d_compute``; errors without it are left out).

    Returns
    -------
    DiscrepancyPrior
        Labelled ``"PREFIX (G groups, F families[, K inner fits flagged])"``
        (plus ``", per ln compute"`` for ``distance="compute"``).
    """
    if distance not in ("params", "compute"):
        raise ValueError(f"distance must be 'params' or 'compute', got {distance!r}")
    if distance == "compute":
        errors = {
            f: replace(v, d=v.d_compute) for f, v in errors.items() if np.isfinite(v.d_compute)
        }
    fams = sorted(errors)
    if len({groups[f] for f in fams}) < 2:
        raise ValueError("a discrepancy population needs errors from >= 2 family groups")
    group_size: dict[str, int] = {}
    for f in fams:
        group_size[groups[f]] = group_size.get(groups[f], 0) + 1
    e = [errors[f].e for f in fams]
    s2 = [errors[f].s2 for f in fams]
    d = [errors[f].d for f in fams]
    w = [1.0 / group_size[groups[f]] for f in fams]
    m, s, finfo = fit_population(e, s2, d, weights=w)
    dens, pinfo = population_density(e, s2, d, weights=w)
    n_flag = sum(errors[f].flagged for f in fams)
    flags = f", {n_flag} inner fits flagged" if n_flag else ""
    per = ", per ln compute" if distance == "compute" else ""
    return DiscrepancyPrior(
        m,
        s,
        f"{prefix} ({len(group_size)} groups, {len(fams)} families{flags}{per})",
        tuple(fams),
        {f: errors[f].to_dict() for f in fams},
        {**finfo, **pinfo, "groups": len(group_size), "distance": distance, **(info or {})},
        dens,
        distance,
    )


DISCREPANCY_FILE = "discrepancy.json"


def save_discrepancy(prior: DiscrepancyPrior, groups: dict[str, str], path, **meta) -> Path:
    """Write a discrepancy population's evidence (its families' errors and groups) as JSON.

    The population itself is recomputed from that evidence on load
    (:func:`load_discrepancy`), so the file holds data, not a fitted grid.

    Parameters
    ----------
    prior : DiscrepancyPrior
        A population (not a fallback).
    groups : dict of str to str
        Group of each of its families.
    path : str or Path
        Output file (``models/NAME/discrepancy.json``).
    **meta
        Recorded as they are (e.g. the command that built it).

    Returns
    -------
    Path
    """
    path = Path(path)
    payload = {
        "format": "hiscale-discrepancy-1",
        "label": prior.label,
        "errors": prior.errors,
        "groups": {f: groups[f] for f in prior.errors},
        "hyperprior": HYPERPRIOR,
        **meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=json_default) + "\n")
    return path


def load_discrepancy(name_or_path: str | os.PathLike, distance: str = "params") -> DiscrepancyPrior:
    """Load a saved discrepancy population: a bundled prior's name or a file/folder path.

    Parameters
    ----------
    name_or_path : str or path
        ``"corpus-v1"`` (``models/corpus-v1/discrepancy.json``), a folder
        holding ``discrepancy.json``, or the file.
    distance : {"params", "compute"}, default "params"
        See :func:`discrepancy_from_errors`.

    Returns
    -------
    DiscrepancyPrior
        Labelled ``"NAME population (...)"``.

    Raises
    ------
    FileNotFoundError
        When no such file exists (one line naming where it looked).
    """
    p = Path(name_or_path)
    tried = [p, p / DISCREPANCY_FILE]
    if not p.exists():
        tried += [base / str(name_or_path) / DISCREPANCY_FILE for base in bundled("models")]
    path = next((t for t in tried if t.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"no discrepancy population {str(name_or_path)!r} (looked in "
            + ", ".join(str(t) for t in tried)
            + ")"
        )
    name = p.name if p.is_dir() else (p.parent.name if p.is_file() else str(name_or_path))
    return _load(str(path.resolve()), path.stat().st_mtime_ns, name, distance)


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, name: str, distance: str) -> DiscrepancyPrior:
    """Read and learn a saved population (cached per file version: a plan loads it each call)."""
    d = json.loads(Path(path).read_text())
    if d.get("format") != "hiscale-discrepancy-1":
        raise ValueError(f"{path}: not a hiscale discrepancy file (format {d.get('format')!r})")
    errs = {f: InnerError(**v) for f, v in d["errors"].items()}
    return discrepancy_from_errors(
        errs, d["groups"], info={"file": path}, prefix=f"{name} population", distance=distance
    )


@dataclass(frozen=True)
class SigmaPosterior:
    """One-dimensional posterior of ``log sigma_d`` on a grid.

    Attributes
    ----------
    u : ndarray
        Grid of ``log sigma_d`` (equally spaced).
    density : ndarray
        Normalised density of ``log sigma_d`` on ``u`` (trapezoid rule).
    source : str
        ``"prior + own inner error"`` or ``"prior alone (...)"``.
    """

    u: np.ndarray
    density: np.ndarray
    source: str

    @property
    def cdf(self) -> np.ndarray:
        """CDF of ``log sigma_d`` on the grid (trapezoid rule)."""
        du = np.diff(self.u)
        c = np.concatenate([[0.0], np.cumsum(0.5 * (self.density[1:] + self.density[:-1]) * du)])
        return c / c[-1]

    def quantile(self, q) -> np.ndarray:
        """Return quantiles of ``sigma_d`` (not of its log).

        Parameters
        ----------
        q : array_like
            Probabilities in [0, 1].

        Returns
        -------
        ndarray
            ``sigma_d`` quantiles (linear interpolation of the grid CDF).
        """
        return np.exp(np.interp(q, self.cdf, self.u))

    @property
    def median(self) -> float:
        """Posterior median of ``sigma_d``."""
        return float(self.quantile(0.5))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values of ``sigma_d`` (inverse CDF of uniforms from ``rng``).

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the uniforms.
        n : int
            Number of draws.

        Returns
        -------
        ndarray
            ``sigma_d`` draws, shape ``(n,)``.
        """
        return self.quantile(rng.uniform(size=n))


def sigma_posterior(
    m: float,
    s: float,
    own: InnerError | Sequence[InnerError] | None = None,
    *,
    why_none: str = "cell has < 3 training sizes",
    n_grid: int = 4001,
    width: float = 8.0,
    prior_grid: tuple[np.ndarray, np.ndarray] | None = None,
) -> SigmaPosterior:
    """Combine the population prior with the cell's own inner error on a grid of ``log sigma_d``.

    Parameters
    ----------
    m, s : float
        Prior ``log sigma_d ~ N(m, s^2)`` (unused with ``prior_grid``).
    own : InnerError or sequence of InnerError, optional
        The cell's inner error(s) (``None`` or empty: the prior alone);
        several errors multiply their likelihoods (treated as independent).
    why_none : str
        Recorded in ``source`` when ``own`` is None.
    n_grid : int, default 4001
        Grid points.
    width : float, default 8.0
        Grid half-width in prior standard deviations around ``m``.
    prior_grid : (ndarray, ndarray), optional
        ``(u, density)``: a prior density of ``log sigma_d`` on an equally
        spaced grid ``u`` (e.g. :func:`population_density`), used instead
        of ``N(m, s^2)``.

    Returns
    -------
    SigmaPosterior
    """
    if prior_grid is None:
        u = np.linspace(m - width * s, m + width * s, n_grid)
        logp = stats.norm.logpdf(u, m, s)
    else:
        u = np.asarray(prior_grid[0], dtype=float)
        with np.errstate(divide="ignore"):
            logp = np.log(np.asarray(prior_grid[1], dtype=float))
    errors = [own] if isinstance(own, InnerError) else list(own or [])
    if errors:
        for err in errors:
            var = err.s2 + np.exp(2 * u) * err.d**2
            logp = logp + stats.norm.logpdf(err.e, scale=np.sqrt(var))
        source = (
            "prior + own inner error"
            if len(errors) == 1
            else f"prior + {len(errors)} own inner errors"
        )
    else:
        source = f"prior alone ({why_none})"
    p = np.exp(logp - np.max(logp))
    p /= np.trapezoid(p, u)
    return SigmaPosterior(u=u, density=p, source=source)


def widen(
    new: np.ndarray, post: SigmaPosterior, d: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply new-run draws by ``exp(sigma_d,i d z_i)``.

    Parameters
    ----------
    new : ndarray, shape (S, rows)
        New-run draws of the target rows.
    post : SigmaPosterior
        Posterior of ``sigma_d``.
    d : float
        Extrapolation distance of the target (:func:`distance`).
    seed : int
        ``numpy.random.default_rng(seed)`` draws the ``S`` uniforms of
        ``sigma_d`` then the ``S`` normals ``z``.

    Returns
    -------
    widened : ndarray, shape (S, rows)
        ``new * exp(sigma * d * z)[:, None]``.
    sigma : ndarray, shape (S,)
        The ``sigma_d`` draws.
    """
    new = np.asarray(new, dtype=float)
    rng = np.random.default_rng(seed)
    sig = post.sample(rng, new.shape[0])
    z = rng.standard_normal(new.shape[0])
    return new * np.exp(sig * d * z)[:, None], sig
