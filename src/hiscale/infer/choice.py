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
* the LFO fit's sampler flag.

The candidate with the lower ``are_pct`` is chosen (the ARE is what the
prediction is judged by; a tie keeps the end-of-run model, the established
default) and refitted to every training size. No measurement is possible
with fewer than :data:`MIN_SIZES_LFO` sizes, or when the whole-curve model
does not apply (a run's schedule unknown, one checkpoint per run): the
end-of-run model is then used, and the record says why. The record is
``provenance["choice"]`` of the returned fit, plus a line in its notes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CANDIDATES", "MIN_SIZES_LFO", "choose_and_fit", "lfo_scores"]

#: Sizes a family needs for a leave-future-out choice: the largest is held
#: out, and the fits of the rest need at least two sizes to see a size trend.
MIN_SIZES_LFO: int = 3

#: The candidates: name -> (law, rows, residual).
CANDIDATES: dict[str, tuple[str, str, str]] = {
    "end-of-run": ("chinchilla", "end", "iid"),
    "whole-curve": ("h-term", "all", "ar1"),
}


def _log_score(draws: np.ndarray, actual: np.ndarray) -> float:
    """Mean log density of ``actual`` under a log-normal fitted to each column of ``draws``."""
    logd = np.log(draws)
    m, s = logd.mean(axis=0), np.maximum(logd.std(axis=0, ddof=1), 1e-12)
    z = (np.log(actual) - m) / s
    return float(np.mean(-0.5 * z**2 - np.log(s) - 0.5 * math.log(2 * math.pi) - np.log(actual)))


def _after_token_cut(curves, options) -> pd.DataFrame:
    """Return the family's rows that pass the fit's token cut (``options.min_tokens``)."""
    frame = curves.frame
    return frame[frame["tokens"] > options.min_tokens] if options.min_tokens > 0 else frame


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
        Candidate -> ``{"are_pct", "log_score", "flagged", "law", "fallback"}``
        (``fallback``: the reason a candidate's fit used another model, or
        None).
    held : dict
        ``{"params", "runs", "rows"}``: the held size and how many runs/rows
        were scored.
    """
    frame = _after_token_cut(curves, options)
    sizes = np.sort(frame["params"].unique())
    held_n = float(sizes[-1])
    train = curves.with_frame(
        curves.frame[curves.frame["params"] < held_n],
        step="leave_future_out",
        reason=f"the largest size (N = {held_n:.4g}) is held out to choose the model",
    )
    held = frame[frame["params"] == held_n].sort_values("tokens").groupby("run").tail(1)
    held = held.sort_values(["run"]).reset_index(drop=True)
    actual = held["loss"].to_numpy(float)
    scores: dict[str, dict[str, Any]] = {}
    for name, (law, rows, residual) in CANDIDATES.items():
        opts = replace(options, rows=rows, residual=residual)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a candidate's fallback is recorded below
            f = fit(
                train, family=family, prior=prior, law=law, seed=seed, options=opts,
                sampler=sampler, runs_extra=runs_extra,
            )  # fmt: skip
        new = f.new_run_draws(held, seed=seed)
        med = np.median(new, axis=0)
        fb = f.provenance.get("fallback")
        scores[name] = {
            "are_pct": float(np.mean(np.abs(med - actual) / actual) * 100),
            "log_score": _log_score(new, actual),
            "flagged": bool(f.flagged),
            "law": f.law,
            "fallback": fb.get("reason") if isinstance(fb, dict) else None,
        }
    return scores, {"params": held_n, "runs": int(held["run"].nunique()), "rows": len(held)}


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
    prior, seed, sampler, runs_extra
        As :func:`hiscale.infer.fit.fit`.
    options : FitOptions
        Base options; ``rows`` and ``residual`` are the choice's.

    Returns
    -------
    Fit
        The chosen model's fit to every row, with ``provenance["choice"]``
        (``chosen``, ``rule``, ``reason``, ``scores``, ``held``) and a line in
        ``provenance["notes"]``.
    """
    from hiscale.data.schedule import run_schedules

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
    law, rows, residual = CANDIDATES[chosen]
    f = fit(
        curves, family=family, prior=prior, law=law, seed=seed,
        options=replace(options, rows=rows, residual=residual), sampler=sampler,
        runs_extra=runs_extra,
    )  # fmt: skip
    record = {
        "chosen": chosen,
        "rule": "lower leave-future-out ARE (tie: end-of-run)",
        "reason": reason,
        "scores": scores,
        "held": held,
    }
    f._record("choice", record, note=f"model chosen: {chosen} ({reason})")
    return f
