"""Population priors: what a new family's parameters look like.

Two steps (LESSONS.md point 4: the one-step joint fit did not sample; this
route converged):

1. **Per-family posteriors.** Each training family is fitted with the weak
   (``flat``) prior; the posterior of its unit-free law vector ``z`` is
   summarised as a Gaussian ``N(m_f, S_f)`` together with the posterior
   medians of its noise scales. Summaries are cached on disk, so
   leave-one-family-out priors only redo step 2.
2. **Population.** A normal-normal meta-model sampled with NUTS:

   .. math::

       m_f \\sim \\mathrm{MVN}(\\mu, \\Sigma + S_f),\\quad
       \\Sigma = \\mathrm{diag}(\\tau)\\,\\Omega\\,\\mathrm{diag}(\\tau),\\quad
       \\Omega \\sim \\mathrm{LKJ}(2),\\ \\tau \\sim \\mathcal N^+(0, 1),\\
       \\mu \\sim \\mathcal N(\\mu_0, 2 s_0)

   The prior for a *new* family is the posterior predictive
   ``z_new ~ MVN(mu, Sigma)`` integrated over the population posterior and
   moment-matched to one Gaussian (mean, covariance). Noise-scale priors
   are centred on the families' median noise scales.

Which families feed the population matters (LESSONS.md point 5): by default
families need >= 3 sizes spanning >= 4x in N; the others carry no
N-information but would count fully.
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
from numpyro.infer import MCMC, NUTS

from hiscale import __version__
from hiscale.data import (
    DEFAULT_LOSS_UNIT,
    Curves,
    family_groups,
    name_group,
    normalise_unit,
)
from hiscale.fit import FitOptions, fit
from hiscale.inference import SamplerSettings
from hiscale.laws import get_law
from hiscale.priors import DEFAULT_PRIORS, Prior, flat_prior

__all__ = [
    "FamilySummary",
    "build_prior",
    "cache_dir",
    "engine_revision",
    "family_group",
    "family_unit",
    "majority_unit",
    "population_families",
    "summarise_family",
]


#: Step-1 family fits with a larger r_hat are left out of the population (and reported).
MAX_STEP1_RHAT: float = 1.1


def cache_dir() -> Path:
    """Where per-family summaries and leave-one-out priors are cached.

    ``$HISCALE_CACHE`` or ``~/.cache/hiscale``.
    """
    return Path(os.environ.get("HISCALE_CACHE", Path.home() / ".cache" / "hiscale"))


def family_group(family: str, curves: Curves | None = None) -> str:
    """Families sharing models or an origin (``gemstones-cooldown`` -> ``gemstones``).

    Leave-one-family-out removes the whole group, so sibling families of the
    same models cannot leak the held-out family's answer into its prior.
    With ``curves`` the group comes from the data
    (:func:`hiscale.data.family_groups`: an explicit ``group`` column, else
    shared ``source`` origins); without, or for a family not in ``curves``,
    from the name up to its first hyphen.
    """
    if curves is not None:
        groups = family_groups(curves)
        if family in groups:
            return groups[family]
    return name_group(family)


def family_unit(curves: Curves, family: str) -> str:
    """The family's loss unit (``loss_unit`` column, normalised).

    A table without the column, or a family without a value in it, is in
    :data:`hiscale.data.DEFAULT_LOSS_UNIT` (:func:`hiscale.data.load_curves`
    logs that assumption).
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
    """Families that feed the population, and why the others were left out.

    A population is learned within one loss unit (``loss_unit``; ``None``
    mixes units): shares and exponents of a per-token validation loss and of
    a per-word downstream NLL (LAMBADA) are not draws from one distribution.
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


def majority_unit(curves: Curves) -> str:
    """The loss unit shared by most families."""
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
        """JSON-ready."""
        d = dict(self.__dict__)
        d["names"] = list(self.names)
        d["mean"] = self.mean.tolist()
        d["cov"] = self.cov.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilySummary:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["names"] = tuple(d["names"])
        d["mean"] = np.asarray(d["mean"], float)
        d["cov"] = np.asarray(d["cov"], float)
        return cls(**d)


@lru_cache(maxsize=1)
def engine_revision() -> str:
    """Hash of the modules that define a family fit (cached step-1 summaries are keyed by it)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("laws.py", "design.py", "model.py", "inference.py", "fit.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def _summary_key(curves: Curves, family: str, law: str, options: FitOptions, sampler, seed) -> str:
    payload = json.dumps(
        [
            engine_revision(),
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
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def summarise_family(
    curves: Curves,
    family: str,
    *,
    law: str = "chinchilla",
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    use_cache: bool = True,
) -> FamilySummary:
    """Step 1: flat-prior NUTS fit of one family, summarised as a Gaussian (cached)."""
    options = options or FitOptions()
    sampler = sampler or SamplerSettings()
    key = _summary_key(curves, family, law, options, sampler, seed)
    path = cache_dir() / "summaries" / f"{family}-{key}.json"
    if use_cache and path.is_file():
        return FamilySummary.from_dict(json.loads(path.read_text()))
    t0 = time.perf_counter()
    f = fit(
        curves, family=family, prior="flat", law=law, seed=seed, options=options, sampler=sampler
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
    tmp.write_text(json.dumps(summ.to_dict(), default=_json_default, indent=1))
    tmp.replace(path)  # atomic: concurrent backtests may read the cache
    return summ


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)


def _population_units(
    summaries: list[FamilySummary], *, pool_groups: bool, groups: dict[str, str] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Step-2 units: one per family, or one per family group (mean of its members).

    A pooled group's covariance is the mean of its members' covariances (not
    divided by the group size): siblings are not independent measurements.
    """
    if not pool_groups:
        return {s.family: (s.mean, s.cov, [s.family]) for s in summaries}
    units: dict[str, list[FamilySummary]] = {}
    for s in summaries:
        units.setdefault((groups or {}).get(s.family) or name_group(s.family), []).append(s)
    return {
        g: (
            np.mean([s.mean for s in members], axis=0),
            np.mean([s.cov for s in members], axis=0),
            [s.family for s in members],
        )
        for g, members in units.items()
    }


def _population_model(m, s_chol_cov, mu0, mu_sd):
    k = m.shape[1]
    mu = numpyro.sample("mu", dist.Normal(mu0, mu_sd).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([k]).to_event(1))
    l_omega = numpyro.sample("L_omega", dist.LKJCholesky(k, 2.0))
    l_sigma = tau[:, None] * l_omega
    sigma = l_sigma @ l_sigma.T
    with numpyro.plate("family", m.shape[0]):
        numpyro.sample(
            "m", dist.MultivariateNormal(mu, covariance_matrix=sigma + s_chol_cov), obs=m
        )


def build_prior(
    curves: Curves,
    *,
    name: str = "corpus-v1",
    law: str = "chinchilla",
    exclude: Sequence[str] = (),
    families: Sequence[str] | None = None,
    options: FitOptions | None = None,
    sampler: SamplerSettings | None = None,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = False,
    min_span: float = 4.0,
    loss_unit: str | None = "auto",
    pool_groups: bool = True,
) -> Prior:
    """Two-step population prior from the families in ``curves``.

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
        Step-1 fit settings.
    use_cache : bool
        Reuse cached step-1 summaries.
    progress : bool
        Print one line per step-1 family to stderr.
    min_span : float
        Families whose sizes span less than this factor are left out.
    loss_unit : str or None
        Only families in this loss unit feed the population; ``"auto"`` = the
        unit of most families, ``None`` mixes units.
    pool_groups : bool
        Treat sibling families of one :func:`family_group` (the same models
        cooled down, re-run at half the learning rate, or trained on another
        data set) as *one* draw from the population: their summaries are
        averaged before step 2. Counting near-duplicates separately makes the
        population look tighter than the spread between independent families.

    Returns
    -------
    Prior
        Predictive prior for a new family; ``meta`` records families used and
        left out (with reasons), data hash, settings, diagnostics and timing.
    """
    import sys

    t_start = time.perf_counter()
    options = options or FitOptions()
    sampler = sampler or SamplerSettings()
    if loss_unit == "auto":
        loss_unit = majority_unit(curves)
    auto, why = population_families(curves, min_span=min_span, loss_unit=loss_unit)
    fams = list(families) if families is not None else auto
    group_of = family_groups(curves)
    held_out = {family_group(e, curves) for e in exclude}
    for f in list(fams):
        if group_of.get(f, name_group(f)) in held_out:
            fams.remove(f)
            why[f] = f"excluded (group {group_of.get(f, name_group(f))!r} held out)"
    if len(fams) < 2:
        raise ValueError(f"need >= 2 families for a population prior, got {fams}")
    summaries = []
    for i, fam in enumerate(fams):
        t0 = time.perf_counter()
        summaries.append(
            summarise_family(
                curves,
                fam,
                law=law,
                options=options,
                sampler=sampler,
                seed=seed,
                use_cache=use_cache,
            )
        )
        if progress:
            d = summaries[-1].diagnostics
            sys.stderr.write(
                f"[{i + 1}/{len(fams)}] {fam}: {summaries[-1].rows} rows, "
                f"r_hat {d['rhat_max']:.3f}, "
                f"{time.perf_counter() - t0:.1f}s\n"
            )
    bad = [s for s in summaries if s.diagnostics["rhat_max"] > MAX_STEP1_RHAT]
    for s in bad:
        why[s.family] = f"step-1 fit did not converge (r_hat {s.diagnostics['rhat_max']:.3g})"
    summaries = [s for s in summaries if s.diagnostics["rhat_max"] <= MAX_STEP1_RHAT]
    if len(summaries) < 2:
        raise ValueError(f"need >= 2 converged families for a population prior; left out: {why}")
    base = flat_prior(law)
    k = len(base.names)
    units = _population_units(summaries, pool_groups=pool_groups, groups=group_of)
    if len(units) < 2:
        raise ValueError(
            f"need >= 2 independent families (groups) for a population prior, got {list(units)}"
        )
    m = np.stack([u[0] for u in units.values()])
    s_cov = np.stack([u[1] + 1e-8 * np.eye(k) for u in units.values()])
    t1 = time.perf_counter()
    kernel = NUTS(_population_model, target_accept_prob=0.95)
    mcmc = MCMC(
        kernel,
        num_warmup=1000,
        num_samples=1000,
        num_chains=2,
        chain_method="parallel" if jax.local_device_count() >= 2 else "sequential",
        progress_bar=False,
    )
    mcmc.run(
        jax.random.PRNGKey(seed),
        jnp.asarray(m),
        jnp.asarray(s_cov),
        jnp.asarray(base.loc),
        jnp.asarray(2.0 * base.sd),
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
                        np.asarray(grouped[v]).reshape(2, -1, *np.shape(grouped[v])[2:])
                    )
                )
            )
        )
        for v in ("mu", "tau")
    )
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    # predictive for a new family, moment-matched
    mu = np.asarray(post["mu"])
    l_sigma = np.asarray(post["tau"])[:, :, None] * np.asarray(post["L_omega"])
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal(mu.shape)
    z_new = mu + np.einsum("sij,sj->si", l_sigma, eps)
    loc = z_new.mean(0)
    cov = np.cov(z_new, rowvar=False)
    t2 = time.perf_counter()
    # noise scales: centred on the families' medians (final-only families excluded
    # for sigma_obs, which they cannot identify)
    lsr = np.array([s.log_sigma_run for s in summaries])
    lso = np.array([s.log_sigma_obs for s in summaries if not s.single_row_runs])
    settings = dict(DEFAULT_PRIORS)
    settings["sigma_run"] = (float(np.median(lsr)), float(max(0.5, np.std(lsr))))
    if len(lso):
        settings["sigma_obs"] = (float(np.median(lso)), float(max(0.75, np.std(lso))))
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
        "loss_unit": loss_unit,
        "pool_groups": pool_groups,
        "population_units": {g: u[2] for g, u in units.items()},
        "groups": {s.family: group_of.get(s.family, name_group(s.family)) for s in summaries},
        "data_hash": curves.data_hash(),
        "family_means": {s.family: s.mean.tolist() for s in summaries},
        "population": {
            "mu_mean": mu.mean(0).tolist(),
            "tau_mean": np.asarray(post["tau"]).mean(0).tolist(),
            "rhat_max": rhat,
            "divergences": div,
            "num_warmup": 1000,
            "num_samples": 1000,
            "num_chains": 2,
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
