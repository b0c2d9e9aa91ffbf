"""Point-fit check of the schedule-aware (curve) laws against the end-of-run law.

Do all checkpoints help? For each family set with a known learning-rate schedule, hold out every run
of the largest model size, fit each law by least squares on ``ln L`` on the
other sizes, and score

* ``misfit``: in-sample RMSE of ``ln L`` residuals over *all* training rows
  (each run weighted equally), whatever rows the fit used;
* ``are_final``: mean absolute relative error of the predicted *final* loss
  of each held-out run (the extrapolation to the largest size);
* ``rmse_target_curve``: RMSE of ``ln L`` along the held-out runs' curves.

Fits (laws x rows): ``chinchilla``, ``momentum`` and ``h-term``
(:mod:`hiscale.laws`), each on *end* rows (``tokens >= 0.8 x`` the run's last
checkpoint, the engine's default selection) and on *all* rows (``tokens >=
--min-fraction x`` the run's last checkpoint). Every run counts equally in the
loss (rows weighted ``1/n_run``). Each fit starts from a fixed grid of 16
starting points (deterministic) and keeps the best; the shares are unit-free
as in the Bayesian model, with a free ``log_scale``. Exponents are bounded to
[0.01, 3], ``u_f`` to [-12, 3], ``r_f`` to [-1, 1]; the table marks fits that
end on a bound or with a floor share below 1% (degenerate optima).

    python benchmarks/curve_pointfit.py ../shared/corpus

writes ``benchmarks/results/curve_pointfit.json`` and prints a table. Reads
``curves.csv``, ``curves_extra.csv`` and ``runs_extra.csv`` from the corpus
folder (never copied).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

#: family sets: (name, families, min tokens)
FAMILY_SETS: list[tuple[str, tuple[str, ...], float]] = [
    ("gpt3", ("gpt3",), 0.0),
    ("misfitting", ("misfitting",), 0.0),
    ("pythia", ("pythia",), 1e9),
    ("gemstones+cooldown", ("gemstones", "gemstones-cooldown"), 0.0),
    ("lrsched-sp", ("lrsched-sp-cos", "lrsched-sp-wsd", "lrsched-sp-const"), 0.0),
    ("lrsched-owt2", ("lrsched-owt2-cos", "lrsched-owt2-wsd", "lrsched-owt2-const"), 0.0),
    ("mpl", ("mpl-constant", "mpl-cosine", "mpl-wsd-exp", "mpl-wsd-linear", "mpl-two-stage"), 0.0),
]

LAW_NAMES = ("chinchilla", "momentum", "h-term")
END_FRACTION = 0.8


def load(corpus: Path, families: tuple[str, ...], min_tokens: float):
    """Primary-metric rows of ``families`` with schedule covariates."""
    from hiscale.data.schedule import reconstruct

    frames = []
    for name in ("curves.csv", "curves_extra.csv"):
        f = pd.read_csv(corpus / name, low_memory=False)
        frames.append(f[f["family"].isin(families) & f["primary"].astype(bool)])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["tokens"] > min_tokens]
    runs_extra = pd.read_csv(corpus / "runs_extra.csv")
    out = reconstruct(frame, runs_extra[runs_extra["family"].isin(families)])
    return out.sort_values(["params", "run", "tokens"]).reset_index(drop=True)


def arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Law inputs of a frame (x, y, covariates, ln L, run weights)."""
    from hiscale.laws import D0, N0

    n_run = frame.groupby("run")["run"].transform("size").to_numpy(float)
    return {
        "x": np.log(frame["params"].to_numpy(float) / N0),
        "y": np.log(frame["tokens"].to_numpy(float) / D0),
        "s1": frame["s1"].to_numpy(float),
        "anneal": frame["anneal"].to_numpy(float),
        "lr_mult": frame["lr_mult"].to_numpy(float),
        "log_loss": np.log(frame["loss"].to_numpy(float)),
        "w": 1.0 / n_run,
    }


def starts(law, log_scale0: float) -> list[np.ndarray]:
    """Return the fixed grid of starting points (16 per law)."""
    grid = []
    for u_a, u_b, la, lb in itertools.product((-1.0, 0.5), (-1.0, 0.5), (-1.6, -0.7), (-1.6, -0.7)):
        p = [log_scale0, u_a, u_b, la, lb]
        if "u_f" in law.params:
            p += [np.log(0.05), 0.1]
        grid.append(np.array(p))
    return grid


