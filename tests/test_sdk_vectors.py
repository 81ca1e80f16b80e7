"""The RP SDK's verification against the known-answer vectors of docs/test-vectors.json.

The vectors are computed from protocol/ (python -m protocol.vectors), not from the
SDK, so an SDK that assembled the signed bytes differently (field order, domain,
integer width, a missing rp_nonce) would fail here even if it agreed with itself.
Covered: answers (verify_answer, evaluate, the freshness window), enrollment
bindings (verify_binding), recoveries and recovery-key rotations (reconcile), and the
verdict vectors of section "rp": what the RP concludes from a create's answer and a result.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocol.challenge import Status
from relying_party import Challenge, VerificationFailed, VerificationReason
from relying_party.errors import BadBrokerResponse
from relying_party.models import Credential, Enrollment, EnrollmentStatus, RecoveryKey, RecoveryProof
from relying_party.sdk import _Asked, _targets
from relying_party.verify import MAX_CLOCK_SKEW_MS, evaluate, reconcile, verify_answer, verify_binding
from relying_party.wire import b64encode

VECTORS = json.loads((Path(__file__).parent.parent / "docs" / "test-vectors.json").read_text())
SIGNING = VECTORS["signing"]
ANSWERS: list[dict[str, Any]] = SIGNING["answer"]
T0 = 1_767_225_600_000  # the vectors' challenges live T0 .. T0 + 60 s
h = bytes.fromhex


def challenge_of(vector: dict[str, Any], number: str) -> Challenge:
    return Challenge(
        id=vector["ch"],
        user="alice",
        number=number,
        digits=len(number),
        nonce=h(vector["nonce"]),
        rp_nonce=h(vector["rp_nonce"]),
        context=vector["context"],
        created_at=T0,
        expires_at=T0 + 60_000,
    )


def answer_json(vector: dict[str, Any]) -> dict[str, Any]:
    return {
        "credential_id": vector["cid"],
        "decision": vector["decision"],
        "number": vector["number"],
        "ts": vector["ts"],
        "ctx_hash": b64encode(h(vector["ctx_hash"])),
        "signature": b64encode(h(vector["signature"])),
    }


def keys_of(vector: dict[str, Any]) -> dict[str, bytes]:
    return {vector["cid"]: h(vector["public_key"])}


@pytest.mark.parametrize("vector", ANSWERS, ids=[f"{v['decision']}-{v['ch']}" for v in ANSWERS])
def test_every_answer_vector_verifies(vector: dict[str, Any]) -> None:
    number = vector["number"] or "42"  # deny/fraud carry no number; any shown number will do
    answer = verify_answer(
        challenge_of(vector, number), answer_json(vector), rp_id=vector["rp"], public_keys=keys_of(vector)
    )
    assert answer.signature.hex() == vector["signature"]


def test_approval_vector_is_approved_and_any_change_is_refused() -> None:
    vector = next(v for v in ANSWERS if v["decision"] == "approve")
    challenge = challenge_of(vector, vector["number"])
    body = {"id": vector["ch"], "status": "approved", "answer": answer_json(vector)}
    result = evaluate(challenge, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=T0)
    assert result.status is Status.APPROVED
    assert result.approved
    with pytest.raises(VerificationFailed) as failure:
        evaluate(challenge, body, rp_id=vector["rp"] + "x", public_keys=keys_of(vector), now_ms=T0)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    for changed in (replace(challenge, nonce=bytes(32)), replace(challenge, rp_nonce=bytes(32))):
        with pytest.raises(VerificationFailed) as failure:
            evaluate(changed, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=T0)
        assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    # The freshness rule: the signed ts must lie in the RP's lifetime +/- MAX_CLOCK_SKEW_MS.
    late = replace(
        challenge, created_at=vector["ts"] + MAX_CLOCK_SKEW_MS + 1, expires_at=vector["ts"] + 10**6
    )
    with pytest.raises(VerificationFailed) as failure:
        evaluate(late, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=T0)
    assert failure.value.reason is VerificationReason.STALE_ANSWER
    edge = replace(challenge, created_at=vector["ts"] + MAX_CLOCK_SKEW_MS, expires_at=vector["ts"] + 10**6)
    assert evaluate(edge, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=T0).approved


def _enrollment(v: dict[str, Any]) -> Enrollment:
    return Enrollment(
        id="en_1",
        user="alice",
        account="alice@example.com",
        status=EnrollmentStatus.COMPLETED,
        expires_at=T0,
        token=v["token"],
        binding_secret=h(v["es"]),
        recoverable=v["recovery_pk"] is not None,
    )


def _credential(v: dict[str, Any], **changes: Any) -> Credential:
    rpk = v["recovery_pk"]
    cred = Credential(
        id="cred_A1",
        user="alice",
        name=v["device_name"],
        public_key=h(v["public_key"]),
        created_at=T0,
        binding=h(v["signature"]),
        recovery_key=None if rpk is None else RecoveryKey(h(rpk)),
    )
    return replace(cred, **changes)


@pytest.mark.parametrize("vector", SIGNING["binding"], ids=lambda v: f"rpk={v['recovery_pk'] is not None}")
def test_binding_vectors_verify(vector: dict[str, Any]) -> None:
    verify_binding(_enrollment(vector), _credential(vector), rp_id=vector["rp"])
    for bad in (
        _credential(vector, name="Mallory's phone"),
        _credential(vector, binding=None),
        _credential(vector, recovery_key=RecoveryKey(bytes(32))),
    ):
        with pytest.raises(VerificationFailed) as failure:
            verify_binding(_enrollment(vector), bad, rp_id=vector["rp"])
        assert failure.value.reason is VerificationReason.BAD_BINDING
    with pytest.raises(VerificationFailed):
        verify_binding(_enrollment(vector), _credential(vector), rp_id="rp_other")


def test_recover_vector_is_accepted_once_by_reconcile() -> None:
    v = SIGNING["recover"][0]
    old = Credential(
        id=v["old_cid"], user="alice", name="Alice's phone", public_key=bytes(32), created_at=T0,
        recovery_key=RecoveryKey(h(v["recovery_key"])),
    )  # fmt: skip
    new = Credential(
        id="cred_N1",
        user="alice",
        name=v["device_name"],
        public_key=h(v["pk"]),
        created_at=v["ts"],
        recovered_from=v["old_cid"],
        recovery_key=RecoveryKey(h(v["new_recovery_pk"])),
        recovery=RecoveryProof(v["old_cid"], v["ts"], h(v["recovery_signature"]), h(v["signature"])),
    )
    sync = reconcile([old, new], {old.id: old}, v["rp"])
    assert [c.id for c in sync.added] == ["cred_N1"]
    assert sync.spent == [old.id]
    assert not sync.refused
    # Under another RP id the proof does not verify.
    other = reconcile([old, new], {old.id: old}, "rp_other")
    assert not other.added
    assert [f.reason for f in other.refused] == [VerificationReason.BAD_RECOVERY]


def test_recovery_key_vector_is_a_valid_rotation() -> None:
    v = SIGNING["recovery_key"][0]
    stored = Credential(
        id=v["cid"], user="alice", name="Alice's phone", public_key=h(v["public_key"]), created_at=T0,
        recovery_key=RecoveryKey(bytes(32)),
    )  # fmt: skip
    listed = replace(stored, recovery_key=RecoveryKey(h(v["recovery_pk"]), v["ts"], h(v["signature"])))
    sync = reconcile([listed], {stored.id: stored}, "rp_example")
    assert [c.id for c in sync.rotated] == [stored.id]
    assert not sync.refused
    forged = replace(listed, recovery_key=RecoveryKey(h(v["recovery_pk"]), v["ts"] + 1, h(v["signature"])))
    sync = reconcile([forged], {stored.id: stored}, "rp_example")
    assert [f.reason for f in sync.refused] == [VerificationReason.BAD_ROTATION]


# -- the RP's verdicts (docs/protocol.md sections 13 and 17; vectors "rp") -----------

RP_VERIFY: list[dict[str, Any]] = VECTORS["rp"]["verify"]
RP_CREATE: list[dict[str, Any]] = VECTORS["rp"]["create"]


@pytest.mark.parametrize("vector", RP_VERIFY, ids=[v["name"] for v in RP_VERIFY])
def test_rp_verify_vectors(vector: dict[str, Any]) -> None:
    kept = vector["challenge"]
    challenge = Challenge(
        id=kept["id"],
        user=kept["user"],
        number=kept["number"],
        digits=len(kept["number"]) or 2,
        nonce=h(kept["nonce"]),
        rp_nonce=h(kept["rp_nonce"]),
        context=kept["context"],
        created_at=kept["issued"],
        expires_at=kept["issued"] + kept["ttl_s"] * 1000,
        credential_ids=None if kept["credential_ids"] is None else tuple(kept["credential_ids"]),
        number_matching=kept["number_matching"],
    )
    keys = {cid: h(pk) for cid, pk in vector["keys"].items()}
    expect = vector["expect"]
    if "failure" in expect:
        with pytest.raises(VerificationFailed) as failure:
            evaluate(challenge, vector["result"], rp_id=vector["rp"], public_keys=keys, now_ms=vector["now"])
        assert failure.value.reason == expect["failure"]
        return
    result = evaluate(challenge, vector["result"], rp_id=vector["rp"], public_keys=keys, now_ms=vector["now"])
    assert result.status == expect["status"]
    assert result.approved is (expect["status"] == "approved")


@pytest.mark.parametrize("vector", RP_CREATE, ids=[v["name"] for v in RP_CREATE])
def test_rp_create_vectors(vector: dict[str, Any]) -> None:
    asked = vector["request"]
    check = _Asked(
        request={},
        user=asked["user"],
        context=dict(vector["response"]["context"]),
        ttl=asked["ttl"],
        digits=asked["digits"],
        rp_nonce=h(asked["rp_nonce"]),
        targets=_targets(asked["credential_id"], asked["credential_ids"]),
        issued=vector["issued"],
        headers={},
        number_matching=asked["number_matching"],
    )
    if "refused" in vector["expect"]:
        with pytest.raises(BadBrokerResponse):
            check.check(vector["response"])
        return
    challenge = check.check(vector["response"])
    assert [challenge.created_at, challenge.expires_at] == vector["expect"]["window"]
    assert challenge.number_matching is asked["number_matching"]
    assert (challenge.number == "") is not asked["number_matching"]  # nothing to show


RP_RECONCILE: list[dict[str, Any]] = VECTORS["rp"]["reconcile"]


def _outcomes(listing: list[Credential], sync: Any) -> list[dict[str, Any]]:
    """The SDK's CredentialSync as the vectors' per-listing outcomes: an id listed again
    is refused (key_mismatch); the first listing is accepted, rotated, refused or kept."""
    refusals: dict[str, list[str]] = {}
    for failure in sync.refused:
        refusals.setdefault(failure.credential_id, []).append(str(failure.reason))
    added = {c.id: c for c in sync.added}
    rotated = {c.id for c in sync.rotated}
    seen: set[str] = set()
    for cred in listing:
        if cred.id in seen:  # each listing again took one key_mismatch
            refusals[cred.id].remove("key_mismatch")
        seen.add(cred.id)
    seen.clear()
    out: list[dict[str, Any]] = []
    for cred in listing:
        if cred.id in seen:
            out.append({"id": cred.id, "outcome": "refused", "reason": "key_mismatch"})
        elif cred.id not in added and refusals.get(cred.id):
            out.append({"id": cred.id, "outcome": "refused", "reason": refusals[cred.id].pop(0)})
        elif cred.id in added:
            key = added[cred.id].recovery_key
            out.append({"id": cred.id, "outcome": "accepted", "recovery_key": key and key.to_json()})
        else:
            out.append({"id": cred.id, "outcome": "rotated" if cred.id in rotated else "kept"})
        seen.add(cred.id)
    assert not any(refusals.values()), f"refusals of nothing listed: {refusals}"
    return out


@pytest.mark.parametrize("vector", RP_RECONCILE, ids=[v["name"] for v in RP_RECONCILE])
def test_rp_reconcile_vectors(vector: dict[str, Any]) -> None:
    stored = {c["id"]: Credential.from_json(c) for c in vector["stored"]}
    listing = [Credential.from_json(c) for c in vector["listing"]["credentials"]]
    sync = reconcile(listing, stored, vector["rp"])
    expect = vector["expect"]
    assert _outcomes(listing, sync) == expect["listed"]
    assert sorted(sync.spent) == expect["spent"]
    assert sorted(sync.removed) == expect["removed"]
    assert sorted(sync.last_used) == expect["last_used"]
    assert sorted(sync.unconfirmed_at_broker) == expect["unconfirmed_at_broker"]
    assert [sync.current[cid].to_json() for cid in sorted(sync.current)] == expect["stored"]
