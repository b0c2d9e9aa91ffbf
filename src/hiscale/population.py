r"""Population priors: what a new family's parameters look like.

Two steps, because a one-step joint fit samples badly: family posteriors are
10^3-10^4 times narrower than the population, so NUTS hits its maximum tree
depth on every draw, while the two steps converge:

1. **Per-family posteriors.** Each training family is fitted with the weak
   (``flat``) prior ``N(m_0, S_0)``; the posterior of its unit-free law
   vector ``z`` is summarised as a Gaussian ``N(m_f, S_f)`` together with the
   posterior medians of its noise scales. Summaries are cached on disk, so
   leave-one-family-out priors only redo step 2.
2. **Likelihoods.** The step-1 prior is divided out of each summary
   (:func:`divide_prior`): the family's Gaussian *likelihood* has precision
   ``S_f^{-1} - S_0^{-1}``. Otherwise step 2 would count the step-1 prior
   once per family (in a direction the data do not identify, the "data"
   would be the prior itself, piling the families up at its centre and
   shrinking the population spread). Directions where a family's data carry
   less than :data:`MIN_INFORMATION` of the prior's information (or where
   the difference is not positive definite) are given zero information: the
   family says nothing there.
3. **Population.** A normal-normal meta-model sampled with NUTS, each
   family's likelihood used in information form (no inverse of ``S_f^{-1} -
   S_0^{-1}`` needed, so zero-information directions are exact):

   .. math::

       \theta_f \sim \mathrm{MVN}(\mu, \Sigma),\quad
       y_f = A_f^\top (\theta_f - m_0) + \varepsilon_f,\
       \varepsilon_f \sim \mathcal N(0, I)
       \ \Rightarrow\ y_f \sim \mathrm{MVN}(A_f^\top(\mu - m_0),\,
       A_f^\top \Sigma A_f + I),

       \Sigma = \mathrm{diag}(\tau)\,\Omega\,\mathrm{diag}(\tau),\quad
       \Omega \sim \mathrm{LKJ}(2),\ \tau \sim \mathcal N^+(0, 1),\
       \mu \sim \mathcal N(m_0, 2 s_0)

   (:func:`population_hyperpriors`; the numbers are
   :data:`hiscale.priors.defaults.POPULATION_MU_SD_FACTOR`,
   :data:`~hiscale.priors.defaults.POPULATION_TAU_SD` and
   :data:`~hiscale.priors.defaults.POPULATION_LKJ_CONCENTRATION`)

   with ``A_f A_f^T`` the family's likelihood precision (one column per
   informative direction) and ``y_f`` its information vector in that basis
   (:func:`observation_form`); ``theta_f`` is integrated out analytically.
   The prior for a *new* family is the posterior predictive
   ``z_new ~ MVN(mu, Sigma)`` integrated over the population posterior and
   moment-matched to one Gaussian (mean, covariance). Noise-scale priors
   are centred on the families' median noise scales.

Which families feed the population: by default every family (in the majority
loss unit) whose step-1 fit converges. A family with a narrow size span, or one
size, informs only what its data identify (the data exponent, the shares it
sees), because its likelihood is flat in the directions it carries no
information about. Before the step-1 prior was divided out, such families
counted fully (families whose sizes span less than ~3x, such as the
datablations triples, pulled the population's alpha from 0.41 to 0.67 when they
were included); :data:`OLD_SIZE_FILTER` (>= 3 sizes spanning >= 4x) restores
the filter ``corpus-v1`` was built with.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS

from hiscale._config import require_x64
from hiscale._util import cache_key, json_default, table_digest
from hiscale._version import __version__
from hiscale.data.covariates import (  # re-exported: family covariates of a population
    MISSING_LEVEL,
    family_covariate,
)
from hiscale.data.curves import (
    DEFAULT_LOSS_UNIT,
    Curves,
    family_groups,
    name_group,
    normalise_unit,
)
from hiscale.infer.fit import FitOptions, fit
from hiscale.infer.settings import CURVE_SAMPLER, POPULATION_SAMPLER, SamplerSettings
from hiscale.laws import get_law
from hiscale.priors.defaults import (
    DEFAULT_PRIORS,
    POPULATION_LKJ_CONCENTRATION,
    POPULATION_MU_SD_FACTOR,
    POPULATION_SIGMA_OBS_SD_MIN,
    POPULATION_SIGMA_RUN_SD_MIN,
    POPULATION_TAU_SD,
)
from hiscale.priors.prior import Prior, flat_prior

__all__ = [
    "MIN_INFORMATION",
    "OLD_SIZE_FILTER",
    "FamilyLikelihood",
    "FamilySummary",
    "StepOneLawError",
    "borrow_prior",
    "build_prior",
    "cache_dir",
    "curve_law_families",
    "divide_prior",
    "engine_revision",
    "family_covariate",
    "family_group",
    "family_unit",
    "fit_borrowing",
    "majority_unit",
    "numpyro_mcmc",
    "observation_form",
    "pool_likelihoods",
    "population_families",
    "population_hyperpriors",
    "summarise_family",
]


#: ``build_prior(**OLD_SIZE_FILTER)`` leaves out families with < 3 sizes or a
#: size span < 4x, as ``corpus-v1`` was built (``--min-sizes 3 --min-span 4``).
OLD_SIZE_FILTER: dict[str, Any] = {"min_sizes": 3, "min_span": 4.0}

#: :func:`build_prior` warns (``PriorWarning``) when step 2's r_hat exceeds this or
#: more than this share of its draws diverged; the model card's stricter verdict
#: (r_hat <= 1.01, no divergence) is advisory.
POPULATION_WARN_RHAT: float = 1.05
POPULATION_WARN_DIVERGENT: float = 0.01

#: Step-1 family fits with a larger r_hat are left out of the population (and reported).
MAX_STEP1_RHAT: float = 1.1

#: A direction in which a family's data carry less information than this
#: fraction of the step-1 prior's (likelihood variance more than 10x the
#: prior variance along it) is treated as carrying none. A posterior variance
#: estimated from a few hundred effective draws is uncertain by 5-10%, so a
#: posterior-to-prior variance ratio above ~0.9 cannot be told apart from 1.
MIN_INFORMATION: float = 0.1


def cache_dir() -> Path:
    """Return where per-family summaries and leave-one-out priors are cached.

    Returns
    -------
    Path
        ``$HISCALE_CACHE``, else ``~/.cache/hiscale``.
    """
    return Path(os.environ.get("HISCALE_CACHE", Path.home() / ".cache" / "hiscale"))


def family_group(family: str, curves: Curves | None = None) -> str:
    """Return the group of families sharing models or an origin with ``family``.

    Leave-one-family-out removes the whole group, so sibling families of the
    same models cannot leak the held-out family's answer into its prior.

    Parameters
    ----------
    family : str
        Family name.
    curves : Curves, optional
        With it the group comes from the data
        (:func:`hiscale.data.curves.family_groups`: an explicit ``group``
        column, else shared ``source`` origins); without it, or for a family
        not in ``curves``, from the name up to its first hyphen.

    Returns
    -------
    str
        The group name (``gemstones-cooldown`` -> ``gemstones``).
    """
    if curves is not None:
        groups = family_groups(curves)
        if family in groups:
            return groups[family]
    return name_group(family)


def family_unit(curves: Curves, family: str) -> str:
    """Return the family's loss unit (``loss_unit`` column, normalised).

    A table without the column, or a family without a value in it, is in
    :data:`hiscale.data.curves.DEFAULT_LOSS_UNIT` (:func:`hiscale.data.curves.load_curves`
    logs that assumption).

    Parameters
    ----------
    curves : Curves
        The table.
    family : str
        Family name.

    Returns
    -------
    str
        The normalised unit.
    """
    f = curves.frame
    if "loss_unit" not in f.columns:
        return DEFAULT_LOSS_UNIT
    units = f.loc[f["family"] == family, "loss_unit"].dropna().astype(str).str.strip()
    units = units[units != ""].unique()
    return normalise_unit(units[0]) if len(units) else DEFAULT_LOSS_UNIT


def population_families(
    curves: Curves,
    *,
    min_sizes: int = 3,
    min_span: float = 4.0,
    loss_unit: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Select the families that feed the population, and say why the others were left out.

    A family with fewer sizes, or sizes spanning less, carries no information
    on the N-dependence but would count fully in the population.

    Parameters
    ----------
    curves : Curves
        The table.
    min_sizes : int, default 3
        Fewest distinct model sizes a family needs.
    min_span : float, default 4.0
        Smallest ratio of largest to smallest size.
    loss_unit : str, optional
        Keep only families in this loss unit; ``None`` mixes units. A
        population is learned within one unit: shares and exponents of a
        per-token validation loss and of a per-word downstream NLL (LAMBADA)
        are not draws from one distribution.

    Returns
    -------
    keep : list of str
        Families kept, in table order.
    why : dict of str to str
        Reason for each family left out.
    """
    keep, why = [], {}
    if loss_unit is not None:
        loss_unit = normalise_unit(loss_unit)
    for fam in curves.families:
        s = np.sort(curves.frame.loc[curves.frame["family"] == fam, "params"].unique())
        unit = family_unit(curves, fam)
        if loss_unit is not None and unit != loss_unit:
            why[fam] = f"loss unit {unit!r} != {loss_unit!r}"
        elif len(s) < min_sizes:
            why[fam] = f"{len(s)} sizes < {min_sizes}"
        elif s[-1] / s[0] < min_span:
            why[fam] = f"sizes span {s[-1] / s[0]:.1f}x < {min_span:g}x"
        else:
            keep.append(fam)
    return keep, why


