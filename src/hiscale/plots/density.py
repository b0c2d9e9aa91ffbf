"""The posterior-predictive density at one target: :func:`plot_target_density`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hiscale._util import central_interval
from hiscale.plots._style import (
    ACTUAL_COLOR,
    TARGET_COLOR,
    band_alpha,
    fmt_count,
    interval_levels,
    new_figure,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from hiscale.infer.result import Fit

__all__ = ["plot_target_density"]


def plot_target_density(
    fit: Fit,
    at: tuple[float, float],
    *,
    actual: float | None = None,
    paper_prediction: float | None = None,
    ci_prob: float | Sequence[float] = (0.8, 0.95),
    seed: int = 0,
    bins: int = 60,
) -> Figure:
    """Plot the posterior-predictive density of the loss at one target ``(N, D)``.

    Draws two histograms: the *expected* loss (law uncertainty only) and a
    *new run* (plus run offset and checkpoint noise), the new-run central
    intervals as shaded spans, and vertical lines for the predictive median,
    the actual loss and the paper estimator's point prediction.

    Parameters
    ----------
    fit : Fit
        The fitted family.
    at : (float, float)
        Target point: model size N and token count D.
    actual : float, optional
        Observed loss at the target.
    paper_prediction : float, optional
        Point prediction of the least-squares estimator (e.g.
        ``hiscale.backtesting.paper.fit_paper(...).predict(N, D)``).
    ci_prob : float or sequence of float
        Interval levels shaded.
    seed : int
        Seed of the new-run noise draws.
    bins : int
        Resolution of the x range (``bins + 1`` edges).

    Returns
    -------
    matplotlib.figure.Figure
    """
    params, tokens = float(at[0]), float(at[1])
    expected, new = fit.draws(params, tokens, seed=seed)
    expected, new = expected[:, 0], new[:, 0]
    levels = interval_levels(ci_prob)
    fig = new_figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    lo_all = min(expected.min(), new.min())
    hi_all = max(expected.max(), new.max())
    for v in (actual, paper_prediction):
        if v is not None and np.isfinite(v):
            lo_all, hi_all = min(lo_all, v), max(hi_all, v)
    pad = 0.03 * (hi_all - lo_all)
    edges = np.linspace(lo_all - pad, hi_all + pad, bins + 1)
    for lv in levels:
        lo, hi = central_interval(new, lv)
        ax.axvspan(
            lo,
            hi,
            color=TARGET_COLOR,
            alpha=0.6 * band_alpha(lv),
            lw=0,
            label=f"new run: {round(100 * lv)}% interval [{lo:.3f}, {hi:.3f}]",
        )
    grid = np.linspace(edges[0], edges[-1], 400)
    dens_new = _kde(new, grid)
    ax.fill_between(grid, dens_new, color="#7f8c8d", alpha=0.35, lw=0)
    ax.plot(grid, dens_new, color="#2c3e50", lw=1.4, label="new run (law + run offset + noise)")
    ax.plot(
        grid,
        _kde(expected, grid),
        color="#2980b9",
        lw=1.4,
        ls="--",
        label="expected loss (law uncertainty only)",
    )
    ax.set_ylim(bottom=0)
    med = float(np.median(new))
    ax.axvline(med, color=TARGET_COLOR, lw=1.8, label=f"predictive median {med:.3f}")
    if actual is not None:
        ax.axvline(actual, color=ACTUAL_COLOR, lw=1.8, ls="-", label=f"actual {actual:.3f}")
        pit = float(np.mean(new <= actual))
        ax.text(
            0.01,
            0.97,
            f"PIT of actual = {pit:.2f}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )
    if paper_prediction is not None:
        ax.axvline(
            paper_prediction,
            color="#8e44ad",
            lw=1.6,
            ls=":",
            label=f"paper estimator {paper_prediction:.3f}",
        )
    ax.set_xlabel(f"loss (nats) at N={fmt_count(params)} parameters, D={fmt_count(tokens)} tokens")
    ax.set_ylabel("posterior-predictive density")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(top=ax.get_ylim()[1] * 1.45)
    ax.legend(fontsize=7.5, loc="upper right", framealpha=0.9)
    flag = " (sampler WARNING: see Fit.verdict())" if fit.flagged else ""
    ax.set_title(f"{fit.family}: prediction with prior {fit.prior.name!r}{flag}", fontsize=10)
    return fig


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Scott's rule); a spike when the draws are constant."""
    from scipy.stats import gaussian_kde

    values = np.asarray(values, float)
    if np.ptp(values) <= 0:
        out = np.zeros_like(grid)
        out[np.argmin(np.abs(grid - values[0]))] = 1.0 / (grid[1] - grid[0])
        return out
    return gaussian_kde(values)(grid)
