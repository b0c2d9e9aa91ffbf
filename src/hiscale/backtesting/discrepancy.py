r"""Per-family extrapolation discrepancy with a population prior (issue 10, section 3).

Interval misses in the backtest are mostly the law's systematic
extrapolation error, not noise. This module widens a cell's new-run
predictive by a discrepancy term that grows with the extrapolation distance:

.. math::

    \ln y_{\rm target} = \ln \hat y_{\rm new\,run} + \delta, \qquad
    \delta \sim N\big(0, (\sigma_d\, d)^2\big), \qquad
    d = |\ln(N_{\rm target} / N_{\rm nearest\ train})|

(``N_nearest train`` is the largest training size for ``direction="up"``,
the smallest for ``"down"``).

Evidence on ``sigma_d``:

* **the cell's own** (:func:`inner_error`): when the cell's training rows
  have ``k >= 3`` sizes, an inner fit on sizes ``1..k-1`` (same engine and
  prior, the cheaper :data:`INNER_SAMPLER`) predicts the end rows (last 30%
  of tokens, :func:`hiscale.backtesting.protocol.target_rows`) of the
  held-out largest training size. ``e_in`` is the mean over those rows of
  ``ln y - ln median(new-run draws)``, ``s_in^2`` the predictive variance of
  that mean (of the row-mean of ``ln`` new-run draws), ``d_in = |ln(N_k /
  N_{k-1})|``; the likelihood is ``N(e_in; 0, s_in^2 + sigma_d^2 d_in^2)``;
* **the population** (:func:`population_discrepancy`): ``log sigma_d ~ N(m,
  s^2)``, ``(m, s)`` learned from the other families' leave-largest-size-out
  errors. With a handful of groups the maximum marginal likelihood
  (:func:`fit_population`, recorded) often sits on a bound (``s -> 0`` or
  ``m -> -inf``), so the prior used is the *predictive* of ``log sigma_d``
  under the posterior of ``(m, s)`` on a grid (:func:`population_density`,
  hyperpriors :data:`HYPERPRIOR`): one inner fit per family on its own rows (its largest size held
  out), under the **flat** prior (as the population's step-1 fits, so no
  family's error depends on a prior learned from it), cached on disk
  (:func:`family_inner_error`). The held-out family's whole group
  (:func:`hiscale.data.curves.family_groups`) is excluded; every other group
  counts once (its families' log-likelihoods are weighted by one over the
  group's size).

The cell's posterior of ``sigma_d`` is one-dimensional
(:func:`sigma_posterior`, a grid over ``log sigma_d``); the predictive is
``new-run draw_i x exp(sigma_d,i d z_i)`` (:func:`widen`), one
``sigma_d,i`` from that posterior and one ``z_i ~ N(0, 1)`` per draw, shared
by the draw's target rows (the discrepancy is systematic over a size).

The maths that needs no fit (the population of ``sigma_d``, the grid
posterior, widening, the ``discrepancy.json`` file) is
:mod:`hiscale.priors.discrepancy`, re-exported here.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from hiscale._util import cache_key, json_default
from hiscale._version import __version__
from hiscale.backtesting.protocol import sizes, split_target, target_rows
from hiscale.data.curves import Curves, family_groups
from hiscale.data.selection import filter_min_tokens
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.settings import SamplerSettings
from hiscale.population import cache_dir, engine_revision, family_group
from hiscale.priors.discrepancy import (  # the population maths, re-exported here
    DISCREPANCY_FILE,
    FALLBACK_PRIOR,
    HYPERPRIOR,
    U_GRID,
    DiscrepancyPrior,
    InnerError,
    SigmaPosterior,
    compute_distance,
    discrepancy_from_errors,
    distance,
    fit_population,
    load_discrepancy,
    population_density,
    run_compute,
    save_discrepancy,
    sigma_posterior,
    widen,
)
from hiscale.priors.prior import Prior, flat_prior

__all__ = [
    "DISCREPANCY_FILE",
    "FALLBACK_PRIOR",
    "HYPERPRIOR",
    "INNER_SAMPLER",
    "U_GRID",
    "DiscrepancyPrior",
    "InnerError",
    "SigmaPosterior",
    "compute_distance",
    "discrepancy_from_errors",
    "distance",
    "family_inner_error",
    "fit_population",
    "inner_error",
    "inner_errors",
    "load_discrepancy",
    "population_density",
    "population_discrepancy",
    "run_compute",
    "save_discrepancy",
    "sigma_posterior",
    "widen",
]

#: NUTS settings of the inner (leave-largest-size-out) fits: 2 chains x (300 warm-up + 500 draws).
INNER_SAMPLER = SamplerSettings(num_warmup=300, num_samples=500, num_chains=2)


def _held_compute_distance(train: Curves, direction: str) -> float:
    """Compute distance of the held-out size (its largest run) from the other sizes' runs."""
    rest, held = split_target(train, direction=direction)
    return compute_distance(float(np.max(run_compute(held.frame))), run_compute(rest.frame))


