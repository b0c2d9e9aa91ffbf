"""Learning-rate schedules and their areas (hiscale.data.schedule).

Every area is checked against an independent computation: a closed form, an
adaptive quadrature (scipy.integrate.quad) or a brute-force double sum.
"""

import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from hiscale.data.schedule import (
    Schedule,
    anneal_area,
    lr_area,
    lr_multiplier,
    parse_schedule,
    reconstruct,
    run_schedules,
    schedule_from_runs_extra,
)

T = 1.0e10
D = np.array([1e8, 1.7e9, 5e9, 9.99e9, 1e10])

# --- the multiplier, at hand-computed points -------------------------------------------


def test_multiplier_hand_values():
    cos = Schedule(horizon=T, decay_shape="cosine", floor=0.1)
    # cos(pi/2) = 0: half-way the cosine is at the mid-point (1 + 0.1)/2
    np.testing.assert_allclose(cos.multiplier([0.0, T / 2, T, 2 * T]), [1.0, 0.55, 0.1, 0.1])
    lin = Schedule(horizon=T, decay_shape="linear", floor=0.0, decay_start=0.8 * T)
    np.testing.assert_allclose(lin.multiplier([0.5 * T, 0.9 * T, T]), [1.0, 0.5, 0.0], atol=1e-12)
    sq = Schedule(horizon=T, decay_shape="1-sqrt", floor=0.0, decay_start=0.6 * T)
    # q = 0.25 -> 1 - sqrt(0.25) = 0.5
    np.testing.assert_allclose(sq.multiplier([0.7 * T]), [0.5])
    ex = Schedule(horizon=T, decay_shape="exponential", floor=0.01, decay_start=0.5 * T)
    np.testing.assert_allclose(ex.multiplier([0.75 * T, T]), [0.1, 0.01])
    warm = Schedule(horizon=T, warmup=1e9, warmup_init=0.01, warmup_shape="linear")
    np.testing.assert_allclose(warm.multiplier([0.0, 5e8, 1e9]), [0.01, 0.505, 1.0])
    cw = Schedule(horizon=T, warmup=1e9, warmup_init=0.0, warmup_shape="cosine")
    np.testing.assert_allclose(cw.multiplier([2.5e8, 5e8]), [(1 - math.cos(math.pi / 4)) / 2, 0.5])
    two = Schedule(horizon=T, stage2_start=0.5 * T, stage2_ramp=0.1 * T, stage2_factor=0.3)
    np.testing.assert_allclose(two.multiplier([0.4 * T, 0.55 * T, 0.8 * T]), [1.0, 0.65, 0.3])
    # WSD after a two-stage drop: the cooldown scales the reduced level linearly to 0
    two_wsd = Schedule(
        horizon=T,
        decay_shape="linear",
        floor=0.0,
        decay_start=0.8 * T,
        stage2_start=0.2 * T,
        stage2_factor=0.5,
    )
    np.testing.assert_allclose(two_wsd.multiplier([0.1 * T, 0.5 * T, 0.9 * T]), [1.0, 0.5, 0.25])


def test_bad_schedule_rejected():
    with pytest.raises(ValueError, match="decay_shape 'step'"):
        Schedule(horizon=T, decay_shape="step")
    with pytest.raises(ValueError, match="horizon must be a positive"):
        Schedule(horizon=float("nan"))
    with pytest.raises(ValueError, match="decay_start"):
        Schedule(horizon=T, decay_shape="linear", decay_start=2 * T)


# --- S1: closed forms and quadrature ----------------------------------------------------


def test_s1_constant_is_tokens():
    np.testing.assert_allclose(lr_area(Schedule(horizon=T), D), D, rtol=1e-12)


