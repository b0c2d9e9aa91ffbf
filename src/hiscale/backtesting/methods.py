"""Backtest methods: the interface, the paper's estimator and the Bayesian fits.

A *method* is an object with a ``name``, a ``prepare(corpus, family)`` step
run once per family (e.g. building a leave-one-family-out prior) and a call
``method(cell, state, seed=...) -> CellPrediction``. :data:`METHODS` maps the
names accepted by ``backtest(methods=...)`` and ``--method`` to factories:

* ``paper``: the paper's least-squares estimator (:mod:`hiscale.backtesting.paper`);
* ``bayes``: NUTS under a population prior. Backtesting a family that is *in*
  a prior's training data would be a cheat. ``bayes`` therefore uses the
  shipped prior (:data:`hiscale.priors.prior.DEFAULT_PRIOR`) for a family
  whose group it did not see and whose loss unit it shares; for a family it
  did see (backtesting the corpus itself) it builds a prior without the
  family's whole group (:func:`hiscale.population.family_group`,
  leave-one-group-out: :func:`hiscale.backtesting.loo_prior.leave_one_out_prior`,
  cached on disk) from the data given. A prior given with ``prior=`` (a name,
  a path or a :class:`~hiscale.priors.prior.Prior`) is checked the same way.
  When no population exists for the family (its loss unit has fewer than two
  other groups in the data), ``bayes`` runs with the flat prior: the result's
  ``prior`` column says ``flat (no population in unit ...)`` and a
  :class:`~hiscale.priors.prior.PriorWarning` is emitted;
* ``bayes-flat``: NUTS under the weak default prior (no borrowing);
* ``bayes-disc``: ``bayes`` with a per-family extrapolation-discrepancy term
  (``discrepancy="family"``, :mod:`hiscale.backtesting.discrepancy`): the
  new-run draws are widened by ``exp(sigma_d d z)``, ``sigma_d`` from a
  population prior (other groups' leave-largest-size-out errors) updated by
  the cell's own leave-largest-size-out error when it has >= 3 sizes;
* ``bayes-disc3``: the same with up to three own errors per cell
  (``disc_inner=3``: the largest training size predicted with 1, 2 and 3 of
  the sizes below it left out);
* ``bayes-curve``: a whole-curve fit (``h-term``, every row, AR(1)
  residuals) of the cell's training rows. On continue-a-run cells
  (``target="continue"``, :func:`hiscale.backtesting.protocol.continue_cells`)
  each held run is continued to its final checkpoint with its own offset and
  AR state (:meth:`hiscale.infer.result.Fit.predict_run`); on the paper's size
  cells each target run is a *new* run of the target size over its own
  horizon (``run_tokens``, else its last checkpoint) under the family's
  usual schedule, scored at its target rows
  (:meth:`hiscale.infer.result.Fit.predict_curve`). A family whose schedule
  is unknown falls back to the end-of-run model in the fit; the cell then
  fails with that reason (its ``status``), so it never silently scores the
  end-of-run model under this name.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hiscale._util import table_digest
from hiscale.backtesting.discrepancy import (
    INNER_SAMPLER,
    DiscrepancyPrior,
    distance,
    inner_errors,
    population_discrepancy,
    widen,
)
from hiscale.backtesting.loo_prior import leave_one_out_prior
from hiscale.backtesting.paper import fit_paper, fit_paper_single
from hiscale.backtesting.protocol import Cell
from hiscale.data.curves import Curves, normalise_unit
from hiscale.infer.fit import GIVEN_RULE, RETRY_RULE, FitOptions, fit
from hiscale.infer.settings import CURVE_SAMPLER, SamplerSettings
from hiscale.population import family_unit
from hiscale.priors.prior import (
    DEFAULT_PRIOR,
    Prior,
    PriorWarning,
    flat_prior,
    load_prior,
    prior_overlap,
    resolve_prior,
)

__all__ = [
    "METHODS",
    "BayesCurveMethod",
    "BayesMethod",
    "CellPrediction",
    "DiscState",
    "Method",
    "PaperMethod",
    "get_method",
]


@dataclass(frozen=True)
class CellPrediction:
    """A method's prediction for every scored target row of a cell.

    Attributes
    ----------
    median : ndarray
        Point prediction per target row (posterior-predictive median for
        Bayesian methods).
    intervals : dict
        ``{level: (lower, upper)}`` central new-run intervals per row, for
        methods that compute their own; empty otherwise.
    draws : ndarray or None
        Posterior-predictive new-run draws ``(S, rows)``: the runner takes
        the intervals at the backtest's ``ci_prob`` levels from them.
    pit : ndarray or None
        Predictive CDF at the actual value, per row.
    diagnostics : dict
        ``rhat_max, ess_min, divergences, flagged`` (NaN / False if n/a).
    n_fit_rows : int or None
        Rows the method actually fitted on (e.g. after end-of-run selection).
    status : str
        ``"ok"`` or the failure reason.
    note : str
        What the method substituted for this cell (e.g. the end-of-run
        model for a whole-curve fit that fell back), empty if nothing.
    """

    median: np.ndarray
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    draws: np.ndarray | None = None
    pit: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    n_fit_rows: int | None = None
    status: str = "ok"
    note: str = ""


class Method(Protocol):
    """Interface of a backtest method.

    ``prepare`` runs once per family, before the family's cells (in a
    distributed run: one task the family's cell tasks depend on). It may take
    a keyword ``client`` (a ``distributed.Client``, or None in-process) to fan
    its own work out as tasks, as :class:`BayesMethod` does.
    """

    name: str

    def prepare(self, corpus: Curves, family: str) -> Any:
        """Return the per-family state (e.g. a leave-one-family-out prior).

        Parameters
        ----------
        corpus : Curves
            The whole backtest table (the held-out family included).
        family : str
            The held-out family.

        Returns
        -------
        Any
            Passed as ``state`` to every cell of ``family``.
        """
        ...

    def __call__(self, cell: Cell, state: Any, *, seed: int) -> CellPrediction:
        """Predict the cell's scored target rows."""
        ...


