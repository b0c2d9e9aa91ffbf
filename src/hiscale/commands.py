"""The user-facing commands: ``predict``, ``fit``, ``prior build``, ``simulate``, ``demo``.

Each registers itself in :data:`hiscale.cli.COMMANDS` through
:func:`hiscale.cli.command`. Results go to stdout (``--json`` for machines),
progress and warnings to stderr (``--quiet`` silences progress). Errors in
the data or arguments are one-line messages with exit code 2
(:func:`hiscale.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hiscale.cli import _add_data_args, command, nonneg_float, positive_float
from hiscale.plots import fmt_count as _fmt_count

__all__ = ["DEFAULT_CI", "DEMO_DATA", "DEMO_SAMPLER", "find_demo_data"]

#: Interval levels printed when ``--ci-prob`` is not given.
DEFAULT_CI: tuple[float, ...] = (0.5, 0.8, 0.95)

#: Location of the demo table in a source checkout.
DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo_curves.csv"

#: The command that made ``data/demo_curves.csv`` (also used to regenerate it
#: when the package is installed without the ``data/`` folder).
DEMO_SIMULATE = {
    "prior": "corpus-v1",
    "n_families": 4,
    "seed": 0,
    "sparse_families": 1,
    "sparse_sizes": 2,
}

#: Modest NUTS settings of ``hiscale demo``: seconds, not minutes, on two cores.
DEMO_SAMPLER = {"num_warmup": 500, "num_samples": 1000, "num_chains": 2}


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _progress(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    print(f"hiscale: warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- shared arguments
def _add_model_args(
    p: argparse.ArgumentParser, *, warmup: int | None = None, samples: int | None = None
) -> None:
    from hiscale.inference import SamplerSettings
    from hiscale.laws import LAWS

    # defaults live in one place: SamplerSettings
    warmup = SamplerSettings.num_warmup if warmup is None else warmup
    samples = SamplerSettings.num_samples if samples is None else samples

    p.add_argument(
        "--prior",
        default="corpus-v1",
        help="population prior to borrow from: a shipped name (corpus-v1), a directory "
        "or prior.json path, or 'flat' for weak defaults without borrowing "
        "(default: corpus-v1)",
    )
    p.add_argument(
        "--law",
        default="chinchilla",
        choices=sorted(LAWS),
        help="law form: chinchilla = L = s(e + a (N/N0)^-alpha + b (D/D0)^-beta); "
        "chinchilla-nd adds an N-dependent data term (default: chinchilla)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default: 0)")
    p.add_argument(
        "--min-tokens",
        type=nonneg_float,
        default=0.0,
        help="fit only rows with tokens > this (default: 0 = all rows)",
    )
    p.add_argument(
        "--end-of-run",
        type=nonneg_float,
        default=0.8,
        metavar="FRACTION",
        help="fit only each run's rows with tokens >= FRACTION x its last checkpoint: "
        "mid-schedule checkpoints sit above the law (default: 0.8; 0 = all rows)",
    )
    p.add_argument(
        "--num-warmup", type=positive_int, default=warmup, help=f"NUTS warm-up steps ({warmup})"
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=samples,
        help=f"NUTS draws per chain ({samples})",
    )
    p.add_argument("--num-chains", type=positive_int, default=2, help="NUTS chains (2)")


def _fit_options(args: argparse.Namespace):
    from hiscale.fit import FitOptions

    if args.end_of_run > 1:
        raise ValueError(f"--end-of-run must be in [0, 1], got {args.end_of_run}")
    return FitOptions(min_tokens=args.min_tokens, end_of_run=args.end_of_run)


def _sampler(args: argparse.Namespace):
    from hiscale.inference import SamplerSettings

    return SamplerSettings(
        num_warmup=args.num_warmup, num_samples=args.num_samples, num_chains=args.num_chains
    )


def _run_fit(args: argparse.Namespace, curves, family: str):
    from hiscale.fit import fit
    from hiscale.priors import resolve_prior

    # fail fast (before the progress line) on an unknown family or prior
    curves.family(family)
    resolve_prior(args.prior, law=args.law)
    sampler = _sampler(args)
    _progress(
        args,
        f"fitting {family!r} with prior {args.prior!r} ({args.law} law): NUTS "
        f"{sampler.num_chains} chains x ({sampler.num_warmup} warm-up + "
        f"{sampler.num_samples} draws) ...",
    )
    t0 = time.perf_counter()
    f = fit(
        curves,
        family=family,
        prior=args.prior,
        law=args.law,
        seed=args.seed,
        options=_fit_options(args),
        sampler=sampler,
    )
    _progress(args, f"done in {time.perf_counter() - t0:.1f} s")
    return f


# --------------------------------------------------------------------- reporting
def data_summary(fit) -> dict[str, Any]:
    """Runs, sizes, rows used and rows removed per filter (from ``Fit.log``)."""
    log = list(fit.log)
    start = 0
    family_rows = None
    for i, rec in enumerate(log):
        if rec.step in ("family", "families"):
            start, family_rows = i + 1, rec.kept
    removed = [
        {"step": r.step, "removed": int(r.removed), "reason": r.reason}
        for r in log[start:]
        if r.removed > 0
    ]
    d = fit.data
    sizes = np.sort(d["params"].unique())
    return {
        "runs": int(d["run"].nunique()),
        "sizes": len(sizes),
        "smallest_params": float(sizes[0]),
        "largest_params": float(sizes[-1]),
        "rows_in_family": int(family_rows) if family_rows is not None else None,
        "rows_used": len(d),
        "removed": removed,
    }


def data_line(summary: dict[str, Any]) -> str:
    """One line: runs, sizes, rows used, rows removed by each filter and why."""
    s = summary
    span = (
        f"{_fmt_count(s['smallest_params'])}"
        if s["sizes"] == 1
        else f"{_fmt_count(s['smallest_params'])}-{_fmt_count(s['largest_params'])}"
    )
    of = f" of {s['rows_in_family']}" if s["rows_in_family"] is not None else ""
    removed = (
        "; removed: "
        + ", ".join(f"{r['removed']} by {r['step']} ({r['reason']})" for r in s["removed"])
        if s["removed"]
        else "; no rows removed"
    )
    return (
        f"data: {s['runs']} runs, {s['sizes']} sizes ({span} params), "
        f"{s['rows_used']}{of} rows used{removed}"
    )


def _prediction_dict(frame: pd.DataFrame, levels: Sequence[float]) -> dict[str, Any]:
    row = frame.iloc[0]
    out = {}
    for kind in ("expected", "new_run"):
        out[kind] = {
            "median": float(row[f"{kind}_median"]),
            "mean": float(row[f"{kind}_mean"]),
            "intervals": {
                f"{lv:g}": [
                    float(row[f"{kind}_lower{round(100 * lv)}"]),
                    float(row[f"{kind}_upper{round(100 * lv)}"]),
                ]
                for lv in levels
            },
        }
    return out


def _prediction_table(pred: dict[str, Any], levels: Sequence[float]) -> str:
    head = f"{'':<15}{'median':>9}" + "".join(
        f"{f'{round(100 * lv)}% interval':>20}" for lv in levels
    )
    lines = [head]
    for kind, label in (("expected", "expected loss"), ("new_run", "new run")):
        p = pred[kind]
        cells = "".join(
            f"{f'[{lo:.4f}, {hi:.4f}]':>20}"
            for lo, hi in (p["intervals"][f"{lv:g}"] for lv in levels)
        )
        lines.append(f"{label:<15}{p['median']:>9.4f}{cells}")
    return "\n".join(lines)


def _verdict_line(fit) -> str:
    if fit.flagged:
        return (
            "WARNING: the sampler did not converge ("
            + fit.diagnostics.get("reasons", "")
            + "); the intervals may be wrong. Rerun with more --num-warmup/--num-samples "
            "or another --seed, or check the data."
        )
    return fit.summary()


def _prior_line(fit) -> str:
    p = fit.prior
    if p.name == "flat":
        return f"prior: flat (weak defaults, no borrowing), {fit.law} law"
    n = len(p.meta.get("families_used", {}))
    extra = f" from {n} families" if n else ""
    return f"prior: {p.name!r} (population prior{extra}), {fit.law} law"


# --------------------------------------------------------------------- predict
def _add_predict_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p, nargs="*")
    p.add_argument("--family", help="family to fit (required unless --fit is given)")
    p.add_argument(
        "--params",
        type=positive_float,
        required=True,
        metavar="N",
        help="target model size N (parameters), e.g. 6.9e9",
    )
    p.add_argument(
        "--tokens",
        type=positive_float,
        required=True,
        metavar="D",
        help="target training tokens D, e.g. 1.4e11",
    )
    p.add_argument(
        "--ci-prob",
        type=probability,
        metavar="P",
        action="append",
        default=None,
        help="central interval probability (repeatable; default 0.5, 0.8 and 0.95)",
    )
    _add_model_args(p)
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


@command(
    "predict",
    "predict the loss of a model of size N trained on D tokens, with intervals",
)(_add_predict_args)
def _predict(args: argparse.Namespace) -> int:
    from hiscale.data import load_curves
    from hiscale.fit import load_fit

    levels = sorted(set(args.ci_prob)) if args.ci_prob else list(DEFAULT_CI)
    curves = load_curves(args.data, metric=args.metric) if args.data else None
    if args.fit_path:
        f = load_fit(args.fit_path)
        if args.family is not None and args.family != f.family:
            raise ValueError(
                f"--family {args.family!r} does not match the saved fit ({f.family!r})"
            )
        _progress(args, f"loaded fit of {f.family!r} from {args.fit_path}")
    else:
        if curves is None:
            raise ValueError("give a curves table DATA or a saved fit with --fit")
        if args.family is None:
            fams = curves.families
            if len(fams) != 1:
                raise ValueError(
                    f"--family is required: the data hold {len(fams)} families ({', '.join(fams)})"
                )
            args.family = fams[0]
        f = _run_fit(args, curves, args.family)
    summary = data_summary(f)
    warnings_ = []
    if args.params < summary["largest_params"]:
        warnings_.append(
            f"target N={args.params:.3g} is smaller than the largest training model "
            f"(N={summary['largest_params']:.3g}): the law is meant for extrapolating to "
            "larger models; a run of the same size predicts it more directly"
        )
    if f.flagged:
        warnings_.append("sampler did not converge: " + f.diagnostics.get("reasons", ""))
    warnings_ += list(f.provenance.get("notes", []))
    for w in warnings_:
        _warn(w)
    frame = f.predict(args.params, args.tokens, ci_prob=levels, seed=args.seed)
    pred = _prediction_dict(frame, levels)
    if args.plot:
        _save_curves_plot(curves, f, (args.params, args.tokens), args.plot)
    if args.json:
        payload = {
            "family": f.family,
            "target": {"params": args.params, "tokens": args.tokens},
            "prior": f.prior.name,
            "law": f.law,
            "prediction": pred,
            "data": summary,
            "diagnostics": f.diagnostics,
            "flagged": f.flagged,
            "warnings": warnings_,
            "fit_seconds": f.timings.get("total_seconds"),
            "plot": args.plot,
        }
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0
    print(
        f"{f.family}: predicted loss at N={_fmt_count(args.params)} parameters, "
        f"D={_fmt_count(args.tokens)} tokens"
    )
    print(_prediction_table(pred, levels))
    print("  expected loss = the law at (N, D), parameter uncertainty only;")
    print("  new run = one training run at (N, D), adds seed-to-seed and checkpoint noise.")
    print(data_line(summary))
    print(_prior_line(f))
    print(_verdict_line(f))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _save_curves_plot(curves, fit, target, path: str | Path, **kwargs: Any) -> None:
    import matplotlib.pyplot as plt

    from hiscale.plots import plot_curves

    c = curves.family(fit.family) if curves is not None else None
    fig = plot_curves(c, fit, target=target, **kwargs)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------- fit
def _add_fit_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    p.add_argument("--family", help="family to fit (required when DATA holds several)")
    _add_model_args(p)
    p.add_argument(
        "--out",
        required=True,
        metavar="FIT.nc",
        help="write the fit here (netCDF; read back by 'hiscale predict --fit' and "
        "hiscale.fit.load_fit)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


@command("fit", "fit one family with NUTS and save the posterior (netCDF)")(_add_fit_args)
def _fit(args: argparse.Namespace) -> int:
    from hiscale.data import load_curves

    curves = load_curves(args.data, metric=args.metric)
    family = args.family
    if family is None:
        fams = curves.families
        if len(fams) != 1:
            raise ValueError(
                f"--family is required: the data hold {len(fams)} families ({', '.join(fams)})"
            )
        family = fams[0]
    f = _run_fit(args, curves, family)
    path = f.save(args.out)
    summary = data_summary(f)
    th = f.theta()
    params = {}
    for name in ("log_alpha", "log_beta"):
        v = np.exp(th[name])
        params[name[4:]] = [float(np.median(v)), *map(float, np.quantile(v, [0.025, 0.975]))]
    for name in ("log_scale", "sigma_run", "sigma_obs", "u_a", "u_b", "gamma"):
        if name in th:
            v = th[name]
            params[name] = [float(np.median(v)), *map(float, np.quantile(v, [0.025, 0.975]))]
    if f.flagged:
        _warn("sampler did not converge: " + f.diagnostics.get("reasons", ""))
    if args.json:
        payload = {
            "family": f.family,
            "out": str(path),
            "prior": f.prior.name,
            "law": f.law,
            "data": summary,
            "parameters": {k: {"median": v[0], "ci95": v[1:]} for k, v in params.items()},
            "diagnostics": f.diagnostics,
            "flagged": f.flagged,
            "timings": f.timings,
        }
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0
    print(f"{f.family}: posterior of the law parameters (median [95% interval])")
    for k, (med, lo, hi) in params.items():
        print(f"  {k:<10} {med:>9.4g}  [{lo:.4g}, {hi:.4g}]")
    print(data_line(summary))
    print(_prior_line(f))
    print(_verdict_line(f))
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------- prior build
PRIOR_COMMANDS: dict[str, Any] = {}


def _add_prior_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="prior_command", required=True, metavar="{build}")
    b = sub.add_parser(
        "build",
        help="build a population prior from many families",
        description="Build a population prior from the families in DATA (two steps: "
        "flat-prior NUTS fit per family, then a normal-normal population model), "
        "and write prior.json and MODEL_CARD.md into --out.",
    )
    _add_data_args(b)
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
        "--family",
        action="append",
        default=None,
        metavar="F",
        help="use exactly these families (repeatable; default: every family with >= 3 "
        "sizes spanning >= 4x)",
    )
    from hiscale.laws import LAWS

    b.add_argument("--law", default="chinchilla", choices=sorted(LAWS), help="law form")
    b.add_argument(
        "--loss-unit",
        default="auto",
        metavar="UNIT",
        help="learn the population from families in this loss unit (the loss_unit column, "
        "e.g. 'nats/token'); 'auto' = the unit of most families, 'any' = mix units "
        "(default: auto)",
    )
    b.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    b.add_argument(
        "--num-warmup", type=positive_int, default=500, help="step-1 NUTS warm-up steps (500)"
    )
    b.add_argument(
        "--num-samples", type=positive_int, default=1000, help="step-1 NUTS draws per chain (1000)"
    )
    b.add_argument("--num-chains", type=positive_int, default=2, help="step-1 NUTS chains (2)")
    b.add_argument(
        "--no-cache",
        action="store_true",
        help="refit every family (default: reuse cached step-1 fits in $HISCALE_CACHE)",
    )
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(handler=_prior_build)


@command("prior", "population priors: 'hiscale prior build DATA --out models/NAME'")(
    _add_prior_args
)
def _prior(args: argparse.Namespace) -> int:
    return PRIOR_COMMANDS[args.prior_command](args)


def _rebuild_command(args: argparse.Namespace, name: str) -> str:
    parts = ["hiscale", "prior", "build", *map(str, args.data), "--out", str(args.out)]
    if args.name:
        parts += ["--name", name]
    if args.metric != "primary":
        parts += ["--metric", args.metric]
    for f in args.exclude_family:
        parts += ["--exclude-family", f]
    for f in args.family or []:
        parts += ["--family", f]
    if args.law != "chinchilla":
        parts += ["--law", args.law]
    if args.loss_unit != "auto":
        parts += ["--loss-unit", args.loss_unit]
    if args.seed != 0:
        parts += ["--seed", str(args.seed)]
    for flag, default in (("num_warmup", 500), ("num_samples", 1000), ("num_chains", 2)):
        if getattr(args, flag) != default:
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return shlex.join(parts)


def _prior_build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hiscale.data import load_curves
    from hiscale.model_card import write_model_card
    from hiscale.population import build_prior

    out = Path(args.out)
    name = args.name or out.resolve().name
    curves = load_curves(args.data, metric=args.metric)
    _progress(args, f"building prior {name!r} from {len(curves.families)} families ...")
    t0 = time.perf_counter()
    prior = build_prior(
        curves,
        name=name,
        law=args.law,
        exclude=args.exclude_family,
        families=args.family,
        sampler=_sampler(args),
        seed=args.seed,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        loss_unit=None if args.loss_unit == "any" else args.loss_unit,
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
            "seconds": seconds,
        }
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0
    print(f"prior {name!r} ({prior.law} law) from {len(used)} families: {', '.join(used)}")
    for fam, why in left.items():
        print(f"  left out {fam}: {why}")
    for n, mu, sd in zip(prior.names, prior.loc, prior.sd, strict=True):
        extra = f"  (median {n[4:]} {np.exp(mu):.3f})" if n.startswith("log_") else ""
        print(f"  {n:<10} mean {mu:+.3f}  sd {sd:.3f}{extra}")
    print(f"wrote {path} and {card} in {seconds:.0f} s")
    return 0


PRIOR_COMMANDS["build"] = _prior_build


# --------------------------------------------------------------------- simulate
def _add_simulate_args(p: argparse.ArgumentParser) -> None:
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


@command("simulate", "simulate families of training curves from a prior, with known truth")(
    _add_simulate_args
)
def _simulate(args: argparse.Namespace) -> int:
    from hiscale.simulate import simulate_families

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
    _write_table(curves, args.out)
    if args.truth:
        _write_table(truth, args.truth)
    if args.json:
        payload = {
            "out": args.out,
            "truth_out": args.truth,
            "rows": len(curves),
            "runs": int(curves["run"].nunique()),
            "truth": truth.to_dict(orient="records"),
        }
        print(json.dumps(payload, indent=2, default=_json_default))
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


def _short_path(source: object) -> str:
    """A file path relative to the working directory when it lies below it."""
    try:
        return str(Path(str(source)).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(source)


def _write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


# --------------------------------------------------------------------- demo
def find_demo_data() -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The demo curves and truth tables, and where they came from.

    Reads ``data/demo_curves.csv`` and ``data/demo_truth.csv`` of a source
    checkout; an installed package without them regenerates both in memory
    with the same simulation (deterministic given the prior and the seed).
    """
    truth_path = DEMO_DATA.with_name("demo_truth.csv")
    if DEMO_DATA.is_file() and truth_path.is_file():
        return pd.read_csv(DEMO_DATA), pd.read_csv(truth_path), str(DEMO_DATA)
    from hiscale.simulate import simulate_families

    curves, truth = simulate_families(**DEMO_SIMULATE)
    return curves, truth, "simulated now (data/demo_curves.csv not found)"


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        help="curves table with a low-budget family (default: data/demo_curves.csv)",
    )
    p.add_argument(
        "--truth", help="truth table written by 'hiscale simulate --truth' (with --data)"
    )
    p.add_argument(
        "--prior", default="corpus-v1", help="population prior to compare with flat (corpus-v1)"
    )
    p.add_argument(
        "--plot",
        default="hiscale-demo.png",
        metavar="PNG",
        help="where to write the curves figure (default: hiscale-demo.png)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


@command(
    "demo",
    "the main job on simulated data: predict a large model of a family seen at 1-2 "
    "small sizes, with and without borrowing, against the known truth",
)(_add_demo_args)
def _demo(args: argparse.Namespace) -> int:
    from hiscale.data import load_curves
    from hiscale.fit import fit
    from hiscale.inference import SamplerSettings
    from hiscale.paper import fit_paper
    from hiscale.simulate import true_loss

    t_start = time.perf_counter()
    if args.data:
        if not args.truth:
            raise ValueError(
                "--data needs --truth (the table written by 'hiscale simulate --truth')"
            )
        raw, truth, source = pd.read_csv(args.data), _read_truth(args.truth), args.data
    else:
        raw, truth, source = find_demo_data()
    curves = load_curves(raw)
    sparse = truth[truth["sizes_in_data"] < truth["sizes_simulated"]]
    row = (sparse if len(sparse) else truth).sort_values("sizes_in_data").iloc[0]
    family = str(row["family"])
    n_t, d_t = float(row["target_params"]), float(row["target_tokens"])
    truth_loss = float(row["target_loss"])
    fam = curves.family(family)
    sizes = np.sort(fam.frame["params"].unique())
    _progress(
        args,
        f"demo data: {_short_path(source)}; family {family!r} has {len(sizes)} size(s) "
        f"({', '.join(_fmt_count(s) for s in sizes)}); target N={_fmt_count(n_t)}, "
        f"D={_fmt_count(d_t)}",
    )
    sampler = SamplerSettings(**DEMO_SAMPLER)
    results = []
    fits = {}
    for prior in (args.prior, "flat"):
        t0 = time.perf_counter()
        _progress(args, f"fitting with prior {prior!r} ...")
        f = fit(curves, family=family, prior=prior, seed=args.seed, sampler=sampler)
        fits[prior] = f
        p = f.predict(n_t, d_t, ci_prob=(0.8, 0.95), seed=args.seed).iloc[0]
        results.append(
            {
                "method": f"bayes, prior {f.prior.name}",
                "median": float(p["new_run_median"]),
                "lower80": float(p["new_run_lower80"]),
                "upper80": float(p["new_run_upper80"]),
                "lower95": float(p["new_run_lower95"]),
                "upper95": float(p["new_run_upper95"]),
                "flagged": f.flagged,
                "seconds": time.perf_counter() - t0,
            }
        )
    fr = fam.frame
    paper = fit_paper(fr["params"], fr["tokens"], fr["loss"])
    paper_pred = float(paper.predict(n_t, d_t)) if paper.ok else float("nan")
    results.append(
        {
            "method": "paper least squares",
            "median": paper_pred,
            "lower80": np.nan,
            "upper80": np.nan,
            "lower95": np.nan,
            "upper95": np.nan,
            "flagged": not paper.ok,
            "seconds": np.nan,
        }
    )
    for r in results:
        r["error_pct"] = 100 * (r["median"] - truth_loss) / truth_loss
        r["covered80"] = (
            bool(r["lower80"] <= truth_loss <= r["upper80"]) if np.isfinite(r["lower80"]) else None
        )
    main_fit = fits[args.prior]
    _save_curves_plot(
        curves,
        main_fit,
        (n_t, d_t),
        args.plot,
        actual=lambda d: true_loss(row, n_t, d),
        actual_label=f"true law at N={_fmt_count(n_t)} (known: simulated)",
    )
    total = time.perf_counter() - t_start
    if args.json:
        payload = {
            "data": source,
            "family": family,
            "sizes_in_data": [float(s) for s in sizes],
            "target": {"params": n_t, "tokens": d_t},
            "truth": truth_loss,
            "results": results,
            "plot": args.plot,
            "seconds": total,
        }
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0
    print(
        f"hiscale demo: family {family!r} was trained at {len(sizes)} small size(s) "
        f"({', '.join(_fmt_count(s) for s in sizes)} params); predict N={_fmt_count(n_t)} "
        f"params, D={_fmt_count(d_t)} tokens."
    )
    print(f"The data are simulated, so the true loss is known: {truth_loss:.4f} nats.")
    print()
    print(f"{'method':<26}{'median':>8}{'80% interval':>20}{'95% interval':>20}{'error':>9}")
    for r in results:
        i80 = f"[{r['lower80']:.3f}, {r['upper80']:.3f}]" if np.isfinite(r["lower80"]) else "-"
        i95 = f"[{r['lower95']:.3f}, {r['upper95']:.3f}]" if np.isfinite(r["lower95"]) else "-"
        print(f"{r['method']:<26}{r['median']:>8.3f}{i80:>20}{i95:>20}{r['error_pct']:>+8.1f}%")
    print()
    print("Intervals are for a new run (law + seed-to-seed + checkpoint noise).")
    print(
        f"The population prior lets {family!r} borrow the shape of the law from other "
        "families;\nthe flat prior and least squares only have its own few small runs."
    )
    for p, f in fits.items():
        print(f"prior {p}: {_verdict_line(f)}")
    print(f"wrote {args.plot} (curves, fitted law, target band, true law); total {total:.1f} s")
    return 0


def _read_truth(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"truth table not found: {path!r}")
    return pd.read_csv(p)
