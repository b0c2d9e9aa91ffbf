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
# # Quickstart: predict a larger model's loss, with and without borrowing
#
# A *family* is a set of training runs over which one scaling law holds (same
# data, tokenizer, recipe; different model sizes N and token counts D). The main
# job of hiscale: from a few runs of a family, predict the loss of a larger
# model of that family, **with an interval**.
#
# The law (Hoffmann et al. 2022), written in hiscale's unit-free *share form*
# with x = ln(N/1e9), y = ln(D/1e11):
#
# $$L(N, D) = s\,\bigl(e + a\,e^{-\alpha x} + b\,e^{-\beta y}\bigr),\qquad e + a + b = 1.$$
#
# A family seen at only one or two small sizes cannot pin down the size exponent
# α on its own. A *population prior* (`corpus-v1`, learned from the families of
# the real corpus) tells the fit what exponents and shares LM families usually
# have; the flat prior does not.
#
# This notebook uses the simulated demo data (`data/demo_curves.csv`, see
# `data/README.md`): the true law of every family is known, so we can check the
# predictions. Set `HISCALE_FAST=1` for a quick run with a tiny sampler.
#
# The same steps on the command line:
#
# ```bash
# hiscale predict data/demo_curves.csv --family sim3 --at 7e9 1.4e11
# hiscale predict data/demo_curves.csv --family sim3 --at 7e9 1.4e11 --prior flat
# hiscale demo
# ```

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hiscale
from hiscale.backtesting.paper import fit_paper
from hiscale.modeling.simulate import true_loss
from hiscale.plots import plot_curves, plot_target_density

hiscale.configure()  # first: 64-bit floats and CPU host devices for JAX

FAST = os.environ.get("HISCALE_FAST") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file())
# tiny NUTS settings in fast mode (CI); the defaults otherwise
SAMPLER = (
    hiscale.SamplerSettings(num_warmup=150, num_samples=150) if FAST else hiscale.SamplerSettings()
)
print(f"fast mode: {FAST}; sampler: {SAMPLER.num_warmup} warm-up + {SAMPLER.num_samples} draws")

# %% [markdown]
# ## The data
#
# Four simulated families. `sim0`–`sim2` have 6–7 sizes from 50M to 7B
# parameters; `sim3` was only trained at its two smallest sizes.

# %%
curves = hiscale.load_curves(REPO / "data" / "demo_curves.csv")
truth = pd.read_csv(REPO / "data" / "demo_truth.csv").set_index("family")
overview = curves.frame.groupby("family").agg(
    runs=("run", "nunique"),
    rows=("loss", "size"),
    smallest=("params", "min"),
    largest=("params", "max"),
    max_tokens=("tokens", "max"),
)
overview.join(truth[["alpha", "beta", "target_params", "target_tokens", "target_loss"]])

# %%
fig = plot_curves(curves, family="sim0")
plt.show()

# %% [markdown]
# ## A family with two small models
#
# `sim3` has runs at 50M and 114M parameters. We want the loss of its 7B model
# trained on 140B tokens (20 tokens per parameter). The truth table knows the
# answer; the fits do not.

# %%
FAMILY = "sim3"
row = truth.loc[FAMILY].copy()
row["law"] = truth["law"].iloc[0]
N, D = float(row["target_params"]), float(row["target_tokens"])
TRUE = float(row["target_loss"])
print(f"target: N = {N:.3g} parameters, D = {D:.3g} tokens; true loss {TRUE:.4f} nats")

# %% [markdown]
# Fit with the population prior, then with the flat prior. Each fit keeps the
# last 20% of every run (mid-schedule checkpoints of real runs sit above the
# law) and samples the posterior with NUTS; `Fit.verdict()` is the sampler's
# verdict.

# %%
fit_pop = hiscale.fit(curves, family=FAMILY, prior="corpus-v1", seed=0, sampler=SAMPLER)
fit_flat = hiscale.fit(curves, family=FAMILY, prior="flat", seed=0, sampler=SAMPLER)
for name, f in (("corpus-v1", fit_pop), ("flat", fit_flat)):
    print(f"{name:>9}: {f.verdict()}")
print("rows removed before fitting:", *[str(r) for r in fit_pop.log if r.removed], sep="\n  ")

