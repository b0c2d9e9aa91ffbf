"""Print the README's result tables (markdown) from the benchmark outputs.

Usage::

    python benchmarks/readme_tables.py [--results benchmarks/results]

Reads ``bayes_grid.json`` / ``bayes_grid_cells.csv``, ``ablations.json`` and
``speed.json`` when present; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def _fmt(v, nd=2):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def grid_tables(res_dir: Path) -> str:
    js = json.loads((res_dir / "bayes_grid.json").read_text())
    cells = pd.read_csv(res_dir / "bayes_grid_cells.csv")
    out = [
        f"Measured {js['date']} on {js['machine']}; `{js['command']}` "
        f"({js['total_seconds'] / 60:.0f} min).",
        "",
    ]
    methods = list(js["macro_are_common"])
    out.append("| | " + " | ".join(methods) + " |")
    out.append("|---|" + "---|" * len(methods))
    rows = [
        ("macro ARE, all common cells (%)", js["macro_are_common"]),
        ("macro ARE, low budget: k ≤ 3 or p ≤ 0.3 (%)", js["macro_are_low_budget_common"]),
        ("macro ARE, k = 1 (%)", js["macro_are_k1_common"]),
    ]
    for label, d in rows:
        out.append(f"| {label} | " + " | ".join(_fmt(d.get(m)) for m in methods) + " |")
    for lv in ("80", "50"):
        d = js[f"cell_coverage{lv}"]
        out.append(
            f"| {lv}% interval coverage (cells) | "
            + " | ".join(_fmt(d.get(m), 3) for m in methods)
            + " |"
        )
    d = js["flagged_cells"]
    out.append("| flagged fits (cells) | " + " | ".join(_fmt(d.get(m, 0)) for m in methods) + " |")
    d = js["seconds_per_cell_median"]
    out.append(
        "| median seconds per cell | " + " | ".join(_fmt(d.get(m), 2) for m in methods) + " |"
    )
    out += [
        "",
        f"Common cells (every method succeeded): {js['common_cells']}. "
        "Ratios to the paper: overall "
        + ", ".join(f"{m} {v:.2f}×" for m, v in js.get("ratio_to_paper", {}).items())
        + "; low budget "
        + ", ".join(f"{m} {v:.2f}×" for m, v in js.get("ratio_to_paper_low_budget", {}).items())
        + ".",
        "",
    ]
    fam = pd.DataFrame(js["per_family_are_common"])
    cov = pd.DataFrame(js["coverage_per_family"])
    out.append(
        "| family | "
        + " | ".join(f"ARE {m}" for m in fam.columns)
        + " | cov80 bayes | cov50 bayes |"
    )
    out.append("|---|" + "---|" * (len(fam.columns) + 2))
    for f, r in fam.iterrows():
        c = cov[(cov["family"] == f) & (cov["method"] == "bayes")]
        c80 = _fmt(float(c["covered80"].iloc[0]), 2) if len(c) else "–"
        c50 = _fmt(float(c["covered50"].iloc[0]), 2) if len(c) else "–"
        out.append(f"| {f} | " + " | ".join(_fmt(v) for v in r.values) + f" | {c80} | {c50} |")
    ok = cells[cells["status"] == "ok"].copy()
    ok["models"] = ok["n_sizes_used"].map(lambda n: "8+" if n >= 8 else str(int(n)))
    heat = (
        ok[ok["p"].isin([0.2, 0.5, 1.0])]
        .groupby(["method", "models", "p", "family"])["are_pct"]
        .mean()
        .groupby(["method", "models", "p"])
        .mean()
        .unstack(["method", "p"])
    )
    order = sorted(heat.index, key=lambda s: (s == "8+", int(s.rstrip("+"))))
    heat = heat.loc[order]
    out += ["", "Macro ARE (%) by #models in the training rows and p (paper's heatmap layout):", ""]
    cols = [
        (m, p)
        for m in ("paper", "bayes", "bayes-flat")
        for p in (0.2, 0.5, 1.0)
        if (m, p) in heat.columns
    ]
    out.append("| #models | " + " | ".join(f"{m} p={p}" for m, p in cols) + " |")
    out.append("|---|" + "---|" * len(cols))
    for idx, r in heat.iterrows():
        out.append(f"| {idx} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def ablation_table(res_dir: Path) -> str:
    js = json.loads((res_dir / "ablations.json").read_text())
    out = [
        f"Measured {js['date']}; grid `{js['grid']}`, {js['common_cells']} identical cells "
        f"over {len(js['families'])} families; `{js['command']}`.",
        "",
        "| variant | what changes | macro ARE % | low-budget ARE % | k=1 ARE % | cov80 | cov50 "
        "| flagged | s/cell |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in js["table"]:
        out.append(
            f"| {r['variant']} | {r['doc']} | {_fmt(r['macro_are'])} | "
            f"{_fmt(r['macro_are_low_budget'])} | {_fmt(r['macro_are_k1'])} | "
            f"{_fmt(r['coverage80'], 2)} | {_fmt(r['coverage50'], 2)} | {r['flagged']} | "
            f"{_fmt(r['seconds_per_cell'], 2)} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    res = Path(args.results)
    if (res / "bayes_grid.json").exists():
        print(grid_tables(res), "\n")
    if (res / "ablations.json").exists():
        print(ablation_table(res), "\n")
    if (res / "speed.json").exists():
        print(json.dumps(json.loads((res / "speed.json").read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
