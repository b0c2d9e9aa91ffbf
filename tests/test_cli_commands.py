"""The user commands: predict, fit, prior build, simulate, demo (in-process and as processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hiscale.cli import build_parser, main
from hiscale.cli.report import data_line, verdict_line
from hiscale.infer.fit import fit
from hiscale.infer.result import load_fit
from hiscale.modeling.simulate import simulate_families
from hiscale.priors.card import model_card
from hiscale.priors.prior import Prior, PriorWarning, flat_prior, load_prior
from hiscale.testing import TEST_SAMPLER, fake_fit

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "data" / "demo_curves.csv")
#: The shipped test sampler, so compiled kernels are shared with the other test modules.
SMALL = [f"--num-warmup={TEST_SAMPLER.num_warmup}", f"--num-samples={TEST_SAMPLER.num_samples}"]
TARGET = ["--at", "7e9", "1.4e11"]


def run_main(capsys, *argv):
    """``hiscale ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_process(*argv, env=None, timeout=600):
    """``python -m hiscale ARGV`` as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "hiscale", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def saved_fit(tmp_path_factory):
    """``hiscale fit`` of the demo's low-budget family with the flat prior, saved."""
    path = tmp_path_factory.mktemp("fit") / "sim3.nc"
    assert main(["fit", DEMO, "--family", "sim3", "--prior", "flat", *SMALL, "--quiet",
                 "--out", str(path)]) == 0  # fmt: skip
    return path


@pytest.fixture(scope="module")
def fake_saved(tmp_path_factory):
    """A fake fit (no NUTS) named like the demo's low-budget family, saved."""
    return fake_fit(family="sim3", n_sizes=2, seed=0).save(
        tmp_path_factory.mktemp("fake") / "fake.nc"
    )


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("cmd", ["predict", "fit", "prior build", "simulate", "demo"])
def test_help_is_complete(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd.split(), "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hiscale {cmd}")
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[cmd.split()[0]]
    if cmd == "prior build":
        sub = sub._subparsers._group_actions[0].choices["build"]
    for action in sub._actions:
        assert action.help, f"{cmd}: option {action.option_strings or action.dest} has no help"


# ----------------------------------------------------------------------------- predict
def test_predict_json(capsys):
    code, out, err = run_main(
        capsys, "predict", DEMO, "--family", "sim3", *TARGET, "--prior", "flat", *SMALL,
        "--json", "--quiet",
    )  # fmt: skip
    assert code == 0
    assert "fitting" not in err  # --quiet: only warnings (tiny sampler settings may flag)
    res = json.loads(out)
    assert res["family"] == "sim3" and res["prior"] == "flat"
    for kind in ("expected", "new_run"):
        p = res["prediction"][kind]
        (l50, u50), (l80, u80), (l95, u95) = (p["intervals"][k] for k in ("0.5", "0.8", "0.95"))
        assert l95 < l80 < l50 < p["median"] < u50 < u80 < u95
    data = res["data"]
    assert (data["runs"], data["sizes"], data["rows_in_family"], data["rows_used"]) == (2, 2, 40, 4)
    assert data["removed"] == [
        {"step": "end_of_run", "removed": 36, "reason": "tokens < 0.8 x the run's last token count"}
    ]
    assert set(res["diagnostics"]) >= {"rhat_max", "ess_min", "divergences", "flagged"}
    assert res["at"] == {"params": 7e9, "tokens": 1.4e11}


def test_predict_old_target_options_still_work(fake_saved, capsys):
    common = ["predict", "--fit", fake_saved, "--json", "--quiet"]
    _, new, _ = run_main(capsys, *common, *TARGET)
    code, old, err = run_main(capsys, *common, "--params", "7e9", "--tokens", "1.4e11")
    assert code == 0 and json.loads(old) == json.loads(new)
    assert err == "hiscale: warning: --params N --tokens D are deprecated: use --at N D\n"


def test_predict_text_and_plot(fake_saved, capsys, tmp_path):
    png = tmp_path / "p.png"
    code, out, err = run_main(
        capsys, "predict", DEMO, "--fit", fake_saved, *TARGET, "--ci-prob", "0.9", "--plot", png,
    )  # fmt: skip
    assert code == 0
    f = load_fit(fake_saved)
    lines = out.splitlines()
    assert lines[0] == "sim3: predicted loss at N=7B parameters, D=140B tokens"
    assert "90% interval" in lines[1] and "80% interval" not in lines[1]
    assert lines[2].startswith("expected loss") and lines[3].startswith("new run")
    pred = f.predict((7e9, 1.4e11), ci_prob=0.9).set_index("kind")
    for line, kind in ((lines[2], "expected"), (lines[3], "new_run")):
        r = pred.loc[kind]
        assert line.split()[-3:] == [
            f"{r['median']:.4f}",
            f"[{r['lower']:.4f},",
            f"{r['upper']:.4f}]",
        ]
    assert lines[-4].startswith("data: 2 runs, 2 sizes (") and "rows used" in lines[-4]
    assert "prior: flat (weak defaults, no borrowing), chinchilla law" in lines
    assert lines[-2] == f.verdict()
    assert png.stat().st_size > 10_000
    assert f"loaded fit of 'sim3' from {fake_saved}" in err  # progress on stderr


