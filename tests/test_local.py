"""The local fit (hiscale.modeling.local): covariance, Woodbury density, LOO terms, a fit."""

import jax.numpy as jnp
import numpy as np
import pytest
from engine_sim import simulate_family
from numpyro.infer.util import log_density
from scipy import stats

from hiscale import fit
from hiscale.infer.settings import FitOptions
from hiscale.modeling.design import make_design
from hiscale.modeling.family import make_family_model, prior_arrays
from hiscale.modeling.local import (
    brownian_basis,
    exact_cov,
    local_between,
    local_loo,
    signed_distances,
)
from hiscale.priors.prior import flat_prior
from hiscale.testing import TEST_SAMPLER as SMALL


def _brownian_cov_by_simulation(s, n_paths=20000, n_grid=400, seed=0):
    """Monte Carlo covariance of pinned Brownian motions (one per axis and side)."""
    rng = np.random.default_rng(seed)
    R, A = s.shape
    vals = np.zeros((n_paths, R))
    for a in range(A):
        for sign in (1.0, -1.0):
            on = np.sign(s[:, a]) == sign
            if not on.any():
                continue
            top = np.abs(s[on, a]).max()
            grid = np.linspace(0, top, n_grid + 1)
            steps = rng.standard_normal((n_paths, n_grid)) * np.sqrt(np.diff(grid))
            path = np.concatenate([np.zeros((n_paths, 1)), np.cumsum(steps, axis=1)], axis=1)
            for r in np.flatnonzero(on):
                vals[:, r] += np.array([np.interp(abs(s[r, a]), grid, p) for p in path])
    return np.cov(vals, rowvar=False)


def test_exact_cov_is_the_brownian_covariance():
    s = np.array([[1.0, 2.0], [2.0, -1.0], [0.5, 0.5], [3.0, 2.5]])
    mc = _brownian_cov_by_simulation(s, n_paths=4000, n_grid=200)
    np.testing.assert_allclose(exact_cov(s), mc, atol=0.25)
    # opposite sides of an axis are independent; the target itself has no error
    assert exact_cov(np.array([[1.0, 0.0], [-1.0, 0.0]]))[0, 1] == 0.0
    assert exact_cov(np.zeros((1, 2)))[0, 0] == 0.0


def test_low_rank_basis_has_exact_variances_and_close_covariances():
    rng = np.random.default_rng(1)
    s = np.column_stack([rng.uniform(-1, 6, 60), rng.uniform(-3, 4, 60)])
    U, bridge = brownian_basis(s)
    approx = U @ U.T + np.diag(bridge)
    exact = exact_cov(s)
    np.testing.assert_allclose(np.diag(approx), np.diag(exact), rtol=1e-9)
    assert np.abs(approx - exact).max() < 0.05 * exact.max()
    # runs at knots are represented exactly
    s_knots = np.array([[6.0, 4.0], [3.0, 2.0]])
    U, bridge = brownian_basis(s_knots, knots_per_side=2)
    np.testing.assert_allclose(U @ U.T + np.diag(bridge), exact_cov(s_knots), atol=1e-9)


def _random_case(seed=2, R=30, pad=4):
    rng = np.random.default_rng(seed)
    s = np.column_stack([rng.uniform(0.1, 5, R), rng.uniform(-1, 3, R)])
    U, b = brownian_basis(s)
    U = np.vstack([U, np.zeros((pad, U.shape[1]))])
    b = np.concatenate([b, np.zeros(pad)])
    v = rng.uniform(1e-4, 5e-4, R + pad)
    e = rng.normal(0, 0.03, R + pad)
    real = np.arange(R + pad) < R
    return e, real, v, U, b, 0.02


def test_woodbury_density_matches_scipy():
    e, real, v, U, b, sd = _random_case()
    R = int(real.sum())
    cov = np.diag(v[:R] + sd**2 * b[:R]) + sd**2 * U[:R] @ U[:R].T
    ref = stats.multivariate_normal(np.zeros(R), cov).logpdf(e[:R])
    got = float(local_between(*map(jnp.asarray, (e, real, v, U, b)), sd))
    assert got == pytest.approx(ref, rel=1e-10)


