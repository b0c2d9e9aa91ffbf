"""Family covariates: a column constant within a family, or one derived from a column.

A population prior can let its mean depend on such a covariate
(:func:`hiscale.population.build_prior` with ``covariate=``); a fit checks
that a prior built for one level is used on a family of that level
(:func:`hiscale.infer.fit.fit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hiscale.data.curves import Curves

__all__ = ["DERIVED_FAMILY_COVARIATES", "MISSING_LEVEL", "family_covariate"]


def _metric_kind(metric: str) -> str:
    """``"train"`` for a training-loss metric (name starting ``train``), else ``"eval"``."""
    return "train" if metric.strip().lower().startswith("train") else "eval"


#: Family covariates computed from a column rather than read from it:
#: ``name -> (column, function of the column's value)``. ``metric_kind``
#: separates training losses (``train_loss``: the model's own training
#: stream) from held-out evaluation losses (``val_loss``, ``val_loss_c4``, ...).
DERIVED_FAMILY_COVARIATES: dict[str, tuple[str, Any]] = {
    "metric_kind": ("metric", _metric_kind),
}

#: The level of a family whose covariate cell is empty (reported in the prior's meta).
MISSING_LEVEL = "(missing)"


def family_covariate(curves: Curves, column: str, families: Sequence[str] | None = None) -> dict:
    """Each family's level of a family covariate (a column constant within a family).

    Parameters
    ----------
    curves : Curves
        The table.
    column : str
        A column of the table (``dataset``, ``arch``, ``source``, ...) or a
        derived covariate of :data:`DERIVED_FAMILY_COVARIATES`
        (``metric_kind``: ``train`` / ``eval`` from ``metric``).
    families : sequence of str, optional
        Families to look up (default: all).

    Returns
    -------
    dict of str to str
        ``{family: level}``; an empty or missing cell is the level
        :data:`MISSING_LEVEL` (the population treats it as a level of its own
        and its meta lists such families).

    Raises
    ------
    ValueError
        One line naming the column, the family, two of its values and their
        rows when the column is not constant within a family, or when the
        column does not exist.
    """
    source, fn = DERIVED_FAMILY_COVARIATES.get(column, (column, None))
    frame = curves.frame
    if source not in frame.columns:
        known = sorted(DERIVED_FAMILY_COVARIATES)
        raise ValueError(
            f"family covariate {column!r}: the table has no column {source!r} "
            f"(derived covariates: {known})"
        )
    out = {}
    for fam in families if families is not None else curves.families:
        rows = frame.loc[frame["family"] == fam, source]
        vals = rows.fillna("").astype(str).str.strip()
        if fn is not None:
            vals = vals.map(lambda v: fn(v) if v else "")
        distinct = vals.unique()
        if len(distinct) > 1:
            first = vals.index[vals == distinct[0]][0]
            other = vals.index[vals == distinct[1]][0]
            raise ValueError(
                f"family covariate {column!r}: family {fam!r} has {distinct[0]!r} in row "
                f"{first} and {distinct[1]!r} in row {other}; it must be constant within a family"
            )
        out[fam] = distinct[0] if len(distinct) and distinct[0] else MISSING_LEVEL
    return out
