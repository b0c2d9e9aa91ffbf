"""The paper's backtest protocol: filters, target choice and grid cells.

Choshen, Zhang & Andreas (2025), one family at a time:

1. A family is usable with >= 3 distinct sizes. The target is every run of
   the largest size (``direction="up"``; ``"down"`` predicts the smallest size
   from the largest ones, paper App. C).
2. Cell ``(k, p)``: training runs are the ``k`` sizes nearest the bottom
   (``up``) or top (``down``) of the remaining sizes. ``T`` = the largest
   token count over those runs (one shared threshold). Training rows keep
   ``tokens > min_tokens`` (default 1e10) and ``tokens < p * T`` (strict).
3. Targets: ``last30`` = target rows with ``tokens >= 0.7 *`` that run's
   largest token count; ``final`` = each target run's final checkpoint. The
   token cut is applied to training rows only.

Every filter returns a :class:`~hiscale.data.curves.Curves` whose log records what it
removed.

Continue-a-run cells (``target="continue"``, :func:`continue_cells`): predict
where a run in progress ends. Cell ``(k, p)``: ``k`` is a size's rank
(1 = smallest); the training rows are every run's rows (all sizes) with
``tokens <= p x`` that run's schedule horizon (``run_tokens``; where unknown,
its last checkpoint, which the cell's ``note`` says) and ``tokens >
min_tokens``; the scored target is the final checkpoint of each run of size
rank ``k`` that still has training rows and ends after ``p x`` its horizon.
Branch runs (a cooldown started from another run's checkpoint) are continued
from their root run's rows once :func:`hiscale.data.branches.attach_prefixes`
has joined them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hiscale.data.curves import Curves, CurvesError, sole_family
from hiscale.data.selection import filter_min_tokens

__all__ = [
    "CONTINUE_P",
    "GRIDS",
    "Cell",
    "continue_cells",
    "filter_fraction",
    "grid_values",
    "make_cells",
    "select_sizes",
    "sizes",
    "split_target",
    "target_rows",
]

P_VALUES_PAPER: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
P_VALUES_QUICK: tuple[float, ...] = (0.3, 0.5, 1.0)
#: Fractions of each run's schedule of the continue-a-run cells (named grids;
#: ``"quick"`` takes 0.3 only).
CONTINUE_P: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)

GRIDS = {
    "paper": "k = 2 ... n-1 (n = number of sizes), p = 0.1, 0.2, ..., 1.0",
    "quick": "k in {2, 3, 5, n-1} (those that exist), p in {0.3, 0.5, 1.0}",
    "sub": (
        "paper p values; k in {2..7} plus 3 log-spaced values up to n-1 "
        "(documented subsample for very large families)"
    ),
}


def sizes(curves: Curves) -> np.ndarray:
    """Return the sorted distinct parameter counts.

    Parameters
    ----------
    curves : Curves
        Rows of one family (or more).

    Returns
    -------
    ndarray
        Distinct ``params`` values, ascending.
    """
    return np.sort(curves.frame["params"].unique())


def filter_fraction(curves: Curves, p: float, *, threshold: float | None = None) -> Curves:
    """Keep rows with ``tokens < p * T`` (strict), ``T`` = shared threshold.

    Parameters
    ----------
    curves : Curves
        Training candidates.
    p : float
        Fraction of ``T`` kept, in (0, 1].
    threshold : float, optional
        ``T``; defaults to the largest token count in ``curves`` (compute it
        before any other token filter so it is the paper's shared threshold).

    Returns
    -------
    Curves
        The rows below ``p * T``, the others logged under ``"fraction"``.

    Raises
    ------
    ValueError
        If ``p`` is not in (0, 1].
    """
    if not 0 < p <= 1:
        raise ValueError(f"fraction p must be in (0, 1], got {p}")
    t = float(curves.frame["tokens"].max()) if threshold is None else float(threshold)
    keep = curves.frame["tokens"].to_numpy() < p * t
    return curves.with_frame(
        curves.frame[keep], step="fraction", reason=f"tokens >= {p:g} x {t:.4g}"
    )


def select_sizes(curves: Curves, k: int, *, largest: bool = False) -> Curves:
    """Keep every run of the ``k`` smallest (or largest) distinct sizes.

    Parameters
    ----------
    curves : Curves
        Rows of one family.
    k : int
        Number of sizes, in ``1..len(sizes(curves))``.
    largest : bool, default False
        Take the largest sizes (``direction="down"``) instead of the smallest.

    Returns
    -------
    Curves
        The chosen sizes' rows, the others logged under ``"sizes"``.

    Raises
    ------
    ValueError
        If ``k`` is out of range.
    """
    s = sizes(curves)
    if k < 1 or k > len(s):
        raise ValueError(f"k must be in 1..{len(s)}, got {k}")
    chosen = s[-k:] if largest else s[:k]
    keep = curves.frame["params"].isin(chosen).to_numpy()
    which = "largest" if largest else "smallest"
    return curves.with_frame(
        curves.frame[keep], step="sizes", reason=f"not among the {k} {which} sizes"
    )


def split_target(curves: Curves, *, direction: str = "up") -> tuple[Curves, Curves]:
    """Split one family into (training candidates, target runs).

    Parameters
    ----------
    curves : Curves
        Rows of one family.
    direction : {"up", "down"}, default "up"
        ``"up"``: the target is every run of the largest size; ``"down"``: of
        the smallest size.

    Returns
    -------
    tuple of Curves
        ``(train, target)``: the other sizes' rows and the target size's rows.

    Raises
    ------
    ValueError
        If ``direction`` is neither ``"up"`` nor ``"down"``.
    CurvesError
        If the family has fewer than 2 sizes.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    s = sizes(curves)
    if len(s) < 2:
        raise CurvesError(f"column 'params': need >= 2 sizes to split a target, got {len(s)}")
    tsize = s[-1] if direction == "up" else s[0]
    is_t = (curves.frame["params"] == tsize).to_numpy()
    target = curves.with_frame(curves.frame[is_t], step="target", reason="not target size")
    train = curves.with_frame(curves.frame[~is_t], step="target", reason="target size")
    return train, target


def target_rows(target: Curves, definition: str = "last30") -> Curves:
    """Keep the target rows scored in a cell.

    Parameters
    ----------
    target : Curves
        The target runs (:func:`split_target`).
    definition : {"last30", "final"}, default "last30"
        ``last30``: rows with ``tokens >= 0.7 x`` the run's largest token
        count (the last 30% of training); ``final``: each run's last checkpoint.

    Returns
    -------
    Curves
        The scored rows, the others logged under ``"target_rows"``.

    Raises
    ------
    ValueError
        If ``definition`` is unknown.
    """
    f = target.frame
    run_max = f.groupby("run")["tokens"].transform("max").to_numpy()
    if definition == "last30":
        keep = f["tokens"].to_numpy() >= 0.7 * run_max
        reason = "tokens < 0.7 x run max"
    elif definition == "final":
        keep = f["tokens"].to_numpy() == run_max
        reason = "not the final checkpoint"
    else:
        raise ValueError(f"target must be 'last30' or 'final', got {definition!r}")
    return target.with_frame(f[keep], step="target_rows", reason=reason)


@dataclass(frozen=True)
class Cell:
    """One backtest cell: the training rows and scored target rows of a family.

    Attributes
    ----------
    family : str
        Family name.
    k : int
        Number of training sizes requested.
    p : float
        Fraction of the shared token threshold kept.
    direction : str
        ``"up"`` or ``"down"``.
    train : Curves
        Training rows after every filter (log included).
    target : Curves
        Scored target rows.
    n_sizes_used : int
        Distinct sizes left in ``train`` (heatmap row label).
    kind : str
        ``"size"`` (the paper's cells) or ``"continue"`` (:func:`continue_cells`:
        ``k`` is the held size's rank, ``p`` the fraction of each run's schedule).
    note : str
        What the cell substituted or dropped (e.g. a run whose horizon is
        unknown); empty when nothing.
    continue_from : tuple of (str, str)
        Continue cells with branch runs (:func:`hiscale.data.branches.attach_prefixes`):
        ``(target run, fitted run)`` pairs, the fitted run being the target's
        root, to be continued under the target's own schedule. Empty otherwise
        (every target continues itself).
    """

    family: str
    k: int
    p: float
    direction: str
    train: Curves
    target: Curves
    n_sizes_used: int
    kind: str = "size"
    note: str = ""
    continue_from: tuple[tuple[str, str], ...] = ()


def grid_values(
    n_candidates: int, grid: str, *, include_k1: bool = False
) -> list[tuple[int, float]]:
    """List the (k, p) pairs of a grid for a family with ``n_candidates`` training sizes.

    Parameters
    ----------
    n_candidates : int
        Distinct sizes left after removing the target size.
    grid : str
        A name of :data:`GRIDS`: ``"paper"``, ``"quick"`` or ``"sub"``.
    include_k1 : bool, default False
        Add ``k = 1`` (one training size, the single-model regime).

    Returns
    -------
    list of tuple
        ``(k, p)`` pairs, by ``k`` then ``p``.

    Raises
    ------
    ValueError
        If ``grid`` is unknown.
    """
    if grid == "paper":
        ks = list(range(2, n_candidates + 1))
        ps = P_VALUES_PAPER
    elif grid == "quick":
        ks = sorted({k for k in (2, 3, 5, n_candidates) if 2 <= k <= n_candidates})
        ps = P_VALUES_QUICK
    elif grid == "sub":
        base = [k for k in range(2, 8) if k <= n_candidates]
        extra = (
            np.unique(np.round(np.geomspace(8, n_candidates, 3)).astype(int)).tolist()
            if n_candidates >= 8
            else []
        )
        ks = sorted(set(base) | set(extra))
        ps = P_VALUES_PAPER
    else:
        raise ValueError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
    if include_k1 and n_candidates >= 1:
        ks = [1, *ks]
    return [(k, p) for k in ks for p in ps]


def make_cells(
    curves: Curves,
    *,
    grid: str | Sequence[tuple[int, float]] = "paper",
    target: str = "last30",
    min_tokens: float = 1e10,
    direction: str = "up",
    include_k1: bool = False,
) -> list[Cell]:
    """Build all cells of one family.

    Parameters
    ----------
    curves : Curves
        Rows of exactly one family.
    grid : str or sequence of (int, float)
        A grid name (:func:`grid_values`) or explicit ``(k, p)`` pairs.
    target : {"last30", "final", "continue"}, default "last30"
        Scored target rows (:func:`target_rows`); ``"continue"`` builds the
        continue-a-run cells instead (:func:`continue_cells`, which gets
        ``grid``, ``min_tokens`` and ``direction``).
    min_tokens : float, default 1e10
        Token cut on training rows (:func:`hiscale.data.selection.filter_min_tokens`).
    direction : {"up", "down"}, default "up"
        Predict the largest size from the smallest ones, or the reverse.
    include_k1 : bool, default False
        Add ``k = 1`` cells (named grids only; not used by continue cells).

    Returns
    -------
    list of Cell
        One cell per ``(k, p)``; the shared threshold ``T`` of each is the
        largest token count of its chosen sizes, taken before the token cut.

    Raises
    ------
    CurvesError
        If ``curves`` holds several families, or the family is not usable
        (fewer than 3 distinct sizes).
    ValueError
        If ``grid``, ``target`` or ``direction`` is unknown, or a ``k`` or
        ``p`` is out of range.
    """
    if target == "continue":
        return continue_cells(curves, grid=grid, min_tokens=min_tokens, direction=direction)
    fam = sole_family(curves.families, "make_cells needs one family")
    n_sizes = len(sizes(curves))
    if n_sizes < 3:
        raise CurvesError(
            f"column 'params': family {fam!r} has {n_sizes} distinct sizes; the protocol needs >= 3"
        )
    candidates, tgt = split_target(curves, direction=direction)
    scored = target_rows(tgt, target)
    n_cand = len(sizes(candidates))
    pairs = (
        grid_values(n_cand, grid, include_k1=include_k1) if isinstance(grid, str) else list(grid)
    )
    cells = []
    largest = direction == "down"
    for k, p in pairs:
        chosen = select_sizes(candidates, k, largest=largest)
        t_shared = float(chosen.frame["tokens"].max())
        train = filter_fraction(filter_min_tokens(chosen, min_tokens), p, threshold=t_shared)
        cells.append(
            Cell(
                family=fam,
                k=k,
                p=p,
                direction=direction,
                train=train,
                target=scored,
                n_sizes_used=int(train.frame["params"].nunique()),
            )
        )
    return cells


def _horizons(frame) -> tuple[np.ndarray, list[str]]:
    """Per-row schedule horizon of each row's run, and the runs whose horizon is unknown."""
    last = frame.groupby("run")["tokens"].transform("max").to_numpy(float)
    if "run_tokens" in frame:
        rt = frame.groupby("run")["run_tokens"].transform("first")
        horizon = np.asarray(rt.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    else:
        horizon = np.full(len(frame), np.nan)
    bad = ~(np.isfinite(horizon) & (horizon > 0))
    unknown = sorted(frame.loc[bad, "run"].astype(str).unique().tolist())
    return np.where(bad, last, horizon), unknown


def _branch_groups(frame, horizon) -> dict[str, dict[str, tuple[float, float]]]:
    """``{root: {member run: (horizon, diverge)}}`` of rows joined by ``attach_prefixes``.

    Members are the root's branch runs and the root itself when it is a run of
    the family (not ``prefix_only``); empty without the branch columns.
    """
    if "branch_root" not in frame:
        return {}
    root = frame["branch_root"].fillna("").astype(str).to_numpy()
    only = frame["prefix_only"].fillna(False).astype(bool).to_numpy()
    diverge = frame["branch_diverge"].to_numpy(float)
    run = frame["run"].astype(str).to_numpy()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for i in np.flatnonzero((root != "") & ~only):
        out.setdefault(root[i], {})[run[i]] = (float(horizon[i]), float(diverge[i]))
    return out


def continue_cells(
    curves: Curves,
    *,
    grid: str | Sequence[float] | Sequence[tuple[int, float]] = "paper",
    min_tokens: float = 1e10,
    direction: str = "up",
) -> list[Cell]:
    """Build the continue-a-run cells of one family: each size's runs from their first ``p``.

    Parameters
    ----------
    curves : Curves
        Rows of exactly one family (``run_tokens`` gives each run's schedule
        horizon; a run without it uses its last checkpoint, said in ``note``).
        With branch runs joined to their roots
        (:func:`hiscale.data.branches.attach_prefixes`), a branch trains on
        its root's rows, never on its own, and is continued from the root
        under its own schedule (``Cell.continue_from``). A root shared by
        several runs enters the fit once, cut at the smallest of each
        member's ``p x`` horizon and branch point, so no target sees more
        than ``p`` of its own training (some see less; the note says how
        much).
    grid : str, sequence of float or sequence of (int, float)
        A grid name (``"quick"``: every size at ``p = 0.3``; the others: every
        size at :data:`CONTINUE_P`), fractions ``p`` (every size) or explicit
        ``(k, p)`` pairs, ``k`` the size rank (1 = smallest).
    min_tokens : float, default 1e10
        Training rows need ``tokens > min_tokens`` (0 disables; most
        schedule sweeps end below 1e10 tokens).
    direction : {"up", "down"}, default "up"
        Recorded in the cells (the result key); continue cells have no
        direction of extrapolation in size.

    Returns
    -------
    list of Cell
        One :class:`Cell` (``kind="continue"``) per ``(k, p)``, by ``k`` then
        ``p``. A run of size rank ``k`` is not a target when it has no
        training row left or ends at or before ``p x`` its horizon (the
        ``note`` names it); ``target`` may then be empty.

    Raises
    ------
    CurvesError
        If ``curves`` holds several families.
    ValueError
        If ``grid`` or ``direction`` is unknown, a ``p`` is not in (0, 1) or
        a ``k`` is not a size rank.
    """
    fam = sole_family(curves.families, "continue_cells needs one family")
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    s = sizes(curves)
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
        ps = (0.3,) if grid == "quick" else CONTINUE_P
        pairs = [(k, p) for k in range(1, len(s) + 1) for p in ps]
    else:
        items = list(grid)
        pairs = [
            (int(g[0]), float(g[1])) if isinstance(g, tuple | list) else (k, float(g))
            for g in items
            for k in ([None] if isinstance(g, tuple | list) else range(1, len(s) + 1))
        ]
    f = curves.frame
    horizon, unknown = _horizons(f)
    base_note = (
        f"horizon unknown for {len(unknown)} run(s) ({', '.join(unknown[:3])}"
        f"{', ...' if len(unknown) > 3 else ''}): their last checkpoint is used"
        if unknown
        else ""
    )
    tokens = f["tokens"].to_numpy(float)
    last = f.groupby("run")["tokens"].transform("max").to_numpy(float)
    run_of = f["run"].astype(str).to_numpy()
    groups = _branch_groups(f, horizon)
    root_col = (
        f["branch_root"].fillna("").astype(str).to_numpy()
        if groups
        else np.full(len(f), "", dtype=object)
    )
    prefix_only = (
        f["prefix_only"].fillna(False).astype(bool).to_numpy() if groups else np.zeros(len(f), bool)
    )
    cells = []
    for k, p in pairs:
        if not 0 < p < 1:
            raise ValueError(f"continue cells: fraction p must be in (0, 1), got {p}")
        if not 1 <= k <= len(s):
            raise ValueError(f"continue cells: size rank k must be in 1..{len(s)}, got {k}")
        cut = p * horizon
        fit_from = {}  # run -> (fitted run, the cut of the rows it is continued from)
        for root, members in groups.items():
            cut_root = min(min(p * h, dv) for h, dv in members.values())
            cut = np.where(run_of == root, cut_root, cut)
            for m in members:
                fit_from[m] = (root, cut_root)
        branch_rows = (root_col != "") & (run_of != root_col)  # a branch's own rows: never trained
        train = f[(tokens <= cut) & (tokens > min_tokens) & ~branch_rows]
        train_c = curves.with_frame(
            train, step="continue", reason=f"tokens > {p:g} x run horizon or <= {min_tokens:g}"
        )
        held = (f["params"] == s[k - 1]).to_numpy() & ~prefix_only
        fitted = set(train["run"])
        final = held & (tokens == last)
        dropped, pairs_from, short = [], [], []
        keep = np.zeros(len(f), dtype=bool)
        for i in np.flatnonzero(final):
            run = run_of[i]
            src, c = fit_from.get(run, (run, cut[i]))
            if src not in fitted:
                dropped.append(f"{run} (no training row)")
            elif tokens[i] <= c:
                dropped.append(f"{run} (ends at or before {p:g} x horizon)")
            else:
                keep[i] = True
                if src != run:
                    pairs_from.append((run, src))
                if run in fit_from and c < p * horizon[i] * (1 - 1e-9):
                    short.append(c / horizon[i])
        target = curves.with_frame(
            f[keep], step="continue_target", reason="not a held run's final checkpoint"
        )
        notes = [base_note] if base_note else []
        if dropped:
            notes.append("not scored: " + ", ".join(dropped))
        if pairs_from:
            notes.append(
                f"{len(pairs_from)} branch run(s) continued from their root's rows under "
                "their own schedule"
            )
        if short:
            notes.append(
                f"{len(short)} target(s) whose root is shared see less than {p:g} of their "
                f"own horizon (lowest {min(short):.2f}): a shared root is cut where its "
                "first branch leaves it or reaches its own p"
            )
        cells.append(
            Cell(
                family=fam,
                k=k,
                p=p,
                direction=direction,
                train=train_c,
                target=target,
                n_sizes_used=int(train["params"].nunique()),
                kind="continue",
                note="; ".join(notes),
                continue_from=tuple(pairs_from),
            )
        )
    return cells
