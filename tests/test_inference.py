"""Sampler diagnostics and starting points, checked against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from engine_sim import simulate_family
from numpyro.diagnostics import split_gelman_rubin
from numpyro.infer.util import constrain_fn
from scipy import stats

from hiscale.infer.diagnostics import diagnose
from hiscale.infer.nuts import (
    MAP_BOUNDS,
    dispersed_inits,
    init_params,
    jittered_inits,
    map_estimate,
    paper_start,
    run_nuts,
)
from hiscale.infer.settings import THRESHOLDS, SamplerSettings
from hiscale.laws import D0, LAWS, N0
from hiscale.modeling.design import make_design
from hiscale.modeling.family import make_family_model, prior_arrays
from hiscale.modeling.least_squares import fit_paper
from hiscale.priors.prior import flat_prior


def _rank_rhat_reference(draws):
    """Rank-normalised split r̂ of Vehtari et al. (2021), eqs. 4-6 and section 4.

    Written from the paper with scipy: split every chain in half, replace the
    pooled draws by normal scores of their average ranks, take the classic r̂;
    repeat on the folded draws |x - median|; report the larger.
    """
    draws = np.asarray(draws, dtype=float)
    half = draws.shape[1] // 2
    split = np.concatenate([draws[:, :half], draws[:, -half:]], axis=0)

    def z_scale(a):
        r = stats.rankdata(a, method="average").reshape(a.shape)
        return stats.norm.ppf((r - 0.375) / (a.size + 0.25))

    def classic(a):
        n = a.shape[1]
        w = a.var(axis=1, ddof=1).mean()
        b = n * a.mean(axis=1).var(ddof=1)
        return np.sqrt(((n - 1) / n * w + b / n) / w)

    bulk = classic(z_scale(split))
    tail = classic(z_scale(np.abs(split - np.median(split))))
    return max(bulk, tail)


def _diag(xi, *, energy=None, num_steps=7):
    c, n = xi.shape[:2]
    rng = np.random.default_rng(1)
    return diagnose(
        {"xi": xi},
        diverging=np.zeros((c, n), bool),
        num_steps=np.full((c, n), num_steps),
        max_tree_depth=8,
        energy=rng.standard_normal((c, n)) if energy is None else energy,
    )


@pytest.mark.parametrize("case", ["shifted", "wider", "iid"])
def test_rank_rhat_matches_vehtari_reference(case):
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((4, 1000))
    if case == "shifted":
        draws[0] += 0.5
    elif case == "wider":
        draws[0] *= 2.0
    d = _diag(draws[..., None])
    np.testing.assert_allclose(d["rhat_max"], _rank_rhat_reference(draws), rtol=1e-10)
    assert d["flagged"] == (case != "iid"), d["reasons"]


def test_rank_rhat_sees_a_chain_with_a_different_spread():
    """Same centre, one chain twice as wide: the classic split r̂ misses it."""
    rng = np.random.default_rng(3)
    draws = rng.standard_normal((2, 2000))
    draws[1] *= 2.0
    assert float(split_gelman_rubin(draws[..., None])[0]) < THRESHOLDS["rhat_max"]
    d = _diag(draws[..., None])
    assert d["rhat_max"] > THRESHOLDS["rhat_max"]
    assert "r_hat" in d["reasons"] and "xi[0]" in d["reasons"]


def test_tail_ess_is_checked_too():
    """The top 5% of the draws come in one block: the tail is explored once."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(4000)
    top = x > np.quantile(x, 0.95)
    x = np.concatenate([x[~top][:1900], x[top], x[~top][1900:]]).reshape(2, 2000)
    d = _diag(x[..., None])
    assert d["ess_tail_min"] < THRESHOLDS["ess_min"]
    assert "tail ESS" in d["reasons"]