def test_predict_warns_below_the_largest_training_size(fake_saved, capsys):
    code, _, err = run_main(capsys, "predict", "--fit", fake_saved, "--at", "6e7", "1e9", "--quiet")
    assert code == 0
    assert "smaller than the largest training model" in err


def test_fit_and_predict_warn_when_the_prior_saw_the_family(tmp_path, capsys):
    """Like predicting gemstones or gpt3 with corpus-v1, which was learned on them."""
    meta = {"families_used": {"sim3": {}}, "loss_unit": "nats/token"}
    seen = Prior(**{**flat_prior().__dict__, "name": "seen-sim3", "meta": meta})
    seen.save(tmp_path / "seen-sim3")
    expected = (
        "prior 'seen-sim3' was learned on sim3 (group 'sim3' of 'sim3'): it is not "
        "independent of the family being fitted"
    )
    with pytest.warns(PriorWarning) as record:
        f = fit(DEMO, family="sim3", prior=seen, seed=0, sampler=TEST_SAMPLER)
    assert [str(w.message) for w in record] == [expected]
    assert f.provenance["notes"] == [expected]
    # the command line says it once on stderr and in --json; a table without a
    # loss_unit column also says which unit was assumed
    table = tmp_path / "no_unit.csv"
    pd.read_csv(DEMO).drop(columns="loss_unit").to_csv(table, index=False)
    code, out, err = run_main(
        capsys, "predict", table, "--family", "sim3", *TARGET, "--prior", tmp_path / "seen-sim3",
        *SMALL, "--json", "--quiet",
    )  # fmt: skip
    assert code == 0
    res = json.loads(out)
    assert res["prior"] == "seen-sim3"
    assumed = "loss unit: no 'loss_unit' column: assumed 'nats/token'"
    assert res["warnings"][-2:] == [assumed, expected]
    assert err.count(expected) == 1 and f"hiscale: warning: {expected}\n" in err
    assert f"hiscale: warning: {assumed}\n" in err


def test_save_load_predict_is_bit_identical(saved_fit, capsys):
    """A saved fit predicts exactly what the fresh fit (same seed) predicts."""
    common = [*TARGET, "--json", "--quiet"]
    _, fresh, _ = run_main(
        capsys, "predict", DEMO, "--family", "sim3", "--prior", "flat", *SMALL, *common
    )
    _, loaded, _ = run_main(capsys, "predict", "--fit", saved_fit, *common)
    assert json.loads(fresh)["prediction"] == json.loads(loaded)["prediction"]
    # and through the Python API
    f = fit(DEMO, family="sim3", prior="flat", seed=0, sampler=TEST_SAMPLER)
    path = saved_fit.with_name("api.nc")
    f.save(path)
    g = load_fit(path)
    n, d = np.geomspace(1e8, 7e9, 5), np.geomspace(1e10, 1.4e11, 5)
    pd.testing.assert_frame_equal(
        f.predict((n, d), seed=3), g.predict((n, d), seed=3), check_exact=True
    )
    assert g.diagnostics == f.diagnostics and g.family == f.family


def test_flagged_fit_prints_a_clear_warning(tmp_path, capsys):
    flagged = fake_fit(family="sim3", n_sizes=2, flagged=True).save(tmp_path / "flagged.nc")
    code, out, err = run_main(capsys, "predict", "--fit", flagged, *TARGET, "--quiet")
    assert code == 0
    assert out.splitlines()[-1].startswith(
        "WARNING: the sampler did not converge (forced by fake_fit); the intervals may be wrong."
    )
    assert "hiscale: warning: sampler did not converge: forced by fake_fit" in err
    ok = SimpleNamespace(flagged=False, verdict=lambda: "sampler: fine")
    assert verdict_line(ok) == "sampler: fine"


