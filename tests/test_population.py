"""Population prior: family choice, loss units, two-step build on simulated families."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from engine_sim import TRUTH, simulate_family

from hiscale.data.curves import load_curves
from hiscale.infer.fit import FitOptions
from hiscale.infer.settings import POPULATION_SAMPLER, SamplerSettings
from hiscale.population import (
    MAX_STEP1_RHAT,
    OLD_SIZE_FILTER,
    build_prior,
    divide_prior,
    family_group,
    family_unit,
    majority_unit,
    observation_form,
    pool_likelihoods,
    population_families,
)
from hiscale.priors.prior import Prior, flat_prior, load_prior, prior_overlap, resolve_prior

SMALL = SamplerSettings(num_warmup=400, num_samples=400)


def _families(n=3, unit="nats/token"):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        truth = dict(TRUTH)
        truth["log_alpha"] = TRUTH["log_alpha"] + 0.1 * rng.standard_normal()
        f = simulate_family(f"fam{i}", truth=truth, seed=i)
        f["loss_unit"] = unit
        frames.append(f)
    return frames


def test_family_group_and_units():
    assert family_group("gemstones-cooldown") == "gemstones"
    assert family_group("gpt3") == "gpt3"
    twins = pd.concat([simulate_family("a-1"), simulate_family("b-1")]).assign(group="lab")
    assert family_group("b-1", load_curves(twins)) == "lab"  # from the data when given
    frames = _families(3)
    odd = simulate_family("odd", seed=9)
    odd["loss_unit"] = "Nats per word"
    c = load_curves(pd.concat([*frames, odd]))
    assert family_unit(c, "odd") == "nats/word"
    assert majority_unit(c) == "nats/token"
    keep, why = population_families(c, loss_unit="nats/token")
    assert keep == ["fam0", "fam1", "fam2"]
    assert "loss unit" in why["odd"]


def test_population_families_reports_narrow_families():
    narrow = simulate_family("narrow", sizes=(1e8, 1.5e8, 2e8))
    two = simulate_family("two", sizes=(1e8, 1e9))
    c = load_curves(pd.concat([narrow, two, *_families(1)]))
    keep, why = population_families(c)
    assert keep == ["fam0"]
    assert "span" in why["narrow"] and "sizes < 3" in why["two"]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """HISCALE_CACHE in a temporary folder for this module's tests, restored after."""
    # a module-scoped fixture cannot take the function-scoped ``monkeypatch``
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HISCALE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def small_prior(module_cache):
    c = load_curves(pd.concat(_families(3)))
    return build_prior(c, name="sim", sampler=SMALL, options=FitOptions(), exclude=["fam2"])


def test_two_step_prior_is_centred_near_the_truth(small_prior):
    p = small_prior
    assert p.names == ("u_a", "u_b", "log_alpha", "log_beta")
    assert set(p.meta["families_used"]) == {"fam0", "fam1"}
    assert "excluded" in p.meta["families_left_out"]["fam2"]
    assert abs(p.loc[2] - TRUTH["log_alpha"]) < 3 * p.sd[2]
    assert np.all(np.linalg.eigvalsh(p.cov) > 0)
    assert p.meta["loss_unit"] == "nats/token"
    lik = p.meta["likelihoods"]
    assert set(lik["families"]) == {"fam0", "fam1"}
    for d in lik["families"].values():
        assert len(d["information"]) == 4
        assert d["floored_directions"] == len(d["uninformative"])


def test_step2_sampler_is_the_preset_and_is_recorded(small_prior, module_cache):
    pop = small_prior.meta["population"]
    assert pop["sampler"] == POPULATION_SAMPLER.numpyro_dict("init_to_uniform")
    assert (pop["num_warmup"], pop["num_samples"]) == (1000, 1000)
    assert pop["hyperpriors"] == {"mu_sd_factor": 2.0, "tau_sd": 1.0, "lkj_concentration": 2.0}
    # another step-2 sampler is used and recorded (step 1 comes from the cache)
    c = load_curves(pd.concat(_families(3)))
    other = replace(POPULATION_SAMPLER, num_warmup=300, num_samples=200)
    p = build_prior(c, name="sim", sampler=SMALL, exclude=["fam2"], population_sampler=other)
    assert p.meta["population"]["sampler"]["num_samples"] == 200
    assert p.meta["population"]["num_warmup"] == 300
    assert p.meta["families_used"] == small_prior.meta["families_used"]
    assert not np.array_equal(p.loc, small_prior.loc)
    from hiscale.priors.card import model_card

    card = model_card(small_prior)
    assert "`tau ~ HalfNormal(1)`, `Omega ~ LKJ(2)`" in card
    assert "| `num_samples` | 1,000 |" in card


