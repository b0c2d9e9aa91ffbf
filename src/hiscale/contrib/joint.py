r"""Joint hierarchical fit of several named families at once (research use).

One NumPyro model over ``F`` families, each with the family likelihood of
:mod:`hiscale.modeling.family` (run offsets integrated out, tempered within-run term),
and the population in the same model:

.. math::

    z_f = \mu + \mathrm{diag}(\tau) L_\Omega \xi_f,\quad \xi_f \sim \mathcal N(0, I),\quad
    \mu \sim \mathcal N(\mathrm{loc}_0, 2 s_0),\ \tau \sim \mathcal N^+(0, 1),\
    L_\Omega \sim \mathrm{LKJChol}(2)

(the population step's hyperpriors,
:func:`hiscale.population.population_hyperpriors`) with per-family
``log_scale``, ``log_sigma_run`` and ``log_sigma_obs`` under the weak
defaults. Sampler settings: :data:`hiscale.infer.settings.JOINT_SAMPLER`.
The two-step route (:mod:`hiscale.population`) is what ships priors; this
one-step fit is for research: it samples when the families' likelihoods
are tempered (untempered, the family posteriors are so much narrower than
the population that every draw hits the maximum tree depth), and its
diagnostics say when it does not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import init_to_median

from hiscale._config import require_x64
from hiscale.data.curves import Curves, load_curves
from hiscale.infer.diagnostics import diagnose
from hiscale.infer.fit import FitOptions, _end_schedules
from hiscale.infer.settings import JOINT_SAMPLER, SamplerSettings
from hiscale.laws import get_law
from hiscale.modeling.design import bucket, make_design
from hiscale.modeling.family import prior_arrays, run_loglik
from hiscale.population import numpyro_mcmc, population_hyperpriors
from hiscale.priors.prior import flat_prior

__all__ = ["JointFit", "fit_joint", "make_joint_model"]


def make_joint_model(law: str):
    """Return the joint NumPyro model for one law form.

    Parameters
    ----------
    law : str
        Law name (:func:`hiscale.laws.get_law`).

    Returns
    -------
    callable
        ``joint_model(x, y, run, weight, mask, run_mask, prior, log_loss)``;
        every data array carries a leading family axis (families padded to
        one row and run count, padding masked out).
    """
    law_obj = get_law(law)
    names = law_obj.params

    def joint_model(x, y, run, weight, mask, run_mask, prior, log_loss=None):
        n_fam, k = x.shape[0], len(names)
        mu, tau, l_omega = population_hyperpriors(prior["loc"], prior["sd"])
        with numpyro.plate("family", n_fam):
            xi = numpyro.sample("xi", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            log_scale = numpyro.sample(
                "log_scale", dist.Normal(prior["log_scale_loc"], prior["log_scale_sd"])
            )
            lsr = numpyro.sample(
                "log_sigma_run", dist.Normal(prior["sigma_run"][0], prior["sigma_run"][1])
            )
            lso = numpyro.sample(
                "log_sigma_obs", dist.Normal(prior["sigma_obs"][0], prior["sigma_obs"][1])
            )
        z = mu + xi @ (tau[:, None] * l_omega).T  # (F, K)
        theta = {n: numpyro.deterministic(n, z[:, i]) for i, n in enumerate(names)}
        theta_rows = {n: v[:, None] for n, v in theta.items()}
        theta_rows["log_scale"] = log_scale[:, None]
        mean = law_obj.log_loss(x, y, theta_rows)
        sr = jnp.exp(jnp.clip(lsr, -20.0, 3.0))
        so = jnp.exp(jnp.clip(lso, -20.0, 3.0))
        n_runs = run_mask.shape[1]
        ll = jax.vmap(
            lambda r, ru, w, m, a, b: run_loglik(
                r, ru, w, m, n_runs, a, b, prior["df_run"], prior["df_obs"]
            )
        )(log_loss - mean, run, weight, mask, sr, so)
        numpyro.factor("run_loglik", jnp.sum(jnp.where(run_mask, ll, 0.0)))

    return joint_model


@dataclass
class JointFit:
    """Result of :func:`fit_joint`: an ArviZ DataTree plus diagnostics."""

    families: list[str]
    law: str
    datatree: Any
    diagnostics: dict[str, Any]
    seconds: float

    @property
    def flagged(self) -> bool:
        """True when a convergence threshold failed."""
        return bool(self.diagnostics["flagged"])


def fit_joint(
    curves: Curves | str,
    *,
    families: Sequence[str],
    law: str = "chinchilla",
    seed: int = 0,
    options: FitOptions | None = None,
    sampler: SamplerSettings = JOINT_SAMPLER,
    num_warmup: int | None = None,
    num_samples: int | None = None,
    num_chains: int | None = None,
) -> JointFit:
    """Sample the joint hierarchical model of ``families`` with NUTS.

    Parameters
    ----------
    curves : Curves or path
        The table, or a path to load it from.
    families : sequence of str
        At least two families.
    law : str
        Law form shared by all families.
    seed : int
        Sampler seed.
    options : FitOptions
        Row selection per family (as in :func:`hiscale.fit`).
    sampler : SamplerSettings
        NUTS settings (NumPyro's ``MCMC``, started at ``init_to_median``);
        recorded in the result's ``attrs["sampler"]``.
    num_warmup, num_samples, num_chains : int, optional
        Replace these fields of ``sampler``.

    Returns
    -------
    JointFit
        The DataTree (law parameters with a ``family`` dimension) and the
        convergence diagnostics; check :attr:`JointFit.flagged`, because
        this model often samples badly (see the module docstring).

    Raises
    ------
    ValueError
        If fewer than two families are given.
    RuntimeError
        If JAX's 64-bit mode is off (call :func:`hiscale.configure` first).
    """
    require_x64("hiscale.contrib.joint.fit_joint")
    overrides = dict(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains)
    sampler = replace(sampler, **{k: v for k, v in overrides.items() if v is not None})
    options = options or FitOptions()
    c = curves if isinstance(curves, Curves) else load_curves(curves)
    fams = list(families)
    if len(fams) < 2:
        raise ValueError(f"a joint fit needs >= 2 families, got {fams}")
    designs = [
        make_design(
            options.select(c.family(f), _end_schedules(c.family(f), options, None)),
            n_eff_per_run=options.n_eff_per_run,
        )
        for f in fams
    ]
    rows = max(bucket(d.n_rows, 16) for d in designs)
    runs = max(d.n_runs_padded for d in designs)

    def pad(a, fill):
        out = np.full(rows, fill, dtype=a.dtype)
        out[: len(a)] = a
        return out

    arr = {
        k: np.stack(
            [pad(getattr(d, k), getattr(d, k)[0] if k != "mask" else False) for d in designs]
        )
        for k in ("x", "y", "run", "mask", "log_loss")
    }
    arr["weight"] = np.stack([pad(d.weight, 0.0) for d in designs])
    run_mask = np.stack([np.arange(runs) < d.n_runs for d in designs])
    base = flat_prior(law)
    pa = prior_arrays(base, log_scale_loc=0.0)
    prior = {
        "loc": jnp.asarray(base.loc),
        "sd": jnp.asarray(base.sd),
        "log_scale_loc": jnp.asarray([d.log_scale_loc for d in designs]),
        "log_scale_sd": jnp.asarray(pa["log_scale_sd"]),
        "sigma_run": jnp.asarray(pa["sigma_run"]),
        "sigma_obs": jnp.asarray(pa["sigma_obs"]),
        "df_run": jnp.asarray(pa["df_run"]),
        "df_obs": jnp.asarray(pa["df_obs"]),
    }
    model = make_joint_model(law)
    t0 = time.perf_counter()
    mcmc = numpyro_mcmc(model, sampler, init_strategy=init_to_median)
    mcmc.run(
        jax.random.PRNGKey(seed),
        x=jnp.asarray(arr["x"]),
        y=jnp.asarray(arr["y"]),
        run=jnp.asarray(arr["run"]),
        weight=jnp.asarray(arr["weight"]),
        mask=jnp.asarray(arr["mask"]),
        run_mask=jnp.asarray(run_mask),
        prior=prior,
        log_loss=jnp.asarray(arr["log_loss"]),
        extra_fields=("diverging", "num_steps", "energy"),
    )
    seconds = time.perf_counter() - t0
    import arviz as az

    grouped = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    diag = diagnose(
        {
            "xi": grouped["xi"],
            "log_scale": grouped["log_scale"],
            "log_sigma_run": grouped["log_sigma_run"],
            "log_sigma_obs": grouped["log_sigma_obs"],
        },
        diverging=extra["diverging"],
        num_steps=extra["num_steps"],
        max_tree_depth=sampler.max_tree_depth,
        energy=extra["energy"],
    )
    dt = az.from_numpyro(
        mcmc, coords={"family": fams}, dims={n: ["family"] for n in get_law(law).params}
    )
    dt.attrs.update(
        {
            "families": ",".join(fams),
            "law": law,
            "seconds": seconds,
            "sampler": json.dumps(sampler.numpyro_dict("init_to_median")),
        }
    )
    return JointFit(families=fams, law=law, datatree=dt, diagnostics=diag, seconds=seconds)
