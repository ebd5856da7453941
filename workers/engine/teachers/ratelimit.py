"""Token buckets for requests-per-minute and tokens-per-minute limits (asyncio, one event loop).

A bucket refills continuously at `per_minute / 60` per second and holds at most `burst_seconds`
worth. A request larger than the whole bucket may still go when the bucket is full: the level goes
negative and later requests wait off the debt, so the long-run rate holds without deadlock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        per_minute: float,
        *,
        burst_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` may be spent. FIFO among waiters (the lock queues them)."""
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self._level >= need:
                    self._level -= amount
                    return
                await asyncio.sleep((need - self._level) / self.rate)

    def refund(self, amount: float) -> None:
        """Give back what was reserved but not used (estimated tokens minus actual usage)."""
        self._refill()
        self._level = min(self.capacity, self._level + amount)


class RateLimiter:
    """Both limits of a teacher; either may be None (unlimited)."""

    def __init__(self, *, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimated_tokens)

    def settle(self, estimated_tokens: int, actual_tokens: int | None) -> None:
        """Correct the reservation by the tokens actually used (a negative refund charges more)."""
        if self.tokens is not None and actual_tokens is not None:
            self.tokens.refund(estimated_tokens - actual_tokens)
