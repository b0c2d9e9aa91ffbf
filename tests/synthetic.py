"""Small hand-built curves tables for tests (never rows of the real corpus)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Ground truth used for synthetic families: ``(a, b, e, alpha, beta)`` of the
#: paper's law, close to the estimator's start point so fits converge.
TRUE = {"a": 6.0, "b": 7.0, "e": 0.5, "alpha": 0.34, "beta": 0.30}


def law(n, d, *, a, b, e, alpha, beta):
    """The paper's law written out with numpy (independent of hiscale.laws)."""
    n = np.asarray(n, dtype=float)
    d = np.asarray(d, dtype=float)
    return np.exp(e) + np.exp(a) * n ** (-alpha) + np.exp(b) * d ** (-beta)


def make_frame(
    family: str = "synth",
    *,
    sizes: Sequence[float] = (1e7, 3e7, 1e8, 3e8, 1e9),
    tokens: Sequence[float] | None = None,
    truth: dict[str, float] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    metric: str | None = None,
) -> pd.DataFrame:
    """One family of curves from the paper's law.

    Every size gets one run (``<family>-<i>``) with checkpoints at ``tokens``
    (default 12 log-spaced points from 2e9 to 2e11). ``noise`` is a relative
    Gaussian perturbation of the loss (seeded, so tables are deterministic).
    """
    truth = TRUE if truth is None else truth
    tok = np.geomspace(2e9, 2e11, 12) if tokens is None else np.asarray(tokens, dtype=float)
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(sizes):
        loss = law(n, tok, **truth)
        if noise:
            loss = loss * (1 + noise * rng.standard_normal(len(tok)))
        for t, val in zip(tok, loss, strict=True):
            rows.append(
                {"family": family, "run": f"{family}-{i}", "params": n, "tokens": t, "loss": val}
            )
    frame = pd.DataFrame(rows)
    if metric is not None:
        frame["metric"] = metric
    return frame


def tiny_frame() -> pd.DataFrame:
    """Three runs of one family, hand-written (used by validation tests)."""
    return pd.DataFrame(
        {
            "family": ["f", "f", "f", "f", "f", "f"],
            "run": ["r1", "r1", "r2", "r2", "r3", "r3"],
            "params": [1e6, 1e6, 2e6, 2e6, 4e6, 4e6],
            "tokens": [1e9, 2e9, 1e9, 2e9, 1e9, 2e9],
            "loss": [4.0, 3.5, 3.8, 3.3, 3.6, 3.1],
        }
    )