def test_loo_terms_are_the_gaussian_conditionals():
    e, real, v, U, b, sd = _random_case(seed=3)
    R = int(real.sum())
    cov = np.diag(v[:R] + sd**2 * b[:R]) + sd**2 * U[:R] @ U[:R].T
    got = np.asarray(local_loo(*map(jnp.asarray, (e, real, v, U, b)), sd))
    for r in (0, 7, R - 1):
        o = [i for i in range(R) if i != r]
        k = cov[r, o]
        m = k @ np.linalg.solve(cov[np.ix_(o, o)], e[o])
        var = cov[r, r] - k @ np.linalg.solve(cov[np.ix_(o, o)], k)
        assert got[r] == pytest.approx(stats.norm(m, np.sqrt(var)).logpdf(e[r]), rel=1e-9)
    assert np.all(got[R:] == 0.0)


def test_signed_distances_and_bad_input():
    s = signed_distances([1e8, 4e9], [2e9, 2e11], at=(1e9, 1e11))
    np.testing.assert_allclose(s, [[np.log(10), np.log(50)], [np.log(0.25), np.log(0.5)]])
    with pytest.raises(ValueError, match="target"):
        signed_distances([1e8], [1e9], at=(0.0, 1e9))
    with pytest.raises(ValueError, match="run 0 has params"):
        signed_distances([-1.0], [1e9], at=(1e9, 1e9))


def test_fit_options_check_the_local_fields():
    with pytest.raises(ValueError, match="local_to"):
        FitOptions(local_sd=0.01)
    with pytest.raises(ValueError, match="local_sd"):
        FitOptions(local_to=(1e9, 1e10), local_sd=-1.0)
    with pytest.raises(ValueError, match="end-of-run only"):
        FitOptions(rows="all", residual="ar1", local_to=(1e9, 1e10), local_sd=0.01)
    # defaults leave the provenance (and cache keys) as they were
    assert "local_sd" not in FitOptions().to_dict()
    assert FitOptions(local_to=[1e9, 2e10], local_sd=0.01).to_dict()["local_to"] == [1e9, 2e10]


def _log_density(design, arrays, extra=None):
    """Family-model log density and ``mu`` at fixed parameters (flat prior, chinchilla)."""
    prior = flat_prior()
    params = {
        "xi": jnp.zeros(len(prior.names)),
        "log_loss_ref": jnp.asarray(design.log_scale_loc),
        "log_sigma_run": jnp.asarray(np.log(0.02)),
        "log_sigma_obs": jnp.asarray(np.log(0.004)),
        **(extra or {}),
    }
    kw = {
        **{
            k: (v if isinstance(v, dict) else jnp.asarray(v))
            for k, v in design.model_args().items()
        },
        "run_mask": jnp.arange(design.n_runs_padded) < design.n_runs,
        "prior": {k: jnp.asarray(a) for k, a in arrays.items()},
        "log_loss": jnp.asarray(design.log_loss),
    }
    ld, tr = log_density(make_family_model("chinchilla"), (), kw, params)
    return float(ld), np.asarray(tr["mu"]["value"])


