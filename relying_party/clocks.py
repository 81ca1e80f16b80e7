"""This RP server's clock against the broker's, measured on every challenge it creates.

Freshness is counted by the RP's own clock (docs/protocol.md, section 13): an answer is
signed on the broker's clock and taken only within the challenge's lifetime by the RP's
clock, give or take MAX_CLOCK_SKEW_MS. An RP server whose clock is minutes off therefore
has every push answer refused as stale; before, nothing said so but a "stale_answer"
with two raw millisecond times, which read like a replay attack.

Each create measures the offset without trusting any latency: the broker's `created_at`
must lie between the RP's clock when it built the request (`issued`) and when the
answer came (`received`); how far it lies outside is how far the clocks are apart, at
least. A broker that lies about its time can only change what is logged here: the
window stays the RP's own.
"""

from __future__ import annotations

import logging

from protocol import durations

log = logging.getLogger("pushauth.sdk")

# The broker clock counted apart from this one by more than this is logged: NTP keeps
# servers within milliseconds, so seconds already mean a broken clock, well before
# answers are refused (at MAX_CLOCK_SKEW_MS).
WARN_MS = 10_000


def broker_offset_ms(issued: int, broker_created: int, received: int) -> int:
    """The broker's clock minus this one, at least: 0 when the broker's creation time
    falls between the request's building and its answer, by this clock."""
    if broker_created < issued:
        return broker_created - issued
    if broker_created > received:
        return broker_created - received
    return 0


class ClockWatch:
    """The last offset measured against one broker, logged when it first is more than
    WARN_MS, when it changes by more than that, and when it is within it again."""

    def __init__(self, broker_url: str, max_skew_ms: int) -> None:
        self.broker_url = broker_url
        self.max_skew_ms = max_skew_ms
        self.offset_ms: int | None = None  # the broker's clock minus this server's
        self._warned: int | None = None

    def measured(self, issued: int, broker_created: int, received: int) -> None:
        off = self.offset_ms = broker_offset_ms(issued, broker_created, received)
        if abs(off) <= WARN_MS:
            if self._warned is not None:
                log.warning("this server's clock is within %d s of the broker's again", WARN_MS // 1000)
                self._warned = None
            return
        if self._warned is not None and abs(off - self._warned) <= WARN_MS:
            return
        self._warned = off
        log.warning("%s", self.wrong_clock(off))

    def wrong_clock(self, off: int) -> str:
        way = "behind" if off > 0 else "ahead of"
        limit = f"{self.max_skew_ms // 1000} s"
        effect = "push sign-ins fail" if abs(off) > self.max_skew_ms else "push sign-ins fail if it grows"
        size = durations.clock_offset(off)
        return (
            f"this server's clock is {size} {way} the broker's at {self.broker_url}: push answers"
            f" are signed on the broker's clock and refused as stale (stale_answer) when more than {limit}"
            f" outside a challenge's lifetime by this one, so {effect}: set this server's clock right (NTP)"
        )
