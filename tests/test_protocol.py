"""The paper's protocol on hand-built tables (hiscale.backtesting.protocol)."""

import numpy as np
import pandas as pd
import pytest
from synthetic import make_frame

from hiscale.backtesting.protocol import (
    GRIDS,
    filter_fraction,
    grid_values,
    make_cells,
    select_sizes,
    sizes,
    split_target,
    target_rows,
)
from hiscale.data.curves import Curves, CurvesError, load_curves
from hiscale.data.selection import end_of_run, filter_min_tokens

#: size -> checkpoint tokens. The smallest run never passes the 10B cut; the
#: largest size (16e6) is the target.
RUNS = {
    1e6: [5e9, 1e10],
    2e6: [5e9, 1e10, 2e10, 4e10],
    4e6: [1e10, 2e10, 4e10, 8e10],
    8e6: [2e10, 4e10, 8e10],
    16e6: [1e10, 5e10, 7e10, 1e11],
}


def hand_curves(runs=RUNS, family="f") -> Curves:
    rows = [
        {
            "family": family,
            "run": f"r{i}",
            "params": n,
            "tokens": t,
            "loss": 10.0 - np.log10(n) / 4 - np.log10(t) / 8,
        }
        for i, (n, toks) in enumerate(runs.items())
        for t in toks
    ]
    return load_curves(pd.DataFrame(rows))


def tokens_of(curves):
    return sorted(curves.frame["tokens"].tolist())


def check_log(curves, start):
    """Every record is consistent: rows only leave through a logged step with a reason."""
    n = start
    for rec in curves.log:
        assert rec.reason
        assert rec.removed >= 0
        assert rec.kept == n - rec.removed
        n = rec.kept
    assert n == len(curves)


# --- single filters -------------------------------------------------------------------


def test_filter_min_tokens_is_strict():
    c = hand_curves()
    out = filter_min_tokens(c)
    assert out.frame["tokens"].min() > 1e10
    # the rows at exactly 1e10 are removed too: 4 at 1e10 and 2 at 5e9
    rec = out.log[-1]
    assert (rec.step, rec.removed, rec.kept) == ("min_tokens", 6, 11)
    assert rec.reason == "tokens <= 1e+10"
    check_log(out, 17)


def test_filter_min_tokens_other_threshold_and_disabled():
    c = hand_curves()
    assert len(filter_min_tokens(c, 5e9)) == 15
    off = filter_min_tokens(c, 0)
    assert len(off) == 17
    assert (off.log[-1].removed, off.log[-1].reason) == (0, "disabled")


def test_filter_fraction_is_strict_with_default_threshold():
    c = select_sizes(hand_curves(), 3)  # max tokens 8e10
    out = filter_fraction(c, 0.5)
    assert tokens_of(out) == [5e9, 5e9, 1e10, 1e10, 1e10, 2e10, 2e10]
    assert out.log[-1].removed == 3  # 4e10 (x2) and 8e10; 4e10 == 0.5 * 8e10 is dropped
    assert out.log[-1].reason == "tokens >= 0.5 x 8e+10"
    # p = 1 drops the final checkpoint of the longest run
    assert filter_fraction(c, 1.0).frame["tokens"].max() == 4e10


def test_filter_fraction_shared_threshold():
    c = select_sizes(hand_curves(), 2)  # own max is 4e10
    out = filter_fraction(c, 0.25, threshold=8e10)  # keep < 2e10
    assert tokens_of(out) == [5e9, 5e9, 1e10, 1e10]
    assert "8e+10" in out.log[-1].reason


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01])
def test_filter_fraction_rejects_bad_p(p):
    with pytest.raises(ValueError, match="fraction p must be in"):
        filter_fraction(hand_curves(), p)


def test_select_sizes_smallest_and_largest():
    c = hand_curves()
    np.testing.assert_array_equal(sizes(select_sizes(c, 2)), [1e6, 2e6])
    np.testing.assert_array_equal(sizes(select_sizes(c, 2, largest=True)), [8e6, 16e6])
    out = select_sizes(c, 3)
    assert out.log[-1].removed == 7
    assert out.log[-1].reason == "not among the 3 smallest sizes"
    for k in (0, 6):
        with pytest.raises(ValueError, match=r"k must be in 1\.\.5"):
            select_sizes(c, k)


