r"""Learning-rate schedules rebuilt from the curves table, and their areas.

A schedule-aware law needs, at each checkpoint ``D`` (tokens), three numbers
computed from the run's learning-rate schedule ``eta(u)`` with peak
``eta_max``:

* the LR multiplier :math:`h(D) = \eta(D) / \eta_{max}`;
* the area under the LR curve, in tokens,

  .. math:: S_1(D) = \int_0^D h(u)\,du ,

  so that :math:`S_1 = D` for a constant schedule without warmup (``S1`` is
  "peak-LR-equivalent tokens"; Tissue et al. 2024 sum ``eta`` over steps, which
  is ``eta_max / tokens_per_step`` times this);
* the annealing area of the momentum law (Tissue et al. 2024, arXiv
  2408.11029). In steps, with ``h_i`` the multiplier after step ``i`` and a
  decay factor ``lambda`` (0.999 in the paper):

  .. math::

      m_i = \lambda m_{i-1} + (h_{i-1} - h_i),\qquad
      S_2 = \sum_{i=1}^{s} m_i
          = \sum_{i=1}^{s} \sum_{k=1}^{i} (h_{k-1} - h_k)\,\lambda^{i-k}.

  Here it is computed in tokens on a uniform grid of width ``Δ``:
  ``h_i = h(iΔ)``, the decay per cell is ``1 - Δ/τ`` with the *memory*
  ``τ = tokens_per_step / (1 - λ)`` tokens (1000 steps for ``λ = 0.999``;
  :func:`memory_tokens`; ``Δ ≤ τ/10``), and
  :math:`S_2(D) = Δ \sum_{i \le D/Δ} m_i`. With
  ``Δ = tokens_per_step`` and ``λ`` per step this is exactly the paper's
  ``S2`` times ``tokens_per_step``; as ``Δ -> 0`` it converges to

  .. math::

      S_2(D) = \int_0^D m(u)\,du,\qquad
      m(u) = \int_0^u -h'(v)\, e^{-(u-v)/\tau}\, dv .

  The warmup is not annealing: ``S2`` uses ``h`` with the warmup replaced by
  the peak (the paper also leaves warmup out). ``S1`` keeps the warmup's area.
  The dimensionless :math:`\hat S_2 = S_2 / \tau` (column ``anneal``) tends
  to ``1 - h(D)`` when ``τ`` is short compared with the decay, so the momentum
  law's annealing term and the simpler ``1 - h`` term share one scale.

Schedules are read from the corpus: the ``schedule`` text of ``curves.csv``
(:func:`parse_schedule`, a fixed vocabulary) or the machine-readable columns of
``runs_extra.csv`` (:func:`schedule_from_runs_extra`). A run whose schedule is
unknown is *flagged* (``schedule_known = False`` with a reason, and NaN
areas), never guessed; every assumption made to complete a schedule (warmup
not given, floor not given, tokens per step not given) is recorded in the
run's ``schedule_note``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from hiscale._util import finite_float as _num

__all__ = [
    "DEFAULT_DECAY",
    "NAMED_SCHEDULES",
    "Schedule",
    "ScheduleInfo",
    "anneal_area",
    "lr_area",
    "lr_multiplier",
    "memory_tokens",
    "named_schedule",
    "parse_schedule",
    "reconstruct",
    "run_schedules",
    "scale_schedule",
    "schedule_covariates",
    "schedule_from_runs_extra",
    "with_decay",
]

#: Momentum decay factor per optimizer step (Tissue et al. 2024).
DEFAULT_DECAY: float = 0.999

#: Memory of the momentum, as a fraction of the horizon, when the tokens per step
#: of a run are unknown (about 1000 steps of a 100k-step run).
UNKNOWN_STEP_MEMORY_FRACTION: float = 0.01

_DECAY_SHAPES = ("none", "cosine", "linear", "1-sqrt", "exponential")
_WARMUP_SHAPES = ("linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule as a multiplier of the peak, in tokens.

    The multiplier ``h(u)`` at ``u`` tokens is built from four pieces:

    * warmup on ``[0, W)``: ``h = w0 + (1 - w0) r`` with ``r = u/W``
      (``linear``) or ``r = (1 - cos(pi u/W))/2`` (``cosine``);
    * stable level 1, or, for two-stage schedules, from ``stage2_start`` a
      linear ramp over ``stage2_ramp`` tokens to ``stage2_factor`` (a step if
      the ramp is 0);
    * decay on ``[s, T]`` from the level ``c = h(s)`` to ``f = floor`` with
      ``q = (u - s)/(T - s)``: ``cosine`` ``f + (c - f)(1 + cos(pi q))/2``,
      ``linear`` ``c + (f - c) q``, ``1-sqrt`` ``f + (c - f)(1 - sqrt(q))``,
      ``exponential`` ``c (f/c)^q``; ``none`` keeps the level;
    * after the horizon ``T``: ``h = f`` (e.g. GPT-3's cosine ends at 260B of
      300B tokens); for ``none``, the level.

    Attributes
    ----------
    horizon : float
        ``T``, tokens at which the decay ends (the schedule's planned length).
    decay_shape : str
        One of ``none, cosine, linear, 1-sqrt, exponential``.
    floor : float
        Final multiplier ``f`` (``eta_T / eta_max``).
    decay_start : float or None
        ``s`` in tokens; ``None`` means the end of the warmup (cosine decays).
    warmup, warmup_shape, warmup_init : float, str, float
        Warmup length ``W`` (tokens), ``linear`` or ``cosine``, start ``w0``.
    stage2_start, stage2_ramp, stage2_factor : float or None
        Two-stage schedules (tokens, tokens, multiplier).
    tokens_per_step : float or None
        Tokens per optimizer step, when known (sets the momentum memory).
    """

    horizon: float
    decay_shape: str = "none"
    floor: float = 1.0
    decay_start: float | None = None
    warmup: float = 0.0
    warmup_shape: str = "linear"
    warmup_init: float = 0.0
    stage2_start: float | None = None
    stage2_ramp: float = 0.0
    stage2_factor: float | None = None
    tokens_per_step: float | None = None

    def __post_init__(self) -> None:
        """Check shapes, horizon, warmup and decay start."""
        if self.decay_shape not in _DECAY_SHAPES:
            raise ValueError(f"decay_shape {self.decay_shape!r} not one of {_DECAY_SHAPES}")
        if self.warmup_shape not in _WARMUP_SHAPES:
            raise ValueError(f"warmup_shape {self.warmup_shape!r} not one of {_WARMUP_SHAPES}")
        if not (self.horizon > 0 and math.isfinite(self.horizon)):
            raise ValueError(f"horizon must be a positive number of tokens, got {self.horizon!r}")
        if self.warmup < 0 or self.warmup > self.horizon:
            raise ValueError(f"warmup {self.warmup!r} outside [0, horizon={self.horizon:g}]")
        s = self.start_of_decay
        if self.decay_shape != "none" and not (0 <= s < self.horizon):
            raise ValueError(f"decay_start {s!r} outside [0, horizon={self.horizon:g})")

    @property
    def start_of_decay(self) -> float:
        """``s`` in tokens (the end of the warmup unless given)."""
        return self.warmup if self.decay_start is None else float(self.decay_start)

    def multiplier(self, tokens) -> np.ndarray:
        """``h(u) = eta(u) / eta_max`` at ``tokens`` (see :func:`lr_multiplier`)."""
        return lr_multiplier(self, tokens)


