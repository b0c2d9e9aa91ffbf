"""hiscale: hierarchical Bayesian scaling laws for language models.

Importing hiscale changes nothing in JAX; call :func:`configure` first.
"""

from hiscale._config import configure
from hiscale._version import __version__
from hiscale.data.curves import Curves, CurvesError, load_curves

__all__ = ["Curves", "CurvesError", "__version__", "configure", "load_curves"]
