"""The broker's clock: its Redis's, so that every node of one store keeps one time.

Every time the broker decides by is compared across nodes: a challenge created on one
node (its `expires`) is delivered and answered on another (`hello.time`, "answered at or
after `expires`"), and so are the 5-minute window of signed device requests, push rates
and mutes. With each node on its own clock, one host whose NTP broke made sign-ins fail
in silence: a node 90 s ahead refused every answer to a 60 s challenge created
elsewhere as expired at once, and showed its devices no pending one after a reconnect,
while a node behind kept answers open past the lifetime the RP counts.

So the nodes take the time from the store they share: Redis's TIME, read every
REFRESH_S and carried forward between reads on this host's boot-time clock, which no
step of the wall clock moves (NTP stepping it, a clock set by hand) and which counts a
suspend (a VM paused and resumed). A step of this host's clock therefore changes
nothing either. With Redis Cluster the TIME is read by a script on one fixed key, so
every node asks the same master. Before the first read (and in the one-shot CLI
commands, which never read it) the time is this host's own.

Replies carry this clock in their Date header (`http_date`). A host clock off Redis's
by more than WARN_MS is logged (the log lines' times are still this host's) and shown
as the gauge `pushauth_clock_offset_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

from redis.exceptions import RedisError

from protocol import durations

log = logging.getLogger("pushauth.broker.clock")

REFRESH_S = 10.0  # how often Redis's clock is read again (drift and steps of Redis's own)
READ_TIMEOUT_S = 2.0
# A read whose round trip took longer says little about when TIME was taken: skipped.
MAX_ROUND_TRIP_NS = 250_000_000
# A reading behind the kept one by less than this is a read's own error (or drift of
# ms): the clock does not go back for it (next_offset).
STEP_BACK_NS = 1_000_000_000
WARN_MS = 2_000  # a host clock further off Redis's is logged (NTP keeps hosts within ms)
KEY = "pushauth:clock"  # never written: it only picks the cluster node that answers
_TIME = "return redis.call('TIME')"

_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # Linux counts suspend in BOOTTIME


def _steady_ns() -> int:
    return time.clock_gettime_ns(_CLOCK)


class _Shared:
    offset_ns: int | None = None  # Redis's clock minus the steady clock; None: not read yet
    host_off_ms: int = 0  # this host's wall clock minus Redis's, at the last read
    warned_ms: int | None = None  # the host offset last logged (None: within WARN_MS)


_shared = _Shared()


def now_ms() -> int:
    """Now, by the broker's clock (Unix ms): Redis's, once read."""
    offset = _shared.offset_ns
    if offset is None:
        return time.time_ns() // 1_000_000
    return (_steady_ns() + offset) // 1_000_000


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's value on the broker clock (RFC 9110 asks an origin server with a
    clock for it; a device names its own clock's offset from it when the broker refuses a
    signed request as stale), made once a second."""
    global _date_cache
    now = now_ms() // 1000
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def host_offset_ms() -> int:
    """This host's wall clock minus Redis's, at the last read of Redis's (0 before)."""
    return _shared.host_off_ms


def describe(off_ms: int) -> str:
    """'1 min 30 s ahead of' / '4.0 s behind': how a clock `off_ms` ahead of another stands
    to it (protocol/durations.py words the size)."""
    return f"{durations.clock_offset(off_ms)} {'ahead of' if off_ms > 0 else 'behind'}"


def next_offset(old: int | None, read: int) -> int:
    """The offset to keep after a read that measured `read` (both in ns).

    Each read is off by up to half its round trip (tens of ms on a loaded node), so
    taking every one would move the clock back and forth by that much every REFRESH_S,
    and back is what breaks a wait: a result held until a challenge's `expires` woke at
    it by the old reading and found it, by the new, not yet expired, and answered
    `pending` (a loaded clean-clone run of tests/test_haproxy_failover.py saw it). So
    the clock only moves forward, except by a step of more than STEP_BACK_NS (Redis's
    own clock set back, a failover to a Redis whose clock differs): then it follows."""
    if old is None or read >= old or old - read > STEP_BACK_NS:
        return read
    return old


async def read(redis: Any) -> bool:
    """Read Redis's clock once; False if it did not answer in time or took too long."""
    # This host's wall clock is read around the same round trip as the steady clock, so
    # that its offset from Redis's is as good as the reading (within half the round
    # trip), wherever a loaded host lets this task wait: read apart, a wait between the
    # two reads added itself to the logged offset.
    wall_before, before = time.time_ns(), _steady_ns()
    try:
        sec, usec = await asyncio.wait_for(redis.eval(_TIME, 1, KEY), READ_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError, ValueError) as exc:  # the next read tries again
        log.debug("could not read Redis's clock: %s", exc)
        return False
    after, wall_after = _steady_ns(), time.time_ns()
    if after - before > MAX_ROUND_TRIP_NS:
        return False
    redis_ns = int(sec) * 1_000_000_000 + int(usec) * 1_000
    _shared.offset_ns = next_offset(_shared.offset_ns, redis_ns - (before + after) // 2)
    if abs(wall_after - wall_before) <= MAX_ROUND_TRIP_NS:  # else stepped meanwhile: next time
        host_off = ((wall_before + wall_after) // 2 - redis_ns) // 1_000_000
        _shared.host_off_ms = host_off
        _report(host_off)
    return True


def _report(host_off: int) -> None:
    """Log a host clock off Redis's when it first is, when the offset changes by more than
    WARN_MS, and when it is right again: not on every read."""
    last = _shared.warned_ms
    if abs(host_off) <= WARN_MS:
        if last is not None:
            log.warning("this node's clock is within %d ms of Redis's again", WARN_MS)
            _shared.warned_ms = None
        return
    if last is not None and abs(host_off - last) <= WARN_MS:
        return
    _shared.warned_ms = host_off
    log.warning(
        "this node's clock is %s Redis's: the broker keeps Redis's time (challenge expiry,"
        " devices' hello, signed requests, the Date of its replies), but this host's log times"
        " are off by that much: set this host's clock right (NTP)",
        describe(host_off),
    )


@contextlib.asynccontextmanager
async def following(redis: Any, every_s: float = REFRESH_S) -> AsyncIterator[None]:
    """Read Redis's clock before serving (if it answers), then every `every_s`."""
    await read(redis)

    async def loop() -> None:
        while True:
            await asyncio.sleep(every_s)
            await read(redis)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
