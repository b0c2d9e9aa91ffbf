"""MAP and NUTS for the family model.

* :func:`map_estimate`: BFGS on the unconstrained potential, jitted once per
  shape bucket (the data are arguments, not constants).
* :func:`dispersed_inits`: one starting point per chain. Chain 0 starts at
  the MAP; the others start from *different* points (the MAP found from the
  paper's least-squares fit, overdispersed draws from the Laplace
  approximation), so that r̂ can see a second mode such as floor -> 0 (which
  chains reach once the smaller models' curves are long) instead of every
  chain sharing the MAP's basin.
* :func:`run_nuts`: NUTS from those points, a dense mass matrix over the
  global parameters, data as arguments so one compiled kernel serves every
  cell of a bucket; collects ``energy`` (for E-BFMI), ``potential_energy``,
  ``num_steps``, ``diverging`` and the step size. With
  ``SamplerSettings.init_mass="laplace"`` the warm-up starts from
  :func:`laplace_inverse_mass` instead of the identity.

The jitted programs (MAP gradient, Hessian, NUTS, constrain) are traced once
per shape bucket and kept on disk (``jax.export``, see :class:`_StoredJit`):
a fresh process loads them and JAX's persistent cache answers the compilation.

Settings: :class:`hiscale.infer.settings.SamplerSettings`; the verdict on the
draws: :func:`hiscale.infer.diagnostics.diagnose`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import os
import pickle
import time
import weakref
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpyro.infer.hmc import hmc
from numpyro.infer.util import constrain_fn, potential_energy

from hiscale.infer.settings import SamplerSettings
from hiscale.priors.defaults import DEFAULT_PRIORS

__all__ = [
    "MAP_BOUNDS",
    "dispersed_inits",
    "init_params",
    "jittered_inits",
    "laplace_inverse_mass",
    "laplace_sqrt_cov",
    "map_estimate",
    "memory_map_usage",
    "paper_start",
    "program_cache_dir",
    "prune_programs",
    "release_compiled",
    "release_if_crowded",
    "run_nuts",
]


# -- traced programs kept on disk ---------------------------------------------
#
# JAX's persistent compilation cache (hiscale.configure) saves XLA's work, but a
# fresh process still traces the NumPyro model and lowers it before it can look
# the executable up: 1.5-2 s for the NUTS kernel of the family model, about as
# long as the sampling. So the jitted functions of this module keep their
# lowered program (``jax.export``) on disk, keyed by everything it depends on:
# the function and its static settings, the argument shapes and dtypes,
# hiscale's source, the JAX/jaxlib/NumPyro versions and configuration, the
# devices and XLA_FLAGS. A fresh process loads the program instead of tracing
# and compiles it, which the persistent cache answers. First and later
# processes run the same program (the exported one), hence the same numbers.


#: Generations of stored programs kept on disk (:func:`prune_programs`): the
#: current one and the most recently used others. A generation is one hiscale
#: source / JAX / device environment (:func:`_environment_key`); any edit or
#: upgrade starts a new one, whose programs the old ones can never serve.
#: Several environments can be in use at once (a 2-device process beside
#: 1-device Dask workers, tests with other flags), hence more than two.
KEEP_PROGRAM_GENERATIONS: int = 8


def program_cache_dir() -> Path | None:
    """Return the directory of hiscale's stored programs for this environment.

    It is ``hiscale-programs/<generation>`` inside JAX's compilation cache
    directory, the generation being the first 16 hex digits of
    :func:`_environment_key` (``None``, nothing stored, when JAX has no cache
    directory, e.g. after ``hiscale.configure(compile_cache=False)``).

    The files are pickles, loaded as trusted data: like JAX's own cache, the
    directory must be writable only by its user.
    """
    base = jax.config.jax_compilation_cache_dir
    if not base or jax.config.jax_disable_jit:
        return None
    return Path(base) / "hiscale-programs" / _environment_key()[:16]


def prune_programs(
    current: Path | None = None, *, keep: int = KEEP_PROGRAM_GENERATIONS
) -> list[Path]:
    """Remove stored programs no current or recent generation can use.

    Keeps ``current`` (default :func:`program_cache_dir`) and the ``keep - 1``
    other generation directories modified most recently; removes the older
    generations and files left directly in ``hiscale-programs`` by versions
    that stored programs without generations. Called when a generation stores
    its first program, so the cache does not grow with every upgrade. A
    directory that vanishes meanwhile (another process pruning) is skipped.

    Parameters
    ----------
    current : Path, optional
        The generation directory to keep.
    keep : int
        Generations kept, the current one included (>= 1).

    Returns
    -------
    list of Path
        What was removed.
    """
    import shutil

    current = current if current is not None else program_cache_dir()
    if current is None or not current.parent.is_dir():
        return []
    others = []
    removed = []
    for p in current.parent.iterdir():
        if p == current:
            continue
        if p.is_dir():
            try:
                others.append((p.stat().st_mtime, p))
            except OSError:
                continue
        elif p.suffix in (".pkl", ".tmp"):  # stored before generations existed
            p.unlink(missing_ok=True)
            removed.append(p)
    others.sort(reverse=True)
    for _, p in others[max(keep - 1, 0) :]:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


@cache
def _source_hash() -> str:
    """Hash hiscale's source (every module of the package).

    An edit retires every stored program, whatever module the traced code came
    from.
    """
    root = Path(__file__).resolve().parents[1]  # the hiscale package
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@cache
def _environment_key() -> str:
    """Return what every stored program depends on besides its function and arguments."""
    import jaxlib
    import numpyro

    devices = jax.devices()
    parts = [
        jax.__version__,
        jaxlib.__version__,
        numpyro.__version__,
        _source_hash(),
        devices[0].client.platform,
        devices[0].client.platform_version,
        [(d.id, d.platform, d.device_kind) for d in devices],
        os.environ.get("XLA_FLAGS", ""),
        sorted((k, repr(v)) for k, v in jax.config.values.items()),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _signature(args: tuple) -> tuple:
    """``(tree, types, devices)`` of ``args``: what a traced program is specific to.

    The devices each leaf is spread over count: a program traced for chains
    sharded over two devices cannot run on one (the constrain step of a
    2 x 50-draw fit and of a 1 x 100-draw fit see arrays of one shape).
    """
    leaves, tree = jax.tree.flatten(args)
    devices = tuple(len(x.sharding.device_set) if isinstance(x, jax.Array) else 1 for x in leaves)
    return tree, tuple(jax.typeof(x) for x in leaves), devices


class _StoredJit:
    """A jitted function whose traced program is kept on disk.

    One program per argument signature (:func:`program_cache_dir`), then
    compiled through JAX's cache.

    ``static`` names the function and everything baked into it (the model's
    law, the sampler settings), ``None`` for a function that is only jitted:
    only models of :mod:`hiscale.modeling.family` are stored, whose name says
    their law.
    """

    def __init__(self, jitted: Callable, static: str | None):
        self._jitted = jitted
        self._static = static
        self._ready: dict[tuple, Callable] = {}
        _STORED.add(self)

    def __call__(self, *args):
        sig = _signature(args)
        fn = self._ready.get(sig)
        if fn is None:
            release_if_crowded()  # before a new program adds its memory mappings
            t0 = time.perf_counter()
            fn = self._ready[sig] = self._prepare(args, sig)
            name = (self._static or "other").split("|", 1)[0]
            _PREPARE_SECONDS[name] = _PREPARE_SECONDS.get(name, 0.0) + time.perf_counter() - t0
        return fn(*args)

    def _path(self, sig: tuple) -> Path | None:
        folder = program_cache_dir()
        if folder is None or self._static is None:
            return None
        key = repr(
            [self._static, str(sig[0]), [str(a) for a in sig[1]], sig[2], _environment_key()]
        )
        name = self._static.split("|", 1)[0]
        return folder / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.pkl"

    def _prepare(self, args: tuple, sig: tuple) -> Callable:
        path = self._path(sig)
        if path is None:
            return self._jitted
        exported = None
        try:
            with open(path, "rb") as fh:
                exported = pickle.load(fh)
        except Exception:  # absent, stale or unreadable: trace it anew
            pass
        if exported is None:
            exported = jax.export.export(self._jitted)(*args)
            # the VJP hook is a closure (not stored; these functions are never differentiated)
            exported = dataclasses.replace(exported, _get_vjp=None)
            try:
                if not path.parent.is_dir():  # a new generation: retire the old ones
                    path.parent.mkdir(parents=True, exist_ok=True)
                    prune_programs(path.parent)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(pickle.dumps(exported))
                os.replace(tmp, path)  # atomic: a concurrent reader sees all or nothing
            except (OSError, pickle.PicklingError, TypeError, AttributeError):
                pass  # not storable (read-only cache): only slower next time
        if exported.nr_devices == 1:
            call = jax.jit(exported.call)
        else:
            mesh = Mesh(np.asarray(jax.devices()[: exported.nr_devices]), ("chain",))
            shardings = [exported.in_shardings_jax(mesh), exported.out_shardings_jax(mesh)]
            call = jax.jit(
                exported.call,
                in_shardings=jax.tree.unflatten(exported.in_tree, shardings[0])[0],
                out_shardings=jax.tree.unflatten(exported.out_tree, shardings[1]),
            )
        return call.lower(*args).compile()  # JAX's persistent cache answers this


_LOG = logging.getLogger(__name__)

#: Every :class:`_StoredJit` of this process (their compiled programs are
#: what :func:`release_compiled` drops).
_STORED: weakref.WeakSet = weakref.WeakSet()

#: Fraction of the kernel's ``vm.max_map_count`` at which a new program is
#: prepared only after :func:`release_compiled`.
MAP_HEADROOM: float = 0.5


def release_compiled() -> int:
    """Drop every compiled program this process holds; return how many of hiscale's.

    Each compiled XLA CPU executable keeps its own memory mappings (measured:
    about 1,800 per NUTS program of a family fit), and a process may hold
    only ``vm.max_map_count`` of them (65,530 by default on Linux). A long
    backtest in one process compiles a program per new padded shape and
    method, and after some 30 of them LLVM failed with "Cannot allocate
    memory" while most of the RAM was free. This clears hiscale's stored
    samplers, JAX's in-memory caches (:func:`jax.clear_caches`) and collects
    the garbage; the next fit of a shape loads its program from the disk
    caches again (same program, same numbers). Called automatically by
    :func:`release_if_crowded`.

    Returns
    -------
    int
        Compiled programs of hiscale's stored functions dropped (JAX's own
        caches are not counted).
    """
    stored = list(_STORED)
    n = sum(len(s._ready) for s in stored)
    for s in stored:
        s._ready.clear()
    jax.clear_caches()
    gc.collect()
    return n


def memory_map_usage() -> tuple[int, int] | None:
    """Return ``(memory mappings of this process, vm.max_map_count)``, or None off Linux."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            held = sum(1 for _ in fh)
        with open("/proc/sys/vm/max_map_count") as fh:
            limit = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return held, limit


