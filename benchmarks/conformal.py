"""Calibration ablation: no recalibration vs split-conformal (global, by k) vs the discrepancy term.

Reads a backtest cells CSV (``benchmarks/bayes_grid.py --out X`` writes
``X_cells.csv``) and, for each method given, recalibrates its intervals by
nested leave-one-group-out split conformal (``hiscale.backtesting.conformal``):

* ``none``: the method's own intervals;
* ``conformal``: one factor from the other groups' cells;
* ``conformal-k``: one factor per bucket of model sizes used (1, 2-3, 4+).

A method such as ``bayes-disc`` in the same CSV is the discrepancy-term row.
Every figure is on the *common cells* of the methods given, with the
cell-level coverage of :mod:`hiscale.backtesting.conformal` (the cell's mean
actual inside the mean bounds), per family and macro (family groups count
once, 90% family-group bootstrap intervals), beside the mean relative width
and the interval score of the 80% intervals (lower is better: width plus
``2 / 0.2`` times the miss).

Usage::

    python benchmarks/conformal.py /tmp/bench/bayes_grid_quick_all_cells.csv \
        --methods bayes bayes-flat bayes-disc --out benchmarks/results/conformal_quick.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
from _machine import write_json

from hiscale.backtesting.conformal import recalibrate
from hiscale.backtesting.scores import common_cells, group_bootstrap

VARIANTS = ("none", "conformal", "conformal-k")


def _variant_rows(common: pd.DataFrame, method: str, variant: str) -> pd.DataFrame:
    """Cell-level coverage, width and interval score of one (method, variant)."""
    r = recalibrate(common, method, (0.8, 0.5), by="k" if variant == "conformal-k" else None)
    out = pd.DataFrame({"group": r["group"], "family": r["family"]})
    y = r["actual"].to_numpy(float)
    for tag in ("80", "50"):
        suffix = "" if variant == "none" else "_conf"
        lo = r[f"lower{tag}{suffix}"].to_numpy(float)
        hi = r[f"upper{tag}{suffix}"].to_numpy(float)
        cov = r[f"covered{tag}_cell" if variant == "none" else f"covered{tag}_conf"]
        out[f"cov{tag}"] = cov.to_numpy(float)
        a = 1 - int(tag) / 100
        miss = np.clip(lo - y, 0, None) + np.clip(y - hi, 0, None)
        out[f"width{tag}"] = 100 * (hi - lo) / y
        out[f"score{tag}"] = 100 * ((hi - lo) + (2 / a) * miss) / y
    if variant != "none":
        out["q80"] = r["q80"].to_numpy(float)
    out["method"] = f"{method}+{variant}" if variant != "none" else method
    return out


def summarise(cells: pd.DataFrame, methods: list[str], n_boot: int, seed: int) -> dict:
    """Per-family and macro figures for every (method, variant) on the common cells."""
    common = common_cells(cells, methods)
    parts = []
    for m in methods:
        for v in VARIANTS if not m.endswith("-disc") else ("none",):
            parts.append(_variant_rows(common, m, v))
    t = pd.concat(parts, ignore_index=True)
    cols = ["cov80", "cov50", "width80", "score80"]
    fam = t.groupby(["method", "group", "family"])[cols].mean()
    per_group = fam.groupby(["method", "group"]).mean()
    names = list(dict.fromkeys(t["method"]))
    gv = per_group.unstack("method")
    stats = {
        ("macro", c, n): (lambda df, c=c, n=n: df[(c, n)].to_numpy()) for c in cols for n in names
    }
    boot = group_bootstrap(gv, stats, n_boot=n_boot, seed=seed, level=0.9)
    per_family = fam.reset_index()
    within = per_family[(per_family["cov80"] >= 0.6) & (per_family["cov80"] <= 0.95)]
    return {
        "cells": int((common["method"] == methods[0]).sum()),
        "families": sorted(set(common["family"])),
        "groups": int(gv.shape[0]),
        "macro": json.loads(boot.table.to_json(orient="records")),
        "per_family": json.loads(per_family.round(4).to_json(orient="records")),
        "families_cov80_in_60_95": {
            n: f"{int((within['method'] == n).sum())}/{int((per_family['method'] == n).sum())}"
            for n in names
        },
    }


def table(js: dict) -> str:
    """Markdown: one row per (method, variant), macro figures with intervals."""
    rec = {(r["quantity"], r["method"]): r for r in js["macro"]}
    names = list(dict.fromkeys(r["method"] for r in js["macro"]))

    def ci(q, n, nd):
        r = rec[(q, n)]
        return f"{r['estimate']:.{nd}f} [{r['lower']:.{nd}f}, {r['upper']:.{nd}f}]"

    out = [
        "| method + calibration | 80% coverage | 50% coverage | 80% width (%) | "
        "80% interval score | families with 80% coverage in 60-95% |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        out.append(
            f"| {n} | {ci('cov80', n, 3)} | {ci('cov50', n, 3)} | {ci('width80', n, 2)} | "
            f"{ci('score80', n, 2)} | {js['families_cov80_in_60_95'][n]} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help="cells CSV of benchmarks/bayes_grid.py")
    ap.add_argument("--methods", nargs="+", default=["bayes", "bayes-flat"])
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cells = pd.read_csv(args.cells)
    js = summarise(cells, args.methods, args.n_boot, args.seed)
    js.update(
        {
            "command": " ".join(["python", *sys.argv]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "coverage": "cell level: the cell's mean actual loss inside its mean bounds",
            "macro": js["macro"],
        }
    )
    write_json(js, args.out)
    print(table(js))
    return 0


if __name__ == "__main__":
    sys.exit(main())