def _plateau(sched: Schedule, u: np.ndarray) -> np.ndarray:
    """Level of the stable phase (1, or the two-stage level) at ``u``."""
    level = np.ones_like(u)
    if sched.stage2_start is not None and sched.stage2_factor is not None:
        c = float(sched.stage2_factor)
        if sched.stage2_ramp > 0:
            q = np.clip((u - sched.stage2_start) / sched.stage2_ramp, 0.0, 1.0)
        else:
            q = (u >= sched.stage2_start).astype(float)
        level = 1.0 + (c - 1.0) * q
    return level


def lr_multiplier(sched: Schedule, tokens) -> np.ndarray:
    """Evaluate the LR multiplier ``h(u) = eta(u)/eta_max`` of ``sched`` at ``tokens``.

    Parameters
    ----------
    sched : Schedule
        The schedule (see :class:`Schedule` for the pieces).
    tokens : array_like
        Token counts ``u >= 0``.

    Returns
    -------
    ndarray
        ``h(u)``, same shape as ``tokens``.
    """
    u = np.asarray(tokens, dtype=float)
    h = _plateau(sched, u)
    if sched.decay_shape != "none":
        s, t, f = sched.start_of_decay, float(sched.horizon), float(sched.floor)
        c = _plateau(sched, np.asarray(s, dtype=float))
        q = np.clip((u - s) / (t - s), 0.0, 1.0)
        if sched.decay_shape == "cosine":
            dec = f + (c - f) * 0.5 * (1.0 + np.cos(np.pi * q))
        elif sched.decay_shape == "linear":
            dec = c + (f - c) * q
        elif sched.decay_shape == "1-sqrt":
            dec = f + (c - f) * (1.0 - np.sqrt(q))
        else:  # exponential
            dec = c * (f / c) ** q
        h = np.where(u >= s, dec, h)
    if sched.warmup > 0:
        w0 = float(sched.warmup_init)
        r = np.clip(u / sched.warmup, 0.0, 1.0)
        if sched.warmup_shape == "cosine":
            r = 0.5 * (1.0 - np.cos(np.pi * r))
        h = np.where(u < sched.warmup, w0 + (1.0 - w0) * r, h)
    return h


