# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Planning runs: which small models to train next
#
# Every scaling-law fit is a spending decision: which small runs to train so
# that a large run is predicted well enough, for the least compute.
# `hiscale.plan` turns the posterior into that calculation. For each candidate
# run it draws hypothetical outcomes from the current posterior predictive,
# reweights the posterior draws by each outcome's likelihood (the model's own
# per-run likelihood, so a run's information is limited by its seed noise),
# and averages the resulting width of the 80% new-run interval at the target.
# The ranked table gives the expected width after each candidate and the
# reduction per FLOP; a greedy sequence spends a budget.
#
# The family here is simulated from the population prior, so the truth is
# known. Fast mode (`HISCALE_FAST=1`) uses a small sampler.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import hiscale
from hiscale.modeling.simulate import true_loss
from hiscale.planning import plan
from hiscale.planning.candidates import existing_candidates, grid_candidates
from hiscale.plots.plan import plot_plan

hiscale.configure()  # first: 64-bit floats and CPU host devices for JAX

FAST = os.environ.get("HISCALE_FAST") == "1"
SAMPLER = (
    hiscale.SamplerSettings(num_warmup=200, num_samples=400)
    if FAST
    else hiscale.SamplerSettings(num_warmup=500, num_samples=1500)
)
OUTCOMES = 16 if FAST else 32  # hypothetical outcomes per candidate
TARGET = (7e9, 1.4e11)  # a 7B model on 140B tokens
SIZES = [5e7, 1e8, 2e8, 4e8, 8e8]
frame, truth = hiscale.simulate_families(n_families=1, seed=3, sizes=SIZES, n_checkpoints=10)
curves = hiscale.load_curves(frame)
FAMILY = curves.families[0]
TRUE = float(true_loss(truth.iloc[0], *TARGET))
print(f"fast mode: {FAST}; family {FAMILY!r}, runs {sorted(frame['run'].unique())}")
print(f"true expected loss at the target: {TRUE:.4f}")

# %% [markdown]
# ## Before any run: which sizes first?
#
# A family with no runs starts from the population prior alone. Its loss
# scale is not pooled (units differ across families), so the planner reports
# *relative* widths, (upper − lower) / median, and says so in its notes. The
# first run pins the scale, so the cheapest run wins the first step; after
# it, the importance weights from prior draws degenerate quickly, and the
# plan says so: train that run, fit, and plan again.

# %%
grid = grid_candidates(SIZES, [5, 20])
first = plan(
    "corpus-v1",
    at=TARGET,
    candidates=grid,
    budget=1e19,
    seed=0,
    n_draws=2000 if FAST else 8000,
    n_outcomes=OUTCOMES,
)
print(*first.notes, sep="\n")
print("sequence:", [r["label"] for r in first.runs], "-", first.stop_reason)
first.table[["rank", "label", "flops", "expected_width", "reduction_per_flop", "ess_median"]]

# %% [markdown]
# ## A family with two runs: rank the remaining existing runs
#
# Now the smallest two runs are trained. `existing_candidates` turns the other
# runs of the table into candidates (their cost is the table's `flops` or
# 6ND); the plan starts from a fit of the two runs.

# %%
used = sorted(frame["run"].unique(), key=lambda r: frame[frame.run == r]["params"].iloc[0])[:2]
sub = curves.with_frame(curves.frame[curves.frame.run.isin(used)], step="used", reason="not used")
fit2 = hiscale.fit(sub, family=FAMILY, seed=0, sampler=SAMPLER)
print(fit2.verdict())
cands, _ = existing_candidates(curves, FAMILY, used)
budget = 3e19
second = plan(fit2, at=TARGET, candidates=cands, budget=budget, seed=0, n_outcomes=OUTCOMES)
print("now:", round(second.widths[0], 4), "| sequence:", [r["label"] for r in second.runs])
print("stopped:", second.stop_reason)
second.table[["rank", "label", "flops", "expected_width", "reduction_per_flop", "ess_median"]]