class PaperMethod:
    """The paper's least-squares estimator (k = 1: its single-model regime)."""

    name = "paper"

    def prepare(self, corpus: Curves, family: str) -> None:
        """Prepare nothing: the estimator uses only the cell's own rows.

        Parameters
        ----------
        corpus : Curves
            Unused.
        family : str
            Unused.

        Returns
        -------
        None
        """
        return None

    def __call__(self, cell: Cell, state: Any, *, seed: int) -> CellPrediction:
        """Fit on the cell's training rows and predict the target rows."""
        f = cell.train.frame
        t = cell.target.frame
        fitter = fit_paper_single if cell.n_sizes_used == 1 else fit_paper
        fit = fitter(f["params"], f["tokens"], f["loss"])
        pred = fit.predict(t["params"], t["tokens"])
        return CellPrediction(median=np.asarray(pred), n_fit_rows=len(f), status=fit.status)


@dataclass(frozen=True)
class DiscState:
    """Per-family state of ``bayes-disc``: the cell prior and the discrepancy prior.

    Attributes
    ----------
    prior : Prior
        The prior of the cell fits (as ``bayes``).
    disc : DiscrepancyPrior
        Population prior of ``log sigma_d`` for the family.
    """

    prior: Prior
    disc: DiscrepancyPrior

    @property
    def label(self) -> str:
        """The ``prior`` column: the cell prior's label and the discrepancy prior's."""
        return f"{self.prior.label} + discrepancy {self.disc.label}"


