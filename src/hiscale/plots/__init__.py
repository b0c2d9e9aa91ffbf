"""Figures for fits, predictions and backtests (matplotlib, imported lazily)."""

from hiscale.plots.curves import (
    coverage_curve,
    fmt_count,
    plot_are_heatmap,
    plot_calibration,
    plot_curves,
    plot_exponents,
    plot_target_density,
)

__all__ = [
    "coverage_curve",
    "fmt_count",
    "plot_are_heatmap",
    "plot_calibration",
    "plot_curves",
    "plot_exponents",
    "plot_target_density",
]
