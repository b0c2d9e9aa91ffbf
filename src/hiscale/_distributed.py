"""Dask plumbing for distributed runs: opening a client, configuring workers.

``dask.distributed`` is imported only when a distributed run is asked for, so
``hiscale predict`` and the in-process paths never pay for it.

A *scheduler spec* is what ``--scheduler`` takes:

* ``local`` or ``local:N``: a :class:`distributed.LocalCluster` on this machine
  with ``N`` single-threaded worker processes (default: one per CPU), closed at
  the end of the run;
* ``tcp://HOST:PORT`` (or another Dask address such as ``tls://...``): an
  existing cluster's scheduler. Its workers need only hiscale installed.

Task functions run through :func:`call`, which first calls
:func:`hiscale.configure` in the worker (64-bit floats and the compilation
cache; idempotent, so long-lived workers keep their compiled samplers).

NumPyro keeps its effect handlers in one global stack per process, so two
fits must never trace at the same time in one process: :func:`call` holds a
process-wide lock. A worker with several threads therefore runs one hiscale
task at a time (start workers with one thread each and one process per core).
A task that waits for other tasks (a leave-one-out prior waiting for its
step-1 fits) does so inside :func:`waiting`, which gives back the lock and the
worker's thread slot meanwhile.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hiscale._config import configure

__all__ = ["call", "open_client", "parse_scheduler", "waiting", "worker_settings"]

_LOCAL = re.compile(r"^local(?::(\d+))?$")
_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


def parse_scheduler(spec: str) -> tuple[str, int | str]:
    """Parse a scheduler spec (what ``--scheduler`` takes).

    Parameters
    ----------
    spec : str
        ``local`` (one worker per CPU), ``local:N`` or a Dask scheduler address
        such as ``tcp://HOST:8786``.

    Returns
    -------
    tuple
        ``("local", n_workers)`` or ``("address", address)``.

    Raises
    ------
    ValueError
        One line naming the spec, when it is neither ``local[:N]`` (N >= 1) nor
        a Dask address.
    """
    spec = str(spec).strip()
    m = _LOCAL.match(spec)
    if m:
        n = int(m.group(1)) if m.group(1) is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"scheduler {spec!r}: local needs >= 1 worker")
        return "local", n
    if _ADDRESS.match(spec):
        return "address", spec
    raise ValueError(
        f"scheduler {spec!r}: expected 'local', 'local:N' (N workers) or a Dask "
        "scheduler address such as 'tcp://HOST:8786'"
    )


@contextmanager
def open_client(scheduler: Any) -> Iterator[Any]:
    """Open a ``distributed.Client`` for ``scheduler`` for the ``with`` block.

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        A spec (:func:`parse_scheduler`), an existing client (yielded as is
        and left open: the caller's to close) or None (in-process run).

    Yields
    ------
    distributed.Client or None
        The client, or None when ``scheduler`` is None. A local cluster
        started here is closed on exit.
    """
    if scheduler is None:
        yield None
        return
    if not isinstance(scheduler, str):
        yield scheduler  # the caller's client: theirs to close
        return
    kind, where = parse_scheduler(scheduler)
    from distributed import Client, LocalCluster

    if kind == "address":
        with Client(where) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=int(where),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with another cluster
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def worker_settings() -> dict[str, Any]:
    """Return the :func:`hiscale.configure` arguments for workers, taken from this process.

    64-bit floats and the platform as set here; the compilation cache is the
    worker's own default (``$HISCALE_CACHE/jax``), so remote workers do not need
    this machine's paths. Local workers inherit ``XLA_FLAGS`` (host devices)
    and ``HISCALE_CACHE`` from this process' environment, so they run the same
    compiled code paths and give the same numbers.

    Returns
    -------
    dict
        Keyword arguments ``x64``, ``platform`` and ``compile_cache``.
    """
    import jax

    return {
        "x64": bool(jax.config.jax_enable_x64),
        "platform": jax.config.jax_platforms or None,
        "compile_cache": True,
    }


_LOCK = threading.Lock()
_HELD = threading.local()


def call(settings: dict[str, Any], fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a worker after :func:`hiscale.configure` (``settings``).

    Holds the process' hiscale lock meanwhile: NumPyro's effect handlers are
    one global stack per process, so two fits tracing at once would mix.

    Parameters
    ----------
    settings : dict
        Keyword arguments of :func:`hiscale.configure` (:func:`worker_settings`).
    fn : callable
        The task.
    *args, **kwargs
        Passed to ``fn``.

    Returns
    -------
    object
        What ``fn`` returns.
    """
    with _LOCK:
        _HELD.value = True
        try:
            configure(**settings)
            return fn(*args, **kwargs)
        finally:
            _HELD.value = False


@contextmanager
def waiting() -> Iterator[None]:
    """Wait for other tasks inside a task: the lock and the thread slot are given back.

    Outside a task run by :func:`call` (in-process code) it does nothing.
    """
    if not getattr(_HELD, "value", False):
        yield
        return
    from distributed import rejoin, secede

    _HELD.value = False
    _LOCK.release()
    secede()
    try:
        yield
    finally:
        rejoin()
        _LOCK.acquire()
        _HELD.value = True
