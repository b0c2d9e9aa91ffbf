"""Figures for fits, predictions and backtests (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` and never selects
a back end: the figure is created through ``pyplot`` so it shows in notebooks
and with ``plt.show()``, and ``fig.savefig(path)`` works head-less. Close
figures you no longer need (``plt.close(fig)``) when making many.

* :func:`plot_curves`: a family's runs, the fitted law and a target's
  predictive band;
* :func:`plot_target_density`: the posterior-predictive density at one target;
* :func:`plot_are_heatmap`: the paper's (#models x p) ARE heatmaps per method;
* :func:`plot_calibration`: interval coverage vs nominal level, and PIT histogram;
* :func:`plot_exponents`: forest plot of family exponents with the population.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hiscale.data.curves import Curves, load_curves

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from hiscale.infer.result import Fit
    from hiscale.priors.prior import Prior

__all__ = [
    "coverage_curve",
    "fmt_count",
    "plot_are_heatmap",
    "plot_calibration",
    "plot_curves",
    "plot_exponents",
    "plot_target_density",
]

#: Interval levels drawn as bands, widest first, with their fill opacity.
_BAND_ALPHA = {0.95: 0.15, 0.8: 0.25, 0.5: 0.4}
_TARGET_COLOR = "#c0392b"
_ACTUAL_COLOR = "black"


def _figure(**kwargs: Any) -> Figure:
    import matplotlib.pyplot as plt

    return plt.figure(layout="constrained", **kwargs)


def fmt_count(n: float) -> str:
    """``6.9e9 -> '6.9B'``, ``1.4e11 -> '140B'``, ``5e7 -> '50M'``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _levels(ci_prob: float | Sequence[float]) -> list[float]:
    levels = [ci_prob] if np.isscalar(ci_prob) else list(ci_prob)
    return sorted((float(v) for v in levels), reverse=True)


def _band_alpha(level: float) -> float:
    return _BAND_ALPHA.get(round(level, 2), 0.15 + 0.5 * (1 - level))


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
        elif len(fams) == 1:
            family = fams[0]
        else:
            raise ValueError(f"the data hold {len(fams)} families; pick one with family= ({fams})")
    if family not in fams:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(fams)}")
    return frame[frame["family"] == family], family


def plot_curves(
    curves: Curves | pd.DataFrame | None,
    fit: Fit | None = None,
    *,
    family: str | None = None,
    target: tuple[float, float] | None = None,
    actual: float | pd.DataFrame | Callable | None = None,
    actual_label: str = "actual",
    ci_prob: float | Sequence[float] = (0.5, 0.8, 0.95),
    seed: int = 0,
    n_grid: int = 60,
    title: str | None = None,
) -> Figure:
    """Loss curves of a family, the fitted law and a target's predictive band.

    Parameters
    ----------
    curves : Curves or DataFrame
        Curves table (every run of ``family`` is drawn, also rows the fit did
        not use); ``None`` draws only the fit's rows.
    fit : Fit, optional
        Adds the law's posterior-median expected loss for every size (dashed),
        and marks the rows the fit saw.
    family : str, optional
        Family to draw (default: the fit's, or the only one).
    target : (params, tokens), optional
        Target model size N and token count D; with ``fit``, its new-run
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
    """
    import matplotlib as mpl
    from matplotlib import cm, colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    frame, family = _family_frame(curves, fit, family)
    levels = _levels(ci_prob)
    sizes = np.sort(frame["params"].unique())
    all_sizes = np.append(sizes, target[0]) if target is not None else sizes
    norm = colors.LogNorm(vmin=all_sizes.min() / 1.25, vmax=all_sizes.max() * 1.25)
    cmap = _truncate(mpl.colormaps["viridis"])

    fig = _figure(figsize=(8.0, 5.8))
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
        for n in sizes:
            sub = frame[frame["params"] == n]
            grid = np.geomspace(sub["tokens"].min(), sub["tokens"].max(), n_grid)
            expected, _ = fit.draws(np.full_like(grid, n), grid, seed=seed)
            ax.plot(grid, np.median(expected, axis=0), "--", color=cmap(norm(n)), lw=1.3)
        handles.append(Line2D([], [], color="grey", ls="--", label="fitted law (posterior median)"))
    if target is not None:
        tn, td = float(target[0]), float(target[1])
        if fit is not None:
            grid = _target_grid(tmin, td, n_grid)
            expected, _ = fit.draws(np.full_like(grid, tn), grid, seed=seed)
            # one new run per draw: its offset and noise at D (exactly the predictive
            # of Fit.predict at the target) carried along the whole curve
            e_t, n_t = fit.draws(tn, td, seed=seed)
            new = expected * (n_t / e_t)
            for lv in levels:
                lo, hi = np.quantile(new, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
                ax.fill_between(grid, lo, hi, color=_TARGET_COLOR, alpha=_band_alpha(lv), lw=0)
            ax.plot(grid, np.median(new, axis=0), "-", color=_TARGET_COLOR, lw=1.6)
            tag = "/".join(f"{round(100 * lv)}" for lv in sorted(levels))
            handles.append(
                Patch(
                    color=_TARGET_COLOR,
                    alpha=0.35,
                    label=f"target N={fmt_count(tn)}: new-run {tag}% interval",
                )
            )
            handles.append(
                Line2D([], [], color=_TARGET_COLOR, lw=1.6, label="target: predictive median")
            )
        ax.axvline(td, color=_TARGET_COLOR, lw=0.8, ls=":", alpha=0.8)
    if actual is not None:
        handles.append(_draw_actual(ax, actual, target, actual_label, tmin))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("loss (nats)")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=ax, pad=0.01)
    cbar.set_label("model size N (parameters)")
    if target is not None:
        cbar.ax.axhline(float(target[0]), color=_TARGET_COLOR, lw=2.5)
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


