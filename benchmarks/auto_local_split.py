"""bayes-auto's rows from a bayes-auto-local run, re-fitting only where they can differ.

``bayes-auto-local`` is ``bayes-auto`` plus one measured step: where the
end-of-run model is chosen (and the family has >= 3 training sizes), the fit
is global or local to the target by leave-future-out. In every other cell
both methods make the same fits with the same seed, so their rows are equal.
This script writes bayes-auto's rows without running the whole grid twice:

* a cell whose note says the local fit was chosen, or that an inner fit of
  the choice was flagged (the cell's flag then includes it), is re-fitted the
  way bayes-auto fits it: the end-of-run candidate's global fit to the cell's
  training rows (same prior, seed and default sampler as
  :func:`hiscale.infer.choice.choose_and_fit`), flagged also when the note
  says a leave-future-out fit of the model choice was (bayes-auto makes it too);
* every other row is copied with the method renamed;
* ``--check N``: N copied cells (spread over families) are re-fitted too and
  must equal their copies (predicted value and interval bounds), which tests
  the premise on this machine.

Usage::

    python benchmarks/auto_local_split.py CELLS.csv [CELLS.csv ...] \\
        --corpus ../shared/corpus/curves.csv --out OUT.csv [--check 6]

OUT.csv holds the input rows plus the derived ``bayes-auto`` rows; summarise it
with ``python benchmarks/bayes_grid.py --summarise OUT.csv``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import hiscale
from hiscale.backtesting.methods import CellPrediction, get_method
from hiscale.backtesting.protocol import make_cells
from hiscale.backtesting.runner import CellTask, run_cell
from hiscale.data.curves import family_groups, load_curves
from hiscale.infer.choice import CANDIDATES, LFO_FLAGGED, candidate_priors
from hiscale.infer.fit import fit
from hiscale.infer.settings import FitOptions

LOCAL = "local fit chosen by leave-future-out"
INNER = "an inner fit was flagged"


@dataclass
class GlobalEndOfRun:
    """bayes-auto's prediction of a size cell where it chose the end-of-run model."""

    name: str = "bayes-auto"

    def __call__(self, cell, state, *, seed: int) -> CellPrediction:
        """Fit the end-of-run candidate globally, as ``choose_and_fit`` does; predict."""
        priors, _ = candidate_priors(state)
        law, rows, residual = CANDIDATES["end-of-run"]
        f = fit(
            cell.train, family=cell.family, prior=priors["end-of-run"], law=law, seed=seed,
            options=FitOptions(rows=rows, residual=residual), sampler=None,
        )  # fmt: skip
        t = cell.target.frame
        new = f.new_run_draws(t, seed=seed)
        actual = t["loss"].to_numpy()
        d = f.diagnostics
        return CellPrediction(
            median=np.median(new, axis=0),
            draws=new,
            pit=np.mean(new <= actual[None, :], axis=0),
            diagnostics={k: d[k] for k in ("rhat_max", "ess_min", "divergences", "flagged")},
            n_fit_rows=len(f.data),
            note="bayes-auto's global end-of-run fit (re-fitted by auto_local_split.py)",
        )


def main(argv: list[str] | None = None) -> int:
    """Write the derived rows; return 1 if a checked copy differs from its re-fit."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", type=int, default=6, help="copied cells re-fitted as a check")
    args = ap.parse_args(argv)
    hiscale.configure()
    res = pd.concat([pd.read_csv(c) for c in args.cells], ignore_index=True)
    res = res[res["method"] != "bayes-auto"]
    src = res[res["method"] == "bayes-auto-local"]
    curves = load_curves(args.corpus)
    groups = family_groups(curves)
    method = get_method("bayes-auto-local")
    note = src["note"].fillna("").astype(str)
    refit = note.str.contains(LOCAL) | note.str.contains(INNER)
    ok = src["status"] == "ok"
    copied = src[~refit | ~ok].copy()
    # the check: copied cells whose choice was measured, spread over families
    chose = copied["note"].fillna("").str.contains("fit chosen by leave-future-out")
    measured = copied[(copied["status"] == "ok") & chose]
    check = (
        measured.groupby("family", group_keys=False).head(1).head(args.check)
        if args.check
        else measured.iloc[:0]
    )
    todo = pd.concat([src[refit & ok], check])
    derived: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    states: dict[str, Any] = {}
    cells_cache: dict[str, dict] = {}
    for n, (_, row) in enumerate(todo.iterrows(), start=1):
        fam = row["family"]
        if fam not in states:
            states[fam] = method.prepare(curves, fam)
            cells = make_cells(curves.family(fam), grid="sub", include_k1=True)
            cells_cache[fam] = {(c.k, c.p): c for c in cells}
        cell = cells_cache[fam][(int(row["k"]), float(row["p"]))]
        task = CellTask(
            cell, GlobalEndOfRun(), states[fam], row["target"], int(row["seed"]), groups[fam],
            (0.8, 0.5),
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = run_cell(task)
        print(
            f"[{n}/{len(todo)}] {fam} k={row['k']} p={row['p']} ARE {out['are_pct']:.2f}% "
            f"(bayes-auto-local {row['are_pct']:.2f}%)",
            file=sys.stderr,
        )
        if row.name in check.index:
            keys = ["predicted", "lower80", "upper80", "lower50", "upper50"]
            diff = max(abs(float(out[k]) - float(row[k])) for k in keys)
            compared.append({"family": fam, "k": row["k"], "p": row["p"], "max_abs_diff": diff})
        else:
            # the end-of-run/whole-curve choice is bayes-auto's too: so is its LFO flag
            out["flagged"] = bool(out["flagged"]) or LFO_FLAGGED in str(row["note"])
            derived.append(out)
    auto = pd.concat([copied.assign(method="bayes-auto"), pd.DataFrame(derived)], ignore_index=True)
    pd.concat([res, auto], ignore_index=True).to_csv(args.out, index=False)
    print(f"re-fitted {len(derived)} cells, copied {len(copied)}; check: {compared}")
    bad = [c for c in compared if c["max_abs_diff"] > 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
