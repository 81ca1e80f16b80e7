"""Known-answer vectors for what an RP checks (docs/protocol.md sections 13 and 17).

The `signing` vectors give an RP the bytes to verify; these give it the verdicts: a
challenge as the RP kept it, what the broker answered, and what the RP must conclude
(a status, or a refusal with the reason). They are written from the text, not from
an SDK, and checked against the reference SDK by tests/test_sdk_vectors.py, so that
a second RP (another language) can check its end-to-end verification with them.
"""

from __future__ import annotations

from typing import Any

from . import b64, signing
from .challenge import MAX_TTL_S, MIN_TTL_S
from .vectors_reconcile import reconcile_vectors

SEED_A = bytes(range(32))  # cred_A1, the RP's stored credential
SEED_B = bytes(range(32, 64))  # another key, which the RP does not hold for cred_A1
RP = "rp_example"
CID = "cred_A1"
T0 = 1_767_225_600_000  # the RP's clock when it built the create request (`issued`)
TTL_S = 60
SKEW = 120_000  # MAX_CLOCK_SKEW_MS
NONCE = bytes.fromhex("5a" * 32)
RP_NONCE = bytes.fromhex("c3" * 32)
CONTEXT = {"app": "Payroll", "ip": "203.0.113.9"}
CH = "ch_v"
# The broker's clock runs 37 ms ahead of the RP's: its times never set the window.
BROKER_OFFSET = 37


def _answer(
    decision: str,
    number: str,
    *,
    ts: int = T0 + 10_000,
    seed: bytes = SEED_A,
    ctx: dict[str, str] | None = None,
    rp_nonce: bytes = RP_NONCE,
    rp: str = RP,
    ch: str = CH,
) -> dict[str, Any]:
    ctx_hash = signing.context_hash(CONTEXT if ctx is None else ctx)
    message = signing.answer_bytes(
        rp=rp,
        ch=ch,
        nonce=NONCE,
        rp_nonce=rp_nonce,
        cid=CID,
        decision=decision,
        number=number,
        ts=ts,
        ctx_hash=ctx_hash,
    )
    return {
        "credential_id": CID,
        "decision": decision,
        "number": number,
        "ts": ts,
        "ctx_hash": b64.encode(ctx_hash),
        "signature": b64.encode(signing.sign(seed, message)),
    }


def _result(status: str, answer: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": CH,
        "user": "alice",
        "status": status,
        "nonce": b64.encode(NONCE),
        "rp_nonce": b64.encode(RP_NONCE),
        "context": dict(CONTEXT),
        "digits": 2,
        "created_at": T0 + BROKER_OFFSET + 5,
        "expires_at": T0 + BROKER_OFFSET + 5 + TTL_S * 1000,
        "credential_id": None,
        "number_matching": True,
        "answer": answer,
    }
    body.update(changes)
    return body


