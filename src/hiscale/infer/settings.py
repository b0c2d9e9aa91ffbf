"""Sampler settings, their presets and convergence thresholds: the one place for them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hiscale.data.selection import END_LR_TOLERANCE

__all__ = [
    "CURVE_SAMPLER",
    "DEMO_SAMPLER",
    "JOINT_SAMPLER",
    "LOCAL_SAMPLER",
    "POPULATION_SAMPLER",
    "THRESHOLDS",
    "FitOptions",
    "SamplerSettings",
    "default_sampler",
    "retry_sampler",
]

#: A fit is flagged when any of these fails (``ess_min`` applies to the bulk
#: and to the tail ESS).
THRESHOLDS: dict[str, float] = {
    "rhat_max": 1.01,
    "ess_min": 100.0,
    "divergences": 0,
    "tree_depth_hits_frac": 0.05,
    "chain_disagreement": 1.0,
    "bfmi_min": 0.3,
}


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings (recorded with every fit).

    ``chain_method`` "parallel" uses one CPU host device per chain
    (:func:`hiscale.configure` sets up to four host devices); with fewer
    devices than chains, or another value, the family fit vectorises the
    chains on one device and NumPyro's ``MCMC`` (population step, joint fit)
    runs them one after the other.

    ``init`` chooses the chains' starting points: ``"dispersed"`` (default,
    see :func:`hiscale.infer.nuts.dispersed_inits`) or ``"map"`` (every chain
    at the MAP plus ``init_jitter`` of N(0, 1) noise in the unconstrained
    space: r̂ cannot see a second mode then). ``init_overdispersion`` scales
    the Laplace standard deviations of the dispersed draws. The population
    step and the joint fit run NumPyro's ``MCMC`` and start it their own way
    (they record that instead of these three fields, see :meth:`numpyro_dict`).

    ``dense_mass`` adapts a dense mass matrix (NumPyro's ``dense_mass``) over
    all parameters, which the correlated law parameters need.

    ``num_samples`` is 2000 per chain because r̂ <= 1.01 needs a bulk ESS of
    several hundred per parameter to be met by a *converged* sampler: with 2
    chains of 1000 draws and ESS ~400, stationary AR(1) chains exceed 1.01 on
    one of 9 parameters about half the time, so the flag measured Monte Carlo
    noise. The family model's geometry (``log_loss_ref``) made each draw cheap
    enough that 2000 draws cost fewer gradient evaluations than 1000 did
    before, on the backtest cells measured.

    Attributes
    ----------
    num_warmup, num_samples, num_chains : int
        Warm-up iterations, draws per chain and chains.
    target_accept_prob : float
        NUTS target acceptance probability (step-size adaptation).
    max_tree_depth : int
        Largest tree depth (at most ``2**max_tree_depth`` leapfrog steps per
        draw); draws that hit it are counted in the diagnostics.
    dense_mass : bool
        Dense (True) or diagonal mass matrix.
    chain_method : str
        ``"parallel"``: one device per chain when there are enough (see
        above).
    init : {"dispersed", "map"}
        Starting points of the chains.
    init_jitter : float
        Noise scale around the MAP for ``init="map"``.
    init_overdispersion : float
        Scale of the Laplace standard deviations for ``init="dispersed"``.
    init_mass : {"identity", "laplace"}
        The inverse mass matrix NUTS starts its warm-up from: NumPyro's
        identity, or the Laplace covariance at the best MAP (the Hessian's
        inverse with its eigenvalues floored, see
        :func:`hiscale.infer.nuts.laplace_sqrt_cov`; diagonal when
        ``dense_mass`` is False). Adaptation replaces it after the first
        window either way; it decides what the first ~100 warm-up iterations
        cost, where an identity mass on a posterior whose scales differ by
        orders of magnitude runs trees to the depth limit. Left out of
        :meth:`to_dict` at its default, so cache keys of earlier fits hold.

    Raises
    ------
    ValueError
        If ``init`` is not ``"dispersed"`` or ``"map"``.
    """

    num_warmup: int = 500
    num_samples: int = 2000
    num_chains: int = 2
    target_accept_prob: float = 0.9
    max_tree_depth: int = 8
    dense_mass: bool = True
    chain_method: str = "parallel"
    init: str = "dispersed"
    init_jitter: float = 0.05
    init_overdispersion: float = 2.0
    init_mass: str = "identity"

    def __post_init__(self):
        """Check ``init`` and ``init_mass``."""
        if self.init not in ("dispersed", "map"):
            raise ValueError(
                f"SamplerSettings.init must be 'dispersed' or 'map', got {self.init!r}"
            )
        if self.init_mass not in ("identity", "laplace"):
            raise ValueError(
                f"SamplerSettings.init_mass must be 'identity' or 'laplace', got {self.init_mass!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (for provenance).

        Returns
        -------
        dict
        """
        d = asdict(self)
        if d["init_mass"] == "identity":
            del d["init_mass"]  # the default: keys of fits made before the field hold
        return d

    def numpyro_dict(self, init_strategy: str) -> dict[str, Any]:
        """Return the provenance of a run of NumPyro's ``MCMC`` with these settings.

        Parameters
        ----------
        init_strategy : str
            Name of the NumPyro init strategy used (e.g. ``"init_to_median"``).

        Returns
        -------
        dict
            The settings, with ``init``, ``init_jitter`` and
            ``init_overdispersion`` replaced by ``init = init_strategy``.
        """
        d = {k: v for k, v in asdict(self).items() if not k.startswith("init")}
        return {**d, "init": init_strategy}


#: Step 2 of the population prior (:func:`hiscale.population.build_prior`):
#: NumPyro's NUTS on the normal-normal meta-model (a few dozen parameters,
#: cheap gradients). 1000 draws per chain give the moment-matched predictive
#: a Monte Carlo error far below its spread; target acceptance 0.95 because
#: the spread ``tau`` of a handful of families has a funnel towards 0, where
#: smaller steps avoid divergences; a diagonal mass matrix and NumPyro's
#: default tree depth (10) suffice there.
POPULATION_SAMPLER = SamplerSettings(
    num_warmup=1000,
    num_samples=1000,
    num_chains=2,
    target_accept_prob=0.95,
    max_tree_depth=10,
    dense_mass=False,
)

#: The one-step joint fit (:func:`hiscale.contrib.joint.fit_joint`, research
#: use): every family's likelihood and the population in one model, so each
#: draw is as dear as a fit of all families; 500 + 500 draws per chain keep a
#: run in minutes. Tree depth 9 caps the cost of the draws that hit it (the
#: diagnostics flag them); a diagonal mass matrix, as the model has
#: ``F * (K + 3)`` parameters.
JOINT_SAMPLER = SamplerSettings(
    num_warmup=500,
    num_samples=500,
    num_chains=2,
    target_accept_prob=0.9,
    max_tree_depth=9,
    dense_mass=False,
)

#: Whole-curve fits (``FitOptions(rows="all", residual="ar1")``, the default
#: when ``sampler`` is not given): the curve laws' annealing terms and the
#: offset/AR(1) noise leave narrow curved ridges where the default step size
#: diverges a few times per fit (1-13 divergences in 4000 draws; 32 of 70 quick
#: grid cells flagged). Smaller steps (target acceptance 0.99, 1000 warm-up
#: steps to adapt them, depth 10 for the longer trees) at about twice the time
#: per fit: 1 of 76 quick-grid cells flagged (with the one-row-per-run fallback
#: of :func:`hiscale.infer.fit.fit`); the README's whole-curve section has the grid.
#: The warm-up starts from the Laplace mass matrix (``init_mass``): with the
#: identity, the first 100 warm-up iterations took more leapfrog steps than
#: all 2000 draws on misfitting (69,304 vs 31,408 in one chain; the README's
#: whole-curve speed bullet has the timings).
CURVE_SAMPLER = SamplerSettings(
    num_warmup=1000, target_accept_prob=0.99, max_tree_depth=10, init_mass="laplace"
)

#: Fits local to a target (``FitOptions(local_sd > 0)``, the default when
#: ``sampler`` is not given): the local covariance pins the law's shape less
#: than a global fit, and the default step size diverged a few times per fit
#: (15 in 4000 draws on chinchilla's k = 3 sub-grid cell). Target acceptance
#: 0.95 from the Laplace mass matrix removed that one, but on five inner fits of
#: the global/local choice (chinchilla k = 141 and 34, overtrain-c4 k = 4 and 5,
#: misfitting k = 7; 2026-12-01) it still diverged 1-6 times in each. Target
#: acceptance 0.99: no divergence in any of them, and with 1000 warm-up steps
#: (as :data:`CURVE_SAMPLER`, smaller steps need a longer adaptation) no r-hat
#: flag either (misfitting k = 7 had r-hat 1.011 with 500), at 2-3x the time
#: of 0.95 (e.g. 22 s -> 59 s). README "Both choices measured" has the grid.
LOCAL_SAMPLER = SamplerSettings(num_warmup=1000, target_accept_prob=0.99, init_mass="laplace")


#: ``hiscale demo``: two fits in seconds, not minutes, on two cores: half the
#: default draws per chain (1000 instead of 2000), enough for the demo's
#: medians and 80%/95% intervals; otherwise the default settings.
DEMO_SAMPLER = SamplerSettings(num_warmup=500, num_samples=1000, num_chains=2)


@dataclass(frozen=True)
class FitOptions:
    """Data selection and likelihood options (recorded with every fit).

    Attributes
    ----------
    min_tokens : float
        Training rows need ``tokens > min_tokens`` (0 disables the cut).
    end_of_run : float
        Keep each run's rows with ``tokens >= end_of_run x`` that run's
        largest count: the separable law does not describe mid-schedule
        checkpoints, and fitting them pulled the fit into a bad mode.
    max_rows_per_run : int
        Thin each run to at most this many rows, evenly spaced (0 keeps all).
    n_eff_per_run : float
        Effective number of independent points per run: each row's
        likelihood is tempered by ``min(1, n_eff_per_run / rows in its
        run)``. Residuals along a run are strongly autocorrelated; counted as
        independent, hundreds of rows made the likelihood so sharp that the
        prior could not steer the fit and wrong predictions came with narrow
        intervals. Not used with ``residual="ar1"``.
    rows : {"end", "all"}
        ``"end"``: the end-of-run rows above (the default model);
        ``"all"``: whole curves, every checkpoint from ``curve_start x`` the
        run's last one, thinned evenly in ``ln D`` to ``max_rows_per_run``
        per run (:func:`hiscale.modeling.curve.select_curve_rows`).
    residual : {"iid", "ar1"}
        ``"iid"``: tempered independent Student-t rows
        (:func:`hiscale.modeling.family.run_loglik`); ``"ar1"``: the exact
        Gaussian run offset + AR(1) in ``ln D``
        (:func:`hiscale.modeling.curve.run_loglik_ar1`), required by the
        curve laws and by ``rows="all"``.
    curve_start : float
        With ``rows="all"``: keep rows with ``tokens >= curve_start x`` the
        run's last checkpoint (warmup and the first transient are not
        described by any law); 0 keeps every row.
    max_curve_rows : int
        With ``rows="all"``: the rows of all runs together share this budget:
        each run keeps at most the largest cap (at most ``max_rows_per_run``,
        at least 16, :data:`hiscale.modeling.curve.MIN_CURVE_ROWS_PER_RUN`)
        whose rows fit it; with too many runs for that, the budget is not
        applied (logged). 0: no budget. A gradient of the curve
        model costs in proportion to the padded rows (the next power of two;
        above 1024 rows also 3 * 2^k, :func:`hiscale.modeling.design.fine_bucket`),
        and rows that close along ``ln D`` add little: 512 rows fit gemstones'
        22 runs (5,478 checkpoints) in 6-7 s instead of 13-15 s with 32 per
        run, converged, final-loss prediction within 0.1%
        (``benchmarks/results/curve_fit_thinning.json``).
    local_to : (float, float) or None
        A fit *local to* a target ``(N, D)`` (:mod:`hiscale.modeling.local`):
        the law is an approximation whose error ``δ`` is a Brownian motion in
        the ``ln N`` and ``ln D`` distances from the target, pinned at 0
        there, so runs far from the target inform the law's level at the
        target less than near ones, and many cheap far runs no longer outvote
        a few near ones. None: every run counts alike.
    local_sd : float
        Scale of that Brownian motion in ``ln L`` per square-root unit of
        distance; 0 turns the local fit off. End-of-run model only.
    local_learn : bool
        Learn the scale per family: ``ln local_sd ~ N(ln local_sd, 0.5)`` with
        ``local_sd`` the prior median (:data:`hiscale.modeling.local.LOCAL_SD_PRIOR_SD`).
    end_lr_tolerance : float or None
        End-of-run model, runs with a known learning-rate schedule: of the
        end-of-run rows keep those whose LR multiplier is at most this much
        (in units of the peak LR) above the run's last checkpoint's, so a WSD
        run's cooldown is not read as end-of-run points
        (:data:`hiscale.data.selection.END_LR_TOLERANCE`); None: tokens alone.

    Raises
    ------
    ValueError
        If ``rows`` or ``residual`` is not one of its values, or ``rows="all"``
        is asked with ``residual="iid"`` (tempering is what whole curves
        replace); if ``local_sd`` is negative or not finite, is positive
        without ``local_to``, or is asked with the whole-curve likelihood.
    """

    min_tokens: float = 0.0
    end_of_run: float = 0.8
    max_rows_per_run: int = 32
    n_eff_per_run: float = 4.0
    rows: str = "end"
    residual: str = "iid"
    curve_start: float = 0.1
    max_curve_rows: int = 512
    local_to: tuple[float, float] | None = None
    local_sd: float = 0.0
    local_learn: bool = False
    end_lr_tolerance: float | None = END_LR_TOLERANCE

    def __post_init__(self):
        """Check ``rows``, ``residual`` and the local-fit fields."""
        if self.rows not in ("end", "all"):
            raise ValueError(f"FitOptions.rows must be 'end' or 'all', got {self.rows!r}")
        if self.residual not in ("iid", "ar1"):
            raise ValueError(f"FitOptions.residual must be 'iid' or 'ar1', got {self.residual!r}")
        if self.rows == "all" and self.residual != "ar1":
            raise ValueError("FitOptions(rows='all') needs residual='ar1' (whole-curve likelihood)")
        import math

        if not (math.isfinite(self.local_sd) and self.local_sd >= 0):
            raise ValueError(f"FitOptions.local_sd must be finite and >= 0, got {self.local_sd!r}")
        if self.local_sd > 0:
            if self.local_to is None:
                raise ValueError("FitOptions(local_sd > 0) needs local_to=(N, D), the target")
            if self.residual == "ar1":
                raise ValueError("FitOptions: a local fit (local_sd > 0) is end-of-run only")
            object.__setattr__(self, "local_to", tuple(float(v) for v in self.local_to))
        elif self.local_learn:
            raise ValueError("FitOptions(local_learn=True) needs local_sd > 0 (the prior median)")
        tol = self.end_lr_tolerance
        if tol is not None and not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"FitOptions.end_lr_tolerance must be finite and >= 0, got {tol!r}")

    @property
    def curve(self) -> bool:
        """True for the whole-curve likelihood (``residual="ar1"``)."""
        return self.residual == "ar1"

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (for provenance).

        The whole-curve fields (``rows``, ``residual``, ``curve_start``,
        ``max_curve_rows``) and
        the local-fit fields are left out while they are at their defaults,
        so the cache keys of end-of-run fits (population step 1, LOO priors)
        did not change when they were added.

        Returns
        -------
        dict
        """
        d = dict(self.__dict__)
        if self.rows == "end" and self.residual == "iid":
            for k in ("rows", "residual", "curve_start", "max_curve_rows"):
                d.pop(k)
        if self.local_sd == 0 and self.local_to is None and not self.local_learn:
            for k in ("local_to", "local_sd", "local_learn"):
                d.pop(k)
        elif d["local_to"] is not None:
            d["local_to"] = list(d["local_to"])
        return d

    def design_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hiscale.modeling.design.make_design` for these options.

        Returns
        -------
        dict
        """
        return {
            "n_eff_per_run": self.n_eff_per_run,
            "local_to": self.local_to,
            "local_sd": self.local_sd,
            "local_learn": self.local_learn,
        }

    def select(self, curves, schedules: dict | None = None):
        """Select this fit's rows of ``curves`` (:func:`hiscale.data.selection.select_rows`).

        Parameters
        ----------
        curves : Curves
            Rows of one family.
        schedules : dict, optional
            ``{run: ScheduleInfo}`` of its runs: the end-of-run model then
            also drops rows inside a decay (``end_lr_tolerance``).

        Returns
        -------
        Curves
            The selected rows; the log records what each step removed.
        """
        from hiscale.data.selection import select_rows

        if self.rows == "all":
            from hiscale.modeling.curve import select_curve_rows

            return select_curve_rows(
                curves,
                min_tokens=self.min_tokens,
                start_fraction=self.curve_start,
                max_rows_per_run=self.max_rows_per_run,
                max_rows=self.max_curve_rows,
            )
        return select_rows(
            curves,
            min_tokens=self.min_tokens,
            end_fraction=self.end_of_run,
            max_rows_per_run=self.max_rows_per_run,
            schedules=schedules,
            lr_tolerance=self.end_lr_tolerance,
        )


def default_sampler(options: FitOptions | None) -> SamplerSettings:
    """Return the NUTS settings a fit with ``options`` uses when none are given.

    :data:`CURVE_SAMPLER` for whole curves, :data:`LOCAL_SAMPLER` for a fit
    local to a target, ``SamplerSettings()`` otherwise.
    """
    if options is not None and options.curve:
        return CURVE_SAMPLER
    if options is not None and options.local_sd > 0:
        return LOCAL_SAMPLER
    return SamplerSettings()


def retry_sampler(settings: SamplerSettings) -> SamplerSettings:
    """Return the settings of the one re-run of a flagged fit (:func:`hiscale.fit`).

    Smaller steps for divergences (target acceptance ``1 - (1 - a) / 2``, at
    least 0.99: 0.9 -> 0.99, :data:`CURVE_SAMPLER`'s 0.99 -> 0.995; tree depth
    at least 10), a longer warm-up (at least 1000 steps) to adapt them from
    the Laplace mass matrix, and twice the draws per chain for an r-hat or ESS
    flag. The flags this answers were measured on the eight-family ``sub``
    grid (2026-12-02): of the 43 flagged ``law="auto"`` cells, 24 rested on a
    leave-future-out fit with 1-11 divergences at target acceptance 0.9
    (misfitting k = 6, p = 1.0: none at 0.95 or 0.99), and most others had
    r-hat between 1.010 and 1.02 with a bulk ESS of 150-600, where the flag
    measures Monte Carlo noise as often as a second mode; a real second mode
    (gemstones k = 21, p = 0.1: r-hat 1.45, ESS 4) stays flagged.

    Parameters
    ----------
    settings : SamplerSettings
        The settings of the flagged run.

    Returns
    -------
    SamplerSettings
    """
    return replace(
        settings,
        num_warmup=max(settings.num_warmup, 1000),
        num_samples=2 * settings.num_samples,
        target_accept_prob=max(1 - (1 - settings.target_accept_prob) / 2, 0.99),
        max_tree_depth=max(settings.max_tree_depth, 10),
        init_mass="laplace",
    )