def memory_tokens(sched: Schedule, decay: float = DEFAULT_DECAY) -> tuple[float, str]:
    """Momentum memory ``τ`` in tokens, and how it was set.

    ``τ = tokens_per_step / (1 - decay)`` when the tokens per step are known
    (1000 steps for ``decay = 0.999``); otherwise
    ``UNKNOWN_STEP_MEMORY_FRACTION x horizon``, which the returned note says.
    """
    if sched.tokens_per_step:
        return float(sched.tokens_per_step) / (1.0 - decay), ""
    tau = UNKNOWN_STEP_MEMORY_FRACTION * float(sched.horizon)
    return tau, (
        f"tokens per step unknown: momentum memory taken as "
        f"{UNKNOWN_STEP_MEMORY_FRACTION:g} x horizon = {tau:.3g} tokens"
    )


def _breakpoints(sched: Schedule) -> list[float]:
    pts = [0.0, float(sched.warmup), float(sched.horizon), sched.start_of_decay]
    if sched.stage2_start is not None:
        pts += [float(sched.stage2_start), float(sched.stage2_start + sched.stage2_ramp)]
    return pts


def lr_area(sched: Schedule, tokens, *, n_grid: int = 20001) -> np.ndarray:
    """``S1(D) = ∫_0^D h(u) du`` in tokens (trapezoid rule on a fine grid).

    The grid is a uniform grid of ``n_grid`` points on ``[0, max D]`` joined
    with the schedule's breakpoints and the requested ``tokens`` themselves,
    so piecewise-linear parts are integrated exactly and no interpolation is
    needed. For a constant schedule without warmup ``S1(D) = D``.
    """
    d = np.asarray(tokens, dtype=float)
    if d.size == 0:
        return d.copy()
    top = float(np.max(d))
    grid = np.unique(
        np.concatenate(
            [np.linspace(0.0, top, n_grid), [p for p in _breakpoints(sched) if p <= top], d.ravel()]
        )
    )
    h = lr_multiplier(sched, grid)
    area = np.concatenate([[0.0], np.cumsum(0.5 * (h[1:] + h[:-1]) * np.diff(grid))])
    return area[np.searchsorted(grid, d)]


def anneal_area(
    sched: Schedule,
    tokens,
    *,
    decay: float = DEFAULT_DECAY,
    tau: float | None = None,
    max_cells: int = 400_000,
) -> np.ndarray:
    """Compute the momentum law's annealing area ``S2(D)`` in tokens (module docstring).

    Parameters
    ----------
    sched : Schedule
        The schedule; its warmup is replaced by the peak for ``S2``.
    tokens : array_like
        Checkpoints ``D``.
    decay : float
        ``λ`` per optimizer step (used through :func:`memory_tokens`).
    tau : float, optional
        Memory in tokens; overrides ``decay``.
    max_cells : int
        Grid cells up to ``max D``. The cell is one optimizer step when the
        tokens per step are known and that fits, else ``max D / max_cells``.

    Returns
    -------
    ndarray
        ``S2`` at ``tokens`` (linear interpolation between grid points).
    """
    d = np.asarray(tokens, dtype=float)
    if d.size == 0:
        return d.copy()
    if tau is None:
        tau, _ = memory_tokens(sched, decay)
    top = float(np.max(d))
    step = sched.tokens_per_step
    cell = float(step) if step and top / step <= max_cells else top / max_cells
    cell = min(cell, tau / 10.0)
    n = math.ceil(top / cell)
    if n > 50 * max_cells:
        raise ValueError(
            f"memory {tau:.3g} tokens is too short for checkpoints up to {top:.3g} tokens "
            f"({n} grid cells); raise tau"
        )
    grid = cell * np.arange(n + 1)
    h = lr_multiplier(sched, grid)
    if sched.warmup > 0:
        h = np.where(grid < sched.warmup, _plateau(sched, grid), h)
    # per-cell decay with cell / (1 - lam) = tau exactly: lam is the per-step
    # factor when the cell is one step, and S2 / tau -> 1 - h for a short memory
    lam = 1.0 - cell / tau
    from scipy.signal import lfilter

    # m_i = lam m_{i-1} + (h_{i-1} - h_i), m_0 = 0  (a first-order IIR filter, O(n))
    drops = np.concatenate([[0.0], h[:-1] - h[1:]])
    m = lfilter([1.0], [1.0, -lam], drops)
    s2 = cell * np.cumsum(m)
    return np.interp(d, grid, s2)


