r"""Choose between the end-of-run and the whole-curve model by leave-future-out.

A whole-curve law uses every checkpoint, but a curve law that misdescribes
how loss changes along a run can extrapolate to a larger model *worse* than
the end-of-run law (the issue's warning, seen on gpt3 and gemstones). Which
model to trust for a family is therefore measured on the family's own runs,
the way the prediction will be used: extrapolation to a larger size.

**Leave-future-out (LFO).** The largest training size is held out; each
candidate is fitted (same prior, seed and sampler settings) to the smaller
sizes and predicts the last checkpoint of every held run as a new run
(:meth:`~hiscale.infer.result.Fit.new_run_draws`). Scores per candidate:

* ``are_pct``: mean absolute relative error of the new-run median, in %;
* ``log_score``: mean log predictive density of the held losses, with a
  Gaussian fitted to each row's log-loss draws
  (:math:`\log p(y) = \log\mathcal N(\ln y; m, s) - \ln y`);
* the LFO fit's sampler flag. A choice resting on a flagged LFO fit says so
  in its reason (:data:`LFO_FLAGGED`) and record (``inner_flagged``), and a
  backtest cell that used it is flagged.

**Leave one run out (PSIS-LOO).** On the same two fits (the sizes below the
held one), each run's last checkpoint is predicted as a new run by the
posterior *without that run*, approximated by Pareto-smoothed importance
weights ``∝ 1 / p(run's rows | θ)`` (the exact per-run likelihood in the
fit's ``log_likelihood`` group, ArviZ's :func:`arviz.loo`):
``loo_are_pct`` and ``loo_log_score`` as above, and ``loo_bad_k``, the runs
whose Pareto k exceeds 0.7 (the approximation is unreliable for them). The
two candidates use different rows of a run, but the predicted quantity, a
new run's last checkpoint, is the same, so the scores compare.

The candidate with the lower LFO ``are_pct`` is chosen (the ARE is what the
prediction is judged by; a tie keeps the end-of-run model, the established
default) and refitted to every training size. No measurement is possible
with fewer than :data:`MIN_SIZES_LFO` sizes, or when the whole-curve model
does not apply (a run's schedule unknown, one checkpoint per run): the
end-of-run model is then used, and the record says why. The record is
``provenance["choice"]`` of the returned fit, plus a line in its notes.

**A prior per candidate.** A population prior is used by the candidate whose
law it was learned for, and the other candidate gets the weak defaults
(``"flat"``): ``prior="corpus-v1"`` (learned for ``chinchilla``) borrows for the
end-of-run model only. Carrying the end-of-run population over to the curve
law (its extra parameters at their weak defaults) was measured to hurt: with
the size and data terms held near the population, the fitted annealing bonus
of gpt3's whole-curve fit grew past the rest of the loss (README, "bayes-auto
with the end-of-run population"); this split beat the flat choice and the
end-of-run model alone on the quick grid and was level with the flat choice on
the ``sub`` grid (README, "bayes-auto-popend"). ``prior`` may also be a
mapping from candidate name (``"end-of-run"``, ``"whole-curve"``) to a prior,
to choose each explicitly. Each candidate is fitted, in LFO and in the final
fit, with its own; ``provenance["choice"]["priors"]`` names both, and a note
says when a candidate did not get the given prior.

**Global or local end-of-run fit.** With ``FitOptions(local_to=(N, D),
local_sd=SD)`` a second measured step follows when the end-of-run model is
chosen (also when nothing could be measured between the two models, e.g. one
checkpoint per run): :func:`choose_local` holds out the largest size again
and keeps the fit local to the target (:mod:`hiscale.modeling.local`) only if
its log predictive score there is strictly higher than the global fit's. The
whole-curve model has no local form and stays global. The record is
``provenance["choice"]["local"]`` (``local``, ``sd``, ``to``, ``note`` with
both scores, ``inner_flagged``: a choice resting on an unconverged inner fit).

The LOO scores are recorded, not used by the rule: they measure how well a
candidate predicts runs *within* the sizes it was fitted to, while the
prediction asked of it is an extrapolation beyond them, which LFO measures.
When the two measurements disagree the reason says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CANDIDATES",
    "LFO_FLAGGED",
    "LOO_K_MAX",
    "MIN_SIZES_LFO",
    "SIZE_TOL",
    "candidate_prior",
    "candidate_priors",
    "choose_and_fit",
    "choose_local",
    "lfo_scores",
    "log_score",
    "loo_run_scores",
    "size_groups",
]

#: Sizes a family needs for a leave-future-out choice: the largest is held
#: out, and the fits of the rest need at least two sizes to see a size trend.
MIN_SIZES_LFO: int = 3

#: Said in the choice's reason when a leave-future-out fit was flagged; the
#: record's ``inner_flagged`` is then True (the choice rests on that fit).
LFO_FLAGGED = "a leave-future-out fit was flagged"

#: Said in the choice's reason when a leave-future-out fit was re-run after a
#: flagged first run (:func:`hiscale.infer.fit.fit`'s ``retry``).
LFO_RETRIED = "a leave-future-out fit was re-run after a flag"

#: Pareto k above which a run's PSIS-LOO weights are unreliable (Vehtari et al. 2024).
LOO_K_MAX: float = 0.7

#: The candidates: name -> (law, rows, residual).
CANDIDATES: dict[str, tuple[str, str, str]] = {
    "end-of-run": ("chinchilla", "end", "iid"),
    "whole-curve": ("h-term", "all", "ar1"),
}


def log_score(draws: np.ndarray, actual: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean log density of ``actual`` under a log-normal fitted to each column of ``draws``.

    ``weights`` (same shape, columns summing to 1): importance weights of
    the draws; the log-normal's mean and sd are then the weighted ones.
    """
    logd = np.log(draws)
    if weights is None:
        m, s = logd.mean(axis=0), logd.std(axis=0, ddof=1)
    else:
        m = np.sum(weights * logd, axis=0)
        s = np.sqrt(np.sum(weights * (logd - m) ** 2, axis=0))
    s = np.maximum(s, 1e-12)
    z = (np.log(actual) - m) / s
    return float(np.mean(-0.5 * z**2 - np.log(s) - 0.5 * math.log(2 * math.pi) - np.log(actual)))


