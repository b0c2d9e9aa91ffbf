"""Preposterior analysis of one candidate run by importance reweighting.

For a candidate run at ``(N, D)`` and the current posterior draws
``theta_s`` (``s = 1..S``, equal weight), one *hypothetical outcome* is made
by picking a "true" draw ``s*`` and simulating the run from the model's own
generative branch: ``n`` end-of-run checkpoints at ``D x linspace(0.8, 1, n)``
(the rows a fit keeps, :class:`hiscale.infer.fit.FitOptions`), each
``ln L_i = ln L̂_{s*}(N, D_i) + delta + eps_i`` with one run offset
``delta ~ sigma_run t(df_run)`` and checkpoint noise ``eps_i ~ sigma_obs
t(df_obs)``. The posterior after the run is the current draws reweighted by
the candidate's likelihood, the model's per-run likelihood with the run
offset integrated out (:func:`run_loglik_rows`, equal to
:func:`hiscale.modeling.family.run_loglik` for one run): a run's information
is limited by its run offset, whatever its number of checkpoints. The truth
draw ``s*`` itself gets weight 0 (it would otherwise claim credit for its own
outcome).

The target quantity is the central ``level`` interval of a *new run* at the
target (law + fresh run offset + checkpoint noise, as
:meth:`hiscale.infer.result.Fit.draws`), computed by weighted quantiles; its
*relative width* ``(q_hi - q_lo) / median`` is unit-free, so it is defined
for a family whose loss scale is unknown. Averaged over ``M`` outcomes it is
the expected width after adding the run.

The law's own extrapolation error is not in those draws: a posterior that
believes the law narrows with every cheap small run, while the error of
extrapolating to the target grows with the distance from the largest run
(the backtests of issue 10). With ``discrepancy`` (:func:`discrepancy_halfwidth`)
the interval at the target is widened by an extrapolation term ``h d``,
``d = min_i |ln(C_target / C_i)|`` over the runs fitted and chosen so far,
``C = 6 N D`` (or ``|ln(N_target / N_i)|``), so a big model trained on few
tokens is not "near" the target:
``ln(q_hi / median)`` becomes ``sqrt(ln(q_hi / median)^2 + (h d)^2)`` (and
likewise below the median), exact when both parts are Gaussian in ``ln L``
(:func:`widen_log_interval`). Only a run nearer the target in ``N`` shrinks
``d``. Every reweighting reports the
effective sample size of its weights, ``ESS = 1 / sum(w^2)``; when the
median ESS over outcomes is below :data:`ESS_MIN` the estimate is flagged
(there is no automatic fallback to a Laplace step or a refit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import gammaln

from hiscale.laws import D0, N0, get_law
from hiscale.priors.prior import Prior, resolve_prior

__all__ = [
    "END_OF_RUN",
    "ESS_MIN",
    "N_ROWS",
    "PlanDraws",
    "Preposterior",
    "discrepancy_halfwidth",
    "draws_from_fit",
    "draws_from_prior",
    "effective_sample_size",
    "normalised_weights",
    "reweighted_width",
    "run_loglik_rows",
    "run_tokens",
    "weighted_quantile",
    "widen_log_interval",
]

#: Checkpoints per hypothetical run (the fit tempers a run to about 4 effective rows).
N_ROWS: int = 4
#: The hypothetical checkpoints span ``[END_OF_RUN x D, D]`` (the rows a fit keeps).
END_OF_RUN: float = 0.8
#: Median ESS below which a reweighted estimate is flagged.
ESS_MIN: float = 50.0
#: sd (in ln L) of the loss-scale importance proposal for a family with no runs.
SCALE_PROPOSAL_SD: float = 0.05


@dataclass(frozen=True)
class PlanDraws:
    """Equal-weight draws of a family's parameters, the planner's starting point.

    Attributes
    ----------
    law : str
        Law form of the draws.
    theta : dict of str to ndarray
        Law parameters, ``log_scale``, ``sigma_run`` and ``sigma_obs``, each ``(S,)``.
    df_run, df_obs : float
        Student-t degrees of freedom of the run offset and checkpoint noise.
    source : str
        ``"fit"`` (posterior draws) or ``"prior"`` (a population prior alone).
    scale_known : bool
        False when ``log_scale`` is drawn around an arbitrary reference (a
        family with no runs): only relative widths are meaningful then.
    notes : tuple of str
        What the draws assume (reported with every plan).
    scale_sd : float
        Prior sd of ``log_scale`` (family with no runs).
    """

    law: str
    theta: dict[str, np.ndarray]
    df_run: float
    df_obs: float
    source: str
    scale_known: bool
    notes: tuple[str, ...] = field(default=())
    scale_sd: float = 1.0

    @property
    def n_draws(self) -> int:
        """Number of draws ``S``."""
        return int(np.asarray(self.theta["sigma_run"]).shape[0])

    def log_loss(self, params, tokens) -> np.ndarray:
        """``ln L̂`` per draw at ``(params, tokens)``: shape ``(S, *broadcast shape)``."""
        n, d = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
        x = np.log(n / N0).reshape(1, -1)
        y = np.log(d / D0).reshape(1, -1)
        law = get_law(self.law)
        th = {k: np.asarray(v, float)[:, None] for k, v in self.theta.items()}
        out = np.asarray(law.log_loss(x, y, th), float)
        return out.reshape((self.n_draws, *n.shape))


def draws_from_fit(fit) -> PlanDraws:
    """Posterior draws of a :class:`hiscale.infer.result.Fit` (``theta()``, ``prior.settings``)."""
    s = fit.prior.settings
    notes = []
    if getattr(fit, "flagged", False):
        notes.append(
            "the fit the plan starts from did not converge: "
            + str(fit.diagnostics.get("reasons", ""))
        )
    return PlanDraws(
        law=fit.law,
        theta={k: np.asarray(v, float) for k, v in fit.theta().items()},
        df_run=float(s["df_run"]),
        df_obs=float(s["df_obs"]),
        source="fit",
        scale_known=True,
        notes=tuple(notes),
    )


def draws_from_prior(
    prior: str | Prior = "corpus-v1",
    *,
    law: str = "chinchilla",
    n_draws: int = 8000,
    seed: int = 0,
) -> PlanDraws:
    """Draws for a family with no runs: the law's shape from a (population) prior.

    ``z ~ MVN(loc, cov)`` of the prior (with Student-t tails and the same
    covariance when its ``df_law`` setting is given); ``sigma_run``, ``sigma_obs`` from its
    log-normal settings. The loss scale is not pooled (units differ across
    families), so ``log_scale ~ Normal(0, log_scale_sd)`` around an arbitrary
    reference, the spread a fit gives it a priori; relative widths do not
    depend on the reference, and the first run pins the scale.
    """
    if n_draws < 100:
        raise ValueError(f"n_draws must be >= 100, got {n_draws}")
    pr = resolve_prior(prior, law=law)
    rng = np.random.default_rng(seed)
    s = pr.settings
    if s.get("df_law") is None:
        z = rng.multivariate_normal(pr.loc, pr.cov, size=n_draws, method="cholesky")
    else:  # the fit's heavy-tailed law prior (hiscale.modeling.family.law_prior_tails)
        from hiscale.modeling.family import law_prior_tails

        k = len(pr.names)
        _, chol = law_prior_tails(s["df_law"], np.linalg.cholesky(pr.cov + 1e-10 * np.eye(k)))
        z = pr.loc + rng.standard_t(float(s["df_law"]), size=(n_draws, k)) @ chol.T
    theta = {n: z[:, i] for i, n in enumerate(pr.names)}
    theta["log_scale"] = rng.normal(0.0, float(s["log_scale_sd"]), size=n_draws)
    theta["sigma_run"] = np.exp(rng.normal(s["sigma_run"][0], s["sigma_run"][1], size=n_draws))
    theta["sigma_obs"] = np.exp(rng.normal(s["sigma_obs"][0], s["sigma_obs"][1], size=n_draws))
    note = (
        f"no runs of this family: draws from prior {pr.label!r}; its loss scale is not pooled, "
        f"so log_scale ~ Normal(reference, {float(s['log_scale_sd']):g}) and widths are "
        "relative ((q_hi - q_lo) / median), not in loss units"
    )
    return PlanDraws(
        law=pr.law,
        theta=theta,
        df_run=float(s["df_run"]),
        df_obs=float(s["df_obs"]),
        source="prior",
        scale_known=False,
        notes=(note,),
        scale_sd=float(s["log_scale_sd"]),
    )


def run_tokens(tokens, n_rows: int = N_ROWS, end_of_run: float = END_OF_RUN) -> np.ndarray:
    """Token counts of a hypothetical run's kept checkpoints: ``(..., n_rows)``."""
    grid = np.linspace(end_of_run, 1.0, n_rows) if n_rows > 1 else np.ones(1)
    return np.asarray(tokens, float)[..., None] * grid


