"""Run a backtest: every (family, method, cell), scored, one row each.

Methods (:mod:`hiscale.backtesting.methods`) are named or passed as objects;
cells (:mod:`hiscale.backtesting.protocol`) are independent tasks
(:class:`CellTask`, :func:`run_cell`). They run in this process (default) or
as tasks on a Dask cluster (``client=``: a ``distributed.Client`` or a
scheduler spec, ``"local:N"`` or ``"tcp://HOST:PORT"``; see
:mod:`hiscale._distributed`). A method's ``prepare`` (e.g. the
leave-one-group-out prior of ``bayes``) is one task per family and method,
built once, which the family's cell tasks depend on. Same seed, same rows,
whatever the executor.

With ``out=`` every finished row is appended to a CSV file at once, so a
killed run loses nothing finished and ``resume=True`` runs only the cells not
in the file (key :data:`KEY`); at the end the file is rewritten in the
canonical order, identical to a fresh run's.

Scoring (Choshen et al. 2025): ``ARE = mean_i |L_i - L̂_i| / L_i`` in percent
over the scored target rows of the cell. Interval columns hold the mean
bounds over scored rows and ``covered*`` the fraction of scored rows inside
their interval (0 or 1 with ``target="final"`` and one target run);
``pit_mean`` is the mean PIT (predictive CDF at the actual loss) over them.
The ``prior`` column names the prior each row's method used (:func:`prior_label`).
"""

from __future__ import annotations

import csv
import datetime
import inspect
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from hiscale._util import central_interval, level_tag
from hiscale.backtesting import scores
from hiscale.backtesting.methods import Method, get_method
from hiscale.backtesting.protocol import Cell, make_cells, sizes
from hiscale.backtesting.scores import low_budget
from hiscale.data.branches import attach_prefixes
from hiscale.data.curves import Curves, CurvesError, family_groups

__all__ = [
    "COLUMNS",
    "KEY",
    "CellTask",
    "backtest",
    "method_summary",
    "prior_label",
    "read_rows",
    "run_cell",
    "summary_table",
    "usable_families",
]

#: Central interval probabilities of a backtest's new-run intervals (the
#: ``ci_prob`` argument of :func:`backtest`), in the order of their columns.
DEFAULT_CI_PROB: tuple[float, ...] = (0.8, 0.5)

_BEFORE_INTERVALS: tuple[str, ...] = (
    "family",
    "group",
    "method",
    "prior",
    "direction",
    "target",
    "k",
    "p",
    "seed",
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
)
_AFTER_INTERVALS: tuple[str, ...] = (
    "pit_mean",
    "rhat_max",
    "ess_min",
    "divergences",
    "flagged",
    "seconds",
    "status",
    "note",
)


def check_ci_prob(ci_prob: Sequence[float]) -> tuple[float, ...]:
    """Validate a backtest's interval probabilities.

    Parameters
    ----------
    ci_prob : sequence of float
        Central interval probabilities, each in (0, 1), no two with the same
        column tag.

    Returns
    -------
    tuple of float
        The probabilities as floats, in the order given.

    Raises
    ------
    ValueError
        One line naming the bad value.
    """
    levels = tuple(float(v) for v in np.atleast_1d(np.asarray(ci_prob, dtype=float)))
    if not levels:
        raise ValueError("ci_prob: give at least one interval probability")
    for v in levels:
        if not 0 < v < 1:
            raise ValueError(f"ci_prob: {v!r} is not in (0, 1)")
    tags = [level_tag(v) for v in levels]
    if len(set(tags)) < len(tags):
        raise ValueError(f"ci_prob: repeated level in {list(levels)}")
    return levels


