"""A token bucket: how the broker bounds the frames one device connection may send."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens a second refill a bucket of `burst`; each event takes one.

    A device may send `burst` frames at once (reconnecting with a backlog of answers)
    and `rate` a second for as long as it likes; more than that is a flood."""

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Take one token: False (and nothing taken) if the bucket is empty."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