def test_model_card_names_the_directions_a_family_does_not_identify(small_prior):
    from dataclasses import replace

    from hiscale.priors.card import model_card

    meta = dict(small_prior.meta)
    meta["likelihoods"] = {
        **meta["likelihoods"],
        "families": {
            "fam0": {
                "information": [-0.1, 5.0, 40.0, 800.0],
                "floored_directions": 1,
                "uninformative": [{"u_a": 0.01, "u_b": -0.6, "log_alpha": 0.0, "log_beta": 0.8}],
            }
        },
    }
    card = model_card(replace(small_prior, meta=meta))
    assert "fam0 (1: -0.60 u_b +0.80 log_beta)" in card
    assert "flat prior is divided out" in card


def test_prior_roundtrip_and_resolve(small_prior, tmp_path):
    path = small_prior.save(tmp_path / "sim")
    back = load_prior(tmp_path / "sim")
    np.testing.assert_array_equal(back.loc, small_prior.loc)
    assert back.settings == small_prior.settings
    nd = resolve_prior(back, law="chinchilla-nd")
    assert nd.names[-1] == "gamma" and nd.cov[-1, :-1].tolist() == [0, 0, 0, 0]
    assert path.name == "prior.json"


def test_unknown_prior_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prior 'nope'"):
        load_prior("nope")


def test_bundled_prior_ships():
    p = load_prior("corpus-v1")
    assert isinstance(p, Prior) and p.names == ("u_a", "u_b", "log_alpha", "log_beta")
    assert len(p.meta["families_used"]) >= 5
    assert "pythia" not in p.meta["families_used"]  # LAMBADA is another loss unit


def test_corpus_v2_ships_beside_an_unchanged_default():
    from hiscale.priors.prior import DEFAULT_PRIOR, list_priors

    assert DEFAULT_PRIOR == "corpus-v1" and {"corpus-v1", "corpus-v2"} <= set(list_priors())
    v1, v2 = load_prior("corpus-v1"), load_prior("corpus-v2")
    assert v1.meta["min_span"] == 4.0 and len(v1.meta["population_units"]) == 6
    meta = v2.meta
    assert meta["min_span"] == 1.0 and meta["min_sizes"] == 1
    # curves_extra's families are in; one-size families too (lrsched-124m-*)
    assert {"mpl-constant", "lrsched-124m-cos10", "olmo-twin"} <= set(meta["families_used"])
    assert "loss unit" in meta["families_left_out"]["farseer"]
    units = meta["population_units"]
    assert len(units) > len(v1.meta["population_units"])
    assert {f for members in units.values() for f in members} == set(meta["families_used"])


def test_curve_v1_ships_an_h_term_population_with_the_extra_families():
    from hiscale.priors.prior import list_priors

    assert "curve-v1" in list_priors()
    p = load_prior("curve-v1")
    assert p.names == ("u_a", "u_b", "log_alpha", "log_beta", "u_f", "r_f")
    meta = p.meta
    used, out = set(meta["families_used"]), meta["families_left_out"]
    # schedules from runs_extra.csv: the extra families are in
    assert {"mpl-constant", "mpl-wsd-linear", "lrsched-sp-wsd", "gpt3"} <= used
    assert meta["runs_extra"] and "--runs-extra" in meta["rebuild_command"]
    # final-only families have no curve; unknown schedules cannot be fitted
    assert "one checkpoint" in out["chinchilla"] and "loss unit" in out["farseer"]
    assert len(meta["population_units"]) >= 4


# ---------------------------------------------------------------- dividing out the step-1 prior


def _random_spd(rng, k, scale):
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return (q * scale**2) @ q.T


def _kalman_posterior(m0, s0, h, obs, r):
    """Posterior of z ~ N(m0, s0) after obs ~ N(h z, r), in the gain (covariance) form."""
    gain = s0 @ h.T @ np.linalg.inv(h @ s0 @ h.T + r)
    return m0 + gain @ (obs - h @ m0), s0 - gain @ h @ s0


