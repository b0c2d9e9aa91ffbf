"""Scores of backtest results (hiscale.backtesting.scores), against hand sums and plain Python."""

import itertools
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from hiscale.backtesting.scores import (
    LOW_BUDGET,
    common_cells,
    flag_rates,
    group_bootstrap,
    group_means,
    heatmap,
    low_budget,
    macro,
    macro_intervals,
    per_family,
)


def row(family, method, k, p, are, *, n=None, status="ok", cov80=np.nan, cov50=np.nan, flag=False):
    return {
        "family": family,
        "method": method,
        "direction": "up",
        "target": "last30",
        "k": k,
        "p": p,
        "n_sizes_used": k if n is None else n,
        "are_pct": are,
        "covered80": cov80,
        "covered50": cov50,
        "flagged": flag,
        "status": status,
    }


def frame(rows):
    return pd.DataFrame(rows)


# --- cells, low budget, macro ---------------------------------------------------------------


def test_low_budget_counts_the_models_actually_used():
    res = frame(
        [
            row("f", "m", 5, 1.0, 1.0, n=3),  # asked for 5 sizes, the 10B cut left 3
            row("f", "m", 3, 1.0, 1.0),
            row("f", "m", 4, 0.3, 1.0),
            row("f", "m", 4, 0.5, 1.0),
            row("f", "m", 4, 1.0, 1.0),
        ]
    )
    assert low_budget(res).tolist() == [True, True, True, False, False]
    assert "n_sizes_used" in LOW_BUDGET and "k ≤ 3 or p ≤ 0.3" in LOW_BUDGET


def test_common_cells_are_fitted_by_every_method():
    res = frame(
        [
            row("a", "x", 2, 1.0, 1.0),
            row("a", "y", 2, 1.0, 2.0),
            row("a", "x", 3, 1.0, 1.0),
            row("a", "y", 3, 1.0, np.nan, status="fit failed: z"),
            row("a", "x", 4, 1.0, np.inf),  # status ok but no finite ARE: not fitted
            row("a", "y", 4, 1.0, 1.0),
            row("b", "x", 2, 0.5, 3.0),
            row("b", "y", 2, 0.5, 4.0),
            row("b", "z", 2, 0.5, 5.0),
            row("b", "z", 3, 0.5, 5.0),
        ]
    )
    common = common_cells(res, ["x", "y"])
    cells = sorted(set(zip(common["family"], common["k"], common["p"], strict=True)))
    assert cells == [("a", 2, 1.0), ("b", 2, 0.5)]
    assert len(common) == 4 and set(common["method"]) == {"x", "y"}
    # every method by default: z only ran on b
    assert len(common_cells(res)) == 3
    with pytest.raises(ValueError, match="column 'method': no rows for 'w'"):
        common_cells(res, ["x", "w"])


def test_macro_counts_a_family_group_once():
    res = frame(
        [
            row("pythia", "m", 2, 1.0, 1.0),
            row("pythia", "m", 3, 1.0, 3.0),
            row("pythia-deduped", "m", 2, 1.0, 6.0),
            row("gpt3", "m", 2, 1.0, 10.0),
            row("gpt3", "m", 3, 1.0, 20.0, status="fit failed: z"),
        ]
    )
    # pythia: 2, pythia-deduped: 6 -> group pythia 4; gpt3: 10 -> (4 + 10) / 2
    assert macro(res)["m"] == pytest.approx(7.0)
    assert group_means(res)["m"].to_dict() == pytest.approx({"gpt3": 10.0, "pythia": 4.0})
    # a `group` column of the results wins over the name-derived group
    assert macro(res.assign(group=res["family"]))["m"] == pytest.approx((2 + 6 + 10) / 3)
    # rows without a value there fall back to the name group, none are dropped
    partial = res.assign(group=[np.nan, np.nan, "dedup", np.nan, np.nan])
    assert group_means(partial)["m"].to_dict() == pytest.approx(
        {"dedup": 6.0, "gpt3": 10.0, "pythia": 2.0}
    )
    assert heatmap(res.assign(group=np.nan)).equals(heatmap(res))