def test_bfmi_of_an_autocorrelated_energy_is_flagged():
    """AR(1) energy with lag-1 correlation rho: E-BFMI -> 2 (1 - rho)."""
    rng = np.random.default_rng(0)
    n, rho = 40_000, 0.9
    e = np.zeros((2, n))
    eps = rng.standard_normal((2, n))
    for i in range(1, n):
        e[:, i] = rho * e[:, i - 1] + np.sqrt(1 - rho**2) * eps[:, i]
    e[1] = rng.standard_normal(n)  # the second chain is fine: E-BFMI ~ 2
    xi = rng.standard_normal((2, n, 1))
    d = _diag(xi, energy=e)
    definition = np.sum(np.diff(e[0]) ** 2) / np.sum((e[0] - e[0].mean()) ** 2)
    np.testing.assert_allclose(d["bfmi_min"], definition, rtol=1e-10)
    assert abs(d["bfmi_min"] - 2 * (1 - rho)) < 0.02
    assert d["flagged"] and "E-BFMI" in d["reasons"]
    ok = _diag(xi, energy=rng.standard_normal((2, n)))
    assert ok["bfmi_min"] > 1.9 and "E-BFMI" not in ok["reasons"]


def test_thresholds_are_the_standard_ones():
    assert THRESHOLDS["rhat_max"] <= 1.01
    assert THRESHOLDS["ess_min"] >= 100
    assert THRESHOLDS["bfmi_min"] >= 0.3
    assert THRESHOLDS["divergences"] == 0


def _family_kwargs(frame):
    design = make_design(frame)
    prior = flat_prior()
    kw = {
        **{k: jnp.asarray(v) for k, v in design.model_args().items()},
        "run_mask": jnp.arange(design.n_runs_padded) < design.n_runs,
        "prior": {
            k: jnp.asarray(v)
            for k, v in prior_arrays(prior, log_scale_loc=design.log_scale_loc).items()
        },
        "log_loss": jnp.asarray(design.log_loss),
    }
    return design, kw


def test_paper_start_reproduces_the_least_squares_curve():
    """The converted start predicts, through the model, what the paper fit predicts."""
    frame = simulate_family(seed=2)
    design, kw = _family_kwargs(frame)
    m = design.mask
    n, d, loss = N0 * np.exp(design.x[m]), D0 * np.exp(design.y[m]), np.exp(design.log_loss[m])
    start, status = paper_start(
        n,
        d,
        loss,
        names=LAWS["chinchilla"].params,
        prior=kw["prior"],
        centre=init_params(4, design.log_scale_loc),
    )
    assert status.startswith("ok")
    model = make_family_model("chinchilla")
    mu = np.asarray(constrain_fn(model, (), kw, start, return_deterministic=True)["mu"])
    expected = fit_paper(n, d, loss).predict(n, d)
    np.testing.assert_allclose(np.exp(mu[: design.n_rows]), expected, rtol=1e-8)


def test_paper_start_reports_a_failed_fit():
    _, kw = _family_kwargs(simulate_family(seed=2))
    start, status = paper_start(
        np.array([1e8, 2e8]),
        np.array([1e10, 2e10]),
        np.array([3.0, 2.9]),
        names=LAWS["chinchilla"].params,
        prior=kw["prior"],
        centre=init_params(4, 1.0),
    )
    assert start is None and "fit failed" in status


def test_dispersed_inits_start_apart_deterministically():
    _, kw = _family_kwargs(simulate_family(seed=0))
    model = make_family_model("chinchilla")
    centre = init_params(4, float(kw["prior"]["log_scale_loc"]))
    best, u, _ = map_estimate(model, kw, centre)
    other = dict(centre, xi=jnp.asarray([1.0, -1.0, 0.5, 0.5]))
    other, u2, _ = map_estimate(model, kw, other, centre=centre)
    optima = [(best, u, "a"), (other, u2, "b")]
    settings = SamplerSettings(num_chains=4)
    key = jax.random.PRNGKey(5)
    inits, labels = dispersed_inits(
        model, kw, optima=optima, centre=centre, rng_key=key, settings=settings
    )
    again, _ = dispersed_inits(
        model, kw, optima=optima, centre=centre, rng_key=key, settings=settings
    )
    flat = np.concatenate([np.asarray(inits[k]).reshape(4, -1) for k in sorted(inits)], axis=1)
    flat2 = np.concatenate([np.asarray(again[k]).reshape(4, -1) for k in sorted(again)], axis=1)
    np.testing.assert_array_equal(flat, flat2)
    first = optima[int(np.argmin([u, u2]))][0]
    for k in first:
        np.testing.assert_array_equal(np.asarray(inits[k])[0], np.asarray(first[k]))
    assert len(labels) == 4 and "Laplace" in labels[1] and "Laplace" not in labels[0]
    # every chain starts somewhere else, inside the MAP box
    dist_ = np.linalg.norm(flat[:, None, :] - flat[None, :, :], axis=-1)
    assert np.all(dist_[~np.eye(4, dtype=bool)] > 1e-3)
    assert np.all(np.abs(np.asarray(inits["xi"])) <= MAP_BOUNDS["xi"][1])