def test_split_target_up_and_down():
    c = hand_curves()
    train, target = split_target(c)
    assert set(target.frame["params"]) == {16e6}
    assert set(train.frame["params"]) == {1e6, 2e6, 4e6, 8e6}
    assert (train.log[-1].removed, target.log[-1].removed) == (4, 13)
    train, target = split_target(c, direction="down")
    assert set(target.frame["params"]) == {1e6}
    assert len(train) == 15
    with pytest.raises(ValueError, match="direction"):
        split_target(c, direction="sideways")


def test_split_target_needs_two_sizes():
    one = hand_curves({1e6: [2e10, 3e10]})
    with pytest.raises(CurvesError, match="need >= 2 sizes"):
        split_target(one)


def test_target_rows_last30_and_final():
    _, target = split_target(hand_curves())
    last30 = target_rows(target, "last30")
    assert tokens_of(last30) == [7e10, 1e11]  # 7e10 == 0.7 x 1e11 is kept
    assert last30.log[-1].removed == 2
    final = target_rows(target, "final")
    assert tokens_of(final) == [1e11]
    assert final.log[-1].reason == "not the final checkpoint"
    with pytest.raises(ValueError, match="target must be"):
        target_rows(target, "mean")


def test_target_rows_per_run_maximum():
    """With two target runs (seeds), each run's own last checkpoint counts."""
    frame = pd.concat(
        [
            make_frame(sizes=[1e8], tokens=[1e10, 2e10, 4e10]).assign(run="s0"),
            make_frame(sizes=[1e8], tokens=[1e10, 3e10]).assign(run="s1"),
        ],
        ignore_index=True,
    )
    out = target_rows(load_curves(frame), "final")
    assert sorted(zip(out.frame["run"], out.frame["tokens"], strict=True)) == [
        ("s0", 4e10),
        ("s1", 3e10),
    ]


def test_end_of_run():
    c = hand_curves()
    out = end_of_run(c, 0.5)
    # per run: keep tokens >= 0.5 x run max
    assert len(out) == 2 + 2 + 2 + 2 + 3
    assert "0.5 x the run's last token count" in out.log[-1].reason
    off = end_of_run(c, 0)
    assert len(off) == 17 and off.log[-1].reason == "disabled"


# --- grids ------------------------------------------------------------------------------


def test_grid_values_paper():
    pairs = grid_values(4, "paper")
    assert sorted({k for k, _ in pairs}) == [2, 3, 4]
    assert sorted({p for _, p in pairs}) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert len(pairs) == 30


def test_grid_values_quick():
    assert grid_values(2, "quick") == [(2, 0.3), (2, 0.5), (2, 1.0)]
    assert sorted({k for k, _ in grid_values(7, "quick")}) == [2, 3, 5, 7]
    assert sorted({p for _, p in grid_values(7, "quick")}) == [0.3, 0.5, 1.0]


def test_grid_values_sub():
    ks = sorted({k for k, _ in grid_values(20, "sub")})
    assert ks == [2, 3, 4, 5, 6, 7, 8, 13, 20]
    assert sorted({k for k, _ in grid_values(5, "sub")}) == [2, 3, 4, 5]
    assert len(grid_values(141, "sub")) == 9 * 10


def test_grid_values_k1_and_unknown():
    assert grid_values(3, "quick", include_k1=True)[:3] == [(1, 0.3), (1, 0.5), (1, 1.0)]
    with pytest.raises(ValueError, match="unknown grid 'huge'"):
        grid_values(3, "huge")
    assert set(GRIDS) == {"paper", "quick", "sub"}


# --- cells ------------------------------------------------------------------------------