def _noncanonical(text: str) -> str:
    """The same bytes to a lenient decoder: the last character's unused bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) + 1]


def verify_vectors() -> list[dict[str, Any]]:
    """ChallengeResults and the RP's verdict (section 17)."""
    ok = _answer("approve", "42")
    cases: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        # (name, result, expect, changes to the defaults: now, keys)
        (
            "approved: the right number, signed over the RP's own values",
            _result("approved", ok),
            {"status": "approved"},
            {},
        ),
        ("denied", _result("denied", _answer("deny", "")), {"status": "denied"}, {}),
        (
            'reported ("this wasn\'t me")',
            _result("reported", _answer("fraud", "")),
            {"status": "reported"},
            {},
        ),
        (
            "number_mismatch: a wrong number",
            _result("number_mismatch", _answer("approve", "43")),
            {"status": "number_mismatch"},
            {},
        ),
        (
            "number_mismatch: 042 is not 42",
            _result("number_mismatch", _answer("approve", "042")),
            {"status": "number_mismatch"},
            {},
        ),
        (
            "pending before the RP's own expiry",
            _result("pending", None),
            {"status": "pending"},
            {"now": T0 + TTL_S * 1000 - 1},
        ),
        (
            "pending at the RP's own expiry reads as expired",
            _result("pending", None),
            {"status": "expired"},
            {"now": T0 + TTL_S * 1000},
        ),
        ("expired, an answer sent along is ignored", _result("expired", ok), {"status": "expired"}, {}),
        ("cancelled", _result("cancelled", None), {"status": "cancelled"}, {}),
        ("superseded", _result("superseded", None), {"status": "superseded"}, {}),
        ("withdrawn, an answer sent along is ignored", _result("withdrawn", ok), {"status": "withdrawn"}, {}),
        (
            "a status this reader does not know: ended, not approved",
            _result("timed_out_elsewhere", ok),
            {"status": "unknown"},
            {},
        ),
        (
            "a result about another challenge",
            _result("approved", ok, id="ch_other"),
            {"failure": "wrong_challenge"},
            {},
        ),
        ("approved without an answer", _result("approved", None), {"failure": "missing_answer"}, {}),
        ("denied without an answer", _result("denied", None), {"failure": "missing_answer"}, {}),
        (
            "a signature with padding",
            _result("approved", {**ok, "signature": ok["signature"] + "=="}),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a signature whose last character has unused bits set (the same bytes to a lenient decoder)",
            _result("approved", {**ok, "signature": _noncanonical(ok["signature"])}),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a ctx_hash whose last character has unused bits set",
            _result("approved", {**ok, "ctx_hash": _noncanonical(ok["ctx_hash"])}),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a signature in standard base64 (+ and /)",
            _result("approved", {**ok, "signature": ok["signature"].replace("-", "+").replace("_", "/")}),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "an approval with an empty number (shape)",
            _result("approved", _answer("approve", "")),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a deny with a number (shape)",
            _result("denied", _answer("deny", "42")),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a decision that does not exist",
            _result("approved", _answer("maybe", "42")),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "ts as a string",
            _result("approved", {**ok, "ts": str(ok["ts"])}),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "a number of 9 digits",
            _result("number_mismatch", _answer("approve", "123456789")),
            {"failure": "malformed_answer"},
            {},
        ),
        (
            "signed by a credential the RP does not hold for this challenge",
            _result("approved", ok),
            {"failure": "unknown_credential"},
            {"keys": {"cred_B2": signing.public_key(SEED_B).hex()}},
        ),
        (
            "aimed at credentials (credential_ids): signed by one of them",
            _result("approved", ok),
            {"status": "approved"},
            {"aimed": ["cred_B2", CID]},
        ),
        (
            "aimed at credentials: signed by one outside them, though the RP passed its key",
            _result("approved", ok),
            {"failure": "unknown_credential"},
            {"aimed": ["cred_B2", "cred_C3"], "keys": {CID: signing.public_key(SEED_A).hex()}},
        ),
        (
            "aimed at one credential (a setup's test push): signed by another the RP holds",
            _result("approved", ok),
            {"failure": "unknown_credential"},
            {"aimed": ["cred_B2"]},
        ),
        (
            "signed over another context than the RP sent",
            _result("approved", _answer("approve", "42", ctx={"app": "Payroll"})),
            {"failure": "context_mismatch"},
            {},
        ),
        (
            "an approval of another challenge replayed (another rp_nonce)",
            _result("approved", _answer("approve", "42", rp_nonce=bytes(32))),
            {"failure": "bad_signature"},
            {},
        ),
        (
            "signed for another RP",
            _result("approved", _answer("approve", "42", rp="rp_other")),
            {"failure": "bad_signature"},
            {},
        ),
        (
            "signed by another key than the RP stored for the credential",
            _result("approved", _answer("approve", "42", seed=SEED_B)),
            {"failure": "bad_signature"},
            {},
        ),
        (
            "signed at issued - skew: fresh",
            _result("approved", _answer("approve", "42", ts=T0 - SKEW)),
            {"status": "approved"},
            {},
        ),
        (
            "signed 1 ms before issued - skew: stale",
            _result("approved", _answer("approve", "42", ts=T0 - SKEW - 1)),
            {"failure": "stale_answer"},
            {},
        ),
        (
            "signed at issued + ttl + skew: fresh",
            _result("approved", _answer("approve", "42", ts=T0 + TTL_S * 1000 + SKEW)),
            {"status": "approved"},
            {},
        ),
        (
            "signed 1 ms after issued + ttl + skew: stale",
            _result("approved", _answer("approve", "42", ts=T0 + TTL_S * 1000 + SKEW + 1)),
            {"failure": "stale_answer"},
            {},
        ),
        (
            "the broker says approved, the signed answer has a wrong number",
            _result("approved", _answer("approve", "43")),
            {"failure": "status_mismatch"},
            {},
        ),
        (
            "the broker says approved, the signed answer is a deny",
            _result("approved", _answer("deny", "")),
            {"failure": "status_mismatch"},
            {},
        ),
        (
            "the broker says denied, the signed answer approves with the right number",
            _result("denied", ok),
            {"failure": "status_mismatch"},
            {},
        ),
        # A challenge the RP created without number matching (section 12): it kept no
        # number, and any approval signed over the challenge approves.
        (
            "without number matching: an approval with the empty number approves",
            _result("approved", _answer("approve", ""), number_matching=False),
            {"status": "approved"},
            {"number_matching": False},
        ),
        (
            "without number matching: an approval with a typed number (a device that ignores nm) approves",
            _result("approved", _answer("approve", "17"), number_matching=False),
            {"status": "approved"},
            {"number_matching": False},
        ),
        (
            "without number matching: a deny",
            _result("denied", _answer("deny", ""), number_matching=False),
            {"status": "denied"},
            {"number_matching": False},
        ),
        (
            "without number matching: the broker says number_mismatch for an approval",
            _result("number_mismatch", _answer("approve", "17"), number_matching=False),
            {"failure": "status_mismatch"},
            {"number_matching": False},
        ),
        (
            "with number matching: the broker's result says none, the empty approval is still refused",
            _result("approved", _answer("approve", ""), number_matching=False),
            {"failure": "malformed_answer"},
            {},
        ),
    ]
    out = []
    for name, result, expect, changes in cases:
        matching = changes.get("number_matching", True)
        out.append(
            {
                "name": name,
                "rp": RP,
                "challenge": {
                    "id": CH,
                    "user": "alice",
                    "number": "42" if matching else "",
                    "number_matching": matching,
                    "nonce": NONCE.hex(),
                    "rp_nonce": RP_NONCE.hex(),
                    "context": dict(CONTEXT),
                    "issued": T0,
                    "ttl_s": TTL_S,
                    # The credentials it was aimed at (credential_id's one or
                    # credential_ids), null: the user's confirmed ones (step 4).
                    "credential_ids": changes.get("aimed"),
                },
                "keys": changes.get("keys", {CID: signing.public_key(SEED_A).hex()}),
                "now": changes.get("now", T0 + 11_000),
                "result": result,
                "expect": expect,
            }
        )
    return out


