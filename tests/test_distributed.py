"""Distributed runs on Dask: the same rows as in-process, streaming, resume, a worker's death.

One 2-worker ``LocalCluster`` (processes, one thread each) serves the module;
the methods are tiny (the paper's estimator, NUTS with 50 + 50 draws).
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import make_frame

from hiscale._distributed import parse_scheduler
from hiscale.backtesting.methods import BayesMethod, CellPrediction, PaperMethod
from hiscale.backtesting.runner import COLUMNS, _frame, _Progress, backtest, read_rows
from hiscale.cli import main
from hiscale.data.curves import load_curves
from hiscale.infer.fit import FitOptions
from hiscale.infer.settings import SamplerSettings
from hiscale.population import build_prior, summarise_family
from hiscale.priors.prior import PriorWarning

TINY = SamplerSettings(num_warmup=50, num_samples=50)
NO_SECONDS = [c for c in COLUMNS if c != "seconds"]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def synth():
    frame = pd.concat(
        [
            make_frame("clean"),
            make_frame("noisy", sizes=(2e7, 6e7, 2e8, 6e8), noise=0.005, seed=1),
        ],
        ignore_index=True,
    )
    return load_curves(frame)


GRID = [(2, 1.0), (3, 1.0), (3, 0.5)]


def _methods():
    return [PaperMethod(), BayesMethod(name="bayes-flat", prior="flat", sampler=TINY)]


@pytest.fixture(scope="module")
def in_process(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "rows.csv"
    res = backtest(synth, families=["clean", "noisy"], methods=_methods(), grid=GRID, out=out)
    return res, out


# --- identical rows ----------------------------------------------------------------------


def test_local_cluster_gives_the_same_rows_as_in_process(client, synth, in_process, tmp_path):
    ref, ref_out = in_process
    out = tmp_path / "rows.csv"
    res = backtest(
        synth, families=["clean", "noisy"], methods=_methods(), grid=GRID, client=client, out=out
    )
    assert (res["status"] == "ok").all(), res["status"].tolist()
    assert set(res["method"]) == {"paper", "bayes-flat"} and len(res) == 2 * 2 * len(GRID)
    assert res["rhat_max"].notna().sum() == 2 * len(GRID)  # the NUTS cells did sample
    pd.testing.assert_frame_equal(res[NO_SECONDS], ref[NO_SECONDS])  # exact, row for row
    # the streamed file, rewritten in order, holds exactly the returned table
    pd.testing.assert_frame_equal(_frame(read_rows(out)), res)
    a = pd.read_csv(out).drop(columns="seconds")
    b = pd.read_csv(ref_out).drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


# --- streaming and resume ------------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process being killed (not caught by the runner)."""


class StopAfter(PaperMethod):
    """The paper's estimator that 'dies' at its ``n``-th call and counts its calls."""

    def __init__(self, n=None, calls=None):
        self.n, self.calls = n, calls if calls is not None else []

    def __call__(self, cell, state, *, seed):
        self.calls.append((cell.family, cell.k, cell.p))
        if self.n is not None and len(self.calls) >= self.n:
            raise Killed
        return super().__call__(cell, state, seed=seed)


def test_a_killed_run_resumes_where_it_stopped(synth, tmp_path):
    kw = dict(families=["clean", "noisy"], grid="quick")
    fresh_out = tmp_path / "fresh.csv"
    fresh = backtest(synth, methods=[PaperMethod()], out=fresh_out, **kw)
    out = tmp_path / "rows.csv"
    with pytest.raises(Killed):
        backtest(synth, methods=[StopAfter(n=6)], out=out, **kw)
    assert len(read_rows(out)) == 5  # every finished row was on disk
    with out.open("a") as f:
        f.write("noisy,noisy,paper,none,up,last30,5,0.5,0,3")  # a line cut short by the kill
    calls = []
    resumed = backtest(synth, methods=[StopAfter(calls=calls)], out=out, resume=True, **kw)
    assert len(calls) == len(fresh) - 5  # only the missing cells ran
    pd.testing.assert_frame_equal(resumed[NO_SECONDS], fresh[NO_SECONDS])
    pd.testing.assert_frame_equal(_frame(read_rows(out)), resumed)
    # a finished file: resuming runs nothing and returns the same table
    calls.clear()
    again = backtest(synth, methods=[StopAfter(calls=calls)], out=out, resume=True, **kw)
    assert calls == []
    pd.testing.assert_frame_equal(again, resumed)
    pd.testing.assert_frame_equal(
        pd.read_csv(out).drop(columns="seconds"), pd.read_csv(fresh_out).drop(columns="seconds")
    )


