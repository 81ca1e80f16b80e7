"""The device WebSocket: a thin asyncio shell around protocol.session.ServerSession."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from protocol import SUBPROTOCOLS
from protocol.challenge import outcome_for
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
    PushSubscribe,
    RecoveryAnswer,
    Revoke,
    RevokeReason,
    Welcome,
)
from protocol.session import ServerSession
from protocol.signing import answer_bytes, recovery_answer_bytes, verify

from . import metrics, notices, webpush
from .context import NODE
from .hub import Hub
from .models import Answer as StoredAnswer
from .models import ChallengeRecord, Credential, Notice
from .ratelimit import TokenBucket
from .store import Store, now_ms
from .tasks import spawn
from .webpush import WEBPUSH, WebPush

log = logging.getLogger(__name__)

# After the broker closes a socket (protocol error, shutdown), how long it waits for the
# device's close reply before dropping the connection. aiohttp's default is 10 s: on a
# restart, 18,000 devices each owed a reply and the old process lingered for seconds,
# and a device that never replies held its socket that long for nothing.
CLOSE_REPLY_TIMEOUT_S = 1.0
# A connection on which no credential was authenticated and no enrollment completed
# within this time is closed (4408 auth_timeout); an `authenticate` whose credentials
# were all refused does not stop the clock. `serve --auth-timeout` sets it per node.
AUTH_TIMEOUT_S = 30.0
AUTH_TIMEOUT = web.AppKey("device_auth_timeout", float)
# Frames one connection may send (a token bucket): FRAME_BURST at once, FRAMES_PER_S a
# second sustained; a connection over it is closed (4429 rate_limited). Ordinary use
# is a few frames a minute; a device coming back with a backlog stays far below this.
FRAMES_PER_S = 50.0
FRAME_BURST = 200
# aiohttp itself refuses (close 1009) anything larger; up to this size we read the
# message and answer with our own code (4413), which tells clients more.
WS_READ_LIMIT = 4 * MAX_FRAME_SIZE

# RFC 6455 close frame from a server (FIN + opcode 8, unmasked): code 1001, a reason.
_GOING_AWAY_REASON = b"broker shutting down"
_GOING_AWAY = bytes((0x88, 2 + len(_GOING_AWAY_REASON)))
_GOING_AWAY += WSCloseCode.GOING_AWAY.to_bytes(2, "big") + _GOING_AWAY_REASON

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


class DeviceConnection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: ServerSession,
        store: Store,
        hub: Hub,
        transport: asyncio.BaseTransport | None = None,
        *,
        auth_timeout: float = AUTH_TIMEOUT_S,
        push: WebPush | None = None,
    ) -> None:
        self.ws = ws
        self.push = push
        self.auth_timeout = auth_timeout
        self.frames = TokenBucket(FRAMES_PER_S, FRAME_BURST)
        self.transport = transport
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

    # -- called by the hub ---------------------------------------------------

    def deliver(self, record: ChallengeRecord) -> None:
        if record.id in self.delivered or not any(c.receives(record) for c in self.credentials.values()):
            return
        self.delivered[record.id] = record
        if self._backlog is not None:
            self._backlog.append(record)
        else:
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
        await self.ws.send_bytes(encode(frame))

    def going_away(self) -> None:
        """Broker shutdown: a close frame (1001 going away), and no wait for the reply.

        Written straight to the transport, which then stops reading: aiohttp's close()
        waits for the device's reply, one task per socket, and handling 18,000 replies
        kept a restarting broker busy for four seconds. aiohttp writes each frame in one
        transport write, so this frame cannot land inside another. The TCP connection
        ends when the process exits, a moment later."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_GOING_AWAY)  # type: ignore[attr-defined]
            transport.pause_reading()  # type: ignore[attr-defined]

    def drop_credential(self, cid: str) -> None:
        cred = self.credentials.pop(cid, None)
        self.session.revoked(cid)
        for notice_id in [n.id for n in self.notices.values() if n.old_cid == cid]:
            del self.notices[notice_id]  # the device drops them with the account
        if cred is not None:
            self.hub.detach_credential(self, cred)

    # -- frames from the device --------------------------------------------

    async def run(self) -> None:
        self.hub.connect(self)  # from now on a stopping node tells it "going away" too
        watchdog = asyncio.get_running_loop().call_later(self.auth_timeout, self._auth_timeout)
        try:
            await self.send(self.session.hello_frame())
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    break  # ERROR: aiohttp closed it (e.g. message over its size limit)
                if not self.frames.take():
                    limit = f"more than {FRAME_BURST} frames at once or {FRAMES_PER_S:g} a second"
                    await self.fail(ProtocolError(ErrorCode.RATE_LIMITED, limit))
                    break
                if msg.type is WSMsgType.TEXT:
                    await self.fail(ProtocolError(ErrorCode.MALFORMED, "frames are binary messages"))
                    break
                await self.handle(msg.data)
                if self.session.proven:
                    watchdog.cancel()
        finally:
            watchdog.cancel()
            self.hub.detach(self)

    def _auth_timeout(self) -> None:
        spawn(self.fail(ProtocolError(ErrorCode.AUTH_TIMEOUT, "no credential proven in time")))

    async def fail(self, err: ProtocolError) -> None:
        metrics.device_error(err.code.value)
        log.info("closing device connection: %s", err)
        await self.ws.close(code=err.close_code, message=err.code.value.encode())

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
        except ProtocolError as err:
            if err.fatal:
                await self.fail(err)
            else:
                metrics.device_error(err.code.value)
                ref = None if err.ref is None else str(err.ref)
                await self.send(Error(code=err.code.value, message=err.message, ref=ref))
        except (RedisError, OSError) as exc:
            # The store is unreachable: close with "internal" (1011) rather than leave
            # the device waiting; it reconnects with backoff and gets its pending
            # challenges again once Redis is back.
            metrics.REDIS_ERRORS_DEVICE.inc()
            log.warning("store unavailable while handling a device frame: %s", exc)
            await self.fail(ProtocolError(ErrorCode.INTERNAL, "the broker's store is unavailable"))

    async def on_authenticate(self, frame: Authenticate) -> None:
        proofs = {p["cid"]: p["sig"] for p in frame.creds}
        creds = await self.store.get_credentials(list(proofs))
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
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
                self._add_credential(cred)
        self.session.authenticated(accepted)
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

    def _add_credential(self, cred: Credential) -> None:
        self.credentials[cred.id] = cred
        self.hub.attach(self, cred)

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
        self._add_credential(cred)
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
        status = outcome_for(frame.decision, frame.number, record.number)
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


