"""The device WebSocket: a thin asyncio shell around protocol.session.ServerSession."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from protocol import SUBPROTOCOLS
from protocol.challenge import check_answer_number, outcome_for
from protocol.codec import MAX_FRAME_SIZE, encode
from protocol.errors import CLOSE_CODES, ErrorCode, ProtocolError
from protocol.frames import (
    Answer,
    AnswerResult,
    Authenticate,
    Enroll,
    Enrolled,
    Error,
    Frame,
    NoticeDecision,
    Ping,
    Pong,
    PushSubscribe,
    RecoveryAnswer,
    Revoke,
    RevokeReason,
    Welcome,
)
from protocol.session import ServerSession
from protocol.signing import answer_bytes, recovery_answer_bytes, verify

from . import metrics, notices, redis_refusals, webpush, wsframes
from .bounds import AUTH_TIMEOUT_S
from .connections import Slot
from .context import NODE
from .hub import Hub
from .models import Answer as StoredAnswer
from .models import ChallengeRecord, Credential, Notice
from .problems import ApiError
from .ratelimit import TokenBucket
from .store import Store, now_ms
from .tasks import spawn
from .webpush import WEBPUSH, WebPush
from .wsframes import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, HandshakeError

log = logging.getLogger(__name__)

# After the broker closes a socket (protocol error, shutdown), how long it waits for the
# device's close reply before dropping the connection. aiohttp's default is 10 s: on a
# restart, 18,000 devices each owed a reply and the old process lingered for seconds,
# and a device that never replies held its socket that long for nothing.
CLOSE_REPLY_TIMEOUT_S = 1.0
# ... and how many bytes it reads meanwhile, looking for that reply, before it stops
# reading until then: a device that kept flooding after its close (say for its frame
# budget) had every frame of a second's worth decoded and unmasked for nothing. Enough
# for what was in flight when the close went out: a maximal frame and the reply.
CLOSING_READ_LIMIT = 64 * 1024
AUTH_TIMEOUT = web.AppKey("device_auth_timeout", float)
# Frames one connection may send (a token bucket): FRAME_BURST at once, FRAMES_PER_S a
# second sustained; a connection over it is closed (4429 rate_limited). Ordinary use
# is a few frames a minute; a device coming back with a backlog stays far below this.
FRAMES_PER_S = 50.0
FRAME_BURST = 200
# Until a credential is proven on it, a connection's budget is far smaller: a device
# sends one `authenticate` or `enroll` there (a few, if a scanned code was refused).
# Anyone may open such connections (512 per address at once), and each refused `enroll`
# costs a signature check and Redis reads: with the full budget, 100 of them from one
# address kept a broker core busy with 3,900 refused enrollments a second.
UNPROVEN_FRAMES_PER_S = 1.0
UNPROVEN_FRAME_BURST = 20
# Bytes of data messages one connection may send, counted before decoding as frames
# are: the frame budget alone let a 32 KiB frame of 32,000 empty maps (legal, under a
# key the broker ignores) cost 3 ms of decoding each, so one address made a broker core
# busy before authenticating (20 connections a second, 20 such frames each) and one
# credential could keep 800 a second coming. A connection starts with UNPROVEN_BYTES,
# and nothing is added until a credential is proven on it (it lives AUTH_TIMEOUT_S at
# most): an `authenticate` with 64 credentials is 9 KiB, an `enroll` under 1 KiB. Then
# BYTES_PER_S are added, up to BYTE_BURST; what was left of UNPROVEN_BYTES is where it
# starts, so a connection made, proven and dropped again brings no fresh burst (an
# answer is about 300 bytes: 50 a second, the frame rate, fit in BYTES_PER_S).
UNPROVEN_BYTES = 64 * 1024
BYTES_PER_S = 16 * 1024
BYTE_BURST = 256 * 1024
# Connections one credential may be authenticated on at once, per node. Proving a key
# again on another connection is free (the connect rate bounds only how fast), so one
# enrolled key, which any user of an RP can get, held 1,000 sockets of a node in 4 s
# and could hold all of them. One more closes the oldest of the others (4429
# rate_limited): a device that reconnects while the broker still holds its previous,
# dead connection must win. A device with an agent, a terminal UI and a few windows of
# the web app open uses a handful.
MAX_SOCKETS_PER_CREDENTIAL = 16
# aiohttp itself refuses (close 1009) anything larger; up to this size we read the
# message and answer with our own code (4413), which tells clients more.
WS_READ_LIMIT = 4 * MAX_FRAME_SIZE

# Sent to every device socket when the broker stops (docs/protocol.md, 2.3).
_GOING_AWAY = wsframes.close_frame(wsframes.GOING_AWAY, b"broker shutting down")
# Every device socket is pinged once per HEARTBEAT_S, and one that sent nothing at all
# since its previous ping (no pong, no frame) is dropped: a dead peer (a phone gone off
# the network without closing) costs a socket for at most two periods.
HEARTBEAT_S = 30.0
# Messages received but not yet handled, per connection: at INBOX_HIGH messages or
# INBOX_BYTES bytes the socket stops reading (TCP pushes back on the device) until the
# backlog is down to INBOX_LOW messages and half the bytes (aiohttp's queue: 64 KiB).
INBOX_HIGH, INBOX_LOW = 32, 8
INBOX_BYTES = 64 * 1024

_ANSWER_REFUSALS = {
    "expired": (ErrorCode.CHALLENGE_EXPIRED, "challenge expired"),
    "unknown": (ErrorCode.UNKNOWN_CHALLENGE, "no such challenge"),
    "revoked": (ErrorCode.CREDENTIAL_REVOKED, "credential was revoked"),
    # Aimed at another credential, or this one is not confirmed by the service yet (it
    # gets only its setup test): to this credential the request does not exist.
    "not_sent": (ErrorCode.UNKNOWN_CHALLENGE, "no such challenge for this credential"),
}
_NOTICE_REFUSALS = {
    "unknown": (ErrorCode.UNKNOWN_NOTICE, "no such open recovery notice for this credential"),
    "old_revoked": (ErrorCode.CREDENTIAL_REVOKED, "credential was revoked"),
    "new_revoked": (
        ErrorCode.CREDENTIAL_REVOKED,
        "the recovered credential was removed already; there is nothing to answer",
    ),
}


class Heartbeat:
    """Pings for all device sockets from one timer (a wheel of SLOTS slots).

    aiohttp's heartbeat kept two timers per socket and rescheduled one on every
    message; at 18,000 idle devices that is 36,000 timers for nothing. Here a socket
    joins a slot when it opens, one timer visits one slot every HEARTBEAT_S / SLOTS
    seconds, and runs only while there are sockets."""

    SLOTS = 30

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self._slots: list[set[WsSocket]] = [set() for _ in range(self.SLOTS)]
        self._join = 0  # the slot the next socket joins (round robin)
        self._visit = 0  # the slot the next tick visits
        self._timer: asyncio.TimerHandle | None = None

    def add(self, sock: WsSocket) -> int:
        slot = self._join
        self._join = (slot + 1) % self.SLOTS
        self._slots[slot].add(sock)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval / self.SLOTS, self.tick)
        return slot

    def discard(self, sock: WsSocket, slot: int) -> None:
        self._slots[slot].discard(sock)

    def tick(self) -> None:
        """Visit the next slot: each of its sockets is pinged, or dropped if it sent
        nothing since the last ping."""
        self._timer = None
        slot = self._slots[self._visit]
        self._visit = (self._visit + 1) % self.SLOTS
        for sock in list(slot):
            sock.beat()
        if any(self._slots):
            self._timer = asyncio.get_running_loop().call_later(self.interval / self.SLOTS, self.tick)


HEARTBEAT = web.AppKey("device_heartbeat", Heartbeat)


# Where a socket's input goes after a frame error: nowhere (see WsSocket._fail).
_DISCARD = wsframes.Decoder(0)


class WsSocket(asyncio.Protocol):
    """A server WebSocket served from protocol callbacks (broker/wsframes.py says why):
    binary messages to `on_message`, pings answered, the close handshake, write flow
    control. No task and no timer while idle; subclasses add what the socket is for."""

    __slots__ = (
        "_after_close",
        "_closer",
        "_closing",
        "_decoder",
        "_drain",
        "_heartbeat",
        "_pong_due",
        "_silent",
        "_slot",
        "connection_slot",
        "transport",
    )

    def __init__(self, heartbeat: Heartbeat | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self._decoder = wsframes.Decoder(WS_READ_LIMIT)
        self._closing = False  # a close frame went out (or came in): no more messages
        self._after_close = 0  # bytes read since (CLOSING_READ_LIMIT)
        self._closer: asyncio.TimerHandle | None = None  # drops a peer that does not reply to close
        self._drain: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self._heartbeat = heartbeat
        self._slot = 0
        self._silent = False  # pinged, and nothing received since
        self._pong_due: bytes | None = None  # the last ping's payload, while pongs wait (_pong)
        # The HTTP connection's count (broker/connections.py), kept from the upgrade until
        # it closes, and released while a credential proven on the socket is live
        # (DeviceConnection._recount): sockets that prove nothing are held by anyone, so
        # they count against the address and the node as the connection did (the connect
        # rate alone let a few addresses hold every file descriptor of the node for the
        # authentication timeout); so do those whose every credential was revoked.
        self.connection_slot: Slot | None = None

    # -- asyncio.Protocol ----------------------------------------------------

    def opened(self, transport: asyncio.Transport, head: bytes) -> None:
        """The socket is ours (see _Upgrade): the 101 head goes out in one write with
        `greeting()`, one wake-up of the device instead of two."""
        self.transport = transport
        if self._heartbeat is not None:
            self._slot = self._heartbeat.add(self)
        transport.write(head + self.greeting())

    def data_received(self, data: bytes) -> None:
        self._silent = False
        if self._decoder is _DISCARD:
            return
        if self._closing:
            self._after_close += len(data)
            if self._after_close > CLOSING_READ_LIMIT and self.transport is not None:
                # Not read at all any more (nor decoded): not aborted now, which would
                # reset the connection before the device could read why it was closed.
                log.info("reading no more: the device sent over %d bytes after the close", CLOSING_READ_LIMIT)
                self._decoder = _DISCARD
                self.transport.pause_reading()
                return
        try:
            messages = self._decoder.feed(data)
            for opcode, payload in messages:
                if opcode in (OP_PING, OP_PONG) and not self._closing and not self.control_allowed():
                    return
                if opcode == OP_PING:
                    if not self._closing:
                        self._pong(payload)
                elif opcode == OP_CLOSE:
                    self._peer_closed(payload)
                    return
                elif opcode != OP_PONG and not self._closing:
                    self.on_message(opcode, payload)
        except FrameError as exc:
            # The peer broke RFC 6455: say why and end the connection (RFC 6455 7.1.7).
            log.info("closing device connection: %s", exc.reason)
            self._fail(exc.code, exc.reason.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.release_slot()
        if self._closer is not None:
            self._closer.cancel()
        if self._heartbeat is not None:
            self._heartbeat.discard(self, self._slot)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the device socket closed"))
            # Marked retrieved: a sender that waits on it still gets the error, but the
            # buffer may have filled with writes nobody waits on (pongs, a hello), and
            # then asyncio logged "Future exception was never retrieved" at ERROR for
            # each client that stopped reading and left.
            drain.exception()
        self.transport = None
        self._closing = True
        self.on_lost()

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        pong, self._pong_due = self._pong_due, None
        if pong is not None and not self._closing:
            self._pong(pong)
        if drain is not None and not drain.done():
            drain.set_result(None)

    def release_slot(self) -> None:
        """Out of the count of open connections for good (closed)."""
        slot, self.connection_slot = self.connection_slot, None
        if slot is not None:
            slot.release()

    # -- for subclasses --------------------------------------------------------

    def greeting(self) -> bytes:
        """Frames sent right after the handshake."""
        return b""

    def on_message(self, opcode: int, payload: bytes) -> None:
        """A text or binary message (OP_TEXT, OP_BINARY)."""

    def control_allowed(self) -> bool:
        """A ping or pong arrived: False if the peer sends too many (then the subclass
        closed the connection and the rest of this read is dropped)."""
        return True

    def on_lost(self) -> None:
        """The connection ended (after a close handshake, or not). Messages received
        before it are still the subclass's to handle."""

    def on_halt(self) -> None:
        """The broker is closing the socket: messages not handled yet are dropped."""

    async def send_bytes(self, data: bytes) -> None:
        """One binary message; waits while the device reads slower than we write.
        ConnectionResetError once the socket is closing (callers treat it so)."""
        self.send_now(data)
        if self._drain is not None:
            await self._drain

    def send_now(self, data: bytes) -> None:
        """One binary message, written without waiting: for a caller that saw
        `keeps_up` (else send_bytes). ConnectionResetError once the socket is closing."""
        if self._closing:
            raise ConnectionResetError("the device socket is closing")
        self._write(wsframes.frame(OP_BINARY, data))

    @property
    def keeps_up(self) -> bool:
        """Nothing waits in the transport's buffer: a message written now leaves at once."""
        return self._drain is None

    def close(self, code: int, reason: bytes = b"") -> None:
        """Send a close frame; the connection ends at the peer's reply, or after
        CLOSE_REPLY_TIMEOUT_S without one."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        self.on_halt()
        self._write(wsframes.close_frame(code, reason))
        self._closer = asyncio.get_running_loop().call_later(CLOSE_REPLY_TIMEOUT_S, self._abort)

    def going_away(self) -> None:
        """Broker shutdown: a close frame (1001 going away), and no wait for the reply.

        The socket stops reading: handling 18,000 replies kept a restarting broker busy
        for seconds. The TCP connection ends when the process exits, a moment later."""
        transport = self.transport
        if transport is not None and not self._closing and not transport.is_closing():
            self._closing = True
            self.on_halt()
            transport.write(_GOING_AWAY)
            transport.pause_reading()

    def beat(self) -> None:
        """The heartbeat's visit: drop a peer that stayed silent since the last ping."""
        transport = self.transport
        # Closing without a close frame (the device left; its end is reported in a later
        # step of the loop): a ping's write would raise, out of the heartbeat's timer.
        if transport is None or self._closing or transport.is_closing():
            return
        if self._silent:
            log.info("closing device connection: no pong within %gs", HEARTBEAT_S)
            transport.abort()
            return
        self._silent = True
        self._write(wsframes.frame(OP_PING))

    # -- internals -------------------------------------------------------------

    def _pong(self, payload: bytes) -> None:
        """Answer a ping; while the peer has not read what we wrote (the transport's buffer
        is over its limit), only the latest ping, once it has (RFC 6455 5.5.3 allows that).
        A pong for each ping piled up without bound: a client that sent 120 MB of pings and
        read nothing grew the broker by 186 MB in 2 s, before authenticating."""
        if self._drain is not None:
            self._pong_due = payload
            return
        self._write(wsframes.frame(OP_PONG, payload))

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the device socket is closed")
        transport.write(data)

    def _peer_closed(self, payload: bytes) -> None:
        try:
            wsframes.close_code(payload)
        except FrameError as exc:
            self._fail(exc.code, exc.reason.encode())
            return
        if not self._closing:  # the device began it: reply, then end the connection
            self._closing = True
            with contextlib.suppress(ConnectionError):
                self._write(wsframes.close_frame(wsframes.NORMAL))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, code: int, reason: bytes) -> None:
        """Close after a frame we cannot read past: what follows is discarded until the
        peer ends the connection or CLOSE_REPLY_TIMEOUT_S passes. Closing at once, with
        the rest of (say) an oversized message unread, would make the kernel answer
        with a reset, and the peer might never read the close frame and its code."""
        transport = self.transport
        if transport is None:
            return
        if not self._closing and not transport.is_closing():
            transport.write(wsframes.close_frame(code, reason))
        self._closing = True
        self._decoder = _DISCARD
        self.on_halt()
        if self._closer is None:
            self._closer = asyncio.get_running_loop().call_later(CLOSE_REPLY_TIMEOUT_S, self._abort)

    def _abort(self) -> None:
        self._closer = None
        if self.transport is not None:
            self.transport.abort()


