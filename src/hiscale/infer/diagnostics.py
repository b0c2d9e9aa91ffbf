"""The sampler's verdict: is a NUTS run converged enough to use.

It checks rank-normalised split r̂ (max; Vehtari et al. 2021, as
``az.summary``), bulk/tail ESS (min), divergences, max-tree-depth hits (read from
NumPyro's ``num_steps``: ArviZ's ``diagnose`` misses it), E-BFMI per chain and chain
disagreement; :data:`hiscale.infer.settings.THRESHOLDS` decide the ``flagged`` verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from arviz_stats.base import array_stats

from hiscale.infer.settings import THRESHOLDS

__all__ = ["GLOBAL_SITES", "diagnose"]

#: Sites :func:`diagnose` checks: the sampled coordinates (``xi``,
#: ``log_loss_ref``, the log noise scales) and the loss scale derived from them.
GLOBAL_SITES: tuple[str, ...] = (
    "xi",
    "log_loss_ref",
    "log_scale",
    "log_sigma_run",
    "log_sigma_obs",
)


def diagnose(
    samples: dict[str, np.ndarray],
    *,
    diverging: np.ndarray,
    num_steps: np.ndarray,
    max_tree_depth: int,
    energy: np.ndarray,
) -> dict[str, Any]:
    """Summarise the convergence of grouped-by-chain samples.

    r̂ is ArviZ's rank-normalised split r̂ (the larger of the bulk and the
    folded-tail version, Vehtari et al. 2021: what ``az.summary`` reports),
    ESS its bulk and tail (5%/95% quantile) ESS, E-BFMI the per-chain
    ``sum (E_n - E_{n-1})^2 / sum (E_n - mean E)^2`` of the Hamiltonian
    (Betancourt 2016).

    Parameters
    ----------
    samples : dict
        Site -> array ``(chain, draw, ...)``; the sites of
        :data:`GLOBAL_SITES` it holds are checked (``xi`` is required; the
        joint model has no ``log_loss_ref``).
    diverging : ndarray ``(chain, draw)``
        NumPyro's ``diverging`` flags.
    num_steps : ndarray ``(chain, draw)``
        Leapfrog steps per draw; ``2**max_tree_depth - 1`` means the tree
        hit its maximum depth.
    max_tree_depth : int
        The sampler's maximum tree depth.
    energy : ndarray ``(chain, draw)``
        Hamiltonian energy per draw (for E-BFMI).

    Returns
    -------
    dict
        ``rhat_max, ess_min (bulk), ess_tail_min, divergences,
        tree_depth_hits, bfmi_min, chain_disagreement, worst_site, flagged,
        reasons``. A NaN r̂ (a constant parameter) counts as failing.

    Raises
    ------
    ValueError
        If ``samples`` has no ``xi`` draws.
    """
    parts, labels = [], []
    if "xi" not in samples:
        raise ValueError(f"diagnose needs the 'xi' draws, got sites {sorted(samples)}")
    for name in (n for n in GLOBAL_SITES if n in samples):
        v = np.asarray(samples[name], dtype=float)
        scalar = v.ndim == 2
        v = v.reshape(v.shape[0], v.shape[1], -1)
        parts.append(v)
        labels += [name] if scalar else [f"{name}[{i}]" for i in range(v.shape[-1])]
    allv = np.concatenate(parts, axis=-1)  # (chain, draw, P)
    n_chains = allv.shape[0]
    by_param = np.moveaxis(allv, -1, 0)  # (P, chain, draw)
    rhat = (
        np.asarray(array_stats.rhat(by_param, method="rank"))
        if n_chains > 1
        else np.ones(allv.shape[-1])
    )
    ess = np.asarray(array_stats.ess(by_param, method="bulk"))
    ess_tail = np.asarray(array_stats.ess(by_param, method="tail", prob=(0.05, 0.95)))
    bfmi = np.asarray(array_stats.bfmi(np.asarray(energy, dtype=float)))
    glob = allv
    if n_chains > 1:
        means = glob.mean(axis=1)
        sd = glob.reshape(-1, glob.shape[-1]).std(axis=0) + 1e-12
        disagreement = float(np.max((means.max(0) - means.min(0)) / sd))
    else:
        disagreement = 0.0
    div = int(np.sum(diverging))
    hits = int(np.sum(np.asarray(num_steps) >= 2**max_tree_depth - 1))
    # NaN (a constant parameter) counts as failing, not as passing
    rhat_max = float(np.max(np.where(np.isfinite(rhat), rhat, np.inf)))
    out = {
        "rhat_max": rhat_max,
        "ess_min": float(np.min(np.where(np.isfinite(ess), ess, 0.0))),
        "ess_tail_min": float(np.min(np.where(np.isfinite(ess_tail), ess_tail, 0.0))),
        "divergences": div,
        "tree_depth_hits": hits,
        "bfmi_min": float(np.min(np.where(np.isfinite(bfmi), bfmi, 0.0))),
        "chain_disagreement": disagreement,
        "worst_site": labels[int(np.argmax(np.where(np.isfinite(rhat), rhat, np.inf)))],
    }
    n_draws = allv.shape[0] * allv.shape[1]
    reasons = []
    if out["rhat_max"] > THRESHOLDS["rhat_max"]:
        reasons.append(
            f"r_hat {out['rhat_max']:.3f} > {THRESHOLDS['rhat_max']} ({out['worst_site']})"
        )
    if out["ess_min"] < THRESHOLDS["ess_min"]:
        reasons.append(f"ESS {out['ess_min']:.0f} < {THRESHOLDS['ess_min']:.0f}")
    if out["ess_tail_min"] < THRESHOLDS["ess_min"]:
        reasons.append(f"tail ESS {out['ess_tail_min']:.0f} < {THRESHOLDS['ess_min']:.0f}")
    if div > THRESHOLDS["divergences"]:
        reasons.append(f"{div} divergences")
    if hits > THRESHOLDS["tree_depth_hits_frac"] * n_draws:
        reasons.append(f"{hits} max-tree-depth hits")
    if out["bfmi_min"] < THRESHOLDS["bfmi_min"]:
        reasons.append(f"E-BFMI {out['bfmi_min']:.2f} < {THRESHOLDS['bfmi_min']}")
    if disagreement > THRESHOLDS["chain_disagreement"]:
        reasons.append(f"chains disagree ({disagreement:.2f} sd)")
    out["flagged"] = bool(reasons)
    out["reasons"] = "; ".join(reasons)
    return out
