"""One device WebSocket to a broker: a thin asyncio shell around ClientSession.

The protocol rules (which frame when, validation, signing bytes) live in
protocol.session; this module only moves bytes, waits for replies and turns
failures into AgentErrors with human messages (device_agent.messages).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import websockets.exceptions as wse
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from protocol import PROTOCOL_VERSION, SUBPROTOCOLS
from protocol.codec import MAX_FRAME_SIZE, encode
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    AnswerResult,
    Cancel,
    Challenge,
    Enrolled,
    Error,
    Frame,
    Hello,
    RecoveryAnswer,
    RecoveryNotice,
    RecoveryResult,
    Revoke,
    Revoked,
    Welcome,
)
from protocol.session import ClientSession, sign_answer, sign_recovery_answer
from protocol.uri import insecure_transport

from . import broker_clock
from .display import shown, shown_clipped
from .errors import AgentError, BrokerClosed, InsecureBroker, Refused, Unreachable
from .messages import cannot_reach, close_message, error_message, silent
from .timeouts import PING_INTERVAL_S, connect_timeout

REPLY_TIMEOUT_S = 15.0

F = TypeVar("F", bound=Frame)


def now_ms() -> int:
    return int(time.time() * 1000)


# The broker's clock is carried from its hello on this one, which no setting of the wall
# clock moves (an NTP step, the user fixing the time, a resumed VM) and which counts a
# suspend: the wall clock plus an offset measured before such a step would be off by the
# step, and a laptop that slept would count the sleep out.
_STEADY = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _steady_ms() -> int:
    return time.clock_gettime_ns(_STEADY) // 1_000_000


class Connection:
    """An open, hello-received connection to one broker."""

    def __init__(self, url: str, ws: ClientConnection) -> None:
        self.url = url
        self._ws = ws
        self.session = ClientSession(max_frame=MAX_FRAME_SIZE)
        self._backlog: collections.deque[Frame] = collections.deque()
        self._hello_time = now_ms()  # the broker's clock at hello, and this steady clock then
        self._hello_steady = _steady_ms()
        self._next_rid = 1
        # The open "was this you?" notices the broker sent right after the welcome.
        self.notices: list[RecoveryNotice] = []

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect and read the broker's hello."""
        insecure = insecure_transport(url)
        if insecure is not None:  # before any byte goes out (docs/protocol.md, section 2.1)
            raise InsecureBroker(insecure)
        timeout = connect_timeout()
        deadline = time.monotonic() + timeout
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
                max_size=MAX_FRAME_SIZE,
                open_timeout=timeout,
                ping_interval=min(PING_INTERVAL_S, timeout),
                ping_timeout=timeout,
                close_timeout=2,
            )
        except TimeoutError:
            # Connected or not, nothing came back in time: a stopped process, a full
            # backlog, a port that drops packets, a proxy that never forwards.
            raise Unreachable(cannot_reach(url, silent(timeout))) from None
        except (OSError, wse.WebSocketException) as exc:  # refused, DNS, not a WebSocket...
            why = _refusal(exc.response) if isinstance(exc, wse.InvalidStatus) else exc
            raise Unreachable(cannot_reach(url, why)) from None
        if ws.subprotocol is None:
            # A broker that picked no version speaks none we do: version 1 brokers
            # ignore the offer. Stop before its frames are misread.
            await ws.close(4406, "unsupported_version")
            raise Refused(
                f"the broker at {url} speaks an older protocol than this agent (which needs "
                f"version {PROTOCOL_VERSION}); the broker must be upgraded",
                code=ErrorCode.UNSUPPORTED_VERSION.value,
            )
        conn = cls(url, ws)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                hello = await conn._recv_wire()
        except TimeoutError:
            conn.abort()
            raise Unreachable(
                cannot_reach(url, f"no greeting after the WebSocket opened; {silent(timeout)}")
            ) from None
        except BaseException:
            conn.abort()  # cancelled (another broker had what was wanted), or a protocol error
            raise
        assert isinstance(hello, Hello)  # ClientSession allows nothing else first
        # Expiry times come from the broker's clock: carried from here on a steady clock.
        conn._hello_time, conn._hello_steady = hello.time, _steady_ms()
        return conn

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ws.close()

    @property
    def clock_offset_ms(self) -> int:
        """The broker's clock minus this device's wall clock now (measured at its hello,
        so a step of this clock since then counts)."""
        return self.broker_now_ms() - now_ms()

    def abort(self) -> None:
        """Drop the connection at once, without the closing handshake: for a broker
        that is not answering (a close would wait for it) or one no longer needed."""
        self._ws.transport.abort()

    def clock_warning(self) -> str | None:
        """A warning when this device's clock is off the broker's by more than the
        skew an RP accepts (docs/protocol.md, section 13); answers still carry the
        broker's time, but the device clock is wrong for everything else."""
        offset = self.clock_offset_ms
        if abs(offset) <= broker_clock.WARN_AFTER_MS:
            return None
        return broker_clock.wrong_clock(offset, self.url)

    def broker_now_ms(self) -> int:
        """Now, on the broker's clock (for expiry countdowns and answer timestamps)."""
        return self._hello_time + _steady_ms() - self._hello_steady

    def rid(self) -> int:
        rid, self._next_rid = self._next_rid, self._next_rid + 1
        return rid

    # -- bytes in and out ------------------------------------------------------

    async def _recv_wire(self) -> Frame:
        while True:
            try:
                data = await self._ws.recv()
            except wse.ConnectionClosed as exc:
                raise _closed_error(self.url, exc) from None
            try:
                if isinstance(data, str):
                    raise ProtocolError(ErrorCode.MALFORMED, "frames are binary WebSocket messages")
                return self.session.receive(data)
            except ProtocolError as exc:
                if exc.code is ErrorCode.UNKNOWN_FRAME:
                    continue  # a newer broker's frame type: ignored (docs/protocol.md, "Evolution")
                # The broker broke the protocol: say why in the close, as it would.
                await self._ws.close(exc.close_code, str(exc.code))
                raise Unreachable(f"{self.url}: {error_message(exc.code)} ({exc.message})") from None

    async def recv(self) -> Frame:
        """The next frame from the broker (frames set aside while waiting come first)."""
        if self._backlog:
            return self._backlog.popleft()
        return await self._recv_wire()

    async def send(self, frame: Frame | bytes) -> None:
        data = frame if isinstance(frame, bytes) else encode(frame)
        try:
            await self._ws.send(data)
        except wse.ConnectionClosed as exc:
            raise _closed_error(self.url, exc) from None

    async def _wait_for(self, match: Callable[[Frame], bool]) -> Frame:
        """The first frame that `match`es; others are kept for `recv()` in order."""
        for i, frame in enumerate(self._backlog):
            if match(frame):
                del self._backlog[i]
                return frame
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    frame = await self._recv_wire()
                    if match(frame):
                        return frame
                    self._backlog.append(frame)
        except TimeoutError:
            raise Unreachable(f"{self.url}: the broker did not answer in time") from None

    async def _request(self, frame: Frame, reply: type[F], match: Callable[[F], bool], ref: str) -> F:
        """Send `frame`; return its `reply`, or raise Refused for the matching error."""
        await self.send(frame)
        got = await self._wait_for(
            lambda f: (isinstance(f, reply) and match(f)) or (isinstance(f, Error) and f.ref == ref)
        )
        if isinstance(got, Error):
            raise Refused(error_message(got.code, got.message), code=got.code)
        assert isinstance(got, reply)
        return got

    def cancelled(self, ch: str) -> Cancel | None:
        """The `cancel` for request `ch` that came but was not read yet (the broker
        ended the request meanwhile), or None."""
        for frame in self._backlog:
            if isinstance(frame, Cancel) and frame.ch == ch:
                return frame
        return None

    # -- requests ----------------------------------------------------------------

    async def authenticate(self, seeds: Mapping[str, bytes]) -> tuple[Welcome, list[Challenge]]:
        """Prove every credential in `seeds`; return the welcome and the pending challenges."""
        await self.send(self.session.authenticate_frame(seeds))
        welcome = await self._wait_for(lambda f: isinstance(f, Welcome | Error))
        if isinstance(welcome, Error):
            raise Refused(error_message(welcome.code, welcome.message), code=welcome.code)
        assert isinstance(welcome, Welcome)
        # The broker sends exactly `pending` challenge frames right after welcome.
        challenges: list[Challenge] = []
        for _ in range(welcome.pending):
            frame = await self._wait_for(lambda f: isinstance(f, Challenge))
            assert isinstance(frame, Challenge)
            challenges.append(frame)
        # Then exactly `notices` recovery notices ("was this you?").
        self.notices = []
        for _ in range(welcome.notices):
            notice = await self._wait_for(lambda f: isinstance(f, RecoveryNotice))
            assert isinstance(notice, RecoveryNotice)
            self.notices.append(notice)
        return welcome, challenges

    async def enroll(
        self,
        *,
        token: str,
        seed: bytes,
        name: str,
        rp: str,
        binding_secret: bytes | None,
        recovery_pk: bytes | None,
    ) -> Enrolled:
        rid = self.rid()
        data = self.session.enroll_frame(
            rid=rid,
            token=token,
            seed=seed,
            name=name,
            rp=rp,
            binding_secret=binding_secret,
            recovery_pk=recovery_pk,
        )
        await self.send(data)
        got = await self._wait_for(
            lambda f: (
                (isinstance(f, Enrolled) and f.rid == rid) or (isinstance(f, Error) and f.ref == str(rid))
            )
        )
        if isinstance(got, Error):
            raise Refused(error_message(got.code, got.message), code=got.code)
        assert isinstance(got, Enrolled)
        return got

    async def answer(self, challenge: Challenge, *, seed: bytes, decision: str, number: str) -> AnswerResult:
        frame = self.answer_frame(challenge, seed=seed, decision=decision, number=number)
        return await self._request(frame, AnswerResult, lambda f: f.ch == challenge.ch, challenge.ch)

    def answer_frame(self, challenge: Challenge, *, seed: bytes, decision: str, number: str) -> Frame:
        return sign_answer(challenge, seed=seed, decision=decision, number=number, ts=self.broker_now_ms())

    def recovery_answer_frame(self, notice: RecoveryNotice, *, seed: bytes, decision: str) -> RecoveryAnswer:
        """The old credential's signed answer to "was this you?" (`seed`: its key)."""
        return sign_recovery_answer(
            notice, seed=seed, decision=decision, ts=self.broker_now_ms(), rid=self.rid()
        )

    async def answer_notice(self, notice: RecoveryNotice, *, seed: bytes, decision: str) -> RecoveryResult:
        frame = self.recovery_answer_frame(notice, seed=seed, decision=decision)
        rid = frame.rid
        return await self._request(frame, RecoveryResult, lambda f: f.rid == rid, str(rid))

    async def revoke(self, cid: str) -> Revoked:
        rid = self.rid()
        return await self._request(Revoke(rid=rid, cid=cid), Revoked, lambda f: f.rid == rid, str(rid))