def _t_logpdf(x, df, scale):
    """Student-t log density with location 0 and ``scale`` (broadcasting)."""
    z = x / scale
    return (
        gammaln((df + 1.0) / 2.0)
        - gammaln(df / 2.0)
        - 0.5 * np.log(df * np.pi)
        - np.log(scale)
        - (df + 1.0) / 2.0 * np.log1p(z * z / df)
    )


def run_loglik_rows(resid, sigma_run, sigma_obs, df_run, df_obs, weight=1.0) -> np.ndarray:
    """Per-run log-likelihood of one run's residuals, run offset integrated out.

    The NumPy twin of :func:`hiscale.modeling.family.run_loglik` for a run
    whose ``n`` rows lie along the last axis, vectorised over leading axes
    (draws, outcomes, candidates).

    Parameters
    ----------
    resid : array (..., n)
        ``ln L - ln L̂`` of the run's rows.
    sigma_run, sigma_obs : array
        Noise scales, broadcast against ``resid[..., 0]``.
    df_run, df_obs : float
        Student-t degrees of freedom.
    weight : float
        Tempering weight of the within-run term.

    Returns
    -------
    ndarray (...)
        Between-run plus tempered within-run term.
    """
    resid = np.asarray(resid, float)
    n = resid.shape[-1]
    sr = np.asarray(sigma_run, float)
    so = np.asarray(sigma_obs, float)
    rbar = resid.mean(axis=-1)
    between = _t_logpdf(rbar, df_run, np.sqrt(sr**2 + so**2 / n)) - 0.5 * np.log(n)
    if n == 1:
        return between
    frac = (n - 1.0) / n
    dev = resid - rbar[..., None]
    rows = _t_logpdf(dev, df_obs, (so * np.sqrt(frac))[..., None]) + 0.5 * np.log(frac)
    return between + frac * weight * rows.sum(axis=-1)


