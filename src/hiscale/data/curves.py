"""The "curves" table: schema, validation and loading.

One row per (run, checkpoint, metric) with the loss at that checkpoint.
Required columns are ``family, run, params, tokens, loss``; the optional
columns of the corpus (``metric, primary, is_final, seed, flops, run_tokens,
schedule, lr, dataset, arch, source, loss_unit``) and an explicit ``group``
are understood when present, and any other column is kept untouched.

Validation happens once, at the boundary (:func:`validate_curves`), and every
problem is reported as a one-line :class:`CurvesError` that names the column,
the offending value and the first offending row. Nothing is ever dropped
silently: every selection or filter returns a new :class:`Curves` whose
``log`` says how many rows it removed and why. Substitutions are logged the
same way (with 0 rows removed): a missing ``loss_unit`` is assumed to be
:data:`DEFAULT_LOSS_UNIT` and unit spellings are normalised
(:func:`normalise_unit`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_LOSS_UNIT",
    "NUMERIC_COLUMNS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "Curves",
    "CurvesError",
    "FilterRecord",
    "family_groups",
    "load_curves",
    "name_group",
    "normalise_loss_units",
    "normalise_unit",
    "sole_family",
    "source_origin",
    "unit_assumptions",
    "validate_curves",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("family", "run", "params", "tokens", "loss")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "metric",
    "primary",
    "is_final",
    "seed",
    "flops",
    "run_tokens",
    "schedule",
    "lr",
    "dataset",
    "arch",
    "source",
    "loss_unit",
    "group",
)
NUMERIC_COLUMNS: tuple[str, ...] = ("params", "tokens", "loss")


class CurvesError(ValueError):
    """Invalid curves data. The message is one line naming column, value and row."""


@dataclass(frozen=True)
class FilterRecord:
    """What one selection or filter step removed.

    Attributes
    ----------
    step : str
        Name of the step (e.g. ``"metric"``, ``"min_tokens"``).
    removed : int
        Number of rows removed by the step.
    kept : int
        Number of rows left after the step.
    reason : str
        Human-readable reason, e.g. ``"tokens <= 1e+10"``.
    """

    step: str
    removed: int
    kept: int
    reason: str

    def __str__(self) -> str:
        """Return the record as one line: step, rows removed, reason, rows kept."""
        return f"{self.step}: removed {self.removed} rows ({self.reason}), kept {self.kept}"


@dataclass(frozen=True)
class Curves:
    """A validated curves table plus the log of every row-removing step.

    Parameters
    ----------
    frame : pandas.DataFrame
        Validated table (see module docstring for the schema).
    log : tuple of FilterRecord
        Steps applied so far, in order.
    """

    frame: pd.DataFrame
    log: tuple[FilterRecord, ...] = field(default=())

    def __len__(self) -> int:
        """Return the number of rows."""
        return len(self.frame)

    @property
    def families(self) -> list[str]:
        """Sorted family names present in the table."""
        return sorted(self.frame["family"].unique().tolist())

    def with_frame(self, frame: pd.DataFrame, *, step: str, reason: str) -> Curves:
        """Return a copy holding ``frame`` with a log record of the rows removed.

        Parameters
        ----------
        frame : pandas.DataFrame
            The rows kept (a subset of :attr:`frame`, or the same rows changed).
        step : str
            Name of the step for the log.
        reason : str
            Why rows were removed (or what was substituted).

        Returns
        -------
        Curves
            ``frame`` with a fresh index and the log plus one :class:`FilterRecord`.
        """
        record = FilterRecord(
            step=step, removed=len(self.frame) - len(frame), kept=len(frame), reason=reason
        )
        return replace(self, frame=frame.reset_index(drop=True), log=(*self.log, record))

    def family(self, name: str) -> Curves:
        """Keep the rows of one family.

        Parameters
        ----------
        name : str
            Family name.

        Returns
        -------
        Curves
            The family's rows, the others logged as removed.

        Raises
        ------
        CurvesError
            If ``name`` is not in the table; the message lists the known families.
        """
        _check_families(self.frame, [name])
        sub = self.frame[self.frame["family"] == name]
        return self.with_frame(sub, step="family", reason=f"family != {name!r}")

    def removal_summary(self) -> str:
        """Describe the steps that removed rows.

        Returns
        -------
        str
            One line per step that removed rows, or ``"no rows removed"``.
        """
        lines = [str(r) for r in self.log if r.removed > 0]
        return "\n".join(lines) if lines else "no rows removed"

    def data_hash(self) -> str:
        """Hash the core columns, for provenance in results.

        Returns
        -------
        str
            :func:`frame_hash` of :attr:`frame`.
        """
        return frame_hash(self.frame)


def frame_hash(frame: pd.DataFrame) -> str:
    """Hash the columns ``family, run, params, tokens, loss`` in row order.

    Parameters
    ----------
    frame : pandas.DataFrame
        A table with the required columns.

    Returns
    -------
    str
        The first 16 hex characters of the SHA-256 of pandas' row hashes.
    """
    core = frame[list(REQUIRED_COLUMNS)]
    h = hashlib.sha256(pd.util.hash_pandas_object(core, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _row_label(frame: pd.DataFrame, pos: int) -> str:
    run = frame["run"].iloc[pos] if "run" in frame.columns else None
    extra = f" (run {run!r})" if run is not None and not pd.isna(run) else ""
    return f"row {pos}{extra}"


def _fail(column: str, value: object, frame: pd.DataFrame, pos: int, problem: str) -> None:
    if isinstance(value, np.generic):  # report -1.0, not np.float64(-1.0)
        value = value.item()
    raise CurvesError(f"column {column!r}: {problem}: value {value!r} at {_row_label(frame, pos)}")


def _scalar_to_float(value: object) -> float:
    """``float(value)`` for a real number or numeric string, else NaN."""
    if isinstance(value, (bool, np.bool_, complex, np.complexfloating)):
        return np.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _as_float(raw: pd.Series) -> np.ndarray:
    """Values of a column as float64, NaN wherever an entry is not a real number."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_complex_dtype(raw):
        return np.full(len(raw), np.nan)
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=float, na_value=np.nan)
    return np.array([_scalar_to_float(v) for v in raw], dtype=float)


