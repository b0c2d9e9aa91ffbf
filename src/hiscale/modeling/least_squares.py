"""The paper's least-squares estimator, reproduced faithfully.

It lives in ``modeling`` because inference uses it too (a chain's starting
point, :func:`hiscale.infer.nuts.paper_start`); the backtest reaches it as
:mod:`hiscale.backtesting.paper`.

Choshen, Zhang & Andreas, "A Hitchhiker's Guide to Scaling Law Estimation",
ICML 2025 (arXiv 2410.11840; code: github.com/IBM/ColPret, which decides
where text and code disagree):

* law ``L = exp(e) + exp(a) N^-alpha + exp(b) D^-beta``;
* plain unweighted least squares on the raw loss, every row once;
* ``scipy.optimize.curve_fit`` with ``alpha, beta >= 0`` (so ``method="trf"``);
  on ``RuntimeError`` a retry with ``method="dogbox", x_scale=p0``; any other
  failure is a failed fit whose reason is reported;
* a single start point, the Datablations fit ``P0``;
* single-model regime (paper section 5): ``a`` and ``alpha`` fixed at ``P0``,
  only ``(b, e, beta)`` fitted, because with one model size ``N`` is constant
  and the data cannot tell ``exp(a) N^-alpha`` from ``exp(e)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from hiscale.laws import paper_law

__all__ = ["P0", "PaperFit", "fit_paper", "fit_paper_single"]

#: Datablations start point ``(a, b, e, alpha, beta)``.
P0: tuple[float, ...] = (6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596)


@dataclass(frozen=True)
class PaperFit:
    """Result of the paper estimator.

    Attributes
    ----------
    params : dict or None
        ``{"a", "b", "e", "alpha", "beta"}`` (``None`` if the fit failed).
    status : str
        ``"ok"`` or the failure reason.
    method : str
        ``"trf"``, ``"dogbox"`` (the retry) or ``"none"``.
    """

    params: dict[str, float] | None
    status: str
    method: str

    @property
    def ok(self) -> bool:
        """True when the fit produced parameters."""
        return self.params is not None

    def predict(self, params, tokens) -> np.ndarray:
        """Predict the loss at ``(N, D)``; NaN when the fit failed.

        Extreme fitted exponents can overflow ``N**alpha`` (the term then
        correctly vanishes) or ``exp(b)`` (the prediction is ``inf``, which the
        backtest reports as a non-finite prediction); no warning is emitted.

        Parameters
        ----------
        params, tokens : array_like
            Model size ``N`` and training tokens ``D`` (broadcast together).

        Returns
        -------
        ndarray
            The law's point prediction of the loss.
        """
        n = np.asarray(params, dtype=float)
        d = np.asarray(tokens, dtype=float)
        if self.params is None:
            return np.full(np.broadcast(n, d).shape, np.nan)
        p = self.params
        with np.errstate(over="ignore", invalid="ignore"):
            return paper_law(n, d, p["a"], p["b"], p["e"], p["alpha"], p["beta"])


def _curve_fit(f, xdata, ydata, p0, bounds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            popt, _ = curve_fit(f, xdata, ydata, p0=p0, bounds=bounds)
            return popt, "trf", "ok"
        except RuntimeError:
            try:
                popt, _ = curve_fit(
                    f, xdata, ydata, p0=p0, bounds=bounds, method="dogbox", x_scale=p0
                )
                return popt, "dogbox", "ok"
            except Exception as err:
                return None, "none", f"fit failed (dogbox retry): {type(err).__name__}: {err}"
        except Exception as err:
            return None, "none", f"fit failed: {type(err).__name__}: {err}"


def _check(n, d, loss, n_free):
    n = np.asarray(n, dtype=float)
    d = np.asarray(d, dtype=float)
    loss = np.asarray(loss, dtype=float)
    if len(loss) < n_free:
        return None, f"fit failed: {len(loss)} rows < {n_free} parameters"
    return (n, d, loss), None


def fit_paper(params, tokens, loss) -> PaperFit:
    """Fit ``(a, b, e, alpha, beta)`` by least squares from ``P0``.

    Parameters
    ----------
    params, tokens, loss : array_like
        One entry per training row (N, D, raw loss).

    Returns
    -------
    PaperFit
        The fitted parameters, or ``None`` with the failure reason (fewer
        rows than parameters, optimiser failure, non-finite result): a failed
        fit is reported in ``status``, not raised.
    """
    data, err = _check(params, tokens, loss, 5)
    if err:
        return PaperFit(None, err, "none")
    n, d, y = data

    def f(x, a, b, e, alpha, beta):
        return paper_law(x[0], x[1], a, b, e, alpha, beta)

    bounds = ([-np.inf, -np.inf, -np.inf, 0.0, 0.0], [np.inf] * 5)
    popt, method, status = _curve_fit(f, np.vstack([n, d]), y, np.array(P0), bounds)
    if popt is None:
        return PaperFit(None, status, method)
    if not np.all(np.isfinite(popt)):
        return PaperFit(None, "fit failed: non-finite parameters", method)
    return PaperFit(
        dict(zip(("a", "b", "e", "alpha", "beta"), map(float, popt), strict=True)), "ok", method
    )


def fit_paper_single(params, tokens, loss) -> PaperFit:
    """Fit the single-model regime: ``a, alpha`` fixed at ``P0``; fit ``(b, e, beta)``.

    Parameters
    ----------
    params, tokens, loss : array_like
        One entry per training row (N, D, raw loss), all of one model size.

    Returns
    -------
    PaperFit
        As :func:`fit_paper`, with ``a`` and ``alpha`` equal to ``P0``'s.
    """
    data, err = _check(params, tokens, loss, 3)
    if err:
        return PaperFit(None, err, "none")
    n, d, y = data
    a0, alpha0 = P0[0], P0[3]

    def f(x, b, e, beta):
        return paper_law(x[0], x[1], a0, b, e, alpha0, beta)

    p0 = np.array([P0[1], P0[2], P0[4]])
    bounds = ([-np.inf, -np.inf, 0.0], [np.inf] * 3)
    popt, method, status = _curve_fit(f, np.vstack([n, d]), y, p0, bounds)
    if popt is None:
        return PaperFit(None, status, method)
    if not np.all(np.isfinite(popt)):
        return PaperFit(None, "fit failed: non-finite parameters", method)
    b, e, beta = map(float, popt)
    return PaperFit({"a": a0, "b": b, "e": e, "alpha": alpha0, "beta": beta}, "ok", method)
