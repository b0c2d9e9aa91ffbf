"""Memory mappings of one long-lived process that compiles many samplers, with and without release.

A long backtest in one process compiles a NUTS program per new shape and
setting; each compiled XLA CPU executable keeps ~1,000-2,000 memory mappings,
and Linux allows ``vm.max_map_count`` (65,530) per process: one in-process
``sub`` grid backtest stopped with "LLVM compilation error: Cannot allocate
memory" after ~1,200 cells. ``hiscale.infer.nuts.release_if_crowded`` drops
the compiled programs when the process holds ``MAP_HEADROOM`` of the limit.

This script fits a small simulated family ``--programs`` times in one fresh
process per mode, each fit with different sampler draws (a new compiled
program each time), and records the mapping count after every fit:

* ``no-release``: ``MAP_HEADROOM = inf`` (the behaviour before the guard);
* ``guard``: the default ``MAP_HEADROOM``.

The first mode compiles every program (and stores it on disk); the second
loads them from the disk caches. Same draws in both modes (checked: the last
fit's posterior mean of ``u_a`` is reported per mode).

    python benchmarks/memory_maps.py --programs 40 --out benchmarks/results/memory_maps.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine, write_json

_CHILD = r"""
import json, math, sys, time
import numpy as np
import hiscale
hiscale.configure()
from engine_sim import simulate_family
from hiscale.infer import nuts
from hiscale.infer.settings import SamplerSettings

mode, n = sys.argv[1], int(sys.argv[2])
if mode == "no-release":
    nuts.MAP_HEADROOM = math.inf
data = simulate_family(seed=4)
rows = []
for i in range(n):
    t0 = time.perf_counter()
    f = hiscale.fit(data, prior="flat", seed=0,
                    sampler=SamplerSettings(num_warmup=20, num_samples=100 + i))
    held, limit = nuts.memory_map_usage()
    rows.append({"fit": i, "maps": held, "seconds": round(time.perf_counter() - t0, 2),
                 "u_a_mean": float(np.mean(f.posterior["u_a"]))})
print(json.dumps({"limit": limit, "headroom": nuts.MAP_HEADROOM, "rows": rows}))
"""


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tests = Path(__file__).resolve().parents[1] / "tests"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    result = {
        "benchmark": "memory_maps",
        "command": "python benchmarks/memory_maps.py " + " ".join(argv or sys.argv[1:]),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "modes": {},
    }
    for mode in ("no-release", "guard"):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, str(args.programs)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{mode} failed:\n{out.stderr[-2000:]}")
        result["modes"][mode] = json.loads(out.stdout.strip().splitlines()[-1])
    lines = ["| mode | fits | largest mapping count | final count | limit | median s per fit |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for mode, r in result["modes"].items():
        maps = [x["maps"] for x in r["rows"]]
        secs = sorted(x["seconds"] for x in r["rows"])
        lines.append(
            f"| {mode} | {len(maps)} | {max(maps)} | {maps[-1]} | {r['limit']} | "
            f"{secs[len(secs) // 2]:.2f} |"
        )
    same = [x["u_a_mean"] for x in result["modes"]["no-release"]["rows"]] == [
        x["u_a_mean"] for x in result["modes"]["guard"]["rows"]
    ]
    result["same_draws"] = same
    result["table"] = "\n".join(lines)
    print(result["table"])
    print(f"same draws in both modes: {same}")
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
