"""Customer features → the numeric dict a learner sees, on scales an online learner can use.

Stored features are in the units the feature store keeps: lifetime amounts in the
thousands, counts with long tails, and timestamps near 1.7e9 Unix seconds whose meaning
for a propensity is "how long ago", not "when". `vectorise` maps them, purely, to a few
comparable units so that one learning rate suits every weight:

- `<name>_ts` (Unix seconds, 0 = never): `<name>_days` = log1p(days since `now`, ≥ 0) and
  `<name>_never` = 1.0 for a never-seen time, 0.0 otherwise. A never-seen time omits
  `<name>_days`: a learner reading a dict treats a missing feature as contributing
  nothing, so "never" is carried by its own indicator rather than by an arbitrary
  number of days. The indicator is always emitted, 0.0 or 1.0, so that a standard
  scaler sees it vary.
- `<name>_count`, `<name>_amount`: sign(v)·log1p(|v|), which tames long tails.
- any other name: the value as a float.
- a non-finite value (NaN, ±inf): dropped, i.e. treated as missing.
- a text value (a category such as `lifecycle_stage`): one indicator per value the
  registry declares for it, `<name>_<option>` = 1.0 for the value it has, 0.0 for the
  others (all emitted, so that a scaler sees them vary).
- `channel`, when given: one 0/1 indicator per channel, `channel_<value>`, all emitted.

The rules go by name suffix, the convention of `features.registry`; a registry feature
whose op contradicts its suffix is caught by the tests over `FEATURES`. The names a
feature gives rise to are built once and reused, so every vector shares the same key
objects (as the vectors orjson decodes do, from its key cache): the learner looks each
of ~150 keys up in its own dicts, and a lookup that finds the very same object skips
comparing the strings.

>>> now = 1_767_605_400.0
>>> x = vectorise({"txn_count": 3, "last_seen_ts": now - 86_400, "first_seen_ts": 0},
...               now=now)
>>> {name: round(value, 3) for name, value in sorted(x.items())}
{'first_seen_never': 1.0, 'last_seen_days': 0.693, 'last_seen_never': 0.0, 'txn_count': 1.386}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache

from features.derived import CATEGORIES
from features.events import Channel

SECONDS_PER_DAY = 86_400.0

_TS_SUFFIX = "_ts"
_LOG_SUFFIXES = ("_count", "_amount")
_CHANNEL_KEYS = {channel: f"channel_{channel.value}" for channel in Channel}


class Transform(StrEnum):
    """How one raw feature becomes learner input."""

    RECENCY = "recency"  # a Unix-seconds time, 0 = never → log1p(days since) + never flag
    LOG = "log"  # a count or an amount → sign(v)·log1p(|v|)
    RAW = "raw"  # already on a sensible scale → float(v)


@lru_cache(maxsize=4096)  # names repeat on every decision; the suffix tests need not
def transform_of(name: str) -> Transform:
    """The transform `vectorise` applies to a feature, decided by its name's suffix."""
    if name.endswith(_TS_SUFFIX):
        return Transform.RECENCY
    if name.endswith(_LOG_SUFFIXES):
        return Transform.LOG
    return Transform.RAW


@lru_cache(maxsize=4096)
def _recency_names(name: str) -> tuple[str, str]:
    """The `<base>_never` and `<base>_days` inputs of a `<base>_ts` feature."""
    base = name.removesuffix(_TS_SUFFIX)
    return f"{base}_never", f"{base}_days"


@lru_cache(maxsize=4096)
def _declared_indicators(name: str) -> tuple[tuple[str, str], ...] | None:
    """(value, input name) of each value the registry declares for a category, if it does."""
    options = CATEGORIES.get(name)
    return None if options is None else tuple((option, f"{name}_{option}") for option in options)


def vectorise(
    features: Mapping[str, float | int | str],
    *,
    now: float,
    channel: Channel | None = None,
) -> dict[str, float]:
    """The learner's input for one customer at time `now` (Unix seconds), optionally on a channel.

    Pure: the same features, `now` and channel always give the same dict, and `features`
    is not modified. Record the result with the decision: the model must later learn from
    exactly what it scored.
    """
    x: dict[str, float] = {}
    for name, raw in features.items():
        if isinstance(raw, str):  # a category: one 0/1 indicator per value it can take
            indicators = _declared_indicators(name)
            for option, key in indicators if indicators is not None else [(raw, f"{name}_{raw}")]:
                x[key] = 1.0 if option == raw else 0.0
            continue
        value = float(raw)
        if not math.isfinite(value):
            continue
        transform = transform_of(name)
        if transform is Transform.RECENCY:
            never, days = _recency_names(name)
            if value == 0.0:
                x[never] = 1.0
            else:
                x[never] = 0.0
                x[days] = math.log1p(max(0.0, now - value) / SECONDS_PER_DAY)
        elif transform is Transform.LOG:
            x[name] = math.copysign(math.log1p(abs(value)), value)
        else:
            x[name] = value
    if channel is not None:
        for option, key in _CHANNEL_KEYS.items():
            x[key] = 1.0 if option is channel else 0.0
    return x
