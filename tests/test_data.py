"""Validation and loading of the curves table (hiscale.data.curves)."""

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from synthetic import make_frame, tiny_frame

from hiscale.data.curves import (
    REQUIRED_COLUMNS,
    Curves,
    CurvesError,
    FilterRecord,
    family_groups,
    load_curves,
    name_group,
    normalise_unit,
    unit_assumptions,
    validate_curves,
)

NUMERIC = ("params", "tokens", "loss")


def with_value(column, value, row=1):
    """``tiny_frame`` with one cell replaced (object dtype so anything fits)."""
    frame = tiny_frame()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


def two_metric_frame():
    """Family ``f`` with a primary val_loss and a train_loss at the same tokens."""
    val = tiny_frame().assign(metric="val_loss", primary=True)
    train = tiny_frame().assign(metric="train_loss", primary=False, loss=lambda f: f["loss"] - 0.1)
    return pd.concat([val, train], ignore_index=True)


# --- required columns ---------------------------------------------------------


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_column(column):
    frame = tiny_frame().drop(columns=column)
    with pytest.raises(CurvesError, match=rf"missing required column '{column}' \(required: "):
        validate_curves(frame)


def test_missing_column_message_lists_found_columns():
    frame = tiny_frame().drop(columns="loss").assign(val=1.0)
    with pytest.raises(CurvesError, match=r"found: family, run, params, tokens, val\)$"):
        validate_curves(frame)


def test_duplicate_column_names_are_an_error():
    frame = pd.concat([tiny_frame(), tiny_frame()[["loss"]]], axis=1)
    with pytest.raises(CurvesError, match=r"column 'loss' appears more than once"):
        validate_curves(frame)


@pytest.mark.parametrize("column", ["family", "run"])
@pytest.mark.parametrize("value", ["", "  ", None])
def test_empty_family_or_run(column, value):
    with pytest.raises(CurvesError, match=rf"column '{column}': empty value: value .* at row 1\b"):
        validate_curves(with_value(column, value))


# --- numeric columns ------------------------------------------------------------


@pytest.mark.parametrize("column", NUMERIC)
@pytest.mark.parametrize("value", ["abc", "", [1.0], True, 1 + 2j])
def test_non_numeric(column, value):
    pattern = (
        rf"^column '{column}': not a number: value {re.escape(repr(value))} at row 1 \(run 'r1'\)$"
    )
    with pytest.raises(CurvesError, match=pattern):
        validate_curves(with_value(column, value))


@pytest.mark.parametrize("column", NUMERIC)
@pytest.mark.parametrize("value", [np.nan, None])
def test_missing_number(column, value):
    with pytest.raises(CurvesError, match=rf"^column '{column}': not a number: value .* at row 1 "):
        validate_curves(with_value(column, value))


@pytest.mark.parametrize("column", NUMERIC)
@pytest.mark.parametrize("value", [np.inf, -np.inf, "inf"])
def test_non_finite(column, value):
    with pytest.raises(
        CurvesError, match=rf"^column '{column}': not finite: value .*inf.* at row 1 \(run 'r1'\)$"
    ):
        validate_curves(with_value(column, value))


@pytest.mark.parametrize("column", NUMERIC)
@pytest.mark.parametrize("value", [0, 0.0, -1.0, "-3"])
def test_non_positive(column, value):
    # the bad value is in the first run, so a params change is not what fires
    pattern = rf"^column '{column}': must be > 0: value {re.escape(repr(value))} at row 1 "
    with pytest.raises(CurvesError, match=pattern):
        validate_curves(with_value(column, value))


def test_numeric_values_report_plain_repr():
    """Messages show ``-1.0``, not ``np.float64(-1.0)``."""
    frame = tiny_frame()
    frame.loc[4, "loss"] = -1.0
    with pytest.raises(CurvesError, match=r"value -1\.0 at row 4 \(run 'r3'\)$"):
        validate_curves(frame)


