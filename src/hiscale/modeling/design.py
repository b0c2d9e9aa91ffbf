"""Curves -> fixed-shape arrays for the NumPyro family model.

Rows and runs are padded to power-of-two buckets with masks, so one compiled
sampler serves every backtest cell of similar size (a new shape would mean a
new compilation per cell).

Each row gets a *tempering weight* ``w = min(1, n_eff / n_r)`` (``n_r`` rows
in its run): checkpoints of one run are strongly autocorrelated, so a run
counts as about ``n_eff`` independent points however densely it was logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hiscale.data.curves import Curves
from hiscale.laws import D0, N0
from hiscale.modeling.local import LOCAL_SD_PRIOR_SD, brownian_basis, signed_distances

__all__ = ["Design", "bucket", "fine_bucket", "make_design"]


def bucket(n: int, minimum: int = 8) -> int:
    """Return the smallest power of two >= ``max(n, minimum)``.

    Parameters
    ----------
    n : int
        Count to pad.
    minimum : int, default 8
        Smallest bucket (so tiny inputs share one compiled shape).

    Returns
    -------
    int
        The padded size.
    """
    return int(max(minimum, 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))))


def fine_bucket(n: int, minimum: int = 16, fine_from: int = 1024) -> int:
    """Return :func:`bucket`, or above ``fine_from`` the smallest 2^k or 3 * 2^k >= ``n``.

    Large whole-curve designs cost in proportion to their padded rows at every
    leapfrog step, so above ``fine_from`` the buckets are twice as dense
    (1024, 1536, 2048, 3072, 4096, ...): at most a third of the rows is
    padding instead of half, at the price of one more compiled shape per
    octave. Smaller sizes keep :func:`bucket`'s powers of two, and with them
    their compiled programs and their numbers.

    Parameters
    ----------
    n : int
        Count to pad.
    minimum : int, default 16
        Smallest bucket.
    fine_from : int, default 1024
        Sizes up to this keep the power-of-two ladder.

    Returns
    -------
    int
        The padded size.
    """
    b = bucket(n, minimum)
    if b <= fine_from:
        return b
    three_quarters = 3 * b // 4  # 3 * 2^(k-2): between b / 2 and b
    return three_quarters if n <= three_quarters else b


@dataclass(frozen=True)
class Design:
    """Padded model inputs.

    Attributes
    ----------
    x, y : ndarray, shape (R,)
        ``ln(N/N0)`` and ``ln(D/D0)`` per row (padding rows copy row 0).
    run : ndarray of int, shape (R,)
        Run index per row.
    weight : ndarray, shape (R,)
        Tempering weight (0 on padding).
    mask : ndarray of bool, shape (R,)
        True for real rows.
    log_loss : ndarray, shape (R,)
        ``ln L`` (padding copies row 0).
    run_names : tuple of str
        Real runs, in index order (padding runs follow).
    n_rows, n_runs : int
        Real counts; arrays are padded to ``bucket`` sizes.
    n_runs_padded : int
        Run slots of the model (``bucket(n_runs, 4)``); padding runs have no
        rows and are masked out of the likelihood.
    log_scale_loc : float
        ``ln median(loss)`` of the real rows (centre of the scale prior).
    run_local : dict, optional
        A fit local to a target (:mod:`hiscale.modeling.local`): ``U``
        ``(n_runs_padded, G)``, ``bridge`` ``(n_runs_padded,)`` and ``sd``;
        None for the ordinary fit.
    """

    x: np.ndarray
    y: np.ndarray
    run: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    log_loss: np.ndarray
    run_names: tuple[str, ...]
    n_rows: int
    n_runs: int
    n_runs_padded: int
    log_scale_loc: float
    run_local: dict | None = None

    def model_args(self) -> dict[str, np.ndarray]:
        """Return the keyword arrays of :func:`hiscale.modeling.family.family_model`.

        Returns
        -------
        dict
            ``x, y, run, weight, mask`` (the priors and the observed ``log_loss``
            are passed separately), and ``run_local`` for a local fit.
        """
        args = {
            "x": self.x,
            "y": self.y,
            "run": self.run,
            "weight": self.weight,
            "mask": self.mask,
        }
        if self.run_local is not None:
            args["run_local"] = self.run_local
        return args


def make_design(
    curves: Curves | pd.DataFrame,
    *,
    n_eff_per_run: float = 4.0,
    local_to: tuple[float, float] | None = None,
    local_sd: float = 0.0,
    local_learn: bool = False,
) -> Design:
    """Build padded arrays from (already selected) training rows of one family.

    Parameters
    ----------
    curves : Curves or pandas.DataFrame
        Training rows of one family.
    n_eff_per_run : float, default 4.0
        Effective number of independent points per run: each row's tempering
        weight is ``min(1, n_eff_per_run / rows in its run)``; 0 or less gives
        every row weight 1.
    local_to : (float, float), optional
        Target ``(N, D)`` of a local fit (:mod:`hiscale.modeling.local`):
        with ``local_sd > 0`` the law's error is a Brownian motion pinned at
        the target, so runs far from it inform the law's level there less.
    local_sd : float, default 0
        The Brownian motion's scale per square-root unit of ``ln N`` or
        ``ln D`` distance (0: the ordinary fit).
    local_learn : bool, default False
        Learn the scale from the family's runs: ``ln local_sd ~ N(ln
        local_sd, LOCAL_SD_PRIOR_SD)`` (the given value is the prior median).

    Returns
    -------
    Design
        Rows sorted by params, run and tokens, padded to ``bucket(n, 16)``.

    Raises
    ------
    ValueError
        If there are no rows.
    """
    frame = curves.frame if isinstance(curves, Curves) else curves
    if len(frame) == 0:
        raise ValueError("no training rows: cannot build a design")
    frame = frame.sort_values(["params", "run", "tokens"])
    runs = list(dict.fromkeys(frame["run"].tolist()))
    run_index = {r: i for i, r in enumerate(runs)}
    n = len(frame)
    rp = bucket(n, 16)
    kp = bucket(len(runs), 4)
    x = np.log(frame["params"].to_numpy(float) / N0)
    y = np.log(frame["tokens"].to_numpy(float) / D0)
    ll = np.log(frame["loss"].to_numpy(float))
    ri = frame["run"].map(run_index).to_numpy(int)
    counts = np.bincount(ri, minlength=len(runs))
    w = np.minimum(1.0, n_eff_per_run / counts[ri]) if n_eff_per_run > 0 else np.ones(n)

    def pad(a, fill):
        out = np.full(rp, fill, dtype=a.dtype)
        out[:n] = a
        return out

    local = None
    if local_sd > 0:
        if local_to is None:
            raise ValueError("local fit: local_sd > 0 needs local_to=(N, D)")
        last = frame.groupby("run", sort=False).agg(
            params=("params", "max"), tokens=("tokens", "max")
        )
        last = last.loc[runs]
        sd = signed_distances(last["params"], last["tokens"], local_to)
        U, bridge = brownian_basis(sd)
        local = {
            "U": np.zeros((kp, U.shape[1])),
            "bridge": np.zeros(kp),
            "sd": np.asarray(float(local_sd)),
        }
        local["U"][: len(runs)] = U
        local["bridge"][: len(runs)] = bridge
        if local_learn:
            local["sd_prior"] = np.array([np.log(float(local_sd)), LOCAL_SD_PRIOR_SD])

    return Design(
        x=pad(x, x[0]),
        y=pad(y, y[0]),
        run=pad(ri, 0),
        weight=pad(w, 0.0),
        mask=pad(np.ones(n, bool), False),
        log_loss=pad(ll, ll[0]),
        run_names=tuple(runs),
        n_rows=n,
        n_runs=len(runs),
        n_runs_padded=kp,
        log_scale_loc=float(np.log(np.median(frame["loss"].to_numpy(float)))),
        run_local=local,
    )
