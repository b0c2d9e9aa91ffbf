"""hiscale: hierarchical Bayesian scaling laws for language models.

The flow, one subpackage per step: ``data`` (the curves table and row
filters) -> ``laws`` -> ``priors`` -> ``modeling`` (NumPyro models) ->
``infer`` (NUTS, ``fit``) -> ``population`` (learning a population prior) ->
``backtesting`` (the paper's protocol and its scores) -> ``plots`` ->
``cli``.

The names below are the public API. Importing hiscale is cheap and changes
nothing in JAX: the modules behind a name are imported when it is first used,
and :func:`configure` sets JAX up (call it first)::

    import hiscale

    hiscale.configure()
    fit = hiscale.fit("curves.csv", family="pythia", prior="corpus-v1")
    fit.predict(6.9e9, 3e11)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hiscale._config import configure
from hiscale._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from hiscale.backtesting.runner import backtest
    from hiscale.data.curves import Curves, CurvesError, load_curves
    from hiscale.infer.fit import FitOptions
    from hiscale.infer.result import Fit, load_fit
    from hiscale.infer.settings import SamplerSettings
    from hiscale.modeling.simulate import simulate_families
    from hiscale.population import build_prior
    from hiscale.population import fit_borrowing as fit
    from hiscale.priors.prior import load_prior

#: Public name -> module that defines it (imported on first use); ``module:attr``
#: when the public name is another name there (``hiscale.fit`` takes ``borrow_from``).
_LAZY: dict[str, str] = {
    "Curves": "hiscale.data.curves",
    "CurvesError": "hiscale.data.curves",
    "load_curves": "hiscale.data.curves",
    "load_prior": "hiscale.priors.prior",
    "simulate_families": "hiscale.modeling.simulate",
    "SamplerSettings": "hiscale.infer.settings",
    "FitOptions": "hiscale.infer.fit",
    "fit": "hiscale.population:fit_borrowing",
    "Fit": "hiscale.infer.result",
    "load_fit": "hiscale.infer.result",
    "build_prior": "hiscale.population",
    "backtest": "hiscale.backtesting.runner",
    "plan": "hiscale.planning",
}

__all__ = [
    "Curves",
    "CurvesError",
    "Fit",
    "FitOptions",
    "SamplerSettings",
    "__version__",
    "backtest",
    "build_prior",
    "configure",
    "fit",
    "load_curves",
    "load_fit",
    "load_prior",
    "plan",
    "simulate_families",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562), so ``import hiscale`` stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hiscale' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    """List the public names (:data:`__all__`), including those not imported yet."""
    return list(__all__)
