"""Ablations of the Bayesian model on identical leave-one-family-out cells.

Usage::

    python benchmarks/ablations.py [CORPUS] [--grid quick] [--variants base nd ...]
        [--out benchmarks/results/ablations]

Each variant changes one modelling choice of ``bayes`` (population prior,
leave-one-family-out); the paper method runs on the same cells. Prints a
table (macro ARE, low-budget ARE, coverage, flagged cells, seconds per cell;
macro over family groups with family-group bootstrap intervals, on the cells
every variant fitted; ``hiscale.backtesting.scores``) and writes JSON plus the per-cell
CSV. Every variant that was run is in the table, variants that lose
included; the JSON lists the defined variants that were not run.
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

from hiscale.backtesting.scores import (
    LOW_BUDGET,
    QUANTITIES,
    common_cells,
    flag_rates,
    macro_intervals,
)

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


def summarise(allres: pd.DataFrame, variants: list[str], *, n_boot: int, seed: int) -> dict:
    """Per variant, on the cells every variant (and the paper) fitted: macro figures over
    family groups with family-group bootstrap intervals, flagged counts and timings."""
    res = allres.assign(method=allres["variant"])
    names = ["paper", *variants]
    common = common_cells(res, names)
    boot = macro_intervals(common, names, differences=(("base", "flat"),), n_boot=n_boot, seed=seed)
    flags = flag_rates(common, names).set_index("method")
    own = flag_rates(res, names).set_index("method")
    rows = []
    for name in names:
        rec = {
            "variant": name,
            "doc": VARIANTS.get(name, {}).get("doc", "the paper's least-squares estimator"),
            "cells": int(flags.loc[name, "fitted"]),
            "flagged": int(flags.loc[name, "flagged"]),
            "fitted_own": int(own.loc[name, "fitted"]),
            "flagged_own": int(own.loc[name, "flagged"]),
            "seconds_per_cell": float(common.loc[common["method"] == name, "seconds"].median()),
        }
        for q in QUANTITIES:
            try:
                est, lo, hi = boot.interval("macro", q, name)
                rec[q] = {"estimate": est, "lower": lo, "upper": hi}
            except KeyError:
                rec[q] = None
        rows.append(rec)
    return {
        "schema": 2,
        "table": rows,
        "comparisons": json.loads(
            boot.table[boot.table["statistic"] != "macro"].to_json(orient="records")
        ),
        "common_cells": len(common) // len(names),
        "low_budget": LOW_BUDGET,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.9, "unit": "family group"},
    }


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
    ap.add_argument("--n-boot", type=int, default=2000, help="family-group bootstrap replicates")
    ap.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap")
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
    run = [v for v in VARIANTS if v in set(allres["variant"])] + [
        v for v in dict.fromkeys(allres["variant"]) if v not in VARIANTS and v != "paper"
    ]
    payload = summarise(allres, run, n_boot=args.n_boot, seed=args.boot_seed)
    payload.update(
        {
            "variants_defined": list(VARIANTS),
            "variants_run": run,
            "families": args.families,
            "grid": args.grid,
            "total_seconds": time.perf_counter() - t0,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": (
                f"{platform.platform()} / {os.cpu_count()} CPUs / {platform.python_version()}"
            ),
            "command": " ".join(["python", *sys.argv]),
        }
    )
    Path(f"{out}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    from readme_tables import ablation_table

    print(ablation_table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
