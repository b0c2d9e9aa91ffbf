"""Summarise continue-a-run backtest cells (``hiscale backtest --target continue``).

Reads one or more cell CSVs written by ``hiscale backtest ... --target continue --out
CSV`` and reports per family and method: cells, held runs, median ARE per cell,
80% / 50% coverage (mean over cells) and flagged fits, plus the median over all
cells; failed cells are counted with their reasons. With ``--by-prior`` a method's
rows are labelled by their prior (``bayes-curve-flat``, ``bayes-curve-corpus-v1``;
the paper's rows, identical across runs, once), and on the cells every label
fitted: the median ARE per ``p`` and macro figures (cells -> family -> family
group -> mean; groups count once) with 90% family-group bootstrap intervals,
each label's difference to the paper's ARE included. Writes the JSON with date and
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


def by_prior(cells: pd.DataFrame) -> pd.DataFrame:
    """Label rows ``METHOD-PRIOR`` (the paper's rows once: they do not depend on the prior)."""
    from hiscale.backtesting.scores import CELL_KEY

    paper = cells[cells["method"] == "paper"]
    paper = paper.drop_duplicates([c for c in CELL_KEY if c in paper.columns])
    rest = cells[cells["method"] != "paper"]
    rest = rest.assign(method=rest["method"] + "-" + rest["prior"].astype(str))
    return pd.concat([paper, rest], ignore_index=True)


def macro_figures(cells: pd.DataFrame, n_boot: int = 2000) -> dict:
    """Median ARE per ``p`` and bootstrap macro figures on the cells every method fitted."""
    from hiscale.backtesting.scores import common_cells, macro_intervals

    methods = sorted(cells["method"].unique(), key=lambda m: (m != "paper", m))
    common = common_cells(cells, methods)
    others = [m for m in methods if m != "paper"]
    boot = macro_intervals(
        common,
        methods,
        quantities=("are_pct", "covered80", "covered50"),
        reference="paper" if "paper" in methods else None,
        differences=[(m, "paper") for m in others] if "paper" in methods else (),
        n_boot=n_boot,
    )
    by_p = common.groupby(["p", "method"])["are_pct"].median().unstack()
    return {
        "common_cells": int(len(common) // len(methods)),
        "families": sorted(common["family"].unique()),
        "groups": list(boot.groups),
        "median_are_pct_by_p": {f"{p:g}": row.dropna().to_dict() for p, row in by_p.iterrows()},
        "macro": boot.table.to_dict("records"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+", help="cell CSVs of hiscale backtest --target continue")
    ap.add_argument("--by-prior", action="store_true",
                    help="label methods by prior; add per-p medians and macro figures")  # fmt: skip
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cells = pd.concat([pd.read_csv(f) for f in args.cells], ignore_index=True)
    if args.by_prior:
        cells = by_prior(cells)
    result = summarise(cells)
    print(pd.DataFrame(result["per_family"]).to_string(index=False))
    if args.by_prior:
        result["on_common_cells"] = macro_figures(cells)
        mac = pd.DataFrame(result["on_common_cells"]["macro"])
        print(pd.DataFrame(result["on_common_cells"]["median_are_pct_by_p"]).T.to_string())
        print(mac.to_string(index=False))
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