def curve_law_families(
    curves: Curves, families: Sequence[str], law: str, runs_extra: pd.DataFrame | None = None
) -> dict[str, str]:
    """Families a whole-curve law cannot fit (a schedule unknown, no curves), with the reason.

    A curve law (:data:`hiscale.laws.CURVE_LAWS`) needs every run's
    learning-rate schedule; a family missing one would be fitted with the
    end-of-run model instead (:func:`hiscale.infer.fit.fit`), whose
    parameters are not the curve law's, so it cannot feed that law's
    population. Empty for an end-of-run law.

    Parameters
    ----------
    curves : Curves
        The table.
    families : sequence of str
        Candidate families.
    law : str
        The population's law.
    runs_extra : pandas.DataFrame, optional
        The corpus's ``runs_extra.csv`` (schedules of the extra families).

    Returns
    -------
    dict of str to str
        ``{family: reason}`` of the families to leave out.
    """
    if not get_law(law).covariates:
        return {}
    from hiscale.data.schedule import run_schedules

    out = {}
    for fam in families:
        rows = curves.frame[curves.frame["family"] == fam]
        info = run_schedules(rows, runs_extra)
        unknown = [r for r, si in info.items() if not si.known]
        if unknown:
            out[fam] = (
                f"law {law!r} needs every run's learning-rate schedule: unknown for "
                f"{len(unknown)} of {len(info)} runs (first: {unknown[0]!r})"
            )
        elif len(rows) and rows.groupby("run").size().max() == 1:
            out[fam] = (
                f"law {law!r} needs curves: every run has one checkpoint (a fit would use "
                "the end-of-run model, whose parameters are not this law's)"
            )
    return out


def majority_unit(curves: Curves) -> str:
    """Return the loss unit shared by most families.

    Parameters
    ----------
    curves : Curves
        The table.

    Returns
    -------
    str
        The most common unit (ties broken arbitrarily but deterministically
        within one process).
    """
    units = [family_unit(curves, f) for f in curves.families]
    return max(set(units), key=units.count)


@dataclass(frozen=True)
class FamilySummary:
    """Gaussian summary of one family's flat-prior posterior."""

    family: str
    names: tuple[str, ...]
    mean: np.ndarray
    cov: np.ndarray
    log_sigma_run: float
    log_sigma_obs: float
    single_row_runs: bool
    rows: int
    runs: int
    diagnostics: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-ready dict.

        Returns
        -------
        dict
            The fields, arrays as (nested) lists.
        """
        d = dict(self.__dict__)
        d["names"] = list(self.names)
        d["mean"] = self.mean.tolist()
        d["cov"] = self.cov.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilySummary:
        """Rebuild a summary from :meth:`to_dict`'s output.

        Parameters
        ----------
        d : dict
            Output of :meth:`to_dict` (e.g. read back from the JSON cache).

        Returns
        -------
        FamilySummary
        """
        d = dict(d)
        d["names"] = tuple(d["names"])
        d["mean"] = np.asarray(d["mean"], float)
        d["cov"] = np.asarray(d["cov"], float)
        return cls(**d)


@lru_cache(maxsize=1)
def engine_revision() -> str:
    """Hash the modules that define a family fit (cached step-1 summaries are keyed by it).

    The files are hashed byte for byte, so any edit to them (comments
    included) makes old summaries stale rather than risk reusing a fit of
    other code.

    Returns
    -------
    str
        The first 12 hex digits of the SHA-256 of the files.
    """
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in (
        "laws.py",
        "modeling/design.py",
        "modeling/family.py",
        "data/selection.py",
        "data/schedule.py",
        "infer/settings.py",
        "infer/nuts.py",
        "infer/diagnostics.py",
        "infer/fit.py",
        "infer/result.py",
    ):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def _runs_extra_of(curves: Curves, family: str, runs_extra) -> pd.DataFrame | None:
    """Return the rows of ``runs_extra`` for ``family``'s runs (None without any)."""
    if runs_extra is None:
        return None
    rows = runs_extra[runs_extra["run"].isin(set(curves.family(family).frame["run"]))]
    return rows if len(rows) else None


def _summary_key(
    curves: Curves, family: str, law: str, options: FitOptions, sampler, seed, runs_extra=None
) -> str:
    extra = _runs_extra_of(curves, family, runs_extra)
    return cache_key(
        [
            engine_revision(),
            *(() if extra is None else (table_digest(extra),)),
            curves.family(family).data_hash(),
            family,
            law,
            options.to_dict(),
            sampler.to_dict(),
            seed,
            flat_prior(law).to_dict(),
            __version__,
        ],
        sort_keys=True,
    )


