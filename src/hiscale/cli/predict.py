"""``hiscale predict``: the loss of a model of size N trained on D tokens, with intervals."""

from __future__ import annotations

import argparse
import json

import numpy as np

from hiscale.cli.args import (
    add_data_args,
    add_local_arg,
    add_model_args,
    nonneg_float,
    positive_float,
    probability,
)
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
    add_model_args(p, auto=True)
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
    p.add_argument(
        "--schedule",
        metavar="S",
        help="whole-curve fits: the target run's learning-rate schedule, one of constant, "
        "cosine, linear, wsd (default: the family's usual schedule, stated in the output)",
    )
    p.add_argument(
        "--run-tokens",
        type=positive_float,
        metavar="T",
        help="whole-curve fits: the target run's planned length in tokens (default: D of --at)",
    )
    p.add_argument(
        "--run",
        metavar="RUN_ID",
        help="whole-curve fits: continue this fitted run to the end of its schedule, with its "
        "own run offset and AR state (instead of --at); with --schedule, under that decay "
        "(the run's own warmup and stable phase kept) over --run-tokens",
    )
    p.add_argument(
        "--decay-start",
        type=positive_float,
        metavar="TOKENS",
        help="with --run and --schedule: the new decay starts here (e.g. the run's last "
        "checkpoint: 'cool down now'; default: the named schedule's start)",
    )
    p.add_argument(
        "--curve-out",
        metavar="CSV",
        help="whole-curve fits: write the whole predicted curve (tidy: tokens, kind, ci_prob, "
        "lower, upper, median, mean) to this file",
    )
    add_local_arg(p)
    p.add_argument(
        "--local-choice",
        type=nonneg_float,
        default=0.0,
        metavar="SD",
        help="experimental: fit local to --at with scale SD only if that predicts the family's "
        "own largest size better (leave-future-out log score; the output says which and why; "
        "end-of-run model only; default: 0 = off)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _choose_local(args: argparse.Namespace, curves, at) -> tuple[bool, str, bool]:
    """Run :func:`hiscale.infer.choice.choose_local` for ``--local-choice``; set the local fit."""
    from functools import partial

    from hiscale.cli.args import fit_options, given_sampler
    from hiscale.infer.choice import choose_local
    from hiscale.infer.fit import fit
    from hiscale.priors.prior import resolve_prior

    options = fit_options(args)
    prior = resolve_prior(args.prior, law=args.law)
    if args.prior_tails is not None:
        prior = prior.with_settings(df_law=args.prior_tails)
    progress(args, f"choosing a global or local fit by leave-future-out on {args.family!r} ...")
    local, note, flagged = choose_local(
        curves.family(args.family), fit if args.retry else partial(fit, retry=False),
        family=args.family, prior=prior, law=args.law, seed=args.seed, options=options,
        sampler=given_sampler(args), sd=args.local_choice,
    )  # fmt: skip
    progress(args, note)
    if local:
        args.local_sd, args.local_to = args.local_choice, at
    return local, note, flagged


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

    levels = sorted(set(args.ci_prob)) if args.ci_prob else list(DEFAULT_CI)
    at = None if args.run else target_point(args)
    curves = load_curves(args.data, metric=args.metric) if args.data else None
    if args.fit_path and args.borrow_from:
        raise ValueError("--borrow-from applies when fitting DATA, not to a saved --fit")
    if args.local_sd > 0:
        if args.fit_path or args.run:
            raise ValueError("--local-sd fits DATA local to --at: not with --fit or --run")
        if args.law == "auto":
            raise ValueError("--law auto measures its choices: give --local-choice, not --local-sd")
        args.local_to = at
    choice = None
    if args.local_choice > 0:
        if args.fit_path or args.run:
            raise ValueError("--local-choice fits DATA local to --at: not with --fit or --run")
        if args.local_sd > 0:
            raise ValueError("give --local-sd or --local-choice, not both")
        if args.borrow_from:
            raise ValueError("--local-choice does not combine with --borrow-from")
        if args.law not in ("chinchilla", "chinchilla-nd", "auto") or args.rows != "end":
            raise ValueError(
                "--local-choice applies to the end-of-run model (--law chinchilla, --rows end, "
                "or --law auto when it chooses that model)"
            )
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
        if args.local_choice > 0 and args.law == "auto":
            # law auto measures the global/local step itself (after choosing the model)
            args.local_sd, args.local_to = args.local_choice, at
        elif args.local_choice > 0:
            choice = _choose_local(args, curves, at)
        f = run_fit(args, curves, args.family)
        local = f.provenance.get("choice", {}).get("local")
        if local is not None:
            choice = (local["local"], local["note"], local["inner_flagged"])
            progress(args, local["note"])
            f._record("local_choice", {"local": choice[0], "note": choice[1]})
        elif choice is not None:
            f._record("local_choice", {"local": choice[0], "note": choice[1]}, note=choice[1])
        if choice is not None and choice[2]:
            warn(f"the local/global choice rests on a flagged inner fit: {choice[1]}")
    if args.decay_start and not args.run:
        raise ValueError("--decay-start applies to --run (a run continued under a new decay)")
    curve_args = args.run or args.schedule or args.run_tokens or args.curve_out
    if curve_args and not f.is_curve:
        raise ValueError(
            "--run, --schedule, --run-tokens and --curve-out need a whole-curve fit "
            "(--rows all or a curve law such as --law h-term)"
        )
    if args.run:
        return run_continuation(args, f, levels)
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
    curve = None
    if f.is_curve:
        # the end point of the whole curve under the target's schedule
        t_end = args.run_tokens or at[1]
        grid = np.union1d(np.geomspace(0.01 * t_end, t_end, 64), [at[1]])
        curve = f.predict_curve(
            at[0], t_end, schedule=args.schedule, tokens=grid, ci_prob=levels, seed=args.seed
        )
        frame = curve[np.isclose(curve["tokens"], at[1])].assign(point=0)
        warnings_.append(f"target run's schedule: {curve.attrs['schedule']}")
        warn(warnings_[-1])
        if args.curve_out:
            curve.to_csv(args.curve_out, index=False)
    else:
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
            **({"choice": f.provenance["choice"]} if "choice" in f.provenance else {}),
            **(
                {"local_choice": f.provenance["local_choice"]}
                if "local_choice" in f.provenance
                else {}
            ),
            "plot": args.plot,
        }
        if f.options.local_sd > 0:
            payload["local"] = {
                "local_to": list(f.options.local_to),
                "local_sd": f.options.local_sd,
                "local_learn": f.options.local_learn,
            }
            if f.options.local_learn:
                post = f.to_datatree()["posterior"]["local_sd"]
                payload["local"]["local_sd_posterior_median"] = float(np.median(np.asarray(post)))
        if curve is not None:
            payload["schedule"] = curve.attrs["schedule"]
            payload["run_tokens"] = curve.attrs["run_tokens"]
            payload["curve"] = curve.to_dict(orient="records")
            payload["curve_out"] = args.curve_out
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(
        f"{f.family}: predicted loss at N={fmt_count(at[0])} parameters, "
        f"D={fmt_count(at[1])} tokens"
    )
    print(prediction_table(pred, levels))
    print("  expected loss = the law at (N, D), parameter uncertainty only;")
    print("  new run = one training run at (N, D), adds seed-to-seed and checkpoint noise.")
    if f.options.local_sd > 0:
        print(
            f"  local fit (experimental): the law's error is a Brownian motion in ln N and "
            f"ln D distance from (N, D), scale {f.options.local_sd:g}"
        )
    if "local_choice" in f.provenance:
        print(f"  {f.provenance['local_choice']['note']}")
    print(data_line(summary))
    print(prior_line(f))
    print(verdict_line(f))
    if args.plot:
        print(f"wrote {args.plot}")
    if curve is not None and args.curve_out:
        print(f"wrote the whole curve ({len(curve)} rows) to {args.curve_out}")
    return 0


