"""Scaling-law forms (hiscale.laws): known values, conversions, JAX transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hiscale.laws import CURVE_LAWS, D0, LAWS, N0, Law, get_law, paper_law, share_to_paper

# tolerances valid in float32 as well as float64
RTOL = 1e-5

THETA = {"u_a": 0.3, "u_b": -0.4, "log_alpha": np.log(0.35), "log_beta": np.log(0.28)}
N = np.array([1e7, 3e8, 1e9, 7e10])
D = np.array([2e9, 1e10, 1e11, 1.5e12])


def share_loss_numpy(n, d, theta, gamma=0.0):
    """The share-form law written out by hand with numpy."""
    w = np.exp([0.0, theta["u_a"], theta["u_b"]])
    e, a, b = w / w.sum()
    s = np.exp(theta["log_scale"])
    alpha, beta = np.exp(theta["log_alpha"]), np.exp(theta["log_beta"])
    x, y = n / N0, d / D0
    return s * (e + a * x**-alpha + b * y**-beta * x**gamma)


# --- paper form ----------------------------------------------------------------------


def test_paper_law_exact_value():
    # e = 0 -> 1; exp(a) / N^alpha = 1000 / (1e9)^(1/3) = 1; exp(b) / D^beta = 1e4 / 1e4 = 1
    out = paper_law(1e9, 1e8, np.log(1000.0), np.log(1e4), 0.0, 1 / 3, 0.5)
    assert out == pytest.approx(3.0, rel=1e-12)


def test_paper_law_known_values_numpy():
    a, b, e, alpha, beta = 6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596
    expected = np.exp(e) + np.exp(a) * N ** (-alpha) + np.exp(b) * D ** (-beta)
    out = paper_law(N, D, a, b, e, alpha, beta)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    # by hand: 1e9^0.35266 = 10^3.17394 = 1492.4 and 1e11^0.35266 = 10^3.87926 = 7573.6
    assert out[2] == pytest.approx(1.86926 + 520.40 / 1492.4 + 1487.7 / 7573.6, rel=1e-4)


def test_paper_law_broadcasts():
    out = paper_law(N[:, None], D[None, :], 6.0, 7.0, 0.5, 0.3, 0.3)
    assert out.shape == (4, 4)
    assert np.all(np.diff(out, axis=0) < 0) and np.all(np.diff(out, axis=1) < 0)


def test_paper_law_jit_vmap_grad():
    args = (6.0, 7.0, 0.5, 0.34, 0.3)
    ref = paper_law(N, D, *args)
    out = jax.jit(paper_law)(jnp.asarray(N), jnp.asarray(D), *args)
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(out, ref, rtol=RTOL)
    # vmap over a batch of exponents
    alphas = jnp.array([0.2, 0.34, 0.5])
    batch = jax.vmap(lambda al: paper_law(jnp.asarray(N), jnp.asarray(D), 6.0, 7.0, 0.5, al, 0.3))(
        alphas
    )
    assert batch.shape == (3, 4)
    np.testing.assert_allclose(batch[1], ref, rtol=RTOL)
    # gradient w.r.t. all five parameters, checked against the analytic one for alpha
    grads = jax.grad(lambda p: paper_law(jnp.asarray(N), jnp.asarray(D), *p).sum())(jnp.array(args))
    assert np.all(np.isfinite(grads))
    d_alpha = -(np.exp(6.0) * N ** (-0.34) * np.log(N)).sum()
    assert float(grads[3]) == pytest.approx(d_alpha, rel=RTOL)
    d_e = len(N) * np.exp(0.5)
    assert float(grads[2]) == pytest.approx(d_e, rel=RTOL)


# --- share form --------------------------------------------------------------------------


def test_share_law_reference_point():
    """Equal shares at (N0, D0): the loss is the scale itself."""
    theta = {"u_a": 0.0, "u_b": 0.0, "log_alpha": 0.0, "log_beta": 0.0, "log_scale": np.log(3.0)}
    for law in LAWS.values():
        assert float(law.loss(N0, D0, theta)) == pytest.approx(3.0, rel=RTOL)
    # (N0 e, D0): e + a e^-1 + b = (1 + e^-1 + 1) / 3 of the scale (alpha = 1)
    value = float(LAWS["chinchilla"].loss(N0 * np.e, D0, theta))
    assert value == pytest.approx(2 + np.exp(-1), rel=RTOL)


@pytest.mark.parametrize("log_scale", [np.log(2.5), 0.0])
def test_chinchilla_known_values(log_scale):
    theta = {**THETA, "log_scale": log_scale}
    out = LAWS["chinchilla"].loss(N, D, theta)
    np.testing.assert_allclose(out, share_loss_numpy(N, D, theta), rtol=RTOL)
    log_out = LAWS["chinchilla"].log_loss(np.log(N / N0), np.log(D / D0), theta)
    expected = np.log(share_loss_numpy(N, D, theta))
    np.testing.assert_allclose(log_out, expected, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("gamma", [-0.2, 0.0, 0.15])
def test_chinchilla_nd_known_values(gamma):
    theta = {**THETA, "log_scale": np.log(2.5), "gamma": gamma}
    out = LAWS["chinchilla-nd"].loss(N, D, theta)
    np.testing.assert_allclose(out, share_loss_numpy(N, D, theta, gamma), rtol=RTOL)


def test_chinchilla_nd_without_gamma_is_chinchilla():
    theta = {**THETA, "log_scale": 1.0}
    np.testing.assert_allclose(
        LAWS["chinchilla-nd"].loss(N, D, theta), LAWS["chinchilla"].loss(N, D, theta), rtol=RTOL
    )


def test_chinchilla_ignores_gamma():
    """The separable law has g = 1 whatever the theta mapping carries."""
    theta = {**THETA, "log_scale": 1.0}
    with_gamma = {**theta, "gamma": 0.5}
    np.testing.assert_allclose(
        LAWS["chinchilla"].loss(N, D, with_gamma), LAWS["chinchilla"].loss(N, D, theta), rtol=RTOL
    )


def test_log_loss_is_stable_for_extreme_terms():
    """log-sum-exp form: no overflow when one term dominates by hundreds of e-folds."""
    theta = {"u_a": 300.0, "u_b": -300.0, "log_alpha": 0.0, "log_beta": 0.0, "log_scale": 0.0}
    out = LAWS["chinchilla"].log_loss(jnp.array([-5.0, 0.0, 5.0]), jnp.zeros(3), theta)
    assert np.all(np.isfinite(out))


def test_share_to_paper_matches_share_form():
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = {
            "u_a": rng.normal(),
            "u_b": rng.normal(),
            "log_alpha": np.log(rng.uniform(0.1, 0.8)),
            "log_beta": np.log(rng.uniform(0.1, 0.8)),
            "log_scale": rng.normal(1.0, 0.3),
        }
        p = share_to_paper(theta)
        assert set(p) == {"a", "b", "e", "alpha", "beta"}
        np.testing.assert_allclose(
            paper_law(N, D, p["a"], p["b"], p["e"], p["alpha"], p["beta"]),
            LAWS["chinchilla"].loss(N, D, theta),
            rtol=RTOL,
        )


def test_share_to_paper_vectorised():
    theta = {
        "u_a": np.array([0.0, 0.5]),
        "u_b": np.array([0.0, -0.5]),
        "log_alpha": np.log([0.3, 0.4]),
        "log_beta": np.log([0.3, 0.2]),
        "log_scale": np.array([1.0, 0.8]),
    }
    p = share_to_paper(theta)
    assert p["a"].shape == (2,)
    # equal shares: e = log_scale - ln 3
    assert p["e"][0] == pytest.approx(1.0 - np.log(3.0))
    assert p["a"][0] == pytest.approx(1.0 - np.log(3.0) + 0.3 * np.log(N0))


def test_share_law_jit_vmap_grad():
    law = LAWS["chinchilla-nd"]
    theta = {
        "u_a": jnp.array(0.3),
        "u_b": jnp.array(-0.4),
        "log_alpha": jnp.log(0.35),
        "log_beta": jnp.log(0.28),
        "log_scale": jnp.array(0.9),
        "gamma": jnp.array(0.1),
    }
    x = jnp.log(jnp.asarray(N) / N0)
    y = jnp.log(jnp.asarray(D) / D0)
    ref = law.log_loss(x, y, theta)
    np.testing.assert_allclose(jax.jit(law.log_loss)(x, y, theta), ref, rtol=RTOL)
    # vmap over posterior draws of every parameter
    draws = {k: jnp.stack([v, v + 0.01, v - 0.01]) for k, v in theta.items()}
    batch = jax.vmap(law.log_loss, in_axes=(None, None, 0))(x, y, draws)
    assert batch.shape == (3, 4)
    np.testing.assert_allclose(batch[0], ref, rtol=RTOL)
    # broadcasting draws against rows without vmap
    bcast = law.log_loss(x, y, {k: v[:, None] for k, v in draws.items()})
    np.testing.assert_allclose(bcast, batch, rtol=RTOL)
    grads = jax.grad(lambda t: law.log_loss(x, y, t).sum())(theta)
    assert set(grads) == set(theta)
    assert all(np.isfinite(float(g)) for g in grads.values())
    # d ln L / d log_scale = 1 per row
    assert float(grads["log_scale"]) == pytest.approx(4.0, rel=RTOL)


def test_get_law():
    assert get_law("chinchilla") is LAWS["chinchilla"]
    law = LAWS["chinchilla-nd"]
    assert get_law(law) is law
    assert isinstance(law, Law) and "gamma" in law.params
    with pytest.raises(ValueError, match="unknown law 'kaplan'; known: chinchilla, chinchilla-nd"):
        get_law("kaplan")
    assert get_law("momentum") is CURVE_LAWS["momentum"]
    with pytest.raises(ValueError, match=r"curve laws .*: momentum, h-term, h-rel"):
        get_law("kaplan")


# --- curve laws (schedule covariates) ----------------------------------------------------

CURVE_THETA = {
    **THETA, "log_scale": np.log(2.5), "u_f": np.log(0.08), "r_f": 0.13, "v_f": -1.2
}  # fmt: skip
S1 = np.array([1.5e9, 6e9, 7e10, 8e11])
ANNEAL = np.array([0.0, 0.3, 0.9, 0.55])
H = np.array([1.0, 0.6, 0.1, 0.35])


def curve_loss_numpy(n, d_term, bonus, theta):
    """s (e + a (N/N0)^-alpha + b (d_term/D0)^-beta - f bonus (N/N0)^r), f = e exp(u_f)."""
    w = np.exp([0.0, theta["u_a"], theta["u_b"]])
    e, a, b = w / w.sum()
    f = e * np.exp(theta["u_f"])
    alpha, beta = np.exp(theta["log_alpha"]), np.exp(theta["log_beta"])
    x = n / N0
    return np.exp(theta["log_scale"]) * (
        e + a * x**-alpha + b * (d_term / D0) ** -beta - f * bonus * x ** theta["r_f"]
    )


def test_momentum_known_values():
    law = CURVE_LAWS["momentum"]
    out = law.loss(N, D, CURVE_THETA, {"s1": S1, "anneal": ANNEAL})
    np.testing.assert_allclose(out, curve_loss_numpy(N, S1, ANNEAL, CURVE_THETA), rtol=RTOL)


def test_h_term_known_values():
    law = CURVE_LAWS["h-term"]
    out = law.loss(N, D, CURVE_THETA, {"lr_mult": H})
    np.testing.assert_allclose(out, curve_loss_numpy(N, D, 1 - H, CURVE_THETA), rtol=RTOL)


def test_h_rel_known_values_and_bound():
    """h-rel against numpy: s (e + R (1 - (1 - h) q)), q = 1 / (1 + exp(-(v_f + r_f x)))."""
    w = np.exp([0.0, CURVE_THETA["u_a"], CURVE_THETA["u_b"]])
    e, a, b = w / w.sum()
    alpha, beta = np.exp(CURVE_THETA["log_alpha"]), np.exp(CURVE_THETA["log_beta"])
    x = np.log(N / N0)
    q = 1.0 / (1.0 + np.exp(-(CURVE_THETA["v_f"] + CURVE_THETA["r_f"] * x)))
    r = a * (N / N0) ** -alpha + b * (D / D0) ** -beta
    ref = 2.5 * (e + r * (1 - (1 - H) * q))
    out = CURVE_LAWS["h-rel"].loss(N, D, CURVE_THETA, {"lr_mult": H})
    np.testing.assert_allclose(out, ref, rtol=RTOL)
    # the bonus cannot take the loss below s e, at any size and size exponent
    theta = {**CURVE_THETA, "v_f": 5.0, "r_f": 2.0}
    big = CURVE_LAWS["h-rel"].loss(np.full(4, 1e15), D, theta, {"lr_mult": np.zeros(4)})
    assert np.all(np.asarray(big) > 2.5 * e)


def test_curve_laws_reduce_to_chinchilla_at_constant_lr():
    """Constant LR, no warmup: S1 = D, anneal = 0, h = 1 -> the separable law."""
    ref = LAWS["chinchilla"].loss(N, D, CURVE_THETA)
    cov = {"s1": D, "anneal": np.zeros(4), "lr_mult": np.ones(4)}
    for law in CURVE_LAWS.values():
        np.testing.assert_allclose(law.loss(N, D, CURVE_THETA, cov), ref, rtol=RTOL)


def test_end_of_run_laws_ignore_covariates():
    theta = {**THETA, "log_scale": 1.0}
    cov = {"s1": S1, "anneal": ANNEAL, "lr_mult": H}
    for law in LAWS.values():
        assert law.covariates == ()
        np.testing.assert_array_equal(law.loss(N, D, theta, cov), law.loss(N, D, theta))


def test_curve_law_without_covariates_is_an_error():
    with pytest.raises(ValueError, match=r"law 'momentum' needs .*missing \['anneal'\]"):
        CURVE_LAWS["momentum"].loss(N, D, CURVE_THETA, {"s1": S1})
    with pytest.raises(ValueError, match="law 'h-term' needs"):
        CURVE_LAWS["h-term"].loss(N, D, CURVE_THETA)


def test_curve_laws_are_exact_when_terms_dominate_by_hundreds_of_e_folds():
    """The annealed form (scaled by one shift per call) against a log-space numpy
    reference: no overflow when a share dominates by e^300 or an exponent is large."""
    x, y = np.log(N / N0), np.log(D / D0)
    cases = [(300.0, -300.0, 0.0), (-300.0, 300.0, np.log(0.3)), (5.0, 2.0, 4.0)]
    for u_a, u_b, log_alpha in cases:
        theta = {**CURVE_THETA, "u_a": u_a, "u_b": u_b, "log_alpha": log_alpha}
        ln_w = np.array([0.0, u_a, u_b]) - np.logaddexp.reduce([0.0, u_a, u_b])
        terms = np.stack([
            np.full_like(x, ln_w[0]),
            ln_w[1] - np.exp(log_alpha) * x,
            ln_w[2] - np.exp(theta["log_beta"]) * y,
        ])  # fmt: skip
        ln_p = np.logaddexp.reduce(terms, axis=0)
        q_over_p = (1 - H) * np.exp(ln_w[0] + theta["u_f"] + theta["r_f"] * x - ln_p)
        ref = theta["log_scale"] + ln_p + np.log1p(-np.minimum(q_over_p, 0.999))
        out = CURVE_LAWS["h-term"].log_loss(x, y, theta, {"lr_mult": H})
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-12)
        g = jax.grad(lambda t: CURVE_LAWS["h-term"].log_loss(x, y, t, {"lr_mult": H}).sum())(
            {k: jnp.asarray(v, dtype=float) for k, v in theta.items()}
        )
        assert all(np.isfinite(float(v)) for v in g.values())


def test_curve_law_bonus_is_capped():
    """An absurd annealing share keeps L > 0 (capped at 99.9% of the other terms)."""
    theta = {**CURVE_THETA, "u_f": 10.0}
    law = CURVE_LAWS["h-term"]
    out = law.log_loss(np.log(N / N0), np.log(D / D0), theta, {"lr_mult": H})
    assert np.all(np.isfinite(out))
    no_bonus = LAWS["chinchilla"].log_loss(np.log(N / N0), np.log(D / D0), theta)
    np.testing.assert_allclose(out[1:], no_bonus[1:] + np.log(1e-3), rtol=1e-6)


def test_curve_law_jit_vmap_grad():
    law = CURVE_LAWS["momentum"]
    theta = {k: jnp.asarray(v, dtype=float) for k, v in CURVE_THETA.items()}
    x, y = jnp.log(jnp.asarray(N) / N0), jnp.log(jnp.asarray(D) / D0)
    cov = {"s1": jnp.asarray(S1), "anneal": jnp.asarray(ANNEAL)}
    ref = law.log_loss(x, y, theta, cov)
    np.testing.assert_allclose(jax.jit(law.log_loss)(x, y, theta, cov), ref, rtol=RTOL)
    draws = {k: jnp.stack([v, v + 0.01]) for k, v in theta.items()}
    batch = jax.vmap(law.log_loss, in_axes=(None, None, 0, None))(x, y, draws, cov)
    np.testing.assert_allclose(batch[0], ref, rtol=RTOL)
    grads = jax.grad(lambda t: law.log_loss(x, y, t, cov).sum())(theta)
    assert set(grads) == set(theta) and all(np.isfinite(float(g)) for g in grads.values())
    # the bonus lowers the loss: d ln L / d u_f < 0 where anneal > 0, 0 where anneal = 0
    g_rows = jax.vmap(
        jax.grad(lambda uf, i: law.log_loss(x, y, {**theta, "u_f": uf}, cov)[i]), (None, 0)
    )(theta["u_f"], jnp.arange(4))
    assert float(g_rows[0]) == 0.0 and np.all(np.asarray(g_rows[1:]) < 0)
