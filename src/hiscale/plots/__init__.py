"""Figures for fits, predictions and backtests (matplotlib), one figure per module.

Every function returns a :class:`matplotlib.figure.Figure` and never selects
a back end: the figure is created through ``pyplot`` so it shows in notebooks
and with ``plt.show()``, and ``fig.savefig(path)`` works head-less. Close
figures you no longer need (``plt.close(fig)``) when making many. Matplotlib
is imported when a figure is drawn, not on import.

* :func:`plot_curves` (``curves``): a family's runs, the fitted law and a
  target's predictive band;
* :func:`plot_target_density` (``density``): the posterior-predictive density
  at one target;
* :func:`plot_are_heatmap` (``heatmap``): the paper's (#models x p) ARE
  heatmaps per method;
* :func:`plot_calibration` (``calibration``): interval coverage vs nominal
  level, and PIT histogram;
* :func:`plot_exponents` (``exponents``): forest plot of family exponents with
  the population;
* :func:`plot_plan` (``plan``): expected interval width at the target against
  FLOPs spent, for a plan and the rules of thumb.
"""

from hiscale.plots._style import fmt_count
from hiscale.plots.calibration import coverage_curve, plot_calibration
from hiscale.plots.curves import plot_curves
from hiscale.plots.density import plot_target_density
from hiscale.plots.exponents import plot_exponents
from hiscale.plots.heatmap import plot_are_heatmap
from hiscale.plots.plan import plot_plan

__all__ = [
    "coverage_curve",
    "fmt_count",
    "plot_are_heatmap",
    "plot_calibration",
    "plot_curves",
    "plot_exponents",
    "plot_plan",
    "plot_target_density",
]