def run_continuation(args: argparse.Namespace, f, levels) -> int:
    """Print (and write) the continuation of a fitted run to the end of its schedule.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (``--run``, ``--run-tokens``, ``--curve-out``, ``--json``).
    f : Fit
        A whole-curve fit holding the run.
    levels : list of float
        Interval probabilities.

    Returns
    -------
    int
        Exit code (0: success).
    """
    tokens = None
    if args.run_tokens:
        last = float(f.data.loc[f.data["run"] == args.run, "tokens"].max())
        tokens = np.geomspace(last, args.run_tokens, 33)[1:]
    if args.decay_start and not args.schedule:
        raise ValueError("--decay-start needs --schedule (the decay that starts there)")
    named = {}
    if args.schedule:
        named = {"schedule": args.schedule, "run_tokens": args.run_tokens,
                 "decay_start": args.decay_start}  # fmt: skip
    curve = f.predict_run(args.run, tokens, ci_prob=levels, seed=args.seed, **named)
    end = curve[curve["tokens"] == curve["tokens"].max()]
    if args.curve_out:
        curve.to_csv(args.curve_out, index=False)
    if f.flagged:
        warn("sampler did not converge: " + f.diagnostics.get("reasons", ""))
    a = curve.attrs
    if args.json:
        payload = {
            "family": f.family,
            "run": a["run"],
            "params": a["params"],
            "last_tokens": a["last_tokens"],
            "last_loss": a["last_loss"],
            "end_tokens": float(end["tokens"].iloc[0]),
            "schedule": a["schedule"],
            "end": end.to_dict(orient="records"),
            "curve": curve.to_dict(orient="records"),
            "curve_out": args.curve_out,
            "law": f.law,
            "flagged": f.flagged,
            "diagnostics": f.diagnostics,
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(
        f"{f.family}: run {a['run']!r} (N={fmt_count(a['params'])}), last fitted checkpoint "
        f"D={fmt_count(a['last_tokens'])} at loss {a['last_loss']:.4f}; "
        f"predicted at D={fmt_count(float(end['tokens'].iloc[0]))}:"
    )
    head = f"{'':<15}{'median':>9}" + "".join(
        f"{f'{round(100 * lv)}% interval':>20}" for lv in levels
    )
    print(head)
    for kind, label in (("expected", "law"), ("this_run", "this run")):
        rows = end[end["kind"] == kind]
        cells = "".join(
            f"{f'[{r.lower:.4f}, {r.upper:.4f}]':>20}" for r in rows.itertuples(index=False)
        )
        print(f"{label:<15}{rows['median'].iloc[0]:>9.4f}{cells}")
    print("  law = the fitted law at the run's size (parameter uncertainty only);")
    print("  this run = its continuation from its own run offset and AR(1) state.")
    print(f"  schedule: {a['schedule']}")
    print(verdict_line(f))
    if args.curve_out:
        print(f"wrote the whole curve ({len(curve)} rows) to {args.curve_out}")
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
