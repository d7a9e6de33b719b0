"""Learning loops in slices: the event loop runs between slices, and only then."""

from __future__ import annotations

import asyncio
import math

from models.cooperative import in_slices


async def progress_seen_by_another_task(slice_s: float) -> tuple[list[int], list[int]]:
    """The items iterated, and how far the iteration was each time another task ran."""
    done: list[int] = []
    seen: list[int] = []

    async def iterate() -> None:
        async for item in in_slices(range(5), slice_s):
            done.append(item)

    iterating = asyncio.create_task(iterate())
    while not iterating.done():
        seen.append(len(done))
        await asyncio.sleep(0)
    await iterating
    return done, seen


async def test_every_item_comes_in_order_and_the_loop_runs_after_each_elapsed_slice() -> None:
    done, seen = await progress_seen_by_another_task(slice_s=0.0)
    assert done == [0, 1, 2, 3, 4]
    assert set(range(1, 6)) <= set(seen)


async def test_within_a_slice_the_items_run_without_a_pause() -> None:
    done, seen = await progress_seen_by_another_task(slice_s=math.inf)
    assert done == [0, 1, 2, 3, 4]
    assert set(seen) <= {0, 5}
