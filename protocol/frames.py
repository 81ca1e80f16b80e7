"""Device frames: one dataclass per frame type, and the schema each is checked by.

A frame on the wire is one binary WebSocket message holding one msgpack map:
``{"v": 2, "t": <type>, <fields>...}``. Every field is required (optional ones are
sent as nil; a field added within the version, `f.Added`, may be missing and is left
out when nil), keys a type does not define are ignored (later revisions may add
some), and each value is checked by the validator named in the frame's SCHEMA.
Codes the broker sends (reasons, outcomes, error codes) accept any well-formed code:
the enums (codes.py) are what this version sends, not all a receiver may see.
`codec.py` does the bytes; this module is the table.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import fields as f

# Re-exported: the codes are part of this module's table for its users.
from .codes import CancelReason as CancelReason
from .codes import Decision as Decision
from .codes import NoticeDecision as NoticeDecision
from .codes import NoticeOutcome as NoticeOutcome
from .codes import RevokeReason as RevokeReason
from .errors import ErrorCode, ProtocolError


class Sender(enum.Enum):
    BROKER = "broker"
    DEVICE = "device"


TYPED_NUMBER = f.Str(max_len=8, pattern=re.compile(r"^[0-9]{0,8}$"))
CONTEXT = f.StrMap()


@dataclass(frozen=True, slots=True)
class Frame:
    TYPE: ClassVar[str]
    SENDER: ClassVar[Sender]
    SCHEMA: ClassVar[dict[str, f.Validator]]

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {name: getattr(self, name) for name in self.SCHEMA}
        for name in _added_fields(type(self)):
            if body[name] is None:
                del body[name]  # a field added within the version is left out when nil
        for key, value in body.items():
            if isinstance(value, tuple):  # msgpack has one array type
                body[key] = list(value)
        return body


@functools.cache
def _added_fields(cls: type[Frame]) -> tuple[str, ...]:
    """A frame type's fields added within the version (f.Added), found once per type:
    to_wire runs for every frame sent, and most types have none."""
    return tuple(name for name, check in cls.SCHEMA.items() if isinstance(check, f.Added))


# -- broker -> device ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Frame):
    """First frame on every connection: a fresh nonce to sign, and limits."""

    TYPE: ClassVar[str] = "hello"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "nonce": f.NONCE,
        "time": f.TIMESTAMP_MS,
        "max_frame": f.Int(1024, 1 << 20),
        "node": f.Str(max_len=64),
    }
    nonce: bytes
    time: int
    max_frame: int
    node: str


@dataclass(frozen=True, slots=True)
class Welcome(Frame):
    """Answer to `authenticate`; `pending` challenge frames follow it at once."""

    TYPE: ClassVar[str] = "welcome"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "accepted": f.ListOf(f.IDENT),
        "rejected": f.ListOf(f.Record((("cid", f.IDENT), ("code", f.CODE)))),
        "pending": f.Int(0, 1 << 16),
        "notices": f.Int(0, 1 << 16),
    }
    accepted: tuple[str, ...]
    rejected: tuple[dict[str, str], ...]
    pending: int
    # How many `recovery_notice` frames follow the `pending` challenges (so a one-shot
    # command knows when it has them all).
    notices: int = 0


@dataclass(frozen=True, slots=True)
class Enrolled(Frame):
    TYPE: ClassVar[str] = "enrolled"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "cid": f.IDENT,
        "rp": f.IDENT,
        "rp_name": f.TEXT,
        "user": f.TEXT,
        "account": f.TEXT,
    }
    rid: int
    cid: str
    rp: str
    rp_name: str
    user: str
    account: str


@dataclass(frozen=True, slots=True)
class Challenge(Frame):
    """A sign-in request for one credential. It never carries the number."""

    TYPE: ClassVar[str] = "challenge"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "ch": f.IDENT,
        "cid": f.IDENT,
        "rp": f.IDENT,
        "rp_name": f.TEXT,
        "account": f.TEXT,
        "nonce": f.NONCE,
        "rp_nonce": f.NONCE,
        "ctx": CONTEXT,
        "created": f.TIMESTAMP_MS,
        "expires": f.TIMESTAMP_MS,
        "digits": f.Int(1, 8),
        # Added within version 2: false for a challenge the RP created without number
        # matching (no number shown anywhere: the device asks approve / deny / report and
        # signs an empty number); left out (nil) otherwise. A device that predates it asks
        # for `digits` digits, and whatever it types approves such a challenge.
        "nm": f.Added(f.Bool()),
    }
    ch: str
    cid: str
    rp: str
    rp_name: str
    account: str
    nonce: bytes
    # The RP's own fresh value (version 2): the answer signs it, and the RP accepts
    # only an answer over the value it made, so a replayed old approval cannot pass.
    rp_nonce: bytes
    ctx: dict[str, str]
    created: int
    expires: int
    digits: int
    nm: bool | None = None

    @property
    def number_matching(self) -> bool:
        """Whether the device asks for the number shown on the sign-in screen (nil or
        true: yes; only an explicit false turns it off)."""
        return self.nm is not False


@dataclass(frozen=True, slots=True)
class AnswerResult(Frame):
    """The broker recorded this device's answer; `outcome` is the challenge's end."""

    TYPE: ClassVar[str] = "answer_result"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "ch": f.IDENT,
        "outcome": f.CODE,  # a challenge Status (protocol/challenge.py)
    }
    ch: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Cancel(Frame):
    TYPE: ClassVar[str] = "cancel"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "ch": f.IDENT,
        "reason": f.CODE,  # a CancelReason; unknown ones mean "ended"
        # Added within version 2: with reason `answered`, the credential whose answer
        # ended it, only if that credential is authenticated on the receiving
        # connection ("answered on this device"); else left out. Never another
        # device's credential id (docs/protocol.md, section 19).
        "by": f.Added(f.IDENT),
    }
    ch: str
    reason: str
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Revoked(Frame):
    TYPE: ClassVar[str] = "revoked"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "cid": f.IDENT,
        "reason": f.CODE,  # a RevokeReason; unknown ones mean "removed"
        "rid": f.Optional(f.REQUEST_ID),
    }
    cid: str
    reason: str
    rid: int | None = None


@dataclass(frozen=True, slots=True)
class RecoveryNotice(Frame):
    """ "Was this you?": a new device registered credential `new_cid` for the account
    of `cid` (this device's) with its recovery key, at `time`. Answer with
    `recovery_answer`; it stays open (and comes again on every connect) until then."""

    TYPE: ClassVar[str] = "recovery_notice"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "notice": f.IDENT,
        "cid": f.IDENT,
        "new_cid": f.IDENT,
        "new_name": f.NAME,
        "time": f.TIMESTAMP_MS,
        # Added within version 2: the recovery's signed `ts` (the new device's clock),
        # which the RP orders this credential's next recovery-key rotation after
        # (docs/protocol.md, section 16); left out by a broker that did not keep it.
        "recovery_ts": f.Added(f.TIMESTAMP_MS),
    }
    notice: str
    cid: str
    new_cid: str
    new_name: str
    time: int
    recovery_ts: int | None = None


@dataclass(frozen=True, slots=True)
class RecoveryResult(Frame):
    """A recovery notice is closed: sent to every connection holding `cid`; `rid` is
    the `recovery_answer`'s on the connection that answered, nil elsewhere."""

    TYPE: ClassVar[str] = "recovery_result"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "notice": f.IDENT,
        "cid": f.IDENT,
        "outcome": f.CODE,  # a NoticeOutcome; unknown ones mean "closed"
        "rid": f.Optional(f.REQUEST_ID),
    }
    notice: str
    cid: str
    outcome: str
    rid: int | None = None


