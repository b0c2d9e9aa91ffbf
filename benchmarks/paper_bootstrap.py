"""Intervals the classical way: a case-resampling bootstrap of the paper estimator.

For one backtest cell (default: gpt3, k = 5, p = 0.5, target last30) the
training rows are resampled with replacement ``--refits`` times (1,000 by
default); each resample is refitted with the paper's least-squares estimator
(``hiscale.backtesting.paper.fit_paper``, same start point and optimiser) and predicts
the cell's scored target rows. The 80% interval of the target is the 10th and
90th percentile over refits of the mean prediction over scored rows (the
backtest's ``predicted`` column); per-row intervals give the share of target
rows covered. Failed refits are counted and left out.

The whole bootstrap is timed ``--repeats`` times (same seed, so identical
results) and the median is reported. This is the cost a classical interval
for one cell carries, to compare with a posterior.

Usage::

    python benchmarks/paper_bootstrap.py [CORPUS] [--family gpt3] [--k 5] [--p 0.5]
        [--target last30|final] [--refits 1000] [--repeats 3] [--seed 0] [--out PATH]

``CORPUS`` defaults to ``$HISCALE_CORPUS``. The JSON output holds the interval
of the predicted target loss, whether it covers the actual value, and timings;
no corpus rows are written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hiscale.backtesting.paper import fit_paper
from hiscale.backtesting.protocol import Cell, make_cells
from hiscale.data.curves import CurvesError, load_curves

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "paper_bootstrap.json"


def bootstrap(cell: Cell, *, refits: int, seed: int) -> tuple[np.ndarray, int]:
    """Predictions of the scored target rows for each successful refit.

    Returns
    -------
    preds : ndarray, shape (n_ok, n_target_rows)
    failed : int
        Refits whose fit failed or predicted a non-finite value.
    """
    train = cell.train.frame
    n, d, y = (train[c].to_numpy() for c in ("params", "tokens", "loss"))
    tn, td = (cell.target.frame[c].to_numpy() for c in ("params", "tokens"))
    rng = np.random.default_rng(seed)
    preds, failed = [], 0
    for _ in range(refits):
        idx = rng.integers(0, len(y), len(y))
        fit = fit_paper(n[idx], d[idx], y[idx])
        pred = fit.predict(tn, td)
        if not fit.ok or not np.all(np.isfinite(pred)):
            failed += 1
            continue
        preds.append(pred)
    return np.asarray(preds).reshape(-1, len(tn)), failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS"))
    p.add_argument("--family", default="gpt3")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--p", type=float, default=0.5)
    p.add_argument("--target", default="last30", choices=["last30", "final"])
    p.add_argument("--refits", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--level", type=float, default=0.8, help="central interval probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if not args.corpus:
        p.error("no corpus: pass a path or set HISCALE_CORPUS")
    if args.refits < 2 or args.repeats < 1 or not 0 < args.level < 1:
        p.error("need --refits >= 2, --repeats >= 1 and 0 < --level < 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        curves = load_curves(args.corpus, families=[args.family])
        (cell,) = make_cells(curves, grid=[(args.k, args.p)], target=args.target)
    except (CurvesError, ValueError) as err:
        print(f"paper_bootstrap: error: {err}", file=sys.stderr)
        return 2
    train, target = cell.train.frame, cell.target.frame
    point = fit_paper(train["params"], train["tokens"], train["loss"])
    if not point.ok:
        print(f"paper_bootstrap: error: the point fit failed: {point.status}", file=sys.stderr)
        return 1
    actual_rows = target["loss"].to_numpy()
    actual = float(actual_rows.mean())
    point_pred = float(point.predict(target["params"], target["tokens"]).mean())

    times = []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        preds, failed = bootstrap(cell, refits=args.refits, seed=args.seed)
        times.append(time.perf_counter() - t0)
        print(f"repeat {rep + 1}/{args.repeats}: {times[-1]:.2f} s", file=sys.stderr)
    if len(preds) < 2:
        print(f"paper_bootstrap: error: {failed} of {args.refits} refits failed", file=sys.stderr)
        return 1

    q = [(1 - args.level) / 2, (1 + args.level) / 2]
    lo, hi = np.quantile(preds.mean(axis=1), q)
    row_lo, row_hi = np.quantile(preds, q, axis=0)
    row_cov = float(np.mean((actual_rows >= row_lo) & (actual_rows <= row_hi)))
    covered = bool(lo <= actual <= hi)
    med = statistics.median(times)
    pct = round(100 * args.level)

    print(
        f"{args.family} k={args.k} p={args.p:g} target={args.target}: "
        f"{len(train)} training rows, {len(target)} scored target rows"
    )
    print(f"point fit:  predicted {point_pred:.4f}, ARE {abs(point_pred - actual) / actual:.2%}")
    print(
        f"bootstrap:  {args.refits} refits ({failed} failed), {pct}% interval "
        f"[{lo:.4f}, {hi:.4f}] (width {hi - lo:.4f}), actual {actual:.4f} "
        f"{'inside' if covered else 'OUTSIDE'}; per-row coverage {row_cov:.0%}"
    )
    print(
        f"time:       median {med:.2f} s over {args.repeats} repeats "
        f"({args.refits / med:.0f} refits/s, {1e3 * med / args.refits:.2f} ms per refit)"
    )

    record = {
        "benchmark": "paper_bootstrap",
        "cell": {"family": args.family, "k": args.k, "p": args.p, "target": args.target},
        "n_train_rows": len(train),
        "n_target_rows": len(target),
        "refits": args.refits,
        "failed_refits": failed,
        "level": args.level,
        "seed": args.seed,
        "point_are_pct": 100 * abs(point_pred - actual) / actual,
        "interval_predicted": [float(lo), float(hi)],
        "interval_width_rel_pct": 100 * float(hi - lo) / point_pred,
        "covered": covered,
        "per_row_coverage": row_cov,
        "repeats": args.repeats,
        "median_seconds": med,
        "seconds_per_repeat": times,
        "refits_per_second": args.refits / med,
        "corpus_hash": curves.data_hash(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