class _Upgrade(web.StreamResponse):
    """What the device handler returns: the 101 is written and the socket handed from
    aiohttp's connection handler to `sock`, once aiohttp is done with the request.

    From then on aiohttp neither reads, writes nor closes the socket: its handler
    forgets the transport, tells its server the connection is gone (so an orderly
    shutdown does not wait for it), and its task ends after this response. Bytes the
    client sent after the request head (aiohttp keeps them for the WebSocket reader it
    would have started) go to `sock`. tests/test_broker_device_socket.py covers the path."""

    def __init__(
        self, request: web.Request, sock: WsSocket, head: bytes, refusal: tuple[int, bytes] | None = None
    ) -> None:
        super().__init__(status=101)
        self.force_close()  # aiohttp's handler must not wait for another request on it
        self._sock = sock
        self._head = head
        self._refusal = refusal
        # Taken now, in the handler: aiohttp parses what is left of an upgrade whose
        # handler set no WebSocket reader as the next HTTP request, before prepare().
        # Nothing can arrive in between: the handler's return and prepare() run in one
        # step of the event loop.
        handler: Any = request.protocol
        self._tail = bytes(getattr(handler, "_message_tail", b""))
        handler._message_tail = b""

    async def prepare(self, request: web.BaseRequest) -> Any:
        transport = request.transport
        handler: Any = request.protocol
        if transport is None or transport.is_closing():
            return None  # the client went away before its answer
        tail = self._tail + bytes(getattr(handler, "_message_tail", b""))
        handler._message_tail = b""
        # The connection's count goes with it to the socket, which gives it back once a
        # credential is proven (WsSocket.connection_slot).
        slot = getattr(handler, "connection_slot", None)
        if slot is not None:
            handler.connection_slot = None
            self._sock.connection_slot = slot
        handler.transport = None  # aiohttp must not close or write to the socket now
        handler.connection_lost(None)
        take_over(transport, self._sock, self._head, tail, self._refusal)
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(
    transport: Any, sock: WsSocket, head: bytes, tail: bytes, refusal: tuple[int, bytes] | None = None
) -> None:
    """The socket is `sock`'s from here: the 101 `head` goes out with its greeting, and
    the bytes the client sent after its request (`tail`) are its first input; or, with
    a `refusal`, it is closed with that code and reason at once. From an aiohttp handler
    (_Upgrade) or from the RP lane (broker/rp_lane.py), which both gave up the transport."""
    transport.set_protocol(sock)
    sock.opened(transport, head)
    if refusal is not None:
        sock.close(*refusal)
    elif tail:
        sock.data_received(tail)


