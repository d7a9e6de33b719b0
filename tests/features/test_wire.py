"""Packing encoded JSON values into arrays under a byte limit."""

from __future__ import annotations

import orjson
import pytest

from features.wire import OversizedItemError, pack_json_arrays


def test_every_array_is_valid_json_under_the_limit_and_the_order_is_kept() -> None:
    items = [orjson.dumps({"n": n, "pad": "x" * (n % 50)}) for n in range(1000)]
    arrays = list(pack_json_arrays(items, max_bytes=2_000))
    assert all(len(array) <= 2_000 for array in arrays)
    assert [value for array in arrays for value in orjson.loads(array)] == [
        orjson.loads(item) for item in items
    ]
    assert len(arrays) > 1


def test_an_array_is_filled_to_the_exact_limit() -> None:
    assert list(pack_json_arrays([b"1", b"2", b"3"], max_bytes=5)) == [b"[1,2]", b"[3]"]
    assert list(pack_json_arrays([b"1", b"2"], max_bytes=4)) == [b"[1]", b"[2]"]


def test_nothing_to_pack_is_no_message() -> None:
    assert list(pack_json_arrays([], max_bytes=10)) == []


def test_an_item_that_cannot_fit_alone_is_refused_by_name() -> None:
    with pytest.raises(OversizedItemError, match=r"an item of 12 bytes does not fit in a "
                       r"message of at most 11 bytes \(NBA_MAX_MESSAGE_BYTES\)"):  # fmt: skip
        list(pack_json_arrays([b"1", b'"abcdefgh"'], max_bytes=11))
