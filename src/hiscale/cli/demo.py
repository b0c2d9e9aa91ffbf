"""``hiscale demo``: the main job on simulated data, against the known truth.

A family seen at one or two small sizes predicts a large model, with and
without borrowing from a population prior, next to the paper's estimator.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hiscale._paths import bundled
from hiscale.cli.report import json_default, progress, save_curves_plot, short_path, verdict_line
from hiscale.plots import fmt_count

HELP = (
    "the main job on simulated data: predict a large model of a family seen at 1-2 "
    "small sizes, with and without borrowing, against the known truth"
)

#: Location of the demo table in a source checkout.
#: The command that made ``data/demo_curves.csv`` (also used to regenerate it
#: when the package is installed without the ``data/`` folder).
DEMO_SIMULATE = {
    "prior": "corpus-v1",
    "n_families": 4,
    "seed": 0,
    "sparse_families": 1,
    "sparse_sizes": 2,
}


def find_demo_data() -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Return the demo curves and truth tables, and where they came from.

    Reads ``demo_curves.csv`` and ``demo_truth.csv`` of the ``data/`` folder
    (inside an installed wheel, or of a source checkout); a package without
    them regenerates both in memory with the same simulation (deterministic
    given the prior and the seed), and the source says so.

    Returns
    -------
    curves : DataFrame
        The curves table.
    truth : DataFrame
        The true law and target of each family
        (:func:`hiscale.modeling.simulate.simulate_families`).
    source : str
        The file read, or ``"simulated now (...)"``.
    """
    for folder in bundled("data"):
        curves_path, truth_path = folder / "demo_curves.csv", folder / "demo_truth.csv"
        if curves_path.is_file() and truth_path.is_file():
            return pd.read_csv(curves_path), pd.read_csv(truth_path), str(curves_path)
    from hiscale.modeling.simulate import simulate_families

    curves, truth = simulate_families(**DEMO_SIMULATE)
    return curves, truth, "simulated now (data/demo_curves.csv not found)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hiscale demo`` to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser (from :func:`hiscale.cli.build_parser`).
    """
    p.add_argument(
        "--data",
        help="curves table with a low-budget family (default: data/demo_curves.csv)",
    )
    p.add_argument(
        "--truth", help="truth table written by 'hiscale simulate --truth' (with --data)"
    )
    p.add_argument(
        "--prior", default="corpus-v1", help="population prior to compare with flat (corpus-v1)"
    )
    p.add_argument(
        "--plot",
        default="hiscale-demo.png",
        metavar="PNG",
        help="where to write the curves figure (default: hiscale-demo.png)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    """Run ``hiscale demo``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit code (0: success).

    Raises
    ------
    ValueError
        If ``--data`` is given without ``--truth``; :func:`hiscale.cli.main`
        prints it as one line with exit code 2.
    FileNotFoundError
        If the ``--truth`` file does not exist.
    """
    from hiscale.backtesting.paper import fit_paper
    from hiscale.data.curves import load_curves
    from hiscale.infer.fit import fit
    from hiscale.infer.settings import DEMO_SAMPLER
    from hiscale.modeling.simulate import true_loss

    t_start = time.perf_counter()
    if args.data:
        if not args.truth:
            raise ValueError(
                "--data needs --truth (the table written by 'hiscale simulate --truth')"
            )
        raw, truth, source = pd.read_csv(args.data), read_truth(args.truth), args.data
    else:
        raw, truth, source = find_demo_data()
    curves = load_curves(raw)
    sparse = truth[truth["sizes_in_data"] < truth["sizes_simulated"]]
    row = (sparse if len(sparse) else truth).sort_values("sizes_in_data").iloc[0]
    family = str(row["family"])
    n_t, d_t = float(row["target_params"]), float(row["target_tokens"])
    truth_loss = float(row["target_loss"])
    fam = curves.family(family)
    sizes = np.sort(fam.frame["params"].unique())
    progress(
        args,
        f"demo data: {short_path(source)}; family {family!r} has {len(sizes)} size(s) "
        f"({', '.join(fmt_count(s) for s in sizes)}); target N={fmt_count(n_t)}, "
        f"D={fmt_count(d_t)}",
    )
    sampler = DEMO_SAMPLER
    results = []
    fits = {}
    for prior in (args.prior, "flat"):
        t0 = time.perf_counter()
        progress(args, f"fitting with prior {prior!r} ...")
        f = fit(curves, family=family, prior=prior, seed=args.seed, sampler=sampler)
        fits[prior] = f
        p = f.predict((n_t, d_t), ci_prob=(0.8, 0.95), seed=args.seed)
        p = p[p["kind"] == "new_run"].set_index("ci_prob")
        results.append(
            {
                "method": f"bayes, prior {f.prior.name}",
                "median": float(p["median"].iloc[0]),
                "lower80": float(p.loc[0.8, "lower"]),
                "upper80": float(p.loc[0.8, "upper"]),
                "lower95": float(p.loc[0.95, "lower"]),
                "upper95": float(p.loc[0.95, "upper"]),
                "flagged": f.flagged,
                "seconds": time.perf_counter() - t0,
            }
        )
    fr = fam.frame
    paper = fit_paper(fr["params"], fr["tokens"], fr["loss"])
    paper_pred = float(paper.predict(n_t, d_t)) if paper.ok else float("nan")
    results.append(
        {
            "method": "paper least squares",
            "median": paper_pred,
            "lower80": np.nan,
            "upper80": np.nan,
            "lower95": np.nan,
            "upper95": np.nan,
            "flagged": not paper.ok,
            "seconds": np.nan,
        }
    )
    for r in results:
        r["error_pct"] = 100 * (r["median"] - truth_loss) / truth_loss
        r["covered80"] = (
            bool(r["lower80"] <= truth_loss <= r["upper80"]) if np.isfinite(r["lower80"]) else None
        )
    main_fit = fits[args.prior]
    save_curves_plot(
        curves,
        main_fit,
        (n_t, d_t),
        args.plot,
        actual=lambda d: true_loss(row, n_t, d),
        actual_label=f"true law at N={fmt_count(n_t)} (known: simulated)",
    )
    total = time.perf_counter() - t_start
    if args.json:
        payload = {
            "data": source,
            "family": family,
            "sizes_in_data": [float(s) for s in sizes],
            "at": {"params": n_t, "tokens": d_t},
            "truth": truth_loss,
            "results": results,
            "plot": args.plot,
            "seconds": total,
        }
        print(json.dumps(payload, indent=2, default=json_default))
        return 0
    print(
        f"hiscale demo: family {family!r} was trained at {len(sizes)} small size(s) "
        f"({', '.join(fmt_count(s) for s in sizes)} params); predict N={fmt_count(n_t)} "
        f"params, D={fmt_count(d_t)} tokens."
    )
    print(f"The data are simulated, so the true loss is known: {truth_loss:.4f} nats.")
    print()
    print(f"{'method':<26}{'median':>8}{'80% interval':>20}{'95% interval':>20}{'error':>9}")
    for r in results:
        i80 = f"[{r['lower80']:.3f}, {r['upper80']:.3f}]" if np.isfinite(r["lower80"]) else "-"
        i95 = f"[{r['lower95']:.3f}, {r['upper95']:.3f}]" if np.isfinite(r["lower95"]) else "-"
        print(f"{r['method']:<26}{r['median']:>8.3f}{i80:>20}{i95:>20}{r['error_pct']:>+8.1f}%")
    print()
    print("Intervals are for a new run (law + seed-to-seed + checkpoint noise).")
    print(
        f"The population prior lets {family!r} borrow the shape of the law from other "
        "families;\nthe flat prior and least squares only have its own few small runs."
    )
    for p, f in fits.items():
        print(f"prior {p}: {verdict_line(f)}")
    print(f"wrote {args.plot} (curves, fitted law, target band, true law); total {total:.1f} s")
    return 0


def read_truth(path: str) -> pd.DataFrame:
    """Read the truth table written by ``hiscale simulate --truth``.

    Parameters
    ----------
    path : str
        The CSV file.

    Returns
    -------
    DataFrame

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"truth table not found: {path!r}")
    return pd.read_csv(p)