def result_columns(ci_prob: Sequence[float] = DEFAULT_CI_PROB) -> tuple[str, ...]:
    """Return the columns of a backtest's rows for these interval probabilities.

    Each level ``P`` (in percent, :func:`level_tag`) adds ``lowerP``,
    ``upperP`` (new-run interval bounds, mean over the scored target rows)
    and ``coveredP`` (share of target rows inside), after ``are_pct``.

    Parameters
    ----------
    ci_prob : sequence of float
        Interval probabilities (:func:`check_ci_prob`).

    Returns
    -------
    tuple of str
        The column names, in order.
    """
    block = []
    for lv in check_ci_prob(ci_prob):
        tag = level_tag(lv)
        block += [f"lower{tag}", f"upper{tag}", f"covered{tag}"]
    return (*_BEFORE_INTERVALS, *block, *_AFTER_INTERVALS)


#: The columns of a backtest with the default :data:`DEFAULT_CI_PROB`.
COLUMNS: tuple[str, ...] = result_columns(DEFAULT_CI_PROB)

#: Columns renamed since a result file could be written: old name -> new name.
#: ``resume`` rejects a file with an old name (:func:`read_rows` says which).
RENAMED: dict[str, str] = {"pit": "pit_mean"}

#: Columns that identify a cell's row (``resume`` skips cells whose key is in the file).
KEY: tuple[str, ...] = ("family", "method", "direction", "target", "k", "p", "seed")

_STR = frozenset({"family", "group", "method", "prior", "direction", "target", "target_run"})
_INT = frozenset({"k", "seed", "n_sizes_used", "n_train_rows", "n_target_rows"})
_BOOL = frozenset({"flagged"})
#: Column -> type of its values (float for the others; ``status`` and ``note`` are str).
#: Interval columns (any level) are floats too: look types up with ``TYPES.get(c, float)``.
TYPES: dict[str, type] = {
    c: str
    if c in _STR or c in ("status", "note")
    else int
    if c in _INT
    else bool
    if c in _BOOL
    else float
    for c in COLUMNS
}


@dataclass(frozen=True)
class CellTask:
    """Everything one cell needs: picklable, independent of other cells."""

    cell: Cell
    method: Method
    state: Any
    target: str
    seed: int
    group: str = ""
    ci_prob: tuple[float, ...] = DEFAULT_CI_PROB


def prior_label(state: Any) -> str:
    """Return the ``prior`` column: the label of the prior a method used.

    A method's per-family state is its prior when it has a ``label``
    (:attr:`hiscale.priors.prior.Prior.label`: ``corpus-v1``, ``lofo-<group>``,
    ``flat``, ``flat (no population in unit ...)``).

    Parameters
    ----------
    state : Any
        What the method's ``prepare`` returned.

    Returns
    -------
    str
        The label, or ``"none"`` for a method without a prior.
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
        "seed": task.seed,
        "n_sizes_used": cell.n_sizes_used,
        "n_train_rows": len(cell.train.frame),
        "n_fit_rows": np.nan,
        "target_run": runs[0] if len(runs) == 1 else f"{len(runs)} runs",
        "target_params": float(t["params"].iloc[0]) if len(t) else np.nan,
        "target_tokens": float(t["tokens"].max()) if len(t) else np.nan,
        "n_target_rows": len(t),
        "actual": float(t["loss"].mean()) if len(t) else np.nan,
        "predicted": np.nan,
        "are_pct": np.nan,
        **{
            f"{kind}{level_tag(lv)}": np.nan
            for lv in task.ci_prob
            for kind in ("lower", "upper", "covered")
        },
        "pit_mean": np.nan,
        "rhat_max": np.nan,
        "ess_min": np.nan,
        "divergences": np.nan,
        "flagged": False,
        "seconds": 0.0,
        "status": "ok",
        "note": "",
    }


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell and return its result row.

    A method's ``ValueError``, ``RuntimeError``, ``CurvesError`` or
    ``FloatingPointError`` becomes the row's ``status`` (NaN scores), so one
    bad cell does not stop a grid; the failure count is reported per method.

    Parameters
    ----------
    task : CellTask
        The cell, the method and its per-family state, target and seed.

    Returns
    -------
    dict
        One row with :func:`result_columns` of ``task.ci_prob``: ARE (mean
        over target rows of ``|actual - median| / actual``, in %), new-run
        interval bounds and coverage at each level (from the method's
        predictive draws, or its own intervals), mean PIT, diagnostics, time
        and status.
    """
    row = _nan_row(task)
    cell = task.cell
    if len(cell.train.frame) == 0:
        row["status"] = "no training rows after filters"
        return row
    if len(cell.target.frame) == 0:
        row["status"] = f"no target rows: {getattr(cell, 'note', '') or 'none left'}"
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
    # what the cell substituted (e.g. a horizon unknown, a branch continued from its
    # root) and what the method did, both in the row
    row["note"] = "; ".join(n for n in (getattr(cell, "note", ""), pred.note) if n)
    row["n_fit_rows"] = pred.n_fit_rows if pred.n_fit_rows is not None else np.nan
    actual = cell.target.frame["loss"].to_numpy()
    med = np.asarray(pred.median, dtype=float)
    if pred.status == "ok" and not np.all(np.isfinite(med)):
        row["status"] = "non-finite prediction"
    if row["status"] == "ok":
        row["predicted"] = float(med.mean())
        row["are_pct"] = float(np.mean(np.abs(actual - med) / actual) * 100)
        for level in task.ci_prob:
            tag = level_tag(level)
            if level in pred.intervals:
                lo, hi = (np.asarray(v, dtype=float) for v in pred.intervals[level])
            elif pred.draws is not None:
                lo, hi = central_interval(np.asarray(pred.draws, dtype=float), level, axis=0)
            else:
                continue
            row[f"lower{tag}"] = float(lo.mean())
            row[f"upper{tag}"] = float(hi.mean())
            row[f"covered{tag}"] = float(np.mean((actual >= lo) & (actual <= hi)))
        if pred.pit is not None:
            row["pit_mean"] = float(np.mean(pred.pit))
    for key in ("rhat_max", "ess_min", "divergences", "flagged"):
        if key in pred.diagnostics:
            row[key] = pred.diagnostics[key]
    return row


