"""Shared fixtures. CPU only, two host devices for multi-chain runs, seeded."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import pytest

import hiscale

# session-wide, before any test module is imported (and before JAX starts)
hiscale.configure(host_devices=2, platform="cpu")


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
