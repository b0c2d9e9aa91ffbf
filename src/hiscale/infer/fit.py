"""Fit one family with NUTS: ``fit(...) -> Fit``.

Data selection before the model (all reported in ``Fit.log``,
:mod:`hiscale.data.selection`):

1. the optional token cut ``tokens > min_tokens``;
2. *end-of-run rows*: per run, rows with ``tokens >= end_of_run x`` its
   largest token count (the separable law does not describe mid-schedule
   checkpoints; fitting only the end of each run removed the misfit that
   drove the bad mode);
3. at most ``max_rows_per_run`` rows per run, evenly spaced (with tempering
   to ``n_eff_per_run`` effective points per run, more rows add little).

Whole curves (``FitOptions(rows="all", residual="ar1")``, with a curve law
such as ``"h-term"``): each run's schedule is rebuilt
(:func:`hiscale.data.schedule.reconstruct`; a family with an unknown
schedule falls back to the end-of-run model and says so), rows from
``curve_start x`` the run's last checkpoint are kept and thinned evenly in
``ln D`` (:func:`hiscale.modeling.curve.select_curve_rows`), and the model is
:func:`hiscale.modeling.curve.make_curve_model` (run offset + AR(1), exact,
no tempering).

Then MAP and NUTS (:mod:`hiscale.infer.nuts`) and the sampler's verdict
(:mod:`hiscale.infer.diagnostics`); the result is a :class:`~hiscale.infer.result.Fit`,
one ArviZ DataTree built once right after sampling (:meth:`Fit.from_samples`).
:class:`~hiscale.infer.settings.FitOptions` is defined in :mod:`hiscale.infer.settings`
(so :mod:`~hiscale.infer.result` can read it without an import cycle) and
re-exported here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from hiscale._config import require_x64
from hiscale._version import __version__
from hiscale.data.covariates import family_covariate
from hiscale.data.curves import (
    Curves,
    CurvesError,
    load_curves,
    sole_family,
    unit_assumptions,
)
from hiscale.infer.diagnostics import diagnose
from hiscale.infer.nuts import (
    LAPLACE_MIN_EIG,
    MAP_BOUNDS,
    dispersed_inits,
    init_params,
    jittered_inits,
    laplace_inverse_mass,
    map_estimate,
    paper_start,
    run_nuts,
)
from hiscale.infer.result import Fit
from hiscale.infer.settings import FitOptions, SamplerSettings, default_sampler, retry_sampler
from hiscale.laws import D0, N0, get_law
from hiscale.modeling.curve import (
    CurveDesign,
    centred_xi,
    curve_prior_arrays,
    make_curve_design,
    make_curve_model,
)
from hiscale.modeling.design import Design, make_design
from hiscale.modeling.family import make_family_model, prior_arrays
from hiscale.priors.defaults import SINGLE_ROW_SIGMA_OBS
from hiscale.priors.prior import Prior, PriorWarning, prior_overlap, resolve_prior

__all__ = [
    "CURVE_CENTRED",
    "CURVE_MAP_GAP",
    "GIVEN_RULE",
    "RETRY_RULE",
    "FitOptions",
    "fit",
    "fit_design",
]

#: Whole-curve fits sample the size/data shares at the rows' centre
#: (:func:`hiscale.modeling.curve.make_curve_model` with ``centred=True``;
#: same posterior, straighter geometry for families far from (N0, D0)).
CURVE_CENTRED: bool = True

#: Whole-curve fits start no chain from a MAP whose potential is more than this
#: many nats above the best one (a relative density below e^-25: no posterior
#: mass; such optima were the bonus cap's plateau, where a chain stalls).
CURVE_MAP_GAP: float = 25.0


def fit_design(
    design: Design | CurveDesign,
    prior: Prior,
    *,
    law: str,
    seed: int = 0,
    sampler: SamplerSettings | None = None,
) -> tuple[
    dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray], dict[str, float], dict[str, Any]
]:
    """Run MAP searches, then NUTS, on a design.

    The MAP searches (from the prior centre and, for dispersed starts, from
    the paper's least-squares fit) give the chains their starting points;
    starting chains apart lets r̂ see a second mode.

    Parameters
    ----------
    design : Design or CurveDesign
        Padded arrays of one family's selected rows
        (:func:`hiscale.modeling.design.make_design`; a
        :class:`~hiscale.modeling.curve.CurveDesign` of
        :func:`~hiscale.modeling.curve.make_curve_design` selects the
        whole-curve model with its offset + AR(1) likelihood).
    prior : Prior
        The prior (converted to ``law``'s parameters).
    law : str
        Law name.
    seed : int
        Seed of the starting points and of the sampler.
    sampler : SamplerSettings, optional
        NUTS settings (defaults if ``None``).

    Returns
    -------
    posterior : dict of str to ndarray
        Draws per site, shape ``(chain, draw, ...)``.
    diagnostics : dict
        :func:`hiscale.infer.diagnostics.diagnose` of the draws.
    sample_stats : dict of str to ndarray
        Per-draw sampler statistics (ArviZ names: ``diverging``, ``energy``,
        ``lp``, ``n_steps``, ``tree_depth``, ...).
    timings : dict of str to float
        ``map_seconds`` and ``nuts_seconds``.
    inits : dict
        Where each chain started (see
        :func:`hiscale.infer.nuts.dispersed_inits`) and the MAP searches
        behind it.

    Raises
    ------
    RuntimeError
        If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
    """
    require_x64("hiscale.infer.fit.fit_design")
    sampler = sampler or SamplerSettings()
    law_obj = get_law(law)
    prior = prior.for_law(law_obj.name)
    if isinstance(design, CurveDesign):
        # whole curves: offset + AR(1) likelihood (hiscale.modeling.curve)
        model = make_curve_model(law_obj.name, centred=CURVE_CENTRED)
        arrays = curve_prior_arrays(law_obj.name, log_scale_loc=design.log_scale_loc, prior=prior)
        kwargs = {
            **jax.tree.map(jnp.asarray, design.model_args()),
            "prior": {k: jnp.asarray(v) for k, v in arrays.items()},
            "log_loss": jnp.asarray(design.log_loss),
        }
    else:
        model = make_family_model(law_obj.name)
        kwargs = {
            **jax.tree.map(jnp.asarray, design.model_args()),
            "run_mask": jnp.arange(design.n_runs_padded) < design.n_runs,
            "prior": {
                k: jnp.asarray(v)
                for k, v in prior_arrays(prior, log_scale_loc=design.log_scale_loc).items()
            },
            "log_loss": jnp.asarray(design.log_loss),
        }
    t0 = time.perf_counter()
    start = init_params(len(law_obj.params), design.log_scale_loc)
    if isinstance(design, CurveDesign):
        start["logit_rho"] = jnp.asarray(kwargs["prior"]["rho"][0])
    elif design.run_local is not None and "sd_prior" in design.run_local:
        start["log_local_sd"] = jnp.asarray(design.run_local["sd_prior"][0])
    map_params, map_u, _ = map_estimate(model, kwargs, start)
    optima = [(map_params, map_u, "MAP from the prior centre")]
    info: dict[str, Any] = {"method": sampler.init}
    if isinstance(design, CurveDesign):
        info["parametrisation"] = (
            "whole-curve model, shares centred at the rows' centre (make_curve_model centred=True)"
            if CURVE_CENTRED
            else "whole-curve model, shares at (N0, D0)"
        )
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    if sampler.init == "dispersed" and sampler.num_chains > 1:
        m = design.mask
        ls_start, status = paper_start(
            N0 * np.exp(design.x[m]),
            D0 * np.exp(design.y[m]),
            np.exp(design.log_loss[m]),
            names=law_obj.params,
            prior=kwargs["prior"],
            centre=start,
        )
        info["paper_least_squares"] = status
        if ls_start is not None and isinstance(design, CurveDesign) and CURVE_CENTRED:
            ls_start["xi"] = jnp.asarray(
                np.clip(
                    centred_xi(ls_start["xi"], kwargs["prior"], law_obj, design),
                    *MAP_BOUNDS["xi"],
                )
            )
        if ls_start is not None:
            ls_params, ls_u, _ = map_estimate(model, kwargs, ls_start, centre=start)
            optima.append((ls_params, ls_u, "MAP from the paper's least-squares fit"))
        info["map_potentials"] = [float(u) for _, u, _ in optima]
        if isinstance(design, CurveDesign):
            # the curve laws' bonus cap (hiscale.laws._MAX_BONUS) leaves a flat plateau
            # (huge bonus, log_scale compensating) where a MAP search can stop and a chain
            # started there never leaves: start only from optima near the best
            best = min(u for _, u, _ in optima)
            far = [lab for _, u, lab in optima if u > best + CURVE_MAP_GAP]
            if far:
                optima = [o for o in optima if o[1] <= best + CURVE_MAP_GAP]
                info["dropped_starts"] = [
                    f"{lab}: potential more than {CURVE_MAP_GAP:g} nats above the best"
                    for lab in far
                ]
        inits, labels = dispersed_inits(
            model, kwargs, optima=optima, centre=start, rng_key=key_init, settings=sampler
        )
    else:
        inits = jittered_inits(map_params, rng_key=key_init, settings=sampler)
        labels = [f"MAP + {sampler.init_jitter:g} x N(0, 1) jitter"] * sampler.num_chains
    info["chains"] = labels
    inv_mass = None
    if sampler.init_mass == "laplace":
        best = min(optima, key=lambda o: o[1])
        inv_mass = laplace_inverse_mass(model, kwargs, best[0])
        info["mass"] = (
            f"warm-up starts from the Laplace covariance at the {best[2]} (Hessian eigenvalues "
            f"floored at {LAPLACE_MIN_EIG:g})"
        )
    t1 = time.perf_counter()
    samples, extra = run_nuts(
        model, kwargs, rng_key=key_run, settings=sampler, init=inits, inverse_mass_matrix=inv_mass
    )
    t2 = time.perf_counter()
    diag = diagnose(
        samples,
        diverging=extra["diverging"],
        num_steps=extra["num_steps"],
        max_tree_depth=sampler.max_tree_depth,
        energy=extra["energy"],
    )
    n_steps = extra["num_steps"].astype(np.int64)
    tree_depth = np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1
    stats_ = {
        "diverging": extra["diverging"].astype(bool),
        "energy": extra["energy"].astype(float),
        "lp": -extra["potential_energy"].astype(float),
        "n_steps": n_steps,
        "tree_depth": tree_depth,
        "reached_max_tree_depth": n_steps >= 2**sampler.max_tree_depth - 1,
        "step_size": extra["step_size"].astype(float),
        "acceptance_rate": extra["accept_prob"].astype(float),
    }
    timings = {"map_seconds": t1 - t0, "nuts_seconds": t2 - t1}
    return samples, diag, stats_, timings, info


def _covariate_mismatch(prior: Prior, curves: Curves, family: str) -> str | None:
    """Say when ``prior`` was built for another level of its family covariate than ``family``'s.

    A prior from ``build_prior(..., covariate=COL, covariate_level=LEVEL)``
    records both in ``meta["covariate"]``; the family's own level is read
    from the data (:func:`hiscale.data.covariates.family_covariate`).
    """
    cov = prior.meta.get("covariate")
    if not cov:
        return None
    try:
        level = repr(family_covariate(curves, cov["column"], [family])[family])
    except ValueError as err:
        level = f"no level ({err})"
    if level == repr(cov["target_level"]):
        return None
    return (
        f"prior {prior.label!r} is the population's prior for {cov['column']}="
        f"{cov['target_level']!r}; family {family!r} has {level}"
    )


def fit(
    curves: Curves | pd.DataFrame | str | Path,
    *,
    family: str | None = None,
    prior: str | Path | Prior = "corpus-v1",
    law: str = "chinchilla",
    seed: int = 0,
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    metric: str = "primary",
    runs_extra: pd.DataFrame | str | Path | None = None,
    retry: bool | None = None,
) -> Fit:
    """Fit one family's runs with NUTS under a (population) prior.

    Parameters
    ----------
    curves : Curves, DataFrame or path
        Curves table (validated if not already a :class:`Curves`).
    family : str, optional
        Family to fit; required when the table holds several.
    prior : "corpus-v1", "flat", path, Prior, or a mapping for ``law="auto"``
        Population prior to borrow from (``"flat"`` = weak defaults only).
        With ``law="auto"``, a mapping ``{"end-of-run": ..., "whole-curve": ...}``
        gives each candidate its own prior (e.g. the population for the
        end-of-run law, ``"flat"`` for the curve law).
    law : str
        Law form (see :data:`hiscale.laws.LAWS`); ``"auto"``: the end-of-run
        or the whole-curve model, chosen by leave-future-out on the family's
        own sizes and recorded in ``provenance["choice"]``
        (:mod:`hiscale.infer.choice`; with ``FitOptions(local_to, local_sd)``
        the end-of-run model is global or local to that target, chosen the
        same way: ``provenance["choice"]["local"]``); or a curve law of
        :data:`hiscale.laws.CURVE_LAWS` (``"h-term"``, ``"momentum"``), which
        needs ``options=FitOptions(rows="all", residual="ar1")`` (or
        ``rows="end"``) and each run's learning-rate schedule.
    seed : int
        Seed of the sampler (same seed -> identical draws).
    options : FitOptions, optional
        Row selection and likelihood (end-of-run rows with tempering by
        default; ``rows="all", residual="ar1"`` for whole curves).
    sampler : SamplerSettings, optional
        NUTS settings (default: :data:`~hiscale.infer.settings.CURVE_SAMPLER`
        for a whole-curve fit, :data:`~hiscale.infer.settings.LOCAL_SAMPLER`
        for a fit local to a target, ``SamplerSettings()`` otherwise).
    metric : str
        Metric selection when ``curves`` is not yet a Curves.
    runs_extra : DataFrame or path, optional
        The corpus's ``runs_extra.csv`` (machine-readable schedules of the
        extra families), for curve laws; other runs' schedules are read from
        their ``schedule``/``run_tokens``/``lr`` columns
        (:func:`hiscale.data.schedule.reconstruct`). A family where any run's
        schedule is unknown is fitted with the end-of-run model instead, and
        the fit says so (``provenance["fallback"]``, a note and a warning).
    retry : bool, optional
        Re-run a flagged fit once with more careful settings
        (:func:`hiscale.infer.settings.retry_sampler`: smaller steps, longer
        warm-up, twice the draws). The second run is the fit; the first run's
        settings and verdict are in ``provenance["retry"]`` and a note, and the
        fit stays flagged when the second run is too. None (default): re-run
        when ``sampler`` is not given (settings the caller chose run as given);
        ``False``: one run. ``law="auto"`` passes it to its inner fits.

    Returns
    -------
    Fit
        The posterior as one DataTree, with diagnostics, settings and notes
        (e.g. a prior that already saw this family, or borrowing across loss
        units) in its provenance.

    Raises
    ------
    CurvesError
        If the table is invalid, ``family`` is not in it, the table holds
        several families and ``family`` is not given, or no rows of the
        family are left after the filters (one line naming the column).
    ValueError
        If the prior or law is unknown, or a curve law is asked with
        ``residual="iid"``.
    RuntimeError
        If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
    """
    require_x64("hiscale.fit")
    options = options or FitOptions()
    c = curves if isinstance(curves, Curves) else load_curves(curves, metric=metric)
    if family is None:
        family = sole_family(c.families, "column 'family'", hint="pick one with family=")
    whole = c
    c = c.family(family)
    if law == "auto":
        from hiscale.infer.choice import choose_and_fit

        if options.rows != "end" or options.residual != "iid" or options.local_learn:
            raise ValueError(
                "law='auto' chooses the rows and the likelihood itself: leave "
                "FitOptions.rows, residual and local_learn at their defaults"
            )
        return choose_and_fit(
            c, partial(fit, retry=retry), family=family, prior=prior,
            seed=seed, options=options, sampler=sampler, runs_extra=runs_extra,
        )  # fmt: skip
    if isinstance(prior, Mapping):
        raise ValueError(f"prior: a prior per candidate needs law='auto', not law={law!r}")
    data_hash = c.data_hash()
    c, law, options, curve_info, fallback = _prepare_curves(c, family, law, options, runs_extra)
    selected = options.select(c, _end_schedules(c, options, runs_extra))
    if len(selected) == 0:
        raise CurvesError(f"column 'tokens': no rows of family {family!r} left after filters")
    if options.curve and selected.frame.groupby("run").size().max() < 2:
        # final-only families: no curve to fit, and the offset/AR(1) split and the
        # schedule terms are left to their priors (a ridge NUTS diverges on)
        c, law, options, curve_info, fallback = _single_row_fallback(c, family, law, options)
        selected = options.select(c, _end_schedules(c, options, runs_extra))
    if retry is None:
        retry = sampler is None  # the caller's own settings run as given
    if sampler is None:
        sampler = default_sampler(options)
    pr = resolve_prior(prior, law=law)
    # the unit matters when borrowing: a population is learned within one unit
    notes = [f"loss unit: {why}" for why in unit_assumptions(c)] if pr.name != "flat" else []
    if fallback is not None:
        notes.append(fallback["reason"])
    if pr.tails is not None:
        notes.append(f"law prior {pr.label!r} with {pr.tails} in its whitened coordinates")
    overlap = prior_overlap(pr, whole, family)
    if overlap is not None:
        # borrowing from a prior that already saw this family counts its data twice
        notes.append(overlap)
        warnings.warn(overlap, PriorWarning, stacklevel=2)
    prior_unit = pr.meta.get("loss_unit")
    if prior_unit and "loss_unit" in c.frame.columns:
        units = set(c.frame["loss_unit"].dropna().astype(str))
        if units and prior_unit not in units:
            notes.append(
                f"prior {pr.name!r} was learned from families in {prior_unit!r}, this family "
                f"is in {sorted(units)}: borrowing across loss units is not calibrated"
            )
    level_note = _covariate_mismatch(pr, c, family)
    if level_note is not None:
        # a prior built for another level of a family covariate borrows from other families
        notes.append(level_note)
        warnings.warn(level_note, PriorWarning, stacklevel=2)
    if options.curve:
        design = make_curve_design(selected.frame, law)
    else:
        design = make_design(selected, **options.design_kwargs())
    if not options.curve and design.n_rows == design.n_runs:
        # one row per run (final-only families): run offsets and checkpoint noise
        # are not separately identified; the run offset carries all the noise.
        pr = pr.with_settings(sigma_obs=SINGLE_ROW_SIGMA_OBS)
    t0 = time.perf_counter()
    samples, diag, stats_, timings, inits = fit_design(
        design, pr, law=law, seed=seed, sampler=sampler
    )
    retried = None
    if retry and diag["flagged"]:
        # one re-run, recorded: the first run's verdict stays in the provenance
        careful = retry_sampler(sampler)
        retried = {
            "rule": RETRY_RULE,
            "first_sampler": sampler.to_dict(),
            "first_diagnostics": {k: v for k, v in diag.items() if k != "worst_site"},
            "first_seconds": time.perf_counter() - t0,
        }
        samples, diag, stats_, timings, inits = fit_design(
            design, pr, law=law, seed=seed, sampler=careful
        )
        sampler = careful
        retried["second_flagged"] = bool(diag["flagged"])
        notes.append(retry_note(retried["first_diagnostics"]["reasons"], diag))
    timings["total_seconds"] = time.perf_counter() - t0
    data = selected.frame.sort_values(["params", "run", "tokens"]).reset_index(drop=True)
    return Fit.from_samples(
        family=family,
        law=get_law(law).name,
        prior=pr,
        samples=samples,
        diagnostics=diag,
        sampler=sampler,
        options=options,
        seed=seed,
        data=data,
        log=selected.log,
        timings=timings,
        provenance={
            "data_hash": data_hash,
            "hiscale_version": __version__,
            "notes": notes,
            "inits": inits,
            **({"fallback": fallback} if fallback is not None else {}),
            **({"retry": retried} if retried is not None else {}),
            "choice": _given_choice(law, options, fallback),
        },
        sample_stats=stats_,
        curve=curve_info,
    )


#: ``provenance["retry"]["rule"]``: when and how a fit is re-run.
RETRY_RULE = (
    "a flagged NUTS run is re-run once with retry_sampler (target acceptance "
    "max(1 - (1 - a) / 2, 0.99), "
    ">= 1000 warm-up steps from the Laplace mass matrix, twice the draws); the second run "
    "is the fit"
)


def retry_note(first_reasons: str, diag: Mapping[str, Any]) -> str:
    """Return the note of a re-run fit: why, and whether the second run passed."""
    second = f"still flagged ({diag['reasons']})" if diag["flagged"] else "not flagged"
    return (
        f"NUTS re-run once with smaller steps and twice the draws: the first run was "
        f"flagged ({first_reasons}); the second run is {second}"
    )


#: ``provenance["choice"]["rule"]`` of a fit whose model the caller gave (not measured).
GIVEN_RULE = "given by the caller (not measured; law='auto' measures it)"


def _given_choice(law: str, options: FitOptions, fallback: dict | None) -> dict[str, Any]:
    """Return the choice record of a fit whose law and rows were given, not measured.

    Every fit records which model produced it (issue: "the choice ... recorded
    in every fit"); ``law="auto"`` replaces this with its measured record
    (:func:`hiscale.infer.choice.choose_and_fit`).
    """
    chosen = "whole-curve" if options.curve else "end-of-run"
    reason = f"law {law!r} on rows={options.rows!r}, residual={options.residual!r}"
    if fallback is not None:
        reason += f" (requested {fallback['requested']['law']!r}: {fallback['reason']})"
    return {"chosen": chosen, "rule": GIVEN_RULE, "reason": reason, "scores": {}, "held": {}}


def _end_of_run_instead(c: Curves, law: str, options: FitOptions, reason: str):
    """Return :func:`_prepare_curves`'s tuple for the end-of-run model, warning ``reason``.

    ``fallback`` records the requested law and options and the reason (the
    fit's ``provenance["fallback"]`` and a note).
    """
    import warnings as _warnings
    from dataclasses import replace

    _warnings.warn(reason, UserWarning, stacklevel=4)
    fallback = {"requested": {"law": law, "options": options.to_dict()}, "reason": reason}
    return c, "chinchilla", replace(options, rows="end", residual="iid"), None, fallback


def _single_row_fallback(c: Curves, family: str, law: str, options: FitOptions):
    """Return the end-of-run model for a whole-curve fit whose runs have one row each.

    The run offset and the AR(1) residual are then separated only by their
    priors, and a curve law's schedule terms are seen at one point per run,
    so the whole-curve model has nothing to fit that the end-of-run model
    does not.
    """
    reason = (
        f"every selected run of {family!r} has one checkpoint: no curve to fit (the run "
        "offset and the AR(1) residual are not identified): fitted with the end-of-run "
        "model (law 'chinchilla', rows='end', residual='iid') instead"
    )
    return _end_of_run_instead(c, get_law(law).name, options, reason)


def _runs_extra_for(c: Curves, runs_extra) -> pd.DataFrame | None:
    """``runs_extra`` (a table or a CSV path) restricted to the runs of ``c``."""
    if runs_extra is not None and not isinstance(runs_extra, pd.DataFrame):
        runs_extra = pd.read_csv(runs_extra)
    if runs_extra is not None and "run" in runs_extra:
        runs_extra = runs_extra[runs_extra["run"].isin(set(c.frame["run"]))]
    return runs_extra


def _end_schedules(c: Curves, options: FitOptions, runs_extra) -> dict | None:
    """``{run: ScheduleInfo}`` for the end-of-run selection, or None when it needs none.

    None for whole-curve fits and with ``end_lr_tolerance=None``; an empty
    dict (every run unknown, which the selection log says) when the table has
    no ``schedule`` column and no ``runs_extra`` is given.
    """
    from hiscale.data.schedule import run_schedules

    if options.curve or options.end_lr_tolerance is None:
        return None
    runs_extra = _runs_extra_for(c, runs_extra)
    if "schedule" not in c.frame.columns and (runs_extra is None or not len(runs_extra)):
        return {}
    return run_schedules(c.frame, runs_extra)


def _prepare_curves(c: Curves, family: str, law: str, options: FitOptions, runs_extra):
    """Schedules for a curve law, or the fallback to the end-of-run model.

    Returns ``(curves, law, options, curve_info, fallback)``: for a curve law
    with every schedule known, ``curves`` carries the covariates of
    :func:`hiscale.data.schedule.reconstruct` (logged as step ``schedule``)
    and ``curve_info`` the schedules (:meth:`Fit.from_samples`); otherwise
    the end-of-run chinchilla model and ``fallback`` saying why.
    """
    from dataclasses import asdict

    from hiscale.data.schedule import DEFAULT_DECAY, reconstruct, run_schedules

    law_obj = get_law(law)
    if law_obj.covariates and not options.curve:
        raise ValueError(
            f"law {law_obj.name!r} describes whole curves under a schedule: use "
            "options=FitOptions(rows='all', residual='ar1')"
        )
    if not options.curve:
        return c, law, options, None, None
    runs_extra = _runs_extra_for(c, runs_extra)
    info = run_schedules(c.frame, runs_extra)
    unknown = [r for r, si in info.items() if not si.known]
    if law_obj.covariates and unknown:
        first = unknown[0]
        reason = (
            f"law {law_obj.name!r} needs each run's learning-rate schedule, unknown for "
            f"{len(unknown)} of {len(info)} runs of {family!r} (first: run {first!r}: "
            f"{'; '.join(info[first].notes)}): fitted with the end-of-run model "
            "(law 'chinchilla', rows='end', residual='iid') instead"
        )
        return _end_of_run_instead(c, law_obj.name, options, reason)
    curve_info = {"ell": 1.0, "decay": DEFAULT_DECAY, "schedules": {}, "schedule_notes": {}}
    if law_obj.covariates:
        rec = reconstruct(c.frame, runs_extra, schedules=info)
        c = c.with_frame(
            rec,
            step="schedule",
            reason="schedule covariates added (lr_mult, s1, s2, anneal): no rows removed",
        )
    for run, si in info.items():
        if si.known:
            curve_info["schedules"][str(run)] = asdict(si.schedule)
        curve_info["schedule_notes"][str(run)] = "; ".join(si.notes)
    return c, law, options, curve_info, None
