"""Records the broker keeps in Redis, and their hash encodings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from protocol.challenge import Status, effective_status
from protocol.frames import Challenge, RecoveryNotice


def _s(h: dict[bytes, bytes], key: str, default: str = "") -> str:
    v = h.get(key.encode())
    return v.decode() if v is not None else default


def _i(h: dict[bytes, bytes], key: str, default: int = 0) -> int:
    v = h.get(key.encode())
    return int(v) if v is not None else default


def _b(h: dict[bytes, bytes], key: str) -> bytes:
    return h.get(key.encode(), b"")


# Between the ids of a challenge's targets where they are one string (its hash field
# `target`, its event, the create script's argument): ids match protocol.fields.ID_RE,
# so none holds it.
TARGET_SEP = " "


def split_targets(joined: str | None) -> tuple[str, ...]:
    """A challenge's targets from their stored or sent form (empty or None: none)."""
    return tuple(joined.split(TARGET_SEP)) if joined else ()


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    rp: str
    user: str
    account: str
    name: str
    public_key: bytes
    created: int
    last_used: int | None
    status: str  # active | revoked
    recovered_from: str | None = None  # registered with this credential's recovery key
    has_notices: bool = False  # may have open recovery notices (broker/notices.py)
    # What the RP checks itself (the broker only keeps and relays it; docs/protocol.md,
    # "Trust model"): the enrollment binding, the current recovery key and the proof
    # that named it, and for a recovered credential the recovery's signatures.
    binding: bytes | None = None
    recovery_pk: bytes | None = None
    recovery_pk_ts: int | None = None  # set by a rotation (signed by this credential's key)
    recovery_pk_sig: bytes | None = None
    recovery_ts: int | None = None  # recovered: when, and the recovery key's and new key's signatures
    recovery_sig: bytes | None = None
    recovery_pop: bytes | None = None
    recovery_rpk: bytes | None = None  # its own recovery key as the recovery named it
    # False from enrollment until the RP confirms it (POST /v1/credentials/{id}/confirm,
    # after its test push): until then it gets only challenges aimed at it, so an
    # unfinished setup cannot approve sign-ins. Stored as unconfirmed=1 (credentials
    # from before this field, and recovered ones, are confirmed).
    confirmed: bool = True

    @classmethod
    def from_hash(cls, cid: str, h: dict[bytes, bytes]) -> Credential:
        last = _i(h, "last_used")
        return cls(
            id=cid,
            rp=_s(h, "rp"),
            user=_s(h, "user"),
            account=_s(h, "account"),
            name=_s(h, "name"),
            public_key=_b(h, "pk"),
            created=_i(h, "created"),
            last_used=last or None,
            status=_s(h, "status"),
            recovered_from=_s(h, "recovered_from") or None,
            has_notices=_s(h, "notices") == "1",
            binding=h.get(b"binding"),
            recovery_pk=h.get(b"recovery_pk"),
            recovery_pk_ts=_i(h, "recovery_pk_ts") or None,
            recovery_pk_sig=h.get(b"recovery_pk_sig"),
            recovery_ts=_i(h, "rec_ts") or None,
            recovery_sig=h.get(b"rec_sig"),
            recovery_pop=h.get(b"rec_pop"),
            recovery_rpk=h.get(b"rec_rpk"),
            confirmed=_s(h, "unconfirmed") != "1",
        )

    @property
    def active(self) -> bool:
        return self.status == "active"

    def receives(self, record: ChallengeRecord) -> bool:
        """Whether challenge `record` goes to this credential: one of those it targets,
        or else any confirmed credential of its user at its RP."""
        if self.rp != record.rp or self.user != record.user:
            return False
        return self.id in record.targets if record.targets else self.confirmed


@dataclass(frozen=True, slots=True)
class EnrollmentRefusal:
    """Why a device's `enroll` with a valid link was refused, and when: the code of the
    `error` frame it got (`too_many_credentials`) and the cap it met."""

    code: str
    at: int
    max_credentials: int

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> EnrollmentRefusal | None:
        if not h.get(b"refused"):
            return None
        return cls(_s(h, "refused"), _i(h, "refused_at"), _i(h, "refused_max"))

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "at": self.at, "max_credentials": self.max_credentials}


