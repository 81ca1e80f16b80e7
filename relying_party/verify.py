"""End-to-end verification of a broker's challenge result: the RP SDK's security core.

The broker is not trusted to say "approved". A result counts only if its signed
answer verifies, with a public key from the RP's own store, over the values the
RP itself holds for the challenge (its RP id, the challenge id, the nonce, its own
fresh `rp_nonce` and the context it sent), signed within the challenge's lifetime
by the RP's clock, and if the typed number matches the number the RP was given at
creation. The outcome is then computed here with protocol.challenge.outcome_for;
a broker status that disagrees with it is a VerificationFailed, never an approval.

Enrollment binding is checked here too: a completed enrollment's key counts only
if the device signed it together with the secret the RP put in the link.

Pure functions: no I/O, so every forgery can be tested directly and through HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol import signing
from protocol.challenge import Status, check_answer_shape, outcome_for
from protocol.codec import validate
from protocol.errors import ProtocolError
from protocol.frames import Answer, Decision

from . import wire
from .errors import BadBrokerResponse, VerificationFailed, VerificationReason
from .models import Challenge, Credential, Enrollment, SignInResult, VerifiedAnswer

# Statuses the broker may only claim together with a device's signed answer.
ANSWERED = frozenset({Status.APPROVED, Status.DENIED, Status.NUMBER_MISMATCH, Status.REPORTED})
# How far a device's clock may be from the RP's: the answer's signed `ts` must lie
# within the challenge's lifetime (RP clock) widened by this much on each side. The
# rp_nonce already ties an answer to one challenge; this bounds how long it can matter.
MAX_CLOCK_SKEW_MS = 120_000


def evaluate(
    challenge: Challenge,
    body: Mapping[str, Any],
    *,
    rp_id: str,
    public_keys: Mapping[str, bytes],
    now_ms: int,
) -> SignInResult:
    """The SDK's verdict on one ChallengeResult body from the broker.

    Raises BadBrokerResponse for a body that is not a ChallengeResult at all, and
    VerificationFailed for one that claims an answer that does not hold up.
    """
    what = "challenge result"
    result_id = wire.get(body, "id", str, what)
    raw_status = wire.get(body, "status", str, what)
    try:
        claimed = Status(raw_status)
    except ValueError:
        raise BadBrokerResponse(f"{what}: unknown status {raw_status[:32]!r}") from None
    if result_id != challenge.id:
        raise VerificationFailed(
            VerificationReason.WRONG_CHALLENGE,
            f"the broker answered about challenge {result_id[:64]!r}",
            challenge_id=challenge.id,
            broker_status=claimed,
        )
    if claimed is Status.PENDING:
        # The RP's clock decides too: an unanswered challenge past its expiry is over.
        status = Status.EXPIRED if now_ms >= challenge.expires_at else Status.PENDING
        return SignInResult(challenge.id, status)
    if claimed is Status.EXPIRED:
        # A negative claim needs no proof: the broker can always withhold an answer.
        return SignInResult(challenge.id, Status.EXPIRED)
    try:
        answer = verify_answer(challenge, body.get("answer"), rp_id=rp_id, public_keys=public_keys)
    except VerificationFailed as failure:
        failure.broker_status = claimed
        raise
    outcome = outcome_for(answer.decision, answer.number, challenge.number)
    if outcome is not claimed:
        raise VerificationFailed(
            VerificationReason.STATUS_MISMATCH,
            f"the broker says {claimed} but the signed answer means {outcome}",
            challenge_id=challenge.id,
            credential_id=answer.credential_id,
            broker_status=claimed,
        )
    return SignInResult(challenge.id, outcome, answer)


def verify_answer(
    challenge: Challenge,
    raw: Any,
    *,
    rp_id: str,
    public_keys: Mapping[str, bytes],
) -> VerifiedAnswer:
    """Check one broker-relayed Answer object against the RP's own challenge values."""

    def fail(reason: VerificationReason, message: str, cid: str | None = None) -> VerificationFailed:
        return VerificationFailed(reason, message, challenge_id=challenge.id, credential_id=cid)

    if raw is None:
        raise fail(VerificationReason.MISSING_ANSWER, "a final answered status comes with a signed answer")
    try:
        body = wire.obj(raw, "answer")
        # The device frame's own validators check every field (one place for the schema).
        frame = validate(
            Answer,
            {
                "ch": challenge.id,
                "cid": wire.get(body, "credential_id", str, "answer"),
                "decision": wire.get(body, "decision", str, "answer"),
                "number": wire.get(body, "number", str, "answer"),
                "ts": wire.get(body, "ts", int, "answer"),
                "ctx_hash": wire.get_bytes(body, "ctx_hash", "answer"),
                "sig": wire.get_bytes(body, "signature", "answer"),
            },
        )
        assert isinstance(frame, Answer)
        check_answer_shape(frame.decision, frame.number)
    except (BadBrokerResponse, ProtocolError) as exc:
        raise fail(VerificationReason.MALFORMED_ANSWER, str(exc)) from None
    cid = frame.cid
    public_key = public_keys.get(cid)
    if public_key is None:
        raise fail(VerificationReason.UNKNOWN_CREDENTIAL, "signed by a credential the RP does not hold", cid)
    if frame.ctx_hash != signing.context_hash(challenge.context):
        raise fail(VerificationReason.CONTEXT_MISMATCH, "signed over another sign-in context", cid)
    message = signing.answer_bytes(
        rp=rp_id,
        ch=challenge.id,
        nonce=challenge.nonce,
        rp_nonce=challenge.rp_nonce,
        cid=cid,
        decision=frame.decision,
        number=frame.number,
        ts=frame.ts,
        ctx_hash=frame.ctx_hash,
    )
    if not signing.is_valid(public_key, message, frame.sig):
        raise fail(VerificationReason.BAD_SIGNATURE, "the signature does not verify with the stored key", cid)
    if not challenge.created_at - MAX_CLOCK_SKEW_MS <= frame.ts <= challenge.expires_at + MAX_CLOCK_SKEW_MS:
        raise fail(
            VerificationReason.STALE_ANSWER,
            f"signed at {frame.ts}, outside the challenge's lifetime "
            f"{challenge.created_at}..{challenge.expires_at} (RP clock, +/- {MAX_CLOCK_SKEW_MS} ms)",
            cid,
        )
    return VerifiedAnswer(
        credential_id=cid,
        decision=Decision(frame.decision),
        number=frame.number,
        ts=frame.ts,
        ctx_hash=frame.ctx_hash,
        signature=frame.sig,
    )


