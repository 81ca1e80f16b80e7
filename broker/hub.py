"""This node's live state: device connections, waiting RP requests, expiry timers.

Events (from this node's own writes, or from other nodes over pub/sub) come in
through `dispatch`; the hub turns them into frames for the local devices and
results for the local long-polls. Nothing here touches Redis.

The hub also says which users' event channels this node listens on (broker/
subscriber.py, docs/scaling.md "Event routing"): a user's channel is held while a
device connection here has one of the user's credentials, and while a challenge
created here is live; the API holds one while a long-poll waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

from protocol.challenge import Status
from protocol.frames import Cancel, CancelReason, Frame, NoticeOutcome, RecoveryResult, Revoked

from . import keys
from .clock import now_ms
from .events import (
    ChallengeCreated,
    ChallengeEnded,
    ChallengesEnded,
    CredentialConfirmed,
    CredentialRevoked,
    EnrollmentCancelled,
    EnrollmentCompleted,
    EnrollmentRefused,
    Event,
    NoticeAnswered,
    NoticeCreated,
)
from .models import ChallengeRecord, Credential, Notice
from .subscriber import Subscriber
from .tasks import spawn

log = logging.getLogger(__name__)
UserKey = tuple[str, str]  # (rp id, user)
# What answers an RP's long-poll on an enrollment (each leaves it to read the state again).
EnrollmentEvent = EnrollmentCompleted | EnrollmentCancelled | EnrollmentRefused
# What a device is told when a prompt it holds ends without its own answer.
_CANCEL_REASONS = {
    Status.EXPIRED: CancelReason.EXPIRED,
    Status.CANCELLED: CancelReason.CANCELLED,
    Status.SUPERSEDED: CancelReason.SUPERSEDED,
    Status.WITHDRAWN: CancelReason.WITHDRAWN,
}


class Device(Protocol):
    """What the hub needs of a device connection (broker/device_ws.py)."""

    credentials: dict[str, Credential]
    delivered: dict[str, ChallengeRecord]
    revoking: dict[str, int]
    notices: dict[str, Notice]  # recovery notices sent on this connection, not yet closed
    answering: dict[str, int]  # notice id -> rid of this connection's recovery_answer

    def deliver(self, record: ChallengeRecord) -> None: ...
    def deliver_notice(self, notice: Notice) -> None: ...
    async def send(self, frame: Frame) -> None: ...
    def drop_credential(self, cid: str) -> None: ...
    def going_away(self) -> None: ...


class Hub:
    def __init__(self, channels: Subscriber) -> None:
        self.channels = channels
        self.by_user: dict[UserKey, set[Device]] = defaultdict(set)
        self.by_cid: dict[str, set[Device]] = defaultdict(set)
        # Every open device socket, authenticated or not: a stopping node tells them all.
        self.sockets: set[Device] = set()
        self.result_waiters: dict[str, set[asyncio.Future[ChallengeEnded]]] = defaultdict(set)
        self.enrollment_waiters: dict[str, set[asyncio.Future[EnrollmentEvent]]] = defaultdict(set)
        self.expiry_timers: dict[str, asyncio.TimerHandle] = {}
        # Challenges created on this node that have not ended: the RP's long-poll
        # (usually on this node too) reads them here instead of from Redis.
        self.live: dict[str, ChallengeRecord] = {}
        # Challenges created here that have not ended: the user channel each holds.
        self.holding: dict[str, str] = {}
        # Told when a credential gets its first or loses its last connection on this
        # node (the Web Push extension records presence with it: broker/webpush.py).
        self.on_presence: Callable[[list[str], bool], None] | None = None

    # -- connections -------------------------------------------------------

    def connect(self, device: Device) -> None:
        self.sockets.add(device)

    def attach(self, device: Device, cred: Credential) -> str:
        """Route `cred`'s user's events to `device`; returns the user's channel (the
        caller waits for it with `channels.ready` before reading pending state)."""
        first = cred.id not in self.by_cid
        self.by_cid[cred.id].add(device)
        user = (cred.rp, cred.user)
        channel = keys.user_channel(cred.rp, cred.user)
        if user not in self.by_user:
            self.channels.hold(channel)
        self.by_user[user].add(device)
        if first and self.on_presence is not None:
            self.on_presence([cred.id], True)
        return channel

    def _leave_user(self, user: UserKey, device: Device) -> None:
        devices = self.by_user.get(user)
        if devices is not None and device in devices:
            devices.discard(device)
            if not devices:
                del self.by_user[user]
                self.channels.release(keys.user_channel(*user))

    def detach_credential(self, device: Device, cred: Credential) -> None:
        _discard(self.by_cid, cred.id, device)
        if not any(c.rp == cred.rp and c.user == cred.user for c in device.credentials.values()):
            self._leave_user((cred.rp, cred.user), device)
        if cred.id not in self.by_cid and self.on_presence is not None:
            self.on_presence([cred.id], False)

    def detach(self, device: Device) -> None:
        self.sockets.discard(device)
        gone = []
        for cred in list(device.credentials.values()):
            _discard(self.by_cid, cred.id, device)
            self._leave_user((cred.rp, cred.user), device)
            if cred.id not in self.by_cid:
                gone.append(cred.id)
        if gone and self.on_presence is not None:
            self.on_presence(gone, False)

    @property
    def connections(self) -> set[Device]:
        return set(self.sockets)

    # -- waiting RP requests -----------------------------------------------

    def wait_result(self, ch: str) -> asyncio.Future[ChallengeEnded]:
        fut: asyncio.Future[ChallengeEnded] = asyncio.get_running_loop().create_future()
        self.result_waiters[ch].add(fut)
        return fut

    def wait_enrollment(self, eid: str) -> asyncio.Future[EnrollmentEvent]:
        fut: asyncio.Future[EnrollmentEvent] = asyncio.get_running_loop().create_future()
        self.enrollment_waiters[eid].add(fut)
        return fut

    def forget_waiter(self, key: str, fut: asyncio.Future[Any]) -> None:
        _discard(self.result_waiters, key, fut)  # type: ignore[arg-type]
        _discard(self.enrollment_waiters, key, fut)  # type: ignore[arg-type]

    def release_waiters(self) -> None:
        """Shutdown, or the event channel lost: every waiting long-poll stops waiting now
        and answers with what it has, as on its own timeout, instead of hanging on a node
        that is going away or can no longer hear how its challenge ends."""
        for waiters in (self.result_waiters, self.enrollment_waiters):
            for futs in waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(TimeoutError())

    def listening(self, rp_id: str, user: str) -> int | None:
        """The epoch of this node's confirmed subscription to the user's channel (None:
        none now). Read before a challenge is written, for `schedule_expiry`."""
        return self.channels.epoch(keys.user_channel(rp_id, user))

    def schedule_expiry(
        self,
        record: ChallengeRecord,
        at_ms: int,
        expire: Callable[[ChallengeRecord], Coroutine[Any, Any, None]],
        listening: int | None,
    ) -> None:
        """Ask `expire` to end the challenge at its expiry, unless it ends first, and
        listen on its user's channel until it ends (subscribed after the write: this
        node does not need its own ChallengeCreated back). `listening`: `listening()`
        before the write; if the same subscription still holds, none of the
        challenge's events can have passed this node by, and the record is kept in
        `live` for the long-poll to read without asking Redis."""
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at_ms - now_ms()) / 1000)  # the broker clock (broker/clock.py)
        self.expiry_timers[record.id] = loop.call_later(delay, _expire_now, expire, record)
        channel = keys.user_channel(record.rp, record.user)
        self.channels.hold(channel)
        self.holding[record.id] = channel
        if listening is not None and self.channels.epoch(channel) == listening:
            self.live[record.id] = record

    # -- events ------------------------------------------------------------

    def forget_challenge(self, ch: str) -> None:
        """Stop tracking a challenge created here: its timer, its record and its channel.
        When it ended (below), or without an event (its expiry could not be written: the
        long-polls and devices ask Redis or get it from the catch-up)."""
        timer = self.expiry_timers.pop(ch, None)
        if timer is not None:
            timer.cancel()
        self.live.pop(ch, None)
        channel = self.holding.pop(ch, None)
        if channel is not None:
            self.channels.release(channel)

    async def dispatch(self, event: Event) -> None:
        match event:
            case ChallengeCreated(record):
                for device in list(self.by_user.get((record.rp, record.user), ())):
                    device.deliver(record)
            case ChallengeEnded():
                await self._challenge_ended(event)
            case ChallengesEnded(rp, user, status, chs):
                for ch in chs:
                    await self._challenge_ended(ChallengeEnded(ch, rp, user, status, None))
            case CredentialConfirmed(cid):
                for device in list(self.by_cid.get(cid, ())):
                    cred = device.credentials.get(cid)
                    if cred is not None:
                        device.credentials[cid] = replace(cred, confirmed=True)
            case EnrollmentCompleted(eid, _, _) | EnrollmentCancelled(eid, _) | EnrollmentRefused(eid, _):
                for fut in self.enrollment_waiters.pop(eid, ()):
                    if not fut.done():
                        fut.set_result(event)
            case CredentialRevoked(cid, rp, user, reason):
                for device in list(self.by_cid.get(cid, ())):
                    rid = device.revoking.pop(cid, None)
                    device.drop_credential(cid)
                    await _send(device, Revoked(cid=cid, reason=reason, rid=rid))
                    if not any(c.rp == rp and c.user == user for c in device.credentials.values()):
                        # Nothing on this connection may answer that user's requests now.
                        for ch, record in list(device.delivered.items()):
                            if (record.rp, record.user) == (rp, user):
                                del device.delivered[ch]
                                await _send(device, Cancel(ch=ch, reason=CancelReason.REVOKED))
                # A "was this you?" about a credential that is gone needs no answer
                # (a disowned one was answered just before: its notice is closed).
                for device in list(self.by_user.get((rp, user), ())):
                    for notice in [n for n in device.notices.values() if n.new_cid == cid]:
                        del device.notices[notice.id]
                        result = RecoveryResult(notice.id, notice.old_cid, NoticeOutcome.WITHDRAWN.value)
                        await _send(device, result)
            case NoticeCreated(notice):
                for device in list(self.by_cid.get(notice.old_cid, ())):
                    device.deliver_notice(notice)
            case NoticeAnswered(notice_id, old_cid, outcome):
                for device in list(self.by_cid.get(old_cid, ())):
                    shown = device.notices.pop(notice_id, None)
                    rid = device.answering.pop(notice_id, None)
                    if shown is not None or rid is not None:
                        await _send(device, RecoveryResult(notice_id, old_cid, outcome, rid))

    async def _challenge_ended(self, event: ChallengeEnded) -> None:
        ch, rp, user = event.ch, event.rp, event.user
        self.forget_challenge(ch)
        for fut in self.result_waiters.pop(ch, ()):
            if not fut.done():
                fut.set_result(event)
        # Every device still holding the prompt drops it now (DESIGN flow 2: never
        # asks about an ended one); the one that answered took it off already.
        reason = _CANCEL_REASONS.get(event.status, CancelReason.ANSWERED)
        answered_by = event.answer.cid if reason is CancelReason.ANSWERED and event.answer else None
        for device in list(self.by_user.get((rp, user), ())):
            if device.delivered.pop(ch, None) is not None:
                # `by` says "answered on this device, through another connection": only
                # to a connection that authenticated that credential itself, so no
                # device learns the credential ids of the user's other devices.
                by = answered_by if answered_by in device.credentials else None
                await _send(device, Cancel(ch=ch, reason=reason, by=by))


async def _send(device: Device, frame: Frame) -> None:
    try:
        await device.send(frame)
    except (ConnectionError, RuntimeError) as exc:  # closing socket: its handler cleans up
        log.debug("send to closing device failed: %s", exc)


def _expire_now(fn: Callable[[ChallengeRecord], Coroutine[Any, Any, None]], record: ChallengeRecord) -> None:
    spawn(fn(record))


def _discard(index: dict[Any, set[Any]], key: Any, item: Any) -> None:
    items = index.get(key)
    if items is not None:
        items.discard(item)
        if not items:
            del index[key]
