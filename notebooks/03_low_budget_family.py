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
# # A new family seen at one or two sizes
#
# The hardest and most common case: a new architecture or dataset trained at
# one or two small sizes, and a decision to make about a large run. With one
# size the size exponent α is not identified by the family's own data at all;
# the paper's answer (§5) is to *borrow* `a` and `α` from another family's fit.
# hiscale borrows a distribution instead: the population prior says what α and
# the loss shares usually are across families, with their spread, and the
# posterior of the new family says how sure the prediction is.
#
# On the real corpus, with the paper's protocol (target = the family's largest
# model, last30 rows; training = the k = 1 or 2 smallest sizes, tokens > 10B):
#
# * `paper`: least squares (k = 1: `a`, `α` fixed at the Datablations fit);
# * `bayes`: population prior built **without** the family's group
#   (leave-one-family-out, same loss unit);
# * `bayes-flat`: weak prior, no borrowing.
#
# Fast mode (`HISCALE_FAST=1`): GPT-3 only, p = 1.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import hiscale
from hiscale.backtesting.loo_prior import leave_one_out_prior
from hiscale.backtesting.protocol import make_cells
from hiscale.plots import plot_curves, plot_exponents, plot_target_density

hiscale.configure()  # first: 64-bit floats and CPU host devices for JAX

FAST = os.environ.get("HISCALE_FAST") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file())
CORPUS = Path(os.environ.get("HISCALE_CORPUS", REPO.parent / "shared" / "corpus" / "curves.csv"))
corpus = hiscale.load_curves(CORPUS)
FAMILIES = (
    ["gpt3"]
    if FAST
    else ["gpt3", "gemstones", "misfitting", "overtrain-c4", "chinchilla", "pythia"]
)
P_VALUES = (1.0,) if FAST else (0.5, 1.0)
GRID = [(k, p) for k in (1, 2) for p in P_VALUES]
SAMPLER = hiscale.SamplerSettings()  # same settings as the cached leave-one-out priors
print(f"fast mode: {FAST}; families {FAMILIES}; cells {GRID}")

# %% [markdown]
# ## The backtest

# %%
options = {"bayes": {"sampler": SAMPLER}, "bayes-flat": {"sampler": SAMPLER}}
results = hiscale.backtest(
    corpus,
    families=FAMILIES,
    methods=["paper", "bayes", "bayes-flat"],
    grid=GRID,
    include_k1=False,  # k = 1 is already in GRID
    method_options=options,
)
results["width80_%"] = 100 * (results["upper80"] - results["lower80"]) / results["actual"]
cols = ["are_pct", "width80_%", "covered80", "flagged"]
table = results.pivot_table(index=["family", "k", "p"], columns="method", values=cols)
table.round(2)

# %% [markdown]
# Averages over families (each family once), by number of training sizes:

# %%
ok = results[results["status"] == "ok"]
by_k = ok.groupby(["method", "k", "family"])[["are_pct", "width80_%", "covered80"]].mean()
by_k.groupby(["method", "k"]).mean().round(2)

# %% [markdown]
# ## Intervals next to the truth
#
# Each line is one cell's 80% new-run interval relative to the actual loss
# (0 = exact); dots are point predictions (posterior median, or the paper's
# least-squares value).

# %%
fig, ax = plt.subplots(figsize=(8, 0.45 * len(ok) / 3 + 1.5), layout="constrained")
labels = []
colors = {"paper": "#8e44ad", "bayes": "#c0392b", "bayes-flat": "#2c3e50"}
offsets = {"paper": -0.25, "bayes": 0.0, "bayes-flat": 0.25}
for i, ((fam, k, p), g) in enumerate(ok.groupby(["family", "k", "p"])):
    labels.append(f"{fam}, k={k}, p={p:g}")
    for _, r in g.iterrows():
        y = i + offsets[r["method"]]
        rel = 100 * (np.array([r["lower80"], r["predicted"], r["upper80"]]) / r["actual"] - 1)
        if np.isfinite(rel[0]):
            ax.plot([rel[0], rel[2]], [y, y], color=colors[r["method"]], lw=2)
        ax.plot([rel[1]], [y], "o", color=colors[r["method"]], ms=4)
for m, c in colors.items():
    ax.plot([], [], "o-", color=c, label=m)
ax.axvline(0, color="black", lw=0.8)
ax.set_yticks(range(len(labels)), labels, fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("prediction relative to the actual loss (%): 80% new-run interval and point")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## One cell up close: GPT-3 from its smallest model
#
# GPT-3's smallest model (125M) with tokens above 10B, predicting the 175B
# model. Fit the cell's training rows with the leave-one-out population prior
# and with the flat prior:

# %%
gpt3 = corpus.family("gpt3")
cell = next(c for c in make_cells(gpt3, grid=[(1, 1.0)]))
prior = leave_one_out_prior(corpus, "gpt3", sampler=SAMPLER)
fits = {
    "population (without gpt3)": hiscale.fit(
        cell.train, family="gpt3", prior=prior, sampler=SAMPLER
    ),
    "flat": hiscale.fit(cell.train, family="gpt3", prior="flat", sampler=SAMPLER),
}
target = cell.target.frame
N, D = float(target["params"].iloc[0]), float(target["tokens"].max())
final = float(target.loc[target["tokens"].idxmax(), "loss"])
for name, f in fits.items():
    p = f.predict((N, D), ci_prob=0.8).set_index("kind").loc["new_run"]
    print(
        f"{name:>26}: median {p['median']:.3f}, 80% [{p['lower']:.3f}, "
        f"{p['upper']:.3f}], actual final {final:.3f}; {f.verdict()}"
    )

# %%
target_run = corpus.family("gpt3").frame
target_run = target_run[target_run["params"] == N]
fig = plot_curves(
    cell.train,
    fits["population (without gpt3)"],
    at=(N, D),
    actual=target_run[["tokens", "loss"]],
    actual_label="actual 175B run",
    title="gpt3: the 125M model (tokens > 10B) predicting 175B",
)
plt.show()

# %%
for name, f in fits.items():
    fig = plot_target_density(f, (N, D), actual=final)
    fig.axes[0].set_title(f"gpt3 175B at its last checkpoint, prior: {name}", fontsize=10)
    plt.show()

# %%
fig = plot_exponents({f"gpt3 k=1 ({name})": f for name, f in fits.items()}, prior=prior)
plt.show()

# %% [markdown]
# ## Checks (run in CI)

# %%
bayes = results[results["method"] != "paper"]
assert (bayes["status"] == "ok").all(), bayes[bayes["status"] != "ok"]
assert (bayes["lower80"] < bayes["predicted"]).all() and (
    bayes["predicted"] < bayes["upper80"]
).all()
# borrowing narrows the k = 1 intervals compared with the flat prior
k1 = bayes[bayes["k"] == 1].pivot_table(index=["family", "p"], columns="method", values="width80_%")
assert (k1["bayes"] < k1["bayes-flat"]).mean() >= 0.5, k1
assert prior.name.startswith("lofo-") and "gpt3" not in prior.meta.get("families_used", {})
print("all checks passed")
