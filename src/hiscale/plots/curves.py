"""A family's runs, the fitted law and a target's predictive band: :func:`plot_curves`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hiscale._util import central_interval
from hiscale.data.curves import Curves, load_curves, sole_family
from hiscale.plots._style import (
    ACTUAL_COLOR,
    TARGET_COLOR,
    band_alpha,
    fmt_count,
    interval_levels,
    new_figure,
    plain_log_ticks,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from hiscale.infer.result import Fit

__all__ = ["plot_curves"]


def _family_frame(curves, fit, family: str | None) -> tuple[pd.DataFrame, str]:
    if isinstance(curves, Curves):
        frame = curves.frame
    elif isinstance(curves, pd.DataFrame):
        frame = load_curves(curves).frame
    elif curves is None and fit is not None:
        frame = fit.data
    else:
        raise TypeError(f"expected Curves or a DataFrame, got {type(curves).__name__}")
    fams = sorted(frame["family"].unique().tolist())
    if family is None:
        if fit is not None:
            family = fit.family
        else:
            family = sole_family(fams, "column 'family'", hint="pick one with family=")
    if family not in fams:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(fams)}")
    return frame[frame["family"] == family], family


def plot_curves(
    curves: Curves | pd.DataFrame | None,
    fit: Fit | None = None,
    *,
    family: str | None = None,
    at: tuple[float, float] | None = None,
    actual: float | pd.DataFrame | Callable | None = None,
    actual_label: str = "actual",
    ci_prob: float | Sequence[float] = (0.5, 0.8, 0.95),
    seed: int = 0,
    n_grid: int = 60,
    title: str | None = None,
) -> Figure:
    """Plot the loss curves of a family, the fitted law and a target's predictive band.

    Parameters
    ----------
    curves : Curves or DataFrame
        Curves table (every run of ``family`` is drawn, also rows the fit did
        not use); ``None`` draws only the fit's rows.
    fit : Fit, optional
        Adds, for every run the fit saw, the law at that run's size shifted by
        the run's own offset (:meth:`~hiscale.infer.result.Fit.run_offset`;
        posterior median, dashed), and marks the rows the fit saw. An
        end-of-run fit's line spans the run's whole token range (also where
        the fit did not look); a whole-curve fit
        (:attr:`~hiscale.infer.result.Fit.is_curve`) draws the law under the
        run's own schedule over the rows it fitted, and its target band is the
        whole curve of a new run (:meth:`~hiscale.infer.result.Fit.predict_curve`).
    family : str, optional
        Family to draw (default: the fit's, or the only one).
    at : (params, tokens), optional
        Target point: model size N and token count D; with ``fit``, its new-run
        predictive intervals are drawn along the target size's curve up to D.
    actual : float, DataFrame or callable, optional
        What really happened at the target: a loss at D (star), a frame with
        ``tokens, loss`` (a line), or ``f(tokens) -> loss`` (a line, e.g. the
        true law of simulated data).
    actual_label : str
        Legend text of ``actual``.
    ci_prob : float or sequence of float
        Levels of the predictive bands.
    seed : int
        Seed of the new-run noise draws.
    n_grid : int
        Points per drawn law curve.
    title : str, optional
        Figure title (default: family, runs, sizes, prior).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    TypeError
        If ``curves`` is neither Curves nor a DataFrame (nor ``None`` with a
        ``fit``).
    ValueError
        If ``family`` is unknown, or not given while the table holds several
        families and there is no ``fit`` (``CurvesError``), or a scalar or
        callable ``actual`` is given without ``at``.
    """
    import matplotlib as mpl
    from matplotlib import cm, colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    frame, family = _family_frame(curves, fit, family)
    levels = interval_levels(ci_prob)
    sizes = np.sort(frame["params"].unique())
    all_sizes = np.append(sizes, at[0]) if at is not None else sizes
    norm = colors.LogNorm(vmin=all_sizes.min() / 1.25, vmax=all_sizes.max() * 1.25)
    cmap = _truncate(mpl.colormaps["viridis"])

    fig = new_figure(figsize=(8.0, 5.8))
    ax = fig.add_subplot()
    handles: list[Any] = []
    for _, g in frame.sort_values(["params", "run", "tokens"]).groupby(
        ["params", "run"], sort=False
    ):
        color = cmap(norm(g["params"].iloc[0]))
        ax.plot(g["tokens"], g["loss"], "-", color=color, lw=1.2, alpha=0.85)
        ax.plot(g["tokens"], g["loss"], ".", color=color, ms=3.5, alpha=0.85)
    handles.append(Line2D([], [], color="grey", marker=".", lw=1.2, label="training runs"))
    tmin = float(frame["tokens"].min())
    if fit is not None:
        used = fit.data
        ax.plot(
            used["tokens"],
            used["loss"],
            "o",
            mfc="none",
            mec="black",
            mew=0.7,
            ms=5,
            zorder=4,
        )
        handles.append(
            Line2D([], [], ls="none", marker="o", mfc="none", mec="black", label="rows the fit saw")
        )
        # the law through every run it fitted, shifted by that run's own offset (its
        # seed-to-seed level: posterior mean given the run's fitted rows); an end-of-run
        # fit over the run's whole token range (where it did not look, too), a whole-curve
        # fit over the rows it fitted, under the run's own schedule
        fitted = set(used["run"])
        grids, run_size = {}, {}
        for run, g in (used if fit.is_curve else frame).groupby("run", sort=False):
            if run in fitted:
                grids[run] = np.geomspace(g["tokens"].min(), g["tokens"].max(), n_grid)
                run_size[run] = float(g["params"].iloc[0])
        if fit.is_curve:
            lines = fit.run_lines(grids)  # the posterior read once for all runs
        for run, grid in grids.items():
            n = run_size[run]
            if fit.is_curve:
                line = lines[str(run)]
            else:
                expected, _ = fit.draws(np.full_like(grid, n), grid, seed=seed)
                offset, _ = fit.run_offset(run)
                line = np.median(expected * np.exp(offset)[:, None], axis=0)
            ax.plot(grid, line, "--", color=cmap(norm(n)), lw=1.3)
        handles.append(
            Line2D([], [], color="grey", ls="--", label="fitted law + run offset (post. median)")
        )
    if at is not None:
        tn, td = float(at[0]), float(at[1])
        if fit is not None and fit.is_curve:
            # a new run of D tokens under the family's usual schedule: its whole curve
            grid = _target_grid(tmin, td, n_grid)
            band = fit.predict_curve(tn, td, tokens=grid, ci_prob=levels, seed=seed)
            new_rows = band[band["kind"] == "new_run"]
            for lv in levels:
                b = new_rows[np.isclose(new_rows["ci_prob"], lv)]
                ax.fill_between(
                    b["tokens"], b["lower"], b["upper"], color=TARGET_COLOR,
                    alpha=band_alpha(lv), lw=0,
                )  # fmt: skip
            b = new_rows[np.isclose(new_rows["ci_prob"], levels[0])]
            ax.plot(b["tokens"], b["median"], "-", color=TARGET_COLOR, lw=1.6)
            tag = "/".join(f"{round(100 * lv)}" for lv in sorted(levels))
            handles.append(
                Patch(
                    color=TARGET_COLOR,
                    alpha=0.35,
                    label=f"target N={fmt_count(tn)}: new-run {tag}% interval (whole curve)",
                )
            )
            handles.append(
                Line2D([], [], color=TARGET_COLOR, lw=1.6, label="target: predictive median")
            )
        elif fit is not None:
            grid = _target_grid(tmin, td, n_grid)
            expected, _ = fit.draws(np.full_like(grid, tn), grid, seed=seed)
            # one new run per draw: its offset and noise at D (exactly the predictive
            # of Fit.predict at the target) carried along the whole curve
            e_t, n_t = fit.draws(tn, td, seed=seed)
            new = expected * (n_t / e_t)
            for lv in levels:
                lo, hi = central_interval(new, lv, axis=0)
                ax.fill_between(grid, lo, hi, color=TARGET_COLOR, alpha=band_alpha(lv), lw=0)
            ax.plot(grid, np.median(new, axis=0), "-", color=TARGET_COLOR, lw=1.6)
            tag = "/".join(f"{round(100 * lv)}" for lv in sorted(levels))
            handles.append(
                Patch(
                    color=TARGET_COLOR,
                    alpha=0.35,
                    label=f"target N={fmt_count(tn)}: new-run {tag}% interval",
                )
            )
            handles.append(
                Line2D([], [], color=TARGET_COLOR, lw=1.6, label="target: predictive median")
            )
        ax.axvline(td, color=TARGET_COLOR, lw=0.8, ls=":", alpha=0.8)
    if actual is not None:
        handles.append(_draw_actual(ax, actual, at, actual_label, tmin))
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("loss (nats)")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=ax, pad=0.01)
    cbar.set_label("model size N (parameters)")
    if at is not None:
        cbar.ax.axhline(float(at[0]), color=TARGET_COLOR, lw=2.5)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    if title is None:
        runs = frame["run"].nunique()
        title = f"{family}: {runs} runs, {len(sizes)} sizes"
        if fit is not None:
            title += f"; fit: {fit.law} law, prior {fit.prior.name!r}"
            if fit.flagged:
                title += " (sampler WARNING)"
    ax.set_title(title, fontsize=10)
    return fig


def _target_grid(tmin: float, td: float, n: int) -> np.ndarray:
    """Tokens at which a target curve is drawn: up to two decades below D."""
    return np.geomspace(max(tmin, td / 100) if tmin < td else td / 100, td, n)


def _truncate(cmap, lo: float = 0.0, hi: float = 0.85):
    """Drop the pale yellow end of viridis (invisible on white)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("hiscale_sizes", cmap(np.linspace(lo, hi, 256)))


def _draw_actual(ax, actual, at, label: str, tmin: float):
    from matplotlib.lines import Line2D

    if callable(actual):
        if at is None:
            raise ValueError("a callable actual needs at=(params, tokens)")
        grid = _target_grid(tmin, float(at[1]), 60)
        ax.plot(grid, actual(grid), color=ACTUAL_COLOR, lw=1.2, ls="-.", zorder=5)
        return Line2D([], [], color=ACTUAL_COLOR, lw=1.2, ls="-.", label=label)
    if isinstance(actual, pd.DataFrame):
        a = actual.sort_values("tokens")
        ax.plot(a["tokens"], a["loss"], color=ACTUAL_COLOR, lw=1.2, zorder=5)
        return Line2D([], [], color=ACTUAL_COLOR, lw=1.2, label=label)
    if at is None:
        raise ValueError("a scalar actual needs at=(params, tokens)")
    ax.plot([at[1]], [float(actual)], "*", color=ACTUAL_COLOR, ms=12, zorder=6)
    return Line2D([], [], ls="none", marker="*", color=ACTUAL_COLOR, ms=10, label=label)
