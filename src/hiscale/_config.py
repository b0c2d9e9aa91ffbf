"""Process-wide JAX settings, made explicit: :func:`configure`.

Importing hiscale changes nothing in JAX or in the environment. hiscale's
samplers need 64-bit floats (the likelihood works on log losses that differ at
the 1e-4 level) and run chains in parallel on CPU host devices, so call
:func:`configure` once, first thing, before any JAX computation::

    import hiscale

    hiscale.configure()

The command line (``hiscale ...``), the test suite and the notebooks do so.
The fitting entry points raise a one-line error when 64-bit floats are off
(:func:`require_x64`). numpyro's ``enable_x64``, ``set_host_device_count`` and
``set_platform`` are the model for the three switches.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = ["configure", "current_settings", "default_compile_cache", "require_x64"]

_DEVICE_FLAG = "--xla_force_host_platform_device_count"

#: XLA's CPU copy insertion with region analysis (GPU back ends use it by
#: default). Without it the data a NUTS chain closes over (the rows of a
#: whole-curve fit) are copied inside the sampler's nested loops at every
#: leapfrog step: measured on misfitting (4,096 padded rows, one chain, same
#: draws bit for bit) 340 -> 200 us per step, lrsched-sp-cos (512 rows) 62 ->
#: 28 us. Copies only: the arithmetic, hence every number, is unchanged.
_COPY_FLAG = "--xla_cpu_copy_insertion_use_region_analysis"
_GPU_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def default_compile_cache() -> str | None:
    """Where compiled samplers are cached unless told otherwise.

    ``$HISCALE_JAX_CACHE``, else ``$HISCALE_CACHE/jax``, else
    ``~/.cache/hiscale/jax``; ``HISCALE_JAX_CACHE=0`` means no cache (``None``).
    """
    path = os.environ.get(
        "HISCALE_JAX_CACHE",
        os.path.join(
            os.environ.get("HISCALE_CACHE", os.path.expanduser("~/.cache/hiscale")), "jax"
        ),
    )
    return None if path == "0" else path


def _backends_initialised() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return False


def _set_host_devices(n: int | None) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if n is None:
        if _DEVICE_FLAG in flags:
            return  # the user's own XLA_FLAGS win
        n = min(4, os.cpu_count() or 1)
    flags = re.sub(rf"{_DEVICE_FLAG}=\S*", "", flags).split()
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_DEVICE_FLAG}={int(n)}"])


def _set_copy_insertion() -> None:
    """Add :data:`_COPY_FLAG` ``=true`` to ``XLA_FLAGS`` unless the user's flags set it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _COPY_FLAG in flags:
        return  # the user's own XLA_FLAGS win
    os.environ["XLA_FLAGS"] = " ".join([*flags.split(), f"{_COPY_FLAG}=true"])


def configure(
    x64: bool = True,
    host_devices: int | None = None,
    platform: str | None = None,
    compile_cache: str | os.PathLike | bool = True,
) -> dict[str, Any]:
    """Set up JAX for hiscale: 64-bit floats, CPU host devices, platform, compile cache.

    Call it once, before the first JAX computation (host devices and the
    platform cannot change once JAX has started its back end; a later call
    that asks for a change raises ``RuntimeError``, a repeated call with the
    same request does nothing).

    Parameters
    ----------
    x64 : bool
        Enable 64-bit floats (``jax_enable_x64``). hiscale's fits need them.
    host_devices : int, optional
        Number of CPU devices, so NUTS chains run in parallel (sets
        ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, replacing
        an earlier count). Default: ``min(4, CPUs)``, unless ``XLA_FLAGS``
        already sets a count. ``XLA_FLAGS`` also gets
        ``--xla_cpu_copy_insertion_use_region_analysis=true`` unless it sets
        that flag itself: the same numbers, with fewer buffer copies inside
        the sampler (half the time per step of a whole-curve fit; see
        :data:`_COPY_FLAG`).
    platform : str, optional
        JAX platform(s), e.g. ``"cpu"`` or ``"gpu"`` (``jax_platforms``).
        Default: JAX's own choice (and ``$JAX_PLATFORMS``).
    compile_cache : bool, str or path
        Persistent cache of compiled samplers, so a fresh process does not pay
        the XLA compilation again. ``True``: :func:`default_compile_cache`
        unless JAX already has a cache directory; a path: that directory;
        ``False``: hiscale sets no cache.

    Returns
    -------
    dict
        The settings now in effect (:func:`current_settings`).
    """
    import jax

    if _backends_initialised():
        problems = []
        if host_devices is not None and len(jax.devices("cpu")) != host_devices:
            problems.append(f"host_devices={host_devices} (JAX has {len(jax.devices('cpu'))})")
        if platform is not None:
            wanted = {_GPU_ALIASES.get(p, p) for p in platform.split(",")}
            if jax.default_backend() not in wanted:
                problems.append(f"platform={platform!r} (JAX runs on {jax.default_backend()!r})")
        if problems:
            raise RuntimeError(
                f"hiscale.configure({', '.join(problems)}): JAX has already started; "
                "call hiscale.configure() first thing, before any JAX computation"
            )
    else:
        _set_host_devices(host_devices)
        _set_copy_insertion()
        if platform is not None:
            jax.config.update("jax_platforms", platform)
    jax.config.update("jax_enable_x64", bool(x64))
    if compile_cache is True:
        path = default_compile_cache()
        if path is not None and jax.config.jax_compilation_cache_dir is None:
            _set_compile_cache(path)
    elif compile_cache is not False:
        _set_compile_cache(os.fspath(compile_cache))
    return current_settings()


def _set_compile_cache(path: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path(path)))
    # every program, however small: JAX skips those compiled in under a second
    # by default, yet a fresh `hiscale predict` compiles dozens of small ones
    # (array set-up, the prediction) at 10-40 ms each
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def current_settings() -> dict[str, Any]:
    """Keyword arguments of :func:`configure` that reproduce this process' JAX setup.

    (Dask workers are configured with :func:`hiscale._distributed.worker_settings`,
    which uses the worker's own compilation cache; the host-device count reaches
    local workers through the inherited ``XLA_FLAGS``.)
    """
    import jax

    return {
        "x64": bool(jax.config.jax_enable_x64),
        "host_devices": None,
        "platform": jax.config.jax_platforms or None,
        "compile_cache": jax.config.jax_compilation_cache_dir or False,
    }


def require_x64(what: str) -> None:
    """Raise a one-line ``RuntimeError`` unless JAX has 64-bit floats on."""
    import jax

    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{what} needs 64-bit floats in JAX: call hiscale.configure() first "
            "(once, before any JAX computation)"
        )
