"""One node's ear on the event channels: never deaf for long, never fooled.

Every node listens on the shard channels of the users it serves now (broker/
subscriber.py; which ones, the hub and the API say) and hands what other nodes did to
its hub (broker/hub.py). Three things make that robust (DESIGN invariant 10, issue 11):

- A message that is not a well-formed event (events.decode is strict) or that the
  hub cannot act on is logged as a warning, counted, and skipped. One bad message
  once ended the listener of every node, silently.
- Pub/sub is fire-and-forget: what is published while this node is not subscribed
  (Redis restarting, a failover, a network blip) is gone. So after every
  resubscription (of every channel held) the node brings its own connections up to date from the state in
  Redis (`catch_up`): pending challenges and open recovery questions of the users
  with devices here are delivered if new, prompts that ended meanwhile are
  cancelled, credentials revoked or confirmed meanwhile are acted on, and waiting
  long-polls whose challenge ended, or whose enrollment completed, was cancelled or
  had a device refused, are answered. Subscribing
  first and reading second leaves no gap: anything later arrives as an event, and
  the hub and the connections ignore what they already have.
- /healthz reports the listener: down for longer than a grace period, the node
  answers 503 (a load balancer then stops sending it RPs and devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from protocol.challenge import Status

from . import events, keys, metrics, notices
from .bounds import EVENTS_GRACE_S
from .hub import Device, Hub
from .models import Credential
from .store import Store, now_ms
from .subscriber import Refused

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
_BATCH = 500  # users or credentials read per round trip during a catch-up
# Errors that are the configuration speaking (a password, an ACL), not a blip.
_REFUSALS = (Refused, AuthenticationError, NoPermissionError)


class EventChannelError(Exception):
    """The node could not subscribe before serving: it must not serve, since no event
    of another node would reach it (serve says why and exits 2)."""


class EventListener:
    def __init__(self, store: Store, hub: Hub, *, grace_s: float = EVENTS_GRACE_S) -> None:
        self.store = store
        self.hub = hub
        self.grace_s = grace_s
        self.subscribed = False
        self.down_since: float | None = time.monotonic()  # not subscribed yet
        self.bad_events = 0  # malformed or unusable messages skipped
        self.subscriptions = 0
        self.catch_ups = 0  # completed after a resubscription
        self._task: asyncio.Task[None] | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._failure = ""  # why the last subscription attempt failed
        self._refused = False  # Redis refused the first one: start() gives up at once

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Subscribe before the node serves (so no event of its first moments is lost)."""
        self._task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise EventChannelError(
                f"cannot subscribe to the event channel in Redis within {timeout:g} s: "
                f"{self._failure or 'no answer from Redis'}"
            ) from None
        if self._refused:
            await self.stop()
            raise EventChannelError(f"cannot subscribe to the event channel in Redis: {self._failure}")

    async def stop(self) -> None:
        for task in (self._catch_up, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, what /healthz shows): unhealthy when unsubscribed for longer than
        the grace period, or when the listener task has ended (it never should)."""
        down_for = 0.0 if self.down_since is None else time.monotonic() - self.down_since
        ended = self._task is not None and self._task.done()
        info = {
            "subscribed": self.subscribed and not ended,
            "down_for_s": round(down_for, 1),
            "malformed_skipped": self.bad_events,
            "resubscriptions": max(0, self.subscriptions - 1),
            "catch_ups": self.catch_ups,
            # what routing costs this node: messages received, channels listened on
            "events_received": self.hub.channels.received,
            "channels": self.hub.channels.channels(),
            # RP long-polls waiting here for an event (a challenge's end, an enrollment)
            "long_polls": sum(map(len, self.hub.result_waiters.values()))
            + sum(map(len, self.hub.enrollment_waiters.values())),
        }
        return (not ended and down_for <= self.grace_s), info

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with contextlib.aclosing(self.hub.channels.messages(self._subscribed)) as messages:
                    async for data in messages:
                        delay = 0.1
                        await self._handle(data)
                reason = "the subscription ended"
            except (RedisError, OSError) as exc:
                metrics.REDIS_ERRORS_EVENTS.inc()
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, _REFUSALS) and not self.subscriptions:
                    # Never subscribed yet, so this is how Redis is set up (the start
                    # check passed through redis-py, which, unlike this connection,
                    # takes a password that a Redis without one refuses).
                    self._failure, self._refused = reason, True
                    self._ready.set()
                    return
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.debug("event listener failure", exc_info=True)
            self._failure = reason
            self._lost()
            log.warning("event channel lost (%s); resubscribing in %.1fs", reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _subscribed(self) -> None:
        self.subscribed = True
        self.down_since = None
        self.subscriptions += 1
        self._ready.set()
        if self.subscriptions > 1:
            # Everything published while unsubscribed was lost: read the state instead.
            if self._catch_up is not None:
                self._catch_up.cancel()
            self._catch_up = asyncio.create_task(self._catch_up_until_done(self.subscriptions))

    def _lost(self) -> None:
        self.subscribed = False
        if self.down_since is None:
            self.down_since = time.monotonic()
        # The waiting long-polls (and streamed creates) can no longer hear their event:
        # they answer now with the state read from Redis (pending: the RP asks again),
        # or 503 when Redis cannot be read either, which a load balancer sends on to
        # another node. Held until their `wait` ran out, they cost RPs a timeout.
        self.hub.release_waiters()

    async def _handle(self, data: bytes) -> None:
        try:
            if events.origin(data) == self.store.node:
                return  # our own events were handled when published
            _, event = events.decode(data)
        except Exception as exc:  # noqa: BLE001 - anything on the channel may be garbage
            self._skip(data, exc)
            return
        if type(event) is events.ChallengeCreated:
            metrics.event_lag(event.record.created)
        try:
            await self.hub.dispatch(event)
        except Exception as exc:
            log.debug("dispatching %r failed", event, exc_info=True)
            self._skip(data, exc)

    def _skip(self, data: bytes, exc: BaseException) -> None:
        self.bad_events += 1
        log.warning(
            "skipped a malformed event (%d bytes, %d skipped so far): %s: %.200s",
            len(data),
            self.bad_events,
            type(exc).__name__,
            exc,
        )

    # -- catching up after a resubscription ---------------------------------------

    async def _catch_up_until_done(self, generation: int) -> None:
        delay = 0.1
        while self.subscribed and self.subscriptions == generation:
            try:
                await catch_up(self.store, self.hub)
            except (RedisError, OSError) as exc:
                log.warning("catching up after resubscribing failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self.catch_ups += 1
            log.info("caught up after resubscribing to the event channel")
            return


def _batches(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


async def catch_up(store: Store, hub: Hub) -> None:
    """Bring this node's devices and long-polls up to date with the state in Redis, as
    if every event it missed had arrived (each step is idempotent)."""
    await _credentials(store, hub)
    await _challenges(store, hub)
    await _notices(store, hub)
    await _waiters(store, hub)


async def _credentials(store: Store, hub: Hub) -> None:
    """Revoked or confirmed meanwhile: as events.CredentialRevoked / CredentialConfirmed."""
    cids = sorted(hub.by_cid)
    for batch in _batches(cids):
        async with store.redis.pipeline(transaction=False) as p:
            for cid in batch:
                p.hmget(keys.credential(cid), "status", "revoked", "unconfirmed")
            rows = await p.execute()
        for cid, (status, reason, unconfirmed) in zip(batch, rows, strict=True):
            devices = list(hub.by_cid.get(cid, ()))
            cred = next((d.credentials[cid] for d in devices if cid in d.credentials), None)
            if cred is None:
                continue
            if status != b"active":
                why = (reason or b"removed_by_rp").decode()
                await hub.dispatch(events.CredentialRevoked(cid, cred.rp, cred.user, why))
            elif unconfirmed != b"1" and not cred.confirmed:
                await hub.dispatch(events.CredentialConfirmed(cid))


async def _challenges(store: Store, hub: Hub) -> None:
    users = sorted(hub.by_user)
    now = now_ms()
    pending: dict[str, Any] = {}
    for batch in _batches(users):
        for record in await store.pending_challenges(set(batch), now):
            pending[record.id] = record
    for record in pending.values():  # oldest first: as a reconnecting device gets them
        for device in list(hub.by_user.get((record.rp, record.user), ())):
            device.deliver(record)
    # Prompts a device holds that are no longer pending: they ended while we were deaf.
    held = {ch for devices in hub.by_user.values() for d in devices for ch in d.delivered}
    await _ended(store, hub, sorted(held - pending.keys()))


async def _ended(store: Store, hub: Hub, chs: list[str]) -> None:
    """For each challenge that ended (or is gone), the ChallengeEnded event it would
    have had: devices drop the prompt, long-polls answer, timers stop."""
    now = now_ms()
    for ch in chs:
        record = await store.get_challenge(ch)
        if record is None:
            holder = next((d.delivered[ch] for d in _devices(hub) if ch in d.delivered), None)
            if holder is not None:  # removed by its retention time: it expired long ago
                await hub.dispatch(events.ChallengeEnded(ch, holder.rp, holder.user, Status.EXPIRED, None))
            continue
        status = record.status_at(now)
        if status is not Status.PENDING:
            await hub.dispatch(events.ChallengeEnded(ch, record.rp, record.user, status, record.answer))


async def _notices(store: Store, hub: Hub) -> None:
    """Open "was this you?" questions: sent if new; closed ones dropped with an outcome."""
    devices = [d for d in _devices(hub) if d.credentials]
    cids = sorted({cid for d in devices for cid in d.credentials})
    fresh: dict[str, Credential] = {}
    for batch in _batches(cids):
        fresh.update(await store.get_credentials(batch))
    active = [c for c in fresh.values() if c.active]
    open_now = {n.id: n for n in await notices.open_notices(store, active, now_ms())}
    for notice in open_now.values():
        for device in list(hub.by_cid.get(notice.old_cid, ())):
            device.deliver_notice(notice)
    closed = [(d, n) for d in devices for n in list(d.notices.values()) if n.id not in open_now]
    if not closed:
        return
    new_creds = await store.get_credentials(sorted({n.new_cid for _, n in closed}))
    for _device, notice in closed:
        new = new_creds.get(notice.new_cid)
        if new is not None and new.active:
            outcome = "confirmed"
        else:
            reason = await store.redis.hget(keys.credential(notice.new_cid), "revoked")
            outcome = "disowned" if reason == b"disowned" else "withdrawn"
        await hub.dispatch(events.NoticeAnswered(notice.id, notice.old_cid, outcome))


async def _waiters(store: Store, hub: Hub) -> None:
    """Long-polls waiting here for a challenge that ended, or for an enrollment that
    completed, was cancelled or has a device refused at the cap; and challenges created
    here that ended (their channel holds are released).

    A refusal leaves its enrollment pending, so the state does not say whether it came
    before or after a waiting long-poll read it: every long-poll of an enrollment with a
    refusal answers. One that had read it already answers early with what it had read,
    which a long-poll may always do (the SDK asks again for a refusal it knows)."""
    await _ended(store, hub, sorted(hub.result_waiters.keys() | hub.holding.keys()))
    for eid in sorted(hub.enrollment_waiters):
        h = await store.redis.hgetall(keys.enrollment(eid))
        rp = h.get(b"rp", b"").decode()
        if h.get(b"status") == b"completed" and h.get(b"cid"):
            await hub.dispatch(events.EnrollmentCompleted(eid, rp, h[b"cid"].decode()))
        elif h.get(b"status") == b"cancelled":
            await hub.dispatch(events.EnrollmentCancelled(eid, rp))
        elif h.get(b"refused"):
            await hub.dispatch(events.EnrollmentRefused(eid, rp))


def _devices(hub: Hub) -> set[Device]:
    return {d for devices in hub.by_user.values() for d in devices}


LISTENER = web.AppKey("event_listener", EventListener)
