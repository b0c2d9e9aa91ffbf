"""Expected interval width at the target vs FLOPs spent: :func:`plot_plan`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hiscale.plots._style import TARGET_COLOR, fmt_count, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from hiscale.planning import Plan

__all__ = ["plot_plan"]

_RULE_STYLE = {
    "hitchhiker": ("#2471a3", "s", "Hitchhiker rule (~5 sizes, ~30% of target tokens)"),
    "cheapest-first": ("#7f8c8d", "^", "cheapest first"),
}


def plot_plan(plan: Plan, *, rules: Sequence[str] = ("hitchhiker", "cheapest-first")) -> Figure:
    """Plot the expected relative width of the target's new-run interval vs FLOPs spent.

    Draws the planner's greedy sequence and the sequences of the rules of
    thumb, all scored on the plan's own hypothetical outcomes (so on equal
    terms), with vertical lines at 1% of the target's compute (``6 N D``,
    the ladder rule of thumb) and at the budget. Points whose median
    importance-sampling ESS is below the plan's threshold are drawn hollow.

    Parameters
    ----------
    plan : Plan
        A result of :func:`hiscale.planning.plan` (kept in memory: it needs the
        plan's preposterior).
    rules : sequence of str
        Rules of thumb to draw (see :func:`hiscale.planning.candidates.rule_of_thumb`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = new_figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ess_min = float(plan.settings.get("ess_min", 0.0))
    labels = [r["label"] for r in plan.runs]
    series = [("planner", TARGET_COLOR, "o", "hiscale plan (greedy)", labels)]
    for rule in rules:
        color, marker, text = _RULE_STYLE.get(rule, ("#555555", "x", rule))
        series.append((rule, color, marker, text, plan.rule_sequence(rule)))
    first_spend = min(
        (float(plan.table.set_index("label")["flops"][s[4][0]]) for s in series if s[4]),
        default=1.0,
    )
    for _, color, marker, text, seq in series:
        seqw = plan.sequence_widths(seq)
        x = np.asarray(seqw["flops"], float)
        x[0] = first_spend / 3  # "nothing spent yet", drawn left of the first run on a log axis
        y = np.asarray(seqw["widths"], float)
        ok = np.asarray(seqw["ess"], float) >= ess_min
        ok[0] = True
        ax.plot(x, y, color=color, lw=1.5, label=f"{text} ({len(seq)} runs)")
        ax.scatter(x[ok], y[ok], color=color, marker=marker, zorder=3)
        ax.scatter(x[~ok], y[~ok], facecolor="white", edgecolor=color, marker=marker, zorder=3)
    target_flops = 6.0 * plan.target[0] * plan.target[1]
    ax.axvline(0.01 * target_flops, color="black", ls=":", lw=1)
    ax.text(
        0.01 * target_flops,
        0.98,
        " 1% of target compute",
        transform=ax.get_xaxis_transform(),
        va="top",
        fontsize=8,
    )
    ax.axvline(plan.budget, color="black", ls="--", lw=1)
    ax.text(plan.budget, 0.9, " budget", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs spent on new runs (leftmost point: none)")
    ax.set_ylabel(f"expected {round(100 * plan.level)}% new-run width / median")
    ax.set_title(
        f"target N={fmt_count(plan.target[0])}, D={fmt_count(plan.target[1])} "
        f"({plan.source}; hollow: ESS < {ess_min:g})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower left")
    return fig