def test_s1_linear_decay_closed_form():
    s = Schedule(horizon=T, decay_shape="linear", floor=0.0, decay_start=0.0)
    np.testing.assert_allclose(lr_area(s, D), D - D**2 / (2 * T), rtol=1e-10)


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_s1_cosine_closed_form(floor):
    s = Schedule(horizon=T, decay_shape="cosine", floor=floor)
    # ∫_0^D f + (1-f)(1 + cos(pi u/T))/2 du
    exact = floor * D + (1 - floor) / 2 * (D + T / math.pi * np.sin(math.pi * D / T))
    np.testing.assert_allclose(lr_area(s, D), exact, rtol=1e-8)
    # past the horizon the floor accrues
    beyond = lr_area(s, [1.3 * T])[0]
    assert beyond == pytest.approx((1 + floor) / 2 * T + floor * 0.3 * T, rel=1e-8)


@pytest.mark.parametrize(
    "sched",
    [
        Schedule(horizon=T, decay_shape="cosine", floor=0.1, warmup=3e8, warmup_shape="cosine"),
        Schedule(
            horizon=T,
            decay_shape="linear",
            floor=0.0,
            decay_start=0.8 * T,
            warmup=2e8,
            warmup_init=0.01,
        ),
        Schedule(horizon=T, decay_shape="1-sqrt", floor=0.0, decay_start=0.8 * T, warmup=2e8),
        Schedule(horizon=T, decay_shape="exponential", floor=0.1, decay_start=0.8 * T, warmup=2e8),
        Schedule(horizon=T, stage2_start=0.3 * T, stage2_ramp=0.05 * T, stage2_factor=0.4),
    ],
    ids=["cosine-warmup", "wsd-linear", "wsd-1-sqrt", "wsd-exp", "two-stage"],
)
def test_s1_matches_quadrature(sched):
    pts = [sched.warmup, sched.start_of_decay, T]
    if sched.stage2_start is not None:
        pts += [sched.stage2_start, sched.stage2_start + sched.stage2_ramp]
    for d in D:
        ref, _ = quad(
            lambda u: float(lr_multiplier(sched, u)),
            0.0,
            d,
            points=[p for p in pts if 0 < p < d],
            limit=200,
            epsabs=0.0,
            epsrel=1e-11,
        )
        assert lr_area(sched, [d])[0] == pytest.approx(ref, rel=1e-6)


# --- S2: brute-force double sum and the continuous closed form -------------------------


def s2_brute(h, lam):
    """S2 = sum_i sum_{k<=i} (h_{k-1} - h_k) lam^(i-k), written as the double sum."""
    total = 0.0
    for i in range(1, len(h)):
        for k in range(1, i + 1):
            total += (h[k - 1] - h[k]) * lam ** (i - k)
    return total


@pytest.mark.parametrize("shape", ["cosine", "linear", "1-sqrt", "exponential"])
def test_s2_equals_double_sum_per_step(shape):
    tps, steps, lam = 1000.0, 300, 0.98
    sched = Schedule(
        horizon=steps * tps,
        decay_shape=shape,
        floor=0.05,
        decay_start=None if shape == "cosine" else 120 * tps,
        warmup=20 * tps,
        tokens_per_step=tps,
    )
    grid = np.arange(steps + 1) * tps
    h = lr_multiplier(sched, grid)
    h[grid < sched.warmup] = 1.0  # warmup is not annealing
    for s in (50, 170, 300):
        ref = tps * s2_brute(h[: s + 1], lam)
        out = anneal_area(sched, [s * tps], decay=lam)[0]
        assert out == pytest.approx(ref, rel=1e-10, abs=1e-9 * tps)


def test_s2_linear_decay_continuous_limit():
    """h = 1 - u/T: m(u) = (tau/T)(1 - e^{-u/tau}), S2 = (tau/T)(D - tau(1 - e^{-D/tau}))."""
    tau = 3e8
    s = Schedule(horizon=T, decay_shape="linear", floor=0.0, decay_start=0.0)
    exact = tau / T * (D - tau * (1 - np.exp(-D / tau)))
    np.testing.assert_allclose(anneal_area(s, D, tau=tau, max_cells=200_000), exact, rtol=2e-3)