def inner_error(
    train: Curves,
    family: str,
    prior: Prior | str,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    direction: str = "up",
    drop: int = 1,
) -> InnerError | None:
    """Fit ``train`` without its largest (``"down"``: smallest) size and score that size's end rows.

    Parameters
    ----------
    train : Curves
        Training rows of one family (a cell's, after its filters).
    family : str
        Family name.
    prior : Prior or str
        Prior of the inner fit (the cell's own).
    law : str, default "chinchilla"
        Law form.
    options : FitOptions, optional
        Row selection of the inner fit.
    sampler : SamplerSettings, optional
        Inner NUTS settings (default :data:`INNER_SAMPLER`).
    seed : int, default 0
        Seed of the inner fit and its predictive draws.
    direction : {"up", "down"}, default "up"
        Which end is held out.
    drop : int, default 1
        Sizes left out of the inner fit, counted from that end: the fit sees
        the other ``k - drop`` sizes and scores the extreme size, so a larger
        ``drop`` measures the error at a longer extrapolation distance.

    Returns
    -------
    InnerError or None
        None when ``train`` has fewer than ``drop + 2`` sizes (no inner
        evidence at that distance).
    """
    s = sizes(train)
    if drop < 1:
        raise ValueError(f"drop must be >= 1, got {drop}")
    if len(s) < drop + 2:
        return None
    _, held = split_target(train, direction=direction)
    kept = s[:-drop] if direction == "up" else s[drop:]
    rest = train.with_frame(
        train.frame[train.frame["params"].isin(kept)], step="inner", reason="held-out sizes"
    )
    end = target_rows(held, "last30").frame
    nearest = kept[-1] if direction == "up" else kept[0]
    f = fit(
        rest,
        family=family,
        prior=prior,
        law=law,
        seed=seed,
        options=options or FitOptions(),
        sampler=sampler or INNER_SAMPLER,
    )
    _, new = f.draws(end["params"].to_numpy(), end["tokens"].to_numpy(), seed=seed)
    ln_new = np.log(new)
    ln_y = np.log(end["loss"].to_numpy())
    e = float(np.mean(ln_y - np.median(ln_new, axis=0)))
    s2 = float(np.var(ln_new.mean(axis=1), ddof=1))
    held_size = s[-1] if direction == "up" else s[0]
    both = train.with_frame(
        train.frame[train.frame["params"].isin([*kept, held_size])],
        step="inner",
        reason="sizes between the held-out size and the fitted ones",
    )
    return InnerError(
        e=e,
        s2=s2,
        d=distance(held_size, nearest),
        rows=len(end),
        n_fit_sizes=len(kept),
        flagged=bool(f.diagnostics["flagged"]),
        d_compute=_held_compute_distance(both, direction),
    )


def inner_errors(
    train: Curves,
    family: str,
    prior: Prior | str,
    *,
    n_inner: int = 3,
    **kwargs,
) -> list[InnerError]:
    """Leave-largest-size-out errors at up to ``n_inner`` extrapolation distances.

    :func:`inner_error` with ``drop = 1 .. n_inner`` (each needs ``drop + 2``
    sizes): the extreme training size predicted from the sizes below the
    largest, the two largest, ... left out. The fits are nested, so the
    errors are correlated; :func:`~hiscale.priors.discrepancy.sigma_posterior`
    multiplies their likelihoods as if they were not (say so where it is used).

    Parameters
    ----------
    train : Curves
        Training rows of one family.
    family : str
        Family name.
    prior : Prior or str
        Prior of the inner fits.
    n_inner : int, default 3
        Most inner fits.
    **kwargs
        ``law``, ``options``, ``sampler``, ``seed``, ``direction`` of
        :func:`inner_error`.

    Returns
    -------
    list of InnerError
        Empty when ``train`` has fewer than 3 sizes.
    """
    out = []
    for drop in range(1, n_inner + 1):
        err = inner_error(train, family, prior, drop=drop, **kwargs)
        if err is None:
            break
        out.append(err)
    return out