def test_model_log_density_is_within_plus_joint_gaussian():
    """The family model's likelihood with local=... against a dense Gaussian by hand."""
    frame = simulate_family(seed=4, n_ckpt=3)
    at = (3.2e9, 1.28e11)
    design = make_design(frame, n_eff_per_run=0.0, local_to=at, local_sd=0.03)
    plain = make_design(frame, n_eff_per_run=0.0)
    prior = flat_prior()
    arrays = prior_arrays(prior, log_scale_loc=design.log_scale_loc)
    arrays = {**arrays, "df_run": np.asarray(1e7), "df_obs": np.asarray(1e7)}
    ld_local, mu = _log_density(design, arrays)
    ld_plain, _ = _log_density(plain, arrays)
    # the prior terms are shared: the difference is the likelihoods' difference
    n = design.n_rows
    e = design.log_loss[:n] - mu[:n]
    run = design.run[:n]
    R = design.n_runs
    srun, sobs = 0.02, 0.004
    loc = design.run_local
    big = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            big[i, j] = (
                srun**2 * (run[i] == run[j])
                + 0.03**2
                * (loc["U"][run[i]] @ loc["U"][run[j]] + (run[i] == run[j]) * loc["bridge"][run[i]])
                + sobs**2 * (i == j)
            )
    ll_local = stats.multivariate_normal(np.zeros(n), big).logpdf(e)
    blocks = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            blocks[i, j] = srun**2 * (run[i] == run[j]) + sobs**2 * (i == j)
    ll_plain = stats.multivariate_normal(np.zeros(n), blocks).logpdf(e)
    assert R == 5
    # (df = 1e7 Student-t terms are Gaussian to O(z^4 / df): about 1e-5 nats here)
    assert ld_local - ld_plain == pytest.approx(ll_local - ll_plain, abs=1e-4)
    assert abs(ll_local - ll_plain) > 0.01  # the local term changes the likelihood


@pytest.fixture(scope="module")
def local_pair():
    frame = simulate_family(seed=5)
    at = (3.2e9, 1.28e11)
    opts = FitOptions(local_to=at, local_sd=0.01)
    return (
        at,
        fit(frame, prior="flat", seed=0, sampler=SMALL),
        fit(frame, prior="flat", seed=0, sampler=SMALL, options=opts),
    )


def test_local_fit_runs_records_and_widens(local_pair):
    at, plain, local = local_pair
    assert local.options.local_sd == 0.01 and local.options.local_to == at
    # (the small test sampler: r̂ is checked loosely, divergences strictly)
    assert local.diagnostics["rhat_max"] < 1.05 and local.diagnostics["divergences"] == 0
    p0 = plain.predict(at, ci_prob=0.8).query("kind == 'new_run'").iloc[0]
    p1 = local.predict(at, ci_prob=0.8).query("kind == 'new_run'").iloc[0]
    # the law's error between the runs and the target widens the target's interval
    assert (p1["upper"] - p1["lower"]) > (p0["upper"] - p0["lower"])
    # per-run log-likelihoods (the LOO conditionals) feed PSIS-LOO over runs
    import warnings

    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k with five runs
        elpd = az.loo(local.to_datatree(), var_name="run_log_loss")
    assert np.isfinite(elpd.elpd) and elpd.elpd_i.shape == (5,)


def test_plan_with_a_local_fit(local_pair):
    from hiscale import plan

    at, _, local = local_pair
    with pytest.raises(ValueError, match="refit local to the plan's target"):
        plan(local, at=(at[0] * 2, at[1]), candidates=[(1e9, 2e10)], budget=1e21)
    p = plan(local, at=at, candidates=[(1e9, 2e10), (1.6e9, 6.4e10)], budget=1e21, n_outcomes=8)
    text = " ".join(p.notes)
    assert "not used: the fit is local" in text and "local fit (local_sd = 0.01)" in text
    assert len(p.runs) >= 1


def test_local_variance_removes_a_candidates_information(local_pair):
    """An unbounded law error at a one-row candidate leaves the target's width where it was."""
    import pandas as pd

    from hiscale.planning.preposterior import Preposterior, draws_from_fit

    at, plain, _ = local_pair
    draws = draws_from_fit(plain)
    cands = pd.DataFrame({"params": [1.6e9], "tokens": [6.4e10], "flops": [6 * 1.6e9 * 6.4e10]})
    widths = {}
    for n_rows in (1, 8):
        for lv in (0.0, 1e-3, 1e3):
            pre = Preposterior(
                draws, at, cands, n_outcomes=16, seed=0, n_rows=n_rows, local_var=[lv]
            )
            now = pre.current()[0].mean()
            after = pre.widths(pre.base(), pre.loglik)[0].mean()
            widths[n_rows, lv] = (now, after)
        assert widths[n_rows, 0.0][1] < widths[n_rows, 1e-3][1] < widths[n_rows, 1e3][1]
    # a one-row run says nothing then; a longer run keeps its within-run shape
    assert widths[1, 1e3][1] == pytest.approx(widths[1, 1e3][0], rel=1e-3)
    assert widths[8, 1e3][1] < widths[8, 1e3][0]
    with pytest.raises(ValueError, match="local_var"):
        Preposterior(draws, at, cands, local_var=[-1.0])