# %% [markdown]
# `predict(at=(N, D))` gives two kinds of interval: the **expected** loss (the
# law at (N, D), parameter uncertainty only) and a **new run** (adds the
# seed-to-seed offset and checkpoint noise). A real 7B run is a new run. The
# result is a tidy frame, one row per (point, kind, `ci_prob`):

# %%
pred_pop = fit_pop.predict((N, D))
pred_flat = fit_flat.predict((N, D))
pred_pop.round(4)


# %%
def new_run(pred: pd.DataFrame) -> dict[str, float]:
    """Median and 80%/95% new-run interval of point 0 of a tidy prediction frame."""
    r = pred[(pred["point"] == 0) & (pred["kind"] == "new_run")].set_index("ci_prob")
    return {
        "median": r["median"].iloc[0],
        "lower80": r.loc[0.8, "lower"],
        "upper80": r.loc[0.8, "upper"],
        "lower95": r.loc[0.95, "lower"],
        "upper95": r.loc[0.95, "upper"],
    }


frame = fit_pop.data
paper = fit_paper(
    curves.family(FAMILY).frame["params"],
    curves.family(FAMILY).frame["tokens"],
    curves.family(FAMILY).frame["loss"],
)
paper_pred = float(paper.predict(N, D)) if paper.ok else float("nan")
table = pd.DataFrame(
    [new_run(pred_pop), new_run(pred_flat), {"median": paper_pred}],
    index=["bayes, corpus-v1", "bayes, flat", "paper least squares"],
)
table["error_%"] = 100 * (table["median"] - TRUE) / TRUE
table["width95"] = table["upper95"] - table["lower95"]
table.round(3)

# %% [markdown]
# The fitted law for both sizes (dashed), the rows the fit saw (circles), the
# new-run 50/80/95% band of the 7B model up to 140B tokens, and the true law of
# the 7B model:

# %%
fig = plot_curves(
    curves,
    fit_pop,
    at=(N, D),
    actual=lambda d: true_loss(row, N, d),
    actual_label="true law at N=7B (simulated)",
)
plt.show()

# %%
fig = plot_target_density(fit_pop, (N, D), actual=TRUE, paper_prediction=paper_pred)
plt.show()
fig = plot_target_density(fit_flat, (N, D), actual=TRUE, paper_prediction=paper_pred)
plt.show()

# %% [markdown]
# ## Saving a fit
#
# A fit *is* one ArviZ `DataTree` (`fit.to_datatree()`: the draws, sampler
# statistics, log-likelihood, replicates, data and every setting in its
# attributes); it round-trips through netCDF, and the reloaded fit predicts
# exactly the same numbers — the
# CLI's `hiscale fit ... --out fit.nc` and `hiscale predict --fit fit.nc` do
# this.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = fit_pop.save(Path(tmp) / "sim3.nc")
    again = hiscale.load_fit(path)
pd.testing.assert_frame_equal(again.predict((N, D)), pred_pop, check_exact=True)
print("reloaded fit predicts identical numbers")

# %% [markdown]
# ## A well-measured family
#
# With many sizes the data speak for themselves and the prior matters less.
# Predict `sim0`'s 7B model from its six smaller sizes:

# %%
train0 = curves.frame[(curves.frame["family"] == "sim0") & (curves.frame["params"] < 7e9)]
row0 = truth.loc["sim0"]
rich = {
    prior: hiscale.fit(train0, family="sim0", prior=prior, seed=0, sampler=SAMPLER).predict(
        (row0["target_params"], row0["target_tokens"])
    )
    for prior in ("corpus-v1", "flat")
}
rich_table = pd.DataFrame({p: new_run(r) for p, r in rich.items()}).T
rich_table["error_%"] = 100 * (rich_table["median"] / row0["target_loss"] - 1)
rich_table.round(3)

# %% [markdown]
# ## Checks (run in CI)

# %%
pop, flat = table.loc["bayes, corpus-v1"], table.loc["bayes, flat"]
assert np.isfinite(table[["median", "lower95", "upper95"]].iloc[:2].to_numpy()).all()
assert pop["lower95"] < pop["lower80"] < pop["median"] < pop["upper80"] < pop["upper95"]
# borrowing: the population prior's interval covers the truth and is closer than flat
assert pop["lower95"] <= TRUE <= pop["upper95"]
assert abs(pop["error_%"]) < abs(flat["error_%"])
# with six sizes both priors predict within a few percent
assert (rich_table["error_%"].abs() < 5).all()
print("all checks passed")
