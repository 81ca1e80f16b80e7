"""Web Push wake-ups for the web authenticator (docs/protocol.md, appendix A).

A device that cannot keep its WebSocket open (a phone's browser in the background)
registers a push subscription for its credentials with a `push_subscribe` frame. When
a challenge is created for a credential that has a subscription and no live
connection on any broker node, the broker sends it one Web Push message (RFC 8030,
encrypted as RFC 8291 says, signed with the broker's VAPID key, RFC 8292) whose
payload is only WAKE_PAYLOAD: no number (the device never learns it anyway), no
context, no challenge id, nothing a push service could read about the sign-in. The
app then opens and gets the request over its WebSocket as usual.

Presence: each node records in Redis, per credential, that it holds a live
connection (a hash field per node with an expiry it refreshes), so any node can tell
whether a credential is connected anywhere; a crashed node's entries lapse.

The broker POSTs to the subscription's endpoint, a URL the device chose: only push
services on the operator's list are accepted (no request to an arbitrary host).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from protocol import b64
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import PushSubscribe, PushSubscribed

from . import keys, metrics
from .clock import now_ms
from .context import NODE
from .models import ChallengeRecord
from .tasks import spawn

if TYPE_CHECKING:
    from py_vapid import Vapid02

    from .device_ws import DeviceConnection

log = logging.getLogger(__name__)

WAKE_PAYLOAD = b'{"t":"waiting","text":"A sign-in request is waiting"}'
# The push services of the browsers in use (2026): Chrome (FCM), Firefox (autopush),
# Safari (Apple), Edge (WNS). `serve --push-service` replaces the list.
DEFAULT_SERVICES = (
    "https://fcm.googleapis.com",
    "https://updates.push.services.mozilla.com",
    "https://web.push.apple.com",
    "https://*.notify.windows.com",
)
LIVE_TTL_MS = 60_000  # a node refreshes its presence entries every third of this
SEND_TIMEOUT_S = 10.0


_sub_key = keys.push_subscription
_live_key = keys.push_presence


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: bytes  # the browser's P-256 public key, uncompressed (65 bytes)
    auth: bytes  # the 16-byte authentication secret

    def info(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64.encode(self.p256dh), "auth": b64.encode(self.auth)},
        }


# A host the list is compared with: ASCII letters, digits, hyphens and dots only (a DNS
# name or an IPv4 address). urlsplit keeps anything else in the host, and the resolver
# read it otherwise: "127.0.0.1\x00.notify.windows.com" ended in a listed "*." domain,
# and getaddrinfo, stopping at the NUL, connected the broker to 127.0.0.1:443.
_PLAIN_HOST = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")


def service_allowed(endpoint: str, services: Iterable[str]) -> bool:
    """Whether `endpoint` is on a listed push service (scheme, host and port equal;
    `*.` matches any subdomain)."""
    try:
        url = urlsplit(endpoint)
        port = url.port
    except ValueError:
        return False
    if url.username or url.password or not url.hostname:
        return False
    if not _PLAIN_HOST.fullmatch(url.hostname.lower()):
        return False
    for service in services:
        s = urlsplit(service)
        if s.scheme != url.scheme or (s.port or None) != (port or None):
            continue
        pattern = (s.hostname or "").lower()
        host = url.hostname.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def load_or_create_key(path: Path) -> Vapid02:
    """The broker's VAPID key (a P-256 key in PEM), made at first use (mode 0600).

    The Web Push libraries are imported here, by a broker started with --push-key: they
    pull in requests and cryptography, about 80 ms of every start otherwise (a restart
    that 18,000 devices wait for; docs/performance.md, section 3)."""
    import pywebpush  # noqa: F401 - now, not at the first push (a stall of the event loop)
    from py_vapid import Vapid02

    if not path.exists():
        key = Vapid02()
        key.generate_keys()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_pem())
    # Read here, not by Vapid02.from_file: that logs at ERROR and makes a key in place of a
    # file it cannot open. ValueError for what is not a P-256 private key in PEM.
    key = Vapid02.from_pem(path.read_bytes())
    if getattr(getattr(key.private_key, "curve", None), "name", None) != "secp256r1":
        raise ValueError("the key is not on the P-256 curve")
    return key


@dataclass
class WebPush:
    """What `serve --push-key` sets up; None on a broker without push."""

    key: Vapid02
    subject: str  # "mailto:..." or "https://...": whom a push service may contact
    services: tuple[str, ...] = DEFAULT_SERVICES
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    # -- subscriptions -----------------------------------------------------

    async def subscribe(self, redis: aioredis.Redis, cids: Iterable[str], sub: Subscription | None) -> None:
        # Not a transaction: the credentials' keys may live in different cluster slots.
        async with redis.pipeline(transaction=False) as p:
            for cid in cids:
                if sub is None:
                    p.delete(_sub_key(cid))
                else:
                    p.set(_sub_key(cid), json.dumps(sub.info()))
            await p.execute()

    # -- presence ----------------------------------------------------------

    async def mark(self, redis: aioredis.Redis, node: str, cids: Iterable[str], live: bool) -> None:
        async with redis.pipeline(transaction=False) as p:
            for cid in cids:
                if live:
                    p.hset(_live_key(cid), node, now_ms() + LIVE_TTL_MS)
                    p.pexpire(_live_key(cid), LIVE_TTL_MS)
                else:
                    p.hdel(_live_key(cid), node)
            await p.execute()

    async def presence(self, redis: aioredis.Redis, cids: list[str]) -> tuple[list[str], list[str]]:
        """Of `cids`, those with a subscription: (no live connection on any node, connected)."""
        async with redis.pipeline(transaction=False) as p:
            for cid in cids:
                p.exists(_sub_key(cid))
                p.hvals(_live_key(cid))
            found = await p.execute()
        now = now_ms()
        offline: list[str] = []
        connected: list[str] = []
        for cid, has_sub, live in zip(cids, found[::2], found[1::2], strict=True):
            if has_sub:
                (connected if any(int(v) > now for v in live) else offline).append(cid)
        return offline, connected

    # -- sending -----------------------------------------------------------

    async def _wake(self, redis: aioredis.Redis, cids: list[str], ttl_s: int) -> None:
        try:
            offline, connected = await self.presence(redis, cids)
            # Counted once decided, so an operator (and a test) can see that a connected
            # device was not pushed, not only that a push was sent.
            metrics.WEBPUSH_CONNECTED.inc(len(connected))
            for cid in offline:
                raw = await redis.get(_sub_key(cid))
                if raw is not None:
                    await self._send(redis, cid, json.loads(raw), ttl_s)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("web push: store unavailable: %s", exc)

    async def _send(self, redis: aioredis.Redis, cid: str, info: dict[str, object], ttl_s: int) -> None:
        from pywebpush import WebPushException, webpush_async  # loaded with the key

        if not service_allowed(str(info.get("endpoint")), self.services):
            return  # refused when stored; the list may have changed since
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S))
        try:
            await webpush_async(
                info,
                data=WAKE_PAYLOAD,
                vapid_private_key=self.key,
                vapid_claims={"sub": self.subject},
                ttl=ttl_s,
                headers={"Urgency": "high"},
                aiohttp_session=self._session,
            )
        except WebPushException as exc:
            status = exc.response.status if exc.response is not None else None
            if status in (404, 410):  # the subscription is gone (RFC 8030, section 7.3)
                metrics.WEBPUSH_GONE.inc()
                await redis.delete(_sub_key(cid))
            else:
                metrics.WEBPUSH_FAILED.inc()
            log.warning("web push to credential %s failed: %s", cid, status or exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            metrics.WEBPUSH_FAILED.inc()
            log.warning("web push to credential %s failed: %s", cid, exc)
        except (ValueError, TypeError) as exc:
            # The device's subscription cannot be used (p256dh is 65 bytes but no P-256
            # point, say): a failed push, not a task dying with a traceback at ERROR on
            # every sign-in of the user, as it did.
            metrics.WEBPUSH_FAILED.inc()
            log.warning("web push to credential %s failed: unusable subscription: %s", cid, exc)
        else:
            metrics.WEBPUSH_SENT.inc()

    async def targets(self, redis: aioredis.Redis, record: ChallengeRecord) -> list[str]:
        """The credentials a challenge goes to: its targets, or the user's confirmed ones."""
        if record.targets:
            return list(record.targets)
        async with redis.pipeline(transaction=False) as p:
            p.hkeys(keys.user_credentials(record.rp, record.user))
            p.smembers(keys.unconfirmed(record.rp, record.user))
            cids, unconfirmed = await p.execute()
        return sorted({c.decode() for c in cids} - {c.decode() for c in unconfirmed})

    def wake_for(self, redis: aioredis.Redis, record: ChallengeRecord) -> None:
        """After a challenge was created: wake its offline subscribed credentials."""

        async def run() -> None:
            try:
                cids = await self.targets(redis, record)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("web push: store unavailable: %s", exc)
                return
            await self._wake(redis, cids, max(1, (record.expires - record.created) // 1000))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()


WEBPUSH = web.AppKey("webpush", WebPush)


def install(app: web.Application, push: WebPush) -> None:
    """Turn the extension on for a broker app (`serve --push-key`): presence kept in the
    store from the hub's connections, renewed every third of its lifetime."""
    app[WEBPUSH] = push
    node = app[NODE]
    redis = node.store.redis

    # Marks are written in the order the hub made them: a connection that replaces another
    # (or re-authenticates) gives "gone" then "live" for the same credential, and two
    # pipelines on two pooled connections could reach Redis the other way round, leaving
    # a connected device recorded as gone (it would get a push instead of its prompt).
    # asyncio.Lock is FIFO, and spawned tasks reach it in the order they were spawned.
    in_order = asyncio.Lock()

    async def mark(cids: list[str], live: bool) -> None:
        async with in_order:
            await _quietly(push.mark(redis, node.name, cids, live))

    def presence(cids: list[str], live: bool) -> None:
        spawn(mark(cids, live))

    node.hub.on_presence = presence

    async def renew(_app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(LIVE_TTL_MS / 3000)
                async with in_order:  # the list read inside: a later "gone" lands after it
                    await _quietly(push.mark(redis, node.name, list(node.hub.by_cid), True))

        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with in_order:
            await _quietly(push.mark(redis, node.name, list(node.hub.by_cid), False))
        await push.close()

    app.cleanup_ctx.append(renew)


async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except (aioredis.RedisError, OSError) as exc:  # presence lapses by itself
        log.warning("web push presence not recorded: %s", exc)


async def on_subscribe(push: WebPush | None, conn: DeviceConnection, frame: PushSubscribe) -> None:
    """The broker's side of `push_subscribe` (docs/protocol.md, appendix A); its shape
    was checked at decode (PushSubscribe.check_shape)."""
    ref = str(frame.rid)
    if push is None:
        raise ProtocolError(ErrorCode.PUSH_UNAVAILABLE, "this broker sends no Web Push", ref=ref)
    for cid in frame.cids:
        conn.session.check_owned(cid, ref=ref)
    sub = None
    if frame.endpoint is not None and frame.p256dh is not None and frame.auth is not None:
        if not service_allowed(frame.endpoint, push.services):
            raise ProtocolError(
                ErrorCode.PUSH_SERVICE_REFUSED, "this broker does not send to that push service", ref=ref
            )
        sub = Subscription(frame.endpoint, frame.p256dh, frame.auth)
    await push.subscribe(conn.store.redis, frame.cids, sub)
    done = frame.cids if sub is not None else ()
    await conn.send(PushSubscribed(rid=frame.rid, key=push.public_key, cids=tuple(done)))
