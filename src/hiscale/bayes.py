"""Bayesian backtest methods: ``bayes`` (population prior) and ``bayes-flat``.

Backtesting a family that is *in* a prior's training data would be a cheat.
``bayes`` therefore uses the shipped prior (:data:`hiscale.priors.DEFAULT_PRIOR`)
for a family whose group it did not see and whose loss unit it shares; for a
family it did see (backtesting the corpus itself) it builds a prior without
the family's whole group (:func:`hiscale.population.family_group`,
leave-one-group-out, cached on disk) from the data given. A prior given with
``prior=`` (a name, a path or a :class:`~hiscale.priors.Prior`) is checked
the same way.

When no population exists for the family (its loss unit has fewer than two
other groups in the data), ``bayes`` runs with the flat prior: the result's
``prior`` column says ``flat (no population in unit ...)`` and a
:class:`~hiscale.priors.PriorWarning` is emitted.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hiscale import __version__
from hiscale.backtest import CellPrediction, register_method
from hiscale.data import Curves, family_groups, normalise_unit
from hiscale.fit import FitOptions, fit
from hiscale.inference import SamplerSettings
from hiscale.population import (
    build_prior,
    cache_dir,
    engine_revision,
    family_group,
    family_unit,
    population_families,
)
from hiscale.priors import (
    DEFAULT_PRIOR,
    Prior,
    PriorWarning,
    flat_prior,
    load_prior,
    prior_overlap,
)
from hiscale.protocol import Cell

__all__ = ["BayesMethod", "leave_one_out_prior"]


def leave_one_out_prior(
    corpus: Curves,
    family: str,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    progress: bool = False,
    min_span: float = 4.0,
    match_unit: bool = True,
    pool_groups: bool = True,
) -> Prior:
    """Population prior built from ``corpus`` without ``family``'s group (cached on disk).

    Only families in the held-out family's loss unit feed it; when fewer than
    two groups are left, the weak default (``flat``) prior is returned, labelled
    ``flat (no population in unit ...)`` (:attr:`Prior.label`) with the reason
    in ``meta["note"]``.
    """
    options = options or FitOptions()
    sampler = sampler or SamplerSettings()
    unit = family_unit(corpus, family) if match_unit else None
    groups = family_groups(corpus)
    group = groups.get(family) or family_group(family)
    candidates, _ = population_families(corpus, min_span=min_span, loss_unit=unit)
    others = [f for f in candidates if groups[f] != group]
    n_units = len({groups[f] for f in others}) if pool_groups else len(others)
    if n_units < 2:
        return _no_population(law, family, group, unit, others)
    key = hashlib.sha256(
        json.dumps(
            [
                engine_revision(),
                corpus.data_hash(),
                group,
                law,
                options.to_dict(),
                sampler.to_dict(),
                seed,
                __version__,
                min_span,
                unit,
                pool_groups,
                "population-v4",
            ],
            default=str,
        ).encode()
    ).hexdigest()[:16]
    path = cache_dir() / "priors" / f"lofo-{re.sub(r'[^A-Za-z0-9_.-]', '_', group)}-{key}"
    if (path / "prior.json").is_file():
        return load_prior(path)
    if progress:
        sys.stderr.write(f"building leave-one-out prior without group {group!r} ...\n")
    prior = build_prior(
        corpus,
        name=f"lofo-{group}",
        law=law,
        exclude=[family],
        options=options,
        sampler=sampler,
        seed=seed,
        progress=progress,
        min_span=min_span,
        loss_unit=unit,
        pool_groups=pool_groups,
    )
    prior.save(path)
    return prior


def _no_population(law: str, family: str, group: str, unit: str | None, others) -> Prior:
    """The flat prior, labelled as the fallback it is."""
    where = f"in unit {unit}" if unit is not None else "in any unit"
    found = f"{len(others)} usable families outside group {group!r}"
    return replace(
        flat_prior(law),
        meta={
            "label": f"flat (no population {where})",
            "note": (
                f"no population prior for {family!r}: {found} in loss unit {unit!r}, "
                "a population needs >= 2 groups"
            ),
            "loss_unit": unit,
        },
    )


@dataclass
class BayesMethod:
    """NUTS fit of the cell's training rows, posterior-predictive target.

    Parameters
    ----------
    name : str
        Column value in results.
    prior : "auto", "loo", "flat", a saved prior name/path, or Prior
        ``"auto"`` (default) uses the shipped prior
        (:data:`~hiscale.priors.DEFAULT_PRIOR`) unless it saw the family's
        group or is in another loss unit; then, and always with ``"loo"``, a
        prior is built from the corpus without the family's group
        (:func:`leave_one_out_prior`). A named or given prior is checked the
        same way and replaced (with a :class:`~hiscale.priors.PriorWarning`)
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

    def prepare(self, corpus: Curves, family: str) -> Prior:
        """The prior used for every cell of ``family`` (with ``prior_settings`` applied).

        Its :attr:`~hiscale.priors.Prior.label` is the ``prior`` column of the
        results. Running without a population (flat fallback) emits one
        :class:`~hiscale.priors.PriorWarning`.
        """
        prior = self._prepare(corpus, family)
        if prior.name == "flat" and "note" in prior.meta:
            warnings.warn(
                f"{self.name} on {family!r} runs with the flat prior: {prior.meta['note']}",
                PriorWarning,
                stacklevel=2,
            )
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
        if isinstance(self.prior, str) and self.prior == "flat":
            return flat_prior(self.law)
        if isinstance(self.prior, str) and self.prior == "loo":
            return self._loo(corpus, family)
        if isinstance(self.prior, Prior):
            given = self.prior
        else:
            name = DEFAULT_PRIOR if self.prior == "auto" else self.prior
            given = load_prior(Path(name) if Path(str(name)).exists() else name)
        why = self._not_independent(given, corpus, family)
        if why is None:
            return given.for_law(self.law)
        rebuilt = self._loo(corpus, family)
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
    kw.setdefault("prior", "auto")
    return BayesMethod(name=kw.pop("name", "bayes"), **kw)


def _bayes_flat(**kw: Any) -> BayesMethod:
    kw["prior"] = "flat"
    return BayesMethod(name=kw.pop("name", "bayes-flat"), **kw)


register_method("bayes", _bayes)
register_method("bayes-flat", _bayes_flat)
