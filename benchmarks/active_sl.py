"""Published anchor for the planner: ScaleBench (PlanarG/active-sl) L(N, D) tasks.

Reads the benchmark copy in ``../shared/data/active-sl`` (``--root``; see its
README for the protocol) and follows the protocol as far as it applies to
hiscale:

* pool = the task's train split, target region = its test split (only its
  inputs are used to plan; its losses only to score);
* budget = a fraction (1%, 5%, 10%) of the summed cost of the whole pool,
  cost ``6 N D``;
* score = R² of the predictions on the test split, ``1 − SS_res / SS_tot``
  clipped to [−1, 1] (``benchmark/metrics.py``).

Differences, stated in the output: hiscale fits its own law (``chinchilla``,
``E + A/N^α + B/D^β`` with seed noise; the tasks' own ``sl_k`` laws are not
used), with the flat prior (the task's loss unit is not stated, so no corpus
population applies), and the prediction is the posterior-predictive median of
the *expected* loss. The selection starts from the pool's cheapest run (as the
campaigns of ``plan_backtest.py``) and plans for the test point with the
largest ``6 N D`` (``hiscale.plan`` targets one point); every ``--rounds``
picks it refits and plans again. Strategies: ``planner`` (with the corpus-v1
extrapolation discrepancy in compute distance), ``planner-law-only``,
``cheapest`` and ``random`` (``--random`` orders), all fitted the same way,
so selection is compared with the fitter held fixed. The published table
(R², mean ± sd over 10 seeds, the task's 10 laws pooled) is printed beside it.

Usage::

    python benchmarks/active_sl.py --root ../shared/data/active-sl \
        --budgets 0.01 0.05 0.1 --random 3 --out benchmarks/results/active_sl.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

#: Published target-region R² (Table 2 of arXiv 2604.22753, as copied in the data's README).
PUBLISHED = {
    "farseer_scaling_law": {
        "Random": {0.01: -0.77, 0.05: 0.78, 0.1: 0.79},
        "Cheapest": {0.01: -0.89, 0.05: 0.41, 0.1: 0.68},
        "V-opt": {0.01: 0.67, 0.05: 0.87, 0.1: 0.92},
        "Ours (MSPE)": {0.01: 0.60, 0.05: 0.88, 0.1: 0.93},
        "All Data": {1.0: 0.91},
    }
}

TASKS = {"farseer_scaling_law": {"n": "N", "d": "D", "y": "loss"}}


def load_task(root: Path, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (pool) and test (target region) of a task, as ``params, tokens, loss, cost``."""
    spec = TASKS[task]
    out = []
    for split in ("train", "test"):
        path = root / "benchmark" / "dataset" / task / f"{split}-00000-of-00001.parquet"
        df = pd.read_parquet(path)
        t = pd.DataFrame(
            {
                "params": df[spec["n"]].astype(float),
                "tokens": df[spec["d"]].astype(float),
                "loss": df[spec["y"]].astype(float),
            }
        )
        t["flops"] = 6.0 * t["params"] * t["tokens"]
        t["label"] = [f"{split}-{i}" for i in range(len(t))]
        out.append(t.reset_index(drop=True))
    return out[0], out[1]