async def device_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    # Version negotiation: the device offers "pushauth.vN" subprotocols; aiohttp picks
    # the first of ours it offered (ours are best first). A device offering none of
    # them (a version 1 device offers none at all) is told so with 4406 before any
    # frame, so it fails with a clear reason instead of misreading version 2 frames.
    ws = web.WebSocketResponse(
        max_msg_size=WS_READ_LIMIT,
        heartbeat=30.0,
        compress=False,
        timeout=CLOSE_REPLY_TIMEOUT_S,
        protocols=SUBPROTOCOLS,
    )
    await ws.prepare(request)
    if ws.ws_protocol is None:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")[:64] or "none"
        log.info("device offered no protocol version this broker speaks (%s)", offered)
        await ws.close(
            code=CLOSE_CODES[ErrorCode.UNSUPPORTED_VERSION],
            message=f"unsupported_version: this broker speaks {', '.join(SUBPROTOCOLS)}".encode()[:120],
        )
        return ws
    node = app[NODE]
    session = ServerSession(node=node.name, now_ms=now_ms())
    auth_timeout = app.get(AUTH_TIMEOUT, AUTH_TIMEOUT_S)
    conn = DeviceConnection(
        ws, session, node.store, node.hub, request.transport, auth_timeout=auth_timeout, push=app.get(WEBPUSH)
    )
    await conn.run()
    return ws
