"""Command-line interface: ``hiscale <command> ...``.

:data:`COMMANDS` maps each command to its module (one file per command), which
defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> exit code``.
Argument types and shared argument groups live in :mod:`hiscale.cli.args`,
what the commands print in :mod:`hiscale.cli.report`. Errors in the data or
the arguments are one-line messages with exit code 2.
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from hiscale._config import configure
from hiscale.cli import backtest, demo, fit, predict, prior, simulate
from hiscale.data.curves import CurvesError
from hiscale.priors.prior import PriorWarning

__all__ = ["COMMANDS", "build_parser", "main"]

#: ``hiscale NAME`` -> the module that implements it.
COMMANDS: dict[str, ModuleType] = {
    "backtest": backtest,
    "predict": predict,
    "fit": fit,
    "prior": prior,
    "simulate": simulate,
    "demo": demo,
    "plan": __import__("hiscale.cli.plan", fromlist=["run"]),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (every command of :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(
        prog="hiscale",
        description="Hierarchical Bayesian scaling laws for language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def _err(msg: str) -> int:
    print(f"hiscale: error: {msg}", file=sys.stderr)
    return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show hiscale's own warnings as one ``hiscale: warning: ...`` line on stderr."""
    if issubclass(category, PriorWarning):
        print(f"hiscale: warning: {message}", file=sys.stderr, flush=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hiscale`` script."""
    # first thing: host devices and the platform only take effect before JAX starts
    configure()
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
        finally:
            if argv is None:
                # the process' own command line: it ends next. Freezing the heap
                # spares the interpreter's last garbage collections over every
                # JAX/NumPyro object (0.5 s of a 3 s `hiscale predict`); exit
                # handlers and file closing still run.
                gc.freeze()
