"""Row filters a fit needs, each recorded in the :class:`~hiscale.data.curves.Curves` log.

* :func:`filter_min_tokens`: the token cut ``tokens > min_tokens`` (the
  paper's 10B cut on training rows);
* :func:`end_of_run`: per run, the rows near its last checkpoint (the
  separable law does not describe mid-schedule checkpoints);
* :func:`thin_rows`: at most a fixed number of rows per run;
* :func:`select_rows`: the three in the order a fit applies them.

The backtest protocol (:mod:`hiscale.backtesting.protocol`) builds its cells
from these filters too; this module does not depend on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hiscale.data.curves import Curves

__all__ = ["end_of_run", "filter_min_tokens", "select_rows", "thin_rows"]


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


def end_of_run(curves: Curves, fraction: float = 0.8) -> Curves:
    """Keep each run's rows with ``tokens >= fraction x`` that run's largest count.

    Used by the Bayesian methods, because the separable law does not describe
    mid-schedule checkpoints (their misfit drove a bad mode). Applied after the
    cell's truncation, so training data still obey the paper's ``p`` cut.
    ``fraction = 0`` keeps everything.

    Parameters
    ----------
    curves : Curves
        Validated table.
    fraction : float, default 0.8
        Share of each run's largest token count a row must reach.

    Returns
    -------
    Curves
        The end-of-run rows, the others logged under ``"end_of_run"``.
    """
    if fraction <= 0:
        return curves.with_frame(curves.frame, step="end_of_run", reason="disabled")
    f = curves.frame
    run_max = f.groupby("run")["tokens"].transform("max").to_numpy()
    keep = f["tokens"].to_numpy() >= fraction * run_max
    return curves.with_frame(
        f[keep], step="end_of_run", reason=f"tokens < {fraction:g} x the run's last token count"
    )


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
    curves: Curves, *, min_tokens: float, end_fraction: float, max_rows_per_run: int
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

    Returns
    -------
    Curves
        The selected rows with one log record per step.
    """
    c = filter_min_tokens(curves, min_tokens) if min_tokens > 0 else curves
    c = end_of_run(c, end_fraction)
    thinned = thin_rows(c.frame, max_rows_per_run)
    return c.with_frame(thinned, step="thin", reason=f"more than {max_rows_per_run} rows in a run")