# --------------------------------------------------------------------------------------
# reading schedules from the corpus


@dataclass(frozen=True)
class ScheduleInfo:
    """A run's schedule, or why there is none.

    Attributes
    ----------
    schedule : Schedule or None
        ``None`` when the schedule is unknown.
    source : str
        ``"schedule text"``, ``"runs_extra"`` or ``"unknown"``.
    notes : tuple of str
        Assumptions made to complete the schedule, or the reason it is unknown.
    """

    schedule: Schedule | None
    source: str
    notes: tuple[str, ...] = field(default=())

    @property
    def known(self) -> bool:
        """True when a schedule was rebuilt."""
        return self.schedule is not None


def parse_schedule(
    text,
    *,
    run: str = "",
    run_tokens=None,
    lr=None,
    tokens_per_step=None,
) -> ScheduleInfo:
    """Rebuild a schedule from the ``schedule`` text of ``curves.csv``.

    Understood (the corpus vocabulary): ``constant (no cooldown)[...]``;
    ``constant then linear cooldown to 0 over last ~10%`` (start from the run
    id's ``cooldown-from-STEP``); ``cosine matched to run length``;
    ``cosine to P% over XB tokens, YM-token warm-up``; ``cosine to Fx peak over
    total_steps (K warm-up steps)`` (horizon from the run id's ``NNNsteps``);
    ``cosine(min_lr=X)`` (floor ``X / lr``); the sweep families' texts of
    ``curves_extra.csv`` (constant, cosine and WSD runs with their warmups,
    positions in steps: :data:`_SWEEP_TEXTS`); a bare schedule name of
    :data:`NAMED_SCHEDULES` (``cosine``, ``wsd``, ...) over ``run_tokens``,
    without warmup (noted). Anything else, or an empty text, gives an
    unknown schedule with the reason.

    Parameters
    ----------
    text : str or None
        The ``schedule`` cell.
    run : str
        Run id (some horizons and cooldown starts are in it).
    run_tokens, lr, tokens_per_step : float, optional
        The run's ``run_tokens`` and ``lr`` cells and its tokens per step.
    """
    tps = _num(tokens_per_step)
    horizon = _num(run_tokens)
    if not isinstance(text, str) or not text.strip():
        return ScheduleInfo(None, "unknown", ("schedule column empty",))
    t = text.strip()
    notes: list[str] = []
    no_warmup = "warmup not given: taken as 0"
    if t.startswith("constant (no cooldown)"):
        if horizon is None:
            return ScheduleInfo(None, "unknown", (f"{t!r} without run_tokens",))
        return ScheduleInfo(
            Schedule(horizon=horizon, tokens_per_step=tps), "schedule text", (no_warmup,)
        )
    if t.startswith("constant then linear cooldown to 0"):
        if horizon is None:
            return ScheduleInfo(None, "unknown", (f"{t!r} without run_tokens",))
        m = re.search(r"cooldown-from-(\d+)", run)
        if m and tps:
            start = float(m.group(1)) * tps
        else:
            start = horizon / 1.1
            notes.append("cooldown start not in the run id: taken as horizon / 1.1")
        return ScheduleInfo(
            Schedule(
                horizon=horizon,
                decay_shape="linear",
                floor=0.0,
                decay_start=start,
                tokens_per_step=tps,
            ),
            "schedule text",
            (no_warmup, *notes),
        )
    if t == "cosine matched to run length":
        if horizon is None:
            return ScheduleInfo(None, "unknown", (f"{t!r} without run_tokens",))
        notes = [no_warmup, "floor not given: taken as 0.1 x peak (a 10x cosine decay)"]
        sched = Schedule(horizon=horizon, decay_shape="cosine", floor=0.1, tokens_per_step=tps)
        return ScheduleInfo(sched, "schedule text", tuple(notes))
    m = re.fullmatch(r"cosine to ([\d.]+)% over ([\d.]+)B tokens, ([\d.]+)M-token warm-up", t)
    if m:
        sched = Schedule(
            horizon=float(m.group(2)) * 1e9,
            decay_shape="cosine",
            floor=float(m.group(1)) / 100.0,
            warmup=float(m.group(3)) * 1e6,
            tokens_per_step=tps,
        )
        return ScheduleInfo(sched, "schedule text", ())
    m = re.fullmatch(r"cosine to ([\d.]+)x peak over total_steps \((\d+) warm-up steps\)", t)
    if m:
        steps = re.search(r"-(\d+)steps", run)
        if not (steps and tps):
            return ScheduleInfo(
                None, "unknown", (f"{t!r}: total_steps not in the run id or no tokens per step",)
            )
        h = float(steps.group(1)) * tps
        if horizon is not None and not math.isclose(horizon, h, rel_tol=1e-6):
            notes.append(
                f"horizon from the run id ({h:.6g} tokens), not run_tokens ({horizon:.6g})"
            )
        sched = Schedule(
            horizon=h,
            decay_shape="cosine",
            floor=float(m.group(1)),
            warmup=min(float(m.group(2)) * tps, h),
            tokens_per_step=tps,
        )
        return ScheduleInfo(sched, "schedule text", tuple(notes))
    m = re.fullmatch(r"cosine\(min_lr=([\deE.+-]+)\)", t)
    if m:
        peak = _num(lr)
        if horizon is None or not peak:
            return ScheduleInfo(None, "unknown", (f"{t!r} without run_tokens or lr",))
        sched = Schedule(
            horizon=horizon,
            decay_shape="cosine",
            floor=float(m.group(1)) / peak,
            tokens_per_step=tps,
        )
        return ScheduleInfo(sched, "schedule text", (no_warmup,))
    sweep = _parse_sweep_text(t, tps, _num(lr))
    if sweep is not None:
        return sweep
    if t.lower() in NAMED_SCHEDULES:
        if horizon is None:
            return ScheduleInfo(None, "unknown", (f"{t!r} without run_tokens",))
        sched = named_schedule(t.lower(), horizon, tokens_per_step=tps)
        note = f"named schedule {t.lower()!r}: {NAMED_SCHEDULES[t.lower()]}; {no_warmup}"
        return ScheduleInfo(sched, "schedule text", (note,))
    return ScheduleInfo(None, "unknown", (f"schedule text not understood: {t!r}",))