def release_if_crowded(fraction: float | None = None) -> int:
    """Call :func:`release_compiled` when the process holds ``fraction`` of its mapping limit.

    ``fraction`` defaults to :data:`MAP_HEADROOM`. Logged (logger
    ``hiscale.infer.nuts``, level INFO) when it releases. Returns the number
    of programs dropped (0 when not crowded, or where the counts are
    unknown).
    """
    usage = memory_map_usage()
    fraction = MAP_HEADROOM if fraction is None else float(fraction)
    if usage is None or usage[0] < fraction * usage[1]:
        return 0
    n = release_compiled()
    after = memory_map_usage()
    _LOG.info(
        "released %d compiled programs: the process held %d of the kernel's %d memory "
        "mappings (vm.max_map_count), %s after",
        n,
        usage[0],
        usage[1],
        after[0] if after else "?",
    )
    return n


#: Seconds this process spent preparing stored functions (loading or tracing
#: their programs, compiling them), by function: :func:`preparation_seconds`.
_PREPARE_SECONDS: dict[str, float] = {}


def preparation_seconds() -> dict[str, float]:
    """Return the seconds this process spent preparing stored programs, by name.

    Loading or tracing and compiling the NUTS, MAP-gradient, Hessian and
    constrain programs: the benchmarks' split of a fit into compilation and
    sampling.
    """
    return dict(_PREPARE_SECONDS)


