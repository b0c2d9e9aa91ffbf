"""``hiscale plan``: which runs to train next, with the expected interval at the target per FLOP."""

from __future__ import annotations

import argparse
import json

from hiscale.cli.args import (
    add_data_args,
    add_local_arg,
    add_model_args,
    positive_float,
    positive_int,
)
from hiscale.cli.report import json_default, progress, warn
from hiscale.plots import fmt_count

HELP = "rank candidate runs by the expected interval at a target per FLOP, and plan a budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``hiscale plan``."""
    add_data_args(p, nargs=1)
    p.add_argument(
        "--family",
        required=True,
        help="family to plan for; with no runs in DATA (or --from-existing without --used) "
        "the plan starts from the prior alone",
    )
    p.add_argument(
        "--at",
        nargs=2,
        type=positive_float,
        required=True,
        metavar=("N", "D"),
        help="target model size N and tokens D, e.g. 7e9 1.4e11",
    )
    p.add_argument("--budget", type=positive_float, required=True, help="FLOPs to spend")
    add_local_arg(p)
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="train a run only if it is expected to narrow the target's interval by at least "
        "this fraction of its width (e.g. 0.02); the budget is then a cap (default: 0)",
    )
    p.add_argument("--candidates", metavar="CSV", help="candidate runs: params, tokens[, flops]")
    p.add_argument("--sizes", nargs="+", type=positive_float, metavar="N", help="candidate sizes")
    p.add_argument(
        "--token-multiples",
        nargs="+",
        type=positive_float,
        metavar="K",
        help="candidate tokens per parameter (D = K N; 20 = Chinchilla-optimal)",
    )
    p.add_argument(
        "--from-existing",
        action="store_true",
        help="candidates = the family's runs in DATA not listed in --used (for backtests)",
    )
    p.add_argument(
        "--used", nargs="*", default=[], metavar="RUN", help="runs already trained (fitted)"
    )
    p.add_argument(
        "--outcomes",
        type=positive_int,
        default=32,
        help="hypothetical outcomes per candidate (default: 32)",
    )
    p.add_argument(
        "--draws",
        type=positive_int,
        default=8000,
        help="prior draws when planning from the prior alone (default: 8000)",
    )
    p.add_argument(
        "--discrepancy",
        default="corpus-v1",
        metavar="SOURCE",
        help="the law's extrapolation error added to the target interval: a bundled "
        "population (default corpus-v1: learned from the corpus families' "
        "leave-largest-size-out errors), data (learned from DATA's other families), a "
        "discrepancy.json path, a number sigma_d per unit distance, or none (the law "
        "taken as exact)",
    )
    p.add_argument(
        "--discrepancy-distance",
        choices=["compute", "params"],
        default="compute",
        help="what the discrepancy grows with: |ln(C_target / C)| in training compute "
        "(default; a big model trained on few tokens is not near the target) or |ln(N_target / N)|",
    )
    p.add_argument(
        "--greedy",
        choices=["best", "per-flop", "gain"],
        default="best",
        help="what each greedy step maximises: the expected narrowing per FLOP, the narrowing "
        "itself, or best (default): both sequences as whole plans, the one ending narrower",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_model_args(p)


def _candidates(args, curves):
    from hiscale.planning.candidates import existing_candidates, grid_candidates, read_candidates

    given = [
        name
        for name, on in (
            ("--candidates", args.candidates),
            ("--sizes/--token-multiples", args.sizes or args.token_multiples),
            ("--from-existing", args.from_existing),
        )
        if on
    ]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of --candidates FILE, --sizes ... --token-multiples ..., "
            f"--from-existing (got {', '.join(given) or 'none'})"
        )
    if args.used and not args.from_existing:
        raise ValueError("--used only applies with --from-existing")
    if args.candidates:
        return read_candidates(args.candidates), None
    if args.from_existing:
        return existing_candidates(curves, args.family, args.used)
    if not args.sizes or not args.token_multiples:
        raise ValueError("--sizes and --token-multiples go together")
    return grid_candidates(args.sizes, args.token_multiples), None