def test_predict_with_fit_and_data_draws_all_rows(fake_saved, tmp_path, capsys):
    png = tmp_path / "q.png"
    code, _, _ = run_main(
        capsys, "predict", DEMO, "--fit", fake_saved, *TARGET, "--plot", png, "--quiet"
    )
    assert code == 0 and png.is_file()
    code, _, err = run_main(
        capsys, "predict", "--fit", fake_saved, "--family", "sim0", *TARGET, "--quiet"
    )
    assert code == 2 and "does not match the saved fit" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "missing.csv", "--family", "f", *TARGET], "file not found: 'missing.csv'"),
        (
            ["predict", DEMO, "--family", "nope", *TARGET],
            "unknown family 'nope'; known families: sim0, sim1, sim2, sim3",
        ),
        (["predict", DEMO, *TARGET], "--family is required: the data hold 4 families"),
        (["predict", *TARGET], "give a curves table DATA or a saved fit with --fit"),
        (["predict", DEMO, "--family", "sim3"], "give the target point with --at N D"),
        (["predict", DEMO, *TARGET, "--params", "7e9"], "give the target point once"),
        (["predict", DEMO, "--family", "sim3", *TARGET, "--prior", "nope"], "unknown prior"),
        (["predict", "--fit", "missing.nc", *TARGET], "fit file not found"),
        (["fit", DEMO, "--family", "nope", "--out", "x.nc"], "unknown family 'nope'"),
        (["simulate", "--prior", "nope", "--out", "x.csv"], "unknown prior 'nope'"),
        (["simulate", "--prior", "flat", "--sparse", "9", "--out", "x.csv"], "--sparse must"),
        (["demo", "--data", DEMO], "--data needs --truth"),
        (["demo", "--data", DEMO, "--truth", "missing.csv"], "truth table not found"),
    ],
)
def test_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert err.startswith("hiscale: error: ") and err.count("\n") == 1, err
    assert message in err


def test_corrupted_fit_file(tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really" * 20)
    code, _, err = run_main(capsys, "predict", "--fit", bad, *TARGET)
    assert code == 2
    assert (
        err == f"hiscale: error: {str(bad)!r} is not a hiscale fit (cannot read netCDF: OSError)\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", DEMO, "--family", "sim3", "--at", "-5", "1e9"],
        ["predict", DEMO, "--family", "sim3", "--at", "7e9", "inf"],
        ["predict", DEMO, "--family", "sim3", "--at", "7e9"],
        ["predict", DEMO, "--family", "sim3", *TARGET, "--ci-prob", "1.5"],
        ["fit", DEMO, "--family", "sim3", "--num-samples", "0", "--out", "x.nc"],
        ["simulate", "--families", "0", "--out", "x.csv"],
        ["fit", DEMO, "--family", "sim3", "--prior-tails", "2", "--out", "x.nc"],
    ],
)
def test_bad_numbers_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fit
def test_fit_with_prior_tails_records_them(capsys, tmp_path):
    out_path = tmp_path / "tails.nc"
    code, _, _ = run_main(
        capsys, "fit", DEMO, "--family", "sim3", "--prior", "corpus-v1", "--prior-tails", "4",
        *SMALL, "--quiet", "--out", out_path,
    )  # fmt: skip
    assert code == 0
    f = load_fit(out_path)
    assert f.prior.settings["df_law"] == 4.0
    assert f.prior.name == "corpus-v1"
    assert any("Student-t(4) tails" in n for n in f.provenance["notes"])


def test_fit_command_json(saved_fit, capsys, tmp_path):
    out_path = tmp_path / "again.nc"
    code, out, _ = run_main(
        capsys, "fit", DEMO, "--family", "sim3", "--prior", "flat", *SMALL, "--json",
        "--quiet", "--out", out_path,
    )  # fmt: skip
    assert code == 0
    res = json.loads(out)
    assert res["out"] == str(out_path) and out_path.is_file()
    assert set(res["parameters"]) >= {"alpha", "beta", "log_scale", "sigma_run", "sigma_obs"}
    a = res["parameters"]["alpha"]
    assert a["ci95"][0] < a["median"] < a["ci95"][1]


def test_data_line_reports_every_removing_filter():
    s = {
        "runs": 3,
        "sizes": 1,
        "smallest_params": 1e8,
        "largest_params": 1e8,
        "rows_in_family": None,
        "rows_used": 5,
        "removed": [],
    }
    assert data_line(s) == "data: 3 runs, 1 sizes (100M params), 5 rows used; no rows removed"


# ----------------------------------------------------------------------------- simulate
def test_simulate_is_deterministic(tmp_path, capsys):
    a, b, t = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "t.csv"
    for path in (a, b):
        code, out, _ = run_main(
            capsys, "simulate", "--prior", "flat", "--families", "3", "--sparse", "1",
            "--seed", "5", "--out", path, "--truth", t,
        )  # fmt: skip
        assert code == 0
    assert a.read_bytes() == b.read_bytes()
    assert out.splitlines()[0].startswith("3 families, ")
    truth = pd.read_csv(t)
    assert list(truth["sizes_in_data"])[-1] == 2
    code, out, _ = run_main(capsys, "simulate", "--prior", "flat", "--out", a, "--json")
    assert code == 0 and len(json.loads(out)["truth"]) == 4