def test_first_offending_row_is_reported():
    frame = tiny_frame()
    frame.loc[[3, 5], "tokens"] = -1.0
    with pytest.raises(CurvesError, match=r"at row 3 \(run 'r2'\)"):
        validate_curves(frame)


def test_numeric_strings_are_converted():
    frame = tiny_frame().astype({"params": str, "tokens": str, "loss": str})
    out = validate_curves(frame)
    for col in NUMERIC:
        assert out[col].dtype == np.float64
    np.testing.assert_array_equal(out["loss"], tiny_frame()["loss"])


# --- cross-row checks -------------------------------------------------------------


def test_params_change_within_run():
    frame = tiny_frame()
    frame.loc[3, "params"] = 3e6
    with pytest.raises(
        CurvesError,
        match=(
            r"^column 'params': params change within a run \(first seen 2e\+06\): "
            r"value 3000000\.0 at row 3 \(run 'r2'\)$"
        ),
    ):
        validate_curves(frame)


def test_duplicate_key_with_different_losses():
    frame = tiny_frame()
    frame.loc[3, "tokens"] = 1e9  # same (run, tokens) as row 2, different loss
    with pytest.raises(
        CurvesError,
        match=(
            r"^column 'loss': duplicate \(run, tokens\) key with different losses at tokens "
            r"1e\+09: value 3\.8 at row 2 \(run 'r2'\)$"
        ),
    ):
        validate_curves(frame)


def test_duplicate_key_includes_metric():
    frame = two_metric_frame()
    # same (run, tokens) in two metrics is fine ...
    assert len(validate_curves(frame)) == 12
    # ... but not twice within one metric
    frame.loc[7, "tokens"] = frame.loc[6, "tokens"]
    with pytest.raises(CurvesError, match=r"duplicate \(run, metric, tokens\) key"):
        validate_curves(frame)


def test_identical_duplicates_are_accepted_and_kept():
    frame = pd.concat([tiny_frame(), tiny_frame().iloc[[2]]], ignore_index=True)
    out = validate_curves(frame)
    assert len(out) == 7


# --- empty inputs -------------------------------------------------------------------


def test_empty_frame():
    with pytest.raises(CurvesError, match=r"^empty input: the curves table has no rows$"):
        validate_curves(pd.DataFrame())
    with pytest.raises(CurvesError, match=r"^empty input"):
        load_curves(pd.DataFrame(columns=list(REQUIRED_COLUMNS)))


def test_not_a_frame():
    with pytest.raises(CurvesError, match=r"expected a pandas DataFrame, got dict"):
        validate_curves({"family": ["f"]})


def test_empty_csv_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(CurvesError, match=r"^empty input: '.*empty\.csv' has no data$"):
        load_curves(path)


