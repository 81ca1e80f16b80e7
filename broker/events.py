"""Events that broker nodes tell each other over one Redis pub/sub channel.

Every node publishes what it changed and receives everything; each one acts on
the part that concerns its own device connections and waiting RP requests. The
publishing node has already acted locally, so it skips its own events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.challenge import Status

from .models import Answer, ChallengeRecord, Notice


@dataclass(frozen=True, slots=True)
class ChallengeCreated:
    record: ChallengeRecord


@dataclass(frozen=True, slots=True)
class ChallengeEnded:
    """Answered (first valid answer recorded) or expired."""

    ch: str
    rp: str
    user: str
    status: Status
    answer: Answer | None


@dataclass(frozen=True, slots=True)
class ChallengesEnded:
    """Pending challenges of one user ended without an answer: cancelled by the RP,
    superseded by a newer one, or withdrawn after a fraud report or a block. Packed
    by the Lua script that ended them (lua._END_PENDING), the only one that knows
    which ones were still pending."""

    rp: str
    user: str
    status: Status
    chs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CredentialConfirmed:
    """The RP confirmed a newly enrolled credential: it gets ordinary sign-ins now."""

    cid: str


@dataclass(frozen=True, slots=True)
class EnrollmentCompleted:
    enrollment_id: str
    rp: str
    cid: str


@dataclass(frozen=True, slots=True)
class EnrollmentCancelled:
    """The RP withdrew a pending enrollment: its long-polls answer now, not when they time out."""

    enrollment_id: str
    rp: str


@dataclass(frozen=True, slots=True)
class EnrollmentRefused:
    """A device's `enroll` was refused at the user's device cap (broker/credential_cap.py):
    the enrollment stays pending, with its `refused` member set; its long-polls answer now
    (RP API 1.11), so the RP can tell the person instead of showing the QR code in silence."""

    enrollment_id: str
    rp: str


@dataclass(frozen=True, slots=True)
class CredentialRevoked:
    cid: str
    rp: str
    user: str
    reason: str


@dataclass(frozen=True, slots=True)
class NoticeCreated:
    """A recovery registered a new credential: ask the old device "was this you?"."""

    notice: Notice


@dataclass(frozen=True, slots=True)
class NoticeAnswered:
    """The old device answered recovery notice `notice_id` ("confirmed" or "disowned")."""

    notice_id: str
    old_cid: str
    outcome: str


Event = (
    ChallengeCreated
    | ChallengeEnded
    | ChallengesEnded
    | CredentialConfirmed
    | EnrollmentCompleted
    | EnrollmentCancelled
    | EnrollmentRefused
    | CredentialRevoked
    | NoticeCreated
    | NoticeAnswered
)


def encode(node: str, event: Event) -> bytes:
    body: list[Any]
    match event:
        case ChallengeCreated(record):
            body = ["c", record.to_event()]
        case ChallengeEnded(ch, rp, user, status, answer):
            body = ["e", ch, rp, user, status.value, answer.to_event() if answer else None]
        case ChallengesEnded(rp, user, status, chs):
            body = ["x", rp, user, status.value, list(chs)]
        case CredentialConfirmed(cid):
            body = ["k", cid]
        case EnrollmentCompleted(eid, rp, cid):
            body = ["n", eid, rp, cid]
        case EnrollmentCancelled(eid, rp):
            body = ["w", eid, rp]
        case EnrollmentRefused(eid, rp):
            body = ["f", eid, rp]
        case CredentialRevoked(cid, rp, user, reason):
            body = ["r", cid, rp, user, reason]
        case NoticeCreated(notice):
            body = ["q", notice.to_event()]
        case NoticeAnswered(notice_id, old_cid, outcome):
            body = ["a", notice_id, old_cid, outcome]
    return msgpack.packb([node, *body], use_bin_type=True)


def origin(data: bytes) -> str:
    """The publishing node's name, read without decoding the rest (our own events are
    half of what every node receives, and they are skipped)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    unpacker.read_array_header()
    node = unpacker.unpack()
    if not isinstance(node, str):
        raise ValueError("an event starts with the node name")
    return node


class MalformedEvent(ValueError):
    """A message on the event channel that is not an event this release understands."""