def _obs_loglik(a, y, m0, z):
    """Log-likelihood of z in observation form, up to a constant."""
    return -0.5 * np.sum((a.T @ (z - m0) - y) ** 2)


def test_divide_prior_recovers_a_known_gaussian_likelihood():
    rng = np.random.default_rng(1)
    base = flat_prior("chinchilla")
    m_lik = base.loc + rng.normal(0, 0.5, 4)
    s_lik = _random_spd(rng, 4, np.array([0.05, 0.2, 0.4, 0.7]))
    # prior x likelihood via the covariance (Kalman) form, with the likelihood as
    # a direct observation of z: not the precision form divide_prior inverts
    m_post, s_post = _kalman_posterior(base.loc, base.cov, np.eye(4), m_lik, s_lik)
    lik = divide_prior(m_post, s_post, base.loc, base.cov)
    assert lik.floored == []
    m_back, s_back = lik.mean_cov()
    np.testing.assert_allclose(m_back, m_lik, rtol=0, atol=1e-8)
    np.testing.assert_allclose(s_back, s_lik, rtol=1e-8, atol=1e-10)


def _partial_posterior(rng):
    """A likelihood that observes only two linear combinations of the four parameters."""
    base = flat_prior("chinchilla")
    h = rng.standard_normal((2, 4))
    r = np.diag([0.01, 0.04])
    obs = h @ base.loc + rng.normal(0, 0.5, 2)
    m_post, s_post = _kalman_posterior(base.loc, base.cov, h, obs, r)
    return base, h, r, obs, m_post, s_post


def test_a_family_carries_no_information_where_its_posterior_is_its_prior():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(2)
    base, h, r, obs, m_post, s_post = _partial_posterior(rng)
    null = np.linalg.svd(h)[2][2:]  # the two directions h does not see
    lik = divide_prior(m_post, s_post, base.loc, base.cov)
    assert len(lik.floored) == 2 and len(lik.values) == 2
    with pytest.raises(ValueError, match="no information"):
        lik.mean_cov()
    a, y = observation_form(lik)
    assert np.abs(a.T @ null.T).max() < 1e-8 * np.abs(a).max()
    # log-likelihood differences match the true likelihood N(obs; h z, r)
    zs = base.loc + rng.normal(0, 0.3, (5, 4))
    true = np.array([multivariate_normal(h @ z, r).logpdf(obs) for z in zs])
    ours = np.array([_obs_loglik(a, y, base.loc, z) for z in zs])
    np.testing.assert_allclose(ours - ours[0], true - true[0], atol=1e-6)
    # from 4000 posterior draws the difference in the unseen directions is sampling
    # noise (of either sign): still floored, and the rest is close to the exact answer
    draws = rng.multivariate_normal(m_post, s_post, size=4000)
    mc = divide_prior(draws.mean(0), np.cov(draws, rowvar=False), base.loc, base.cov)
    assert len(mc.floored) == 2
    assert np.abs(mc.information[:2]).max() < 0.1 < mc.information[2]
    np.testing.assert_allclose(mc.values, lik.values, rtol=0.1)
    a_mc, _ = observation_form(mc)
    assert np.abs(a_mc.T @ null.T).max() < 0.01 * np.abs(a_mc).max()


