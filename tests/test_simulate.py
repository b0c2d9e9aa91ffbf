"""Simulated families: schema, determinism, truth table, noise-free recovery of the law."""

import math

import numpy as np
import pandas as pd
import pytest

from hiscale.data.curves import load_curves
from hiscale.laws import share_to_paper
from hiscale.modeling.simulate import SIM_METRIC, simulate_families, true_loss
from hiscale.priors.prior import Prior, flat_prior


@pytest.fixture(scope="module")
def prior() -> Prior:
    """A narrow hand-made population prior (not corpus-v1: tests must not depend on it)."""
    return Prior(
        name="test-pop",
        law="chinchilla",
        names=("u_a", "u_b", "log_alpha", "log_beta"),
        loc=np.array([-0.9, -2.0, math.log(0.3), math.log(0.3)]),
        cov=np.diag([0.3, 0.2, 0.2, 0.2]) ** 2,
    )


def test_same_seed_same_tables(prior):
    a = simulate_families(prior, n_families=3, seed=7, sparse_families=1)
    b = simulate_families(prior, n_families=3, seed=7, sparse_families=1)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    c, _ = simulate_families(prior, n_families=3, seed=8, sparse_families=1)
    assert not np.allclose(a[0]["loss"].to_numpy()[:10], c["loss"].to_numpy()[:10])


def test_family_does_not_change_when_more_families_are_drawn(prior):
    small, t_small = simulate_families(prior, n_families=2, seed=3)
    big, t_big = simulate_families(prior, n_families=5, seed=3)
    pd.testing.assert_frame_equal(t_small, t_big.iloc[:2])
    pd.testing.assert_frame_equal(small, big[big["family"].isin(["sim0", "sim1"])])


def test_schema_loads_and_is_consistent(prior):
    frame, truth = simulate_families(prior, n_families=3, seed=0, runs_per_size=2)
    curves = load_curves(frame)  # validates: positive finite numbers, params fixed per run
    assert len(curves) == len(frame)
    assert set(frame.columns) >= {
        "family",
        "run",
        "params",
        "tokens",
        "loss",
        "metric",
        "loss_unit",
        "primary",
        "is_final",
        "run_tokens",
    }
    assert (frame["metric"] == SIM_METRIC).all() and frame["primary"].all()
    assert (frame["loss_unit"] == "nats/token").all()
    per_run = frame.groupby("run")
    assert (per_run["is_final"].sum() == 1).all()
    last = frame[frame["is_final"]].set_index("run")
    assert np.allclose(last["tokens"], per_run["tokens"].max().loc[last.index])
    assert np.allclose(frame["run_tokens"], per_run["tokens"].transform("max"))
    # 20 tokens per parameter, 20 log-spaced checkpoints from 2% of the horizon
    assert np.allclose(last["run_tokens"] / last["params"], 20.0, rtol=1e-6)
    assert (per_run.size() == 20).all()
    # two runs (seeds) per size, with different offsets
    assert (frame.groupby(["family", "params"])["run"].nunique() == 2).all()
    assert list(truth["family"]) == ["sim0", "sim1", "sim2"]
    assert truth["sizes_simulated"].between(5, 7).all()


def test_sparse_family_keeps_its_smallest_sizes_and_the_target(prior):
    frame, truth = simulate_families(prior, n_families=3, seed=1, sparse_families=1, sparse_sizes=2)
    last = truth.iloc[-1]
    sizes = np.sort(frame.loc[frame["family"] == last["family"], "params"].unique())
    assert len(sizes) == 2 and last["sizes_in_data"] == 2
    assert last["largest_in_data"] == sizes[-1]
    assert last["target_params"] > 10 * sizes[-1]
    full = truth.iloc[0]
    assert full["sizes_in_data"] == full["sizes_simulated"]
    assert full["target_params"] == frame.loc[frame["family"] == "sim0", "params"].max()


