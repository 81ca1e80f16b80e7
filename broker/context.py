"""What every request handler of one broker node shares, under one typed app key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .http_head import LaneRequest
from .hub import Hub
from .models import ChallengeRecord
from .store import Store


class Inflight:
    """RP API requests being handled now (device sockets are not counted: they last),
    so that a stopping node can finish them before it exits."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until none is in flight (at most `timeout`); True if so."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(0.01)  # their responses are written just after the handlers return
        return True


@dataclass(frozen=True, slots=True)
class Node:
    store: Store
    hub: Hub
    name: str
    public_url: str | None
    expire: Callable[[ChallengeRecord], Coroutine[Any, Any, None]]
    inflight: Inflight = field(default_factory=Inflight)


NODE = web.AppKey("node", Node)


# A request as the RP API's handlers read it: aiohttp's, or one the RP lane served
# (broker/http_head.py LaneRequest, the same attribute names and types).
ApiRequest = web.Request | LaneRequest


def node_of(request: ApiRequest) -> Node:
    return request.app[NODE]
