"""Speed of the Bayesian engine (medians of repeated runs, compile vs sampling).

Usage::

    python benchmarks/speed.py [CORPUS] [--repeats 3] [--skip-prior] [--skip-grid]
        [--out benchmarks/results/speed.json]

Measures, on this machine:

* ``family_fit``: one gpt3 fit with the bundled prior + prediction of the
  175B target, cold (first call in the process: includes XLA compilation,
  unless the persistent compilation cache already holds it) and warm
  (median of ``repeats``), with MAP / NUTS / predict split out;
* ``paper_fit``: the paper estimator on the same rows (baseline in the same run);
* ``population_prior``: building the population prior from scratch (step-1
  cache disabled), median of ``repeats``; step 1 and step 2 separately;
* ``bayes_grid_one_family``: the paper grid of gpt3 with ``bayes`` (k = 1
  included), total seconds, and how much of it went into preparing the
  compiled programs (one per shape bucket; loaded from disk when stored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hiscale
from hiscale.backtesting.paper import fit_paper
from hiscale.backtesting.runner import backtest
from hiscale.data.curves import load_curves
from hiscale.infer.fit import fit
from hiscale.infer.nuts import preparation_seconds
from hiscale.population import build_prior
from hiscale.priors.prior import load_prior


def _time_fit(curves, prior, seed):
    t0 = time.perf_counter()
    f = fit(curves, family="gpt3", prior=prior, seed=seed)
    t1 = time.perf_counter()
    f.predict((1.75e11, 3.0e11))
    t2 = time.perf_counter()
    return {
        "total": t2 - t0,
        "map": f.timings["map_seconds"],
        "nuts": f.timings["nuts_seconds"],
        "predict": t2 - t1,
        "rhat_max": f.diagnostics["rhat_max"],
    }


def main(argv=None) -> int:
    hiscale.configure()  # first: 64-bit floats and host devices for JAX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    ap.add_argument("corpus", nargs="?", default=default)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-prior", action="store_true")
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    args = ap.parse_args(argv)
    curves = load_curves(args.corpus)
    gpt3 = curves.family("gpt3")
    prior = load_prior("corpus-v1")
    out: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.platform()} / {os.cpu_count()} CPUs / {platform.python_version()}",
        "repeats": args.repeats,
    }
    cold = _time_fit(gpt3, prior, 0)
    warm = [_time_fit(gpt3, prior, s) for s in range(1, args.repeats + 1)]
    f = gpt3.frame
    t_paper = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit_paper(f["params"], f["tokens"], f["loss"])
        t_paper.append(time.perf_counter() - t0)
    out["family_fit"] = {
        "cold": cold,
        "warm_median": {k: statistics.median(w[k] for w in warm) for k in warm[0]},
        "warm_runs": warm,
        "compile_seconds_estimate": cold["total"] - statistics.median(w["total"] for w in warm),
    }
    out["paper_fit_median_seconds"] = statistics.median(t_paper)
    out["ratio_bayes_warm_to_paper"] = (
        out["family_fit"]["warm_median"]["total"] / out["paper_fit_median_seconds"]
    )
    print(json.dumps(out["family_fit"]["warm_median"], indent=1))
    if not args.skip_prior:
        runs = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["HISCALE_CACHE"] = tmp
                t0 = time.perf_counter()
                p = build_prior(curves, seed=0, use_cache=False)
                runs.append({"total": time.perf_counter() - t0, **p.meta["seconds"]})
            print(f"prior build {r + 1}: {runs[-1]['total']:.1f}s", file=sys.stderr)
        os.environ.pop("HISCALE_CACHE", None)
        out["population_prior"] = {
            "median_total": statistics.median(x["total"] for x in runs),
            "median_step1": statistics.median(x["step1"] for x in runs),
            "median_step2": statistics.median(x["step2"] for x in runs),
            "runs": runs,
        }
    if not args.skip_grid:
        before = preparation_seconds()
        t0 = time.perf_counter()
        res = backtest(curves, families=["gpt3"], methods=["bayes"], grid="paper", include_k1=True)
        total = time.perf_counter() - t0
        prep = {k: v - before.get(k, 0.0) for k, v in preparation_seconds().items()}
        out["bayes_grid_one_family"] = {
            "family": "gpt3",
            "cells": len(res),
            "total_seconds": total,
            "median_cell_seconds": float(res["seconds"].median()),
            "sum_cell_seconds": float(res["seconds"].sum()),
            # loading or tracing + compiling the stored programs, per program, over the grid
            "preparation_seconds": prep,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "family_fit"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
