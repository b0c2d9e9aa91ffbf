"""Sampler settings and convergence thresholds: the one place for their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["THRESHOLDS", "SamplerSettings"]

#: A fit is flagged when any of these fails.
THRESHOLDS: dict[str, float] = {
    "rhat_max": 1.01,
    "ess_min": 100.0,
    "divergences": 0,
    "tree_depth_hits_frac": 0.05,
    "chain_disagreement": 1.0,
}


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings (recorded with every fit).

    ``chain_method`` "parallel" uses one CPU host device per chain (hiscale
    sets two or more host devices before importing jax).
    """

    num_warmup: int = 500
    num_samples: int = 1000
    num_chains: int = 2
    target_accept_prob: float = 0.9
    max_tree_depth: int = 8
    dense_global: bool = True
    chain_method: str = "parallel"
    init_jitter: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for provenance."""
        return asdict(self)