def fit_law(law, data: dict[str, np.ndarray]):
    """Least squares on run-weighted ln L residuals from every start; best cost wins."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import least_squares

    names = ("log_scale", *law.params)
    cov = {c: jnp.asarray(data[c]) for c in law.covariates}
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    target, sw = jnp.asarray(data["log_loss"]), jnp.sqrt(jnp.asarray(data["w"]))

    def resid(p):
        theta = dict(zip(names, p, strict=True))
        return (target - law.log_loss(x, y, theta, cov)) * sw

    f = jax.jit(resid)
    jac = jax.jit(jax.jacfwd(resid))
    lo = {"log_alpha": np.log(0.01), "log_beta": np.log(0.01), "u_f": -12.0, "r_f": -1.0}
    hi = {"log_alpha": np.log(3.0), "log_beta": np.log(3.0), "u_f": 3.0, "r_f": 1.0}
    lb = np.array([lo.get(n, -np.inf) for n in names])
    ub = np.array([hi.get(n, np.inf) for n in names])
    best = None
    n_ok = 0
    for p0 in starts(law, float(np.median(data["log_loss"]))):
        try:
            r = least_squares(
                lambda p: np.asarray(f(p)),
                np.clip(p0, lb + 1e-9, ub - 1e-9),
                jac=lambda p: np.asarray(jac(p)),
                bounds=(lb, ub),
                method="trf",
                max_nfev=2000,
            )
        except (ValueError, FloatingPointError):
            continue
        if not np.isfinite(r.cost):
            continue
        n_ok += 1
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        return None, 0, []
    at_bound = [
        n
        for n, v, a, b in zip(names, best.x, lb, ub, strict=True)
        if min(abs(v - a), abs(v - b)) < 1e-6
    ]
    return dict(zip(names, best.x.tolist(), strict=True)), n_ok, at_bound


def predict(law, theta: dict, data: dict[str, np.ndarray]) -> np.ndarray:
    """``ln L̂`` at the rows of ``data``."""
    cov = {c: data[c] for c in law.covariates}
    return np.asarray(law.log_loss(data["x"], data["y"], theta, cov))


def rmse(res: np.ndarray, w: np.ndarray) -> float:
    """Run-weighted RMSE (each run's rows share weight 1)."""
    return float(np.sqrt(np.sum(w * res**2) / np.sum(w)))


def evaluate(name: str, frame: pd.DataFrame, min_fraction: float) -> dict:
    """All fits of one family set."""
    from hiscale.laws import get_law

    unknown = frame[~frame["schedule_known"]]
    if len(unknown):
        raise SystemExit(f"{name}: {unknown['run'].nunique()} runs without a schedule")
    last = frame.groupby("run")["tokens"].transform("max")
    frame = frame[frame["tokens"] >= min_fraction * last].reset_index(drop=True)
    last = frame.groupby("run")["tokens"].transform("max")
    top = frame["params"].max()
    train_all = frame[frame["params"] < top]
    train_end = train_all[train_all["tokens"] >= END_FRACTION * last[train_all.index]]
    target = frame[frame["params"] == top]
    finals = target[target["tokens"] == last[target.index]]
    d_all, d_end = arrays(train_all), arrays(train_end)
    d_tgt, d_fin = arrays(target), arrays(finals)
    out = {
        "families": sorted(frame["family"].unique()),
        "train_sizes": int(train_all["params"].nunique()),
        "train_runs": int(train_all["run"].nunique()),
        "train_rows_all": len(train_all),
        "train_rows_end": len(train_end),
        "target_params": float(top),
        "largest_train_params": float(train_all["params"].max()),
        "target_runs": int(target["run"].nunique()),
        "schedule_notes": sorted(set(frame["schedule_note"]) - {""}),
        "fits": {},
    }
    for law_name in LAW_NAMES:
        law = get_law(law_name)
        for rows, data in (("end", d_end), ("all", d_all)):
            t0 = time.perf_counter()
            theta, n_ok, at_bound = fit_law(law, data)
            key = f"{law_name}/{rows}"
            if theta is None:
                out["fits"][key] = {"failed": True}
                continue
            misfit = rmse(d_all["log_loss"] - predict(law, theta, d_all), d_all["w"])
            pred_fin = np.exp(predict(law, theta, d_fin))
            true_fin = np.exp(d_fin["log_loss"])
            are = np.abs(pred_fin - true_fin) / true_fin
            curve = rmse(d_tgt["log_loss"] - predict(law, theta, d_tgt), d_tgt["w"])
            out["fits"][key] = {
                "misfit": misfit,
                "are_final": float(np.mean(are)),
                "are_final_median": float(np.median(are)),
                "rmse_target_curve": curve,
                "theta": theta,
                "at_bound": at_bound,
                "floor_share": float(1.0 / (1.0 + np.exp(theta["u_a"]) + np.exp(theta["u_b"]))),
                "starts_converged": n_ok,
                "seconds": time.perf_counter() - t0,
            }
    return out


def table(results: dict) -> str:
    """Plain-text table: one row per family set, misfit / ARE per fit."""
    keys = [f"{law}/{rows}" for law in LAW_NAMES for rows in ("end", "all")]
    head = f"{'family set':20s} {'sizes':>5s} " + " ".join(f"{k:>18s}" for k in keys)
    lines = [
        "misfit (RMSE of ln L, all training rows) | ARE of the largest size's final loss",
        head,
    ]
    for name, r in results.items():
        cells = []
        for k in keys:
            f = r["fits"].get(k, {})
            if f.get("failed") or not f:
                cells.append(f"{'failed':>18s}")
            else:
                flag = "*" if f["at_bound"] or f["floor_share"] < 0.01 else " "
                cells.append(f"{f['misfit']:7.4f} | {100 * f['are_final']:5.2f}%{flag}")
        lines.append(f"{name:20s} {r['train_sizes']:5d} " + " ".join(f"{c:>18s}" for c in cells))
    lines.append("* a parameter at its bound, or the floor share e < 1% (a degenerate optimum)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every family set, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path, help="corpus folder (curves.csv, curves_extra.csv, ...)")
    ap.add_argument("--min-fraction", type=float, default=0.1)
    ap.add_argument("--sets", nargs="*", default=None, help="family sets to run (default: all)")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "curve_pointfit.json"
    )
    args = ap.parse_args(argv)
    import hiscale

    hiscale.configure()
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    results = {}
    for name, families, min_tokens in FAMILY_SETS:
        if args.sets and name not in args.sets:
            continue
        frame = load(args.corpus, families, min_tokens)
        results[name] = evaluate(name, frame, args.min_fraction)
        print(f"done {name}", file=sys.stderr, flush=True)
    print(table(results))
    payload = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python benchmarks/curve_pointfit.py " + " ".join(argv or sys.argv[1:]),
        "min_fraction": args.min_fraction,
        "end_fraction": END_FRACTION,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
