"""The Redis half of GET /healthz: one write check at a time, its result reused briefly.

/healthz needs no API key and its check is a write (a Redis that answers PING but takes
no writes fails every sign-in). Written on every request, any anonymous client could make
the node write to Redis as fast as it can send requests (pipelined, thousands a second
from one connection), load shared by every node and sign-in. So the check is made by
one task at a time: requests that arrive while it runs wait for its result, and a result
younger than FRESH_S answers without asking Redis. A load balancer checks a node about
twice a second (deploy/haproxy.cfg `inter 500ms`), so FRESH_S adds at most a quarter
of a second to noticing that Redis went away or came back, while anyone's requests cost
Redis at most 1 / FRESH_S writes a second per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis import exceptions as redis_errors

from . import redis_refusals

FRESH_S = 0.25  # how long one check's result answers /healthz
CHECK_TIMEOUT_S = 2.0  # a Redis silent this long is down for /healthz
HEALTH_KEY_TTL_MS = 60_000


class RedisHealth:
    """Whether this node's Redis takes writes, checked by at most one task at a time and
    at most once per `fresh_s` (the clock is monotonic: a wall-clock step neither stops
    nor floods the checks)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        *,
        fresh_s: float = FRESH_S,
        timeout_s: float = CHECK_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = key
        self._fresh_s = fresh_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._result: str | None = None
        self._checked_at = -float("inf")
        self._running: asyncio.Task[str | None] | None = None
        self.checks = 0  # writes made so far (for tests and metrics)

    async def problem(self) -> str | None:
        """None when Redis took the write, else why not (the detail of a 503)."""
        if self._clock() - self._checked_at < self._fresh_s:
            return self._result
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._check())
        # Shielded: a client that hangs up while it waits must not cancel the check the
        # other waiters share.
        return await asyncio.shield(self._running)

    async def _check(self) -> str | None:
        self.checks += 1
        try:
            # A write, not a PING: a Redis that answers but takes no writes (a replica
            # after a failover behind a plain redis:// URL, out of memory, a failing
            # disk) fails every sign-in, and a load balancer must take this node out.
            await asyncio.wait_for(self._redis.set(self._key, "1", px=HEALTH_KEY_TTL_MS), self._timeout_s)
            result = None
        except redis_errors.ResponseError as exc:
            refusal = redis_refusals.refusal(exc)
            result = (
                redis_refusals.describe(refusal)
                if refusal is not None
                else f"redis refuses writes ({type(exc).__name__}): {str(exc).splitlines()[0]}"
            )
        except (TimeoutError, OSError, Exception) as exc:  # noqa: BLE001 - any failure is "down"
            result = f"redis: {type(exc).__name__}"
        # Fresh from the end of the check: a check that took its whole timeout is not
        # followed at once by another one.
        self._result, self._checked_at, self._running = result, self._clock(), None
        return result

    async def close(self) -> None:
        """Stop a check under way (the node is shutting down)."""
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._running
            self._running = None


HEALTH = web.AppKey("redis_health", RedisHealth)
