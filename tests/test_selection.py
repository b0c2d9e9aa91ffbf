"""The end-of-run selection with learning-rate schedules (a WSD cooldown is not end of run)."""

import numpy as np
import pandas as pd
import pytest

from hiscale import FitOptions, SamplerSettings, fit
from hiscale.data.curves import load_curves
from hiscale.data.schedule import Schedule, ScheduleInfo
from hiscale.data.selection import end_of_run, select_rows

# every run checkpoints every 10 tokens
STEP = 10.0


def curves_of(ends: dict) -> "pd.DataFrame":
    """Runs ``name -> last checkpoint``, rows at 10, 20, ..., last."""
    rows = [
        {"family": "f", "run": run, "params": 1e8, "tokens": t, "loss": 3.0 + 10.0 / t}
        for run, last in ends.items()
        for t in np.arange(STEP, last + STEP / 2, STEP)
    ]
    return load_curves(pd.DataFrame(rows))


def wsd(horizon: float, cooldown: float) -> ScheduleInfo:
    """Constant LR, then a linear cooldown to 0 over the last ``cooldown`` share."""
    s = Schedule(
        horizon=horizon, decay_shape="linear", floor=0.0, decay_start=(1 - cooldown) * horizon
    )
    return ScheduleInfo(s, "test")


def kept(curves, run):
    return sorted(curves.frame.loc[curves.frame["run"] == run, "tokens"].tolist())


def test_wsd_cooldown_rows_leave_the_end_of_run_window():
    # h(D) = 1 before 750 and (1000 - D) / 250 after: h <= 0.1 from D = 975 on
    c = curves_of({"wsd": 1000, "const": 1000, "cos": 1000, "unknown": 1000})
    cosine = ScheduleInfo(Schedule(horizon=1000.0, decay_shape="cosine", floor=0.1), "test")
    schedules = {
        "wsd": wsd(1000.0, 0.25),
        "const": ScheduleInfo(Schedule(horizon=1000.0), "test"),
        "cos": cosine,
        "unknown": ScheduleInfo(None, "unknown", ("no text",)),
    }
    out = end_of_run(c, 0.8, schedules=schedules)
    assert kept(out, "wsd") == [980.0, 990.0, 1000.0]
    window = [float(t) for t in range(800, 1001, 10)]
    # constant LR and the unknown schedule: the token window alone
    assert kept(out, "const") == window and kept(out, "unknown") == window
    # a cosine to 0.1 x peak: 0.1 + 0.45 (1 + cos(pi q)) - 0.1 <= 0.1 from q = 0.786 on,
    # so nothing of the last 20% leaves (the token window decides)
    assert kept(out, "cos") == window
    tokens_step, lr_step = out.log[-2], out.log[-1]
    assert tokens_step.step == "end_of_run" and tokens_step.kept == 4 * 21
    assert lr_step.step == "end_of_run_lr" and lr_step.removed == 21 - 3
    assert "0.1 x peak" in lr_step.reason
    assert "1 of 4 runs without a known schedule kept by tokens alone" in lr_step.reason


def test_only_runs_that_reached_the_end_of_their_schedule_are_trimmed():
    sched = wsd(1000.0, 0.25)  # h = (1000 - D) / 250 from D = 750
    # a run cut at 900 (a backtest cell's p cut) keeps its token window: 720 ... 900
    cut = end_of_run(curves_of({"cut": 900}), 0.8, schedules={"cut": sched})
    assert kept(cut, "cut") == [float(t) for t in range(720, 901, 10)]
    assert "1 of 1 runs stopped before the end of their schedule" in cut.log[-1].reason
    # a run whose last evaluation is one spacing short of the horizon reached it:
    # h(990) = 0.04, rows with h <= 0.14 are D >= 965
    short = end_of_run(curves_of({"r": 990}), 0.8, schedules={"r": sched})
    assert kept(short, "r") == [970.0, 980.0, 990.0]


def test_tolerance_and_disabling():
    c = curves_of({"r": 1000})
    sched = {"r": wsd(1000.0, 0.25)}
    # h <= 0.3 is D >= 925
    assert kept(end_of_run(c, 0.8, schedules=sched, lr_tolerance=0.3), "r")[0] == 930.0
    off = end_of_run(c, 0.8, schedules=sched, lr_tolerance=None)
    assert off.log[-1].reason == "disabled" and kept(off, "r")[0] == 800.0
    # no schedules: one step, as before
    plain = end_of_run(c, 0.8)
    assert [r.step for r in plain.log][-1] == "end_of_run"
    with pytest.raises(ValueError, match="lr_tolerance"):
        end_of_run(c, 0.8, schedules=sched, lr_tolerance=-0.1)


def test_select_rows_passes_schedules_through():
    c = curves_of({"wsd": 1000})
    out = select_rows(
        c, min_tokens=0, end_fraction=0.8, max_rows_per_run=32, schedules={"wsd": wsd(1000, 0.25)}
    )
    assert kept(out, "wsd") == [980.0, 990.0, 1000.0]
    assert [r.step for r in out.log][-3:] == ["end_of_run", "end_of_run_lr", "thin"]


def test_fit_options_reject_a_negative_tolerance():
    with pytest.raises(ValueError, match="end_lr_tolerance"):
        FitOptions(end_lr_tolerance=-1.0)


def test_fit_reads_schedules_from_runs_extra_for_the_end_of_run_rows():
    """A fit of WSD runs whose schedules are in a runs table keeps only the cooled-down rows."""
    rng = np.random.default_rng(0)
    rows, extra = [], []
    for n in (1e7, 3e7, 1e8):
        last = 2e9 * n / 1e7
        tps = last / 1000  # 1000 steps per run, a checkpoint every 50 steps
        run = f"wsd-{n:g}"
        for t in np.arange(50, 1001, 50) * tps:
            loss = 1.7 + 400 / n**0.34 + 400 / t**0.28 + 0.002 * rng.standard_normal()
            rows.append({"family": "w", "run": run, "params": n, "tokens": t, "loss": loss})
        extra.append(
            {"run": run, "tokens_per_step": tps, "total_steps": 1000, "decay_shape": "linear",
             "decay_start_step": 800, "final_lr_factor": 0.0}
        )  # fmt: skip
    runs_extra = pd.DataFrame(extra)
    sampler = SamplerSettings(num_warmup=100, num_samples=100, num_chains=1)
    f = fit(pd.DataFrame(rows), prior="flat", seed=0, sampler=sampler, runs_extra=runs_extra)
    # per run: steps 800..1000 are the token window (5 rows); h <= 0.1 only at 1000
    assert f.data.groupby("run").size().tolist() == [1, 1, 1]
    lr = [r for r in f.log if r.step == "end_of_run_lr"]
    assert len(lr) == 1 and lr[0].removed == 3 * 4
    # without the runs table the schedule is unknown and the log says so
    g = fit(pd.DataFrame(rows), prior="flat", seed=0, sampler=sampler)
    assert g.data.groupby("run").size().tolist() == [5, 5, 5]
    lr = [r for r in g.log if r.step == "end_of_run_lr"]
    assert "3 of 3 runs without a known schedule" in lr[0].reason


def test_cli_flags_set_the_tolerance():
    import argparse

    from hiscale.cli.args import add_model_args, fit_options

    p = argparse.ArgumentParser()
    add_model_args(p)
    assert fit_options(p.parse_args([])).end_lr_tolerance == 0.1
    assert fit_options(p.parse_args(["--end-lr-tolerance", "0.3"])).end_lr_tolerance == 0.3
    assert fit_options(p.parse_args(["--no-end-lr"])).end_lr_tolerance is None
