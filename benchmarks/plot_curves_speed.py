"""Time of the curves figure of a whole-curve fit on two source trees, measured in the same run.

``hiscale.plots.plot_curves(rows, fit, at=...)`` draws, for every run the fit
saw, the law along the run's schedule times the run's offset; on a family with
many runs that per-run work is most of the figure's time. One whole-curve fit
(h-term, flat prior, ``FitOptions(rows="all", residual="ar1")``, seed 0) is made
once by the first tree and saved (``--fit PATH``; reused if it exists); each tree
(``--src LABEL=PATH``, the folder holding ``hiscale/``, the baseline first) then
loads it in a fresh process, draws the figure once untimed and ``--repeats``
times timed. Processes alternate between trees ``--rounds`` times, so load
drifts hit both; reports per tree the median over all timed figures and the
ratio to the baseline. Reads the corpus folder's ``curves.csv``,
``curves_extra.csv`` and ``runs_extra.csv`` (never copied).

    git worktree add /tmp/base HEAD~1
    python benchmarks/plot_curves_speed.py ../shared/corpus --family misfitting \\
        --src before=/tmp/base/src after=src --fit /tmp/misfitting.nc \\
        --out benchmarks/results/plot_curves_speed.json
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
import json, os, sys, time
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import hiscale
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.result import load_fit
from hiscale.plots import plot_curves

corpus, family, path, repeats = sys.argv[1:5]
hiscale.configure()
names = ("curves.csv", "curves_extra.csv")
frames = [pd.read_csv(f"{corpus}/{f}", low_memory=False) for f in names]
frame = pd.concat([f[f["family"] == family] for f in frames])
if not os.path.exists(path):
    runs_extra = pd.read_csv(f"{corpus}/runs_extra.csv")
    opts = FitOptions(rows="all", residual="ar1")
    fit(frame, family=family, law="h-term", prior="flat", options=opts, runs_extra=runs_extra,
        seed=0).save(path)
f = load_fit(path)
last = frame.sort_values("tokens").groupby("run").tail(1)
big = last[last["params"] == last["params"].max()].iloc[0]
at = (float(big["params"]), float(big["tokens"]))
plt.close(plot_curves(frame, f, at=at))  # untimed: compilation, imports
times = []
for _ in range(int(repeats)):
    t0 = time.perf_counter()
    fig = plot_curves(frame, f, at=at)
    times.append(time.perf_counter() - t0)
    plt.close(fig)
print(json.dumps({"seconds": times, "runs": int(f.data["run"].nunique()),
                  "hiscale": hiscale.__file__}))
"""


def _child(src: Path, corpus: Path, family: str, fit_path: Path, repeats: int) -> dict:
    """One fresh process on source tree ``src``: an untimed figure, then the timed ones."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), family, str(fit_path), str(repeats)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{src} {family} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = Path(r.pop("hiscale")).resolve()
    if not loaded.is_relative_to(src.resolve()):
        raise RuntimeError(f"--src {src}: the child imported hiscale from {loaded}")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--src", nargs="+", required=True, help="LABEL=PATH, baseline first")
    ap.add_argument("--family", default="misfitting")
    ap.add_argument("--fit", type=Path, required=True, help="saved fit (made once if missing)")
    ap.add_argument("--repeats", type=int, default=3, help="timed figures per process")
    ap.add_argument("--rounds", type=int, default=2, help="processes per tree, alternating")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    bad = [s for s in args.src if "=" not in s]
    if bad:
        ap.error(f"--src: {bad[0]!r} is not LABEL=PATH")
    trees = [tuple(s.split("=", 1)) for s in args.src]
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label, _ in trees}
    runs = None
    for _ in range(args.rounds):
        for label, path in trees:
            r = _child(Path(path), args.corpus, args.family, args.fit, args.repeats)
            times[label] += r["seconds"]
            runs = r["runs"]
            print(label, [round(t, 2) for t in r["seconds"]], flush=True)
    base = float(np.median(times[trees[0][0]]))
    summary = [
        {
            "tree": label,
            "median_seconds": float(np.median(times[label])),
            "seconds": times[label],
            "ratio_of_medians": float(np.median(times[label])) / base,
        }
        for label, _ in trees
    ]
    print(f"| tree | {args.family} ({runs} runs): median s (all timed figures) | ratio |")
    print("|---|---|---|")
    for s in summary:
        spread = f"{min(s['seconds']):.1f}–{max(s['seconds']):.1f}"
        print(
            f"| {s['tree']} | {s['median_seconds']:.1f} ({spread}) | {s['ratio_of_medians']:.2f} |"
        )
    write_json(
        {
            "machine": machine(),
            "command": "python benchmarks/plot_curves_speed.py " + " ".join(argv or sys.argv[1:]),
            "trees": {label: Path(p).name for label, p in trees},
            "family": args.family,
            "runs": runs,
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "summary": summary,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
