"""Split-conformal recalibration over family groups (``hiscale.backtesting.conformal``).

Checked against a brute-force expanded-sample quantile, the defining property
of the score (the rescaled interval just reaches the actual value), the
leave-one-group-out structure, and the split-conformal coverage guarantee on
simulated exchangeable groups.
"""

import numpy as np
import pandas as pd
import pytest

from hiscale.backtesting.conformal import conformal_quantile, k_bucket, recalibrate, scores


def test_conformal_quantile_with_integer_weights_is_the_expanded_sample_quantile():
    rng = np.random.default_rng(0)
    s = rng.exponential(size=9)
    w = rng.integers(1, 4, size=9)
    for level in (0.5, 0.8, 0.9):
        expanded = np.concatenate([np.repeat(s, w), [np.inf] * 2])
        ref = np.quantile(expanded, level, method="inverted_cdf")
        assert conformal_quantile(s, w, level, test_weight=2) == ref
    # too few calibration points for the level: only the +inf mass reaches it
    assert conformal_quantile([0.3], [1.0], 0.8) == np.inf


def _row(m, lo, hi, y, **kw):
    return {"predicted": m, "lower80": lo, "upper80": hi, "actual": y, **kw}


def test_the_rescaled_interval_just_reaches_the_actual_value():
    rows = pd.DataFrame(
        [_row(2.0, 1.8, 2.3, 2.6), _row(2.0, 1.8, 2.3, 1.9), _row(2.0, 1.5, 2.2, 1.2)]
    )
    s = scores(rows, 0.8)
    m, lo, hi, y = (rows[c].to_numpy() for c in ("predicted", "lower80", "upper80", "actual"))
    new_lo, new_hi = m * (lo / m) ** s, m * (hi / m) ** s
    touched = np.where(y >= m, new_hi, new_lo)
    np.testing.assert_allclose(touched, y, rtol=1e-12)
    assert s[1] < 1 < s[0]  # inside the interval -> factor < 1; outside -> > 1


def _cells(rng, groups, scale=1.0, cells=6):
    out = []
    for g in range(groups):
        for c in range(cells):
            hw = 0.05 * rng.uniform(0.5, 2.0)
            # ln(y / m) ~ N(0, (scale * hw / z80)^2): calibrated when scale = 1
            y = 2.0 * np.exp(scale * hw / 1.2815515655446004 * rng.standard_normal())
            out.append(
                _row(
                    2.0,
                    2.0 * np.exp(-hw),
                    2.0 * np.exp(hw),
                    y,
                    family=f"f{g}",
                    group=f"g{g}",
                    method="bayes",
                    status="ok",
                    are_pct=1.0,
                    n_sizes_used=1 + c % 5,
                )
            )
    return pd.DataFrame(out)


def test_a_group_never_calibrates_its_own_intervals():
    rng = np.random.default_rng(1)
    base = _cells(rng, 6)
    a = recalibrate(base, "bayes", (0.8,))
    moved = base.copy()
    g0 = moved["group"] == "g0"
    moved.loc[g0, "actual"] = moved.loc[g0, "predicted"] * 1.5  # far outside
    b = recalibrate(moved, "bayes", (0.8,))
    # g0's own factor is unchanged; the others see g0's large scores
    np.testing.assert_array_equal(a.loc[g0.values, "q80"], b.loc[g0.values, "q80"])
    assert (b.loc[~g0.values, "q80"] >= a.loc[~g0.values, "q80"]).all()


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_split_conformal_restores_coverage_on_exchangeable_groups(scale):
    # intervals twice too wide (scale 0.5) or too narrow (2.0); nested conformal with
    # G = 11 groups has coverage in [0.8, 0.8 + 1 / (G + 1)] on average
    rng = np.random.default_rng(2)
    cov_raw, cov = [], []
    for _ in range(80):
        r = recalibrate(_cells(rng, 11, scale=scale), "bayes", (0.8,))
        cov_raw.append(r["covered80_cell"].mean())
        cov.append(r["covered80_conf"].mean())
    assert abs(np.mean(cov_raw) - 0.8) > 0.1
    assert 0.78 <= np.mean(cov) <= 0.8 + 1 / 12 + 0.02


def test_k_buckets_and_bad_arguments():
    assert k_bucket([1, 2, 3, 4, 141]).tolist() == ["1", "2-3", "2-3", "4+", "4+"]
    rows = _cells(np.random.default_rng(3), 4)
    with pytest.raises(ValueError, match="by must be"):
        recalibrate(rows, "bayes", by="family")
    with pytest.raises(ValueError, match="no fitted rows of method 'paper'"):
        recalibrate(rows, "paper")
    r = recalibrate(rows, "bayes", (0.8,), by="k")
    assert set(r["bucket"]) == {"1", "2-3", "4+"}