def test_s2_zero_without_decay_and_near_one_minus_h_for_short_memory():
    const = Schedule(horizon=T, warmup=5e8, warmup_init=0.0)
    np.testing.assert_allclose(anneal_area(const, D), 0.0, atol=1e-6)
    cos = Schedule(horizon=T, decay_shape="cosine", floor=0.1)
    tau = 1e-4 * T
    anneal = anneal_area(cos, D, tau=tau, max_cells=400_000) / tau
    np.testing.assert_allclose(anneal, 1 - cos.multiplier(D), atol=5e-3)


# --- reading the corpus vocabulary ------------------------------------------------------


def test_parse_vocabulary():
    gpt3 = parse_schedule("cosine to 10% over 260B tokens, 375M-token warm-up", run_tokens=3e11)
    assert gpt3.known and gpt3.notes == ()
    s = gpt3.schedule
    assert (s.horizon, s.floor, s.warmup, s.decay_shape) == (2.6e11, 0.1, 3.75e8, "cosine")
    mis = parse_schedule(
        "cosine to 0.1x peak over total_steps (50 warm-up steps)",
        run="misfitting-100m-1000steps-lr0.001",
        run_tokens=134217728.0,
        tokens_per_step=1048576.0,
    )
    assert mis.schedule.horizon == 1000 * 1048576.0 and mis.schedule.warmup == 50 * 1048576.0
    assert "not run_tokens" in mis.notes[0]
    py = parse_schedule("cosine(min_lr=2e-05)", run_tokens=3e11, lr=2e-4)
    assert py.schedule.floor == pytest.approx(0.1) and "warmup not given" in py.notes[0]
    cool = parse_schedule(
        "constant then linear cooldown to 0 over last ~10%",
        run="gemstone-1024x28-cooldown-from-11924",
        run_tokens=5.5e10,
        tokens_per_step=4194304.0,
    )
    assert cool.schedule.decay_start == 11924 * 4194304.0 and cool.schedule.floor == 0.0
    chin = parse_schedule("cosine matched to run length", run_tokens=1e10)
    assert any("floor not given" in n for n in chin.notes)
    const = parse_schedule("constant (no cooldown), half the main-suite LR", run_tokens=1e10)
    assert const.schedule.decay_shape == "none"


def test_parse_sweep_texts_by_hand():
    """The curves_extra texts, positions in steps (1000 tokens per step), checked at points."""
    wsd = parse_schedule(
        "WSD: 300-step linear warmup from 0.01x peak, constant, linear cooldown to 0 over "
        "last 20% (steps 2400-3000)",
        tokens_per_step=1000.0,
    ).schedule
    # warmup 0.01 -> 1 over 300 steps, 1 until step 2400, then (3000 - step) / 600
    h = wsd.multiplier(np.array([0, 150, 1000, 2400, 2700, 2940, 3000]) * 1000.0)
    np.testing.assert_allclose(h, [0.01, 0.505, 1, 1, 0.5, 0.1, 0], atol=1e-12)
    sqrt = parse_schedule(
        "WSD: 300-step linear warmup from 0.01x peak, constant, 1-sqrt cooldown to 0 over "
        "last 20% (steps 20000-25000)",
        tokens_per_step=10.0,
    ).schedule
    assert sqrt.multiplier(np.array([21250.0 * 10]))[0] == pytest.approx(0.5)  # 1 - sqrt(1/4)
    cos = parse_schedule(
        "cosine to ~0 (1e-07) at step 25000; 300-step cosine-shaped warmup from 0.01x peak",
        tokens_per_step=1.0,
        lr=1e-4,
    ).schedule
    assert (cos.floor, cos.warmup_shape, cos.horizon) == (pytest.approx(1e-3), "cosine", 25000)
    mpl = parse_schedule(
        "WSD: 2160-step linear warmup from 0, constant 0.0003, exponential decay to 3e-05 "
        "over steps 20000-24000",
        tokens_per_step=1.0,
    ).schedule
    # exponential from 1 to 0.1 over 4000 steps: 0.1 ** 0.5 half-way
    assert mpl.multiplier(np.array([22000.0]))[0] == pytest.approx(0.1**0.5)
    mcos = parse_schedule(
        "cosine from 0.0003 to 3e-05 over steps 2160-24000 after 2160-step linear warmup from 0",
        tokens_per_step=1.0,
    ).schedule
    assert mcos.multiplier(np.array([13080.0]))[0] == pytest.approx(0.55)  # half-way: (1+0.1)/2
    const = parse_schedule(
        "constant 0.0003 after 2160-step linear warmup from 0 (no decay; run length 24000 steps)",
        tokens_per_step=2.0,
    ).schedule
    assert (const.horizon, const.warmup, const.decay_shape) == (48000.0, 4320.0, "none")
    # positions in steps need the tokens per step; an absolute floor needs the peak
    assert (
        "tokens per step unknown"
        in parse_schedule(
            "WSD: 2160-step linear warmup from 0, constant 0.0003, linear decay to 3e-05 over "
            "steps 20000-24000"
        ).notes[0]
    )
    assert (
        "lr column"
        in parse_schedule(
            "cosine to ~0 (1e-07) at step 25000; 300-step cosine-shaped warmup from 0.01x peak",
            tokens_per_step=1.0,
        ).notes[0]
    )


