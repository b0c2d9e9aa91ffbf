"""The default priors of a family's parameters, in one place.

A family's parameters are the law's unit-free vector ``z`` (log share ratios
``u_a, u_b``, log exponents, optional ``gamma``), its loss scale
``log_scale`` (never pooled) and two noise scales; see
:mod:`hiscale.priors.prior` for how they are used.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DEFAULT_LAW_PRIORS", "DEFAULT_PRIORS", "SINGLE_ROW_SIGMA_OBS"]

#: Weak per-parameter priors ``(mean, sd)`` for the unit-free law parameters.
#: ``u_a = ln(a/e)``, ``u_b = ln(b/e)`` at (N0, D0) = (1e9, 1e11); exponents
#: centred on the Datablations fit (alpha = beta = 0.35).
DEFAULT_LAW_PRIORS: dict[str, tuple[float, float]] = {
    "u_a": (-1.0, 1.5),
    "u_b": (-1.0, 1.5),
    "log_alpha": (math.log(0.35), 0.6),
    "log_beta": (math.log(0.35), 0.6),
    "gamma": (0.0, 0.15),
}


#: Everything else the model and the data selection need, in one place.
DEFAULT_PRIORS: dict[str, Any] = {
    "log_scale_sd": 1.0,
    "log_scale_shift": 0.0,
    "sigma_run": (math.log(0.01), 0.5),
    "sigma_obs": (math.log(0.005), 1.0),
    "df_run": 4.0,
    "df_obs": 4.0,
}


#: sigma_obs prior (LogNormal loc, scale) when every run has a single row.
SINGLE_ROW_SIGMA_OBS: tuple[float, float] = (math.log(1e-3), 0.1)


#: Weak priors ``(mean, sd)`` for the extra parameters of the curve laws
#: (:data:`hiscale.laws.CURVE_LAWS`). ``u_f = ln(f/e)``: the annealing bonus at
#: (N0, anneal = 1) as a share of the floor; centred on a ~5% drop of the floor
#: term (cooldowns gain a few percent of the loss). ``r_f``: size exponent of the
#: bonus, centred near the Multi-Power Law's N^0.13 (Luo et al. 2025) but wide.
CURVE_LAW_PRIORS: dict[str, tuple[float, float]] = {
    "u_f": (math.log(0.05), 1.0),
    "r_f": (0.1, 0.2),
}

#: Noise priors of the whole-curve likelihood (:mod:`hiscale.modeling.curve`):
#: ``sigma_ar`` the stationary sd of the AR(1) residual in ln L (LogNormal loc,
#: scale) and ``rho`` its correlation per e-fold of tokens (logit-normal loc,
#: scale; centred on 0.9, i.e. curves wiggle slowly in ln D).
CURVE_NOISE_PRIORS: dict[str, tuple[float, float]] = {
    "sigma_ar": (math.log(0.01), 1.0),
    "rho": (math.log(0.9 / 0.1), 1.5),
}
