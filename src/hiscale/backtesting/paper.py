"""The paper's least-squares estimator: the backtest's ``paper`` method.

The estimator itself is :mod:`hiscale.modeling.least_squares` (inference uses it
too, for a chain's starting point, and may not import the backtest); this module
is its name in the backtest.
"""

from __future__ import annotations

from hiscale.modeling.least_squares import P0, PaperFit, fit_paper, fit_paper_single

__all__ = ["P0", "PaperFit", "fit_paper", "fit_paper_single"]
