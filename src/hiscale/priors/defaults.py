"""Every prior and hyperprior number of hiscale, in one place.

A family's parameters are the law's unit-free vector ``z`` (log share ratios
``u_a, u_b``, log exponents, optional ``gamma``), its loss scale
``log_scale`` (never pooled) and two noise scales; see
:mod:`hiscale.priors.prior` for how they are used. The hyperpriors of the
population of families (its mean ``mu``, spread ``tau`` and correlation
``Omega``) are shared by the two-step population prior
(:mod:`hiscale.population`) and the one-step joint fit
(:mod:`hiscale.contrib.joint`): both draw them from
:func:`hiscale.population.population_hyperpriors`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "CURVE_LAW_PRIORS",
    "CURVE_NOISE_PRIORS",
    "DEFAULT_LAW_PRIORS",
    "DEFAULT_PRIORS",
    "POPULATION_LKJ_CONCENTRATION",
    "POPULATION_MU_SD_FACTOR",
    "POPULATION_SIGMA_OBS_SD_MIN",
    "POPULATION_SIGMA_RUN_SD_MIN",
    "POPULATION_TAU_SD",
    "SINGLE_ROW_SIGMA_OBS",
]

#: Weak per-parameter priors ``(mean, sd)`` for the unit-free law parameters.
#: ``u_a = ln(a/e)``, ``u_b = ln(b/e)`` at (N0, D0) = (1e9, 1e11); exponents
#: centred on the Datablations fit (alpha = beta = 0.35).
DEFAULT_LAW_PRIORS: dict[str, tuple[float, float]] = {
    # each reducible term about e^-1 of the irreducible one at (N0, D0); sd 1.5
    # lets a share ratio range over a factor e^3 either way
    "u_a": (-1.0, 1.5),
    "u_b": (-1.0, 1.5),
    # sd 0.6 on the log: an exponent between 0.11 and 1.1 (95%)
    "log_alpha": (math.log(0.35), 0.6),
    "log_beta": (math.log(0.35), 0.6),
    # the interaction term of the laws that have one: none unless the data say so
    "gamma": (0.0, 0.15),
}


#: Everything else the model and the data selection need, in one place.
DEFAULT_PRIORS: dict[str, Any] = {
    # log_scale ~ N(ln median(loss) + shift, sd): centred on the family's own
    # losses (units differ across families); sd 1 = a factor e either way
    "log_scale_sd": 1.0,
    "log_scale_shift": 0.0,
    # ln sigma_run ~ N(ln 0.01, 0.5): seeds move a run's log loss by about 1%
    "sigma_run": (math.log(0.01), 0.5),
    # ln sigma_obs ~ N(ln 0.005, 1.0): checkpoint noise about 0.5%, wide
    # because logging (smoothing, eval set size) differs between families
    "sigma_obs": (math.log(0.005), 1.0),
    # Student-t degrees of freedom: heavy tails let an outlying run or
    # checkpoint move its own mean instead of bending the law, with a finite
    # variance (df > 2)
    "df_run": 4.0,
    "df_obs": 4.0,
    # degrees of freedom of the law prior in its whitened coordinates: None is
    # Gaussian (z = loc + C xi, xi ~ N(0, I)); a number nu > 2 makes each xi_k
    # a Student-t with the same covariance, so a family whose data contradict
    # a population prior can leave it instead of being held near it (robust
    # borrowing; hiscale.modeling.family.law_prior_tails)
    "df_law": None,
}


#: sigma_obs prior (LogNormal loc, scale) when every run has a single row:
#: the data then see only ``sigma_run^2 + sigma_obs^2`` (one row per run), so
#: ``sigma_obs`` is pinned small and tight and ``sigma_run`` takes the noise.
SINGLE_ROW_SIGMA_OBS: tuple[float, float] = (math.log(1e-3), 0.1)


# --- hyperpriors of the population of families ------------------------------
# z_f ~ MVN(mu, diag(tau) Omega diag(tau)) for family f, with the hyperpriors
# below (the same in hiscale.population and hiscale.contrib.joint).

#: ``mu ~ N(m0, POPULATION_MU_SD_FACTOR * s0)`` per component, ``(m0, s0)`` the
#: weak per-family prior :data:`DEFAULT_LAW_PRIORS`: the population mean may
#: sit anywhere a single family plausibly could, and twice as far, so the
#: hyperprior does not pull the population towards the per-family prior's centre.
POPULATION_MU_SD_FACTOR: float = 2.0

#: ``tau ~ HalfNormal(POPULATION_TAU_SD)`` per component of ``z``: the spread
#: between families. ``z`` is unit-free (log share ratios, log exponents), so a
#: spread of 1 means families differ by a factor of e in a share ratio or an
#: exponent: wider than any spread seen between real families (alpha of the
#: corpus families sits within about 0.3 of 0.35), yet it keeps ``tau`` off
#: values of several units, where the step-2 sampler would have to explore an
#: unidentified tail with only a handful of families.
POPULATION_TAU_SD: float = 1.0

#: ``Omega ~ LKJ(POPULATION_LKJ_CONCENTRATION)``: 2 mildly favours weak
#: correlations between components over the extremes +-1 (1 would be uniform
#: over correlation matrices), which a handful of families cannot rule out.
POPULATION_LKJ_CONCENTRATION: float = 2.0

#: Floors on the sd of a population prior's noise priors, ``ln sigma_run ~
#: N(median, max(POPULATION_SIGMA_RUN_SD_MIN, spread))`` and the same for
#: ``sigma_obs``: the spread of a few families' posterior medians
#: underestimates how much a new family's noise can differ (a median hides the
#: posterior's own width). The floors are the weak default's sd for
#: ``sigma_run`` (0.5, a factor 1.6) and three quarters of it for
#: ``sigma_obs`` (0.75 of 1.0: checkpoint noise is better identified by a
#: family's many rows than the run offsets by its few runs).
POPULATION_SIGMA_RUN_SD_MIN: float = 0.5
POPULATION_SIGMA_OBS_SD_MIN: float = 0.75

#: Weak priors ``(mean, sd)`` for the extra parameters of the curve laws
#: (:data:`hiscale.laws.CURVE_LAWS`). ``u_f = ln(f/e)``: the annealing bonus at
#: (N0, anneal = 1) as a share of the floor; centred on a ~5% drop of the floor
#: term (cooldowns gain a few percent of the loss). ``r_f``: size exponent of the
#: bonus, centred near the Multi-Power Law's N^0.13 (Luo et al. 2025) but wide.
CURVE_LAW_PRIORS: dict[str, tuple[float, float]] = {
    "u_f": (math.log(0.05), 1.0),
    "r_f": (0.1, 0.2),
    # h-rel: logit of the share of the reducible loss that full annealing removes,
    # centred on 20% (80% of draws between 4% and 62%)
    "v_f": (math.log(0.2 / 0.8), 1.0),
}

#: Noise priors of the whole-curve likelihood (:mod:`hiscale.modeling.curve`):
#: ``sigma_ar`` the stationary sd of the AR(1) residual in ln L (LogNormal loc,
#: scale) and ``rho`` its correlation per e-fold of tokens (logit-normal loc,
#: scale; centred on 0.9, i.e. curves wiggle slowly in ln D).
CURVE_NOISE_PRIORS: dict[str, tuple[float, float]] = {
    "sigma_ar": (math.log(0.01), 1.0),
    "rho": (math.log(0.9 / 0.1), 1.5),
}
