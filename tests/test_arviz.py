"""ArviZ conventions of a fit's DataTree, on fake fits (no NUTS): names, LOO, LOO-PIT, plots."""

import arviz as az
import matplotlib
import numpy as np
import pytest
from scipy import stats

from hiscale.testing import fake_fit

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def same_groups(a, b) -> bool:
    """Every group holds the same variables and values (attributes such as times aside)."""
    return set(a.children) == set(b.children) and all(
        a[g].to_dataset().equals(b[g].to_dataset()) for g in a.children
    )


@pytest.fixture(scope="module")
def fit4():
    return fake_fit(n_sizes=4, seed=1)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_observed_predictive_and_likelihood_names_match(fit4):
    dt = fit4.to_datatree()
    assert set(dt["log_likelihood"].data_vars) == {"run_log_loss"}
    assert set(dt["observed_data"].data_vars) == {"log_loss", "run_log_loss"}
    assert set(dt["posterior_predictive"].data_vars) == {"log_loss", "run_log_loss"}
    n_runs = fit4.data["run"].nunique()
    for group in ("log_likelihood", "observed_data", "posterior_predictive"):
        assert dt[group]["run_log_loss"].dims[-1] == "run"
        assert dt[group].sizes["run"] == n_runs
    # the observed per-run twin is the mean log loss of the run's rows (pandas, not hiscale)
    by_run = np.log(fit4.data["loss"]).groupby(fit4.data["run"], sort=False).mean()
    np.testing.assert_allclose(dt["observed_data"]["run_log_loss"].values, by_run.values)
    assert list(dt["observed_data"]["run"].values) == list(by_run.index)


def test_run_log_likelihood_is_the_gaussian_marginal_for_large_df():
    """nu -> inf, untempered rows: a run's log-likelihood is log N(e; 0, so² I + sr² 11ᵀ)."""
    f = fake_fit(seed=3, prior_settings={"df_run": 1e7, "df_obs": 1e7})
    counts = f.data.groupby("run").size()
    assert counts.max() <= f.options.n_eff_per_run  # weight 1: no tempering
    dt = f.to_datatree()
    mu = dt["posterior"]["mu"].values.reshape(-1, len(f.data))
    s_run = dt["posterior"]["sigma_run"].values.reshape(-1)
    s_obs = dt["posterior"]["sigma_obs"].values.reshape(-1)
    ll = dt["log_likelihood"]["run_log_loss"].values.reshape(len(s_run), -1)
    resid = np.log(f.data["loss"].to_numpy()) - mu
    runs = list(dt["log_likelihood"]["run"].values)
    for i in range(0, len(s_run), 97):  # a spread of draws
        for j, run in enumerate(runs):
            rows = (f.data["run"] == run).to_numpy()
            n = rows.sum()
            cov = s_obs[i] ** 2 * np.eye(n) + s_run[i] ** 2 * np.ones((n, n))
            want = stats.multivariate_normal(np.zeros(n), cov).logpdf(resid[i, rows])
            np.testing.assert_allclose(ll[i, j], want, rtol=1e-4, atol=1e-4)


def test_run_replicate_is_a_new_run():
    """Point posterior, no checkpoint noise: replicate - run's mean mu ~ sigma_run t(df_run)."""
    f = fake_fit(seed=2, n_draws=4000, spread=0.0, sigma_run=0.02, sigma_obs=0.0)
    dt = f.to_datatree()
    mu = dt["posterior"]["mu"].values[0, 0]
    runs = dt["observed_data"]["run"].values
    run_mu = np.array([mu[(f.data["run"] == r).to_numpy()].mean() for r in runs])
    rep = dt["posterior_predictive"]["run_log_loss"].values.reshape(-1, len(run_mu))
    z = (rep - run_mu) / 0.02
    df_run = f.prior.settings["df_run"]
    for j in range(z.shape[1]):
        assert stats.kstest(z[:, j], stats.t(df_run).cdf).pvalue > 1e-3
    # the replicates are fixed at fit time (drawn once from the seed)
    again = fake_fit(seed=2, n_draws=4000, spread=0.0, sigma_run=0.02, sigma_obs=0.0)
    assert same_groups(again.to_datatree(), dt)


def test_loo_and_loo_pit(fit4):
    dt = fit4.to_datatree()
    elpd = az.loo(dt, var_name="run_log_loss")
    assert np.isfinite(elpd.elpd) and elpd.elpd_i.shape == (dt["observed_data"].sizes["run"],)
    pit = az.loo_pit(dt, var_names="run_log_loss")["run_log_loss"].values
    assert pit.shape == (dt["observed_data"].sizes["run"],)
    assert np.all((pit >= 0) & (pit <= 1))


def test_energy_and_rank_plots(fit4, tmp_path):
    dt = fit4.to_datatree()
    np.testing.assert_allclose(
        np.asarray(az.bfmi(dt)["energy"]).min(), fit4.diagnostics["bfmi_min"], rtol=1e-12
    )
    for pc in (
        az.plot_energy(dt),
        az.plot_rank(dt, var_names=["alpha", "beta", "sigma_run"]),
        az.plot_loo_pit(dt, var_names=["run_log_loss"]),
    ):
        pc.savefig(tmp_path / "fig.png")
        assert (tmp_path / "fig.png").stat().st_size > 5_000


def test_predictions_group_agrees_with_the_tidy_frame(fit4):
    at = ([1e9, 7e9], [1e11, 1.4e11])
    tree = fit4.predictions(at, seed=3)
    assert set(tree.children) == {"predictions", "predictions_constant_data"}
    assert tree["predictions"]["new_run"].dims == ("chain", "draw", "point")
    np.testing.assert_array_equal(tree["predictions_constant_data"]["params"].values, at[0])
    # the same draws as Fit.draws
    expected, new = fit4.draws(*at, seed=3)
    np.testing.assert_array_equal(tree["predictions"]["new_run"].values.reshape(-1, 2), new)
    np.testing.assert_array_equal(tree["predictions"]["expected"].values.reshape(-1, 2), expected)
    summ = az.summary(tree, group="predictions", ci_prob=0.8, round_to="none")
    frame = fit4.predict(at, ci_prob=0.8, seed=3)
    for _, row in frame.iterrows():
        s = summ.loc[f"{row['kind']}[{row['point']}]"]
        np.testing.assert_allclose(s["eti80_lb"], row["lower"], rtol=1e-12)
        np.testing.assert_allclose(s["eti80_ub"], row["upper"], rtol=1e-12)
        np.testing.assert_allclose(s["mean"], row["mean"], rtol=1e-12)
