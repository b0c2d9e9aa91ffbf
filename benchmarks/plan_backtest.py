r"""Retrospective campaigns: the planner against rules of thumb on real families (issue 11).

For each family: the target is its largest-compute run; starting from its
cheapest run, each strategy picks from the remaining existing runs until it
has spent a fraction of the target's FLOPs (the start run counts); then one
fit on the picked runs predicts the target's final loss. Strategies:

* ``planner``: sequential, as a user would run it: fit the runs so far,
  ``hiscale.plan`` on the remaining budget, train the runs of its sequence
  (it stops early when its importance weights degenerate), refit, plan again;
  with ``--discrepancy population`` (default) its target interval includes
  the law's extrapolation error, and ``planner-law-only`` (the same without
  it) runs beside it (not with ``--local-sd``, where the fit carries the
  law's error and the discrepancy is not used);
* ``hitchhiker``: about five sizes, the largest affordable, each trained to
  about 30% of the target's tokens (closest existing run);
* ``cheapest-first``;
* ``random``: mean over ``--random`` orders.

Scores per (strategy, budget): ARE (%) of the predicted median at the
target's final checkpoint, whether the 80% new-run interval covers it, and
the interval's relative width; ``all-runs`` is the fit on every non-target run.
Runs on the corpus (``HISCALE_CORPUS`` or the first argument); prints one JSON
document (no losses, only scores). Small sampler settings by default; use
``nice`` on a shared machine::

    nice python benchmarks/plan_backtest.py ../shared/corpus/curves.csv \
        --family overtrain-c4 --budgets 0.01 0.05 0.1 0.3

With ``--extra ../shared/corpus/curves_extra.csv`` the sweep families of that
table (``farseer``, ``lrsched-sp-*``, ``mpl-*``) can be campaigned too;
``--population-from corpus`` learns every family's population and discrepancy
from the first table's families only (the shipped prior's). Every cell is also
scored with the interval the planner states (``covered80_disc``,
``width80_disc``: the fit's interval widened by the planner's discrepancy at the
fitted runs' distance from the target).

``--refit-check SEED ...`` instead checks the planner's cheap update
(importance reweighting) against NUTS refits on simulated families.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np


def _runs_table(frame):
    import pandas as pd

    rows = []
    for run, g in frame.groupby("run", sort=False):
        last = g.loc[g["tokens"].idxmax()]
        flops = np.nan
        if "flops" in g.columns:
            f = pd.to_numeric(g["flops"], errors="coerce").to_numpy(float)
            if np.isfinite(f).any():
                flops = float(np.nanmax(f))
        if not np.isfinite(flops):
            flops = 6.0 * float(last["params"]) * float(last["tokens"])
        rows.append(
            {
                "label": str(run),
                "params": float(last["params"]),
                "tokens": float(last["tokens"]),
                "flops": flops,
                "loss": float(last["loss"]),
            }
        )
    return pd.DataFrame(rows)


def _fit(curves, family, runs, args, target=None):
    from hiscale import SamplerSettings, fit
    from hiscale.infer.settings import FitOptions
    from hiscale.priors.prior import PriorWarning

    options = FitOptions()
    if getattr(args, "local_sd", 0) > 0:
        if target is None:
            raise ValueError("--local-sd: the fit needs its target")
        options = FitOptions(local_to=(target["params"], target["tokens"]), local_sd=args.local_sd)

    sub = curves.with_frame(
        curves.frame[(curves.frame["family"] == family) & curves.frame["run"].isin(runs)],
        step="runs",
        reason="not picked",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorWarning)
        return fit(
            sub,
            family=family,
            prior=args.prior_obj,
            seed=args.seed,
            options=options,
            sampler=SamplerSettings(num_warmup=args.num_warmup, num_samples=args.num_samples),
            runs_extra=getattr(args, "runs_extra_df", None),
        )


def _score(f, target, h=None, table=None, runs=None):
    """ARE, 80% coverage and width of the fit's new-run interval at the target.

    With ``h`` (the discrepancy's 80% half-width per unit ln compute, the
    planner's): also ``covered80_disc`` / ``width80_disc``, the interval the
    planner states, widened by ``h`` times the target's distance in ln(6ND) to
    the nearest of ``runs`` (rows of ``table``), as the planner computes it.
    """
    from hiscale.planning.preposterior import widen_log_interval

    p = (
        f.predict((target["params"], target["tokens"]), ci_prob=0.8, seed=0)
        .query("kind == 'new_run'")
        .iloc[0]
    )
    loss = target["loss"]
    out = {
        "are": 100 * abs(p["median"] - loss) / loss,
        "covered80": bool(p["lower"] <= loss <= p["upper"]),
        "width80": float((p["upper"] - p["lower"]) / p["median"]),
        "flagged": bool(f.flagged),
    }
    if h is not None:
        r = table.set_index("label").loc[list(runs)]
        at = np.log(6.0 * target["params"] * target["tokens"])
        d = float(np.min(np.abs(np.log(6.0 * r["params"] * r["tokens"]) - at)))
        lo, hi = widen_log_interval(p["lower"], p["median"], p["upper"], h * d)
        out.update(
            covered80_disc=bool(lo <= loss <= hi),
            width80_disc=float((hi - lo) / p["median"]),
            distance=d,
        )
    return out


def _within(order, table, budget):
    picked, spent = [], 0.0
    for i in order:
        if spent + table["flops"].iloc[i] <= budget:
            picked.append(i)
            spent += table["flops"].iloc[i]
    return picked


def _planner(curves, family, start, pool, budget_left, target, args, discrepancy=None):
    from hiscale.planning import plan
    from hiscale.planning.candidates import validate_candidates

    used = [start]
    steps = []
    for _ in range(args.max_rounds):
        left = pool[~pool["label"].isin(used)]
        if not len(left) or budget_left < left["flops"].min():
            break
        f = _fit(curves, family, used, args, target)
        cands = validate_candidates(left[["label", "params", "tokens", "flops"]])
        p = plan(
            f,
            at=(target["params"], target["tokens"]),
            candidates=cands,
            budget=budget_left,
            seed=args.seed,
            n_outcomes=args.outcomes,
            discrepancy=discrepancy,
            distance=args.discrepancy_distance,
            aggregate=args.aggregate,
            min_gain=args.min_gain,
            greedy=args.greedy,
        )
        if not p.runs:
            break
        new = [r["label"] for r in p.runs]
        steps.append({"fit_flagged": f.flagged, "picked": new, "stop": p.stop_reason})
        used += new
        budget_left -= sum(r["flops"] for r in p.runs)
    return used, steps


def _population_curves(curves, family, args):
    """The table the family's population and discrepancy are learned from.

    ``--population-from all``: every table read; ``corpus``: the first table's
    families only (plus the family's own rows, which leave-one-group-out drops
    with its group), so a family from an ``--extra`` table borrows from what the
    shipped corpus knows, and the first table's families are unchanged by ``--extra``.
    """
    if args.population_from == "all":
        return curves
    keep = set(args.corpus_families) | {family}
    f = curves.frame
    return curves.with_frame(
        f[f["family"].isin(keep)], step="population", reason="family of an --extra table"
    )


def _prior(curves, family, args):
    """The prior every fit of ``family`` uses, and its label.

    ``loo`` (default): the population rebuilt without the family's group, so
    no fit borrows from the family it predicts; any other value is a prior
    name or path (a bundled prior that saw the family leaks its answer).
    """
    if args.prior != "loo":
        return args.prior, str(args.prior)
    from hiscale.backtesting.loo_prior import leave_one_out_prior

    pr = leave_one_out_prior(curves, family)
    return pr, pr.label


def run_family(curves, family, args) -> dict:
    """Every strategy at every budget for one family."""
    from hiscale.planning.candidates import rule_of_thumb

    table = _runs_table(curves.family(family).frame)
    ti = int(table["flops"].idxmax())
    target = table.iloc[ti].to_dict()
    pool = table.drop(index=ti).reset_index(drop=True)
    si = int(pool["flops"].idxmin())
    start = pool["label"].iloc[si]
    rest = pool.drop(index=si).reset_index(drop=True)
    out = {
        "family": family,
        "runs": len(table),
        "target": {k: target[k] for k in ("label", "params", "tokens", "flops")},
        "start": start,
        "cells": [],
    }
    t0 = time.perf_counter()
    donors = _population_curves(curves, family, args)
    args.prior_obj, out["prior"] = _prior(donors, family, args)
    disc = None
    if args.discrepancy == "population":
        from hiscale.backtesting.discrepancy import population_discrepancy

        # learned from the other families' leave-largest-size-out errors (the
        # family's own group left out), as a user's DATA with donor families gives it
        disc = population_discrepancy(donors, family, distance=args.discrepancy_distance)
        out["discrepancy"] = {"label": disc.label, "m": disc.m, "s": disc.s}
    # every strategy's fit is also scored with the interval the planner states
    # (law + discrepancy at the fitted runs' distance from the target)
    from hiscale.planning.preposterior import discrepancy_halfwidth

    h = None if disc is None else discrepancy_halfwidth(disc, 0.8)
    out["discrepancy_halfwidth80"] = h

    def score(f, runs):
        return _score(f, target, h, table, runs)

    old = None
    if args.rules_from:
        # the rules do not depend on the planner's settings: reuse an earlier run's cells
        prev = json.loads(open(args.rules_from).read())
        if prev["settings"]["prior"] != args.prior or args.local_sd > 0:
            raise SystemExit(
                "--rules-from: the earlier run must use the same --prior, no --local-sd"
            )
        old = next((f for f in prev["families"] if f["family"] == family), None)
        if old is None or old["target"]["label"] != target["label"]:
            raise SystemExit(f"--rules-from: no matching cells of {family!r}")
        out["rules_from"] = args.rules_from
        out["all_runs"] = old["all_runs"]
    else:
        ref = _fit(curves, family, pool["label"].tolist(), args, target)
        out["all_runs"] = {
            **score(ref, pool["label"].tolist()),
            "flops_frac": pool["flops"].sum() / target["flops"],
        }
    print(f"{family}: all runs {out['all_runs']}", file=sys.stderr, flush=True)
    for frac in args.budgets:
        budget_left = frac * target["flops"] - float(pool["flops"].iloc[si])
        picks, cells = {}, {}
        if old is not None:
            prev_cell = next(c for c in old["cells"] if c["budget_frac"] == frac)
            cells = {
                k: v
                for k, v in prev_cell["strategies"].items()
                if k in ("hitchhiker", "cheapest-first", "random")
            }
        elif budget_left > 0:
            picks["hitchhiker"] = rule_of_thumb(
                rest, (target["params"], target["tokens"]), budget_left, "hitchhiker"
            )
            picks["cheapest-first"] = rule_of_thumb(
                rest, (target["params"], target["tokens"]), budget_left, "cheapest-first"
            )
        else:
            picks = {"hitchhiker": [], "cheapest-first": []}
        for name, idx in picks.items():
            runs = [start, *rest["label"].iloc[idx].tolist()]
            cells[name] = {
                "runs": runs,
                **score(_fit(curves, family, runs, args, target), runs),
            }
        variants = {"planner": disc}
        if disc is not None and not args.local_sd > 0 and old is None:
            variants["planner-law-only"] = None  # the same planner taking the law as exact
        for name, dv in variants.items():
            used, steps = _planner(
                curves, family, start, pool, budget_left, target, args, discrepancy=dv
            )
            cells[name] = {
                "runs": used,
                "rounds": steps,
                **score(_fit(curves, family, used, args, target), used),
            }
        rnd = []
        for r in range(args.random if old is None else 0):
            order = np.random.default_rng(args.seed + 1000 + r).permutation(len(rest))
            runs = [start, *rest["label"].iloc[_within(order, rest, budget_left)].tolist()]
            rnd.append(score(_fit(curves, family, runs, args, target), runs))
        if rnd:
            cells["random"] = {
                **{
                    k: float(np.mean([x[k] for x in rnd]))
                    for k in ("are", "covered80", "width80", "covered80_disc", "width80_disc")
                    if k in rnd[0]
                },
                "flagged": int(sum(x["flagged"] for x in rnd)),
                "draws": len(rnd),
            }
        for c in cells.values():
            if "runs" in c:
                spent = pool.set_index("label").loc[c["runs"], "flops"].sum()
                c["flops_frac"] = float(spent / target["flops"])
        out["cells"].append({"budget_frac": frac, "strategies": cells})
        summary = {k: (round(v["are"], 2), v["covered80"]) for k, v in cells.items()}
        print(f"{family} budget {frac:g}: {summary}", file=sys.stderr, flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def refit_check(seeds, args) -> list[dict]:
    """Compare the cheap update with NUTS refits on simulated families (known truth).

    Per seed: a family at 50M-800M (20 checkpoints per run), a fit of its two
    smallest runs, then for each of the next two runs (its kept end-of-run
    rows as simulated): the 80% new-run relative width at 7B / 140B tokens by
    importance reweighting of the two-run draws, and by a NUTS refit on the
    three runs.
    """
    from hiscale import SamplerSettings, fit, load_curves
    from hiscale.infer.fit import FitOptions
    from hiscale.modeling.simulate import simulate_families
    from hiscale.planning.preposterior import draws_from_fit, reweighted_width

    target = (7e9, 1.4e11)
    samp = SamplerSettings(num_warmup=args.num_warmup, num_samples=args.num_samples)
    rows_out = []
    for seed in seeds:
        df, _ = simulate_families(
            n_families=1, seed=seed, sizes=[5e7, 1e8, 2e8, 4e8, 8e8], n_checkpoints=20
        )
        c = load_curves(df)
        fam = c.families[0]
        runs = sorted(df["run"].unique(), key=lambda r: df[df.run == r]["params"].iloc[0])

        def sub(names, c=c):
            return c.with_frame(c.frame[c.frame.run.isin(names)], step="runs", reason="x")

        f0 = fit(sub(runs[:2]), family=fam, seed=0, sampler=samp)
        p0 = f0.predict(target, ci_prob=0.8).query("kind == 'new_run'").iloc[0]
        kept = FitOptions().select(c.family(fam)).frame
        for cand in runs[2:4]:
            r = kept[kept.run == cand]
            rw = reweighted_width(
                draws_from_fit(f0),
                target,
                float(r.params.iloc[0]),
                r.tokens.to_numpy(),
                np.log(r.loss.to_numpy()),
            )
            f1 = fit(sub([*runs[:2], cand]), family=fam, seed=0, sampler=samp)
            p1 = f1.predict(target, ci_prob=0.8).query("kind == 'new_run'").iloc[0]
            refit = (p1.upper - p1.lower) / p1["median"]
            row = {
                "seed": seed,
                "candidate": cand,
                "rows": len(r),
                "before": (p0.upper - p0.lower) / p0["median"],
                "reweighted": rw["relative_width"],
                "refit": refit,
                "relative_difference": (rw["relative_width"] - refit) / refit,
                "ess": rw["ess"],
                "median_reweighted": rw["median"],
                "median_refit": p1["median"],
                "flagged": bool(f0.flagged or f1.flagged),
            }
            print(json.dumps(row, default=float), file=sys.stderr, flush=True)
            rows_out.append(row)
    return rows_out


STRATEGIES = ("planner", "planner-law-only", "hitchhiker", "cheapest-first", "random")
# per cell: the fit's interval, and (campaigns since 2026-12-02) the interval the planner
# states, widened by its discrepancy (``_score``)
QUANTITIES = ("are", "covered80", "width80", "covered80_disc", "width80_disc")


def summarise(result: dict, groups: dict[str, str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Macro ARE, 80% coverage and width per (budget, strategy), family groups counted once.

    Mean over a group's families, then over groups; 90% percentile intervals of a
    family-group bootstrap (``hiscale.backtesting.scores.group_bootstrap``). ``random``
    enters as its mean over orders. Also: per budget, whether the planner's macro ARE
    is at most every rule's, and its ratio to the fit on all runs.
    """
    import pandas as pd

    from hiscale.backtesting.scores import group_bootstrap

    rows = []
    for fam in result["families"]:
        for cell in fam["cells"]:
            for name, c in cell["strategies"].items():
                rows.append(
                    {
                        "group": groups.get(fam["family"], fam["family"]),
                        "family": fam["family"],
                        "budget": cell["budget_frac"],
                        "strategy": name,
                        **{q: float(c.get(q, np.nan)) for q in QUANTITIES},
                    }
                )
        rows.append(
            {
                "group": groups.get(fam["family"], fam["family"]),
                "family": fam["family"],
                "budget": "all",
                "strategy": "all-runs",
                **{q: float(fam["all_runs"].get(q, np.nan)) for q in QUANTITIES},
            }
        )
    t = pd.DataFrame(rows)
    quantities = [q for q in QUANTITIES if t[q].notna().all()]
    fam = t.groupby(["budget", "strategy", "group", "family"])[quantities]
    per_group = fam.mean().groupby(["budget", "strategy", "group"]).mean()
    out = {"groups": sorted(set(t["group"])), "families": sorted(set(t["family"])), "cells": []}
    for (budget, strategy), g in per_group.groupby(level=["budget", "strategy"]):
        gv = g.droplevel(["budget", "strategy"])
        stats = {("macro", q, strategy): (lambda df, q=q: df[q].to_numpy()) for q in quantities}
        b = group_bootstrap(gv, stats, n_boot=n_boot, seed=seed, level=0.9)
        for r in b.table.to_dict(orient="records"):
            out["cells"].append({"budget": budget, **r})
    macro = {(c["budget"], c["method"], c["quantity"]): c["estimate"] for c in out["cells"]}
    out["planner_at_most_every_rule"] = {
        str(b): all(
            macro[(b, "planner", "are")] <= macro[(b, r, "are")]
            for r in ("hitchhiker", "cheapest-first", "random")
            if (b, r, "are") in macro
        )
        for b in sorted({c["budget"] for c in out["cells"] if c["budget"] != "all"})
    }
    # planner minus each rule, paired on the same family groups (one bootstrap per budget)
    out["planner_minus_rule"] = []
    for budget in sorted({c["budget"] for c in out["cells"] if c["budget"] != "all"}):
        gv = per_group.xs(budget, level="budget")["are"].unstack("strategy")
        if "planner" not in gv:
            continue
        stats = {
            ("difference", "are", f"planner - {r}"): (
                lambda df, r=r: df["planner"].to_numpy() - df[r].to_numpy()
            )
            for r in ("hitchhiker", "cheapest-first", "random")
            if r in gv
        }
        b = group_bootstrap(gv, stats, n_boot=n_boot, seed=seed, level=0.9)
        for r in b.table.to_dict(orient="records"):
            out["planner_minus_rule"].append({"budget": budget, **r})
    all_are = macro.get(("all", "all-runs", "are"))
    out["planner_over_all_runs"] = {
        str(b): macro[(b, "planner", "are")] / all_are
        for b in sorted({c["budget"] for c in out["cells"] if c["budget"] != "all"})
        if all_are
    }
    return out


def summary_table(summ: dict) -> str:
    """Markdown: macro ARE [90% interval] / coverage / width per budget and strategy.

    With the discrepancy scores (campaigns since 2026-12-02) two more columns: the
    80% coverage and width of the interval the planner states (law + discrepancy).
    """
    cell = {(c["budget"], c["method"], c["quantity"]): c for c in summ["cells"]}
    budgets = sorted({c["budget"] for c in summ["cells"] if c["budget"] != "all"})
    disc = any(q == "covered80_disc" for (_, _, q) in cell)
    qs = ("are", "covered80", "width80", *(("covered80_disc", "width80_disc") if disc else ()))
    head = "| budget | strategy | macro ARE % [90%] | 80% coverage | 80% width |"
    if disc:
        head += " 80% coverage, + discrepancy | 80% width, + discrepancy |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]

    def row(b, s, label):
        v = [cell[(b, s, q)] for q in qs]
        a = v[0]
        out = f"| {label} | {a['estimate']:.2f} [{a['lower']:.2f}, {a['upper']:.2f}] |"
        for x, q in zip(v[1:], qs[1:], strict=True):
            out += f" {x['estimate']:.3f} |" if q.startswith("width") else f" {x['estimate']:.2f} |"
        return out

    for b in budgets:
        for s in STRATEGIES:
            if (b, s, "are") in cell:
                lines.append(row(b, s, f"{b:.0%} | {s}"))
    if ("all", "all-runs", "are") in cell:
        lines.append(row("all", "all-runs", "all runs | (no budget)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    import os

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS"))
    p.add_argument("--family", nargs="+", default=["overtrain-c4"])
    p.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="CSV",
        help="more curve tables read with the corpus (e.g. ../shared/corpus/curves_extra.csv "
        "for its sweep families); the leave-one-group-out populations and discrepancies are "
        "then learned from every table given (see --population-from)",
    )
    p.add_argument(
        "--runs-extra",
        metavar="CSV",
        help="the corpus's runs_extra.csv: learning-rate schedules of the --extra families' "
        "runs, so the end-of-run rows of a run with a known schedule leave out its cooldown "
        "(FitOptions.end_lr_tolerance)",
    )
    p.add_argument(
        "--population-from",
        choices=["all", "corpus"],
        default="all",
        help="with --extra: learn the populations and discrepancies from every table (all, "
        "default) or from the corpus (first table) only, as the shipped prior does",
    )
    p.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.3])
    p.add_argument(
        "--prior",
        default="loo",
        help="loo (default: the population without the family's group) or a prior name/path",
    )
    p.add_argument(
        "--discrepancy",
        choices=["none", "population"],
        default="population",
        help="planner's extrapolation discrepancy: population (learned from the other "
        "families' leave-largest-size-out errors; the law-only planner runs beside it as "
        "planner-law-only) or none",
    )
    p.add_argument("--random", type=int, default=5, help="random orders per budget (5)")
    p.add_argument(
        "--discrepancy-distance",
        choices=["compute", "params"],
        default="compute",
        help="what the planner's discrepancy grows with (default: training compute)",
    )
    p.add_argument(
        "--aggregate",
        choices=["nearest", "mean"],
        default="nearest",
        help="the planner's extrapolation distance of a set of runs (default: nearest)",
    )
    p.add_argument(
        "--local-sd",
        type=float,
        default=0.0,
        help="every fit (all strategies) local to the target with this local_sd "
        "(FitOptions, hiscale.modeling.local); the planner then takes the law's error "
        "from the fit, not from --discrepancy (default 0: ordinary fits)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="the planner trains a run only if it is expected to narrow the target's "
        "interval by at least this fraction (default 0: any narrowing)",
    )
    p.add_argument(
        "--greedy",
        choices=["best", "per-flop", "gain"],
        default="best",
        help="the planner's greedy rule (hiscale.plan(greedy=...); default best)",
    )
    p.add_argument(
        "--rules-from",
        metavar="JSON",
        default=None,
        help="take the rules' cells (hitchhiker, cheapest-first, random) and the all-runs fit "
        "from an earlier run with the same families, budgets and prior, and run the planner "
        "only",
    )
    p.add_argument("--outcomes", type=int, default=24)
    p.add_argument("--max-rounds", type=int, default=6, help="plan-fit rounds (6)")
    p.add_argument("--num-warmup", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=750)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument(
        "--summarise",
        metavar="JSON",
        help="instead: macro table (family groups counted once, bootstrap intervals) of a "
        "finished run's JSON; with --out, the JSON with its summary",
    )
    p.add_argument(
        "--refit-check",
        nargs="+",
        type=int,
        metavar="SEED",
        help="instead: compare the reweighted width with NUTS refits on simulated families",
    )
    args = p.parse_args(argv)
    if args.summarise:
        from hiscale.data.curves import family_groups, load_curves

        result = json.loads(open(args.summarise).read())
        groups = family_groups(load_curves([args.corpus, *args.extra]))
        summ = summarise(result, groups)
        result["summary"] = summ
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(json.dumps(result, indent=2, default=float) + "\n")
        print(summary_table(summ))
        print(json.dumps({k: v for k, v in summ.items() if k != "cells"}, indent=1))
        return 0
    if args.refit_check:
        import hiscale

        hiscale.configure()
        rows = refit_check(args.refit_check, args)
        print(json.dumps({"benchmark": "plan_refit_check", "rows": rows}, indent=2, default=float))
        return 0
    if not args.corpus:
        p.error("give the corpus path or set HISCALE_CORPUS")

    import hiscale

    hiscale.configure()
    from _machine import emit, machine

    curves = hiscale.load_curves([args.corpus, *args.extra])
    args.corpus_families = hiscale.load_curves(args.corpus).families
    args.runs_extra_df = None
    if args.runs_extra is not None:
        import pandas as pd

        args.runs_extra_df = pd.read_csv(args.runs_extra)
    result = {
        "benchmark": "plan_backtest",
        "command": "python benchmarks/plan_backtest.py " + " ".join(argv or sys.argv[1:]),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("corpus", "prior_obj", "corpus_families", "runs_extra_df")
        },
        "families": [run_family(curves, fam, args) for fam in args.family],
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
