"""``plan(...)``: which runs to train next, with the expected interval at the target per FLOP.

See :mod:`hiscale.planning.preposterior` for the method (importance
reweighting of the current draws by each candidate's hypothetical outcomes)
and :mod:`hiscale.planning.greedy` for the sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hiscale._util import json_default
from hiscale.planning.candidates import rule_of_thumb, validate_candidates
from hiscale.planning.greedy import (
    best_greedy_sequence,
    evaluate_sequence,
    greedy_sequence,
    rank_candidates,
    rank_table,
)
from hiscale.planning.preposterior import (
    ESS_MIN,
    N_ROWS,
    PlanDraws,
    Preposterior,
    discrepancy_halfwidth,
    draws_from_fit,
    draws_from_prior,
)
from hiscale.priors.prior import Prior

__all__ = ["Plan", "plan"]


@dataclass
class Plan:
    """The result of :func:`plan`.

    Attributes
    ----------
    target : (float, float)
        Target ``(N, D)``.
    budget : float
        FLOPs to spend.
    level : float
        Central interval probability at the target.
    table : pandas.DataFrame
        Candidates ranked by expected reduction of the relative width per FLOP
        (each added alone to the current state).
    runs : list of dict
        The greedy sequence, in training order.
    widths : list of float
        Expected relative width before any new run, then after each run of ``runs``.
    flops : list of float
        Cumulative FLOPs along ``runs`` (starting at 0).
    source : str
        ``"fit"`` or ``"prior"``.
    scale_known : bool
        Whether absolute widths (loss units) are meaningful.
    stop_reason : str
        Why the greedy sequence stopped.
    notes : list of str
        Assumptions and flags (low ESS, unconverged fit, unknown scale).
    settings : dict
        Seed, outcomes, draws, rows per hypothetical run.
    """

    target: tuple[float, float]
    budget: float
    level: float
    table: pd.DataFrame
    runs: list[dict[str, Any]]
    widths: list[float]
    flops: list[float]
    source: str
    scale_known: bool
    stop_reason: str
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    abs_widths: list[float] | None = None
    preposterior: Preposterior | None = field(default=None, repr=False, compare=False)

    def sequence_widths(self, labels) -> dict[str, list[float]]:
        """Score another sequence of this plan's candidates (e.g. a rule of thumb).

        Uses the plan's own hypothetical outcomes, so sequences compare on equal
        terms. Returns ``flops`` (cumulative, from 0), ``widths`` and ``ess``.
        """
        if self.preposterior is None:
            raise ValueError("this plan kept no preposterior (loaded from JSON?)")
        pos = {lab: i for i, lab in enumerate(self.preposterior_labels)}
        missing = [lab for lab in labels if lab not in pos]
        if missing:
            raise ValueError(f"candidate {missing[0]!r} is not one of this plan's candidates")
        order = [pos[lab] for lab in labels]
        widths, ess = evaluate_sequence(self.preposterior, order)
        f = self.table.set_index("label")["flops"]
        return {
            "flops": [0.0, *np.cumsum([float(f[lab]) for lab in labels]).tolist()],
            "widths": widths,
            "ess": ess,
        }

    def rule_sequence(self, rule: str) -> list[str]:
        """Labels a rule of thumb (:func:`~hiscale.planning.candidates.rule_of_thumb`) picks."""
        cands = self.table.set_index("label").loc[self.preposterior_labels].reset_index()
        return [
            self.preposterior_labels[i]
            for i in rule_of_thumb(cands, self.target, self.budget, rule)
        ]

    @property
    def preposterior_labels(self) -> list[str]:
        """Candidate labels in the preposterior's column order."""
        return list(self.settings.get("candidate_order", []))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``runs`` in training order, the expected widths and the table."""
        table = self.table.replace({np.nan: None}).to_dict(orient="records")
        if not self.scale_known:
            for r in table:
                r.pop("expected_abs_width", None)
        return {
            "target": {"params": self.target[0], "tokens": self.target[1]},
            "budget_flops": self.budget,
            "level": self.level,
            "width": "relative: (upper - lower) / median of the new-run interval at the target",
            "source": self.source,
            "runs": self.runs,
            "expected_widths": self.widths,
            "expected_abs_widths": self.abs_widths if self.scale_known else None,
            "cumulative_flops": self.flops,
            "stop_reason": self.stop_reason,
            "candidates": table,
            "notes": self.notes,
            "settings": {k: v for k, v in self.settings.items() if k != "candidate_order"},
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Return the plan as JSON text (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2, default=json_default)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text


def _as_draws(fit_or_prior, *, law: str, n_draws: int, seed: int) -> PlanDraws:
    if isinstance(fit_or_prior, PlanDraws):
        return fit_or_prior
    if hasattr(fit_or_prior, "theta") and hasattr(fit_or_prior, "prior"):
        return draws_from_fit(fit_or_prior)
    if isinstance(fit_or_prior, (str, Path, Prior)):
        return draws_from_prior(fit_or_prior, law=law, n_draws=n_draws, seed=seed)
    raise TypeError(
        f"plan() needs a Fit, a Prior or a prior name, got {type(fit_or_prior).__name__}"
    )


def _as_candidates(candidates) -> pd.DataFrame:
    if isinstance(candidates, pd.DataFrame):
        if set(("label", "params", "tokens", "flops", "flops_source")) <= set(candidates):
            return validate_candidates(
                candidates.drop(columns=["flops_source"]), source="candidates"
            ).assign(flops_source=candidates["flops_source"].to_numpy())
        return validate_candidates(candidates, source="candidates")
    rows = []
    for i, c in enumerate(candidates):
        try:
            n, d = c
        except (TypeError, ValueError):
            raise ValueError(
                f"candidates: item {i + 1} is {c!r}; give (N, D) pairs or a table"
            ) from None
        rows.append({"params": n, "tokens": d})
    return validate_candidates(pd.DataFrame(rows), source="candidates")


def _sequence(pre, cands, budget, first, min_gain, greedy):
    """Return the greedy sequence of rule ``greedy`` (or the better of both: ``"best"``)."""
    if greedy == "best":
        return best_greedy_sequence(pre, cands, budget, first=first, min_gain=min_gain)
    steps, reason = greedy_sequence(pre, cands, budget, first=first, min_gain=min_gain, rule=greedy)
    return steps, reason, {"rule": greedy}


def plan(
    fit_or_prior,
    *,
    at: tuple[float, float],
    candidates,
    budget: float,
    seed: int = 0,
    n_outcomes: int = 32,
    n_draws: int = 8000,
    level: float = 0.8,
    law: str = "chinchilla",
    n_rows: int | None = None,
    discrepancy="corpus-v1",
    distance: str = "compute",
    aggregate: str = "nearest",
    min_gain: float = 0.0,
    greedy: str = "best",
) -> Plan:
    """Rank candidate runs and pick a sequence that spends ``budget`` FLOPs.

    Parameters
    ----------
    fit_or_prior : Fit, Prior, str or PlanDraws
        A fit of the family's runs so far, or (a family with no runs) a prior
        (``"corpus-v1"``, ``"flat"``, a path or a :class:`~hiscale.priors.prior.Prior`).
    at : (float, float)
        Target ``(N, D)``.
    candidates : pandas.DataFrame or sequence of (N, D)
        Candidate runs (see :mod:`hiscale.planning.candidates`).
    budget : float
        FLOPs to spend on new runs.
    seed : int
        Seed of the prior draws, hypothetical outcomes and target noise
        (same seed -> identical plan).
    n_outcomes : int
        Hypothetical outcomes per candidate.
    n_draws : int
        Prior draws (prior only; a fit uses its posterior draws).
    level : float
        Central interval probability at the target.
    law : str
        Law form (prior only).
    n_rows : int, optional
        End-of-run checkpoints per hypothetical run; default
        :data:`~hiscale.planning.preposterior.N_ROWS`, or 1 when the fit's
        runs all have a single row (final-only tables), so hypothetical runs
        look like the real ones.
    discrepancy : str, float, DiscrepancyPrior or None, default "corpus-v1"
        The law's extrapolation error at the target: a saved population (a
        bundled name such as ``"corpus-v1"``, or a ``discrepancy.json`` path;
        :func:`hiscale.priors.discrepancy.load_discrepancy`), a population
        (:func:`hiscale.backtesting.discrepancy.population_discrepancy`, learned
        from other families' leave-largest-size-out errors) or ``sigma_d`` per
        unit of ``distance``. The default measured better than none on the
        retrospective campaigns (README, "Plan the next runs"). The
        target interval is widened by it (see
        :mod:`hiscale.planning.preposterior`), so only runs nearer the
        target shrink that part. None: the law's draws alone (the law taken
        as exact).
    distance : {"compute", "params"}, default "compute"
        What the discrepancy grows with: the distance in training compute
        ``|ln(C_target / C)|`` (``C = 6 N D``) or in size ``|ln(N_target / N)|``;
        a population must have been learned per unit of the same (its
        ``distance``).
    aggregate : {"nearest", "mean"}, default "nearest"
        The extrapolation distance of a set of runs: the nearest run's, or
        the mean over runs (see :class:`~hiscale.planning.preposterior.Preposterior`).
    min_gain : float, default 0
        Train a run only if it is expected to narrow the target's interval by
        at least this fraction of its current width (e.g. 0.02); the budget
        is a cap, and the sequence stops early when no run is worth it. 0:
        any expected narrowing counts.
    greedy : {"best", "per-flop", "gain"}, default "best"
        What each greedy step maximises: the expected reduction of the
        target's width per FLOP, the reduction itself, or ``"best"``: both
        sequences as whole plans for the budget, keeping the one with the
        smaller final expected width
        (:func:`~hiscale.planning.greedy.best_greedy_sequence`; the plan's
        ``settings["greedy"]`` records both). The default since 2026-12-01:
        on the retrospective campaigns it was 0.72 ARE points better than
        ``"per-flop"`` at 1% of the target's FLOPs and level at 5-30%
        (README, "Plan the next runs").

    Returns
    -------
    Plan
    """
    if greedy not in ("per-flop", "gain", "best"):
        raise ValueError(f"greedy must be 'per-flop', 'gain' or 'best', got {greedy!r}")
    n_t, d_t = (float(v) for v in at)
    for name, v in (("N", n_t), ("D", d_t)):
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"target {name} must be a finite number > 0, got {v!r}")
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a finite number of FLOPs > 0, got {budget!r}")
    cands = _as_candidates(candidates)
    opts = getattr(fit_or_prior, "options", None)
    local_sd = float(getattr(opts, "local_sd", 0.0) or 0.0)
    local_notes = []
    if local_sd > 0 and getattr(opts, "local_learn", False):
        # a learned scale: the candidates' law error at its posterior median
        local_sd = float(np.median(np.asarray(fit_or_prior.to_datatree()["posterior"]["local_sd"])))
        local_notes.append(f"the fit learned local_sd: posterior median {local_sd:.4g} used")
    if local_sd > 0:
        if not np.allclose(opts.local_to, (n_t, d_t), rtol=1e-9):
            raise ValueError(
                f"the fit is local to (N, D) = {tuple(opts.local_to)}, the plan's target is "
                f"{(n_t, d_t)}: refit local to the plan's target"
            )
        if discrepancy is not None:
            # the fit already carries the law's error: widening again counts it twice
            local_notes.append(
                f"discrepancy {getattr(discrepancy, 'label', discrepancy)!s} not used: the fit "
                f"is local to the target (local_sd = {local_sd:g}) and carries the law's error"
            )
            discrepancy = None
    draws = _as_draws(fit_or_prior, law=law, n_draws=n_draws, seed=seed)
    notes = list(draws.notes) + local_notes
    if n_rows is None:
        data = getattr(fit_or_prior, "data", None)
        single = data is not None and len(data) > 0 and data.groupby("run").size().max() == 1
        n_rows = 1 if single else N_ROWS
        if single:
            notes.append("the fitted runs have one row each: hypothetical runs do too")
    if isinstance(discrepancy, (str, Path)):
        from hiscale.priors.discrepancy import load_discrepancy

        discrepancy = load_discrepancy(discrepancy, distance=distance)
    h = discrepancy_halfwidth(discrepancy, level)
    kind = getattr(discrepancy, "distance", None) or distance
    if kind != distance:
        raise ValueError(
            f"the discrepancy population is per unit {kind} distance, the plan's is {distance}"
        )
    data = getattr(fit_or_prior, "data", None)
    fitted = None
    if data is not None and len(data) and {"params", "tokens", "run"} <= set(data):
        g = data.groupby("run", sort=False).agg(n=("params", "first"), d=("tokens", "max"))
        fitted = g[["n", "d"]].to_numpy(float)
    if discrepancy is not None:
        label = getattr(discrepancy, "label", None) or f"sigma_d = {float(discrepancy):g}"
        unit = (
            "|ln(C_target / C_nearest)|, C = 6ND"
            if kind == "compute"
            else ("|ln(N_target / N_nearest)|")
        )
        notes.append(
            f"extrapolation discrepancy {label}: {level:.0%} half-width {h:.4g} in ln L per unit "
            f"{unit}, added to the law's interval"
        )
    kw = dict(
        n_outcomes=n_outcomes,
        seed=seed,
        level=level,
        n_rows=n_rows,
        discrepancy_h=h,
        fitted=fitted,
        distance=distance,
        aggregate=aggregate,
    )
    if local_sd > 0:
        from hiscale.modeling.local import signed_distances

        s_c = signed_distances(cands["params"], cands["tokens"], (n_t, d_t))
        kw["local_var"] = local_sd**2 * np.abs(s_c).sum(axis=1)
        notes.append(
            f"local fit (local_sd = {local_sd:g}): a candidate's information shrinks with its "
            "distance from the target (its error taken as independent of the fitted runs')"
        )
    if draws.scale_known:
        pre = Preposterior(draws, (n_t, d_t), cands, **kw)
        table, now = rank_candidates(pre, cands)
        steps, reason, greedy_info = _sequence(pre, cands, budget, None, min_gain, greedy)
    else:
        # no runs: each candidate's loss-scale proposal is lined up at its own location
        # (same seed, so the same truth draws and noise for every candidate), and the
        # sequence after the first run at the first run's location, where it pins the scale
        single = [
            Preposterior(draws, (n_t, d_t), cands.iloc[[c]].reset_index(drop=True), align=0, **kw)
            for c in range(len(cands))
        ]
        after = [p.widths(p.base(), p.loglik) for p in single]
        stacked = tuple(np.concatenate(x, axis=1) for x in zip(*after, strict=True))
        table, now = rank_table(cands, single[0].current(), stacked)
        ok = table[(table["flops"] <= budget) & (table["reduction"] > 0)]
        first = int(ok["index"].iloc[0]) if len(ok) else None
        pre = Preposterior(draws, (n_t, d_t), cands, align=first, **kw)
        steps, reason, greedy_info = _sequence(pre, cands, budget, first, min_gain, greedy)
    table = table.drop(columns=["index"])
    low = table[table["low_ess"]]
    if len(low):
        notes.append(
            f"{len(low)} of {len(table)} candidates have a median importance-sampling ESS below "
            f"{ESS_MIN:g} (column low_ess): their widths are noisy (no Laplace or refit fallback "
            "is made); more posterior draws or a refit help"
        )
    if any(s.low_ess for s in steps):
        notes.append(
            f"the greedy sequence reaches a median ESS below {ESS_MIN:g}; widths late in the "
            "sequence are noisy"
        )
    if now["ess_median"] < ESS_MIN:
        notes.append(f"the current draws have ESS {now['ess_median']:.0f} < {ESS_MIN:g}")
    runs = [
        {
            "label": s.label,
            "params": s.params,
            "tokens": s.tokens,
            "flops": s.flops,
            "cumulative_flops": s.cumulative_flops,
            "expected_width": s.expected_width,
            **({"expected_abs_width": s.expected_abs_width} if draws.scale_known else {}),
            "ess_median": s.ess_median,
            "low_ess": s.low_ess,
        }
        for s in steps
    ]
    return Plan(
        target=(n_t, d_t),
        budget=float(budget),
        level=float(level),
        table=table,
        runs=runs,
        widths=[now["expected_width"], *(s.expected_width for s in steps)],
        flops=[0.0, *(s.cumulative_flops for s in steps)],
        abs_widths=[now["expected_abs_width"], *(s.expected_abs_width for s in steps)],
        source=draws.source,
        scale_known=draws.scale_known,
        stop_reason=reason,
        notes=notes,
        settings={
            "seed": seed,
            "n_outcomes": pre.n_outcomes,
            "n_draws": draws.n_draws,
            "rows_per_run": n_rows,
            "ess_min": ESS_MIN,
            "criterion": (
                "expected reduction of the relative width"
                + {"per-flop": " per FLOP", "gain": ""}[greedy_info["rule"]]
                + ", greedy"
            ),
            "greedy": greedy_info,
            "discrepancy_halfwidth": h,
            "discrepancy_distance": distance,
            "discrepancy_aggregate": aggregate,
            "min_gain": min_gain,
            "candidate_order": cands["label"].tolist(),
        },
        preposterior=pre,
    )
