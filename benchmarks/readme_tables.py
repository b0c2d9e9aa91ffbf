"""Print the README's result tables (markdown) from the benchmark outputs.

Usage::

    python benchmarks/readme_tables.py [--results benchmarks/results]

Reads ``bayes_grid.json`` (and, when present, ``bayes_grid_cells.csv``, from
which every aggregate is recomputed with ``hiscale.backtesting.scores``), ``ablations.json``
and ``speed.json``; nothing is typed in by hand. A ``bayes_grid.json`` written
before schema 2 (no cells CSV) lacks most figures the README now reports; the
tables then show what can be derived from it and say what needs a re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

QUANTITY_LABELS = {
    "are_pct": "macro ARE (%)",
    "are_pct_low_budget": "macro ARE, low budget (%)",
    "are_pct_k1": "macro ARE, k = 1 (%)",
    "are_pct_k2": "macro ARE, k ≤ 2 (%)",
    "are_pct_early": "macro ARE, p ≤ 0.3 (%)",
    "are_pct_early_many": "macro ARE, p ≤ 0.3 and k ≥ 4 (%)",
    "covered80": "80% interval coverage",
    "covered50": "50% interval coverage",
}


def _fmt(v, nd=2):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _ci(rec, nd=2):
    """``estimate [lower, upper]`` of an interval record, or "–"."""
    if rec is None or rec.get("estimate") is None:
        return "–"
    return f"{_fmt(rec['estimate'], nd)} [{_fmt(rec['lower'], nd)}, {_fmt(rec['upper'], nd)}]"


def _pick(records, statistic, quantity, method):
    for r in records:
        if (r["statistic"], r["quantity"], r["method"]) == (statistic, quantity, method):
            return r
    return None


def _frac(num, den):
    return f"{num}/{den} ({100 * num / den:.0f}%)" if den else "–"


def _header(js) -> list[str]:
    minutes = f" ({js['total_seconds'] / 60:.0f} min)" if "total_seconds" in js else ""
    return [f"Measured {js['date']} on {js['machine']}; `{js['command']}`{minutes}.", ""]


# --- bayes_grid --------------------------------------------------------------------------


def load_grid(res_dir: Path) -> dict:
    """``bayes_grid.json``, with its aggregates recomputed from the cells CSV when present."""
    js = json.loads((res_dir / "bayes_grid.json").read_text())
    cells = res_dir / "bayes_grid_cells.csv"
    if cells.is_file():
        from bayes_grid import summarise

        boot = js.get("bootstrap", {})
        res = pd.read_csv(cells)
        summ = summarise(
            res,
            methods=js.get("methods") if js.get("schema") == 2 else None,
            n_boot=boot.get("n_boot", 2000),
            seed=boot.get("seed", 0),
            level=boot.get("level", 0.9),
        )
        meta = {k: v for k, v in js.items() if k not in summ and k not in ("methods",)}
        js = {**meta, **summ, "recomputed_from": cells.name}
    return js


def grid_tables(js: dict) -> str:
    """The README's accuracy and calibration tables (schema 2)."""
    if js.get("schema") != 2:
        return grid_tables_v1(js)
    methods = js["methods"]
    com = js["common"]
    iv = com["intervals"]
    boot = js["bootstrap"]
    d = js["definitions"]
    out = _header(js)
    groups = com["groups"]
    fams = ", ".join(f"{f} {n}" for f, n in com["cells_per_family"].items())
    out += [
        f"Common cells (fitted by every method): **{com['cells']}** over "
        f"{len(com['cells_per_family'])} families in {len(groups)} family groups "
        f"(cells per family: {fams}). Macro = {d['macro']}. Low budget = {d['low_budget']}. "
        f"Brackets: {100 * boot['level']:.0f}% {d['interval']}, "
        f"{boot['n_boot']} replicates, seed {boot['seed']}; {len(groups)} groups are the "
        "independent units, so these intervals are rough.",
        "",
        "| common cells | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for q, label in QUANTITY_LABELS.items():
        nd = 3 if q.startswith("covered") else 2
        cells = [_ci(_pick(iv, "macro", q, m), nd) for m in methods]
        if any(c != "–" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    flagged = {r["method"]: r for r in com["flagged"]}
    out.append(
        "| flagged fits / common cells | "
        + " | ".join(_frac(flagged[m]["flagged"], flagged[m]["fitted"]) for m in methods)
        + " |"
    )
    sec = js["seconds_per_cell_median"]
    out.append(
        "| median seconds per cell | " + " | ".join(_fmt(sec.get(m), 2) for m in methods) + " |"
    )
    comp = [r for r in iv if r["statistic"] in ("ratio", "difference")]
    if comp:
        out += ["", "| comparison (common cells) | estimate [90% interval] |", "|---|---|"]
        for r in comp:
            what = "ARE ratio" if r["statistic"] == "ratio" else "ARE difference (points)"
            out.append(f"| {what} {r['method']}, {QUANTITY_LABELS[r['quantity']]} | {_ci(r, 2)} |")
    out += [
        "",
        "Each method on every cell it fitted (its own cells and denominators; not a "
        "comparison between methods):",
        "",
        "| method | fitted / run | macro ARE (%) | low budget (%) | 80% coverage | "
        "50% coverage | flagged / fitted |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        own = js["own_cells"][m]
        fr = own["flag_rate"]
        r = own.get("intervals", [])
        out.append(
            f"| {m} | {fr['fitted']}/{fr['cells']} | {_ci(_pick(r, 'macro', 'are_pct', m))} | "
            f"{_ci(_pick(r, 'macro', 'are_pct_low_budget', m))} | "
            f"{_ci(_pick(r, 'macro', 'covered80', m), 3)} | "
            f"{_ci(_pick(r, 'macro', 'covered50', m), 3)} | {_frac(fr['flagged'], fr['fitted'])} |"
        )
    pf = pd.DataFrame(com["per_family"])
    with_cov = [m for m in methods if pf.loc[pf["method"] == m, "covered80"].notna().any()]
    has_prior = "prior" in pf.columns
    cols = (
        [f"ARE {m}" for m in methods]
        + [f"cov80 / cov50 {m}" for m in with_cov]
        + [f"flagged {m}" for m in with_cov]
        + (["prior (bayes)"] if has_prior and "bayes" in methods else [])
    )
    out += [
        "",
        "Per family, common cells (mean over the family's cells):",
        "",
        "| group | family | cells | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for (g, f), rows in pf.groupby(["group", "family"], sort=True):
        r = rows.set_index("method")
        vals = [_fmt(r.loc[m, "are_pct"]) for m in methods]
        vals += [f"{_fmt(r.loc[m, 'covered80'])} / {_fmt(r.loc[m, 'covered50'])}" for m in with_cov]
        vals += [str(int(r.loc[m, "flagged"])) for m in with_cov]
        if has_prior and "bayes" in methods:
            vals.append(str(r.loc["bayes", "prior"]) or "–")
        out.append(f"| {g} | {f} | {int(r['fitted'].iloc[0])} | " + " | ".join(vals) + " |")
    heat = pd.DataFrame(com["heatmap"])
    if len(heat):
        # the paper's columns when the grid has them, else every p of the grid
        have = set(heat["p"])
        ps = [0.2, 0.5, 1.0] if {0.2, 0.5, 1.0} <= have else sorted(have)
        table = heat[heat["p"].isin(ps)].pivot_table(
            index="models", columns=["method", "p"], values="are_pct"
        )
        order = sorted(table.index, key=lambda s: (s == "8+", int(str(s).rstrip("+"))))
        cols = [(m, p) for m in methods for p in ps if (m, p) in table.columns]
        out += [
            "",
            "Macro ARE (%) on the common cells by #models actually used and p (paper's "
            "heatmap layout; family groups count once):",
            "",
            "| #models | " + " | ".join(f"{m} p={p:g}" for m, p in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for idx in order:
            out.append(f"| {idx} | " + " | ".join(_fmt(table.loc[idx].get(c)) for c in cols) + " |")
    return "\n".join(out)


def grid_tables_v1(js: dict) -> str:
    """What can be derived from a bayes_grid.json written before schema 2 (no cells CSV)."""
    from hiscale.backtesting.scores import macro_intervals

    methods = list(js["macro_are_common"])
    out = _header(js)
    out += [
        "**Old-schema `bayes_grid.json` and no cells CSV**: coverage, flag counts, low-budget "
        "and k = 1 figures and the heatmap on the common cells, and every macro over family "
        "groups except the one below, need a re-run of `python benchmarks/bayes_grid.py`.",
        "",
    ]
    # per-family ARE on the common cells is stored: enough for the group macro and its bootstrap
    per_fam = js["per_family_are_common"]
    rows = [
        {"family": f, "method": m, "are_pct": v, "status": "ok"}
        for m, fams in per_fam.items()
        for f, v in fams.items()
    ]
    boot = macro_intervals(pd.DataFrame(rows), methods, quantities=("are_pct",))
    iv = json.loads(boot.table.to_json(orient="records"))
    out += [
        f"Common cells: {js['common_cells']}; family groups: {len(boot.groups)} "
        f"({', '.join(boot.groups)}). Macro over family groups with 90% family-group "
        f"bootstrap intervals ({boot.n_boot} replicates, seed {boot.seed}):",
        "",
        "| common cells | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
        "| macro ARE (%) | "
        + " | ".join(_ci(_pick(iv, "macro", "are_pct", m)) for m in methods)
        + " |",
        "",
        "| comparison (common cells) | estimate [90% interval] |",
        "|---|---|",
    ]
    for r in iv:
        if r["statistic"] != "macro":
            what = "ARE ratio" if r["statistic"] == "ratio" else "ARE difference (points)"
            out.append(f"| {what} {r['method']} | {_ci(r)} |")
    out += [
        "",
        "Each method on every cell it fitted (macro over families, as stored):",
        "",
        "| method | fitted / run | macro ARE over families (%) | flagged / fitted |",
        "|---|---|---|---|",
    ]
    for m in methods:
        r = js["methods"][m]
        n_fit = r["cells"] - r["failed"]
        out.append(
            f"| {m} | {n_fit}/{r['cells']} | {_fmt(r['macro_are'])} | "
            f"{_frac(r['flagged'], n_fit)} |"
        )
    return "\n".join(out)


# --- ablations ---------------------------------------------------------------------------


def _defined_variants() -> list[str]:
    from ablations import VARIANTS

    return list(VARIANTS)


def ablation_table(js: dict) -> str:
    """One row per variant in the JSON (every variant that was run), then those not run."""
    run = [r["variant"] for r in js["table"]]
    defined = js.get("variants_defined") or _defined_variants()
    out = [
        f"Measured {js['date']}; grid `{js['grid']}`, {js['common_cells']} identical cells "
        f"over {len(js['families'])} families; `{js['command']}`.",
        "",
    ]
    if js.get("schema") == 2:
        boot = js["bootstrap"]
        out += [
            f"Macro over family groups; brackets: {100 * boot['level']:.0f}% family-group "
            f"bootstrap ({boot['n_boot']} replicates, seed {boot['seed']}). Low budget = "
            f"{js['low_budget']}. Flagged: over the common cells.",
            "",
            "| variant | what changes | macro ARE % | low-budget ARE % | k=1 ARE % | cov80 | "
            "cov50 | flagged | s/cell |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in js["table"]:
            out.append(
                f"| {r['variant']} | {r['doc']} | {_ci(r['are_pct'])} | "
                f"{_ci(r['are_pct_low_budget'])} | {_ci(r['are_pct_k1'])} | "
                f"{_ci(r['covered80'])} | {_ci(r['covered50'])} | "
                f"{_frac(r['flagged'], r['cells'])} | {_fmt(r['seconds_per_cell'], 2)} |"
            )
        if js.get("comparisons"):
            out += ["", "| comparison (same cells) | estimate [90% interval] |", "|---|---|"]
            for r in js["comparisons"]:
                what = "ARE ratio" if r["statistic"] == "ratio" else "ARE difference (points)"
                out.append(f"| {what} {r['method']}, {QUANTITY_LABELS[r['quantity']]} | {_ci(r)} |")
    else:
        out += [
            "| variant | what changes | macro ARE % | low-budget ARE % | k=1 ARE % | cov80 | cov50 "
            "| flagged | s/cell |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in js["table"]:
            out.append(
                f"| {r['variant']} | {r['doc']} | {_fmt(r['macro_are'])} | "
                f"{_fmt(r['macro_are_low_budget'])} | {_fmt(r['macro_are_k1'])} | "
                f"{_fmt(r['coverage80'], 2)} | {_fmt(r['coverage50'], 2)} | "
                f"{_frac(r['flagged'], r['cells'])} | {_fmt(r['seconds_per_cell'], 2)} |"
            )
        out += [
            "",
            "(Old-schema ablations.json: macro over families, cell-pooled coverage, no "
            "intervals; re-run `python benchmarks/ablations.py` for the schema-2 table.)",
        ]
    missing = [v for v in defined if v not in run]
    if missing:
        out += ["", f"Defined in `benchmarks/ablations.py` but not run: {', '.join(missing)}."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    res = Path(args.results)
    if (res / "bayes_grid.json").exists():
        print(grid_tables(load_grid(res)), "\n")
    if (res / "ablations.json").exists():
        print(ablation_table(json.loads((res / "ablations.json").read_text())), "\n")
    if (res / "speed.json").exists():
        print(json.dumps(json.loads((res / "speed.json").read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