def _closed_error(url: str, exc: wse.ConnectionClosed) -> Unreachable:
    """Unreachable, or BrokerClosed when the broker closed first with a code (which
    decides whether `listen` may reconnect)."""
    message = f"{url}: {_closed(exc)}"
    broker_first = exc.rcvd is not None and (exc.sent is None or bool(exc.rcvd_then_sent))
    if broker_first and exc.rcvd is not None:
        return BrokerClosed(message, close_code=exc.rcvd.code, code=exc.rcvd.reason or None)
    return Unreachable(message)


def _closed(exc: wse.ConnectionClosed) -> str:
    """Why the connection closed: the broker's close frame, else ours, else none."""
    if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1011:
        # Our own keepalive gave up (websockets closes with 1011 "keepalive ping timeout"):
        # the broker went silent (stopped, or the network dropped); it had no error of its own.
        return f"the broker stopped answering (no reply to a keepalive ping within {connect_timeout():g} s)"
    close = exc.rcvd or exc.sent
    return close_message(close.code, close.reason) if close else close_message(None)


__all__ = ["AgentError", "Connection", "Refused", "Unreachable", "now_ms"]


def _refusal(response: Any) -> str:
    """What a broker said instead of opening the WebSocket: its status, and the code and
    detail of its problem document when there is one (429 rate_limited, 503 node_busy:
    a busy broker, tried again later, not a broken one)."""
    said = f"HTTP {response.status_code} instead of a WebSocket"
    try:
        problem = json.loads(response.body or b"")
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
        return said
    if isinstance(problem, dict) and isinstance(problem.get("code"), str):
        detail = problem.get("detail")
        said += f" ({shown(problem['code'])}" + (
            f": {shown_clipped(detail, 200)})" if isinstance(detail, str) else ")"
        )
    return said