@dataclass(frozen=True, slots=True)
class Error(Frame):
    """A refused request; the connection stays open (fatal errors close it instead)."""

    TYPE: ClassVar[str] = "error"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "code": f.CODE,
        "message": f.Str(max_len=512),
        "ref": f.Optional(f.Str(max_len=64)),
    }
    code: str
    message: str
    ref: str | None = None


# -- device -> broker ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate(Frame):
    """Proof of each credential key over the hello nonce (signing.auth_bytes)."""

    TYPE: ClassVar[str] = "authenticate"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "creds": f.ListOf(f.Record((("cid", f.IDENT), ("sig", f.SIGNATURE))), max_items=64),
    }
    creds: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Enroll(Frame):
    """Register a new credential with a single-use enrollment token.

    `sig` proves possession of `pk` to the broker (over this connection's nonce);
    `binding` proves it to the RP: a signature by the new key over the secret the RP
    put in the enrollment link, which the broker never sees (signing.binding_bytes).
    `rpk` is the credential's recovery public key when the link says recoverable."""

    TYPE: ClassVar[str] = "enroll"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "token": f.Str(max_len=128, min_len=16, pattern=f.ID_RE_LONG),
        "pk": f.PUBLIC_KEY,
        "name": f.DEVICE_NAME,
        "rpk": f.Optional(f.PUBLIC_KEY),
        "binding": f.Optional(f.SIGNATURE),
        "sig": f.SIGNATURE,
    }
    rid: int
    token: str
    pk: bytes
    name: str
    rpk: bytes | None
    binding: bytes | None
    sig: bytes


