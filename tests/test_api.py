"""The top-level API: small, lazy (no JAX on import), names resolve to the right objects."""

import subprocess
import sys

import pytest

import hiscale

HEAVY = ("jax", "jaxlib", "numpyro", "arviz", "matplotlib", "scipy")


def test_all_names_resolve_and_dir_matches():
    assert sorted(dir(hiscale)) == sorted(hiscale.__all__)
    assert set(hiscale.__all__) == {
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
    }
    assert set(hiscale.__all__) == {"__version__", "configure", *hiscale._LAZY}
    for name in hiscale.__all__:
        assert getattr(hiscale, name) is not None


def test_names_are_the_objects_not_their_modules():
    from hiscale.backtesting.runner import backtest
    from hiscale.infer.result import Fit
    from hiscale.population import fit_borrowing

    # hiscale.fit is infer.fit.fit plus borrow_from= (resolved above the infer layer)
    assert hiscale.fit is fit_borrowing and callable(hiscale.fit)
    assert hiscale.backtest is backtest and callable(hiscale.backtest)
    assert hiscale.Fit is Fit
    from hiscale.infer.settings import FitOptions

    assert hiscale.FitOptions is FitOptions  # defined in infer.settings, re-exported by infer.fit
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        hiscale.nope  # noqa: B018


def test_import_is_lazy():
    code = (
        "import sys, hiscale\n"
        f"heavy = {HEAVY!r}\n"
        "def loaded():\n"
        "    return sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "print(loaded())\n"
        "hiscale.load_curves\n"
        "print(loaded())\n"
        "hiscale.fit\n"
        "print(loaded())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    bare, data, fit = proc.stdout.splitlines()
    assert bare == "[]"
    assert data == "[]"  # the data layer needs numpy and pandas only
    assert "jax" in fit and "numpyro" in fit


def test_top_level_fit_takes_every_argument_of_the_engine_fit():
    """``hiscale.fit`` (the borrowing wrapper) must not hide an argument of ``infer.fit.fit``."""
    import inspect

    import hiscale
    from hiscale.infer.fit import fit as engine_fit

    top = inspect.signature(hiscale.fit).parameters
    missing = [n for n in inspect.signature(engine_fit).parameters if n not in top]
    assert not missing, f"hiscale.fit lacks {missing}"
