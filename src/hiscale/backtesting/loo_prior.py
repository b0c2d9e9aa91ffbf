"""Leave-one-family-out population priors for the backtest (cached on disk).

Backtesting a family with a prior that was learned from it (or from its
siblings) would be a cheat: the prior is rebuilt without the family's whole
group (:func:`hiscale.population.family_group`).
"""

from __future__ import annotations

import hashlib
import json
import sys

from hiscale._version import __version__
from hiscale.data.curves import Curves
from hiscale.infer.fit import FitOptions
from hiscale.infer.settings import SamplerSettings
from hiscale.population import (
    build_prior,
    cache_dir,
    engine_revision,
    family_group,
    family_unit,
    population_families,
)
from hiscale.priors.prior import Prior, flat_prior, load_prior

__all__ = ["leave_one_out_prior"]


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
                "population-v3",
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