def verify_binding(enrollment: Enrollment, credential: Credential, *, rp_id: str) -> None:
    """Raise VerificationFailed unless the device bound `credential` to this enrollment.

    The binding is the new key's signature over the link's secret (which the broker
    never saw), the token, the key, the device name and the recovery key: a broker
    that substitutes a key of its own, or renames the device, or plants a recovery
    key, cannot make one."""
    if enrollment.binding_secret is None or enrollment.token is None:
        raise ValueError("this Enrollment holds no link secret: pass the one create_enrollment returned")
    recovery_pk = None if credential.recovery_key is None else credential.recovery_key.public_key
    message = signing.binding_bytes(
        rp_id,
        enrollment.token,
        enrollment.binding_secret,
        credential.public_key,
        credential.name,
        recovery_pk,
    )
    if credential.binding is None or not signing.is_valid(credential.public_key, message, credential.binding):
        raise VerificationFailed(
            VerificationReason.BAD_BINDING,
            "the enrolled key is not bound to this enrollment's link (substituted by the broker?)",
            credential_id=credential.id,
        )
    if credential.recovery_key is not None and credential.recovery_key.signature is not None:
        # A key named at enrollment is covered by the binding, not a separate signature.
        raise VerificationFailed(
            VerificationReason.BAD_BINDING,
            "a new credential's recovery key comes with the binding",
            credential_id=credential.id,
        )
