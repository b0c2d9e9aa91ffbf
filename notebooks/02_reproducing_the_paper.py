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
# # Reproducing the paper's backtest, then adding intervals
#
# Choshen, Zhang & Andreas (2025), *A Hitchhiker's Guide to Scaling Law
# Estimation*, score a scaling-law estimator by **backtesting**: in each
# family, hide the largest model, fit the law on the `k` smallest models
# keeping a fraction `p` of their tokens (after dropping checkpoints below
# 10B tokens), predict the hidden model and report the absolute relative error
#
# $$\mathrm{ARE} = \frac{1}{|T|}\sum_{i\in T} \frac{|L_i - \hat L_i|}{L_i}\ (\%),$$
#
# averaged within each family and then across families (a *macro* average),
# in a heatmap of #models × p. `hiscale.backtesting.paper` is their least-squares estimator
# (one start point, curve_fit), `hiscale.backtesting.runner` their protocol.
#
# This notebook (1) checks the estimator against reference cells, (2) draws the
# paper's heatmap on the corpus, and (3) puts the Bayesian methods on the same
# cells: `bayes` (population prior built **without** the family's group:
# leave-one-family-out) and `bayes-flat` (weak prior, no borrowing).
#
# Every number uses one target definition, **last30** (target rows with tokens
# ≥ 0.7 × the target's last checkpoint, the paper's text), except section 2's
# comparison with the paper's published macro table, which uses **final** (the
# last checkpoint, what the paper's heatmaps show) and says so.
#
# Fast mode (`HISCALE_FAST=1`): GPT-3 only and a handful of cells. The full run
# (all usable families; paper grid for the paper method, the quick grid for
# the Bayesian ones) takes tens of minutes; the leave-one-family-out priors
# are cached in `$HISCALE_CACHE`.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hiscale
from hiscale.backtesting.runner import method_summary, summary_table, usable_families
from hiscale.backtesting.scores import (
    LOW_BUDGET,
    common_cells,
    flag_rates,
    macro_intervals,
    per_family,
)
from hiscale.plots import plot_are_heatmap, plot_calibration

hiscale.configure()  # first: 64-bit floats and CPU host devices for JAX

FAST = os.environ.get("HISCALE_FAST") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file())
CORPUS = Path(os.environ.get("HISCALE_CORPUS", REPO.parent / "shared" / "corpus" / "curves.csv"))
corpus = hiscale.load_curves(CORPUS)
FAMILIES = ["gpt3"] if FAST else usable_families(corpus)
# the Bayesian cells: a few in fast mode, the quick grid otherwise
BAYES_GRID = [(1, 1.0), (2, 1.0), (3, 0.5), (5, 0.3)] if FAST else "quick"
# cell fits use the default sampler: the leave-one-out priors are built with the
# same settings, so their cached step-1 fits are reused across notebooks and runs
SAMPLER = hiscale.SamplerSettings()
print(f"fast mode: {FAST}; {len(FAMILIES)} families; corpus {len(corpus):,} rows")

# %% [markdown]
# ## 1. The estimator on reference cells
#
# `PAPER.md` lists GPT-3 cells recomputed on this corpus (GPT-3 curves are
# digitised; the corpus averages repeated readings, so these differ from the
# paper's own data). The implementation must match within 0.05 points.
#
# One cell has **two** reference values. At k = 2, p = 1.0 the least-squares
# objective has two near-equal optima, and which one `curve_fit` returns
# depends on the CPU's floating-point path, with the same numpy and scipy:
# 10.36 / 10.24 (last30 / final) on one machine, 11.38 / 11.27 on an AMD EPYC
# machine, where an independent reimplementation of the paper's code agrees
# with hiscale on each machine. So the cell must match one of the two optima;
# the other four cells are stable and pinned. (Five parameters fitted by a
# single least-squares run from one start point are fragile: one more reason to
# want a posterior.)

# %%
# each cell lists its reference optima (two for the platform-fragile cell)
reference = pd.DataFrame(
    [(7, 1.0, (1.61,), (1.34,)), (4, 1.0, (2.03,), (1.82,)), (5, 0.3, (0.79,), (0.40,)),
     (2, 1.0, (10.36, 11.38), (10.24, 11.27)), (3, 0.5, (30.97,), (31.41,))],
    columns=["k", "p", "last30", "final"],
)  # fmt: skip
cells = list(zip(reference["k"], reference["p"], strict=True))
got = {
    target: hiscale.backtest(corpus, families="gpt3", methods=["paper"], grid=cells, target=target)
    for target in ("last30", "final")
}
for target, res in got.items():
    reference[f"hiscale_{target}"] = res["are_pct"].round(2).to_numpy()
    # distance to the nearest reference optimum of the cell
    reference[f"miss_{target}"] = [
        min(abs(v - r) for r in refs)
        for v, refs in zip(res["are_pct"], reference[target], strict=True)
    ]