def usable_families(curves: Curves) -> list[str]:
    """Return the families with >= 3 distinct sizes (the protocol's requirement).

    Parameters
    ----------
    curves : Curves
        The table.

    Returns
    -------
    list of str
        Usable families, in table order.
    """
    out = []
    for fam in curves.families:
        if len(sizes(curves.family(fam))) >= 3:
            out.append(fam)
    return out


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """Convert a row to plain Python values of :data:`TYPES` (what the CSV stream round-trips)."""
    out = {}
    for col in row:
        v, kind = row[col], TYPES.get(col, float)
        if kind is float:
            out[col] = math.nan if v is None else float(v)
        elif kind is bool:
            out[col] = bool(v)
        else:
            out[col] = kind(v)
    return out


def _text(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)  # repr round-trips a float exactly
    return str(v)


def _parse(col: str, text: str) -> Any:
    kind = TYPES.get(col, float)
    if kind is float:
        return math.nan if text in ("", "nan", "NaN") else float(text)
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(f"column {col!r}: expected True or False, got {text!r}")
        return text == "True"
    return kind(text)


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row[c] for c in KEY)


def _frame(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """Typed rows (:func:`_typed`) -> the result table, with the same dtypes every time."""
    frame = pd.DataFrame(list(rows), columns=list(columns))
    dtypes = {int: "int64", bool: "bool", float: "float64"}
    return frame.astype(
        {c: dtypes[TYPES.get(c, float)] for c in columns if TYPES.get(c, float) in dtypes}
    )


def read_rows(
    path: str | os.PathLike, ci_prob: Sequence[float] = DEFAULT_CI_PROB
) -> list[dict[str, Any]]:
    """Read the rows of a backtest CSV written by ``backtest(out=...)``, typed exactly as computed.

    A last line cut short (a run killed while writing it) is ignored.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    ci_prob : sequence of float
        The interval probabilities the file was written with (its header is
        :func:`result_columns` of them).

    Returns
    -------
    list of dict
        One dict per row, values typed as :data:`TYPES` (floats round-trip
        exactly).

    Raises
    ------
    ValueError
        One line naming the file, when its header is not
        :func:`result_columns` of ``ci_prob`` or a value does not parse.
    """
    path = Path(path)
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = list(csv.reader(text.splitlines()))
    if not lines:
        return []
    header = tuple(lines[0])
    columns = result_columns(ci_prob)
    if header != columns:
        if header == columns[:-1]:
            raise ValueError(
                f"{path}: written by an older hiscale (no 'note' column): resume into a new file"
            )
        renamed = [f"{o!r} (now {n!r})" for o, n in RENAMED.items() if o in header]
        if renamed and tuple(RENAMED.get(c, c) for c in header) == columns:
            raise ValueError(
                f"{path}: written by an older hiscale: column {', '.join(renamed)}; "
                "rename it in the first line to resume"
            )
        if (
            header[: len(_BEFORE_INTERVALS)] == _BEFORE_INTERVALS
            and header[len(header) - len(_AFTER_INTERVALS) :] == _AFTER_INTERVALS
        ):
            found = [c[len("covered") :] for c in header if c.startswith("covered")]
            want = [level_tag(v) for v in check_ci_prob(ci_prob)]
            raise ValueError(
                f"{path}: written with interval levels {', '.join(found)}% (ci_prob), "
                f"not {', '.join(want)}%; resume with the ci_prob that wrote it"
            )
        raise ValueError(
            f"{path}: not a backtest file of this hiscale version (columns "
            f"{', '.join(lines[0][:5])}, ... instead of {', '.join(columns[:5])}, ...)"
        )
    rows = []
    for n, values in enumerate(lines[1:], start=2):
        if len(values) != len(columns):
            raise ValueError(f"{path}: line {n} has {len(values)} fields, not {len(columns)}")
        try:
            rows.append({c: _parse(c, v) for c, v in zip(columns, values, strict=True)})
        except ValueError as err:
            raise ValueError(f"{path}: line {n}: {err}") from None
    return rows


def method_settings(method: Method) -> dict[str, Any]:
    """Return what a method's results depend on, for the resume check.

    A method may say it itself (a ``settings()`` method returning a dict);
    a dataclass method (``bayes``, ``bayes-flat``) gives its fields (a prior
    object by its label and location); otherwise only its class and name.

    Parameters
    ----------
    method : Method
        A backtest method.

    Returns
    -------
    dict
        JSON-able settings (values that are not JSON are written with ``str``).
    """
    import dataclasses

    own = getattr(method, "settings", None)
    if callable(own):
        return {"name": method.name, **own()}
    out: dict[str, Any] = {"name": method.name, "class": type(method).__qualname__}
    if dataclasses.is_dataclass(method):
        for f in dataclasses.fields(method):
            if f.name == "progress":  # what is printed, not what is computed
                continue
            v = getattr(method, f.name)
            if dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
            elif hasattr(v, "label") and hasattr(v, "loc"):  # a Prior object
                v = {"label": v.label, "loc": np.asarray(v.loc).tolist()}
            out[f.name] = v
    return out


def _settings_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".settings.json")


