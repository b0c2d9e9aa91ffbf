"""Scores of backtest results: what the README reports, on which cells, with uncertainty.

Conventions used by every function here (and by the benchmark scripts):

* **Cell** = ``(family, direction, target, k, p)``. A method *fitted* a cell
  when its row has ``status == "ok"`` and a finite ``are_pct``.
* **Common cells** (:func:`common_cells`): the cells every compared method
  fitted. Comparisons between methods (ARE, coverage, flag counts, heatmap)
  use only these, so every method is scored on identical cells.
* **Family group**: sibling families (``pythia`` / ``pythia-deduped``,
  ``gemstones-*``) share models or data sources, so they are one unit. The
  group is the ``group`` column of the results when present, else
  :func:`hiscale.population.family_group` of the family name.
* **Macro average** (:func:`macro`): mean over cells within a family, then
  mean over the families of a group, then mean over groups; every family group
  counts once.
* **Low budget** (:data:`LOW_BUDGET`, :func:`low_budget`): ``k ≤ 3 or
  p ≤ 0.3``, where ``k`` is the number of model sizes the cell actually
  trained on (``n_sizes_used``: the 10B-token cut can leave fewer sizes than
  the requested ``k``), and ``p`` the fraction of tokens kept.
* **Intervals** (:func:`group_bootstrap`, :func:`macro_intervals`): cells of
  one family share one target run, so the independent units are family
  groups, not cells. Groups are resampled with replacement (explicit seed,
  ``n_boot = 2000`` by default) and every macro figure is recomputed; the
  interval is the percentile interval of the replicates (90% by default).
  With about eight groups these intervals are rough, and they cannot show
  more variation than the groups at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hiscale._util import level_tag

__all__ = [
    "CELL_KEY",
    "LOW_BUDGET",
    "LOW_BUDGET_MAX_MODELS",
    "LOW_BUDGET_MAX_P",
    "QUANTITIES",
    "Bootstrap",
    "common_cells",
    "family_means",
    "fitted",
    "flag_rates",
    "group_bootstrap",
    "group_means",
    "groups_of",
    "heatmap",
    "low_budget",
    "macro",
    "macro_intervals",
    "per_family",
    "quantity_rows",
]

#: Columns that identify a backtest cell (those present in the results are used).
CELL_KEY: tuple[str, ...] = ("family", "direction", "target", "k", "p")

#: Low budget: at most this many model sizes actually used (``n_sizes_used``) ...
LOW_BUDGET_MAX_MODELS: int = 3
#: ... or at most this fraction of the tokens kept.
LOW_BUDGET_MAX_P: float = 0.3
#: The definition in words (for tables and reports).
LOW_BUDGET: str = (
    f"k ≤ {LOW_BUDGET_MAX_MODELS} or p ≤ {LOW_BUDGET_MAX_P:g} "
    "(k = model sizes actually used, n_sizes_used)"
)

#: Quantities :func:`macro_intervals` can summarise: ``name -> (column, row subset)``.
QUANTITIES: dict[str, tuple[str, str]] = {
    "are_pct": ("are_pct", "all"),
    "are_pct_low_budget": ("are_pct", "low_budget"),
    "are_pct_k1": ("are_pct", "k1"),
    "are_pct_k2": ("are_pct", "k2"),
    "are_pct_early": ("are_pct", "early"),
    "are_pct_early_many": ("are_pct", "early_many"),
    "covered80": ("covered80", "all"),
    "covered50": ("covered50", "all"),
}


def low_budget(results: pd.DataFrame) -> pd.Series:
    """Rows of low-budget cells: ``n_sizes_used ≤ 3 or p ≤ 0.3`` (see :data:`LOW_BUDGET`).

    ``k`` here is the number of model sizes the cell actually trained on
    (``n_sizes_used``), which can be smaller than the requested ``k`` when
    the 10B-token cut removes a model's rows.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).

    Returns
    -------
    Series of bool
        True on low-budget rows.
    """
    return (results["n_sizes_used"] <= LOW_BUDGET_MAX_MODELS) | (results["p"] <= LOW_BUDGET_MAX_P)


def quantity_rows(results: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Select the rows a quantity of :data:`QUANTITIES` is averaged over.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    quantity : str
        A key of :data:`QUANTITIES`.

    Returns
    -------
    DataFrame
        All rows, the low-budget rows, or the rows that used one model size
        (``k1``) or at most two (``k2``), or the cells with ``p <= 0.3``
        (``early``), or (``early_many``) those with at least 4 sizes used too
        (issue 9's whole-curve cells).
    """
    _, subset = QUANTITIES[quantity]
    if subset == "low_budget":
        return results[low_budget(results)]
    if subset == "k1":  # one model size used: the paper's single-model regime
        return results[results["n_sizes_used"] == 1]
    if subset == "k2":  # at most two sizes: where borrowing has to help (issue 10)
        return results[results["n_sizes_used"] <= 2]
    if subset == "early":  # runs cut early, any number of sizes (issue 9's 0.6x goal)
        return results[results["p"] <= 0.3]
    if subset == "early_many":  # runs cut early, many sizes: where whole curves must help
        return results[(results["p"] <= 0.3) & (results["n_sizes_used"] >= 4)]
    return results