def r2(y, pred) -> float:
    """Clipped R² as ``benchmark/metrics.py`` (non-finite -> -1)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    if not np.all(np.isfinite(pred)):
        return -1.0
    v = 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    return float(np.clip(v, -1.0, 1.0)) if np.isfinite(v) else -1.0


def _fit(pool: pd.DataFrame, labels, args):
    from hiscale import SamplerSettings, fit, load_curves
    from hiscale.priors.prior import PriorWarning

    rows = pool[pool["label"].isin(labels)]
    frame = pd.DataFrame(
        {
            "family": "task",
            "run": rows["label"],
            "params": rows["params"],
            "tokens": rows["tokens"],
            "loss": rows["loss"],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorWarning)
        return fit(
            load_curves(frame),
            family="task",
            prior="flat",
            seed=args.seed,
            sampler=SamplerSettings(num_warmup=args.num_warmup, num_samples=args.num_samples),
        )


def _score(f, test) -> dict:
    p = f.predict((test["params"].to_numpy(), test["tokens"].to_numpy()), ci_prob=0.8, seed=0)
    e = p[p["kind"] == "expected"].sort_values("point")
    med = e["median"].to_numpy(float)
    y = test["loss"].to_numpy(float)
    inside = (y >= e["lower"].to_numpy(float)) & (y <= e["upper"].to_numpy(float))
    return {
        "r2": r2(y, med),
        "mean_are": float(np.mean(np.abs(med - y) / y) * 100),
        "covered80_expected": float(np.mean(inside)),
        "flagged": bool(f.flagged),
    }


def _planner(pool, start, budget, target, args, discrepancy):
    from hiscale.planning import plan
    from hiscale.planning.candidates import validate_candidates

    used, left_budget, rounds = (
        [start],
        budget - float(pool.loc[pool.label == start, "flops"].iloc[0]),
        [],
    )
    for _ in range(args.max_rounds):
        left = pool[~pool["label"].isin(used)]
        if not len(left) or left_budget < left["flops"].min():
            break
        f = _fit(pool, used, args)
        cands = validate_candidates(left[["label", "params", "tokens", "flops"]])
        p = plan(
            f,
            at=target,
            candidates=cands,
            budget=left_budget,
            seed=args.seed,
            n_outcomes=args.outcomes,
            discrepancy=discrepancy,
        )
        if not p.runs:
            break
        new = [r["label"] for r in p.runs][: args.per_round]
        rounds.append({"picked": len(new), "stop": p.stop_reason})
        used += new
        left_budget -= float(pool.set_index("label").loc[new, "flops"].sum())
    return used, rounds


def _within(order, pool, budget):
    """Labels of the runs taken in ``order`` while they fit the budget (plan_backtest's rule)."""
    from plan_backtest import _within as within_indices

    return pool["label"].iloc[within_indices(order, pool, budget)].tolist()


def run_task(root: Path, task: str, args) -> dict:
    """Every strategy at every budget on one task."""
    from hiscale.backtesting.discrepancy import load_discrepancy

    pool, test = load_task(root, task)
    total = float(pool["flops"].sum())
    ti = int(test["flops"].idxmax())
    target = (float(test["params"].iloc[ti]), float(test["tokens"].iloc[ti]))
    start = pool["label"].iloc[int(pool["flops"].idxmin())]
    disc = load_discrepancy("corpus-v1", distance="compute")
    t0 = time.perf_counter()
    out = {
        "task": task,
        "pool": len(pool),
        "test": len(test),
        "planning_target": {"params": target[0], "tokens": target[1]},
        "discrepancy": disc.label,
        "all_data": _score(_fit(pool, pool["label"].tolist(), args), test),
        "budgets": [],
    }
    print(f"{task}: all data {out['all_data']}", file=sys.stderr, flush=True)
    for frac in args.budgets:
        budget = frac * total
        cells = {}
        for name, dv in (("planner", disc), ("planner-law-only", None)):
            used, rounds = _planner(pool, start, budget, target, args, dv)
            scored = _score(_fit(pool, used, args), test)
            cells[name] = {"runs": len(used), "rounds": rounds, **scored}
        cheap = _within(np.argsort(pool["flops"].to_numpy(), kind="stable"), pool, budget)
        cells["cheapest"] = {"runs": len(cheap), **_score(_fit(pool, cheap, args), test)}
        rnd = []
        for r in range(args.random):
            order = np.random.default_rng(args.seed + 1000 + r).permutation(len(pool))
            picked = _within(order, pool, budget)
            if len(picked) < 2:
                rnd.append({"r2": -1.0, "mean_are": float("nan"), "flagged": False, "runs": 0})
                continue
            rnd.append({"runs": len(picked), **_score(_fit(pool, picked, args), test)})
        cells["random"] = {
            "r2_mean": float(np.mean([x["r2"] for x in rnd])),
            "r2_sd": float(np.std([x["r2"] for x in rnd])),
            "draws": len(rnd),
        }
        out["budgets"].append({"fraction": frac, "strategies": cells})
        shown = {k: round(v.get("r2", v.get("r2_mean", np.nan)), 3) for k, v in cells.items()}
        print(f"{task} budget {frac:g}: R2 {shown}", file=sys.stderr, flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def table(res: dict) -> str:
    """Markdown: hiscale's strategies beside the published R² per budget."""
    lines = []
    for t in res["tasks"]:
        pub = PUBLISHED.get(t["task"], {})
        fr = [b["fraction"] for b in t["budgets"]]
        head = "| strategy | " + " | ".join(f"{f:.0%} budget" for f in fr) + " |"
        lines += [f"**{t['task']}** (target-region R²)", "", head, "|---" * (len(fr) + 1) + "|"]
        for name in ("planner", "planner-law-only", "cheapest", "random"):
            vals = []
            for b in t["budgets"]:
                c = b["strategies"][name]
                if "r2" in c:
                    vals.append(f"{c['r2']:.2f} ({c['runs']} runs)")
                else:
                    vals.append(f"{c['r2_mean']:.2f} ± {c['r2_sd']:.2f}")
            lines.append(f"| hiscale {name} | " + " | ".join(vals) + " |")
        lines.append(
            f"| hiscale all data (no budget) | {t['all_data']['r2']:.2f} |" + " |" * (len(fr) - 1)
        )
        for m, v in pub.items():
            vals = [f"{v[f]:.2f}" if f in v else "–" for f in fr]
            if m == "All Data":
                vals = [f"{v[1.0]:.2f}"] + ["–"] * (len(fr) - 1)
            lines.append(f"| published {m} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/active-sl")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.05, 0.1])
    ap.add_argument("--random", type=int, default=3)
    ap.add_argument("--outcomes", type=int, default=16)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--per-round", type=int, default=4, help="runs trained per plan round")
    ap.add_argument("--num-warmup", type=int, default=300)
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import hiscale

    hiscale.configure()
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    root = Path(args.root)
    res = {
        "benchmark": "active_sl",
        "command": "python benchmarks/active_sl.py " + " ".join(argv or sys.argv[1:]),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": vars(args),
        "tasks": [run_task(root, t, args) for t in args.tasks],
        "published": {
            k: {m: {str(f): v for f, v in d.items()} for m, d in p.items()}
            for k, p in PUBLISHED.items()
        },
    }
    text = json.dumps(res, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
