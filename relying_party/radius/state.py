"""What pushauth-radius keeps in Redis, so that any instance can serve any packet.

- the record behind each State attribute (the challenge, the user, the client), for
  exactly the challenge's lifetime, taken once (GETDEL): the follow-up Access-Request
  may reach another instance behind the load balancer, and two copies of it cannot
  both be answered;
- the per-user request count (a fixed window);
- the Request Authenticators seen from each client (replays across instances);
- verification codes used (a code works once across instances; each instance's user
  store refuses it too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ..models import Challenge

PREFIX = "pushauth:radius:"


@dataclass(frozen=True, slots=True)
class Pending:
    """A push sent, waiting for its follow-up Access-Request (behind one State value)."""

    challenge: Challenge | None  # None: push is blocked, only a verification code is asked for
    user: str  # the pushauth-radius user name
    client: str  # the client that got the Access-Challenge: only it may answer
    # The first request's Calling-Station-Id, for the follow-up's audit line: gateways
    # often send it in the first request only.
    station: str | None = None

    def to_json(self) -> str:
        challenge = None if self.challenge is None else self.challenge.to_json()
        return json.dumps(
            {"challenge": challenge, "user": self.user, "client": self.client, "station": self.station}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Pending:
        data: dict[str, Any] = json.loads(text)
        challenge = None if data["challenge"] is None else Challenge.from_stored(data["challenge"])
        # .get: a record written by an instance of an earlier version (a rolling upgrade).
        return cls(challenge, data["user"], data["client"], data.get("station"))


class StateStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, state: bytes, pending: Pending, ttl_ms: int) -> None:
        await self.redis.set(f"{PREFIX}state:{state.hex()}", pending.to_json(), px=max(1, ttl_ms))

    async def take(self, state: bytes) -> Pending | None:
        """The record, removed in the same step (one answer per State), or None."""
        raw = await self.redis.getdel(f"{PREFIX}state:{state.hex()}")
        return None if raw is None else Pending.from_json(raw)

    async def allow(self, user: str, limit: int, window_s: int) -> bool:
        """Count one request of `user`; False once more than `limit` came in this window."""
        if limit <= 0 or window_s <= 0:
            return True
        key = f"{PREFIX}rate:{user}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=window_s, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count) <= limit

    async def first_seen(self, client: str, authenticator: bytes, window_s: int) -> bool:
        """False if this client sent this Request Authenticator within the window
        (RFC 2865 asks it to be unique: a repeat is a replay, or a duplicate)."""
        if window_s <= 0:
            return True
        key = f"{PREFIX}seen:{client}:{authenticator.hex()}"
        return bool(await self.redis.set(key, 1, ex=window_s, nx=True))

    async def code_unused(self, user: str, code: str, window_s: int) -> bool:
        """Claim a verification code for `user` for as long as it could be valid."""
        return bool(await self.redis.set(f"{PREFIX}code:{user}:{code}", 1, ex=window_s, nx=True))
