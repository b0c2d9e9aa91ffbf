"""Time the paper's backtest grid of the least-squares ("paper") method.

Runs ``hiscale.backtesting.runner.backtest(..., methods=["paper"], grid=GRID,
target=TARGET)`` for every usable family of the corpus (one family at a time,
in-process), repeats the whole sweep ``--repeats`` times, prints a table
(family, cells, median seconds, cells/s) and writes a JSON record with the
median total time, cells per second, the date and the machine.

Usage::

    python benchmarks/paper_grid.py [CORPUS] [--grid paper|sub] [--repeats 3]
        [--target last30|final] [--family NAME ...] [--out PATH]

``CORPUS`` defaults to ``$HISCALE_CORPUS``. ``--grid sub`` is the documented
subsample of ``hiscale.backtesting.protocol.GRIDS`` (paper p values; k = 2..7 plus three
log-spaced k up to n-1) for when the full grid is too slow: the full grid has
k = 2..n-1, i.e. 1,400 cells for chinchilla's 142 sizes. Only timings and
counts are written; no corpus rows or derived values go to the output file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

from hiscale.backtesting.protocol import GRIDS
from hiscale.backtesting.runner import backtest, usable_families
from hiscale.data.curves import CurvesError, load_curves

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "paper_grid.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS"))
    p.add_argument("--grid", default="paper", choices=["paper", "sub"], help=GRIDS["sub"])
    p.add_argument("--target", default="last30", choices=["last30", "final"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--family", action="append", default=None, help="restrict (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if not args.corpus:
        p.error("no corpus: pass a path or set HISCALE_CORPUS")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        t0 = time.perf_counter()
        curves = load_curves(args.corpus)
        load_seconds = time.perf_counter() - t0
        usable = usable_families(curves)
        families = args.family or usable
        for fam in families:  # fail early on unknown or unusable names
            curves.family(fam)
            if fam not in usable:
                raise CurvesError(f"column 'params': family {fam!r} has fewer than 3 sizes")
    except CurvesError as err:
        print(f"paper_grid: error: {err}", file=sys.stderr)
        return 2

    seconds: dict[str, list[float]] = {f: [] for f in families}
    cells: dict[str, int] = {}
    failed: dict[str, int] = {}
    totals = []
    for rep in range(args.repeats):
        total = 0.0
        for fam in families:
            t0 = time.perf_counter()
            res = backtest(
                curves, families=[fam], methods=["paper"], grid=args.grid, target=args.target
            )
            elapsed = time.perf_counter() - t0
            seconds[fam].append(elapsed)
            total += elapsed
            cells[fam] = len(res)
            failed[fam] = int((res["status"] != "ok").sum())
        totals.append(total)
        print(f"repeat {rep + 1}/{args.repeats}: {total:.2f} s", file=sys.stderr)

    rows = []
    for fam in families:
        med = statistics.median(seconds[fam])
        rows.append(
            {
                "family": fam,
                "cells": cells[fam],
                "failed": failed[fam],
                "median_seconds": med,
                "cells_per_second": cells[fam] / med if med > 0 else float("inf"),
            }
        )
    n_cells = sum(cells.values())
    median_total = statistics.median(totals)
    width = max(len("family"), *(len(f) for f in families))
    print(f"paper method, grid={args.grid}, target={args.target}, repeats={args.repeats}")
    print(f"{'family':<{width}}  {'cells':>6}  {'failed':>6}  {'seconds':>8}  {'cells/s':>8}")
    for r in rows:
        print(
            f"{r['family']:<{width}}  {r['cells']:>6}  {r['failed']:>6}  "
            f"{r['median_seconds']:>8.2f}  {r['cells_per_second']:>8.1f}"
        )
    print(
        f"{'total':<{width}}  {n_cells:>6}  {sum(failed.values()):>6}  "
        f"{median_total:>8.2f}  {n_cells / median_total:>8.1f}"
    )

    record = {
        "benchmark": "paper_grid",
        "method": "paper",
        "grid": args.grid,
        "target": args.target,
        "repeats": args.repeats,
        "families": len(families),
        "cells": n_cells,
        "failed_cells": sum(failed.values()),
        "median_total_seconds": median_total,
        "cells_per_second": n_cells / median_total,
        "total_seconds_per_repeat": totals,
        "load_seconds": load_seconds,
        "per_family": rows,
        "corpus_hash": curves.data_hash(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
