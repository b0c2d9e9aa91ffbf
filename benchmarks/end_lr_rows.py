r"""Which backtest cells the learning-rate rule of the end-of-run selection changes.

The end-of-run model keeps each run's rows at >= 0.8 x its last tokens and,
since 2026-12-02, where the run's schedule is known, only those whose learning
rate is within ``FitOptions.end_lr_tolerance`` (0.1 x peak) of the last
checkpoint's (:func:`hiscale.data.selection.end_of_run`). This builds the
backtest cells of each family (the paper's protocol: ``last30`` target, 10B
token cut, ``k = 1`` included) and counts, per cell, the end-of-run rows the
rule removes: cells with 0 are fitted to identical rows with and without it,
so only the others can move. No fitting; seconds::

    python benchmarks/end_lr_rows.py ../shared/corpus/curves.csv --grid quick \
        --families gpt3 pythia pythia-deduped gemstones misfitting overtrain-c4 chinchilla \
        gpt2-datablations-c4-1ep --out benchmarks/results/end_lr_rows_quick.json

The JSON holds row counts only, no losses.
"""

from __future__ import annotations

import argparse
import sys
import time


def count(curves, family: str, grid: str, runs_extra=None) -> list[dict]:
    """Rows each cell of ``family`` keeps by tokens, and how many the LR rule removes."""
    from hiscale.backtesting.protocol import make_cells
    from hiscale.data.schedule import run_schedules
    from hiscale.data.selection import end_of_run

    c = curves.family(family)
    info = run_schedules(c.frame, runs_extra)
    out = []
    for cell in make_cells(c, grid=grid, include_k1=True):
        sel = end_of_run(cell.train, 0.8, schedules=info)
        tokens_step, lr_step = sel.log[-2], sel.log[-1]
        out.append(
            {
                "k": cell.k,
                "p": cell.p,
                "end_rows": tokens_step.kept,
                "removed_by_lr": lr_step.removed,
                "runs": int(cell.train.frame["run"].nunique()),
                "runs_with_schedule": sum(info[r].known for r in cell.train.frame["run"].unique()),
            }
        )
    return out


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--extra", nargs="*", default=[])
    p.add_argument("--runs-extra", default=None)
    p.add_argument("--families", nargs="+", required=True)
    p.add_argument("--grid", default="quick")
    p.add_argument("--out")
    args = p.parse_args(argv)
    import pandas as pd
    from _machine import machine, write_json

    from hiscale import load_curves

    curves = load_curves([args.corpus, *args.extra])
    rx = None if args.runs_extra is None else pd.read_csv(args.runs_extra)
    fams = {f: count(curves, f, args.grid, rx) for f in args.families}
    print("| family | cells | cells changed | end-of-run rows removed / kept by tokens |")
    print("|---|---|---|---|")
    for f, cells in fams.items():
        changed = [c for c in cells if c["removed_by_lr"]]
        removed = sum(c["removed_by_lr"] for c in cells)
        kept = sum(c["end_rows"] for c in cells)
        where = ", ".join(f"k={c['k']} p={c['p']:g}" for c in changed)
        print(f"| {f} | {len(cells)} | {len(changed)}{f' ({where})' if where else ''} | "
              f"{removed} / {kept} |")  # fmt: skip
    write_json(
        {
            "benchmark": "end_lr_rows",
            "command": "python benchmarks/end_lr_rows.py " + " ".join(argv or sys.argv[1:]),
            "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "grid": args.grid,
            "families": fams,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
