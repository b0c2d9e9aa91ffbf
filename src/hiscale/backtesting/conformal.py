r"""Split-conformal recalibration of backtest intervals over family groups (issue 10, section 3).

A post-hoc alternative to the extrapolation-discrepancy term
(:mod:`hiscale.backtesting.discrepancy`): each cell's central interval is
rescaled in ``ln`` around its median by a factor learned from the *other*
family groups' cells (nested leave-one-group-out, so a family never
calibrates its own intervals).

Per cell, with the cell's mean median ``m``, mean bounds ``l, u`` at a level
and the mean actual loss ``y`` (the columns of a backtest row), the
nonconformity score is the smallest factor ``lambda`` by which the interval's
``ln`` half-widths must be multiplied to contain ``y``:

.. math::

    s = \frac{\ln(y / m)}{\ln(u / m)} \ (y \ge m), \qquad
    s = \frac{\ln(y / m)}{\ln(l / m)} \ (y < m).

The recalibrated interval is ``[m (l / m)^q, m (u / m)^q]`` with ``q`` the
weighted conformal quantile of the calibration scores: every calibration
*group* carries weight 1 (split evenly over its families, then over each
family's cells), and the held-out group's own weight 1 sits at ``+inf``
(the finite-sample correction of split conformal, counted in groups:
``q`` is the smallest score whose cumulative weight reaches
``level x (G + 1)``). ``by="k"`` calibrates separately within buckets of
model sizes used (``1``, ``2-3``, ``4+``; Mondrian conformal), so that the
factor may shrink intervals where they are too wide (one size) and widen
them where they are too narrow (many sizes).

Coverage here is of the cell's *mean* actual loss by the rescaled mean
bounds (one yes/no per cell), not the share of target rows of
:func:`hiscale.backtesting.runner.run_cell`; :func:`recalibrate` reports
the uncalibrated intervals under the same definition, so the comparison is
like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hiscale._util import level_tag
from hiscale.backtesting.scores import groups_of

__all__ = ["K_BUCKETS", "conformal_quantile", "k_bucket", "recalibrate", "scores"]

#: Buckets of model sizes used for ``by="k"``: label -> (lowest, highest).
K_BUCKETS: dict[str, tuple[int, float]] = {"1": (1, 1), "2-3": (2, 3), "4+": (4, np.inf)}


def k_bucket(n_sizes_used) -> np.ndarray:
    """Label each cell's bucket of model sizes used (:data:`K_BUCKETS`).

    Parameters
    ----------
    n_sizes_used : array
        Sizes used per cell.

    Returns
    -------
    ndarray of str
    """
    n = np.asarray(n_sizes_used, float)
    out = np.full(n.shape, "", dtype=object)
    for label, (lo, hi) in K_BUCKETS.items():
        out[(n >= lo) & (n <= hi)] = label
    return out


def scores(results: pd.DataFrame, level: float) -> np.ndarray:
    """Nonconformity score per row: the factor on the ``ln`` half-width that just covers.

    Parameters
    ----------
    results : DataFrame
        Backtest rows with ``predicted``, ``actual`` and ``lowerP``/``upperP``.
    level : float
        Interval level (``0.8`` -> ``lower80``, ``upper80``).

    Returns
    -------
    ndarray
        ``s >= 0`` per row (NaN where a bound is missing or not positive).
    """
    tag = level_tag(level)
    m = results["predicted"].to_numpy(float)
    y = results["actual"].to_numpy(float)
    lo = results[f"lower{tag}"].to_numpy(float)
    hi = results[f"upper{tag}"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(y / m)
        den = np.where(r >= 0, np.log(hi / m), np.log(lo / m))
        s = r / den
    ok = (lo > 0) & (hi > 0) & (m > 0) & (lo <= m) & (m <= hi) & np.isfinite(s)
    # a zero-width side covers only an actual exactly at the median
    s = np.where((den == 0) & (r == 0), 0.0, s)
    return np.where(ok | ((den == 0) & (r == 0)), np.abs(s), np.nan)


def conformal_quantile(s, weights, level: float, test_weight: float = 1.0) -> float:
    """Weighted split-conformal quantile with the test point's weight at ``+inf``.

    Parameters
    ----------
    s : array
        Calibration scores.
    weights : array
        Their weights (> 0).
    level : float
        Target coverage.
    test_weight : float, default 1
        Weight of the held-out unit, placed at ``+inf``.

    Returns
    -------
    float
        The smallest score whose cumulative weight reaches ``level`` of the
        total (calibration plus test); ``inf`` when only the test point's
        mass would get there.
    """
    s = np.asarray(s, float)
    w = np.asarray(weights, float)
    keep = np.isfinite(s) & (w > 0)
    s, w = s[keep], w[keep]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    order = np.argsort(s, kind="stable")
    cw = np.cumsum(w[order])
    total = cw[-1] + test_weight if len(cw) else test_weight
    idx = np.searchsorted(cw, level * total - 1e-12 * total)
    return float(s[order][idx]) if idx < len(s) else float("inf")


def _group_weights(frame: pd.DataFrame) -> np.ndarray:
    """Each group weight 1, split evenly over its families, then over a family's cells."""
    g = groups_of(frame).to_numpy()
    fam = frame["family"].to_numpy()
    key = pd.DataFrame({"g": g, "f": fam})
    cells = key.groupby("f")["f"].transform("size").to_numpy(float)
    fams = key.groupby("g")["f"].transform("nunique").to_numpy(float)
    return 1.0 / (cells * fams)


