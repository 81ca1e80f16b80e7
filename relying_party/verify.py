"""End-to-end verification of a broker's challenge result: the RP SDK's security core.

The broker is not trusted to say "approved". A result counts only if its signed
answer verifies, with a public key from the RP's own store, over the values the
RP itself holds for the challenge (its RP id, the challenge id, the nonce, its own
fresh `rp_nonce` and the context it sent), signed within the challenge's lifetime
by the RP's clock, and if the typed number matches the number the RP was given at
creation (for a challenge the RP made without number matching, any approval counts).
The outcome is then computed here with protocol.challenge.outcome_for;
a broker status that disagrees with it is a VerificationFailed, never an approval.

Enrollment binding is checked here too: a completed enrollment's key counts only
if the device signed it together with the secret the RP put in the link. And the
broker's list of a user's credentials (reconcile): a recovered credential counts
only with proof from the recovery key the RP stored, which then works no more.

Pure functions: no I/O, so every forgery can be tested directly and through HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from protocol import durations, signing
from protocol.challenge import (
    ENDED_WITHOUT_ANSWER,
    Status,
    check_answer_number,
    check_answer_shape,
    outcome_for,
)
from protocol.codec import validate
from protocol.errors import ProtocolError
from protocol.frames import Answer, Decision

from . import wire
from .errors import BadBrokerResponse, VerificationFailed, VerificationReason
from .models import (
    Challenge,
    Credential,
    CredentialSync,
    Enrollment,
    RecoveryKey,
    SignInResult,
    VerifiedAnswer,
)

# Statuses the broker may only claim together with a device's signed answer.
ANSWERED = frozenset({Status.APPROVED, Status.DENIED, Status.NUMBER_MISMATCH, Status.REPORTED})
# How far a device's clock may be from the RP's: the answer's signed `ts` must lie
# within the challenge's lifetime (RP clock) widened by this much on each side. The
# rp_nonce already ties an answer to one challenge; this bounds how long it can matter.
MAX_CLOCK_SKEW_MS = 120_000
PUBLIC_KEY_BYTES = 32  # Ed25519


def check_public_keys(public_keys: object) -> None:
    """Refuse, as the programming error it is, a `public_keys` argument that is not
    credential id -> 32-byte public key: the RP's stored Credentials themselves, a list
    of them, or keys in base64url text. Checked before anything is read, because such
    keys would otherwise fail every answer as BAD_SIGNATURE (or UNKNOWN_CREDENTIAL), the
    security event a forged answer raises, and send the RP hunting an attack that is
    not there (an outsider's trial passed `stored_credentials(user)` as the keys)."""
    hint = "pass keys_for(challenge, stored), stored being {credential id: Credential}"
    if not isinstance(public_keys, Mapping):
        kind = type(public_keys).__name__
        raise TypeError(f"public_keys must map credential id -> public key (bytes), not a {kind}: {hint}")
    for cid, key in public_keys.items():
        if not isinstance(cid, str) or not isinstance(key, bytes):
            raise TypeError(
                f"public_keys must map credential id (str) -> public key (bytes), "
                f"not {type(cid).__name__} -> {type(key).__name__}: {hint}"
            )
        if len(key) != PUBLIC_KEY_BYTES:
            raise ValueError(
                f"public_keys[{cid[:64]!r}] is {len(key)} bytes, not an Ed25519 public key "
                f"({PUBLIC_KEY_BYTES} bytes): {hint}"
            )


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
    VerificationFailed for one that claims an answer that does not hold up
    (TypeError or ValueError for `public_keys` that are not id -> 32-byte key).
    """
    check_public_keys(public_keys)
    what = "challenge result"
    result_id = wire.get(body, "id", str, what)
    raw_status = wire.get(body, "status", str, what)
    try:
        claimed = Status(raw_status)
    except ValueError:
        # A newer broker's outcome: final and never an approval (approving takes a
        # status this SDK knows and a signature it checks), reported with its word.
        claimed = Status.UNKNOWN
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
    if claimed in ENDED_WITHOUT_ANSWER:
        # Expired, cancelled, superseded, withdrawn (or a status this SDK does not know):
        # a negative claim needs no proof, since the broker can always withhold an
        # answer; any answer sent along is ignored, so such a claim approves nothing.
        return SignInResult(
            challenge.id, claimed, broker_status=raw_status[:32] if claimed is Status.UNKNOWN else None
        )
    try:
        answer = verify_answer(challenge, body.get("answer"), rp_id=rp_id, public_keys=public_keys)
    except VerificationFailed as failure:
        failure.broker_status = claimed
        raise
    # The RP's own number matching, kept from creation (never the broker's word now).
    outcome = outcome_for(
        answer.decision, answer.number, challenge.number, number_matching=challenge.number_matching
    )
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
        check_answer_number(frame.decision, frame.number, number_matching=challenge.number_matching)
    except (BadBrokerResponse, ProtocolError) as exc:
        raise fail(VerificationReason.MALFORMED_ANSWER, str(exc)) from None
    cid = frame.cid
    # A challenge aimed at credentials (a new device's setup test push; a sign-in that
    # leaves a device out) is answered by those alone (docs/protocol.md section 17, step
    # 4), whatever keys the caller passed: an RP that hands its confirmed keys here too
    # must not let another device approve the test push of a device whose setup it
    # would then confirm, nor a device it left out (a broker that delivers to it all the
    # same) approve a sign-in.
    aimed = challenge.aimed_at
    aimed_elsewhere = aimed is not None and cid not in aimed
    public_key = None if aimed_elsewhere else public_keys.get(cid)
    if public_key is None:
        raise fail(
            VerificationReason.UNKNOWN_CREDENTIAL,
            f"signed by a credential it was not aimed at ({', '.join(sorted(aimed or ()))})"
            if aimed_elsewhere
            else "signed by a credential the RP does not hold",
            cid,
        )
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
        raise fail(VerificationReason.STALE_ANSWER, _stale(frame.ts, challenge), cid)
    return VerifiedAnswer(
        credential_id=cid,
        decision=Decision(frame.decision),
        number=frame.number,
        ts=frame.ts,
        ctx_hash=frame.ctx_hash,
        signature=frame.sig,
    )


def _stale(ts: int, challenge: Challenge) -> str:
    """Why an answer signed at `ts` (the broker's clock) is refused, in words an operator
    can act on: a replay, or (when every answer is refused so) clocks apart."""
    if ts < challenge.created_at:
        where = f"{durations.clock_offset(challenge.created_at - ts)} before the challenge was created"
    else:
        where = f"{durations.clock_offset(ts - challenge.expires_at)} after it expired"
    return (
        f"signed {where}, by this server's clock (at {ts}; its lifetime {challenge.created_at}.."
        f"{challenge.expires_at}, +/- {MAX_CLOCK_SKEW_MS // 1000} s): an old answer sent again, or, if"
        " every answer is refused so, this server's clock is off the broker's (the SDK logs its offset"
        " when it creates a challenge: set the clock right, NTP)"
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
    if credential.recovery_key is not None and not enrollment.recoverable:
        raise VerificationFailed(
            VerificationReason.BAD_BINDING,
            "a recovery key for an enrollment the RP did not make recoverable",
            credential_id=credential.id,
        )
    if credential.recovery_key is not None and credential.recovery_key.signature is not None:
        # A key named at enrollment is covered by the binding, not a separate signature.
        raise VerificationFailed(
            VerificationReason.BAD_BINDING,
            "a new credential's recovery key comes with the binding",
            credential_id=credential.id,
        )


# -- the broker's list of a user's credentials ---------------------------------------


def reconcile(listed: Sequence[Credential], stored: Mapping[str, Credential], rp_id: str) -> CredentialSync:
    """What the RP should store for a user, given the broker's list and its own store.

    `stored` maps credential id -> the Credential the RP keeps (its key checked at
    enrollment by verify_binding, or accepted here before); `listed` is what the
    broker says now. The broker's list is a claim: a key changes only with a signature
    the RP can check with a key it holds.

    - A stored credential listed with another public key is refused (KEY_MISMATCH);
      the stored one stays.
    - A credential the RP does not hold is accepted only as a recovery: both
      signatures over signing.recover_bytes(rp_id, from, key, name, its own recovery
      key, ts) verify, the first with the recovery key the RP stored for `from`, the
      second with the new key. That recovery key is then spent (None): of several
      recoveries with it, the earliest (ts, then id) wins, the others are
      RECOVERY_KEY_USED. The new credential's own recovery key is the one the proof
      names. Anything else the RP does not hold is UNKNOWN_CREDENTIAL.
    - A stored credential's new recovery key counts only if its credential key signed
      it (signing.recovery_key_bytes) with a `ts` newer than the stored key's and than
      any accepted recovery from it (a replayed older key never comes back), else
      BAD_ROTATION. A credential with no recovery key and no known recovery from it
      (the RP did not enroll it as recoverable) takes none.
    - Stored credentials the broker no longer lists are `removed` (the broker can
      always stop routing to a device; dropping it trusts nothing new).
    - Of a stored credential listed with its stored key, the broker's later
      `last_used_at` is taken (`last_used`: for display, it decides nothing). Its
      `confirmed` stays the RP's own: a broker that calls an unfinished setup
      confirmed must not make its key count for sign-ins; one the RP holds as
      confirmed but the broker does not is named in `unconfirmed_at_broker` (it gets
      no ordinary sign-in requests there: confirm it again). A recovery accepted
      here is confirmed by its proof.
    """
    current = dict(stored)
    refused: list[VerificationFailed] = []
    listed_ids: set[str] = set()
    recovered: list[Credential] = []
    rotations: list[Credential] = []
    kept: list[Credential] = []  # listed with the key the RP stored for them
    for cred in listed:
        if cred.id in listed_ids:
            refused.append(_refusal(VerificationReason.KEY_MISMATCH, cred, "listed twice"))
            continue
        listed_ids.add(cred.id)
        mine = stored.get(cred.id)
        if mine is None:
            if cred.recovery is None and cred.recovered_from is None:
                refused.append(
                    _refusal(
                        VerificationReason.UNKNOWN_CREDENTIAL,
                        cred,
                        "neither stored by the RP nor a recovery (new devices come through wait_enrollment)",
                    )
                )
            else:
                recovered.append(cred)
        elif cred.public_key != mine.public_key:
            refused.append(
                _refusal(
                    VerificationReason.KEY_MISMATCH,
                    cred,
                    "the broker lists another public key; the stored one stays",
                )
            )
        else:
            kept.append(cred)
            if cred.recovery_key is not None and cred.recovery_key != mine.recovery_key:
                rotations.append(cred)

    # Recoveries: the ts of every accepted recovery from a credential, the floor for
    # its later recovery keys (the RP's store keeps them in the recovered credentials).
    floors: dict[str, int] = {}
    for cred in stored.values():
        if cred.recovery is not None:
            floors[cred.recovery.from_id] = max(floors.get(cred.recovery.from_id, 0), cred.recovery.ts)
            # Its own K dates from its recovery: a later key must be newer, as when the
            # recovery was accepted (_check_recovery), whichever sync sees it first.
            floors[cred.id] = max(floors.get(cred.id, 0), cred.recovery.ts)
        # The source's own record of a spend outlives the recovered credential.
        if cred.recovery_spent_at is not None:
            floors[cred.id] = max(floors.get(cred.id, 0), cred.recovery_spent_at)
    used: dict[str, RecoveryKey] = {}  # spent in this sync: later claims are checked against it
    added: list[Credential] = []
    spent: list[str] = []
    waiting = sorted(recovered, key=lambda c: (c.recovery.ts if c.recovery else 0, c.id))
    while waiting:
        later: list[Credential] = []
        for cred in waiting:
            source = cred.recovery.from_id if cred.recovery is not None else None
            if source is not None and source not in current and any(w.id == source for w in waiting):
                later.append(cred)  # recovered from a recovery listed here too: after it
                continue
            outcome = _check_recovery(cred, current.get(source or ""), used, rp_id)
            if isinstance(outcome, VerificationFailed):
                refused.append(outcome)
                continue
            assert cred.recovery is not None and source is not None
            current[cred.id] = outcome
            added.append(outcome)
            old = current[source]
            assert old.recovery_key is not None
            used[source] = old.recovery_key
            spent_at = max(old.recovery_spent_at or 0, cred.recovery.ts)
            current[source] = replace(old, recovery_key=None, recovery_spent_at=spent_at)
            spent.append(source)
            floors[source] = max(floors.get(source, 0), cred.recovery.ts)
        if len(later) == len(waiting):  # a cycle, or sources that never verify
            refused += [
                _refusal(
                    VerificationReason.BAD_RECOVERY, c, "recovered from a credential that did not verify"
                )
                for c in later
            ]
            break
        waiting = later

    rotated: list[Credential] = []
    for cred in rotations:
        mine, new_key = current[cred.id], cred.recovery_key
        assert new_key is not None
        failure = _check_rotation(stored[cred.id], new_key, floors.get(cred.id))
        if failure is not None:
            refused.append(_refusal(VerificationReason.BAD_ROTATION, cred, failure))
            continue
        current[cred.id] = replace(mine, recovery_key=new_key)
        rotated.append(current[cred.id])

    last_used: list[str] = []
    unconfirmed: list[str] = []
    for cred in kept:
        mine = current[cred.id]
        if cred.last_used_at is not None and (mine.last_used_at or 0) < cred.last_used_at:
            current[cred.id] = replace(mine, last_used_at=cred.last_used_at)
            last_used.append(cred.id)
        if mine.confirmed and not cred.confirmed:
            unconfirmed.append(cred.id)

    removed = [cid for cid in stored if cid not in listed_ids]
    for cid in removed:
        del current[cid]
    return CredentialSync(
        current=current,
        added=added,
        rotated=rotated,
        spent=spent,
        removed=removed,
        refused=refused,
        last_used=last_used,
        unconfirmed_at_broker=unconfirmed,
    )


def _refusal(reason: VerificationReason, cred: Credential, why: str) -> VerificationFailed:
    return VerificationFailed(reason, why, credential_id=cred.id)


def _check_recovery(
    cred: Credential, source: Credential | None, used: Mapping[str, RecoveryKey], rp_id: str
) -> Credential | VerificationFailed:
    """The credential to store for a recovery that verifies, or why it does not."""
    bad = VerificationReason.BAD_RECOVERY
    proof = cred.recovery
    if proof is None:
        return _refusal(bad, cred, "says it was recovered but carries no recovery proof")
    if cred.recovered_from is not None and cred.recovered_from != proof.from_id:
        return _refusal(bad, cred, "its recovered_from and its proof name different credentials")
    if source is None:
        return _refusal(bad, cred, f"recovered from {proof.from_id[:64]!r}, which the RP does not hold")
    if source.user != cred.user:
        return _refusal(bad, cred, "recovered from a credential of another user")
    # The proof signs the recovery key the new credential named at recovery; the broker
    # keeps it in the proof, since a rotation may have replaced the current one since.
    own = (
        RecoveryKey(proof.recovery_public_key) if proof.recovery_public_key is not None else cred.recovery_key
    )
    if own is None:
        return _refusal(bad, cred, "names no recovery key of its own")
    if own.signature is not None or own.ts is not None:
        return _refusal(bad, cred, "its recovery key changed before the RP saw the recovery: cannot check it")
    key = source.recovery_key or used.get(source.id)
    if key is None:
        return _refusal(
            VerificationReason.RECOVERY_KEY_USED,
            cred,
            f"the RP holds no unused recovery key for {source.id[:64]!r} (used, or not recoverable)",
        )
    message = signing.recover_bytes(rp_id, source.id, cred.public_key, cred.name, own.public_key, proof.ts)
    if not signing.is_valid(key.public_key, message, proof.recovery_signature):
        return _refusal(bad, cred, f"not signed by the recovery key the RP stored for {source.id[:64]!r}")
    if not signing.is_valid(cred.public_key, message, proof.signature):
        return _refusal(bad, cred, "the new key's own signature (proof of possession) does not verify")
    if source.recovery_key is None:
        return _refusal(
            VerificationReason.RECOVERY_KEY_USED,
            cred,
            f"the recovery key of {source.id[:64]!r} was used by an earlier recovery (it works once)",
        )
    # Confirmed by the RP's own check: the recovery key it stored signed it.
    accepted = replace(
        cred,
        recovered_from=source.id,
        recovery_key=RecoveryKey(own.public_key),
        binding=None,
        confirmed=True,
        recovery_spent_at=None,  # the RP's record, never the broker's listing
    )
    later = cred.recovery_key
    # Renewed since the recovery (e.g. a passphrase change on the new device): it counts
    # only as a rotation would, else the key named at recovery stays.
    renewed = later is not None and later.public_key != own.public_key
    if renewed and later is not None and _check_rotation(accepted, later, proof.ts) is None:
        accepted = replace(accepted, recovery_key=later)
    return accepted


def _check_rotation(mine: Credential, new_key: RecoveryKey, recovered_at: int | None) -> str | None:
    """Why a listed new recovery key of stored credential `mine` does not count, or None."""
    if new_key.signature is None or new_key.ts is None:
        return "a recovery key the RP did not get at enrollment comes with the credential's signature"
    if mine.recovery_key is None and recovered_at is None:
        return "the RP holds no recovery key for this credential (not enrolled as recoverable)"
    named = mine.recovery_key.ts if mine.recovery_key is not None else None
    floor = max(named or 0, recovered_at or 0)
    if new_key.ts <= floor:
        return f"named at {new_key.ts}, not after the key it replaces ({floor}): a replayed older key"
    message = signing.recovery_key_bytes(mine.id, new_key.public_key, new_key.ts)
    if not signing.is_valid(mine.public_key, message, new_key.signature):
        return "not signed by the credential's own key"
    return None
