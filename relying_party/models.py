"""What the SDK returns: plain frozen dataclasses, parsed strictly from broker JSON.

Credential and Challenge also convert to and from JSON-safe dicts, because an RP
keeps them between requests: the credential's public key in its user store (every
answer is verified with it), the challenge in the sign-in session (its nonce,
number and context are what the answer must be signed over).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.challenge import Status
from protocol.frames import Decision
from protocol.uri import TotpParams

from . import wire
from .errors import BadBrokerResponse
from .wire import get, get_bytes, get_optional, get_str_map

__all__ = [
    "Challenge",
    "Credential",
    "Decision",
    "Enrollment",
    "EnrollmentStatus",
    "Health",
    "RelyingParty",
    "SignInResult",
    "Status",
    "VerifiedAnswer",
]


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RelyingParty:
        return cls(id=get(body, "id", str, "rp"), name=get(body, "name", str, "rp"))


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    status: str
    node: str | None
    redis: str | None


@dataclass(frozen=True, slots=True)
class RecoveryKey:
    """A credential's recovery public key. Named at enrollment (then `ts` and `signature`
    are None: the enrollment binding covers it), or by a later rotation signed by the
    credential's own key over (cid, public_key, ts) (signing.recovery_key_bytes)."""

    public_key: bytes
    ts: int | None = None
    signature: bytes | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RecoveryKey:
        what = "credential.recovery_key"
        sig = body.get("signature")
        return cls(
            public_key=get_bytes(body, "public_key", what, length=32),
            ts=get_optional(body, "ts", int, what),
            signature=None if sig is None else get_bytes(body, "signature", what, length=64),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "public_key": wire.b64encode(self.public_key),
            "ts": self.ts,
            "signature": None if self.signature is None else wire.b64encode(self.signature),
        }


@dataclass(frozen=True, slots=True)
class RecoveryProof:
    """How a recovered credential was made: signed at `ts` by the old credential's
    recovery key (`recovery_signature`) and by the new key (`signature`), over
    signing.recover_bytes(rp, from, public key, name, new recovery key, ts)."""

    from_id: str
    ts: int
    recovery_signature: bytes
    signature: bytes

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RecoveryProof:
        what = "credential.recovery"
        return cls(
            from_id=get(body, "from", str, what),
            ts=get(body, "ts", int, what),
            recovery_signature=get_bytes(body, "recovery_signature", what, length=64),
            signature=get_bytes(body, "signature", what, length=64),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_id,
            "ts": self.ts,
            "recovery_signature": wire.b64encode(self.recovery_signature),
            "signature": wire.b64encode(self.signature),
        }


@dataclass(frozen=True, slots=True)
class Credential:
    """A device credential; the RP stores `public_key` and verifies answers with it.

    Read from the broker, the key and the proofs are claims: the SDK checks them
    (`wait_enrollment`, `sync_credentials`) before an RP stores them. Stored by the
    RP, `recovery_key` is the one recovery key it accepts for this credential (None
    once it was used or the RP did not enroll the account as recoverable).
    """

    id: str
    user: str
    name: str
    public_key: bytes
    created_at: int
    last_used_at: int | None = None
    account: str | None = None  # the account label shown on the device
    # Set when a restored device registered this credential with the recovery key of
    # credential `recovered_from` (an account the RP enrolled as recoverable).
    recovered_from: str | None = None
    binding: bytes | None = None  # the enrollment binding (signing.binding_bytes), from the broker
    recovery_key: RecoveryKey | None = None
    recovery: RecoveryProof | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Credential:
        what = "credential"
        binding, rkey, rproof = body.get("binding"), body.get("recovery_key"), body.get("recovery")
        return cls(
            id=get(body, "id", str, what),
            user=get(body, "user", str, what),
            name=get(body, "name", str, what),
            public_key=get_bytes(body, "public_key", what, length=32),
            created_at=get(body, "created_at", int, what),
            last_used_at=get_optional(body, "last_used_at", int, what),
            account=get_optional(body, "account", str, what),
            recovered_from=get_optional(body, "recovered_from", str, what),
            binding=None if binding is None else get_bytes(body, "binding", what, length=64),
            recovery_key=None if rkey is None else RecoveryKey.from_json(wire.obj(rkey, what)),
            recovery=None if rproof is None else RecoveryProof.from_json(wire.obj(rproof, what)),
        )

    def to_json(self) -> dict[str, Any]:
        """The broker's JSON form (public key in base64url): from_json reads it back."""
        return {
            "binding": None if self.binding is None else wire.b64encode(self.binding),
            "recovery_key": None if self.recovery_key is None else self.recovery_key.to_json(),
            "recovery": None if self.recovery is None else self.recovery.to_json(),
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "public_key": wire.b64encode(self.public_key),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "account": self.account,
            "recovered_from": self.recovered_from,
        }


class EnrollmentStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Enrollment:
    """An enrollment; `uri` (the QR code's text) is only known right after creation."""

    id: str
    user: str
    account: str
    status: EnrollmentStatus
    expires_at: int
    credential: Credential | None = None
    token: str | None = None
    broker_url: str | None = None
    uri: str | None = None
    totp: TotpParams | None = None  # provisioned by the RP; the broker never sees it
    # The link's `es`: made by the SDK, shown only in the link, never sent to the
    # broker. Keep it with the pending enrollment (to_json / from_stored):
    # wait_enrollment checks the device's binding with it.
    binding_secret: bytes | None = None
    recoverable: bool = False

    @property
    def completed(self) -> bool:
        return self.status is EnrollmentStatus.COMPLETED

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Enrollment:
        what = "enrollment"
        raw_status = get(body, "status", str, what)
        try:
            status = EnrollmentStatus(raw_status)
        except ValueError:
            raise BadBrokerResponse(f"enrollment: unknown status {raw_status[:32]!r}") from None
        cred = body.get("credential")
        credential = None if cred is None else Credential.from_json(wire.obj(cred, "enrollment.credential"))
        if status is EnrollmentStatus.COMPLETED and credential is None:
            raise BadBrokerResponse("enrollment: completed without a credential")
        return cls(
            id=get(body, "id", str, what),
            user=get(body, "user", str, what),
            account=get(body, "account", str, what),
            status=status,
            expires_at=get(body, "expires_at", int, what),
            credential=credential,
            token=get_optional(body, "token", str, what),
            broker_url=get_optional(body, "broker_url", str, what),
            uri=get_optional(body, "uri", str, what),
            recoverable=body.get("recoverable") is True,
        )

    def to_json(self) -> dict[str, Any]:
        """What an RP keeps of a pending enrollment between requests (it holds the
        link's secret: keep it server-side); from_stored reads it back."""
        return {
            "id": self.id,
            "user": self.user,
            "account": self.account,
            "status": self.status.value,
            "expires_at": self.expires_at,
            "token": self.token,
            "uri": self.uri,
            "recoverable": self.recoverable,
            "binding_secret": None if self.binding_secret is None else wire.b64encode(self.binding_secret),
        }

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> Enrollment:
        secret = body.get("binding_secret")
        return replace(
            cls.from_json({**body, "credential": None}),
            binding_secret=None
            if secret is None
            else get_bytes(body, "binding_secret", "stored enrollment", length=32),
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """A sign-in challenge as the RP created it: the values the answer must be signed over.

    `context` is the context the RP sent (not the broker's echo of it), and `number`
    is what the RP shows the user; the SDK compares the typed number with it itself.
    """

    id: str
    user: str
    number: str
    digits: int
    nonce: bytes
    # The SDK's own fresh value for this challenge: the device signs it, and only an
    # answer over it verifies (a broker replaying an older approval cannot pass).
    rp_nonce: bytes = b""
    context: dict[str, str] = field(default_factory=dict)
    # By the RP's clock (the SDK sets them; never the broker's word): an answer must
    # be signed within [created_at, expires_at], give or take the allowed clock skew.
    created_at: int = 0
    expires_at: int = 0
    devices: int = 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, context: Mapping[str, str]) -> Challenge:
        what = "challenge"
        number = get(body, "number", str, what)
        digits = get(body, "digits", int, what)
        if not (number.isascii() and number.isdigit() and len(number) == digits):
            raise BadBrokerResponse(f"challenge: number is not {digits} digits")
        return cls(
            id=get(body, "id", str, what),
            user=get(body, "user", str, what),
            number=number,
            digits=digits,
            nonce=get_bytes(body, "nonce", what, length=32),
            rp_nonce=get_bytes(body, "rp_nonce", what, length=32),
            context=dict(context),
            created_at=get(body, "created_at", int, what),
            expires_at=get(body, "expires_at", int, what),
            devices=get(body, "devices", int, what),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict, e.g. to keep in the RP's session between requests."""
        return {
            "id": self.id,
            "user": self.user,
            "number": self.number,
            "digits": self.digits,
            "nonce": wire.b64encode(self.nonce),
            "rp_nonce": wire.b64encode(self.rp_nonce),
            "context": dict(self.context),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "devices": self.devices,
        }

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> Challenge:
        """Read back what to_json wrote."""
        return cls.from_json(body, context=get_str_map(body, "context", "stored challenge"))


@dataclass(frozen=True, slots=True)
class VerifiedAnswer:
    """A device's answer whose signature the SDK checked with the RP's stored key."""

    credential_id: str
    decision: Decision
    number: str
    ts: int
    ctx_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignInResult:
    """The SDK's own verdict on a challenge, never the broker's word alone.

    `status` is APPROVED only when a device credential the RP stored signed an
    approval of exactly this challenge with the number the RP showed.
    """

    challenge_id: str
    status: Status
    answer: VerifiedAnswer | None = None

    @property
    def approved(self) -> bool:
        return self.status is Status.APPROVED and self.answer is not None

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def credential_id(self) -> str | None:
        return None if self.answer is None else self.answer.credential_id
