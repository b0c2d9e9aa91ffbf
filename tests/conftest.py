"""Shared fixtures. CPU only, two host devices for multi-chain runs, seeded."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import pytest


def corpus_path() -> Path:
    """Path of the shared corpus; fail under CI when missing, else skip."""
    raw = os.environ.get("HISCALE_CORPUS", "../shared/corpus/curves.csv")
    path = Path(raw)
    if not path.exists():
        msg = f"corpus not found at HISCALE_CORPUS={raw!r}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    return corpus_path()


@pytest.fixture(scope="session")
def corpus(corpus_file):
    from hiscale.data.curves import load_curves

    return load_curves(corpus_file)
