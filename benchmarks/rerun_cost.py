"""What a re-run of a flagged whole-curve fit costs, by the settings it re-runs with.

Fits one family's whole curves (h-term, flat prior, ``FitOptions(rows="all",
residual="ar1")``) once per seed with each of three settings, given explicitly
so that nothing is re-run: ``CURVE_SAMPLER`` (today's first run), the same step
size with twice the draws (``2x-draws``), and ``retry_sampler(CURVE_SAMPLER)``
(today's re-run: smaller steps and twice the draws). One untimed fit per
setting first (compilation). Records per fit the seconds, flag and its
reasons, r-hat, bulk and tail ESS and divergences: whether a flag of ESS or
r-hat alone is cleared by more draws as well as by smaller steps, and at what
cost. Reads ``curves.csv``, ``curves_extra.csv`` and ``runs_extra.csv`` from the
corpus folder (never copied).

    python benchmarks/rerun_cost.py ../shared/corpus --family gemstones --seeds 2 5 6 \\
        --out benchmarks/results/rerun_cost.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from _machine import machine, write_json

import hiscale
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.settings import CURVE_SAMPLER, retry_sampler


def main(argv: list[str] | None = None) -> dict:
    """Run the fits and write the JSON (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="folder with curves.csv, curves_extra.csv")
    ap.add_argument("--family", default="gemstones")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 5, 6])
    ap.add_argument("--out", default=None, help="JSON path (stdout if omitted)")
    args = ap.parse_args(argv)
    hiscale.configure()
    frames = [
        pd.read_csv(args.corpus / f, low_memory=False) for f in ("curves.csv", "curves_extra.csv")
    ]
    runs_extra = pd.read_csv(args.corpus / "runs_extra.csv")
    frame = pd.concat([f[f["family"] == args.family] for f in frames])
    opts = FitOptions(rows="all", residual="ar1")
    settings = {
        "curve": CURVE_SAMPLER,
        "2x-draws": replace(CURVE_SAMPLER, num_samples=2 * CURVE_SAMPLER.num_samples),
        "retry_sampler": retry_sampler(CURVE_SAMPLER),
    }

    def one(sampler, seed):
        return fit(frame, family=args.family, law="h-term", prior="flat", options=opts,
                   runs_extra=runs_extra, seed=seed, sampler=sampler)  # fmt: skip

    fits = []
    for name, sampler in settings.items():
        one(sampler, 1000)  # untimed: compilation
        for seed in args.seeds:
            t0 = time.perf_counter()
            f = one(sampler, seed)
            d = f.diagnostics
            fits.append({
                "settings": name, "seed": seed, "seconds": round(time.perf_counter() - t0, 2),
                "flagged": bool(f.flagged), "reasons": str(d.get("reasons", "")),
                "rhat_max": round(float(d["rhat_max"]), 4), "ess_min": round(float(d["ess_min"])),
                "ess_tail_min": round(float(d["ess_tail_min"])),
                "divergences": int(d["divergences"]),
            })  # fmt: skip
            print(fits[-1], flush=True)
    summary = {
        name: {
            "flagged": sum(r["flagged"] for r in fits if r["settings"] == name),
            "fits": sum(r["settings"] == name for r in fits),
            "seconds": [r["seconds"] for r in fits if r["settings"] == name],
            "ess_tail_min": [r["ess_tail_min"] for r in fits if r["settings"] == name],
        }
        for name in settings
    }
    result = {
        "machine": machine(), "family": args.family, "seeds": args.seeds, "law": "h-term",
        "prior": "flat", "settings": {k: v.to_dict() for k, v in settings.items()},
        "fits": fits, "summary": summary,
    }  # fmt: skip
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