def test_header_only_csv(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(CurvesError, match=r"^empty input: the curves table has no rows$"):
        load_curves(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(CurvesError, match=r"^file not found: '.*nope\.csv'$"):
        load_curves(path)


def test_no_sources():
    with pytest.raises(CurvesError, match=r"no data source given"):
        load_curves([])


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(CurvesError, match=r"^cannot read '.*bad\.parquet': "):
        load_curves(path)


# --- selection --------------------------------------------------------------------------


def test_unknown_family_lists_known_ones():
    frame = pd.concat([make_frame("alpha"), make_frame("beta")], ignore_index=True)
    with pytest.raises(
        CurvesError,
        match=r"^column 'family': unknown family 'gamma'; known families: alpha, beta$",
    ):
        load_curves(frame, families=["gamma"])


def test_families_selection_logs_removed_rows():
    frame = pd.concat([make_frame("alpha"), make_frame("beta")], ignore_index=True)
    curves = load_curves(frame, families=["beta"])
    assert curves.families == ["beta"]
    rec = curves.log[-1]
    assert (rec.step, rec.removed, rec.kept) == ("families", 60, 60)
    assert "family not in" in rec.reason
    # a bare string means one family, not its characters
    assert load_curves(frame, families="beta").families == ["beta"]


def test_unknown_metric_lists_known_ones():
    with pytest.raises(
        CurvesError, match=r"^column 'metric': unknown metric 'x'; known: train_loss, val_loss$"
    ):
        load_curves(two_metric_frame(), metric="x")


def test_metric_without_metric_column():
    with pytest.raises(CurvesError, match=r"column 'metric' is missing"):
        load_curves(tiny_frame(), metric="val_loss")
    curves = load_curves(tiny_frame())
    assert len(curves) == 6
    assert curves.log[-1].removed == 0


def test_primary_metric_selection():
    curves = load_curves(two_metric_frame())
    assert set(curves.frame["metric"]) == {"val_loss"}
    rec = curves.log[-1]
    assert (rec.step, rec.removed, rec.kept) == ("metric", 6, 6)
    assert rec.reason == "non-primary metric rows"


def test_named_metric_selection():
    curves = load_curves(two_metric_frame(), metric="train_loss")
    assert set(curves.frame["metric"]) == {"train_loss"}
    assert curves.log[-1].removed == 6
    np.testing.assert_allclose(curves.frame["loss"], tiny_frame()["loss"] - 0.1)


def test_primary_column_as_text():
    frame = two_metric_frame()
    frame["primary"] = frame["primary"].map({True: "True", False: "false"})
    curves = load_curves(frame)
    assert curves.frame["primary"].dtype == bool
    assert set(curves.frame["metric"]) == {"val_loss"}


def test_primary_column_not_boolean():
    frame = two_metric_frame().astype({"primary": object})
    frame.loc[4, "primary"] = "maybe"
    with pytest.raises(
        CurvesError,
        match=r"^column 'primary': not a boolean \(true/false\): value 'maybe' at row 4",
    ):
        validate_curves(frame)


def test_family_without_primary_row():
    frame = two_metric_frame().assign(primary=False)
    with pytest.raises(CurvesError, match=r"family 'f' has no row with primary=True"):
        load_curves(frame)


def test_family_with_two_primary_metrics():
    frame = two_metric_frame().assign(primary=True)
    with pytest.raises(CurvesError, match=r"family 'f' has 2 primary metrics"):
        load_curves(frame)


def test_several_metrics_without_primary_column():
    frame = two_metric_frame().drop(columns="primary")
    with pytest.raises(CurvesError, match=r"family 'f' has several metrics .* pass metric="):
        load_curves(frame)
    assert len(load_curves(frame, metric="val_loss")) == 6


# --- columns, dtypes, files ----------------------------------------------------------------


def test_extra_columns_are_kept():
    frame = two_metric_frame().assign(my_note="x", lr=3e-4, seed="1")
    curves = load_curves(frame)
    assert {"my_note", "lr", "seed", "metric", "primary"} <= set(curves.frame.columns)
    assert (curves.frame["my_note"] == "x").all()
    assert curves.frame["seed"].dtype.kind in "if"


def test_canonical_dtypes_and_fresh_index():
    frame = tiny_frame().astype({"params": "int64"})
    frame.index = [10, 11, 12, 13, 14, 15]
    out = validate_curves(frame)
    assert list(out.index) == list(range(6))
    assert out["params"].dtype == np.float64
    assert pd.api.types.is_string_dtype(out["family"])
    # the input is not modified
    assert frame["params"].dtype == np.int64


def test_csv_and_parquet_round_trip(tmp_path):
    frame = two_metric_frame().assign(extra=1.5)
    csv = tmp_path / "c.csv"
    pq = tmp_path / "c.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(pq, index=False)
    a = load_curves(csv)
    b = load_curves(str(pq))
    pd.testing.assert_frame_equal(a.frame, b.frame, check_dtype=False)
    assert "extra" in a.frame.columns
    assert a.data_hash() == b.data_hash()


def test_several_sources_are_concatenated(tmp_path):
    one = make_frame("alpha")
    two = make_frame("beta")
    three = make_frame("gamma")
    one.to_csv(tmp_path / "one.csv", index=False)
    two.to_parquet(tmp_path / "two.parquet", index=False)
    curves = load_curves([tmp_path / "one.csv", tmp_path / "two.parquet", three])
    assert curves.families == ["alpha", "beta", "gamma"]
    assert len(curves) == len(one) + len(two) + len(three)


def test_validation_runs_after_concatenation():
    """A run split over two files must still have one size."""
    a = tiny_frame()
    b = tiny_frame().iloc[[0]].assign(params=9e6, tokens=5e9)
    with pytest.raises(CurvesError, match=r"params change within a run"):
        load_curves([a, b])


def test_curves_passthrough_and_hash():
    curves = load_curves(make_frame("alpha"))
    assert load_curves(curves) is curves
    assert len(curves.data_hash()) == 16
    changed = make_frame("alpha")
    changed.loc[0, "loss"] += 1e-3
    assert load_curves(changed).data_hash() != curves.data_hash()


def test_removal_summary_and_record_str():
    curves = load_curves(two_metric_frame())
    assert curves.removal_summary() == ("metric: removed 6 rows (non-primary metric rows), kept 6")
    assert Curves(tiny_frame()).removal_summary() == "no rows removed"
    assert str(FilterRecord("x", 1, 2, "why")) == "x: removed 1 rows (why), kept 2"


def test_family_accessor():
    frame = pd.concat([make_frame("alpha"), make_frame("beta")], ignore_index=True)
    curves = load_curves(frame)
    sub = curves.family("alpha")
    assert sub.families == ["alpha"]
    assert sub.log[-1].removed == 60
    with pytest.raises(CurvesError, match=r"unknown family 'x'; known families: alpha, beta"):
        curves.family("x")


# --- loss units ------------------------------------------------------------------------


def test_missing_loss_unit_column_is_assumed_and_logged():
    curves = load_curves(tiny_frame())
    assert (curves.frame["loss_unit"] == "nats/token").all()
    (rec,) = [r for r in curves.log if r.step == "loss_unit"]
    assert (rec.removed, rec.kept) == (0, 6)
    assert rec.reason == "no 'loss_unit' column: assumed 'nats/token'"
    assert unit_assumptions(curves) == [rec.reason]
    assert unit_assumptions(curves.family("f")) == [rec.reason]  # carried by selections
    assert curves.removal_summary() == "no rows removed"  # nothing was dropped


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("nats/token", "nats/token"),
        ("nats per token", "nats/token"),
        ("Nats/Token", "nats/token"),
        ("nats/tok", "nats/token"),
        (" NATS / TOKENS ", "nats/token"),
        ("nat per token", "nats/token"),
        ("nats/word (LAMBADA target word)", "nats/word"),
        ("nats per word", "nats/word"),
        ("bits per byte", "bits/byte"),
        ("bits/character", "bits/char"),
        ("unknown (see README)", "unknown (see README)"),  # not a unit hiscale knows: kept
        ("BPC", "BPC"),
    ],
)
def test_unit_spellings_are_normalised(spelling, canonical):
    assert normalise_unit(spelling) == canonical


