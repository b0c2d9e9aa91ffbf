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
# # Diagnostics and calibration
#
# Two questions about every Bayesian prediction:
#
# 1. **Did the sampler work?** r̂ (chains agree), effective sample size (enough
#    independent draws), divergences and max-tree-depth hits (the geometry was
#    hard). hiscale flags a fit when any fails (`Fit.diagnostics["flagged"]`).
# 2. **Are the intervals honest?** An 80% interval should contain the actual
#    loss 80% of the time. We check it with backtests, where the answer is
#    known: coverage against nominal level, and the PIT (the predictive CDF at
#    the actual value, uniform when calibrated).
#
# Here the families are **simulated from the population prior itself**
# (`hiscale.modeling.simulate`), so the model is correct by construction: this checks
# the machinery (sampler, tempering, intervals), not whether real families look
# like the prior — notebooks 02 and 03 do that on the corpus.
#
# Per-run PSIS-LOO (`az.loo`) on a fit's `DataTree` then asks which runs are
# hard to predict from the others, and ArviZ's LOO-PIT, rank and energy plots
# read the same tree. Set `HISCALE_FAST=1` for a quick run.

# %%
import os

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hiscale
from hiscale.backtesting.runner import method_summary
from hiscale.infer.settings import THRESHOLDS
from hiscale.plots import plot_calibration

hiscale.configure()  # first: 64-bit floats and CPU host devices for JAX

FAST = os.environ.get("HISCALE_FAST") == "1"
SAMPLER = (
    hiscale.SamplerSettings(num_warmup=150, num_samples=150) if FAST else hiscale.SamplerSettings()
)
N_FAMILIES = 3 if FAST else 10
print(f"fast mode: {FAST}; {N_FAMILIES} simulated families")

# %% [markdown]
# ## Simulated families and a backtest
#
# Families drawn from `corpus-v1` (seed 1, not the demo's), then the paper's
# protocol: predict the largest size from the `k` smallest, keeping a fraction
# `p` of the tokens. Simulated runs are short (20 tokens per parameter), so the
# paper's 10B-token cut is disabled (`min_tokens=0`).

# %%
# max_loss=inf: no plausibility redraws, so the families are exact draws from the prior
frame, truth = hiscale.simulate_families(
    "corpus-v1", n_families=N_FAMILIES, seed=1, max_loss=np.inf
)
curves = hiscale.load_curves(frame)
truth[["family", "sizes_in_data", "alpha", "beta", "sigma_run", "sigma_obs", "target_loss"]]

# %%
# fast mode: three cells per family that exist for every family (>= 5 sizes)
GRID = [(1, 1.0), (2, 0.5), (3, 1.0)] if FAST else "quick"
options = {
    "bayes": {"prior": "corpus-v1", "sampler": SAMPLER},
    "bayes-flat": {"sampler": SAMPLER},
}
results = hiscale.backtest(
    curves,
    families="all",
    methods=["paper", "bayes", "bayes-flat"],
    grid=GRID,
    min_tokens=0,
    include_k1=True,
    method_options=options,
)
print(results["status"].value_counts().to_string())
method_summary(results).round(3)

# %% [markdown]
# ## 1. Did the sampler work?
#
# One row per Bayesian cell; thresholds of the `flagged` verdict:

# %%
print(THRESHOLDS)
bayes_cells = results[results["method"] != "paper"]
diag = bayes_cells.groupby("method").agg(
    cells=("rhat_max", "size"),
    rhat_max=("rhat_max", "max"),
    rhat_median=("rhat_max", "median"),
    ess_min=("ess_min", "min"),
    ess_median=("ess_min", "median"),
    divergences=("divergences", "sum"),
    flagged=("flagged", "sum"),
)
diag.round(3)

# %%
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for method, g in bayes_cells.groupby("method"):
    ax.scatter(g["ess_min"], (g["rhat_max"] - 1).clip(lower=1e-4), label=method, alpha=0.7)