def test_make_cells_paper_grid():
    cells = make_cells(hand_curves())
    assert len(cells) == 3 * 10
    assert sorted({c.k for c in cells}) == [2, 3, 4]
    for c in cells:
        assert c.family == "f" and c.direction == "up"
        assert c.n_sizes_used == c.train.frame["params"].nunique()
        assert c.n_sizes_used <= c.k
        assert tokens_of(c.target) == [7e10, 1e11]
        assert c.train.frame["tokens"].min() > 1e10 if len(c.train) else True
        check_log(c.train, 17)
        check_log(c.target, 17)


def test_make_cells_one_cell_by_hand():
    (cell,) = make_cells(hand_curves(), grid=[(3, 1.0)])
    # sizes 1e6, 2e6, 4e6 -> shared T = 8e10; 10B cut removes the 1e6 run entirely
    assert tokens_of(cell.train) == [2e10, 2e10, 4e10, 4e10]
    assert cell.n_sizes_used == 2  # heatmap row label < k
    steps = [(r.step, r.removed) for r in cell.train.log]
    assert steps == [
        ("loss_unit", 0),  # the table has no loss_unit column: the assumed unit is logged
        ("metric", 0),
        ("target", 4),
        ("sizes", 3),
        ("min_tokens", 5),
        ("fraction", 1),
    ]
    assert cell.train.log[0].reason == "no 'loss_unit' column: assumed 'nats/token'"
    assert all(r.reason for r in cell.train.log)


def test_make_cells_shared_threshold_comes_before_the_cut():
    # T for k=2 is 4e10 (the 2e6 run), so p=0.5 keeps tokens < 2e10: nothing after the cut
    (cell,) = make_cells(hand_curves(), grid=[(2, 0.5)])
    assert len(cell.train) == 0
    assert cell.n_sizes_used == 0
    assert cell.train.log[-1].removed == 2


def test_make_cells_no_cut():
    (cell,) = make_cells(hand_curves(), grid=[(3, 1.0)], min_tokens=0)
    assert cell.n_sizes_used == 3
    assert len(cell.train) == 9


def test_make_cells_final_target():
    (cell,) = make_cells(hand_curves(), grid=[(4, 1.0)], target="final")
    assert tokens_of(cell.target) == [1e11]


def test_make_cells_quick_and_sub_and_k1():
    c = hand_curves()
    assert {(x.k, x.p) for x in make_cells(c, grid="quick")} == {
        (k, p) for k in (2, 3, 4) for p in (0.3, 0.5, 1.0)
    }
    assert len(make_cells(c, grid="sub")) == 30
    k1 = make_cells(c, grid="quick", include_k1=True)
    assert sorted({x.k for x in k1}) == [1, 2, 3, 4]
    one = next(x for x in k1 if x.k == 1 and x.p == 1.0)
    assert one.n_sizes_used == 0  # the smallest run does not pass the 10B cut


def test_make_cells_large_family_sub_grid():
    many = {float(n): [2e10, 4e10] for n in np.geomspace(1e6, 1e9, 21)}
    cells = make_cells(hand_curves(many), grid="sub")
    assert sorted({c.k for c in cells}) == [2, 3, 4, 5, 6, 7, 8, 13, 20]


def test_make_cells_down():
    cells = make_cells(hand_curves(), grid=[(2, 1.0)], direction="down")
    (cell,) = cells
    assert set(cell.target.frame["params"]) == {1e6}
    # largest two candidates: 8e6 and 16e6; T = 1e11 (the 16e6 run), so p = 1 drops
    # only 1e11, and the cut drops 16e6's 1e10 row
    assert tokens_of(cell.train) == [2e10, 4e10, 5e10, 7e10, 8e10]
    assert cell.direction == "down"


def test_make_cells_needs_three_sizes():
    two = hand_curves({1e6: [2e10], 2e6: [2e10]})
    with pytest.raises(
        CurvesError, match=r"family 'f' has 2 distinct sizes; the protocol needs >= 3"
    ):
        make_cells(two)


def test_make_cells_needs_one_family():
    frame = pd.concat([make_frame("a"), make_frame("b")], ignore_index=True)
    with pytest.raises(ValueError, match="make_cells needs one family: the data hold 2 families"):
        make_cells(load_curves(frame))
