"""The budget planner (``hiscale.planning``, ``hiscale plan``).

The maths is checked against independent computations: the per-run likelihood
against the model's JAX ``run_loglik`` and, in the Gaussian limit, against the
exact multivariate normal; importance weights against a conjugate Gaussian
posterior; weighted quantiles against ``numpy.quantile`` of an expanded or
resampled sample; the expected width after one or two runs against the closed
form of a model where only the loss scale is unknown.
"""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hiscale.planning import plan
from hiscale.planning.candidates import (
    existing_candidates,
    grid_candidates,
    read_candidates,
)
from hiscale.planning.greedy import greedy_sequence
from hiscale.planning.preposterior import (
    PlanDraws,
    Preposterior,
    discrepancy_halfwidth,
    effective_sample_size,
    normalised_weights,
    run_loglik_rows,
    weighted_quantile,
    widen_log_interval,
)

Z90 = stats.norm.ppf(0.9)


# ------------------------------------------------------------------ likelihood
@pytest.mark.parametrize("n", [1, 2, 7])
def test_run_loglik_rows_matches_the_models_run_loglik(n):
    import jax.numpy as jnp

    from hiscale.modeling.family import run_loglik

    rng = np.random.default_rng(n)
    for sr, so, weight in [(0.02, 0.005, 1.0), (0.1, 0.03, 0.5)]:
        resid = 0.03 * rng.standard_normal(n)
        ref = run_loglik(
            jnp.asarray(resid),
            jnp.zeros(n, int),
            jnp.full(n, weight),
            jnp.ones(n, bool),
            1,
            sr,
            so,
            4.0,
            3.0,
        )
        got = run_loglik_rows(resid, sr, so, 4.0, 3.0, weight=weight)
        np.testing.assert_allclose(got, float(ref[0]), rtol=1e-10)


def test_run_loglik_rows_is_the_exact_gaussian_marginal_for_large_df():
    rng = np.random.default_rng(1)
    sr, so, n = 0.03, 0.01, 5
    cov = so**2 * np.eye(n) + sr**2 * np.ones((n, n))
    for _ in range(3):
        e = rng.multivariate_normal(np.zeros(n), cov)
        exact = stats.multivariate_normal(np.zeros(n), cov).logpdf(e)
        got = run_loglik_rows(e, sr, so, 1e9, 1e9)
        np.testing.assert_allclose(got, exact, rtol=1e-6)


# ------------------------------------------------------- weights and quantiles
def test_importance_reweighting_recovers_a_conjugate_gaussian_posterior():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(400_000)  # prior N(0, 1)
    sigma, y = 0.5, 0.8
    w = normalised_weights(stats.norm(mu, sigma).logpdf(y))
    post_var = 1 / (1 + 1 / sigma**2)
    post_mean = post_var * y / sigma**2
    assert np.sum(w * mu) == pytest.approx(post_mean, abs=0.01)
    assert np.sum(w * (mu - np.sum(w * mu)) ** 2) == pytest.approx(post_var, rel=0.03)
    q = weighted_quantile(mu, w, [0.1, 0.5, 0.9])
    exact = stats.norm(post_mean, np.sqrt(post_var)).ppf([0.1, 0.5, 0.9])
    np.testing.assert_allclose(q, exact, atol=0.02)
    # Kish ESS of Gaussian prior -> posterior weights: S * sqrt(v (2 - v)) ... checked loosely
    ess = effective_sample_size(w)
    assert 0.2 * len(mu) < ess < 0.8 * len(mu)


def test_weighted_quantile_with_integer_weights_is_the_inverted_cdf_of_the_expanded_sample():
    rng = np.random.default_rng(2)
    v = rng.standard_normal(37)
    k = rng.integers(0, 6, size=37)
    q = [0.0, 0.1, 0.25, 0.5, 0.8, 0.9, 1.0]
    expanded = np.repeat(v, k)
    np.testing.assert_array_equal(
        weighted_quantile(v, k.astype(float), q), np.quantile(expanded, q, method="inverted_cdf")
    )
    # several weight columns at once, and a scalar q
    cols = np.stack([k, k[::-1]], axis=1).astype(float)
    got = weighted_quantile(v, cols, 0.3)
    assert got[0] == np.quantile(expanded, 0.3, method="inverted_cdf")
    assert got[1] == np.quantile(np.repeat(v, k[::-1]), 0.3, method="inverted_cdf")


def test_weighted_quantile_matches_a_brute_force_resample():
    rng = np.random.default_rng(3)
    v = rng.gamma(2.0, size=500)
    w = rng.exponential(size=500)
    w /= w.sum()
    resample = rng.choice(v, p=w, size=400_000)
    for p in (0.1, 0.5, 0.9):
        assert weighted_quantile(v, w, p) == pytest.approx(np.quantile(resample, p), rel=0.03)