_SERIAL = itertools.count()


class DeviceConnection(WsSocket):
    """One device's socket: frames in, in order, handled by a task that exists only
    while there are some; an idle connection is this object, its session and its
    credentials (no task, no timer once authenticated)."""

    __slots__ = (
        "_backlog",
        "_held",
        "_inbox",
        "_inbox_paused",
        "_notice_backlog",
        "_watchdog",
        "_worker",
        "answering",
        "auth_timeout",
        "bytes",
        "credentials",
        "delivered",
        "frames",
        "hub",
        "notices",
        "push",
        "revoking",
        "serial",
        "session",
        "store",
    )

    def __init__(
        self,
        session: ServerSession,
        store: Store,
        hub: Hub,
        *,
        auth_timeout: float = AUTH_TIMEOUT_S,
        push: WebPush | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        super().__init__(heartbeat)
        self.push = push
        self.auth_timeout = auth_timeout
        self.frames = TokenBucket(UNPROVEN_FRAMES_PER_S, UNPROVEN_FRAME_BURST)  # until proven
        self.bytes = TokenBucket(0.0, UNPROVEN_BYTES)  # until proven: a fixed allowance
        self.session = session
        self.store = store
        self.hub = hub
        self.credentials: dict[str, Credential] = {}
        self.delivered: dict[str, ChallengeRecord] = {}
        self.revoking: dict[str, int] = {}
        self.notices: dict[str, Notice] = {}
        self.answering: dict[str, int] = {}
        # Challenges that arrive before `welcome` went out wait here, so the device
        # always sees welcome first and each challenge once; recovery notices too.
        self._backlog: list[ChallengeRecord] | None = []
        self._notice_backlog: list[Notice] | None = []
        self._inbox: deque[tuple[int, bytes]] | None = None  # messages not handled yet
        self._held = 0  # their bytes
        self._inbox_paused = False  # reading stopped because of them
        self._worker: asyncio.Task[None] | None = None  # handles the inbox, while it has any
        self._watchdog: asyncio.TimerHandle | None = None  # the authentication deadline
        self.serial = next(_SERIAL)  # the order of connections (the oldest is closed first)

    # -- called by the hub ---------------------------------------------------

    def deliver(self, record: ChallengeRecord) -> None:
        if record.id in self.delivered or not any(c.receives(record) for c in self.credentials.values()):
            return
        self.delivered[record.id] = record
        if self._backlog is not None:
            self._backlog.append(record)
        elif self.keeps_up:
            # Written now, no task: the frame leaves before the RP's 201 (which the caller
            # sends next), and the device's side is the longer path of a sign-in.
            try:
                for frame in self._frames_for(record):
                    self.send_now(encode(frame))
            except ConnectionError:
                return  # closing; the device gets it again when it reconnects
            metrics.delivered(record)
        else:  # its buffer is full: a task waits for room (send_bytes)
            spawn(self._send_challenge(record))

    def deliver_notice(self, notice: Notice) -> None:
        if notice.id in self.notices:
            return
        self.notices[notice.id] = notice
        if self._notice_backlog is not None:
            self._notice_backlog.append(notice)
        else:
            spawn(self._send_notice(notice))

    async def send(self, frame: Frame) -> None:
        await self.send_bytes(encode(frame))

    def drop_credential(self, cid: str) -> None:
        cred = self.credentials.pop(cid, None)
        self.session.revoked(cid)
        for notice_id in [n.id for n in self.notices.values() if n.old_cid == cid]:
            del self.notices[notice_id]  # the device drops them with the account
        if cred is not None:
            self.hub.detach_credential(self, cred)
        self._recount()

    def _recount(self) -> None:
        """Once a credential was proven here, the connection is out of the counts of open
        connections (broker/connections.py) while it holds a live one, and counted again
        for its address and the node, as an unproven one, once every one was revoked:
        no client keeps connections out of the limits by having its credentials revoked
        (docs/protocol.md 2.2). The deadline stays met: the device is told `revoked` and
        may enroll again on it; a device with nothing left closes it (section 15)."""
        slot = self.connection_slot
        if slot is None or self._watchdog is not None:
            return  # nothing counted, or nothing proven yet: counted anyway
        if self.credentials:
            slot.release()
        else:
            slot.rejoin()

    # -- frames from the device --------------------------------------------

    def greeting(self) -> bytes:
        self.hub.connect(self)  # from now on a stopping node tells it "going away" too
        self._watchdog = asyncio.get_running_loop().call_later(self.auth_timeout, self._auth_timeout)
        return wsframes.frame(OP_BINARY, encode(self.session.hello_frame()))

    def on_message(self, opcode: int, payload: bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append((opcode, payload))
        self._held += len(payload)
        full = len(inbox) >= INBOX_HIGH or self._held >= INBOX_BYTES
        if full and not self._inbox_paused and self.transport is not None:
            self._inbox_paused = True
            self.transport.pause_reading()
        if self._worker is None:
            self._worker = spawn(self._work(inbox))

    async def _work(self, inbox: deque[tuple[int, bytes]]) -> None:
        """The frames received, one at a time and in order, until none is left."""
        try:
            while inbox:
                opcode, payload = inbox.popleft()
                self._held -= len(payload)
                if self._inbox_paused and len(inbox) <= INBOX_LOW and self._held <= INBOX_BYTES // 2:
                    self._resume_inbox()
                now = time.monotonic()  # one reading for both budgets
                if not self.frames.take(now=now):
                    limit = f"more than {self.frames.burst:g} frames at once or {self.frames.rate:g} a second"
                    await self.fail(ProtocolError(ErrorCode.RATE_LIMITED, limit))
                    break
                if not self.bytes.take(len(payload), now):
                    await self.fail(ProtocolError(ErrorCode.RATE_LIMITED, self._bytes_limit()))
                    break
                if opcode == OP_TEXT:
                    await self.fail(ProtocolError(ErrorCode.MALFORMED, "frames are binary messages"))
                    break
                await self.handle(payload)
                if self.session.proven:
                    if self._watchdog is not None:
                        self._watchdog.cancel()
                        self._watchdog = None
                        self.frames = TokenBucket(FRAMES_PER_S, FRAME_BURST)
                        self.bytes = TokenBucket(BYTES_PER_S, BYTE_BURST, tokens=self.bytes.left())
                    self._recount()  # accountable now: out of the address's count
        except Exception:  # a bug of ours: the device reconnects and retries
            log.exception("error handling a device frame")
            self.close(1011, ErrorCode.INTERNAL.value.encode())
        finally:
            self._worker = None
            if self._inbox is inbox and not inbox:
                self._inbox = None

    def _bytes_limit(self) -> str:
        if self.bytes.rate == 0:
            return f"more than {self.bytes.burst:g} bytes of frames before a credential is proven"
        return f"more than {self.bytes.burst:g} bytes of frames at once or {self.bytes.rate:g} a second"

    def control_allowed(self) -> bool:
        # Pings and pongs take from the frames' budget too: a device pings every 20 s and
        # answers ours every 30 s, while one connection that sent nothing but pings as
        # fast as it could kept a broker core busy, proven or not.
        if self.frames.take():
            return True
        limit = f"more than {self.frames.burst:g} frames at once or {self.frames.rate:g} a second"
        with contextlib.suppress(ConnectionError):  # its transport was closing
            self._close_for(ProtocolError(ErrorCode.RATE_LIMITED, limit))
        return False

    def on_lost(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.hub.detach(self)

    def on_halt(self) -> None:
        if self._inbox is not None:
            self._inbox.clear()
        self._held = 0
        self._resume_inbox()  # closing: the peer's close reply (or the rest) must be read

    def _resume_inbox(self) -> None:
        if self._inbox_paused:
            self._inbox_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _auth_timeout(self) -> None:
        self._watchdog = None
        self._close_for(ProtocolError(ErrorCode.AUTH_TIMEOUT, "no credential proven in time"))

    async def fail(self, err: ProtocolError) -> None:
        self._close_for(err)

    def _close_for(self, err: ProtocolError) -> None:
        metrics.device_error(err.code.value)
        log.info("closing device connection: %s", err)
        self.close(err.close_code, err.code.value.encode())

    async def handle(self, data: bytes) -> None:
        try:
            frame = self.session.receive(data)
            if isinstance(frame, Authenticate):
                await self.on_authenticate(frame)
            elif isinstance(frame, Enroll):
                await self.on_enroll(frame)
            elif isinstance(frame, Answer):
                await self.on_answer(frame)
            elif isinstance(frame, Revoke):
                await self.on_revoke(frame)
            elif isinstance(frame, RecoveryAnswer):
                await self.on_recovery_answer(frame)
            elif isinstance(frame, PushSubscribe):
                await webpush.on_subscribe(self.push, self, frame)
            elif isinstance(frame, Ping):
                await self.send(Pong(rid=frame.rid))
        except ProtocolError as err:
            if err.fatal:
                await self.fail(err)
            else:
                metrics.device_error(err.code.value)
                ref = None if err.ref is None else str(err.ref)
                try:
                    await self.send(Error(code=err.code.value, message=err.message, ref=ref))
                except ConnectionError:
                    # Closing meanwhile (its held frames came with its close, after a stall on
                    # the device's network): nobody is left to tell, which is not our error.
                    if not self._closing:
                        raise
        except (RedisError, OSError) as exc:
            if self._closing and isinstance(exc, ConnectionError):
                return  # the device went away before its reply: nothing to tell it
            # The store is unreachable: close with "internal" (1011) rather than leave
            # the device waiting; it reconnects with backoff and gets its pending
            # challenges again once Redis is back.
            metrics.REDIS_ERRORS_DEVICE.inc()
            if not redis_refusals.reported(exc, "a device's frame"):
                log.warning("store unavailable while handling a device frame: %s", exc)
            await self.fail(ProtocolError(ErrorCode.INTERNAL, "the broker's store is unavailable"))

    async def on_authenticate(self, frame: Authenticate) -> None:
        proofs = {p["cid"]: p["sig"] for p in frame.creds}
        creds = await self.store.get_credentials(list(proofs))
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
        channels: set[str] = set()
        for cid, sig in proofs.items():
            cred = creds.get(cid)
            if cred is None:
                rejected.append({"cid": cid, "code": ErrorCode.UNKNOWN_CREDENTIAL.value})
            elif not cred.active:
                rejected.append({"cid": cid, "code": ErrorCode.CREDENTIAL_REVOKED.value})
            else:
                try:
                    self.session.verify_auth(cid, cred.public_key, sig)
                except ProtocolError:
                    rejected.append({"cid": cid, "code": ErrorCode.BAD_SIGNATURE.value})
                    continue
                accepted.append(cid)
                channels.add(self._add_credential(cred))
        self.session.authenticated(accepted)
        # Listening on the users' channels before reading what is pending: whatever
        # comes after the read arrives as an event (the device ignores repeats).
        await self.hub.channels.ready(channels)
        users = {(c.rp, c.user) for c in self.credentials.values()}
        for record in await self.store.pending_challenges(users, now_ms()):
            self.deliver(record)
        for notice in await notices.open_notices(self.store, list(self.credentials.values()), now_ms()):
            self.deliver_notice(notice)
        backlog, self._backlog = self._backlog or [], []
        frames = [f for r in backlog for f in self._frames_for(r)]
        notice_backlog, self._notice_backlog = self._notice_backlog or [], []
        await self.send(
            Welcome(
                accepted=tuple(accepted),
                rejected=tuple(rejected),
                pending=len(frames),
                notices=len(notice_backlog),
            )
        )
        for f in frames:
            await self.send(f)
        for notice in notice_backlog:
            await self.send(notice.frame())
        await self._drain_backlog()

    async def _drain_backlog(self) -> None:
        # Challenges and notices created while the welcome was being sent.
        while self._backlog or self._notice_backlog:
            if self._backlog:
                await self._send_challenge(self._backlog.pop(0))
            if self._notice_backlog:
                await self._send_notice(self._notice_backlog.pop(0))
        self._backlog = None
        self._notice_backlog = None

    async def _send_notice(self, notice: Notice) -> None:
        # A closing socket: the device gets the notice again when it reconnects.
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(notice.frame())

    def _add_credential(self, cred: Credential) -> str:
        """Attach `cred` here; its user's event channel (see Hub.attach)."""
        self.credentials[cred.id] = cred
        channel = self.hub.attach(self, cred)
        self._close_oldest_beyond_limit(cred.id)
        return channel

    def _close_oldest_beyond_limit(self, cid: str) -> None:
        """At most MAX_SOCKETS_PER_CREDENTIAL open connections have `cid`: the oldest
        others are closed. Those closing already (waiting at most CLOSE_REPLY_TIMEOUT_S
        for the reply) are not counted, so that each new one closes a live one."""
        live = [
            d
            for d in self.hub.by_cid.get(cid, ())
            if isinstance(d, DeviceConnection) and d is not self and not d._closing
        ]
        excess = len(live) + 1 - MAX_SOCKETS_PER_CREDENTIAL
        if excess <= 0:
            return
        for old in sorted(live, key=lambda d: d.serial)[:excess]:
            limit = f"credential {cid} is authenticated on {MAX_SOCKETS_PER_CREDENTIAL} newer connections"
            with contextlib.suppress(ConnectionError):  # its transport was closing
                old._close_for(ProtocolError(ErrorCode.RATE_LIMITED, limit))

    def _frames_for(self, record: ChallengeRecord) -> list[Frame]:
        return [record.frame_for(c.id, c.account) for c in self.credentials.values() if c.receives(record)]

    async def _send_challenge(self, record: ChallengeRecord) -> None:
        try:
            for frame in self._frames_for(record):
                await self.send(frame)
            metrics.delivered(record)
        except (ConnectionError, RuntimeError):
            pass  # the socket is closing; the device gets it again when it reconnects

    async def on_enroll(self, frame: Enroll) -> None:
        try:
            self.session.verify_enroll(frame)
            cred = await self.store.complete_enrollment(
                frame.token, frame.pk, frame.name, frame.rpk, frame.binding
            )
        except ProtocolError as err:
            err.ref = str(frame.rid)
            raise
        rp = await self.store.get_rp(cred.rp)
        self.session.enrolled(cred.id)
        channel = self._add_credential(cred)
        await self.send(
            Enrolled(
                rid=frame.rid,
                cid=cred.id,
                rp=cred.rp,
                rp_name=rp.name if rp else "",
                user=cred.user,
                account=cred.account,
            )
        )
        # The RP heard of the enrollment from the script's event and may have sent its
        # test push before this node listened on the user's channel: read it once.
        await self.hub.channels.ready([channel])
        for record in await self.store.pending_challenges({(cred.rp, cred.user)}, now_ms()):
            self.deliver(record)

    async def on_answer(self, frame: Answer) -> None:
        """The checks run in a fixed order, the first failing one answers (the frame's
        shape was checked at decode, ServerSession.receive): the credential is this
        connection's (unknown_credential, or credential_revoked if it was revoked while
        here), the challenge exists for its user (unknown_challenge), the context
        matches (context_mismatch), the signature verifies (bad_signature), the
        challenge has not expired (challenge_expired), then its stored state: still
        pending, or ended by this very answer (a retry after a lost answer_result gets
        the recorded outcome again), else already_answered."""
        self.session.check_owned(frame.cid, ref=frame.ch)
        cred = self.credentials[frame.cid]
        record = self.delivered.get(frame.ch) or await self.store.get_challenge(frame.ch)
        if record is None or record.rp != cred.rp or record.user != cred.user:
            # Another user's challenge looks exactly like a missing one.
            raise ProtocolError(ErrorCode.UNKNOWN_CHALLENGE, "no such challenge", ref=frame.ch)
        # The shape that needs the challenge: an approval without a number is refused
        # (4400, as the stateless shape faults) unless the challenge has no number
        # matching, whose approvals sign the empty number (docs/protocol.md section 7.1).
        check_answer_number(frame.decision, frame.number, number_matching=record.number_matching)
        if frame.ctx_hash != record.ctx_hash:
            raise ProtocolError(ErrorCode.CONTEXT_MISMATCH, "signed over another context", ref=frame.ch)
        message = answer_bytes(
            rp=record.rp,
            ch=record.id,
            nonce=record.nonce,
            rp_nonce=record.rp_nonce,
            cid=frame.cid,
            decision=frame.decision,
            number=frame.number,
            ts=frame.ts,
            ctx_hash=frame.ctx_hash,
        )
        try:
            verify(cred.public_key, message, frame.sig)
        except ProtocolError as err:
            err.ref = frame.ch
            raise
        now = now_ms()
        if now >= record.expires:
            raise ProtocolError(ErrorCode.CHALLENGE_EXPIRED, "challenge expired", ref=frame.ch)
        status = outcome_for(
            frame.decision, frame.number, record.number, number_matching=record.number_matching
        )
        answer = StoredAnswer(frame.cid, frame.decision, frame.number, frame.ts, frame.ctx_hash, frame.sig)
        # Take it off this connection first, so the hub sends this device the
        # result and not a "handled elsewhere" cancel.
        self.delivered.pop(record.id, None)
        metrics.answered(record)  # before the write: the RP's long-poll may wake from it
        result = await self.store.record_answer(record, answer, status, now)
        if result == "ok":
            await self.send(AnswerResult(ch=record.id, outcome=status.value))
            return
        if result not in _ANSWER_REFUSALS:  # it ended: by this same answer, sent before?
            ended = await self.store.get_challenge(record.id)
            if ended is not None and _same_answer(ended.answer, answer):
                await self.send(AnswerResult(ch=record.id, outcome=ended.status.value))
                return
        code, message_text = _ANSWER_REFUSALS.get(
            result, (ErrorCode.ALREADY_ANSWERED, f"challenge already ended: {result}")
        )
        raise ProtocolError(code, message_text, ref=frame.ch)

    async def on_revoke(self, frame: Revoke) -> None:
        self.session.check_owned(frame.cid, ref=str(frame.rid))
        cred = self.credentials[frame.cid]
        self.revoking[frame.cid] = frame.rid
        if not await self.store.revoke_credential(cred.rp, cred.id, RevokeReason.BY_DEVICE.value):
            self.revoking.pop(frame.cid, None)
            raise ProtocolError(
                ErrorCode.CREDENTIAL_REVOKED, "credential already revoked", ref=str(frame.rid)
            )

    async def on_recovery_answer(self, frame: RecoveryAnswer) -> None:
        ref = str(frame.rid)
        self.session.check_owned(frame.cid, ref=ref)
        cred = self.credentials[frame.cid]
        notice = await notices.get(self.store, frame.notice)
        if notice is None or notice.old_cid != cred.id:
            # Another credential's notice looks exactly like a missing one.
            raise ProtocolError(ErrorCode.UNKNOWN_NOTICE, _NOTICE_REFUSALS["unknown"][1], ref=ref)
        message = recovery_answer_bytes(notice.id, cred.id, notice.new_cid, frame.decision, frame.ts)
        try:
            verify(cred.public_key, message, frame.sig)
        except ProtocolError as err:
            err.ref = ref
            raise
        # Set before the write, so the hub answers this connection with its rid.
        self.answering[notice.id] = frame.rid
        result = await notices.answer(self.store, notice, NoticeDecision(frame.decision), now_ms())
        if result != "ok":
            self.answering.pop(notice.id, None)
            code, text = _NOTICE_REFUSALS.get(result, _NOTICE_REFUSALS["unknown"])
            raise ProtocolError(code, text, ref=ref)


def _same_answer(recorded: StoredAnswer | None, answer: StoredAnswer) -> bool:
    """Whether `answer` repeats the recorded one: same credential, decision, number and
    context. The signature may differ (a retry signs again, with a new ts)."""
    return recorded is not None and (recorded.cid, recorded.decision, recorded.number, recorded.ctx_hash) == (
        answer.cid,
        answer.decision,
        answer.number,
        answer.ctx_hash,
    )


async def device_socket(request: web.Request) -> web.StreamResponse:
    """GET /v1/device through aiohttp: with the RP lane on (the default), the upgrades
    it hands over (an invalid handshake, no common protocol version, any odd form; see
    broker/rp_lane.py), else all of them."""
    app = request.app
    try:
        accept, version = wsframes.handshake(request.headers, SUBPROTOCOLS)
    except HandshakeError as exc:
        raise ApiError(400, "invalid_request", f"not a WebSocket opening handshake: {exc}") from None
    head = wsframes.switching_protocols(accept, version)
    if version is None:
        # Version negotiation: the device offers "pushauth.vN" subprotocols, and the
        # first it offered that this broker speaks is picked. A device offering none of
        # them (a version 1 device offers none at all) is told so with 4406 before any
        # frame, so it fails with a clear reason instead of misreading version 2 frames.
        offered = request.headers.get("Sec-WebSocket-Protocol", "")[:64] or "none"
        log.info("device offered no protocol version this broker speaks (%s)", offered)
        reason = f"unsupported_version: this broker speaks {', '.join(SUBPROTOCOLS)}".encode()[:120]
        return _Upgrade(request, WsSocket(), head, (CLOSE_CODES[ErrorCode.UNSUPPORTED_VERSION], reason))
    return _Upgrade(request, new_connection(app), head)


def new_connection(app: web.Application) -> DeviceConnection:
    """A device connection of this node, for a socket about to be taken over."""
    node = app[NODE]
    return DeviceConnection(
        ServerSession(node=node.name, now_ms=now_ms()),
        node.store,
        node.hub,
        auth_timeout=app.get(AUTH_TIMEOUT, AUTH_TIMEOUT_S),
        push=app.get(WEBPUSH),
        heartbeat=app.get(HEARTBEAT),
    )
