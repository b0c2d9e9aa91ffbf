"""Compare law forms by PSIS-LOO (leave one run out) on each family's full data.

Usage::

    python benchmarks/law_loo.py [CORPUS] [--families ...] [--prior flat]
        [--out benchmarks/results/law_loo.json]

For each family, fits every law in ``hiscale.laws.LAWS`` with the same prior,
data selection and seed, then runs ``arviz.compare`` on the per-run
log-likelihood (``run_log_loss``). Prints elpd differences and writes JSON.
The backtest (``benchmarks/ablations.py``, variant ``nd``) is the other half
of the comparison: LOO scores in-sample fit per run, the backtest scores
extrapolation to a larger model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import arviz as az

import hiscale
from hiscale.data.curves import load_curves
from hiscale.infer.fit import fit
from hiscale.laws import LAWS

sys.path.insert(0, str(Path(__file__).parent))
from bayes_grid import FAMILIES


def main(argv=None) -> int:
    hiscale.configure()  # first: 64-bit floats and host devices for JAX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    ap.add_argument("corpus", nargs="?", default=default)
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--prior", default="flat")
    ap.add_argument("--out", default="benchmarks/results/law_loo.json")
    args = ap.parse_args(argv)
    curves = load_curves(args.corpus)
    out = {
        "prior": args.prior,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "families": {},
    }
    for fam in args.families:
        dts = {}
        flags = {}
        for law in LAWS:
            f = fit(curves, family=fam, prior=args.prior, law=law, seed=0)
            dts[law] = f.to_datatree()
            flags[law] = f.diagnostics["flagged"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the table
            cmp = az.compare(dts, var_name="run_log_loss", round_to="none")
        rec = {
            law: {
                "rank": int(cmp.loc[law, "rank"]),
                "elpd": float(cmp.loc[law, "elpd"]),
                "elpd_diff": float(cmp.loc[law, "elpd_diff"]),
                "dse": float(cmp.loc[law, "dse"]),
                "flagged": flags[law],
            }
            for law in LAWS
        }
        out["families"][fam] = rec
        print(fam, json.dumps(rec), flush=True)
    wins = {law: sum(r[law]["rank"] == 0 for r in out["families"].values()) for law in LAWS}
    out["wins"] = wins
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wins:", wins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
