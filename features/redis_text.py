"""Redis replies as text, whether the client decodes responses or not."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """A reply value as `str` (clients made without `decode_responses` return bytes)."""
    return value.decode() if isinstance(value, bytes) else value
