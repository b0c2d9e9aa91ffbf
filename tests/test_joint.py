"""Joint hierarchical fit (research use): smoke run on simulated families."""

import numpy as np
import pandas as pd
import pytest
from engine_sim import TRUTH, simulate_family

from hiscale.contrib.joint import fit_joint
from hiscale.data.curves import load_curves


def test_joint_needs_two_families():
    c = load_curves(simulate_family("a"))
    with pytest.raises(ValueError, match=">= 2 families"):
        fit_joint(c, families=["a"])


@pytest.mark.slow
def test_joint_fit_smoke():
    frames = [simulate_family(f"f{i}", seed=i) for i in range(3)]
    jf = fit_joint(
        load_curves(pd.concat(frames)), families=["f0", "f1", "f2"], num_warmup=200, num_samples=200
    )
    post = jf.datatree["posterior"]
    assert post["log_alpha"].sizes["family"] == 3
    alpha = float(np.exp(post["log_alpha"]).mean())
    assert abs(np.log(alpha) - TRUTH["log_alpha"]) < 0.5
    assert "rhat_max" in jf.diagnostics
