"""Regenerate ``docs/plan_demo.png``: a plan for the demo family ``sim3``.

``data/demo_curves.csv``, family ``sim3`` (two small sizes) fitted with the
bundled ``corpus-v1`` prior, seed 0; candidates N in {50M ... 800M} x D/N in
{10, 20, 40}; budget 3e19 FLOPs; target (7e9, 1.4e11); the plan's default
greedy rule and discrepancy::

    python docs/make_plan_demo.py --out docs/plan_demo.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hiscale


def main() -> int:
    """Fit sim3, plan, and write the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/plan_demo.png")
    args = ap.parse_args()
    hiscale.configure()
    import matplotlib

    matplotlib.use("Agg")
    from hiscale.planning.candidates import grid_candidates
    from hiscale.plots.plan import plot_plan

    data = Path(__file__).resolve().parents[1] / "data" / "demo_curves.csv"
    f = hiscale.fit(hiscale.load_curves(data), family="sim3", prior="corpus-v1", seed=0)
    print(f.verdict())
    cands = grid_candidates([5e7, 1e8, 2e8, 4e8, 8e8], [10, 20, 40])
    p = hiscale.plan(f, at=(7e9, 1.4e11), candidates=cands, budget=3e19, seed=0)
    print(p.settings["greedy"])
    print(f"{len(p.runs)} runs: {[r['label'] for r in p.runs]}; stop: {p.stop_reason}")
    fig = plot_plan(p)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
