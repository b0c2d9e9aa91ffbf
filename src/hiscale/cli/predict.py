"""``hiscale predict``: the loss of a model of size N trained on D tokens, with intervals."""

from __future__ import annotations

import argparse
import json

from hiscale.cli.args import add_data_args, add_model_args, positive_float, probability
from hiscale.cli.fit import run_fit
from hiscale.cli.report import (
    data_line,
    data_summary,
    json_default,
    prediction_dict,
    prediction_table,
    prior_line,
    progress,
    save_curves_plot,
    verdict_line,
    warn,
)
from hiscale.plots import fmt_count

HELP = "predict the loss of a model of size N trained on D tokens, with intervals"

#: Interval levels printed when ``--ci-prob`` is not given.
DEFAULT_CI: tuple[float, ...] = (0.5, 0.8, 0.95)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale predict`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    add_data_args(p, nargs="*")
    p.add_argument("--family", help="family to fit (required unless --fit is given)")
    p.add_argument(
        "--at",
        nargs=2,
        type=positive_float,
        metavar=("N", "D"),
        help="target point: model size N (parameters) and training tokens D, e.g. 6.9e9 1.4e11",
    )
    p.add_argument("--params", type=positive_float, metavar="N", help="deprecated: use --at N D")
    p.add_argument("--tokens", type=positive_float, metavar="D", help="deprecated: use --at N D")
    p.add_argument(
        "--ci-prob",
        type=probability,
        metavar="P",
        action="append",
        default=None,
        help="central interval probability (repeatable; default 0.5, 0.8 and 0.95)",
    )
    add_model_args(p)
    p.add_argument(
        "--fit",
        dest="fit_path",
        metavar="FIT.nc",
        help="use a fit saved by 'hiscale fit --out' instead of fitting DATA "
        "(DATA, if given, is then only drawn by --plot)",
    )
    p.add_argument(
        "--plot", metavar="PNG", help="write the curves, fitted law and target band to this file"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale predict``.

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
        If ``--family`` does not match a saved ``--fit``, neither DATA nor
        ``--fit`` is given, or the target point is missing or given twice;
        :func:`hiscale.cli.main` prints it as one line with exit code 2.
    """
    from hiscale.data.curves import load_curves, sole_family
    from hiscale.infer.result import load_fit

    at = target_point(args)
    levels = sorted(set(args.ci_prob)) if args.ci_prob else list(DEFAULT_CI)
    curves = load_curves(args.data, metric=args.metric) if args.data else None
    if args.fit_path and args.borrow_from:
        raise ValueError("--borrow-from applies when fitting DATA, not to a saved --fit")
    if args.fit_path:
        f = load_fit(args.fit_path)
        if args.family is not None and args.family != f.family:
            raise ValueError(
                f"--family {args.family!r} does not match the saved fit ({f.family!r})"
            )
        progress(args, f"loaded fit of {f.family!r} from {args.fit_path}")
    else:
        if curves is None:
            raise ValueError("give a curves table DATA or a saved fit with --fit")
        if args.family is None:
            args.family = sole_family(curves.families, "--family is required")
        f = run_fit(args, curves, args.family)
    summary = data_summary(f)
    warnings_ = []
    if at[0] < summary["largest_params"]:
        warnings_.append(
            f"target N={at[0]:.3g} is smaller than the largest training model "
            f"(N={summary['largest_params']:.3g}): the law is meant for extrapolating to "
            "larger models; a run of the same size predicts it more directly"
        )
    if f.flagged:
        warnings_.append("sampler did not converge: " + f.diagnostics.get("reasons", ""))
    warnings_ += list(f.provenance.get("notes", []))
    for w in warnings_:
        warn(w)
    frame = f.predict(at, ci_prob=levels, seed=args.seed)
    pred = prediction_dict(frame, levels)
    if args.plot:
        save_curves_plot(curves, f, at, args.plot)
    if args.json:
        payload = {
            "family": f.family,
            "at": {"params": at[0], "tokens": at[1]},
            "prior": f.prior.label,
            "law": f.law,
            "prediction": pred,
            "data": summary,
            "diagnostics": f.diagnostics,
            "flagged": f.flagged,
            "warnings": warnings_,
            "fit_seconds": f.timings.get("total_seconds"),
            "plot": args.plot,
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(
        f"{f.family}: predicted loss at N={fmt_count(at[0])} parameters, "
        f"D={fmt_count(at[1])} tokens"
    )
    print(prediction_table(pred, levels))
    print("  expected loss = the law at (N, D), parameter uncertainty only;")
    print("  new run = one training run at (N, D), adds seed-to-seed and checkpoint noise.")
    print(data_line(summary))
    print(prior_line(f))
    print(verdict_line(f))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def target_point(args: argparse.Namespace) -> tuple[float, float]:
    """Return the target point ``(N, D)`` of ``--at`` (or of the old ``--params/--tokens``).

    The old options still work but print a deprecation warning.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    tuple of float
        Model size ``N`` (parameters) and tokens ``D``.

    Raises
    ------
    ValueError
        If the point is given both ways or not at all.
    """
    old = (args.params, args.tokens)
    if args.at is not None:
        if old != (None, None):
            raise ValueError("give the target point once: --at N D (not also --params/--tokens)")
        return float(args.at[0]), float(args.at[1])
    if None in old:
        raise ValueError("give the target point with --at N D (model size N, tokens D)")
    warn("--params N --tokens D are deprecated: use --at N D")
    return float(old[0]), float(old[1])
