"""The fold of events into a customer's state and its reading: semantics per feature family."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from features.config import SECONDS_PER_DAY, FeatureConfig
from features.events import Event
from features.reading import contact_history, read_features
from features.registry import STORED, Kind
from features.state import Applied, CustomerState, FeatureFold, SlotReader

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a Monday, midday
DAY = SECONDS_PER_DAY
FOLD = FeatureFold(FeatureConfig())
_counter = iter(range(10**9))


def event(kind: str, at: float, channel: str = "mobile", **fields: Any) -> Event:
    return Event.model_validate(
        {
            "event_id": fields.pop("event_id", f"e{next(_counter)}"),
            "customer_id": fields.pop("customer_id", "C1"),
            "type": kind,
            "channel": channel,
            "ts": at,
            **fields,
        }
    )


def fold(events: list[Event], fold: FeatureFold = FOLD) -> CustomerState:
    state = fold.new_state()
    fold.apply_all(state, events)
    return state


def features_of(events: list[Event], now: float, **kwargs: Any) -> dict[str, Any]:
    return read_features(FOLD, fold(events), now, **kwargs)


def test_counts_sums_and_times_are_exact() -> None:
    events = [
        event("transaction", T0, "pos", amount=0.1),
        event("transaction", T0 + 60, "pos", amount=0.2),
        event("login", T0 - 3600, "web"),
    ]
    values = features_of(events, now=T0 + 120)
    assert values["txn_count"] == 2
    assert values["txn_amount"] == 0.3  # exact: 0.1 + 0.2 would be 0.30000000000000004
    assert values["event_count"] == 3
    assert values["first_seen_ts"] == int(T0 - 3600)
    assert values["last_seen_ts"] == int(T0 + 60)
    assert values["txn_first_ts"] == int(T0)
    assert values["ch_pos_count"] == 2
    assert values["ch_web_last_ts"] == int(T0 - 3600)
    assert values["ch_branch_count"] == 0


def test_decayed_values_halve_every_half_life() -> None:
    half_life = FOLD.config.half_lives_days["frequency"] * DAY
    values = features_of([event("transaction", T0, "pos", amount=80.0)], now=T0 + half_life)
    assert values["txn_decayed_count"] == pytest.approx(0.5, rel=1e-12)
    assert values["txn_decayed_amount"] == pytest.approx(40.0, rel=1e-12)
    two = features_of(
        [
            event("transaction", T0, "pos", amount=1.0),
            event("transaction", T0 + DAY, "pos", amount=1.0),
        ],
        now=T0 + DAY,
    )
    assert two["txn_decayed_count"] == pytest.approx(1 + 2 ** (-DAY / half_life), rel=1e-12)


def test_windows_count_back_whole_utc_days_from_the_read_day() -> None:
    days_ago = [120, 90, 89, 30, 29, 7, 6, 0]  # in time order: none is late
    events = [event("transaction", T0 - d * DAY, "pos", amount=10.0) for d in days_ago]
    values = features_of(events, now=T0)
    assert values["txn_count_7d"] == 2  # today and 6 days ago
    assert values["txn_count_30d"] == 4
    assert values["txn_count_90d"] == 6
    assert values["txn_amount_30d"] == 40.0
    later = read_features(FOLD, fold(events), T0 + 3 * DAY)
    assert later["txn_count_7d"] == 1  # windows move with the read time, no event needed


def test_late_events_are_refused_and_duplicates_ignored() -> None:
    lateness = FOLD.config.allowed_lateness_s
    state = FOLD.new_state()
    first = event("login", T0)
    assert FOLD.apply(state, first) is Applied.APPLIED
    assert FOLD.apply(state, first) is Applied.DUPLICATE
    assert FOLD.apply(state, event("login", T0 - lateness + 1)) is Applied.APPLIED
    assert FOLD.apply(state, event("login", T0 - lateness - 1)) is Applied.LATE
    assert read_features(FOLD, state, T0)["event_count"] == 2


def random_stream(rng: random.Random, count: int) -> list[Event]:
    kinds = [
        ("transaction", {"amount": 12.34}),
        ("deposit", {"amount": 500.0}),
        ("login", {}),
        ("product_view", {"product": "savings"}),
        ("transfer", {"amount": 25.5, "attrs": {"direction": "in"}}),
        ("survey", {"attrs": {"score": 7}}),
        ("consent_update", {"attrs": {"marketing": True}}),
        ("offer_impression", {"action_id": "savings_account"}),
        ("balance", {"amount": 1500.0, "product": "savings"}),
    ]
    channels = ["mobile", "web", "branch", "pos", "sms"]
    events = []
    for i in range(count):
        kind, fields = rng.choice(kinds)
        at = T0 + i * 600 + rng.randrange(0, 300)
        events.append(event(kind, at, rng.choice(channels), event_id=f"r{i}", **fields))
    return events


#: The float aggregates: another order may change their last bits, nothing else.
DECAYED = {
    feature.flat_name(key)
    for feature in STORED
    if feature.kind is Kind.DECAYED
    for key in feature.flat_keys()
} | {"net_flow_decayed_amount"}


def assert_same_features(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert left.keys() == right.keys()
    for name, value in left.items():
        if name in DECAYED:
            assert math.isclose(value, right[name], rel_tol=1e-12, abs_tol=1e-12), name
        else:
            assert value == right[name], name


def test_any_order_and_any_duplication_within_lateness_gives_the_same_features() -> None:
    rng = random.Random(5)
    events = random_stream(rng, 250)  # ~42 hours: all within the 2-day lateness
    in_order = features_of(events, now=T0 + 3 * DAY)
    shuffled = events + rng.sample(events, 80)
    rng.shuffle(shuffled)
    assert_same_features(features_of(shuffled, now=T0 + 3 * DAY), in_order)


def test_replaying_a_long_stream_twice_changes_nothing() -> None:
    events = [event("transaction", T0 + d * DAY / 3, "pos", amount=3.0) for d in range(60)]
    once = fold(events)
    twice = fold(events + events)
    assert FOLD.encode(twice) == FOLD.encode(once)


@pytest.mark.parametrize("lateness", [2 * DAY, DAY + 3600])
def test_pruning_after_each_event_leaves_nothing_a_full_prune_would_drop(lateness: int) -> None:
    late_fold = FeatureFold(FeatureConfig(allowed_lateness_s=lateness))
    state = late_fold.new_state()
    for n in range(3200):  # every 47 minutes, for 104 days
        late_fold.apply(state, event("transaction", T0 + n * 2_820, "pos", amount=2.0))
        late_fold.prune(state)
        fully_pruned = late_fold.decode(late_fold.encode(state))  # decoded: prunes from scratch
        late_fold.prune(fully_pruned)
        assert late_fold.encode(state) == late_fold.encode(fully_pruned), n
    daily = state.slots[[f.kind for f in STORED].index(Kind.DAILY)]
    assert daily.days[0] == state.watermark // DAY - 89
    assert min(state.seen) == (state.watermark - lateness) // DAY


def test_latest_values_go_by_event_time_not_arrival() -> None:
    newer = event("survey", T0, "sms", attrs={"score": 3})
    older = event("survey", T0 - 60, "sms", attrs={"score": 9})
    assert features_of([newer, older], now=T0)["satisfaction_last"] == 3
    assert features_of([older, newer], now=T0)["satisfaction_last"] == 3
    assert features_of([], now=T0)["satisfaction_last"] == -1.0


def test_consent_is_kept_per_channel() -> None:
    events = [
        event("consent_update", T0, "sms", attrs={"marketing": True}),
        event("consent_update", T0 + 1, "email", attrs={"marketing": True}),
        event("consent_update", T0 + 2, "email", attrs={"marketing": False}),
    ]
    values = features_of(events, now=T0 + 3)
    assert (values["consent_sms"], values["consent_email"], values["consent_web"]) == (1, 0, 0)


def test_products_holdings_balances_and_interest() -> None:
    events = [
        event("product_opened", T0, "branch", product="savings"),
        event("product_opened", T0, "branch", product="mortgage"),
        event("product_closed", T0 + 60, "branch", product="mortgage"),
        event("product_opened", T0, "web", product="crypto_wallet"),
        event("balance", T0 + 10, "web", product="savings", amount=2500.0),
        event("balance", T0 + 20, "web", product="savings", amount=2000.0),
        event("product_view", T0, "web", product="investment"),
    ]
    values = features_of(events, now=T0 + 100)
    assert values["holds_savings"] == 1
    assert values["holds_mortgage"] == 0
    assert values["holds_other"] == 1  # products outside the vocabulary count as `other`
    assert values["products_held_count"] == 2
    assert values["balance_savings_amount"] == 2000.0
    assert values["total_balance_amount"] == 2000.0
    assert values["interest_investment"] == pytest.approx(1.0, rel=1e-3)


def test_fund_flows_follow_the_transfer_direction() -> None:
    events = [
        event("salary", T0, "web", amount=3000.0),
        event("transfer", T0, "web", amount=100.0, attrs={"direction": "in"}),
        event("transfer", T0, "web", amount=40.0),
        event("withdrawal", T0, "atm", amount=60.0),
    ]
    values = features_of(events, now=T0)
    assert values["inflow_decayed_amount"] == pytest.approx(3100.0)
    assert values["outflow_decayed_amount"] == pytest.approx(100.0)
    assert values["net_flow_decayed_amount"] == pytest.approx(3000.0)


def test_service_and_loyalty() -> None:
    events = [
        event("complaint", T0, "call_centre"),
        event("complaint", T0 + 5, "branch"),
        event("complaint_resolved", T0 + 9, "call_centre"),
        event("loyalty_earned", T0, "pos", amount=1200.0),
        event("loyalty_redeemed", T0 + 1, "web", amount=100.0),
    ]
    values = features_of(events, now=T0 + 10)
    assert values["open_complaints_count"] == 1
    assert values["complaint_last_ts"] == int(T0 + 5)
    assert values["loyalty_points"] == 1100.0
    assert values["loyalty_tier"] == "silver"


def test_contact_history_per_action() -> None:
    events = [
        event("offer_impression", T0, action_id="gold"),
        event("offer_impression", T0 + 5, action_id="gold"),
        event("offer_clicked", T0 + 6, action_id="gold"),
        event("offer_declined", T0 + 7, action_id="gold"),
        event("offer_accepted", T0 + 8, action_id="loan"),
    ]
    history = contact_history(FOLD, fold(events))
    assert history["gold"] == {
        "impressions": 2,
        "clicks": 1,
        "accepts": 0,
        "declines": 1,
        "last_shown_ts": int(T0 + 5),
        "last_declined_ts": int(T0 + 7),
    }
    assert history["loan"]["accepts"] == 1


@pytest.mark.parametrize(
    ("idle_days", "first_days_ago", "stage"),
    [
        (1, 10, "new"),
        (1, 200, "active"),
        (40, 200, "at_risk"),
        (100, 300, "dormant"),
        (200, 400, "churned"),
    ],
)
def test_lifecycle_stage_by_documented_thresholds(
    idle_days: int, first_days_ago: int, stage: str
) -> None:
    now = T0 + 400 * DAY
    first = event("transaction", now - first_days_ago * DAY, "pos", amount=5.0)
    last = event("login", now - idle_days * DAY, "web")
    state = FOLD.new_state()
    FOLD.apply(state, first)
    FOLD.apply(state, last)
    assert read_features(FOLD, state, now)["lifecycle_stage"] == stage


def test_a_customer_without_purchases_is_a_prospect_and_closing_everything_churns() -> None:
    assert features_of([event("login", T0)], now=T0)["lifecycle_stage"] == "prospect"
    events = [
        event("transaction", T0, "pos", amount=5.0),
        event("product_opened", T0, "branch", product="savings"),
        event("product_closed", T0 + 1, "branch", product="savings"),
    ]
    assert features_of(events, now=T0 + 2)["lifecycle_stage"] == "churned"


def test_value_tier_against_base_quantiles() -> None:
    edges = {"r": (1.0, 3.0, 7.0, 14.0), "f": (0.5, 1.0, 2.0, 4.0), "m": (10.0, 50.0, 100.0, 500.0)}
    spender = [event("transaction", T0 - d * 3600, "pos", amount=200.0) for d in range(8)]
    values = features_of(spender, now=T0, rfm_edges=edges)
    assert (values["rfm_r_score"], values["rfm_f_score"], values["rfm_m_score"]) == (5, 5, 5)
    assert values["value_tier"] == "high"
    small = features_of(
        [event("transaction", T0 - 20 * DAY, "pos", amount=2.0)], now=T0, rfm_edges=edges
    )
    assert small["value_tier"] == "low"
    assert features_of(spender, now=T0)["value_tier"] == "unscored"  # no estimate yet


def test_preferred_channel_is_the_most_used_recently() -> None:
    events = [event("login", T0 - 100 * DAY + i, "web") for i in range(3)]
    events += [event("login", T0 - i, "mobile") for i in range(2)]
    events.sort(key=lambda e: e.ts)  # in order: the web logins are long before
    assert features_of(events, now=T0)["preferred_channel"] == "mobile"
    assert features_of([], now=T0)["preferred_channel"] == "none"


def test_merge_equals_applying_both_identities_events_to_one_state() -> None:
    rng = random.Random(11)
    events = random_stream(rng, 120)
    mine, theirs = events[::2], events[1::2]
    merged = fold(mine)
    FOLD.merge(merged, fold(theirs))
    assert_same_features(read_features(FOLD, merged, T0 + DAY), features_of(events, T0 + DAY))
    assert FOLD.apply(merged, theirs[0]) is Applied.DUPLICATE  # ids are merged too


def test_encoding_round_trips_and_refuses_other_schemas() -> None:
    state = fold(random_stream(random.Random(3), 60))
    raw = FOLD.encode(state)
    assert FOLD.encode(FOLD.decode(raw)) == raw
    with pytest.raises(ValueError, match="schema"):
        FOLD.decode(b"\x92\x07\x00")


def test_a_stored_state_of_the_wrong_shape_is_refused_with_where_it_differs() -> None:
    items = msgspec.msgpack.decode(FOLD.encode(fold(random_stream(random.Random(5), 40))))
    with pytest.raises(
        ValueError, match=f"{len(STORED) + 1} features, this registry {len(STORED)}"
    ):
        FOLD.decode(msgspec.msgpack.encode([*items, 0]))
    count_index = 4 + [f.name for f in STORED].index("event_count")
    items[count_index] = "forty"
    with pytest.raises(
        ValueError, match=rf"malformed: Expected `int`, got `str` - at `\$\[{count_index}\]`"
    ):
        FOLD.decode(msgspec.msgpack.encode(items))
    items[0] = 1
    with pytest.raises(ValueError, match=r"\(schema 1\) is malformed: Expected `int`, got `str`"):
        FOLD.decode(msgspec.msgpack.encode(items))


def test_states_stored_by_schema_1_are_read_with_the_same_features() -> None:
    state = fold(random_stream(random.Random(4), 200))
    items = msgspec.msgpack.decode(FOLD.encode(state))
    daily_index = 4 + [f.kind for f in STORED].index(Kind.DAILY)
    daily = state.slots[daily_index - 4]
    by_day = dict(zip(daily.days, zip(daily.counts, daily.units, strict=True), strict=True))
    assert by_day, "the stream buys on some days"
    items[0] = 1  # schema 1 kept the buckets as a map of day to [count, units]
    items[daily_index] = [daily.distinct_days, daily.first_day, daily.first_day_units, by_day]
    assert FOLD.decode(msgspec.msgpack.encode(items)) == state


def test_a_slot_reader_reads_its_slots_as_the_full_decode_does_in_both_schemas() -> None:
    state = fold(random_stream(random.Random(6), 300))
    chosen = [i for i, f in enumerate(STORED) if f.kind is not Kind.DAILY][::3]
    assert max(chosen) > [f.kind for f in STORED].index(Kind.DAILY), "skips a daily slot"
    reader = SlotReader(STORED, chosen)
    items = msgspec.msgpack.decode(FOLD.encode(state))
    items_1 = [1, *items[1:]]  # the chosen slots are stored alike by schema 1
    for raw in (FOLD.encode(state), msgspec.msgpack.encode(items_1)):
        partial = reader.read(raw)
        assert partial.slots == {i: state.slots[i] for i in chosen}
        assert (partial.watermark, partial.decay_epoch) == (state.watermark, state.decay_epoch)
    with pytest.raises(KeyError):
        partial.slots[chosen[0] + 1]


def test_a_slot_reader_refuses_daily_slots_and_malformed_states() -> None:
    daily = [f.kind for f in STORED].index(Kind.DAILY)
    with pytest.raises(ValueError, match="DAILY slots cannot be read alone"):
        SlotReader(STORED, [0, daily])
    with pytest.raises(ValueError, match="at least one slot"):
        SlotReader(STORED, [])
    items = msgspec.msgpack.decode(FOLD.encode(fold(random_stream(random.Random(7), 40))))
    items[4] = "forty"  # event_count, the first slot
    with pytest.raises(ValueError, match=r"malformed: Expected `int`, got `str` - at `\$\[4\]`"):
        SlotReader(STORED, [0]).read(msgspec.msgpack.encode(items))
    with pytest.raises(ValueError, match="malformed"):
        SlotReader(STORED, [0]).read(msgspec.msgpack.encode([3, *items[1:]]))


def test_half_lives_come_from_the_configuration() -> None:
    quick = FeatureFold(
        FeatureConfig(half_lives_days={**FeatureConfig().half_lives_days, "interest": 1.0})
    )
    state = quick.new_state()
    quick.apply(state, event("product_view", T0, "web", product="savings"))
    assert read_features(quick, state, T0 + DAY)["interest_savings"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="half-life"):
        FeatureConfig(half_lives_days={"interest": 0.0})


# --- times far from the clock: no stored state makes a read fail ---------------------------

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC).timestamp()
LAST_SECOND = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()  # the schema's latest
FIRST_SECOND = datetime(1, 1, 1, tzinfo=UTC).timestamp()  # and its earliest


def assert_finite(values: dict[str, Any]) -> None:
    """Every number read is finite, and no decayed value exceeds its undecayed count."""
    bad = {n: v for n, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    assert bad == {}
    assert 0 <= values["txn_decayed_count"] <= values["txn_count"]
    assert 0 <= values["ch_pos_decayed_count"] <= values["ch_pos_count"]


# Histories that were accepted before event times were bounded by the clock.
EXTREME_HISTORIES = {
    "2099-after-today": [T0, FAR_FUTURE],
    "2099-then-today": [FAR_FUTURE, T0 + 60],
    "year-9999": [T0, LAST_SECOND],
    "epoch-0-then-today": [0.0, T0],
    "year-1-then-year-9999": [FIRST_SECOND, LAST_SECOND],
    "2099-spread-over-months": [FAR_FUTURE + day * DAY for day in range(0, 300, 7)],
}


@pytest.mark.parametrize("times", EXTREME_HISTORIES.values(), ids=EXTREME_HISTORIES.keys())
@pytest.mark.parametrize("now", [T0, FAR_FUTURE, LAST_SECOND], ids=["today", "2099", "9999"])
def test_a_history_at_extreme_times_reads_as_finite_values(times: list[float], now: float) -> None:
    events = [event("transaction", at, "pos", amount=10.0) for at in times]
    state = fold(events)
    assert_finite(read_features(FOLD, state, now))
    assert_finite(read_features(FOLD, FOLD.decode(FOLD.encode(state)), now))


def test_a_read_before_the_decay_reference_weighs_nothing_up() -> None:
    state = fold([event("transaction", FAR_FUTURE + 3_600, "pos", amount=10.0)])
    values = read_features(FOLD, state, T0)  # 73 years before the event
    assert values["txn_decayed_count"] == pytest.approx(1.0, rel=0.01)  # age 0, nothing more
    assert values["purchase_recency_days"] == 0.0
    assert values["clv_t_days"] == 0  # the first purchase is not a negative number of days old


def test_merging_an_identity_far_ahead_in_time_does_not_overflow() -> None:
    today = fold([event("transaction", T0, "pos", amount=10.0)])
    future = fold([event("transaction", FAR_FUTURE, "pos", amount=10.0)])
    FOLD.merge(today, future)
    values = read_features(FOLD, today, FAR_FUTURE)
    assert_finite(values)
    assert values["txn_count"] == 2
    assert values["txn_decayed_count"] == pytest.approx(1.0)  # today's purchase decayed away
    earlier = fold([event("transaction", T0, "pos", amount=10.0)])
    FOLD.merge(future, earlier)  # and the other way round
    assert read_features(FOLD, future, FAR_FUTURE)["txn_decayed_count"] == pytest.approx(1.0)


def test_a_watermark_ahead_of_the_horizon_is_brought_back_and_todays_events_apply() -> None:
    state = fold([event("transaction", T0 - DAY, "pos", amount=10.0, event_id="yesterday")])
    FOLD.apply_all(state, [event("transaction", FAR_FUTURE, "pos", amount=10.0, event_id="2099")])
    today = event("transaction", T0, "pos", amount=10.0, event_id="today")
    assert FOLD.apply(state, today) is Applied.LATE  # what a stored 2099 did, for good

    horizon = T0 + 300
    assert FOLD.bound_to(state, horizon) is True
    assert FOLD.bound_to(state, horizon) is False  # nothing left to bring back
    assert state.watermark == int(horizon)
    assert FOLD.apply_all(state, [today, today]) == [Applied.APPLIED, Applied.DUPLICATE]
    values = read_features(FOLD, state, T0 + 60)
    assert_finite(values)
    assert values["txn_count"] == 3
    assert values["txn_count_7d"] == 1  # today's bucket is kept; 2099's is not in the window
    # the 2099 purchase counts at age 0 from today, today's purchase adds to it
    assert values["txn_decayed_count"] == pytest.approx(2.0, rel=0.05)
    yesterday = event("transaction", T0 - DAY, "pos", amount=10.0, event_id="late-again")
    assert FOLD.apply(state, yesterday) is Applied.APPLIED  # within the lateness of the horizon


def test_bounding_leaves_a_state_within_the_horizon_untouched() -> None:
    events = random_stream(random.Random(5), 80)
    state = fold(events)
    before = FOLD.encode(state)
    assert FOLD.bound_to(state, T0 + 30 * DAY) is False
    assert FOLD.encode(state) == before