def test_step2_likelihood_is_the_marginal_of_the_family_likelihood():
    """y ~ N(A'(mu - m0), A' Sigma A + I) equals N(m_lik; mu, Sigma + S_lik) up to a constant."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    base = flat_prior("chinchilla")
    m_lik = base.loc + rng.normal(0, 0.5, 4)
    s_lik = _random_spd(rng, 4, np.array([0.05, 0.2, 0.4, 0.7]))
    m_post, s_post = _kalman_posterior(base.loc, base.cov, np.eye(4), m_lik, s_lik)
    a, y = observation_form(divide_prior(m_post, s_post, base.loc, base.cov))
    ours, ref = [], []
    for _ in range(4):
        mu = base.loc + rng.normal(0, 0.5, 4)
        sigma = _random_spd(rng, 4, rng.uniform(0.1, 0.6, 4))
        ours.append(
            multivariate_normal(a.T @ (mu - base.loc), a.T @ sigma @ a + np.eye(4)).logpdf(y)
        )
        ref.append(multivariate_normal(mu, sigma + s_lik).logpdf(m_lik))
    np.testing.assert_allclose(np.diff(ours), np.diff(ref), atol=1e-8)


def test_zero_information_directions_act_as_infinite_variance_in_step2():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(4)
    base, h, r, obs, m_post, s_post = _partial_posterior(rng)
    a, y = observation_form(divide_prior(m_post, s_post, base.loc, base.cov))
    # (1) exact: z ~ N(mu, Sigma) integrated against N(obs; h z, r) is
    #     N(obs; h mu, h Sigma h' + r)
    # (2) the same likelihood as a full-rank Gaussian with a huge variance along the unseen
    #     directions, S^-1 = h' r^-1 h + eps null' null (ill-conditioned: eps cannot go lower)
    null = np.linalg.svd(h)[2][2:]
    eps = 1e-5
    prec = h.T @ np.linalg.inv(r) @ h + eps * null.T @ null
    s_big = np.linalg.inv(prec)
    m_big = s_big @ (h.T @ np.linalg.inv(r) @ obs + eps * null.T @ (null @ base.loc))
    ours, exact, big = [], [], []
    for _ in range(4):
        mu = base.loc + rng.normal(0, 0.5, 4)
        sigma = _random_spd(rng, 4, rng.uniform(0.1, 0.6, 4))
        cov_y = a.T @ sigma @ a + np.eye(4)
        ours.append(multivariate_normal(a.T @ (mu - base.loc), cov_y).logpdf(y))
        exact.append(multivariate_normal(h @ mu, h @ sigma @ h.T + r).logpdf(obs))
        big.append(multivariate_normal(mu, sigma + s_big).logpdf(m_big))
    np.testing.assert_allclose(np.diff(ours), np.diff(exact), atol=1e-8)
    np.testing.assert_allclose(np.diff(ours), np.diff(big), atol=1e-3)


def test_pooled_siblings_carry_the_mean_of_their_log_likelihoods():
    rng = np.random.default_rng(5)
    base, _, _, _, m1, s1 = _partial_posterior(rng)  # no information in two directions
    m_lik = base.loc + rng.normal(0, 0.5, 4)
    s_lik = _random_spd(rng, 4, np.array([0.05, 0.2, 0.4, 0.7]))
    m2, s2 = _kalman_posterior(base.loc, base.cov, np.eye(4), m_lik, s_lik)
    one, two = (divide_prior(m, s, base.loc, base.cov) for m, s in ((m1, s1), (m2, s2)))
    pooled = pool_likelihoods([one, two])
    assert pooled.floored == []  # the second sibling informs every direction
    forms = [observation_form(lk) for lk in (one, two, pooled)]
    zs = base.loc + rng.normal(0, 0.3, (5, 4))
    ll = np.array([[_obs_loglik(a, y, base.loc, z) for z in zs] for a, y in forms])
    mean_members = 0.5 * (ll[0] + ll[1])
    np.testing.assert_allclose(ll[2] - ll[2][0], mean_members - mean_members[0], atol=1e-8)
    # a sibling pooled with itself is itself
    m_back, s_back = pool_likelihoods([two, two]).mean_cov()
    np.testing.assert_allclose(m_back, m_lik, atol=1e-8)
    np.testing.assert_allclose(s_back, s_lik, rtol=1e-8, atol=1e-10)


def test_prior_overlap_follows_groups_in_the_data():
    c = load_curves(
        pd.concat(
            [
                simulate_family("mine").assign(source="lab/runs:a"),
                simulate_family("sibling").assign(source="lab/runs:b"),  # same repository
                simulate_family("other").assign(source="elsewhere/x"),
            ]
        )
    )
    meta = {"families_used": {"sibling": {}}, "population_units": {"sibling": ["sibling"]}}
    p = Prior(**{**flat_prior().__dict__, "name": "p", "meta": meta})
    why = prior_overlap(p, c, "mine")
    assert why is not None and "learned on sibling (group 'mine' of 'mine')" in why
    assert prior_overlap(p, c, "other") is None
    assert prior_overlap(flat_prior(), c, "mine") is None  # learned on nothing
    # the shipped prior saw gpt3's group, not a new family's
    bundled = load_prior("corpus-v1")
    new = load_curves(simulate_family("gpt3-rerun"))
    assert "group 'gpt3'" in prior_overlap(bundled, new, "gpt3-rerun")
    assert prior_overlap(bundled, c, "mine") is None


def test_leave_one_out_prior_leaves_out_the_whole_group(small_prior):
    """Section 7: the held-out family's group, siblings included, feeds nothing."""
    from hiscale.backtesting.loo_prior import leave_one_out_prior

    frames = _families(3)  # fam0..fam2: the families of small_prior (cached step-1 fits)
    frames[0] = frames[0].assign(source="a/x")
    frames[1] = frames[1].assign(source="b/y")
    frames[2] = frames[2].assign(source="c/runs:main")
    # fam2's sibling: another name, the same repository (cooldown branches, say)
    twin = simulate_family("twin", seed=7).assign(loss_unit="nats/token", source="c/runs:cool")
    c = load_curves(pd.concat([*frames, twin]))
    assert family_group("fam2", c) == family_group("twin", c) == "fam2"
    p = leave_one_out_prior(c, "fam2", sampler=SMALL, options=FitOptions())
    used = set(p.meta["families_used"])
    assert used == {"fam0", "fam1"}
    assert not used & {"fam2", "twin"}
    assert "excluded (group 'fam2' held out)" == p.meta["families_left_out"]["twin"]
    assert p.name == p.label == "lofo-fam2"
    assert prior_overlap(p, c, "fam2") is None and prior_overlap(p, c, "twin") is None
    assert p.meta["covariate"] is None
    # with a family covariate: the held-out family's level, named and recorded; a level
    # no donor has widens the prior (a fresh draw of the between-level spread)
    kinds = {"fam0": "val_loss", "fam1": "train_loss", "fam2": "train_loss", "twin": "val_loss"}
    c2 = load_curves(pd.concat([*frames, twin]).assign(metric=lambda d: d["family"].map(kinds)))
    q = leave_one_out_prior(
        c2, "fam2", sampler=SMALL, options=FitOptions(), covariate="metric_kind"
    )
    cov = q.meta["covariate"]
    assert q.label == "lofo-fam2 (metric_kind=train)"
    assert cov["unit_levels"] == {"fam0": "eval", "fam1": "train"}
    assert cov["target_level"] == "train" and cov["target_seen"] and cov["note"] is None
    odd = load_curves(pd.concat([*frames, twin]).assign(metric="val_loss"))
    r = build_prior(
        odd, exclude=["fam2"], sampler=SMALL, options=FitOptions(),
        covariate="metric_kind", covariate_level="train",
    )  # fmt: skip
    assert not r.meta["covariate"]["target_seen"]
    assert "not in the population" in r.meta["covariate"]["note"]
    assert np.all(r.sd > p.sd)