_FLOAT = r"([\deE.+-]+)"

#: The sweep families' texts (``curves_extra.csv``), positions in optimizer steps.
_SWEEP_TEXTS = {
    "lrsched-constant": re.compile(
        r"constant after (\d+)-step linear warmup from ([\d.]+)x peak "
        r"\(no cooldown; run length (\d+) steps\)"
    ),
    "lrsched-cosine": re.compile(
        rf"cosine to (?:([\d.]+)x peak|~0 \({_FLOAT}\)) at step (\d+); "
        r"(\d+)-step (cosine-shaped|linear) warmup from ([\d.]+)x peak"
    ),
    "lrsched-wsd": re.compile(
        r"WSD: (\d+)-step linear warmup from ([\d.]+)x peak, constant, (linear|1-sqrt) "
        r"cooldown to 0 over last [\d.]+% \(steps (\d+)-(\d+)\)"
    ),
    "mpl-constant": re.compile(
        rf"constant {_FLOAT} after (\d+)-step linear warmup from 0 "
        r"\(no decay; run length (\d+) steps\)"
    ),
    "mpl-cosine": re.compile(
        rf"cosine from {_FLOAT} to {_FLOAT} over steps (\d+)-(\d+) "
        r"after (\d+)-step linear warmup from 0"
    ),
    "mpl-wsd": re.compile(
        rf"WSD: (\d+)-step linear warmup from 0, constant {_FLOAT}, (linear|exponential) "
        rf"decay to {_FLOAT} over steps (\d+)-(\d+)"
    ),
}


