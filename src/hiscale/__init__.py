"""hiscale: hierarchical Bayesian scaling laws for language models.

The flow, one module per concept::

    data      -> the curves table: schema, validation, loading
    protocol  -> the paper's filters, targets and (k, p) cells
    laws      -> scaling-law forms as pure jax functions
    paper     -> the paper's least-squares estimator (the baseline)
    priors    -> prior defaults as data; population priors on disk
    design    -> curves -> padded arrays for the NumPyro models
    model     -> the NumPyro family model
    inference -> MAP, NUTS, diagnostics
    fit       -> ``fit(...) -> Fit`` and ``Fit.predict``
    population-> building a population prior (two-step)
    backtest  -> the paper's protocol, methods plug in
    scores    -> common cells, family-group macro averages, bootstrap intervals
    plots, cli on top.
"""

import os

# Multi-chain NUTS runs chains in parallel on CPU host devices; this must be set
# before jax is first imported. A user's own XLA_FLAGS win.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={min(4, os.cpu_count() or 1)}"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

# The likelihood works on log losses that differ at the 1e-4 level; MAP and
# NUTS are run in double precision.
jax.config.update("jax_enable_x64", True)

# Compiled samplers are cached on disk, so a fresh process (CLI, demo) does not
# pay the 10-20 s XLA compilation again. HISCALE_JAX_CACHE=0 disables it.
_jax_cache = os.environ.get(
    "HISCALE_JAX_CACHE",
    os.path.join(os.environ.get("HISCALE_CACHE", os.path.expanduser("~/.cache/hiscale")), "jax"),
)
if _jax_cache != "0" and jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", _jax_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

__version__ = "0.1.0"

from hiscale.data import Curves, CurvesError, load_curves  # noqa: E402

__all__ = ["Curves", "CurvesError", "__version__", "load_curves"]