@dataclass
class BayesMethod:
    """NUTS fit of the cell's training rows, posterior-predictive target.

    Parameters
    ----------
    name : str
        Column value in results.
    prior : "auto", "loo", "flat", a saved prior name/path, or Prior
        ``"auto"`` (default) uses the shipped prior
        (:data:`~hiscale.priors.prior.DEFAULT_PRIOR`) unless it saw the family's
        group or is in another loss unit; then, and always with ``"loo"``, a
        prior is built from the corpus without the family's group
        (:func:`leave_one_out_prior`). A named or given prior is checked the
        same way and replaced (with a :class:`~hiscale.priors.prior.PriorWarning`)
        when it saw the family. ``"flat"``: weak defaults, no borrowing.
    law : str
        Law form.
    options : FitOptions
        Row selection (the cell has already applied the token cut and ``p``).
    sampler : SamplerSettings
        NUTS settings of the cell fits.
    prior_sampler : SamplerSettings
        NUTS settings of the step-1 family fits behind a leave-one-out prior
        (kept separate so a quick cell sampler still reuses cached priors).
    progress : bool
        Report prior builds.
    discrepancy : {"none", "family"}
        ``"family"`` widens the new-run draws by a per-family extrapolation
        discrepancy (:mod:`hiscale.backtesting.discrepancy`); the diagnostics
        then carry ``sigma_d_median``, ``e_in`` (NaN without own evidence),
        ``d`` and ``sigma_d_source``, and ``flagged`` is also set when the
        cell's inner fit is flagged.
    disc_sampler : SamplerSettings
        NUTS settings of the inner (leave-largest-size-out) fits.
    disc_direction : {"up", "down"}
        Direction the population's inner errors are computed for; a cell of
        the other direction is refused.
    local_sd : float
        > 0: each cell's fit is local to its target (the largest target
        size at its last tokens; ``FitOptions(local_to, local_sd)``,
        :mod:`hiscale.modeling.local`).
    local_learn : bool
        With ``local_sd > 0``: learn the scale per family (``local_sd`` is
        its prior median).
    disc_inner : int, default 1
        With ``discrepancy="family"``: the most inner (leave-largest-sizes-out)
        fits per cell that inform its ``sigma_d``
        (:func:`~hiscale.backtesting.discrepancy.inner_errors`: the largest
        training size predicted with 1, 2, ... of the sizes below it left
        out; nested fits, their likelihoods multiplied as if independent).
    local_choice : float
        > 0: each cell chooses between the global fit and a fit local to its
        target with this scale by leave-future-out on its own training runs
        (:meth:`choose_local`: the largest training size held out, each
        candidate fitted to the rest and scored by the log predictive density
        of the held runs' losses; the local fit wins only with a strictly
        higher score). The choice and both scores are in the row's note; an
        inner fit's flag is the cell's. Fewer than 3 sizes: the global fit,
        and the note says so.
    covariate : str, optional
        A family covariate (:func:`hiscale.data.covariates.family_covariate`,
        e.g. ``metric_kind``): the leave-one-group-out population's mean
        depends on it and each family gets the predictive at its own level.
        Implies ``prior="loo"`` (a shipped prior has no covariate).
    """

    name: str = "bayes"
    prior: Any = "auto"
    law: str = "chinchilla"
    options: FitOptions = field(default_factory=FitOptions)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    prior_sampler: SamplerSettings = field(default_factory=SamplerSettings)
    progress: bool = False
    prior_settings: dict[str, Any] = field(default_factory=dict)
    min_span: float = 4.0
    match_unit: bool = True
    pool_groups: bool = True
    discrepancy: str = "none"
    disc_sampler: SamplerSettings = field(default_factory=lambda: INNER_SAMPLER)
    disc_direction: str = "up"
    local_sd: float = 0.0
    local_learn: bool = False
    covariate: str | None = None
    disc_inner: int = 1
    local_choice: float = 0.0

    def __post_init__(self) -> None:
        """Check ``discrepancy`` and ``disc_direction``."""
        if self.discrepancy not in ("none", "family"):
            raise ValueError(f"discrepancy must be 'none' or 'family', got {self.discrepancy!r}")
        if self.disc_direction not in ("up", "down"):
            raise ValueError(f"disc_direction must be 'up' or 'down', got {self.disc_direction!r}")

    def prepare(self, corpus: Curves, family: str, *, client: Any = None) -> Prior | DiscState:
        """Return the prior used for every cell of ``family`` (with ``prior_settings`` applied).

        Its :attr:`~hiscale.priors.prior.Prior.label` is the ``prior`` column of the
        results. Running without a population (flat fallback) emits one
        :class:`~hiscale.priors.prior.PriorWarning`.

        Parameters
        ----------
        corpus : Curves
            The whole backtest table.
        family : str
            The held-out family; its whole group is left out of a
            leave-one-group-out prior, so siblings cannot leak its answer.
        client : distributed.Client, optional
            Run a leave-one-group-out prior's step-1 fits as tasks on its
            workers.

        Returns
        -------
        Prior or DiscState
            A :class:`DiscState` (prior and discrepancy prior) with
            ``discrepancy="family"``.
        """
        prior = self._prepare(corpus, family, client)
        if prior.name == "flat" and "note" in prior.meta:
            warnings.warn(
                f"{self.name} on {family!r} runs with the flat prior: {prior.meta['note']}",
                PriorWarning,
                stacklevel=2,
            )
        prior = prior.with_settings(**self.prior_settings) if self.prior_settings else prior
        if prior.tails is not None:  # the rows' prior column says so
            prior = replace(
                prior, meta={**prior.meta, "label": f"{prior.label} with {prior.tails}"}
            )
        if self.discrepancy == "none":
            return prior
        disc = population_discrepancy(
            corpus,
            family,
            law=self.law,
            options=self.options,
            sampler=self.disc_sampler,
            direction=self.disc_direction,
            progress=self.progress,
        )
        if disc.label.startswith("fallback"):
            warnings.warn(
                f"{self.name} on {family!r}: discrepancy prior {disc.label}",
                PriorWarning,
                stacklevel=2,
            )
        return DiscState(prior=prior, disc=disc)

    def _loo(self, corpus: Curves, family: str, client: Any = None) -> Prior:
        return leave_one_out_prior(
            corpus,
            family,
            law=self.law,
            options=self.options,
            sampler=self.prior_sampler,
            progress=self.progress,
            min_span=self.min_span,
            match_unit=self.match_unit,
            pool_groups=self.pool_groups,
            client=client,
            covariate=self.covariate,
        )

    def _prepare(self, corpus: Curves, family: str, client: Any = None) -> Prior:
        if isinstance(self.prior, str) and self.prior == "flat":
            return flat_prior(self.law)
        if (isinstance(self.prior, str) and self.prior == "loo") or self.covariate is not None:
            return self._loo(corpus, family, client)
        if isinstance(self.prior, Prior):
            given = self.prior
        else:
            name = DEFAULT_PRIOR if self.prior == "auto" else self.prior
            given = load_prior(Path(name) if Path(str(name)).exists() else name)
        why = self._not_independent(given, corpus, family)
        if why is None:
            return given.for_law(self.law)
        rebuilt = self._loo(corpus, family, client)
        if not (isinstance(self.prior, str) and self.prior == "auto"):
            warnings.warn(
                f"{self.name} on {family!r}: {why}; using {rebuilt.label!r} instead",
                PriorWarning,
                stacklevel=3,
            )
        return replace(rebuilt, meta={**rebuilt.meta, "replaces": f"{given.label}: {why}"})

    @staticmethod
    def _not_independent(prior: Prior, corpus: Curves, family: str) -> str | None:
        """Why ``prior`` cannot be used for ``family`` as is (None when it can)."""
        overlap = prior_overlap(prior, corpus, family)
        if overlap is not None:
            return overlap
        prior_unit, unit = prior.meta.get("loss_unit"), family_unit(corpus, family)
        if prior_unit is not None and normalise_unit(prior_unit) != unit:
            return f"prior {prior.label!r} is in loss unit {prior_unit!r}, {family!r} in {unit!r}"
        return None

    def __call__(self, cell: Cell, state: Prior | DiscState, *, seed: int) -> CellPrediction:
        """Fit and predict the cell's scored target rows."""
        prior = state.prior if isinstance(state, DiscState) else state
        t = cell.target.frame
        options = self.options
        at = (float(t["params"].max()), float(t["tokens"].max()))
        note, inner_flagged = "", False
        if self.local_sd > 0:
            options = dataclasses.replace(
                options, local_to=at, local_sd=self.local_sd, local_learn=self.local_learn
            )
        elif self.local_choice > 0:
            local, note, inner_flagged = self.choose_local(cell, prior, seed=seed)
            if local:
                options = dataclasses.replace(options, local_to=at, local_sd=self.local_choice)
        f = fit(
            cell.train,
            family=cell.family,
            prior=prior,
            law=self.law,
            seed=seed,
            options=options,
            sampler=self.sampler,
        )
        _, new = f.draws(t["params"].to_numpy(), t["tokens"].to_numpy(), seed=seed)
        actual = t["loss"].to_numpy()
        d = f.diagnostics
        diagnostics = {
            "rhat_max": d["rhat_max"],
            "ess_min": d["ess_min"],
            "divergences": d["divergences"],
            "flagged": d["flagged"],
        }
        if self.discrepancy == "family":
            if not isinstance(state, DiscState):
                raise ValueError(f"{self.name}: discrepancy='family' needs the state of prepare()")
            new, extra = self._discrepancy(cell, state, new, seed)
            diagnostics.update(extra)
            # the prediction also rests on the inner fit: its flag is the cell's
            diagnostics["flagged"] = bool(d["flagged"]) or bool(extra["inner_flagged"])
        if inner_flagged:  # the choice rests on the inner fits
            diagnostics["flagged"] = True
        note = _with_retry(note, f)
        return CellPrediction(
            median=np.median(new, axis=0),
            draws=new,
            pit=np.mean(new <= actual[None, :], axis=0),
            diagnostics=diagnostics,
            n_fit_rows=len(f.data),
            note=note,
        )

    def choose_local(self, cell: Cell, prior: Prior, *, seed: int) -> tuple[bool, str, bool]:
        """Global or local fit for ``cell``: :func:`hiscale.infer.choice.choose_local`.

        Returns
        -------
        (local, note, inner_flagged)
            Whether the local fit won, the note for the row and whether either
            inner fit was flagged.
        """
        from hiscale.infer.choice import choose_local

        return choose_local(
            cell.train, fit, family=cell.family, prior=prior, law=self.law, seed=seed,
            options=self.options, sampler=self.sampler, sd=self.local_choice,
        )  # fmt: skip

    def _discrepancy(
        self, cell: Cell, state: DiscState, new: np.ndarray, seed: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Widen ``new`` by the cell's discrepancy posterior; return it and what to record."""
        if cell.direction != self.disc_direction:
            raise ValueError(
                f"{self.name}: the discrepancy prior was learned for direction "
                f"{self.disc_direction!r}, the cell is {cell.direction!r} (set disc_direction)"
            )
        train_sizes = np.sort(cell.train.frame["params"].unique())
        n_target = float(cell.target.frame["params"].iloc[0])
        nearest = train_sizes[-1] if cell.direction == "up" else train_sizes[0]
        owns = inner_errors(
            cell.train,
            cell.family,
            state.prior,
            n_inner=self.disc_inner,
            law=self.law,
            options=self.options,
            sampler=self.disc_sampler,
            seed=seed,
            direction=cell.direction,
        )
        own = owns[0] if owns else None
        why = f"cell has {len(train_sizes)} training size(s), own evidence needs >= 3"
        post = state.disc.posterior(owns, why_none=why)
        dist = distance(n_target, nearest)
        widened, _ = widen(new, post, dist, seed=seed + 1)
        extra = {
            "sigma_d_median": post.median,
            "sigma_d_source": post.source,
            "e_in": own.e if own is not None else float("nan"),
            "s_in": float(np.sqrt(own.s2)) if own is not None else float("nan"),
            "d_in": own.d if own is not None else float("nan"),
            "inner_flagged": any(o.flagged for o in owns),
            "n_inner": len(owns),
            "d": dist,
            "disc_prior": state.disc.label,
        }
        return widened, extra


@dataclass
class BayesCurveMethod:
    """Whole-curve NUTS fit of a continue cell; each held run continued to its end.

    Parameters
    ----------
    name : str
        Column value in results.
    prior : "flat", a saved prior name/path, or Prior
        Prior of the whole-curve fit (default ``"flat"``: weak defaults, no
        borrowing). A given prior that saw the family is the caller's
        responsibility; the ``prior`` column names it. With ``law="auto"``
        any other value is resolved as :class:`BayesMethod` resolves it
        (``"auto"``, ``"loo"``, a name or a Prior, replaced when it saw the
        family's group): the end-of-run population, which only the
        end-of-run candidate borrows from; the whole-curve candidate gets the
        weak defaults (:func:`hiscale.infer.choice.candidate_priors`) unless
        ``curve_prior`` says otherwise.
    law : str
        A curve law (:data:`hiscale.laws.CURVE_LAWS`), or ``"auto"``: the
        end-of-run or the whole-curve model, chosen per cell by
        leave-future-out (:mod:`hiscale.infer.choice`); a flagged
        leave-future-out fit flags the cell.
    options : FitOptions
        Rows and likelihood of the fit (default every row, AR(1) residuals).
    sampler : SamplerSettings
        NUTS settings of the cell fits (default
        :data:`~hiscale.infer.settings.CURVE_SAMPLER`, as :func:`~hiscale.infer.fit.fit`
        uses for whole curves; None: :func:`~hiscale.infer.fit.fit`'s default
        for each model, as ``bayes-auto`` does).
    runs_extra : DataFrame or path, optional
        The corpus's ``runs_extra.csv`` (schedules of the extra families),
        passed to :func:`hiscale.infer.fit.fit`.
    local_choice : float
        With ``law="auto"`` only, > 0: a size cell's end-of-run model is
        global or local to the cell's target (the largest target size at its
        last tokens) with this scale, chosen by leave-future-out
        (:func:`hiscale.infer.choice.choose_local` inside
        :func:`~hiscale.infer.choice.choose_and_fit`). The row's note gives
        the choice and both scores; a flagged inner fit flags the cell.
        Continue cells stay global (their target is a fitted run).
    curve_prior : "flat", a saved prior name/path, Prior or None
        With ``law="auto"`` only: the whole-curve candidate's own prior
        (:func:`hiscale.infer.choice.candidate_prior`), while the end-of-run
        candidate keeps ``prior``'s; None (default): the rule of
        :func:`hiscale.infer.choice.candidate_priors` (a population borrows
        only for the law it was learned for).

    Notes
    -----
    A size cell whose fit falls back to the end-of-run model (a run's
    schedule unknown, or one checkpoint per run: see
    :func:`~hiscale.infer.fit.fit`) is scored with that model's new-run
    prediction, as ``hiscale predict`` would give it, and the row's ``note``
    says so; a continue cell then fails (there is no curve to continue).

    The cells of one ``p`` share their training rows (only the held size
    differs), so the fit of the last few (family, rows, prior, seed) is kept
    in memory and reused: same seed, the same numbers as a fresh fit.
    """

    name: str = "bayes-curve"
    prior: Any = "flat"
    progress: bool = False
    law: str = "h-term"
    options: FitOptions = field(default_factory=lambda: FitOptions(rows="all", residual="ar1"))
    sampler: SamplerSettings | None = field(default_factory=lambda: CURVE_SAMPLER)
    runs_extra: Any = None
    curve_prior: Any = None
    local_choice: float = 0.0
    _fits: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse ``curve_prior`` and ``local_choice`` without ``law="auto"``."""
        if self.curve_prior is not None and self.law != "auto":
            raise ValueError(f"{self.name}: curve_prior needs law='auto', not law={self.law!r}")
        if self.local_choice > 0 and self.law != "auto":
            raise ValueError(f"{self.name}: local_choice needs law='auto', not law={self.law!r}")

    def _target_schedules(self, frame: pd.DataFrame) -> dict:
        """``{run: Schedule or None}`` of target runs (``runs_extra`` first, then their text)."""
        from hiscale.data.schedule import run_schedules

        extra = self.runs_extra
        if isinstance(extra, str | Path):
            extra = pd.read_csv(extra)
        return {str(r): i.schedule for r, i in run_schedules(frame, extra).items()}

    def _curve_state(self) -> Prior | None:
        """Return the whole-curve candidate's own prior (``curve_prior``), or None."""
        return None if self.curve_prior is None else resolve_prior(self.curve_prior, law="h-term")

    def prepare(self, corpus: Curves, family: str) -> Prior:
        """Return the prior of every cell of ``family`` (its label is the ``prior`` column).

        ``prior="loo"``: the curve law's population rebuilt without the
        family's group (:func:`leave_one_out_prior`; families whose schedules
        are unknown cannot feed it), labelled ``lofo-GROUP``.

        Parameters
        ----------
        corpus : Curves
            The table (for ``prior="loo"``).
        family : str
            The held-out family (for ``prior="loo"``).

        Returns
        -------
        Prior
        """
        if self.law == "auto" and not (isinstance(self.prior, str) and self.prior == "flat"):
            # the end-of-run population, chosen as `bayes` chooses it (corpus-v1 unless it
            # saw the family's group, else rebuilt without it); only the end-of-run
            # candidate borrows from it (hiscale.infer.choice.candidate_priors)
            return BayesMethod(name=self.name, prior=self.prior, progress=self.progress).prepare(
                corpus, family
            )
        if isinstance(self.prior, Prior):
            return self.prior.for_law(self.law)
        if self.prior == "flat":
            # law "auto": the h-term prior's shared parameters serve the end-of-run law too
            return flat_prior("h-term" if self.law == "auto" else self.law)
        if self.prior == "loo":
            # the curve law's own population, learned from whole-curve fits of the
            # families outside the held-out family's group whose schedules are known
            extra = self.runs_extra
            if isinstance(extra, str | Path):
                extra = pd.read_csv(extra)
            prior = leave_one_out_prior(
                corpus, family, law=self.law, options=self.options, progress=self.progress,
                runs_extra=extra,
            )  # fmt: skip
            if prior.name == "flat" and "note" in prior.meta:
                warnings.warn(
                    f"{self.name} on {family!r} runs with the flat prior: {prior.meta['note']}",
                    PriorWarning,
                    stacklevel=2,
                )
            return prior
        name = self.prior
        return load_prior(Path(name) if Path(str(name)).exists() else name).for_law(self.law)

    def settings(self) -> dict[str, Any]:
        """Return what the results depend on (the resume check); ``runs_extra`` by its hash.

        Returns
        -------
        dict
            JSON-able settings.
        """
        extra = self.runs_extra
        if isinstance(extra, pd.DataFrame):
            extra = table_digest(extra)
        prior = self.prior.label if isinstance(self.prior, Prior) else self.prior
        return {
            "class": type(self).__qualname__,
            "prior": str(prior),
            "law": self.law,
            "options": asdict(self.options),
            "sampler": (
                self.sampler.to_dict()
                if self.sampler is not None
                else {
                    "default": SamplerSettings().to_dict(),
                    "whole-curve": CURVE_SAMPLER.to_dict(),
                    "retry": RETRY_RULE,  # a flagged default-sampler fit is re-run once
                }
            ),
            "runs_extra": None if extra is None else str(extra),
            **({"local_choice": self.local_choice} if self.local_choice > 0 else {}),
            **(
                {}
                if self.curve_prior is None
                else {
                    "curve_prior": str(
                        self.curve_prior.label
                        if isinstance(self.curve_prior, Prior)
                        else self.curve_prior
                    )
                }
            ),
        }

    def __call__(self, cell: Cell, state: Prior, *, seed: int) -> CellPrediction:
        """Fit the cell's whole curves; continue its held runs or predict the target size's."""
        if cell.kind not in ("continue", "size"):
            raise ValueError(f"{self.name} scores continue-a-run and size cells, not {cell.kind!r}")
        curve_state = self._curve_state()
        t = cell.target.frame
        options = self.options
        if self.local_choice > 0 and cell.kind == "size":
            at = (float(t["params"].max()), float(t["tokens"].max()))
            options = dataclasses.replace(options, local_to=at, local_sd=self.local_choice)
        key = (
            options.local_to,
            cell.family,
            cell.train.data_hash(),
            state.label,
            np.asarray(state.loc).tobytes(),
            np.asarray(state.cov).tobytes(),
            repr(sorted(state.settings.items())),
            None if curve_state is None else curve_state.label,
            seed,
        )
        f = self._fits.get(key)
        if f is None:
            f = fit(
                cell.train,
                family=cell.family,
                prior=(
                    state
                    if curve_state is None
                    else {"end-of-run": state, "whole-curve": curve_state}
                ),
                law=self.law,
                seed=seed,
                options=options,
                sampler=self.sampler,
                runs_extra=self.runs_extra,
            )
            while len(self._fits) >= 8:  # the p values of a grid; bounded memory
                self._fits.pop(next(iter(self._fits)))
            self._fits[key] = f
        choice = f.provenance.get("choice")
        measured = choice is not None and choice.get("rule") != GIVEN_RULE
        note = f"{choice['chosen']} model chosen: {choice['reason']}" if measured else ""
        if not f.is_curve:
            fb = f.provenance.get("fallback")
            reason = fb.get("reason", fb) if isinstance(fb, dict) else fb or "no curve law"
            if choice is not None:
                reason = f"chosen: {choice['reason']}"
            if cell.kind != "size":
                raise ValueError(
                    f"{self.name}: the fit fell back to the end-of-run model: {reason}"
                )
            # what `hiscale predict --rows all` gives for this family: the end-of-run
            # model's new-run prediction at the target rows, the substitution in `note`
            note = note or f"end-of-run model: {reason}"
        local = (choice or {}).get("local")
        if local is not None:  # the global/local step of the end-of-run model
            note = f"{note}; {local['note']}"
        if cell.kind == "size":
            new = f.new_run_draws(t, seed=seed)
        else:
            draws = []
            source = dict(cell.continue_from)
            scheds = self._target_schedules(t) if source else {}
            in_fit = set(f.data["run"].astype(str))
            for j, (run, tokens) in enumerate(zip(t["run"], t["tokens"], strict=True)):
                run = str(run)
                if source.get(run, run) not in in_fit:
                    gone = [str(r) for r in f.log if r.removed]
                    raise ValueError(
                        f"{self.name}: run {source.get(run, run)!r} has no row left after the "
                        f"fit's row selection ({'; '.join(gone[-2:]) or 'none'})"
                    )
                kw = {}
                if run in source:  # a branch: its root continued under the branch's schedule
                    if scheds[run] is None:
                        raise ValueError(f"{self.name}: branch run {run!r}: schedule unknown")
                    kw["schedule"] = scheds[run]
                _, new = f.predict_run(
                    source.get(run, run), [float(tokens)], seed=seed + j, return_draws=True, **kw
                )
                draws.append(new[:, 0])
            new = np.stack(draws, axis=1)
        actual = t["loss"].to_numpy()
        d = f.diagnostics
        note = _with_retry(note, f)
        return CellPrediction(
            median=np.median(new, axis=0),
            draws=new,
            pit=np.mean(new <= actual[None, :], axis=0),
            diagnostics={
                **{k: d[k] for k in ("rhat_max", "ess_min", "divergences")},
                # a choice rests on its inner fits (leave-future-out between the models,
                # global/local): their flag is the cell's
                "flagged": bool(d["flagged"])
                or bool((choice or {}).get("inner_flagged"))
                or bool(local is not None and local["inner_flagged"]),
            },
            n_fit_rows=len(f.data),
            note=note,
        )


def _with_retry(note: str, f) -> str:
    """``note`` plus, when the cell's fit was re-run after a flag, why (:attr:`Fit.retried`)."""
    if not f.retried:
        return note
    return "; ".join(x for x in (note, f"{RETRIED_NOTE} ({f.retried})") if x)


#: In a cell's note when its fit's first NUTS run was flagged and re-run.
RETRIED_NOTE = "the fit's first NUTS run was flagged and re-run"


def _bayes(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "auto")
    return BayesMethod(name=kw.pop("name", "bayes"), **kw)


def _bayes_flat(**kw: Any) -> BayesMethod:
    kw["prior"] = "flat"
    return BayesMethod(name=kw.pop("name", "bayes-flat"), **kw)


def _bayes_disc(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "auto")
    kw["discrepancy"] = "family"
    return BayesMethod(name=kw.pop("name", "bayes-disc"), **kw)


def _bayes_disc3(**kw: Any) -> BayesMethod:
    kw.setdefault("disc_inner", 3)
    return _bayes_disc(name=kw.pop("name", "bayes-disc3"), **kw)


def _bayes_local(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "auto")
    kw.setdefault("local_sd", 0.01)
    return BayesMethod(name=kw.pop("name", "bayes-local"), **kw)


def _bayes_local_choice(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "auto")
    kw.setdefault("local_choice", 0.01)
    return BayesMethod(name=kw.pop("name", "bayes-local-choice"), **kw)


def _bayes_local_learn(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "auto")
    kw.setdefault("local_sd", 0.01)
    kw["local_learn"] = True
    return BayesMethod(name=kw.pop("name", "bayes-local-learn"), **kw)


def _bayes_auto(**kw: Any) -> BayesCurveMethod:
    kw["law"] = "auto"
    kw.setdefault("options", FitOptions())  # the choice sets rows and residual
    kw.setdefault("sampler", None)  # each candidate's default (CURVE_SAMPLER for whole curves)
    return BayesCurveMethod(name=kw.pop("name", "bayes-auto"), **kw)


def _bayes_auto_local(**kw: Any) -> BayesCurveMethod:
    kw.setdefault("local_choice", 0.01)
    return _bayes_auto(name=kw.pop("name", "bayes-auto-local"), **kw)


#: Method name -> factory (keyword options -> Method).
METHODS: dict[str, Callable[..., Method]] = {
    "paper": PaperMethod,
    "bayes": _bayes,
    "bayes-flat": _bayes_flat,
    "bayes-disc": _bayes_disc,
    "bayes-disc3": _bayes_disc3,
    "bayes-local": _bayes_local,
    "bayes-local-learn": _bayes_local_learn,
    "bayes-local-choice": _bayes_local_choice,
    "bayes-curve": BayesCurveMethod,
    "bayes-auto": _bayes_auto,
    "bayes-auto-local": _bayes_auto_local,
}


def get_method(name: str, **options: Any) -> Method:
    """Instantiate the method ``name`` of :data:`METHODS` with ``options``.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS`.
    **options
        Keyword arguments of the method's constructor.

    Returns
    -------
    Method

    Raises
    ------
    ValueError
        If ``name`` is not a known method.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