# ---------------------------------------------- narrow families inform what they see


@pytest.fixture(scope="module")
def one_size_family():
    """One model size, N0 = 1e9, where the size term ``a (N/N0)^-alpha`` is ``a`` for any alpha."""
    from hiscale.modeling.simulate import simulate_families

    frame, truth = simulate_families(
        "corpus-v1", n_families=1, seed=5, sizes=[1e9], runs_per_size=2, prefix="one"
    )
    return load_curves(frame), truth


def test_the_law_at_one_size_does_not_depend_on_the_size_exponent(one_size_family):
    """Independent of the engine: the loss at the family's points, alpha moved, beta moved."""
    from hiscale.laws import D0, N0, get_law

    c, truth = one_size_family
    law = get_law("chinchilla")
    theta = {n: float(truth.iloc[0][n]) for n in (*law.params, "log_scale")}
    x = np.log(c.frame["params"].to_numpy() / N0)
    y = np.log(c.frame["tokens"].to_numpy() / D0)
    base = np.asarray(law.log_loss(x, y, theta))
    moved = {k: np.asarray(law.log_loss(x, y, {**theta, k: theta[k] + 0.3})) for k in theta}
    assert np.abs(moved["log_alpha"] - base).max() < 1e-12
    assert np.ptp(moved["log_beta"] - base) > 1e-3  # beta changes the curve's shape


