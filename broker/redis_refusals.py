"""A Redis that answers but refuses writes, told to the operator once, with what to do.

Out of memory (`maxmemory` reached under `noeviction`), unable to persist (a failed RDB
snapshot or AOF write with `stop-writes-on-bgsave-error`), or a read-only replica: every
write fails, so every sign-in, enrollment and answer fails, on every node, until someone
fixes Redis. Each failure is answered as any Redis error is (503 `unavailable` with
Retry-After to the RP, close 1011 `internal` to a device) and counted
(`pushauth_redis_errors_total`); this module words the log line: what Redis refuses
and what to do about it, at WARNING once and then at most once a minute for each kind
(logs.configure puts a RepeatFilter on LOGGER for each prefix), rather than one line per
request at 50 requests a second. docs/operations.md, "Redis full or not persisting".
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from redis.exceptions import OutOfMemoryError, ReadOnlyError

LOGGER = "broker.redis_refusals"
log = logging.getLogger(LOGGER)


class Refusal(NamedTuple):
    markers: tuple[str, ...]  # in the error's text (redis-py, our pipes, inside scripts)
    what: str  # the start of the log line: the prefix its RepeatFilter holds back
    todo: str


OUT_OF_MEMORY = Refusal(
    ("OOM command not allowed", "command not allowed when used memory"),
    "Redis refuses writes: out of memory (used memory is over maxmemory and its policy evicts nothing)",
    "raise maxmemory (CONFIG SET maxmemory, and in redis.conf) or free memory",
)
CANNOT_PERSIST = Refusal(
    ("MISCONF",),
    "Redis refuses writes: it cannot persist (its last RDB snapshot or AOF write failed, "
    "and stop-writes-on-bgsave-error is on)",
    "fix its disk (free space, permissions of its dir; its log says which), then run BGSAVE",
)
READ_ONLY = Refusal(
    ("READONLY", "read only replica"),
    "Redis refuses writes: it is a read only replica",
    "point --redis-url at the master, or at Sentinel (redis+sentinel://)",
)
REFUSALS = (OUT_OF_MEMORY, CANNOT_PERSIST, READ_ONLY)


def refusal(exc: BaseException) -> Refusal | None:
    """Which refusal of writes `exc` is, or None for any other error (Redis down, a bug)."""
    if isinstance(exc, OutOfMemoryError):
        return OUT_OF_MEMORY
    if isinstance(exc, ReadOnlyError):
        return READ_ONLY
    text = str(exc)
    return next((r for r in REFUSALS if any(m in text for m in r.markers)), None)


def describe(r: Refusal) -> str:
    """What is wrong and what to do, in one sentence (/healthz's detail too)."""
    return f"{r.what}; every sign-in fails until then: {r.todo}"


def reported(exc: BaseException, where: str) -> bool:
    """Log `exc` as a refusal of writes (True) if it is one; else leave it to the caller
    (False), whose own line says what failed."""
    r = refusal(exc)
    if r is None:
        return False
    # The sentence in the format itself: RepeatFilter matches the record's format string.
    log.warning(describe(r) + " (last: %s: %s)", where, str(exc).splitlines()[0][:200])
    return True