def _to_bool(series: pd.Series, column: str, frame: pd.DataFrame) -> pd.Series:
    """Parse a boolean column (True/False, 1/0, "true"/"false"); empty -> False."""
    if series.dtype == bool:
        return series
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    values = series.to_numpy(dtype=object)
    out = np.zeros(len(values), dtype=bool)
    for pos, v in enumerate(values):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_)):
            out[pos] = bool(v)
            continue
        key = str(v).strip().lower()
        if key == "":
            continue
        if key not in mapping:
            _fail(column, v, frame, pos, "not a boolean (true/false)")
        out[pos] = mapping[key]
    return pd.Series(out, index=series.index)


def validate_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a curves table and return a clean copy with canonical dtypes.

    Checks, each failing with a one-line :class:`CurvesError`:

    * the input is a non-empty table with every required column;
    * ``family`` and ``run`` are non-empty;
    * ``params``, ``tokens``, ``loss`` are numeric, finite and > 0;
    * ``params`` is constant within each run;
    * no duplicate ``(run, metric, tokens)`` key carries two different losses.

    Parameters
    ----------
    frame : pandas.DataFrame
        Raw table.

    Returns
    -------
    pandas.DataFrame
        Copy with ``params, tokens, loss`` as float64, ``family, run, metric``
        as str and ``primary, is_final`` as bool (when present). Extra columns
        are kept.

    Raises
    ------
    CurvesError
        At the first problem, naming the column, the value and the row.
    """
    if not isinstance(frame, pd.DataFrame):
        raise CurvesError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise CurvesError("empty input: the curves table has no rows")
    frame = frame.reset_index(drop=True).copy()
    frame.columns = [str(c) for c in frame.columns]
    dupcols = frame.columns[frame.columns.duplicated()]
    if len(dupcols):
        raise CurvesError(f"column {dupcols[0]!r} appears more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CurvesError(
            f"missing required column {missing[0]!r} (required: {', '.join(REQUIRED_COLUMNS)}; "
            f"found: {', '.join(frame.columns)})"
        )
    for col in ("family", "run"):
        raw = frame[col]
        empty = raw.isna() | (raw.astype("string").str.strip() == "")
        if empty.any():
            pos = int(np.flatnonzero(empty.to_numpy())[0])
            _fail(col, raw.iloc[pos], frame, pos, "empty value")
        frame[col] = raw.astype(str)
    for col in NUMERIC_COLUMNS:
        raw = frame[col]
        values = _as_float(raw)
        bad = np.isnan(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            _fail(col, raw.iloc[pos], frame, pos, "not a number")
        nonfinite = ~np.isfinite(values)
        if nonfinite.any():
            pos = int(np.flatnonzero(nonfinite)[0])
            _fail(col, raw.iloc[pos], frame, pos, "not finite")
        nonpos = values <= 0
        if nonpos.any():
            pos = int(np.flatnonzero(nonpos)[0])
            _fail(col, raw.iloc[pos], frame, pos, "must be > 0")
        frame[col] = values
    if "metric" in frame.columns:
        frame["metric"] = frame["metric"].fillna("").astype(str)
    for col in ("primary", "is_final"):
        if col in frame.columns:
            frame[col] = _to_bool(frame[col], col, frame)
    for col in ("run_tokens", "lr", "seed", "flops"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")

    # params constant within a run
    first = frame.groupby("run", sort=False)["params"].transform("first")
    changed = (frame["params"] != first).to_numpy()
    if changed.any():
        pos = int(np.flatnonzero(changed)[0])
        _fail(
            "params",
            frame["params"].iloc[pos],
            frame,
            pos,
            f"params change within a run (first seen {first.iloc[pos]:g})",
        )
    # duplicate (run, metric, tokens) with different losses
    key = ["run", "metric", "tokens"] if "metric" in frame.columns else ["run", "tokens"]
    dup = frame.duplicated(key, keep=False)
    if dup.any():
        spread = frame[dup].groupby(key, sort=False)["loss"].transform(lambda s: s.max() - s.min())
        conflict = spread[spread > 0]
        if len(conflict):
            pos = int(conflict.index[0])
            _fail(
                "loss",
                frame["loss"].iloc[pos],
                frame,
                pos,
                f"duplicate ({', '.join(key)}) key with different losses at tokens "
                f"{frame['tokens'].iloc[pos]:g}",
            )
    return frame


def _check_families(frame: pd.DataFrame, families: Iterable[str]) -> None:
    known = sorted(frame["family"].unique().tolist())
    for fam in families:
        if fam not in known:
            raise CurvesError(
                f"column 'family': unknown family {fam!r}; known families: {', '.join(known)}"
            )


def sole_family(families: Sequence[str], what: str, *, hint: str = "") -> str:
    """Return the one name in ``families``, else fail naming them all.

    Parameters
    ----------
    families : sequence of str
        Family names found in the data.
    what : str
        What needs a single family (starts the error message).
    hint : str, optional
        How to pick one (added to the message).

    Returns
    -------
    str
        The single family.

    Raises
    ------
    CurvesError
        If there is not exactly one family; the message reads
        ``{what}: the data hold N families[; {hint}] (a, b, ...)``.
    """
    if len(families) != 1:
        also = f"; {hint}" if hint else ""
        raise CurvesError(
            f"{what}: the data hold {len(families)} families{also} ({', '.join(families)})"
        )
    return families[0]


def _read(source: str | PathLike | pd.DataFrame) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if not path.exists():
        raise CurvesError(f"file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as err:
        raise CurvesError(f"empty input: {str(path)!r} has no data") from err
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CurvesError(f"cannot read {str(path)!r}: {msg}") from err


def select_metric(curves: Curves, metric: str = "primary") -> Curves:
    """Keep one metric per family.

    Parameters
    ----------
    curves : Curves
        Validated table.
    metric : str
        ``"primary"`` keeps the rows flagged ``primary`` (or, without that
        column, requires a single metric per family); any other value keeps
        the rows whose ``metric`` equals it. Families without that metric are
        removed and reported in the log.

    Returns
    -------
    Curves
        The rows of the chosen metric, the step recorded in the log.

    Raises
    ------
    CurvesError
        If the metric is unknown (or there is no ``metric`` column to select
        it from), a family has no primary metric or several,
        or (without a ``primary`` column) a family has several metrics.
    """
    frame = curves.frame
    if "metric" not in frame.columns:
        if metric != "primary":
            raise CurvesError(f"column 'metric' is missing, cannot select metric {metric!r}")
        return curves.with_frame(frame, step="metric", reason="no metric column")
    if metric == "primary":
        if "primary" in frame.columns:
            keep = frame["primary"].to_numpy(dtype=bool)
            no_primary = sorted(set(frame["family"]) - set(frame.loc[keep, "family"]))
            if no_primary:
                raise CurvesError(
                    f"column 'primary': family {no_primary[0]!r} has no row with primary=True; "
                    "pass metric=<name>"
                )
            many = frame[keep].groupby("family")["metric"].nunique()
            if (many > 1).any():
                fam = many[many > 1].index[0]
                raise CurvesError(
                    f"column 'primary': family {fam!r} has {int(many[fam])} primary metrics; "
                    "expected exactly one"
                )
            return curves.with_frame(frame[keep], step="metric", reason="non-primary metric rows")
        many = frame.groupby("family")["metric"].nunique()
        if (many > 1).any():
            fam = many[many > 1].index[0]
            raise CurvesError(
                f"column 'metric': family {fam!r} has several metrics and there is no "
                "'primary' column; pass metric=<name>"
            )
        return curves.with_frame(frame, step="metric", reason="single metric per family")
    keep = (frame["metric"] == metric).to_numpy()
    if not keep.any():
        known = sorted(frame["metric"].unique().tolist())
        raise CurvesError(f"column 'metric': unknown metric {metric!r}; known: {', '.join(known)}")
    return curves.with_frame(frame[keep], step="metric", reason=f"metric != {metric!r}")


#: Loss unit assumed when a table has no ``loss_unit`` column or leaves a cell empty.
DEFAULT_LOSS_UNIT: str = "nats/token"

_UNIT = re.compile(
    r"\s*(?P<q>nats?|bits?)\s*(?:/|\bper\b)\s*"
    r"(?P<per>tokens?|toks?|words?|bytes?|chars?|characters?)\s*(?:\(.*\))?\s*",
    re.IGNORECASE,
)


def normalise_unit(value: object) -> str:
    """Return the canonical spelling of a loss unit: ``<nats|bits>/<token|word|byte|char>``.

    ``"nats per token"``, ``"Nats/Token"`` and ``"nats/tok"`` all become
    ``"nats/token"``. A note in parentheses after the unit is dropped
    (``"nats/word (LAMBADA target word)"`` -> ``"nats/word"``; what was
    measured is the ``metric``). Anything else (``"unknown (see README)"``) is
    returned stripped but otherwise unchanged: it is a unit of its own.

    Parameters
    ----------
    value : object
        A ``loss_unit`` entry.

    Returns
    -------
    str
        The canonical spelling, or the stripped text if it is not a known unit.
    """
    text = str(value).strip()
    m = _UNIT.fullmatch(text)
    if m is None:
        return text
    quantity = "nats" if m["q"].lower().startswith("nat") else "bits"
    per = m["per"].lower()
    per = next(v for k, v in (("tok", "token"), ("word", "word"), ("byte", "byte"),
                              ("char", "char")) if per.startswith(k))  # fmt: skip
    return f"{quantity}/{per}"


def normalise_loss_units(curves: Curves) -> Curves:
    """Respell ``loss_unit`` canonically; a missing unit becomes :data:`DEFAULT_LOSS_UNIT`.

    Parameters
    ----------
    curves : Curves
        Validated table.

    Returns
    -------
    Curves
        The table with a ``loss_unit`` column of canonical spellings. Every
        change is a record in its ``log`` (step ``"loss_unit"``, 0 rows
        removed), so results can say which unit was assumed; ``curves``
        itself when nothing changed.
    """
    frame = curves.frame
    if "loss_unit" not in frame.columns:
        return curves.with_frame(
            frame.assign(loss_unit=DEFAULT_LOSS_UNIT),
            step="loss_unit",
            reason=f"no 'loss_unit' column: assumed {DEFAULT_LOSS_UNIT!r}",
        )
    raw = frame["loss_unit"]
    empty = (raw.isna() | (raw.astype(str).str.strip() == "")).to_numpy()
    text = raw.where(~empty, "").astype(str)
    canon_of = {u: normalise_unit(u) for u in text.unique()}
    canon = text.map(canon_of).where(~empty, DEFAULT_LOSS_UNIT)
    records = []
    if empty.any():
        fams = sorted(frame.loc[empty, "family"].unique())
        records.append(
            f"empty 'loss_unit' in {int(empty.sum())} rows (families {', '.join(fams)}): "
            f"assumed {DEFAULT_LOSS_UNIT!r}"
        )
    for orig, new in canon_of.items():
        if orig and orig != new:
            n = int((text == orig).sum())
            records.append(f"'loss_unit' {orig!r} read as {new!r} ({n} rows)")
    if not records:
        return curves
    out = curves.with_frame(frame.assign(loss_unit=canon), step="loss_unit", reason=records[0])
    for reason in records[1:]:
        out = out.with_frame(out.frame, step="loss_unit", reason=reason)
    return out


def unit_assumptions(curves: Curves) -> list[str]:
    """Return the log lines that say a loss unit was assumed (not read from the data).

    Parameters
    ----------
    curves : Curves
        A table passed through :func:`normalise_loss_units`.

    Returns
    -------
    list of str
        The reasons of the ``loss_unit`` records that assumed a unit.
    """
    return [r.reason for r in curves.log if r.step == "loss_unit" and "assumed" in r.reason]


def name_group(family: str) -> str:
    """Return the group a family's name suggests: the name up to its first hyphen.

    Parameters
    ----------
    family : str
        Family name (``"pythia-deduped"``).

    Returns
    -------
    str
        The name up to its first hyphen (``"pythia"``), or the whole name.
    """
    return family.split("-")[0]


def source_origin(source: object) -> str:
    """Return the work a ``source`` entry comes from.

    The text in trailing parentheses when there is one (an aggregator's file
    ``ColPret:aggregated_eval/x.csv (Muennighoff et al. 2023)`` comes from
    that paper), else the repository before ``:`` (``fabian-sp/lr-scheduling``
    for ``fabian-sp/lr-scheduling:data/grad_norm``), else the whole entry.

    Parameters
    ----------
    source : object
        A ``source`` entry.

    Returns
    -------
    str
        The origin, stripped.
    """
    text = str(source).strip()
    m = re.search(r"\(([^()]*)\)\s*$", text)
    if m and m.group(1).strip():
        return m.group(1).strip()
    return text.split(":", 1)[0].strip()


def family_groups(curves: Curves | pd.DataFrame) -> dict[str, str]:
    """Each family's group: families that share models or an origin.

    Leave-one-out priors remove a held-out family's whole group, so sibling
    families (the same models cooled down, re-run at another learning rate,
    trained on another data set) cannot leak its answer into its prior.

    1. An explicit ``group`` column names the group of every family that
       has a value in it.
    2. Otherwise families whose ``source`` entries have the same
       :func:`source_origin` are one group (on the corpus: the gemstones-*,
       gpt2-datablations-*, olmo*, overtrain-*, pythia*, lrsched-* and mpl-*
       families each share one). ``dataset`` alone does not make a group:
       unrelated model families share data sets (gemstones and olmo on Dolma).
    3. A family with neither falls back to :func:`name_group`.

    A linked group is labelled by the name group of its alphabetically first
    family (an explicit group by its value); groups that end up with the same
    label are merged, so a label always means one group.

    Parameters
    ----------
    curves : Curves or pandas.DataFrame
        Validated table.

    Returns
    -------
    dict
        ``{family: group label}`` for every family in the table.

    Raises
    ------
    CurvesError
        If a family has two different values in the ``group`` column.
    """
    frame = curves.frame if isinstance(curves, Curves) else curves
    fams = sorted(frame["family"].astype(str).unique().tolist())
    keys: dict[str, set[tuple[str, str]]] = {f: set() for f in fams}
    explicit: dict[str, str] = {}
    if "group" in frame.columns:
        g = frame["group"]
        has = (g.notna() & (g.astype(str).str.strip() != "")).to_numpy()
        pairs = frame.loc[has, ["family", "group"]].astype(str)
        pairs["group"] = pairs["group"].str.strip()
        for fam, sub in pairs.groupby("family", sort=True):
            values = sub["group"].unique()
            if len(values) > 1:
                pos = int(sub.index[sub["group"] == values[1]][0])
                _fail("group", values[1], frame, pos,
                      f"family {fam!r} has several groups (first {values[0]!r})")  # fmt: skip
            explicit[fam] = values[0]
            keys[fam].add(("group", values[0]))
    if "source" in frame.columns:
        rows = frame.loc[~frame["family"].isin(explicit), ["family", "source"]]
        rows = rows[rows["source"].notna()].drop_duplicates()
        for fam, src in rows.itertuples(index=False):
            origin = source_origin(src)
            if origin:
                keys[str(fam)].add(("source", origin))
    for f in fams:
        if not keys[f]:
            keys[f].add(("name", name_group(f)))

    parent = {f: f for f in fams}

    def find(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    owner: dict[tuple[str, str], str] = {}
    for f in fams:
        for k in sorted(keys[f]):
            if k in owner:
                union(f, owner[k])
            else:
                owner[k] = f
    while True:
        members: dict[str, list[str]] = {}
        for f in fams:
            members.setdefault(find(f), []).append(f)
        labels = {}
        for root, fs in members.items():
            named = sorted({explicit[f] for f in fs if f in explicit})
            labels[root] = named[0] if named else name_group(min(fs))
        first: dict[str, str] = {}
        merged = False
        for root, label in labels.items():
            if label in first:
                union(root, first[label])
                merged = True
            else:
                first[label] = root
        if not merged:
            return {f: labels[find(f)] for f in fams}


def load_curves(
    source: str | PathLike | pd.DataFrame | Curves | Sequence[str | PathLike | pd.DataFrame],
    *,
    metric: str = "primary",
    families: Sequence[str] | None = None,
) -> Curves:
    """Read, validate and select a curves table.

    Parameters
    ----------
    source : path, DataFrame, Curves or sequence of those
        CSV (any suffix but ``.parquet``) or Parquet file(s), or frame(s).
        Several sources are concatenated before validation.
    metric : str, default "primary"
        Which metric to keep per family (see :func:`select_metric`).
    families : str or sequence of str, optional
        Keep only these families (a single name is one family); an unknown
        name is an error that lists the known ones.

    Returns
    -------
    Curves
        The validated table (``loss_unit`` normalised, see
        :func:`normalise_loss_units`) and the log of rows removed by metric
        and family selection and of the units assumed or respelled.

    Raises
    ------
    CurvesError
        If a file is missing or unreadable, the table is invalid (one line
        naming column, value and row, see :func:`validate_curves`), or a
        metric or family is unknown.
    """
    if isinstance(source, Curves):
        curves = source
    else:
        sources = (
            list(source) if isinstance(source, (list, tuple)) else [source]  # type: ignore[list-item]
        )
        if not sources:
            raise CurvesError("empty input: no data source given")
        frames = [_read(s) for s in sources]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        curves = normalise_loss_units(Curves(validate_curves(frame)))
        curves = select_metric(curves, metric)
    if families is not None:
        fams = [families] if isinstance(families, str) else list(families)
        _check_families(curves.frame, fams)
        keep = curves.frame["family"].isin(fams).to_numpy()
        curves = curves.with_frame(
            curves.frame[keep], step="families", reason=f"family not in {fams}"
        )
    return curves
