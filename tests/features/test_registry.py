"""The registry's declarations: complete, consistent with the model's naming, compiled right."""

from __future__ import annotations

import pytest

from features.derived import DERIVED, FEATURES, FEATURES_BY_NAME
from features.docs import FEATURES_DOC, render_table, with_table
from features.events import Channel, EventType
from features.fold_compiler import source_for
from features.reading import default_features
from features.registry import STORED, AttrIs, Key, Kind, StoredFeature, Value
from models.features_vector import Transform, transform_of

#: What the features issue asks for, family by family (a name from each).
REQUIRED = {
    "rfm": [
        "txn_first_ts",
        "txn_last_ts",
        "txn_count",
        "txn_amount",
        "txn_decayed_count",
        "txn_decayed_amount",
        "txn_count_7d",
        "txn_amount_30d",
        "txn_count_90d",
        "value_tier",
        "rfm_r_score",
    ],
    "activity": ["lifecycle_stage"],
    "channels": ["ch_mobile_decayed_count", "ch_branch_last_ts", "preferred_channel"],
    "products": ["interest_savings", "holds_mortgage", "balance_savings_amount"],
    "flows": ["inflow_decayed_amount", "outflow_decayed_amount"],
    "service": ["open_complaints_count", "complaint_last_ts", "satisfaction_last"],
    "loyalty": ["loyalty_points", "loyalty_tier"],
    "consent": ["consent_sms", "consent_email"],
}


def test_every_family_the_issue_names_is_there() -> None:
    for family, names in REQUIRED.items():
        for name in names:
            assert FEATURES_BY_NAME[name].family == family, name


def test_names_are_unique_and_described() -> None:
    names = [feature.name for feature in FEATURES]
    assert len(names) == len(set(names))
    assert all(feature.description.strip() for feature in FEATURES)
    assert "{key}" not in " ".join(feature.description for feature in FEATURES)


def test_defaults_cover_every_feature() -> None:
    assert set(default_features()) == set(FEATURES_BY_NAME)


@pytest.mark.parametrize("feature", STORED, ids=lambda f: f.name)
def test_stored_names_follow_the_model_conventions(feature: StoredFeature) -> None:
    """`_ts` names are times (a recency for the model), times are named `_ts`."""
    for key in feature.flat_keys():
        name = feature.flat_name(key)
        is_time = feature.kind in (Kind.FIRST_TIME, Kind.LAST_TIME)
        assert (transform_of(name) is Transform.RECENCY) == is_time, name


def test_categorical_features_are_text_and_others_numbers() -> None:
    values = default_features()
    for feature in DERIVED:
        assert isinstance(values[feature.name], str) == feature.categorical, feature.name


def test_a_feature_runs_only_for_the_event_types_it_declares() -> None:
    half_lives = {f.decay: 1.0 / 86_400 for f in STORED if f.decay is not None}
    source, _ = source_for(STORED, EventType.LOGIN, Channel.MOBILE, half_lives)
    assert "# event_count" in source
    assert "# ch_{key}_count" in source
    assert "# txn_count" not in source
    assert "# consent_{key}" not in source
    source, _ = source_for(STORED, EventType.SURVEY, Channel.SMS, half_lives)
    assert "attribute_number(attrs.get('score'))" in source


def test_decayed_features_weigh_the_event_once_per_distinct_half_life() -> None:
    groups = sorted({f.decay for f in STORED if f.decay is not None})
    distinct = {group: 1.0 / (number + 2) for number, group in enumerate(groups)}
    source, _ = source_for(STORED, EventType.TRANSACTION, Channel.POS, distinct)
    for group in ("frequency", "monetary", "channel", "flows"):
        assert f"2.0 ** (age * {distinct[group]!r})" in source
    assert f"2.0 ** (age * {distinct['interest']!r})" not in source  # product views only
    shared = dict.fromkeys(groups, 1.0 / 86_400)
    source, _ = source_for(STORED, EventType.TRANSACTION, Channel.POS, shared)
    assert source.count("2.0 ** (age") == 1


def test_a_where_condition_is_tested_only_in_the_fold_of_its_event_type() -> None:
    half_lives = {f.decay: 1.0 / 86_400 for f in STORED if f.decay is not None}
    transfer, _ = source_for(STORED, EventType.TRANSFER, Channel.WEB, half_lives)
    assert "if attrs.get('direction') == 'in':" in transfer  # inflow
    assert "if attrs.get('direction') != 'in':" in transfer  # outflow
    deposit, _ = source_for(STORED, EventType.DEPOSIT, Channel.WEB, half_lives)
    assert "# inflow_decayed_amount" in deposit
    assert "attrs.get('direction')" not in deposit


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="decay group"):
        StoredFeature("x", "f", "d", Kind.DECAYED)
    with pytest.raises(ValueError, match="attr"):
        StoredFeature("x", "f", "d", Kind.LATEST, value=Value.ATTR)
    with pytest.raises(ValueError, match="daily buckets"):
        StoredFeature("x", "f", "d", Kind.DAILY, key=Key.CHANNEL)
    with pytest.raises(ValueError, match="`where` is about events that do not update it"):
        StoredFeature(
            "x",
            "f",
            "d",
            Kind.COUNT,
            frozenset({EventType.DEPOSIT}),
            where=AttrIs(EventType.TRANSFER, "direction", "in"),
        )


def test_the_feature_table_in_the_docs_is_generated_from_the_registry() -> None:
    text = FEATURES_DOC.read_text()
    assert with_table(text) == text, "run `python -m features.docs` to refresh docs/features.md"
    assert "`lifecycle_stage`" in render_table()
