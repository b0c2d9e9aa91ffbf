"""Band probabilities of a calibrated method (``hiscale.backtesting.band``).

Checked against a Monte Carlo simulation of correlated cells, closed forms at the
ends (independent cells: a binomial enumerated by hand; one shared outcome), the
one-cell identity that does not depend on the correlation, and recovery of a
known intraclass correlation.
"""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hiscale.backtesting.band import (
    band_probability,
    family_band_table,
    macro_band_probability,
    probit_icc,
)


def _monte_carlo(n, level, band, rho, reps, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((reps, 1))
    e = rng.standard_normal((reps, n))
    z = np.sqrt(rho) * w + np.sqrt(1 - rho) * e
    c = stats.norm.ppf((1 + level) / 2)
    cov = (np.abs(z) < c).mean(axis=1)
    inside = (cov >= band[0] - 1e-12) & (cov <= band[1] + 1e-12)
    return inside.mean(), inside.std() / np.sqrt(reps)


@pytest.mark.parametrize("n", [3, 6, 15])
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7, 0.95])
def test_band_probability_matches_a_simulation_of_correlated_cells(n, rho):
    est = band_probability(n, 0.8, (0.6, 0.95), rho)
    mc, se = _monte_carlo(n, 0.8, (0.6, 0.95), rho, 200_000, seed=n)
    assert abs(est - mc) < 5 * se + 1e-4


def test_independent_cells_are_a_binomial_enumerated_outcome_by_outcome():
    n, level, band = 6, 0.8, (0.6, 0.95)
    brute = 0.0
    for outcome in itertools.product([0, 1], repeat=n):
        j = sum(outcome)
        if band[0] <= j / n <= band[1]:
            brute += level**j * (1 - level) ** (n - j)
    assert band_probability(n, level, band, 0.0) == pytest.approx(brute, rel=1e-12)
    # and the quadrature agrees with it as the correlation vanishes
    assert band_probability(n, level, band, 1e-8) == pytest.approx(brute, abs=1e-6)


def test_one_shared_outcome_is_all_or_nothing():
    # rho = 1: coverage is 0 or 1, neither in (0.6, 0.95)
    assert band_probability(15, 0.8, (0.6, 0.95), 1.0) == 0.0
    assert band_probability(15, 0.8, (0.6, 1.0), 1.0) == pytest.approx(0.8)
    # the quadrature approaches it
    assert band_probability(15, 0.8, (0.6, 1.0), 1 - 1e-6) == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("rho", [0.0, 0.2, 0.6, 0.99])
def test_one_cell_is_covered_with_the_nominal_probability_whatever_the_correlation(rho):
    assert band_probability(1, 0.8, (0.6, 1.0), rho) == pytest.approx(0.8, abs=1e-9)
    assert band_probability(1, 0.5, (0.0, 0.4), rho) == pytest.approx(0.5, abs=1e-9)


def test_bad_arguments_are_one_line_errors():
    for kwargs in ({"n_cells": 0}, {"n_cells": 3, "level": 1.2}, {"n_cells": 3, "rho": -0.1}):
        with pytest.raises(ValueError) as err:
            band_probability(**kwargs)
        assert "\n" not in str(err.value)


def _cells(n_families, n_cells, icc, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_families):
        shared = rng.standard_normal()
        for _ in range(n_cells):
            z = np.sqrt(icc) * shared + np.sqrt(1 - icc) * rng.standard_normal()
            rows.append(
                {
                    "family": f"f{f}",
                    "group": f"g{f}",
                    "method": "m",
                    "status": "ok",
                    "pit_mean": stats.norm.cdf(z),
                    "covered80": float(abs(z) < stats.norm.ppf(0.9)),
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("icc", [0.0, 0.5, 0.8])
def test_probit_icc_recovers_a_known_intraclass_correlation(icc):
    cells = _cells(200, 8, icc, seed=1)
    assert probit_icc(cells, "m") == pytest.approx(icc, abs=0.07)


def test_family_table_has_one_row_per_family_and_the_product_over_families():
    other = _cells(1, 6, 0.5, seed=3).assign(family="g", group="gg")
    cells = pd.concat([_cells(1, 3, 0.5, seed=2), other])
    t = family_band_table(cells, "m", rhos=(0.0, 0.5))
    assert list(t["family"]) == ["f0", "g", "(every family)"]
    assert list(t["cells"]) == [3, 6, 9]
    assert t.loc[0, "coverage"] == pytest.approx(cells[cells.family == "f0"]["covered80"].mean())
    for r in ("0", "0.5"):
        col = f"p_band_rho={r}"
        assert t.loc[2, col] == pytest.approx(t.loc[0, col] * t.loc[1, col])
        assert t.loc[0, col] == pytest.approx(band_probability(3, 0.8, (0.6, 0.95), float(r)))
    with pytest.raises(ValueError, match="no fitted cells of method 'x'"):
        family_band_table(cells, "x")


def test_macro_band_probability_matches_an_exact_enumeration():
    """Four one-cell groups and a group of three one-cell families (the planner campaigns)."""
    groups = [[1], [1], [1], [1], [1, 1, 1]]
    exact = 0.0
    for outcome in itertools.product([0, 1], repeat=7):
        p = np.prod([0.8 if o else 0.2 for o in outcome])
        macro = (sum(outcome[:4]) + sum(outcome[4:]) / 3) / 5
        exact += p * (0.7 <= macro <= 0.9)
    est, se = macro_band_probability(groups, 0.8, (0.7, 0.9), rho=0.5, draws=100_000, seed=1)
    # one-cell families: the within-family correlation cannot matter
    assert abs(est - exact) < 5 * se
    again = macro_band_probability(groups, 0.8, (0.7, 0.9), rho=0.5, draws=100_000, seed=1)
    assert again == (est, se)


def test_macro_band_of_one_family_is_its_band_probability():
    est, se = macro_band_probability([[6]], 0.8, (0.6, 0.95), rho=0.4, draws=200_000, seed=2)
    assert abs(est - band_probability(6, 0.8, (0.6, 0.95), 0.4)) < 5 * se
