"""The reference implementation against every vector of docs/test-vectors.json.

A second implementation (another device agent, broker or RP SDK) checks itself
against that file: same inputs, same bytes, same Ed25519 signatures (deterministic),
same refusals. Here the file must be exactly what `python -m protocol.vectors`
computes, the reference code must agree with every entry read back from the file
alone, and a few values are pinned literally (and the signing bytes rebuilt from the
spec's words without protocol.signing), so that a change to the signing bytes cannot
pass by regenerating the file.

Regenerate (only for a deliberate, versioned protocol change):
    .venv/bin/python -m protocol.vectors > docs/test-vectors.json
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from protocol import SUBPROTOCOLS, numbers, purpose, signing, text, uri
from protocol.challenge import outcome_for
from protocol.codec import decode, encode
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import FRAME_TYPES, Welcome
from protocol.session import ClientSession, ServerSession
from protocol.vectors import build, count, message_bytes, render, untagged

VECTORS_PATH = Path(__file__).resolve().parent.parent / "docs" / "test-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
SIGNING = VECTORS["signing"]


def test_vectors_file_matches_the_code() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == render(build()), (
        "docs/test-vectors.json differs from `python -m protocol.vectors`"
    )


def test_every_part_is_there() -> None:
    assert {v["type"] for v in VECTORS["frames"]} == set(FRAME_TYPES)
    assert set(SIGNING) == {
        "auth", "enroll", "binding", "context_hash", "answer", "backup", "recovery_key", "recover",
        "recovery_answer", "ed25519",
    }  # fmt: skip
    assert VECTORS["subprotocols"] == list(SUBPROTOCOLS)
    assert count(VECTORS) >= 180


# -- frames ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["type"])
def test_frame_encoding(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["msgpack"])
    frame = decode(data)
    assert vector["type"] == frame.TYPE
    assert frame.SENDER.value == vector["sender"]
    assert frame.to_wire() == untagged(vector["fields"])
    assert encode(frame) == data  # the reference encoder writes exactly these bytes


@pytest.mark.parametrize("vector", VECTORS["decode"], ids=lambda v: v["name"])
def test_frames_accepted_in_other_encodings(vector: dict[str, Any]) -> None:
    session = _session(vector["receiver"], vector["state"])
    frame = session.receive(message_bytes(vector))
    assert vector["type"] == frame.TYPE
    assert frame.to_wire() == untagged(vector["fields"])


def _session(receiver: str, state: str) -> ServerSession | ClientSession:
    if receiver == "broker":
        server = ServerSession(node="vectors", now_ms=0)
        if state == "ready":
            server.authenticated([])
        else:
            assert state == "awaiting_auth"
        return server
    client = ClientSession()
    hello = next(v for v in VECTORS["frames"] if v["type"] == "hello")
    if state in ("connected", "ready"):
        client.receive(bytes.fromhex(hello["msgpack"]))
    if state == "ready":
        client.receive(encode_welcome())
    return client


def encode_welcome() -> bytes:
    return encode(Welcome(accepted=(), rejected=(), pending=0, notices=0))


@pytest.mark.parametrize("vector", VECTORS["rejections"], ids=lambda v: f"{v['receiver']}: {v['name']}")
def test_rejections(vector: dict[str, Any]) -> None:
    session = _session(vector["receiver"], vector["state"])
    data: Any = vector["text"] if "text" in vector else message_bytes(vector)
    with pytest.raises(ProtocolError) as info:
        session.receive(data)
    err = info.value
    assert err.code == vector["code"]
    assert err.fatal is vector["fatal"]
    assert (err.close_code if err.fatal else None) == vector["close_code"]
    assert (None if err.ref is None else str(err.ref)) == vector["ref"]


def test_rejections_cover_every_wire_error_of_a_single_frame() -> None:
    codes = {v["code"] for v in VECTORS["rejections"]}
    # The others need broker state (a stored credential, challenge, token...): the
    # conformance runner (protocol/conformance.py) drives them against a live broker.
    assert codes == {
        "malformed", "unsupported_version", "frame_too_large", "unknown_frame", "invalid_field",
        "unexpected_frame", "not_authenticated",
    }  # fmt: skip


# -- URIs and numbers ------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["uris"]["valid"], ids=lambda v: v["name"])
def test_valid_uris(vector: dict[str, Any]) -> None:
    parsed = uri.parse(vector["uri"])
    want = vector["parsed"]
    assert (parsed.broker, parsed.token, parsed.rp, parsed.rp_name, parsed.account) == (
        want["broker"],
        want["token"],
        want["rp"],
        want["rp_name"],
        want["account"],
    )
    assert parsed.recoverable is want["recoverable"]
    assert (parsed.binding_secret.hex() if parsed.binding_secret else None) == want["es"]
    totp = parsed.totp
    assert (None if totp is None else [totp.secret, totp.algorithm, totp.digits, totp.period]) == (
        None if want["totp"] is None else list(want["totp"].values())
    )


@pytest.mark.parametrize("vector", VECTORS["uris"]["invalid"], ids=lambda v: v["name"])
def test_invalid_uris(vector: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        uri.parse(vector["uri"])
    assert info.value.code is ErrorCode.INVALID_URI == vector["code"]


def test_numbers() -> None:
    for v in VECTORS["numbers"]["match"]:
        assert numbers.matches(v["expected"], v["typed"]) is v["match"], v
    for v in VECTORS["numbers"]["outcome"]:
        number_matching = v["number_matching"]
        assert (
            outcome_for(v["decision"], v["typed"], v["expected"], number_matching=number_matching)
            == v["outcome"]
        ), v
    for v in VECTORS["numbers"]["generation"]:
        drawn = {int(numbers.generate(v["digits"])) for _ in range(200)}
        assert all(v["min"] <= n <= v["max"] for n in drawn)


def test_purposes() -> None:
    # Exactly the exact spelling under the exact key marks a setup test (15.1); the names
    # pin which vectors are true independently of the code that computed the file.
    assert [v["name"] for v in VECTORS["purposes"] if v["setup_test"]] == [
        "the marker",
        "the marker with other entries",
    ]
    assert [v["name"] for v in VECTORS["purposes"] if v["purpose"] == "verify"] == [
        "verify",
        "verify with other entries",
    ]
    for v in VECTORS["purposes"]:
        assert purpose.is_setup_test(v["ctx"]) is v["setup_test"], v["name"]
        assert purpose.purpose_of(v["ctx"]) == v["purpose"], v["name"]
        assert purpose.is_verify(v["ctx"]) is (v["purpose"] == "verify"), v["name"]


def test_the_verify_marker_is_one_exact_context_entry() -> None:
    """15.1: `purpose` = "verify" marks a re-authentication, spelt exactly so; an RP adds
    it with verify_context, keeping its other entries (all of them shown and signed)."""
    ctx = purpose.verify_context({"app": "Mail", "action": "Remove a device"})
    assert ctx == {"app": "Mail", "action": "Remove a device", "purpose": "verify"}
    assert purpose.is_verify(ctx) and not purpose.is_setup_test(ctx)
    assert purpose.purpose_of(ctx) == purpose.VERIFY == "verify"
    assert purpose.purpose_of(purpose.setup_test_context({})) == "setup test"
    for other in (
        {},
        {"purpose": "Verify"},
        {"purpose": " verify"},
        {"action": "verify"},
        {"purpose": "sign-in"},
    ):
        assert not purpose.is_verify(other) and purpose.purpose_of(other) is None, other


def test_text() -> None:
    """Section 18.4. The expectations are written here, apart from the code that computed
    the file: which characters are refused, and that every other space is shown as one."""
    refused = {v["unsafe"] for v in VECTORS["text"]} - {None}
    for cp in (0x3164, 0x115F, 0x1160, 0xFFA0, 0x2800, 0x034F, 0x17B4, 0xFE0F, 0xE0100, 0x180B, 0x2065):
        assert f"U+{cp:04X}" in refused
    for v in VECTORS["text"]:
        bad = text.first_unsafe(v["text"])
        assert (None if bad is None else f"U+{ord(bad):04X}") == v["unsafe"], v["name"]
        assert text.printable(v["text"]) == v["printable"], v["name"]
        if v["unsafe"] is None:
            assert v["printable"] == "".join(" " if c.isspace() else c for c in v["text"]), v["name"]
        assert text.first_unsafe(v["printable"]) is None and v["printable"].isprintable(), v["name"]


# -- signing, from the file alone --------------------------------------------------------


def _check(v: dict[str, Any], message: bytes, signer: str = "public_key", sig: str = "signature") -> None:
    assert message.hex() == v["signing_bytes"]
    assert signing.is_valid(bytes.fromhex(v[signer]), message, bytes.fromhex(v[sig]))


def test_signing_vectors_verify_from_the_file_alone() -> None:
    h = bytes.fromhex
    for v in SIGNING["auth"]:
        _check(v, signing.auth_bytes(h(v["nonce"]), v["cid"]))
    for v in SIGNING["enroll"]:
        rpk = None if v["recovery_pk"] is None else h(v["recovery_pk"])
        _check(v, signing.enroll_bytes(h(v["nonce"]), v["token"], h(v["public_key"]), v["device_name"], rpk))
    for v in SIGNING["binding"]:
        rpk = None if v["recovery_pk"] is None else h(v["recovery_pk"])
        message = signing.binding_bytes(
            v["rp"], v["token"], h(v["es"]), h(v["public_key"]), v["device_name"], rpk
        )
        _check(v, message)
    for v in SIGNING["context_hash"]:
        assert signing.context_hash(v["context"]).hex() == v["hash"]
    for v in SIGNING["answer"]:
        assert signing.context_hash(v["context"]).hex() == v["ctx_hash"]
        message = signing.answer_bytes(
            rp=v["rp"],
            ch=v["ch"],
            nonce=h(v["nonce"]),
            rp_nonce=h(v["rp_nonce"]),
            cid=v["cid"],
            decision=v["decision"],
            number=v["number"],
            ts=v["ts"],
            ctx_hash=h(v["ctx_hash"]),
        )
        _check(v, message)
    for v in SIGNING["backup"]:
        assert hashlib.sha256(h(v["body"])).hexdigest() == v["body_sha256"]
        _check(v, signing.backup_bytes(v["op"], v["blob_id"], v["ts"], h(v["body_sha256"])))
    for v in SIGNING["recovery_key"]:
        _check(v, signing.recovery_key_bytes(v["cid"], h(v["recovery_pk"]), v["ts"]))
    for v in SIGNING["recover"]:
        message = signing.recover_bytes(
            v["rp"], v["old_cid"], h(v["pk"]), v["device_name"], h(v["new_recovery_pk"]), v["ts"]
        )
        _check(v, message, "recovery_key", "recovery_signature")
        _check(v, message, "pk", "signature")
    for v in SIGNING["recovery_answer"]:
        _check(v, signing.recovery_answer_bytes(v["notice"], v["cid"], v["new_cid"], v["decision"], v["ts"]))


def test_keys_come_from_the_seeds() -> None:
    for group in SIGNING.values():
        for v in group:
            if "seed" in v:
                assert signing.public_key(bytes.fromhex(v["seed"])).hex() == v["public_key"]
    for v in SIGNING["recover"]:
        assert signing.public_key(bytes.fromhex(v["recovery_seed"])).hex() == v["recovery_key"]
        assert signing.public_key(bytes.fromhex(v["new_seed"])).hex() == v["pk"]


# -- a second implementation of the signing bytes, from the spec's words ----------------


def _items(*items: bytes | str | int) -> bytes:
    """docs/protocol.md, "Signing bytes": 4-byte big-endian length, then the bytes;
    strings UTF-8, integers 8-byte big-endian unsigned."""
    out = b""
    for item in items:
        raw = (
            item.encode()
            if isinstance(item, str)
            else struct.pack(">Q", item)
            if isinstance(item, int)
            else item
        )
        out += struct.pack(">I", len(raw)) + raw
    return out


def test_signing_bytes_rebuilt_without_protocol_signing() -> None:
    h = bytes.fromhex
    d = VECTORS["domains"]
    for v in SIGNING["auth"]:
        assert _items(d["auth"], h(v["nonce"]), v["cid"]).hex() == v["signing_bytes"]
    for v in SIGNING["enroll"]:
        rpk = h(v["recovery_pk"] or "")
        built = _items(d["enroll"], h(v["nonce"]), v["token"], h(v["public_key"]), v["device_name"], rpk)
        assert built.hex() == v["signing_bytes"]
    for v in SIGNING["binding"]:
        rpk = h(v["recovery_pk"] or "")
        built = _items(
            d["binding"], v["rp"], v["token"], h(v["es"]), h(v["public_key"]), v["device_name"], rpk
        )
        assert built.hex() == v["signing_bytes"]
    for v in SIGNING["context_hash"]:
        ctx = v["context"]
        flat: list[bytes | str | int] = [len(ctx)]
        for key in sorted(ctx, key=lambda k: k.encode()):
            flat += [key, ctx[key]]
        assert hashlib.sha256(_items(d["context"], *flat)).hexdigest() == v["hash"]
    for v in SIGNING["answer"]:
        built = _items(
            d["answer"], v["rp"], v["ch"], h(v["nonce"]), h(v["rp_nonce"]), v["cid"], v["decision"],
            v["number"], v["ts"], h(v["ctx_hash"]),
        )  # fmt: skip
        assert built.hex() == v["signing_bytes"]
    for v in SIGNING["backup"]:
        built = _items(d["backup"], v["op"], v["blob_id"], v["ts"], h(v["body_sha256"]))
        assert built.hex() == v["signing_bytes"]
    for v in SIGNING["recovery_key"]:
        assert _items(d["recovery_key"], v["cid"], h(v["recovery_pk"]), v["ts"]).hex() == v["signing_bytes"]
    for v in SIGNING["recover"]:
        built = _items(
            d["recover"],
            v["rp"],
            v["old_cid"],
            h(v["pk"]),
            v["device_name"],
            h(v["new_recovery_pk"]),
            v["ts"],
        )
        assert built.hex() == v["signing_bytes"]
    for v in SIGNING["recovery_answer"]:
        built = _items(d["recovery_answer"], v["notice"], v["cid"], v["new_cid"], v["decision"], v["ts"])
        assert built.hex() == v["signing_bytes"]


# -- pinned literals ---------------------------------------------------------------------


def test_pinned_values() -> None:
    # Computed once: a change here is a protocol change (and a new domain version).
    assert (
        SIGNING["auth"][0]["public_key"] == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert SIGNING["auth"][0]["signing_bytes"] == (
        "0000001070757368617574682f617574682f7631"  # len 16, "pushauth/auth/v1"
        "00000020" + "a5" * 32 + "00000007637265645f4131"  # nonce, then len 7, "cred_A1"
    )
    assert SIGNING["auth"][0]["signature"] == PINNED["auth"]
    assert (
        SIGNING["context_hash"][0]["hash"]
        == "7b8e0eb079cd84ed97ecaacf554f23b530603dd9c016ad0db1ba6df446faf7d2"
    )
    assert (
        SIGNING["context_hash"][2]["hash"]
        == "cf73244dac405b342945f7da1690e1909454b6b05d302f9d74118214e66e8921"
    )
    for name in ("enroll", "binding", "answer", "backup", "recovery_key", "recover", "recovery_answer"):
        assert SIGNING[name][0]["signature"] == PINNED[name], name
    assert SIGNING["recovery_answer"][1]["signing_bytes"] == (
        "0000001b" + b"pushauth/recovery-answer/v1".hex()  # len 27, the domain
        + "00000004" + b"rn_1".hex() + "00000007" + b"cred_A1".hex() + "00000007" + b"cred_N2".hex()
        + "00000006" + b"disown".hex() + "00000008" + (1_767_225_620_001).to_bytes(8, "big").hex()
    )  # fmt: skip
    answer = next(v for v in VECTORS["frames"] if v["type"] == "answer")
    assert hashlib.sha256(bytes.fromhex(answer["msgpack"])).hexdigest() == PINNED["answer_frame_sha256"]


PINNED = {
    "auth": "8adc28b5df5b4820b0c12cc7d96b9ab18f61df128534b58606211a9254cf2ff0"
    "a410c371d97da0bad9915c96c46047670a50730827ed7e3569534077fb090d0c",
    "enroll": "ee023427ac226a9e5262dea60f5cf0e3a18f11df4154fc1ad31a96c5a84570a5"
    "b2812c0bf49807c09b2b11b388b6f4a2b50690c16ff00d728b22513f6769b800",
    "binding": "8dc861066716544adfd27b75684cab8bb78732ef6bcc6c412aaa935c91e869d8"
    "e35c0c41fa3e1ea0d494fb12c0298ab834654fcb0701deb6cf29e259fe519c0e",
    "answer": "0d8f160c3f8f2635fc82d7c1ab6781386526f48a7725f901bf044977bed67ac2"
    "f7f7005c3bd40468aa2da4f69504c47a6497275587d096fa65f52b2dc010a30a",
    "backup": "ba51e7b79838f1d159839705c8041c10b3441cd589caf9e3590f8f3312fc01ef"
    "18555cefe3d17f5a80f95619aa1d89f3608ba6c45f0fbea5fdbc164d6e0ff10a",
    "recovery_key": "b4b2c80031b1e90db42e40607f386cf2f2ac069fea5e013e23fac278db43c421"
    "06a6ba570e7ca48daff1bd6a2b95dbe776d742be01425178750e24674832e00d",
    "recover": "ddc5b48748f5984da47559fd5e342b334f0b81744d407b2228f096778d7988d7"
    "b94b094eae52783d079b746109cf82bfee209e43ceea0e26e731eca62b80f305",
    "recovery_answer": "d6a1a9bbf5cf6d8e8e993fd155bd94e347fbf0ff05a7bf22150a88d8e671cd81"
    "0a1634bfc8b2538a10e0abf087016f5aa7e4c8ad1f367de8a423f607d908fb08",
    "answer_frame_sha256": "dd05a44444e60cdebcd269587ad519c90a947501fe1395407121f8dd7d6f8871",
}


def test_signatures_match_rfc8032() -> None:
    # An anchor outside our own code: RFC 8032, section 7.1, TEST 1 (the third seed is its key).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert (
        signing.public_key(seed).hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert signing.sign(seed, b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
