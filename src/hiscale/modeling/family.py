r"""The NumPyro family model.

For rows ``i`` (checkpoints of run ``r``) with ``x = ln(N/N0)``,
``y = ln(D/D0)`` and residual ``e_i = ln L_i - ln L̂(x_i, y_i)``:

.. math::

    z &= \mathrm{loc} + C\xi,\ \xi \sim \mathcal N(0, I)
        \qquad (z \sim \mathrm{MVN}(\mathrm{loc}, CC^T), \text{ non-centred})\\
    \ln s &\sim \mathcal N(m_s, s_s),\quad
    \ln\sigma_{run}, \ln\sigma_{obs} \sim \mathcal N(\cdot)\\
    e_i &= \delta_r + \varepsilon_i,\quad \delta_r \sim \sigma_{run} t_{\nu},
        \quad \varepsilon_i \sim \sigma_{obs} t_{\nu}

``delta_r`` is an additive run offset in log space (seed noise) and
``epsilon_i`` checkpoint noise. The run offsets are *integrated out*. For a
run with ``n`` rows, residuals ``e``, mean ``ē`` and deviations
``d_i = e_i - ē`` (which sum to zero, so they carry ``n - 1`` degrees of
freedom), the Gaussian marginal splits exactly along the mean direction and
its ``(n-1)``-dimensional complement:

.. math::

    \log \mathcal N(e;\ 0,\ \sigma_{obs}^2 I + \sigma_{run}^2 11^T)
    = \log \mathcal N(ē;\ 0,\ \sigma_{run}^2 + \sigma_{obs}^2/n)
      - \tfrac12 \log n
      - \tfrac{n-1}{2} \log(2\pi\sigma_{obs}^2)
      - \sum_i d_i^2 / (2\sigma_{obs}^2)

(``-½ log n`` is the Jacobian of ``ē -> sqrt(n) ē``). :func:`run_loglik`
computes, per run,

* a between-run term: the Student-t (``df_run``) log density of ``ē`` at
  scale ``sqrt(σ_run² + σ_obs²/n)``, minus ``½ log n``; and
* a within-run term: each deviation has variance ``σ_obs² (n-1)/n``, so each
  row contributes the Student-t (``df_obs``) log density of ``d_i`` at scale
  ``σ_obs sqrt((n-1)/n)`` plus ``½ log((n-1)/n)``, and counts ``(n-1)/n`` of a
  row (``n`` rows, ``n - 1`` degrees of freedom). Summing the ``n`` rows at
  full weight would count the within-run evidence ``n/(n-1)`` times, double
  for a two-row run.

As ``df -> ∞`` (and untempered) the two terms add up to the exact marginal
above, constants included, so per-run values are proper log densities (as
PSIS-LOO over runs needs). Single-row runs have only the between term, which
is then the exact Gaussian marginal.

With finite ``df`` the value is *not* the exact Student-t marginal (a sum of
t variables is not t, nor are deviations of t noise): each t factor has the
scale of the quantity it stands for (its variance matches the model's when
``df_run == df_obs > 2``), and the run density integrates to one for runs of
one or two rows; for longer runs the within term is a weighted product of
marginal densities (a composite likelihood), close to but not exactly
normalised. The heavy tails let an outlying run (e.g. a bad learning rate)
move its own mean instead of bending the law.

The within-run term is *tempered* by ``w_r = min(1, n_eff / n_r)`` (the row
weight of :func:`hiscale.modeling.design.make_design`): checkpoints of one run are
autocorrelated, so a run counts as about ``n_eff`` independent points however
densely it was logged. For ``w_r < 1`` the per-run value is a tempered, not a
normalised, density.

With the offsets integrated out the sampler sees only ``K + 3`` parameters,
which removes the funnel between offsets and noise scales that made the
non-centred version hit the maximum tree depth.

The same function serves prior, fit and posterior predictive: with
``log_loss=None`` it *generates* data (run offsets and noise are sampled).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from hiscale.laws import Law, get_law
from hiscale.modeling.local import local_between, local_loo
from hiscale.priors.prior import Prior

__all__ = [
    "law_prior_tails",
    "law_prior_xi",
    "local_joint",
    "make_family_model",
    "prior_arrays",
    "run_loglik",
]


def prior_arrays(prior: Prior, *, log_scale_loc: float) -> dict[str, np.ndarray]:
    """Return the model-ready arrays of a :class:`~hiscale.priors.prior.Prior`.

    Parameters
    ----------
    prior : Prior
        The family's prior.
    log_scale_loc : float
        ``ln median(loss)`` of the family's rows
        (:attr:`hiscale.modeling.design.Design.log_scale_loc`); the scale
        prior is centred there plus ``log_scale_shift``, because loss units
        differ across families.

    Returns
    -------
    dict
        A pytree of float arrays: ``loc``, ``chol`` (Cholesky factor of ``cov``
        plus ``1e-10 I``, so a singular covariance still factors), the scale
        prior, the noise priors and the Student-t degrees of freedom.
    """
    s = prior.settings
    cov = prior.cov + 1e-10 * np.eye(len(prior.names))
    extra, chol = law_prior_tails(prior.settings.get("df_law"), np.linalg.cholesky(cov), prior.name)
    return {
        **extra,
        "loc": np.asarray(prior.loc, float),
        "chol": chol,
        "log_scale_loc": np.asarray(log_scale_loc + s["log_scale_shift"], float),
        "log_scale_sd": np.asarray(s["log_scale_sd"], float),
        "sigma_run": np.asarray(s["sigma_run"], float),
        "sigma_obs": np.asarray(s["sigma_obs"], float),
        "df_run": np.asarray(s["df_run"], float),
        "df_obs": np.asarray(s["df_obs"], float),
    }


def law_prior_tails(df_law, chol: np.ndarray, name: str = "prior") -> tuple[dict, np.ndarray]:
    """Model arrays of a heavy-tailed law prior: ``({"df_law": df} or {}, scale factor)``.

    With ``df_law = None`` the prior is Gaussian, ``z = loc + C xi``, ``xi ~
    N(0, I)``, and ``C`` is returned unchanged. With ``df_law = nu > 2`` each
    ``xi_k`` is a standard Student-t with ``nu`` degrees of freedom and the
    factor is ``C sqrt((nu - 2) / nu)``, so ``z`` keeps the covariance ``C Cᵀ``
    (the population's, or the weak defaults') and only the shape changes:
    more mass near the centre and in the tails. At ``nu = 4`` the 95% interval
    of each whitened coordinate is the Gaussian's to 0.2% (2.776 / sqrt(2) =
    1.963 vs 1.960), the 80% interval is 15% narrower and the 99% one 26% wider.
    """
    if df_law is None:
        return {}, chol
    df = float(df_law)
    if not (np.isfinite(df) and df > 2.0):
        raise ValueError(f"{name}: df_law must be a number > 2 (finite variance), got {df_law}")
    return {"df_law": np.asarray(df, float)}, chol * np.sqrt((df - 2.0) / df)


def law_prior_xi(prior: dict) -> dist.Distribution:
    """Distribution of one whitened law coordinate ``xi_k`` (``z = loc + C xi``).

    Standard normal, or a standard Student-t with ``prior["df_law"]`` degrees
    of freedom when the prior sets ``df_law`` (a heavier-tailed prior with the
    same scale ``C``).
    """
    if "df_law" in prior:
        return dist.StudentT(prior["df_law"], 0.0, 1.0)
    return dist.Normal(0.0, 1.0)


def run_loglik(
    resid,
    run,
    weight,
    mask,
    n_runs,
    sigma_run,
    sigma_obs,
    df_run,
    df_obs,
    local=None,
    between_term=True,
):
    r"""Per-run log-likelihood with the run offset integrated out.

    For a run with ``n`` rows, mean residual ``ē`` and deviations
    ``d_i = e_i - ē`` the value is

    .. math::

        \log t_{\nu_{run}}\big(ē;\ \sqrt{\sigma_{run}^2 + \sigma_{obs}^2/n}\big)
        - \tfrac12 \log n
        + w \tfrac{n-1}{n} \sum_i \Big[\log t_{\nu_{obs}}\big(d_i;\
          \sigma_{obs}\sqrt{(n-1)/n}\big) + \tfrac12\log\tfrac{n-1}{n}\Big]

    (``t_ν(x; s)`` the Student-t density with scale ``s``, ``w`` the row
    tempering weight, the sum empty for ``n = 1``). With ``w = 1`` and
    ``ν -> ∞`` this is exactly ``log N(e; 0, σ_obs² I + σ_run² 11ᵀ)``; for
    finite ``ν`` it is an approximation (see the module docstring).

    Parameters
    ----------
    resid : array (R,)
        ``ln L - ln L̂`` per row.
    run : int array (R,)
        Run index per row.
    weight, mask : array (R,)
        Tempering weight and real-row mask.
    n_runs : int
        The (padded) number of runs.
    sigma_run, sigma_obs : float
        Run-offset and checkpoint noise scales.
    df_run, df_obs : float
        Student-t degrees of freedom of the between- and within-run terms.
    local : dict, optional
        A fit local to a target (:mod:`hiscale.modeling.local`): ``U``,
        ``bridge`` (per run slot) and ``sd``. The between-run term of each
        run is then its Gaussian leave-one-run-out conditional given the
        other runs (for PSIS-LOO; the per-run values do not sum to the joint
        density, which :func:`local_joint` gives). None: the independent
        Student-t term above (and the very same program as before).
    between_term : bool, default True
        False: the within-run terms only (the between term and its ``½ log n``
        left out).

    Returns
    -------
    array (n_runs,)
        Between-run plus tempered within-run term per run (0 for padding runs).
    """
    m = mask.astype(resid.dtype)
    n_r = jax.ops.segment_sum(m, run, n_runs)
    n_safe = jnp.maximum(n_r, 1.0)
    rbar = jax.ops.segment_sum(resid * m, run, n_runs) / n_safe
    if local is None:
        between_scale = jnp.sqrt(sigma_run**2 + sigma_obs**2 / n_safe)
        between = dist.StudentT(df_run, 0.0, between_scale).log_prob(rbar)
    else:
        # a local fit: run means are jointly Gaussian; per run, the leave-one-run-out
        # conditional (the model itself adds the joint density, local_joint)
        v = sigma_run**2 + sigma_obs**2 / n_safe
        between = local_loo(rbar, n_r > 0, v, local["U"], local["bridge"], local["sd"])
    # -½ log n: Jacobian from (e_1..e_n) to (ē, deviations) in orthonormal coordinates
    between = (between - 0.5 * jnp.log(n_safe)) * (n_r > 0)
    if not between_term:
        between = jnp.zeros_like(between)
    dev = resid - rbar[run]
    # each deviation has variance σ_obs²(n-1)/n; the n of them carry n-1 degrees
    # of freedom, so each row counts (n-1)/n (the ½ log term turns the density
    # at scale σ_obs·sqrt((n-1)/n) into one per unit of the (n-1)-dim subspace)
    frac = jnp.maximum(n_safe[run] - 1.0, 0.0) / n_safe[run]
    frac_safe = jnp.maximum(frac, 1e-6)
    dev_scale = sigma_obs * jnp.sqrt(frac_safe)
    within_rows = dist.StudentT(df_obs, 0.0, dev_scale).log_prob(dev) + 0.5 * jnp.log(frac_safe)
    within_rows = jnp.where((n_safe[run] > 1) & mask, frac * within_rows * weight, 0.0)
    within = jax.ops.segment_sum(within_rows, run, n_runs)
    return between + within


def local_joint(resid, run, mask, n_runs, sigma_run, sigma_obs, local):
    """Joint between-run log density of a local fit, minus ``½ log n`` per run.

    The model's between-run part when ``local`` is given: the within-run
    terms of :func:`run_loglik` plus this value make the log-likelihood.

    Parameters
    ----------
    resid, run, mask, n_runs, sigma_run, sigma_obs
        As :func:`run_loglik`.
    local : dict
        ``U``, ``bridge``, ``sd`` (:func:`hiscale.modeling.local.brownian_basis`).

    Returns
    -------
    float
    """
    m = mask.astype(resid.dtype)
    n_r = jax.ops.segment_sum(m, run, n_runs)
    n_safe = jnp.maximum(n_r, 1.0)
    rbar = jax.ops.segment_sum(resid * m, run, n_runs) / n_safe
    real = n_r > 0
    v = sigma_run**2 + sigma_obs**2 / n_safe
    joint = local_between(rbar, real, v, local["U"], local["bridge"], local["sd"])
    return joint - 0.5 * jnp.sum(jnp.where(real, jnp.log(n_safe), 0.0))


@cache
def make_family_model(law: str | Law) -> Callable:
    """Return the family model for one law form (cached, so compiled kernels are reused).

    Parameters
    ----------
    law : str or Law
        Law form (:func:`hiscale.laws.get_law`).

    Returns
    -------
    callable
        ``family_model(x, y, run, weight, mask, run_mask, prior, log_loss=None,
        run_local=None)``, a NumPyro model (see the module docstring for
        the math); with ``log_loss=None`` it samples data instead of
        conditioning on them; ``run_local`` (:mod:`hiscale.modeling.local`)
        makes the fit local to a target (with an ``sd_prior`` entry
        ``(loc, scale)`` its scale is a parameter: ``ln local_sd ~ N(loc,
        scale)``).
    """
    law = get_law(law)
    names = law.params

    def family_model(x, y, run, weight, mask, run_mask, prior, log_loss=None, run_local=None):
        """Family model; see the module docstring for the math."""
        k = len(names)
        xi = numpyro.sample("xi", law_prior_xi(prior).expand([k]).to_event(1))
        z = prior["loc"] + prior["chol"] @ xi
        theta = {n: numpyro.deterministic(n, z[i]) for i, n in enumerate(names)}
        # log_scale ~ N(loc, sd) is sampled as the predicted log loss at the
        # centre of the data, log_loss_ref = log_scale + g(xi), g = ln L̂ / s
        # at (mean x, mean y) of the real rows: the same prior (a shear with
        # unit Jacobian), but the data pin log_loss_ref directly, whereas
        # log_scale sat on a curved ridge with the shares (long NUTS trees).
        m = mask.astype(x.dtype)
        n_real = jnp.maximum(jnp.sum(m), 1.0)
        centre = (jnp.sum(x * m) / n_real, jnp.sum(y * m) / n_real)
        g = law.log_loss(*centre, {**theta, "log_scale": 0.0})
        log_loss_ref = numpyro.sample(
            "log_loss_ref", dist.Normal(prior["log_scale_loc"] + g, prior["log_scale_sd"])
        )
        theta["log_scale"] = numpyro.deterministic("log_scale", log_loss_ref - g)
        # noise scales are sampled on the log scale (a LogNormal prior): the
        # unconstrained space is then the sampling space, and the clip keeps
        # exp() finite wherever an optimiser or a warm-up step wanders.
        log_sigma_run = numpyro.sample(
            "log_sigma_run", dist.Normal(prior["sigma_run"][0], prior["sigma_run"][1])
        )
        log_sigma_obs = numpyro.sample(
            "log_sigma_obs", dist.Normal(prior["sigma_obs"][0], prior["sigma_obs"][1])
        )
        sigma_run = numpyro.deterministic("sigma_run", jnp.exp(jnp.clip(log_sigma_run, -20.0, 3.0)))
        sigma_obs = numpyro.deterministic("sigma_obs", jnp.exp(jnp.clip(log_sigma_obs, -20.0, 3.0)))
        mu = numpyro.deterministic("mu", law.log_loss(x, y, theta))
        n_runs = run_mask.shape[0]
        if run_local is not None and "sd_prior" in run_local:
            # the family's own law-error scale, learned from its runs
            log_local_sd = numpyro.sample(
                "log_local_sd", dist.Normal(run_local["sd_prior"][0], run_local["sd_prior"][1])
            )
            local_sd = numpyro.deterministic(
                "local_sd", jnp.exp(jnp.clip(log_local_sd, -20.0, 1.0))
            )
            run_local = {"U": run_local["U"], "bridge": run_local["bridge"], "sd": local_sd}
        if log_loss is None:
            # generative branch: draw run offsets and checkpoint noise
            if run_local is None:
                with numpyro.plate("run", n_runs):
                    delta = numpyro.sample("delta", dist.StudentT(prior["df_run"], 0.0, sigma_run))
            else:
                U = run_local["U"] * run_mask[:, None]
                cov = (
                    jnp.diag(sigma_run**2 + run_local["sd"] ** 2 * run_local["bridge"])
                    + run_local["sd"] ** 2 * U @ U.T
                )
                delta = numpyro.sample("delta", dist.MultivariateNormal(jnp.zeros(n_runs), cov))
            with numpyro.plate("row", x.shape[0]):
                numpyro.sample(
                    "log_loss", dist.StudentT(prior["df_obs"], mu + delta[run], sigma_obs)
                )
            return
        if run_local is None:
            ll = run_loglik(
                log_loss - mu, run, weight, mask, n_runs, sigma_run, sigma_obs,
                prior["df_run"], prior["df_obs"],
            )  # fmt: skip
            numpyro.factor("run_loglik", jnp.sum(jnp.where(run_mask, ll, 0.0)))
        else:
            # a local fit: the within-run terms and the joint between-run density
            within = run_loglik(
                log_loss - mu, run, weight, mask, n_runs, sigma_run, sigma_obs,
                prior["df_run"], prior["df_obs"], between_term=False,
            )  # fmt: skip
            joint = local_joint(log_loss - mu, run, mask, n_runs, sigma_run, sigma_obs, run_local)
            within = jnp.sum(jnp.where(run_mask, within, 0.0))
            numpyro.factor("run_loglik", within + joint)

    family_model.__name__ = f"family_model_{law.name.replace('-', '_')}"
    return family_model
