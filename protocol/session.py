"""Connection state for both ends of a device WebSocket, without I/O.

Modelled on the `websockets` and h11 sans-I/O designs: the shells feed each
received message to `receive()` and get a validated frame (or a ProtocolError
saying how to close); they send what the `*_frame` helpers return. Which frame is
allowed in which state lives here and nowhere else.

    broker side:  AWAITING_AUTH --authenticate--> READY
                  (enroll is allowed in both states; it authenticates the new
                   credential on this connection, since its proof signs the nonce)
    device side:  AWAITING_HELLO --hello--> CONNECTED --welcome--> READY

What the broker refuses first, when a frame has several faults (docs/protocol.md,
"Error precedence"): everything `receive` checks, which needs no state beyond this
connection's and is fatal (structure, direction, the shape of an answer, the
connection's state); then, for an answer, the broker's checks in a fixed order
(broker/device_ws.py, DeviceConnection.on_answer).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping

from . import signing
from .challenge import check_answer_shape
from .codec import MAX_FRAME_SIZE, decode, encode
from .errors import ErrorCode, ProtocolError
from .frames import (
    Answer,
    Authenticate,
    Challenge,
    Enroll,
    Enrolled,
    Frame,
    Hello,
    PushSubscribe,
    RecoveryAnswer,
    RecoveryNotice,
    Revoke,
    Sender,
    Welcome,
)


class ServerState(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"


class ClientState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    CONNECTED = "connected"
    READY = "ready"


class ServerSession:
    """The broker's view of one device connection."""

    def __init__(self, *, node: str, now_ms: int, max_frame: int = MAX_FRAME_SIZE) -> None:
        self.nonce = secrets.token_bytes(32)
        self.node = node
        self.max_frame = max_frame
        self.state = ServerState.AWAITING_AUTH
        self.credentials: set[str] = set()  # authenticated on this connection
        # Revoked while authenticated on this connection: a later frame naming one is
        # told credential_revoked (what happened to it), not unknown_credential.
        self.revoked_here: set[str] = set()
        # Once a credential is proven here (authenticate or enroll), the connection has
        # passed its authentication deadline, whatever becomes of that credential later.
        self.proven = False
        self._hello = Hello(nonce=self.nonce, time=now_ms, max_frame=max_frame, node=node)

    def hello_frame(self) -> Hello:
        return self._hello

    def receive(self, data: bytes) -> Frame:
        frame = decode(data, max_size=self.max_frame)
        if frame.SENDER is not Sender.DEVICE:
            raise ProtocolError(
                ErrorCode.UNEXPECTED_FRAME,
                f"{frame.TYPE} is sent by the broker, not a device",
            )
        if isinstance(frame, Answer):
            # A shape fault that needs no state (a deny or report with a number) is
            # refused here, before anything about the credential or the challenge:
            # always 4400 invalid_field. An approval without a number is refused only
            # for a challenge with number matching (broker: on_answer).
            check_answer_shape(frame.decision, frame.number)
        elif isinstance(frame, PushSubscribe):
            frame.check_shape()
        if isinstance(frame, Authenticate):
            if self.state is not ServerState.AWAITING_AUTH:
                raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, "already authenticated")
        elif isinstance(frame, Answer | Revoke | RecoveryAnswer) and self.state is not ServerState.READY:
            raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, f"{frame.TYPE} before authenticate")
        return frame

    def check_owned(self, cid: str, ref: str | None = None) -> None:
        """A frame about `cid` must come from a connection that proved it."""
        if cid in self.revoked_here:
            raise ProtocolError(ErrorCode.CREDENTIAL_REVOKED, "credential was revoked", ref=ref)
        if cid not in self.credentials:
            raise ProtocolError(
                ErrorCode.UNKNOWN_CREDENTIAL,
                "credential not authenticated on this connection",
                ref=ref,
            )

    def verify_auth(self, cid: str, public_key: bytes, sig: bytes) -> None:
        signing.verify(public_key, signing.auth_bytes(self.nonce, cid), sig)

    def verify_enroll(self, frame: Enroll) -> None:
        signing.verify(
            frame.pk,
            signing.enroll_bytes(self.nonce, frame.token, frame.pk, frame.name, frame.rpk),
            frame.sig,
        )

    def authenticated(self, cids: list[str]) -> None:
        """Called by the shell once it has checked the proofs of `authenticate`."""
        self.credentials.update(cids)
        self.proven = self.proven or bool(cids)
        self.state = ServerState.READY

    def enrolled(self, cid: str) -> None:
        self.credentials.add(cid)
        self.proven = True

    def revoked(self, cid: str) -> None:
        if cid in self.credentials:
            self.credentials.discard(cid)
            self.revoked_here.add(cid)