reference

# %% [markdown]
# ## 2. The paper's heatmap (paper method, paper grid)

# %%
paper_final = hiscale.backtest(
    corpus, families=FAMILIES, methods=["paper"], grid="paper", target="final"
)
paper_last30 = hiscale.backtest(corpus, families=FAMILIES, methods=["paper"], grid="paper")
print(
    f"{len(paper_last30)} cells, {int((paper_last30['status'] != 'ok').sum())} failed fits "
    "(kept in the table with their reason, excluded from the averages):"
)
paper_last30.loc[paper_last30["status"] != "ok", "status"].str[:60].value_counts().head()

# %%
fig = plot_are_heatmap(paper_last30, methods=["paper"], vmax=25)
fig.suptitle("paper estimator, target last30", fontsize=10)
plt.show()

# %% [markdown]
# Next to the paper's published macro averages (**final** target, 10B cut, all
# their families; ours: the families run here):

# %%
published = pd.DataFrame(
    {0.2: [18.3, 8.9, 4.0, 1.4], 0.5: [23.2, 10.6, 7.3, 4.7], 1.0: [20.5, 9.8, 5.1, 2.9]},
    index=["2", "4", "5", "8+"],
)
ours = summary_table(paper_final)["paper"]
comparison = pd.concat(
    {"paper (published)": published, "hiscale paper method (final)": ours.reindex(
        index=published.index, columns=published.columns)},
    axis=1,
)  # fmt: skip
comparison.round(1)

# %% [markdown]
# ## 3. Bayesian methods on the same cells
#
# `bayes` borrows from a population prior learned without the family's group
# (e.g. without every `gemstones-*` family for `gemstones`), within the family's
# loss unit; `bayes-flat` uses weak defaults. Both predict a *new run* of the
# target, so they also give intervals; the paper method gives a point. The
# Bayesian methods add k = 1 cells (the paper method runs its single-model
# regime there: `a` and `alpha` fixed at the Datablations fit).

# %%
results = hiscale.backtest(
    corpus,
    families=FAMILIES,
    methods=["paper", "bayes", "bayes-flat"],
    grid=BAYES_GRID,
    include_k1=True,
    method_options={"bayes": {"sampler": SAMPLER}, "bayes-flat": {"sampler": SAMPLER}},
    progress=not FAST,
)
method_summary(results).round(3)

# %% [markdown]
# Identical cells only (every method fitted them: `hiscale.backtesting.scores.common_cells`).
# Macro averages count every **family group** once (pythia and pythia-deduped
# share their models, so they are one unit); low budget is k ≤ 3 or p ≤ 0.3
# with k the model sizes actually used. Cells of one family share one target
# run, so the brackets are a 90% family-group bootstrap, not a cell count: with
# a handful of groups they are wide, and with one group (fast mode) they
# collapse to the point.

# %%
METHODS = ["paper", "bayes", "bayes-flat"]
common = common_cells(results, METHODS)
print(f"{len(common) // len(METHODS)} common cells; low budget = {LOW_BUDGET}")
boot = macro_intervals(common, METHODS, seed=0)
boot.table.round(3)

# %%
per_family(common, METHODS).round(3)

# %% [markdown]
# The heatmap on the same common cells (this plot averages within family, then
# across families):

# %%
fig = plot_are_heatmap(common, methods=METHODS, vmax=25)
plt.show()

# %%
flag_rates(results, METHODS)  # over the cells each method fitted

# %% [markdown]
# Interval calibration of the Bayesian methods on these cells (coverage vs
# nominal level, PIT histogram). Notebook 04 explains the diagnostics.

# %%
fig = plot_calibration(results)
plt.show()

# %% [markdown]
# ## Checks (run in CI)

# %%
# the estimator reproduces the reference cells
# (four stable cells at 0.05 points; k = 2, p = 1.0 at 0.05 points of one of its two optima)
assert (reference[["miss_last30", "miss_final"]] <= 0.05).all().all(), reference
assert not summary_table(paper_last30).empty
assert set(results["method"]) == {"paper", "bayes", "bayes-flat"}
bayes = results[results["method"] != "paper"]
assert (bayes["status"] == "ok").all(), bayes[bayes["status"] != "ok"]
assert bayes[["lower80", "upper80", "pit_mean"]].notna().all().all()
assert len(common) > 0 and len(common) % len(METHODS) == 0
assert np.isfinite(boot.table[["estimate", "lower", "upper"]].to_numpy()).all()
assert (boot.table["lower"] <= boot.table["upper"]).all()
print("all checks passed")
