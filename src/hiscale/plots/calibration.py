"""Interval coverage against nominal level, and the PIT histogram: :func:`plot_calibration`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hiscale.plots._style import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["coverage_curve", "plot_calibration"]


def _weights(frame: pd.DataFrame) -> np.ndarray:
    """Equal weight per family (cells of a family share it)."""
    counts = frame.groupby("family")["family"].transform("size").to_numpy(float)
    w = 1.0 / counts
    return w / w.sum()


def coverage_curve(
    pit: np.ndarray, levels: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Compute the empirical coverage of central intervals from PIT values.

    A central interval at level ``q`` covers the actual value exactly when
    ``|PIT - 0.5| <= q / 2``.

    Parameters
    ----------
    pit : ndarray, shape (C,)
        PIT values (predictive CDF at the actual value), one per cell.
    levels : ndarray, shape (Q,)
        Nominal levels of the central intervals, in [0, 1].
    weights : ndarray, shape (C,), optional
        Weight of each cell (default: equal).

    Returns
    -------
    ndarray, shape (Q,)
        Weighted share of cells covered at each level.
    """
    pit = np.asarray(pit, float)
    w = np.full(len(pit), 1.0 / len(pit)) if weights is None else np.asarray(weights, float)
    inside = np.abs(pit[:, None] - 0.5) <= np.asarray(levels)[None, :] / 2
    return (w[:, None] * inside).sum(0) / w.sum()


def plot_calibration(
    results: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    bins: int = 10,
    by_family: bool = True,
) -> Figure:
    """Plot the calibration of predictive intervals across backtest cells.

    Left: empirical coverage of central new-run intervals against their
    nominal level, computed from the ``pit_mean`` column (coverage at level ``q`` =
    share of cells with ``|pit_mean - 0.5| <= q/2``), with the diagonal of perfect
    calibration and the directly counted 50% / 80% coverage as markers.
    Right: histogram of PIT values (flat = calibrated; U-shape = intervals
    too narrow; hump = too wide).

    A cell's ``pit_mean`` is the mean PIT over its scored target rows (one value
    per cell), so the curve is the coverage of cells, not of single rows.

    Parameters
    ----------
    results : DataFrame
        Output of :func:`hiscale.backtesting.runner.backtest`; methods without ``pit_mean``
        values (the paper's estimator) are skipped.
    methods : sequence of str, optional
        Methods to draw (default: those with PIT values).
    bins : int
        PIT histogram bins.
    by_family : bool
        Weight every family equally (as the paper's macro averages do);
        otherwise every cell counts once.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If no fitted cell (or none of ``methods``) has a PIT value.
    """
    ok = results[(results["status"] == "ok") & results["pit_mean"].notna()]
    have = list(dict.fromkeys(ok["method"]))
    if not have:
        raise ValueError("no cell has a PIT value: run a Bayesian method (bayes, bayes-flat)")
    methods = have if methods is None else [m for m in methods if m in have]
    if not methods:
        raise ValueError(f"no PIT values for the requested methods; available: {have}")
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"]
    fig = new_figure(figsize=(10.0, 4.2))
    ax_cov, ax_pit = fig.subplots(1, 2)
    q = np.linspace(0.0, 1.0, 101)
    ax_cov.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    edges = np.linspace(0, 1, bins + 1)
    for i, m in enumerate(methods):
        g = ok[ok["method"] == m]
        w = _weights(g) if by_family else None
        cov = coverage_curve(g["pit_mean"].to_numpy(), q, w)
        color = palette(i)
        fams = g["family"].nunique()
        ax_cov.plot(q, cov, color=color, lw=1.8, label=f"{m} ({len(g)} cells, {fams} families)")
        for lv, col in ((0.5, "covered50"), (0.8, "covered80")):
            if col in g and g[col].notna().any():
                gg = g[g[col].notna()]
                ww = _weights(gg) if by_family else np.full(len(gg), 1.0 / len(gg))
                ax_cov.plot(
                    [lv], [float(np.sum(ww * gg[col].to_numpy(float)))], "o", color=color, ms=6
                )
        ax_pit.hist(
            g["pit_mean"].clip(0, 1),
            bins=edges,
            weights=(w if w is not None else np.full(len(g), 1.0 / len(g))) * bins,
            histtype="step",
            lw=1.8,
            color=color,
            label=m,
        )
    ax_cov.plot([], [], "o", color="grey", ms=6, label="counted 50% / 80% coverage")
    ax_cov.set_xlim(0, 1)
    ax_cov.set_ylim(0, 1)
    ax_cov.set_aspect("equal")
    ax_cov.set_xlabel("nominal level of the central interval")
    ax_cov.set_ylabel("empirical coverage (share of cells)")
    ax_cov.set_title("interval coverage", fontsize=10)
    ax_cov.legend(fontsize=7.5, loc="upper left")
    ax_cov.grid(alpha=0.3)
    ax_pit.axhline(1.0, color="grey", lw=1, ls="--", label="uniform (calibrated)")
    ax_pit.set_xlim(0, 1)
    ax_pit.set_xlabel("PIT = predictive CDF at the actual loss")
    ax_pit.set_ylabel("density")
    ax_pit.set_title("PIT histogram", fontsize=10)
    ax_pit.legend(fontsize=7.5, loc="upper center")
    return fig