# ------------------------------------------------------------- preposterior
def _scale_only_draws(S, tau, sr, so, seed=0):
    """Draws where only the loss scale is uncertain (Gaussian noise: huge df)."""
    rng = np.random.default_rng(seed)
    theta = {
        "u_a": np.full(S, -1.0),
        "u_b": np.full(S, -2.0),
        "log_alpha": np.full(S, np.log(0.3)),
        "log_beta": np.full(S, np.log(0.4)),
        "log_scale": tau * rng.standard_normal(S),
        "sigma_run": np.full(S, sr),
        "sigma_obs": np.full(S, so),
    }
    return PlanDraws("chinchilla", theta, 1e7, 1e7, "fit", True)


def _closed_form_width(tau, sr, so, n_rows, n_runs):
    """Relative 80% width of a new run when ln L = log_scale + known shape (Gaussian)."""
    v = 1 / (1 / tau**2 + n_runs / (sr**2 + so**2 / n_rows))
    s = np.sqrt(v + sr**2 + so**2)
    return 2 * np.sinh(Z90 * s)


@pytest.mark.parametrize("n_rows", [1, 4, 32])
def test_expected_width_after_one_and_two_runs_matches_the_closed_form(n_rows):
    tau, sr, so = 0.1, 0.02, 0.02
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8, 2e8], [20])
    pre = Preposterior(draws, (7e9, 1.4e11), cands, n_outcomes=48, seed=1, n_rows=n_rows)
    r0, _, _ = pre.current()
    assert r0.mean() == pytest.approx(_closed_form_width(tau, sr, so, n_rows, 0), rel=0.04)
    rel, _, ess = pre.widths(pre.base(), pre.loglik)
    one = _closed_form_width(tau, sr, so, n_rows, 1)
    np.testing.assert_allclose(rel.mean(axis=0), one, rtol=0.05)
    assert np.median(ess) > 1000
    steps, _ = greedy_sequence(pre, cands, budget=1e30)
    assert len(steps) == 2
    two = _closed_form_width(tau, sr, so, n_rows, 2)
    assert steps[1].expected_width == pytest.approx(two, rel=0.06)


def test_a_runs_information_is_limited_by_its_run_offset():
    # with sigma_run >> sigma_obs, 32 checkpoints are worth barely more than 4
    tau, sr, so = 0.1, 0.03, 0.003
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8], [20])
    widths = {}
    for n_rows in (4, 32):
        pre = Preposterior(draws, (7e9, 1.4e11), cands, n_outcomes=32, seed=2, n_rows=n_rows)
        widths[n_rows] = pre.widths(pre.base(), pre.loglik)[0].mean()
    # the limit of infinitely many checkpoints: the run offset stays unknown
    floor = _closed_form_width(tau, sr, so, 1e12, 1)
    assert widths[32] == pytest.approx(widths[4], rel=0.03)
    assert widths[32] == pytest.approx(floor, rel=0.04)


# ------------------------------------------------------ extrapolation discrepancy
def test_discrepancy_halfwidth_of_a_fixed_sigma_is_the_normal_quantile():
    assert discrepancy_halfwidth(0.02, 0.8) == pytest.approx(Z90 * 0.02, rel=1e-12)
    assert discrepancy_halfwidth(None) == 0.0
    with pytest.raises(ValueError, match="sigma_d"):
        discrepancy_halfwidth(-0.1)


def test_discrepancy_halfwidth_of_a_population_matches_a_monte_carlo_mixture():
    from hiscale.backtesting.discrepancy import DiscrepancyPrior

    prior = DiscrepancyPrior(m=np.log(0.015), s=1.2, label="test population")
    h = discrepancy_halfwidth(prior, 0.8)
    rng = np.random.default_rng(0)
    sig = np.exp(rng.normal(np.log(0.015), 1.2, size=2_000_000))
    delta = sig * rng.standard_normal(sig.size)
    assert np.mean(np.abs(delta) <= h) == pytest.approx(0.8, abs=2e-3)
    # heavier than a normal with the median sigma: the mixture's tails
    assert h > Z90 * 0.015


def test_widening_is_exact_for_gaussian_parts():
    rng = np.random.default_rng(1)
    a, b, mu = 0.03, 0.05, np.log(2.0)
    x = mu + a * rng.standard_normal(1_000_000) + b * rng.standard_normal(1_000_000)
    lo0, hi0 = np.exp(mu - Z90 * a), np.exp(mu + Z90 * a)
    lo, hi = widen_log_interval(lo0, np.exp(mu), hi0, Z90 * b)
    q = np.exp(np.quantile(x, [0.1, 0.9]))
    np.testing.assert_allclose([lo, hi], q, rtol=2e-3)


