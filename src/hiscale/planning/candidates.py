"""Candidate runs for the planner: a grid, a CSV file, or existing runs not yet used.

A candidate table has one row per candidate run with the columns ``label``
(a run id or ``N=..,D=..``), ``params`` (N), ``tokens`` (D, the run's last
checkpoint) and ``flops`` (its training cost). The cost is ``6 N D`` unless
the source gives FLOPs (a ``flops`` column), and the ``flops_source`` column
says which (no silent default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hiscale.data.curves import Curves

__all__ = [
    "CANDIDATE_COLUMNS",
    "existing_candidates",
    "grid_candidates",
    "read_candidates",
    "rule_of_thumb",
    "validate_candidates",
]

#: Columns of a candidate table, in order.
CANDIDATE_COLUMNS: tuple[str, ...] = ("label", "params", "tokens", "flops", "flops_source")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def validate_candidates(frame: pd.DataFrame, *, source: str = "candidates") -> pd.DataFrame:
    """Check a candidate table and fill ``label``, ``flops`` and ``flops_source``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Needs ``params`` and ``tokens``; ``flops`` and ``label`` (or ``run``)
        are optional. Empty ``flops`` cells are filled with ``6 N D``.
    source : str
        Name used in error messages (e.g. the file name).

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`CANDIDATE_COLUMNS`, one row per candidate.

    Raises
    ------
    ValueError
        One line naming the column, the value and the row of the first bad cell.
    """
    if len(frame) == 0:
        raise ValueError(f"{source}: no candidate runs")
    for col in ("params", "tokens"):
        if col not in frame.columns:
            raise ValueError(
                f"{source}: missing column {col!r} (need params, tokens; optional flops, label)"
            )
    out = pd.DataFrame(index=range(len(frame)))
    for col in ("params", "tokens", "flops"):
        if col not in frame.columns:
            continue
        raw = frame[col].tolist()
        vals = np.empty(len(raw))
        for i, v in enumerate(raw):
            if col == "flops" and (v is None or (isinstance(v, float) and np.isnan(v)) or v == ""):
                vals[i] = np.nan
                continue
            try:
                vals[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{source}: column {col!r} has non-numeric value {v!r} in row {i + 1}"
                ) from None
            if not np.isfinite(vals[i]) or vals[i] <= 0:
                raise ValueError(
                    f"{source}: column {col!r} has value {v!r} in row {i + 1}; "
                    "must be a finite number > 0"
                )
        out[col] = vals
    six_nd = 6.0 * out["params"].to_numpy() * out["tokens"].to_numpy()
    if "flops" in out.columns:
        given = np.isfinite(out["flops"].to_numpy())
        out["flops"] = np.where(given, out["flops"].to_numpy(), six_nd)
        out["flops_source"] = np.where(given, "given", "6ND")
    else:
        out["flops"] = six_nd
        out["flops_source"] = "6ND"
    label_col = "label" if "label" in frame.columns else ("run" if "run" in frame.columns else None)
    if label_col is not None:
        out["label"] = [str(v) for v in frame[label_col].tolist()]
    else:
        out["label"] = [
            f"N={_fmt(n)},D={_fmt(d)}" for n, d in zip(out["params"], out["tokens"], strict=True)
        ]
    dup = out["label"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(
            f"{source}: column {label_col or 'label'!r} repeats {out['label'].iloc[i]!r} "
            f"in row {i + 1}; labels must be unique"
        )
    return out[list(CANDIDATE_COLUMNS)].reset_index(drop=True)


def grid_candidates(sizes: Sequence[float], token_multiples: Sequence[float]) -> pd.DataFrame:
    """Candidates on a grid: every size N times every tokens-per-parameter ratio k (D = k N).

    Parameters
    ----------
    sizes : sequence of float
        Model sizes N (parameters).
    token_multiples : sequence of float
        Tokens per parameter ``k`` (20 is Chinchilla-optimal); ``D = k N``.

    Returns
    -------
    pandas.DataFrame
        A validated candidate table (cost ``6 N D``).
    """
    if len(sizes) == 0 or len(token_multiples) == 0:
        raise ValueError("--sizes and --token-multiples need at least one value each")
    rows = [
        {"params": float(n), "tokens": float(k) * float(n), "label": f"N={_fmt(n)},D={k:g}N"}
        for n in sizes
        for k in token_multiples
    ]
    for r in rows:
        if not (np.isfinite(r["params"]) and r["params"] > 0 and np.isfinite(r["tokens"])):
            raise ValueError(f"sizes: bad value {r['params']!r}; must be a finite number > 0")
    return validate_candidates(pd.DataFrame(rows), source="grid")


def read_candidates(path: str | Path) -> pd.DataFrame:
    """Read candidates from a CSV file (columns ``params, tokens[, flops][, label]``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"candidates file not found: {str(path)!r}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path.name}: cannot read as CSV ({msg})") from None
    return validate_candidates(frame, source=path.name)


