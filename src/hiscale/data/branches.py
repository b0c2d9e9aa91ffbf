"""Branch runs: a run that starts from another run's checkpoint, joined to its prefix.

A warmup-stable-decay study trains one long constant-learning-rate run ``P``
and branches cooldowns ``B`` off it (``runs_extra.csv``: ``prefix_run``,
``branch_step``; the corpus README's convention). The curves table holds only
``B``'s rows *after* its branch point: up to there ``B`` *is* ``P``. So "where
does ``B`` end, from its first ``p`` of training?" needs ``P``'s rows, which
often sit in another family (the constant runs), and several branches share
them.

:func:`attach_prefixes` records, for every branch run of a family, its
*root* (the first run of its ``prefix_run`` chain, which has no prefix) and
the token count where its path leaves the root (the earliest branch point of
the chain), and adds the root's rows to the family when the root is not one
of its runs (``prefix_only``: training rows, never a target). The rows are
not copied per branch: a family fit counts the shared prefix once, and a
branch is predicted by continuing its root under the branch's own schedule
(:func:`hiscale.backtesting.protocol.continue_cells`,
:meth:`hiscale.infer.result.Fit.predict_run`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from hiscale._util import finite_float as _num
from hiscale.data.curves import Curves, CurvesError, FilterRecord

__all__ = ["BRANCH_COLUMNS", "attach_prefixes", "branch_chain"]

#: Columns :func:`attach_prefixes` adds: ``branch_root`` (the root run of a
#: branch or of a root itself; empty for other runs), ``branch_diverge`` (tokens
#: where the run's path leaves its root; ``inf`` for the root), ``prefix_only``
#: (a root's rows added from outside the family).
BRANCH_COLUMNS: tuple[str, ...] = ("branch_root", "branch_diverge", "prefix_only")


def branch_chain(run: str, runs_extra: pd.DataFrame) -> list[tuple[str, float]]:
    """Follow ``run``'s ``prefix_run`` chain to its root: ``[(prefix, branch tokens), ...]``.

    Parameters
    ----------
    run : str
        A run name.
    runs_extra : pandas.DataFrame
        ``run, prefix_run, branch_step, tokens_per_step`` (the corpus's
        ``runs_extra.csv``).

    Returns
    -------
    list of (str, float)
        Empty when ``run`` has no prefix (or is not listed). Otherwise each
        step's prefix and the branch point in tokens (``branch_step x
        tokens_per_step``); the last prefix is the root.

    Raises
    ------
    CurvesError
        If a listed prefix lacks ``branch_step`` or ``tokens_per_step``, or
        the chain loops.
    """
    need = {"run", "prefix_run", "branch_step", "tokens_per_step"}
    missing = sorted(need - set(runs_extra.columns))
    if missing:
        raise CurvesError(f"runs_extra: columns {missing} missing (needed for branch runs)")
    info = runs_extra.drop_duplicates("run").set_index("run")
    out: list[tuple[str, float]] = []
    seen, r = {run}, run
    while r in info.index:
        p = info.at[r, "prefix_run"]
        if not isinstance(p, str) or not p:
            break
        step, tps = _num(info.at[r, "branch_step"]), _num(info.at[r, "tokens_per_step"])
        if step is None or tps is None:
            raise CurvesError(
                f"column 'branch_step': run {r!r} has prefix_run {p!r} but branch_step="
                f"{info.at[r, 'branch_step']!r}, tokens_per_step={info.at[r, 'tokens_per_step']!r}"
            )
        if p in seen:
            raise CurvesError(f"column 'prefix_run': the chain of run {run!r} loops at {p!r}")
        seen.add(p)
        out.append((p, step * tps))
        r = p
    return out


def attach_prefixes(
    curves: Curves, runs_extra: pd.DataFrame, *, source: Curves | None = None
) -> Curves:
    """Join each branch run of ``curves`` to the rows of its root run.

    For every run ``B`` with a prefix chain in ``runs_extra`` whose root ``R``
    has rows in ``source`` (default ``curves``) at or before the branch
    point: ``B``'s rows get ``branch_root = R`` and ``branch_diverge`` = the
    earliest branch point of the chain (up to there ``B``'s loss *is*
    ``R``'s); ``R``'s rows get ``branch_root = R`` and ``branch_diverge =
    inf``, and are added (relabelled to ``B``'s family, ``prefix_only =
    True``) when ``R`` is not a run of ``curves``. A branch whose root has no
    rows up to the branch point (a run "branched" at step 0, or a root absent
    from ``source``) stays an ordinary run. The log says what was added and
    what was not.

    Parameters
    ----------
    curves : Curves
        Rows of one family or more.
    runs_extra : pandas.DataFrame
        The corpus's ``runs_extra.csv`` (``run, prefix_run, branch_step,
        tokens_per_step``).
    source : Curves, optional
        Where roots' rows are looked up (e.g. the whole file, when the roots
        are another family's runs). Default ``curves``.

    Returns
    -------
    Curves
        ``curves`` plus the roots' rows and the :data:`BRANCH_COLUMNS`, with
        one log record (``attach_prefixes``; 0 rows removed).

    Raises
    ------
    CurvesError
        If a chain is broken (see :func:`branch_chain`), a root feeds branches
        of two families, or ``curves`` already has the branch columns.
    """
    f = curves.frame
    clash = [c for c in BRANCH_COLUMNS if c in f]
    if clash:
        raise CurvesError(f"columns {clash} already present: prefixes attached twice?")
    src = (source if source is not None else curves).frame
    out = f.assign(branch_root="", branch_diverge=np.nan, prefix_only=False)
    runs = set(f["run"])
    added, roots_of, skipped = [], {}, []
    for run, fam in f.groupby("run", sort=True)["family"].first().items():
        chain = branch_chain(str(run), runs_extra)
        if not chain:
            continue
        root, diverge = chain[-1][0], min(b for _, b in chain)
        root_rows = src[src["run"] == root]
        if not (root_rows["tokens"].to_numpy(float) <= diverge).any():
            why = "no rows" if len(root_rows) == 0 else f"no rows at or before {diverge:.4g} tokens"
            skipped.append(f"{run} (root {root}: {why})")
            continue
        if roots_of.setdefault(root, fam) != fam:
            raise CurvesError(
                f"column 'prefix_run': root run {root!r} feeds branches of families "
                f"{roots_of[root]!r} and {fam!r}; attach prefixes one family at a time"
            )
        sel = (out["run"] == run).to_numpy()
        out.loc[sel, "branch_root"] = root
        out.loc[sel, "branch_diverge"] = diverge
    for root, fam in roots_of.items():
        if root in runs:
            sel = (out["run"] == root).to_numpy()
            out.loc[sel, "branch_root"] = root
            out.loc[sel, "branch_diverge"] = np.inf
        else:
            rows = src[src["run"] == root].assign(
                family=fam, branch_root=root, branch_diverge=np.inf, prefix_only=True
            )
            added.append(rows)
    n_branch = int(out.loc[out["branch_root"] != "", "run"].nunique()) - sum(
        r in runs for r in roots_of
    )
    if added:
        out = pd.concat([out, *added], ignore_index=True)
    n_added = sum(len(a) for a in added)
    reason = (
        f"added {n_added} rows of {len(added)} root runs from outside the family; "
        f"{n_branch} branch runs joined to {len(roots_of)} roots"
    )
    if skipped:
        more = ", ..." if len(skipped) > 3 else ""
        reason += f"; not joined: {len(skipped)} ({', '.join(skipped[:3])}{more})"
    record = FilterRecord(step="attach_prefixes", removed=0, kept=len(out), reason=reason)
    return replace(curves, frame=out.reset_index(drop=True), log=(*curves.log, record))
