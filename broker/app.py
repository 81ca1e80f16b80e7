"""The broker application: HTTP API + device WebSocket on one aiohttp app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
from aiohttp import web

from protocol.challenge import Status

from . import api, api_stream, backups, clock, keys, metrics, recovery, redis_refusals, subscriber
from .backups import QUOTA, BackupQuota
from .context import NODE, Node
from .cors import cors_middleware
from .device_ws import AUTH_TIMEOUT, AUTH_TIMEOUT_S, HEARTBEAT, Heartbeat, device_socket
from .event_listener import EVENTS_GRACE_S, LISTENER, EventListener
from .events import ChallengeEnded, Event
from .health import HEALTH, RedisHealth
from .http_guard import TIMEOUTS, Timeouts
from .http_head import DEVICE_PATH
from .hub import Hub
from .limits import LIMITER, Limiter, Limits, limit_middleware
from .models import ChallengeRecord

# With the app, not on the first request: the document describes the code this process
# runs, not what an upgrade in place has put on disk since (broker/openapi.py).
from .openapi import openapi_handler
from .problems import Handler, problem_middleware
from .store import ENROLLMENT_TTL_MS, Store, now_ms

log = logging.getLogger(__name__)


def create_app(
    redis: aioredis.Redis,
    *,
    node: str,
    public_url: str | None = None,
    enrollment_ttl_s: int = ENROLLMENT_TTL_MS // 1000,
    auth_timeout_s: float = AUTH_TIMEOUT_S,
    events_grace_s: float = EVENTS_GRACE_S,
    limits: Limits | None = None,
    timeouts: Timeouts | None = None,
    backup_quota: BackupQuota | None = None,
) -> web.Application:
    app = web.Application(
        client_max_size=api.MAX_BODY,
        # The limits first: a refused request costs nothing more (broker/limits.py); only
        # a CORS preflight of the device requests is answered before them (broker/cors.py).
        middlewares=[cors_middleware, limit_middleware(), _count_requests, problem_middleware],
    )
    app[LIMITER] = Limiter(limits or Limits())
    app[TIMEOUTS] = timeouts or Timeouts()
    app[QUOTA] = backup_quota or BackupQuota()
    store = Store(redis, node, enrollment_ttl_ms=enrollment_ttl_s * 1000)
    hub = Hub(subscriber.for_store(redis, store.pipe))

    async def published(event: Event) -> None:  # what this node wrote: counted here once
        metrics.count_event(event)
        await hub.dispatch(event)

    store.on_event = published

    async def expire(record: ChallengeRecord) -> None:
        try:
            if not await store.expire_challenge(record, max(now_ms(), record.expires)):
                # It ended otherwise, and the event did not reach this node (a
                # reconnect): act on the stored outcome, as the catch-up would.
                ended = await store.get_challenge(record.id)
                status = ended.status_at(now_ms()) if ended is not None else Status.EXPIRED
                answer = ended.answer if ended is not None else None
                await hub.dispatch(ChallengeEnded(record.id, record.rp, record.user, status, answer))
        except (aioredis.RedisError, OSError) as exc:  # the next reader expires it instead
            metrics.REDIS_ERRORS_EXPIRY.inc()
            if not redis_refusals.reported(exc, f"expiring challenge {record.id}"):
                log.warning("could not expire challenge %s: %s", record.id, exc)
            hub.forget_challenge(record.id)

    app[NODE] = Node(store=store, hub=hub, name=node, public_url=public_url, expire=expire)
    app[AUTH_TIMEOUT] = auth_timeout_s
    app[HEARTBEAT] = Heartbeat()  # one timer pings every device socket
    api.add_routes(app)
    api_stream.add_routes(app)  # POST /v1/challenges, plain or streamed
    backups.add_routes(app)  # device requests signed by device keys (no API key)
    recovery.add_routes(app)
    app.router.add_get(DEVICE_PATH, device_socket)
    app.router.add_get("/v1/openapi.json", openapi_handler)
    app[LISTENER] = EventListener(store, hub, grace_s=events_grace_s)
    app[HEALTH] = RedisHealth(redis, keys.HEALTH.format(node=node))
    app.on_cleanup.append(lambda app: app[HEALTH].close())
    app.on_response_prepare.append(_broker_date)  # aiohttp would date replies by this host
    app.cleanup_ctx.append(_shared_clock(redis))  # before serving: one time for every node
    app.cleanup_ctx.append(_event_listener)
    app.on_cleanup.append(lambda _app: _close_store(store))
    app.on_shutdown.append(_close_devices)
    return app


async def _broker_date(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Date"] = clock.http_date().decode()


def _shared_clock(redis: aioredis.Redis) -> Callable[[web.Application], AsyncIterator[None]]:
    async def follow(_app: web.Application) -> AsyncIterator[None]:
        async with clock.following(redis):
            yield

    return follow


async def _event_listener(app: web.Application) -> AsyncIterator[None]:
    """Subscribed to the shared event channel before serving, until shutdown."""
    await app[LISTENER].start()
    yield
    await app[LISTENER].stop()


async def _close_store(store: Store) -> None:
    store.close()


async def _close_devices(app: web.Application) -> None:
    # Every device is told "going away" (see going_away); it reconnects, to another
    # node or to this one when it is back. Waiting long-polls answer at once.
    node = app[NODE]
    for device in list(node.hub.connections):
        device.going_away()
    node.hub.release_waiters()


@web.middleware
async def _count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == DEVICE_PATH:
        return await handler(request)
    inflight = request.app[NODE].inflight
    inflight.enter()
    try:
        return await handler(request)
    finally:
        inflight.leave()


async def stop_serving(runner: web.AppRunner, timeout: float) -> bool:
    """An orderly stop, short of aiohttp's full cleanup, for a process that exits next.

    No new connections; every device told "going away"; waiting long-polls answered
    with the challenge's current state (the RP asks again, on another node); requests
    in flight finished, up to `timeout` (False if some were not). aiohttp's cleanup
    would then walk every connection, one task each: 3.7 s at 18,000 devices, which
    the process exiting does in the kernel. State is all in Redis already."""
    for site in list(runner.sites):
        await site.stop()
    await runner.shutdown()  # the app's on_shutdown: _close_devices
    drained = await runner.app[NODE].inflight.drained(timeout)
    await runner.app.cleanup()  # the event listener and Redis connections, before Redis stops
    return drained