def fitted(results: pd.DataFrame) -> pd.Series:
    """Mark the rows where the method fitted the cell: ``status == "ok"`` and a finite ARE.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).

    Returns
    -------
    Series of bool
    """
    return (results["status"] == "ok") & np.isfinite(results["are_pct"].astype(float))


def groups_of(results: pd.DataFrame) -> pd.Series:
    """Family group of every row: the ``group`` column, else ``family_group(family)``.

    A row with no value in the ``group`` column gets the name-derived group too
    (it is not dropped from the averages).

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).

    Returns
    -------
    Series of str
        One group per row.
    """
    group = results["group"] if "group" in results.columns else None
    if group is not None and group.notna().all():
        return group.astype(str)
    from hiscale.population import family_group

    by_name = results["family"].map(family_group)
    return (by_name if group is None else group.where(group.notna(), by_name)).astype(str)


def _with_group(results: pd.DataFrame) -> pd.DataFrame:
    return results.assign(group=groups_of(results))


def _methods(results: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    have = list(dict.fromkeys(results["method"]))
    if methods is None:
        return have
    missing = [m for m in methods if m not in have]
    if missing:
        raise ValueError(
            f"column 'method': no rows for {', '.join(map(repr, missing))} "
            f"(have {', '.join(map(repr, have))})"
        )
    return list(methods)


def common_cells(results: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of ``methods`` on the cells that every one of them fitted.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`), several methods.
    methods : sequence of str, optional
        Methods to compare (default: every method in ``results``).

    Returns
    -------
    DataFrame
        One row per (cell, method), ``len(methods)`` rows per common cell, in
        the order of ``results``.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    methods = _methods(results, methods)
    key = [c for c in CELL_KEY if c in results.columns]
    rows = results[results["method"].isin(methods) & fitted(results)]
    n_ok = rows.groupby(key)["method"].nunique()
    keep = pd.MultiIndex.from_frame(n_ok[n_ok == len(methods)].reset_index()[key])
    return rows[pd.MultiIndex.from_frame(rows[key]).isin(keep)]


def family_means(
    results: pd.DataFrame, value: str = "are_pct", methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Average ``value`` over each family's fitted cells.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    value : str, default "are_pct"
        Column to average.
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).

    Returns
    -------
    DataFrame
        Indexed by ``(group, family)``, one column per method.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    return _family_means(results, value, _methods(results, methods))


def _family_means(results: pd.DataFrame, value: str, methods: list[str]) -> pd.DataFrame:
    ok = _with_group(results[fitted(results) & results["method"].isin(methods)])
    ok = ok[np.isfinite(ok[value].astype(float))]
    out = ok.groupby(["group", "family", "method"])[value].mean().unstack("method")
    return out.reindex(columns=methods)


def group_means(
    results: pd.DataFrame, value: str = "are_pct", methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Average the family means (:func:`family_means`) within each family group.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    value : str, default "are_pct"
        Column to average.
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).

    Returns
    -------
    DataFrame
        One row per group, one column per method.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    return family_means(results, value, methods).groupby(level="group").mean()


def macro(
    results: pd.DataFrame, value: str = "are_pct", methods: Sequence[str] | None = None
) -> pd.Series:
    """Macro-average ``value`` per method: cells → family → family group → mean over groups.

    Every family group counts once, so sibling families (the same models
    re-run or cooled down) do not outweigh independent ones.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    value : str, default "are_pct"
        Column to average.
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).

    Returns
    -------
    Series
        One value per method.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    return group_means(results, value, methods).mean()


def per_family(
    results: pd.DataFrame,
    methods: Sequence[str] | None = None,
    *,
    ci_prob: Sequence[float] = (0.8, 0.5),
) -> pd.DataFrame:
    """One row per (family, method): cells fitted, mean ARE, coverage per level, flagged.

    Means are over the family's fitted cells in ``results`` (pass
    :func:`common_cells` to get them on identical cells). ``cells`` counts
    every row of the family and method, ``fitted`` those fitted. When the
    results have a ``prior`` column, ``prior`` lists the priors used.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).
    ci_prob : sequence of float
        The interval probabilities the backtest was run with (its ``ci_prob``).

    Returns
    -------
    DataFrame
        Columns ``group, family, method, cells, fitted, are_pct,
        coveredP ... , flagged`` (P per level in percent, 80 and 50 by
        default; and ``prior``), sorted by group, family, method.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    methods = _methods(results, methods)
    rows = _with_group(results[results["method"].isin(methods)])
    rows = rows.assign(_fitted=fitted(rows))
    ok = rows[rows["_fitted"]]
    key = ["group", "family", "method"]
    out = rows.groupby(key).agg(cells=("status", "size"), fitted=("_fitted", "sum"))
    covered = [f"covered{level_tag(lv)}" for lv in ci_prob]
    means = ok.groupby(key)[["are_pct", *covered]].mean()
    flagged = ok.groupby(key)["flagged"].apply(lambda s: int(s.fillna(False).astype(bool).sum()))
    out = out.join(means).join(flagged.rename("flagged"))
    out["flagged"] = out["flagged"].fillna(0).astype(int)
    if "prior" in rows.columns:
        out["prior"] = rows.groupby(key)["prior"].agg(
            lambda s: "; ".join(sorted(set(s.dropna().astype(str))))
        )
    out = out.reset_index()
    out["method"] = pd.Categorical(out["method"], categories=methods, ordered=True)
    out = out.sort_values(["group", "family", "method"]).reset_index(drop=True)
    out["method"] = out["method"].astype(str)
    return out


def flag_rates(results: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Per method: cells run, fitted, failed, flagged among fitted, and the flag rate.

    The denominator of ``flag_rate`` is ``fitted`` (cells the method fitted:
    a failed cell has no sampler to flag).

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).

    Returns
    -------
    DataFrame
        One row per method: ``cells, fitted, failed, flagged, flag_rate``.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    methods = _methods(results, methods)
    out = []
    for m in methods:
        g = results[results["method"] == m]
        ok = g[fitted(g)]
        n_flag = int(ok["flagged"].fillna(False).astype(bool).sum())
        out.append(
            {
                "method": m,
                "cells": len(g),
                "fitted": len(ok),
                "failed": len(g) - len(ok),
                "flagged": n_flag,
                "flag_rate": n_flag / len(ok) if len(ok) else np.nan,
            }
        )
    return pd.DataFrame(out)


def _bin(n: float) -> str:
    return "8+" if n >= 8 else str(int(n))


def heatmap(
    results: pd.DataFrame, value: str = "are_pct", methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Tabulate the paper's heatmap with family groups counted once.

    Pass :func:`common_cells` for identical cells.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    value : str, default "are_pct"
        Column to average.
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).

    Returns
    -------
    DataFrame
        Rows: number of model sizes used (``1`` … ``7``, ``8+``); columns:
        ``(method, p)``; values: macro average (:func:`macro`) of ``value``
        over the fitted cells in that bin. Empty when nothing was fitted.

    Raises
    ------
    ValueError
        If a method in ``methods`` has no rows in ``results``.
    """
    methods = _methods(results, methods)
    ok = _with_group(results[fitted(results) & results["method"].isin(methods)])
    ok = ok[np.isfinite(ok[value].astype(float))]
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(models=ok["n_sizes_used"].map(_bin))
    by = ["method", "models", "p"]
    fam = ok.groupby([*by, "group", "family"])[value].mean()
    table = fam.groupby([*by, "group"]).mean().groupby(by).mean().unstack(["method", "p"])
    order = sorted(table.index, key=lambda s: (s == "8+", int(s.rstrip("+"))))
    cols = [c for m in methods for c in sorted(c for c in table.columns if c[0] == m)]
    return table.loc[order, cols]


# --- family-group bootstrap -------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """Family-group bootstrap of macro statistics.

    Attributes
    ----------
    table : DataFrame
        One row per statistic: ``statistic, quantity, method, estimate,
        lower, upper`` (``lower``/``upper``: percentile interval at ``level``).
    replicates : DataFrame
        ``n_boot`` rows, one column per statistic (named like ``table``'s
        ``"statistic|quantity|method"``).
    groups : tuple of str
        The resampled groups, in the order the draws index them.
    n_boot, seed, level :
        The settings used.
    """

    table: pd.DataFrame
    replicates: pd.DataFrame
    groups: tuple[str, ...]
    n_boot: int
    seed: int
    level: float

    def interval(self, statistic: str, quantity: str, method: str) -> tuple[float, float, float]:
        """Return ``(estimate, lower, upper)`` of one statistic.

        Parameters
        ----------
        statistic, quantity, method : str
            The row of :attr:`table` (``statistic`` one of ``macro``,
            ``ratio``, ``difference``).

        Returns
        -------
        tuple of float
            The point estimate and the percentile interval at :attr:`level`.

        Raises
        ------
        KeyError
            If the table has no such row.
        """
        t = self.table
        pick = (t["statistic"] == statistic) & (t["quantity"] == quantity) & (t["method"] == method)
        row = t[pick]
        if len(row) != 1:
            raise KeyError(f"no statistic {statistic!r} of {quantity!r} for {method!r}")
        r = row.iloc[0]
        return float(r["estimate"]), float(r["lower"]), float(r["upper"])


Statistic = Callable[[pd.DataFrame], np.ndarray]


def group_bootstrap(
    group_values: pd.DataFrame,
    statistics: Mapping[tuple[str, str, str], Statistic],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.9,
) -> Bootstrap:
    """Resample family groups with replacement and recompute macro statistics.

    Parameters
    ----------
    group_values : DataFrame
        Index: family groups; columns: quantities (e.g. ``(quantity, method)``),
        each the group's mean (:func:`group_means`). NaN = the group has no
        cell for that quantity; it is left out of that quantity's mean.
    statistics : mapping
        ``(statistic, quantity, method) -> f``; ``f`` receives a frame of macro
        means (one row per replicate, the columns of ``group_values``) and
        returns one value per row.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of ``numpy.random.default_rng``. Replicate ``b`` draws the groups
        ``rng.integers(0, n_groups, size=(n_boot, n_groups))[b]`` of the groups
        sorted by name.
    level : float
        Central interval level (percentile interval).

    Returns
    -------
    Bootstrap

    Raises
    ------
    ValueError
        If ``level`` is outside (0, 1), ``n_boot < 1`` or there is no group.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    gv = group_values.sort_index()
    if gv.empty:
        raise ValueError("no family group to resample")
    groups = tuple(str(g) for g in gv.index)
    n = len(groups)
    values = gv.to_numpy(dtype=float)
    finite = np.isfinite(values)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = (draws[:, :, None] == np.arange(n)).sum(axis=1).astype(float)  # (B, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = counts @ np.where(finite, values, 0.0)
        den = counts @ finite.astype(float)
        reps = pd.DataFrame(np.where(den > 0, num / den, np.nan), columns=gv.columns)
        n_finite = finite.sum(axis=0)
        mean = np.where(finite, values, 0.0).sum(axis=0) / n_finite
        point = pd.DataFrame([np.where(n_finite > 0, mean, np.nan)], columns=gv.columns)
    tail = 100 * (1 - level) / 2
    rows, rep_cols = [], {}
    for (stat, quantity, method), f in statistics.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.asarray(f(reps), dtype=float)
            est = float(np.asarray(f(point), dtype=float)[0])
        good = r[np.isfinite(r)]
        lo, hi = np.percentile(good, [tail, 100 - tail]) if len(good) else (np.nan, np.nan)
        rows.append(
            {
                "statistic": stat,
                "quantity": quantity,
                "method": method,
                "estimate": est,
                "lower": float(lo),
                "upper": float(hi),
                "n_groups": n,
            }
        )
        rep_cols[f"{stat}|{quantity}|{method}"] = r
    return Bootstrap(
        table=pd.DataFrame(rows),
        replicates=pd.DataFrame(rep_cols),
        groups=groups,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def macro_intervals(
    results: pd.DataFrame,
    methods: Sequence[str] | None = None,
    *,
    quantities: Sequence[str] = tuple(QUANTITIES),
    reference: str | None = "paper",
    differences: Sequence[tuple[str, str]] = (("bayes", "bayes-flat"),),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.9,
) -> Bootstrap:
    """Compute macro figures with family-group bootstrap intervals.

    Statistics (rows of the returned table):

    * ``macro``: macro average of each quantity (:data:`QUANTITIES`) per
      method; methods without values for a quantity (the paper's method has
      no intervals, hence no coverage) are skipped;
    * ``ratio``: macro ARE of a method / macro ARE of ``reference``, for the
      ARE quantities (method named ``"bayes/paper"``);
    * ``difference``: macro ARE of ``a`` minus that of ``b`` for each pair in
      ``differences`` present in the results (method named ``"bayes − bayes-flat"``).

    Ratios and differences are recomputed inside every replicate (same drawn
    groups for all statistics). Pass :func:`common_cells` for a comparison on
    identical cells.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (:func:`hiscale.backtesting.runner.backtest`).
    methods : sequence of str, optional
        Methods to include, in this order (default: every method in ``results``).
    quantities : sequence of str
        Keys of :data:`QUANTITIES` (default: all).
    reference : str, optional
        Method the ``ratio`` statistics divide by (``None``: no ratios).
    differences : sequence of (str, str)
        Method pairs ``(a, b)`` for the ``difference`` statistics.
    n_boot, seed, level
        As in :func:`group_bootstrap`.

    Returns
    -------
    Bootstrap
        ``table`` has one row per statistic.

    Raises
    ------
    ValueError
        If a method has no rows, ``level`` is outside (0, 1), ``n_boot < 1``
        or there is no family group.
    """
    methods = _methods(results, methods)
    tables = {}
    for q in quantities:
        column, _ = QUANTITIES[q]
        fam = _family_means(quantity_rows(results, q), column, methods)
        tables[q] = fam.groupby(level="group").mean()
    gv = pd.concat(tables, axis=1, names=["quantity", "method"])
    gv = gv.reindex(sorted(set().union(*(t.index for t in tables.values()))))
    stats: dict[tuple[str, str, str], Statistic] = {}

    def col(q: str, m: str) -> Statistic:
        return lambda df: df[(q, m)].to_numpy()

    for q in quantities:
        for m in methods:
            if (q, m) in gv.columns and gv[(q, m)].notna().any():
                stats[("macro", q, m)] = col(q, m)
    are = [q for q in quantities if QUANTITIES[q][0] == "are_pct"]
    for q in are:
        if reference is not None and reference in methods:
            for m in methods:
                if m != reference and ("macro", q, m) in stats:
                    stats[("ratio", q, f"{m}/{reference}")] = lambda df, q=q, m=m: (
                        df[(q, m)].to_numpy() / df[(q, reference)].to_numpy()
                    )
        for a, b in differences:
            if ("macro", q, a) in stats and ("macro", q, b) in stats:
                stats[("difference", q, f"{a} − {b}")] = lambda df, q=q, a=a, b=b: (
                    df[(q, a)].to_numpy() - df[(q, b)].to_numpy()
                )
    return group_bootstrap(gv, stats, n_boot=n_boot, seed=seed, level=level)
