"""Leave-one-family-out backtest: bayes vs bayes-flat vs paper on identical cells.

Usage::

    python benchmarks/bayes_grid.py [CORPUS] [--grid sub] [--target last30]
        [--families gpt3 pythia ...] [--out benchmarks/results/bayes_grid]

Writes ``<out>_cells.csv`` (one row per cell and method) and ``<out>.json``
(macro ARE overall and in low-budget cells, coverage, k = 1 comparison,
ratios to the paper, timings, date and machine) and prints the tables.

Cells: the paper's protocol (``--grid sub`` = all p values, k = 1..7 plus
three log-spaced k up to n-1 for very large families; identical to the full
paper grid for families with <= 8 training sizes). Bayes methods add k = 1;
the paper method runs its single-model regime there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import hiscale
from hiscale.backtesting.runner import backtest, method_summary, summary_table
from hiscale.data.curves import load_curves

FAMILIES = [
    "gpt3",
    "pythia",
    "pythia-deduped",
    "gemstones",
    "misfitting",
    "overtrain-c4",
    "chinchilla",
    "gpt2-datablations-c4-1ep",
]


def summarise(res: pd.DataFrame) -> dict:
    """Headline numbers per method (macro = mean within family, then across)."""
    out = {"methods": {}}
    summ = method_summary(res)
    for rec in summ.to_dict(orient="records"):
        out["methods"][rec["method"]] = rec
    ok = res[res["status"] == "ok"]
    # identical-cell comparison: cells where every method succeeded
    key = ["family", "k", "p"]
    piv = ok.pivot_table(index=key, columns="method", values="are_pct")
    piv = piv.dropna()
    fam = piv.groupby(level="family").mean()
    out["common_cells"] = len(piv)
    out["macro_are_common"] = fam.mean().to_dict()
    low = piv[(piv.index.get_level_values("k") <= 3) | (piv.index.get_level_values("p") <= 0.3)]
    out["macro_are_low_budget_common"] = low.groupby(level="family").mean().mean().to_dict()
    k1 = piv[piv.index.get_level_values("k") == 1]
    out["macro_are_k1_common"] = k1.groupby(level="family").mean().mean().to_dict()
    out["per_family_are_common"] = fam.round(3).to_dict()
    if "paper" in fam:
        out["ratio_to_paper"] = {
            m: float(fam[m].mean() / fam["paper"].mean()) for m in fam.columns if m != "paper"
        }
        out["ratio_to_paper_low_budget"] = {
            m: float(
                low.groupby(level="family").mean()[m].mean()
                / low.groupby(level="family").mean()["paper"].mean()
            )
            for m in fam.columns
            if m != "paper"
        }
    cov = ok.dropna(subset=["covered80"]).groupby(["method", "family"])[["covered80", "covered50"]]
    out["coverage_per_family"] = cov.mean().round(3).reset_index().to_dict(orient="records")
    out["cell_coverage80"] = (
        ok.dropna(subset=["covered80"]).groupby("method")["covered80"].mean().to_dict()
    )
    out["cell_coverage50"] = (
        ok.dropna(subset=["covered50"]).groupby("method")["covered50"].mean().to_dict()
    )
    out["flagged_cells"] = (
        ok.groupby("method")["flagged"].apply(lambda s: int(s.astype(bool).sum())).to_dict()
    )
    out["seconds_per_cell_median"] = res.groupby("method")["seconds"].median().to_dict()
    return out


def main(argv=None) -> int:
    hiscale.configure()  # first: 64-bit floats and host devices for JAX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    )
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--methods", nargs="+", default=["paper", "bayes", "bayes-flat"])
    ap.add_argument("--grid", default="sub")
    ap.add_argument("--target", default="last30")
    ap.add_argument("--direction", default="up")
    ap.add_argument("--out", default="benchmarks/results/bayes_grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reuse",
        default=None,
        help="cells CSV of an earlier run: rows of methods not in --methods are taken from it "
        "(same grid, target and families), so one method can be re-run alone",
    )
    args = ap.parse_args(argv)
    curves = load_curves(args.corpus)
    t0 = time.perf_counter()
    res = backtest(
        curves,
        families=args.families,
        methods=args.methods,
        grid=args.grid,
        target=args.target,
        direction=args.direction,
        include_k1=True,
        seed=args.seed,
        progress=True,
    )
    total = time.perf_counter() - t0
    if args.reuse:
        old = pd.read_csv(args.reuse)
        old = old[~old["method"].isin(args.methods) & old["family"].isin(args.families)]
        res = pd.concat([old, res], ignore_index=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(f"{out}_cells.csv", index=False)
    summ = summarise(res)
    summ.update(
        {
            "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
            "families": args.families,
            "grid": args.grid,
            "target": args.target,
            "direction": args.direction,
            "total_seconds": total,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": (
                f"{platform.platform()} / {os.cpu_count()} CPUs / {platform.python_version()}"
            ),
        }
    )
    Path(f"{out}.json").write_text(json.dumps(summ, indent=2, default=float) + "\n")
    with pd.option_context("display.width", 220, "display.max_columns", 50):
        print(summary_table(res).round(2).to_string())
        print(method_summary(res).round(3).to_string(index=False))
        print(
            json.dumps(
                {
                    k: summ[k]
                    for k in (
                        "macro_are_common",
                        "macro_are_low_budget_common",
                        "macro_are_k1_common",
                        "cell_coverage80",
                        "cell_coverage50",
                    )
                },
                indent=1,
                default=float,
            )
        )
    _ = np  # numpy kept for downstream users of this module
    return 0


if __name__ == "__main__":
    sys.exit(main())