def test_resume_on_the_cluster_and_foreign_rows(client, synth, in_process, tmp_path):
    ref, ref_out = in_process
    out = tmp_path / "rows.csv"
    lines = ref_out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]))  # header + 3 finished rows of the in-process run
    settings = ref_out.with_name(ref_out.name + ".settings.json")
    (tmp_path / "rows.csv.settings.json").write_text(settings.read_text())
    res = backtest(
        synth,
        families=["clean", "noisy"],
        methods=_methods(),
        grid=GRID,
        client=client,
        out=out,
        resume=True,
    )
    pd.testing.assert_frame_equal(res[NO_SECONDS], ref[NO_SECONDS])
    pd.testing.assert_frame_equal(res.iloc[:3], ref.iloc[:3])  # kept as they were, seconds too
    with pytest.raises(ValueError, match=r"other settings \(families, methods, include_k1 differ"):
        backtest(synth, families=["noisy"], grid=GRID, out=out, resume=True)
    # without the settings file (an older hiscale's) the rows themselves are checked
    (tmp_path / "rows.csv.settings.json").unlink()
    with (
        pytest.warns(UserWarning, match="without checking"),
        pytest.raises(ValueError, match=r"line 2 .* is not a cell of this run"),
    ):
        backtest(synth, families=["noisy"], grid=GRID, out=out, resume=True)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a backtest file"):
        backtest(synth, families=["noisy"], out=tmp_path / "other.csv", resume=True)
    with pytest.raises(ValueError, match="needs out="):
        backtest(synth, families=["noisy"], resume=True)


# --- a worker dies --------------------------------------------------------------------------


class DieOnce(PaperMethod):
    """Kills its worker process the first time it meets cell (3, 1.0) of 'noisy'."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __call__(self, cell, state, *, seed):
        if (cell.family, cell.k, cell.p) == ("noisy", 3, 1.0) and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        return super().__call__(cell, state, seed=seed)


def test_a_dead_worker_loses_nothing(client, synth, tmp_path):
    marker = tmp_path / "died"
    kw = dict(families=["clean", "noisy"], grid=GRID)
    pids = set(client.run(os.getpid).values())
    res = backtest(synth, methods=[DieOnce(marker)], client=client, out=tmp_path / "r.csv", **kw)
    assert int(marker.read_text()) in pids  # a worker did die in the task ...
    assert (res["status"] == "ok").all() and len(res) == 2 * len(GRID)  # ... and it was retried
    ref = backtest(synth, methods=[PaperMethod()], **kw)
    pd.testing.assert_frame_equal(res[NO_SECONDS], ref[NO_SECONDS])
    assert len(read_rows(tmp_path / "r.csv")) == len(res)


# --- priors on the cluster ------------------------------------------------------------------


def test_prior_step1_on_the_cluster_gives_the_same_fits(client, monkeypatch):
    import hiscale.population

    # tiny step-1 samplers (fast) need not converge: the test is about where they run
    monkeypatch.setattr(hiscale.population, "MAX_STEP1_RHAT", np.inf)
    c = load_curves(pd.concat([make_frame(f"fam{i}", noise=0.005, seed=i) for i in range(3)]))
    kw = dict(sampler=TINY, options=FitOptions(), use_cache=False)
    here = {f: summarise_family(c, f, **kw).mean.tolist() for f in c.families}
    there = build_prior(c, name="sim", client=client, **kw)
    assert list(there.meta["families_used"]) == ["fam0", "fam1", "fam2"]
    assert there.meta["family_means"] == here  # computed on the workers, exactly the same


def test_prepare_runs_on_the_cluster_and_its_warnings_come_back(client):
    words = make_frame("words", noise=0.005, seed=3).assign(loss_unit="nats per word")
    curves = load_curves(words)

    class Stub(BayesMethod):  # the real prior choice, no NUTS per cell
        def __call__(self, cell, state, *, seed):
            return CellPrediction(median=np.full(len(cell.target.frame), 3.0))

    with pytest.warns(PriorWarning, match="runs with the flat prior"):
        res = backtest(curves, families=["words"], methods=[Stub()], grid=[(3, 1.0)], client=client)
    assert res["prior"].tolist() == ["flat (no population in unit nats/word)"] * len(res)


# --- spec, jobs, progress, CLI --------------------------------------------------------------


def test_scheduler_specs():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("local") == ("local", os.cpu_count() or 1)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    for bad in ("local:0", "remote", "10.0.0.1:8786", "local:x"):
        with pytest.raises(ValueError, match="scheduler"):
            parse_scheduler(bad)


def test_jobs_means_a_local_cluster(synth, client, monkeypatch):
    from contextlib import contextmanager

    import hiscale._distributed as d

    seen = []

    @contextmanager
    def fake_open(spec):
        seen.append(spec)
        yield client

    monkeypatch.setattr(d, "open_client", fake_open)
    res = backtest(synth, families=["clean"], grid=[(2, 1.0)], jobs=2)
    assert seen == ["local:2"] and len(res) == 1
    with pytest.raises(ValueError, match="not both"):
        backtest(synth, families=["clean"], jobs=2, client=client)
    with pytest.raises(ValueError, match="scheduler 'locale'"):
        backtest(synth, families=["clean"], client="locale")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_done_failures_and_eta():
    buf = _Tty()
    bar = _Progress(True, total=4, done=1, failed=1, file=buf)
    for status in ("ok", "error: ValueError: x"):
        bar.update({"family": "f", "method": "m", "k": 2, "p": 0.5, "are_pct": 1.0,
                    "status": status})  # fmt: skip
    bar.close()
    text = buf.getvalue()
    assert "3/4" in text and "failed 2" in text and "<" in text  # tqdm: elapsed<remaining
    lines = io.StringIO()
    plain = _Progress(True, total=2, file=lines)
    plain.update({"family": "f", "method": "m", "k": 2, "p": 0.5, "are_pct": 1.0, "status": "ok"})
    assert lines.getvalue().startswith("[1/2] f m k=2 p=0.5 ARE=1.00% ok | failed 0 | ETA 0:00:0")


def test_cli_scheduler_local_2(tmp_path, capsys):
    path = tmp_path / "synth.csv"
    pd.concat([make_frame("clean"), make_frame("other", seed=2)]).to_csv(path, index=False)
    base = ["backtest", str(path), "--family", "all", "--grid", "quick", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*base, "--scheduler", "local:2", "--out", str(tmp_path / "b.csv")]) == 0
    assert "wrote 18 rows" in capsys.readouterr().out
    a = pd.read_csv(tmp_path / "a.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv").drop(columns="seconds"), a)
    assert main([*base, "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--scheduler", "host:1"])
    assert exc.value.code == 2
    assert "expected 'local', 'local:N'" in capsys.readouterr().err


# --- slow: leave-one-group-out priors built on the cluster, prior build CLI -----------------


class PriorProbe(BayesMethod):
    """``bayes`` with leave-one-group-out priors whose 'prediction' is the prior's mean."""

    def __call__(self, cell, state, *, seed):
        return CellPrediction(median=np.full(len(cell.target.frame), 3.0 + state.loc[0]))


