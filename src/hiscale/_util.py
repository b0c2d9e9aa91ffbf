"""Small helpers shared across layers (JSON values, cache keys, central intervals).

Bottom layer: imports nothing from hiscale, so every module may use it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "cache_key",
    "central_interval",
    "finite_float",
    "json_default",
    "level_tag",
    "table_digest",
]


def json_default(obj: Any) -> Any:
    """Convert NumPy values, tuples, sets and paths for ``json.dumps(default=...)``.

    Parameters
    ----------
    obj : object
        A value :mod:`json` cannot encode by itself.

    Returns
    -------
    object
        A Python scalar (NumPy scalar), a list (array, tuple, set) or a str (path).

    Raises
    ------
    TypeError
        For any other type, as :func:`json.dumps` expects.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def cache_key(parts: Any, *, sort_keys: bool = False) -> str:
    """Hash ``parts`` as JSON (non-JSON values by ``str``) to a short SHA-256.

    Parameters
    ----------
    parts : object
        What the cached result depends on.
    sort_keys : bool, default False
        Passed to :func:`json.dumps`; a caller must keep its choice, since
        changing it changes every key (and so orphans the cache).

    Returns
    -------
    str
        The first 16 hex characters of the SHA-256 digest.
    """
    payload = json.dumps(parts, sort_keys=sort_keys, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def central_interval(draws: Any, level: float, axis: int | None = None) -> tuple[Any, Any]:
    """Compute the central ``level`` interval of ``draws`` along ``axis``.

    Parameters
    ----------
    draws : array_like
        Samples.
    level : float
        Probability mass inside the interval, in (0, 1) (e.g. 0.8).
    axis : int, optional
        Axis of the samples; None flattens ``draws``.

    Returns
    -------
    tuple
        ``(lower, upper)``: the ``(1 - level) / 2`` and ``(1 + level) / 2``
        quantiles (NumPy's default, linear interpolation).
    """
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lo, hi


def level_tag(level: float) -> str:
    """Return the column tag of an interval probability: ``0.8 -> "80"``, ``0.975 -> "97.5"``.

    Parameters
    ----------
    level : float
        Central interval probability in (0, 1).

    Returns
    -------
    str
        ``100 * level`` in the shortest form (``%g``).
    """
    return f"{100 * float(level):g}"


def finite_float(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None (missing, text, NaN or infinite).

    Parameters
    ----------
    value : Any
        A cell of a table, e.g. ``runs_extra.csv``'s ``branch_step``.

    Returns
    -------
    float or None
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def table_digest(frame: Any) -> str:
    """Return a short digest of a table's values (row order counts, index does not).

    The sum of pandas' per-row hashes, as text: what settings and cache keys
    record for a side table such as ``runs_extra.csv``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table.

    Returns
    -------
    str
    """
    import pandas as pd

    return str(pd.util.hash_pandas_object(frame, index=False).sum())
