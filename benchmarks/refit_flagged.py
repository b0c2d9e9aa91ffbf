"""Re-run a method's flagged backtest cells with today's engine; copy every other row.

Since a flagged default-sampler fit is re-run once (:func:`hiscale.infer.fit.fit`'s
``retry``), a cell can only change where some fit it rests on was flagged, and
then the cell was flagged: ``bayes-auto`` flags a cell when its final fit, a
leave-future-out fit of the model choice or an inner fit of the global/local
choice was flagged. So a grid run before the re-run existed is brought up to
date by re-running only its flagged cells:

* rows of ``--method`` with ``flagged`` True and status ok are re-run (same
  cell, seed, prior and settings, through :func:`hiscale.backtesting.runner.run_cell`);
* every other row is copied;
* ``--check N``: N unflagged cells of the method (spread over families, those
  whose model choice was measured first) are re-run too and must equal their
  copies (predicted value and interval bounds), which tests the premise on this
  machine and that nothing else changed since the rows were made.

Usage::

    python benchmarks/refit_flagged.py CELLS.csv --corpus ../shared/corpus/curves.csv \\
        --method bayes-auto --out OUT.csv [--check 4] [--families a,b]

``OUT.csv`` has the input's rows with the re-run ones replaced; their notes say
when a fit was re-run. Summarise with ``python benchmarks/bayes_grid.py --summarise OUT.csv``.
Progress (one line per cell) goes to stderr, and ``OUT.csv.partial`` keeps the
re-run rows so far (``--resume`` reuses them).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

import hiscale
from hiscale.backtesting.methods import get_method
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import CellTask, run_cell
from hiscale.data.curves import family_groups, load_curves

KEYS = ["predicted", "lower80", "upper80", "lower50", "upper50"]


def main(argv: list[str] | None = None) -> int:
    """Write the updated rows; return 1 if a checked copy differs from its re-run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", default="sub")
    ap.add_argument("--check", type=int, default=4, help="unflagged cells re-run as a check")
    ap.add_argument("--families", default=None, help="comma-separated: only these families")
    ap.add_argument("--resume", action="store_true", help="reuse OUT.csv.partial")
    args = ap.parse_args(argv)
    hiscale.configure()
    res = pd.concat([pd.read_csv(c) for c in args.cells], ignore_index=True)
    mine = res[res["method"] == args.method]
    if args.families:
        mine = mine[mine["family"].isin(args.families.split(","))]
    ok = mine["status"] == "ok"
    flagged = mine["flagged"].astype(bool) & ok
    clean = mine[~flagged & ok]
    # check cells whose model choice was measured first (they make the most fits)
    measured = clean["note"].fillna("").astype(str).str.contains("leave-future-out on N")
    clean = pd.concat([clean[measured], clean[~measured]])
    check = (
        clean.groupby("family", group_keys=False).head(1).head(args.check)
        if args.check
        else clean.iloc[:0]
    )
    todo = pd.concat([mine[flagged], check])
    curves = load_curves(args.corpus)
    groups = family_groups(curves)
    method = get_method(args.method)
    partial = Path(args.out + ".partial")
    done: dict[tuple, dict[str, Any]] = {}
    if args.resume and partial.is_file():
        for r in pd.read_csv(partial).to_dict("records"):
            done[(r["family"], int(r["k"]), float(r["p"]), r["target"], int(r["seed"]))] = r
    states: dict[str, Any] = {}
    cells_cache: dict[str, dict] = {}
    new_rows: dict[Any, dict[str, Any]] = {}
    compared: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for n, (idx, row) in enumerate(todo.iterrows(), start=1):
        fam = row["family"]
        key = (fam, int(row["k"]), float(row["p"]), row["target"], int(row["seed"]))
        if key in done:
            out = done[key]
        else:
            if fam not in states:
                states[fam] = method.prepare(curves, fam)
                cells = make_cells(curves.family(fam), grid=args.grid, include_k1=True)
                cells_cache[fam] = {(c.k, c.p): c for c in cells}
            cell = cells_cache[fam][(int(row["k"]), float(row["p"]))]
            task = CellTask(
                cell, method, states[fam], row["target"], int(row["seed"]), groups[fam],
                (0.8, 0.5),
            )  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = run_cell(task)
            done[key] = out
            pd.DataFrame(list(done.values())).to_csv(partial, index=False)
        print(
            f"[{n}/{len(todo)}] {fam} k={row['k']} p={row['p']}: ARE {out['are_pct']:.2f}% "
            f"(was {row['are_pct']:.2f}%), flagged {bool(out['flagged'])} "
            f"(was {bool(row['flagged'])}), {out['seconds']:.0f} s",
            file=sys.stderr,
        )
        if idx in check.index:
            diff = max(abs(float(out[k]) - float(row[k])) for k in KEYS)
            compared.append({"family": fam, "k": row["k"], "p": row["p"], "max_abs_diff": diff})
        else:
            new_rows[idx] = out
    updated = res.copy()
    for idx, out in new_rows.items():
        for col in updated.columns:
            if col in out:
                updated.at[idx, col] = out[col]
    updated.to_csv(args.out, index=False)
    before = int(flagged.sum())
    after = sum(bool(o["flagged"]) for o in new_rows.values())
    old_are = [float(res.at[i, "are_pct"]) for i in new_rows]
    new_are = [float(o["are_pct"]) for o in new_rows.values()]
    changed = sum(a != b for a, b in zip(old_are, new_are, strict=True))
    mean = (lambda v: sum(v) / len(v)) if new_rows else (lambda v: float("nan"))
    print(
        f"{args.method}: re-ran {len(new_rows)} flagged cells in "
        f"{time.perf_counter() - t_all:.0f} s: {after} still flagged (of {before}); "
        f"ARE changed in {changed}, mean over the re-run cells {mean(old_are):.2f}% -> "
        f"{mean(new_are):.2f}%; check: {compared}"
    )
    bad = [c for c in compared if c["max_abs_diff"] > 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
