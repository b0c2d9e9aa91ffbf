"""Command-line interface: ``hiscale <command> ...``.

Commands register themselves in :data:`COMMANDS` through :func:`command`; each
gets an ``argparse`` sub-parser and a handler returning an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hiscale.data import CurvesError, load_curves
from hiscale.priors import PriorWarning

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help_text: str):
    """Register ``add_arguments`` and ``handler`` for ``hiscale NAME``."""

    def deco(add_arguments):
        def wrap(handler: Handler) -> Handler:
            COMMANDS[name] = (add_arguments, handler, help_text)
            return handler

        return wrap

    return deco


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _err(msg: str) -> int:
    print(f"hiscale: error: {msg}", file=sys.stderr)
    return 2


def _add_data_args(p: argparse.ArgumentParser, *, nargs: str = "+") -> None:
    p.add_argument("data", nargs=nargs, help="curves table(s): CSV or Parquet (see README schema)")
    p.add_argument(
        "--metric", default="primary", help="metric to use per family (default: the primary one)"
    )


def _add_backtest_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
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
        help="paper | bayes | bayes-flat (repeatable; default paper)",
    )
    p.add_argument("--grid", default="paper", choices=["paper", "quick", "sub"])
    p.add_argument("--target", default="last30", choices=["last30", "final"])
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
        help="prior for bayes: a shipped name or path, or 'loo' to always build one without "
        "the family's group from DATA (default: the shipped corpus-v1, rebuilt without the "
        "family's group from DATA when it saw that group; the 'prior' column says which)",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--out", default=None, help="write one row per cell to this CSV")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


@command("backtest", "score methods on the paper's (k, p) grid")(_add_backtest_args)
def _backtest(args: argparse.Namespace) -> int:
    from hiscale.backtest import backtest, method_summary, summary_table

    curves = load_curves(args.data, metric=args.metric)
    fams = "all" if "all" in args.family else args.family
    methods = args.method or ["paper"]
    options = {}
    if args.prior is not None:
        options = {m: {"prior": args.prior} for m in methods if m == "bayes"}
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
        jobs=args.jobs,
        progress=not args.quiet,
        method_options=options,
    )
    if args.out:
        res.to_csv(args.out, index=False)
    table = summary_table(res)
    summ = method_summary(res)
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


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every registered command)."""
    # import modules that register more commands
    from hiscale import commands  # noqa: F401

    parser = argparse.ArgumentParser(
        prog="hiscale",
        description="Hierarchical Bayesian scaling laws for language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, handler, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """hiscale's own warnings as one ``hiscale: warning: ...`` line on stderr."""
    if issubclass(category, PriorWarning):
        print(f"hiscale: warning: {message}", file=sys.stderr, flush=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hiscale`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # a warning of hiscale is a message to the user, never an error
        warnings.simplefilter("always", PriorWarning)
        warnings.showwarning = _show_warning
        try:
            return args.handler(args)
        except (CurvesError, ValueError, FileNotFoundError) as err:
            return _err(str(err).splitlines()[0] if str(err) else type(err).__name__)


if __name__ == "__main__":  # pragma: no cover
    # run through the package module so commands registered in hiscale.commands land
    # in the same registry
    from hiscale.cli import main as _main

    sys.exit(_main())
