"""What a perfectly calibrated method would score on a family-by-family coverage band.

A requirement such as "every family's 80% coverage in 60-95%" is judged on a
family's backtest cells, and the cells of one family share one target run. A
method whose intervals are exactly calibrated still misses a cell with
probability ``1 - level``, so its coverage on a family of ``n`` cells is a random
count over ``n``, and cells that share a target miss together. This module
computes the probability that such a method lands inside the band, per family
and for every family at once, so a band can be read against what the cells can
show at all.

The model of a calibrated method: each cell's PIT is uniform, and the cells of a
family are exchangeable with a Gaussian copula of correlation ``rho`` (``rho`` = 0:
independent cells; ``rho`` = 1: one shared outcome). A cell is covered when its
PIT lies in the central ``level`` interval, i.e. ``|Z_i| < c`` with
``Z_i = sqrt(rho) W + sqrt(1 - rho) e_i`` standard normal and
``c = Phi^-1((1 + level) / 2)``. Given ``W`` the cells are independent with
coverage probability ``p(W)``, so the band probability is a one-dimensional
integral of a binomial sum, computed by adaptive quadrature split at the
jumps of the integrand.

Cells are scored as covered or not (a cell whose target rows are partly inside
its interval counts by its PIT), families are independent of each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import integrate, stats

__all__ = [
    "band_probability",
    "family_band_table",
    "macro_band_probability",
    "probit_icc",
]


def _band_counts(n: int, band: tuple[float, float]) -> np.ndarray:
    """Return the counts j of covered cells with ``band[0] <= j / n <= band[1]``."""
    j = np.arange(n + 1)
    eps = 1e-12
    return j[(j / n >= band[0] - eps) & (j / n <= band[1] + eps)]


def band_probability(
    n_cells: int,
    level: float = 0.8,
    band: tuple[float, float] = (0.6, 0.95),
    rho: float = 0.0,
) -> float:
    """Probability that a calibrated method's coverage of ``n_cells`` cells is in ``band``.

    Parameters
    ----------
    n_cells : int
        Cells of the family (at least 1).
    level : float
        Nominal level of the central intervals (0.8 for 80% intervals).
    band : (float, float)
        Accepted coverage, inclusive at both ends.
    rho : float
        Correlation of the cells' probit PITs, in [0, 1].

    Returns
    -------
    float
        ``P(band[0] <= covered / n_cells <= band[1])``.
    """
    n = int(n_cells)
    if n < 1:
        raise ValueError(f"n_cells must be at least 1, got {n_cells!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not 0 <= rho <= 1:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    counts = _band_counts(n, band)
    if counts.size == 0:
        return 0.0
    if rho == 0:
        return float(stats.binom.pmf(counts, n, level).sum())
    if rho == 1:
        return float(level * (n in counts) + (1 - level) * (0 in counts))
    c = stats.norm.ppf((1 + level) / 2)
    s, t = np.sqrt(rho), np.sqrt(1 - rho)

    def integrand(w: float) -> float:
        p = stats.norm.cdf((c - s * w) / t) - stats.norm.cdf((-c - s * w) / t)
        return float(stats.binom.pmf(counts, n, p).sum() * stats.norm.pdf(w))

    # the integrand changes fastest where p(W) crosses from 1 to 0: W = +-c / sqrt(rho)
    edges = [-12.0, -c / s, 0.0, c / s, 12.0]
    edges = sorted(e for e in edges if -12.0 <= e <= 12.0)
    total = 0.0
    for a, b in itertools.pairwise(edges):
        value, _ = integrate.quad(integrand, a, b, limit=200, epsabs=1e-12, epsrel=1e-10)
        total += value
    return float(min(max(total, 0.0), 1.0))


def macro_band_probability(
    groups: Sequence[Sequence[int]],
    level: float = 0.8,
    band: tuple[float, float] = (0.73, 0.87),
    rho: float = 0.0,
    *,
    draws: int = 200_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Probability that a calibrated method's *macro* coverage is in ``band`` (Monte Carlo).

    Macro as the backtests report it: a family's coverage is the mean over its
    cells, a group's the mean over its families, the macro the mean over
    groups. Cells of a family are correlated as in :func:`band_probability`;
    families are independent.

    Parameters
    ----------
    groups : sequence of sequences of int
        Per family group, the cell counts of its families (``[[3], [15, 15]]``:
        a group of one family with 3 cells and a group of two with 15 each).
    level, band, rho
        As :func:`band_probability`.
    draws : int
        Monte Carlo replicates.
    seed : int
        Seed of the replicates (same seed, same number).

    Returns
    -------
    (float, float)
        The probability and its Monte Carlo standard error.
    """
    if not groups or any(len(g) == 0 or min(g) < 1 for g in groups):
        raise ValueError(f"groups: every group needs families of at least 1 cell, got {groups!r}")
    if not 0 <= rho <= 1:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    rng = np.random.default_rng(seed)
    c = stats.norm.ppf((1 + level) / 2)
    macro = np.zeros(draws)
    for g in groups:
        mean = np.zeros(draws)
        for n in g:
            z = np.sqrt(rho) * rng.standard_normal((draws, 1)) + np.sqrt(1 - rho) * (
                rng.standard_normal((draws, int(n)))
            )
            mean += (np.abs(z) < c).mean(axis=1)
        macro += mean / len(g)
    macro /= len(groups)
    inside = (macro >= band[0] - 1e-12) & (macro <= band[1] + 1e-12)
    p = float(inside.mean())
    return p, float(np.sqrt(p * (1 - p) / draws))