def _check_settings(out: str | os.PathLike, settings: dict[str, Any], *, resume: bool) -> None:
    """Write the run's settings beside ``out``; on resume, refuse other settings in one line."""
    import json

    from hiscale._util import cache_key, json_default

    path = _settings_path(out)
    record = {"key": cache_key(settings, sort_keys=True), "settings": settings}
    if resume and Path(out).is_file() and Path(out).stat().st_size:
        if not path.is_file():
            read_rows(out, settings["ci_prob"])  # not a backtest file: that error first
            warnings.warn(
                f"{out}: no {path.name} beside it (written by an older hiscale): "
                "resuming without checking that the settings are the same",
                stacklevel=3,
            )
        else:
            old = json.loads(path.read_text())
            if old.get("key") != record["key"]:
                new = json.loads(json.dumps(settings, default=json_default))
                diff = [k for k in new if old["settings"].get(k) != new[k]]
                diff += [k for k in old["settings"] if k not in new]
                raise ValueError(
                    f"{out}: written with other settings ({', '.join(diff) or 'unknown'} "
                    f"differ, see {path.name}); resume with the arguments that wrote it"
                )
            return
    path.write_text(json.dumps(record, indent=1, sort_keys=True, default=json_default) + "\n")


class _Stream:
    """Append-only CSV of finished rows (flushed per row), rewritten in order at the end."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resume: bool,
        ci_prob: Sequence[float] = DEFAULT_CI_PROB,
    ) -> None:
        self.path = Path(path)
        self.columns = result_columns(ci_prob)
        self.done: list[dict[str, Any]] = []
        if resume and self.path.is_file() and self.path.stat().st_size:
            self.done = read_rows(self.path, ci_prob)
            text = self.path.read_text()
            if not text.endswith("\n"):  # drop a line cut short by a kill
                self.path.write_text(text[: text.rfind("\n") + 1])
            self.file: TextIO = self.path.open("a", newline="")
            self.writer = csv.writer(self.file, lineterminator="\n")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("w", newline="")
            self.writer = csv.writer(self.file, lineterminator="\n")
            self.writer.writerow(self.columns)
            self.file.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow([_text(row[c]) for c in self.columns])
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def finish(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite the file with ``rows`` (canonical order), atomically."""
        self.close()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(self.columns)
            w.writerows([_text(r[c]) for c in self.columns] for r in rows)
        tmp.replace(self.path)


