"""Warm fit time of two source trees (whole curves or end of run), measured in the same run.

For a code change that should make whole-curve fits faster (or must not make
them slower), each source tree (``--src LABEL=PATH``, the folder holding
``hiscale/``; the first is the baseline) fits each family in a fresh process
per seed: one untimed fit first (compilation, program cache), then the timed
``hiscale.fit(..., law, options=FitOptions(rows="all", residual="ar1"),
prior, seed)`` (``--rows end``: ``FitOptions()``, the end-of-run model; give
``--law chinchilla``). Trees alternate within each seed, so load drifts hit both.
Reports per family and tree the median seconds over seeds, the median ratio
to the baseline (paired by seed), leapfrog steps per draw, r-hat, flags, and
the median new-run prediction of the largest run's last checkpoint, so a
change that alters the posterior shows up beside its speed. Reads
``curves.csv``, ``curves_extra.csv`` and ``runs_extra.csv`` from the corpus
folder (never copied).

    git worktree add /tmp/base HEAD~1
    python benchmarks/curve_fit_speed.py ../shared/corpus --src before=/tmp/base/src \\
        after=src --families gpt3 gemstones --out benchmarks/results/curve_fit_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from _machine import machine, write_json

_CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
import hiscale
from hiscale.infer.fit import FitOptions, fit

corpus, family, law, prior, seed, rows = sys.argv[1:7]
hiscale.configure()
names = ("curves.csv", "curves_extra.csv")
frames = [pd.read_csv(f"{corpus}/{f}", low_memory=False) for f in names]
runs_extra = pd.read_csv(f"{corpus}/runs_extra.csv")
frame = pd.concat([f[f["family"] == family] for f in frames])
target = frame.sort_values("tokens").groupby("run").tail(1)
target = target[target["params"] == target["params"].max()].head(1)
opts = FitOptions(rows="all", residual="ar1") if rows == "all" else FitOptions()

def one(s):
    t0 = time.perf_counter()
    f = fit(frame, family=family, law=law, prior=prior, options=opts, runs_extra=runs_extra, seed=s)
    sec = time.perf_counter() - t0
    return f, sec

one(int(seed) + 1000)  # untimed: compilation and program cache
f, sec = one(int(seed))
print(json.dumps({
    "seconds": round(sec, 3), "rows": len(f.data),
    "steps_per_draw": round(float(np.asarray(f.dt["sample_stats"]["n_steps"]).mean()), 1),
    "rhat_max": round(float(f.diagnostics["rhat_max"]), 4),
    "divergences": int(f.diagnostics["divergences"]), "flagged": bool(f.flagged),
    "retried": getattr(f, "retried", ""),
    "predicted": float(np.median(f.new_run_draws(target, seed=int(seed))[:, 0])),
    "actual": float(target["loss"].iloc[0]), "hiscale": hiscale.__file__,
}))
"""


def _child(
    src: Path, corpus: Path, family: str, law: str, prior: str, seed: int, rows: str
) -> dict:
    """One fresh process on source tree ``src``: warm-up fit, then the timed fit."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), family, law, prior, str(seed), rows],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{src} {family} seed {seed} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = Path(r.pop("hiscale")).resolve()
    if not loaded.is_relative_to(src.resolve()):
        raise RuntimeError(f"--src {src}: the child imported hiscale from {loaded}")
    return r  # the tree is recorded by its label, not by a machine path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--src", nargs="+", required=True, help="LABEL=PATH, baseline first")
    ap.add_argument("--families", nargs="+", default=["gpt3", "gemstones"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--law", default="h-term")
    ap.add_argument("--prior", default="flat")
    ap.add_argument(
        "--rows",
        default="all",
        choices=["all", "end"],
        help="all: whole curves (FitOptions(rows='all', residual='ar1')); end: the "
        "end-of-run model (FitOptions(), give --law chinchilla)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    trees = [tuple(s.split("=", 1)) for s in args.src]
    bad = [s for s in args.src if "=" not in s]
    if bad:
        ap.error(f"--src: {bad[0]!r} is not LABEL=PATH")
    load0 = os.getloadavg()
    rows = []
    for family in args.families:
        for seed in args.seeds:
            for label, path in trees:
                r = _child(Path(path), args.corpus, family, args.law, args.prior, seed, args.rows)
                r.update(family=family, seed=seed, tree=label)
                print(r, flush=True)
                rows.append(r)
    base = trees[0][0]
    summary = []
    for family in args.families:
        ref = {r["seed"]: r["seconds"] for r in rows if r["family"] == family and r["tree"] == base}
        for label, _ in trees:
            rs = [r for r in rows if r["family"] == family and r["tree"] == label]
            summary.append({
                "family": family, "tree": label, "rows": rs[0]["rows"],
                "median_seconds": float(np.median([r["seconds"] for r in rs])),
                "seconds": [r["seconds"] for r in rs],
                "median_ratio_to_baseline": float(
                    np.median([r["seconds"] / ref[r["seed"]] for r in rs])
                ),
                "steps_per_draw": float(np.median([r["steps_per_draw"] for r in rs])),
                "rhat_max": max(r["rhat_max"] for r in rs),
                "flagged": sum(r["flagged"] for r in rs),
                "median_predicted": float(np.median([r["predicted"] for r in rs])),
                "actual": rs[0]["actual"],
            })  # fmt: skip
    lines = [
        "| family | tree | rows | median s (per seed) | ratio to baseline | steps/draw | "
        "flagged | median prediction (actual) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['family']} | {s['tree']} | {s['rows']} | {s['median_seconds']:.1f} "
            f"({', '.join(f'{x:.1f}' for x in s['seconds'])}) | "
            f"{s['median_ratio_to_baseline']:.2f} | {s['steps_per_draw']:.0f} | "
            f"{s['flagged']}/{len(args.seeds)} | {s['median_predicted']:.4f} "
            f"({s['actual']:.4f}) |"
        )
    print("\n".join(lines))
    write_json(
        {
            "machine": machine(),
            "command": "python benchmarks/curve_fit_speed.py " + " ".join(argv or sys.argv[1:]),
            "trees": dict(trees),
            "law": args.law,
            "rows": args.rows,
            "prior": args.prior,
            "fits": rows,
            "summary": summary,
            "table": "\n".join(lines),
            "load_average": {"start": load0, "end": os.getloadavg()},
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
