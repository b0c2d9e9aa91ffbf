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