def test_unit_spellings_in_a_table_are_normalised_and_logged():
    frame = pd.concat(
        [
            make_frame("a").assign(loss_unit="nats per token"),
            make_frame("b").assign(loss_unit="Nats/Token"),
            make_frame("c").assign(loss_unit="nats/token"),
            make_frame("d").assign(loss_unit=""),
        ],
        ignore_index=True,
    )
    curves = load_curves(frame)
    assert (curves.frame["loss_unit"] == "nats/token").all()
    reasons = sorted(r.reason for r in curves.log if r.step == "loss_unit")
    assert reasons == [
        "'loss_unit' 'Nats/Token' read as 'nats/token' (60 rows)",
        "'loss_unit' 'nats per token' read as 'nats/token' (60 rows)",
        "empty 'loss_unit' in 60 rows (families d): assumed 'nats/token'",
    ]
    assert unit_assumptions(curves) == [reasons[-1]]


# --- family groups --------------------------------------------------------------------


def test_groups_fall_back_to_the_name():
    frame = pd.concat([make_frame(f) for f in ("gemstones", "gemstones-cooldown", "gpt3")])
    assert family_groups(load_curves(frame)) == {
        "gemstones": "gemstones",
        "gemstones-cooldown": "gemstones",
        "gpt3": "gpt3",
    }
    assert name_group("gpt2-datablations-c4-1ep") == "gpt2"


