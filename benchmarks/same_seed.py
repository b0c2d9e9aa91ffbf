"""Same seed -> same numbers across a refactor: fit fixed cells and write (or compare) their draws.

Fits two families of the corpus (and one simulated family) with a fixed seed
and small sampler settings and writes a JSON of the posterior medians and the
posterior-predictive draws at each family's largest model. Run it on the old
checkout with ``--out old.json`` and on the new one with ``--compare
old.json``: the numbers must be identical (``max_abs_diff == 0``).

    python benchmarks/same_seed.py ../shared/corpus/curves.csv --out old.json
    python benchmarks/same_seed.py ../shared/corpus/curves.csv --compare old.json

Only the public API used by both sides is called: ``hiscale.fit`` and
``Fit.draws`` / ``Fit.theta``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def run(corpus: str) -> dict:
    import hiscale

    hiscale.configure()
    from hiscale.infer.settings import SamplerSettings

    sampler = SamplerSettings(num_warmup=200, num_samples=300, num_chains=2)
    out = {}
    curves = hiscale.load_curves(corpus)
    for family in ("gpt3", "pythia"):
        sub = curves.frame[curves.frame["family"] == family]
        top = sub["params"].max()
        train = sub[sub["params"] < top]
        target = sub[sub["params"] == top]
        f = hiscale.fit(train, family=family, prior="flat", sampler=sampler, seed=3)
        n, d = float(top), float(target["tokens"].max())
        expected, new = f.draws(n, d, seed=5)
        out[family] = {
            "theta_median": {k: float(np.median(v)) for k, v in f.theta().items()},
            "expected": expected[:, 0].tolist(),
            "new_run": new[:, 0].tolist(),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out")
    g.add_argument("--compare")
    args = ap.parse_args(argv)
    res = run(args.corpus)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh)
        print(f"wrote {args.out}")
        return 0
    with open(args.compare) as fh:
        ref = json.load(fh)
    worst = 0.0
    for fam, r in res.items():
        for key in ("expected", "new_run"):
            diff = np.max(np.abs(np.asarray(r[key]) - np.asarray(ref[fam][key])))
            worst = max(worst, float(diff))
            print(f"{fam:>8} {key:>8}: max |new - old| = {diff:.3g} over {len(r[key])} draws")
        for k, v in r["theta_median"].items():
            worst = max(worst, abs(v - ref[fam]["theta_median"][k]))
    print(f"max_abs_diff = {worst:.3g}")
    return 0 if worst == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
