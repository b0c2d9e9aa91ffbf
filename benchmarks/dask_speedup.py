"""Backtests on Dask: speed-up with 2 local workers, overhead per task, projections.

Usage::

    python benchmarks/dask_speedup.py [CORPUS] [--families gpt3 overtrain-c4]
        [--methods bayes-flat paper] [--grid sub] [--workers 2] [--noop-cells 2000]
        [--warm-cache] [--out benchmarks/results/dask_speedup.json]

Measured in one run, in this order (``--warm-cache`` first runs the same
backtest, unmeasured, in a fresh ``hiscale backtest`` process, so that both
measured runs find every sampler compiled on disk and pay only tracing: what
every run after the first one sees):

1. **Dask**: ``backtest(..., client=LocalCluster(WORKERS workers, 1 thread each))``
   on the ``--grid`` cells of ``--families`` with ``--methods``; cluster start-up
   timed separately. Runs first, so the in-process run after it (not the
   workers) profits from kernels the workers put in the on-disk compilation
   cache: the ratio is, if anything, pessimistic for Dask.
2. **In-process**: the same backtest in this process (``client=None``).
   The rows must be identical (checked; ``seconds`` aside).
3. **Overhead per task**: a no-op method (a constant prediction, no fit) over
   ``--noop-cells`` cells, in-process and on the same cluster. With ``N``
   cells, ``W`` workers, in-process time ``T1`` and cluster time ``TW``, the
   serial overhead per task is ``(TW - T1 / W) / N`` (the no-op's own work is
   split over the workers).
4. **Projection** (not a measurement) of the full corpus ``sub`` grid and the
   paper grid (every usable family, k = 1 added as for Bayesian methods) on 1,
   8 and 64 workers: ``T(W) = start-up + warm-up + N (t + o) / W``, with ``t``
   the median in-process seconds per cell of each method measured here, ``o``
   the overhead per task, ``warm-up`` the in-process seconds above ``N t`` (each
   worker traces its samplers once; paid in parallel) and start-up the
   cluster's (0 in-process). Assumes one core per worker.

The load average (``os.getloadavg``) is recorded at start and end: the ratio
is only meaningful on an otherwise idle machine. Writes JSON (no corpus rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "dask_speedup.json"


class NoOp:
    """A method that predicts a constant: what a cell costs without a fit."""

    name = "noop"

    def prepare(self, corpus, family):
        return None

    def __call__(self, cell, state, *, seed):
        from hiscale.backtesting.methods import CellPrediction

        return CellPrediction(median=np.full(len(cell.target.frame), 3.0))


def _cells(curves, families, grid) -> int:
    from hiscale.backtesting.protocol import make_cells

    return sum(len(make_cells(curves.family(f), grid=grid, include_k1=True)) for f in families)


def _noop_families(curves, usable, n_cells):
    """Families (in order, cycling) whose paper-grid cells add up to at least ``n_cells``."""
    out, total = [], 0
    for fam in usable:
        if total >= n_cells:
            break
        out.append(fam)
        total += _cells(curves, [fam], "paper")
    return out, total


def _fmt(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    import hiscale

    hiscale.configure()  # first: 64-bit floats, host devices (inherited by the workers)
    import pandas as pd
    from distributed import Client, LocalCluster

    from hiscale.backtesting.runner import COLUMNS, backtest, usable_families
    from hiscale.data.curves import load_curves

    sys.path.insert(0, str(HERE))
    from _machine import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    )
    ap.add_argument("--families", nargs="+", default=["gpt3", "overtrain-c4"])
    ap.add_argument("--methods", nargs="+", default=["bayes-flat", "paper"])
    ap.add_argument("--grid", default="sub")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noop-cells", type=int, default=2000)
    ap.add_argument("--warm-cache", action="store_true", help="fill the disk cache first")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    curves = load_curves(args.corpus)
    kw = dict(families=args.families, methods=args.methods, grid=args.grid, include_k1=True)
    n_cells = len(args.methods) * _cells(curves, args.families, args.grid)
    print(f"{n_cells} cells: {args.grid} grid of {', '.join(args.families)} x {args.methods}")
    warm_seconds = None
    if args.warm_cache:
        import subprocess

        cmd = [sys.executable, "-m", "hiscale", "backtest", args.corpus, "--grid", args.grid]
        cmd += [a for f in args.families for a in ("--family", f)]
        cmd += [a for m in args.methods for a in ("--method", m)]
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--k1", "--quiet"], check=True, stdout=subprocess.DEVNULL)
        warm_seconds = time.perf_counter() - t0
        print(f"disk cache warmed in {warm_seconds:.0f} s (unmeasured run)")

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    client.wait_for_workers(args.workers)
    startup = time.perf_counter() - t0
    print(f"cluster of {args.workers} workers up in {startup:.1f} s; Dask run ...")
    t0 = time.perf_counter()
    on_dask = backtest(curves, client=client, **kw)
    t_dask = time.perf_counter() - t0
    print(f"  {t_dask:.1f} s; in-process run ...")
    t0 = time.perf_counter()
    in_proc = backtest(curves, **kw)
    t_one = time.perf_counter() - t0
    print(f"  {t_one:.1f} s")
    cols = [c for c in COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(on_dask[cols], in_proc[cols])  # same rows, or no numbers

    usable = usable_families(curves)
    noop_fams, noop_n = _noop_families(curves, usable, args.noop_cells)
    nkw = dict(families=noop_fams, methods=[NoOp()], grid="paper", include_k1=True)
    t0 = time.perf_counter()
    backtest(curves, **nkw)
    noop_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    backtest(curves, client=client, **nkw)
    noop_dask = time.perf_counter() - t0
    client.close()
    cluster.close()
    overhead = (noop_dask - noop_one / args.workers) / noop_n

    dask_cells = {  # per-cell seconds in the workers (method call only)
        m: {"median": float(g["seconds"].median()), "sum": float(g["seconds"].sum())}
        for m, g in on_dask.groupby("method", sort=False)
    }
    per_method = {}
    for m, g in in_proc.groupby("method", sort=False):
        s = g["seconds"].to_numpy()
        med = float(np.median(s))
        per_method[m] = {
            "cells": len(g),
            "median_cell_seconds": med,
            "mean_cell_seconds": float(s.mean()),
            "max_cell_seconds": float(s.max()),
            "warmup_seconds": float(max(0.0, s.sum() - len(s) * med)),
            "failed": int((g["status"] != "ok").sum()),
        }
    grids = {g: _cells(curves, usable, g) for g in ("sub", "paper")}
    projection = []
    for grid, n in grids.items():
        for m, pm in per_method.items():
            row = {"grid": grid, "method": m, "cells": n}
            for w in (1, 8, 64):
                fixed = pm["warmup_seconds"] + (startup if w > 1 else 0.0)
                per_cell = pm["median_cell_seconds"] + (overhead if w > 1 else 0.0)
                row[f"workers_{w}_seconds"] = fixed + n * per_cell / w
            projection.append(row)

    load_end = os.getloadavg()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{machine()['platform']} / {os.cpu_count()} CPUs / {machine()['python']}",
        "machine_info": machine(),
        "command": " ".join(["python", *sys.argv]),
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "families": args.families,
        "methods": args.methods,
        "grid": args.grid,
        "workers": args.workers,
        "cells": n_cells,
        "rows_identical": True,
        "in_process_seconds": t_one,
        "dask_seconds": t_dask,
        "cluster_startup_seconds": startup,
        "warm_cache_seconds": warm_seconds,
        "dask_cells": dask_cells,
        "speedup": t_one / t_dask,
        "speedup_with_startup": t_one / (t_dask + startup),
        "noop": {
            "families": len(noop_fams),
            "cells": noop_n,
            "in_process_seconds": noop_one,
            "dask_seconds": noop_dask,
            "overhead_per_task_seconds": overhead,
            "formula": "(dask_seconds - in_process_seconds / workers) / cells",
        },
        "per_method": per_method,
        "projection": {
            "note": "a projection, not a measurement: T(W) = startup (W > 1) + warm-up + "
            "cells * (median cell seconds + overhead per task (W > 1)) / W, one core per worker; "
            "bayes adds its leave-one-group-out priors (not included)",
            "cells_per_grid": grids,
            "rows": projection,
        },
        "total_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


def table(r: dict) -> str:
    """The README tables of a result."""
    lines = [
        f"Measured {r['date']} on {r['machine']}; `{r['command']}`; load average "
        f"{r['load_average_start'][0]:.1f} at start, {r['load_average_end'][0]:.1f} at end.",
        "",
        "| what | measured |",
        "|---|---|",
        f"| {r['grid']} grid of {', '.join(r['families'])} x {', '.join(r['methods'])} "
        f"({r['cells']} cells), in-process | {r['in_process_seconds']:.1f} s |",
        f"| same, {r['workers']} Dask workers (LocalCluster) | {r['dask_seconds']:.1f} s "
        f"(+ {r['cluster_startup_seconds']:.1f} s cluster start-up) |",
        f"| speed-up (same run) | {r['speedup']:.2f}x ({r['speedup_with_startup']:.2f}x with "
        "start-up); rows identical |",
        f"| overhead per task ({r['noop']['cells']} no-op cells) | "
        f"{1000 * r['noop']['overhead_per_task_seconds']:.1f} ms "
        f"(no-op: {r['noop']['in_process_seconds']:.1f} s in-process, "
        f"{r['noop']['dask_seconds']:.1f} s on Dask) |",
        "",
        "Projection (not measured) from the per-cell times above:",
        "",
        "| grid | method | cells | 1 worker | 8 workers | 64 workers |",
        "|---|---|---|---|---|---|",
    ]
    for p in r["projection"]["rows"]:
        lines.append(
            f"| {p['grid']} | {p['method']} | {p['cells']} | {_fmt(p['workers_1_seconds'])} | "
            f"{_fmt(p['workers_8_seconds'])} | {_fmt(p['workers_64_seconds'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
