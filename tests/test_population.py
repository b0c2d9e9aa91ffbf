"""Population prior: family choice, loss units, two-step build on simulated families."""

import numpy as np
import pandas as pd
import pytest
from engine_sim import TRUTH, simulate_family

from hiscale.data.curves import load_curves
from hiscale.infer.fit import FitOptions
from hiscale.infer.settings import SamplerSettings
from hiscale.population import (
    build_prior,
    family_group,
    family_unit,
    majority_unit,
    population_families,
)
from hiscale.priors.prior import Prior, load_prior, resolve_prior

SMALL = SamplerSettings(num_warmup=400, num_samples=400)


def _families(n=3, unit="nats/token"):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        truth = dict(TRUTH)
        truth["log_alpha"] = TRUTH["log_alpha"] + 0.1 * rng.standard_normal()
        f = simulate_family(f"fam{i}", truth=truth, seed=i)
        f["loss_unit"] = unit
        frames.append(f)
    return frames


def test_family_group_and_units():
    assert family_group("gemstones-cooldown") == "gemstones"
    assert family_group("gpt3") == "gpt3"
    frames = _families(3)
    odd = simulate_family("odd", seed=9)
    odd["loss_unit"] = "nats/word"
    c = load_curves(pd.concat([*frames, odd]))
    assert family_unit(c, "odd") == "nats/word"
    assert majority_unit(c) == "nats/token"
    keep, why = population_families(c, loss_unit="nats/token")
    assert keep == ["fam0", "fam1", "fam2"]
    assert "loss unit" in why["odd"]


def test_population_families_reports_narrow_families():
    narrow = simulate_family("narrow", sizes=(1e8, 1.5e8, 2e8))
    two = simulate_family("two", sizes=(1e8, 1e9))
    c = load_curves(pd.concat([narrow, two, *_families(1)]))
    keep, why = population_families(c)
    assert keep == ["fam0"]
    assert "span" in why["narrow"] and "sizes < 3" in why["two"]


@pytest.fixture(scope="module")
def small_prior(tmp_path_factory):
    import os

    os.environ["HISCALE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    c = load_curves(pd.concat(_families(3)))
    return build_prior(c, name="sim", sampler=SMALL, options=FitOptions(), exclude=["fam2"])


def test_two_step_prior_is_centred_near_the_truth(small_prior):
    p = small_prior
    assert p.names == ("u_a", "u_b", "log_alpha", "log_beta")
    assert set(p.meta["families_used"]) == {"fam0", "fam1"}
    assert "excluded" in p.meta["families_left_out"]["fam2"]
    assert abs(p.loc[2] - TRUTH["log_alpha"]) < 3 * p.sd[2]
    assert np.all(np.linalg.eigvalsh(p.cov) > 0)
    assert p.meta["loss_unit"] == "nats/token"


def test_prior_roundtrip_and_resolve(small_prior, tmp_path):
    path = small_prior.save(tmp_path / "sim")
    back = load_prior(tmp_path / "sim")
    np.testing.assert_array_equal(back.loc, small_prior.loc)
    assert back.settings == small_prior.settings
    nd = resolve_prior(back, law="chinchilla-nd")
    assert nd.names[-1] == "gamma" and nd.cov[-1, :-1].tolist() == [0, 0, 0, 0]
    assert path.name == "prior.json"


def test_unknown_prior_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prior 'nope'"):
        load_prior("nope")


def test_bundled_prior_ships():
    p = load_prior("corpus-v1")
    assert isinstance(p, Prior) and p.names == ("u_a", "u_b", "log_alpha", "log_beta")
    assert len(p.meta["families_used"]) >= 5
    assert "pythia" not in p.meta["families_used"]  # LAMBADA is another loss unit