def test_with_a_discrepancy_only_a_larger_run_narrows_the_extrapolation_part():
    # scale-only law: the shape is known, so without a discrepancy a run's size does not
    # matter; with sigma_d the width after a run at N is the closed form with
    # (sigma_d |ln(N_t / N)|)^2 added to the ln variance
    tau, sr, so, sd = 0.1, 0.02, 0.02, 0.01
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8, 1e9], [20])
    target = (7e9, 1.4e11)
    kw = dict(n_outcomes=48, seed=1, n_rows=4)
    law = Preposterior(draws, target, cands, **kw)
    rel0 = law.widths(law.base(), law.loglik)[0].mean(axis=0)
    assert rel0[0] == pytest.approx(rel0[1], rel=0.02)
    h = discrepancy_halfwidth(sd, 0.8)
    disc = Preposterior(
        draws, target, cands, discrepancy_h=h, fitted=[[5e7, 1e9]], distance="params", **kw
    )
    rel = disc.widths(disc.base(), disc.loglik)[0].mean(axis=0)
    v1 = 1 / (1 / tau**2 + 1 / (sr**2 + so**2 / 4))
    for i, n in enumerate(cands["params"]):
        s = np.sqrt(v1 + sr**2 + so**2 + (sd * np.log(target[0] / n)) ** 2)
        assert rel[i] == pytest.approx(2 * np.sinh(Z90 * s), rel=0.05)
    assert rel[1] < rel[0] * 0.85
    # before any new run the distance is the fitted size's
    r0 = disc.current()[0].mean()
    s0 = np.sqrt(tau**2 + sr**2 + so**2 + (sd * np.log(target[0] / 5e7)) ** 2)
    assert r0 == pytest.approx(2 * np.sinh(Z90 * s0), rel=0.04)
    # at equal cost the greedy sequence buys the larger run first; the law-only one is
    # indifferent (the two widths agree to sampling noise)
    steps, _ = greedy_sequence(disc, cands.assign(flops=1e18), budget=1e30)
    assert steps[0].params == 1e9
    # in compute, a big model on few tokens is far from the target: the same two sizes,
    # the larger one trained on 1/1000 of its tokens, is now the farther run
    few = cands.assign(tokens=[2e9, 2e7])
    comp = Preposterior(draws, target, few, discrepancy_h=h, fitted=[[5e7, 1e9]], **kw)
    d = comp.distance()
    c_t = 6 * target[0] * target[1]
    now = np.log(c_t / (6 * 5e7 * 1e9))
    assert comp.distance_now() == pytest.approx(now)
    alone = np.abs(np.log(c_t / (6 * few["params"] * few["tokens"])))
    np.testing.assert_allclose(d, np.minimum(now, alone))
    assert alone[1] > now > alone[0] and d[1] > d[0]


def test_plan_records_the_discrepancy_in_notes_and_settings():
    cands = grid_candidates([5e7, 1e8, 2e8, 4e8], [5, 20])
    kw = dict(at=(7e9, 1.4e11), candidates=cands, budget=2e19, n_draws=2000, n_outcomes=8)
    p = plan("corpus-v1", seed=4, discrepancy=0.02, **kw)
    d = json.loads(p.to_json())
    assert d["settings"]["discrepancy_halfwidth"] == pytest.approx(Z90 * 0.02)
    assert any("extrapolation discrepancy sigma_d = 0.02" in n for n in d["notes"])
    base = plan("corpus-v1", seed=4, discrepancy=None, **kw)
    assert base.settings["discrepancy_halfwidth"] == 0.0
    # the default is the bundled corpus-v1 population, in compute distance
    default = plan("corpus-v1", seed=4, **kw)
    assert any("corpus-v1 population" in n and "per ln compute" in n for n in default.notes)
    assert default.settings["discrepancy_distance"] == "compute"
    # the widths after the first run include the extrapolation term, so they are wider
    assert p.widths[1] > base.widths[1]


# --------------------------------------------------------------- candidates
def test_grid_candidates_cost_6nd():
    c = grid_candidates([1e8, 4e8], [5, 20])
    assert len(c) == 4
    np.testing.assert_allclose(c["tokens"], [5e8, 2e9, 2e9, 8e9])
    np.testing.assert_allclose(c["flops"], 6 * c["params"] * c["tokens"])
    assert set(c["flops_source"]) == {"6ND"}


