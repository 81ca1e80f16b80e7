"""Open-loop arrival times: when each sign-in is meant to start, whatever happened before.

Latency is counted from these intended times, not from when the generator got
round to sending, so a stalled broker shows up as latency instead of as a quietly
lower request rate (coordinated omission).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """Arrival rate going linearly from `start_rate` to `end_rate` over `duration` seconds."""

    start_rate: float
    end_rate: float
    duration: float

    @property
    def total(self) -> int:
        return int(self.cumulative(self.duration))

    def cumulative(self, t: float) -> float:
        """Arrivals expected by time t."""
        slope = (self.end_rate - self.start_rate) / self.duration
        return self.start_rate * t + slope * t * t / 2

    def rate_at(self, t: float) -> float:
        return self.start_rate + (self.end_rate - self.start_rate) * t / self.duration

    def time_of(self, n: float) -> float:
        """The time by which n arrivals are due (inverse of `cumulative`)."""
        a = (self.end_rate - self.start_rate) / (2 * self.duration)
        b = self.start_rate
        if abs(a) < 1e-12:
            return n / b
        return (-b + math.sqrt(b * b + 4 * a * n)) / (2 * a)


def arrivals(profile: Profile, worker: int, workers: int) -> Iterator[tuple[int, float]]:
    """(sequence number, offset in seconds) of this worker's share: every workers-th arrival,
    so the merged stream of all workers is evenly spaced."""
    for n in range(worker, profile.total, workers):
        yield n, profile.time_of(n)


def parse_rate(text: str) -> tuple[float, float]:
    """'200' (fixed) or '100:2000' (a ramp); both > 0."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"rate {text!r} is not a number or FROM:TO") from None
    if len(values) not in (1, 2) or not all(0 < v <= 50_000 for v in values):
        raise ValueError(f"rate {text!r} must be 1 or 2 numbers in (0, 50000] as RATE or FROM:TO")
    return values[0], values[-1]
