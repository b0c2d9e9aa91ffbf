"""MODEL_CARD.md for a population prior, generated from the prior's ``meta``.

The card says what the prior is for, which families and rows went in, which
were left out and why, how it was sampled and how to rebuild it. Everything
comes from :attr:`hiscale.priors.prior.Prior.meta` (written by
:func:`hiscale.population.build_prior`), so the card cannot drift from the
numbers in ``prior.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hiscale.priors.prior import Prior

__all__ = ["discrepancy_section", "model_card", "write_model_card"]


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    return str(v)


def _rhat(v: Any) -> str:
    return f"{float(v):.3f}" if isinstance(v, (int, float, np.number)) else str(v)


def _kv_table(d: dict[str, Any]) -> list[str]:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {_rhat(v) if 'rhat' in k else _fmt(v)} |" for k, v in d.items()]
    return lines


def _parameter_table(prior: Prior) -> list[str]:
    lines = [
        "| parameter | prior mean | prior sd | new family, 95% range |",
        "|---|---|---|---|",
    ]
    for name, mu, sd in zip(prior.names, prior.loc, prior.sd, strict=True):
        lo, hi = mu - 1.96 * sd, mu + 1.96 * sd
        if name.startswith("log_"):
            rng = f"{name[4:]} in [{np.exp(lo):.3g}, {np.exp(hi):.3g}] (median {np.exp(mu):.3g})"
        else:
            rng = f"[{lo:.3g}, {hi:.3g}]"
        lines.append(f"| `{name}` | {mu:.3f} | {sd:.3f} | {rng} |")
    return lines


def _units_lines(meta: dict) -> list[str]:
    """How families were grouped into independent population units (step 2)."""
    units = meta.get("population_units")
    if not units:
        return []
    pooled = meta.get("pool_groups", False)
    head = (
        "Sibling families of one group (the same models re-run or evaluated differently) "
        "count as one draw from the population: "
        + (
            "their likelihoods are pooled (geometric mean: precisions averaged). "
            if "likelihoods" in meta
            else "their step-1 summaries are averaged. "
        )
        if pooled
        else "Every family counts as an independent draw from the population. "
    )
    parts = [f"`{g}` ({', '.join(m)})" for g, m in units.items()]
    return [head + f"Population units ({len(units)}): " + "; ".join(parts) + ".", ""]


def _likelihood_lines(meta: dict) -> list[str]:
    """Directions each family's data do not identify (step-1 prior divided out)."""
    lik = meta.get("likelihoods")
    if not lik:
        return []
    head = (
        "Before step 2 the flat prior is divided out of each family's Gaussian summary "
        "(`hiscale.population.divide_prior`), so the population sees each family's "
        "likelihood, not the prior once per family. Directions where a family's data "
        f"carry less than {lik['min_information']:g} of the flat prior's information "
        "get none: "
    )
    parts = []
    for fam, d in lik.get("families", {}).items():
        if d["floored_directions"]:
            dirs = "; ".join(
                " ".join(f"{v:+.2f} {n}" for n, v in u.items() if abs(v) >= 0.05)
                for u in d["uninformative"]
            )
            parts.append(f"{fam} ({d['floored_directions']}: {dirs})")
    return [head + ("; ".join(parts) if parts else "no family had such a direction") + ".", ""]


def _size_filter_line(meta: dict) -> str:
    """Which families the size filter admitted (``min_span``, ``min_sizes``)."""
    span, sizes = float(meta["min_span"]), meta.get("min_sizes")
    if span <= 1 and (sizes is None or sizes <= 1):
        return (
            "* size filter: none; a family with a narrow size span (or one size) informs "
            "only the directions its data identify (its likelihood is flat elsewhere)"
        )
    return f"* size filter: families need >= {sizes or 3} sizes spanning >= {span:g}x"