def test_read_candidates_keeps_given_flops_and_fills_the_rest(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("label,params,tokens,flops\na,1e8,2e9,5e18\nb,2e8,4e9,\n")
    c = read_candidates(p)
    assert c["flops"].tolist() == [5e18, 6 * 2e8 * 4e9]
    assert c["flops_source"].tolist() == ["given", "6ND"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("params,tokens\n1e8,abc\n", r"column 'tokens' has non-numeric value 'abc' in row 1"),
        ("params,tokens\n1e8,2e9\n-5,2e9\n", r"column 'params' has value -5.0 in row 2"),
        ("params\n1e8\n", r"missing column 'tokens'"),
        ("label,params,tokens\na,1e8,2e9\na,2e8,4e9\n", r"repeats 'a' in row 2"),
        ("params,tokens\n", r"no candidate runs"),
    ],
)
def test_bad_candidate_files_give_one_line_errors(tmp_path, text, match):
    p = tmp_path / "c.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_candidates(p)
    assert "\n" not in str(err.value)


def test_existing_candidates_exclude_used_runs_and_check_them():
    from hiscale.data.curves import load_curves

    frame = pd.DataFrame(
        {
            "family": "f",
            "run": ["r1", "r1", "r2", "r3"],
            "params": [1e8, 1e8, 2e8, 4e8],
            "tokens": [1e9, 2e9, 4e9, 8e9],
            "loss": [3.5, 3.4, 3.2, 3.0],
        }
    )
    curves = load_curves(frame)
    c, used = existing_candidates(curves, "f", ["r1"])
    assert c["label"].tolist() == ["r2", "r3"] and used == ["r1"]
    with pytest.raises(ValueError, match=r"--used: run 'r9' is not in family 'f'"):
        existing_candidates(curves, "f", ["r9"])
    with pytest.raises(ValueError, match="every run is in --used"):
        existing_candidates(curves, "f", ["r1", "r2", "r3"])


def test_plan_rejects_bad_targets_and_budgets():
    draws = _scale_only_draws(500, 0.1, 0.02, 0.01)
    with pytest.raises(ValueError, match="budget"):
        plan(draws, at=(7e9, 1.4e11), candidates=[(1e8, 2e9)], budget=-1)
    with pytest.raises(ValueError, match="target N"):
        plan(draws, at=(0, 1.4e11), candidates=[(1e8, 2e9)], budget=1e20)
    with pytest.raises(ValueError, match="item 1"):
        plan(draws, at=(7e9, 1.4e11), candidates=[3.0], budget=1e20)


# ------------------------------------------------------- plans, determinism
def test_plan_from_a_prior_alone_is_deterministic_and_spends_within_budget():
    cands = grid_candidates([5e7, 1e8, 2e8, 4e8], [5, 20])
    budget = 2e19
    kw = dict(at=(7e9, 1.4e11), candidates=cands, budget=budget, n_draws=2000, n_outcomes=8)
    a = plan("corpus-v1", seed=4, **kw)
    b = plan("corpus-v1", seed=4, **kw)
    assert a.to_json() == b.to_json()
    assert a.to_json() != plan("corpus-v1", seed=5, **kw).to_json()
    d = json.loads(a.to_json())
    assert d["source"] == "prior" and d["expected_abs_widths"] is None
    assert any("not pooled" in n for n in d["notes"])
    assert d["runs"], "a budget of 2e19 FLOPs affords several candidates"
    assert d["runs"][-1]["cumulative_flops"] <= budget
    assert np.all(np.diff(d["expected_widths"]) < 0)
    assert len(d["expected_widths"]) == len(d["runs"]) + 1
    assert [r["rank"] for r in d["candidates"]] == list(range(1, len(cands) + 1))


# ---------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory):
    from hiscale.modeling.simulate import simulate_families

    df, _ = simulate_families(n_families=1, seed=3, sizes=[5e7, 1e8, 2e8, 4e8], n_checkpoints=8)
    path = tmp_path_factory.mktemp("plan") / "sim.csv"
    df.to_csv(path, index=False)
    return path


SMALL = ["--num-warmup", "200", "--num-samples", "300"]


def test_cli_plan_from_existing_runs_json(sim_csv, capsys):
    from hiscale.cli import main

    argv = [str(sim_csv), "--family", "sim0", "--at", "7e9", "1.4e11", "--budget", "3e19"]
    rc = main(["plan", *argv, "--from-existing", "--used", "sim0-50M", "--json", *SMALL])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    labels = {c["label"] for c in d["candidates"]}
    assert labels == {"sim0-100M", "sim0-200M", "sim0-400M"}
    assert d["source"] == "fit" and d["used"] == ["sim0-50M"]
    assert all(r["label"] in labels for r in d["runs"])
    assert d["runs"][-1]["cumulative_flops"] <= 3e19
    assert len(d["expected_widths"]) == len(d["runs"]) + 1
    assert d["expected_abs_widths"] is not None