ax.axhline(THRESHOLDS["rhat_max"] - 1, color="grey", ls="--", lw=1, label="r̂ threshold (1.01)")
ax.axvline(THRESHOLDS["ess_min"], color="grey", ls=":", lw=1, label="ESS threshold (100)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("smallest bulk ESS over parameters (draws)")
ax.set_ylabel("largest split r̂ over parameters, minus 1")
ax.set_title("sampler diagnostics per backtest cell", fontsize=10)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Flagged cells are kept in the results (never silently dropped); their
# share by number of training sizes:

# %%
bayes_cells.groupby(["method", "n_sizes_used"])["flagged"].mean().unstack().round(2)

# %% [markdown]
# ## 2. Are the intervals honest?
#
# Coverage of the central new-run intervals at every level (from the PIT
# column: a central interval at level q covers the actual value when
# |PIT − 0.5| ≤ q/2), the directly counted 50%/80% coverage as dots, and the
# PIT histogram. Families weigh equally. Cells of one family share their
# target and most of their training runs, so they are far from independent:
# with few families, expect wide scatter around the diagonal. A PIT histogram
# piling up near 1 means the actual losses sit above the predictions
# (predictions biased low); a U shape means intervals too narrow.

# %%
fig = plot_calibration(results)
plt.show()

# %%
coverage = bayes_cells.groupby("method")[["covered50", "covered80"]].mean()
coverage["mean_width80_%"] = (
    100
    * ((bayes_cells["upper80"] - bayes_cells["lower80"]) / bayes_cells["actual"])
    .groupby(bayes_cells["method"])
    .mean()
)
coverage.round(3)

# %% [markdown]
# How far from 80% may the `bayes` coverage be, with the model right by
# construction? Families are the independent units (cells of one family share
# its target run), so the standard error of the mean family coverage comes from
# the spread of the family coverages, and is at least the binomial one of as
# many independent cells. We accept 0.8 ± 3 standard errors. With three
# families (fast mode) that band is wide; it narrows with more families.

# %%
family_cov80 = bayes_cells[bayes_cells["method"] == "bayes"].groupby("family")["covered80"].mean()
n_cells = int((bayes_cells["method"] == "bayes").sum())
se80 = max(
    float(family_cov80.std(ddof=1) / np.sqrt(len(family_cov80))),
    float(np.sqrt(0.8 * 0.2 / n_cells)),
)
band80 = (0.8 - 3 * se80, 0.8 + 3 * se80)
print(
    f"bayes 80% coverage {family_cov80.mean():.3f} over {len(family_cov80)} families "
    f"({n_cells} cells); accepted band {band80[0]:.3f} .. {band80[1]:.3f}"
)

# %% [markdown]
# Per family the question is sharper: with one target per family, even exact
# intervals give each family a *random* coverage, and cells sharing a target
# miss together. `family_band_table` gives, per family, the probability that a
# calibrated method lands in a band (here 60–95% at 80%), for independent cells
# (ρ = 0) and for cells correlated like this method's probit PITs within
# families (`probit_icc`); the last row is every family at once. Read a
# family's miss of the band against these numbers before calling it
# miscalibrated.

# %%
from hiscale.backtesting.band import family_band_table, probit_icc

icc = probit_icc(bayes_cells, "bayes")
band_table = family_band_table(bayes_cells, "bayes", 0.8, (0.6, 0.95), rhos=(0.0, round(icc, 2)))
band_table.round(3)

# %% [markdown]
# ## 3. Leave-one-run-out: PSIS-LOO on one fit
#
# `Fit.to_datatree()` returns an ArviZ 1.x `DataTree` whose `log_likelihood`
# has one entry **per run** (the run offset is integrated out, so the
# likelihood factorises over runs, not over checkpoints). `az.loo` then
# estimates how well each run is predicted from the others. A large Pareto k
# (ArviZ warns above min(0.7, 1 − 1/log10 S), i.e. 0.6 for S = 300 draws) marks a
# run the importance sampling cannot handle: an influential run, here typically
# the largest or smallest size.

# %%
family = truth["family"].iloc[0]
fits = {
    p: hiscale.fit(curves, family=family, prior=p, seed=0, sampler=SAMPLER)
    for p in ("corpus-v1", "flat")
}
trees = {p: f.to_datatree() for p, f in fits.items()}
dt = trees["corpus-v1"]
print(list(dt.children))
az.summary(dt, var_names=["alpha", "beta", "log_scale", "sigma_run", "sigma_obs"], round_to="none")

# %%
# ArviZ's diagnose() misses NumPyro's tree-depth field name; count it directly
print("max-tree-depth hits:", int(dt["sample_stats"]["reached_max_tree_depth"].sum()))
print("divergences:", int(dt["sample_stats"]["diverging"].sum()))
loo = az.loo(dt, var_name="run_log_loss")
print(loo)
pareto_k = pd.Series(np.asarray(loo.pareto_k), index=dt["log_likelihood"]["run"].values)
pareto_k.round(2).to_frame("pareto_k")

# %% [markdown]
# Model comparison by expected log predictive density of held-out runs
# (`az.compare`, stacking weights). On data drawn from the population the
# two priors fit the observed runs about equally well — the prior's value is in
# extrapolation, which LOO over observed runs does not measure.

# %%
comparison = az.compare(trees, round_to="none")
comparison

# %% [markdown]
# ## 4. ArviZ's checks on one fit: LOO-PIT, rank plots, energy
#
# The tree follows ArviZ's conventions: `observed_data`, `posterior_predictive`
# and `log_likelihood` share the per-run variable `run_log_loss` (a run's mean
# log loss; its replicate is a *new* run at the run's rows, drawn once at fit
# time from the fit's seed), so ArviZ's leave-one-out tools pair them.
#
# **LOO-PIT** (`az.loo_pit`): for each run, the predictive CDF of a new run,
# given the *other* runs (PSIS weights), at the run's observed mean log loss.
# Reading: uniform values mean calibrated leave-one-run-out predictions; values
# piled near 0 or 1 mark runs the others do not predict.

# %%
loo_pit = az.loo_pit(dt, var_names="run_log_loss")["run_log_loss"]
print(loo_pit.to_series().round(3).to_string())
pc = az.plot_loo_pit(dt, var_names=["run_log_loss"])
plt.show()

# %% [markdown]
# **Rank plot** (`az.plot_rank`): each chain's draws ranked among all chains'.
# Reading: every chain's rank ECDF inside the envelope means the chains sample
# the same distribution (the picture behind r̂); a chain outside it is stuck
# in another region.

# %%
pc = az.plot_rank(dt, var_names=["alpha", "beta", "log_scale", "sigma_run", "sigma_obs"])
plt.show()

# %% [markdown]
# **Energy plot** (`az.plot_energy`, from `sample_stats/energy`): the marginal
# energy distribution against the energy change between draws. Reading: when
# the two have similar widths (E-BFMI above 0.3, printed per chain) the
# momentum resampling reaches the posterior's tails; a much narrower transition
# distribution means NUTS explores the tails slowly.

# %%
pc = az.plot_energy(dt)
plt.show()
print("E-BFMI per chain:", np.round(np.asarray(az.bfmi(dt)["energy"]), 2))

# %% [markdown]
# ## Checks (run in CI)

# %%
ok = results[results["status"] == "ok"]
assert len(ok) == len(results), results[results["status"] != "ok"]
assert bayes_cells[["rhat_max", "ess_min", "pit_mean"]].notna().all().all()
# the verdict follows the thresholds: a cell past any of them is flagged
past = (
    (bayes_cells["rhat_max"] > THRESHOLDS["rhat_max"])
    | (bayes_cells["ess_min"] < THRESHOLDS["ess_min"])
    | (bayes_cells["divergences"] > THRESHOLDS["divergences"])
)
assert bayes_cells.loc[past, "flagged"].astype(bool).all()
# intervals are nested around the point prediction (bounds are means over the scored rows)
nested = bayes_cells[["lower80", "lower50", "predicted", "upper50", "upper80"]].to_numpy()
assert (np.diff(nested, axis=1) >= 0).all(), bayes_cells
assert (bayes_cells["covered50"] <= bayes_cells["covered80"]).all()
# the model is right by construction: 80% coverage within the band around 0.8 ...
assert band80[0] <= family_cov80.mean() <= band80[1], (family_cov80, band80)
# ... and the true population prior gives narrower intervals than the weak prior
width = coverage["mean_width80_%"]
assert width["bayes"] < width["bayes-flat"], width
probs = band_table.filter(like="p_band").to_numpy()
assert ((probs >= 0) & (probs <= 1)).all()
assert np.allclose(probs[-1], probs[:-1].prod(axis=0))  # every family: the product
assert np.isfinite(loo.elpd) and len(pareto_k) == fits["corpus-v1"].data["run"].nunique()
assert set(comparison.index) == {"corpus-v1", "flat"}
assert loo_pit.sizes["run"] == len(pareto_k) and ((loo_pit >= 0) & (loo_pit <= 1)).all()
bfmi = np.asarray(az.bfmi(dt)["energy"])
assert np.allclose(bfmi.min(), fits["corpus-v1"].diagnostics["bfmi_min"])
print("all checks passed")
