"""Leave-one-family-out backtest: bayes vs bayes-flat vs paper on identical cells.

Usage::

    python benchmarks/bayes_grid.py [CORPUS] [--grid sub] [--target last30]
        [--families gpt3 pythia ...] [--methods paper bayes bayes-flat bayes-disc bayes-local]
        [--out benchmarks/results/bayes_grid] [--n-boot 2000] [--boot-seed 0]

    # smoke test: one cheap method, two families, the quick grid
    python benchmarks/bayes_grid.py --methods paper --families gpt3 gemstones \\
        --grid quick --out /tmp/bayes_grid_smoke

Writes ``<out>_cells.csv`` (one row per cell and method, gitignored) and
``<out>.json`` (aggregates, schema 2; see :func:`summarise`), then prints the
README tables (``benchmarks/readme_tables.py``). ``readme_tables.py``
recomputes every aggregate from the cells CSV when it is present.

Cells: the paper's protocol (``--grid sub`` = all p values, k = 1..7 plus
three log-spaced k up to n-1 for very large families; identical to the full
paper grid for families with <= 8 training sizes; ``--grid quick`` = k in
{2, 3, 5, n-1}, p in {0.3, 0.5, 1.0}). Bayes methods add k = 1; the paper
method runs its single-model regime there.

Scores (``hiscale.backtesting.scores``): comparisons on the common cells (fitted by every
method); macro averages over family groups (sibling families count once);
low budget = k ≤ 3 or p ≤ 0.3 with k the model sizes actually used;
90% intervals from a family-group bootstrap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

import hiscale
from hiscale.backtesting.runner import backtest
from hiscale.backtesting.scores import (
    LOW_BUDGET,
    common_cells,
    fitted,
    flag_rates,
    groups_of,
    heatmap,
    macro_intervals,
    per_family,
)
from hiscale.data.curves import load_curves
from hiscale.infer.settings import FitOptions

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

FAMILIES = [
    "gpt3",
    "pythia",
    "pythia-deduped",
    "gemstones",
    "misfitting",
    "overtrain-c4",
    "chinchilla",
    "gpt2-datablations-c4-1ep",
]

SCHEMA = 2

DEFINITIONS = {
    "cells": "common cells = cells fitted (status ok, finite ARE) by every method",
    "macro": "mean over cells within a family, then over the families of a family group, "
    "then over groups (every family group counts once)",
    "low_budget": LOW_BUDGET,
    "k1": "one model size used (n_sizes_used = 1; the paper method's single-model regime)",
    "k2": "at most two model sizes used (n_sizes_used <= 2)",
    "early": "p <= 0.3 (any number of model sizes)",
    "early_many": "p <= 0.3 and at least 4 model sizes used",
    "coverage": "share of scored target rows inside the new-run interval, averaged like ARE",
    "interval": "percentile interval of a family-group bootstrap (groups resampled with "
    "replacement)",
    "flag_rate": "flagged fits / cells the method fitted",
}


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))


def interval_score(common: pd.DataFrame, methods: list[str], level: float = 0.8) -> dict:
    """Approximate relative interval score of the ``level`` intervals, per family and macro.

    Per cell, in % of the actual loss: ``(u - l) + (2 / a) (l - y)+ + (2 / a) (y - u)+``
    with ``a = 1 - level`` and the cell's mean bounds and mean actual (the cells
    CSV keeps per-cell means, not per-row bounds, hence "approximate"); mean over
    a family's cells, then over a group's families, then over groups.
    """
    tag = f"{round(level * 100):d}"
    a = 1 - level
    lo, hi, y = common[f"lower{tag}"], common[f"upper{tag}"], common["actual"]
    score = 100 * ((hi - lo) + (2 / a) * ((lo - y).clip(lower=0) + (y - hi).clip(lower=0))) / y
    width = 100 * (hi - lo) / y
    t = common.assign(score=score, width=width, group=groups_of(common))
    fam = t.groupby(["method", "group", "family"])[["score", "width"]].mean()
    macro = fam.groupby(["method", "group"]).mean().groupby("method").mean()
    return {
        "level": level,
        "definition": interval_score.__doc__.split("\n\n")[1].strip().replace("\n   ", ""),
        "per_family": {
            m: fam.loc[m, "score"].droplevel("group").round(4).to_dict()
            for m in methods
            if m in macro.index
        },
        "macro": {m: float(macro.loc[m, "score"]) for m in methods if m in macro.index},
        "width_macro": {m: float(macro.loc[m, "width"]) for m in methods if m in macro.index},
    }


def summarise(
    res: pd.DataFrame,
    *,
    methods: list[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.9,
) -> dict:
    """Aggregates of a backtest (schema 2), all from ``hiscale.backtesting.scores``.

    ``common``: the comparison on the common cells (their count, families and
    groups; macro figures with bootstrap intervals; per-family table;
    flag counts; heatmap). ``own_cells``: per method, macro figures and flag
    rates on every cell that method fitted (its own denominator).
    """
    methods = methods or list(dict.fromkeys(res["method"]))
    common = common_cells(res, methods)
    first = common[common["method"] == methods[0]]
    groups = groups_of(first)
    pairs = (
        ("bayes", "bayes-flat"),
        ("bayes-disc", "bayes"),
        ("bayes-disc3", "bayes"),
        ("bayes-disc3", "bayes-disc"),
        ("bayes-v2", "bayes"),
        ("bayes-cov", "bayes"),
        ("bayes-dataset", "bayes"),
        ("bayes-v2-cov", "bayes-v2"),
        ("bayes-t4", "bayes"),
        ("bayes-local", "bayes"),
        ("bayes-local-choice", "bayes"),
        ("bayes-local-choice", "bayes-local"),
        ("bayes-local-learn", "bayes"),
        ("bayes-curve", "bayes-flat"),
        ("bayes-curve", "bayes"),
        ("bayes-auto", "bayes-flat"),
        ("bayes-auto", "bayes-curve"),
        ("bayes-auto", "bayes"),
        ("bayes-auto-popend", "bayes"),
        ("bayes-auto-popend", "bayes-auto"),
        ("bayes-auto-popend", "bayes-flat"),
        ("bayes-auto-local", "bayes-auto"),
        ("bayes-auto-local", "bayes-flat"),
        ("bayes-auto-local", "bayes"),
    )
    diffs = [(a, b) for a, b in pairs if a in methods and b in methods]
    boot = macro_intervals(
        common, methods, differences=diffs, n_boot=n_boot, seed=seed, level=level
    )
    heat = heatmap(common, methods=methods)
    heat_records = [
        {"models": str(models), "method": m, "p": float(p), "are_pct": float(v)}
        for (m, p), col in heat.items()
        for models, v in col.items()
        if pd.notna(v)
    ]
    own = {}
    for m in methods:
        rows = res[res["method"] == m]
        ok = rows[fitted(rows)]
        entry = {"flag_rate": _records(flag_rates(rows, [m]))[0]}
        if len(ok):
            b = macro_intervals(
                ok, [m], reference=None, differences=(), n_boot=n_boot, seed=seed, level=level
            )
            entry["intervals"] = _records(b.table)
            entry["groups"] = sorted(set(groups_of(ok)))
        own[m] = entry
    return {
        "schema": SCHEMA,
        "definitions": DEFINITIONS,
        "methods": methods,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level, "unit": "family group"},
        "common": {
            "cells": len(first),
            "cells_per_family": first["family"].value_counts().sort_index().to_dict(),
            "groups": {
                g: sorted(set(first.loc[groups == g, "family"])) for g in sorted(set(groups))
            },
            "intervals": _records(boot.table),
            "per_family": _records(per_family(common, methods)),
            "flagged": _records(flag_rates(common, methods)),
            "heatmap": heat_records,
            "interval_score80": interval_score(common, methods)
            if all(c in common for c in ("lower80", "upper80", "actual"))
            else None,
        },
        "own_cells": own,
        "seconds_per_cell_median": res.groupby("method")["seconds"].median().to_dict(),
    }


def main(argv=None) -> int:
    hiscale.configure()  # first: 64-bit floats and host devices for JAX
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Smoke test: --methods paper --families gpt3 gemstones --grid quick "
        "--out /tmp/bayes_grid_smoke",
    )
    ap.add_argument(
        "corpus", nargs="?", default=os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    )
    ap.add_argument(
        "--families", nargs="+", default=FAMILIES, help="families to test (default: the eight)"
    )
    ap.add_argument("--methods", nargs="+", default=["paper", "bayes", "bayes-flat"])
    ap.add_argument(
        "--grid",
        default="sub",
        help="sub (default; the paper grid, subsampled k for very large families), "
        "quick (k in {2,3,5,n-1}, p in {0.3,0.5,1.0}: a small subset) or paper",
    )
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="more curves tables: their families feed the leave-one-group-out populations "
        "(e.g. ../shared/corpus/curves_extra.csv for the corpus-v2 population); only "
        "--families are scored",
    )
    ap.add_argument(
        "--min-span",
        type=float,
        default=4.0,
        help="smallest size span of a family in the leave-one-group-out populations "
        "(4 = corpus-v1's filter; 1 = every family informs what it identifies, as corpus-v2)",
    )
    ap.add_argument(
        "--covariate",
        default=None,
        help="family covariate of bayes's leave-one-group-out populations (e.g. metric_kind, "
        "dataset): the population mean depends on its level, each family gets the prior "
        "at its own level (hiscale.data.covariates.family_covariate)",
    )
    ap.add_argument(
        "--prior-df",
        type=float,
        default=None,
        help="bayes's law prior as independent Student-t's with this many degrees of freedom "
        "in its whitened coordinates (same scale; the setting df_law), instead of Gaussian",
    )
    ap.add_argument(
        "--label",
        default=None,
        help="name the (single) re-run method's rows LABEL, so a variant (e.g. bayes-v2 "
        "with --extra) sits beside the --reuse run's own rows on identical cells",
    )
    ap.add_argument(
        "--curve-prior",
        default="flat",
        help="prior of bayes-curve: flat (default) or loo (the curve law's own population, "
        "rebuilt without the tested family's group from whole-curve fits)",
    )
    ap.add_argument(
        "--auto-prior",
        default="flat",
        help="prior of bayes-auto: flat (default) or auto (the end-of-run population as "
        "bayes chooses it, for the end-of-run candidate; the whole-curve candidate gets "
        "the weak defaults unless --auto-curve-prior says otherwise)",
    )
    ap.add_argument(
        "--auto-curve-prior",
        default=None,
        help="bayes-auto's whole-curve candidate's own prior (default: flat whenever "
        "--auto-prior is a population learned for the end-of-run law)",
    )
    ap.add_argument(
        "--runs-extra",
        default=None,
        help="runs_extra.csv of the corpus: schedules of the --extra families, so they can "
        "feed bayes-curve's and bayes-auto's whole-curve populations (--curve-prior loo)",
    )
    ap.add_argument(
        "--curve-law",
        default="h-term",
        help="law of bayes-curve (ablations: chinchilla, chinchilla-nd, h-term, momentum)",
    )
    ap.add_argument(
        "--curve-rows",
        default="all",
        choices=["all", "end"],
        help="rows of bayes-curve (ablations; its residual is always the AR(1) one)",
    )
    ap.add_argument(
        "--end-lr-tolerance",
        default=None,
        metavar="H|none",
        help="bayes's FitOptions.end_lr_tolerance (default: the engine's, 0.1; 'none' selects "
        "end-of-run rows by tokens alone, the rule before 2026-12-02), in its fits and in "
        "its populations' step-1 fits",
    )
    ap.add_argument("--target", default="last30")
    ap.add_argument("--direction", default="up")
    ap.add_argument(
        "--out",
        default=None,
        help="output stem (default: benchmarks/results/bayes_grid for a run; with "
        "--summarise nothing is written unless --out is given)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of every cell's sampler")
    ap.add_argument("--n-boot", type=int, default=2000, help="family-group bootstrap replicates")
    ap.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap")
    ap.add_argument(
        "--reuse",
        default=None,
        help="cells CSV of an earlier run: rows of methods not in --methods are taken from it "
        "(same grid, target and families), so one method can be re-run alone",
    )
    ap.add_argument(
        "--methods-only",
        nargs="+",
        default=None,
        help="with --summarise: the methods to compare (default: all in the CSV)",
    )
    ap.add_argument(
        "--summarise",
        metavar="CELLS_CSV",
        default=None,
        help="no backtest: summarise a cells CSV written by an earlier run (e.g. after new "
        "comparisons were added) into --out.json",
    )
    args = ap.parse_args(argv)
    if args.out is None and not args.summarise:
        args.out = "benchmarks/results/bayes_grid"
    if args.summarise:
        res = pd.read_csv(args.summarise)
        methods = args.methods_only or list(dict.fromkeys(res["method"]))
        summ = summarise(res, methods=methods, n_boot=args.n_boot, seed=args.boot_seed)
        summ.update(
            {
                "command": " ".join(["python", *sys.argv]),
                "summarised_from": args.summarise,
                "families": sorted(set(res["family"])),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{machine()['platform']} / {os.cpu_count()} CPUs / "
                f"{machine()['python']}",
            }
        )
        if args.out is not None:  # a summary to look at must not overwrite a recorded one
            Path(f"{args.out}.json").write_text(json.dumps(summ, indent=2, default=float) + "\n")
        from readme_tables import grid_tables

        print(grid_tables(summ))
        return 0
    curves = load_curves([args.corpus, *args.extra])
    runs_extra = None if args.runs_extra is None else pd.read_csv(args.runs_extra)
    bayes_options = {}
    if args.end_lr_tolerance is not None:
        tol = None if args.end_lr_tolerance == "none" else float(args.end_lr_tolerance)
        bayes_options["options"] = FitOptions(end_lr_tolerance=tol)
    t0 = time.perf_counter()
    res = backtest(
        curves,
        families=args.families,
        methods=args.methods,
        grid=args.grid,
        target=args.target,
        direction=args.direction,
        include_k1=True,
        seed=args.seed,
        progress=True,
        # bayes-disc learns its population's discrepancy for the backtest's direction
        method_options={
            # with --extra the populations are rebuilt from every table given ("loo"),
            # not taken from the shipped corpus-v1
            "bayes": {
                **bayes_options,
                "min_span": args.min_span,
                "covariate": args.covariate,
                **({"prior": "loo"} if args.extra else {}),
                **({"prior_settings": {"df_law": args.prior_df}} if args.prior_df else {}),
            },
            "bayes-disc": {"disc_direction": args.direction, "min_span": args.min_span},
            "bayes-disc3": {"disc_direction": args.direction, "min_span": args.min_span},
            "bayes-local": {"min_span": args.min_span},
            "bayes-local-choice": {"min_span": args.min_span},
            "bayes-local-learn": {"min_span": args.min_span},
            "bayes-auto": {
                "prior": args.auto_prior,
                "curve_prior": args.auto_curve_prior,
                "runs_extra": runs_extra,
            },
            "bayes-auto-local": {
                "prior": args.auto_prior,
                "curve_prior": args.auto_curve_prior,
                "runs_extra": runs_extra,
            },
            "bayes-curve": {
                "prior": args.curve_prior,
                "runs_extra": runs_extra,
                "progress": True,
                "law": args.curve_law,
                "options": FitOptions(rows=args.curve_rows, residual="ar1"),
            },
        },
    )
    total = time.perf_counter() - t0
    methods = list(args.methods)
    if args.label:
        if len(methods) != 1:
            ap.error("--label names the rows of exactly one method")
        res["method"] = res["method"].replace(methods[0], args.label)
        methods = [args.label]
    if args.reuse:
        old = pd.read_csv(args.reuse)
        old = old[~old["method"].isin(methods) & old["family"].isin(args.families)]
        res = pd.concat([old, res], ignore_index=True)
        methods = list(dict.fromkeys([*old["method"], *methods]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(f"{out}_cells.csv", index=False)
    summ = summarise(res, methods=methods, n_boot=args.n_boot, seed=args.boot_seed)
    summ.update(
        {
            "command": " ".join(["python", *sys.argv]),
            "families": args.families,
            "grid": args.grid,
            "population_extra": args.extra,
            "population_min_span": args.min_span,
            "population_covariate": args.covariate,
            "prior_df_law": args.prior_df,
            "target": args.target,
            "direction": args.direction,
            "total_seconds": total,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine_info": machine(),
            "machine": (f"{machine()['platform']} / {os.cpu_count()} CPUs / {machine()['python']}"),
        }
    )
    Path(f"{out}.json").write_text(json.dumps(summ, indent=2, default=float) + "\n")
    from readme_tables import grid_tables

    print(grid_tables(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