def existing_candidates(
    curves: Curves, family: str, used: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """Return the runs of ``family`` in ``curves`` not in ``used`` as candidates.

    A run's tokens are its last checkpoint; its cost the largest ``flops``
    value of its rows when the table has that column (else ``6 N D``).

    Returns
    -------
    candidates : pandas.DataFrame
        A validated candidate table labelled by run id.
    used : list of str
        The used runs, checked to exist in the family (one-line error otherwise).
    """
    frame = curves.family(family).frame
    runs = list(dict.fromkeys(frame["run"].astype(str).tolist()))
    used = [str(u) for u in used]
    for u in used:
        if u not in runs:
            shown = ", ".join(runs[:6]) + (", ..." if len(runs) > 6 else "")
            raise ValueError(f"--used: run {u!r} is not in family {family!r} (runs: {shown})")
    rows = []
    for run, g in frame.assign(run=frame["run"].astype(str)).groupby("run", sort=False):
        if run in used:
            continue
        last = g.loc[g["tokens"].idxmax()]
        flops = np.nan
        if "flops" in g.columns:
            f = pd.to_numeric(g["flops"], errors="coerce").to_numpy(float)
            if np.isfinite(f).any():
                flops = float(np.nanmax(f))
        rows.append(
            {
                "label": run,
                "params": float(last["params"]),
                "tokens": float(g["tokens"].max()),
                "flops": flops,
            }
        )
    if not rows:
        raise ValueError(f"family {family!r}: every run is in --used; no candidates left")
    return validate_candidates(pd.DataFrame(rows), source=f"family {family!r}"), used


#: Rules of thumb the planner is compared with.
RULES: tuple[str, ...] = ("hitchhiker", "cheapest-first")


def rule_of_thumb(
    candidates: pd.DataFrame, target: tuple[float, float], budget: float, rule: str
) -> list[int]:
    """Candidate indices a rule of thumb picks within ``budget``, in training order.

    * ``"hitchhiker"`` (Choshen et al. 2025): about five sizes, the largest
      affordable, each trained to about 30% of the target's tokens: per size
      the candidate with tokens closest (in log) to ``0.3 D_target``, then
      sizes from the largest down while the total fits the budget, at most 5;
      trained smallest first.
    * ``"cheapest-first"``: the cheapest candidates while the total fits.

    Parameters
    ----------
    candidates : pandas.DataFrame
        Candidate table.
    target : (float, float)
        Target ``(N, D)``.
    budget : float
        FLOPs.
    rule : str
        One of :data:`RULES`.

    Returns
    -------
    list of int
        Row positions in ``candidates``.
    """
    flops = candidates["flops"].to_numpy(float)
    if rule == "cheapest-first":
        picked, spent = [], 0.0
        for i in np.argsort(flops, kind="stable"):
            if spent + flops[i] <= budget:
                picked.append(int(i))
                spent += flops[i]
        return picked
    if rule == "hitchhiker":
        aim = np.log(0.3 * float(target[1]))
        best: dict[float, int] = {}
        for i, (n, d) in enumerate(zip(candidates["params"], candidates["tokens"], strict=True)):
            j = best.get(n)
            if j is None or abs(np.log(d) - aim) < abs(np.log(candidates["tokens"].iloc[j]) - aim):
                best[n] = i
        picked, spent = [], 0.0
        for n in sorted(best, reverse=True):
            i = best[n]
            if len(picked) < 5 and spent + flops[i] <= budget:
                picked.append(i)
                spent += flops[i]
        return sorted(picked, key=lambda i: candidates["params"].iloc[i])
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