def recalibrate(
    results: pd.DataFrame,
    method: str,
    ci_prob: Sequence[float] = (0.8, 0.5),
    *,
    by: str | None = None,
) -> pd.DataFrame:
    """Nested leave-one-group-out split-conformal intervals for one method's cells.

    Parameters
    ----------
    results : DataFrame
        Backtest rows (fitted rows of ``method`` are used; a ``group`` column
        or the family names give the groups).
    method : str
        The method whose intervals are recalibrated.
    ci_prob : sequence of float
        Levels (each needs ``lowerP``/``upperP`` columns).
    by : {None, "k"}
        ``"k"``: calibrate within buckets of model sizes used (:data:`K_BUCKETS`).

    Returns
    -------
    DataFrame
        The method's fitted rows with, per level ``P``: ``scoreP``,
        ``qP`` (the factor from the other groups), ``lowerP_conf``,
        ``upperP_conf``, ``coveredP_cell`` (the uncalibrated mean bounds
        cover the mean actual) and ``coveredP_conf``; plus ``bucket``.
    """
    if by not in (None, "k"):
        raise ValueError(f"by must be None or 'k', got {by!r}")
    rows = results[(results["method"] == method) & (results["status"] == "ok")].copy()
    rows = rows[np.isfinite(rows["are_pct"].to_numpy(float))]
    if rows.empty:
        raise ValueError(f"no fitted rows of method {method!r}")
    rows["group"] = groups_of(rows).to_numpy()
    rows["bucket"] = k_bucket(rows["n_sizes_used"]) if by == "k" else "all"
    for level in ci_prob:
        tag = level_tag(level)
        rows[f"score{tag}"] = scores(rows, level)
        q = np.full(len(rows), np.nan)
        for g in rows["group"].unique():
            test = (rows["group"] == g).to_numpy()
            for b in rows.loc[test, "bucket"].unique():
                cal = (~test) & (rows["bucket"] == b).to_numpy()
                w = _group_weights(rows[cal])
                qi = conformal_quantile(rows.loc[cal, f"score{tag}"], w, level)
                q[test & (rows["bucket"] == b).to_numpy()] = qi
        rows[f"q{tag}"] = q
        m = rows["predicted"].to_numpy(float)
        lo = rows[f"lower{tag}"].to_numpy(float)
        hi = rows[f"upper{tag}"].to_numpy(float)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            rows[f"lower{tag}_conf"] = m * (lo / m) ** q
            rows[f"upper{tag}_conf"] = m * (hi / m) ** q
        s = rows[f"score{tag}"].to_numpy(float)
        rows[f"covered{tag}_cell"] = np.where(np.isfinite(s), s <= 1.0, np.nan)
        rows[f"covered{tag}_conf"] = np.where(np.isfinite(s), s <= q, np.nan)
    return rows
