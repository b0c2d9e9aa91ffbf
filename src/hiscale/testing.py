"""Test helpers shipped with hiscale: a small sampler and fits made without NUTS.

* :data:`TEST_SAMPLER`: the NUTS settings tests use when they do sample
  (small, so one compiled kernel per shape serves the whole test run);
* :func:`fake_fit`: a complete :class:`~hiscale.infer.result.Fit` (every
  DataTree group, real diagnostics of its draws) built in well under a second
  from a simulated family and Gaussian "posterior" draws around the true
  parameters, so plots, command-line printing and ArviZ code can be tested
  without sampling.

Nothing in hiscale imports this module.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from hiscale.data.curves import load_curves
from hiscale.infer.diagnostics import diagnose
from hiscale.infer.result import Fit
from hiscale.infer.settings import FitOptions, SamplerSettings
from hiscale.laws import D0, N0, get_law
from hiscale.modeling.simulate import simulate_families
from hiscale.priors.prior import flat_prior

__all__ = ["TEST_SAMPLER", "fake_fit"]

#: Small NUTS settings for tests: 2 chains x (200 warm-up + 300 draws).
TEST_SAMPLER = SamplerSettings(num_warmup=200, num_samples=300, num_chains=2)


def fake_fit(
    family: str = "fake",
    n_sizes: int = 4,
    seed: int = 0,
    *,
    law: str = "chinchilla",
    n_chains: int = 2,
    n_draws: int = 1000,
    spread: float = 0.02,
    sigma_run: float | None = None,
    sigma_obs: float | None = None,
    flagged: bool | None = None,
    prior_settings: dict[str, Any] | None = None,
) -> Fit:
    """Build a :class:`~hiscale.infer.result.Fit` without NUTS, for tests.

    One family is simulated from the flat prior
    (:func:`hiscale.modeling.simulate.simulate_families`) and its rows selected
    with the default :class:`~hiscale.infer.settings.FitOptions`. The
    "posterior" draws are independent: every law parameter and ``log_scale``
    is its true value plus ``spread x N(0, 1)``; the noise scales are the true
    ones times ``exp(spread x N(0, 1))`` unless given (then constant). The
    sampler statistics are those of an ideal sampler (no divergences, shallow
    trees, ``energy`` independent standard normal draws) and the diagnostics
    are computed from the draws by :func:`hiscale.infer.diagnostics.diagnose`.

    Parameters
    ----------
    family : str
        Name of the family.
    n_sizes : int
        Model sizes simulated (one run each).
    seed : int
        Seed of the simulation, the draws and the fit's replicates.
    law : str
        Law form.
    n_chains, n_draws : int
        Chains and draws per chain.
    spread : float
        Standard deviation of the draws around the truth (0: a point posterior).
    sigma_run, sigma_obs : float, optional
        Fixed noise scales instead of the simulated ones.
    flagged : bool, optional
        Force the sampler verdict (``True`` adds the reason
        ``"forced by fake_fit"``); default: the verdict of the draws.
    prior_settings : dict, optional
        Settings of the flat prior the fit records (e.g. the Student-t
        ``df_run``/``df_obs`` its likelihood and replicates use).

    Returns
    -------
    Fit
        With ``provenance["fake_fit"]`` describing how it was made and
        ``provenance["truth"]`` the simulated parameters.
    """
    law_obj = get_law(law)
    frame, truth = simulate_families(
        "flat",
        n_families=1,
        seed=seed,
        law=law_obj.name,
        n_sizes=(n_sizes, n_sizes),
        prefix=family,
    )
    frame = frame.assign(family=family, group=family)
    truth_row = truth.iloc[0]
    curves = load_curves(frame)
    options = FitOptions()
    selected = options.select(curves)
    data = selected.frame.sort_values(["params", "run", "tokens"]).reset_index(drop=True)

    rng = np.random.default_rng(seed)
    shape = (n_chains, n_draws)
    samples = {
        n: float(truth_row[n]) + spread * rng.standard_normal(shape)
        for n in (*law_obj.params, "log_scale")
    }
    for name, fixed in (("sigma_run", sigma_run), ("sigma_obs", sigma_obs)):
        if fixed is None:
            samples[name] = float(truth_row[name]) * np.exp(spread * rng.standard_normal(shape))
        else:
            samples[name] = np.full(shape, float(fixed))
    x = jnp.log(data["params"].to_numpy(float) / N0)
    y = jnp.log(data["tokens"].to_numpy(float) / D0)
    theta = {k: jnp.asarray(v)[..., None] for k, v in samples.items()}
    samples["mu"] = np.asarray(law_obj.log_loss(x, y, theta))

    energy = rng.standard_normal(shape)
    n_steps = np.full(shape, 7, dtype=np.int64)
    sample_stats = {
        "diverging": np.zeros(shape, bool),
        "energy": energy,
        "lp": -0.5 * energy**2,
        "n_steps": n_steps,
        "tree_depth": np.full(shape, 3, dtype=np.int64),
        "reached_max_tree_depth": np.zeros(shape, bool),
        "step_size": np.full(shape, 0.1),
        "acceptance_rate": rng.uniform(0.8, 1.0, shape),
    }
    # the verdict of the draws that vary (fixed noise scales are not sampled); a
    # point posterior (spread 0) has no r-hat and is flagged, as diagnose() does
    checked = {
        "xi": np.stack([samples[n] for n in law_obj.params], axis=-1),
        "log_scale": samples["log_scale"],
    }
    for name, fixed in (("sigma_run", sigma_run), ("sigma_obs", sigma_obs)):
        if fixed is None:
            checked[f"log_{name}"] = np.log(samples[name])
    sampler = SamplerSettings(num_warmup=0, num_samples=n_draws, num_chains=n_chains)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        diagnostics = diagnose(
            checked,
            diverging=sample_stats["diverging"],
            num_steps=n_steps,
            max_tree_depth=sampler.max_tree_depth,
            energy=energy,
        )
    if flagged is not None:
        diagnostics["flagged"] = bool(flagged)
        diagnostics["reasons"] = "forced by fake_fit" if flagged else ""
    return Fit.from_samples(
        family=family,
        law=law_obj.name,
        prior=flat_prior(law_obj.name, **(prior_settings or {})),
        samples=samples,
        sample_stats=sample_stats,
        diagnostics=diagnostics,
        sampler=sampler,
        options=options,
        seed=seed,
        data=data,
        log=selected.log,
        timings={"map_seconds": 0.0, "nuts_seconds": 0.0, "total_seconds": 0.0},
        provenance={
            "data_hash": curves.data_hash(),
            "notes": [],
            "fake_fit": f"hiscale.testing.fake_fit(seed={seed}): independent draws around "
            f"the truth with spread {spread:g}, no NUTS",
            "truth": {
                k: float(truth_row[k])
                for k in (*law_obj.params, "log_scale", "sigma_run", "sigma_obs")
            },
        },
    )