def test_truth_table_matches_the_law(prior):
    _, truth = simulate_families(prior, n_families=2, seed=2)
    for _, row in truth.iterrows():
        # target_loss is the noiseless law at the target
        assert row["target_loss"] == pytest.approx(
            float(true_loss(row, row["target_params"], row["target_tokens"]))
        )
        # the paper-form columns describe the same curve
        p = share_to_paper(row)
        n, d = 3e8, 4e9
        paper = np.exp(p["e"]) + np.exp(p["a"]) / n ** p["alpha"] + np.exp(p["b"]) / d ** p["beta"]
        assert paper == pytest.approx(float(true_loss(row, n, d)), rel=1e-9)
        assert row["paper_e"] == pytest.approx(float(p["e"]))
        assert math.log(2.0) <= row["log_scale"] <= math.log(3.5)
        assert 0.08 <= row["alpha"] <= 1.2 and 0.08 <= row["beta"] <= 1.2


def test_without_noise_the_rows_lie_on_the_true_law(prior):
    quiet = prior.with_settings(
        sigma_run=(math.log(1e-12), 1e-6), sigma_obs=(math.log(1e-12), 1e-6)
    )
    frame, truth = simulate_families(quiet, n_families=2, seed=4)
    for fam, g in frame.groupby("family"):
        row = truth.set_index("family").loc[fam]
        row["law"] = truth["law"].iloc[0]
        np.testing.assert_allclose(g["loss"], true_loss(row, g["params"], g["tokens"]), rtol=1e-9)


def test_noise_scales_come_from_the_prior_settings(prior):
    loud = prior.with_settings(sigma_run=(math.log(0.05), 1e-6), sigma_obs=(math.log(0.002), 1e-6))
    _, truth = simulate_families(loud, n_families=3, seed=5)
    np.testing.assert_allclose(truth["sigma_run"], 0.05, rtol=1e-4)
    np.testing.assert_allclose(truth["sigma_obs"], 0.002, rtol=1e-4)


def test_plausibility_bounds_hold_for_a_wide_prior():
    frame, truth = simulate_families(flat_prior("chinchilla"), n_families=6, seed=0, max_loss=10.0)
    assert truth["alpha"].between(0.08, 1.2).all() and truth["beta"].between(0.08, 1.2).all()
    for _, row in truth.iterrows():
        g = frame[frame["family"] == row["family"]]
        corner = true_loss(row, g["params"].min(), g["tokens"].min())
        assert corner <= 10.0


def test_fixed_sizes_horizon_and_nd_law(prior):
    frame, truth = simulate_families(
        prior, n_families=1, law="chinchilla-nd", sizes=[1e8, 1e9, 4e9], horizon=5e10
    )
    assert sorted(frame["params"].unique()) == [1e8, 1e9, 4e9]
    assert np.allclose(frame.groupby("run")["tokens"].max(), 5e10)
    assert "gamma" in truth.columns and "paper_a" not in truth.columns
    assert truth["law"].iloc[0] == "chinchilla-nd"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_families": 0}, "n_families"),
        ({"n_families": 2, "sparse_families": 3}, "sparse_families"),
        ({"sparse_sizes": 0}, "sparse_sizes"),
        ({"runs_per_size": 0}, "runs_per_size"),
        ({"exponent_range": (5.0, 6.0), "max_tries": 5}, "no draw"),
    ],
)
def test_bad_arguments_are_one_line_errors(prior, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_families(prior, **kwargs)


def test_unknown_prior_name_is_an_error():
    with pytest.raises(ValueError, match="unknown prior"):
        simulate_families("no-such-prior")


@pytest.mark.slow
def test_fit_recovers_the_true_loss_of_a_held_out_size(prior):
    """Parameter recovery: a flat-prior fit of six sizes brackets the 7th size's true loss."""
    from hiscale.infer.fit import fit
    from hiscale.infer.settings import SamplerSettings

    frame, truth = simulate_families(prior, n_families=1, seed=11, sizes=np.geomspace(5e7, 7e9, 7))
    row = truth.iloc[0]
    train = frame[frame["params"] < row["target_params"]]
    f = fit(train, family="sim0", prior="flat", seed=0, sampler=SamplerSettings())
    # flat prior, end-of-run rows at D = 20 N: alpha and beta are nearly collinear,
    # so r_hat can sit just above the strict 1.01 threshold
    assert f.diagnostics["rhat_max"] < 1.05, f.verdict()
    pred = f.predict((row["target_params"], row["target_tokens"]), ci_prob=0.95).iloc[0]
    assert pred["kind"] == "expected" and pred["ci_prob"] == 0.95
    assert pred["lower"] <= row["target_loss"] <= pred["upper"]
    assert abs(pred["median"] / row["target_loss"] - 1) < 0.05