def discrepancy_source(spec: str, curves, family: str, distance: str = "compute"):
    """Resolve ``--discrepancy``: None, a number, ``data`` or a saved population.

    Parameters
    ----------
    spec : str
        The option's value.
    curves : Curves
        DATA (for ``data``).
    family : str
        The planned family (its group is left out with ``data``).
    distance : {"compute", "params"}
        What a population's ``sigma_d`` is learned per unit of.

    Returns
    -------
    None, float or DiscrepancyPrior
    """
    if spec == "none":
        return None
    try:
        value = float(spec)
    except ValueError:
        value = None
    if value is not None:
        if not value >= 0:
            raise ValueError(f"--discrepancy: sigma_d must be >= 0, got {spec!r}")
        return value
    from hiscale.backtesting.discrepancy import load_discrepancy, population_discrepancy

    if spec == "data":
        pop = population_discrepancy(curves, family, distance=distance)
        if "note" in pop.info:
            warn(f"--discrepancy data: {pop.info['note']}; using {pop.label}")
        return pop
    return load_discrepancy(spec, distance=distance)


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale plan``."""
    import time

    from hiscale.cli.fit import run_fit
    from hiscale.data.curves import load_curves
    from hiscale.planning import plan

    t0 = time.perf_counter()
    curves = load_curves(args.data, metric=args.metric)
    cands, used = _candidates(args, curves)
    if args.local_sd > 0:
        args.local_to = tuple(args.at)
    disc = discrepancy_source(args.discrepancy, curves, args.family, args.discrepancy_distance)
    has_family = args.family in curves.families
    if args.from_existing:
        fit_on = curves.with_frame(
            curves.frame[
                (curves.frame["family"] == args.family) & curves.frame["run"].astype(str).isin(used)
            ],
            step="used",
            reason="run not in --used",
        )
        start = run_fit(args, fit_on, args.family) if used else None
    elif has_family:
        start = run_fit(args, curves, args.family)
    else:
        start = None
    if start is None:
        source = args.prior
        if getattr(args, "borrow_from", None):
            from hiscale.cli.args import sampler_settings
            from hiscale.cli.fit import borrowed_prior

            source = borrowed_prior(args, curves, args.family, sampler_settings(args))
        if getattr(args, "prior_tails", None) is not None:
            from hiscale.priors.prior import resolve_prior

            source = resolve_prior(source, law=args.law).with_settings(df_law=args.prior_tails)
        shown_prior = source.label if not isinstance(source, str) else repr(source)
        if not has_family:
            shown = ", ".join(curves.families[:8]) + (", ..." if len(curves.families) > 8 else "")
            warn(
                f"family {args.family!r} has no rows in DATA (families: {shown}): "
                f"planning from prior {shown_prior} alone"
            )
        else:
            progress(args, f"no --used runs: planning from prior {shown_prior} alone")
    else:
        source = start
    progress(args, f"ranking {len(cands)} candidates ({args.outcomes} outcomes each) ...")
    result = plan(
        source,
        at=tuple(args.at),
        candidates=cands,
        budget=args.budget,
        seed=args.seed,
        min_gain=args.min_gain,
        greedy=args.greedy,
        n_outcomes=args.outcomes,
        n_draws=args.draws,
        law=args.law,
        discrepancy=disc,
        distance=args.discrepancy_distance,
    )
    notes = list(result.notes)
    if start is not None:
        notes += list(start.provenance.get("notes", []))
    for n in notes:
        warn(n)
    if args.json:
        payload = result.to_dict()
        payload["family"] = args.family
        payload["used"] = used
        payload["fit_flagged"] = bool(start.flagged) if start is not None else None
        payload["seconds"] = time.perf_counter() - t0
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    n_t, d_t = result.target
    print(
        f"{args.family}: expected {round(100 * result.level)}% new-run interval at "
        f"N={fmt_count(n_t)}, D={fmt_count(d_t)}; relative width = (upper - lower) / median"
    )
    print(f"now: {result.widths[0]:.4f} ({result.source})")
    head = (
        f"{'rank':>4}  {'candidate':<24}{'N':>8}{'D':>9}{'FLOPs':>10}  "
        f"{'width after':>11}{'reduction/EFLOP':>16}{'ESS':>7}"
    )
    print(head)
    for r in result.table.itertuples():
        flag = " low ESS" if r.low_ess else ""
        print(
            f"{r.rank:>4}  {str(r.label)[:23]:<24}{fmt_count(r.params):>8}{fmt_count(r.tokens):>9}"
            f"{r.flops:>10.2e}  {r.expected_width:>11.4f}{r.reduction_per_flop * 1e18:>16.4g}"
            f"{r.ess_median:>7.0f}{flag}"
        )
    print(f"plan for a budget of {result.budget:.3g} FLOPs (train in this order):")
    for i, r in enumerate(result.runs, 1):
        print(
            f"  {i}. {r['label']} (N={fmt_count(r['params'])}, D={fmt_count(r['tokens'])}): "
            f"{r['flops']:.2e} FLOPs, total {r['cumulative_flops']:.2e}, "
            f"expected width {r['expected_width']:.4f}"
        )
    print(f"stopped: {result.stop_reason}")
    return 0
