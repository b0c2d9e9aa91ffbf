"""Bayesian backtest methods: ``bayes`` (population prior) and ``bayes-flat``.

Backtesting a family that is *in* a prior's training data would be a cheat,
so ``bayes`` uses a prior built without the family's whole group
(:func:`hiscale.population.family_group`; leave-one-family-out, cached on
disk). A saved prior given with ``prior=`` is used as-is for families it did
not see, and rebuilt without the family from the same corpus otherwise.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiscale import __version__
from hiscale.backtest import CellPrediction, register_method
from hiscale.data import Curves
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
from hiscale.priors import Prior, flat_prior, load_prior
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
    """Population prior built without ``family``'s group (cached on disk).

    Only families in the held-out family's loss unit feed it; when fewer than
    two are left, the weak default (``flat``) prior is returned, with a note
    in ``meta``.
    """
    options = options or FitOptions()
    sampler = sampler or SamplerSettings()
    unit = family_unit(corpus, family) if match_unit else None
    key = hashlib.sha256(
        json.dumps(
            [
                engine_revision(),
                corpus.data_hash(),
                family_group(family),
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
    path = cache_dir() / "priors" / f"lofo-{family_group(family)}-{key}"
    if (path / "prior.json").is_file():
        return load_prior(path)
    if progress:
        sys.stderr.write(f"building leave-one-out prior without {family_group(family)!r} ...\n")
    candidates, _ = population_families(corpus, min_span=min_span, loss_unit=unit)
    others = [f for f in candidates if family_group(f) != family_group(family)]
    n_units = len({family_group(f) for f in others}) if pool_groups else len(others)
    if n_units < 2:
        base = flat_prior(law)
        prior = Prior(
            name="flat",
            law=base.law,
            names=base.names,
            loc=base.loc,
            cov=base.cov,
            settings=base.settings,
            meta={
                "note": f"no population in loss unit {unit!r} without {family!r}: flat prior",
                "loss_unit": unit,
            },
        )
    else:
        prior = build_prior(
            corpus,
            name=f"lofo-{family_group(family)}",
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


register_method("bayes", _bayes)
register_method("bayes-flat", _bayes_flat)
