"""Simulated families with known share-form parameters (for engine tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hiscale.laws import LAWS

#: Truth in the share form (close to the corpus population centre).
TRUTH = {
    "u_a": -0.9,
    "u_b": -2.0,
    "log_alpha": np.log(0.32),
    "log_beta": np.log(0.32),
    "log_scale": np.log(2.5),
}


def true_loss(params, tokens, truth=TRUTH, law="chinchilla") -> np.ndarray:
    """Noise-free loss of the truth."""
    return np.asarray(LAWS[law].loss(params, tokens, truth))


def simulate_family(
    family: str = "sim",
    *,
    sizes: Sequence[float] = (5e7, 1e8, 2e8, 4e8, 8e8),
    n_ckpt: int = 10,
    tokens_per_param: float = 40.0,
    sigma_run: float = 0.01,
    sigma_obs: float = 0.003,
    truth: dict | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One family: one run per size, log-spaced checkpoints, run offset + noise in ln L."""
    truth = TRUTH if truth is None else truth
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(sizes):
        d_max = tokens_per_param * n
        tok = np.geomspace(d_max / 20, d_max, n_ckpt)
        offset = sigma_run * rng.standard_normal()
        ll = np.log(true_loss(n, tok, truth)) + offset + sigma_obs * rng.standard_normal(n_ckpt)
        for t, v in zip(tok, np.exp(ll), strict=True):
            rows.append(
                {"family": family, "run": f"{family}-r{i}", "params": n, "tokens": t, "loss": v}
            )
    return pd.DataFrame(rows)
