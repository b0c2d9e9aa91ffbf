"""Backtest methods: the interface, the paper's estimator and the Bayesian fits.

A *method* is an object with a ``name``, a ``prepare(corpus, family)`` step
run once per family (e.g. building a leave-one-family-out prior) and a call
``method(cell, state, seed=...) -> CellPrediction``. :data:`METHODS` maps the
names accepted by ``backtest(methods=...)`` and ``--method`` to factories:

* ``paper``: the paper's least-squares estimator (:mod:`hiscale.backtesting.paper`);
* ``bayes``: NUTS under a population prior. Backtesting a family that is *in*
  a prior's training data would be a cheat, so ``bayes`` uses a prior built
  without the family's whole group (:func:`hiscale.population.family_group`;
  :func:`hiscale.backtesting.loo_prior.leave_one_out_prior`, cached on disk).
  A saved prior given with ``prior=`` is used as-is for families it did not
  see, and rebuilt without the family from the same corpus otherwise;
* ``bayes-flat``: NUTS under the weak default prior (no borrowing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hiscale.backtesting.loo_prior import leave_one_out_prior
from hiscale.backtesting.paper import fit_paper, fit_paper_single
from hiscale.backtesting.protocol import Cell
from hiscale.data.curves import Curves
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.settings import SamplerSettings
from hiscale.population import family_group, family_unit
from hiscale.priors.prior import Prior, flat_prior, load_prior

__all__ = [
    "METHODS",
    "BayesMethod",
    "CellPrediction",
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
        ``{0.8: (lower, upper), 0.5: (lower, upper)}`` central new-run
        intervals per row; empty for methods without intervals.
    pit : ndarray or None
        Predictive CDF at the actual value, per row.
    diagnostics : dict
        ``rhat_max, ess_min, divergences, flagged`` (NaN / False if n/a).
    n_fit_rows : int or None
        Rows the method actually fitted on (e.g. after end-of-run selection).
    status : str
        ``"ok"`` or the failure reason.
    """

    median: np.ndarray
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pit: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    n_fit_rows: int | None = None
    status: str = "ok"


class Method(Protocol):
    """Interface of a backtest method."""

    name: str

    def prepare(self, corpus: Curves, family: str) -> Any:
        """Per-family state (e.g. a leave-one-family-out prior)."""
        ...

    def __call__(self, cell: Cell, state: Any, *, seed: int) -> CellPrediction:
        """Predict the cell's scored target rows."""
        ...


class PaperMethod:
    """The paper's least-squares estimator (k = 1: its single-model regime)."""

    name = "paper"

    def prepare(self, corpus: Curves, family: str) -> None:
        """Nothing to prepare."""
        return None

    def __call__(self, cell: Cell, state: Any, *, seed: int) -> CellPrediction:
        """Fit on the cell's training rows and predict the target rows."""
        f = cell.train.frame
        t = cell.target.frame
        fitter = fit_paper_single if cell.n_sizes_used == 1 else fit_paper
        fit = fitter(f["params"], f["tokens"], f["loss"])
        pred = fit.predict(t["params"], t["tokens"])
        return CellPrediction(median=np.asarray(pred), n_fit_rows=len(f), status=fit.status)


@dataclass
class BayesMethod:
    """NUTS fit of the cell's training rows, posterior-predictive target.

    Parameters
    ----------
    name : str
        Column value in results.
    prior : "loo", "flat", a saved prior name/path, or Prior
        ``"loo"`` builds a leave-one-family-out prior from the corpus.
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
    """

    name: str = "bayes"
    prior: Any = "loo"
    law: str = "chinchilla"
    options: FitOptions = field(default_factory=FitOptions)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    prior_sampler: SamplerSettings = field(default_factory=SamplerSettings)
    progress: bool = False
    prior_settings: dict[str, Any] = field(default_factory=dict)
    min_span: float = 4.0
    match_unit: bool = True
    pool_groups: bool = True

    def prepare(self, corpus: Curves, family: str) -> Prior:
        """The prior used for every cell of ``family`` (with ``prior_settings`` applied)."""
        prior = self._prepare(corpus, family)
        return prior.with_settings(**self.prior_settings) if self.prior_settings else prior

    def _loo(self, corpus: Curves, family: str) -> Prior:
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
        )

    def _prepare(self, corpus: Curves, family: str) -> Prior:
        if isinstance(self.prior, Prior):
            return self.prior.for_law(self.law)
        if self.prior == "flat":
            return flat_prior(self.law)
        if self.prior == "loo":
            return self._loo(corpus, family)
        saved = load_prior(Path(self.prior) if Path(str(self.prior)).exists() else self.prior)
        seen = {family_group(f) for f in saved.meta.get("families_used", {})}
        other_unit = saved.meta.get("loss_unit") not in (None, family_unit(corpus, family))
        if family_group(family) in seen or other_unit:
            # the saved prior saw this family (or is in another loss unit):
            # rebuild it from the corpus without the family
            return self._loo(corpus, family)
        return saved.for_law(self.law)

    def __call__(self, cell: Cell, state: Prior, *, seed: int) -> CellPrediction:
        """Fit and predict the cell's scored target rows."""
        f = fit(
            cell.train,
            family=cell.family,
            prior=state,
            law=self.law,
            seed=seed,
            options=self.options,
            sampler=self.sampler,
        )
        t = cell.target.frame
        _, new = f.draws(t["params"].to_numpy(), t["tokens"].to_numpy(), seed=seed)
        actual = t["loss"].to_numpy()
        intervals = {
            lv: tuple(np.quantile(new, [(1 - lv) / 2, (1 + lv) / 2], axis=0)) for lv in (0.8, 0.5)
        }
        d = f.diagnostics
        return CellPrediction(
            median=np.median(new, axis=0),
            intervals=intervals,
            pit=np.mean(new <= actual[None, :], axis=0),
            diagnostics={
                "rhat_max": d["rhat_max"],
                "ess_min": d["ess_min"],
                "divergences": d["divergences"],
                "flagged": d["flagged"],
            },
            n_fit_rows=len(f.data),
        )


def _bayes(**kw: Any) -> BayesMethod:
    kw.setdefault("prior", "loo")
    return BayesMethod(name=kw.pop("name", "bayes"), **kw)


def _bayes_flat(**kw: Any) -> BayesMethod:
    kw["prior"] = "flat"
    return BayesMethod(name=kw.pop("name", "bayes-flat"), **kw)


#: Method name -> factory (keyword options -> Method).
METHODS: dict[str, Callable[..., Method]] = {
    "paper": PaperMethod,
    "bayes": _bayes,
    "bayes-flat": _bayes_flat,
}


def get_method(name: str, **options: Any) -> Method:
    """Instantiate the method ``name`` of :data:`METHODS` with ``options``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
