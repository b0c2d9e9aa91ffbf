"""``hiscale prior build``: a population prior from many families, with its model card."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hiscale.cli.args import (
    add_data_args,
    add_sampler_args,
    add_scheduler_arg,
    positive_float,
    positive_int,
    sampler_settings,
)
from hiscale.cli.report import json_default, progress
from hiscale.infer.settings import SamplerSettings

HELP = "population priors: 'hiscale prior build DATA --out models/NAME'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale prior`` and its subcommands to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    sub = p.add_subparsers(dest="prior_command", required=True, metavar="{build,discrepancy}")
    b = sub.add_parser(
        "build",
        help="build a population prior from many families",
        description="Build a population prior from the families in DATA (two steps: "
        "flat-prior NUTS fit per family, then a normal-normal population model), "
        "and write prior.json and MODEL_CARD.md into --out.",
    )
    add_data_args(b)
    b.add_argument("--out", required=True, metavar="DIR", help="output directory, e.g. models/NAME")
    b.add_argument("--name", help="prior name (default: the --out directory's name)")
    b.add_argument(
        "--exclude-family",
        action="append",
        default=[],
        metavar="F",
        help="leave this family (and its group, e.g. gemstones-*) out (repeatable)",
    )
    b.add_argument(
        "--families",
        nargs="+",
        default=None,
        metavar="F",
        help="use exactly these families, e.g. the donors a family should borrow from "
        "(default: every family in the majority loss unit whose step-1 fit converges)",
    )
    b.add_argument(
        "--family",
        action="append",
        default=None,
        metavar="F",
        help="the same, one family per flag (repeatable; combined with --families)",
    )
    b.add_argument(
        "--min-span",
        type=positive_float,
        default=1.0,
        metavar="X",
        help="leave out families whose sizes span less than X (default 1: keep all; "
        "a narrow family informs only what its data identify). corpus-v1 used 4",
    )
    b.add_argument(
        "--min-sizes",
        type=positive_int,
        default=None,
        metavar="K",
        help="leave out families with fewer than K sizes (default: 3 when --min-span > 1, else 1)",
    )
    from hiscale.laws import CURVE_LAWS, LAWS

    b.add_argument(
        "--law",
        default="chinchilla",
        choices=sorted([*LAWS, *CURVE_LAWS]),
        help="law form; a curve law (h-term, momentum) pools whole-curve fits of the "
        "families whose schedules are known",
    )
    b.add_argument(
        "--loss-unit",
        default="auto",
        metavar="UNIT",
        help="learn the population from families in this loss unit (the loss_unit column, "
        "e.g. 'nats/token'); 'auto' = the unit of most families, 'any' = mix units "
        "(default: auto)",
    )
    b.add_argument(
        "--covariate",
        default=None,
        metavar="COL",
        help="family covariate: a column constant within a family (dataset, arch, ...) or "
        "metric_kind (train/eval, from metric); the population mean depends on its level "
        "and the prior is the one for a new family at --covariate-level",
    )
    b.add_argument(
        "--runs-extra",
        default=None,
        metavar="PATH",
        help="runs_extra.csv of the corpus: schedules of the extra families (a curve law's "
        "step-1 fits need them)",
    )
    b.add_argument(
        "--covariate-level",
        default=None,
        metavar="LEVEL",
        help="the new family's level of --covariate (a level no family has widens the prior; "
        "required with --covariate)",
    )
    b.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    add_sampler_args(b, what="step-1 NUTS", retry=False)
    add_scheduler_arg(b, what="the step-1 family fits")
    b.add_argument(
        "--no-cache",
        action="store_true",
        help="refit every family (default: reuse cached step-1 fits in $HISCALE_CACHE)",
    )
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    dsc = sub.add_parser(
        "discrepancy",
        help="the law's extrapolation error across families (for hiscale plan)",
        description="Fit each family of DATA without its largest size (flat prior, cached) "
        "and write the errors at that size to --out/discrepancy.json: the evidence the "
        "population of the extrapolation discrepancy sigma_d is learned from.",
    )
    add_data_args(dsc)
    dsc.add_argument(
        "--out", required=True, metavar="DIR", help="output directory, e.g. models/NAME"
    )
    dsc.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    dsc.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _families(args: argparse.Namespace) -> list[str] | None:
    """Return the families of ``--families`` and ``--family`` (None: choose automatically)."""
    named = [*(args.families or []), *(args.family or [])]
    return list(dict.fromkeys(named)) or None


def _rebuild_command(args: argparse.Namespace, name: str) -> str:
    """Return the shell command that rebuilds this prior (non-default options only)."""
    parts = ["hiscale", "prior", "build", *map(str, args.data), "--out", str(args.out)]
    if args.name:
        parts += ["--name", name]
    if args.metric != "primary":
        parts += ["--metric", args.metric]
    for f in args.exclude_family:
        parts += ["--exclude-family", f]
    if _families(args):
        parts += ["--families", *_families(args)]
    if args.min_span != 1.0:
        parts += ["--min-span", f"{args.min_span:g}"]
    if args.min_sizes is not None:
        parts += ["--min-sizes", str(args.min_sizes)]
    if args.law != "chinchilla":
        parts += ["--law", args.law]
    if args.loss_unit != "auto":
        parts += ["--loss-unit", args.loss_unit]
    if args.covariate is not None:
        parts += ["--covariate", args.covariate, "--covariate-level", args.covariate_level]
    if args.runs_extra is not None:
        parts += ["--runs-extra", str(args.runs_extra)]
    if args.seed != 0:
        parts += ["--seed", str(args.seed)]
    defaults = SamplerSettings()
    for flag in ("num_warmup", "num_samples", "num_chains"):
        if getattr(args, flag) not in (None, getattr(defaults, flag)):
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if getattr(args, "target_accept_prob", None) not in (None, defaults.target_accept_prob):
        parts += ["--target-accept", f"{args.target_accept_prob:g}"]
    return shlex.join(parts)


def build(args: argparse.Namespace) -> int:
    """Run ``hiscale prior build``: build the prior, write ``prior.json`` and ``MODEL_CARD.md``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).
    """
    from dataclasses import replace

    from hiscale._distributed import open_client
    from hiscale.data.curves import load_curves
    from hiscale.population import build_prior
    from hiscale.priors.card import write_model_card

    if (args.covariate is None) != (args.covariate_level is None):
        raise SystemExit("hiscale prior build: --covariate and --covariate-level go together")
    out = Path(args.out)
    name = args.name or out.resolve().name
    curves = load_curves(args.data, metric=args.metric)
    progress(args, f"building prior {name!r} from {len(curves.families)} families ...")
    t0 = time.perf_counter()
    with open_client(args.scheduler) as client:
        prior = build_prior(
            curves,
            name=name,
            law=args.law,
            exclude=args.exclude_family,
            families=_families(args),
            min_span=args.min_span,
            min_sizes=args.min_sizes,
            sampler=sampler_settings(args, _options_of(args.law)),
            seed=args.seed,
            use_cache=not args.no_cache,
            progress=not args.quiet,
            loss_unit=None if args.loss_unit == "any" else args.loss_unit,
            client=client,
            covariate=args.covariate,
            covariate_level=args.covariate_level,
            runs_extra=None if args.runs_extra is None else pd.read_csv(args.runs_extra),
        )
    command_line = _rebuild_command(args, name)
    meta = {
        **prior.meta,
        "rebuild_command": command_line,
        "data_paths": [str(p) for p in args.data],
    }
    prior = replace(prior, meta=meta)
    path = prior.save(out)
    card = write_model_card(prior, out)
    seconds = time.perf_counter() - t0
    used = list(prior.meta.get("families_used", {}))
    left = prior.meta.get("families_left_out", {})
    units = prior.meta.get("population_units", {})
    if args.json:
        payload = {
            "name": name,
            "prior": str(path),
            "model_card": str(card),
            "law": prior.law,
            "names": list(prior.names),
            "loc": prior.loc.tolist(),
            "sd": prior.sd.tolist(),
            "families_used": used,
            "families_left_out": left,
            "independent_groups": len(units),
            "seconds": seconds,
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(
        f"prior {name!r} ({prior.law} law) from {len(used)} families in {len(units)} "
        f"independent groups: {', '.join(used)}"
    )
    for fam, why in left.items():
        print(f"  left out {fam}: {why}")
    cov = prior.meta.get("covariate")
    if cov:
        print(
            f"  covariate {cov['column']!r}: prior for level {cov['target_level']!r}; "
            f"groups' levels {cov['unit_levels']}"
        )
        if cov["note"]:
            print(f"  note: {cov['note']}")
    for n, mu, sd in zip(prior.names, prior.loc, prior.sd, strict=True):
        extra = f"  (median {n[4:]} {np.exp(mu):.3f})" if n.startswith("log_") else ""
        print(f"  {n:<10} mean {mu:+.3f}  sd {sd:.3f}{extra}")
    print(f"wrote {path} and {card} in {seconds:.0f} s")
    return 0


def discrepancy(args: argparse.Namespace) -> int:
    """Run ``hiscale prior discrepancy``: write the extrapolation-discrepancy population.

    Each family of DATA (with >= 3 sizes above the token cut) is fitted
    without its largest size under the flat prior (cached); the errors at
    that size and their groups go into ``--out/discrepancy.json``, the
    evidence :func:`hiscale.backtesting.discrepancy.load_discrepancy` learns
    ``sigma_d``'s population from (``hiscale plan --discrepancy NAME``).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).
    """
    from hiscale.backtesting.discrepancy import (
        DISCREPANCY_FILE,
        population_discrepancy,
        save_discrepancy,
    )
    from hiscale.data.curves import family_groups, load_curves
    from hiscale.population import family_group

    curves = load_curves(args.data, metric=args.metric)
    progress(args, f"leave-largest-size-out fits of {len(curves.families)} families ...")
    t0 = time.perf_counter()
    pop = population_discrepancy(curves, None, seed=args.seed, progress=not args.quiet)
    if "note" in pop.info:
        raise ValueError(f"no discrepancy population: {pop.info['note']}")
    groups = family_groups(curves)
    cmd = shlex.join(
        ["hiscale", "prior", "discrepancy", *map(str, args.data), "--out", str(args.out)]
        + (["--seed", str(args.seed)] if args.seed else [])
    )
    path = save_discrepancy(
        pop,
        {f: groups.get(f) or family_group(f) for f in pop.families},
        Path(args.out) / DISCREPANCY_FILE,
        rebuild_command=cmd,
        data_paths=[str(p) for p in args.data],
    )
    if (Path(args.out) / "prior.json").is_file():  # the card describes both files
        from hiscale.priors.card import write_model_card
        from hiscale.priors.prior import load_prior

        write_model_card(load_prior(Path(args.out)), args.out)
    med = float(np.exp(pop.m))
    print(
        f"{pop.label}: median sigma_d {med:.4f} per unit |ln(N_target / N)| "
        f"(log-sd {pop.s:.2f}); wrote {path} in {time.perf_counter() - t0:.0f} s"
    )
    return 0


#: ``hiscale prior SUBCOMMAND`` -> handler.
SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": build,
    "discrepancy": discrepancy,
}


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale prior SUBCOMMAND`` (dispatch through :data:`SUBCOMMANDS`).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).
    """
    return SUBCOMMANDS[args.prior_command](args)


def _options_of(law: str):
    """Return the row options :func:`hiscale.build_prior` fits ``law`` with (curve law: all)."""
    from hiscale.infer.settings import FitOptions
    from hiscale.laws import get_law

    return FitOptions(rows="all", residual="ar1") if get_law(law).covariates else FitOptions()
