"""Save a model or policy to bytes and load it back, signed: a tampered checkpoint is refused.

A checkpoint is pickled (river models are plain Python objects, and pickle is the form
river supports), and unpickling bytes someone else wrote runs their code. So every
checkpoint carries an HMAC-SHA256 of its content under a secret key, and `load` checks
it, in constant time, before a single byte is unpickled. Without the key a checkpoint
can be neither forged nor altered.

Layout: MAGIC (8 bytes) | HMAC-SHA256(key, MAGIC + payload) (32 bytes) | payload (pickle).

>>> key = b"a checkpoint key of 32 bytes...."
>>> load(save({"weights": [0.5]}, key=key), key=key, expected_type=dict)
{'weights': [0.5]}
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import TypeVar

MAGIC = b"NBAPKL1\n"
#: Shorter keys are refused: an HMAC is only as strong as its key.
MIN_KEY_BYTES = 16

_DIGEST_BYTES = hashlib.sha256().digest_size
_T = TypeVar("_T")


class SignatureError(ValueError):
    """A checkpoint is not one of ours, or its signature does not match the key."""


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the checkpoint key must be at least {MIN_KEY_BYTES} bytes")


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, MAGIC + payload, hashlib.sha256).digest()


def save(obj: object, *, key: bytes) -> bytes:
    """The signed checkpoint of `obj` (any picklable object: a model, a policy)."""
    _check_key(key)
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _sign(key, payload) + payload


def load(data: bytes, *, key: bytes, expected_type: type[_T]) -> _T:
    """The object saved in `data`, once its signature is verified with `key`.

    Raises `SignatureError` before unpickling anything if `data` is not a checkpoint or
    was not signed with `key` (altered, truncated, or written under another key), and
    `TypeError` if it holds something other than an `expected_type`.
    """
    _check_key(key)
    header = len(MAGIC) + _DIGEST_BYTES
    if len(data) < header or not data.startswith(MAGIC):
        raise SignatureError("not a signed checkpoint: the header is missing")
    signature, payload = data[len(MAGIC) : header], data[header:]
    if not hmac.compare_digest(signature, _sign(key, payload)):
        raise SignatureError(
            "checkpoint signature mismatch: altered, or signed with another key; refused unread"
        )
    obj = pickle.loads(payload)
    if not isinstance(obj, expected_type):
        raise TypeError(
            f"checkpoint holds a {type(obj).__name__}, expected a {expected_type.__name__}"
        )
    return obj
