"""Forest plot of family exponents with the population prior: :func:`plot_exponents`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hiscale._util import central_interval
from hiscale.plots._style import new_figure, plain_log_ticks

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from hiscale.infer.result import Fit
    from hiscale.priors.prior import Prior

__all__ = ["plot_exponents"]


def _exponent_rows(fits) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if isinstance(fits, Mapping):
        items = list(fits.items())
    else:
        items = [(f.family, f) for f in fits]
    out = []
    for name, f in items:
        th = f.theta()
        out.append((str(name), np.exp(th["log_alpha"]), np.exp(th["log_beta"])))
    return out


def plot_exponents(
    fits: Mapping[str, Fit] | Sequence[Fit] | Prior | str | None = None,
    *,
    prior: Prior | str | None = None,
    ci_prob: tuple[float, float] = (0.5, 0.95),
) -> Figure:
    """Draw a forest plot of the families' exponents ``alpha`` (size) and ``beta`` (data).

    Each fitted family gets its posterior median with ``ci_prob`` intervals
    (thick = inner, thin = outer). A population ``prior`` adds its predictive
    distribution for a new family as shaded bands (same levels) and a
    median line, and the families it was built from as open diamonds
    (their step-1 posterior means).

    Parameters
    ----------
    fits : mapping name -> Fit, sequence of Fit, Prior or prior name, optional
        Fitted families; a Prior (or name/path) here is taken as ``prior``.
    prior : Prior or str, optional
        Population prior (``"corpus-v1"``, a path or a Prior).
    ci_prob : (float, float)
        Inner and outer interval levels.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: one panel for ``alpha``, one for ``beta``.

    Raises
    ------
    ValueError
        If there is nothing to draw (no fits and no prior).
    """
    from hiscale.priors.prior import Prior, load_prior

    if isinstance(fits, (Prior, str)):
        fits, prior = None, fits
    if isinstance(prior, str):
        prior = load_prior(prior)
    rows = _exponent_rows(fits) if fits is not None else []
    pop_points: list[tuple[str, float, float]] = []
    if prior is not None:
        idx = {n: i for i, n in enumerate(prior.names)}
        for fam, mean in prior.meta.get("family_means", {}).items():
            pop_points.append(
                (fam, float(np.exp(mean[idx["log_alpha"]])), float(np.exp(mean[idx["log_beta"]])))
            )
    if not rows and not pop_points and prior is None:
        raise ValueError("nothing to draw: pass fits and/or a population prior")
    labels = [r[0] for r in rows] + [p[0] for p in pop_points]
    n = max(len(labels), 1)
    inner, outer = sorted(ci_prob)
    fig = new_figure(figsize=(9.0, 1.6 + 0.32 * n))
    axes = fig.subplots(1, 2, sharey=True)
    for j, (ax, name, sym) in enumerate(
        zip(axes, ("log_alpha", "log_beta"), ("alpha (model size)", "beta (data)"), strict=True)
    ):
        if prior is not None:
            i = prior.names.index(name)
            mu, sd = float(prior.loc[i]), float(np.sqrt(prior.cov[i, i]))
            from scipy.stats import norm

            for lv, a in ((outer, 0.12), (inner, 0.22)):
                z = norm.ppf(0.5 + lv / 2)
                ax.axvspan(np.exp(mu - z * sd), np.exp(mu + z * sd), color="#16a085", alpha=a, lw=0)
            ax.axvline(np.exp(mu), color="#16a085", lw=1.5)
        for k, (_fam, a, b) in enumerate(rows):
            v = a if j == 0 else b
            lo_o, hi_o = central_interval(v, outer)
            lo_i, hi_i = central_interval(v, inner)
            med = np.quantile(v, 0.5)
            ax.plot([lo_o, hi_o], [k, k], color="#2c3e50", lw=1.0)
            ax.plot([lo_i, hi_i], [k, k], color="#2c3e50", lw=3.5, solid_capstyle="butt")
            ax.plot([med], [k], "o", color="white", mec="#2c3e50", ms=5, zorder=3)
        for k, (_fam, a, b) in enumerate(pop_points, start=len(rows)):
            ax.plot([a if j == 0 else b], [k], "D", mfc="none", mec="#16a085", ms=5)
        if rows and pop_points:
            ax.axhline(len(rows) - 0.5, color="grey", lw=0.8)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel(f"exponent {sym}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].set_ylim(len(labels) - 0.5 if labels else 0.5, -0.5)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    if rows:
        handles.append(
            Line2D(
                [],
                [],
                color="#2c3e50",
                lw=3,
                marker="o",
                mfc="white",
                label=f"family posterior: median, {round(100 * inner)}% / "
                f"{round(100 * outer)}% interval",
            )
        )
    if prior is not None:
        handles.append(
            Patch(
                color="#16a085",
                alpha=0.3,
                label=f"prior {prior.name!r}: new family {round(100 * inner)}% / "
                f"{round(100 * outer)}%",
            )
        )
        if pop_points:
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="none",
                    marker="D",
                    mfc="none",
                    mec="#16a085",
                    label="families in the prior (means)",
                )
            )
    fig.legend(handles=handles, loc="outside lower center", ncol=min(2, len(handles)), fontsize=8)
    return fig
