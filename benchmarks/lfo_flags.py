"""The leave-future-out fits' flags of bayes-auto(-local) rows run before they counted.

Since df996ba a cell of ``bayes-auto`` / ``bayes-auto-local`` is also flagged
when a leave-future-out (LFO) fit of its end-of-run/whole-curve choice is
(:data:`hiscale.infer.choice.LFO_FLAGGED`). Rows written before that commit
miss this part of the flag. This script re-runs only those LFO fits, for the
rows whose note says the choice was measured, and writes the rows back with
the flag (and the note) completed:

* each such cell is rebuilt as the backtest builds it (sub grid, k = 1 cells
  included) and run through the method's own code, stopped right after
  :func:`hiscale.infer.choice.lfo_scores` (the final fit is not needed);
* the LFO AREs of the re-run must equal the ones in the row's note (printed
  to 2 decimals), which checks that the same fits were re-made;
* rows already carrying the new wording are left as they are;
* ``bayes-auto`` rows (written by ``auto_local_split.py``) take the flag of
  the same cell's LFO fits, made for its ``bayes-auto-local`` row (the same
  fits: same prior, seed and sampler).

Usage::

    python benchmarks/lfo_flags.py CELLS.csv --corpus ../shared/corpus/curves.csv \\
        --out OUT.csv
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from typing import Any

import pandas as pd

import hiscale
import hiscale.infer.choice as choice_mod
from hiscale.backtesting.methods import get_method
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import CellTask, run_cell
from hiscale.data.curves import family_groups, load_curves
from hiscale.infer.choice import LFO_FLAGGED

MEASURED = "model chosen: leave-future-out on N"
ARE = re.compile(r"ARE (\d+\.\d+)% end-of-run vs (\d+\.\d+)% whole-curve")


class _Stop(ValueError):
    """Raised after the LFO fits: the cell's final fit is not needed."""


def main(argv: list[str] | None = None) -> int:
    """Complete the flags; return 1 if a re-made LFO score differs from the row's."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    hiscale.configure()
    res = pd.read_csv(args.cells)
    note = res["note"].fillna("").astype(str)
    todo = res[
        res["method"].eq("bayes-auto-local")
        & note.str.contains(MEASURED, regex=False)
        & ~note.str.contains(LFO_FLAGGED, regex=False)
        & res["status"].eq("ok")
    ]
    curves = load_curves(args.corpus)
    groups = family_groups(curves)
    real = choice_mod.lfo_scores
    seen: dict[str, Any] = {}

    def lfo(*a: Any, **kw: Any) -> Any:
        seen["scores"], seen["held"] = real(*a, **kw)
        raise _Stop("stopped after the leave-future-out fits")

    choice_mod.lfo_scores = lfo
    method = get_method("bayes-auto")  # the same LFO fits as bayes-auto-local's
    states: dict[str, Any] = {}
    cells: dict[str, dict] = {}
    bad, memo = [], {}
    for n, (idx, row) in enumerate(todo.iterrows(), start=1):
        fam = row["family"]
        key = (fam, int(row["k"]), float(row["p"]), int(row["seed"]))
        if key not in memo:
            if fam not in states:
                states[fam] = method.prepare(curves, fam)
                made = make_cells(curves.family(fam), grid="sub", include_k1=True)
                cells[fam] = {(c.k, c.p): c for c in made}
            cell = cells[fam][(int(row["k"]), float(row["p"]))]
            task = CellTask(cell, method, states[fam], row["target"], int(row["seed"]), groups[fam])
            seen.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_cell(task)
            scores = seen["scores"]
            memo[key] = (
                round(scores["end-of-run"]["are_pct"], 2),
                round(scores["whole-curve"]["are_pct"], 2),
                any(bool(s["flagged"]) for s in scores.values()),
            )
        a, b, flagged = memo[key]
        m = ARE.search(row["note"])
        if m is None or (float(m[1]), float(m[2])) != (a, b):
            bad.append((fam, row["k"], row["p"], m and m.groups(), (a, b)))
        if flagged:
            parts = row["note"].split("; ")
            # the reason of the model choice ends before the global/local step's note
            j = max(i for i, p in enumerate(parts) if p.startswith("leave-one-run-out"))
            parts.insert(j + 1, LFO_FLAGGED)
            res.loc[idx, "note"] = "; ".join(parts)
            res.loc[idx, "flagged"] = True
        print(
            f"[{n}/{len(todo)}] {row['method']} {fam} k={row['k']} p={row['p']}: "
            f"LFO ARE {a:.2f}/{b:.2f}% (row {m and m.groups()}), LFO flagged {flagged}",
            file=sys.stderr,
        )
    choice_mod.lfo_scores = real
    # bayes-auto makes the same choice in the same cells (auto_local_split.py copied or
    # re-fitted its rows): its rows take the flag of the cell's LFO fits
    for idx, row in res[res["method"].eq("bayes-auto")].iterrows():
        key = (row["family"], int(row["k"]), float(row["p"]), int(row["seed"]))
        if memo.get(key, (0, 0, False))[2] and LFO_FLAGGED not in str(row["note"]):
            res.loc[idx, "note"] = f"{row['note']}; {LFO_FLAGGED}"
            res.loc[idx, "flagged"] = True
    res.to_csv(args.out, index=False)
    n_flag = sum(v[2] for v in memo.values())
    print(f"{len(memo)} distinct cells re-made, {n_flag} with a flagged LFO fit; mismatches: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