class _Progress:
    """Cells done, failures and ETA on stderr: a tqdm bar on a terminal, else one line per cell."""

    def __init__(self, enabled: bool, total: int, done: int = 0, failed: int = 0, *, file=None):
        self.enabled, self.total, self.done, self.failed = enabled, total, done, failed
        self.new = 0
        self.file = file if file is not None else sys.stderr
        self.start = time.perf_counter()
        self.bar = None
        if enabled and getattr(self.file, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="cell", file=self.file, dynamic_ncols=True
            )
            self.bar.set_postfix_str(f"failed {failed}")

    def eta(self) -> str:
        if not self.new:
            return "?"
        left = (time.perf_counter() - self.start) / self.new * (self.total - self.done)
        return str(datetime.timedelta(seconds=round(left)))

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.new += 1
        self.failed += row["status"] != "ok"
        if not self.enabled:
            return
        what = f"{row['family']} {row['method']} k={row['k']} p={row['p']:.1f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"failed {self.failed}, last {what}", refresh=False)
            self.bar.update(1)
            return
        self.file.write(
            f"[{self.done}/{self.total}] {what} ARE={row['are_pct']:.2f}% {row['status']} "
            f"| failed {self.failed} | ETA {self.eta()}\n"
        )
        self.file.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _takes_client(method: Method) -> bool:
    try:
        return "client" in inspect.signature(method.prepare).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _from_hiscale(w: warnings.WarningMessage) -> bool:
    here = Path(__file__).resolve().parents[1]
    return w.category.__module__.startswith("hiscale") or Path(w.filename).resolve().is_relative_to(
        here
    )