def test_groups_from_the_source_column():
    sources = {
        # an aggregator's files that come from one paper: one group
        "alpha": "ColPret:aggregated_eval/x.csv (Smith et al. 2020)",
        "beta": "ColPret:aggregated_eval/x_contour.csv (Smith et al. 2020)",
        # another file of the same aggregator, no upstream named: its own group
        "gamma": "ColPret:raw/gamma.csv",
        # two folders of one repository: one group
        "zeta": "lab/runs:data",
        "eta": "lab/runs:data/grad_norm",
    }
    frame = pd.concat([make_frame(f).assign(source=s) for f, s in sources.items()])
    groups = family_groups(load_curves(frame))
    # labelled by the name group of the alphabetically first member
    assert groups == {
        "alpha": "alpha",
        "beta": "alpha",
        "gamma": "gamma",
        "eta": "eta",
        "zeta": "eta",
    }


def test_explicit_group_column_wins():
    frame = pd.concat(
        [
            make_frame("a-1").assign(group="lab-x", source="same"),
            make_frame("b-1").assign(group="lab-x", source="same"),
            make_frame("a-2").assign(group="lab-y", source="same"),
            make_frame("c").assign(group=np.nan, source="other"),
        ]
    )
    assert family_groups(load_curves(frame)) == {
        "a-1": "lab-x",
        "b-1": "lab-x",
        "a-2": "lab-y",
        "c": "c",
    }


def test_groups_with_the_same_label_are_one_group():
    # no source for x-new: its name group 'x' is the label of the x-old/y group
    frame = pd.concat(
        [
            make_frame("x-old").assign(source="lab/a"),
            make_frame("y").assign(source="lab/a"),
            make_frame("x-new").assign(source=np.nan),
            make_frame("z").assign(source="lab/b"),
        ]
    )
    groups = family_groups(load_curves(frame))
    assert groups == {"x-new": "x", "x-old": "x", "y": "x", "z": "z"}


def test_several_groups_in_one_family_is_an_error():
    frame = make_frame("a").assign(group="g1")
    frame.loc[5, "group"] = "g2"
    with pytest.raises(CurvesError) as err:
        family_groups(load_curves(frame))
    assert str(err.value) == (
        "column 'group': family 'a' has several groups (first 'g1'): value 'g2' at row 5 "
        "(run 'a-0')"
    )


def test_corpus_groups_from_data_are_the_name_groups(corpus_file):
    """On the corpus, groups from the source column reproduce the name-prefix groups."""
    paths = [corpus_file]
    extra = corpus_file.with_name("curves_extra.csv")
    if extra.exists():
        paths.append(extra)
    curves = load_curves(paths)
    groups = family_groups(curves)
    assert groups == {f: f.split("-")[0] for f in curves.families}
    # the links come from the data, not the names: with opaque family names
    # (no shared prefixes) the same families are grouped together
    opaque = {f: f"fam{i:02d}" for i, f in enumerate(curves.families)}
    renamed = family_groups(curves.frame.assign(family=curves.frame["family"].map(opaque)))

    def partition(g):
        return {frozenset(f for f in g if g[f] == label) for label in set(g.values())}

    assert partition(renamed) == partition({opaque[f]: g for f, g in groups.items()})
    assert len(partition(renamed)) < len(curves.families)  # siblings were linked
    units = curves.frame.groupby("family")["loss_unit"].first()
    assert units["pythia"] == "nats/word" and units["gpt3"] == "nats/token"