def test_cli_predict_local_sd(capsys):
    """``hiscale predict --local-sd``: a local fit, its interval wider than the ordinary one."""
    import json
    from pathlib import Path

    from hiscale.cli import main

    demo = str(Path(__file__).resolve().parents[1] / "data" / "demo_curves.csv")
    small = [f"--num-warmup={SMALL.num_warmup}", f"--num-samples={SMALL.num_samples}"]
    small += ["--target-accept", "0.9"]  # LOCAL_SAMPLER's 0.99 costs time, not what is tested
    common = ["predict", demo, "--family", "sim1", "--at", "7e9", "1.4e11", "--prior", "flat"]
    out = {}
    for extra in ([], ["--local-sd", "0.02"]):
        assert main([*common, *small, *extra, "--json", "--quiet"]) == 0
        out[bool(extra)] = json.loads(capsys.readouterr().out)
    assert "local" not in out[False]
    assert out[True]["local"] == {"local_to": [7e9, 1.4e11], "local_sd": 0.02, "local_learn": False}
    # a different likelihood, so a different posterior (on data simulated from the law
    # itself the local term may take over some run-to-run spread: no width ordering)
    m = [out[k]["prediction"]["new_run"]["median"] for k in (False, True)]
    assert np.isfinite(m).all() and m[0] != m[1]
    assert main([*common, *small, "--local-sd", "0.02", "--quiet"]) == 0
    assert "local fit (experimental)" in capsys.readouterr().out
    assert main([*common, *small, "--local-sd", "0.02", "--local-learn", "--json", "--quiet"]) == 0
    loc = json.loads(capsys.readouterr().out)["local"]
    assert loc["local_learn"] and loc["local_sd_posterior_median"] > 0
    assert main([*common, "--local-learn"]) == 2
    assert "--local-learn needs --local-sd" in capsys.readouterr().err
    assert main(["predict", "--fit", "x.nc", "--at", "7e9", "1.4e11", "--local-sd", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--local-sd fits DATA local to --at" in err


def test_cli_predict_local_choice(capsys):
    """``hiscale predict --local-choice``: the choice, its scores and the fit it made."""
    import json
    import re
    from pathlib import Path

    from hiscale.cli import main

    demo = str(Path(__file__).resolve().parents[1] / "data" / "demo_curves.csv")
    # short runs at the end-of-run default's step size: the choice's record is tested,
    # not LOCAL_SAMPLER's convergence
    small = [f"--num-warmup={SMALL.num_warmup}", f"--num-samples={SMALL.num_samples}",
             "--target-accept", "0.9"]  # fmt: skip
    common = ["predict", demo, "--family", "sim1", "--at", "7e9", "1.4e11", "--prior", "flat"]
    assert main([*common, *small, "--local-choice", "0.01", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    note = out["local_choice"]["note"]
    g, loc = map(float, re.search(r"global ([-\d.]+), local \(sd 0.01\) ([-\d.]+)", note).groups())
    assert out["local_choice"]["local"] == (loc > g) and note in out["warnings"]
    # the fit is the one chosen
    assert ("local" in out) == out["local_choice"]["local"]
    for bad, msg in (
        (["--local-sd", "0.01"], "give --local-sd or --local-choice, not both"),
        (["--law", "h-term", "--rows", "all"], "--local-choice applies to the end-of-run model"),
    ):
        assert main([*common, "--local-choice", "0.01", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err


def test_learned_scale_adds_its_prior_and_nothing_else():
    """log p(learned, ln sd = v) - log p(fixed sd = e^v) is the N(ln 0.01, 0.5) prior at v."""
    from hiscale.modeling.local import LOCAL_SD_PRIOR_SD

    frame = simulate_family(seed=6, n_ckpt=3)
    at = (3.2e9, 1.28e11)
    v = np.log(0.02)
    fixed = make_design(frame, local_to=at, local_sd=float(np.exp(v)))
    learned = make_design(frame, local_to=at, local_sd=0.01, local_learn=True)
    prior = flat_prior()
    arrays = prior_arrays(prior, log_scale_loc=fixed.log_scale_loc)
    diff = (
        _log_density(learned, arrays, {"log_local_sd": jnp.asarray(v)})[0]
        - _log_density(fixed, arrays)[0]
    )
    assert diff == pytest.approx(stats.norm(np.log(0.01), LOCAL_SD_PRIOR_SD).logpdf(v), abs=1e-8)
    with pytest.raises(ValueError, match="local_learn"):
        FitOptions(local_learn=True)


# a learned local scale (experimental, not adopted): ~18 s in CI, run with -m slow
@pytest.mark.slow
def test_learned_scale_fit_keeps_its_draws_and_loo():
    import warnings

    import arviz as az

    frame = simulate_family(seed=5)
    at = (3.2e9, 1.28e11)
    f = fit(
        frame,
        prior="flat",
        seed=0,
        sampler=SMALL,
        options=FitOptions(local_to=at, local_sd=0.01, local_learn=True),
    )
    sd = np.asarray(f.to_datatree()["posterior"]["local_sd"])
    assert sd.shape == (SMALL.num_chains, SMALL.num_samples) and np.all(sd > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert np.isfinite(az.loo(f.to_datatree(), var_name="run_log_loss").elpd)
    from hiscale import plan

    p = plan(f, at=at, candidates=[(1e9, 2e10)], budget=1e21, n_outcomes=8)
    assert any("learned local_sd: posterior median" in n for n in p.notes)


def _local_choice_cell(jump: float, k: int = 4):
    """A 5-size simulated family; the 4th size's losses times ``jump`` (the law's miss)."""
    from hiscale.backtesting.protocol import make_cells
    from hiscale.data.curves import load_curves

    frame = simulate_family(sizes=(5e7, 1e8, 2e8, 4e8, 8e8), seed=5)
    frame.loc[frame["params"] == 4e8, "loss"] *= jump
    (cell,) = make_cells(load_curves(frame), grid=[(k, 1.0)], min_tokens=0.0)
    return cell


def test_local_choice_by_leave_future_out():
    import re

    from hiscale.backtesting.methods import get_method

    m = get_method("bayes-local-choice", prior="flat", sampler=SMALL)
    # a 6% miss of the law at the held size: the global fit's narrow interval scores
    # far worse there, and the cell fits local to its target; the row says so
    pred = m(_local_choice_cell(1.06), flat_prior(), seed=0)
    assert pred.note.startswith("local fit chosen by leave-future-out on N = 4e+08 (1 run(s))")
    g, loc = map(
        float, re.search(r"global ([-\d.]+), local \(sd 0.01\) ([-\d.]+)", pred.note).groups()
    )
    assert loc > g  # the rule: a strictly higher log score
    # fewer than 3 sizes: no choice, and the note says so
    local, note, flagged = m.choose_local(_local_choice_cell(1.0, k=2), flat_prior(), seed=0)
    assert (local, flagged) == (False, False)
    assert note == "global fit: 2 size(s) (sizes within 1% as one), no leave-future-out choice"


def test_sizes_within_one_percent_count_as_one():
    """Near-equal sizes are one size in the global/local choice, and are held out together."""
    from hiscale.data.curves import load_curves
    from hiscale.infer.choice import SIZE_TOL, _hold_out_largest, choose_local, size_groups

    # hand-counted groups: neighbours within 1% chain into one group
    assert size_groups([4e8, 1e8, 4.02e8, 4e8], 0.01).tolist() == [1e8, 4e8]
    assert size_groups([1.0, 1.009, 1.018, 1.2], 0.01).tolist() == [1.0, 1.2]
    assert size_groups([1e8, 4e8, 4.02e8], 0.0).tolist() == [1e8, 4e8, 4.02e8]
    assert size_groups([1e8, 1.0101e8], 0.01).tolist() == [1e8, 1.0101e8]
    frame = simulate_family(sizes=(1e8, 2e8, 4e8, 4.02e8), seed=5)
    c = load_curves(frame)
    held_n, inner, held = _hold_out_largest(c, c.frame, "test", tol=SIZE_TOL)
    assert held_n == 4.02e8
    assert sorted(held["params"].unique()) == [4e8, 4.02e8]
    # one row per held run: its last checkpoint
    last = c.frame[c.frame["params"] >= 4e8].groupby("run")["tokens"].max()
    assert held.set_index("run")["tokens"].sort_index().equals(last.sort_index())
    assert sorted(inner.frame["params"].unique()) == [1e8, 2e8]
    assert "within 1% of it is held out" in inner.log[-1].reason
    # exact sizes (tol 0): only the largest is held out, as before
    _, inner0, held0 = _hold_out_largest(c, c.frame, "test")
    assert sorted(held0["params"].unique()) == [4.02e8]
    assert 4e8 in set(inner0.frame["params"])
    # 1e8, 4e8 and 4.02e8 are two sizes: no choice is measured, and no fit is run
    small = load_curves(frame[frame["params"] != 2e8])

    def no_fit(*a, **k):
        raise AssertionError("no fit expected")

    local, note, flagged = choose_local(
        small, no_fit, family=str(frame["family"].iloc[0]), prior="flat", law="chinchilla",
        seed=0, options=FitOptions(min_tokens=0.0), sampler=SMALL, sd=0.01,
    )  # fmt: skip
    assert (local, flagged) == (False, False)
    assert note == "global fit: 2 size(s) (sizes within 1% as one), no leave-future-out choice"


def _jumped_family(jump: float = 1.06) -> tuple:
    """Four sizes (no schedule columns), the largest's losses times ``jump``; a target above."""
    frame = simulate_family(sizes=(5e7, 1e8, 2e8, 4e8), seed=5)
    frame.loc[frame["params"] == 4e8, "loss"] *= jump
    return frame, (8e8, 40.0 * 8e8)


# bayes-auto-local's global/local step (measured, not adopted): ~26 s, run with -m slow
@pytest.mark.slow
def test_law_auto_with_a_target_measures_global_or_local():
    """law="auto" + FitOptions(local_to, local_sd): the end-of-run model's global/local step.

    The scores in the record are recomputed from fits made by hand on the three
    smaller sizes, and scored with SciPy's log-normal density.
    """
    import re

    from hiscale.infer.choice import _local_record

    frame, at = _jumped_family()
    f = fit(
        frame, law="auto", prior="flat", seed=0, sampler=SMALL,
        options=FitOptions(local_to=at, local_sd=0.01),
    )  # fmt: skip
    choice = f.provenance["choice"]
    assert choice["chosen"] == "end-of-run" and "schedule" in choice["reason"]
    local = choice["local"]
    assert local["sd"] == 0.01 and local["to"] == list(at)
    assert local["note"] in f.provenance["notes"]
    inner = frame[frame["params"] < 4e8]
    held = frame[frame["params"] == 4e8].sort_values("tokens").tail(1)
    actual = held["loss"].to_numpy()
    by_hand = {}
    for name, opts in (
        ("global", FitOptions()),
        ("local", FitOptions(local_to=(4e8, float(held["tokens"].iloc[0])), local_sd=0.01)),
    ):
        g = fit(inner, prior="flat", seed=0, sampler=SMALL, options=opts)
        _, d = g.draws(held["params"].to_numpy(), held["tokens"].to_numpy(), seed=0)
        logd = np.log(d[:, 0])
        by_hand[name] = stats.lognorm.logpdf(
            actual[0], s=logd.std(ddof=1), scale=np.exp(logd.mean())
        )
    g, loc = map(
        float, re.search(r"global ([-\d.]+), local \(sd 0.01\) ([-\d.]+)", local["note"]).groups()
    )
    assert (g, loc) == (round(by_hand["global"], 3), round(by_hand["local"], 3))
    # a 6% miss at the held size: local wins, and the returned fit is the local one
    assert local["local"] is True and loc > g
    assert f.options.local_sd == 0.01 and f.options.local_to == at
    # the whole-curve model has no local form: global, and the record says why
    rec = _local_record(
        None, fit, chosen="whole-curve", family="sim", prior="flat", seed=0,
        options=FitOptions(), sampler=SMALL, sd=0.01, to=at,
    )  # fmt: skip
    assert rec["local"] is False and "has no local form" in rec["note"]
    with pytest.raises(ValueError, match="local_learn"):
        fit(frame, law="auto", options=FitOptions(local_to=at, local_sd=0.01, local_learn=True))


# bayes-auto-local (measured, not adopted): ~33 s in CI, run with -m slow
@pytest.mark.slow
def test_bayes_auto_local_cells_and_cli(capsys, tmp_path):
    """Method bayes-auto-local: the row's note has both steps; the CLI's --law auto path."""
    import json

    from hiscale.backtesting.methods import BayesCurveMethod, get_method
    from hiscale.cli import main

    m = get_method("bayes-auto-local", sampler=SMALL)
    assert m.local_choice == 0.01 and m.law == "auto"
    pred = m(_local_choice_cell(1.06), m.prepare(None, "sim"), seed=0)
    assert "end-of-run model" in pred.note
    assert "local fit chosen by leave-future-out on N = 4e+08" in pred.note
    with pytest.raises(ValueError, match="local_choice needs law='auto'"):
        BayesCurveMethod(law="h-term", local_choice=0.01)

    # no schedule columns: law auto keeps the end-of-run model, then measures global/local
    frame, at = _jumped_family()
    csv = tmp_path / "jumped.csv"
    frame.to_csv(csv, index=False)
    small = [f"--num-warmup={SMALL.num_warmup}", f"--num-samples={SMALL.num_samples}"]
    small += ["--target-accept", "0.9"]
    common = ["predict", str(csv), "--family", "sim", "--at", str(at[0]), str(at[1])]
    common += ["--prior", "flat", "--min-tokens", "0"]
    code = main([*common, *small, "--law", "auto", "--local-choice", "0.01", "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    local = out["choice"]["local"]
    assert out["local_choice"] == {"local": local["local"], "note": local["note"]}
    assert local["to"] == list(at) and local["note"] in out["warnings"]
    assert ("local" in out) == local["local"]  # the fit is the one chosen
    assert main([*common, "--law", "auto", "--local-sd", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give --local-choice, not --local-sd" in err


def test_local_fits_default_to_the_local_sampler():
    """A local fit without sampler settings samples with LOCAL_SAMPLER; flags override parts."""
    import argparse

    from hiscale.cli.args import sampler_settings
    from hiscale.infer.settings import CURVE_SAMPLER, LOCAL_SAMPLER, default_sampler

    local = FitOptions(local_to=(1e9, 2e10), local_sd=0.01)
    assert default_sampler(local) is LOCAL_SAMPLER
    assert LOCAL_SAMPLER.target_accept_prob == 0.99 and LOCAL_SAMPLER.num_warmup == 1000
    assert default_sampler(FitOptions()) == type(LOCAL_SAMPLER)()
    assert default_sampler(FitOptions(rows="all", residual="ar1")) is CURVE_SAMPLER
    args = argparse.Namespace(
        num_warmup=50, num_samples=None, num_chains=None, target_accept_prob=None
    )
    s = sampler_settings(args, local)
    assert (s.num_warmup, s.target_accept_prob, s.init_mass) == (50, 0.99, "laplace")
    # --target-accept: parsed in (0, 1) and passed on; out of range is refused
    from hiscale.cli.args import add_sampler_args

    p = argparse.ArgumentParser()
    add_sampler_args(p)
    s = sampler_settings(p.parse_args(["--target-accept", "0.8"]), local)
    assert (s.target_accept_prob, s.num_warmup) == (0.8, LOCAL_SAMPLER.num_warmup)
    assert sampler_settings(p.parse_args([]), local) == LOCAL_SAMPLER
    with pytest.raises(SystemExit):
        p.parse_args(["--target-accept", "1.5"])