# ----------------------------------------------------------------------------- model card
def test_model_card_from_meta():
    prior = flat_prior()
    meta = {
        "families_used": {
            "fa": {"rows": 10, "runs": 2, "rhat_max": 1.0042, "flagged": False, "fit_seconds": 1.5}
        },
        "families_left_out": {"fb": "2 sizes < 3"},
        "data_hash": "abcd1234abcd1234",
        "population": {"rhat_max": 1.002, "divergences": 0, "num_warmup": 1000},
        "step1_sampler": {"num_warmup": 500},
        "seconds": {"total": 12.0},
        "rebuild_command": "hiscale prior build data.csv --out models/x",
        "hiscale_version": "0.1.0",
        "built": "2026-01-01",
    }
    card = model_card(Prior(**{**prior.__dict__, "name": "x", "meta": meta}))
    assert card.startswith("# Population prior `x`")
    assert "| fa | 10 | 2 | 1.004 | no | 1.5 |" in card
    assert "| fb | 2 sizes < 3 |" in card
    assert "`abcd1234abcd1234`" in card
    assert "hiscale prior build data.csv --out models/x" in card
    assert "Population sampler verdict: converged." in card
    assert "alpha in [" in card


# ----------------------------------------------------------------------------- processes
def test_process_simulate_and_predict_from_saved_fit(fake_saved, tmp_path):
    out = tmp_path / "sim.csv"
    r = run_process("simulate", "--prior", "flat", "--families", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "wrote" in r.stdout
    r = run_process("predict", "--fit", fake_saved, *TARGET, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["family"] == "sim3"
    r = run_process("predict", "--fit", tmp_path / "nope.nc", *TARGET)
    assert r.returncode == 2 and r.stderr.startswith("hiscale: error: fit file not found")
    r = run_process("predict", DEMO, "--family", "sim3", "--at", "-5", "1e9")
    assert r.returncode == 2 and "must be a finite number > 0" in r.stderr


def test_process_fit(tmp_path):
    out = tmp_path / "f.nc"
    r = run_process("fit", DEMO, "--family", "sim3", "--prior", "flat", *SMALL, "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and load_fit(out).family == "sim3"


def test_process_prior_build(tmp_path):
    """Two-step build on simulated families; writes prior.json and a model card."""
    frame, _ = simulate_families("flat", n_families=3, seed=2, n_sizes=(5, 5))
    data = tmp_path / "sim.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "models" / "sim-prior"
    jax_cache = os.environ.get("HISCALE_CACHE", str(Path.home() / ".cache" / "hiscale"))
    env = {
        "HISCALE_CACHE": str(tmp_path / "cache"),  # fresh step-1 summaries
        "HISCALE_JAX_CACHE": os.environ.get("HISCALE_JAX_CACHE", f"{jax_cache}/jax"),
    }
    # 300 draws: with 150, sim1's step-1 fit (flat prior, 5 sizes, dispersed chain
    # starts) reaches r_hat 1.11 > MAX_STEP1_RHAT and is rightly left out
    step1 = ["--num-warmup", "150", "--num-samples", "300"]
    r = run_process("prior", "build", data, "--out", out, *step1, "--exclude-family", "sim2",
                    "--json", "--quiet", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["name"] == "sim-prior" and res["families_used"] == ["sim0", "sim1"]
    assert "excluded" in res["families_left_out"]["sim2"]
    prior = load_prior(out)
    assert prior.meta["rebuild_command"].startswith(f"hiscale prior build {data} --out {out}")
    card = (out / "MODEL_CARD.md").read_text()
    assert "### Families used (2)" in card and "## Rebuild" in card
    assert "--exclude-family sim2 --num-warmup 150 --num-samples 300" in card


def test_process_demo(tmp_path):
    png = tmp_path / "demo.png"
    r = run_process("demo", "--plot", png, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["family"] == "sim3" and res["at"] == {"params": 7e9, "tokens": 1.4e11}
    methods = [x["method"] for x in res["results"]]
    assert methods == ["bayes, prior corpus-v1", "bayes, prior flat", "paper least squares"]
    borrow = res["results"][0]
    assert borrow["lower95"] < res["truth"] < borrow["upper95"]
    assert png.stat().st_size > 10_000
    assert res["seconds"] < 60


def test_no_retry_reaches_the_fit(monkeypatch, tmp_path):
    """``--no-retry`` passes ``retry=False``; without it the engine's rule (None) holds."""
    import hiscale.infer.fit as fit_mod
    from hiscale.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(fit_mod, "fit", fake)
    for flags, want in (([], None), (["--no-retry"], False)):
        with pytest.raises(Stop):
            main(["fit", DEMO, "--family", "sim1", "--out", str(tmp_path / "f.nc"), *flags])
        assert seen["retry"] is want
