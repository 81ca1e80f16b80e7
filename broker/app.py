"""The broker application: HTTP API + device WebSocket on one aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgpack
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web

from . import api, backups, events, recovery
from .context import NODE, Node
from .device_ws import device_socket
from .fatigue import PushPolicy
from .hub import Hub
from .models import ChallengeRecord
from .openapi import openapi_handler
from .problems import problem_middleware
from .store import ENROLLMENT_TTL_MS, Store, now_ms

log = logging.getLogger(__name__)


def create_app(
    redis: aioredis.Redis,
    *,
    node: str,
    public_url: str | None = None,
    enrollment_ttl_s: int = ENROLLMENT_TTL_MS // 1000,
    policy: PushPolicy | None = None,
) -> web.Application:
    app = web.Application(client_max_size=api.MAX_BODY, middlewares=[problem_middleware])
    store = Store(redis, node, enrollment_ttl_ms=enrollment_ttl_s * 1000, policy=policy)
    hub = Hub()
    store.on_event = hub.dispatch

    async def expire(record: ChallengeRecord) -> None:
        try:
            await store.expire_challenge(record, max(now_ms(), record.expires))
        except (aioredis.RedisError, OSError) as exc:  # the next reader expires it instead
            log.warning("could not expire challenge %s: %s", record.id, exc)

    app[NODE] = Node(store=store, hub=hub, name=node, public_url=public_url, expire=expire)
    api.add_routes(app)
    backups.add_routes(app)  # device requests signed by device keys (no API key)
    recovery.add_routes(app)
    app.router.add_get("/v1/device", device_socket)
    app.router.add_get("/v1/openapi.json", openapi_handler)
    app.cleanup_ctx.append(_event_listener)
    app.on_cleanup.append(lambda _app: _close_store(store))
    app.on_shutdown.append(_close_devices)
    return app


async def _event_listener(app: web.Application) -> AsyncIterator[None]:
    """Subscribe to the shared event channel before serving, until shutdown."""
    ready = asyncio.Event()
    task = asyncio.create_task(_listen(app[NODE].store, app[NODE].hub, ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _listen(store: Store, hub: Hub, ready: asyncio.Event) -> None:
    delay = 0.1

    def subscribed() -> None:
        nonlocal delay
        ready.set()
        delay = 0.1

    while True:
        try:
            async with contextlib.aclosing(store.event_messages(subscribed)) as messages:
                async for data in messages:
                    try:
                        if events.origin(data) == store.node:
                            continue  # our own events were handled when published
                        _, event = events.decode(data)
                    except (ValueError, TypeError, msgpack.UnpackException) as exc:
                        log.warning("ignoring malformed event: %s", exc)
                        continue
                    await hub.dispatch(event)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("event channel lost (%s); resubscribing in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _close_store(store: Store) -> None:
    store.close()


async def _close_devices(app: web.Application) -> None:
    hub = app[NODE].hub
    sockets = [ws for device in list(hub.connections) if (ws := getattr(device, "ws", None)) is not None]
    # All at once: one after another, each waiting for its device's close reply,
    # 18,000 connections took more than ten seconds to close.
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"broker shutting down") for ws in sockets),
        return_exceptions=True,
    )