def _two_modes(sd):
    xi = numpyro.sample("xi", dist.Normal(0.0, 10.0).expand([1]).to_event(1))
    numpyro.factor(
        "modes",
        jnp.logaddexp(
            dist.Normal(-3.0, sd).log_prob(xi[0]), dist.Normal(3.0, sd).log_prob(xi[0]) - 0.01
        ),
    )


def test_dispersed_starts_let_rhat_see_a_second_mode():
    """Two separated modes: chains started at the MAP agree, dispersed ones do not."""
    kw = {"sd": jnp.asarray(0.3)}
    settings = SamplerSettings(num_warmup=200, num_samples=300)
    centre = {"xi": jnp.zeros(1)}
    optima = [
        (*map_estimate(_two_modes, kw, {"xi": jnp.asarray([s])}, centre=centre)[:2], f"from {s}")
        for s in (-1.0, 1.0)
    ]
    assert float(optima[0][0]["xi"][0]) == pytest.approx(-3.0, abs=0.01)
    assert float(optima[1][0]["xi"][0]) == pytest.approx(3.0, abs=0.01)
    key_init, key_run = jax.random.split(jax.random.PRNGKey(0))
    runs = {
        "map": jittered_inits(optima[0][0], rng_key=key_init, settings=settings),
        "dispersed": dispersed_inits(
            _two_modes, kw, optima=optima, centre=centre, rng_key=key_init, settings=settings
        )[0],
    }
    out = {}
    for name, inits in runs.items():
        samples, extra = run_nuts(_two_modes, kw, rng_key=key_run, settings=settings, init=inits)
        out[name] = diagnose(
            samples,
            diverging=extra["diverging"],
            num_steps=extra["num_steps"],
            max_tree_depth=settings.max_tree_depth,
            energy=extra["energy"],
        )
    assert not out["map"]["flagged"], out["map"]["reasons"]
    assert out["dispersed"]["flagged"]
    assert out["dispersed"]["rhat_max"] > 1.5
    assert "chains disagree" in out["dispersed"]["reasons"]


def test_numpy_unravel_matches_ravel_pytree():
    """The MAP's numpy unravel gives ravel_pytree's split, value for value."""
    from jax.flatten_util import ravel_pytree

    from hiscale.infer.nuts import _numpy_unravel

    start = init_params(5, 0.7)
    start["xi"] = jnp.asarray([0.1, -2.0, 3.5, 1e-9, 7.0])
    flat, unravel = ravel_pytree(start)
    v = np.random.default_rng(0).normal(size=flat.shape[0])
    ref = unravel(jnp.asarray(v))
    got = _numpy_unravel(start)(v)
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert got[k].shape == ref[k].shape and got[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], np.asarray(ref[k]))


def test_only_family_models_are_stored():
    """A program is stored on disk only for hiscale's family models (named by law)."""
    from hiscale.infer.nuts import _model_key

    assert _model_key(make_family_model("chinchilla")) == "family_model_chinchilla"
    assert _model_key(make_family_model("chinchilla-nd")) == "family_model_chinchilla_nd"

    def family_model(x):  # same name, another module: never stored
        numpyro.sample("x", dist.Normal(x, 1.0))

    assert _model_key(family_model) is None


_STORED_RUN = """
import json, sys
import hiscale
hiscale.configure(host_devices=2, platform="cpu")
import jax
from engine_sim import simulate_family
from hiscale.infer import nuts
from hiscale.infer.settings import SamplerSettings
if sys.argv[1] == "load":
    def refuse(*a, **k):
        raise AssertionError("traced again although the program is stored")
    jax.export.export = refuse
f = hiscale.fit(simulate_family(seed=4), prior="flat", seed=11,
                sampler=SamplerSettings(num_warmup=60, num_samples=40))
stored = sorted(p.name.split("-")[0] for p in nuts.program_cache_dir().iterdir())
print(json.dumps({"u_a": f.posterior["u_a"].tolist(), "stored": stored}))
"""


