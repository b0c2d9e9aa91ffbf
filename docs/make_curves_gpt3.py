"""Regenerate ``docs/curves_gpt3.png``: the h-term law through every gpt3 curve.

gpt3 without its 175B run, whole curves (``rows="all"``, AR(1) residuals), flat
prior, seed 0; the figure draws the law through each fitted run (with the run's
own offset) and the new-run band of the held-out 175B run's whole curve::

    python docs/make_curves_gpt3.py ../shared/corpus/curves.csv --out docs/curves_gpt3.png
"""

from __future__ import annotations

import argparse
import sys

import hiscale
from hiscale.infer.fit import FitOptions


def main() -> int:
    """Fit gpt3 without its largest run on whole curves and write the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--out", default="docs/curves_gpt3.png")
    args = ap.parse_args()
    hiscale.configure()
    import matplotlib

    matplotlib.use("Agg")
    from hiscale.plots import plot_curves

    curves = hiscale.load_curves(args.corpus)
    gpt3 = curves.frame[curves.frame["family"] == "gpt3"]
    target = gpt3["params"].max()
    train = hiscale.load_curves(gpt3[gpt3["params"] < target])
    f = hiscale.fit(
        train,
        family="gpt3",
        law="h-term",
        prior="flat",
        options=FitOptions(rows="all", residual="ar1"),
        seed=0,
    )
    print(f.verdict())
    at = (float(target), float(gpt3["tokens"].max()))
    actual = gpt3.loc[gpt3["params"] == target].sort_values("tokens")["loss"].iloc[-1]
    band = f.predict_curve(*at, tokens=[at[1]], ci_prob=0.8, seed=0)
    b = band[band["kind"] == "new_run"].iloc[-1]
    print(
        f"175B final loss: actual {actual:.3f}, predicted {b['median']:.3f} "
        f"(ARE {100 * abs(b['median'] - actual) / actual:.2f}%), "
        f"80% [{b['lower']:.3f}, {b['upper']:.3f}]"
    )
    fig = plot_curves(gpt3, f, at=at)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
