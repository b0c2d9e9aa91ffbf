"""Whole-curve fits with and without the row budget (``FitOptions.max_curve_rows``).

For each family, ``hiscale.fit(..., law="h-term", options=FitOptions(rows="all",
residual="ar1", max_curve_rows=B))`` for B in ``--budgets`` (0: no budget, the
32-rows-per-run cap alone), interleaved, seeds ``--seeds``. One untimed fit per
budget first (compilation), so every timed fit is warm. Reports per family
and budget the median seconds, the median ratio to the first budget (the
baseline, measured in the same run), leapfrog steps per draw, r-hat, flags,
and the median new-run prediction of the largest run's last checkpoint (the
difference to the baseline shows what the thinning costs). Reads
``curves.csv``, ``curves_extra.csv`` and ``runs_extra.csv`` from the corpus
folder (never copied).

    python benchmarks/curve_fit_thinning.py ../shared/corpus --families gemstones gpt3 \\
        --out benchmarks/results/curve_fit_thinning.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import emit, machine


def _one(frame, family, target, budget, seed, prior, runs_extra) -> dict:
    """Fit one family with one row budget and seed; time it and predict the target."""
    from hiscale.infer.fit import FitOptions, fit

    opts = FitOptions(rows="all", residual="ar1", max_curve_rows=budget)
    t0 = time.perf_counter()
    f = fit(frame, family=family, law="h-term", prior=prior, options=opts,
            runs_extra=runs_extra, seed=seed)  # fmt: skip
    seconds = time.perf_counter() - t0
    steps = float(np.asarray(f.dt["sample_stats"]["n_steps"]).mean())
    pred = float(np.median(f.new_run_draws(target, seed=seed)[:, 0]))
    return {
        "family": family, "budget": budget, "seed": seed,
        "seconds": round(seconds, 2), "rows": len(f.data),
        "runs": int(f.data["run"].nunique()), "steps_per_draw": round(steps, 1),
        "rhat_max": round(f.diagnostics["rhat_max"], 4),
        "divergences": int(f.diagnostics["divergences"]), "flagged": bool(f.flagged),
        "predicted": pred, "actual": float(target["loss"].iloc[0]),
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--families", nargs="+", default=["gemstones", "gpt3"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[0, 512])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--prior", default="flat")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import hiscale

    hiscale.configure()
    names = ("curves.csv", "curves_extra.csv")
    frames = [pd.read_csv(args.corpus / f, low_memory=False) for f in names]
    runs_extra = pd.read_csv(args.corpus / "runs_extra.csv")
    fits, summary = [], []
    for family in args.families:
        frame = pd.concat([f[f["family"] == family] for f in frames])
        target = frame.sort_values("tokens").groupby("run").tail(1)
        target = target[target["params"] == target["params"].max()].head(1)

        for b in args.budgets:  # compile each budget's shapes once, untimed
            _one(frame, family, target, b, args.seeds[0], args.prior, runs_extra)
        rows = []
        for seed in args.seeds:
            for b in args.budgets:
                r = _one(frame, family, target, b, seed, args.prior, runs_extra)
                print(r, flush=True)
                rows.append(r)
        fits += rows
        df = pd.DataFrame(rows)
        b0 = args.budgets[0]
        for b in args.budgets:
            d = df[df["budget"] == b].set_index("seed")
            ref = df[df["budget"] == b0].set_index("seed")
            summary.append({
                "family": family, "budget": b, "rows": int(d["rows"].iloc[0]),
                "runs": int(d["runs"].iloc[0]),
                "median_seconds": float(d["seconds"].median()),
                "median_ratio_to_baseline": float((d["seconds"] / ref["seconds"]).median()),
                "steps_per_draw": float(d["steps_per_draw"].median()),
                "flagged": int(d["flagged"].sum()), "fits": len(d),
                "median_prediction": float(d["predicted"].median()),
                "prediction_change_pct": float(
                    (d["predicted"].median() / ref["predicted"].median() - 1) * 100
                ),
                "actual": float(d["actual"].iloc[0]),
            })  # fmt: skip
    print(pd.DataFrame(summary).to_string(index=False))
    emit(
        {
            "command": "python benchmarks/curve_fit_thinning.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "summary": summary,
            "fits": fits,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
