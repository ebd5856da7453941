"""Opaque keyset cursors: the last seen id, signed so clients cannot forge arbitrary values."""

from __future__ import annotations

from django.core import signing

_SALT = "distillery.cursor"


class InvalidCursor(ValueError):
    pass


def encode_cursor(last_id: int) -> str:
    return signing.dumps(last_id, salt=_SALT, compress=True)


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        value = signing.loads(cursor, salt=_SALT)
    except signing.BadSignature as exc:
        raise InvalidCursor("Invalid cursor.") from exc
    if not isinstance(value, int):
        raise InvalidCursor("Invalid cursor.")
    return value