@dataclass(frozen=True, slots=True)
class Answer(Frame):
    """A signed decision on a challenge (signing.answer_bytes)."""

    TYPE: ClassVar[str] = "answer"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "ch": f.IDENT,
        "cid": f.IDENT,
        "decision": f.OneOf(frozenset(Decision)),
        "number": TYPED_NUMBER,
        "ts": f.TIMESTAMP_MS,
        "ctx_hash": f.HASH,
        "sig": f.SIGNATURE,
    }
    ch: str
    cid: str
    decision: str
    number: str
    ts: int
    ctx_hash: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class Revoke(Frame):
    """The device removes one of its own (authenticated) credentials."""

    TYPE: ClassVar[str] = "revoke"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "cid": f.IDENT,
    }
    rid: int
    cid: str


@dataclass(frozen=True, slots=True)
class RecoveryAnswer(Frame):
    """The old credential answers a recovery notice (signing.recovery_answer_bytes)."""

    TYPE: ClassVar[str] = "recovery_answer"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "notice": f.IDENT,
        "cid": f.IDENT,
        "decision": f.OneOf(frozenset(NoticeDecision)),
        "ts": f.TIMESTAMP_MS,
        "sig": f.SIGNATURE,
    }
    rid: int
    notice: str
    cid: str
    decision: str
    ts: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class PushSubscribe(Frame):
    """Optional extension (docs/protocol.md, appendix A): wake these credentials with Web
    Push when a request comes while no connection holds them. All of endpoint, p256dh
    and auth, or none: none asks for the broker's key and removes any subscription."""

    TYPE: ClassVar[str] = "push_subscribe"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "cids": f.ListOf(f.IDENT, max_items=64),
        "endpoint": f.Optional(f.Str(max_len=2048, min_len=1)),
        "p256dh": f.Optional(f.Bytes(length=65)),
        "auth": f.Optional(f.Bytes(length=16)),
    }
    rid: int
    cids: tuple[str, ...]
    endpoint: str | None
    p256dh: bytes | None
    auth: bytes | None

    def check_shape(self) -> None:
        """All three set or all nil: a shape fault, refused before anything else
        (4400 invalid_field, whether or not the broker sends Web Push)."""
        parts = (self.endpoint, self.p256dh, self.auth)
        if any(p is None for p in parts) and any(p is not None for p in parts):
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, "push_subscribe: endpoint, p256dh and auth go together"
            )


@dataclass(frozen=True, slots=True)
class PushSubscribed(Frame):
    """The answer to push_subscribe: the broker's VAPID public key (the subscription's
    applicationServerKey) and the credentials now subscribed (none after a removal)."""

    TYPE: ClassVar[str] = "push_subscribed"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {
        "rid": f.REQUEST_ID,
        "key": f.Bytes(length=65),
        "cids": f.ListOf(f.IDENT, max_items=64),
    }
    rid: int
    key: bytes
    cids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping(Frame):
    """Optional extension within version 2 (docs/protocol.md, `ping`): is this connection
    still alive? A device that cannot send WebSocket pings (a web page) asks with a frame;
    the broker answers `pong` with the same rid."""

    TYPE: ClassVar[str] = "ping"
    SENDER: ClassVar[Sender] = Sender.DEVICE
    SCHEMA: ClassVar[dict[str, f.Validator]] = {"rid": f.REQUEST_ID}
    rid: int


@dataclass(frozen=True, slots=True)
class Pong(Frame):
    """The answer to `ping`."""

    TYPE: ClassVar[str] = "pong"
    SENDER: ClassVar[Sender] = Sender.BROKER
    SCHEMA: ClassVar[dict[str, f.Validator]] = {"rid": f.REQUEST_ID}
    rid: int


_ALL: tuple[type[Frame], ...] = (Hello, Welcome, Enrolled, Challenge, AnswerResult, Cancel, Revoked, Error)
_ALL += (RecoveryNotice, RecoveryResult)
_ALL += (Authenticate, Enroll, Answer, Revoke, RecoveryAnswer)
_ALL += (PushSubscribe, PushSubscribed)
_ALL += (Ping, Pong)
FRAME_TYPES: dict[str, type[Frame]] = {cls.TYPE: cls for cls in _ALL}