class ClientSession:
    """The device's view of one broker connection."""

    def __init__(self, *, max_frame: int = MAX_FRAME_SIZE) -> None:
        self.state = ClientState.AWAITING_HELLO
        self.nonce: bytes | None = None
        self.hello: Hello | None = None
        self.max_frame = max_frame
        self.credentials: set[str] = set()

    def receive(self, data: bytes) -> Frame:
        frame = decode(data, max_size=self.max_frame)
        if frame.SENDER is not Sender.BROKER:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"{frame.TYPE} is sent by devices")
        if self.state is ClientState.AWAITING_HELLO:
            if not isinstance(frame, Hello):
                raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, "the first frame must be hello")
            self.hello, self.nonce = frame, frame.nonce
            self.state = ClientState.CONNECTED
        elif isinstance(frame, Hello):
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, "hello sent twice")
        elif isinstance(frame, Welcome):
            self.credentials.update(frame.accepted)
            self.state = ClientState.READY
        elif isinstance(frame, Enrolled):  # the new credential is this connection's too
            self.credentials.add(frame.cid)
        elif isinstance(frame, Challenge | RecoveryNotice) and self.state is not ClientState.READY:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"{frame.TYPE} before welcome")
        return frame

    def _nonce(self) -> bytes:
        if self.nonce is None:
            raise RuntimeError("no hello received yet")
        return self.nonce

    def authenticate_frame(self, seeds: Mapping[str, signing.Signer]) -> bytes:
        """Sign the hello nonce with every credential key (cid -> 32-byte seed or SigningKey)."""
        nonce = self._nonce()
        creds = tuple(
            {"cid": cid, "sig": signing.sign(seed, signing.auth_bytes(nonce, cid))}
            for cid, seed in seeds.items()
        )
        return encode(Authenticate(creds=creds))

    def enroll_frame(
        self,
        *,
        rid: int,
        token: str,
        seed: bytes,
        name: str,
        rp: str = "",
        binding_secret: bytes | None = None,
        recovery_pk: bytes | None = None,
    ) -> bytes:
        """`binding_secret` is the link's `es` (the RP's), `rp` the link's RP id."""
        return encode(
            enroll(
                self._nonce(),
                rid=rid,
                token=token,
                seed=seed,
                name=name,
                rp=rp,
                binding_secret=binding_secret,
                recovery_pk=recovery_pk,
            )
        )


def enroll(
    hello_nonce: bytes,
    *,
    rid: int,
    token: str,
    seed: bytes,
    name: str,
    rp: str,
    binding_secret: bytes | None,
    recovery_pk: bytes | None,
) -> Enroll:
    """The `enroll` frame: proof of possession for the broker, binding for the RP."""
    pk = signing.public_key(seed)
    sig = signing.sign(seed, signing.enroll_bytes(hello_nonce, token, pk, name, recovery_pk))
    binding = None
    if binding_secret is not None:
        binding = signing.sign(seed, signing.binding_bytes(rp, token, binding_secret, pk, name, recovery_pk))
    return Enroll(rid=rid, token=token, pk=pk, name=name, rpk=recovery_pk, binding=binding, sig=sig)


def sign_answer(challenge: Challenge, *, seed: signing.Signer, decision: str, number: str, ts: int) -> Answer:
    """The device's signed answer to `challenge`, over the context it was shown."""
    ctx_hash = signing.context_hash(challenge.ctx)
    message = signing.answer_bytes(
        rp=challenge.rp,
        ch=challenge.ch,
        nonce=challenge.nonce,
        rp_nonce=challenge.rp_nonce,
        cid=challenge.cid,
        decision=decision,
        number=number,
        ts=ts,
        ctx_hash=ctx_hash,
    )
    return Answer(
        ch=challenge.ch,
        cid=challenge.cid,
        decision=decision,
        number=number,
        ts=ts,
        ctx_hash=ctx_hash,
        sig=signing.sign(seed, message),
    )


def sign_recovery_answer(
    notice: RecoveryNotice, *, seed: bytes, decision: str, ts: int, rid: int
) -> RecoveryAnswer:
    """The old credential's signed answer to "was this you?" (`seed` is its key)."""
    message = signing.recovery_answer_bytes(notice.notice, notice.cid, notice.new_cid, decision, ts)
    return RecoveryAnswer(
        rid=rid,
        notice=notice.notice,
        cid=notice.cid,
        decision=decision,
        ts=ts,
        sig=signing.sign(seed, message),
    )
