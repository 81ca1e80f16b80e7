"""What the SDK returns: plain frozen dataclasses, parsed strictly from broker JSON.

Credential and Challenge also convert to and from JSON-safe dicts, because an RP
keeps them between requests: the credential's public key in its user store (every
answer is verified with it), the challenge in the sign-in session (its nonce,
number and context are what the answer must be signed over).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, NotRequired, TypedDict

from protocol.challenge import Status
from protocol.codes import Decision
from protocol.errors import ProtocolError
from protocol.uri import TotpParams, parse_totp

from . import wire
from .errors import BadBrokerResponse, VerificationFailed
from .wire import get, get_bytes, get_optional, get_str_map

__all__ = [
    "Challenge",
    "Credential",
    "CredentialSync",
    "Decision",
    "Enrollment",
    "EnrollmentRefusal",
    "EnrollmentStatus",
    "Health",
    "Policy",
    "PushBlock",
    "RelyingParty",
    "SignInResult",
    "Status",
    "VerifiedAnswer",
    "credentials_from_json",
    "keys_for",
    "totp_from_json",
    "totp_to_json",
]


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """The calling RP (GET /v1/rp): `id` is part of every answer a device signs."""

    id: str
    name: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RelyingParty:
        return cls(id=get(body, "id", str, "rp"), name=get(body, "name", str, "rp"))


@dataclass(frozen=True, slots=True)
class Health:
    """PushAuthClient.health(). Answering 200: `ok` True, `status` "ok", `node` the node's
    name and `redis` "ok". Answering 503: `ok` False, `status` the problem's code
    (`unavailable`: Redis unreachable or read-only; `events_unavailable`: the node's
    event channel is down), `node` None and `redis` the problem's detail (why). A broker
    that cannot be reached at all raises BrokerUnavailable instead."""

    ok: bool
    status: str
    node: str | None
    redis: str | None


class PushBlock(TypedDict):
    """PushAuthClient.push_block(): the user's push fatigue state as the broker reports
    it (docs/http-api.md, "Push fatigue protection"); it decides nothing in the SDK."""

    user: str
    muted_until: int | None  # Unix ms; -1: muted until the RP lifts it; None: not muted
    pushes_since_sign_in: int
    blocked: bool  # a create would now be refused with push_blocked (PushBlocked)
    max_pushes_since_sign_in: int
    consecutive_failures: int  # wrong numbers in a row
    failure_limit: int | None  # the policy's lock after that many (None: no lock)


class Policy(TypedDict):
    """PushAuthClient.policy(): the RP's push policy, set by the broker's operator
    (`pushauth-broker rp set`; docs/http-api.md, "Policy")."""

    profile: str  # "default" or "nist-800-63b-4"
    max_pushes: int
    max_pushes_per_minute: int
    fraud_mute: int  # seconds; 0: until the RP lifts it
    digits: int  # when a create names none
    min_digits: int
    ttl: int  # seconds, when a create names none
    max_ttl: int
    failure_limit: int | None
    # The RP's enrollment quota (API 1.7; absent from older brokers): over it
    # create_enrollment raises RateLimited, code "too_many_enrollments" (pending at once)
    # or "rate_limited" (made a minute), with retry_after.
    max_pending_enrollments: NotRequired[int]
    enrollments_per_minute: NotRequired[int]
    # May create_challenge(number_matching=False)? (API 1.9; absent from older brokers:
    # no.) Off by default, never under nist-800-63b-4.
    allow_numberless_push: NotRequired[bool]
    # Devices one user may have (API 1.10; absent from older brokers: no cap): beyond it
    # create_enrollment raises TooManyCredentials.
    max_credentials: NotRequired[int]


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
    # The new credential's own recovery key as named in the recovery (signed by it),
    # which a later rotation may have replaced as the credential's current one.
    recovery_public_key: bytes | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RecoveryProof:
        what = "credential.recovery"
        return cls(
            from_id=get(body, "from", str, what),
            ts=get(body, "ts", int, what),
            recovery_signature=get_bytes(body, "recovery_signature", what, length=64),
            signature=get_bytes(body, "signature", what, length=64),
            recovery_public_key=None
            if body.get("recovery_public_key") is None
            else get_bytes(body, "recovery_public_key", what, length=32),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_id,
            "ts": self.ts,
            "recovery_signature": wire.b64encode(self.recovery_signature),
            "signature": wire.b64encode(self.signature),
            "recovery_public_key": None
            if self.recovery_public_key is None
            else wire.b64encode(self.recovery_public_key),
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
    # Whether the RP confirmed it (confirm_credential, after its approved test push):
    # until then the broker sends it only challenges aimed at it (create_challenge(
    # credential_id=...)), and its key verifies nothing but that test push. Read from
    # the broker (wait_enrollment: False, list_credentials) it is the broker's word;
    # in the RP's store it is the RP's own record: confirm_credential(credential)
    # returns the copy to store, sync_credentials keeps it as stored (a recovery it
    # accepts is confirmed by its proof). False unless said: an RP that builds its
    # Credentials from its own columns and leaves this out must not make an unfinished
    # setup's key (a QR code someone else scanned) count for sign-ins (keys_for). Read
    # from JSON without the field (an RP's record from before it existed) it is True.
    confirmed: bool = False
    # The RP's own record: when a recovery the RP accepted used this credential's
    # recovery key (the latest such recovery's ts; sync_credentials sets it, and
    # `current` keeps the stored value). A new recovery key the device names later
    # counts only if signed after it, even once the recovered credential is gone (a "No,
    # not me", a removal): without it the RP could not tell a renewal from an older key
    # replayed, nor from a credential that was never recoverable. (A broker that sends
    # one at enrollment can only raise that floor: refusals, never an acceptance.)
    recovery_spent_at: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Credential:
        what = "credential"
        binding, rkey, rproof = body.get("binding"), body.get("recovery_key"), body.get("recovery")
        confirmed = get_optional(body, "confirmed", bool, what)
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
            confirmed=confirmed is not False,
            recovery_spent_at=get_optional(body, "recovery_spent_at", int, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The broker's JSON form (public key in base64url), with the RP's own
        `recovery_spent_at`: from_json reads it back."""
        return {
            "confirmed": self.confirmed,
            "recovery_spent_at": self.recovery_spent_at,
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


@dataclass(frozen=True, slots=True)
class CredentialSync:
    """What PushAuthClient.sync_credentials (relying_party.verify.reconcile) found.

    `current` is what the RP should store for the user now: its stored credentials,
    updated only by what verified, plus accepted recoveries. Nothing in it that decides
    a sign-in is the broker's word alone: a recovered credential is in it only if both
    signatures of its recovery verify with the recovery key the RP stored for
    `recovery.from` (unused till then; it is then `confirmed`), a new recovery key only
    if the stored credential's key signed it with a newer `ts`, and `confirmed` is what
    the RP stored. Only `last_used_at` is the broker's (later values; for display).
    """

    current: dict[str, Credential] = field(default_factory=dict)
    added: list[Credential] = field(default_factory=list)  # recovered credentials accepted
    rotated: list[Credential] = field(default_factory=list)  # stored ones with a verified new recovery key
    # Their recovery key was used by an accepted recovery (`current` has it None and
    # records when in `recovery_spent_at`).
    spent: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stored, but the broker no longer lists them
    refused: list[VerificationFailed] = field(default_factory=list)  # listed, but did not verify
    # Stored ones whose last_used_at the broker reports later than stored (taken into
    # `current`: for showing "last used", it decides nothing).
    last_used: list[str] = field(default_factory=list)
    # Stored as confirmed by the RP (its `confirmed`, which the sync never changes), but
    # listed by the broker as not confirmed, so they get no ordinary sign-in requests:
    # call confirm_credential for them again (harmless twice).
    unconfirmed_at_broker: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when `current` differs from what the RP passed in (write it back)."""
        return bool(self.added or self.rotated or self.spent or self.removed or self.last_used)

    def public_keys(self) -> dict[str, bytes]:
        """credential id -> public key of every credential in `current`, confirmed or
        not. To verify a result, use `keys_for(challenge)`: an ordinary sign-in counts
        only the confirmed ones (a device whose setup is unfinished approves nothing)."""
        return {cid: cred.public_key for cid, cred in self.current.items()}

    def keys_for(self, challenge: Challenge) -> dict[str, bytes]:
        """The keys of `current` that may answer `challenge` (see the function keys_for):
        what wait_result, get_result and PendingSignIn.result take, e.g. to read a result
        again after an answer from a credential the RP did not hold yet."""
        return keys_for(challenge, self.current)

    def apply_to(self, stored: MutableMapping[str, Credential]) -> None:
        """Make the RP's own mapping `stored` equal to `current` (in place)."""
        for cid in [cid for cid in stored if cid not in self.current]:
            del stored[cid]
        stored.update(self.current)

    def to_json(self) -> dict[str, Any]:
        """`current` in JSON form (credential id -> Credential.to_json()), for an RP that
        keeps a user's credentials as one document; credentials_from_json reads it back."""
        return {cid: cred.to_json() for cid, cred in self.current.items()}


def keys_for(challenge: Challenge, stored: Mapping[str, Credential]) -> dict[str, bytes]:
    """credential id -> public key of the credentials in the RP's own `stored` that may
    answer `challenge` (docs/protocol.md section 17, step 4): for a challenge aimed at
    credentials (credential_id: a new device's setup test push; credential_ids) those
    alone, confirmed or not (the RP named them); for an ordinary sign-in those the RP
    confirmed (confirm_credential after an approved test push, or a recovery
    sync_credentials accepted). Only the challenge's user's:
    another user's key must never approve this sign-in. What wait_result, get_result
    and PendingSignIn.result take."""
    if not isinstance(stored, Mapping) or not all(isinstance(c, Credential) for c in stored.values()):
        raise TypeError(
            "keys_for takes the RP's stored credentials as {credential id: Credential} "
            "(credentials_from_json reads them back; CredentialSync.current is one)"
        )
    mine = {cid: cred for cid, cred in stored.items() if cred.user == challenge.user and cred.id == cid}
    aimed = challenge.aimed_at
    if aimed is not None:
        return {cid: cred.public_key for cid, cred in mine.items() if cid in aimed}
    return {cid: cred.public_key for cid, cred in mine.items() if cred.confirmed}


def credentials_from_json(body: Mapping[str, Any]) -> dict[str, Credential]:
    """Read back CredentialSync.to_json() (or any id -> Credential.to_json() mapping)."""
    out = {}
    for cid, raw in body.items():
        cred = Credential.from_json(wire.obj(raw, "stored credential"))
        if cred.id != cid:
            raise ValueError(f"stored credential {cid[:64]!r} holds credential {cred.id[:64]!r}")
        out[cid] = cred
    return out


class EnrollmentStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    EXPIRED = "expired"


# The refusal an enrollment may carry (RP API 1.11): what the device was told. A code
# this SDK does not know (a later broker's) is read, not refused: the RP can still say
# that a device was refused, and an SDK that refused it could not read the enrollment.
TOO_MANY_CREDENTIALS = "too_many_credentials"
_REFUSAL_CODE = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True, slots=True)
class EnrollmentRefusal:
    """A device used the enrollment's link and was refused (RP API 1.11); the enrollment
    stays pending and the link keeps working. `code` "too_many_credentials": the user
    had `max_credentials` devices (the RP's policy then); one must be removed before the
    same link works. Another code (from a later broker) may come without
    `max_credentials`. `at`: when, in ms (the broker's clock)."""

    code: str
    at: int
    max_credentials: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> EnrollmentRefusal:
        what = "enrollment.refused"
        code = get(body, "code", str, what)
        if not _REFUSAL_CODE.fullmatch(code):
            raise BadBrokerResponse(f"{what}: code {code[:32]!r} is not a refusal code")
        if code == TOO_MANY_CREDENTIALS:
            limit: int | None = get(body, "max_credentials", int, what)
        else:
            limit = get_optional(body, "max_credentials", int, what)
        if limit is not None and limit < 1:
            raise BadBrokerResponse(f"{what}: max_credentials must be at least 1")
        return cls(code=code, at=get(body, "at", int, what), max_credentials=limit)


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
    # Provisioned by the RP (create_enrollment's `totp`); the broker never sees it. Kept
    # through to_json / from_stored and on what get_enrollment / wait_enrollment return:
    # once completed, store it with the credential (that device's verification codes).
    totp: TotpParams | None = None
    # The link's `es`: made by the SDK, shown only in the link, never sent to the
    # broker. Keep it with the pending enrollment (to_json / from_stored):
    # wait_enrollment checks the device's binding with it.
    binding_secret: bytes | None = None
    recoverable: bool = False
    # The latest refusal of a device that used the link (RP API 1.11; None from an
    # older broker): still pending, but that device was not added. wait_enrollment
    # returns when a newer one than the Enrollment it was given carries arrives.
    refused: EnrollmentRefusal | None = None

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
            refused=None
            if body.get("refused") is None
            else EnrollmentRefusal.from_json(wire.obj(body["refused"], "enrollment.refused")),
        )

    def to_json(self) -> dict[str, Any]:
        """What an RP keeps of a pending enrollment between requests: the link's secret
        and the TOTP secret it provisioned (keep it server-side); from_stored reads it back."""
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
            "totp": None if self.totp is None else totp_to_json(self.totp),
        }

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> Enrollment:
        """Read back what to_json wrote (ValueError for TOTP parameters that are not valid)."""
        secret, totp = body.get("binding_secret"), body.get("totp")
        return replace(
            cls.from_json({**body, "credential": None}),
            binding_secret=None
            if secret is None
            else get_bytes(body, "binding_secret", "stored enrollment", length=32),
            totp=None if totp is None else totp_from_json(totp),
        )