def _plain_log_ticks(axis) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())


def _draw_actual(ax, actual, target, label: str, tmin: float):
    from matplotlib.lines import Line2D

    if callable(actual):
        if target is None:
            raise ValueError("a callable actual needs target=(params, tokens)")
        grid = _target_grid(tmin, float(target[1]), 60)
        ax.plot(grid, actual(grid), color=_ACTUAL_COLOR, lw=1.2, ls="-.", zorder=5)
        return Line2D([], [], color=_ACTUAL_COLOR, lw=1.2, ls="-.", label=label)
    if isinstance(actual, pd.DataFrame):
        a = actual.sort_values("tokens")
        ax.plot(a["tokens"], a["loss"], color=_ACTUAL_COLOR, lw=1.2, zorder=5)
        return Line2D([], [], color=_ACTUAL_COLOR, lw=1.2, label=label)
    if target is None:
        raise ValueError("a scalar actual needs target=(params, tokens)")
    ax.plot([target[1]], [float(actual)], "*", color=_ACTUAL_COLOR, ms=12, zorder=6)
    return Line2D([], [], ls="none", marker="*", color=_ACTUAL_COLOR, ms=10, label=label)


def plot_target_density(
    fit: Fit,
    params: float,
    tokens: float,
    *,
    actual: float | None = None,
    paper_prediction: float | None = None,
    ci_prob: float | Sequence[float] = (0.8, 0.95),
    seed: int = 0,
    bins: int = 60,
) -> Figure:
    """Posterior-predictive density of the loss at one target ``(N, D)``.

    Draws two histograms: the *expected* loss (law uncertainty only) and a
    *new run* (plus run offset and checkpoint noise), the new-run central
    intervals as shaded spans, and vertical lines for the predictive median,
    the actual loss and the paper estimator's point prediction.

    Parameters
    ----------
    fit : Fit
    params, tokens : float
        Target model size N and token count D.
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
    expected, new = fit.draws(params, tokens, seed=seed)
    expected, new = expected[:, 0], new[:, 0]
    levels = _levels(ci_prob)
    fig = _figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    lo_all = min(expected.min(), new.min())
    hi_all = max(expected.max(), new.max())
    for v in (actual, paper_prediction):
        if v is not None and np.isfinite(v):
            lo_all, hi_all = min(lo_all, v), max(hi_all, v)
    pad = 0.03 * (hi_all - lo_all)
    edges = np.linspace(lo_all - pad, hi_all + pad, bins + 1)
    for lv in levels:
        lo, hi = np.quantile(new, [(1 - lv) / 2, (1 + lv) / 2])
        ax.axvspan(
            lo,
            hi,
            color=_TARGET_COLOR,
            alpha=0.6 * _band_alpha(lv),
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
    ax.axvline(med, color=_TARGET_COLOR, lw=1.8, label=f"predictive median {med:.3f}")
    if actual is not None:
        ax.axvline(actual, color=_ACTUAL_COLOR, lw=1.8, ls="-", label=f"actual {actual:.3f}")
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
    flag = " (sampler WARNING: see Fit.summary())" if fit.flagged else ""
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
    """The paper's heatmaps: macro ARE by #models (rows) and token fraction p (columns).

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
    """
    mats, rows, ps = _heatmap_matrices(results, methods, value)
    allv = np.concatenate([m.to_numpy(float).ravel() for m in mats.values()])
    allv = allv[np.isfinite(allv)]
    vmax = float(np.percentile(allv, 95)) if vmax is None else float(vmax)
    vmax = max(vmax, 1e-9)
    import matplotlib as mpl

    cmap = mpl.colormaps["magma_r"].with_extremes(bad="#dddddd")
    n = len(mats)
    fig = _figure(figsize=(1.0 + 0.55 * len(ps) * n + 1.2, 1.4 + 0.42 * len(rows)))
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


def _weights(frame: pd.DataFrame) -> np.ndarray:
    """Equal weight per family (cells of a family share it)."""
    counts = frame.groupby("family")["family"].transform("size").to_numpy(float)
    w = 1.0 / counts
    return w / w.sum()


def coverage_curve(
    pit: np.ndarray, levels: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Empirical coverage of central intervals from PIT values.

    A central interval at level ``q`` covers the actual value exactly when
    ``|PIT - 0.5| <= q / 2``.
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
    """Calibration of predictive intervals across backtest cells.

    Left: empirical coverage of central new-run intervals against their
    nominal level, computed from the ``pit`` column (coverage at level ``q`` =
    share of cells with ``|pit - 0.5| <= q/2``), with the diagonal of perfect
    calibration and the directly counted 50% / 80% coverage as markers.
    Right: histogram of PIT values (flat = calibrated; U-shape = intervals
    too narrow; hump = too wide).

    A cell's ``pit`` is the mean PIT over its scored target rows (one value
    per cell), so the curve is the coverage of cells, not of single rows.

    Parameters
    ----------
    results : DataFrame
        Output of :func:`hiscale.backtesting.runner.backtest`; methods without ``pit``
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
    """
    ok = results[(results["status"] == "ok") & results["pit"].notna()]
    have = list(dict.fromkeys(ok["method"]))
    if not have:
        raise ValueError("no cell has a PIT value: run a Bayesian method (bayes, bayes-flat)")
    methods = have if methods is None else [m for m in methods if m in have]
    if not methods:
        raise ValueError(f"no PIT values for the requested methods; available: {have}")
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"]
    fig = _figure(figsize=(10.0, 4.2))
    ax_cov, ax_pit = fig.subplots(1, 2)
    q = np.linspace(0.0, 1.0, 101)
    ax_cov.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    edges = np.linspace(0, 1, bins + 1)
    for i, m in enumerate(methods):
        g = ok[ok["method"] == m]
        w = _weights(g) if by_family else None
        cov = coverage_curve(g["pit"].to_numpy(), q, w)
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
            g["pit"].clip(0, 1),
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
    """Forest plot of the families' exponents ``alpha`` (size) and ``beta`` (data).

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
    fig = _figure(figsize=(9.0, 1.6 + 0.32 * n))
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
            lo_o, lo_i, med, hi_i, hi_o = np.quantile(
                v, [(1 - outer) / 2, (1 - inner) / 2, 0.5, (1 + inner) / 2, (1 + outer) / 2]
            )
            ax.plot([lo_o, hi_o], [k, k], color="#2c3e50", lw=1.0)
            ax.plot([lo_i, hi_i], [k, k], color="#2c3e50", lw=3.5, solid_capstyle="butt")
            ax.plot([med], [k], "o", color="white", mec="#2c3e50", ms=5, zorder=3)
        for k, (_fam, a, b) in enumerate(pop_points, start=len(rows)):
            ax.plot([a if j == 0 else b], [k], "D", mfc="none", mec="#16a085", ms=5)
        if rows and pop_points:
            ax.axhline(len(rows) - 0.5, color="grey", lw=0.8)
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
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