def normalised_weights(logw, axis: int = -1) -> np.ndarray:
    """Normalise importance weights ``exp(logw)`` to sum 1 along ``axis`` (``-inf`` = 0)."""
    logw = np.asarray(logw, float)
    m = np.max(logw, axis=axis, keepdims=True)
    w = np.exp(logw - m)
    return w / w.sum(axis=axis, keepdims=True)


def effective_sample_size(weights, axis: int = -1) -> np.ndarray:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` along ``axis``."""
    w = np.asarray(weights, float)
    return w.sum(axis=axis) ** 2 / (w**2).sum(axis=axis)


def weighted_quantile(values, weights, q) -> np.ndarray:
    """Quantiles of a weighted sample (inverse of the weighted empirical CDF).

    The smallest value whose cumulative weight reaches ``q`` of the total,
    like ``numpy.quantile(..., method="inverted_cdf")`` on a sample where each
    value is repeated in proportion to its weight.

    Parameters
    ----------
    values : array (S,)
        Sample values (shared by every weight vector).
    weights : array (S,) or (S, K)
        Non-negative weights along the first axis, one column per weighting.
    q : float or sequence of float
        Probabilities in ``[0, 1]``.

    Returns
    -------
    ndarray
        Shape ``(len(q), K)`` (``(len(q),)`` for 1-D weights; scalar ``q``
        drops the first axis).
    """
    v = np.asarray(values, float)
    w = np.asarray(weights, float)
    one_d = w.ndim == 1
    if one_d:
        w = w[:, None]
    qs = np.atleast_1d(np.asarray(q, float))
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order], axis=0)
    total = cw[-1]
    out = np.empty((len(qs), w.shape[1]))
    for i, p in enumerate(qs):
        # tolerance: cumulative sums of weights that are exact fractions
        idx = np.argmax(cw >= p * total - 1e-12 * total, axis=0)
        out[i] = v[order][idx]
    if one_d:
        out = out[:, 0]
    return out[0] if np.ndim(q) == 0 else out


def discrepancy_halfwidth(discrepancy, level: float = 0.8) -> float:
    r"""Half-width per unit ``ln N`` distance of the discrepancy's central ``level`` interval.

    The discrepancy of ``ln L`` at distance ``d`` is ``delta = sigma_d d z``
    with ``z ~ N(0, 1)``. For a fixed ``sigma_d`` (a float) the half-width is
    ``Phi^-1((1 + level) / 2) sigma_d``; for a
    :class:`~hiscale.priors.discrepancy.DiscrepancyPrior` (``sigma_d``
    uncertain, its population predictive on a grid of ``ln sigma_d``) it is
    the ``h`` with ``P(|sigma_d z| <= h) = level`` under the mixture, solved
    exactly on the grid (no random numbers).

    Parameters
    ----------
    discrepancy : float, DiscrepancyPrior or None
        ``sigma_d`` or its population prior; None or 0: no discrepancy.
    level : float, default 0.8
        Central interval probability.

    Returns
    -------
    float
        ``h >= 0`` (``ln L`` units per unit ``|ln(N_target / N)|``).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if discrepancy is None:
        return 0.0
    if isinstance(discrepancy, (int, float, np.floating)):
        sd = float(discrepancy)
        if not np.isfinite(sd) or sd < 0:
            raise ValueError(f"discrepancy sigma_d must be a finite number >= 0, got {sd!r}")
        return float(stats.norm.ppf((1 + level) / 2) * sd)
    from hiscale.priors.discrepancy import U_GRID

    dens = getattr(discrepancy, "density", None)
    if dens is None:
        p = stats.norm.pdf(U_GRID, discrepancy.m, discrepancy.s)
    else:
        p = np.asarray(dens, float)
    p = p / p.sum()
    sig = np.exp(U_GRID)

    def covered(h: float) -> float:
        return float(np.sum(p * (2 * stats.norm.cdf(h / sig) - 1))) - level

    hi = 1.0
    while covered(hi) < 0:
        hi *= 10
    return float(optimize.brentq(covered, 0.0, hi, xtol=1e-12))


def widen_log_interval(lower, median, upper, h):
    """Widen an interval by an independent term of half-width ``h`` in ``ln``.

    ``ln(upper / median)`` becomes ``sqrt(ln(upper / median)^2 + h^2)`` and
    ``ln(median / lower)`` likewise: half-widths of independent Gaussian
    parts at one level add in quadrature, so this is exact when the
    interval's ``ln`` is Gaussian and the planner's approximation otherwise.

    Parameters
    ----------
    lower, median, upper : array
        Interval bounds and median (> 0).
    h : float or array
        Half-width of the added term in ``ln`` (broadcast).

    Returns
    -------
    lower, upper : ndarray
        The widened bounds.
    """
    lower, median, upper, h = (np.asarray(v, float) for v in (lower, median, upper, h))
    down = np.sqrt(np.log(median / lower) ** 2 + h**2)
    up = np.sqrt(np.log(upper / median) ** 2 + h**2)
    return median * np.exp(-down), median * np.exp(up)


def _interval_widths(sorted_vals: np.ndarray, w_sorted: np.ndarray, level: float, h=0.0):
    """Relative and absolute widths of the central ``level`` interval, per weight column.

    ``h`` (per column or scalar): the discrepancy half-width added in ``ln``
    (:func:`widen_log_interval`).
    """
    cw = np.cumsum(w_sorted, axis=0)
    total = cw[-1]
    qs = ((1 - level) / 2, 0.5, (1 + level) / 2)
    lo, med, hi = (sorted_vals[np.argmax(cw >= p * total - 1e-12 * total, axis=0)] for p in qs)
    if np.any(np.asarray(h) > 0):
        lo, hi = widen_log_interval(lo, med, hi, h)
    return (hi - lo) / med, hi - lo


def _target_new_run(draws: PlanDraws, target, rng) -> np.ndarray:
    """Log loss of a new run at the target per draw (fresh offset and checkpoint noise)."""
    mu = draws.log_loss(target[0], target[1]).reshape(-1)
    t_run = rng.standard_t(draws.df_run, size=mu.shape)
    t_obs = rng.standard_t(draws.df_obs, size=mu.shape)
    return mu + draws.theta["sigma_run"] * t_run + draws.theta["sigma_obs"] * t_obs


class Preposterior:
    """Hypothetical outcomes of candidate runs and the target widths after reweighting.

    Built once per plan: ``M`` outcomes (each from one truth draw, shared by
    every candidate, so a *set* of candidates gets a coherent joint outcome)
    and the log-likelihood of every candidate's outcome under every draw,
    ``loglik[m, s, c]``.

    Parameters
    ----------
    draws : PlanDraws
        Current draws.
    target : (float, float)
        Target ``(N, D)``.
    candidates : pandas.DataFrame
        Candidate table (``params``, ``tokens``).
    n_outcomes : int
        Hypothetical outcomes ``M`` per candidate.
    seed : int
        Seed of the outcomes and the target's new-run noise.
    level : float
        Central interval probability at the target.
    n_rows : int
        Checkpoints per hypothetical run.
    align : int, optional
        Family with no runs only: the candidate whose location the loss-scale
        proposal lines the draws up at (default: the candidates' log centre).
        Aligning at the first run of a sequence keeps the ESS up, because
        that run pins the scale there.
    discrepancy_h : float, default 0
        Extrapolation half-width per unit distance at ``level``
        (:func:`discrepancy_halfwidth`); 0: the law's draws alone.
    fitted : array (R, 2), optional
        ``(N, D)`` of the runs already fitted, ``D`` at each run's last
        checkpoint (the distance before any new run); none for a family
        with no runs, whose current width is its prior predictive.
    distance : {"compute", "params"}, default "compute"
        The distance of the target from a run: ``|ln(6 N_t D_t / 6 N D)|``
        (training compute, so a big model trained on few tokens is not
        "near") or ``|ln(N_t / N)|``. It must match what ``discrepancy_h``
        is per unit of.
    aggregate : {"nearest", "mean"}, default "nearest"
        How the runs' distances make the extrapolation distance: the nearest
        run's (the law anchored there), or the mean over runs (every run
        weighs the same in the fit, so far runs pull it away from the target
        and adding one *increases* the distance).
    local_var : array (C,), optional
        For a fit local to the target (:mod:`hiscale.modeling.local`): the
        law's error variance at each candidate (``local_sd²`` times its
        Brownian variance, ``|ln(N_t/N)| + |ln(D_t/D)|`` on its sides), added
        to the candidate's run-offset variance, in its hypothetical outcomes
        and in its likelihood. Approximation: the candidate's error is taken
        as independent of the fitted runs'.
    """

    def __init__(
        self,
        draws: PlanDraws,
        target,
        candidates: pd.DataFrame,
        *,
        n_outcomes: int = 32,
        seed: int = 0,
        level: float = 0.8,
        n_rows: int = N_ROWS,
        align: int | None = None,
        discrepancy_h: float = 0.0,
        fitted=None,
        distance: str = "compute",
        aggregate: str = "nearest",
        local_var=None,
    ):
        if n_outcomes < 1:
            raise ValueError(f"n_outcomes must be >= 1, got {n_outcomes}")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if not np.isfinite(discrepancy_h) or discrepancy_h < 0:
            raise ValueError(f"discrepancy_h must be a finite number >= 0, got {discrepancy_h!r}")
        self.draws = draws
        self.level = float(level)
        if distance not in ("compute", "params"):
            raise ValueError(f"distance must be 'compute' or 'params', got {distance!r}")
        self.discrepancy_h = float(discrepancy_h)
        self.distance_kind = distance

        def where(n, d):
            n = np.asarray(n, float)
            return np.log(n) if distance == "params" else np.log(6.0 * n * np.asarray(d, float))

        at = float(where(target[0], target[1]))
        self._cand_dist = np.abs(
            where(candidates["params"].to_numpy(float), candidates["tokens"].to_numpy(float)) - at
        )
        if aggregate not in ("nearest", "mean"):
            raise ValueError(f"aggregate must be 'nearest' or 'mean', got {aggregate!r}")
        self.aggregate = aggregate
        fr = np.asarray([] if fitted is None else fitted, float).reshape(-1, 2)
        self._fitted_dist = np.abs(where(fr[:, 0], fr[:, 1]) - at) if len(fr) else np.zeros(0)
        self._dist0 = self._combine(self._fitted_dist)
        self.n_rows = int(n_rows)
        rng = np.random.default_rng(seed)
        S = draws.n_draws
        C = len(candidates)
        M = int(n_outcomes)
        tok = run_tokens(candidates["tokens"].to_numpy(float), self.n_rows)  # (C, n)
        par = np.broadcast_to(candidates["params"].to_numpy(float)[:, None], tok.shape)
        sr, so = draws.theta["sigma_run"], draws.theta["sigma_obs"]
        # a candidate's run-level scale: its offset, and for a local fit the law's
        # error at its distance from the target (independent of the fitted runs')
        lv = np.zeros(C) if local_var is None else np.asarray(local_var, float).reshape(C)
        if np.any(~np.isfinite(lv)) or np.any(lv < 0):
            raise ValueError("local_var must be finite and >= 0 per candidate")
        sr_a = np.asarray(sr, float)[:, None]
        sr_c = np.broadcast_to(sr_a, (S, C)) if local_var is None else np.sqrt(sr_a**2 + lv)
        ls = np.asarray(draws.theta["log_scale"], float)
        # shapes with the scale taken out: ln L = log_scale + shape
        shape_c = draws.log_loss(par, tok) - ls[:, None, None]  # (S, C, n)
        shape_t = draws.log_loss(target[0], target[1]).reshape(-1) - ls  # (S,)
        noise_t = draws.theta["sigma_run"] * rng.standard_t(draws.df_run, size=S) + draws.theta[
            "sigma_obs"
        ] * rng.standard_t(draws.df_obs, size=S)
        self.truth = rng.choice(S, size=M, replace=M > S)
        t_run = rng.standard_t(draws.df_run, size=(M, C))
        t_obs = rng.standard_t(draws.df_obs, size=(M, C, self.n_rows))
        ts = self.truth
        self.outcomes = (
            ls[ts][:, None, None]
            + shape_c[ts]
            + sr_c[ts][:, :, None] * t_run[..., None]
            + so[ts][:, None, None] * t_obs
        )  # (M, C, n) hypothetical ln L rows
        # the loss scale per outcome and draw: the draws' own (a fit), or (a family with
        # no runs, scale drawn from a wide prior) an importance proposal that lines each
        # draw up with the truth's loss at the candidates' centre, corrected in the base
        # log weights, so every set of runs is reweighted from the same proposal
        self._base = np.zeros((M, S))
        if draws.scale_known:
            ls_m = np.broadcast_to(ls, (M, S))
        else:
            at = slice(None) if align is None else slice(align, align + 1)
            x_ref = float(np.mean(np.log(par[at])))
            y_ref = float(np.mean(np.log(tok[at])))
            shape_ref = draws.log_loss(np.exp(x_ref), np.exp(y_ref)).reshape(-1) - ls
            centre = ls[ts][:, None] + shape_ref[ts][:, None] - shape_ref[None, :]
            tau = SCALE_PROPOSAL_SD
            ls_m = centre + tau * rng.standard_normal((M, S))
            sd0 = float(draws.scale_sd)
            self._base = (-0.5 * (ls_m / sd0) ** 2 - np.log(sd0)) - (
                -0.5 * ((ls_m - centre) / tau) ** 2 - np.log(tau)
            )
        self._base = np.where(np.arange(S)[None, :] == ts[:, None], -np.inf, self._base)
        new_t = np.exp(ls_m + shape_t + noise_t)  # (M, S)
        self._order = np.argsort(new_t, axis=1, kind="stable")
        self._sorted = np.take_along_axis(new_t, self._order, axis=1)
        self._prior_width = None
        if not draws.scale_known:
            self._prior_width = _interval_widths(
                np.sort(np.exp(ls + shape_t + noise_t)), np.full((S, 1), 1.0 / S), self.level
            )
        self.loglik = np.empty((M, S, C))
        for m in range(M):
            self.loglik[m] = run_loglik_rows(
                self.outcomes[m][None] - shape_c - ls_m[m][:, None, None],
                sr_c,
                so[:, None],
                draws.df_run,
                draws.df_obs,
            )

    @property
    def n_outcomes(self) -> int:
        """Number of hypothetical outcomes ``M``."""
        return int(self.loglik.shape[0])

    def base(self) -> np.ndarray:
        """Log weights of the current draws, ``(M, S)``.

        0 for a fit's draws (the scale proposal's correction for a family with
        no runs), and ``-inf`` at each outcome's truth draw.
        """
        return self._base.copy()

    def distance(self, chosen=()) -> np.ndarray:
        """Extrapolation distance (``distance`` of the constructor) after adding each candidate.

        Parameters
        ----------
        chosen : sequence of int
            Candidates already in the sequence (with the fitted sizes, the
            distance before the next run).

        Returns
        -------
        ndarray (C,)
            Per candidate (added to ``chosen``); ``inf`` only for a family
            with no runs and nothing chosen, which no candidate column has.
        """
        have = np.concatenate([self._fitted_dist, self._cand_dist[list(chosen)]])
        if self.aggregate == "nearest":
            d = float(np.min(have)) if len(have) else np.inf
            return np.minimum(d, self._cand_dist)
        return (have.sum() + self._cand_dist) / (len(have) + 1)

    def distance_now(self, chosen=()) -> float:
        """Extrapolation distance with the fitted sizes and ``chosen`` (``inf``: no size yet)."""
        return self._combine(np.concatenate([self._fitted_dist, self._cand_dist[list(chosen)]]))

    def _combine(self, d: np.ndarray) -> float:
        """Combine the runs' distances: the nearest, or their mean (``inf`` with none)."""
        if not len(d):
            return float("inf")
        return float(np.min(d) if self.aggregate == "nearest" else np.mean(d))

    def _h(self, dist) -> np.ndarray | float:
        """Discrepancy half-width at distance(s) ``dist`` (0 where ``dist`` is ``inf``)."""
        if self.discrepancy_h == 0:
            return 0.0
        d = np.asarray(dist, float)
        return np.where(np.isfinite(d), self.discrepancy_h * np.where(np.isfinite(d), d, 0), 0.0)

    def current(self, chosen=()):
        """Widths and ESS before any new run, ``(M, 1)`` each (as :meth:`widths`).

        For a fit, the reweighting with no new run (truth draws left out); for a
        family with no runs, the prior predictive of the unshifted draws.
        ``chosen`` only sets the extrapolation distance (see :meth:`distance`).
        """
        if self._prior_width is None:
            return self.widths(self.base(), dist=self.distance_now(chosen))
        M = self.n_outcomes
        rel, ab = self._prior_width
        return (
            np.full((M, 1), float(rel[0])),
            np.full((M, 1), float(ab[0])),
            np.full((M, 1), float(self.draws.n_draws)),
        )

    def widths(self, base: np.ndarray, extra: np.ndarray | None = None, dist=None):
        """Widths and ESS at the target under log weights ``base[m, s] (+ extra[m, s, k])``.

        Parameters
        ----------
        base : array (M, S)
            Log weights so far (:meth:`base` plus chosen candidates' ``loglik``).
        extra : array (M, S, K), optional
            Further log weights, one column per option (e.g. ``loglik``).
        dist : float or array (K,), optional
            Extrapolation distance per column (:meth:`distance`); default: each
            candidate alone (``extra`` = all of ``loglik``) or the fitted sizes'.

        Returns
        -------
        rel, abs, ess : ndarray
            ``(M, K)`` each (``(M, 1)`` without ``extra``).
        """
        M = base.shape[0]
        K = 1 if extra is None else extra.shape[2]
        if dist is None:
            dist = (
                self.distance() if extra is not None and K == len(self._cand_dist) else self._dist0
            )
        h = np.broadcast_to(self._h(dist), (K,))
        rel = np.empty((M, K))
        ab = np.empty((M, K))
        ess = np.empty((M, K))
        for m in range(M):
            logw = base[m][:, None] if extra is None else base[m][:, None] + extra[m]
            w = normalised_weights(logw, axis=0)
            ess[m] = effective_sample_size(w, axis=0)
            rel[m], ab[m] = _interval_widths(self._sorted[m], w[self._order[m]], self.level, h)
        return rel, ab, ess


def reweighted_width(
    draws: PlanDraws,
    target,
    params: float,
    tokens,
    log_loss,
    *,
    level: float = 0.8,
    seed: int = 0,
) -> dict[str, float]:
    """Target interval after one *observed* run, by reweighting (for checks against refits).

    Parameters
    ----------
    draws : PlanDraws
        Current draws.
    target : (float, float)
        Target ``(N, D)``.
    params : float
        The run's size N.
    tokens, log_loss : array (n,)
        The run's kept checkpoints and their ``ln L``.
    level : float
        Central interval probability.
    seed : int
        Seed of the target's new-run noise.

    Returns
    -------
    dict
        ``width``, ``relative_width``, ``median``, ``lower``, ``upper`` and ``ess``.
    """
    rng = np.random.default_rng(seed)
    new_t = np.exp(_target_new_run(draws, target, rng))
    tok = np.asarray(tokens, float)
    mu = draws.log_loss(np.full(tok.shape, float(params)), tok)  # (S, n)
    ll = run_loglik_rows(
        np.asarray(log_loss, float)[None] - mu,
        draws.theta["sigma_run"],
        draws.theta["sigma_obs"],
        draws.df_run,
        draws.df_obs,
    )
    w = normalised_weights(ll)
    lo, med, hi = weighted_quantile(new_t, w, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return {
        "width": float(hi - lo),
        "relative_width": float((hi - lo) / med),
        "median": float(med),
        "lower": float(lo),
        "upper": float(hi),
        "ess": float(effective_sample_size(w)),
    }