def _parse_sweep_text(t: str, tps: float | None, peak: float | None) -> ScheduleInfo | None:
    """Read a sweep family's schedule text (:data:`_SWEEP_TEXTS`); None if it is none of them.

    Positions are in steps, so the run's tokens per step are needed; a floor
    given as an absolute learning rate (``cosine to ~0 (1e-07)``) needs the
    run's peak (``lr`` column). Two-stage texts are not read (``runs_extra.csv``
    has them).
    """
    kind, m = next(((k, m) for k, r in _SWEEP_TEXTS.items() if (m := r.fullmatch(t))), ("", None))
    if m is None:
        return None
    if not tps:
        return ScheduleInfo(
            None, "unknown", (f"{t!r}: positions in steps, tokens per step unknown",)
        )
    g = m.groups()
    if kind == "lrsched-constant":
        sched = Schedule(
            horizon=float(g[2]) * tps, warmup=float(g[0]) * tps, warmup_init=float(g[1])
        )
    elif kind == "lrsched-cosine":
        if g[0] is not None:
            floor = float(g[0])
        elif peak:
            floor = float(g[1]) / peak
        else:
            return ScheduleInfo(
                None, "unknown", (f"{t!r}: an absolute floor without the lr column",)
            )
        sched = Schedule(
            horizon=float(g[2]) * tps, decay_shape="cosine", floor=floor,
            warmup=float(g[3]) * tps, warmup_init=float(g[5]),
            warmup_shape="cosine" if g[4] == "cosine-shaped" else "linear",
        )  # fmt: skip
    elif kind == "lrsched-wsd":
        sched = Schedule(
            horizon=float(g[4]) * tps, decay_shape=g[2], floor=0.0, decay_start=float(g[3]) * tps,
            warmup=float(g[0]) * tps, warmup_init=float(g[1]),
        )  # fmt: skip
    elif kind == "mpl-constant":
        sched = Schedule(horizon=float(g[2]) * tps, warmup=float(g[1]) * tps)
    elif kind == "mpl-cosine":
        sched = Schedule(
            horizon=float(g[3]) * tps, decay_shape="cosine", floor=float(g[1]) / float(g[0]),
            decay_start=float(g[2]) * tps, warmup=float(g[4]) * tps,
        )  # fmt: skip
    else:
        sched = Schedule(
            horizon=float(g[5]) * tps, decay_shape=g[2], floor=float(g[3]) / float(g[1]),
            decay_start=float(g[4]) * tps, warmup=float(g[0]) * tps,
        )  # fmt: skip
    return ScheduleInfo(replace(sched, tokens_per_step=tps), "schedule text", ())


def schedule_from_runs_extra(row: Mapping) -> ScheduleInfo:
    """Rebuild a schedule from one row of ``runs_extra.csv`` (steps -> tokens).

    Uses ``tokens_per_step, total_steps, warmup_steps, warmup_shape,
    warmup_init_factor, decay_shape, decay_start_step, final_lr_factor,
    stage2_start_step, stage2_ramp_steps, stage2_factor``. A row without
    ``total_steps`` or ``tokens_per_step`` (e.g. ``farseer``) is unknown.
    """
    tps = _num(row.get("tokens_per_step"))
    total = _num(row.get("total_steps"))
    if not tps or not total:
        return ScheduleInfo(None, "unknown", ("runs_extra has no total_steps/tokens_per_step",))
    shape = row.get("decay_shape")
    shape = shape if isinstance(shape, str) and shape else "none"
    start = _num(row.get("decay_start_step"))
    warm = _num(row.get("warmup_steps")) or 0.0
    wshape = row.get("warmup_shape")
    s2s = _num(row.get("stage2_start_step"))
    sched = Schedule(
        horizon=total * tps,
        decay_shape=shape,
        floor=_num(row.get("final_lr_factor")) if shape != "none" else 1.0,
        decay_start=None if start is None else start * tps,
        warmup=warm * tps,
        warmup_shape=wshape if isinstance(wshape, str) and wshape else "linear",
        warmup_init=_num(row.get("warmup_init_factor")) or 0.0,
        stage2_start=None if s2s is None else s2s * tps,
        stage2_ramp=(_num(row.get("stage2_ramp_steps")) or 0.0) * tps,
        stage2_factor=_num(row.get("stage2_factor")),
        tokens_per_step=tps,
    )
    notes = []
    note = row.get("notes")
    if isinstance(note, str) and "assumed" in note:
        notes.append(note)
    return ScheduleInfo(sched, "runs_extra", tuple(notes))


