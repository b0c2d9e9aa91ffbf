r"""The local fit (``FitOptions(local_to, local_sd)``) against the ordinary fit on real families.

For each family: the target is its largest-compute run (its final loss); the
fit uses every other run (``all``) and, with ``--random K``, ``K`` random
subsets of them costing at most ``--budget`` of the target's FLOPs (the
planner backtest's budget rule). Each selection is fitted with the ordinary
engine (``local_sd = 0``) and with a local fit for every ``--local-sd``, all
under the family's leave-one-group-out prior (no fit borrows from the family
it predicts). Scores: ARE (%) of the median, whether the 80% new-run interval
covers the target, and its relative width; macro over family groups with
group-bootstrap 90% intervals, and the difference local minus ordinary on the
same cells. Prints one JSON document (scores only)::

    python benchmarks/local_fit.py ../shared/corpus/curves.csv \
        --family overtrain-c4 chinchilla --local-sd 0.005 0.01 --random 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _fit_score(curves, family, runs, target, prior, sd, args):
    """Fit ``runs`` (local to ``target`` when ``sd > 0``) and score the target (plan_backtest's)."""
    from plan_backtest import _fit, _score

    args.prior_obj, args.local_sd = prior, sd
    t0 = time.perf_counter()
    s = _score(_fit(curves, family, runs, args, target), target)
    return {**s, "covered80": float(s["covered80"]), "seconds": time.perf_counter() - t0}


def run_family(curves, family, args) -> list[dict]:
    """Every selection and local_sd for one family: one row per (selection, sd)."""
    from plan_backtest import _prior, _runs_table, _within

    table = _runs_table(curves.family(family).frame)
    ti = int(table["flops"].idxmax())
    target = table.iloc[ti].to_dict()
    pool = table.drop(index=ti).reset_index(drop=True)
    prior, _ = _prior(curves, family, args)
    selections = {"all": pool["label"].tolist()}
    for r in range(args.random):
        order = np.random.default_rng(args.seed + 1000 + r).permutation(len(pool))
        idx = _within(order, pool, args.budget * target["flops"])
        selections[f"random{r}"] = pool["label"].iloc[idx].tolist()
    rows = []
    for name, runs in selections.items():
        for sd in [0.0, *args.local_sd]:
            s = _fit_score(curves, family, runs, target, prior, sd, args)
            rows.append(
                {"family": family, "selection": name, "n_runs": len(runs), "local_sd": sd, **s}
            )
            print(json.dumps(rows[-1], default=float), file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], groups: dict[str, str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Macro over groups per (selection kind, local_sd), and local minus ordinary."""
    import pandas as pd

    from hiscale.backtesting.scores import group_bootstrap

    t = pd.DataFrame(rows)
    t["kind"] = np.where(t["selection"] == "all", "all", "random")
    t["group"] = t["family"].map(lambda f: groups.get(f, f))
    out = []
    for kind, tk in t.groupby("kind"):
        wide = tk.pivot_table(
            index=["group", "family", "selection"],
            columns="local_sd",
            values=["are", "covered80", "width80"],
        )
        per_group = wide.groupby(level=["group", "family"]).mean().groupby(level="group").mean()
        sds = sorted(tk["local_sd"].unique())
        stats = {}
        for sd in sds:
            for q in ("are", "covered80", "width80"):
                stats[("macro", q, f"local_sd={sd:g}")] = lambda df, q=q, sd=sd: df[
                    (q, sd)
                ].to_numpy()
                if sd > 0:
                    stats[("local - ordinary", q, f"local_sd={sd:g}")] = lambda df, q=q, sd=sd: (
                        df[(q, sd)].to_numpy() - df[(q, 0.0)].to_numpy()
                    )
        b = group_bootstrap(per_group, stats, n_boot=n_boot, seed=seed, level=0.9)
        for r in b.table.to_dict(orient="records"):
            out.append({"selection": kind, **r})
    return {"groups": sorted(set(t["group"])), "cells": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus", nargs="?", default=None)
    p.add_argument(
        "--family",
        nargs="+",
        default=[
            "overtrain-c4",
            "chinchilla",
            "misfitting",
            "gemstones-cooldown",
            "gpt2-datablations-contour-c4",
            "overtrain-rpj",
            "overtrain-rw",
        ],
    )
    p.add_argument("--local-sd", type=float, nargs="+", default=[0.005, 0.01])
    p.add_argument(
        "--random", type=int, default=0, help="random subsets per family (0: all runs only)"
    )
    p.add_argument("--budget", type=float, default=0.3, help="random subsets' FLOPs / target's")
    p.add_argument("--prior", default="loo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-warmup", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=750)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import os

    args.corpus = args.corpus or os.environ.get("HISCALE_CORPUS")
    if not args.corpus:
        p.error("give the corpus path or set HISCALE_CORPUS")
    import hiscale

    hiscale.configure()
    from _machine import emit, machine

    from hiscale.data.curves import family_groups

    curves = hiscale.load_curves(args.corpus)
    rows = [r for fam in args.family for r in run_family(curves, fam, args)]
    result = {
        "benchmark": "local_fit",
        "command": "python benchmarks/local_fit.py " + " ".join(argv or sys.argv[1:]),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("corpus", "prior_obj")},
        "rows": rows,
        "summary": summarise(rows, family_groups(curves)),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    sys.exit(main())
