"""Run a backtest: every (family, method, cell), scored, one row each.

Methods (:mod:`hiscale.backtesting.methods`) are named or passed as objects;
cells (:mod:`hiscale.backtesting.protocol`) are independent tasks
(:class:`CellTask`, :func:`run_cell`), so they can run in a process pool.

Scoring (Choshen et al. 2025): ``ARE = mean_i |L_i - L̂_i| / L_i`` in percent
over the scored target rows of the cell. Interval columns hold the mean
bounds over scored rows and ``covered*`` the fraction of scored rows inside
their interval (0 or 1 with ``target="final"`` and one target run). The
``prior`` column names the prior each row's method used (:func:`prior_label`).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hiscale._config import configure, current_settings
from hiscale.backtesting import scores
from hiscale.backtesting.methods import Method, get_method
from hiscale.backtesting.protocol import Cell, make_cells, sizes
from hiscale.backtesting.scores import low_budget
from hiscale.data.curves import Curves, CurvesError, family_groups

__all__ = [
    "COLUMNS",
    "CellTask",
    "backtest",
    "method_summary",
    "prior_label",
    "run_cell",
    "summary_table",
    "usable_families",
]

COLUMNS: tuple[str, ...] = (
    "family",
    "group",
    "method",
    "prior",
    "direction",
    "target",
    "k",
    "p",
    "n_sizes_used",
    "n_train_rows",
    "n_fit_rows",
    "target_run",
    "target_params",
    "target_tokens",
    "n_target_rows",
    "actual",
    "predicted",
    "are_pct",
    "lower80",
    "upper80",
    "covered80",
    "lower50",
    "upper50",
    "covered50",
    "pit",
    "rhat_max",
    "ess_min",
    "divergences",
    "flagged",
    "seconds",
    "status",
)


@dataclass(frozen=True)
class CellTask:
    """Everything one cell needs: picklable, independent of other cells."""

    cell: Cell
    method: Method
    state: Any
    target: str
    seed: int
    group: str = ""


def prior_label(state: Any) -> str:
    """The ``prior`` column: the label of the prior a method used, ``"none"`` without one.

    A method's per-family state is its prior when it has a ``label``
    (:attr:`hiscale.priors.prior.Prior.label`: ``corpus-v1``, ``lofo-<group>``,
    ``flat``, ``flat (no population in unit ...)``).
    """
    label = getattr(state, "label", None)
    return str(label) if label else "none"


def _nan_row(task: CellTask) -> dict[str, Any]:
    cell = task.cell
    t = cell.target.frame
    runs = sorted(t["run"].unique().tolist())
    return {
        "family": cell.family,
        "group": task.group,
        "method": task.method.name,
        "prior": prior_label(task.state),
        "direction": cell.direction,
        "target": task.target,
        "k": cell.k,
        "p": cell.p,
        "n_sizes_used": cell.n_sizes_used,
        "n_train_rows": len(cell.train.frame),
        "n_fit_rows": np.nan,
        "target_run": runs[0] if len(runs) == 1 else f"{len(runs)} runs",
        "target_params": float(t["params"].iloc[0]),
        "target_tokens": float(t["tokens"].max()),
        "n_target_rows": len(t),
        "actual": float(t["loss"].mean()),
        "predicted": np.nan,
        "are_pct": np.nan,
        "lower80": np.nan,
        "upper80": np.nan,
        "covered80": np.nan,
        "lower50": np.nan,
        "upper50": np.nan,
        "covered50": np.nan,
        "pit": np.nan,
        "rhat_max": np.nan,
        "ess_min": np.nan,
        "divergences": np.nan,
        "flagged": False,
        "seconds": 0.0,
        "status": "ok",
    }


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell and return its result row (failures become a status)."""
    row = _nan_row(task)
    cell = task.cell
    if len(cell.train.frame) == 0:
        row["status"] = "no training rows after filters"
        return row
    start = time.perf_counter()
    try:
        pred = task.method(cell, task.state, seed=task.seed)
    except (ValueError, RuntimeError, CurvesError, FloatingPointError) as err:
        row["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        row["seconds"] = time.perf_counter() - start
        return row
    row["seconds"] = time.perf_counter() - start
    row["status"] = pred.status
    row["n_fit_rows"] = pred.n_fit_rows if pred.n_fit_rows is not None else np.nan
    actual = cell.target.frame["loss"].to_numpy()
    med = np.asarray(pred.median, dtype=float)
    if pred.status == "ok" and not np.all(np.isfinite(med)):
        row["status"] = "non-finite prediction"
    if row["status"] == "ok":
        row["predicted"] = float(med.mean())
        row["are_pct"] = float(np.mean(np.abs(actual - med) / actual) * 100)
        for level, tag in ((0.8, "80"), (0.5, "50")):
            if level in pred.intervals:
                lo, hi = (np.asarray(v, dtype=float) for v in pred.intervals[level])
                row[f"lower{tag}"] = float(lo.mean())
                row[f"upper{tag}"] = float(hi.mean())
                row[f"covered{tag}"] = float(np.mean((actual >= lo) & (actual <= hi)))
        if pred.pit is not None:
            row["pit"] = float(np.mean(pred.pit))
    for key in ("rhat_max", "ess_min", "divergences", "flagged"):
        if key in pred.diagnostics:
            row[key] = pred.diagnostics[key]
    return row


def usable_families(curves: Curves) -> list[str]:
    """Families with >= 3 distinct sizes (the protocol's requirement)."""
    out = []
    for fam in curves.families:
        if len(sizes(curves.family(fam))) >= 3:
            out.append(fam)
    return out


def _progress(enabled: bool, total: int) -> Callable[[dict[str, Any]], None]:
    import sys

    count = {"n": 0}
    tty = sys.stderr.isatty()

    def tick(row: dict[str, Any]) -> None:
        count["n"] += 1
        if not enabled:
            return
        msg = (
            f"[{count['n']}/{total}] {row['family']} {row['method']} k={row['k']} "
            f"p={row['p']:.1f} ARE={row['are_pct']:.2f}% {row['status']}"
        )
        if tty:
            sys.stderr.write("\r" + msg[:120].ljust(120))
            if count["n"] == total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    return tick


def backtest(
    curves: Curves,
    *,
    families: Sequence[str] | str = "all",
    methods: Sequence[str | Method] = ("paper",),
    grid: str | Sequence[tuple[int, float]] = "paper",
    target: str = "last30",
    min_tokens: float = 1e10,
    direction: str = "up",
    include_k1: bool | None = None,
    seed: int = 0,
    jobs: int = 1,
    progress: bool = False,
    corpus: Curves | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Run the paper's backtest grid for some families and methods.

    Parameters
    ----------
    curves : Curves
        Validated curves (one metric per family).
    families : "all", str or sequence of str
        ``"all"`` = every usable family (>= 3 sizes); a single name is one family.
    methods : sequence of str or Method
        Registered names (``"paper"``, ``"bayes"``, ``"bayes-flat"``) or objects.
    grid : {"paper", "quick", "sub"} or list of (k, p)
        See :data:`hiscale.backtesting.protocol.GRIDS`.
    target : {"last30", "final"}
    min_tokens : float
        Training rows need ``tokens > min_tokens`` (0 disables).
    direction : {"up", "down"}
    include_k1 : bool, optional
        Add k = 1 cells. Default: True when a Bayesian method is requested.
    seed : int
        Base seed; every cell gets the same seed so methods are comparable.
    jobs : int
        Worker processes (``spawn``); 1 runs in-process.
    progress : bool
        Print one line per finished cell to stderr.
    corpus : Curves, optional
        Data used by ``prepare`` (e.g. to build leave-one-family-out priors);
        defaults to ``curves``.
    method_options : dict, optional
        ``{method_name: {option: value}}`` passed to the method factories.

    Returns
    -------
    pandas.DataFrame
        One row per (family, method, k, p) with :data:`COLUMNS`.
    """
    families = [families] if isinstance(families, str) else list(families)
    fams = usable_families(curves) if families == ["all"] else families
    if not fams:
        raise CurvesError("column 'params': no usable family (a family needs >= 3 sizes)")
    method_options = method_options or {}
    objs: list[Method] = [
        m if not isinstance(m, str) else get_method(m, **method_options.get(m, {})) for m in methods
    ]
    if include_k1 is None:
        include_k1 = any(m.name != "paper" for m in objs)
    corpus = corpus if corpus is not None else curves
    group_of = family_groups(curves)
    tasks: list[CellTask] = []
    for fam in fams:
        cells = make_cells(
            curves.family(fam),
            grid=grid,
            target=target,
            min_tokens=min_tokens,
            direction=direction,
            include_k1=include_k1,
        )
        for m in objs:
            state = m.prepare(corpus, fam)
            tasks.extend(CellTask(c, m, state, target, seed, group_of.get(fam, fam)) for c in cells)
    tick = _progress(progress, len(tasks))
    rows: list[dict[str, Any]] = []
    if jobs > 1:
        ctx = mp.get_context("spawn")
        # fresh interpreters: configure JAX in each worker the way it is set up here
        init = functools.partial(configure, **current_settings())
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=init) as pool:
            for row in pool.map(run_cell, tasks):
                tick(row)
                rows.append(row)
    else:
        for task in tasks:
            row = run_cell(task)
            tick(row)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summary_table(results: pd.DataFrame, *, value: str = "are_pct") -> pd.DataFrame:
    """Macro average like the paper's heatmap, family groups counted once.

    Rows = number of sizes in the training rows (1 … 7, 8+), columns =
    ``(method, p)``; see :func:`hiscale.backtesting.scores.heatmap`. Failed cells are
    excluded (their count is in ``status``); pass
    :func:`hiscale.backtesting.scores.common_cells` of the results to compare methods on
    identical cells.
    """
    return scores.heatmap(results, value)


def method_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One line per method: macro ARE and coverage (family groups counted once), failures,
    flagged fits over fitted cells, time. Each method is summarised on its own fitted cells."""
    out = []
    for name, g in results.groupby("method", sort=False):
        ok = g[scores.fitted(g)]

        def _macro(rows: pd.DataFrame, value: str, name: str = name) -> float:
            return float(scores.macro(rows, value, [name]).iloc[0]) if len(rows) else np.nan

        out.append(
            {
                "method": name,
                "cells": len(g),
                "failed": int((g["status"] != "ok").sum()),
                "fitted": len(ok),
                "flagged": int(ok["flagged"].fillna(False).astype(bool).sum()),
                "macro_are": _macro(ok, "are_pct"),
                "macro_are_low_budget": _macro(ok[low_budget(ok)], "are_pct"),
                "coverage80": _macro(ok, "covered80"),
                "coverage50": _macro(ok, "covered50"),
                "median_seconds": float(g["seconds"].median()),
            }
        )
    return pd.DataFrame(out)
