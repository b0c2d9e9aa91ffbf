"""The re-run of a flagged fit, by its flag: smaller steps always, or only when needed.

``hiscale.fit`` re-runs a flagged NUTS run once with ``retry_sampler``'s
settings: smaller steps (target acceptance ``max(1 - (1 - a) / 2, 0.99)``), a
warm-up of at least 1000 steps from the Laplace mass matrix and twice the
draws (the ``old`` re-run here). The usual advice (Stan's warning guide) is
narrower: divergences call for smaller steps, a low ESS or a high r-hat for
longer chains. The ``new`` re-run tests that: for a flag of r-hat or ESS
alone (no divergence, max-tree-depth hit, low E-BFMI or disagreeing chains;
:func:`draws_only`) it keeps the first run's target acceptance and tree
depth and takes the rest of ``retry_sampler``'s settings. This benchmark
fits the family at each seed once with the default settings, given
explicitly so nothing is re-run (``retry=False``); for every first run
flagged by r-hat or ESS alone it then times both re-runs in the same
process and records their seconds, flags, diagnostics and the median
new-run prediction at the family's largest run's last checkpoint. Other
flags would be re-run the same way under both rules, so only the old
re-run is made for them. One
untimed fit per setting first (compilation). Reads ``curves.csv``,
``curves_extra.csv`` and ``runs_extra.csv`` from the corpus folder (never
copied).

    python benchmarks/retry_rule.py ../shared/corpus --family gemstones --rows all \\
        --law h-term --seeds 0 1 2 3 4 5 6 7 --out benchmarks/results/retry_rule.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine, write_json

import hiscale
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.settings import THRESHOLDS, default_sampler, retry_sampler


def draws_only(d: dict) -> bool:
    """True when every failed check of diagnostics ``d`` is r-hat or (bulk, tail) ESS."""
    steps = (
        int(d["divergences"]) > THRESHOLDS["divergences"]
        or "max-tree-depth" in str(d.get("reasons", ""))  # a share of the draws: diagnose's text
        or float(d["bfmi_min"]) < THRESHOLDS["bfmi_min"]
        or float(d["chain_disagreement"]) > THRESHOLDS["chain_disagreement"]
    )
    return bool(d["flagged"]) and not steps


def new_rule(first, d: dict):
    """The re-run settings of the rule tested: same step size for an r-hat/ESS flag."""
    old = retry_sampler(first)
    if not draws_only(d):
        return old
    return replace(
        old, target_accept_prob=first.target_accept_prob, max_tree_depth=first.max_tree_depth
    )


def _summary(f, seconds: float, at) -> dict:
    d = f.diagnostics
    med = float(np.median(f.draws(*at)[1]))
    return {
        "seconds": round(seconds, 2),
        "flagged": bool(f.flagged),
        "reasons": str(d.get("reasons", "")),
        "rhat_max": round(float(d["rhat_max"]), 4),
        "ess_min": round(float(d["ess_min"])),
        "ess_tail_min": round(float(d["ess_tail_min"])),
        "divergences": int(d["divergences"]),
        "median": round(med, 5),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the fits and write the JSON (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="folder with curves.csv, curves_extra.csv")
    ap.add_argument("--family", default="gemstones")
    ap.add_argument("--law", default="h-term")
    ap.add_argument("--rows", choices=["all", "end"], default="all")
    ap.add_argument("--prior", default="flat")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--out", default=None, help="JSON path (stdout if omitted)")
    args = ap.parse_args(argv)
    hiscale.configure()
    frames = [
        pd.read_csv(args.corpus / f, low_memory=False) for f in ("curves.csv", "curves_extra.csv")
    ]
    runs_extra = pd.read_csv(args.corpus / "runs_extra.csv")
    frame = pd.concat([f[f["family"] == args.family] for f in frames])
    last = frame.sort_values("tokens").groupby("run").tail(1)
    top = last[last["params"] == last["params"].max()].iloc[0]
    at = (float(top["params"]), float(top["tokens"]))
    opts = FitOptions(rows="all", residual="ar1") if args.rows == "all" else FitOptions()
    first = default_sampler(opts)

    def one(sampler, seed):
        t0 = time.perf_counter()
        f = fit(frame, family=args.family, law=args.law, prior=args.prior, options=opts,
                runs_extra=runs_extra, seed=seed, sampler=sampler, retry=False)  # fmt: skip
        return f, time.perf_counter() - t0

    warmed = set()

    def timed(sampler, seed):
        if sampler not in warmed:  # untimed: compilation and program cache
            one(sampler, 10_000 + seed)
            warmed.add(sampler)
        return one(sampler, seed)

    rows = []
    for seed in args.seeds:
        f, sec = timed(first, seed)
        row = {"seed": seed, "first": _summary(f, sec, at)}
        if f.flagged:
            kind = "more draws" if draws_only(f.diagnostics) else "smaller steps"
            row["kind"] = kind
            old = retry_sampler(first)
            g, s = timed(old, seed)
            row["old_rerun"] = _summary(g, s, at)
            if kind == "more draws":
                g, s = timed(new_rule(first, f.diagnostics), seed)
                row["new_rerun"] = _summary(g, s, at)
            else:
                row["new_rerun"] = row["old_rerun"]  # the same settings
        print(row, flush=True)
        rows.append(row)
    flagged = [r for r in rows if "kind" in r]
    draws = [r for r in flagged if r["kind"] == "more draws"]

    def total(rule):
        return [
            round(r["first"]["seconds"] + (r[f"{rule}_rerun"]["seconds"] if "kind" in r else 0), 2)
            for r in rows
        ]

    summary = {
        "fits": len(rows),
        "first_flagged": len(flagged),
        "more_draws": len(draws),
        "still_flagged_old": sum(r["old_rerun"]["flagged"] for r in flagged),
        "still_flagged_new": sum(r["new_rerun"]["flagged"] for r in flagged),
        "rerun_seconds_old": [r["old_rerun"]["seconds"] for r in draws],
        "rerun_seconds_new": [r["new_rerun"]["seconds"] for r in draws],
        "fit_seconds_old": total("old"),
        "fit_seconds_new": total("new"),
        "mean_fit_seconds_old": round(float(np.mean(total("old"))), 2),
        "mean_fit_seconds_new": round(float(np.mean(total("new"))), 2),
        "median_change_pct": [
            round(100 * (r["new_rerun"]["median"] / r["old_rerun"]["median"] - 1), 3) for r in draws
        ],
    }
    result = {
        "benchmark": "retry_rule",
        "machine": machine(),
        "family": args.family,
        "law": args.law,
        "rows": args.rows,
        "prior": args.prior,
        "seeds": args.seeds,
        "first_settings": first.to_dict(),
        "fits": rows,
        "summary": summary,
    }
    print(summary)
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
