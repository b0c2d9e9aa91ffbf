"""The sampler's verdict: r̂ (max), bulk/tail ESS (min), divergences, max-tree-depth
hits (read from NumPyro's ``num_steps``: ArviZ's ``diagnose`` misses it) and chain
disagreement; :data:`hiscale.infer.settings.THRESHOLDS` decide the ``flagged`` verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

from hiscale.infer.settings import THRESHOLDS

__all__ = ["GLOBAL_SITES", "diagnose"]

GLOBAL_SITES: tuple[str, ...] = ("xi", "log_scale", "log_sigma_run", "log_sigma_obs")


def diagnose(
    samples: dict[str, np.ndarray],
    *,
    diverging: np.ndarray,
    num_steps: np.ndarray,
    max_tree_depth: int,
) -> dict[str, Any]:
    """Convergence summary of grouped-by-chain samples.

    Parameters
    ----------
    samples : dict
        Site -> array ``(chain, draw, ...)`` (sites ``xi``,
        ``log_scale``, ``log_sigma_run``, ``log_sigma_obs``).
    diverging, num_steps : ndarray ``(chain, draw)``
    max_tree_depth : int

    Returns
    -------
    dict
        ``rhat_max, ess_min (bulk), ess_tail_min, divergences,
        tree_depth_hits, chain_disagreement, flagged, reasons``.
    """
    parts = []
    for name in GLOBAL_SITES:
        v = np.asarray(samples[name], dtype=float)
        parts.append(v.reshape(v.shape[0], v.shape[1], -1))
    allv = np.concatenate(parts, axis=-1)  # (chain, draw, P)
    n_chains = allv.shape[0]
    rhat = np.asarray(split_gelman_rubin(allv)) if n_chains > 1 else np.ones(allv.shape[-1])
    ess = np.asarray(effective_sample_size(allv))
    # tail ESS: ESS of the 5% and 95% quantile indicators (Vehtari et al. 2021)
    q05 = np.quantile(allv, 0.05, axis=(0, 1))
    q95 = np.quantile(allv, 0.95, axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ess_tail = np.minimum(
            np.asarray(effective_sample_size((allv <= q05).astype(float))),
            np.asarray(effective_sample_size((allv <= q95).astype(float))),
        )
    glob = allv
    if n_chains > 1:
        means = glob.mean(axis=1)
        sd = glob.reshape(-1, glob.shape[-1]).std(axis=0) + 1e-12
        disagreement = float(np.max((means.max(0) - means.min(0)) / sd))
    else:
        disagreement = 0.0
    div = int(np.sum(diverging))
    hits = int(np.sum(np.asarray(num_steps) >= 2**max_tree_depth - 1))
    out = {
        "rhat_max": float(np.nanmax(rhat)),
        "ess_min": float(np.nanmin(ess)),
        "ess_tail_min": float(np.nanmin(ess_tail)),
        "divergences": div,
        "tree_depth_hits": hits,
        "chain_disagreement": disagreement,
    }
    n_draws = allv.shape[0] * allv.shape[1]
    reasons = []
    if out["rhat_max"] > THRESHOLDS["rhat_max"]:
        reasons.append(f"r_hat {out['rhat_max']:.3f} > {THRESHOLDS['rhat_max']}")
    if out["ess_min"] < THRESHOLDS["ess_min"]:
        reasons.append(f"ESS {out['ess_min']:.0f} < {THRESHOLDS['ess_min']:.0f}")
    if div > THRESHOLDS["divergences"]:
        reasons.append(f"{div} divergences")
    if hits > THRESHOLDS["tree_depth_hits_frac"] * n_draws:
        reasons.append(f"{hits} max-tree-depth hits")
    if disagreement > THRESHOLDS["chain_disagreement"]:
        reasons.append(f"chains disagree ({disagreement:.2f} sd)")
    out["flagged"] = bool(reasons)
    out["reasons"] = "; ".join(reasons)
    return out
