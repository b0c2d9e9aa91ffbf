"""Speed of ranking candidate runs with ``hiscale.plan`` (issue: 50 candidates <= 30 s).

Fits one family once (not timed with the ranking), then times
``hiscale.plan(fit, at=..., candidates=50 candidates, budget=...)`` — the ranked
table *and* the greedy budget sequence — ``--repeats`` times in one process.
The first call includes JAX compilation (reported as ``cold``); the median of
the others is the warm time. Candidates: 10 log-spaced sizes between the
family's smallest size and the target's ÷ 4, times 5 token multiples
(10, 20, 40, 80, 160 tokens per parameter). The target is the family's
largest-compute run, held out of the fit (as in the campaigns). Reads the
corpus from a path (never copied).

    python benchmarks/plan_speed.py ../shared/corpus/curves.csv --family overtrain-c4 \\
        --out benchmarks/results/plan_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from _machine import emit, machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--family", nargs="+", default=["overtrain-c4"])
    ap.add_argument("--prior", default="flat")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import hiscale
    from hiscale.planning.candidates import grid_candidates

    hiscale.configure()
    table = pd.read_csv(args.corpus, low_memory=False)
    results = []
    for family in args.family:
        rows = table[table["family"] == family]
        final = rows.sort_values("tokens").groupby("run").tail(1)
        compute = 6 * final["params"] * final["tokens"]
        target = final.loc[compute.idxmax()]
        train = rows[rows["run"] != target["run"]]
        at = (float(target["params"]), float(target["tokens"]))
        t0 = time.perf_counter()
        f = hiscale.fit(train, family=family, prior=args.prior, seed=0)
        fit_seconds = time.perf_counter() - t0
        sizes = np.geomspace(float(train["params"].min()), at[0] / 4, 10)
        cands = grid_candidates(sizes, [10, 20, 40, 80, 160])
        budget = 0.1 * 6 * at[0] * at[1]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            p = hiscale.plan(f, at=at, candidates=cands, budget=budget, seed=0)
            times.append(time.perf_counter() - t0)
        r = {
            "family": family,
            "prior": args.prior,
            "candidates": len(cands),
            "target": {"run": str(target["run"]), "params": at[0], "tokens": at[1]},
            "budget_flops": budget,
            "fit_seconds": round(fit_seconds, 2),
            "fit_flagged": bool(f.flagged),
            "plan_seconds": [round(t, 2) for t in times],
            "cold_seconds": round(times[0], 2),
            "warm_median_seconds": round(float(np.median(times[1:])), 2),
            "runs_chosen": len(p.runs),
        }
        print(r, flush=True)
        results.append(r)
    emit(
        {
            "command": "python benchmarks/plan_speed.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "target_seconds": 30,
            "results": results,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