def test_narrow_families_enter_unless_the_old_filter_is_asked_for(one_size_family):
    import inspect

    c, _ = one_size_family
    two = simulate_family("two", sizes=(1e8, 1.2e8))
    two = two.assign(loss_unit="nats/token", metric="sim_loss", primary=True, group="two")
    c = load_curves(pd.concat([c.frame, two]))
    assert population_families(c, **OLD_SIZE_FILTER)[0] == []  # the old filter drops both
    assert population_families(c, min_sizes=1, min_span=1.0)[0] == ["one0", "two"]
    defaults = inspect.signature(build_prior).parameters
    assert defaults["min_span"].default == 1.0 and defaults["min_sizes"].default is None


@pytest.mark.slow
def test_a_one_size_family_informs_the_data_exponent_only(one_size_family, tmp_path, monkeypatch):
    """Its divided-out likelihood is flat along log_alpha and informative along log_beta.

    Slow (~40 s): the one-size posterior is a bent ridge in ``(u_a, u_b)``, so
    the test sampler does not converge; the default one does (r_hat ~1.03).
    """
    from hiscale.population import summarise_family

    monkeypatch.setenv("HISCALE_CACHE", str(tmp_path))
    c, _ = one_size_family
    opts = FitOptions(end_of_run=0.0)  # simulated curves follow the law at every checkpoint
    s = summarise_family(c, "one0", options=opts, sampler=SamplerSettings())
    assert s.diagnostics["rhat_max"] <= MAX_STEP1_RHAT
    base = flat_prior()
    pooled = pool_likelihoods([divide_prior(s.mean, s.cov, base.loc, base.cov)])
    # precision in z coordinates, relative to the flat prior's precision along each axis
    l_inv = np.linalg.inv(pooled.prior_chol)
    prec_z = l_inv.T @ pooled.precision @ l_inv
    rel = np.diag(prec_z) * np.diag(base.cov)
    i_alpha, i_beta = base.names.index("log_alpha"), base.names.index("log_beta")
    assert rel[i_alpha] < 0.05  # about zero: the family says nothing about alpha
    assert rel[i_beta] > 1.0  # more than the prior's information about beta
    assert len(pooled.floored) >= 1
    # the same seen from step 2's observation form: A' e_alpha ~ 0
    a, _ = observation_form(pooled)
    e_alpha = np.eye(len(base.names))[i_alpha] * base.sd[i_alpha]
    e_beta = np.eye(len(base.names))[i_beta] * base.sd[i_beta]
    assert np.linalg.norm(a.T @ e_alpha) < 0.25 * np.linalg.norm(a.T @ e_beta)


# --- family covariates: the population mean depends on a family-level column ---


def test_family_covariate_reads_derives_and_refuses_a_varying_column():
    from hiscale.population import MISSING_LEVEL, family_covariate

    a = simulate_family("a", seed=1).assign(metric="train_loss", dataset="web")
    b = simulate_family("b", seed=2).assign(metric="val_loss", dataset="")
    c = load_curves(pd.concat([a, b]))
    assert family_covariate(c, "metric_kind") == {"a": "train", "b": "eval"}
    assert family_covariate(c, "dataset") == {"a": "web", "b": MISSING_LEVEL}
    with pytest.raises(ValueError, match="no column 'tokenizer'"):
        family_covariate(c, "tokenizer")
    mixed = a.copy()
    mixed.loc[mixed.index[-1], "dataset"] = "books"
    with pytest.raises(ValueError, match=r"'dataset': family 'a' has 'web' in row \d+ and 'books'"):
        family_covariate(load_curves(mixed), "dataset")


def _level_units(rng, shifts, per_level=4, precision=400.0):
    """Units whose likelihoods pin z_f = m0 + shift_level + small noise (observation form)."""
    base = flat_prior("chinchilla")
    k = len(base.loc)
    a_list, y_list, idx, z_list = [], [], [], []
    for i, shift in enumerate(shifts):
        for _ in range(per_level):
            z = base.loc + shift + rng.normal(0, 0.05, k)
            a = np.sqrt(precision) * np.eye(k)
            a_list.append(a)
            y_list.append(a.T @ (z - base.loc))
            idx.append(i)
            z_list.append(z)
    return base, np.stack(a_list), np.stack(y_list), np.array(idx), np.stack(z_list)


