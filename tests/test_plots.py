"""Figures: every function draws head-less (Agg) into a non-empty PNG with labelled axes."""

import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from hiscale.backtesting.runner import COLUMNS
from hiscale.data.curves import load_curves
from hiscale.modeling.simulate import true_loss
from hiscale.plots import (
    coverage_curve,
    plot_are_heatmap,
    plot_calibration,
    plot_curves,
    plot_exponents,
    plot_target_density,
)
from hiscale.priors.prior import flat_prior
from hiscale.testing import fake_fit

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo_curves.csv"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def demo():
    curves = load_curves(DEMO)
    truth = pd.read_csv(DEMO.with_name("demo_truth.csv")).set_index("family")
    return curves, truth


@pytest.fixture(scope="module")
def sparse_fit(demo):
    """A fake fit (no NUTS) named like the demo's low-budget family (two small sizes)."""
    return fake_fit(family="sim3", n_sizes=2, seed=0)


def _png(fig, tmp_path, name="fig.png") -> Path:
    path = tmp_path / name
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def _labels(fig) -> list[str]:
    return [ax.get_xlabel() for ax in fig.axes] + [ax.get_ylabel() for ax in fig.axes]


def test_importing_plots_does_not_touch_matplotlib():
    code = "import sys, hiscale.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plot_curves_data_only(demo, tmp_path):
    curves, _ = demo
    fig = plot_curves(curves, family="sim0")
    _png(fig, tmp_path)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "tokens" in ax.get_xlabel() and "nats" in ax.get_ylabel()
    assert "7 runs" in ax.get_title()


def test_plot_curves_with_fit_target_and_truth(demo, sparse_fit, tmp_path):
    curves, truth = demo
    row = truth.loc["sim3"].copy()
    row["law"] = "chinchilla"
    at = (row["target_params"], row["target_tokens"])
    for actual in (
        row["target_loss"],
        lambda d: true_loss(row, at[0], d),
        pd.DataFrame({"tokens": [1e10, 1.4e11], "loss": [3.0, 2.5]}),
    ):
        fig = plot_curves(curves, sparse_fit, at=at, actual=actual)
        _png(fig, tmp_path)
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("50/80/95% interval" in t for t in texts)
        assert any("fitted law" in t for t in texts)
        assert "actual" in texts
        plt.close(fig)


def test_plot_curves_from_the_fit_alone(sparse_fit, tmp_path):
    fig = plot_curves(None, sparse_fit, at=(7e9, 1.4e11))
    _png(fig, tmp_path)


def test_plot_curves_errors(demo):
    curves, _ = demo
    with pytest.raises(ValueError, match="pick one with family="):
        plot_curves(curves)
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        plot_curves(curves, family="nope")
    with pytest.raises(ValueError, match=r"needs at=\(params, tokens\)"):
        plot_curves(curves, family="sim0", actual=2.5)


def test_plot_target_density(demo, sparse_fit, tmp_path):
    _, truth = demo
    row = truth.loc["sim3"]
    fig = plot_target_density(
        sparse_fit,
        (row["target_params"], row["target_tokens"]),
        actual=row["target_loss"],
        paper_prediction=2.0,
    )
    _png(fig, tmp_path)
    ax = fig.axes[0]
    assert "loss (nats)" in ax.get_xlabel() and "density" in ax.get_ylabel()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("new run: 80% interval") for t in texts)
    assert any(t.startswith("paper estimator") for t in texts)


def fake_results(seed=0) -> pd.DataFrame:
    """A backtest-shaped table without sampling: two families, three methods."""
    rng = np.random.default_rng(seed)
    rows = []
    for fam in ("fa", "fb"):
        for method in ("paper", "bayes", "bayes-flat"):
            for k in (1, 2, 3, 5):
                for p in (0.3, 0.5, 1.0):
                    row = dict.fromkeys(COLUMNS, np.nan)
                    bayes = method != "paper"
                    pit = rng.uniform() if bayes else np.nan
                    row.update(
                        family=fam,
                        method=method,
                        k=k,
                        p=p,
                        n_sizes_used=k,
                        are_pct=abs(rng.normal(10 / k, 2)),
                        pit_mean=pit,
                        covered80=float(abs(pit - 0.5) <= 0.4) if bayes else np.nan,
                        covered50=float(abs(pit - 0.5) <= 0.25) if bayes else np.nan,
                        flagged=False,
                        status="ok",
                    )
                    rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_are_heatmap_shares_one_colour_scale(tmp_path):
    res = fake_results()
    fig = plot_are_heatmap(res, methods=["paper", "bayes", "bayes-flat"], vmax=8.0)
    _png(fig, tmp_path)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3
    assert {im.get_clim() for im in images} == {(0.0, 8.0)}
    assert [ax.get_title() for ax in fig.axes[:3]] == ["paper", "bayes", "bayes-flat"]
    assert "# model sizes" in fig.axes[0].get_ylabel()
    assert "macro ARE" in fig.axes[-1].get_ylabel()  # the colour bar
    # annotations print the macro values of summary_table
    cell = res[(res["method"] == "paper") & (res["k"] == 1) & (res["p"] == 0.3)]
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{cell['are_pct'].mean():.1f}" in texts


