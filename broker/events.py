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


def decode(data: bytes) -> tuple[str, Event]:
    node, kind, *rest = msgpack.unpackb(data, raw=False)
    event: Event
    if kind == "c":
        event = ChallengeCreated(ChallengeRecord.from_event(rest[0]))
    elif kind == "e":
        ch, rp, user, status, answer = rest
        event = ChallengeEnded(ch, rp, user, Status(status), Answer.from_event(answer) if answer else None)
    elif kind == "x":
        rp, user, status, chs = rest
        event = ChallengesEnded(rp, user, Status(status), tuple(chs))
    elif kind == "k":
        event = CredentialConfirmed(*rest)
    elif kind == "n":
        event = EnrollmentCompleted(*rest)
    elif kind == "r":
        event = CredentialRevoked(*rest)
    elif kind == "q":
        event = NoticeCreated(Notice.from_event(rest[0]))
    elif kind == "a":
        event = NoticeAnswered(*rest)
    else:
        raise ValueError(f"unknown event kind {kind!r}")
    return node, event
