"""Population prior: family choice, loss units, two-step build on simulated families."""

import numpy as np
import pandas as pd
import pytest
from engine_sim import TRUTH, simulate_family

import hiscale  # noqa: F401
from hiscale.data import load_curves
from hiscale.fit import FitOptions
from hiscale.inference import SamplerSettings
from hiscale.population import (
    build_prior,
    family_group,
    family_unit,
    majority_unit,
    population_families,
)
from hiscale.priors import Prior, flat_prior, load_prior, prior_overlap, resolve_prior

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
    twins = pd.concat([simulate_family("a-1"), simulate_family("b-1")]).assign(group="lab")
    assert family_group("b-1", load_curves(twins)) == "lab"  # from the data when given
    frames = _families(3)
    odd = simulate_family("odd", seed=9)
    odd["loss_unit"] = "Nats per word"
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


def test_prior_overlap_follows_groups_in_the_data():
    c = load_curves(
        pd.concat(
            [
                simulate_family("mine").assign(source="lab/runs:a"),
                simulate_family("sibling").assign(source="lab/runs:b"),  # same repository
                simulate_family("other").assign(source="elsewhere/x"),
            ]
        )
    )
    meta = {"families_used": {"sibling": {}}, "population_units": {"sibling": ["sibling"]}}
    p = Prior(**{**flat_prior().__dict__, "name": "p", "meta": meta})
    why = prior_overlap(p, c, "mine")
    assert why is not None and "learned on sibling (group 'mine' of 'mine')" in why
    assert prior_overlap(p, c, "other") is None
    assert prior_overlap(flat_prior(), c, "mine") is None  # learned on nothing
    # the shipped prior saw gpt3's group, not a new family's
    bundled = load_prior("corpus-v1")
    new = load_curves(simulate_family("gpt3-rerun"))
    assert "group 'gpt3'" in prior_overlap(bundled, new, "gpt3-rerun")
    assert prior_overlap(bundled, c, "mine") is None


def test_leave_one_out_prior_leaves_out_the_whole_group(small_prior):
    """Section 7: the held-out family's group, siblings included, feeds nothing."""
    from hiscale.bayes import leave_one_out_prior

    frames = _families(3)  # fam0..fam2: the families of small_prior (cached step-1 fits)
    frames[0] = frames[0].assign(source="a/x")
    frames[1] = frames[1].assign(source="b/y")
    frames[2] = frames[2].assign(source="c/runs:main")
    # fam2's sibling: another name, the same repository (cooldown branches, say)
    twin = simulate_family("twin", seed=7).assign(loss_unit="nats/token", source="c/runs:cool")
    c = load_curves(pd.concat([*frames, twin]))
    assert family_group("fam2", c) == family_group("twin", c) == "fam2"
    p = leave_one_out_prior(c, "fam2", sampler=SMALL, options=FitOptions())
    used = set(p.meta["families_used"])
    assert used == {"fam0", "fam1"}
    assert not used & {"fam2", "twin"}
    assert "excluded (group 'fam2' held out)" == p.meta["families_left_out"]["twin"]
    assert p.name == p.label == "lofo-fam2"
    assert prior_overlap(p, c, "fam2") is None and prior_overlap(p, c, "twin") is None
