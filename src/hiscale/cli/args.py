"""Argument types and the argument groups several commands share."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from hiscale.data.selection import END_LR_TOLERANCE
from hiscale.infer.settings import (
    CURVE_SAMPLER,
    LOCAL_SAMPLER,
    FitOptions,
    SamplerSettings,
    default_sampler,
)

__all__ = [
    "SAMPLER_FLAGS",
    "add_data_args",
    "add_model_args",
    "add_sampler_args",
    "add_scheduler_arg",
    "fit_options",
    "nonneg_float",
    "positive_float",
    "positive_int",
    "probability",
    "sampler_settings",
    "scheduler",
    "tails_df",
]


def _number(text: str) -> float:
    """Parse a command-line value as a float, or fail with argparse's one-line error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_float(text: str) -> float:
    """Parse an argparse value that must be a finite number > 0.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    float
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not a number, not finite or <= 0.
    """
    value = _number(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def tails_df(text: str) -> float:
    """Degrees of freedom of ``--prior-tails``: a finite number > 2."""
    value = _number(text)
    if not (np.isfinite(value) and value > 2.0):
        raise argparse.ArgumentTypeError(
            f"expected degrees of freedom > 2 (finite variance), got {text!r}"
        )
    return value


def nonneg_float(text: str) -> float:
    """Parse an argparse value that must be a finite number >= 0.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    float
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not a number, not finite or < 0.
    """
    value = _number(text)
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """Parse an argparse value that must be strictly between 0 and 1.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    float
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not a number in (0, 1).
    """
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


def _int_at_least(text: str, minimum: int) -> int:
    """Parse an argparse integer ``>= minimum`` (the shared body of the int parsers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse an argparse value that must be an integer >= 1.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    int
        The integer.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not an integer or < 1.
    """
    return _int_at_least(text, 1)


def nonneg_int(text: str) -> int:
    """Parse an argparse value that must be an integer >= 0.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    int
        The integer.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not an integer or < 0.
    """
    return _int_at_least(text, 0)


def scheduler(text: str) -> str:
    """Check an argparse value: ``local``, ``local:N`` or a Dask scheduler address.

    Parameters
    ----------
    text : str
        The command-line value.

    Returns
    -------
    str
        ``text`` unchanged (:func:`hiscale._distributed.parse_scheduler` reads it later).

    Raises
    ------
    argparse.ArgumentTypeError
        With :func:`~hiscale._distributed.parse_scheduler`'s message if ``text`` is no spec.
    """
    from hiscale._distributed import parse_scheduler

    try:
        parse_scheduler(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_scheduler_arg(p: argparse.ArgumentParser, *, what: str) -> None:
    """Add ``--scheduler``: run ``what`` as tasks on a Dask cluster.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser.
    what : str
        What runs as tasks (for the help text).
    """
    p.add_argument(
        "--scheduler",
        type=scheduler,
        default=None,
        metavar="local[:N]|tcp://HOST:PORT",
        help=f"run {what} as Dask tasks: 'local:N' = N worker processes on this machine "
        "('local' = one per CPU), or the address of an existing Dask scheduler "
        "(default: in this process)",
    )


def add_data_args(p: argparse.ArgumentParser, *, nargs: str = "+") -> None:
    """Add the positional curves table(s) and ``--metric``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser.
    nargs : str, default "+"
        How many tables the command takes (argparse's ``nargs``).
    """
    p.add_argument("data", nargs=nargs, help="curves table(s): CSV or Parquet (see README schema)")
    p.add_argument(
        "--metric", default="primary", help="metric to use per family (default: the primary one)"
    )


def add_model_args(p: argparse.ArgumentParser, *, auto: bool = False) -> None:
    """Add the fit's arguments: prior, law, seed, row selection and sampler.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser.
    auto : bool
        Offer ``--law auto`` (the end-of-run or whole-curve model, chosen by
        leave-future-out: :mod:`hiscale.infer.choice`).
    """
    from hiscale.laws import CURVE_LAWS, LAWS

    prior = p.add_mutually_exclusive_group()
    prior.add_argument(
        "--prior",
        default="corpus-v1",
        help="population prior to borrow from: a shipped name (corpus-v1), a directory "
        "or prior.json path, or 'flat' for weak defaults without borrowing "
        "(default: corpus-v1)",
    )
    prior.add_argument(
        "--borrow-from",
        nargs="+",
        default=None,
        metavar="FAMILY",
        help="borrow from these donor families of DATA instead: a population prior is "
        "built from them (>= 2 independent groups, never the fitted family) and cached "
        "in $HISCALE_CACHE, so the next call reuses it",
    )
    p.add_argument(
        "--prior-tails",
        type=tails_df,
        default=None,
        metavar="NU",
        help="Student-t tails on the law prior (NU > 2 degrees of freedom, same covariance): "
        "a family whose data contradict the prior can leave it (default: Gaussian)",
    )
    p.add_argument(
        "--law",
        default="chinchilla",
        choices=[*sorted(LAWS), *sorted(CURVE_LAWS), *(["auto"] if auto else [])],
        help="law form: chinchilla = L = s(e + a (N/N0)^-alpha + b (D/D0)^-beta); "
        "chinchilla-nd adds an N-dependent data term; h-term and momentum describe whole "
        "curves under the learning-rate schedule (with --rows all)"
        + (
            "; auto chooses chinchilla on end rows or h-term on whole curves by "
            "leave-future-out on the family's largest size, and says why"
            if auto
            else ""
        )
        + " (default: chinchilla)",
    )
    if auto:
        p.add_argument(
            "--curve-prior",
            default=None,
            metavar="PRIOR",
            help="with --law auto: the whole-curve candidate's prior (a name, path or 'flat'); "
            "default: --prior when it was learned for the curve law or is 'flat', else the "
            "weak defaults (a population borrows only for the law it was learned for)",
        )
    p.add_argument(
        "--rows",
        choices=["end", "all"],
        default="end",
        help="end: each run's end-of-run rows (--end-of-run); all: whole curves, thinned "
        "evenly in ln D, with the run offset + AR(1) likelihood (default: end)",
    )
    p.add_argument(
        "--residual",
        choices=["iid", "ar1"],
        default=None,
        help="likelihood of a run's rows: iid (tempered) or ar1 (run offset + AR(1) in ln D); "
        "default: ar1 for --rows all or a curve law, else iid",
    )
    p.add_argument(
        "--max-curve-rows",
        type=nonneg_int,
        default=512,
        metavar="ROWS",
        help="whole curves: the runs share this many rows (each keeps 16 to 32, evenly in "
        "ln D; not applied to more runs than that allows; 0 = 32 per run; default: 512)",
    )
    p.add_argument(
        "--runs-extra",
        metavar="CSV",
        help="runs_extra.csv of the corpus: the learning-rate schedules of the extra families "
        "(for the curve laws)",
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
        "--end-lr-tolerance",
        type=nonneg_float,
        default=END_LR_TOLERANCE,
        metavar="H",
        help="of those rows, in runs with a known learning-rate schedule, fit only those whose "
        "LR is at most H x peak above the last checkpoint's, so a cooldown's inside is not "
        f"read as end of run (default: {END_LR_TOLERANCE:g}; --no-end-lr: tokens alone)",
    )
    p.add_argument(
        "--no-end-lr",
        dest="end_lr_tolerance",
        action="store_const",
        const=None,
        help="select end-of-run rows by tokens alone (the rule before 2026-12-02)",
    )
    add_sampler_args(p)


#: ``SamplerSettings`` fields set by :func:`add_sampler_args`' flags (their ``dest``).
SAMPLER_FLAGS = ("num_warmup", "num_samples", "num_chains", "target_accept_prob")


def add_sampler_args(p: argparse.ArgumentParser, *, what: str = "NUTS", retry: bool = True) -> None:
    """Add ``--num-warmup``, ``--num-samples``, ``--num-chains``, ``--target-accept``.

    With ``retry``, also ``--no-retry`` (``args.retry`` False): one NUTS run,
    not re-run when flagged (:func:`hiscale.infer.fit.fit`'s ``retry``).

    Their defaults are the fit's settings.

    Left unset, they are None and :func:`sampler_settings` takes them from
    ``SamplerSettings()`` or, for whole curves, from ``CURVE_SAMPLER``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser.
    what : str, default "NUTS"
        The sampler's name in the help text.
    retry : bool, default True
        Add ``--no-retry`` (commands whose fits go through
        :func:`hiscale.infer.fit.fit` with a ``retry`` argument).
    """
    d, c = SamplerSettings(), CURVE_SAMPLER
    for name, unit in (
        ("num_warmup", "warm-up steps"),
        ("num_samples", "draws per chain"),
        ("num_chains", "chains"),
    ):
        dv, cv = getattr(d, name), getattr(c, name)
        default = f"{dv}" if dv == cv else f"{dv}; {cv} for whole curves"
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=positive_int,
            default=None,
            help=f"{what} {unit} ({default})",
        )
    p.add_argument(
        "--target-accept",
        dest="target_accept_prob",
        type=probability,
        default=None,
        help=f"{what} target acceptance probability ({d.target_accept_prob:g}; "
        f"{c.target_accept_prob:g} for whole curves and {LOCAL_SAMPLER.target_accept_prob:g} "
        "for local fits): higher means smaller steps, fewer divergences, more time",
    )
    if retry:
        p.add_argument(
            "--no-retry",
            dest="retry",
            action="store_false",
            help="do not re-run a flagged fit (by default, when no sampler flag is given, it "
            "is re-run once with smaller steps, target acceptance >= 0.99, a longer warm-up "
            "and twice the draws; the fit says so)",
        )


def fit_options(args: argparse.Namespace):
    """Build the FitOptions of ``--min-tokens``, ``--end-of-run``, ``--rows``, ``--residual``.

    ``--max-curve-rows`` sets the whole-curve row budget
    (:attr:`FitOptions.max_curve_rows`).

    ``--residual`` defaults to ``ar1`` with ``--rows all`` or a curve law
    (:data:`hiscale.laws.CURVE_LAWS`), else ``iid``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`add_model_args`.

    Returns
    -------
    FitOptions
        The row selection options.

    Raises
    ------
    ValueError
        If ``--end-of-run`` is above 1, or ``--rows all`` is asked with
        ``--residual iid``.
    """
    from hiscale.infer.fit import FitOptions

    if args.end_of_run > 1:
        raise ValueError(f"--end-of-run must be in [0, 1], got {args.end_of_run}")
    lr_tol = getattr(args, "end_lr_tolerance", END_LR_TOLERANCE)
    from hiscale.laws import CURVE_LAWS

    rows = getattr(args, "rows", "end")
    residual = getattr(args, "residual", None)
    if getattr(args, "law", None) == "auto" and (rows != "end" or residual not in (None, "iid")):
        raise ValueError("--law auto chooses the rows and the likelihood: drop --rows/--residual")
    if residual is None:
        residual = "ar1" if rows == "all" or getattr(args, "law", None) in CURVE_LAWS else "iid"
    local_sd = getattr(args, "local_sd", 0.0) or 0.0
    if getattr(args, "local_learn", False) and not local_sd > 0:
        raise ValueError("--local-learn needs --local-sd SD (the scale's prior median)")
    if local_sd > 0:
        if rows != "end" or residual != "iid":
            raise ValueError(
                "--local-sd applies to the end-of-run model (--rows end), not whole curves"
            )
        return FitOptions(
            min_tokens=args.min_tokens,
            end_of_run=args.end_of_run,
            end_lr_tolerance=lr_tol,
            local_to=tuple(args.local_to),
            local_sd=local_sd,
            local_learn=bool(getattr(args, "local_learn", False)),
            max_curve_rows=getattr(args, "max_curve_rows", 512),
        )
    budget = getattr(args, "max_curve_rows", 512)
    if rows == "end" and residual == "iid":  # the budget serves law auto's whole-curve candidate
        return FitOptions(
            min_tokens=args.min_tokens,
            end_of_run=args.end_of_run,
            end_lr_tolerance=lr_tol,
            max_curve_rows=budget,
        )
    return FitOptions(
        min_tokens=args.min_tokens,
        end_of_run=args.end_of_run,
        end_lr_tolerance=lr_tol,
        rows=rows,
        residual=residual,
        max_curve_rows=budget,
    )


def add_local_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--local-sd`` (a fit local to the ``--at`` target)."""
    p.add_argument(
        "--local-sd",
        type=nonneg_float,
        default=0.0,
        metavar="SD",
        help="experimental: fit local to the --at target, the law's error a Brownian motion "
        "in ln N and ln D distance from it with this scale (e.g. 0.01), so far runs inform "
        "the target less (default: 0 = ordinary fit)",
    )
    p.add_argument(
        "--local-learn",
        action="store_true",
        help="with --local-sd: learn the scale from the family's runs (--local-sd is then its "
        "prior median)",
    )


def given_sampler(args: argparse.Namespace) -> SamplerSettings | None:
    """Return ``SamplerSettings()`` with the sampler flags given, or None when none were.

    None lets :func:`hiscale.infer.fit.fit` give each fit its own default
    (:func:`~hiscale.infer.settings.default_sampler`), e.g. when one command
    makes global and local fits.
    """
    if all(getattr(args, k, None) is None for k in SAMPLER_FLAGS):
        return None
    return sampler_settings(args)


def sampler_settings(
    args: argparse.Namespace, options: FitOptions | None = None
) -> SamplerSettings:
    """Build the SamplerSettings of the sampler flags (``--num-warmup`` ... ``--target-accept``).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`add_sampler_args`.
    options : FitOptions, optional
        The fit's options: the base settings are
        :func:`~hiscale.infer.settings.default_sampler`'s, as
        :func:`hiscale.infer.fit.fit` uses them (``CURVE_SAMPLER`` for whole
        curves, ``LOCAL_SAMPLER`` for a local fit).

    Returns
    -------
    SamplerSettings
        The base settings with the flags that were given.
    """
    base = default_sampler(options)
    given = {
        name: getattr(args, name) for name in SAMPLER_FLAGS if getattr(args, name, None) is not None
    }
    return replace(base, **given)
