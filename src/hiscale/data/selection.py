"""Row filters a fit needs, each recorded in the :class:`~hiscale.data.curves.Curves` log.

* :func:`filter_min_tokens`: the token cut ``tokens > min_tokens`` (the
  paper's 10B cut on training rows);
* :func:`end_of_run`: per run, the rows near its last checkpoint (the
  separable law does not describe mid-schedule checkpoints), and where the
  run's learning-rate schedule is known only those whose learning rate is
  close to the last checkpoint's (not the inside of a cooldown);
* :func:`thin_rows`: at most a fixed number of rows per run;
* :func:`select_rows`: the three in the order a fit applies them.

The backtest protocol (:mod:`hiscale.backtesting.protocol`) builds its cells
from these filters too; this module does not depend on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hiscale.data.curves import Curves

__all__ = [
    "END_LR_TOLERANCE",
    "END_OF_SCHEDULE",
    "end_of_run",
    "filter_min_tokens",
    "select_rows",
    "thin_rows",
]

#: How far (in units of the peak learning rate) a row's LR multiplier may lie
#: above that of its run's last checkpoint for the row to count as "end of
#: run" (:func:`end_of_run` with schedules). 0.1 keeps the last ~21% of a
#: cosine run (h - h_end = 0.086 at 80% of a cosine to 0.1 x peak, so the
#: token window decides there) and the last 2% of a run with a linear
#: cooldown to 0 over its last 20% (a WSD run), whose earlier cooldown rows
#: lie far above the law: the loss falls there because the learning rate
#: does, and read as end-of-run points they make the fitted data exponent
#: far too steep (lrsched-sp-wsd: targets missed by 20-26% with every
#: strategy of the planner campaign, by -3 ... +1% with last checkpoints
#: only; ``benchmarks/results/end_window_wsd.json``).
END_LR_TOLERANCE: float = 0.1

#: A run counts as having reached the end of its schedule when its last
#: checkpoint plus its usual checkpoint spacing (the median distance between
#: its checkpoints: evaluations every 200 steps of a 3,000-step run end at
#: 93%) is at least ``(1 - END_OF_SCHEDULE) x`` the schedule's horizon.
#: Runs stopped earlier (a backtest cell's ``p`` cut) keep the token window
#: alone: all their rows are mid-schedule, and applying the rule there too
#: (rows within 0.1 x peak of the cut's learning rate; commit a5b38e6)
#: changed 87 of the 580 cells of the corpus ``sub`` grid (truncated cosine
#: runs of gpt3, pythia and misfitting) with no measured gain: gpt3's five
#: changed quick-grid cells gave macro ARE 6.87% with it, 6.74% without
#: (``benchmarks/end_lr_rows.py`` counts the cells a rule changes).
END_OF_SCHEDULE: float = 0.01


def filter_min_tokens(curves: Curves, min_tokens: float = 1e10) -> Curves:
    """Keep rows with ``tokens > min_tokens`` (the paper's 10B cut).

    Parameters
    ----------
    curves : Curves
        Validated table.
    min_tokens : float, default 1e10
        The cut; 0 or less disables it (logged as ``"disabled"``).

    Returns
    -------
    Curves
        The rows above the cut, the others logged under ``"min_tokens"``.
    """
    if min_tokens <= 0:
        return curves.with_frame(curves.frame, step="min_tokens", reason="disabled")
    keep = curves.frame["tokens"].to_numpy() > min_tokens
    return curves.with_frame(
        curves.frame[keep], step="min_tokens", reason=f"tokens <= {min_tokens:g}"
    )


def end_of_run(
    curves: Curves,
    fraction: float = 0.8,
    *,
    schedules: dict | None = None,
    lr_tolerance: float | None = END_LR_TOLERANCE,
) -> Curves:
    """Keep each run's rows near its end: late in tokens and, where known, in learning rate.

    Used by the Bayesian methods, because the separable law does not describe
    mid-schedule checkpoints (their misfit drove a bad mode). Applied after the
    cell's truncation, so training data still obey the paper's ``p`` cut.

    Two steps, each logged:

    1. ``"end_of_run"``: rows with ``tokens >= fraction x`` the run's largest
       count (``fraction = 0`` keeps everything);
    2. ``"end_of_run_lr"`` (only with ``schedules``): of those, in runs whose
       schedule is known and that reached its end (:data:`END_OF_SCHEDULE`:
       no further checkpoint at the run's spacing before the horizon),
       the rows whose learning-rate multiplier ``h`` is at most
       ``lr_tolerance`` above ``h`` at the run's last row. Inside a final
       cooldown the loss falls because the learning rate does, which the
       separable law reads as a steep data exponent. The reason names how
       many runs had no known schedule or stopped before its end (kept by
       tokens alone).

    Parameters
    ----------
    curves : Curves
        Validated table.
    fraction : float, default 0.8
        Share of each run's largest token count a row must reach.
    schedules : dict, optional
        ``{run: ScheduleInfo}`` (:func:`hiscale.data.schedule.run_schedules`)
        for the runs of ``curves``; None skips step 2.
    lr_tolerance : float or None, default :data:`END_LR_TOLERANCE`
        Step 2's tolerance in units of the peak learning rate; None skips it
        (logged as ``"disabled"``).

    Returns
    -------
    Curves
        The end-of-run rows, the others logged.
    """
    if fraction <= 0:
        c = curves.with_frame(curves.frame, step="end_of_run", reason="disabled")
    else:
        f = curves.frame
        run_max = f.groupby("run")["tokens"].transform("max").to_numpy()
        keep = f["tokens"].to_numpy() >= fraction * run_max
        c = curves.with_frame(
            f[keep], step="end_of_run", reason=f"tokens < {fraction:g} x the run's last token count"
        )
    if schedules is None:
        return c
    if lr_tolerance is None:
        return c.with_frame(c.frame, step="end_of_run_lr", reason="disabled")
    if not (lr_tolerance >= 0 and np.isfinite(lr_tolerance)):
        raise ValueError(f"lr_tolerance must be >= 0 and finite, got {lr_tolerance}")
    from hiscale.data.schedule import lr_multiplier

    f = c.frame
    tokens = f["tokens"].to_numpy(float)
    gaps = _checkpoint_gaps(curves.frame)
    keep = np.ones(len(f), bool)
    unknown = cut = 0
    runs = pd.unique(f["run"])
    for run, idx in f.groupby("run", sort=False).indices.items():
        info = schedules.get(run)
        if info is None or info.schedule is None:
            unknown += 1
            continue
        last = tokens[idx].max()
        if last + gaps.get(run, 0.0) < (1.0 - END_OF_SCHEDULE) * info.schedule.horizon:
            cut += 1  # truncated (a backtest cell's p cut): its window stays as it was
            continue
        h = lr_multiplier(info.schedule, tokens[idx])
        keep[idx] = h - lr_multiplier(info.schedule, np.asarray([last]))[0] <= lr_tolerance
    reason = (
        f"learning rate more than {lr_tolerance:g} x peak above the run's last "
        "checkpoint's, in runs that reached the end of their schedule (inside the final "
        "decay, e.g. a WSD cooldown)"
    )
    if unknown:
        reason += f"; {unknown} of {len(runs)} runs without a known schedule kept by tokens alone"
    if cut:
        reason += (
            f"; {cut} of {len(runs)} runs stopped before the end of their schedule kept by "
            "tokens alone"
        )
    return c.with_frame(f[keep], step="end_of_run_lr", reason=reason)


def _checkpoint_gaps(frame: pd.DataFrame) -> dict:
    """``{run: median distance in tokens between its consecutive checkpoints}`` (0 for one)."""
    out = {}
    for run, t in frame.groupby("run", sort=False)["tokens"]:
        d = np.diff(np.unique(t.to_numpy(float)))
        out[run] = float(np.median(d)) if len(d) else 0.0
    return out


def thin_rows(frame: pd.DataFrame, max_rows_per_run: int) -> pd.DataFrame:
    """Keep at most ``max_rows_per_run`` rows per run, evenly spaced by row, last row kept.

    Parameters
    ----------
    frame : pandas.DataFrame
        Curves rows.
    max_rows_per_run : int
        Rows to keep per run (positions ``round(linspace(0, n - 1, max))`` of
        the run's rows sorted by tokens); 0 or less keeps everything.

    Returns
    -------
    pandas.DataFrame
        The kept rows, sorted by run and tokens (``frame`` itself when
        thinning is off).
    """
    if max_rows_per_run <= 0:
        return frame
    parts = []
    for _, g in frame.sort_values(["run", "tokens"]).groupby("run", sort=False):
        if len(g) <= max_rows_per_run:
            parts.append(g)
            continue
        idx = np.unique(np.round(np.linspace(0, len(g) - 1, max_rows_per_run)).astype(int))
        parts.append(g.iloc[idx])
    return pd.concat(parts) if parts else frame.iloc[:0]


def select_rows(
    curves: Curves,
    *,
    min_tokens: float,
    end_fraction: float,
    max_rows_per_run: int,
    schedules: dict | None = None,
    lr_tolerance: float | None = END_LR_TOLERANCE,
) -> Curves:
    """Apply the fit's row selection: token cut, end-of-run, thinning, each logged.

    Parameters
    ----------
    curves : Curves
        Validated table.
    min_tokens : float
        Token cut (:func:`filter_min_tokens`); 0 or less skips it.
    end_fraction : float
        End-of-run share (:func:`end_of_run`).
    max_rows_per_run : int
        Thinning (:func:`thin_rows`).
    schedules : dict, optional
        ``{run: ScheduleInfo}``: the end-of-run rows of runs with a known
        schedule also keep only rows near the last checkpoint's learning rate
        (:func:`end_of_run`).
    lr_tolerance : float or None, default :data:`END_LR_TOLERANCE`
        That step's tolerance (None disables it).

    Returns
    -------
    Curves
        The selected rows with one log record per step.
    """
    c = filter_min_tokens(curves, min_tokens) if min_tokens > 0 else curves
    c = end_of_run(c, end_fraction, schedules=schedules, lr_tolerance=lr_tolerance)
    thinned = thin_rows(c.frame, max_rows_per_run)
    return c.with_frame(thinned, step="thin", reason=f"more than {max_rows_per_run} rows in a run")
