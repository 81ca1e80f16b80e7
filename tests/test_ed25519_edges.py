"""Ed25519 keys and signatures verifiers disagree on (vectors signing.ed25519): the rule of
docs/protocol.md section 9, held by every verifier here.

The broker and the RP SDK verify with protocol.signing (PyNaCl's libsodium, plus the
rule's checks of its own); PyNaCl alone must agree with the vectors too, and a lax
verifier (tests' model: no such checks) must accept the forgeries, or the vectors would
test nothing. The real broker refuses a backup written under a small-order key with a
signature made without any private key, and a valid signature with S + L (which a lax
verifier takes for a new, unreplayed request); the SDK refuses an enrollment binding by
such a key (a broker substituting a key anyone can sign for). The web authenticator's
verify is checked in the browser by tests/webapp_js/check_vectors.js.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from shared_broker import broker  # noqa: F401  (fixture)
from support import BrokerProcess

from device_agent import broker_http
from protocol import b64, ed25519_edges, signing
from protocol.ed25519_edges import L
from relying_party import VerificationFailed, VerificationReason
from relying_party.models import Credential, Enrollment, EnrollmentStatus
from relying_party.verify import verify_binding

VECTORS = json.loads((Path(__file__).parent.parent / "docs" / "test-vectors.json").read_text())
EDGES: list[dict[str, Any]] = VECTORS["signing"]["ed25519"]
h = bytes.fromhex


def libsodium_verifies(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


@pytest.mark.parametrize("v", EDGES, ids=[v["name"] for v in EDGES])
def test_every_verifier_agrees_with_the_vector(v: dict[str, Any]) -> None:
    pk, message, sig = h(v["public_key"]), h(v["message"]), h(v["signature"])
    assert signing.is_valid(pk, message, sig) is v["valid"]  # the broker's and the SDK's
    assert libsodium_verifies(pk, message, sig) is v["valid"]  # PyNaCl alone
    assert signing.refusal(pk, sig) == (None if v["rejected_for"] == "equation" else v["rejected_for"])
    assert ed25519_edges.lax_verify(pk, message, sig) is v["lax_accepts"]
    assert ed25519_edges.lax_verify(pk, message, sig, cofactored=True) is v["cofactored_accepts"]


def test_the_vectors_have_teeth() -> None:
    """Each rejection is a signature some verifier accepts: the 14 encodings of small-order
    points (8 canonical, 6 not) as keys, S + L, and the identity as R."""
    rejected = [v for v in EDGES if not v["valid"]]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for v in rejected:
        by_rule.setdefault(v["rejected_for"], []).append(v)
    assert len(by_rule["small_order_a"]) == 14
    assert len({v["public_key"] for v in by_rule["small_order_a"]}) == 14
    assert len(by_rule["small_order_r"]) == 3
    assert len(by_rule["non_canonical_s"]) == 1
    assert all(
        v["lax_accepts"]
        for rule in ("small_order_a", "small_order_r", "non_canonical_s")
        for v in by_rule[rule]
    )
    # The mixed-order key: cofactored verifiers accept what the rule (cofactorless) refuses.
    assert [v["cofactored_accepts"] for v in by_rule["equation"]] == [True]
    assert sum(v["valid"] for v in EDGES) == 2


def put_blob(broker: BrokerProcess, blob_id: str, body: bytes, ts: int, sig: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{broker.http_url}/v1/backups/{blob_id}",
        data=body,
        method="PUT",
        headers={
            "X-Pushauth-Time": str(ts),
            "X-Pushauth-Signature": b64.encode(sig),
            "Content-Type": "application/octet-stream",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_broker_refuses_a_blob_under_a_small_order_key_and_s_plus_l(
    broker: BrokerProcess,
) -> None:
    body, ts = b"ciphertext", broker_http.now_ms()
    digest = hashlib.sha256(body).digest()
    for pk in [h(v["public_key"]) for v in EDGES if v["rejected_for"] == "small_order_a"]:
        blob_id = b64.encode(pk)
        message = signing.backup_bytes("put", blob_id, ts, digest)
        forged = ed25519_edges.forge_small_order(pk, message)
        assert ed25519_edges.lax_verify(pk, message, forged)  # what a lax broker would store
        status, problem = put_blob(broker, blob_id, body, ts, forged)
        assert (status, problem["code"]) == (403, "bad_signature"), blob_id
    seed = signing.new_seed()
    blob_id = b64.encode(signing.public_key(seed))
    sig = signing.sign(seed, signing.backup_bytes("put", blob_id, ts, digest))
    s = int.from_bytes(sig[32:], "little")
    malleated = sig[:32] + (s + L).to_bytes(32, "little")
    assert put_blob(broker, blob_id, body, ts, sig)[0] == 204
    # The same request again with S + L: another signature's hash, so a lax verifier
    # would take it for a new request; refused for its S before the replay check.
    status, problem = put_blob(broker, blob_id, body, ts, malleated)
    assert (status, problem["code"]) == (403, "bad_signature")
    status, problem = put_blob(broker, blob_id, body, ts, sig)
    assert (status, problem["code"]) == (409, "replayed")


def test_the_sdk_refuses_a_binding_by_a_small_order_key() -> None:
    """A broker that swaps in the identity as the new key can 'sign' the binding without
    the link's secret; the RP must refuse it (it would then accept forged answers)."""
    enrollment = Enrollment(
        id="en_1", user="alice", account="alice@example.com", status=EnrollmentStatus.COMPLETED,
        expires_at=0, token="enrolltoken_0123456789abcdef", binding_secret=bytes(32), recoverable=False,
    )  # fmt: skip
    identity = h(next(v["public_key"] for v in EDGES if v["rejected_for"] == "small_order_a"))
    # The bytes the RP checks; the forger needs no secret for them, only the RP's check
    # would (a small-order key's "signature" holds for any message, made without a key).
    message = signing.binding_bytes(
        "rp_example", "enrolltoken_0123456789abcdef", bytes(32), identity, "phone", None
    )
    forged = ed25519_edges.forge_small_order(identity, message)
    assert ed25519_edges.lax_verify(identity, message, forged)
    credential = Credential(
        id="cred_X", user="alice", name="phone", public_key=identity, created_at=0, binding=forged
    )
    with pytest.raises(VerificationFailed) as failure:
        verify_binding(enrollment, credential, rp_id="rp_example")
    assert failure.value.reason is VerificationReason.BAD_BINDING
