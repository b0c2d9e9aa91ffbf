"""Whole-curve NUTS fits: time, r-hat and ESS, plain vs centred share coordinates.

For each family, ``hiscale.fit(..., law=LAW, options=FitOptions(rows="all",
residual="ar1"))`` with the default sampler, once with the shares sampled at
``(N0, D0)`` (``CURVE_CENTRED = False``) and once at the rows' centre
(``True``, the default), for seeds 0 and 1. Prints one JSON line per fit and
writes them to ``benchmarks/results/curve_fit_mixing.json`` with date and
machine. The first fit of a run includes compilation (its ``seconds`` are
cold); the others are warm. Reads ``curves.csv``, ``curves_extra.csv`` and
``runs_extra.csv`` from the corpus folder (never copied).

    python benchmarks/curve_fit_mixing.py ../shared/corpus --prior corpus-v1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

FAMILIES = ("gpt3", "lrsched-owt2-cos", "lrsched-sp-cos")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--law", default="h-term")
    ap.add_argument("--prior", default="corpus-v1")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", default="benchmarks/results/curve_fit_mixing.json")
    args = ap.parse_args(argv)

    import arviz as az

    import hiscale
    import hiscale.infer.fit as fit_module
    from hiscale.infer.fit import FitOptions, fit
    from hiscale.laws import get_law

    hiscale.configure()
    frames = [
        pd.read_csv(args.corpus / f, low_memory=False) for f in ("curves.csv", "curves_extra.csv")
    ]
    runs_extra = pd.read_csv(args.corpus / "runs_extra.csv")
    names = [*get_law(args.law).params, "log_scale", "sigma_run", "sigma_obs", "rho"]
    rows = []
    for family in args.families.split(","):
        frame = pd.concat([f[f["family"] == family] for f in frames])
        for centred in (False, True):
            fit_module.CURVE_CENTRED = centred
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()
                f = fit(frame, family=family, law=args.law, prior=args.prior,
                        options=FitOptions(rows="all", residual="ar1"), runs_extra=runs_extra,
                        seed=seed)  # fmt: skip
                seconds = time.perf_counter() - t0
                post = f.to_datatree()["posterior"].to_dataset()[names]
                rhat, ess = az.rhat(post), az.ess(post)
                row = {
                    "family": family,
                    "law": f.law,
                    "prior": args.prior,
                    "centred": centred,
                    "seed": seed,
                    "seconds": round(seconds, 1),
                    "fit_total_seconds": round(f.timings["total_seconds"], 1),
                    "rows": len(f.data),
                    "runs": int(f.data["run"].nunique()),
                    "rhat_max": round(max(float(rhat[n]) for n in names), 3),
                    "ess_min": int(min(float(ess[n]) for n in names)),
                    "rhat_u_f": round(float(rhat["u_f"]), 3) if "u_f" in names else None,
                    "ess_u_f": int(ess["u_f"]) if "u_f" in names else None,
                    "divergences": int(np.asarray(f.dt["sample_stats"]["diverging"]).sum()),
                    "flagged": f.flagged,
                    "dropped_starts": f.provenance["inits"].get("dropped_starts", []),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    fit_module.CURVE_CENTRED = True
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "hiscale": hiscale.__version__,
        },
        "command": "python benchmarks/curve_fit_mixing.py " + " ".join(argv or sys.argv[1:]),
        "note": "2-core machine shared with other jobs: seconds are under load",
        "fits": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
