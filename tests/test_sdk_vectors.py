"""The SDK's end-to-end check against the known-answer vectors of docs/test-vectors.json.

The vectors are written independently of the SDK, so an SDK that assembled the signed
bytes differently (field order, domain, integer width) would fail here even if it
agreed with itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.challenge import Status
from relying_party import Challenge, VerificationFailed, VerificationReason
from relying_party.verify import evaluate, verify_answer
from relying_party.wire import b64encode

VECTORS = json.loads((Path(__file__).parent.parent / "docs" / "test-vectors.json").read_text())
ANSWERS: list[dict[str, Any]] = VECTORS["answer"]


def challenge_of(vector: dict[str, Any], number: str) -> Challenge:
    return Challenge(
        id=vector["ch"],
        user="alice",
        number=number,
        digits=len(number),
        nonce=bytes.fromhex(vector["nonce"]),
        context=vector["context"],
        created_at=0,
        expires_at=2**53,
    )


def answer_json(vector: dict[str, Any]) -> dict[str, Any]:
    return {
        "credential_id": vector["cid"],
        "decision": vector["decision"],
        "number": vector["number"],
        "ts": vector["ts"],
        "ctx_hash": b64encode(bytes.fromhex(vector["ctx_hash"])),
        "signature": b64encode(bytes.fromhex(vector["signature"])),
    }


def keys_of(vector: dict[str, Any]) -> dict[str, bytes]:
    return {vector["cid"]: bytes.fromhex(vector["public_key"])}


@pytest.mark.parametrize("vector", ANSWERS, ids=[f"{v['decision']}-{v['ch']}" for v in ANSWERS])
def test_every_answer_vector_verifies(vector: dict[str, Any]) -> None:
    number = vector["number"] or "42"  # deny/fraud carry no number; any shown number will do
    answer = verify_answer(
        challenge_of(vector, number), answer_json(vector), rp_id=vector["rp"], public_keys=keys_of(vector)
    )
    assert answer.signature.hex() == vector["signature"]


def test_approval_vector_is_approved_and_any_change_is_refused() -> None:
    [vector] = [v for v in ANSWERS if v["decision"] == "approve"][:1]
    challenge = challenge_of(vector, vector["number"])
    body = {"id": vector["ch"], "status": "approved", "answer": answer_json(vector)}
    result = evaluate(challenge, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=0)
    assert result.status is Status.APPROVED
    assert result.approved
    with pytest.raises(VerificationFailed) as failure:
        evaluate(challenge, body, rp_id=vector["rp"] + "x", public_keys=keys_of(vector), now_ms=0)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    other_nonce = Challenge(**{**challenge.to_json(), "nonce": b"\x00" * 32, "context": challenge.context})
    with pytest.raises(VerificationFailed):
        evaluate(other_nonce, body, rp_id=vector["rp"], public_keys=keys_of(vector), now_ms=0)