def _weighted_median(draws: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column: the smallest draw whose cumulative weight reaches one half."""
    order = np.argsort(draws, axis=0)
    d = np.take_along_axis(draws, order, axis=0)
    c = np.cumsum(np.take_along_axis(weights, order, axis=0), axis=0)
    i = np.argmax(c >= 0.5 * c[-1], axis=0)
    return d[i, np.arange(d.shape[1])]


def loo_run_scores(f, *, seed: int, pointwise: bool = False) -> dict[str, Any]:
    """PSIS leave-one-run-out scores of a fit: each run's last checkpoint as a new run.

    Parameters
    ----------
    f : Fit
        A fit with a per-run ``log_likelihood`` group (end-of-run or whole
        curve).
    seed : int
        Seed of the new-run draws (:meth:`~hiscale.infer.result.Fit.new_run_draws`).
    pointwise : bool
        Also return ``loo_median`` and ``pareto_k``: run -> value.

    Returns
    -------
    dict
        ``loo_are_pct`` (mean ARE of the weighted new-run medians, %),
        ``loo_log_score`` (mean log density of the runs' last losses under a
        log-normal with the weighted moments), ``loo_bad_k`` (runs with
        Pareto k > :data:`LOO_K_MAX`), ``loo_runs`` (runs scored) and
        ``loo_pareto_k_max``.
    """
    import arviz as az
    from scipy.special import logsumexp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # high Pareto k: counted in loo_bad_k
        elpd = az.loo(f.to_datatree(), pointwise=True)
    lw = elpd.log_weights.transpose("chain", "draw", "run")
    runs = [str(r) for r in lw["run"].values]
    lw = lw.values.reshape(-1, len(runs))
    w = np.exp(lw - logsumexp(lw, axis=0, keepdims=True))
    data = f.data.assign(run=f.data["run"].astype(str))
    last = data.sort_values("tokens").groupby("run").tail(1).set_index("run").loc[runs]
    last = last.reset_index()
    new = f.new_run_draws(last, seed=seed)
    actual = last["loss"].to_numpy(float)
    med = _weighted_median(new, w)
    k = np.asarray(elpd.pareto_k).reshape(-1)
    extra = (
        {
            "loo_median": dict(zip(runs, med.tolist(), strict=True)),
            "pareto_k": dict(zip(runs, k.tolist(), strict=True)),
        }
        if pointwise
        else {}
    )
    return {
        **extra,
        "loo_are_pct": float(np.mean(np.abs(med - actual) / actual) * 100),
        "loo_log_score": log_score(new, actual, w),
        "loo_bad_k": int(np.sum(k > LOO_K_MAX)),
        "loo_pareto_k_max": float(np.max(k)),
        "loo_runs": len(runs),
    }


#: Relative tolerance under which two sizes count as one in the global/local
#: choice (:func:`choose_local`): the corpus has runs of one model size whose
#: parameter counts differ by a few parameters (chinchilla) or by under 1%
#: (gemstones' width/depth variants).
SIZE_TOL = 0.01


def size_groups(params, tol: float = 0.0) -> np.ndarray:
    """Group sizes that lie within ``tol`` (relative) of their neighbour.

    Sorted distinct sizes are chained: a size joins the previous group when it
    is at most ``1 + tol`` times the previous size. ``tol = 0`` keeps every
    distinct size apart.

    Parameters
    ----------
    params : array
        Parameter counts (repeats allowed).
    tol : float
        Relative tolerance (0.01: sizes within 1% are one size).

    Returns
    -------
    ndarray
        The smallest size of each group, sorted.
    """
    sizes = np.sort(np.unique(np.asarray(params, float)))
    if len(sizes) == 0:
        return sizes
    new = np.concatenate([[True], sizes[1:] > sizes[:-1] * (1.0 + tol)])
    return sizes[new]


def _hold_out_largest(curves, frame: pd.DataFrame, purpose: str, *, tol: float = 0.0):
    """``(held_n, inner, held)``: the largest size of ``frame`` held out of ``curves``.

    ``inner`` is ``curves`` without that size (logged: step ``leave_future_out``,
    "... held out to PURPOSE"), ``held`` the last checkpoint of each of its runs in
    ``frame``. With ``tol > 0`` the largest *group* of sizes (:func:`size_groups`)
    is held out: a size within ``tol`` of the held one is not a smaller size to
    extrapolate from. ``held_n`` is the group's largest size.
    """
    lowest = float(size_groups(frame["params"], tol)[-1])
    held_n = float(np.max(frame["params"]))
    grouped = f" with the sizes within {tol:.0%} of it" if lowest < held_n else ""
    inner = curves.with_frame(
        curves.frame[curves.frame["params"] < lowest],
        step="leave_future_out",
        reason=f"the largest size (N = {held_n:.4g}){grouped} is held out to {purpose}",
    )
    part = frame[frame["params"] >= lowest]
    held = part.sort_values("tokens").groupby("run").tail(1)
    return held_n, inner, held


def _after_token_cut(curves, options) -> pd.DataFrame:
    """Return the family's rows that pass the fit's token cut (``options.min_tokens``)."""
    frame = curves.frame
    return frame[frame["tokens"] > options.min_tokens] if options.min_tokens > 0 else frame


def candidate_prior(prior: Any, name: str) -> Any:
    """Return candidate ``name``'s prior: ``prior[name]`` for a mapping, else ``prior``.

    Raises
    ------
    ValueError
        A mapping without ``name`` or with a key that is not a candidate.
    """
    if not isinstance(prior, Mapping):
        return prior
    unknown = sorted(set(prior) - set(CANDIDATES))
    if unknown:
        raise ValueError(
            f"prior: {unknown[0]!r} is not a candidate of law='auto' (candidates: "
            f"{', '.join(CANDIDATES)})"
        )
    if name not in prior:
        raise ValueError(f"prior: no prior for candidate {name!r} (given: {', '.join(prior)})")
    return prior[name]


def candidate_priors(prior: Any) -> tuple[dict[str, Any], str | None]:
    """Return each candidate's prior for a ``law="auto"`` fit, and a note if one was withheld.

    A mapping is checked (:func:`candidate_prior`) and used as given;
    ``"flat"`` serves both; any other prior (a name, path or
    :class:`~hiscale.priors.prior.Prior`) goes to the candidate whose law it
    was learned for, and the other candidate gets ``"flat"``.

    Returns
    -------
    priors : dict
        Candidate name -> prior argument of :func:`hiscale.infer.fit.fit`.
    note : str or None
        Why a candidate got the weak defaults instead of the given prior.
    """
    from hiscale.laws import get_law
    from hiscale.priors.prior import Prior, load_prior

    if isinstance(prior, Mapping):
        return {name: candidate_prior(prior, name) for name in CANDIDATES}, None
    if isinstance(prior, str) and prior == "flat":
        return dict.fromkeys(CANDIDATES, prior), None
    p = prior if isinstance(prior, Prior) else load_prior(prior)
    if p.name == "flat":
        return dict.fromkeys(CANDIDATES, prior), None
    native = get_law(p.law).name
    out, withheld = {}, []
    for name, (law, _, _) in CANDIDATES.items():
        if get_law(law).name == native:
            out[name] = prior
        else:
            out[name] = "flat"
            withheld.append(name)
    if not withheld:
        return out, None
    note = (
        f"prior {p.label!r} was learned for the {native} law, so only the "
        f"{', '.join(n for n in CANDIDATES if n not in withheld) or 'no'} candidate borrows "
        f"from it; the {', '.join(withheld)} candidate uses the weak defaults ('flat'): a "
        "population carried over to another law form was measured to hurt"
    )
    return out, note


def _prior_label(prior: Any) -> Any:
    """Return a JSON-able name of a prior (or of each candidate's)."""
    if isinstance(prior, Mapping):
        return {k: _prior_label(v) for k, v in prior.items()}
    label = getattr(prior, "label", None)
    return label if label is not None else str(prior)


def lfo_scores(
    curves,
    fit: Callable,
    *,
    family: str,
    prior: Any,
    seed: int,
    options,
    sampler,
    runs_extra=None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Fit each candidate without the largest size; score its new-run prediction there.

    Parameters
    ----------
    curves : Curves
        One family's rows (after the caller's token cut is *not* applied:
        the fits apply ``options``).
    fit : callable
        :func:`hiscale.infer.fit.fit` (passed in: that module calls this one).
    family : str
        The family.
    prior, seed, sampler, runs_extra
        As :func:`hiscale.infer.fit.fit` (``sampler`` None: each
        candidate's default).
    options : FitOptions
        Base options (``min_tokens`` and the other selection fields); each
        candidate sets ``rows`` and ``residual``.

    Returns
    -------
    scores : dict
        Candidate -> ``{"are_pct", "log_score", "flagged", "flag_reasons", "retried",
        "law", "fallback"}`` (``flag_reasons``: why the fit was flagged, "" if it was
        not; ``retried``: why its first NUTS run was flagged and re-run, "" if it
        was not, :attr:`~hiscale.infer.result.Fit.retried`; ``fallback``: the
        reason a candidate's fit used another model, or None) and the PSIS-LOO
        scores of :func:`loo_run_scores` on the same fit.
    held : dict
        ``{"params", "runs", "rows"}``: the held size and how many runs/rows
        were scored.
    """
    frame = _after_token_cut(curves, options)
    held_n, train, held = _hold_out_largest(curves, frame, "choose the model")
    held = held.sort_values(["run"]).reset_index(drop=True)
    actual = held["loss"].to_numpy(float)
    scores: dict[str, dict[str, Any]] = {}
    for name, (law, rows, residual) in CANDIDATES.items():
        opts = replace(options, rows=rows, residual=residual)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a candidate's fallback is recorded below
            f = fit(
                train, family=family, prior=candidate_prior(prior, name), law=law, seed=seed,
                options=opts, sampler=sampler, runs_extra=runs_extra,
            )  # fmt: skip
        new = f.new_run_draws(held, seed=seed)
        med = np.median(new, axis=0)
        fb = f.provenance.get("fallback")
        scores[name] = {
            "are_pct": float(np.mean(np.abs(med - actual) / actual) * 100),
            "log_score": log_score(new, actual),
            "flagged": bool(f.flagged),
            "flag_reasons": str(f.diagnostics.get("reasons", "")) if f.flagged else "",
            "retried": f.retried,
            "law": f.law,
            "fallback": fb.get("reason") if isinstance(fb, dict) else None,
            **loo_run_scores(f, seed=seed),
        }
    return scores, {"params": held_n, "runs": int(held["run"].nunique()), "rows": len(held)}


def lfo_flagged(scores: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a leave-future-out fit of :func:`lfo_scores` was flagged (False if none ran)."""
    return any(bool(s["flagged"]) for s in scores.values())


def choose_and_fit(
    curves,
    fit: Callable,
    *,
    family: str,
    prior: Any,
    seed: int,
    options,
    sampler,
    runs_extra=None,
):
    """Choose the end-of-run or the whole-curve model by LFO, fit it, record the choice.

    See the module docstring for the rule. Called by
    :func:`hiscale.infer.fit.fit` with ``law="auto"``.

    Parameters
    ----------
    curves : Curves
        One family's rows.
    fit : callable
        :func:`hiscale.infer.fit.fit` (passed in: that module calls this one).
    family : str
        The family.
    prior : prior or mapping
        As :func:`hiscale.infer.fit.fit`, or one per candidate
        (:func:`candidate_prior`).
    seed, sampler, runs_extra
        As :func:`hiscale.infer.fit.fit`.
    options : FitOptions
        Base options; ``rows`` and ``residual`` are the choice's.

    Returns
    -------
    Fit
        The chosen model's fit to every row, with ``provenance["choice"]``
        (``chosen``, ``rule``, ``reason``, ``scores``, ``held``, ``inner_flagged``) and a line in
        ``provenance["notes"]``.
    """
    from hiscale.data.schedule import run_schedules

    given = prior
    prior, prior_note = candidate_priors(prior)
    local_to, local_sd = options.local_to, options.local_sd
    options = replace(options, local_to=None, local_sd=0.0)  # the candidates are global
    frame = _after_token_cut(curves, options)
    n_sizes = int(frame["params"].nunique())
    rows_per_run = frame.groupby("run").size()
    extra = runs_extra
    if extra is not None and not isinstance(extra, pd.DataFrame):
        extra = pd.read_csv(extra)
    unknown = [r for r, si in run_schedules(frame, extra).items() if not si.known]
    scores: dict[str, Any] = {}
    held: dict[str, Any] = {}
    if unknown:
        chosen, reason = (
            "end-of-run",
            (
                f"no choice measured: the schedule of {len(unknown)} run(s) is unknown "
                f"(first: {unknown[0]!r}), so the whole-curve model does not apply"
            ),
        )
    elif rows_per_run.max() < 2:
        chosen, reason = (
            "end-of-run",
            ("no choice measured: every run has one checkpoint, so there is no curve to fit"),
        )
    elif n_sizes < MIN_SIZES_LFO:
        chosen, reason = (
            "end-of-run",
            (
                f"no choice measured: {n_sizes} size(s), leave-future-out needs "
                f">= {MIN_SIZES_LFO}; the end-of-run model is the default"
            ),
        )
    else:
        scores, held = lfo_scores(
            curves, fit, family=family, prior=prior, seed=seed, options=options,
            sampler=sampler, runs_extra=runs_extra,
        )  # fmt: skip
        a, b = scores["end-of-run"]["are_pct"], scores["whole-curve"]["are_pct"]
        if scores["whole-curve"]["fallback"]:
            chosen = "end-of-run"
        else:
            chosen = "whole-curve" if b < a else "end-of-run"
        reason = (
            f"leave-future-out on N = {held['params']:.4g} ({held['runs']} run(s)): ARE "
            f"{a:.2f}% end-of-run vs {b:.2f}% whole-curve"
        )
        if scores["whole-curve"]["fallback"]:
            why = scores["whole-curve"]["fallback"]
            reason += f" (but that fit used the end-of-run model: {why})"
        la, lb = scores["end-of-run"]["loo_are_pct"], scores["whole-curve"]["loo_are_pct"]
        reason += f"; leave-one-run-out (PSIS) ARE {la:.2f}% vs {lb:.2f}%"
        if (la < lb) != (a < b) and la != lb and a != b:
            reason += " (the two measurements disagree; the rule follows leave-future-out)"
        if lfo_flagged(scores):
            which = ", ".join(
                f"{name}: {s['flag_reasons'] or 'flagged'}"
                for name, s in scores.items()
                if s["flagged"]
            )
            reason += f"; {LFO_FLAGGED} ({which})"
        again = [f"{name}: {s['retried']}" for name, s in scores.items() if s.get("retried")]
        if again:
            reason += f"; {LFO_RETRIED} (first run {', '.join(again)})"
    law, rows, residual = CANDIDATES[chosen]
    final = replace(options, rows=rows, residual=residual)
    local = None
    if local_sd > 0:
        local = _local_record(
            curves, fit, chosen=chosen, family=family, prior=candidate_prior(prior, chosen),
            seed=seed, options=final, sampler=sampler, sd=local_sd, to=local_to,
            runs_extra=runs_extra,
        )  # fmt: skip
        if local["local"]:
            final = replace(final, local_to=local_to, local_sd=local_sd)
    f = fit(
        curves, family=family, prior=candidate_prior(prior, chosen), law=law, seed=seed,
        options=final, sampler=sampler, runs_extra=runs_extra,
    )  # fmt: skip
    record = {
        "chosen": chosen,
        "rule": "lower leave-future-out ARE (tie: end-of-run); PSIS-LOO recorded",
        "reason": reason,
        "scores": scores,
        "held": held,
        "priors": _prior_label(prior),
        "prior_given": _prior_label(given),
        "prior_note": prior_note,
        # the choice rests on the leave-future-out fits: an unconverged one is reported
        "inner_flagged": lfo_flagged(scores),
        **({"local": local} if local is not None else {}),
    }
    if prior_note is not None:
        f._record("notes", [*f.provenance.get("notes", []), prior_note])
    f._record("choice", record, note=f"model chosen: {chosen} ({reason})")
    if local is not None:
        f._record("notes", [*f.provenance["notes"], local["note"]])
    return f


def _local_record(
    curves, fit: Callable, *, chosen, family, prior, seed, options, sampler, sd, to,
    runs_extra=None,
) -> dict[str, Any]:  # fmt: skip
    """Run the global/local step of ``law="auto"`` with ``FitOptions(local_to, local_sd)``.

    The end-of-run model is global or local to ``to`` by :func:`choose_local`;
    the whole-curve model has no local form, so it stays global and the
    record says so. Returns ``{"local", "sd", "to", "note", "inner_flagged"}``.
    """
    base = {"sd": float(sd), "to": [float(v) for v in to]}
    if chosen != "end-of-run":
        note = (
            f"global fit: the {chosen} model was chosen and has no local form "
            f"(local_sd {sd:g} applies to the end-of-run model)"
        )
        return {**base, "local": False, "note": note, "inner_flagged": False}
    law = CANDIDATES["end-of-run"][0]
    is_local, note, flagged = choose_local(
        curves, fit, family=family, prior=prior, law=law, seed=seed, options=options,
        sampler=sampler, sd=sd, runs_extra=runs_extra,
    )  # fmt: skip
    return {**base, "local": bool(is_local), "note": note, "inner_flagged": bool(flagged)}


def choose_local(
    curves,
    fit: Callable,
    *,
    family: str,
    prior: Any,
    law: str,
    seed: int,
    options,
    sampler,
    sd: float,
    runs_extra=None,
) -> tuple[bool, str, bool]:
    """Global or local end-of-run fit, by leave-future-out on the family's own runs.

    The largest size (after ``options``' row selection) is held out; the
    global fit and the fit local to the held size (at its runs' largest
    tokens, scale ``sd``: :mod:`hiscale.modeling.local`) are fitted to the
    other sizes with the same prior, law, seed and sampler, and each predicts
    the held runs' last checkpoints as new runs. Score: mean log predictive
    density (:func:`log_score`), so a fit whose intervals are too narrow for
    its extrapolation error loses. The local fit is chosen only with a
    strictly higher score. Sizes within :data:`SIZE_TOL` (1%) of each other
    count as one size (chinchilla's 73,824,672 and 73,824,689 are one model
    size, not an extrapolation from one to the other) and are held out
    together. With fewer than 3 sizes so counted nothing is measured and the
    global fit is kept.

    Parameters
    ----------
    curves : Curves
        The family's rows.
    fit : callable
        :func:`hiscale.infer.fit.fit` (passed in: that module imports this one).
    family, prior, law, seed, sampler
        As :func:`hiscale.infer.fit.fit` (``sampler`` None: each candidate's
        default, :data:`~hiscale.infer.settings.LOCAL_SAMPLER` for the local
        one).
    options : FitOptions
        Row selection of both candidates (its local fields unset).
    sd : float
        Scale of the local candidate (``FitOptions.local_sd``).
    runs_extra : DataFrame, optional
        Schedules of the runs (the inner fits' end-of-run selection uses them).

    Returns
    -------
    (local, note, inner_flagged)
        Whether the local fit won, a one-line note with both scores and
        whether either inner fit was flagged (the choice rests on them).
    """
    sel = options.select(curves).frame
    n_sizes = len(size_groups(sel["params"], SIZE_TOL))
    if n_sizes < MIN_SIZES_LFO:
        return (
            False,
            f"global fit: {n_sizes} size(s) (sizes within {SIZE_TOL:.0%} as one), "
            "no leave-future-out choice",
            False,
        )
    held_n, inner, held = _hold_out_largest(curves, sel, "choose global or local", tol=SIZE_TOL)
    actual = held["loss"].to_numpy(float)
    at = (held_n, float(held["tokens"].max()))
    scores, flagged, again = {}, False, []
    for name, opts in (
        ("global", options),
        ("local", replace(options, local_to=at, local_sd=sd)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flags are recorded below
            g = fit(
                inner, family=family, prior=prior, law=law, seed=seed, options=opts,
                sampler=sampler, runs_extra=runs_extra,
            )  # fmt: skip
        _, new = g.draws(held["params"].to_numpy(), held["tokens"].to_numpy(), seed=seed)
        scores[name] = log_score(new, actual)
        flagged = flagged or bool(g.flagged)
        if g.retried:
            again.append(f"{name}: {g.retried}")
    local = scores["local"] > scores["global"]
    note = (
        f"{'local' if local else 'global'} fit chosen by leave-future-out on N = "
        f"{held_n:.4g} ({len(held)} run(s)): log score global {scores['global']:.3f}, "
        f"local (sd {sd:g}) {scores['local']:.3f}"
        + ("; an inner fit was flagged" if flagged else "")
        + (f"; an inner fit was re-run after a flag ({', '.join(again)})" if again else "")
    )
    return local, note, flagged
