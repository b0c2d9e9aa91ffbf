"""The paper's (#models x p) ARE heatmaps per method: :func:`plot_are_heatmap`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hiscale.plots._style import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_are_heatmap"]


def _heatmap_matrices(results: pd.DataFrame, methods, value: str):
    from hiscale.backtesting.runner import summary_table

    table = summary_table(results, value=value)
    if table.empty:
        raise ValueError(f"no successful cells with a {value!r} value to draw")
    have = list(dict.fromkeys(table.columns.get_level_values(0)))
    methods = have if methods is None else list(methods)
    missing = [m for m in methods if m not in have]
    if missing:
        raise ValueError(f"no results for method(s) {missing}; available: {have}")
    ps = sorted({p for m in methods for p in table[m].columns})
    mats = {m: table[m].reindex(columns=ps) for m in methods}
    return mats, list(table.index), ps


def plot_are_heatmap(
    results: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    value: str = "are_pct",
    vmax: float | None = None,
    annotate: bool = True,
) -> Figure:
    """Draw the paper's heatmaps: macro ARE by #models (rows) and token fraction p (columns).

    One panel per method, side by side with one shared colour scale (values
    above ``vmax`` are drawn in the top colour; the printed number is exact).
    Cells are averaged within a family first, then across families
    (:func:`hiscale.backtesting.runner.summary_table`).

    Parameters
    ----------
    results : DataFrame
        Output of :func:`hiscale.backtesting.runner.backtest`.
    methods : sequence of str, optional
        Methods to draw, in order (default: every method in ``results``).
    value : str
        Column to average (default ``"are_pct"``).
    vmax : float, optional
        Top of the colour scale (default: 95th percentile of all cells).
    annotate : bool
        Print the value in each cell.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (one axes per method plus the colour bar).

    Raises
    ------
    ValueError
        If no successful cell has a ``value`` or a requested method has no results.
    """
    mats, rows, ps = _heatmap_matrices(results, methods, value)
    allv = np.concatenate([m.to_numpy(float).ravel() for m in mats.values()])
    allv = allv[np.isfinite(allv)]
    vmax = float(np.percentile(allv, 95)) if vmax is None else float(vmax)
    vmax = max(vmax, 1e-9)
    import matplotlib as mpl

    cmap = mpl.colormaps["magma_r"].with_extremes(bad="#dddddd")
    n = len(mats)
    fig = new_figure(figsize=(1.0 + 0.55 * len(ps) * n + 1.2, 1.4 + 0.42 * len(rows)))
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    im = None
    for ax, (method, mat) in zip(axes, mats.items(), strict=True):
        arr = np.ma.masked_invalid(mat.to_numpy(float))
        im = ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", origin="upper")
        ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps], fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(method, fontsize=10)
        if annotate:
            for i in range(arr.shape[0]):
                for j in range(arr.shape[1]):
                    v = mat.iloc[i, j]
                    if not np.isfinite(v):
                        ax.text(j, i, "–", ha="center", va="center", fontsize=7, color="#777777")
                        continue
                    dark = v > 0.55 * vmax
                    ax.text(
                        j,
                        i,
                        f"{v:.1f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if dark else "black",
                    )
    axes[0].set_ylabel("# model sizes in training data")
    fig.supxlabel("fraction p of the token threshold kept for training", fontsize=10)
    label = "macro ARE (%)" if value == "are_pct" else value
    cbar = fig.colorbar(im, ax=list(axes), extend="max", fraction=0.05, pad=0.02)
    cbar.set_label(label)
    return fig