# %% [markdown]
# The figure scores the planner's sequence and the rules of thumb (the
# Hitchhiker's "about five models, ~30% of the target's tokens"; cheapest
# first) on the same hypothetical outcomes, with the ladder rule's "1% of
# target compute" as a vertical line. Hollow points have a small effective
# sample size: their widths are noisy.

# %%
fig = plot_plan(second)
plt.show()

# %% [markdown]
# ## The law's own extrapolation error
#
# A posterior that takes the law as exact is narrowed by every cheap small
# run. On real families the law's error grows with the distance to the
# target, so the planner adds that error to the target interval by default
# (`discrepancy="corpus-v1"`): learned from the corpus families'
# leave-largest-size-out errors (`models/corpus-v1/discrepancy.json`, rebuilt by
# `hiscale prior discrepancy DATA --out models/corpus-v1`), in distance of
# training compute (C = 6ND), so only a run nearer the target in compute
# shrinks that part. The plan above used it (see its notes); `discrepancy=None`
# gives the law-only plan for comparison.

# %%
law_only = plan(
    fit2, at=TARGET, candidates=cands, budget=budget, seed=0, n_outcomes=OUTCOMES,
    discrepancy=None,
)  # fmt: skip
print(next(n for n in second.notes if "discrepancy" in n))
print("with the law's error:", [r["label"] for r in second.runs])
print("law only:            ", [r["label"] for r in law_only.runs])
print("widths now:", round(second.widths[0], 4), "vs", round(law_only.widths[0], 4))

# %% [markdown]
# ## Train the planned runs, refit, compare
#
# The campaign continues as a user would run it: train the planned runs
# (here: take them from the simulated table), fit again, and look at the
# interval at the target.

# %%
picked = used + [r["label"] for r in second.runs]
sub3 = curves.with_frame(curves.frame[curves.frame.run.isin(picked)], step="used", reason="x")
fit3 = hiscale.fit(sub3, family=FAMILY, seed=0, sampler=SAMPLER)
rows = []
for name, f in (("2 runs", fit2), (f"{len(picked)} runs", fit3)):
    p = f.predict(TARGET, ci_prob=0.8).query("kind == 'new_run'").iloc[0]
    rel = (p.upper - p.lower) / p["median"]
    rows.append((name, p["median"], p.lower, p.upper, rel))
    print(
        f"{name:>7}: median {p['median']:.4f}, 80% [{p.lower:.4f}, "
        f"{p.upper:.4f}], relative width {rel:.4f}"
    )
print(f"planner's expected relative width after its runs: {second.widths[-1]:.4f}")

fig, ax = plt.subplots(figsize=(5, 3))
for i, (_, med, lo, hi, _) in enumerate(rows):
    ax.errorbar(i, med, yerr=[[med - lo], [hi - med]], fmt="o", capsize=4)
ax.axhline(TRUE, color="black", ls=":", label="true expected loss")
ax.set_xticks(range(len(rows)), [r[0] for r in rows])
ax.set_ylabel("loss at 7B / 140B (80% new-run interval)")
ax.legend()
plt.show()

# %% [markdown]
# ## Checks (run in CI)

# %%
assert first.source == "prior" and any("not pooled" in n for n in first.notes)
assert second.runs and second.runs[-1]["cumulative_flops"] <= budget
assert np.all(np.diff(second.widths) < 0)
# the refit after the planned runs is narrower than the fit of two runs
assert rows[1][4] < rows[0][4]
# the law's extrapolation error only widens the expected interval
assert second.widths[0] > law_only.widths[0] and second.settings["discrepancy_halfwidth"] > 0
# same seed, same plan
again = plan(fit2, at=TARGET, candidates=cands, budget=budget, seed=0, n_outcomes=OUTCOMES)
assert again.to_json() == second.to_json()
print("all checks passed")
