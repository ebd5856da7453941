"""Small helpers for iterating in batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` items; only one list is held at a time."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
