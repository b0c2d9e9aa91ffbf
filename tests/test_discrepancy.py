"""Per-family extrapolation discrepancy (``bayes-disc``, hiscale.backtesting.discrepancy)."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats
from synthetic import make_frame

from hiscale.backtesting import discrepancy as disc
from hiscale.backtesting.discrepancy import (
    DiscrepancyPrior,
    InnerError,
    fit_population,
    population_density,
    population_discrepancy,
    sigma_posterior,
    widen,
)
from hiscale.backtesting.methods import METHODS, BayesMethod, DiscState, get_method
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import COLUMNS, backtest
from hiscale.data.curves import load_curves
from hiscale.priors.prior import PriorWarning, flat_prior
from hiscale.testing import TEST_SAMPLER

# --- the 1-D posterior of sigma_d -----------------------------------------------------


def _quad_posterior(m, s, own):
    """Unnormalised posterior density of u = log sigma_d, written out for scipy.integrate.quad."""

    def dens(u):
        prior = np.exp(-0.5 * ((u - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        var = own.s2 + np.exp(2 * u) * own.d**2
        like = np.exp(-0.5 * own.e**2 / var) / np.sqrt(2 * np.pi * var)
        return prior * like

    return dens


def _err(e, s2, d):
    return InnerError(e=e, s2=s2, d=d, rows=3, n_fit_sizes=3, flagged=False)


@pytest.mark.parametrize(
    "m, s, own",
    [(np.log(0.02), 1.0, _err(0.06, 4e-4, 0.7)), (np.log(0.05), 0.5, _err(-0.002, 1e-3, 1.5))],
)
def test_sigma_posterior_matches_quadrature(m, s, own):
    dens = _quad_posterior(m, s, own)
    lo, hi = m - 12 * s, m + 12 * s
    z = integrate.quad(dens, lo, hi, epsabs=0, epsrel=1e-10, limit=200)[0]
    post = sigma_posterior(m, s, own)
    # CDF at several points
    for u in (m - s, m, m + 0.5 * s, m + 2 * s):
        want = integrate.quad(dens, lo, u, epsabs=0, epsrel=1e-10, limit=200)[0] / z
        assert np.interp(u, post.u, post.cdf) == pytest.approx(want, abs=1e-5)
    # posterior mean of sigma_d and the median
    mean_q = integrate.quad(lambda u: np.exp(u) * dens(u), lo, hi, epsrel=1e-10, limit=200)[0] / z
    mean_grid = np.trapezoid(np.exp(post.u) * post.density, post.u)
    assert mean_grid == pytest.approx(mean_q, rel=1e-5)
    med_u = optimize.brentq(
        lambda u: integrate.quad(dens, lo, u, epsrel=1e-10, limit=200)[0] / z - 0.5, lo, hi
    )
    assert post.median == pytest.approx(np.exp(med_u), rel=1e-4)
    assert post.source == "prior + own inner error"


def test_sigma_posterior_on_a_grid_prior_matches_quadrature():
    """A non-Gaussian prior given on a grid (a two-component mixture) times the own likelihood."""

    def prior(u):
        return 0.7 * stats.norm.pdf(u, np.log(0.01), 0.5) + 0.3 * stats.norm.pdf(
            u, np.log(0.1), 0.3
        )

    own = _err(0.08, 2e-4, 1.0)
    like = _quad_posterior(0.0, 1e6, own)  # flat-ish prior factor: divide it out below

    def dens(u):
        return prior(u) * like(u) / (np.exp(-0.5 * (u / 1e6) ** 2) / (1e6 * np.sqrt(2 * np.pi)))

    u = disc.U_GRID
    post = sigma_posterior(0.0, 1.0, own, prior_grid=(u, prior(u)))
    lo, hi = u[0], u[-1]
    z = integrate.quad(dens, lo, hi, epsrel=1e-10, limit=400, points=[np.log(0.01), np.log(0.1)])[0]
    for x in (np.log(0.01), np.log(0.05), np.log(0.1)):
        want = integrate.quad(dens, lo, x, epsrel=1e-10, limit=400)[0] / z
        assert np.interp(x, post.u, post.cdf) == pytest.approx(want, abs=1e-4)


def test_without_own_evidence_the_posterior_is_the_prior_and_says_why():
    m, s = np.log(0.03), 0.8
    post = sigma_posterior(m, s, None, why_none="cell has 2 training size(s)")
    assert post.source == "prior alone (cell has 2 training size(s))"
    np.testing.assert_allclose(post.density, stats.norm.pdf(post.u, m, s), rtol=1e-6)
    assert post.median == pytest.approx(0.03, rel=1e-6)
    assert post.quantile(stats.norm.cdf(1.0)) == pytest.approx(np.exp(m + s), rel=1e-5)


def test_a_large_own_error_moves_sigma_up_a_null_one_down():
    m, s = np.log(0.02), 1.0
    big = InnerError(e=0.3, s2=1e-4, d=1.0, rows=3, n_fit_sizes=3, flagged=False)
    null = InnerError(e=0.0, s2=1e-6, d=1.0, rows=3, n_fit_sizes=3, flagged=False)
    assert sigma_posterior(m, s, big).median > 0.1
    assert sigma_posterior(m, s, null).median < 0.02


# --- the population's (m, s) ----------------------------------------------------------


def test_marginal_likelihood_recovers_m_and_s_from_simulated_families():
    rng = np.random.default_rng(3)
    m, s, n = np.log(0.03), 0.6, 600
    d = rng.uniform(0.3, 3.0, n)
    s2 = rng.uniform(1e-5, 1e-4, n)
    sigma = np.exp(m + s * rng.standard_normal(n))
    e = rng.normal(0.0, np.sqrt(s2 + (sigma * d) ** 2))
    m_hat, s_hat, info = fit_population(e, s2, d)
    assert m_hat == pytest.approx(m, abs=0.15)
    assert s_hat == pytest.approx(s, abs=0.15)
    assert info["at_bound"] == [] and info["n"] == n


def test_population_predictive_centres_on_the_simulated_m_and_s():
    """With many families the predictive of log sigma_d has mean ~ m and sd ~ s."""
    rng = np.random.default_rng(5)
    m, s, n = np.log(0.03), 0.6, 150
    d = rng.uniform(0.3, 3.0, n)
    s2 = rng.uniform(1e-5, 1e-4, n)
    e = rng.normal(0.0, np.sqrt(s2 + (np.exp(m + s * rng.standard_normal(n)) * d) ** 2))
    dens, info = population_density(e, s2, d)
    u = disc.U_GRID
    mean = np.trapezoid(u * dens, u)
    sd = np.sqrt(np.trapezoid((u - mean) ** 2 * dens, u))
    assert mean == pytest.approx(m, abs=0.2)
    assert sd == pytest.approx(s, abs=0.2)
    assert info["m_mean"] == pytest.approx(m, abs=0.2)


def test_group_weights_count_a_duplicated_family_once():
    rng = np.random.default_rng(4)
    e, s2, d = rng.normal(0, 0.05, 8), np.full(8, 1e-4), rng.uniform(0.5, 2, 8)
    once = fit_population(e, s2, d)
    twice = fit_population(
        np.r_[e, e[:1]], np.r_[s2, s2[:1]], np.r_[d, d[:1]], weights=np.r_[0.5, np.ones(7), 0.5]
    )
    assert twice[0] == pytest.approx(once[0], abs=1e-4)
    assert twice[1] == pytest.approx(once[1], abs=1e-4)
    assert twice[2]["loglik"] == pytest.approx(once[2]["loglik"], rel=1e-8)


# --- the widened predictive -----------------------------------------------------------


def test_same_seed_same_draws_other_seed_other_draws():
    post = sigma_posterior(np.log(0.02), 1.0)
    new = np.random.default_rng(0).lognormal(1.0, 0.01, size=(500, 4))
    a, sa = widen(new, post, 1.2, seed=7)
    b, sb = widen(new, post, 1.2, seed=7)
    c, _ = widen(new, post, 1.2, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a, c)


def test_widening_is_one_lognormal_factor_per_draw():
    """With a near-point posterior, ln(widened / new) / d is N(0, sigma^2), shared by the rows."""
    sigma, d = 0.05, 2.0
    post = sigma_posterior(np.log(sigma), 1e-4)
    new = np.random.default_rng(1).lognormal(1.0, 0.02, size=(20000, 3))
    out, _ = widen(new, post, d, seed=2)
    r = np.log(out / new)
    np.testing.assert_allclose(r, r[:, :1] * np.ones((1, 3)), rtol=1e-12, atol=1e-15)
    assert stats.kstest(r[:, 0] / (sigma * d), "norm").pvalue > 1e-3
    # sigma_d draws follow the posterior: here the prior log N(m, s^2)
    _, sig = widen(new, sigma_posterior(np.log(0.05), 0.7), d, seed=3)
    assert stats.kstest(np.log(sig), stats.norm(np.log(0.05), 0.7).cdf).pvalue > 1e-3
    same, _ = widen(new, post, 0.0, seed=2)  # no extrapolation: no widening
    np.testing.assert_array_equal(same, new)


# --- the method ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def three():
    """Three synthetic families in three groups (5, 5 and 4 sizes), mildly noisy."""
    frame = pd.concat(
        [
            make_frame("alpha", noise=0.004, seed=1),
            make_frame("bravo", sizes=(2e7, 6e7, 2e8, 6e8, 2e9), noise=0.004, seed=2),
            make_frame("charlie", sizes=(1e7, 4e7, 1.6e8, 6.4e8), noise=0.004, seed=3),
        ],
        ignore_index=True,
    )
    return load_curves(frame)


def test_bayes_disc_is_registered_and_default_off():
    assert "bayes-disc" in METHODS
    assert get_method("bayes-disc").discrepancy == "family"
    assert get_method("bayes").discrepancy == "none"
    with pytest.raises(ValueError, match="discrepancy must be 'none' or 'family', got 'x'"):
        BayesMethod(discrepancy="x")


def test_k2_cell_uses_the_prior_alone_and_says_so(three):
    (cell,) = make_cells(three.family("alpha"), grid=[(2, 1.0)])
    assert cell.n_sizes_used == 2
    m = get_method("bayes-disc", prior="flat")
    state = DiscState(flat_prior("chinchilla"), DiscrepancyPrior(np.log(0.02), 1.0, "test"))
    new = np.random.default_rng(0).lognormal(1.0, 0.01, size=(200, len(cell.target.frame)))
    out, extra = m._discrepancy(cell, state, new, seed=0)  # no fit: k = 2 has no inner fit
    assert extra["sigma_d_source"] == (
        "prior alone (cell has 2 training size(s), own evidence needs >= 3)"
    )
    assert np.isnan(extra["e_in"])
    assert extra["sigma_d_median"] == pytest.approx(0.02, rel=1e-5)
    assert extra["d"] == pytest.approx(np.log(1e9 / 3e7))  # target 1e9, largest training 3e7
    assert out.shape == new.shape


def test_fewer_than_two_other_groups_falls_back_and_warns(three, monkeypatch):
    calls = []

    def fake(corpus, fam, **kw):
        calls.append(fam)
        return InnerError(e=0.01, s2=1e-4, d=1.0, rows=3, n_fit_sizes=3, flagged=False)

    monkeypatch.setattr(disc, "family_inner_error", fake)
    two = load_curves(three.frame[three.frame["family"] != "charlie"])
    dp = population_discrepancy(two, "alpha")
    assert calls == ["bravo"]
    assert dp.label == "fallback (1 group(s) outside 'alpha' give an error; need >= 2)"
    assert (dp.m, dp.s) == disc.FALLBACK_PRIOR
    with pytest.warns(PriorWarning, match="discrepancy prior fallback"):
        get_method("bayes-disc", prior="flat").prepare(two, "alpha")
    full = population_discrepancy(three, "alpha")
    assert full.label == "population (2 groups, 2 families)"
    assert full.families == ("bravo", "charlie")


def test_end_to_end_backtest_of_a_simulated_family(three, tmp_path, monkeypatch):
    """bayes and bayes-disc on identical cells of a simulated family (flat prior, test sampler)."""
    monkeypatch.setenv("HISCALE_CACHE", str(tmp_path))
    kw = {"prior": "flat", "sampler": TEST_SAMPLER, "disc_sampler": TEST_SAMPLER}
    methods = [get_method("bayes", **kw), get_method("bayes-disc", **kw)]
    res = backtest(three, families=["alpha"], methods=methods, grid=[(2, 1.0), (3, 1.0)])
    assert list(res.columns) == list(COLUMNS)
    assert (res["status"] == "ok").all()
    disc_rows = res[res["method"] == "bayes-disc"]
    labels = disc_rows["prior"].str.replace(r", \d inner fits flagged", "", regex=True)
    assert (labels == "flat + discrepancy population (2 groups, 2 families)").all()
    base = res[res["method"] == "bayes"].set_index("k")
    wide = disc_rows.set_index("k")
    for col in ("lower80", "upper80", "lower50", "upper50", "predicted", "are_pct"):
        assert np.isfinite(wide[col]).all(), col
    # same seed, same cell fit: the widened draws' median stays near the plain one
    # (on these nearly noiseless synthetic families the learned sigma_d is small)
    np.testing.assert_allclose(wide["predicted"], base["predicted"], rtol=0.02)
    # the population's inner errors are cached: a second run reads them
    assert len(list((tmp_path / "discrepancy").glob("*.json"))) == 2


# --- several own inner errors (bayes-disc3) ---------------------------------------------


def test_several_own_errors_multiply_their_likelihoods_quadrature():
    """Two errors at two distances: the grid posterior against scipy.integrate.quad."""
    m, s = np.log(0.02), 1.0
    errs = [_err(0.03, 2e-4, 0.5), _err(0.07, 5e-4, 1.2)]
    one, two = (_quad_posterior(m, s, e) for e in errs)
    prior = stats.norm(m, s)

    def dens(u):  # prior x like1 x like2 = (prior x like1) (prior x like2) / prior
        return one(u) * two(u) / prior.pdf(u)

    lo, hi = m - 12 * s, m + 12 * s
    z = integrate.quad(dens, lo, hi, epsabs=0, epsrel=1e-10, limit=200)[0]
    post = sigma_posterior(m, s, errs)
    for u in (m - s, m, m + s, m + 2 * s):
        want = integrate.quad(dens, lo, u, epsabs=0, epsrel=1e-10, limit=200)[0] / z
        assert np.interp(u, post.u, post.cdf) == pytest.approx(want, abs=1e-5)
    assert post.source == "prior + 2 own inner errors"
    # a list of one is the single error; an empty list is the prior alone
    single = sigma_posterior(m, s, [errs[0]])
    np.testing.assert_array_equal(single.density, sigma_posterior(m, s, errs[0]).density)
    assert sigma_posterior(m, s, [], why_none="x").source == "prior alone (x)"


def test_inner_errors_hold_out_more_sizes_at_longer_distances(three):
    """drop = 1 is inner_error itself; each further fit leaves one more size out."""
    rows = three.family("alpha")  # 5 sizes
    kw = {"law": "chinchilla", "sampler": TEST_SAMPLER, "seed": 0}
    errs = disc.inner_errors(rows, "alpha", "flat", n_inner=5, **kw)
    assert [e.n_fit_sizes for e in errs] == [4, 3, 2]  # stops at drop + 2 > 5 sizes
    assert np.all(np.diff([e.d for e in errs]) > 0)
    first = disc.inner_error(rows, "alpha", "flat", **kw)
    assert errs[0] == first
    with pytest.raises(ValueError, match="drop must be >= 1"):
        disc.inner_error(rows, "alpha", "flat", drop=0, **kw)
    assert get_method("bayes-disc3").disc_inner == 3