def model_card(prior: Prior, *, command: str | None = None) -> str:
    """Write the Markdown model card of a population prior.

    Parameters
    ----------
    prior : Prior
        A population prior (``meta`` as written by
        :func:`hiscale.population.build_prior`).
    command : str, optional
        Command that rebuilds the prior (default: ``meta["rebuild_command"]``).

    Returns
    -------
    str
        The card's Markdown text.
    """
    meta = prior.meta
    command = command or meta.get("rebuild_command")
    used: dict[str, dict[str, Any]] = meta.get("families_used", {})
    left: dict[str, str] = meta.get("families_left_out", {})
    pop: dict[str, Any] = meta.get("population", {})
    secs: dict[str, float] = meta.get("seconds", {})
    out: list[str] = [f"# Population prior `{prior.name}`", ""]
    out += [
        f"A prior for the scaling-law parameters of a **new** family under the "
        f"`{prior.law}` law, learned from {len(used)} families of training curves "
        f"(hiscale {meta.get('hiscale_version', '?')}, built {meta.get('built', '?')}).",
        "",
        "Use it with `hiscale predict DATA --family F --at N D "
        f"--prior {prior.name}` or `hiscale.fit(..., prior={prior.name!r})`: a family "
        "observed at a few small sizes borrows the shape of the law (size and data "
        "exponents, loss shares) from the families below, while its loss scale "
        "`log_scale` is always its own.",
        "",
        "## Intended use and limits",
        "",
        "* Predicting the loss of a larger model of a family from a few smaller runs of "
        "that family, with predictive intervals.",
        "* The prior describes families *like the ones below* (decoder-only LMs, their "
        "metrics and token budgets). Families unlike them (other architectures, "
        "downstream metrics, heavy data repetition) may be poorly served; compare "
        "with `--prior flat`.",
        "* Backtesting a family that is in this prior would leak its answer: the "
        "backtest rebuilds the prior without the family's group "
        "(`hiscale.backtesting.loo_prior.leave_one_out_prior`).",
        "",
        "## Data",
        "",
        f"* data hash (SHA-256 of `family, run, params, tokens, loss`, 16 hex): "
        f"`{meta.get('data_hash', '?')}`",
    ]
    if meta.get("data_paths"):
        out.append(f"* data file(s): {', '.join(f'`{p}`' for p in meta['data_paths'])}")
    if meta.get("exclude"):
        out.append(f"* excluded on request: {', '.join(f'`{f}`' for f in meta['exclude'])}")
    if meta.get("borrow_from"):
        out.append(
            f"* donor families chosen by the user: "
            f"{', '.join(f'`{f}`' for f in meta['borrow_from'])}"
        )
    if "population_units" in meta:
        out.append(
            f"* independent groups (population units of step 2): {len(meta['population_units'])}"
        )
    if "min_span" in meta:
        out.append(_size_filter_line(meta))
    out += ["", f"### Families used ({len(used)})", ""]
    if used:
        out += [
            "| family | rows fitted | runs | step-1 r̂ max | flagged | fit seconds |",
            "|---|---|---|---|---|---|",
        ]
        for fam, d in used.items():
            out.append(
                f"| {fam} | {_fmt(d.get('rows', ''))} | {_fmt(d.get('runs', ''))} | "
                f"{_rhat(d.get('rhat_max', ''))} | {_fmt(d.get('flagged', ''))} | "
                f"{_fmt(d.get('fit_seconds', ''), 2)} |"
            )
        rows = sum(int(d.get("rows", 0)) for d in used.values())
        out += ["", f"Rows fitted in step 1, all families: {rows:,}."]
    out += ["", f"### Families left out ({len(left)})", ""]
    if left:
        out += ["| family | why |", "|---|---|"]
        out += [f"| {fam} | {why} |" for fam, why in left.items()]
    else:
        out.append("None.")
    out += ["", "## The prior", ""]
    out += _parameter_table(prior)
    s = prior.settings
    out += [
        "",
        "`u_a = ln(a/e)`, `u_b = ln(b/e)` are log share ratios of the model-size and "
        "data terms to the irreducible term at N0 = 1e9 parameters, D0 = 1e11 tokens.",
        "",
        "Noise priors (log scale, Normal(mean, sd)): "
        f"run offset `ln sigma_run ~ N({s['sigma_run'][0]:.3f}, {s['sigma_run'][1]:.3f})` "
        f"(median sigma_run {np.exp(s['sigma_run'][0]):.3g}), checkpoint noise "
        f"`ln sigma_obs ~ N({s['sigma_obs'][0]:.3f}, {s['sigma_obs'][1]:.3f})` "
        f"(median {np.exp(s['sigma_obs'][0]):.3g}); Student-t degrees of freedom "
        f"{_fmt(s['df_run'])} (runs) and {_fmt(s['df_obs'])} (checkpoints).",
        "",
        "## How it was built",
        "",
        "Two steps (`hiscale.population.build_prior`): (1) each family is fitted with "
        "the flat prior and its posterior summarised as a Gaussian; (2) a normal-normal "
        "population model is sampled with NUTS, and the prior is its predictive "
        "distribution for a new family, moment-matched to one Gaussian.",
        "",
        *_units_lines(meta),
        *_likelihood_lines(meta),
        "### Step 1: per-family fits",
        "",
    ]
    out += _kv_table({**meta.get("step1_options", {}), **meta.get("step1_sampler", {})})
    out += ["", "### Step 2: population model", ""]
    out += _kv_table(
        {
            k: pop[k]
            for k in ("num_warmup", "num_samples", "num_chains", "rhat_max", "divergences")
            if k in pop
        }
    )
    hyper = pop.get("hyperpriors")
    if hyper:
        out += [
            "",
            f"Hyperpriors: `mu ~ N(m0, {_fmt(hyper['mu_sd_factor'])} s0)` (m0, s0 the flat "
            f"prior's means and sds), `tau ~ HalfNormal({_fmt(hyper['tau_sd'])})`, "
            f"`Omega ~ LKJ({_fmt(hyper['lkj_concentration'])})`.",
        ]
    cov = meta.get("covariate")
    if cov:
        out += [
            "",
            f"Family covariate `{cov['column']}`: the population mean is shifted by a level "
            "effect `tau_cov * u_level`, `u_level ~ N(0, I)`, `tau_cov ~ HalfNormal(tau_sd)`; "
            f"this prior is the one for a new family at level `{cov['target_level']}`. "
            "Levels of the groups: "
            + ", ".join(f"{g} = `{lv}`" for g, lv in cov["unit_levels"].items())
            + ".",
        ]
        if cov.get("note"):
            out += ["", f"Note: {cov['note']}."]
        if cov.get("mixed_units"):
            out += [
                "",
                f"Groups whose members differ (their most common level is used): "
                f"{', '.join(cov['mixed_units'])}.",
            ]
    verdict = (
        "converged"
        if pop.get("rhat_max", 2) <= 1.01 and not pop.get("divergences")
        else ("**check**: r̂ > 1.01 or divergences")
    )
    out += ["", f"Population sampler verdict: {verdict}.", ""]
    if secs:
        out.append(
            "Time: "
            + ", ".join(f"{k} {float(v):.1f} s" for k, v in secs.items())
            + f" (seed {meta.get('seed', '?')})."
        )
        fit_secs = [float(d["fit_seconds"]) for d in used.values() if "fit_seconds" in d]
        if fit_secs:
            out.append(
                f"The step-1 fits took {sum(fit_secs):.1f} s in all when they were run "
                "(fits reused from the cache count there, not in `step1` above)."
            )
        out.append("")
    out += ["## Rebuild", ""]
    if command:
        out += ["```bash", command, "```", ""]
    else:
        out += ["The command was not recorded.", ""]
    out += [
        "Files: `prior.json` (the prior: `names`, `loc`, `cov`, `settings`, `meta`) and "
        "this card, generated from it by `hiscale.priors.card.write_model_card`.",
        "",
    ]
    return "\n".join(out)


