"""One guess at a time per account and per client address.

The lockouts (db.record_failure, ratelimit.AttemptLimiter) count a failure when its
check is done, and a check awaits (Argon2 in a thread, the broker before a code). So
requests sent at once all read "not locked" before the first of them failed: 40 wrong
passwords sent at once were 40 guesses (and a right one among them signed in), against
a lockout after 5. Holding the gate from the lockout check to the recorded outcome makes
each attempt see the failures of every attempt before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AttemptGate:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # requests holding or waiting for each key's lock

    @asynccontextmanager
    async def hold(self, *keys: str) -> AsyncIterator[None]:
        """Wait until no other attempt holds any of `keys`, then hold them all. Taken in
        sorted order, so two requests never each wait for a lock the other holds."""
        wanted = sorted(set(keys))
        acquired: list[asyncio.Lock] = []
        for key in wanted:
            self._users[key] = self._users.get(key, 0) + 1
        try:
            for key in wanted:
                lock = self._locks.setdefault(key, asyncio.Lock())
                await lock.acquire()
                acquired.append(lock)
            yield
        finally:
            for lock in reversed(acquired):
                lock.release()
            for key in wanted:
                self._users[key] -= 1
                if not self._users[key]:  # bounded memory: no lock outlives its requests
                    del self._users[key], self._locks[key]
