"""``hiscale fit``: fit one family with NUTS and save the posterior (netCDF)."""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from hiscale.cli.args import (
    SAMPLER_FLAGS,
    add_data_args,
    add_model_args,
    fit_options,
    sampler_settings,
)
from hiscale.cli.report import (
    data_line,
    data_summary,
    json_default,
    prior_line,
    progress,
    verdict_line,
    warn,
)

HELP = "fit one family with NUTS and save the posterior (netCDF)"


def run_fit(args: argparse.Namespace, curves, family: str):
    """Fit ``family`` with the model and sampler arguments, with progress lines.

    The family and prior are checked before the progress line, so a typo
    fails at once rather than after a "fitting ..." message.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (:func:`hiscale.cli.args.add_model_args`).
    curves : Curves
        The table.
    family : str
        Family to fit.

    Returns
    -------
    Fit
    """
    from hiscale.infer.fit import fit
    from hiscale.priors.prior import PriorWarning, resolve_prior

    # fail fast (before the progress line) on an unknown family or prior
    curves.family(family)
    options = fit_options(args)
    sampler = sampler_settings(args, options)
    prior = args.prior
    if getattr(args, "borrow_from", None):
        prior = borrowed_prior(args, curves, family, sampler)
    resolved = resolve_prior(prior, law="chinchilla" if args.law == "auto" else args.law)
    if getattr(args, "prior_tails", None) is not None:
        prior = resolved.with_settings(df_law=args.prior_tails)
    name = prior.label if not isinstance(prior, str) else repr(prior)
    if not isinstance(prior, str) and prior.tails is not None:
        name = f"{name} with {prior.tails}"
    curve_prior = getattr(args, "curve_prior", None)
    if curve_prior is not None:
        if args.law != "auto":
            raise ValueError(f"--curve-prior is for --law auto, not --law {args.law}")
        resolve_prior(curve_prior, law="h-term")  # fail fast on an unknown prior
        name = f"{name} (end of run), {curve_prior!r} (whole curve)"
        prior = {"end-of-run": prior, "whole-curve": curve_prior}
    if args.law == "auto" and all(getattr(args, k, None) is None for k in SAMPLER_FLAGS):
        # each candidate model samples with its own default (CURVE_SAMPLER for whole curves)
        sampler = None
        how = "each model's default NUTS settings"
    else:
        how = (
            f"NUTS {sampler.num_chains} chains x ({sampler.num_warmup} warm-up + "
            f"{sampler.num_samples} draws, target acceptance {sampler.target_accept_prob:g})"
        )
    what = (
        "end-of-run or whole-curve model, chosen by leave-future-out"
        if args.law == "auto"
        else f"{args.law} law"
    )
    progress(args, f"fitting {family!r} with prior {name} ({what}): {how} ...")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # fit() also records its PriorWarnings in provenance["notes"], which the
        # commands print as warnings: once, not twice
        warnings.simplefilter("ignore", PriorWarning)
        f = fit(
            curves,
            family=family,
            prior=prior,
            law=args.law,
            seed=args.seed,
            options=options,
            sampler=sampler,
            runs_extra=getattr(args, "runs_extra", None),
            retry=None if getattr(args, "retry", True) else False,
        )
    progress(args, f"done in {time.perf_counter() - t0:.1f} s")
    return f


def borrowed_prior(args: argparse.Namespace, curves, family: str, sampler):
    """Build or load the population prior of ``--borrow-from`` donors (cached).

    The donors' step-1 fits use the command's row selection, sampler settings
    and seed (:func:`hiscale.population.borrow_prior`).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`hiscale.cli.args.add_model_args`.
    curves : Curves
        The table holding the donors and ``family``.
    family : str
        The family that borrows (never a donor).
    sampler : SamplerSettings
        NUTS settings of the donors' step-1 fits.

    Returns
    -------
    Prior
        The donors' prior; its ``label`` names them.
    """
    from hiscale.population import borrow_prior, cache_dir

    if args.law == "auto":
        raise ValueError("--borrow-from builds a prior for one law: give --law, not auto")

    progress(args, f"population prior from donors {', '.join(args.borrow_from)} ...")
    t0 = time.perf_counter()
    prior = borrow_prior(
        curves,
        args.borrow_from,
        target=family,
        law=args.law,
        options=fit_options(args),
        sampler=sampler,
        seed=args.seed,
        progress=not args.quiet,
    )
    where = cache_dir() / "priors" / f"borrow-{prior.meta.get('cache_key', '?')}"
    progress(args, f"{prior.label}: {time.perf_counter() - t0:.1f} s (cached in {where})")
    return prior


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale fit`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    add_data_args(p)
    p.add_argument("--family", help="family to fit (required when DATA holds several)")
    add_model_args(p, auto=True)
    p.add_argument(
        "--out",
        required=True,
        metavar="FIT.nc",
        help="write the fit here (netCDF; read back by 'hiscale predict --fit' and "
        "hiscale.load_fit)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale fit``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).
    """
    from hiscale.data.curves import load_curves, sole_family

    curves = load_curves(args.data, metric=args.metric)
    family = args.family
    if family is None:
        family = sole_family(curves.families, "--family is required")
    f = run_fit(args, curves, family)
    path = f.save(args.out)
    summary = data_summary(f)
    th = f.theta()
    params = {}
    for name in ("log_alpha", "log_beta"):
        v = np.exp(th[name])
        params[name[4:]] = [float(np.median(v)), *map(float, np.quantile(v, [0.025, 0.975]))]
    names = ("log_scale", "sigma_run", "sigma_obs", "u_a", "u_b", "gamma")
    names += ("u_f", "v_f", "r_f", "rho")
    for name in names:
        if name in th:
            v = th[name]
            params[name] = [float(np.median(v)), *map(float, np.quantile(v, [0.025, 0.975]))]
    if f.flagged:
        warn("sampler did not converge: " + f.diagnostics.get("reasons", ""))
    for note in f.provenance.get("notes", []):
        warn(note)
    if args.json:
        payload = {
            "family": f.family,
            "out": str(path),
            "prior": f.prior.label,
            "law": f.law,
            "data": summary,
            "parameters": {k: {"median": v[0], "ci95": v[1:]} for k, v in params.items()},
            "diagnostics": f.diagnostics,
            "flagged": f.flagged,
            "timings": f.timings,
            **({"choice": f.provenance["choice"]} if "choice" in f.provenance else {}),
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(f"{f.family}: posterior of the law parameters (median [95% interval])")
    for k, (med, lo, hi) in params.items():
        print(f"  {k:<10} {med:>9.4g}  [{lo:.4g}, {hi:.4g}]")
    print(data_line(summary))
    print(prior_line(f))
    print(verdict_line(f))
    print(f"wrote {path}")
    return 0
