"""Where does a run end if it is cooled down now? Leave-one-branch-out on real WSD runs.

The warmup-stable-decay families of ``curves_extra.csv`` branch each
cooldown run ``B`` from a constant-learning-rate run ``P`` (``runs_extra.csv``:
``prefix_run``, ``branch_step``; a branch holds only its own rows after the
branch point). For every branch ``B``: the source's constant runs and
branches are one family; ``B``'s rows, ``P``'s rows after ``B``'s branch point
and the other branches of ``P`` that branch later than ``B`` are removed (the
rest is what a user who is about to cool ``P`` down has: the other sizes'
runs and cooldowns, and ``P``'s earlier cooldowns). A whole-curve fit
(``--law``, default ``h-term``; every checkpoint, AR(1), flat prior, seed 0) continues ``P``
under ``B``'s schedule (``Fit.predict_run(P, schedule=B's schedule)``: ``P``'s
own offset and AR state, ``B``'s decay) to ``B``'s last checkpoint, scored
against ``B``'s loss there: ARE of the median, and whether the 80% / 50%
intervals cover it. Beside it: ``P`` continued under its own constant
schedule (no cooldown) and the law alone under ``B``'s schedule (no run
offset or AR state), on the same fit.

    python benchmarks/cooldown.py ../shared/corpus --out benchmarks/results/cooldown.json

Reads ``curves_extra.csv`` and ``runs_extra.csv`` from the corpus folder
(never copied); writes scores only, no losses.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _machine import machine, write_json

SOURCES = {
    "lrsched-owt2": ("lrsched-owt2-const", "lrsched-owt2-wsd"),
    "lrsched-sp": ("lrsched-sp-const", "lrsched-sp-wsd"),
    "mpl": ("mpl-constant", "mpl-wsd-linear"),
}


def _score(frame, actual):
    """ARE (%) of the median and coverage of the 80% / 50% intervals at the last token."""
    last = frame[frame["tokens"] == frame["tokens"].max()]
    out = {"median": float(last["median"].iloc[0])}
    out["are"] = 100 * abs(out["median"] - actual) / actual
    for lv in (0.8, 0.5):
        r = last[np.isclose(last["ci_prob"], lv)]
        out[f"covered{round(100 * lv)}"] = bool(r["lower"].iloc[0] <= actual <= r["upper"].iloc[0])
        out[f"width{round(100 * lv)}"] = float((r["upper"].iloc[0] - r["lower"].iloc[0]) / actual)
    return out


def one_branch(frame, runs, source, branch, seed=0, law="h-term"):
    """Fit without ``branch`` and continue its prefix under its schedule; return scores."""
    import hiscale
    from hiscale.data.schedule import schedule_from_runs_extra
    from hiscale.infer.settings import FitOptions

    info = runs.set_index("run")
    b = info.loc[branch]
    prefix = str(b["prefix_run"])
    b_tokens = float(b["branch_step"]) * float(b["tokens_per_step"])
    later = [
        r
        for r, x in info[info["prefix_run"] == prefix].iterrows()
        if r != branch and float(x["branch_step"]) > float(b["branch_step"])
    ]
    keep = (
        (frame["run"] != branch)
        & ~frame["run"].isin(later)
        & ~((frame["run"] == prefix) & (frame["tokens"] > b_tokens))
    )
    train = frame[keep]
    target = frame[frame["run"] == branch]
    target = target[target["tokens"] == target["tokens"].max()]
    actual, t_end = float(target["loss"].iloc[0]), float(target["tokens"].iloc[0])
    sched = schedule_from_runs_extra(b.to_dict() | {"run": branch}).schedule
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = hiscale.fit(train, family=source, law=law, prior="flat",
                        options=FitOptions(rows="all", residual="ar1"), runs_extra=runs,
                        seed=seed)  # fmt: skip
    row = {
        "source": source,
        "branch": branch,
        "prefix": prefix,
        "params": float(target["params"].iloc[0]),
        "branch_tokens": b_tokens,
        "end_tokens": t_end,
        "removed_later_branches": later,
        "prefix_rows_fitted": int((f.data["run"] == prefix).sum()),
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "flagged": bool(f.flagged),
    }
    try:
        cooled = f.predict_run(prefix, [t_end], ci_prob=(0.8, 0.5), seed=seed, schedule=sched)
    except ValueError as e:
        return {**row, "status": "failed", "reason": str(e)}
    own = f.predict_run(prefix, [t_end], ci_prob=(0.8, 0.5), seed=seed)
    row["status"] = "ok"
    row["cooldown"] = _score(cooled[cooled["kind"] == "this_run"], actual)
    row["law_only"] = _score(cooled[cooled["kind"] == "expected"], actual)
    row["no_cooldown"] = _score(own[own["kind"] == "this_run"], actual)
    return row


def summarise(rows):
    """Per source and overall (sources count once): median ARE and coverage of each kind."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = {}
    for kind in ("cooldown", "law_only", "no_cooldown"):
        per = {}
        for src in sorted({r["source"] for r in ok}):
            rs = [r[kind] for r in ok if r["source"] == src]
            per[src] = {
                "branches": len(rs),
                "median_are": float(np.median([x["are"] for x in rs])),
                "mean_are": float(np.mean([x["are"] for x in rs])),
                "coverage80": float(np.mean([x["covered80"] for x in rs])),
                "coverage50": float(np.mean([x["covered50"] for x in rs])),
                "median_width80": float(np.median([x["width80"] for x in rs])),
            }
        out[kind] = {
            "per_source": per,
            "macro_mean_are": float(np.mean([v["mean_are"] for v in per.values()])),
            "macro_coverage80": float(np.mean([v["coverage80"] for v in per.values()])),
            "macro_coverage50": float(np.mean([v["coverage50"] for v in per.values()])),
            "median_are_all": float(np.median([r[kind]["are"] for r in ok])),
        }
    out["failed"] = [
        {"branch": r["branch"], "reason": r["reason"]} for r in rows if r["status"] != "ok"
    ]
    out["flagged"] = sum(r["flagged"] for r in rows)
    return out


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    import pandas as pd

    import hiscale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="folder with curves_extra.csv and runs_extra.csv")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--law", default="h-term", help="curve law of the fits (default h-term)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    hiscale.configure()
    curves = hiscale.load_curves(f"{args.corpus}/curves_extra.csv").frame
    runs = pd.read_csv(f"{args.corpus}/runs_extra.csv")
    rows = []
    for source in args.sources:
        const, wsd = SOURCES[source]
        frame = curves[curves["family"].isin([const, wsd])].assign(family=source)
        for branch in sorted(runs.loc[runs["family"] == wsd, "run"]):
            r = one_branch(frame, runs, source, branch, seed=args.seed, law=args.law)
            rows.append(r)
            if r["status"] == "ok":
                print(f"{branch}: cooldown ARE {r['cooldown']['are']:.2f}% "
                      f"(80% {r['cooldown']['covered80']}), law {r['law_only']['are']:.2f}%, "
                      f"no cooldown {r['no_cooldown']['are']:.2f}%, {r['fit_seconds']} s",
                      flush=True)  # fmt: skip
            else:
                print(f"{branch}: failed: {r['reason']}", flush=True)
    summary = summarise(rows)
    result = {
        "benchmark": "cooldown",
        "law": args.law,
        "command": "python benchmarks/cooldown.py " + " ".join(argv or __import__("sys").argv[1:]),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "rows": rows,
        "summary": summary,
    }
    lines = ["| prediction | macro mean ARE % | median ARE % (all) | 80% / 50% coverage |",
             "|---|---|---|---|"]  # fmt: skip
    for kind in ("cooldown", "law_only", "no_cooldown"):
        s = summary[kind]
        lines.append(f"| {kind} | {s['macro_mean_are']:.2f} | {s['median_are_all']:.2f} | "
                     f"{s['macro_coverage80']:.2f} / {s['macro_coverage50']:.2f} |")  # fmt: skip
    result["table"] = "\n".join(lines)
    print(result["table"])
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