def _model_key(model: Callable) -> str | None:
    """Return a stable name for ``model`` if it is one of hiscale's family models."""
    if getattr(model, "__module__", None) == "hiscale.modeling.family" and getattr(
        model, "__qualname__", ""
    ).startswith("make_family_model.<locals>."):
        return model.__name__
    return None


def _stored(name: str, jitted: Callable, model: Callable, *static: Any) -> _StoredJit:
    key = _model_key(model)
    return _StoredJit(jitted, None if key is None else "|".join([name, key, *map(repr, static)]))


def init_params(n_law: int, log_scale_loc: float) -> dict[str, jnp.ndarray]:
    """Return an unconstrained starting point.

    The prior centre of the law parameters, the median log loss for the log
    loss at the data's centre, and the default priors' median noise scales
    (:data:`hiscale.priors.defaults.DEFAULT_PRIORS`).
    """
    return {
        "xi": jnp.zeros(n_law),
        "log_loss_ref": jnp.asarray(log_scale_loc, dtype=float),
        "log_sigma_run": jnp.asarray(DEFAULT_PRIORS["sigma_run"][0]),
        "log_sigma_obs": jnp.asarray(DEFAULT_PRIORS["sigma_obs"][0]),
    }


@cache
def _value_and_grad(model: Callable) -> Callable:
    @jax.jit
    def vg(params, kwargs):
        return jax.value_and_grad(lambda p: potential_energy(model, (), kwargs, p))(params)

    return _stored("value_and_grad", vg, model)


