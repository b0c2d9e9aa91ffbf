"""Ablations of the Bayesian model on identical leave-one-family-out cells.

Usage::

    python benchmarks/ablations.py [CORPUS] [--grid quick] [--variants base nd ...]
        [--out benchmarks/results/ablations]

Each variant changes one modelling choice of ``bayes`` (population prior,
leave-one-family-out); the paper method runs on the same cells. Prints a
table (macro ARE, low-budget ARE, coverage, flagged cells, seconds per cell)
and writes JSON plus the per-cell CSV. Variants that lose stay in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

import hiscale
from hiscale.backtesting.methods import BayesMethod, PaperMethod
from hiscale.backtesting.runner import backtest
from hiscale.data.curves import load_curves
from hiscale.infer.fit import FitOptions

sys.path.insert(0, str(Path(__file__).parent))
from bayes_grid import FAMILIES

VARIANTS = {
    "base": dict(
        doc="default: chinchilla law, end-of-run rows (0.8), tempering n_eff=4, Student-t "
        "(df 4) run offsets and noise, population of family groups spanning >= 4x, one loss unit"
    ),
    "nd": dict(law="chinchilla-nd", doc="law with N-dependent data term B D^-beta (N/N0)^gamma"),
    "all-rows": dict(
        options=FitOptions(end_of_run=0.0), doc="all checkpoints (no end-of-run selection)"
    ),
    "eor-0.5": dict(options=FitOptions(end_of_run=0.5), doc="end-of-run fraction 0.5"),
    "eor-0.9": dict(options=FitOptions(end_of_run=0.9), doc="end-of-run fraction 0.9"),
    "no-temper": dict(
        options=FitOptions(n_eff_per_run=0.0), doc="no tempering (checkpoints i.i.d.)"
    ),
    "n-eff-1": dict(
        options=FitOptions(n_eff_per_run=1.0), doc="tempering to 1 effective point per run"
    ),
    "gauss": dict(
        prior_settings={"df_run": 1000.0, "df_obs": 1000.0},
        doc="Gaussian run offsets and noise (df 1000) instead of Student-t",
    ),
    "pop-all": dict(min_span=1.0, doc="population includes narrow families (datablations triples)"),
    "mixed-units": dict(
        match_unit=False,
        doc="population mixes loss units (LAMBADA nats/word with nats/token families)",
    ),
    "siblings-separate": dict(
        pool_groups=False,
        doc="population counts sibling families (gemstones-*, overtrain-*) as independent draws",
    ),
    "flat": dict(prior="flat", doc="weak default prior, no borrowing (= bayes-flat)"),
}


def macro(df: pd.DataFrame, col: str) -> float:
    """Mean within family, then across families."""
    return float(df.groupby("family")[col].mean().mean())


def main(argv=None) -> int:
    hiscale.configure()  # first: 64-bit floats and host devices for JAX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    )
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--grid", default="quick")
    ap.add_argument("--out", default="benchmarks/results/ablations")
    ap.add_argument("--resume", action="store_true", help="reuse variants already in the CSV")
    args = ap.parse_args(argv)
    curves = load_curves(args.corpus)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    done: set[str] = set()
    if args.resume and Path(f"{out}_cells.csv").is_file():
        old = pd.read_csv(f"{out}_cells.csv")
        old = old[old["variant"].isin(["paper", *args.variants])]
        frames.append(old)
        done = set(old["variant"])
    t0 = time.perf_counter()
    if "paper" not in done:
        paper = backtest(
            curves,
            families=args.families,
            methods=[PaperMethod()],
            grid=args.grid,
            include_k1=True,
        )
        frames.append(paper.assign(variant="paper"))
    for name in args.variants:
        if name in done:
            continue
        spec = {k: v for k, v in VARIANTS[name].items() if k != "doc"}
        method = BayesMethod(name=f"bayes[{name}]", progress=True, **spec)
        t1 = time.perf_counter()
        res = backtest(
            curves,
            families=args.families,
            methods=[method],
            grid=args.grid,
            include_k1=True,
            progress=True,
        )
        res["variant"] = name
        frames.append(res)
        print(f"{name}: {time.perf_counter() - t1:.0f}s", file=sys.stderr)
        pd.concat(frames).to_csv(f"{out}_cells.csv", index=False)
    allres = pd.concat(frames, ignore_index=True)
    ok = allres[allres["status"] == "ok"]
    # identical cells: those where paper and every variant succeeded
    piv = ok.pivot_table(index=["family", "k", "p"], columns="variant", values="are_pct").dropna()
    common = piv.index
    rows = []
    for name in ["paper", *args.variants]:
        g = ok[ok["variant"] == name].set_index(["family", "k", "p"]).loc[common].reset_index()
        low = g[(g["k"] <= 3) | (g["p"] <= 0.3)]
        rows.append(
            {
                "variant": name,
                "doc": VARIANTS.get(name, {}).get("doc", "the paper's least-squares estimator"),
                "cells": len(g),
                "macro_are": macro(g, "are_pct"),
                "macro_are_low_budget": macro(low, "are_pct"),
                "macro_are_k1": macro(g[g["k"] == 1], "are_pct") if (g["k"] == 1).any() else None,
                "coverage80": float(g["covered80"].mean())
                if g["covered80"].notna().any()
                else None,
                "coverage50": float(g["covered50"].mean())
                if g["covered50"].notna().any()
                else None,
                "flagged": int(g["flagged"].astype(bool).sum()),
                "seconds_per_cell": float(g["seconds"].median()),
            }
        )
    table = pd.DataFrame(rows)
    payload = {
        "table": table.to_dict(orient="records"),
        "families": args.families,
        "grid": args.grid,
        "common_cells": len(common),
        "total_seconds": time.perf_counter() - t0,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.platform()} / {os.cpu_count()} CPUs / {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
    }
    Path(f"{out}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns="doc").round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