def family_inner_error(
    corpus: Curves,
    family: str,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    direction: str = "up",
    min_tokens: float = 1e10,
    use_cache: bool = True,
) -> InnerError | None:
    """Return a family's leave-largest-size-out error on its own rows (flat prior, cached).

    The family's rows above ``min_tokens`` (the protocol's token cut) are
    fitted without the largest (``"down"``: smallest) size under the flat
    prior; see :func:`inner_error`. The result is cached under
    ``cache_dir()/discrepancy`` keyed by the family's data hash, the
    settings and :func:`hiscale.population.engine_revision`.

    Parameters
    ----------
    corpus : Curves
        The table.
    family : str
        The family.
    law : str, default "chinchilla"
        Law form.
    options : FitOptions, optional
        Row selection.
    sampler : SamplerSettings, optional
        Inner NUTS settings (default :data:`INNER_SAMPLER`).
    seed : int, default 0
        Seed.
    direction : {"up", "down"}, default "up"
        Which end is held out.
    min_tokens : float, default 1e10
        Token cut on the fitted rows.
    use_cache : bool, default True
        Read a cached error when one exists (a new one is always written).

    Returns
    -------
    InnerError or None
        None when the family has fewer than 3 sizes after the cut.
    """
    options = options or FitOptions()
    sampler = sampler or INNER_SAMPLER
    rows = filter_min_tokens(corpus.family(family), min_tokens)
    key = cache_key(
        [
            engine_revision(),
            rows.data_hash(),
            family,
            law,
            options.to_dict(),
            sampler.to_dict(),
            seed,
            direction,
            min_tokens,
            flat_prior(law).to_dict(),
            __version__,
            "discrepancy-v1",
        ],
        sort_keys=True,
    )
    path = cache_dir() / "discrepancy" / f"{family}-{key}.json"
    if use_cache and path.is_file():
        d = json.loads(path.read_text())
        if d is None:
            return None
        if "d_compute" not in d:  # written before the field existed: no refit needed
            d["d_compute"] = _held_compute_distance(rows, direction)
        return InnerError(**d)
    err = inner_error(
        rows, family, "flat", law=law, options=options, sampler=sampler, seed=seed,
        direction=direction,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(None if err is None else err.to_dict(), default=json_default))
    tmp.replace(path)  # atomic: concurrent backtests may read the cache
    return err


def population_discrepancy(
    corpus: Curves,
    family: str | None,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    direction: str = "up",
    min_tokens: float = 1e10,
    progress: bool = False,
    distance: str = "params",
) -> DiscrepancyPrior:
    """Learn ``(m, s)`` from leave-largest-size-out errors of the families outside its group.

    Parameters
    ----------
    corpus : Curves
        The table (the held-out family included; its group is excluded).
    family : str or None
        The held-out family; None: every family feeds the population (a
        shipped population, :func:`save_discrepancy`).
    law : str, default "chinchilla"
        Law form.
    options : FitOptions, optional
        Row selection of the inner fits.
    sampler : SamplerSettings, optional
        Inner NUTS settings (default :data:`INNER_SAMPLER`).
    seed : int, default 0
        Seed of the inner fits.
    direction : {"up", "down"}, default "up"
        Which end is held out.
    min_tokens : float, default 1e10
        Token cut.
    progress : bool, default False
        Print a line per inner fit that is not cached.
    distance : {"params", "compute"}, default "params"
        See :func:`discrepancy_from_errors`.

    Returns
    -------
    DiscrepancyPrior
        Its ``label`` says how many groups and families fed it and how many
        of their inner fits are flagged (unconverged); ``fallback (...)``
        with :data:`FALLBACK_PRIOR` when fewer than two other groups have
        an error.
    """
    groups = family_groups(corpus)
    group = None if family is None else (groups.get(family) or family_group(family))
    errs: dict[str, InnerError] = {}
    for fam in corpus.families:
        if group is not None and groups.get(fam, fam) == group:
            continue
        if progress:
            sys.stderr.write(f"discrepancy: inner error of {fam!r} ...\n")
        err = family_inner_error(
            corpus, fam, law=law, options=options, sampler=sampler, seed=seed,
            direction=direction, min_tokens=min_tokens,
        )  # fmt: skip
        if err is not None and np.isfinite(err.e) and np.isfinite(err.s2):
            errs[fam] = err
    fams = sorted(errs)
    group_size: dict[str, int] = {}
    for f in fams:
        group_size[groups.get(f, f)] = group_size.get(groups.get(f, f), 0) + 1
    n_groups = len(group_size)
    if n_groups < 2:
        m, s = FALLBACK_PRIOR
        note = f"{n_groups} group(s) outside {group!r} give an error; need >= 2"
        return DiscrepancyPrior(
            m, s, f"fallback ({note})", tuple(fams), {f: errs[f].to_dict() for f in fams},
            {"note": note}, None, distance,
        )  # fmt: skip
    return discrepancy_from_errors(
        errs,
        {f: groups.get(f, f) for f in fams},
        info={"excluded_group": group},
        distance=distance,
    )