def _tokens_per_step(tokens: np.ndarray, step: np.ndarray | None) -> float | None:
    """Tokens per step of one run from ``tokens / step``, if constant across its rows."""
    if step is None:
        return None
    ok = np.isfinite(step) & (step > 0)
    if not ok.any():
        return None
    ratio = tokens[ok] / step[ok]
    if np.ptp(ratio) > 1e-6 * ratio.mean():
        return None
    return float(ratio.mean())


def run_schedules(frame: pd.DataFrame, runs_extra: pd.DataFrame | None = None) -> dict:
    """``{run: ScheduleInfo}`` for every run of a curves frame.

    ``runs_extra`` (the corpus's ``runs_extra.csv``) takes precedence for the
    runs it lists; other runs are parsed from their ``schedule`` text.
    """
    extra = {}
    if runs_extra is not None and len(runs_extra):
        extra = {r["run"]: r for r in runs_extra.to_dict("records")}
    out = {}
    tokens = frame["tokens"].to_numpy(float)
    step = None
    if "step" in frame:
        step = pd.to_numeric(frame["step"], errors="coerce").to_numpy(float)
    for run, idx in _run_rows(frame).items():
        if run in extra:
            out[run] = schedule_from_runs_extra(extra[run])
            continue
        first = frame.iloc[idx[0]]
        out[run] = parse_schedule(
            first.get("schedule"),
            run=str(run),
            run_tokens=first.get("run_tokens"),
            lr=first.get("lr"),
            tokens_per_step=_tokens_per_step(tokens[idx], None if step is None else step[idx]),
        )
    return out


