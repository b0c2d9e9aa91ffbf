"""Simulated families of training curves with a known truth.

Each family is drawn from a prior exactly as the family model generates data
(:mod:`hiscale.modeling.family`), so a fit can be compared with the noiseless curve it
should recover:

* law parameters ``z ~ MVN(loc, cov)`` of the prior, redrawn (with the loss
  scale) when an exponent falls outside ``exponent_range`` or the first
  checkpoint of the smallest model would exceed ``max_loss`` nats, so every
  family looks like an LM family;
* loss scale ``log_scale ~ Uniform(ln 2.0, ln 3.5)`` (the loss, in nats, at
  ``N0 = 1e9`` parameters and ``D0 = 1e11`` tokens when the law is separable);
* noise scales ``ln sigma_run ~ N(*settings["sigma_run"])`` and
  ``ln sigma_obs ~ N(*settings["sigma_obs"])`` (the prior's LogNormal priors);
* sizes log-spaced between ``size_range`` (5 to 7 of them by default), one
  run per size (or ``runs_per_size``), each run trained to
  ``tokens_per_param x N`` tokens (or a fixed ``horizon``), with log-spaced
  checkpoints;
* ``ln L = ln L̂(N, D) + delta_run + eps``, ``delta_run ~ sigma_run t(df_run)``
  once per run and ``eps ~ sigma_obs t(df_obs)`` per checkpoint.

``sparse_families`` keeps only the ``sparse_sizes`` smallest sizes of the last
families (a family observed at low budget, the case where borrowing from the
population matters); their *target* (the largest size of their grid, trained
to its horizon) is still recorded in the truth table.

Every family draws from its own child of ``numpy.random.SeedSequence(seed)``,
so results are deterministic given ``seed`` and family ``i`` does not change
when ``n_families`` grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hiscale._config import require_x64
from hiscale.laws import D0, N0, get_law, share_to_paper
from hiscale.priors.prior import Prior, resolve_prior

__all__ = ["SIM_METRIC", "simulate_families", "true_loss"]

#: ``metric`` column of simulated rows.
SIM_METRIC = "sim_loss"


def _log_loss(law: str, params, tokens, theta: dict[str, float]) -> np.ndarray:
    require_x64("hiscale.simulate_families")
    x = np.log(np.asarray(params, dtype=float) / N0)
    y = np.log(np.asarray(tokens, dtype=float) / D0)
    return np.asarray(get_law(law).log_loss(x, y, theta), dtype=float)


def true_loss(truth: pd.Series | dict, params, tokens) -> np.ndarray:
    """Compute the noiseless loss of a simulated family at ``(params, tokens)``.

    Parameters
    ----------
    truth : pandas.Series or dict
        One row of the truth table returned by :func:`simulate_families`.
    params, tokens : float or array_like
        Model size(s) N and token count(s) D (broadcast).

    Returns
    -------
    ndarray
        ``L̂(N, D)`` of the family's law (no run offset, no noise).
    """
    law = str(truth["law"])
    theta = {n: float(truth[n]) for n in (*get_law(law).params, "log_scale")}
    return np.exp(_log_loss(law, params, tokens, theta))


def _draw_theta(
    rng: np.random.Generator,
    prior: Prior,
    *,
    log_scale_range: tuple[float, float],
    exponent_range: tuple[float, float],
    max_loss: float,
    corner: tuple[float, float],
    max_tries: int,
) -> dict[str, float]:
    """Draw law parameters and loss scale, redrawn until the family looks like an LM family.

    Plausible means: both exponents in ``exponent_range`` and a noiseless loss
    of at most ``max_loss`` nats at ``corner`` (smallest size, first checkpoint).
    """
    idx = [prior.names.index(n) for n in ("log_alpha", "log_beta")]
    lo, hi = np.log(exponent_range[0]), np.log(exponent_range[1])
    for _ in range(max_tries):
        z = rng.multivariate_normal(prior.loc, prior.cov)
        theta = {n: float(v) for n, v in zip(prior.names, z, strict=True)}
        theta["log_scale"] = float(rng.uniform(*log_scale_range))
        if not np.all((z[idx] >= lo) & (z[idx] <= hi)):
            continue
        if float(np.exp(_log_loss(prior.law, *corner, theta))) <= max_loss:
            return theta
    raise ValueError(
        f"prior {prior.name!r}: no draw with exponents in {tuple(exponent_range)} and "
        f"loss <= {max_loss:g} at N={corner[0]:.3g}, D={corner[1]:.3g} after {max_tries} tries"
    )


def _size_label(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def simulate_families(
    prior: str | Path | Prior = "corpus-v1",
    *,
    n_families: int = 4,
    seed: int = 0,
    law: str | None = None,
    sizes: Sequence[float] | None = None,
    n_sizes: tuple[int, int] = (5, 7),
    size_range: tuple[float, float] = (5e7, 7e9),
    runs_per_size: int = 1,
    tokens_per_param: float = 20.0,
    horizon: float | None = None,
    n_checkpoints: int = 20,
    first_checkpoint: float = 0.02,
    log_scale_range: tuple[float, float] = (float(np.log(2.0)), float(np.log(3.5))),
    exponent_range: tuple[float, float] = (0.08, 1.2),
    max_loss: float = 10.0,
    sparse_families: int = 0,
    sparse_sizes: int = 2,
    prefix: str = "sim",
    max_tries: int = 1000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw families of training curves from a prior.

    Parameters
    ----------
    prior : "corpus-v1", "flat", path or Prior
        Where family parameters and noise scales come from.
    n_families : int
        Number of families.
    seed : int
        Seed; the same seed gives identical tables.
    law : str, optional
        Law form (default: the prior's).
    sizes : sequence of float, optional
        Model sizes N of every family; default: per family, 5 to 7
        (``n_sizes``) log-spaced sizes spanning ``size_range``.
    n_sizes : (int, int)
        Inclusive range of the number of sizes when ``sizes`` is not given.
    size_range : (float, float)
        Smallest and largest model size.
    runs_per_size : int
        Runs (seeds) per size, each with its own run offset.
    tokens_per_param : float
        Token horizon ``D_max = tokens_per_param x N`` of every run (ignored
        when ``horizon`` is given).
    horizon : float, optional
        Fixed token horizon for every run.
    n_checkpoints : int
        Checkpoints per run, log-spaced from ``first_checkpoint x D_max`` to
        ``D_max``.
    first_checkpoint : float
        First checkpoint as a fraction of the horizon.
    log_scale_range : (float, float)
        Uniform range of the loss scale ``ln s``.
    exponent_range : (float, float)
        Plausible ``alpha`` and ``beta``; prior draws outside are redrawn.
    max_loss : float
        Largest plausible noiseless loss (nats) at the smallest size's first
        checkpoint; draws above it are redrawn.
    sparse_families : int
        How many families (the last ones) keep only their ``sparse_sizes``
        smallest sizes.
    sparse_sizes : int
        Sizes kept in a sparse family (1 or 2 makes the borrowing case).
    prefix : str
        Family names are ``{prefix}{i}``. Simulated families are independent
        draws, so each is its own ``group`` (they share one ``source``, which
        would otherwise make them one group, :func:`hiscale.data.curves.family_groups`).
    max_tries : int
        Redraws allowed per family before giving up.

    Returns
    -------
    curves : pandas.DataFrame
        Curves table (``family, run, params, tokens, loss, metric, loss_unit,
        primary, is_final, run_tokens, seed, source, group``), sorted like the
        corpus; losses are per-token nats, like the corpus' validation losses.
    truth : pandas.DataFrame
        One row per family: law, its parameters (share form and the paper's
        ``a, b, e, alpha, beta``), ``sigma_run, sigma_obs``, the sizes
        simulated and kept, and the target (largest size of the grid at its
        horizon) with its noiseless loss ``target_loss``.

    Raises
    ------
    ValueError
        If a count or fraction is out of range, or no prior draw is plausible
        within ``max_tries``.
    RuntimeError
        If JAX runs without 64-bit floats (call :func:`hiscale.configure` first).
    """
    if n_families < 1:
        raise ValueError(f"n_families must be >= 1, got {n_families}")
    if not 0 <= sparse_families <= n_families:
        raise ValueError(f"sparse_families must be in 0..{n_families}, got {sparse_families}")
    if sparse_sizes < 1:
        raise ValueError(f"sparse_sizes must be >= 1, got {sparse_sizes}")
    if n_checkpoints < 1 or not 0 < first_checkpoint <= 1:
        raise ValueError("need n_checkpoints >= 1 and 0 < first_checkpoint <= 1")
    if runs_per_size < 1:
        raise ValueError(f"runs_per_size must be >= 1, got {runs_per_size}")
    law_name = get_law(law).name if law is not None else None
    if isinstance(prior, Prior):
        pr = prior.for_law(law_name) if law_name else prior
    else:
        pr = resolve_prior(prior, law=law_name or "chinchilla")
    law_name = pr.law
    s = pr.settings
    children = np.random.SeedSequence(seed).spawn(n_families)
    rows: list[pd.DataFrame] = []
    truth: list[dict] = []
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        family = f"{prefix}{i}"
        if sizes is None:
            k = int(rng.integers(n_sizes[0], n_sizes[1] + 1))
            grid = np.geomspace(size_range[0], size_range[1], k)
        else:
            grid = np.sort(np.asarray(sizes, dtype=float))
        grid = np.round(grid, -3)  # whole thousands of parameters, like real counts
        d_first = first_checkpoint * (
            horizon if horizon is not None else tokens_per_param * grid[0]
        )
        theta = _draw_theta(
            rng,
            pr,
            log_scale_range=log_scale_range,
            exponent_range=exponent_range,
            max_loss=max_loss,
            corner=(float(grid[0]), float(d_first)),
            max_tries=max_tries,
        )
        sigma_run = float(np.exp(rng.normal(*s["sigma_run"])))
        sigma_obs = float(np.exp(rng.normal(*s["sigma_obs"])))
        sparse = i >= n_families - sparse_families
        kept = grid[:sparse_sizes] if sparse else grid
        for n in kept:
            d_max = horizon if horizon is not None else tokens_per_param * n
            tok = np.round(np.geomspace(first_checkpoint * d_max, d_max, n_checkpoints))
            mu = _log_loss(law_name, n, tok, theta)
            for r in range(runs_per_size):
                delta = sigma_run * rng.standard_t(s["df_run"])
                eps = sigma_obs * rng.standard_t(s["df_obs"], size=len(tok))
                run = f"{family}-{_size_label(n)}" + (f"-s{r}" if runs_per_size > 1 else "")
                rows.append(
                    pd.DataFrame(
                        {
                            "family": family,
                            "run": run,
                            "params": n,
                            "tokens": tok,
                            "loss": np.exp(mu + delta + eps),
                            "metric": SIM_METRIC,
                            "loss_unit": "nats/token",
                            "primary": True,
                            "is_final": np.arange(len(tok)) == len(tok) - 1,
                            "run_tokens": float(tok[-1]),
                            "seed": r,
                            "source": f"hiscale.simulate seed={seed}",
                            "group": family,
                        }
                    )
                )
        target_n = float(grid[-1])
        target_d = float(horizon if horizon is not None else tokens_per_param * target_n)
        paper = share_to_paper(theta) if "gamma" not in theta else {}
        rec = {
            "family": family,
            "law": law_name,
            "prior": pr.name,
            **theta,
            "alpha": float(np.exp(theta["log_alpha"])),
            "beta": float(np.exp(theta["log_beta"])),
            **{f"paper_{k}": float(v) for k, v in paper.items() if k not in ("alpha", "beta")},
            "sigma_run": sigma_run,
            "sigma_obs": sigma_obs,
            "sizes_simulated": len(grid),
            "sizes_in_data": len(kept),
            "largest_in_data": float(kept[-1]),
            "target_params": target_n,
            "target_tokens": target_d,
        }
        rec["target_loss"] = float(true_loss(rec, target_n, target_d))
        truth.append(rec)
    curves = pd.concat(rows, ignore_index=True)
    curves = curves.sort_values(["family", "params", "run", "tokens"], ignore_index=True)
    return curves, pd.DataFrame(truth)
