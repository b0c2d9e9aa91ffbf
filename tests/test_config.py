"""hiscale.configure(): importing hiscale changes nothing; the samplers ask for x64."""

import os
import subprocess
import sys

import jax
import pytest

import hiscale
from hiscale import _config


def _clean_env() -> dict[str, str]:
    """This process' environment without the JAX settings conftest's configure() made."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    env.pop("JAX_ENABLE_X64", None)
    return env


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_clean_env() if env is None else env,
    )


def test_import_changes_nothing():
    proc = _run(
        "import os, hiscale, jax\n"
        "assert not jax.config.jax_enable_x64 and 'JAX_PLATFORMS' not in os.environ\n"
        "assert 'XLA_FLAGS' not in os.environ\n"
        "assert jax.config.jax_compilation_cache_dir is None\n"
        "print('ok')"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_samplers_refuse_to_run_without_x64():
    proc = _run(
        "import pandas as pd\n"
        "from hiscale.data.curves import load_curves\n"
        "from hiscale.infer.fit import fit\n"
        "from hiscale.modeling.simulate import simulate_families\n"
        "from hiscale.population import build_prior\n"
        "frame = pd.DataFrame({'family': 'f', 'run': ['a', 'a', 'b', 'b'],\n"
        "    'params': [1e8, 1e8, 2e8, 2e8], 'tokens': [1e9, 2e9, 1e9, 2e9],\n"
        "    'loss': [3.0, 2.9, 2.8, 2.7]})\n"
        "calls = [lambda: fit(frame, prior='flat'),\n"
        "    lambda: build_prior(load_curves(frame)),\n"
        "    lambda: simulate_families('flat', n_families=1)]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as err:\n"
        "        print(err)\n"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    for name, line in zip(
        ("hiscale.fit", "hiscale.build_prior", "hiscale.simulate_families"), lines, strict=True
    ):
        assert line.startswith(f"{name} needs 64-bit floats in JAX: call hiscale.configure() first")


def test_configure_in_a_fresh_process(tmp_path):
    cache = tmp_path / "jaxcache"
    proc = _run(
        "import os, jax, hiscale\n"
        f"s = hiscale.configure(host_devices=3, platform='cpu', compile_cache={str(cache)!r})\n"
        "assert jax.config.jax_enable_x64\n"
        "assert len(jax.devices()) == 3, jax.devices()\n"
        "print(os.environ['XLA_FLAGS'])\n"
        "print(s)\n"
    )
    assert proc.returncode == 0, proc.stderr
    flags, settings = proc.stdout.splitlines()
    assert flags == (
        "--xla_force_host_platform_device_count=3 --xla_cpu_copy_insertion_use_region_analysis=true"
    )
    assert settings == str(
        {"x64": True, "host_devices": None, "platform": "cpu", "compile_cache": str(cache)}
    )


def test_default_compile_cache(monkeypatch):
    monkeypatch.delenv("HISCALE_JAX_CACHE", raising=False)
    monkeypatch.setenv("HISCALE_CACHE", "/somewhere")
    assert _config.default_compile_cache() == os.path.join("/somewhere", "jax")
    monkeypatch.setenv("HISCALE_JAX_CACHE", "/elsewhere")
    assert _config.default_compile_cache() == "/elsewhere"
    monkeypatch.setenv("HISCALE_JAX_CACHE", "0")
    assert _config.default_compile_cache() is None


def test_host_device_flag_replaces_an_earlier_count(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_force_host_platform_device_count=8")
    _config._set_host_devices(None)  # a user's own count wins
    assert os.environ["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=8"
    _config._set_host_devices(2)
    assert os.environ["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=2"


def test_copy_insertion_flag_is_added_once_and_yields_to_the_user(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    _config._set_copy_insertion()
    _config._set_copy_insertion()
    flag = "--xla_cpu_copy_insertion_use_region_analysis"
    assert os.environ["XLA_FLAGS"] == f"--xla_foo=1 {flag}=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_copy_insertion_use_region_analysis=false")
    _config._set_copy_insertion()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_copy_insertion_use_region_analysis=false"


def test_configure_again_after_jax_started():
    jax.numpy.zeros(1).block_until_ready()  # the back end runs
    n = len(jax.devices("cpu"))
    assert hiscale.configure(host_devices=n)["x64"] is True  # same request: fine
    with pytest.raises(RuntimeError, match=r"JAX has already started; call hiscale\.configure"):
        hiscale.configure(host_devices=n + 1)
    assert len(jax.devices("cpu")) == n


def test_compile_cache_keeps_small_programs(tmp_path):
    """JAX skips programs compiled in under a second by default; hiscale caches them all."""
    cache = tmp_path / "jaxcache"
    proc = _run(
        "import jax, hiscale\n"
        f"hiscale.configure(platform='cpu', compile_cache={str(cache)!r})\n"
        "print(jax.config.jax_persistent_cache_min_compile_time_secs,\n"
        "      jax.config.jax_persistent_cache_min_entry_size_bytes)\n"
        "(jax.numpy.arange(3.0) * 2).block_until_ready()\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0.0", "0"]
    assert any(p.name.startswith("jit_") for p in cache.iterdir())  # a tiny program, stored