def test_per_family_and_flag_rates_state_their_denominators():
    res = frame(
        [
            row("a", "bayes", 2, 1.0, 1.0, cov80=1.0, cov50=0.0, flag=True),
            row("a", "bayes", 3, 1.0, 3.0, cov80=0.5, cov50=0.5),
            row("a", "bayes", 4, 1.0, np.nan, status="error: x"),
            row("a", "paper", 2, 1.0, 5.0),
            row("a", "paper", 3, 1.0, 7.0),
            row("a", "paper", 4, 1.0, 9.0),
        ]
    ).assign(prior=["lofo-a", "flat (fallback: no population)", None, None, None, None])
    pf = per_family(res, ["bayes", "paper"]).set_index("method")
    assert pf.loc["bayes", ["cells", "fitted", "flagged"]].tolist() == [3, 2, 1]
    assert pf.loc["bayes", ["are_pct", "covered80", "covered50"]].tolist() == [2.0, 0.75, 0.25]
    assert pf.loc["bayes", "prior"] == "flat (fallback: no population); lofo-a"
    assert pf.loc["paper", "are_pct"] == 7.0 and np.isnan(pf.loc["paper", "covered80"])
    fr = flag_rates(res, ["bayes", "paper"]).set_index("method")
    assert fr.loc["bayes"].to_dict() == {
        "cells": 3,
        "fitted": 2,
        "failed": 1,
        "flagged": 1,
        "flag_rate": 0.5,
    }
    assert fr.loc["paper", "flag_rate"] == 0.0


def test_heatmap_is_a_group_macro_per_bin():
    res = frame(
        [
            row("pythia", "m", 2, 0.5, 1.0),
            row("pythia", "m", 2, 0.5, 3.0, n=2),
            row("pythia-deduped", "m", 2, 0.5, 8.0),
            row("gpt3", "m", 2, 0.5, 2.0),
            row("gpt3", "m", 9, 1.0, 4.0),
            row("gpt3", "m", 12, 1.0, 6.0),
        ]
    )
    table = heatmap(res)
    assert list(table.index) == ["2", "8+"]
    assert list(table.columns) == [("m", 0.5), ("m", 1.0)]
    # pythia 2, pythia-deduped 8 -> 5; gpt3 2 -> (5 + 2) / 2
    assert table.loc["2", ("m", 0.5)] == pytest.approx(3.5)
    assert table.loc["8+", ("m", 1.0)] == pytest.approx(5.0)
    assert np.isnan(table.loc["8+", ("m", 0.5)])


# --- bootstrap -------------------------------------------------------------------------------


def exact_distribution(values_by_group, statistic):
    """All n**n equally likely resamples of n groups, enumerated."""
    n = len(values_by_group)
    out = Counter()
    for draw in itertools.product(range(n), repeat=n):
        out[round(statistic([values_by_group[i] for i in draw]), 9)] += 1
    return {v: c / n**n for v, c in out.items()}


def exact_quantile(dist, q):
    cdf = 0.0
    for v in sorted(dist):
        cdf += dist[v]
        if cdf >= q:
            return v, cdf
    raise AssertionError


def test_bootstrap_matches_the_enumerated_distribution():
    # three groups; (bayes, paper) group means
    vals = {"g1": (1.0, 2.0), "g2": (2.0, 2.0), "g3": (7.0, 4.0)}
    gv = pd.DataFrame(vals, index=["bayes", "paper"]).T
    stats = {
        ("macro", "are_pct", "bayes"): lambda df: df["bayes"].to_numpy(),
        ("ratio", "are_pct", "bayes/paper"): lambda df: (df["bayes"] / df["paper"]).to_numpy(),
    }
    boot = group_bootstrap(gv, stats, n_boot=20000, seed=11, level=0.9)
    assert boot.groups == ("g1", "g2", "g3")
    groups = list(vals.values())
    exact = {
        "macro|are_pct|bayes": exact_distribution(groups, lambda d: np.mean([b for b, _ in d])),
        "ratio|are_pct|bayes/paper": exact_distribution(
            groups, lambda d: sum(b for b, _ in d) / sum(p for _, p in d)
        ),
    }
    for name, dist in exact.items():
        got = Counter(np.round(boot.replicates[name].to_numpy(), 9))
        assert set(got) <= set(dist)
        for v, prob in dist.items():
            freq = got[v] / boot.n_boot
            assert abs(freq - prob) <= 4.5 * np.sqrt(prob * (1 - prob) / boot.n_boot), (name, v)
        # the 90% percentile interval sits on the exact 5% / 95% quantiles
        stat, quantity, method = name.split("|")
        _, lo, hi = boot.interval(stat, quantity, method)
        lo_exact, cdf_lo = exact_quantile(dist, 0.05)
        hi_exact, cdf_hi = exact_quantile(dist, 0.95)
        prev_hi = cdf_hi - dist[hi_exact]
        assert cdf_lo - dist[lo_exact] < 0.04 and cdf_lo > 0.06  # no jump near the tails
        assert prev_hi < 0.94 and cdf_hi > 0.96
        assert (lo, hi) == pytest.approx((lo_exact, hi_exact), abs=1e-9)
    # point estimates: the statistics of the groups as they are
    assert boot.interval("macro", "are_pct", "bayes")[0] == pytest.approx(10 / 3)
    assert boot.interval("ratio", "are_pct", "bayes/paper")[0] == pytest.approx(10 / 8)