def summarise_family(
    curves: Curves,
    family: str,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    use_cache: bool = True,
    runs_extra: pd.DataFrame | None = None,
) -> FamilySummary:
    """Step 1: fit one family with the flat prior and summarise its posterior as a Gaussian.

    The summary is cached under :func:`cache_dir` keyed by the data, the
    settings, the seed and :func:`engine_revision`, so leave-one-family-out
    priors only redo the population step.

    Parameters
    ----------
    curves : Curves
        The table.
    family : str
        Family to fit.
    law : str, default "chinchilla"
        Law name.
    options : FitOptions, optional
        Row selection and likelihood options (defaults if ``None``).
    sampler : SamplerSettings, optional
        NUTS settings (defaults if ``None``).
    seed : int, default 0
        Sampler seed.
    use_cache : bool, default True
        Read a cached summary when one exists (a new fit is always written).
    runs_extra : pandas.DataFrame, optional
        The corpus's ``runs_extra.csv``: schedules of runs whose ``schedule``
        text does not give them (a curve law needs them); part of the cache key.

    Returns
    -------
    FamilySummary
        Posterior mean and covariance of the law vector ``z``, the median
        log noise scales, and the fit's diagnostics.
    """
    options = options or FitOptions()
    sampler = sampler or (CURVE_SAMPLER if options.curve else SamplerSettings())
    key = _summary_key(curves, family, law, options, sampler, seed, runs_extra)
    path = cache_dir() / "summaries" / f"{family}-{key}.json"
    if use_cache and path.is_file():
        return FamilySummary.from_dict(json.loads(path.read_text()))
    t0 = time.perf_counter()
    f = fit(
        curves, family=family, prior="flat", law=law, seed=seed, options=options, sampler=sampler,
        runs_extra=_runs_extra_of(curves, family, runs_extra),
    )  # fmt: skip
    if f.law != get_law(law).name:
        raise StepOneLawError(
            f"family {family!r}: the step-1 fit used law {f.law!r}, not {law!r} "
            f"({f.provenance.get('fallback', 'no reason recorded')}); it cannot feed this "
            "population"
        )
    names = get_law(law).params
    z = np.stack([f.posterior[n].reshape(-1) for n in names], axis=1)
    counts = f.data.groupby("run").size()
    summ = FamilySummary(
        family=family,
        names=tuple(names),
        mean=z.mean(0),
        cov=np.cov(z, rowvar=False),
        log_sigma_run=float(np.median(np.log(f.posterior["sigma_run"]))),
        log_sigma_obs=float(np.median(np.log(f.posterior["sigma_obs"]))),
        single_row_runs=bool(counts.max() == 1),
        rows=len(f.data),
        runs=len(counts),
        diagnostics={k: v for k, v in f.diagnostics.items()},
        seconds=time.perf_counter() - t0,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summ.to_dict(), default=json_default, indent=1))
    tmp.replace(path)  # atomic: concurrent backtests may read the cache
    return summ


class StepOneLawError(ValueError):
    """A family's step-1 fit fell back to another law, so it cannot feed the population."""