#: Box for the MAP search in the unconstrained space (prior sd units for
#: ``xi``; ``log_loss_ref`` relative to the starting point's).
MAP_BOUNDS: dict[str, tuple[float, float]] = {
    "xi": (-8.0, 8.0),
    "log_loss_ref": (-10.0, 10.0),
    "log_sigma_run": (-15.0, 2.0),
    "log_sigma_obs": (-15.0, 2.0),
    # whole-curve model: rho between 4.5e-5 and 1 - 4.5e-5 per e-fold of tokens
    "logit_rho": (-10.0, 10.0),
    # local fit with a learned scale (hiscale.modeling.local): 2e-9 to e in ln L
    "log_local_sd": (-20.0, 1.0),
}


def map_estimate(
    model: Callable, kwargs: dict[str, Any], start: dict, *, centre: dict | None = None
) -> tuple[dict, float, bool]:
    """MAP in the unconstrained space: L-BFGS-B in a generous box.

    The box (:data:`MAP_BOUNDS`, ``log_loss_ref`` relative to ``centre``, by
    default the start) keeps
    the optimiser out of overflow regions; BFGS without it walked to
    ``sigma_run = exp(1000)`` on the misfitting family. Returns
    ``(params, potential, improved)`` and falls back to ``start`` when the
    optimum is not finite or not better.
    """
    from scipy.optimize import minimize as sp_minimize

    vg = _value_and_grad(model)
    flat0, unravel = ravel_pytree(start)
    lo, hi = _lower_upper(start, centre if centre is not None else start)
    split = _numpy_unravel(start)

    def f(v):
        # numpy in and out: the optimiser's hundreds of calls pay one dispatch
        # each, not a handful of small JAX ops (same values: slicing and concatenation)
        val, g = vg(split(v), kwargs)
        gflat = np.concatenate([np.ravel(g[k]) for k in sorted(g)])
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