def totp_to_json(params: TotpParams) -> dict[str, Any]:
    """TOTP parameters as a JSON-safe dict (they hold the secret: keep it server-side)."""
    return {
        "secret": params.secret,
        "algorithm": params.algorithm,
        "digits": params.digits,
        "period": params.period,
    }


def totp_from_json(body: Any) -> TotpParams:
    """Read back totp_to_json, checked as an enrollment link's TOTP part is (ValueError)."""
    fields = body if isinstance(body, dict) else {}
    secret, algorithm = fields.get("secret"), fields.get("algorithm")
    digits, period = fields.get("digits"), fields.get("period")
    if not (
        isinstance(secret, str) and isinstance(algorithm, str) and type(digits) is int and type(period) is int
    ):
        raise ValueError("stored TOTP parameters: secret, algorithm, digits and period are required")
    try:
        return parse_totp(
            {"secret": secret, "algorithm": algorithm, "digits": str(digits), "period": str(period)}
        )
    except ProtocolError as exc:
        raise ValueError(f"stored TOTP parameters: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A sign-in challenge as the RP created it: the values the answer must be signed over.

    `context` is the context the RP sent (not the broker's echo of it), and `number`
    is what the RP shows the user; the SDK compares the typed number with it itself.
    With `number_matching` False (created with `number_matching=False`) there is no
    number: `number` is "" and nothing is to be shown; the device asks approve / deny /
    report only, and any approval signed over this challenge approves.
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
    # Sent only to this credential (a new device's setup test push, or a sign-in aimed
    # at one device), or None: see credential_ids.
    credential_id: str | None = None
    # Sent only to these credentials (RP API 1.8: credential_ids, or credential_id's
    # one), in the order the create named them; None: to every confirmed credential of
    # the user. Only they may answer it (aimed_at).
    credential_ids: tuple[str, ...] | None = None

    @property
    def aimed_at(self) -> frozenset[str] | None:
        """The credentials this challenge was sent to, the only ones whose answer counts
        (docs/protocol.md section 17, step 4); None: the user's confirmed ones."""
        if self.credential_ids is not None:
            return frozenset(self.credential_ids)
        return None if self.credential_id is None else frozenset((self.credential_id,))

    # The RP's own choice (RP API 1.9), checked against the broker's answer at creation.
    number_matching: bool = True

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, context: Mapping[str, str]) -> Challenge:
        what = "challenge"
        # A broker before RP API 1.9 says nothing: every challenge had number matching.
        number_matching = get_optional(body, "number_matching", bool, what)
        number_matching = True if number_matching is None else number_matching
        digits = get(body, "digits", int, what)
        if number_matching:
            number = get(body, "number", str, what)
            if not (number.isascii() and number.isdigit() and len(number) == digits):
                raise BadBrokerResponse(f"challenge: number is not {digits} digits")
        elif body.get("number") is not None:
            raise BadBrokerResponse("challenge: a number for a challenge without number matching")
        else:
            number = ""
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
            credential_id=(one := get_optional(body, "credential_id", str, what)),
            credential_ids=_targets(body, one, what),
            number_matching=number_matching,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict, e.g. to keep in the RP's session between requests."""
        return {
            "id": self.id,
            "user": self.user,
            "number": self.number if self.number_matching else None,
            "number_matching": self.number_matching,
            "digits": self.digits,
            "nonce": wire.b64encode(self.nonce),
            "rp_nonce": wire.b64encode(self.rp_nonce),
            "context": dict(self.context),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "devices": self.devices,
            "credential_id": self.credential_id,
            "credential_ids": None if self.credential_ids is None else list(self.credential_ids),
        }

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> Challenge:
        """Read back what to_json wrote."""
        return cls.from_json(body, context=get_str_map(body, "context", "stored challenge"))


def _targets(body: Mapping[str, Any], one: str | None, what: str) -> tuple[str, ...] | None:
    """A challenge's `credential_ids` (None: not aimed), read as its broker says them;
    a broker before RP API 1.8 (or a challenge stored before it) names only
    `credential_id`, which is then the one."""
    many = body.get("credential_ids")
    if many is None:
        return None if one is None else (one,)
    if not isinstance(many, list) or not many or not all(isinstance(cid, str) for cid in many):
        raise BadBrokerResponse(f"{what}: field 'credential_ids' is not a list of credential ids")
    return tuple(many)


@dataclass(frozen=True, slots=True)
class VerifiedAnswer:
    """A device's answer whose signature the SDK checked with the RP's stored key."""

    credential_id: str
    decision: Decision
    number: str
    ts: int
    ctx_hash: bytes
    signature: bytes


_REASONS: dict[Status, str] = {
    Status.PENDING: "waiting for the user's answer",
    Status.APPROVED: "approved on the user's device (with the number shown, where there was one)",
    Status.DENIED: "denied on the user's device",
    Status.NUMBER_MISMATCH: "the number typed on the device did not match; the sign-in is denied",
    Status.REPORTED: "reported on the user's device as not their sign-in",
    Status.EXPIRED: "no answer before the request expired",
    Status.CANCELLED: "cancelled by this service",
    Status.SUPERSEDED: "replaced by a newer sign-in request for the same user",
    Status.WITHDRAWN: "withdrawn after a fraud report or a push block for this user",
}


@dataclass(frozen=True, slots=True)
class SignInResult:
    """The SDK's own verdict on a challenge, never the broker's word alone.

    `status` is APPROVED only when a device credential the RP stored signed an
    approval of exactly this challenge with the number the RP showed. A final status
    this SDK does not know (from a newer broker) is UNKNOWN: final and not approved,
    with the broker's word in `broker_status` and `reason`.
    """

    challenge_id: str
    status: Status
    answer: VerifiedAnswer | None = None
    broker_status: str | None = None  # set when the broker said something this SDK does not know

    @property
    def reason(self) -> str:
        """Why the sign-in is (not) allowed, in words for logs and support staff."""
        if self.status is Status.UNKNOWN:
            return (
                f"the broker reported status {self.broker_status!r}, which this SDK does not know "
                "(a newer broker?): treated as ended and not approved; update the SDK"
            )
        return _REASONS[self.status]

    @property
    def approved(self) -> bool:
        return self.status is Status.APPROVED and self.answer is not None

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def credential_id(self) -> str | None:
        return None if self.answer is None else self.answer.credential_id