@pytest.mark.slow  # 1000 + 1000 NUTS draws of a population with level effects: ~70 s
def test_level_effects_recover_the_means_of_their_levels():
    """Known truth: two levels 1.6 apart in u_a; the predictive sits at each level's mean."""
    from hiscale.population import sample_population

    rng = np.random.default_rng(0)
    shift = np.array([0.8, 0.0, 0.0, 0.0])
    base, a, y, idx, z = _level_units(rng, [shift, -shift])
    # 1000 + 1000 draws: with 500 + 500 this AMD EPYC gave r_hat 1.13 (another CPU 1.05-)
    small = SamplerSettings(num_warmup=1000, num_samples=1000, target_accept_prob=0.95)
    out = {}
    for level in ("hi", "lo", "new"):
        _post, rhat, _div, z_new, eff = sample_population(
            y, a, base.loc, base.sd, sampler=small, seed=1, level_index=idx,
            levels=["hi", "lo"], level=level,
        )  # fmt: skip
        assert rhat < 1.05 and eff.shape == (z_new.shape[0], 2, 4)
        out[level] = z_new
    for level, i in (("hi", 0), ("lo", 1)):
        own = z[idx == i, 0].mean()
        assert abs(out[level][:, 0].mean() - own) < 0.25, (level, own)
    # an unseen level: between the two, and wider than either seen level
    assert abs(out["new"][:, 0].mean() - z[:, 0].mean()) < 0.4
    assert out["new"][:, 0].std() > 1.5 * max(out["hi"][:, 0].std(), out["lo"][:, 0].std())
    # without the covariate one population spans both levels: wider still than a level
    _, _, _, z_pool, eff = sample_population(y, a, base.loc, base.sd, sampler=small, seed=1)
    assert eff is None
    assert z_pool[:, 0].std() > 1.5 * out["hi"][:, 0].std()


def test_population_model_likelihood_with_levels_matches_scipy():
    """The y-site log density equals a sum of SciPy MVN densities with shifted means."""
    import jax.numpy as jnp
    from numpyro import handlers
    from scipy.stats import multivariate_normal

    from hiscale.population import _population_model

    rng = np.random.default_rng(7)
    base = flat_prior("chinchilla")
    k = len(base.loc)
    a = rng.normal(0, 1, (5, k, k))
    y = rng.normal(0, 1, (5, k))
    idx = np.array([0, 1, 1, 2, 0])
    mu = base.loc + rng.normal(0, 0.3, k)
    tau = rng.uniform(0.2, 0.8, k)
    l_omega = np.linalg.cholesky(_random_spd(rng, k, np.ones(k)) + np.eye(k) * 0.5)
    l_omega = l_omega / np.linalg.norm(l_omega, axis=1, keepdims=True)  # unit-diagonal Omega
    tau_c = rng.uniform(0.1, 0.5, k)
    u = rng.normal(0, 1, (3, k))
    values = {"mu": mu, "tau": tau, "L_omega": l_omega, "tau_cov": tau_c, "u_cov": u}
    model = handlers.substitute(_population_model, {n: jnp.asarray(v) for n, v in values.items()})
    tr = handlers.trace(model).get_trace(
        jnp.asarray(y), jnp.asarray(a), jnp.asarray(base.loc), jnp.asarray(base.sd),
        jnp.asarray(idx), 3,
    )  # fmt: skip
    ours = float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum())
    sigma = (tau[:, None] * l_omega) @ (tau[:, None] * l_omega).T
    ref = sum(
        multivariate_normal(
            a[f].T @ (mu + tau_c * u[idx[f]] - base.loc), a[f].T @ sigma @ a[f] + np.eye(k)
        ).logpdf(y[f])
        for f in range(5)
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_an_unconverged_population_is_flagged(small_prior):
    """Step 2 run far too short (seeded, so always the same chains): a PriorWarning says so."""
    from hiscale.priors.prior import PriorWarning

    c = load_curves(pd.concat(_families(3)))  # small_prior's families: step 1 from the cache
    short = SamplerSettings(num_warmup=10, num_samples=10, target_accept_prob=0.95)
    with pytest.warns(PriorWarning, match=r"step-2 sampler did not converge \(r_hat"):
        build_prior(c, name="short", sampler=SMALL, options=FitOptions(), exclude=["fam2"],
                    population_sampler=short)  # fmt: skip
