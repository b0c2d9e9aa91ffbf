"""Small helpers shared across layers (JSON values, cache keys, central intervals).

Bottom layer: imports nothing from hiscale, so every module may use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_key", "central_interval", "json_default"]


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy values, tuples, sets and paths."""
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
    """Short SHA-256 (16 hex chars) of ``parts`` as JSON (non-JSON values by ``str``).

    ``sort_keys`` is passed to :func:`json.dumps`; a caller must keep its choice,
    since changing it changes every key (and so orphans the cache).
    """
    payload = json.dumps(parts, sort_keys=sort_keys, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def central_interval(draws: Any, level: float, axis: int | None = None) -> tuple[Any, Any]:
    """Lower and upper ends of the central ``level`` interval of ``draws`` along ``axis``.

    The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (NumPy's default,
    linear interpolation).
    """
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lo, hi