def write_model_card(prior: Prior, directory: str | Path, *, command: str | None = None) -> Path:
    """Write ``MODEL_CARD.md`` next to ``prior.json`` in ``directory``.

    Parameters
    ----------
    prior : Prior
        A population prior.
    directory : str or pathlib.Path
        Output folder (created if needed).
    command : str, optional
        Command that rebuilds the prior (see :func:`model_card`).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(directory) / "MODEL_CARD.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = model_card(prior, command=command)
    extra = discrepancy_section(Path(directory))
    path.write_text(text.rstrip("\n") + "\n\n" + extra if extra else text)
    return path


def discrepancy_section(directory: str | Path) -> str:
    """Markdown section on the folder's ``discrepancy.json``, or ``""`` when there is none.

    Parameters
    ----------
    directory : str or pathlib.Path
        A prior's folder.

    Returns
    -------
    str
        What the file holds (families, groups, the population of ``sigma_d`` in
        both distances) and the command that rebuilds it.
    """
    import json

    from hiscale.priors.discrepancy import DISCREPANCY_FILE, load_discrepancy

    path = Path(directory) / DISCREPANCY_FILE
    if not path.is_file():
        return ""
    raw = json.loads(path.read_text())
    lines = [
        "## Extrapolation discrepancy (`discrepancy.json`)",
        "",
        "Each family's leave-largest-size-out error (fit without its largest size, flat "
        "prior; the error of the held size's end rows in ln L) and its group: the evidence "
        "the population of the law's extrapolation error sigma_d is learned from "
        "(`hiscale.priors.discrepancy.load_discrepancy`; `hiscale plan` adds it to "
        "the target interval by default).",
        "",
        "| distance | families | groups | median sigma_d | log-sd |",
        "|---|---|---|---|---|",
    ]
    for kind, unit in (("params", "per unit ln N"), ("compute", "per unit ln 6ND")):
        pop = load_discrepancy(path, distance=kind)
        lines.append(
            f"| {kind} ({unit}) | {len(pop.families)} | {pop.info.get('groups')} | "
            f"{np.exp(pop.m):.4f} | {pop.s:.2f} |"
        )
    flagged = sorted(f for f, e in raw["errors"].items() if e.get("flagged"))
    if flagged:
        lines += ["", f"Inner fits flagged (unconverged): {', '.join(flagged)}."]
    if raw.get("rebuild_command"):
        lines += ["", "```bash", raw["rebuild_command"], "```"]
    return "\n".join(lines) + "\n"