def _prepare_task(method: Method, corpus: Curves, family: str) -> tuple[Any, list]:
    """``method.prepare`` in a Dask worker; hiscale's warnings come back to be re-emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if _takes_client(method):
            from distributed import get_client

            # its own tasks wait in hiscale._distributed.waiting (the worker is free meanwhile)
            state = method.prepare(corpus, family, client=get_client())
        else:
            state = method.prepare(corpus, family)
    return state, [(w.category, str(w.message)) for w in caught if _from_hiscale(w)]


def _same(x: Any) -> Any:
    return x


def _cell_task(
    plan: dict[str, Any],
    i: int,
    kp: tuple[int, float],
    family: Curves,
    prepared: tuple[Any, list],
) -> dict[str, Any]:
    """Cell ``i`` of ``plan`` in a worker, rebuilt there from its family's rows.

    The plan (every cell's method, seed, ... without rows) and each family's rows
    reach a worker once; the cell itself is ``make_cells``' for ``(k, p)``.
    """
    cell = make_cells(family, grid=[kp], **plan["cells_kw"])[0]
    return run_cell(replace(plan["tasks"][i], cell=cell, state=prepared[0]))


def _run_in_process(groups, tasks, corpus, record) -> None:
    for fam, m, idxs in groups:
        state = m.prepare(corpus, fam)
        for i in idxs:
            record(i, run_cell(replace(tasks[i], state=state)))


#: Cell tasks sent to the scheduler per graph update.
_CHUNK = 200


def _run_on(client, groups, tasks, corpus, record, families, cells_kw) -> None:
    """Prepare and cell tasks on a Dask ``client``; ``record(i, row)`` as rows arrive.

    Every shared input is one task of its own (not scattered data), so whatever
    a dead worker held is recomputed from the scheduler's copy of the task. The
    cell tasks' arguments are small (indices, futures): Dask hashes arguments,
    and cells carry data frames.
    """
    from distributed import as_completed

    from hiscale._distributed import call, worker_settings

    settings = worker_settings()
    run = uuid.uuid4().hex[:10]
    data = client.submit(_same, corpus, key=f"hiscale-corpus-{run}")
    plan = client.submit(
        _same,
        {"tasks": [replace(t, cell=None) for t in tasks], "cells_kw": cells_kw},
        key=f"hiscale-plan-{run}",
    )
    fams = list(dict.fromkeys(fam for fam, _, _ in groups))
    rows_of = dict(
        zip(
            fams,
            client.map(
                _same, [families[f] for f in fams], key=[f"hiscale-rows-{run}-{f}" for f in fams]
            ),
            strict=True,
        )
    )
    g = len(groups)
    preps = client.map(
        call,
        [settings] * g,
        [_prepare_task] * g,
        [m for _, m, _ in groups],
        [data] * g,
        [fam for fam, _, _ in groups],
        key=[f"hiscale-prepare-{run}-{j}" for j in range(g)],
    )  # held to the end: a lost cell result is recomputed from its prepare task
    index = [i for _, _, idxs in groups for i in idxs]
    dep = [preps[j] for j, (_, _, idxs) in enumerate(groups) for _ in idxs]
    cells = []
    for at in range(0, len(index), _CHUNK):  # graph updates of moderate size
        part = index[at : at + _CHUNK]
        cells += client.map(
            call,
            [settings] * len(part),
            [_cell_task] * len(part),
            [plan] * len(part),
            part,
            [(tasks[i].cell.k, tasks[i].cell.p) for i in part],
            [rows_of[tasks[i].cell.family] for i in part],
            dep[at : at + _CHUNK],
            key=[f"hiscale-cell-{run}-{i}" for i in part],
        )
    what: dict[str, int | None] = {f.key: None for f in preps}
    what.update({f.key: i for f, i in zip(cells, index, strict=True)})
    done, since = [], time.perf_counter()
    try:
        for batch in as_completed([*preps, *cells], with_results=True).batches():
            for fut, result in batch:
                i = what.pop(fut.key)
                if i is None:  # a prepare task: its warnings, said here
                    for category, message in result[1]:
                        warnings.warn(message, category, stacklevel=4)
                else:
                    record(i, result)
                    done.append(fut)
            if len(done) >= _CHUNK or time.perf_counter() - since > 10:
                client.cancel(done)  # recorded: the scheduler may forget them (one message)
                done, since = [], time.perf_counter()
    finally:
        client.cancel([*cells, *preps, *rows_of.values(), plan, data])


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
    client: Any = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    ci_prob: Sequence[float] = DEFAULT_CI_PROB,
    runs_extra: pd.DataFrame | None = None,
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
    target : {"last30", "final", "continue"}
        Scored target rows: ``last30`` = rows with ``tokens >= 0.7 x`` the
        target run's largest token count, ``final`` = each target run's last
        checkpoint; ``continue`` = the continue-a-run cells
        (:func:`hiscale.backtesting.protocol.continue_cells`: ``k`` = the
        held size's rank, ``p`` = fraction of each run's schedule; ``grid``
        may then also be a list of ``p``).
    min_tokens : float
        Training rows need ``tokens > min_tokens`` (0 disables).
    direction : {"up", "down"}
        Predict the largest size from the smallest ones (``up``), or the
        smallest from the largest ones.
    include_k1 : bool, optional
        Add k = 1 cells. Default: True when a Bayesian method is requested.
    seed : int
        Base seed; every cell gets the same seed so methods are comparable.
    jobs : int
        Shorthand for ``client="local:JOBS"`` when > 1 (1: in-process).
    progress : bool
        Cells done, failures and ETA on stderr (a bar on a terminal, else one
        line per finished cell).
    corpus : Curves, optional
        Data used by ``prepare`` (e.g. to build leave-one-family-out priors);
        defaults to ``curves``.
    method_options : dict, optional
        ``{method_name: {option: value}}`` passed to the method factories.
    client : distributed.Client or str, optional
        Run cells (and each family's ``prepare``) as Dask tasks: an existing
        client, ``"local"``/``"local:N"`` (a local cluster of N single-threaded
        worker processes, closed at the end) or a scheduler address
        ``"tcp://HOST:PORT"``. Default: in this process. The rows are the same.
    out : path, optional
        CSV file every finished row is appended to (flushed per row); at the
        end it holds the returned table in its order.
    resume : bool
        Keep the rows already in ``out`` and run only the missing cells
        (:data:`KEY`); the result equals a fresh run's. The run's settings
        (families, methods with their settings (:func:`method_settings`),
        grid, target, token cut, direction, k = 1, seed, ``ci_prob``, hashes of
        the data) are written to ``OUT.settings.json``; resuming with other
        settings is a one-line error.
    ci_prob : sequence of float
        Central probabilities of the new-run intervals scored per cell (the
        one place the levels are set): each adds ``lowerP, upperP, coveredP``
        (P in percent, :func:`result_columns`). Default (0.8, 0.5).
    runs_extra : pandas.DataFrame, optional
        The corpus's ``runs_extra.csv``. With ``target="continue"`` each
        family's branch runs are joined to their root runs' rows, looked up in
        ``curves`` (:func:`hiscale.data.branches.attach_prefixes`; the rows'
        log says what was added), so a cooldown branch is predicted from the
        first ``p`` of its root. Ignored for other targets.

    Returns
    -------
    pandas.DataFrame
        One row per (family, method, k, p) with :func:`result_columns` of
        ``ci_prob``, families in the order given, then methods, then cells.

    Raises
    ------
    ValueError
        If both ``jobs > 1`` and ``client`` are given, ``resume`` is set
        without ``out``, or an argument (scheduler, grid, target, direction,
        method) is unknown.
    """
    if jobs > 1:
        if client is not None:
            raise ValueError("give jobs or client, not both (jobs=N means client='local:N')")
        client = f"local:{int(jobs)}"
    if resume and out is None:
        raise ValueError("resume=True needs out= (the file of the run to resume)")
    ci_prob = check_ci_prob(ci_prob)
    if isinstance(client, str):
        from hiscale._distributed import parse_scheduler

        parse_scheduler(client)  # a bad spec fails before any work
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
    plan: list[tuple[str, Method, list[int]]] = []
    cells_kw = dict(target=target, min_tokens=min_tokens, direction=direction)
    family_rows = {}
    for fam in fams:
        family_rows[fam] = curves.family(fam)
        if runs_extra is not None and target == "continue":
            family_rows[fam] = attach_prefixes(family_rows[fam], runs_extra, source=curves)
        cells = make_cells(family_rows[fam], grid=grid, include_k1=include_k1, **cells_kw)
        for m in objs:
            plan.append((fam, m, list(range(len(tasks), len(tasks) + len(cells)))))
            tasks.extend(
                CellTask(c, m, None, target, seed, group_of.get(fam, fam), ci_prob) for c in cells
            )
    keys = [_key(_typed(_nan_row(t))) for t in tasks]
    rows: dict[int, dict[str, Any]] = {}
    stream = None
    if out is not None:
        if len(set(keys)) < len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"two cells share the key {dict(zip(KEY, dup, strict=True))}")
        _check_settings(
            out,
            {
                "families": fams,
                "methods": [method_settings(m) for m in objs],
                "grid": grid,
                "target": target,
                "min_tokens": min_tokens,
                "direction": direction,
                "include_k1": include_k1,
                "seed": seed,
                "ci_prob": list(ci_prob),
                "data": curves.data_hash(),
                "corpus": corpus.data_hash(),
                **(
                    {"branches": {f: family_rows[f].data_hash() for f in fams}}
                    if runs_extra is not None and target == "continue"
                    else {}
                ),
            },
            resume=resume,
        )
        stream = _Stream(out, resume=resume, ci_prob=ci_prob)
        where = {k: i for i, k in enumerate(keys)}
        for n, row in enumerate(stream.done, start=2):
            if _key(row) not in where:
                stream.close()
                raise ValueError(
                    f"{out}: line {n} ({dict(zip(KEY, _key(row), strict=True))}) is not a "
                    "cell of this run; resume with the arguments that wrote it"
                )
            rows[where[_key(row)]] = row
    pending = [(fam, m, [i for i in idxs if i not in rows]) for fam, m, idxs in plan]
    pending = [g for g in pending if g[2]]
    tick = _Progress(
        progress, len(tasks), len(rows), sum(r["status"] != "ok" for r in rows.values())
    )

    def record(i: int, row: dict[str, Any]) -> None:
        rows[i] = _typed(row)
        if stream is not None:
            stream.write(rows[i])
        tick.update(rows[i])

    try:
        if client is None:
            _run_in_process(pending, tasks, corpus, record)
        else:
            from hiscale._distributed import open_client

            with open_client(client) as c:
                _run_on(c, pending, tasks, corpus, record, family_rows, cells_kw)
    finally:
        tick.close()
        if stream is not None and len(rows) < len(tasks):
            stream.close()
    ordered = [rows[i] for i in range(len(tasks))]
    if stream is not None:
        stream.finish(ordered)
    return _frame(ordered, result_columns(ci_prob))


