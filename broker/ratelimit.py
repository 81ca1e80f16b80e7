"""A token bucket: how the broker bounds the frames, and the bytes, one device
connection may send."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens a second refill a bucket of `burst`; each event takes its cost.

    A device may send `burst` frames at once (reconnecting with a backlog of answers)
    and `rate` a second for as long as it likes; more than that is a flood. A bucket
    may start below `burst` (`tokens`), and with `rate` 0 it is a fixed allowance."""

    # Two per device connection, 18,000 idle ones on a node: no __dict__ each.
    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, now: float | None = None, tokens: float | None = None
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst if tokens is None else min(tokens, burst)
        self._at = time.monotonic() if now is None else now

    def take(self, cost: float = 1, now: float | None = None) -> bool:
        """Take `cost` tokens: False (and nothing taken) if the bucket holds fewer."""
        self._refill(now)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def left(self, now: float | None = None) -> float:
        """The tokens in the bucket now."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float | None) -> None:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