def test_parse_named_schedules():
    wsd = parse_schedule("WSD", run_tokens=1000.0)
    assert (
        wsd.known and wsd.schedule.decay_start == 800.0 and "named schedule 'wsd'" in wsd.notes[0]
    )
    assert not parse_schedule("cosine").known  # no horizon


def test_sweep_texts_agree_with_runs_extra(corpus_file):
    """Every curves_extra run whose text is read gets runs_extra.csv's schedule (to 1e-9)."""
    extra = corpus_file.with_name("curves_extra.csv")
    table = corpus_file.with_name("runs_extra.csv")
    for path in (extra, table):
        if not path.exists():
            msg = f"{path} not found beside the corpus"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    frame = pd.read_csv(extra, low_memory=False)
    from_text = run_schedules(frame)
    from_table = run_schedules(frame, pd.read_csv(table))
    unread = {r: si.notes[0] for r, si in from_text.items() if not si.known}
    # only the farseer sweep (no schedule) and the two-stage texts are not read
    fams = frame.groupby("run")["family"].first()
    assert set(fams[list(unread)]) == {"farseer", "lrsched-ext-wsd2stage", "mpl-two-stage"}
    read = [r for r in from_text if r not in unread]
    assert len(read) >= 200
    for run in read:
        a, b = from_text[run].schedule, from_table[run].schedule
        u = np.linspace(0.0, 1.1 * b.horizon, 2001)
        np.testing.assert_allclose(a.multiplier(u), b.multiplier(u), atol=1e-9, err_msg=run)
        assert a.tokens_per_step == pytest.approx(b.tokens_per_step)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "schedule column empty"),
        ("", "schedule column empty"),
        ("inverse sqrt", "not understood: 'inverse sqrt'"),
        ("constant (no cooldown)", "without run_tokens"),
    ],
)
def test_unknown_schedules_say_why(text, reason):
    info = parse_schedule(text)
    assert not info.known and info.schedule is None
    assert reason in info.notes[0]


