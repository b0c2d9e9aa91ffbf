"""Leave-one-family-out population priors for the backtest (cached on disk).

Backtesting a family with a prior that was learned from it (or from its
siblings) would be a cheat: the prior is rebuilt without the family's whole
group (:func:`hiscale.data.curves.family_groups`, else
:func:`hiscale.population.family_group`). When no population exists without
it, the flat prior is returned, labelled as the fallback it is.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from typing import Any

from hiscale._util import cache_key, table_digest
from hiscale._version import __version__
from hiscale.data.curves import Curves, family_groups
from hiscale.infer.fit import FitOptions
from hiscale.infer.settings import POPULATION_SAMPLER, SamplerSettings
from hiscale.laws import get_law
from hiscale.population import (
    build_prior,
    cache_dir,
    curve_law_families,
    engine_revision,
    family_covariate,
    family_group,
    family_unit,
    population_families,
)
from hiscale.priors import defaults
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
    client: Any = None,
    covariate: str | None = None,
    runs_extra: Any = None,
) -> Prior:
    """Build the population prior from ``corpus`` without ``family``'s group (cached on disk).

    Only families in the held-out family's loss unit feed it; when fewer than
    two groups are left, the weak default (``flat``) prior is returned, labelled
    ``flat (no population in unit ...)`` (:attr:`Prior.label`) with the reason
    in ``meta["note"]``. With a Dask ``client`` the step-1 family fits run as
    tasks on its workers (:func:`hiscale.population.build_prior`).

    Parameters
    ----------
    corpus : Curves
        Validated table of many families (one metric per family).
    family : str
        The held-out family; its whole group is left out.
    law : str, default "chinchilla"
        Law form whose parameter vector is pooled.
    options : FitOptions, optional
        Step-1 row selection and likelihood options (default ``FitOptions()``;
        for a curve law every row with AR(1) residuals, and only families whose
        runs all have a known schedule feed it).
    sampler : SamplerSettings, optional
        Step-1 sampler settings (default ``SamplerSettings()``).
    seed : int, default 0
        Seed of the step-1 fits.
    progress : bool, default False
        Print progress lines to stderr.
    min_span : float, default 4.0
        Families whose sizes span less than this factor are left out.
    match_unit : bool, default True
        Use only families in ``family``'s loss unit (False mixes units).
    pool_groups : bool, default True
        Count sibling families of one group as one draw from the population
        (see :func:`hiscale.population.build_prior`).
    client : distributed.Client, optional
        Run the step-1 fits on this client's workers.
    covariate : str, optional
        A family covariate (:func:`hiscale.data.covariates.family_covariate`): the
        population mean depends on its level and the prior is the predictive
        at ``family``'s level (``meta["covariate"]``).
    runs_extra : pandas.DataFrame, optional
        The corpus's ``runs_extra.csv`` (schedules of the extra families, for a
        curve law); part of the cache key.

    Returns
    -------
    Prior
        The leave-one-group-out prior, or the labelled flat fallback. The
        cache key covers the data, the settings and the engine's revision, so
        a change to any of them rebuilds the prior.
    """
    if options is None:
        curve = bool(get_law(law).covariates)
        options = FitOptions(rows="all", residual="ar1") if curve else FitOptions()
    sampler = sampler or SamplerSettings()
    unit = family_unit(corpus, family) if match_unit else None
    groups = family_groups(corpus)
    group = groups.get(family) or family_group(family)
    candidates, _ = population_families(corpus, min_span=min_span, loss_unit=unit)
    others = [f for f in candidates if groups[f] != group]
    others = [f for f in others if f not in curve_law_families(corpus, others, law, runs_extra)]
    n_units = len({groups[f] for f in others}) if pool_groups else len(others)
    if n_units < 2:
        return _no_population(law, family, group, unit, others)
    level = None if covariate is None else family_covariate(corpus, covariate, [family])[family]
    key = cache_key(
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
            POPULATION_SAMPLER.to_dict(),
            [
                defaults.POPULATION_MU_SD_FACTOR,
                defaults.POPULATION_TAU_SD,
                defaults.POPULATION_LKJ_CONCENTRATION,
                defaults.POPULATION_SIGMA_RUN_SD_MIN,
                defaults.POPULATION_SIGMA_OBS_SD_MIN,
            ],
            "population-v4",
            *(() if covariate is None else ([covariate, level],)),
            *(() if runs_extra is None else (table_digest(runs_extra),)),
        ]
    )
    name = f"lofo-{group}" + ("" if covariate is None else f" ({covariate}={level})")
    path = cache_dir() / "priors" / f"lofo-{re.sub(r'[^A-Za-z0-9_.-]', '_', group)}-{key}"
    if (path / "prior.json").is_file():
        return load_prior(path)
    if progress:
        sys.stderr.write(f"building leave-one-out prior without group {group!r} ...\n")
    prior = build_prior(
        corpus,
        name=name,
        law=law,
        exclude=[family],
        options=options,
        sampler=sampler,
        seed=seed,
        progress=progress,
        min_span=min_span,
        loss_unit=unit,
        pool_groups=pool_groups,
        client=client,
        covariate=covariate,
        covariate_level=level,
        runs_extra=runs_extra,
    )
    prior.save(path)
    return prior


def _no_population(law: str, family: str, group: str, unit: str | None, others) -> Prior:
    """Return the flat prior, labelled as the fallback it is."""
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
