"""hiscale._util: the shared JSON default, cache key and central interval."""

import json
from pathlib import Path

import numpy as np
import pytest

from hiscale._util import cache_key, central_interval, json_default
from hiscale.data.curves import CurvesError, sole_family


def test_central_interval_matches_hand_interpolation():
    # 5 sorted values: the q-quantile sits at position q * 4 (linear interpolation)
    v = np.array([3.0, 1.0, 4.0, 10.0, 2.0])  # sorted: 1 2 3 4 10
    lo, hi = central_interval(v, 0.5)  # q = 0.25 -> position 1; q = 0.75 -> position 3
    assert (lo, hi) == (2.0, 4.0)
    lo, hi = central_interval(v, 0.8)  # q = 0.1 -> 0.4; q = 0.9 -> 3.6
    assert lo == pytest.approx(1.0 + 0.4 * (2.0 - 1.0))
    assert hi == pytest.approx(4.0 + 0.6 * (10.0 - 4.0))


def test_central_interval_along_an_axis():
    draws = np.stack([np.arange(101.0), 2 * np.arange(101.0)], axis=1)  # (draws, points)
    lo, hi = central_interval(draws, 0.9, axis=0)
    np.testing.assert_allclose(lo, [5.0, 10.0])
    np.testing.assert_allclose(hi, [95.0, 190.0])


def test_json_default_round_trips_numpy_values():
    obj = {"a": np.float64(1.5), "b": np.arange(3), "c": {2, 1}, "p": Path("x/y")}
    back = json.loads(json.dumps(obj, default=json_default))
    assert (back["a"], back["b"], sorted(back["c"]), back["p"]) == (1.5, [0, 1, 2], [1, 2], "x/y")
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json.dumps(object(), default=json_default)


def test_cache_key_depends_on_content_and_key_order_only_when_asked():
    a, b = {"x": 1, "y": 2}, {"y": 2, "x": 1}
    assert cache_key([a], sort_keys=True) == cache_key([b], sort_keys=True)
    assert cache_key([a]) != cache_key([b])
    assert cache_key([a]) != cache_key([{"x": 1, "y": 3}])
    assert len(cache_key([a])) == 16


def test_sole_family():
    assert sole_family(["f"], "what") == "f"
    with pytest.raises(CurvesError, match=r"^ctx: the data hold 2 families; pick one \(a, b\)$"):
        sole_family(["a", "b"], "ctx", hint="pick one")
    with pytest.raises(CurvesError, match=r"^ctx: the data hold 0 families \(\)$"):
        sole_family([], "ctx")


def test_finite_float_reads_table_cells():
    from hiscale._util import finite_float

    assert finite_float("3.5") == 3.5 and finite_float(2) == 2.0
    for bad in (None, "", "n/a", float("nan"), float("inf"), "-inf"):
        assert finite_float(bad) is None