@dataclass(frozen=True)
class FamilyLikelihood:
    r"""Gaussian approximation of a family's likelihood for ``z`` (step-1 prior divided out).

    Kept in the step-1 prior's whitened coordinates ``x = L0^{-1} (z - m0)``
    (``S0 = L0 L0^T``), where the prior is ``N(0, I)`` and the likelihood is

    .. math:: \log \ell(x) = -\tfrac12 x^\top P x + b^\top x + \mathrm{const}

    with ``P`` positive semi-definite: a zero eigenvalue is a direction the
    family's data say nothing about. Eigenvalues of ``P`` are the data's
    information relative to the prior's in that direction.

    Attributes
    ----------
    values : ndarray, shape (R,)
        Nonzero eigenvalues of ``P`` (those >= :data:`MIN_INFORMATION`).
    vectors : ndarray, shape (K, R)
        Their eigenvectors (whitened coordinates).
    shift : ndarray, shape (K,)
        ``b`` (whitened), projected onto the informative directions.
    information : ndarray, shape (K,)
        Eigenvalues of ``P`` before flooring, ascending (negative where the
        posterior was wider than the prior).
    floored : list of ndarray
        Unit vectors in ``z`` coordinates (``L0 u`` normalised) along which
        the family carries no information.
    prior_loc, prior_chol : ndarray
        ``m0`` and ``L0`` of the step-1 prior.
    """

    values: np.ndarray
    vectors: np.ndarray
    shift: np.ndarray
    information: np.ndarray
    floored: list[np.ndarray]
    prior_loc: np.ndarray
    prior_chol: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        """``P`` (whitened coordinates), zero in the floored directions."""
        return (self.vectors * self.values) @ self.vectors.T

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the likelihood as ``N(m, S)`` in ``z`` coordinates.

        Returns
        -------
        mean : ndarray, shape (K,)
            ``m = m0 + L0 P^{-1} b``.
        cov : ndarray, shape (K, K)
            ``S = L0 P^{-1} L0^T``.

        Raises
        ------
        ValueError
            If a direction was floored: ``P`` is singular there, so the
            covariance would be infinite.
        """
        if self.floored:
            raise ValueError(
                f"likelihood carries no information in {len(self.floored)} direction(s): "
                "its covariance is infinite there"
            )
        cov_x = np.linalg.inv(self.precision)
        mean = self.prior_loc + self.prior_chol @ (cov_x @ self.shift)
        return mean, self.prior_chol @ cov_x @ self.prior_chol.T

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """Return the information per eigen-direction and the floored directions, JSON-ready.

        Parameters
        ----------
        names : sequence of str
            Names of the law parameters (the components of ``z``).

        Returns
        -------
        dict
            ``information`` (eigenvalues of ``P`` before flooring),
            ``floored_directions`` (their count) and ``uninformative`` (each
            floored direction as ``{name: component}``).
        """
        return {
            "information": self.information.tolist(),
            "floored_directions": len(self.floored),
            "uninformative": [
                {n: float(v) for n, v in zip(names, u, strict=True)} for u in self.floored
            ],
        }


def _floor(
    precision: np.ndarray,
    shift: np.ndarray,
    prior_loc: np.ndarray,
    prior_chol: np.ndarray,
    min_information: float,
) -> FamilyLikelihood:
    """Zero the eigen-directions of ``precision`` carrying less than ``min_information``."""
    lam, u = np.linalg.eigh(0.5 * (precision + precision.T))
    keep = lam >= min_information
    uk = u[:, keep]
    floored = []
    for v in u[:, ~keep].T:
        d = prior_chol @ v
        d = d / np.linalg.norm(d)
        floored.append(d * (np.sign(d[np.argmax(np.abs(d))]) or 1.0))
    return FamilyLikelihood(
        values=lam[keep],
        vectors=uk,
        shift=uk @ (uk.T @ shift),
        information=lam,
        floored=floored,
        prior_loc=prior_loc,
        prior_chol=prior_chol,
    )


def divide_prior(
    mean: np.ndarray,
    cov: np.ndarray,
    prior_loc: np.ndarray,
    prior_cov: np.ndarray,
    *,
    min_information: float = MIN_INFORMATION,
) -> FamilyLikelihood:
    """Gaussian likelihood of a family: its posterior ``N(mean, cov)`` divided by the prior.

    With a Gaussian prior ``N(m0, S0)`` and a Gaussian likelihood ``N(m, S)``
    the posterior has precision ``S0^{-1} + S^{-1}``; so the likelihood's
    precision is ``cov^{-1} - S0^{-1}`` and its information vector
    ``cov^{-1} mean - S0^{-1} m0``. Computed in the prior's whitened
    coordinates; eigen-directions where the difference is below
    ``min_information`` (in units of the prior's precision), including
    negative ones (posterior wider than the prior: sampling noise or a
    non-Gaussian posterior), get zero information.

    Parameters
    ----------
    mean, cov : ndarray
        Posterior mean (K,) and covariance (K, K) under the prior.
    prior_loc, prior_cov : ndarray
        The prior the posterior was computed under.
    min_information : float
        Floor on the data's information relative to the prior's.

    Returns
    -------
    FamilyLikelihood
    """
    chol = np.linalg.cholesky(np.asarray(prior_cov, float))
    prior_loc = np.asarray(prior_loc, float)
    a = np.linalg.solve(chol, np.asarray(mean, float) - prior_loc)  # whitened posterior mean
    c = np.linalg.solve(chol, np.linalg.solve(chol, np.asarray(cov, float)).T)  # L^-1 S L^-T
    c = 0.5 * (c + c.T)
    c_inv = np.linalg.inv(c)
    k = len(prior_loc)
    return _floor(c_inv - np.eye(k), c_inv @ a, prior_loc, chol, min_information)


def pool_likelihoods(
    likelihoods: Sequence[FamilyLikelihood], *, min_information: float = MIN_INFORMATION
) -> FamilyLikelihood:
    """Pool sibling families into one likelihood: the geometric mean of theirs.

    Precisions and information vectors are averaged, so a group carries one
    family's worth of information (siblings are not independent
    measurements), weighted towards the members that know more.

    Parameters
    ----------
    likelihoods : sequence of FamilyLikelihood
        The siblings' likelihoods, all in the same step-1 prior's coordinates.
    min_information : float
        Floor on the pooled information relative to the prior's.

    Returns
    -------
    FamilyLikelihood
    """
    first = likelihoods[0]
    return _floor(
        np.mean([lk.precision for lk in likelihoods], axis=0),
        np.mean([lk.shift for lk in likelihoods], axis=0),
        first.prior_loc,
        first.prior_chol,
        min_information,
    )


def observation_form(lik: FamilyLikelihood) -> tuple[np.ndarray, np.ndarray]:
    """Write a likelihood as ``log lik(z) = -1/2 |A^T (z - m0) - y|^2 + const``.

    ``A`` is (K, K): one column per informative eigen-direction of the
    precision, ``sqrt(lambda) L0^{-T} u``, and a zero column (with ``y = 0``)
    per floored one, so every family has the same shape. Marginalising
    ``z ~ N(mu, Sigma)`` gives ``y ~ N(A^T (mu - m0), A^T Sigma A + I)``,
    which needs no inverse of the likelihood precision.

    Parameters
    ----------
    lik : FamilyLikelihood
        The family's likelihood.

    Returns
    -------
    A : ndarray, shape (K, K)
        Square root of the likelihood precision in ``z`` coordinates.
    y : ndarray, shape (K,)
        The information vector in that basis.
    """
    k = len(lik.prior_loc)
    root = np.sqrt(lik.values)
    a = np.zeros((k, k))
    y = np.zeros(k)
    a[:, : len(root)] = np.linalg.solve(lik.prior_chol.T, lik.vectors * root)
    y[: len(root)] = (lik.vectors.T @ lik.shift) / root
    return a, y


def _population_units(
    summaries: list[FamilySummary],
    likelihoods: dict[str, FamilyLikelihood],
    *,
    pool_groups: bool,
    groups: dict[str, str] | None = None,
) -> dict[str, tuple[FamilyLikelihood, list[str]]]:
    """Step-2 units: one per family, or one per family group (see :func:`pool_likelihoods`)."""
    if not pool_groups:
        return {s.family: (likelihoods[s.family], [s.family]) for s in summaries}
    units: dict[str, list[str]] = {}
    for s in summaries:
        units.setdefault((groups or {}).get(s.family) or name_group(s.family), []).append(s.family)
    return {
        g: (
            likelihoods[members[0]]
            if len(members) == 1
            else pool_likelihoods([likelihoods[f] for f in members]),
            members,
        )
        for g, members in units.items()
    }


def _summaries_on(
    client: Any,
    curves: Curves,
    fams: Sequence[str],
    step1: dict[str, Any],
    report: Any,
) -> list[FamilySummary]:
    """Step 1 as Dask tasks, one per family; summaries in the order of ``fams``."""
    from distributed import as_completed

    from hiscale._distributed import call, waiting, worker_settings

    settings = worker_settings()
    keys = {
        fam: _summary_key(
            curves,
            fam,
            step1["law"],
            step1["options"],
            step1["sampler"],
            step1["seed"],
            step1["runs_extra"],
        )
        for fam in fams
    }
    t0 = time.perf_counter()
    futures = {
        client.submit(
            call,
            settings,
            summarise_family,
            curves.family(fam),  # only the rows it fits travel; same key and numbers
            fam,
            **{**step1, "runs_extra": _runs_extra_of(curves, fam, step1["runs_extra"])},
            key=f"hiscale-summary-{fam}-{keys[fam]}-{int(step1['use_cache'])}",
        ): i
        for i, fam in enumerate(fams)
    }
    out: dict[int, FamilySummary] = {}
    with waiting():  # inside a task (a backtest's prepare): free the worker meanwhile
        for done, (fut, summ) in enumerate(as_completed(list(futures), with_results=True)):
            out[futures[fut]] = summ
            report(done, summ, time.perf_counter() - t0)
    return [out[i] for i in range(len(fams))]


def population_hyperpriors(m0, s0):
    """Sample the population's ``mu``, ``tau`` and ``L_omega`` (NumPyro sites).

    ``mu ~ N(m0, POPULATION_MU_SD_FACTOR * s0)``, ``tau ~
    HalfNormal(POPULATION_TAU_SD)`` and ``L_omega ~
    LKJCholesky(POPULATION_LKJ_CONCENTRATION)`` (:mod:`hiscale.priors.defaults`
    says why). The two-step population model and the joint fit
    (:mod:`hiscale.contrib.joint`) both call this, so the same quantity has
    the same hyperprior.

    Parameters
    ----------
    m0 : array, shape (K,)
        Step-1 prior means of the law vector.
    s0 : array, shape (K,)
        Step-1 prior standard deviations.

    Returns
    -------
    tuple of arrays
        ``(mu, tau, L_omega)``; ``diag(tau) L_omega`` is the Cholesky factor
        of the population covariance.
    """
    k = m0.shape[0]
    mu = numpyro.sample("mu", dist.Normal(m0, POPULATION_MU_SD_FACTOR * s0).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(POPULATION_TAU_SD).expand([k]).to_event(1))
    l_omega = numpyro.sample("L_omega", dist.LKJCholesky(k, POPULATION_LKJ_CONCENTRATION))
    return mu, tau, l_omega


def _population_model(y, a, m0, s0, level=None, n_levels=0):
    """Step 2; with ``n_levels`` > 0 each unit's mean is shifted by its covariate level's effect.

    The level effects are a random effect, ``mu_l = mu + tau_cov * u_l``,
    ``u_l ~ N(0, I)``, ``tau_cov ~ HalfNormal(POPULATION_TAU_SD)`` per
    component: with few groups per level the effects shrink towards the
    common mean, and a level the population never saw gets a draw of the
    between-level spread (a wider prior, not a guess).
    """
    k = m0.shape[0]
    mu, tau, l_omega = population_hyperpriors(m0, s0)
    l_sigma = tau[:, None] * l_omega
    sigma = l_sigma @ l_sigma.T
    centre = jnp.broadcast_to(mu, (y.shape[0], k))
    if n_levels:
        tau_c = numpyro.sample(
            "tau_cov", dist.HalfNormal(POPULATION_TAU_SD).expand([k]).to_event(1)
        )
        u = numpyro.sample("u_cov", dist.Normal(0.0, 1.0).expand([n_levels, k]).to_event(2))
        centre = centre + (tau_c * u)[level]
    loc = jnp.einsum("fkr,fk->fr", a, centre - m0)
    cov = jnp.einsum("fkr,kl,fls->frs", a, sigma, a) + jnp.eye(k)
    with numpyro.plate("family", y.shape[0]):
        numpyro.sample("y", dist.MultivariateNormal(loc, covariance_matrix=cov), obs=y)


def build_prior(
    curves: Curves,
    *,
    name: str = "corpus-v1",
    law: str = "chinchilla",
    exclude: Sequence[str] = (),
    families: Sequence[str] | None = None,
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    population_sampler: SamplerSettings = POPULATION_SAMPLER,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = False,
    min_span: float = 1.0,
    min_sizes: int | None = None,
    loss_unit: str | None = "auto",
    pool_groups: bool = True,
    client: Any = None,
    covariate: str | None = None,
    covariate_level: str | None = None,
    runs_extra: pd.DataFrame | None = None,
) -> Prior:
    """Build the two-step population prior from the families in ``curves``.

    Parameters
    ----------
    curves : Curves
        Validated table (one metric per family).
    name : str
        Name recorded in the prior.
    law : str
        Law form whose parameter vector is pooled.
    exclude : sequence of str
        Families left out (their whole :func:`family_group` is removed).
    families : sequence of str, optional
        Override the automatic choice of :func:`population_families`.
    options, sampler, seed
        Step-1 fit settings (``seed`` also seeds step 2). A curve law
        (:data:`hiscale.laws.CURVE_LAWS`) defaults to whole curves
        (``FitOptions(rows="all", residual="ar1")``) and leaves out families
        with a run whose schedule is unknown (:func:`curve_law_families`).
    population_sampler : SamplerSettings
        Step-2 NUTS settings (NumPyro's ``MCMC``, started at
        ``init_to_uniform``).
    use_cache : bool
        Reuse cached step-1 summaries.
    progress : bool
        Print one line per step-1 family to stderr.
    min_span : float
        Families whose sizes span less than this factor are left out. The
        default 1 keeps every family: one with a narrow span (or one size)
        informs only the directions its data identify, through its divided-out
        likelihood (:func:`divide_prior`), which is flat elsewhere.
        :data:`OLD_SIZE_FILTER` restores the filter of ``corpus-v1``.
    min_sizes : int, optional
        Families with fewer distinct sizes are left out; default 3 when
        ``min_span > 1`` (the old filter), else 1.
    loss_unit : str or None
        Only families in this loss unit feed the population; ``"auto"`` = the
        unit of most families, ``None`` mixes units.
    pool_groups : bool
        Treat sibling families of one :func:`family_group` (the same models
        cooled down, re-run at half the learning rate, or trained on another
        data set) as *one* draw from the population: their likelihoods are
        pooled (:func:`pool_likelihoods`) before step 2. Counting
        near-duplicates separately makes the population look tighter than
        the spread between independent families.
    client : distributed.Client, optional
        Run the step-1 family fits as Dask tasks on this client's workers
        (:mod:`hiscale._distributed`); default: one after the other in this
        process. The numbers are the same either way. Tasks are keyed by the
        cached summary's key, so priors built at the same time on one
        cluster (the leave-one-group-out priors of a backtest) share the
        fits they have in common.
    covariate : str, optional
        A *family covariate*
        (:func:`~hiscale.data.covariates.family_covariate`: a column
        constant within a family, e.g. ``dataset``, or ``metric_kind``): the
        population mean depends on its level (a random effect per level, see
        :func:`_population_model`). A pooled group takes its members'
        most common level (``meta["covariate"]`` lists groups with mixed
        levels).
    covariate_level : str, optional
        The new family's level: the prior is the predictive at that level.
        A level no unit has (or ``None``) gets a fresh draw of the level
        effect, which widens the prior; ``meta["covariate"]["note"]`` says so.
    runs_extra : pandas.DataFrame, optional
        The corpus's ``runs_extra.csv``: schedules of the extra families for a
        curve law's step-1 fits (each family gets its runs' rows; recorded in
        ``meta["runs_extra"]`` as a hash).

    Returns
    -------
    Prior
        Predictive prior for a new family; ``meta`` records families used and
        left out (with reasons), data hash, settings, diagnostics, timing,
        and (``likelihoods``) each family's and unit's information per
        eigen-direction after dividing out the step-1 prior, with the
        directions floored to zero information.

    Raises
    ------
    ValueError
        If fewer than two families, two converged families or two
        independent groups remain: one family gives no spread.
    RuntimeError
        If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
    """
    import sys

    require_x64("hiscale.build_prior")
    t_start = time.perf_counter()
    if options is None:  # a curve law fits whole curves; an end-of-run law the end rows
        curve = bool(get_law(law).covariates)
        options = FitOptions(rows="all", residual="ar1") if curve else FitOptions()
    sampler = sampler or (CURVE_SAMPLER if options.curve else SamplerSettings())
    if loss_unit == "auto":
        loss_unit = majority_unit(curves)
    if min_sizes is None:
        min_sizes = 3 if min_span > 1 else 1
    auto, why = population_families(
        curves, min_sizes=min_sizes, min_span=min_span, loss_unit=loss_unit
    )
    fams = list(families) if families is not None else auto
    group_of = family_groups(curves)
    held_out = {family_group(e, curves) for e in exclude}
    for f in list(fams):
        if group_of.get(f, name_group(f)) in held_out:
            fams.remove(f)
            why[f] = f"excluded (group {group_of.get(f, name_group(f))!r} held out)"
    no_schedule = curve_law_families(curves, fams, law, runs_extra)
    fams = [f for f in fams if f not in no_schedule]
    why.update(no_schedule)
    if len(fams) < 2:
        raise ValueError(f"need >= 2 families for a population prior, got {fams}")
    step1 = dict(
        law=law, options=options, sampler=sampler, seed=seed, use_cache=use_cache,
        runs_extra=runs_extra,
    )  # fmt: skip

    def report(i: int, s: FamilySummary, seconds: float) -> None:
        if progress:
            d = s.diagnostics
            sys.stderr.write(
                f"[{i + 1}/{len(fams)}] {s.family}: {s.rows} rows, "
                f"r_hat {d['rhat_max']:.3f}, {seconds:.1f}s\n"
            )

    if client is not None:
        summaries = _summaries_on(client, curves, fams, step1, report)
    else:
        summaries = []
        for i, fam in enumerate(fams):
            t0 = time.perf_counter()
            try:
                summaries.append(summarise_family(curves, fam, **step1))
            except StepOneLawError as err:  # left out, with the reason in the prior's meta
                why[fam] = str(err)
                continue
            report(i, summaries[-1], time.perf_counter() - t0)
    bad = [s for s in summaries if s.diagnostics["rhat_max"] > MAX_STEP1_RHAT]
    for s in bad:
        why[s.family] = f"step-1 fit did not converge (r_hat {s.diagnostics['rhat_max']:.3g})"
    summaries = [s for s in summaries if s.diagnostics["rhat_max"] <= MAX_STEP1_RHAT]
    if len(summaries) < 2:
        raise ValueError(f"need >= 2 converged families for a population prior; left out: {why}")
    base = flat_prior(law)
    likelihoods = {s.family: divide_prior(s.mean, s.cov, base.loc, base.cov) for s in summaries}
    units = _population_units(summaries, likelihoods, pool_groups=pool_groups, groups=group_of)
    if len(units) < 2:
        raise ValueError(
            f"need >= 2 independent families (groups) for a population prior, got {list(units)}"
        )
    obs = [observation_form(u[0]) for u in units.values()]
    a_mat = np.stack([o[0] for o in obs])
    y_vec = np.stack([o[1] for o in obs])
    cov_meta, level_idx, levels = _unit_levels(curves, covariate, covariate_level, units)
    t1 = time.perf_counter()
    post, rhat, div, z_new, effects = sample_population(
        y_vec,
        a_mat,
        base.loc,
        base.sd,
        sampler=population_sampler,
        seed=seed,
        level_index=level_idx,
        levels=levels,
        level=covariate_level,
    )
    if cov_meta is not None:
        cov_meta["tau_cov_mean"] = np.asarray(post["tau_cov"]).mean(0).tolist()
        cov_meta["level_effect_mean"] = {
            lv: effects[:, i].mean(0).tolist() for i, lv in enumerate(levels)
        }
    n_draws = population_sampler.num_samples * population_sampler.num_chains
    if rhat > POPULATION_WARN_RHAT or div > POPULATION_WARN_DIVERGENT * n_draws:
        import warnings

        from hiscale.priors.prior import PriorWarning

        warnings.warn(
            f"population prior {name!r}: the step-2 sampler did not converge "
            f"(r_hat {rhat:.3f}, {div} of {n_draws} draws divergent)",
            PriorWarning,
            stacklevel=2,
        )
    loc = z_new.mean(0)
    cov = np.cov(z_new, rowvar=False)
    t2 = time.perf_counter()
    # noise scales: centred on the families' medians (final-only families excluded
    # for sigma_obs, which they cannot identify)
    lsr = np.array([s.log_sigma_run for s in summaries])
    lso = np.array([s.log_sigma_obs for s in summaries if not s.single_row_runs])
    settings = dict(DEFAULT_PRIORS)
    settings["sigma_run"] = (
        float(np.median(lsr)),
        float(max(POPULATION_SIGMA_RUN_SD_MIN, np.std(lsr))),
    )
    if len(lso):
        settings["sigma_obs"] = (
            float(np.median(lso)),
            float(max(POPULATION_SIGMA_OBS_SD_MIN, np.std(lso))),
        )
    meta = {
        "families_used": {
            s.family: {
                "rows": s.rows,
                "runs": s.runs,
                "rhat_max": s.diagnostics["rhat_max"],
                "flagged": s.diagnostics["flagged"],
                "fit_seconds": s.seconds,
            }
            for s in summaries
        },
        "families_left_out": why,
        "exclude": list(exclude),
        "min_span": min_span,
        "min_sizes": min_sizes,
        "loss_unit": loss_unit,
        "pool_groups": pool_groups,
        "population_units": {g: u[1] for g, u in units.items()},
        "covariate": cov_meta,
        "groups": {s.family: group_of.get(s.family, name_group(s.family)) for s in summaries},
        "data_hash": curves.data_hash(),
        "runs_extra": (None if runs_extra is None else table_digest(runs_extra)),
        "family_means": {s.family: s.mean.tolist() for s in summaries},
        "likelihoods": {
            "min_information": MIN_INFORMATION,
            "families": {f: lk.summary(base.names) for f, lk in likelihoods.items()},
            "units": {g: u[0].summary(base.names) for g, u in units.items()},
        },
        "population": {
            "mu_mean": np.asarray(post["mu"]).mean(0).tolist(),
            "tau_mean": np.asarray(post["tau"]).mean(0).tolist(),
            "rhat_max": rhat,
            "divergences": div,
            "num_warmup": population_sampler.num_warmup,
            "num_samples": population_sampler.num_samples,
            "num_chains": population_sampler.num_chains,
            "sampler": population_sampler.numpyro_dict("init_to_uniform"),
            "hyperpriors": {
                "mu_sd_factor": POPULATION_MU_SD_FACTOR,
                "tau_sd": POPULATION_TAU_SD,
                "lkj_concentration": POPULATION_LKJ_CONCENTRATION,
            },
        },
        "step1_options": options.to_dict(),
        "step1_sampler": sampler.to_dict(),
        "seed": seed,
        "seconds": {
            "step1": t1 - t_start,
            "step2": t2 - t1,
            "total": time.perf_counter() - t_start,
        },
        "hiscale_version": __version__,
        "built": time.strftime("%Y-%m-%d"),
    }
    return Prior(
        name=name,
        law=get_law(law).name,
        names=base.names,
        loc=loc,
        cov=cov,
        settings=settings,
        meta=meta,
    )


def numpyro_mcmc(model, sampler: SamplerSettings, **kernel_options: Any) -> MCMC:
    """NumPyro's ``MCMC`` with a ``NUTS`` kernel set up from ``sampler`` (no progress bar).

    The chains run in parallel when ``sampler.chain_method == "parallel"``
    and there are enough JAX devices, else one after the other (same draws).

    Parameters
    ----------
    model : callable
        The NumPyro model.
    sampler : SamplerSettings
        Warm-up, draws, chains, target acceptance, tree depth, mass matrix.
    **kernel_options
        More ``NUTS`` arguments (e.g. ``init_strategy``).

    Returns
    -------
    numpyro.infer.MCMC
    """
    kernel = NUTS(
        model,
        target_accept_prob=sampler.target_accept_prob,
        max_tree_depth=sampler.max_tree_depth,
        dense_mass=sampler.dense_mass,
        **kernel_options,
    )
    parallel = sampler.chain_method == "parallel" and jax.local_device_count() >= sampler.num_chains
    return MCMC(
        kernel,
        num_warmup=sampler.num_warmup,
        num_samples=sampler.num_samples,
        num_chains=sampler.num_chains,
        chain_method="parallel" if parallel else "sequential",
        progress_bar=False,
    )


def sample_population(
    y_vec,
    a_mat,
    m0,
    s0,
    *,
    sampler: SamplerSettings = POPULATION_SAMPLER,
    seed: int = 0,
    level_index=None,
    levels: Sequence[str] = (),
    level: str | None = None,
):
    """Step 2: sample the population model and draw ``z`` of a new family.

    Parameters
    ----------
    y_vec, a_mat : arrays, shapes (U, K) and (U, K, K)
        The units' likelihoods in observation form (:func:`observation_form`).
    m0, s0 : arrays, shape (K,)
        Step-1 prior mean and sd.
    sampler : SamplerSettings
        NUTS settings.
    seed : int
        Seeds NUTS and the predictive draws.
    level_index : array of int, shape (U,), optional
        Each unit's index into ``levels`` (a family covariate).
    levels : sequence of str
        The covariate's levels (empty: no covariate).
    level : str, optional
        The new family's level; one not in ``levels`` gets a fresh level effect.

    Returns
    -------
    post : dict
        Posterior draws (``mu``, ``tau``, ``L_omega``; ``tau_cov``, ``u_cov``).
    rhat : float
        Largest split r-hat of ``mu``, ``tau`` (and ``tau_cov``).
    divergences : int
    z_new : ndarray, shape (S, K)
        Predictive draws of a new family's law vector.
    effects : ndarray, shape (S, levels, K) or None
        The level effects ``tau_cov * u_cov``.
    """
    ps = sampler
    mcmc = numpyro_mcmc(_population_model, ps)
    mcmc.run(
        jax.random.PRNGKey(seed),
        jnp.asarray(y_vec),
        jnp.asarray(a_mat),
        jnp.asarray(m0),
        jnp.asarray(s0),
        None if level_index is None else jnp.asarray(level_index),
        len(levels),
        extra_fields=("diverging",),
    )
    post = mcmc.get_samples()
    from numpyro.diagnostics import split_gelman_rubin

    grouped = mcmc.get_samples(group_by_chain=True)
    rhat = max(
        float(
            np.nanmax(
                np.asarray(
                    split_gelman_rubin(
                        np.asarray(grouped[v]).reshape(ps.num_chains, -1, *np.shape(grouped[v])[2:])
                    )
                )
            )
        )
        for v in ("mu", "tau", *(("tau_cov",) if levels else ()))
    )
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    # predictive draws for a new family
    mu = np.asarray(post["mu"])
    l_sigma = np.asarray(post["tau"])[:, :, None] * np.asarray(post["L_omega"])
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal(mu.shape)
    z_new = mu + np.einsum("sij,sj->si", l_sigma, eps)
    effects = None
    if levels:
        tau_c = np.asarray(post["tau_cov"])
        effects = tau_c[:, None, :] * np.asarray(post["u_cov"])  # (S, levels, K)
        if level in levels:
            z_new = z_new + effects[:, levels.index(level)]
        else:  # an unseen level: a fresh draw of the between-level spread
            z_new = z_new + tau_c * rng.standard_normal(mu.shape)
    return post, rhat, div, z_new, effects


def _unit_levels(
    curves: Curves,
    covariate: str | None,
    target: str | None,
    units: dict[str, tuple[FamilyLikelihood, list[str]]],
) -> tuple[dict[str, Any] | None, np.ndarray | None, list[str]]:
    """Each step-2 unit's level of ``covariate`` (a group: its members' most common level).

    Returns the ``meta["covariate"]`` record, the units' level indices and the
    sorted levels (``None, None, []`` without a covariate).
    """
    if covariate is None:
        if target is not None:
            raise ValueError("covariate_level needs a covariate")
        return None, None, []
    members = [f for _, fams in units.values() for f in fams]
    fam_level = family_covariate(curves, covariate, members)
    unit_level, mixed = {}, {}
    for g, (_, fams) in units.items():
        lv = [fam_level[f] for f in fams]
        unit_level[g] = max(sorted(set(lv)), key=lv.count)
        if len(set(lv)) > 1:
            mixed[g] = {f: fam_level[f] for f in fams}
    levels = sorted(set(unit_level.values()))
    seen = target in levels
    note = None
    if not seen:
        note = (
            f"level {target!r} of {covariate!r} is not in the population (levels: {levels}): "
            "the prior adds a fresh draw of the between-level spread"
        )
    meta = {
        "column": covariate,
        "target_level": target,
        "target_seen": seen,
        "unit_levels": unit_level,
        "mixed_units": mixed,
        "missing": sorted(f for f, v in fam_level.items() if v == MISSING_LEVEL),
        "levels": levels,
        "note": note,
    }
    return meta, np.array([levels.index(unit_level[g]) for g in units]), levels


#: Version of the donor-prior cache layout (part of its key).
_BORROW_CACHE_VERSION = "borrow-v1"


def _borrow_key(
    hashes: dict[str, str],
    groups: dict[str, str],
    *,
    law: str,
    options: FitOptions,
    sampler: SamplerSettings,
    population_sampler: SamplerSettings,
    seed: int,
    unit: str,
    pool_groups: bool,
) -> str:
    """Cache key of a donor prior: donors' rows and groups, settings, engine revision."""
    return cache_key(
        [
            _BORROW_CACHE_VERSION,
            engine_revision(),
            hashes,
            groups,
            law,
            options.to_dict(),
            sampler.to_dict(),
            population_sampler.to_dict(),
            seed,
            unit,
            pool_groups,
            [
                POPULATION_MU_SD_FACTOR,
                POPULATION_TAU_SD,
                POPULATION_LKJ_CONCENTRATION,
                POPULATION_SIGMA_RUN_SD_MIN,
                POPULATION_SIGMA_OBS_SD_MIN,
            ],
            __version__,
        ],
        sort_keys=True,
    )


