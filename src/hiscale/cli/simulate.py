"""``hiscale simulate``: families of training curves drawn from a prior, with known truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hiscale.cli.args import positive_float, positive_int
from hiscale.cli.report import json_default

HELP = "simulate families of training curves from a prior, with known truth"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale simulate`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    from hiscale.laws import LAWS

    p.add_argument(
        "--prior",
        default="corpus-v1",
        help="prior the families are drawn from: shipped name, path or 'flat' (default: corpus-v1)",
    )
    p.add_argument(
        "--law", default=None, choices=sorted(LAWS), help="law form (default: the prior's)"
    )
    p.add_argument("--families", type=positive_int, default=4, help="number of families (4)")
    p.add_argument("--seed", type=int, default=0, help="seed; same seed, same table (0)")
    p.add_argument(
        "--sparse",
        type=int,
        default=0,
        metavar="K",
        help="the last K families keep only their --sparse-sizes smallest sizes (0)",
    )
    p.add_argument(
        "--sparse-sizes", type=positive_int, default=2, help="sizes kept in a sparse family (2)"
    )
    p.add_argument(
        "--runs-per-size", type=positive_int, default=1, help="runs (seeds) per size (1)"
    )
    p.add_argument(
        "--checkpoints", type=positive_int, default=20, help="log-spaced checkpoints per run (20)"
    )
    p.add_argument(
        "--tokens-per-param",
        type=positive_float,
        default=20.0,
        help="token horizon of a run = this x its parameters (20)",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE", help="curves table to write (.csv or .parquet)"
    )
    p.add_argument(
        "--truth", metavar="CSV", help="also write each family's true parameters and target"
    )
    p.add_argument("--json", action="store_true", help="print the truth table as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the files written")


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale simulate``.

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
        If ``--sparse`` exceeds ``--families``; :func:`hiscale.cli.main` prints
        it as one line with exit code 2.
    """
    from hiscale.modeling.simulate import simulate_families

    if not 0 <= args.sparse <= args.families:
        raise ValueError(f"--sparse must be in 0..{args.families}, got {args.sparse}")
    curves, truth = simulate_families(
        args.prior,
        n_families=args.families,
        seed=args.seed,
        law=args.law,
        sparse_families=args.sparse,
        sparse_sizes=args.sparse_sizes,
        runs_per_size=args.runs_per_size,
        n_checkpoints=args.checkpoints,
        tokens_per_param=args.tokens_per_param,
    )
    write_table(curves, args.out)
    if args.truth:
        write_table(truth, args.truth)
    if args.json:
        payload = {
            "out": args.out,
            "truth_out": args.truth,
            "rows": len(curves),
            "runs": int(curves["run"].nunique()),
            "truth": truth.to_dict(orient="records"),
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    if args.quiet:
        print(f"wrote {args.out}" + (f" and {args.truth}" if args.truth else ""))
        return 0
    print(
        f"{len(truth)} families, {curves['run'].nunique()} runs, {len(curves)} rows "
        f"(prior {truth['prior'].iloc[0]!r}, seed {args.seed})"
    )
    cols = ["family", "sizes_in_data", "alpha", "beta", "sigma_run", "target_params", "target_loss"]
    with pd.option_context("display.width", 120):
        print(truth[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out}" + (f" and {args.truth}" if args.truth else ""))
    return 0


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as Parquet (``.parquet``/``.pq``) or CSV.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table (written without its index).
    path : str or pathlib.Path
        Output file; the suffix picks the format.
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