@pytest.mark.slow  # compiles the NUTS program from scratch (an empty cache): 20-100 s
def test_stored_programs_are_reused_with_the_same_draws(tmp_path):
    """A fresh process loads the stored NUTS/MAP/Hessian/constrain programs instead of
    tracing the model, and draws exactly what the process that stored them drew."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["HISCALE_JAX_CACHE"] = str(tmp_path / "jax")
    env["PYTHONPATH"] = os.pathsep.join([str(here), *sys.path])
    out = {}
    for mode in ("store", "load"):
        proc = subprocess.run(
            [sys.executable, "-c", _STORED_RUN, mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["store"]["stored"] == ["constrain", "hessian", "nuts", "value_and_grad"]
    assert out["load"]["stored"] == out["store"]["stored"]  # nothing new was traced
    np.testing.assert_array_equal(np.asarray(out["load"]["u_a"]), np.asarray(out["store"]["u_a"]))


def test_prune_programs_keeps_the_current_and_recent_generations(tmp_path):
    """Older generations and pre-generation files go; the current and newest others stay."""
    import os

    from hiscale.infer.nuts import prune_programs

    root = tmp_path / "hiscale-programs"
    gens = []
    for i in range(5):
        g = root / f"gen{i}"
        g.mkdir(parents=True)
        (g / "nuts-x.pkl").write_bytes(b"x")
        os.utime(g, (1000 + i, 1000 + i))  # gen4 is the most recent
        gens.append(g)
    (root / "nuts-legacy.pkl").write_bytes(b"old")
    current = gens[0]  # the oldest by time, but current: always kept
    removed = prune_programs(current, keep=3)
    assert sorted(p.name for p in removed) == ["gen1", "gen2", "nuts-legacy.pkl"]
    assert sorted(p.name for p in root.iterdir()) == ["gen0", "gen3", "gen4"]
    assert prune_programs(current, keep=3) == []  # nothing more to do
    assert prune_programs(tmp_path / "absent" / "gen", keep=3) == []


def test_stored_programs_live_in_their_generation(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hiscale.infer import nuts

    key = nuts._environment_key()  # computed (and cached) with the real JAX
    config = SimpleNamespace(jax_compilation_cache_dir=str(tmp_path), jax_disable_jit=False)
    monkeypatch.setattr(nuts, "jax", SimpleNamespace(config=config))
    folder = nuts.program_cache_dir()
    assert key == nuts._environment_key()
    assert folder.parent == tmp_path / "hiscale-programs"
    assert folder.name == nuts._environment_key()[:16]


def test_released_programs_free_their_memory_mappings_and_refit_identically():
    """release_compiled drops every compiled program (and the process's mappings with it);
    a fit after it loads the same programs again and draws the same numbers."""
    import hiscale
    from hiscale.infer import nuts

    if nuts.memory_map_usage() is None:
        pytest.skip("no /proc/self/maps (not Linux): the mapping count is unknown")
    smp = SamplerSettings(num_warmup=60, num_samples=40)
    first = hiscale.fit(simulate_family(seed=4), prior="flat", seed=11, sampler=smp)
    held = nuts.memory_map_usage()[0]
    assert nuts.release_if_crowded(fraction=1.1) == 0  # far from the limit: nothing dropped
    dropped = nuts.release_compiled()
    assert dropped >= 1  # at least the NUTS program of the fit above
    assert nuts.memory_map_usage()[0] < held
    again = hiscale.fit(simulate_family(seed=4), prior="flat", seed=11, sampler=smp)
    np.testing.assert_array_equal(again.posterior["u_a"], first.posterior["u_a"])
    assert nuts.release_if_crowded(fraction=0.0) >= 1  # "crowded" at any count: released


def test_one_chain_after_two_chains_of_the_same_draw_count():
    """A program traced for chains spread over two devices is not reused for one chain.

    2 x 50 and 1 x 100 draws give the constrain step arrays of one shape; it
    used to load the two-device program and fail on a one-device array.
    """
    import hiscale

    assert jax.local_device_count() >= 2  # conftest: two host devices
    data = simulate_family(seed=5)
    two = hiscale.fit(
        data, prior="flat", seed=0, sampler=SamplerSettings(num_warmup=40, num_samples=50)
    )
    one = hiscale.fit(
        data,
        prior="flat",
        seed=0,
        sampler=SamplerSettings(num_warmup=40, num_samples=100, num_chains=1),
    )
    assert two.posterior["u_a"].shape == (2, 50) and one.posterior["u_a"].shape == (1, 100)
