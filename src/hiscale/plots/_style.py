"""Helpers shared by the figures: colours, band opacity, number labels, figure creation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "ACTUAL_COLOR",
    "BAND_ALPHA",
    "TARGET_COLOR",
    "band_alpha",
    "fmt_count",
    "interval_levels",
    "new_figure",
    "plain_log_ticks",
]

#: Interval levels drawn as bands, widest first, with their fill opacity.
BAND_ALPHA = {0.95: 0.15, 0.8: 0.25, 0.5: 0.4}
#: Colour of a prediction target (marker and band).
TARGET_COLOR = "#c0392b"
#: Colour of observed values.
ACTUAL_COLOR = "black"


def new_figure(**kwargs: Any) -> Figure:
    """Create a figure through ``pyplot`` with the constrained layout (``kwargs`` to it)."""
    import matplotlib.pyplot as plt

    return plt.figure(layout="constrained", **kwargs)


def fmt_count(n: float) -> str:
    """Format a count with a k/M/B/T suffix and 3 significant digits.

    Parameters
    ----------
    n : float
        The count.

    Returns
    -------
    str
        ``6.9e9 -> '6.9B'``, ``1.4e11 -> '140B'``, ``5e7 -> '50M'``.
    """
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def interval_levels(ci_prob: float | Sequence[float]) -> list[float]:
    """Return the interval level(s) ``ci_prob`` as a list, widest first (drawn first)."""
    levels = [ci_prob] if np.isscalar(ci_prob) else list(ci_prob)
    return sorted((float(v) for v in levels), reverse=True)


def band_alpha(level: float) -> float:
    """Return the fill opacity of a band: :data:`BAND_ALPHA`, else ``0.15 + 0.5 (1 - level)``."""
    return BAND_ALPHA.get(round(level, 2), 0.15 + 0.5 * (1 - level))


def plain_log_ticks(axis) -> None:
    """Label a log ``axis`` with plain numbers at 1, 1.5, 2, 3, 5, 7 per decade."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())
