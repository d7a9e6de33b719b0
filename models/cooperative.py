"""Long learning loops that share an event loop with event processing.

Why: a worker applies events and learns on one asyncio event loop. A learning step over
a thousand samples computes for a quarter of a second; run in one go, it holds back
every event that arrives meanwhile (measured on the freshness benchmark: the churn and
segment learner's steps were the longest stalls of the worker's loop). Iterating through
`in_slices` lets the loop run between slices of a few milliseconds, so an event waits
for at most one slice of learning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

#: Longest a learning loop computes before the event loop runs again (seconds).
SLICE_S = 0.005


async def in_slices(items: Iterable[T], slice_s: float = SLICE_S) -> AsyncIterator[T]:
    """The items, one by one, letting the event loop run whenever `slice_s` has passed.

    The time counted is the caller's work on the items (wall clock since the last pause).
    """
    deadline = time.perf_counter() + slice_s
    for item in items:
        yield item
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + slice_s