def _created(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": CH,
        "user": "alice",
        "number": "123456",
        "digits": 6,
        "nonce": b64.encode(NONCE),
        "rp_nonce": b64.encode(RP_NONCE),
        "context": dict(CONTEXT),
        "created_at": T0 + BROKER_OFFSET,
        "expires_at": T0 + BROKER_OFFSET + TTL_S * 1000,
        "credential_id": None,
        "number_matching": True,
        "devices": 1,
        "superseded": [],
    }
    body.update(changes)
    return body


def create_vectors() -> list[dict[str, Any]]:
    """The broker's 201 to POST /v1/challenges and what the RP keeps or refuses (section 13)."""
    base = {
        "user": "alice",
        "rp_nonce": RP_NONCE.hex(),
        "ttl": TTL_S,
        "digits": 6,
        "credential_id": None,
        "credential_ids": None,
        "number_matching": True,
    }
    pair = [CID, "cred_B2"]
    older = _created()
    del older["number_matching"]
    long_ms = MAX_TTL_S * 1000
    cases: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        (
            "as asked: the window is the RP's issued + its own ttl",
            {},
            _created(),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "the broker's times do not widen the RP's ttl",
            {},
            _created(expires_at=T0 + long_ms),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "no ttl sent: the lifetime the broker answered (expires_at - created_at)",
            {"ttl": None},
            _created(expires_at=T0 + BROKER_OFFSET + 120_000),
            {"window": [T0, T0 + 120_000]},
        ),
        (
            "no ttl sent: a lifetime over 600 s is refused",
            {"ttl": None},
            _created(expires_at=T0 + BROKER_OFFSET + long_ms + 1),
            {"refused": "lifetime"},
        ),
        (
            "no ttl sent: a lifetime under 10 s is refused",
            {"ttl": None},
            _created(expires_at=T0 + BROKER_OFFSET + MIN_TTL_S * 1000 - 1),
            {"refused": "lifetime"},
        ),
        ("other digits than asked", {}, _created(number="1234", digits=4), {"refused": "digits"}),
        (
            "no digits sent: the policy's 2 digits",
            {"digits": None},
            _created(number="42", digits=2),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "no digits sent: 9 digits is outside 2..8",
            {"digits": None},
            _created(number="123456789", digits=9),
            {"refused": "digits"},
        ),
        (
            "no digits sent: 1 digit is outside 2..8",
            {"digits": None},
            _created(number="7", digits=1),
            {"refused": "digits"},
        ),
        (
            "a number shorter than its digits (a broker weakening number matching)",
            {},
            _created(number="12345"),
            {"refused": "number"},
        ),
        ("a number with a non-digit", {}, _created(number="12345a"), {"refused": "number"}),
        (
            "a number of non-ASCII digits",
            {},
            _created(number="\u0661\u0662\u0663\u0664\u0665\u0666"),
            {"refused": "number"},
        ),
        (
            "another rp_nonce than the RP's",
            {},
            _created(rp_nonce=b64.encode(bytes(32))),
            {"refused": "rp_nonce"},
        ),
        ("another user", {}, _created(user="mallory"), {"refused": "user"}),
        (
            "aimed at a credential the RP did not name",
            {},
            _created(credential_id="cred_X"),
            {"refused": "credential_id"},
        ),
        (
            "not aimed at the credential the RP named",
            {"credential_id": CID},
            _created(),
            {"refused": "credential_id"},
        ),
        (
            "aimed at the credential the RP named (a broker before RP API 1.8: no credential_ids)",
            {"credential_id": CID},
            _created(credential_id=CID),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "aimed at the credential the RP named, in both fields (RP API 1.8)",
            {"credential_id": CID},
            _created(credential_id=CID, credential_ids=[CID]),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "credential_id named, credential_ids says another",
            {"credential_id": CID},
            _created(credential_id=CID, credential_ids=["cred_X"]),
            {"refused": "credential_ids"},
        ),
        (
            "aimed at the credentials the RP named (credential_ids)",
            {"credential_ids": pair},
            _created(credential_ids=pair),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "aimed at the credentials the RP named, listed in another order",
            {"credential_ids": pair},
            _created(credential_ids=pair[::-1]),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "aimed at one more credential than the RP named",
            {"credential_ids": pair},
            _created(credential_ids=[*pair, "cred_X"]),
            {"refused": "credential_ids"},
        ),
        (
            "aimed at one fewer credential than the RP named",
            {"credential_ids": pair},
            _created(credential_ids=[CID]),
            {"refused": "credential_ids"},
        ),
        (
            "credential_ids named, sent to every confirmed credential",
            {"credential_ids": pair},
            _created(),
            {"refused": "credential_ids"},
        ),
        (
            "credential_ids named, credential_id set though there are two",
            {"credential_ids": pair},
            _created(credential_id=CID, credential_ids=pair),
            {"refused": "credential_id"},
        ),
        (
            "credential_ids of one: credential_id names it too",
            {"credential_ids": [CID]},
            _created(credential_id=CID, credential_ids=[CID]),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "credential_ids of one: credential_id null",
            {"credential_ids": [CID]},
            _created(credential_ids=[CID]),
            {"refused": "credential_id"},
        ),
        (
            "not aimed: credential_ids set all the same",
            {},
            _created(credential_ids=pair),
            {"refused": "credential_ids"},
        ),
        (
            "a broker before RP API 1.9 says no number_matching: number matching",
            {},
            older,
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "without number matching, as asked: no number",
            {"number_matching": False},
            _created(number=None, number_matching=False),
            {"window": [T0, T0 + TTL_S * 1000]},
        ),
        (
            "number matching asked, the broker made none (no number to match: weaker than asked)",
            {},
            _created(number=None, number_matching=False),
            {"refused": "number_matching"},
        ),
        (
            "no number matching asked, the broker made one with it",
            {"number_matching": False},
            _created(),
            {"refused": "number_matching"},
        ),
        (
            "no number matching asked, the broker says so and still gives a number",
            {"number_matching": False},
            _created(number_matching=False),
            {"refused": "number"},
        ),
    ]
    return [
        {"name": name, "request": {**base, **req}, "issued": T0, "response": resp, "expect": expect}
        for name, req, resp, expect in cases
    ]


def rp_vectors() -> dict[str, Any]:
    return {"create": create_vectors(), "verify": verify_vectors(), "reconcile": reconcile_vectors()}