def borrow_prior(
    curves: Curves,
    donors: Sequence[str],
    *,
    target: str | None = None,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    population_sampler: SamplerSettings = POPULATION_SAMPLER,
    seed: int = 0,
    use_cache: bool = True,
    pool_groups: bool = True,
    progress: bool = False,
) -> Prior:
    """Build (or load from the cache) the population prior of donors the user chose.

    The user picks the families that resemble the target (the paper borrows
    the size term from one other family; here the donors' spread is learned
    too). The prior is :func:`build_prior` on exactly ``donors``, saved
    under ``$HISCALE_CACHE/priors/borrow-<key>/`` with ``key`` the hash of the
    donors' rows (and groups), the settings and the engine's revision, so a
    second call with the same donors and data loads it without fitting.
    Its step-1 family fits share the cache of :func:`summarise_family` with
    ``hiscale prior build``.

    Parameters
    ----------
    curves : Curves
        Validated table holding the donors (and, usually, the target).
    donors : sequence of str
        Donor families (duplicates ignored, order kept in the label).
    target : str, optional
        The family that will borrow: never a donor, and its loss unit is the
        donors' required unit.
    law : str
        Law form of the prior.
    options, sampler : optional
        Row selection and NUTS settings of the donors' step-1 fits (defaults:
        :class:`~hiscale.infer.settings.FitOptions`,
        :class:`~hiscale.infer.settings.SamplerSettings`).
    population_sampler : SamplerSettings
        Step-2 NUTS settings.
    seed : int
        Seed of both steps.
    use_cache : bool
        Load a cached donor prior (and cached step-1 fits) when present.
    pool_groups : bool
        Sibling donors of one group count as one draw (see :func:`build_prior`).
    progress : bool
        Print one line per step-1 fit to stderr.

    Returns
    -------
    Prior
        Named ``borrow-<donors joined by +>``; its
        :attr:`~hiscale.priors.prior.Prior.label` says
        ``"borrowed from A, B"`` and ``meta["borrow_from"]`` lists the donors.

    Raises
    ------
    ValueError
        One line: no donor given, the target named as a donor, a donor in
        another loss unit, or donors from fewer than two independent groups
        (a population's spread cannot be estimated from one group: name a
        donor of another group, or fit with ``prior="flat"``).
    hiscale.CurvesError
        If a donor is not in ``curves`` (the message lists the families).
    """
    import logging

    donors = list(dict.fromkeys(str(d) for d in donors))
    if not donors:
        raise ValueError("borrow_from: name at least two donor families")
    if target is not None and target in donors:
        raise ValueError(
            f"borrow_from: the target family {target!r} cannot be its own donor; "
            f"donors given: {', '.join(donors)}"
        )
    parts = {d: curves.family(d) for d in donors}  # CurvesError names an unknown family
    unit = family_unit(curves, target) if target is not None else family_unit(curves, donors[0])
    for d in donors:
        if family_unit(curves, d) != unit:
            raise ValueError(
                f"borrow_from: donor {d!r} is in loss unit {family_unit(curves, d)!r}, "
                f"not {unit!r}: a population is learned within one unit"
            )
    group_of = family_groups(curves)
    groups = {d: group_of.get(d, name_group(d)) for d in donors}
    n_units = len(set(groups.values())) if pool_groups else len(donors)
    if n_units < 2:
        raise ValueError(
            f"borrow_from: donors {', '.join(donors)} form {n_units} independent group "
            f"({', '.join(sorted(set(groups.values())))}); a population needs >= 2 to "
            "estimate its spread: add a donor from another group or use prior='flat'"
        )
    options = options or FitOptions()
    sampler = sampler or (CURVE_SAMPLER if options.curve else SamplerSettings())
    key = _borrow_key(
        {d: parts[d].data_hash() for d in donors},
        groups,
        law=law,
        options=options,
        sampler=sampler,
        population_sampler=population_sampler,
        seed=seed,
        unit=unit,
        pool_groups=pool_groups,
    )
    path = cache_dir() / "priors" / f"borrow-{key}"
    log = logging.getLogger(__name__)
    label = f"borrowed from {', '.join(donors)}"
    if use_cache and (path / "prior.json").is_file():
        log.info("donor prior %s: reused %s", label, path)
        from hiscale.priors.prior import load_prior

        return load_prior(path)
    log.info("donor prior %s: building (%d families)", label, len(donors))
    prior = build_prior(
        curves,
        name="borrow-" + "+".join(donors),
        law=law,
        families=donors,
        options=options,
        sampler=sampler,
        population_sampler=population_sampler,
        seed=seed,
        use_cache=use_cache,
        progress=progress,
        loss_unit=unit,
        pool_groups=pool_groups,
    )
    meta = {**prior.meta, "label": label, "borrow_from": donors, "cache_key": key}
    prior = Prior(
        name=prior.name,
        law=prior.law,
        names=prior.names,
        loc=prior.loc,
        cov=prior.cov,
        settings=prior.settings,
        meta=meta,
    )
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f"prior.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(prior.to_dict(), indent=2, default=json_default) + "\n")
    tmp.replace(path / "prior.json")  # atomic: a concurrent reader sees all or nothing
    return prior


