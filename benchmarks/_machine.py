"""Where benchmark numbers were measured (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform

import numpy as np
import scipy

import hiscale


def machine() -> dict[str, object]:
    """Platform, CPU count and library versions."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "hiscale": hiscale.__version__,
    }


def emit(result: dict, out: str | None) -> None:
    """Print a benchmark's JSON document and, with ``out``, write it there too."""
    import json

    text = json.dumps(result, indent=2, default=float)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")
    print(text)


def write_json(result: dict, out: str | None) -> None:
    """Write a benchmark's JSON document to ``out`` (nothing without ``out``)."""
    import json
    from pathlib import Path

    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=float) + "\n")