def _run_rows(frame: pd.DataFrame) -> dict:
    """``{run: positions of its rows}``, runs in order of first appearance."""
    codes, uniques = pd.factorize(frame["run"], sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {run: order[bounds[i] : bounds[i + 1]] for i, run in enumerate(uniques)}


def reconstruct(
    frame: pd.DataFrame,
    runs_extra: pd.DataFrame | None = None,
    *,
    decay: float = DEFAULT_DECAY,
    schedules: dict | None = None,
) -> pd.DataFrame:
    """Add the schedule covariates to every row of a curves frame.

    ``schedules``: :func:`run_schedules` of ``frame`` and ``runs_extra`` when
    the caller has it already (it is not computed twice; on a family of 240
    runs it takes a quarter of a second).

    Returns a copy of ``frame`` with columns

    * ``lr_mult``: ``h(D)``;
    * ``s1``: ``S1(D)`` in tokens;
    * ``s2``: ``S2(D)`` in tokens, and ``anneal = S2 / τ`` (dimensionless);
    * ``memory_tokens``: ``τ``;
    * ``warmup_tokens``: the end of the run's learning-rate warmup (0 without one);
    * ``schedule_known``: False for runs whose schedule is unknown (their
      covariates are NaN);
    * ``schedule_note``: the reason a schedule is unknown, or the assumptions
      made to complete it (empty when none).
    """
    info = run_schedules(frame, runs_extra) if schedules is None else schedules
    out = frame.copy()
    cols = {
        c: np.full(len(frame), np.nan)
        for c in ("lr_mult", "s1", "s2", "memory_tokens", "warmup_tokens")
    }
    known = np.zeros(len(frame), bool)
    note = np.full(len(frame), "", dtype=object)
    tokens = frame["tokens"].to_numpy(float)
    for run, idx in _run_rows(frame).items():
        si = info[run]
        notes = list(si.notes)
        if si.schedule is not None:
            d = tokens[idx]
            tau, tau_note = memory_tokens(si.schedule, decay)
            if tau_note:
                notes.append(tau_note)
            cols["lr_mult"][idx] = lr_multiplier(si.schedule, d)
            cols["s1"][idx] = lr_area(si.schedule, d)
            cols["s2"][idx] = anneal_area(si.schedule, d, tau=tau)
            cols["memory_tokens"][idx] = tau
            cols["warmup_tokens"][idx] = si.schedule.warmup
            known[idx] = True
        note[idx] = "; ".join(notes)
    for c, v in cols.items():
        out[c] = v
    out["anneal"] = out["s2"] / out["memory_tokens"]
    out["schedule_known"] = known
    out["schedule_note"] = note
    return out


#: Schedules a prediction can name (:func:`named_schedule`), all without warmup.
NAMED_SCHEDULES: dict[str, str] = {
    "constant": "constant LR to the horizon",
    "cosine": "cosine decay from the start to 0.1 x peak at the horizon",
    "linear": "linear decay from the start to 0 at the horizon",
    "wsd": "warmup-stable-decay: constant, then linear cooldown to 0 over the last 20%",
}


def named_schedule(name: str, horizon: float, *, tokens_per_step: float | None = None) -> Schedule:
    """Build a schedule of :data:`NAMED_SCHEDULES` over ``horizon`` tokens.

    Parameters
    ----------
    name : str
        ``constant``, ``cosine``, ``linear`` or ``wsd``.
    horizon : float
        The run's planned length in tokens.
    tokens_per_step : float, optional
        Sets the momentum memory (:func:`memory_tokens`).

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        If ``name`` is not a named schedule.
    """
    kw = {"horizon": float(horizon), "tokens_per_step": tokens_per_step}
    if name == "constant":
        return Schedule(**kw)
    if name == "cosine":
        return Schedule(decay_shape="cosine", floor=0.1, **kw)
    if name == "linear":
        return Schedule(decay_shape="linear", floor=0.0, **kw)
    if name == "wsd":
        return Schedule(decay_shape="linear", floor=0.0, decay_start=0.8 * float(horizon), **kw)
    raise ValueError(f"schedule {name!r} unknown; named schedules: {', '.join(NAMED_SCHEDULES)}")


def with_decay(
    sched: Schedule, name: str, horizon: float, decay_start: float | None = None
) -> Schedule:
    """``sched``'s warmup and stable phase, then the decay of named schedule ``name``.

    The question a warmup-stable-decay user asks of a run in its stable phase
    ("if I cool it down from here, or over the last 20% of a longer horizon,
    where does it end?"): the warmup, two-stage pieces and tokens per step of
    ``sched`` are kept; horizon, decay shape, floor and decay start come from
    :func:`named_schedule` (``name`` over ``horizon``), the start replaced by
    ``decay_start`` when given.

    Parameters
    ----------
    sched : Schedule
        The run's own schedule.
    name : str
        ``constant``, ``cosine``, ``linear`` or ``wsd`` (:data:`NAMED_SCHEDULES`).
    horizon : float
        Tokens at which the new decay ends.
    decay_start : float, optional
        Tokens at which it starts (default: the named schedule's start: the
        end of the warmup, or 80% of ``horizon`` for ``wsd``).

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        If ``name`` is unknown or the pieces do not make a schedule (e.g. a
        decay start at or after the horizon).
    """
    named = named_schedule(name, horizon, tokens_per_step=sched.tokens_per_step)
    start = named.decay_start if decay_start is None else float(decay_start)
    return replace(
        sched,
        horizon=float(horizon),
        decay_shape=named.decay_shape,
        floor=named.floor,
        decay_start=start if named.decay_shape != "none" else None,
    )


def scale_schedule(sched: Schedule, horizon: float) -> Schedule:
    """Stretch ``sched`` to a new horizon: every token position scaled by ``horizon / T``.

    Warmup, decay start and the two-stage positions keep their fraction of
    the run; floor, shapes and tokens per step are unchanged.

    Parameters
    ----------
    sched : Schedule
        The schedule to stretch.
    horizon : float
        New horizon in tokens.

    Returns
    -------
    Schedule
    """
    k = float(horizon) / float(sched.horizon)

    def scaled(v):
        return None if v is None else float(v) * k

    return replace(
        sched,
        horizon=float(horizon),
        warmup=sched.warmup * k,
        decay_start=scaled(sched.decay_start),
        stage2_start=scaled(sched.stage2_start),
        stage2_ramp=sched.stage2_ramp * k,
    )


def schedule_covariates(
    sched: Schedule, tokens, *, decay: float = DEFAULT_DECAY
) -> tuple[dict[str, np.ndarray], str]:
    """Compute the covariates of :func:`reconstruct` for one schedule at ``tokens``.

    Parameters
    ----------
    sched : Schedule
        The run's schedule.
    tokens : array_like
        Checkpoints in tokens.
    decay : float
        Momentum decay per step.

    Returns
    -------
    covariates : dict of str to ndarray
        ``lr_mult``, ``s1``, ``s2``, ``anneal`` and ``memory_tokens``.
    note : str
        How the momentum memory was set when the tokens per step are unknown
        (empty otherwise).
    """
    d = np.asarray(tokens, dtype=float)
    tau, note = memory_tokens(sched, decay)
    s2 = anneal_area(sched, d, tau=tau)
    return {
        "lr_mult": lr_multiplier(sched, d),
        "s1": lr_area(sched, d),
        "s2": s2,
        "anneal": s2 / tau,
        "memory_tokens": np.full(d.shape, tau),
    }, note
