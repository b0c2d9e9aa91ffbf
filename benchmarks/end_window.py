r"""The end-of-run window on a family whose runs end in a cooldown (a finding of issue 11).

The end-of-run model fits each run's checkpoints at >= ``end_of_run`` (0.8) x
the run's last tokens. For a warmup-stable-decay run with a 20% cooldown that
window is the cooldown itself, where the loss falls because the learning rate
goes to 0, not because of more data. This refits the runs each strategy picked
in a planner campaign (``benchmarks/plan_backtest.py`` JSON) for one family,
with the token window alone (the default until 2026-12-02:
``FitOptions(end_lr_tolerance=None)``), with the default (the token window and,
where the schedule is known, a learning rate within 0.1 x peak of the run's
last checkpoint's) and with each run's last checkpoint only
(``FitOptions(end_of_run=1.0)``), under the same leave-one-group-out
population as the campaign (``--population-from corpus``), and prints the
signed relative error (%) of the new-run median at the campaign's target::

    python benchmarks/end_window.py ../shared/corpus/curves.csv \
        --extra ../shared/corpus/curves_extra.csv --campaign C.json \
        --family lrsched-sp-wsd --out benchmarks/results/end_window_wsd.json

The JSON holds errors only, no losses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

STRATEGIES = ("planner", "hitchhiker", "cheapest-first")


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--extra", nargs="*", default=[])
    p.add_argument("--campaign", required=True, help="a plan_backtest.py result JSON")
    p.add_argument("--family", required=True)
    p.add_argument("--num-warmup", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=750)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)

    import hiscale
    from hiscale import SamplerSettings, fit
    from hiscale.backtesting.loo_prior import leave_one_out_prior
    from hiscale.infer.settings import FitOptions

    hiscale.configure()
    from _machine import emit, machine
    from plan_backtest import _population_curves

    curves = hiscale.load_curves([args.corpus, *args.extra])
    fam = args.family
    f = curves.frame
    # the campaign's population: the corpus's families outside the family's group
    opts = argparse.Namespace(
        population_from="corpus", corpus_families=hiscale.load_curves(args.corpus).families
    )
    prior = leave_one_out_prior(_population_curves(curves, fam, opts), fam)
    campaign = json.loads(open(args.campaign).read())
    rec = next((x for x in campaign["families"] if x["family"] == fam), None)
    if rec is None:
        raise SystemExit(f"--campaign has no family {fam!r}")
    target = rec["target"]
    rows = f[(f["family"] == fam) & (f["run"] == target["label"])].sort_values("tokens")
    loss = float(rows["loss"].iloc[-1])
    windows = {
        "tokens only (0.8)": FitOptions(end_lr_tolerance=None),
        "default (0.8, LR within 0.1)": FitOptions(),
        "last checkpoint": FitOptions(end_of_run=1.0),
    }
    sampler = SamplerSettings(num_warmup=args.num_warmup, num_samples=args.num_samples)
    cells = []
    for cell in rec["cells"]:
        for strategy in STRATEGIES:
            runs = cell["strategies"][strategy]["runs"]
            sub = curves.with_frame(
                f[(f["family"] == fam) & f["run"].isin(runs)], step="runs", reason="not picked"
            )
            out = {"budget": cell["budget_frac"], "strategy": strategy, "runs": len(runs)}
            for name, options in windows.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ft = fit(
                        sub, family=fam, prior=prior, seed=args.seed, options=options,
                        sampler=sampler,
                    )  # fmt: skip
                pr = ft.predict((target["params"], target["tokens"]), ci_prob=0.8, seed=0)
                med = float(pr.query("kind == 'new_run'")["median"].iloc[0])
                out[name] = 100 * (med - loss) / loss
                out[f"{name} flagged"] = bool(ft.flagged)
            print(json.dumps(out), file=sys.stderr, flush=True)
            cells.append(out)
    emit(
        {
            "benchmark": "end_window",
            "command": "python benchmarks/end_window.py " + " ".join(argv or sys.argv[1:]),
            "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "family": fam,
            "prior": prior.label,
            "target": {k: target[k] for k in ("label", "params", "tokens")},
            "signed_error_percent": cells,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