def test_are_heatmap_errors():
    res = fake_results()
    with pytest.raises(ValueError, match="no results for method"):
        plot_are_heatmap(res, methods=["nope"])
    with pytest.raises(ValueError, match="no successful cells"):
        plot_are_heatmap(res.assign(status="failed"))


def test_coverage_curve_of_uniform_pit_is_the_diagonal():
    pit = (np.arange(10_000) + 0.5) / 10_000
    levels = np.array([0.1, 0.5, 0.8, 0.95])
    np.testing.assert_allclose(coverage_curve(pit, levels), levels, atol=1e-3)
    # weights: one family of all-central PITs counts as much as 9,999 others
    w = np.r_[np.full(9_999, 0.5 / 9_999), 0.5]
    cov = coverage_curve(np.r_[np.zeros(9_999), 0.5], np.array([0.5]), w)
    assert cov[0] == pytest.approx(0.5)


def test_plot_calibration(tmp_path):
    fig = plot_calibration(fake_results())
    _png(fig, tmp_path)
    ax_cov, ax_pit = fig.axes
    assert "nominal" in ax_cov.get_xlabel() and "coverage" in ax_cov.get_ylabel()
    assert "PIT" in ax_pit.get_xlabel()
    legend = [t.get_text() for t in ax_cov.get_legend().get_texts()]
    assert any(t.startswith("bayes (") for t in legend)
    assert not any(t.startswith("paper") for t in legend)  # no PIT, skipped


def test_plot_calibration_needs_pit():
    res = fake_results()
    with pytest.raises(ValueError, match="no cell has a PIT"):
        plot_calibration(res[res["method"] == "paper"])


def test_plot_exponents_from_fits_and_prior(sparse_fit, tmp_path):
    prior = flat_prior()
    meta = {"family_means": {"pop-a": [-1.0, -2.0, np.log(0.3), np.log(0.25)]}}
    prior = type(prior)(**{**prior.__dict__, "name": "pop", "meta": meta})
    fig = plot_exponents({"sim3 (flat)": sparse_fit}, prior=prior)
    _png(fig, tmp_path)
    ax_a, ax_b = fig.axes[:2]
    assert "alpha" in ax_a.get_xlabel() and "beta" in ax_b.get_xlabel()
    assert [t.get_text() for t in ax_a.get_yticklabels()] == ["sim3 (flat)", "pop-a"]
    fig2 = plot_exponents(prior)  # the prior alone
    _png(fig2, tmp_path, "prior.png")
    fig3 = plot_exponents([sparse_fit])
    _png(fig3, tmp_path, "fits.png")
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_exponents([])


def test_an_unconverged_fit_is_flagged_in_the_titles(tmp_path):
    bad = fake_fit(family="sim3", n_sizes=2, seed=0, flagged=True)
    fig = plot_curves(None, bad, at=(7e9, 1.4e11))
    assert fig.axes[0].get_title().endswith("(sampler WARNING)")
    fig = plot_target_density(bad, (7e9, 1.4e11))
    assert "sampler WARNING: see Fit.verdict()" in fig.axes[0].get_title()


def test_run_offset_matches_a_brute_force_posterior():
    """Gaussian conditional of a run's offset vs a quadrature of prior x likelihood over δ."""
    from scipy.stats import norm

    fit = fake_fit(family="off", n_sizes=3, seed=2, sigma_run=0.03, sigma_obs=0.01)
    data = fit.data
    run = data["run"].iloc[-1]
    mean, var = fit.run_offset(run)
    rows = np.flatnonzero(data["run"].to_numpy() == run)
    mu = np.asarray(fit.datatree["posterior"]["mu"].values).reshape(-1, len(data))[:, rows]
    resid = np.log(data["loss"].to_numpy()[rows]) - mu
    th = fit.theta()
    grid = np.linspace(-0.3, 0.3, 60_001)
    for s in (0, 7, 123):
        logp = norm.logpdf(grid, 0, th["sigma_run"][s]) + norm.logpdf(
            resid[s][:, None] - grid[None, :], 0, th["sigma_obs"][s]
        ).sum(0)
        w = np.exp(logp - logp.max())
        m = np.sum(w * grid) / w.sum()
        np.testing.assert_allclose(mean[s], m, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(var[s], np.sum(w * (grid - m) ** 2) / w.sum(), rtol=1e-4)
    with pytest.raises(ValueError, match="not in the fit"):
        fit.run_offset("nope")


def test_plot_curves_draws_the_law_through_each_fitted_run_with_its_offset(tmp_path):
    """One dashed line per fitted run, passing through the run's fitted rows."""
    fit = fake_fit(family="off", n_sizes=3, seed=3, sigma_run=0.05, sigma_obs=0.002)
    offsets = [np.median(fit.run_offset(r)[0]) for r in fit.data["run"].unique()]
    assert max(np.abs(offsets)) > 0.04  # the law alone would miss that run by > 0.04
    fig = plot_curves(None, fit)
    _png(fig, tmp_path)
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == fit.data["run"].nunique()
    for (_, g), line in zip(fit.data.groupby("run", sort=False), dashed, strict=True):
        x, y = line.get_data()
        at_rows = np.interp(np.log(g["tokens"]), np.log(x), np.log(y))
        # within a few checkpoint-noise sds (and the draws' spread) of the run's rows
        assert np.abs(at_rows - np.log(g["loss"])).max() < 0.01