_STR, _INT, _BYTES, _OPT_STR, _OPT_INT = str, int, bytes, (str, type(None)), (int, type(None))
# Field types, in order, of what each event kind carries (see encode).
_RECORD = (_STR, _STR, _STR, _STR, _STR, _INT, _BYTES, _BYTES, dict, _BYTES, _INT, _INT)
_ANSWER = (_STR, _STR, _STR, _INT, _BYTES, _BYTES)
_NOTICE = (_STR, _STR, _STR, _STR, _STR, _STR, _STR, _INT, _OPT_INT)  # the last one optional


def _fields(what: str, value: Any, types: tuple[Any, ...], optional: int = 0) -> list[Any]:
    """`value` as a list of len(types) items of those types; the last `optional` ones
    may be missing (a node of the previous release does not send them), and items after
    the last are ignored (a node of a later release may send more, as the recovery
    notice's `recovery_ts` was added: a strict count made every older node of a rolling
    upgrade skip such an event, so its devices heard of it only at their next connect)."""
    if type(value) is not list or len(value) < len(types) - optional:
        raise MalformedEvent(f"{what}: expected {len(types)} fields")
    for i, (item, kind) in enumerate(zip(value, types, strict=False)):
        if not isinstance(item, kind) or isinstance(item, bool):
            raise MalformedEvent(f"{what}: field {i} has the wrong type")
    return value if len(value) <= len(types) else value[: len(types)]


def _record(value: Any) -> ChallengeRecord:
    # The target and number_matching (0 or 1) are optional: a previous release's node
    # sends neither, or no number_matching.
    v = _fields("challenge", value, (*_RECORD, _OPT_STR, _INT), optional=2)
    if not all(type(k) is str and type(x) is str for k, x in v[8].items()):
        raise MalformedEvent("challenge: context must map strings to strings")
    return ChallengeRecord.from_event(v)


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except (ValueError, TypeError):
        raise MalformedEvent(f"unknown status {value!r:.40}") from None


def decode(data: bytes) -> tuple[str, Event]:
    """Strict: anything but an event of encode()'s shapes raises MalformedEvent, so one
    bad message (a bug, a newer release, someone with access to Redis) is skipped by
    the listener (broker/event_listener.py) and never reaches the hub half-formed."""
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedEvent(f"not msgpack: {exc}") from None
    if type(message) is not list or len(message) < 2 or type(message[0]) is not str:
        raise MalformedEvent("an event is a list [node, kind, ...]")
    node, kind, *rest = message
    event: Event
    if kind == "c":
        event = ChallengeCreated(_record(_fields("created", rest, (list,))[0]))
    elif kind == "e":
        ch, rp, user, status, answer = _fields("ended", rest, (_STR, _STR, _STR, _STR, (list, type(None))))
        ans = Answer.from_event(_fields("answer", answer, _ANSWER)) if answer is not None else None
        event = ChallengeEnded(ch, rp, user, _status(status), ans)
    elif kind == "x":
        rp, user, status, chs = _fields("ended many", rest, (_STR, _STR, _STR, list))
        if not all(type(c) is str for c in chs):
            raise MalformedEvent("ended many: challenge ids must be strings")
        event = ChallengesEnded(rp, user, _status(status), tuple(chs))
    elif kind == "k":
        event = CredentialConfirmed(*_fields("confirmed", rest, (_STR,)))
    elif kind == "n":
        event = EnrollmentCompleted(*_fields("enrolled", rest, (_STR, _STR, _STR)))
    elif kind == "w":
        event = EnrollmentCancelled(*_fields("enrollment cancelled", rest, (_STR, _STR)))
    elif kind == "f":
        event = EnrollmentRefused(*_fields("enrollment refused", rest, (_STR, _STR)))
    elif kind == "r":
        event = CredentialRevoked(*_fields("revoked", rest, (_STR, _STR, _STR, _STR)))
    elif kind == "q":
        event = NoticeCreated(
            Notice.from_event(_fields("notice", _fields("notice", rest, (list,))[0], _NOTICE, optional=1))
        )
    elif kind == "a":
        event = NoticeAnswered(*_fields("notice answered", rest, (_STR, _STR, _STR)))
    else:
        raise MalformedEvent(f"unknown event kind {kind!r:.40}")
    return node, event