def _numpy_unravel(template: dict) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``ravel_pytree(template)[1]`` for float64 numpy vectors, returning numpy arrays."""
    names = sorted(template)  # ravel_pytree flattens dicts in sorted-key order
    shapes = [np.shape(template[k]) for k in names]
    for k in names:
        dtype = np.asarray(template[k]).dtype
        if dtype != np.float64:
            raise TypeError(f"MAP start {k!r} is {dtype}, not float64")
    ends = np.cumsum([int(np.prod(sh)) for sh in shapes])

    def split(v: np.ndarray) -> dict[str, np.ndarray]:
        v = np.asarray(v, dtype=np.float64)
        parts = np.split(v, ends[:-1])
        return {k: p.reshape(sh) for k, p, sh in zip(names, parts, shapes, strict=True)}

    return split


@cache
def _hessian(model: Callable) -> Callable:
    @jax.jit
    def hess(params, kwargs):
        flat, unravel = ravel_pytree(params)
        return jax.hessian(lambda v: potential_energy(model, (), kwargs, unravel(v)))(flat)

    return _stored("hessian", hess, model)


#: Smallest Hessian eigenvalue used for the Laplace draws (sd <= 2 along any
#: direction: every site's prior sd is at most 1 in the unconstrained space).
LAPLACE_MIN_EIG: float = 0.25


def laplace_sqrt_cov(model: Callable, kwargs: dict[str, Any], params: dict) -> np.ndarray:
    """Square root ``S`` (``S S^T = H^-1``) of the Laplace covariance at ``params``.

    ``H`` is the Hessian of the potential in the flattened unconstrained space
    (``ravel_pytree`` order); eigenvalues are floored at
    :data:`LAPLACE_MIN_EIG` so a flat or indefinite direction (a MAP on the box
    edge) gets a bounded spread instead of an infinite one.
    """
    h = np.asarray(_hessian(model)(params, kwargs), dtype=float)
    if not np.all(np.isfinite(h)):
        return np.eye(h.shape[0]) / np.sqrt(LAPLACE_MIN_EIG)
    w, v = np.linalg.eigh(0.5 * (h + h.T))
    return v / np.sqrt(np.maximum(w, LAPLACE_MIN_EIG))[None, :]


def laplace_inverse_mass(model: Callable, kwargs: dict[str, Any], params: dict) -> np.ndarray:
    """Laplace covariance ``S Sᵀ`` at ``params`` (:func:`laplace_sqrt_cov`), for NUTS's warm-up.

    The flattened unconstrained space in ``ravel_pytree`` order, as NumPyro's
    ``inverse_mass_matrix``; eigenvalues of the Hessian floored at
    :data:`LAPLACE_MIN_EIG`, so the matrix is positive definite and no
    direction is wider than the prior allows.
    """
    s = laplace_sqrt_cov(model, kwargs, params)
    return s @ s.T


def _lower_upper(start: dict, centre: dict) -> tuple[np.ndarray, np.ndarray]:
    """Flattened MAP box (``log_loss_ref`` relative to ``centre``)."""
    lo, hi = [], []
    for name in sorted(start):  # ravel_pytree flattens dicts in sorted-key order
        size = int(np.size(start[name]))
        a, b = MAP_BOUNDS.get(name, (-np.inf, np.inf))
        if name == "log_loss_ref":
            a, b = float(centre[name]) + a, float(centre[name]) + b
        lo += [a] * size
        hi += [b] * size
    return np.asarray(lo), np.asarray(hi)


def paper_start(
    params: np.ndarray,
    tokens: np.ndarray,
    loss: np.ndarray,
    *,
    names: tuple[str, ...],
    prior: dict[str, Any],
    centre: dict[str, jnp.ndarray],
) -> tuple[dict[str, jnp.ndarray] | None, str]:
    """Return the paper's least-squares fit as an unconstrained starting point.

    Fits :func:`hiscale.modeling.least_squares.fit_paper` (``fit_paper_single`` with one
    size) to the rows, converts ``(a, b, e, alpha, beta)`` to the share form
    at ``(N0, D0)`` (``gamma = 0``; ``u_f``, ``r_f`` at the prior centre),
    whitens with the prior (``xi = C^-1 (z - loc)``), takes ``log_loss_ref``
    from the fitted loss at the rows' centre and clips into :data:`MAP_BOUNDS`.
    Noise scales start at ``centre``. Returns ``(params or None, status)``.
    """
    from scipy.linalg import solve_triangular

    from hiscale.laws import D0, N0, paper_law
    from hiscale.modeling.least_squares import fit_paper, fit_paper_single

    params, tokens = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
    fitter = fit_paper_single if len(np.unique(params)) == 1 else fit_paper
    res = fitter(params, tokens, loss)
    if not res.ok:
        return None, f"paper least squares: {res.status}"
    p = res.params
    alpha, beta = max(p["alpha"], 1e-3), max(p["beta"], 1e-3)
    ln_e = p["e"]
    ln_a = p["a"] - alpha * np.log(N0)
    ln_b = p["b"] - beta * np.log(D0)
    values = {
        "u_a": ln_a - ln_e,
        "u_b": ln_b - ln_e,
        "log_alpha": np.log(alpha),
        "log_beta": np.log(beta),
        "gamma": 0.0,
    }
    # parameters the paper's law lacks (the curve laws' u_f, r_f) start at the prior centre
    loc = np.asarray(prior["loc"], dtype=float)
    z = np.array([values.get(n, loc[i]) for i, n in enumerate(names)], dtype=float)
    # the model's centre: mean ln(N/N0), ln(D/D0) of the rows
    n_c = N0 * np.exp(np.mean(np.log(params / N0)))
    d_c = D0 * np.exp(np.mean(np.log(tokens / D0)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ref = float(np.log(paper_law(n_c, d_c, p["a"], p["b"], p["e"], alpha, beta)))
    if not (np.all(np.isfinite(z)) and np.isfinite(ref)):
        return None, "paper least squares: non-finite share parameters"
    chol = np.asarray(prior["chol"], dtype=float)
    xi = solve_triangular(chol, z - np.asarray(prior["loc"], dtype=float), lower=True)
    c0 = float(centre["log_loss_ref"])
    lo_s, hi_s = MAP_BOUNDS["log_loss_ref"]
    start = dict(centre)
    start["xi"] = jnp.asarray(np.clip(xi, *MAP_BOUNDS["xi"]))
    start["log_loss_ref"] = jnp.asarray(np.clip(ref, c0 + lo_s, c0 + hi_s))
    return start, f"ok ({res.method})"


def dispersed_inits(
    model: Callable,
    kwargs: dict[str, Any],
    *,
    optima: list[tuple[dict, float, str]],
    centre: dict[str, jnp.ndarray],
    rng_key: jax.Array,
    settings: SamplerSettings,
) -> tuple[dict[str, jnp.ndarray], list[str]]:
    """One unconstrained starting point per chain, stacked ``(chain, ...)``.

    ``optima`` are ``(params, potential, label)`` of the MAP searches (from
    the prior centre, from the paper's least-squares fit, ...). Chain 0
    starts at the best optimum. Chain ``c >= 1`` starts at optimum ``c mod
    len(optima)`` (ordered by potential) plus an overdispersed draw from its
    Laplace approximation, ``init_overdispersion x`` its standard deviations,
    clipped into :data:`MAP_BOUNDS`. Different starting basins are what lets
    r̂ see a second mode; the draws make the chains start apart even when every
    search found the same optimum. Deterministic given ``rng_key``.

    Returns
    -------
    inits : dict
        Site -> array ``(chain, ...)``.
    labels : list of str
        How each chain was started (recorded in the fit's provenance).
    """
    order = sorted(range(len(optima)), key=lambda i: optima[i][1])
    ranked = [optima[i] for i in order]
    lo, hi = _lower_upper(ranked[0][0], centre)
    flats, labels = [], []
    keys = jax.random.split(rng_key, settings.num_chains)
    sqrt_cov: dict[int, np.ndarray] = {}
    for c in range(settings.num_chains):
        params, _, label = ranked[0] if c == 0 else ranked[c % len(ranked)]
        flat = np.asarray(ravel_pytree(params)[0], dtype=float)
        if c == 0:
            flats.append(flat)
            labels.append(label)
            continue
        j = c % len(ranked)
        if j not in sqrt_cov:
            sqrt_cov[j] = laplace_sqrt_cov(model, kwargs, params)
        eps = np.asarray(jax.random.normal(keys[c], (flat.shape[0],)), dtype=float)
        draw = flat + settings.init_overdispersion * sqrt_cov[j] @ eps
        flats.append(np.clip(draw, lo, hi))
        labels.append(f"{label} + {settings.init_overdispersion:g}x Laplace draw")
    unravel = ravel_pytree(ranked[0][0])[1]
    inits = jax.vmap(unravel)(jnp.asarray(np.stack(flats)))
    return inits, labels


@cache
def _chain_runner(model: Callable, settings: SamplerSettings) -> Callable:
    """One jitted NUTS chain (warm-up + sampling) with the data as arguments.

    NumPyro's ``MCMC`` re-traces its collection loop on every ``run``; a
    backtest runs hundreds of fits of the same shapes, so hiscale drives the
    functional NUTS kernel itself: traced once per (model, settings, shape),
    stored on disk, the chains in parallel on one device each (or vmapped).
    """

    def potential_gen(*args, **kwargs):
        return lambda params: potential_energy(model, args, kwargs, params)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    laplace = settings.init_mass == "laplace"

    def run_chain(key, init, kwargs, inv_mass):
        state = init_kernel(
            init,
            num_warmup=settings.num_warmup,
            step_size=0.05,
            # identity: NumPyro's default (None), so those programs are unchanged
            inverse_mass_matrix=inv_mass if laplace else None,
            find_heuristic_step_size=True,
            target_accept_prob=settings.target_accept_prob,
            dense_mass=settings.dense_mass,
            max_tree_depth=settings.max_tree_depth,
            model_kwargs=kwargs,
            rng_key=key,
        )

        def step(st, _):
            st = sample_kernel(st, model_kwargs=kwargs)
            return st, (
                st.z,
                {
                    "diverging": st.diverging,
                    "num_steps": st.num_steps,
                    "energy": st.energy,
                    "potential_energy": st.potential_energy,
                    "step_size": st.adapt_state.step_size,
                    "accept_prob": st.accept_prob,
                },
            )

        # one loop for warm-up and sampling (the kernel adapts while its step
        # counter is below num_warmup): one copy of the NUTS step in the
        # program, half the code to compile and to load from the cache
        n_warm = settings.num_warmup
        _, (z, extra) = lax.scan(step, state, None, length=n_warm + settings.num_samples)
        return jax.tree.map(lambda a: a[n_warm:], (z, extra))

    if settings.chain_method == "parallel" and jax.local_device_count() >= settings.num_chains:
        runner = _parallel(run_chain, settings.num_chains)
    else:
        runner = jax.jit(jax.vmap(run_chain, in_axes=(0, 0, None, None)))
    return _stored("nuts", runner, model, settings, jax.local_device_count())


def _parallel(run_chain: Callable, n: int) -> Callable:
    """Map ``run_chain`` over chains on the first ``n`` devices.

    ``jax.pmap(run_chain, in_axes=(0, 0, None))`` written out as the jitted
    ``shard_map`` that pmap is (one chain per device), so that ``jax.export``
    can store it.
    """
    mesh = Mesh(np.asarray(jax.devices()[:n]), ("chain",))

    def block(keys, init, kwargs, inv_mass):
        squeeze = lambda a: lax.squeeze(a, [0])  # noqa: E731
        out = run_chain(squeeze(keys), jax.tree.map(squeeze, init), kwargs, inv_mass)
        return jax.tree.map(lambda a: lax.expand_dims(a, [0]), out)

    spec = PartitionSpec("chain")
    split, whole = NamedSharding(mesh, spec), NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        jax.shard_map(
            block,
            mesh=mesh,
            in_specs=(spec, spec, PartitionSpec(), PartitionSpec()),
            out_specs=spec,
            check_vma=False,
        ),
        in_shardings=(split, split, whole, whole),
        out_shardings=split,
    )


@cache
def _constrainer(model: Callable) -> Callable:
    @jax.jit
    def constrain(z, kwargs):
        return jax.vmap(lambda zi: constrain_fn(model, (), kwargs, zi, return_deterministic=True))(
            z
        )

    return _stored("constrain", constrain, model)


def run_nuts(
    model: Callable,
    kwargs: dict[str, Any],
    *,
    rng_key: jax.Array,
    settings: SamplerSettings,
    init: dict[str, jnp.ndarray],
    inverse_mass_matrix: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run NUTS chains from per-chain starting points.

    Parameters
    ----------
    model : callable
        NumPyro model (a family model of :mod:`hiscale.modeling.family` is
        stored on disk per shape bucket, see :func:`program_cache_dir`).
    kwargs : dict
        Keyword arguments of ``model`` (the design's arrays and the prior).
    rng_key : jax.Array
        Split into one key per chain.
    settings : SamplerSettings
        Warm-up, draws, chains, step-size target, tree depth, mass matrix.
    init : dict
        Unconstrained starting points, site -> array with a leading chain
        axis of length ``settings.num_chains`` (see :func:`dispersed_inits`).
    inverse_mass_matrix : ndarray, optional
        Where the warm-up starts its inverse mass matrix (flattened
        ``ravel_pytree`` order; ``(d, d)`` for a dense mass, its diagonal is
        used otherwise), required when ``settings.init_mass == "laplace"``
        (see :func:`laplace_inverse_mass`) and refused otherwise.

    Returns
    -------
    samples : dict
        Constrained sites and deterministics, ``(chain, draw, ...)``.
    extra : dict
        ``(chain, draw)`` arrays: ``diverging``, ``num_steps``, ``energy``
        (Hamiltonian, for E-BFMI), ``potential_energy`` (minus the log
        density in the unconstrained space), ``step_size``, ``accept_prob``.
    """
    c = settings.num_chains
    for name, v in init.items():
        if np.shape(v)[:1] != (c,):
            raise ValueError(
                f"init[{name!r}] has shape {np.shape(v)}: need a leading chain axis of {c}"
            )
    d = sum(int(np.prod(np.shape(v)[1:])) for v in init.values())
    if settings.init_mass == "laplace":
        if inverse_mass_matrix is None:
            raise ValueError("settings.init_mass='laplace' needs an inverse_mass_matrix")
        m = np.asarray(inverse_mass_matrix, dtype=float)
        if m.shape != (d, d) or not np.all(np.isfinite(m)):
            raise ValueError(f"inverse_mass_matrix: need a finite ({d}, {d}) array, got {m.shape}")
        inv_mass = jnp.asarray(m if settings.dense_mass else np.diag(m).copy())
    elif inverse_mass_matrix is not None:
        raise ValueError(
            "inverse_mass_matrix given but settings.init_mass is 'identity': set "
            "SamplerSettings(init_mass='laplace') to use it"
        )
    else:
        inv_mass = jnp.zeros((d, d) if settings.dense_mass else (d,))  # ignored
    keys = jax.random.split(rng_key, c)
    z, extra = _chain_runner(model, settings)(keys, init, kwargs, inv_mass)
    n = settings.num_samples
    zflat = jax.tree.map(lambda a: a.reshape(c * n, *a.shape[2:]), z)
    cons = _constrainer(model)(zflat, kwargs)
    samples = {k: np.asarray(v).reshape(c, n, *v.shape[1:]) for k, v in cons.items()}
    return samples, {k: np.asarray(v) for k, v in extra.items()}


def jittered_inits(
    init: dict[str, jnp.ndarray], *, rng_key: jax.Array, settings: SamplerSettings
) -> dict[str, jnp.ndarray]:
    """Every chain at ``init`` plus ``init_jitter`` x N(0, 1) noise (``init="map"``)."""
    flat, unravel = ravel_pytree(init)
    noise = settings.init_jitter * jax.random.normal(rng_key, (settings.num_chains, flat.shape[0]))
    return jax.vmap(unravel)(flat[None, :] + noise)
