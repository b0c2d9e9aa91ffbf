"""``hiscale backtest``: score methods on the paper's (k, p) grid."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from hiscale.cli.args import (
    add_data_args,
    add_scheduler_arg,
    nonneg_float,
    positive_int,
    probability,
    tails_df,
)

HELP = "score methods on the paper's (k, p) grid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale backtest`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    add_data_args(p)
    p.add_argument(
        "--family",
        action="append",
        required=True,
        help="family to backtest (repeatable); 'all' = every usable family",
    )
    p.add_argument(
        "--method",
        action="append",
        default=None,
        help="paper | bayes | bayes-flat | bayes-disc | bayes-local | bayes-local-learn | "
        "bayes-local-choice (global or local fit per cell by leave-future-out) | "
        "bayes-curve (whole curves; size and continue cells) | bayes-auto (end-of-run or "
        "whole-curve model chosen per cell by leave-future-out; the 'note' column says which) "
        "| bayes-auto-local (bayes-auto whose end-of-run model is also global or local to the "
        "target by leave-future-out) (repeatable; default paper)",
    )
    p.add_argument("--grid", default="paper", choices=["paper", "quick", "sub"])
    p.add_argument(
        "--target",
        default="last30",
        choices=["last30", "final", "continue"],
        help="scored rows; 'continue': predict each size's final loss from the first p of "
        "every run's schedule (k = size rank; --grid quick: p = 0.3, else 0.1, 0.2, 0.3, 0.5)",
    )
    p.add_argument("--direction", default="up", choices=["up", "down"])
    p.add_argument("--min-tokens", type=nonneg_float, default=1e10, help="10B cut (0 disables)")
    p.add_argument(
        "--k1",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add k=1 cells (default: on when a Bayesian method runs)",
    )
    p.add_argument(
        "--prior",
        default=None,
        help="prior for bayes (and bayes-curve/bayes-auto, default flat): a shipped name or "
        "path, or 'loo' to always build one without "
        "the family's group from DATA (default: the shipped corpus-v1, rebuilt without the "
        "family's group from DATA when it saw that group; the 'prior' column says which)",
    )
    p.add_argument(
        "--prior-tails",
        type=tails_df,
        default=None,
        metavar="NU",
        help="Student-t tails (NU > 2 degrees of freedom, same covariance) on the law prior "
        "of the end-of-run Bayesian methods (bayes, bayes-flat, bayes-disc*, bayes-local*); "
        "the 'prior' column says so",
    )
    p.add_argument(
        "--runs-extra",
        default=None,
        metavar="PATH",
        help="runs_extra.csv of the corpus: schedules of the extra families (bayes-curve, "
        "bayes-auto) and, with --target continue, branch runs joined to their root runs",
    )
    add_scheduler_arg(p, what="the cells (and the leave-one-group-out priors they need)")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="shorthand for --scheduler local:N",
    )
    p.add_argument(
        "--out",
        default=None,
        help="CSV file, one row per cell, appended as cells finish (rewritten in order at the end)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out and run only the missing cells",
    )
    p.add_argument(
        "--ci-prob",
        type=probability,
        metavar="P",
        action="append",
        default=None,
        help="central new-run interval probability scored per cell (repeatable; "
        "default 0.8 and 0.5); each adds lowerP, upperP, coveredP columns",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale backtest``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).

    Raises
    ------
    ValueError
        If ``--resume`` lacks ``--out`` or both ``--jobs`` and ``--scheduler``
        are given; :func:`hiscale.cli.main` prints it as one line with exit code 2.
    """
    from hiscale.backtesting.runner import (
        DEFAULT_CI_PROB,
        backtest,
        method_summary,
        summary_table,
    )
    from hiscale.data.curves import load_curves

    if args.resume and not args.out:
        raise ValueError("--resume needs --out (the file of the run to resume)")
    if args.jobs is not None and args.scheduler is not None:
        raise ValueError("give --jobs or --scheduler, not both (--jobs N = --scheduler local:N)")
    scheduler = f"local:{args.jobs}" if args.jobs and args.jobs > 1 else args.scheduler
    ci_prob = tuple(args.ci_prob) if args.ci_prob else DEFAULT_CI_PROB
    curves = load_curves(args.data, metric=args.metric)
    fams = "all" if "all" in args.family else args.family
    methods = args.method or ["paper"]
    options: dict[str, dict] = {}
    if args.prior is not None:
        options = {m: {"prior": args.prior} for m in methods if m in ("bayes", "bayes-curve")}
    if args.prior_tails is not None:
        tails = {"df_law": args.prior_tails}
        for m in methods:
            if m == "bayes" or m.startswith(("bayes-flat", "bayes-disc", "bayes-local")):
                options.setdefault(m, {})["prior_settings"] = tails
    runs_extra = None if args.runs_extra is None else pd.read_csv(args.runs_extra)
    for m in ("bayes-curve", "bayes-auto", "bayes-auto-local"):
        if runs_extra is not None and m in methods:
            options.setdefault(m, {})["runs_extra"] = runs_extra
    res = backtest(
        curves,
        families=fams,
        methods=methods,
        grid=args.grid,
        target=args.target,
        min_tokens=args.min_tokens,
        direction=args.direction,
        include_k1=args.k1,
        seed=args.seed,
        progress=not args.quiet,
        method_options=options,
        client=scheduler,
        out=args.out,
        resume=args.resume,
        ci_prob=ci_prob,
        runs_extra=runs_extra,
    )
    table = summary_table(res)
    summ = method_summary(res, ci_prob=ci_prob)
    if args.json:
        payload = {
            "summary": summ.to_dict(orient="records"),
            "heatmap": {
                f"{m}|p={p}": {str(k): (None if pd.isna(v) else float(v)) for k, v in col.items()}
                for (m, p), col in table.items()
            },
        }
        print(json.dumps(payload, indent=2))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(
            f"Macro ARE (%), target={args.target}, rows = #models in training data, "
            "columns = (method, p)"
        )
        print(table.round(2).to_string())
        print()
        print(summ.round(3).to_string(index=False))
        failed = res[res["status"] != "ok"]
        if len(failed):
            print(f"\n{len(failed)} cells failed:")
            print(failed.groupby(["method", "status"]).size().to_string())
    if args.out:
        print(f"\nwrote {len(res)} rows to {args.out}")
    return 0
