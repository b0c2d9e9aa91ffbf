"""MAP and NUTS for the family model.

* :func:`map_estimate`: BFGS on the unconstrained potential, jitted once per
  shape bucket (the data are arguments, not constants).
* :func:`run_nuts`: NUTS started at the MAP (the guard against the floor->0
  mode, LESSONS.md point 3), a dense mass matrix over the global parameters,
  ``jit_model_args`` so one compiled kernel serves every cell of a bucket.

Settings: :class:`hiscale.infer.settings.SamplerSettings`; the verdict on the
draws: :func:`hiscale.infer.diagnostics.diagnose`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc import hmc
from numpyro.infer.util import constrain_fn, potential_energy

from hiscale.infer.settings import SamplerSettings

__all__ = ["MAP_BOUNDS", "init_params", "map_estimate", "run_nuts"]


def init_params(n_law: int, log_scale_loc: float) -> dict[str, jnp.ndarray]:
    """Unconstrained starting point: prior centre of every site."""
    return {
        "xi": jnp.zeros(n_law),
        "log_scale": jnp.asarray(log_scale_loc, dtype=float),
        "log_sigma_run": jnp.asarray(np.log(0.01)),
        "log_sigma_obs": jnp.asarray(np.log(0.005)),
    }


@cache
def _value_and_grad(model: Callable) -> Callable:
    @jax.jit
    def vg(params, kwargs):
        return jax.value_and_grad(lambda p: potential_energy(model, (), kwargs, p))(params)

    return vg


#: Box for the MAP search in the unconstrained space (prior sd units for ``xi``).
MAP_BOUNDS: dict[str, tuple[float, float]] = {
    "xi": (-8.0, 8.0),
    "log_scale": (-10.0, 10.0),
    "log_sigma_run": (-15.0, 2.0),
    "log_sigma_obs": (-15.0, 2.0),
}


def map_estimate(model: Callable, kwargs: dict[str, Any], start: dict) -> tuple[dict, float, bool]:
    """MAP in the unconstrained space: L-BFGS-B in a generous box.

    The box (:data:`MAP_BOUNDS`, ``log_scale`` relative to its start) keeps
    the optimiser out of overflow regions; BFGS without it walked to
    ``sigma_run = exp(1000)`` on the misfitting family. Returns
    ``(params, potential, improved)`` and falls back to ``start`` when the
    optimum is not finite or not better.
    """
    from scipy.optimize import minimize as sp_minimize

    vg = _value_and_grad(model)
    flat0, unravel = ravel_pytree(start)
    lo, hi = [], []
    for name in sorted(start):  # ravel_pytree flattens dicts in sorted-key order
        size = int(np.size(start[name]))
        a, b = MAP_BOUNDS.get(name, (-np.inf, np.inf))
        if name == "log_scale":
            a, b = float(start[name]) + a, float(start[name]) + b
        lo += [a] * size
        hi += [b] * size

    def f(v):
        val, g = vg(unravel(jnp.asarray(v)), kwargs)
        gflat, _ = ravel_pytree(g)
        val = float(val)
        if not np.isfinite(val):
            return 1e300, np.zeros_like(v)
        return val, np.asarray(gflat, dtype=float)

    f0, _ = f(np.asarray(flat0))
    res = sp_minimize(
        f,
        np.asarray(flat0),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo, hi, strict=True)),
        options={"maxiter": 1000},
    )
    f1, _ = f(res.x)
    if np.all(np.isfinite(res.x)) and np.isfinite(f1) and f1 <= f0:
        return unravel(jnp.asarray(res.x)), f1, True
    return start, f0, False


@cache
def _chain_runner(model: Callable, settings: SamplerSettings) -> Callable:
    """One jitted NUTS chain (warm-up + sampling) with the data as arguments.

    NumPyro's ``MCMC`` re-traces its collection loop on every ``run``; a
    backtest runs hundreds of fits of the same shapes, so hiscale drives the
    functional NUTS kernel itself: compiled once per (model, settings, shape).
    """

    def potential_gen(*args, **kwargs):
        return lambda params: potential_energy(model, args, kwargs, params)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    def run_chain(key, init, kwargs):
        state = init_kernel(
            init,
            num_warmup=settings.num_warmup,
            step_size=0.05,
            find_heuristic_step_size=True,
            target_accept_prob=settings.target_accept_prob,
            dense_mass=settings.dense_global,
            max_tree_depth=settings.max_tree_depth,
            model_kwargs=kwargs,
            rng_key=key,
        )

        def step(st, _):
            st = sample_kernel(st, model_kwargs=kwargs)
            return st, (st.z, st.diverging, st.num_steps)

        state, _ = lax.scan(step, state, None, length=settings.num_warmup)
        _, (z, div, nsteps) = lax.scan(step, state, None, length=settings.num_samples)
        return z, div, nsteps

    if settings.chain_method == "parallel" and jax.local_device_count() >= settings.num_chains:
        return jax.pmap(run_chain, in_axes=(0, 0, None))
    return jax.jit(jax.vmap(run_chain, in_axes=(0, 0, None)))


@cache
def _constrainer(model: Callable) -> Callable:
    @jax.jit
    def constrain(z, kwargs):
        return jax.vmap(lambda zi: constrain_fn(model, (), kwargs, zi, return_deterministic=True))(
            z
        )

    return constrain


def run_nuts(
    model: Callable,
    kwargs: dict[str, Any],
    *,
    rng_key: jax.Array,
    settings: SamplerSettings,
    init: dict[str, jnp.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NUTS chains from ``init`` (plus small per-chain jitter).

    Returns
    -------
    samples : dict
        Constrained sites and deterministics, ``(chain, draw, ...)``.
    extra : dict
        ``diverging`` and ``num_steps``, ``(chain, draw)``.
    """
    k_jit, k_run = jax.random.split(rng_key)
    c = settings.num_chains
    flat, unravel = ravel_pytree(init)
    noise = settings.init_jitter * jax.random.normal(k_jit, (c, flat.shape[0]))
    inits = jax.vmap(unravel)(flat[None, :] + noise)
    keys = jax.random.split(k_run, c)
    z, div, nsteps = _chain_runner(model, settings)(keys, inits, kwargs)
    n = settings.num_samples
    zflat = jax.tree.map(lambda a: a.reshape(c * n, *a.shape[2:]), z)
    cons = _constrainer(model)(zflat, kwargs)
    samples = {k: np.asarray(v).reshape(c, n, *v.shape[1:]) for k, v in cons.items()}
    return samples, {"diverging": np.asarray(div), "num_steps": np.asarray(nsteps)}
