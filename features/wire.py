"""JSON arrays packed under a byte limit: how every producer keeps its Kafka messages small.

Why: a Kafka broker refuses a message larger than its `max.message.bytes` (1 MB by
default), and the producer refuses it before that (`MessageSizeTooLargeError`). A producer
that packs "everything of this batch" into one message works in tests and fails the day a
batch is large: the API's envelopes, the worker's outcomes and dead letters all pack
through here, so each message stays under the configured limit whatever the batch.

>>> list(pack_json_arrays([b'1', b'22', b'333'], max_bytes=8))
[b'[1,22]', b'[333]']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class OversizedItemError(ValueError):
    """One item alone is larger than a message may be: it cannot be sent, however packed."""

    def __init__(self, size: int, max_bytes: int) -> None:
        super().__init__(
            f"an item of {size:,} bytes does not fit in a message of at most {max_bytes:,} "
            "bytes (NBA_MAX_MESSAGE_BYTES)"
        )
        self.size = size
        self.max_bytes = max_bytes


def pack_json_arrays(items: Iterable[bytes], *, max_bytes: int) -> Iterator[bytes]:
    """Join encoded JSON values into JSON arrays of at most `max_bytes` bytes each, in order.

    Raises `OversizedItemError` for an item that cannot fit even alone (before yielding
    the array it would have started).
    """
    chunk: list[bytes] = []
    size = 2  # the brackets
    for item in items:
        if len(item) + 2 > max_bytes:
            raise OversizedItemError(len(item) + 2, max_bytes)
        added = len(item) + (1 if chunk else 0)  # the comma before it
        if chunk and size + added > max_bytes:
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size, added = [], 2, len(item)
        chunk.append(item)
        size += added
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"
