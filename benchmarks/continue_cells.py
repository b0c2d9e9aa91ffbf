"""Summarise continue-a-run backtest cells (``hiscale backtest --target continue``).

Reads one or more cell CSVs written by ``hiscale backtest ... --target continue --out
CSV`` and reports per family and method: cells, held runs, median ARE per cell,
80% / 50% coverage (mean over cells) and flagged fits, plus the median over all
cells; failed cells are counted with their reasons. Writes the JSON with date and
machine.

    python benchmarks/continue_cells.py /tmp/s6/cont_*.csv \\
        --out benchmarks/results/continue_cells_more.json
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from _machine import emit, machine


def summarise(cells: pd.DataFrame) -> dict:
    """Per-family/method summary of continue cells (status ``ok``), and the failures."""
    ok = cells[cells["status"] == "ok"]
    rows = []
    for (family, method), g in ok.groupby(["family", "method"], sort=True):
        rows.append(
            {
                "family": family,
                "method": method,
                "cells": len(g),
                "held_runs": int(g["n_target_rows"].sum()),
                "median_are_pct": float(g["are_pct"].median()),
                "covered80": None if g["covered80"].isna().all() else float(g["covered80"].mean()),
                "covered50": None if g["covered50"].isna().all() else float(g["covered50"].mean()),
                "flagged": int(g["flagged"].fillna(False).astype(bool).sum()),
            }
        )
    overall = {m: float(g["are_pct"].median()) for m, g in ok.groupby("method")}
    failed = cells[cells["status"] != "ok"]
    reasons = failed.groupby(["family", "status"]).size().reset_index(name="cells")
    return {
        "per_family": rows,
        "median_are_pct_all_cells": overall,
        "p": sorted(ok["p"].unique().tolist()),
        "failed": reasons.to_dict("records"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+", help="cell CSVs of hiscale backtest --target continue")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cells = pd.concat([pd.read_csv(f) for f in args.cells], ignore_index=True)
    result = summarise(cells)
    print(pd.DataFrame(result["per_family"]).to_string(index=False))
    emit(
        {
            "command": "python benchmarks/continue_cells.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "cells_from": args.cells,
            **result,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