def summary_table(results: pd.DataFrame, *, value: str = "are_pct") -> pd.DataFrame:
    """Macro-average a score like the paper's heatmap, family groups counted once.

    Failed cells are excluded (their count is in ``status``); pass
    :func:`hiscale.backtesting.scores.common_cells` of the results to compare
    methods on identical cells.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows returned by :func:`backtest`.
    value : str, default "are_pct"
        Column to average.

    Returns
    -------
    pandas.DataFrame
        Rows = number of sizes in the training rows (1 … 7, 8+), columns =
        ``(method, p)``; see :func:`hiscale.backtesting.scores.heatmap`.
    """
    return scores.heatmap(results, value)


def method_summary(
    results: pd.DataFrame, *, ci_prob: Sequence[float] = DEFAULT_CI_PROB
) -> pd.DataFrame:
    """Summarise each method in one line.

    Each method is summarised on its own fitted cells; family groups are
    counted once (a group of sibling families weighs as one family).

    Parameters
    ----------
    results : pandas.DataFrame
        Rows returned by :func:`backtest`.
    ci_prob : sequence of float
        The interval probabilities the backtest was run with.

    Returns
    -------
    pandas.DataFrame
        One row per method: cells, failed, fitted, flagged (unconverged fits
        among the fitted cells), macro ARE (all cells and low-budget cells),
        ``coverageP`` per level (P in percent), median seconds per cell.
    """
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
                **{
                    f"coverage{level_tag(lv)}": _macro(ok, f"covered{level_tag(lv)}")
                    for lv in ci_prob
                },
                "median_seconds": float(g["seconds"].median()),
            }
        )
    return pd.DataFrame(out)
