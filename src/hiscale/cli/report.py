"""What the commands print: progress and warnings (stderr), text reports and JSON.

Results go to stdout (``--json`` for machines), progress and warnings to stderr
(``--quiet`` silences progress).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hiscale._util import json_default
from hiscale.plots import fmt_count

__all__ = [
    "data_line",
    "data_summary",
    "json_default",
    "prediction_dict",
    "prediction_table",
    "prior_line",
    "progress",
    "save_curves_plot",
    "short_path",
    "verdict_line",
    "warn",
]


def progress(args: argparse.Namespace, msg: str) -> None:
    """Print a progress line to stderr unless ``--quiet``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (``quiet`` read if present).
    msg : str
        The line.
    """
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """Print a warning to stderr.

    Parameters
    ----------
    msg : str
        The warning, printed after ``hiscale: warning:``.
    """
    print(f"hiscale: warning: {msg}", file=sys.stderr, flush=True)


def short_path(source: object) -> str:
    """Shorten a file path to one relative to the working directory when it lies below it.

    Parameters
    ----------
    source : object
        A path (or any label, returned as text).

    Returns
    -------
    str
    """
    try:
        return str(Path(str(source)).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(source)


def data_summary(fit) -> dict[str, Any]:
    """Summarise the data a fit used: runs, sizes, rows used and rows removed per filter.

    Parameters
    ----------
    fit : Fit
        The fit (its ``log`` and ``data``).

    Returns
    -------
    dict
        ``runs``, ``sizes``, ``smallest_params``, ``largest_params``,
        ``rows_in_family`` (before the filters, ``None`` if not logged),
        ``rows_used`` and ``removed`` (one ``{step, removed, reason}`` per
        filter that removed rows).
    """
    log = list(fit.log)
    start = 0
    family_rows = None
    for i, rec in enumerate(log):
        if rec.step in ("family", "families"):
            start, family_rows = i + 1, rec.kept
    removed = [
        {"step": r.step, "removed": int(r.removed), "reason": r.reason}
        for r in log[start:]
        if r.removed > 0
    ]
    d = fit.data
    sizes = np.sort(d["params"].unique())
    return {
        "runs": int(d["run"].nunique()),
        "sizes": len(sizes),
        "smallest_params": float(sizes[0]),
        "largest_params": float(sizes[-1]),
        "rows_in_family": int(family_rows) if family_rows is not None else None,
        "rows_used": len(d),
        "removed": removed,
    }


def data_line(summary: dict[str, Any]) -> str:
    """Format :func:`data_summary` as one line: runs, sizes, rows used, rows removed and why.

    Parameters
    ----------
    summary : dict
        Output of :func:`data_summary`.

    Returns
    -------
    str
    """
    s = summary
    span = (
        f"{fmt_count(s['smallest_params'])}"
        if s["sizes"] == 1
        else f"{fmt_count(s['smallest_params'])}-{fmt_count(s['largest_params'])}"
    )
    of = f" of {s['rows_in_family']}" if s["rows_in_family"] is not None else ""
    removed = (
        "; removed: "
        + ", ".join(f"{r['removed']} by {r['step']} ({r['reason']})" for r in s["removed"])
        if s["removed"]
        else "; no rows removed"
    )
    return (
        f"data: {s['runs']} runs, {s['sizes']} sizes ({span} params), "
        f"{s['rows_used']}{of} rows used{removed}"
    )


def prediction_dict(frame: pd.DataFrame, levels: Sequence[float]) -> dict[str, Any]:
    """Convert the first point of a tidy ``Fit.predict`` frame to nested dicts.

    Parameters
    ----------
    frame : DataFrame
        Output of :meth:`hiscale.Fit.predict`.
    levels : sequence of float
        Interval probabilities to report (each must be a ``ci_prob`` of
        ``frame``).

    Returns
    -------
    dict
        ``{kind: {"median", "mean", "intervals": {"P": [lower, upper]}}}``
        for ``kind`` in ``expected``, ``new_run`` and ``P`` in ``levels``.
    """
    first = frame[frame["point"] == frame["point"].iloc[0]]
    out = {}
    for kind in ("expected", "new_run"):
        rows = first[first["kind"] == kind]
        by_prob = {float(r["ci_prob"]): r for _, r in rows.iterrows()}
        out[kind] = {
            "median": float(rows["median"].iloc[0]),
            "mean": float(rows["mean"].iloc[0]),
            "intervals": {
                f"{lv:g}": [float(by_prob[float(lv)]["lower"]), float(by_prob[float(lv)]["upper"])]
                for lv in levels
            },
        }
    return out


def prediction_table(pred: dict[str, Any], levels: Sequence[float]) -> str:
    """Format :func:`prediction_dict` as a text table: expected loss and new run.

    Parameters
    ----------
    pred : dict
        Output of :func:`prediction_dict`.
    levels : sequence of float
        Interval probabilities, one column each.

    Returns
    -------
    str
    """
    head = f"{'':<15}{'median':>9}" + "".join(
        f"{f'{round(100 * lv)}% interval':>20}" for lv in levels
    )
    lines = [head]
    for kind, label in (("expected", "expected loss"), ("new_run", "new run")):
        p = pred[kind]
        cells = "".join(
            f"{f'[{lo:.4f}, {hi:.4f}]':>20}"
            for lo, hi in (p["intervals"][f"{lv:g}"] for lv in levels)
        )
        lines.append(f"{label:<15}{p['median']:>9.4f}{cells}")
    return "\n".join(lines)


def verdict_line(fit) -> str:
    """Return the sampler verdict, or a WARNING when the fit did not converge.

    Parameters
    ----------
    fit : Fit
        The fit.

    Returns
    -------
    str
        :meth:`hiscale.Fit.verdict`, or a warning that the intervals may be
        wrong with what to try instead.
    """
    if fit.flagged:
        return (
            "WARNING: the sampler did not converge ("
            + fit.diagnostics.get("reasons", "")
            + "); the intervals may be wrong. Rerun with more --num-warmup/--num-samples "
            "or another --seed, or check the data."
        )
    return fit.verdict()


def prior_line(fit) -> str:
    """Say which prior the fit borrowed from (or that it did not).

    Parameters
    ----------
    fit : Fit
        The fit.

    Returns
    -------
    str
    """
    p = fit.prior
    if p.name == "flat":
        if p.label != "flat":
            return f"prior: {p.label}, weak defaults, no borrowing, {fit.law} law"
        return f"prior: flat (weak defaults, no borrowing), {fit.law} law"
    n = len(p.meta.get("families_used", {}))
    extra = f" from {n} families" if n else ""
    return f"prior: {p.name!r} (population prior{extra}), {fit.law} law"


def save_curves_plot(curves, fit, at, path: str | Path, **kwargs: Any) -> None:
    """Write :func:`hiscale.plots.plot_curves` of the fit's family at target point ``at``.

    Parameters
    ----------
    curves : Curves or None
        The table (the fit's family is drawn from it); ``None`` draws the
        fit's own rows.
    fit : Fit
        The fit.
    at : tuple of float
        Target point ``(N, D)``.
    path : str or Path
        Image file to write.
    **kwargs
        Passed to :func:`hiscale.plots.plot_curves`.
    """
    import matplotlib.pyplot as plt

    from hiscale.plots import plot_curves

    c = curves.family(fit.family) if curves is not None else None
    fig = plot_curves(c, fit, at=at, **kwargs)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