def fit_borrowing(
    curves: Curves | Any,
    *,
    family: str | None = None,
    prior: str | Path | Prior | None = None,
    borrow_from: Sequence[str] | None = None,
    law: str = "chinchilla",
    seed: int = 0,
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    metric: str = "primary",
    runs_extra: Any = None,
    retry: bool | None = None,
):
    """Fit one family, borrowing from a shipped prior or from donor families (``hiscale.fit``).

    Without ``borrow_from`` this is :func:`hiscale.infer.fit.fit`. With it,
    the prior is :func:`borrow_prior` of the donors in the same table (built
    or loaded from the cache), fitted with the same row selection, sampler
    settings and seed, and the fit's ``prior.label`` names the donors.

    Parameters
    ----------
    curves : Curves, DataFrame or path
        Curves table holding the family and the donors.
    family : str, optional
        Family to fit; required when the table holds several.
    prior : "corpus-v1", "flat", path or Prior, optional
        Prior to borrow from (default :data:`hiscale.priors.prior.DEFAULT_PRIOR`);
        not together with ``borrow_from``.
    borrow_from : sequence of str, optional
        Donor families (>= 2 independent groups, never ``family`` itself).
    law, seed, options, sampler, metric, runs_extra, retry
        As in :func:`hiscale.infer.fit.fit` (``runs_extra``: the learning-rate
        schedules of whole-curve fits).

    Returns
    -------
    hiscale.Fit
        The fit.

    Raises
    ------
    ValueError
        If both ``prior`` and ``borrow_from`` are given, or as
        :func:`borrow_prior` for bad donors.
    """
    from hiscale.data.curves import load_curves, sole_family
    from hiscale.priors.prior import DEFAULT_PRIOR

    require_x64("hiscale.fit")
    if borrow_from is None:
        return fit(
            curves,
            family=family,
            prior=DEFAULT_PRIOR if prior is None else prior,
            law=law,
            seed=seed,
            options=options,
            sampler=sampler,
            metric=metric,
            runs_extra=runs_extra,
            retry=retry,
        )
    if prior is not None:
        raise ValueError("give prior= or borrow_from=, not both")
    c = curves if isinstance(curves, Curves) else load_curves(curves, metric=metric)
    if family is None:
        family = sole_family(c.families, "column 'family'", hint="pick one with family=")
    c.family(family)  # an unknown target fails before any donor is fitted
    donor_prior = borrow_prior(
        c, borrow_from, target=family, law=law, options=options, sampler=sampler, seed=seed
    )
    return fit(
        c,
        family=family,
        prior=donor_prior,
        law=law,
        seed=seed,
        options=options,
        sampler=sampler,
        metric=metric,
        runs_extra=runs_extra,
        retry=retry,
    )
