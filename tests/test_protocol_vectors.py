"""Known-answer test vectors for the signing bytes, pinned in docs/test-vectors.json.

A second implementation (another device agent, an RP SDK in another language)
checks itself against that file: same seed and inputs, same signing bytes, same
Ed25519 signature (Ed25519 is deterministic). The tests here check that the file
is exactly what this code computes, and pin a few values literally, so that a
change to the signing bytes cannot pass by regenerating the file alone.

Regenerate (only for a deliberate, versioned protocol change):
    .venv/bin/python tests/test_protocol_vectors.py --write
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from protocol import signing

VECTORS_PATH = Path(__file__).resolve().parent.parent / "docs" / "test-vectors.json"

SEEDS = [
    bytes(range(32)),
    bytes(range(32, 64)),
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
]
HELLO_NONCE = bytes.fromhex("a5" * 32)
CH_NONCE = bytes.fromhex("5a" * 32)

CONTEXTS: list[dict[str, str]] = [
    {},
    {"app": "Payroll"},
    {"app": "Payroll", "ip": "203.0.113.9", "location": "Zürich, CH", "browser": "Firefox 128"},
    # Sorted by UTF-8 bytes: "B" < "a" < "é" < "\ue000" < "😀" (UTF-16 order would put 😀 first).
    {"😀": "emoji", "\ue000": "private use", "é": "accent", "a": "", "B": "upper"},
    {"a": "bc"},
    {"ab": "c"},
]

ANSWERS: list[dict[str, Any]] = [
    {"decision": "approve", "number": "42", "context": 2, "seed": 0},
    {"decision": "approve", "number": "07", "context": 0, "seed": 1},
    {"decision": "deny", "number": "", "context": 2, "seed": 0},
    {"decision": "fraud", "number": "", "context": 3, "seed": 2},
    {"decision": "approve", "number": "12345678", "context": 1, "seed": 2},
]


RECOVERY_ANSWERS: list[dict[str, Any]] = [
    {"notice": "rn_0", "cid": "cred_A1", "new_cid": "cred_N1", "decision": "confirm", "seed": 0},
    {"notice": "rn_1", "cid": "cred_A1", "new_cid": "cred_N2", "decision": "disown", "seed": 0},
    {"notice": "rn_" + "n" * 61, "cid": "x" * 64, "new_cid": "c", "decision": "disown", "seed": 2},
]


def _key(seed: bytes) -> dict[str, str]:
    return {"seed": seed.hex(), "public_key": signing.public_key(seed).hex()}


def build_vectors() -> dict[str, Any]:
    """Compute every vector from the protocol code."""
    auth = []
    for i, (seed, cid) in enumerate(zip(SEEDS, ["cred_A1", "c", "x" * 64], strict=True)):
        message = signing.auth_bytes(HELLO_NONCE if i != 1 else bytes(32), cid)
        auth.append(
            {
                **_key(seed),
                "nonce": (HELLO_NONCE if i != 1 else bytes(32)).hex(),
                "cid": cid,
                "signing_bytes": message.hex(),
                "signature": signing.sign(seed, message).hex(),
            }
        )
    enroll = []
    for seed, token, name in [
        (SEEDS[0], "enrolltoken_0123456789abcdef", "Alice's phone"),
        (SEEDS[2], "T" * 128, "Téléphone 📱"),
    ]:
        pk = signing.public_key(seed)
        message = signing.enroll_bytes(HELLO_NONCE, token, pk, name)
        enroll.append(
            {
                **_key(seed),
                "nonce": HELLO_NONCE.hex(),
                "token": token,
                "device_name": name,
                "signing_bytes": message.hex(),
                "signature": signing.sign(seed, message).hex(),
            }
        )
    contexts = [{"context": ctx, "hash": signing.context_hash(ctx).hex()} for ctx in CONTEXTS]
    answers = []
    for i, spec in enumerate(ANSWERS):
        seed = SEEDS[spec["seed"]]
        ctx = CONTEXTS[spec["context"]]
        inputs = {
            "rp": "rp_example",
            "ch": f"ch_{i}",
            "nonce": CH_NONCE.hex(),
            "cid": "cred_A1",
            "decision": spec["decision"],
            "number": spec["number"],
            "ts": 1_767_225_610_000 + i,
            "context": ctx,
            "ctx_hash": signing.context_hash(ctx).hex(),
        }
        message = signing.answer_bytes(
            rp=inputs["rp"],
            ch=inputs["ch"],
            nonce=CH_NONCE,
            cid=inputs["cid"],
            decision=inputs["decision"],
            number=inputs["number"],
            ts=inputs["ts"],
            ctx_hash=signing.context_hash(ctx),
        )
        answers.append(
            {
                **_key(seed),
                **inputs,
                "signing_bytes": message.hex(),
                "signature": signing.sign(seed, message).hex(),
            }
        )
    recovery_answers = []
    for i, spec in enumerate(RECOVERY_ANSWERS):
        seed = SEEDS[spec["seed"]]
        inputs = {k: spec[k] for k in ("notice", "cid", "new_cid", "decision")}
        inputs["ts"] = 1_767_225_620_000 + i
        message = signing.recovery_answer_bytes(**inputs)
        recovery_answers.append(
            {
                **_key(seed),
                **inputs,
                "signing_bytes": message.hex(),
                "signature": signing.sign(seed, message).hex(),
            }
        )
    return {
        "description": (
            "pushauth protocol v1 known-answer vectors. Signing bytes: the domain string, then each "
            "item, each as a 4-byte big-endian length followed by its bytes (strings UTF-8, integers "
            "8-byte big-endian unsigned, binary as is). Signatures: Ed25519 (RFC 8032) with the key "
            "from the 32-byte seed. context_hash: SHA-256 of the signing bytes of the context domain, "
            "the entry count, then key and value of each entry, keys sorted by their UTF-8 bytes. "
            "Binary values are hex. Generated by tests/test_protocol_vectors.py."
        ),
        "domains": {
            "auth": signing.DOMAIN_AUTH,
            "enroll": signing.DOMAIN_ENROLL,
            "answer": signing.DOMAIN_ANSWER,
            "context": signing.DOMAIN_CONTEXT,
            "recovery_answer": signing.DOMAIN_RECOVERY_ANSWER,
        },
        "auth": auth,
        "enroll": enroll,
        "context_hash": contexts,
        "answer": answers,
        "recovery_answer": recovery_answers,
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def test_vectors_file_matches_the_code() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == render(build_vectors()), (
        "docs/test-vectors.json differs from what the protocol code computes"
    )


def test_vectors_verify_from_the_file_alone() -> None:
    # What a second implementation does: rebuild the bytes from the inputs, verify the signature.
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    for v in vectors["auth"]:
        message = signing.auth_bytes(bytes.fromhex(v["nonce"]), v["cid"])
        assert message.hex() == v["signing_bytes"]
        assert signing.is_valid(bytes.fromhex(v["public_key"]), message, bytes.fromhex(v["signature"]))
    for v in vectors["enroll"]:
        message = signing.enroll_bytes(
            bytes.fromhex(v["nonce"]), v["token"], bytes.fromhex(v["public_key"]), v["device_name"]
        )
        assert message.hex() == v["signing_bytes"]
        assert signing.is_valid(bytes.fromhex(v["public_key"]), message, bytes.fromhex(v["signature"]))
    for v in vectors["context_hash"]:
        assert signing.context_hash(v["context"]).hex() == v["hash"]
    for v in vectors["answer"]:
        assert signing.context_hash(v["context"]).hex() == v["ctx_hash"]
        message = signing.answer_bytes(
            rp=v["rp"],
            ch=v["ch"],
            nonce=bytes.fromhex(v["nonce"]),
            cid=v["cid"],
            decision=v["decision"],
            number=v["number"],
            ts=v["ts"],
            ctx_hash=bytes.fromhex(v["ctx_hash"]),
        )
        assert message.hex() == v["signing_bytes"]
        assert signing.is_valid(bytes.fromhex(v["public_key"]), message, bytes.fromhex(v["signature"]))
    for v in vectors["recovery_answer"]:
        message = signing.recovery_answer_bytes(v["notice"], v["cid"], v["new_cid"], v["decision"], v["ts"])
        assert message.hex() == v["signing_bytes"]
        assert signing.is_valid(bytes.fromhex(v["public_key"]), message, bytes.fromhex(v["signature"]))
    assert len(vectors["recovery_answer"]) == len(RECOVERY_ANSWERS)
    assert len(vectors["auth"]) == 3
    assert len(vectors["answer"]) == len(ANSWERS)


def test_pinned_values() -> None:
    # Literal values, computed once: a change here is a protocol change (and a new domain version).
    vectors = build_vectors()
    assert (
        vectors["auth"][0]["public_key"] == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert vectors["auth"][0]["signing_bytes"] == (
        "0000001070757368617574682f617574682f7631"  # len 16, "pushauth/auth/v1"
        "00000020" + "a5" * 32 + "00000007637265645f4131"  # nonce, then len 7, "cred_A1"
    )
    assert vectors["auth"][0]["signature"] == PINNED_AUTH_SIGNATURE
    assert vectors["context_hash"][0]["hash"] == PINNED_EMPTY_CONTEXT_HASH
    assert vectors["context_hash"][2]["hash"] == PINNED_SAMPLE_CONTEXT_HASH
    assert vectors["answer"][0]["signature"] == PINNED_ANSWER_SIGNATURE
    assert vectors["recovery_answer"][1]["signing_bytes"] == (
        "0000001b" + b"pushauth/recovery-answer/v1".hex()  # len 27, the domain
        + "00000004" + b"rn_1".hex() + "00000007" + b"cred_A1".hex() + "00000007" + b"cred_N2".hex()
        + "00000006" + b"disown".hex() + "00000008" + (1_767_225_620_001).to_bytes(8, "big").hex()
    )  # fmt: skip
    assert vectors["recovery_answer"][1]["signature"] == PINNED_RECOVERY_ANSWER_SIGNATURE


PINNED_AUTH_SIGNATURE = (
    "8adc28b5df5b4820b0c12cc7d96b9ab18f61df128534b58606211a9254cf2ff0"
    "a410c371d97da0bad9915c96c46047670a50730827ed7e3569534077fb090d0c"
)
PINNED_EMPTY_CONTEXT_HASH = "7b8e0eb079cd84ed97ecaacf554f23b530603dd9c016ad0db1ba6df446faf7d2"
PINNED_SAMPLE_CONTEXT_HASH = "cf73244dac405b342945f7da1690e1909454b6b05d302f9d74118214e66e8921"
PINNED_ANSWER_SIGNATURE = (
    "9a92d40a414a75e0f405fe1ac9b4767a15d3fa7f9fec3fa5712533cd20c035b6"
    "71f6a6072dd3e35f4202b7f4ffb4b8d427c9b0c52ae1a0b8dba86be010dc000c"
)
PINNED_RECOVERY_ANSWER_SIGNATURE = (
    "ce7e9f798628041714c075cd5ea6e87e18030ba84e260cc430e9a8efd867d5bf"
    "ffa3452d2fc9e07f8e1650d5290878f1b25d1a6b8f7aee64bd89b5103603d20b"
)


def test_signatures_match_rfc8032() -> None:
    # An anchor outside our own code: RFC 8032, section 7.1, TEST 1 (SEEDS[2] is its key).
    seed = SEEDS[2]
    assert (
        signing.public_key(seed).hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert signing.sign(seed, b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_context_hash_by_hand() -> None:
    # The empty context, hashed from the spec's words without protocol.signing.
    domain = b"pushauth/context/v1"
    message = struct.pack(">I", len(domain)) + domain + struct.pack(">I", 8) + struct.pack(">Q", 0)
    assert hashlib.sha256(message).hexdigest() == PINNED_EMPTY_CONTEXT_HASH
    # {"a": "bc"}: count 1, then "a", then "bc".
    message = (
        struct.pack(">I", len(domain)) + domain + struct.pack(">IQ", 8, 1)
        + struct.pack(">I", 1) + b"a" + struct.pack(">I", 2) + b"bc"
    )  # fmt: skip
    assert signing.context_hash({"a": "bc"}) == hashlib.sha256(message).digest()


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_protocol_vectors.py --write")
    VECTORS_PATH.write_text(render(build_vectors()), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")