def test_runs_extra_row():
    row = {
        "tokens_per_step": 1000.0,
        "total_steps": 100.0,
        "warmup_steps": 10.0,
        "warmup_shape": "linear",
        "warmup_init_factor": 0.01,
        "decay_shape": "linear",
        "decay_start_step": 80.0,
        "final_lr_factor": 0.0,
        "stage2_start_step": 40.0,
        "stage2_ramp_steps": 10.0,
        "stage2_factor": 0.5,
        "notes": "",
    }
    info = schedule_from_runs_extra(row)
    assert info.known and info.source == "runs_extra"
    h = info.schedule.multiplier(np.array([0, 5, 30, 45, 60, 90, 100]) * 1000.0)
    np.testing.assert_allclose(h, [0.01, 0.505, 1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-12)
    assert not schedule_from_runs_extra({"notes": "split=test"}).known


def test_reconstruct_flags_unknown_runs():
    frame = pd.DataFrame(
        {
            "family": ["a"] * 3 + ["b"] * 2,
            "run": ["r1"] * 3 + ["r2"] * 2,
            "params": [1e8] * 5,
            "tokens": [2e9, 5e9, 1e10, 1e9, 2e9],
            "step": [np.nan] * 5,
            "loss": [3.0, 2.9, 2.8, 3.1, 3.0],
            "run_tokens": [1e10] * 3 + [2e9] * 2,
            "schedule": ["cosine to 10% over 10B tokens, 0M-token warm-up"] * 3 + [np.nan] * 2,
            "lr": [np.nan] * 5,
        }
    )
    out = reconstruct(frame)
    assert out["schedule_known"].tolist() == [True] * 3 + [False] * 2
    assert out.loc[3:, ["lr_mult", "s1", "s2", "anneal"]].isna().all().all()
    assert (out.loc[3:, "schedule_note"] == "schedule column empty").all()
    assert "tokens per step unknown" in out.loc[0, "schedule_note"]
    exact = 0.1 * 1e10 + 0.45 * 1e10
    assert out.loc[2, "s1"] == pytest.approx(exact, rel=1e-8)
    assert out.loc[2, "lr_mult"] == pytest.approx(0.1)
    assert out["anneal"].iloc[:3].is_monotonic_increasing


def test_reconstruct_corpus_families(corpus_file):
    frame = pd.read_csv(corpus_file, low_memory=False)
    frame = frame[frame["family"].isin(["gpt3", "misfitting", "olmo"]) & frame["primary"]]
    out = reconstruct(frame)
    ends = out[out["is_final"]]
    known = ends[ends["family"] != "olmo"]
    assert known["schedule_known"].all()
    # misfitting runs end where their cosine ends: h = floor 0.1 at the last checkpoint
    mis = known[known["family"] == "misfitting"]
    np.testing.assert_allclose(mis["lr_mult"], 0.1, atol=1e-9)
    # GPT-3: the cosine ends at 260B of 300B tokens, then the floor
    np.testing.assert_allclose(known[known["family"] == "gpt3"]["lr_mult"], 0.1, atol=1e-9)
    olmo = out[out["family"] == "olmo"]
    assert not olmo["schedule_known"].any() and olmo["s1"].isna().all()


def test_reconstruct_does_not_depend_on_row_order_or_index(corpus_file):
    """Rows of many runs interleaved, with a non-default index: every row gets the
    covariates it gets in run order (the per-run loop maps positions, not labels)."""
    frame = pd.read_csv(corpus_file, low_memory=False)
    frame = frame[frame["family"].isin(["gpt3", "misfitting"]) & frame["primary"]]
    ordered = reconstruct(frame.sort_values(["run", "tokens"]))
    shuffled = frame.sample(frac=1.0, random_state=0)
    shuffled.index = np.arange(len(shuffled))[::-1] * 3  # labels unrelated to positions
    out = reconstruct(shuffled)
    # (not schedule_note: where a run's rows disagree on run_tokens, as in misfitting, the
    # note quotes its first row's value)
    cols = ["lr_mult", "s1", "s2", "anneal", "memory_tokens", "schedule_known"]
    key = ["run", "tokens"]
    a = out.sort_values(key)[key + cols].reset_index(drop=True)
    b = ordered.sort_values(key)[key + cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert out.index.equals(shuffled.index)