def test_cli_plan_prior_only_text_and_bad_input(sim_csv, capsys):
    from hiscale.cli import main

    argv = [str(sim_csv), "--family", "new", "--at", "7e9", "1.4e11", "--budget", "1e19"]
    rc = main(["plan", *argv, "--sizes", "5e7", "1e8", "--token-multiples", "20", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "plan for a budget" in cap.out and "(prior)" in cap.out
    assert "not pooled" in cap.err
    assert main(["plan", *argv, "--sizes", "5e7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hiscale: error: --sizes and --token-multiples go together"
    assert main(["plan", *argv, "--sizes", "5e7", "--token-multiples", "20", "--used", "x"]) == 2
    assert "--used only applies" in capsys.readouterr().err


# ------------------------------------------------------ rules of thumb, figure
def test_hitchhiker_rule_picks_large_sizes_near_30_percent_of_target_tokens():
    from hiscale.planning.candidates import rule_of_thumb

    cands = grid_candidates([5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9], [5, 20, 100])
    target = (7e9, 1.4e11)
    picked = rule_of_thumb(cands, target, 1e30, "hitchhiker")
    chosen = cands.iloc[picked]
    # five largest sizes, smallest first, each with the token count nearest 0.3 * 1.4e11
    assert chosen["params"].tolist() == [1e8, 2e8, 4e8, 8e8, 1.6e9]
    for n, d in zip(chosen["params"], chosen["tokens"], strict=True):
        options = cands[cands["params"] == n]["tokens"]
        assert d == options.iloc[np.argmin(np.abs(np.log(options / 4.2e10)))]
    cheap = rule_of_thumb(cands, target, 1e18, "cheapest-first")
    assert cands["flops"].iloc[cheap].sum() <= 1e18
    assert cheap == list(np.argsort(cands["flops"].to_numpy(), kind="stable")[: len(cheap)])
    with pytest.raises(ValueError, match="unknown rule"):
        rule_of_thumb(cands, target, 1e18, "nope")


def test_greedy_widths_equal_the_scored_sequence_and_the_figure_draws(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from hiscale.plots.plan import plot_plan

    draws = _scale_only_draws(4000, 0.1, 0.02, 0.01)
    cands = grid_candidates([1e8, 2e8, 4e8], [5, 20])
    p = plan(draws, at=(7e9, 1.4e11), candidates=cands, budget=3e19, n_outcomes=8, seed=1)
    again = p.sequence_widths([r["label"] for r in p.runs])
    np.testing.assert_allclose(again["widths"], p.widths, rtol=1e-12)
    np.testing.assert_allclose(again["flops"], p.flops, rtol=1e-12)
    fig = plot_plan(p)
    assert len(fig.axes[0].get_lines()) >= 3 + 2  # planner, two rules, two vertical lines
    fig.savefig(tmp_path / "plan.png")


# ------------------------------------------------------- cheap update vs refit
@pytest.mark.slow
def test_reweighted_width_is_close_to_a_nuts_refit():
    """Add an observed run: importance reweighting vs refitting with NUTS.

    Measured on 3 simulated families x 2 candidates (benchmark-like numbers in
    the planner's report): relative differences of the 80% width within about
    +-11%. The test allows 25% (Monte Carlo error of both at these ESS).
    """
    import hiscale
    from hiscale import SamplerSettings
    from hiscale.infer.fit import FitOptions
    from hiscale.modeling.simulate import simulate_families
    from hiscale.planning.preposterior import draws_from_fit, reweighted_width

    target = (7e9, 1.4e11)
    samp = SamplerSettings(num_warmup=400, num_samples=1000)
    df, _ = simulate_families(n_families=1, seed=0, sizes=[5e7, 1e8, 2e8, 4e8], n_checkpoints=20)
    curves = hiscale.load_curves(df)
    fam = curves.families[0]
    runs = sorted(df["run"].unique(), key=lambda r: df[df.run == r]["params"].iloc[0])

    def sub(names):
        return curves.with_frame(curves.frame[curves.frame.run.isin(names)], step="r", reason="r")

    f0 = hiscale.fit(sub(runs[:2]), family=fam, seed=0, sampler=samp)
    rows = FitOptions().select(curves.family(fam)).frame
    rows = rows[rows.run == runs[2]]
    rw = reweighted_width(
        draws_from_fit(f0),
        target,
        float(rows.params.iloc[0]),
        rows.tokens.to_numpy(),
        np.log(rows.loss.to_numpy()),
    )
    f1 = hiscale.fit(sub(runs[:3]), family=fam, seed=0, sampler=samp)
    p = f1.predict(*target, ci_prob=0.8).iloc[0]
    refit = (p.new_run_upper80 - p.new_run_lower80) / p.new_run_median
    assert not f0.flagged and not f1.flagged
    assert rw["ess"] > 100
    assert rw["relative_width"] == pytest.approx(refit, rel=0.25)
    assert rw["median"] == pytest.approx(p.new_run_median, rel=0.02)


def test_final_only_fits_plan_single_row_runs():
    from types import SimpleNamespace

    draws = _scale_only_draws(2000, 0.1, 0.02, 0.01)
    final_only = pd.DataFrame({"run": ["a", "b"], "params": [1e8, 2e8]})
    fake_fit = SimpleNamespace(
        theta=lambda: draws.theta,
        prior=SimpleNamespace(settings={"df_run": 1e7, "df_obs": 1e7}),
        law="chinchilla",
        data=final_only,
    )
    p = plan(
        fake_fit, at=(7e9, 1.4e11), candidates=[(4e8, 8e9)], budget=1e30, n_outcomes=8,
        discrepancy=None,
    )  # fmt: skip
    assert p.settings["rows_per_run"] == 1
    assert any("one row each" in n for n in p.notes)
    # one row per run: the closed form with n = 1
    assert p.widths[1] == pytest.approx(_closed_form_width(0.1, 0.02, 0.01, 1, 1), rel=0.08)


def test_cli_plan_with_the_bundled_discrepancy_population(sim_csv, capsys):
    from hiscale.backtesting.discrepancy import load_discrepancy
    from hiscale.cli import main
    from hiscale.planning.preposterior import discrepancy_halfwidth

    argv = [str(sim_csv), "--family", "new", "--at", "7e9", "1.4e11", "--budget", "1e19"]
    grid = ["--sizes", "5e7", "1e8", "--token-multiples", "20", "--quiet", "--json"]
    rc = main(["plan", *argv, *grid, "--discrepancy", "corpus-v1"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    pop = load_discrepancy("corpus-v1", distance="compute")  # the CLI's default distance
    assert pop.label.startswith("corpus-v1 population (") and "per ln compute" in pop.label
    h = d["settings"]["discrepancy_halfwidth"]
    assert h == pytest.approx(discrepancy_halfwidth(pop, 0.8))
    assert any(pop.label in n for n in d["notes"])
    assert main(["plan", *argv, *grid, "--discrepancy", "0.01"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["settings"]["discrepancy_halfwidth"] == pytest.approx(Z90 * 0.01)
    assert main(["plan", *argv, *grid, "--discrepancy", "no-such-thing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hiscale: error: no discrepancy population 'no-such-thing'")
    assert "\n" not in err


def test_discrepancy_file_round_trip_recomputes_the_same_population(tmp_path):
    from hiscale.backtesting.discrepancy import (
        InnerError,
        discrepancy_from_errors,
        load_discrepancy,
        save_discrepancy,
    )

    rng = np.random.default_rng(0)
    errs = {
        f"f{i}": InnerError(float(0.02 * rng.standard_normal()), 1e-5, 0.5 + i / 4, 4, 5, False)
        for i in range(6)
    }
    groups = {f: ("a" if i < 3 else f) for i, f in enumerate(errs)}
    pop = discrepancy_from_errors(errs, groups)
    # group "a" counts once: 4 groups
    assert pop.label == "population (4 groups, 6 families)"
    save_discrepancy(pop, groups, tmp_path / "m" / "discrepancy.json", rebuild_command="x")
    back = load_discrepancy(tmp_path / "m")
    assert back.label == "m population (4 groups, 6 families)"
    assert (back.m, back.s) == (pop.m, pop.s)
    np.testing.assert_array_equal(back.density, pop.density)
    with pytest.raises(ValueError, match=">= 2 family groups"):
        discrepancy_from_errors({"f0": errs["f0"]}, {"f0": "a"})


def test_model_card_describes_a_saved_discrepancy(tmp_path):
    from hiscale.priors.card import write_model_card
    from hiscale.priors.discrepancy import InnerError, discrepancy_from_errors, save_discrepancy
    from hiscale.priors.prior import load_prior

    prior = load_prior("corpus-v1")
    folder = tmp_path / "p"
    prior.save(folder)
    assert "Extrapolation discrepancy" not in write_model_card(prior, folder).read_text()
    errs = {
        f"f{i}": InnerError(0.01 * (i - 2), 1e-5, 0.7, 4, 5, i == 0, d_compute=1.4)
        for i in range(5)
    }
    groups = {f: f for f in errs}
    pop = discrepancy_from_errors(errs, groups)
    save_discrepancy(pop, groups, folder / "discrepancy.json", rebuild_command="hiscale x")
    card = write_model_card(prior, folder).read_text()
    assert "## Extrapolation discrepancy (`discrepancy.json`)" in card
    assert "| params (per unit ln N) | 5 | 5 |" in card
    assert "| compute (per unit ln 6ND) | 5 | 5 |" in card
    assert "Inner fits flagged (unconverged): f0." in card and "hiscale x" in card


def test_mean_aggregate_distance_grows_when_a_far_run_is_added():
    draws = _scale_only_draws(2000, 0.1, 0.02, 0.02)
    target = (7e9, 1.4e11)
    cands = grid_candidates([1e8, 2e9], [20])
    fitted = [[5e8, 1e10], [1e9, 2e10]]
    c_t = np.log(6 * target[0] * target[1])
    d_fit = np.abs(c_t - np.log([6 * 5e8 * 1e10, 6 * 1e9 * 2e10]))
    d_c = np.abs(c_t - np.log(6 * cands["params"] * cands["tokens"]))
    kw = dict(n_outcomes=4, seed=0, discrepancy_h=0.02, fitted=fitted)
    mean = Preposterior(draws, target, cands, aggregate="mean", **kw)
    assert mean.distance_now() == pytest.approx(d_fit.mean())
    np.testing.assert_allclose(mean.distance(), (d_fit.sum() + d_c) / 3)
    # the small run is farther than the fitted ones on average: it pulls the fit away
    assert mean.distance()[0] > mean.distance_now() > mean.distance()[1]
    near = Preposterior(draws, target, cands, **kw)
    np.testing.assert_allclose(near.distance(), np.minimum(d_fit.min(), d_c))
    with pytest.raises(ValueError, match="aggregate must be"):
        Preposterior(draws, target, cands, aggregate="max", **kw)


def test_cli_prior_discrepancy_writes_the_evidence_and_plan_reads_it(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from hiscale.cli import main
    from hiscale.priors.discrepancy import load_discrepancy

    monkeypatch.setenv("HISCALE_CACHE", str(tmp_path / "cache"))
    demo = Path(__file__).resolve().parents[1] / "data" / "demo_curves.csv"
    out = tmp_path / "m"
    # sim0..sim2 have >= 3 sizes (an inner fit each, three groups); sim3 has two
    assert main(["prior", "discrepancy", str(demo), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "population (3 groups, 3 families" in printed and "wrote" in printed
    pop = load_discrepancy(out)
    assert pop.families == ("sim0", "sim1", "sim2") and pop.label.startswith("m population (")
    assert all(np.isfinite(e["d_compute"]) for e in pop.errors.values())
    argv = [str(demo), "--family", "sim3", "--at", "7e9", "1.4e11", "--budget", "1e19"]
    rc = main(["plan", *argv, "--sizes", "2e8", "--token-multiples", "20", "--json", "--quiet",
               "--discrepancy", str(out), "--discrepancy-distance", "params", *SMALL])  # fmt: skip
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and any("m population" in n for n in d["notes"])
    assert d["settings"]["discrepancy_distance"] == "params"


def test_min_gain_stops_when_a_run_narrows_too_little():
    """Scale-only draws: the gains of a first and a second run are known in closed form."""
    tau, sr, so = 0.1, 0.02, 0.02
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8, 2e8], [20])
    pre = Preposterior(draws, (7e9, 1.4e11), cands, n_outcomes=48, seed=1, n_rows=4)
    w0, w1, w2 = (_closed_form_width(tau, sr, so, 4, n) for n in (0, 1, 2))
    g1, g2 = (w0 - w1) / w0, (w1 - w2) / w1
    assert g1 > 2 * g2  # the first run pins the scale, the second adds less
    steps, reason = greedy_sequence(pre, cands, budget=1e30, min_gain=(g1 + g2) / 2)
    assert len(steps) == 1 and "by " in reason and "of its width or more" in reason
    steps, _ = greedy_sequence(pre, cands, budget=1e30, min_gain=0.0)
    assert len(steps) == 2
    with pytest.raises(ValueError, match="min_gain"):
        greedy_sequence(pre, cands, budget=1e30, min_gain=1.5)


def test_local_variance_matches_the_closed_form():
    """A candidate with law-error variance v_l counts as a run offset of sr² + v_l."""
    tau, sr, so, lv = 0.1, 0.02, 0.02, 0.03**2
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8], [20])
    pre = Preposterior(draws, (7e9, 1.4e11), cands, n_outcomes=48, seed=1, n_rows=4, local_var=[lv])
    v = 1 / (1 / tau**2 + 1 / (sr**2 + lv + so**2 / 4))
    expected = 2 * np.sinh(Z90 * np.sqrt(v + sr**2 + so**2))
    assert pre.widths(pre.base(), pre.loglik)[0].mean() == pytest.approx(expected, rel=0.05)


def test_best_greedy_takes_one_strong_run_over_many_cheap_weak_ones():
    """Cost-effective greedy vs greedy on the gain (closed-form widths, scale-only draws).

    Two cheap runs (1 FLOP each) carry a law error of variance 0.01 (weak), one
    run costing 10 FLOPs none (strong). Per FLOP the weak runs win, so with a
    budget of 10 the per-FLOP greedy buys both and can no longer afford the
    strong run; the strong run alone leaves the narrower interval, and
    ``best_greedy_sequence`` keeps that sequence.
    """
    from hiscale.planning.greedy import best_greedy_sequence

    tau, sr, so, n_rows = 0.1, 0.02, 0.02, 4
    draws = _scale_only_draws(20_000, tau, sr, so)
    cands = grid_candidates([1e8, 2e8, 4e8], [20]).assign(flops=[1.0, 1.0, 10.0])
    lv = np.array([0.01, 0.01, 0.0])
    pre = Preposterior(
        draws, (7e9, 1.4e11), cands, n_outcomes=48, seed=1, n_rows=n_rows, local_var=lv
    )

    def closed(run_vars):  # relative 80% width after runs with these extra variances
        v = 1 / (1 / tau**2 + sum(1 / (sr**2 + x + so**2 / n_rows) for x in run_vars))
        return 2 * np.sinh(Z90 * np.sqrt(v + sr**2 + so**2))

    cheap, _ = greedy_sequence(pre, cands, budget=10.0, rule="per-flop")
    strong, _ = greedy_sequence(pre, cands, budget=10.0, rule="gain")
    assert [s.index for s in cheap] == [0, 1] or [s.index for s in cheap] == [1, 0]
    assert [s.index for s in strong] == [2]
    assert cheap[-1].expected_width == pytest.approx(closed([0.01, 0.01]), rel=0.06)
    assert strong[-1].expected_width == pytest.approx(closed([0.0]), rel=0.06)
    steps, _, choice = best_greedy_sequence(pre, cands, budget=10.0)
    assert choice["rule"] == "gain" and [s.index for s in steps] == [2]
    assert choice["gain"]["final_expected_width"] < choice["per-flop"]["final_expected_width"]
    # with room for all three, both rules end with the same runs: the tie keeps per-flop
    steps, _, choice = best_greedy_sequence(pre, cands, budget=12.0)
    assert choice["rule"] == "per-flop" and sorted(s.index for s in steps) == [0, 1, 2]
    # plans cut short by degenerate weights (every next pick "degenerates" at this ESS
    # floor) are not whole plans for the budget: nothing to compare, per-flop is kept
    steps, reason, choice = best_greedy_sequence(pre, cands, budget=10.0, min_ess=1e9)
    assert choice["rule"] == "per-flop" and not choice["per-flop"]["reliable"]
    assert reason.startswith("the importance weights degenerate") and len(steps) == 1
    with pytest.raises(ValueError, match="rule must be one of"):
        greedy_sequence(pre, cands, budget=10.0, rule="cheapest")


def test_plan_records_the_greedy_rule():
    """plan(greedy=...) validates the rule and records both sequences for "best"."""
    tau, sr, so = 0.1, 0.02, 0.02
    draws = _scale_only_draws(4000, tau, sr, so)
    cands = grid_candidates([1e8, 2e8], [20])
    p = plan(draws, at=(7e9, 1.4e11), candidates=cands, budget=1e30, greedy="best",
                     discrepancy=None, n_outcomes=16)  # fmt: skip
    g = p.settings["greedy"]
    assert g["rule"] in ("per-flop", "gain") and {"per-flop", "gain"} <= set(g)
    assert p.widths[-1] == pytest.approx(g[g["rule"]]["final_expected_width"])
    with pytest.raises(ValueError, match="greedy must be"):
        plan(draws, at=(7e9, 1.4e11), candidates=cands, budget=1e30, greedy="cheap")


def test_prior_draws_with_student_t_tails():
    # df_law = 5: whitened z is a scaled Student-t (scipy KS), with the prior's covariance
    from hiscale.planning.preposterior import draws_from_prior
    from hiscale.priors.prior import load_prior

    pr = load_prior("corpus-v1").with_settings(df_law=5.0)
    d = draws_from_prior(pr, n_draws=20000, seed=1)
    z = np.stack([d.theta[n] for n in pr.names], axis=1)
    w = np.linalg.solve(np.linalg.cholesky(pr.cov), (z - pr.loc).T).T
    scale = np.sqrt(3.0 / 5.0)
    for j in range(w.shape[1]):
        assert stats.kstest(w[:, j], stats.t(5.0, scale=scale).cdf).pvalue > 0.01
    np.testing.assert_allclose(np.cov(z.T), pr.cov, atol=0.08 * np.max(np.diag(pr.cov)))
    # the Gaussian default is unchanged and not t-shaped
    g = draws_from_prior("corpus-v1", n_draws=20000, seed=1)
    wg = np.linalg.solve(
        np.linalg.cholesky(pr.cov), (np.stack([g.theta[n] for n in pr.names], 1) - pr.loc).T
    )
    assert stats.kstest(wg[0], stats.norm.cdf).pvalue > 0.01