def _no_rhat_gate():
    import hiscale.population

    hiscale.population.MAX_STEP1_RHAT = np.inf


def _getenv(name):
    return os.environ.get(name)


def _setenv(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.mark.slow
def test_leave_one_out_priors_built_on_the_cluster_are_the_same(client, tmp_path, monkeypatch):
    """prepare is a task; its step-1 fits are tasks (worker_client); same priors as here."""
    import hiscale.population

    curves = load_curves(pd.concat([make_frame(f"fam{i}", noise=0.005, seed=i) for i in range(3)]))
    probe = PriorProbe(prior="loo", prior_sampler=TINY)
    kw = dict(families="all", methods=[probe], grid=[(3, 1.0)], include_k1=False)
    monkeypatch.setattr(hiscale.population, "MAX_STEP1_RHAT", np.inf)  # tiny samplers
    monkeypatch.setenv("HISCALE_CACHE", str(tmp_path / "here"))  # both compute their priors
    old = client.run(_getenv, "HISCALE_CACHE")
    client.run(_setenv, "HISCALE_CACHE", str(tmp_path / "there"))
    client.run(_no_rhat_gate)
    try:
        there = backtest(curves, client=client, **kw)
    finally:
        for addr, value in old.items():
            client.run(_setenv, "HISCALE_CACHE", value, workers=[addr])
    here = backtest(curves, **kw)
    assert there["prior"].tolist() == ["lofo-fam0", "lofo-fam1", "lofo-fam2"]
    assert list((tmp_path / "there" / "summaries").iterdir())  # step 1 ran on the workers
    pd.testing.assert_frame_equal(there[NO_SECONDS], here[NO_SECONDS])


@pytest.mark.slow
def test_cli_prior_build_on_a_local_cluster(tmp_path, capsys):
    path = tmp_path / "fams.csv"
    frame = pd.concat([make_frame(f"fam{i}", noise=0.005, seed=i) for i in range(3)])
    frame.to_csv(path, index=False)
    base = ["prior", "build", str(path), "--num-warmup", "300", "--num-samples", "300"]
    base += ["--no-cache", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--scheduler", "local:2"]) == 0
    a, b = (json.loads((tmp_path / d / "prior.json").read_text()) for d in "ab")
    assert a["loc"] == b["loc"] and a["cov"] == b["cov"]
    assert "--scheduler" not in b["meta"]["rebuild_command"]  # where it ran changes nothing