def naive_macro(rows, value):
    """cells -> family -> group -> mean over groups, in plain Python."""
    fam = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and np.isfinite(r[value]):
            fam[(r["group"], r["family"])].append(r[value])
    grp = defaultdict(list)
    for (g, _), v in fam.items():
        grp[g].append(sum(v) / len(v))
    means = [sum(v) / len(v) for v in grp.values()]
    return sum(means) / len(means) if means else np.nan


def synthetic_results():
    rng = np.random.default_rng(5)
    rows = []
    fams = {"a": 3, "a-dedup": 2, "b": 4, "c": 1, "d": 2}  # family -> cells (group a has two)
    for fam, n in fams.items():
        for i in range(n):
            k, p = (2 + i, 1.0) if fam != "d" else (5 + i, 0.5)  # d has no low-budget cell
            for m, scale in (("paper", 2.0), ("bayes", 1.0), ("bayes-flat", 1.2)):
                are = float(scale * rng.gamma(2.0, 2.0))
                c80 = float(rng.uniform()) if m != "paper" else np.nan
                rows.append(row(fam, m, k, p, are, cov80=c80, cov50=c80 / 2))
    return pd.DataFrame(rows)


def test_bootstrap_replicates_equal_a_brute_force_resample():
    res = synthetic_results()
    boot = macro_intervals(res, n_boot=40, seed=3)
    groups = ["a", "b", "c", "d"]
    assert boot.groups == tuple(groups)
    draws = np.random.default_rng(3).integers(0, 4, size=(40, 4))
    base = res.assign(group=res["family"].str.split("-").str[0]).to_dict("records")
    for b in range(40):
        # the resampled data set: copies of the drawn groups, each copy its own group
        rows = [
            {**r, "group": f"{r['group']}#{j}", "family": f"{r['family']}#{j}"}
            for j, gi in enumerate(draws[b])
            for r in base
            if r["group"] == groups[gi]
        ]
        low = [r for r in rows if r["n_sizes_used"] <= 3 or r["p"] <= 0.3]

        def m(rs, method, value="are_pct"):
            return naive_macro([r for r in rs if r["method"] == method], value)

        rep = boot.replicates.iloc[b]
        assert rep["macro|are_pct|bayes"] == pytest.approx(m(rows, "bayes"), rel=1e-12)
        assert rep["macro|covered80|bayes-flat"] == pytest.approx(
            m(rows, "bayes-flat", "covered80"), rel=1e-12
        )
        assert rep["ratio|are_pct_low_budget|bayes/paper"] == pytest.approx(
            m(low, "bayes") / m(low, "paper"), rel=1e-12
        )
        assert rep["difference|are_pct|bayes − bayes-flat"] == pytest.approx(
            m(rows, "bayes") - m(rows, "bayes-flat"), rel=1e-12
        )
    # the paper method has no intervals: no coverage statistic for it
    assert not ((boot.table["quantity"] == "covered80") & (boot.table["method"] == "paper")).any()


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    res = synthetic_results()
    one = macro_intervals(res, n_boot=300, seed=7)
    two = macro_intervals(res, n_boot=300, seed=7)
    pd.testing.assert_frame_equal(one.table, two.table)
    pd.testing.assert_frame_equal(one.replicates, two.replicates)
    other = macro_intervals(res, n_boot=300, seed=8)
    assert not np.allclose(one.replicates.to_numpy(), other.replicates.to_numpy())
    t = one.table
    assert (t["lower"] <= t["upper"]).all() and (t["lower"] < t["upper"]).any()
    assert (t["n_groups"] == 4).all()
    # the macro estimate equals the plain-Python macro of the data as they are
    records = res.assign(group=res["family"].str.split("-").str[0]).to_dict("records")
    paper = [r for r in records if r["method"] == "paper"]
    assert one.interval("macro", "are_pct", "paper")[0] == pytest.approx(
        naive_macro(paper, "are_pct")
    )


def test_one_group_has_a_degenerate_interval():
    res = synthetic_results()
    boot = macro_intervals(res[res["family"] == "b"], n_boot=50)
    assert (boot.table["lower"] == boot.table["estimate"]).all()
    assert (boot.table["upper"] == boot.table["estimate"]).all()


def test_bootstrap_rejects_bad_settings():
    gv = pd.DataFrame({"m": [1.0, 2.0]}, index=["g1", "g2"])
    stats = {("macro", "are_pct", "m"): lambda df: df["m"].to_numpy()}
    with pytest.raises(ValueError, match="level must be in"):
        group_bootstrap(gv, stats, level=90)
    with pytest.raises(ValueError, match="n_boot must be"):
        group_bootstrap(gv, stats, n_boot=0)
