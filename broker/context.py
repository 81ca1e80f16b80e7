"""What every request handler of one broker node shares, under one typed app key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .hub import Hub
from .models import ChallengeRecord
from .store import Store


@dataclass(frozen=True, slots=True)
class Node:
    store: Store
    hub: Hub
    name: str
    public_url: str | None
    expire: Callable[[ChallengeRecord], Coroutine[Any, Any, None]]


NODE = web.AppKey("node", Node)


def node_of(request: web.Request) -> Node:
    return request.app[NODE]
