"""Cold `hiscale predict` against importing its libraries, measured in the same run.

Usage::

    python benchmarks/predict_cold.py [CORPUS] [--runs 5] [--family gpt3]
        [--out benchmarks/results/predict_cold.json]

Runs ``--runs`` rounds of two fresh processes each, interleaved (the order
alternates from round to round):

* ``import``: ``python -c "import jax, numpyro, arviz, pandas, scipy"``;
* ``predict``: ``python -m hiscale predict CORPUS --family gpt3 <175B, 300B
  tokens> --prior flat --quiet`` with the on-disk caches warm (one untimed
  run first fills them).

With ``--baseline-src DIR`` (the ``src`` of another checkout, e.g. from ``git
archive``), a third process per round runs that checkout's ``hiscale predict``
(``predict_baseline``, with its own compilation cache next to DIR), to show
what a change bought in the same run.

Wall-clock time of each process from start to exit, medians and their ratio
(the issue's target: predict <= 1.5 x import, goal 1.2 x). The load average is
recorded with every process, so a measurement on a shared machine says so.
One more fresh process (not in the medians) runs the same prediction in-process
and splits it into phases: importing, reading the curves, MAP searches,
starting points, NUTS (preparing the stored program: loading or tracing and
compiling, then sampling), diagnostics, prediction. Writes JSON and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BARE = "import jax, numpyro, arviz, pandas, scipy"

#: In-process phase split of one prediction (run in a fresh process).
PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import hiscale
hiscale.configure()
import hiscale.cli
from hiscale.cli import predict as _p, fit as _f, report as _r  # noqa: F401
from hiscale.data.curves import load_curves
from hiscale.infer import fit as fitmod, nuts
from hiscale.infer.result import Fit
t1 = time.perf_counter()
seconds = {"import": t1 - t0}

def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
    return wrapper

for name in ("map_estimate", "paper_start", "dispersed_inits", "run_nuts", "diagnose"):
    setattr(fitmod, name, timed(name, getattr(fitmod, name)))
Fit.predict = timed("predict", Fit.predict)
import hiscale.data.curves as dc
dc.load_curves = timed("load_curves", dc.load_curves)
t2 = time.perf_counter()
rc = hiscale.cli.main(sys.argv[1:])
seconds["main"] = time.perf_counter() - t2
prep = nuts.preparation_seconds()
seconds["nuts_prepare"] = prep.get("nuts", 0.0)
seconds["nuts_sampling"] = seconds.get("run_nuts", 0.0) - prep.get("nuts", 0.0) - prep.get(
    "constrain", 0.0
)
seconds["prepare_by_program"] = prep
print(json.dumps(seconds), file=sys.stderr)
"""


def _predict_args(corpus: str, family: str) -> list[str]:
    """``hiscale predict`` arguments for the 175B / 300B target (either CLI spelling)."""
    env = {**os.environ}
    help_text = subprocess.run(
        [sys.executable, "-m", "hiscale", "predict", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    target = (
        ["--at", "1.75e11", "3e11"]
        if "--at" in help_text
        else ["--params", "1.75e11", "--tokens", "3e11"]
    )
    return [corpus, "--family", family, *target, "--prior", "flat", "--quiet"]


def _timed(cmd: list[str], env: dict | None = None) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return {"seconds": seconds, "load1": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    ap.add_argument("corpus", nargs="?", default=default)
    ap.add_argument("--runs", type=int, default=5, help="rounds (>= 3)")
    ap.add_argument("--family", default="gpt3")
    ap.add_argument("--out", default=str(HERE / "results" / "predict_cold.json"))
    ap.add_argument("--baseline-src", help="also time the hiscale package in this src directory")
    args = ap.parse_args(argv)
    if args.runs < 3:
        ap.error("--runs must be at least 3")
    predict = [sys.executable, "-m", "hiscale", "predict", *_predict_args(args.corpus, args.family)]
    bare = [sys.executable, "-c", BARE]
    order = [("import", bare, None), ("predict", predict, None)]
    if args.baseline_src:
        src = Path(args.baseline_src).resolve()
        # its own compilation cache: it must not profit from entries the new code wrote
        cache = src.parent / ".predict_cold_jax_cache"
        env = {**os.environ, "PYTHONPATH": str(src), "HISCALE_JAX_CACHE": str(cache)}
        order.append(("predict_baseline", predict, env))
    for _, cmd, env in order:
        _timed(cmd, env)  # fills the on-disk caches if they are cold, and the OS file cache
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in order}
    for r in range(args.runs):
        for name, cmd, env in order if r % 2 == 0 else order[::-1]:
            runs[name].append(_timed(cmd, env))
        print(
            f"round {r + 1}: import {runs['import'][-1]['seconds']:.2f} s, "
            f"predict {runs['predict'][-1]['seconds']:.2f} s "
            f"(load {runs['predict'][-1]['load1']:.1f})",
            file=sys.stderr,
        )
    proc = subprocess.run(
        [sys.executable, "-c", PHASES, "predict", *predict[4:]],
        capture_output=True,
        text=True,
        check=True,
    )
    phases = json.loads(proc.stderr.strip().splitlines()[-1])
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    sys.path.insert(0, str(HERE))
    from _machine import machine

    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "commands": {"import": " ".join(bare[1:]), "predict": " ".join(predict[1:])},
        "runs": runs,
        "median_seconds": med,
        "ratio_predict_to_import": med["predict"] / med["import"],
        "ratio_baseline_to_import": (
            med["predict_baseline"] / med["import"] if "predict_baseline" in med else None
        ),
        "baseline_src": args.baseline_src,
        "target_ratio": 1.5,
        "goal_ratio": 1.2,
        "load1_median": statistics.median(x["load1"] for v in runs.values() for x in v),
        "phases_seconds": phases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    return 0


def markdown(out: dict) -> str:
    """The result as a markdown table (README)."""
    med, ph = out["median_seconds"], out["phases_seconds"]
    rows = [
        "| what | median of fresh processes |",
        "|---|---|",
        f'| `python -c "{BARE}"` | {med["import"]:.2f} s |',
        f"| `hiscale predict` gpt3 175B/300B, flat prior, caches warm | {med['predict']:.2f} s |",
        f"| ratio (target ≤ 1.5, goal ≤ 1.2) | **{out['ratio_predict_to_import']:.2f}** |",
    ]
    if out.get("ratio_baseline_to_import") is not None:
        rows += [
            f"| same, baseline checkout | {med['predict_baseline']:.2f} s |",
            f"| baseline ratio | {out['ratio_baseline_to_import']:.2f} |",
        ]
    rows += [
        "",
        "| phase of one `hiscale predict` (one more process) | seconds |",
        "|---|---|",
    ]
    for key in (
        "import",
        "load_curves",
        "map_estimate",
        "paper_start",
        "dispersed_inits",
        "nuts_prepare",
        "nuts_sampling",
        "diagnose",
        "predict",
        "main",
    ):
        if key in ph:
            rows.append(f"| {key} | {ph[key]:.2f} |")
    m = out["machine"]
    rows.append("")
    rows.append(
        f"{out['date']}, {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}; "
        f"{len(out['runs']['predict'])} rounds, load average (1 min) median "
        f"{out['load1_median']:.1f}."
    )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