def probit_icc(results: pd.DataFrame, method: str, column: str = "pit_mean") -> float:
    """Within-family correlation of a method's probit PITs (one-way ANOVA estimator).

    ``z = Phi^-1(PIT)`` per cell; the intraclass correlation of ``z`` grouped by
    family, ``(MSB - MSW) / (MSB + (n0 - 1) MSW)`` with ``n0`` the ANOVA's
    effective family size, clipped to [0, 1]. For a miscalibrated method it
    includes each family's bias, so it is an upper reading of the correlation a
    calibrated method would have on the same cells.
    """
    rows = results[(results["method"] == method) & results[column].notna()]
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if rows.empty:
        raise ValueError(f"no cells of method {method!r} with a {column!r} value")
    z = stats.norm.ppf(rows[column].clip(1e-6, 1 - 1e-6).to_numpy(float))
    fam = rows["family"].to_numpy()
    groups = [z[fam == f] for f in pd.unique(fam)]
    groups = [g for g in groups if g.size > 0]
    k = len(groups)
    n = sum(g.size for g in groups)
    if k < 2 or n <= k:
        raise ValueError(
            f"method {method!r}: need cells of at least 2 families and more cells than families"
        )
    grand = z.mean()
    ssb = sum(g.size * (g.mean() - grand) ** 2 for g in groups)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    msb, msw = ssb / (k - 1), ssw / (n - k)
    n0 = (n - sum(g.size**2 for g in groups) / n) / (k - 1)
    icc = (msb - msw) / (msb + (n0 - 1) * msw)
    return float(np.clip(icc, 0.0, 1.0))


def family_band_table(
    results: pd.DataFrame,
    method: str,
    level: float = 0.8,
    band: tuple[float, float] = (0.6, 0.95),
    rhos: Sequence[float] = (0.0, 0.5, 0.9),
) -> pd.DataFrame:
    """Per family: cells, the method's coverage, and a calibrated method's band probability.

    ``results`` are backtest rows (one per cell and method; pass the common cells
    to compare methods). The method's coverage is the mean over the family's
    cells of ``covered{level}`` (the share of the cell's target rows inside the
    interval). One column ``p_band_rho=R`` per correlation in ``rhos``; the last
    row, family ``"(every family)"``, holds the product over families (families
    independent), the probability that a calibrated method puts *every* family
    in the band.
    """
    tag = f"covered{round(100 * level)}"
    rows = results[results["method"] == method]
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if rows.empty:
        raise ValueError(f"no fitted cells of method {method!r}")
    out = []
    for family, g in rows.groupby("family", sort=True):
        rec = {
            "family": family,
            "group": g["group"].iloc[0] if "group" in g else family,
            "cells": len(g),
            "coverage": float(g[tag].mean()) if tag in g else float("nan"),
        }
        cov = rec["coverage"]
        inside = band[0] - 1e-12 <= cov <= band[1] + 1e-12
        rec["in_band"] = bool(inside) if np.isfinite(cov) else False
        for r in rhos:
            rec[f"p_band_rho={r:g}"] = band_probability(len(g), level, band, r)
        out.append(rec)
    table = pd.DataFrame(out)
    total = {"family": "(every family)", "group": "", "cells": int(table["cells"].sum())}
    total["coverage"] = float("nan")
    total["in_band"] = bool(table["in_band"].all())
    for r in rhos:
        total[f"p_band_rho={r:g}"] = float(np.prod(table[f"p_band_rho={r:g}"]))
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)