@dataclass(frozen=True, slots=True)
class Enrollment:
    id: str
    rp: str
    user: str
    account: str
    recoverable: bool
    status: str  # pending | completed | cancelled (expired is computed from `expires`)
    expires: int
    credential_id: str | None
    # The latest refusal of a device's `enroll` while it stayed pending (RP API 1.11):
    # at the user's device cap (broker/credential_cap.py).
    refused: EnrollmentRefusal | None = None

    @classmethod
    def from_hash(cls, eid: str, h: dict[bytes, bytes]) -> Enrollment:
        return cls(
            id=eid,
            rp=_s(h, "rp"),
            user=_s(h, "user"),
            account=_s(h, "account"),
            recoverable=_s(h, "recoverable") == "1",
            status=_s(h, "status"),
            expires=_i(h, "expires"),
            credential_id=_s(h, "cid") or None,
            refused=EnrollmentRefusal.from_hash(h),
        )

    def status_at(self, now_ms: int) -> str:
        """What the RP API says: one the RP withdrew (cancelled) reads as expired, as
        it can no longer complete (the API's statuses stay those readers know)."""
        if self.status == "cancelled" or (self.status == "pending" and now_ms >= self.expires):
            return "expired"
        return self.status


@dataclass(frozen=True, slots=True)
class Answer:
    """The signed answer as the device sent it (what the RP SDK verifies)."""

    cid: str
    decision: str
    number: str
    ts: int
    ctx_hash: bytes
    sig: bytes

    def to_event(self) -> list[Any]:
        return [self.cid, self.decision, self.number, self.ts, self.ctx_hash, self.sig]

    @classmethod
    def from_event(cls, v: list[Any]) -> Answer:
        return cls(*v)