# --- property: malformed input never escapes as another exception ---------------------

GOOD = st.floats(min_value=1e-3, max_value=1e12, allow_nan=False)
BAD_NUMBER = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf, 0, -1.0, "", "abc", "nan", "-inf", None, True]),
    st.floats(max_value=0.0, allow_nan=False),
    st.integers(min_value=-(10**20), max_value=0),
    st.just(10**400),  # too large for a float
    st.complex_numbers(max_magnitude=10),
    st.text(max_size=4),
)
GOOD_NUMBER_TEXT = st.sampled_from(["1e9", " 3.5 ", "2", "7E+10"])
BAD_LABEL = st.sampled_from(["", "  ", None, np.nan])
OPTIONAL = ("metric", "primary", "is_final", "seed", "extra")


@st.composite
def malformed_frames(draw):
    """Well-formed rows except in one or two corrupted columns; columns may be missing."""
    n = draw(st.integers(min_value=0, max_value=8))
    corrupted = draw(st.sets(st.sampled_from([*REQUIRED_COLUMNS, *OPTIONAL]), max_size=2))
    bad_rate = draw(st.sampled_from([0.1, 0.3, 1.0]))
    sizes = {"a": 1e6, "b": 2e6, "c": 4e6}

    def cell(column, good, bad):
        if column in corrupted and draw(st.floats(0, 1)) < bad_rate:
            return draw(bad)
        return draw(good)

    rows = []
    for _ in range(n):
        run = cell("run", st.sampled_from(list(sizes)), BAD_LABEL)
        size = sizes.get(run, 1e6)
        rows.append(
            {
                "family": cell("family", st.sampled_from(["f", "g"]), BAD_LABEL),
                "run": run,
                "params": cell("params", st.sampled_from([size, str(size)]), BAD_NUMBER),
                "tokens": cell("tokens", st.one_of(GOOD, GOOD_NUMBER_TEXT), BAD_NUMBER),
                "loss": cell("loss", st.one_of(GOOD, GOOD_NUMBER_TEXT), BAD_NUMBER),
                "metric": cell("metric", st.just("m"), st.sampled_from(["a", "", None])),
                "primary": cell("primary", st.sampled_from([True, "true", 1]), st.just("x")),
                "is_final": cell("is_final", st.booleans(), st.sampled_from(["maybe", None])),
                "seed": cell("seed", st.integers(0, 3), st.text(max_size=2)),
                "extra": cell("extra", st.text(max_size=3), st.none()),
            }
        )
    frame = pd.DataFrame(rows, columns=[*REQUIRED_COLUMNS, *OPTIONAL], dtype=object)
    drop = draw(st.sets(st.sampled_from(OPTIONAL)))
    if draw(st.integers(0, 9)) == 0:
        drop |= {draw(st.sampled_from(REQUIRED_COLUMNS))}
    frame = frame.drop(columns=sorted(drop))
    if n and draw(st.booleans()):  # repeat some rows, possibly with another loss
        idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))
        dup = frame.iloc[idx].copy()
        if "loss" in dup.columns and draw(st.booleans()):
            dup["loss"] = draw(GOOD)
        frame = pd.concat([frame, dup], ignore_index=True)
    return frame


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=malformed_frames(), metric=st.sampled_from(["primary", "primary", "m", "a"]))
def test_malformed_frames_load_or_raise_curves_error(frame, metric):
    try:
        curves = load_curves(frame, metric=metric)
    except CurvesError as err:
        assert "\n" not in str(err)
        event(f"CurvesError: {str(err).split(':')[0][:30]}")
        return
    event("loaded")
    out = curves.frame
    for col in NUMERIC:
        values = out[col].to_numpy()
        assert values.dtype == np.float64
        assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert (out.groupby("run")["params"].nunique() <= 1).all()