@dataclass(slots=True)
class ChallengeRecord:
    id: str
    rp: str
    rp_name: str
    user: str
    number: str
    digits: int
    nonce: bytes
    rp_nonce: bytes
    ctx: dict[str, str]
    ctx_hash: bytes
    created: int
    expires: int
    status: Status = Status.PENDING
    answer: Answer | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Sent only to these credentials, confirmed or not (the RP API's credential_id, e.g.
    # a new device's setup test push, or credential_ids); empty: every confirmed
    # credential of the user. Stored and sent between nodes as one string, the ids
    # joined by a space (ids never hold one): a node of the release before sets reads
    # it as one id that no credential has, so it delivers such a challenge to no one
    # rather than to every device (docs/operations.md, "Upgrading and rolling back").
    targets: tuple[str, ...] = ()
    # False for a challenge the RP created without number matching (RP API 1.9, only
    # where its policy allows it): the RP gets no number, devices are told `nm: false`,
    # and any approval signed over it is `approved` whatever it typed. `number` is still
    # drawn (never shown anywhere) so that every other path stays as it is. Stored as
    # nm=0; a record without it (every one made before) has number matching.
    number_matching: bool = True
    # When this node created, first delivered and recorded the answer of this record
    # (time.perf_counter; 0: not here): the stage histograms of broker/metrics.py.
    # Never stored, never sent.
    created_at: float = field(default=0.0, compare=False, repr=False)
    delivered_at: float = field(default=0.0, compare=False, repr=False)
    answered_at: float = field(default=0.0, compare=False, repr=False)

    def to_fields(self) -> list[Any]:
        """Field/value pairs for HSET at creation (a pending challenge)."""
        fields: list[Any] = [
            "rp", self.rp, "rp_name", self.rp_name, "user", self.user, "number", self.number,
            "digits", self.digits, "nonce", self.nonce, "rp_nonce", self.rp_nonce,
            "ctx", json.dumps(self.ctx), "ctx_hash", self.ctx_hash, "created", self.created,
            "expires", self.expires, "status", Status.PENDING.value,
        ]  # fmt: skip
        if self.targets:
            fields += ["target", TARGET_SEP.join(self.targets)]
        if not self.number_matching:
            fields += ["nm", "0"]
        return fields

    @classmethod
    def from_hash(cls, ch: str, h: dict[bytes, bytes]) -> ChallengeRecord:
        answer = None
        if b"a_cid" in h:
            answer = Answer(
                cid=_s(h, "a_cid"),
                decision=_s(h, "a_decision"),
                number=_s(h, "a_number"),
                ts=_i(h, "a_ts"),
                ctx_hash=_b(h, "a_ctx_hash"),
                sig=_b(h, "a_sig"),
            )
        return cls(
            id=ch,
            rp=_s(h, "rp"),
            rp_name=_s(h, "rp_name"),
            user=_s(h, "user"),
            number=_s(h, "number"),
            digits=_i(h, "digits"),
            nonce=_b(h, "nonce"),
            rp_nonce=_b(h, "rp_nonce"),
            ctx=json.loads(_s(h, "ctx", "{}")),
            ctx_hash=_b(h, "ctx_hash"),
            created=_i(h, "created"),
            expires=_i(h, "expires"),
            status=Status(_s(h, "status", "pending")),
            answer=answer,
            targets=split_targets(_s(h, "target")),
            number_matching=_s(h, "nm") != "0",
        )

    def to_event(self) -> list[Any]:
        return [
            self.id, self.rp, self.rp_name, self.user, self.number, self.digits,
            self.nonce, self.rp_nonce, self.ctx, self.ctx_hash, self.created, self.expires,
            TARGET_SEP.join(self.targets) or None,
            int(self.number_matching),
        ]  # fmt: skip

    @classmethod
    def from_event(cls, v: list[Any]) -> ChallengeRecord:
        # A node of a previous release sends no target, or no number_matching (a rolling
        # upgrade; such a node never makes a challenge without number matching).
        return cls(
            *v[:12],
            targets=split_targets(v[12]) if len(v) > 12 else (),
            number_matching=bool(v[13]) if len(v) > 13 else True,
        )

    def status_at(self, now_ms: int) -> Status:
        return effective_status(self.status, now_ms, self.expires)

    def frame_for(self, cid: str, account: str) -> Challenge:
        return Challenge(
            ch=self.id,
            cid=cid,
            rp=self.rp,
            rp_name=self.rp_name,
            account=account,
            nonce=self.nonce,
            rp_nonce=self.rp_nonce,
            ctx=self.ctx,
            created=self.created,
            expires=self.expires,
            digits=self.digits,
            nm=None if self.number_matching else False,
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """ "Was this you?": credential `new_cid` was registered with the recovery key of
    `old_cid` (broker/notices.py keeps it until the old device answers)."""

    id: str
    old_cid: str
    new_cid: str
    new_name: str
    rp: str
    user: str
    account: str
    created: int
    # The recovery's signed ts (the new device's clock; None in a notice made by an
    # older release): the old device's next rotation must be newer (section 16).
    recovery_ts: int | None = None

    def to_fields(self) -> list[Any]:
        return [
            "old", self.old_cid, "new", self.new_cid, "name", self.new_name, "rp", self.rp,
            "user", self.user, "account", self.account, "created", self.created,
            *(["rts", self.recovery_ts] if self.recovery_ts is not None else []),
        ]  # fmt: skip

    @classmethod
    def from_hash(cls, notice_id: str, h: dict[bytes, bytes]) -> Notice:
        return cls(
            id=notice_id,
            old_cid=_s(h, "old"),
            new_cid=_s(h, "new"),
            new_name=_s(h, "name"),
            rp=_s(h, "rp"),
            user=_s(h, "user"),
            account=_s(h, "account"),
            created=_i(h, "created"),
            recovery_ts=_i(h, "rts") or None,
        )

    def to_event(self) -> list[Any]:
        return [
            self.id,
            self.old_cid,
            self.new_cid,
            self.new_name,
            self.rp,
            self.user,
            self.account,
            self.created,
            self.recovery_ts,
        ]

    @classmethod
    def from_event(cls, v: list[Any]) -> Notice:
        return cls(*v)

    def frame(self) -> RecoveryNotice:
        return RecoveryNotice(
            notice=self.id,
            cid=self.old_cid,
            new_cid=self.new_cid,
            new_name=self.new_name,
            time=self.created,
            recovery_ts=self.recovery_ts,
        )
