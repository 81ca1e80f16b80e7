# ruff: noqa: E501  (tables of test data read best one case a line)
"""Known-answer vectors for docs/test-vectors.json, computed from this package.

    python -m protocol.vectors > docs/test-vectors.json

A second implementation checks itself against that file: every frame's exact msgpack
bytes, frames a receiver must refuse (with the error code and whether it closes),
enrollment URIs valid and invalid, the number-matching rule, the context entry that
marks a setup test notification, what a device shows of untrusted text, every signing function's bytes and Ed25519
signature (Ed25519 is deterministic), the Ed25519 edge cases every verifier must
reject alike (protocol/ed25519_edges.py), and the RP's verdicts (vectors_rp.py). The values here
are fixed (no clock, no randomness), so the output is the same on every run;
tests/test_protocol_vectors.py checks that the file is exactly this output and that
the reference code agrees with every vector.

JSON conventions: binary values are hex strings where a field is always binary; in
frame field maps, where msgpack bin and str must be told apart, a binary value is
{"bin": "<hex>"}; nil is null. A message too large to list usefully is given as
{"msgpack_head": hex, "zeros": n}: those bytes followed by n zero bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import sys
from typing import Any
from urllib.parse import urlencode

import msgpack

from . import PROTOCOL_VERSION, SUBPROTOCOLS, b64, ed25519_edges, numbers, purpose, signing
from . import text as shown_text
from .challenge import MAX_TTL_S, MIN_TTL_S, outcome_for
from .codec import MAX_FRAME_SIZE, encode
from .errors import CLOSE_CODES, ErrorCode
from .frames import (
    AnswerResult,
    Authenticate,
    Cancel,
    Challenge,
    Enrolled,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    PushSubscribe,
    PushSubscribed,
    RecoveryNotice,
    RecoveryResult,
    Revoke,
    Revoked,
    Welcome,
)
from .session import enroll, sign_answer, sign_recovery_answer
from .uri import parse
from .vectors_rp import rp_vectors

# -- fixed inputs --------------------------------------------------------------------

SEEDS = [
    bytes(range(32)),
    bytes(range(32, 64)),
    # RFC 8032 section 7.1 TEST 1: an anchor outside this code.
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
]
RECOVERY_SEED = bytes(range(64, 96))
HELLO_NONCE = bytes.fromhex("a5" * 32)
CH_NONCE = bytes.fromhex("5a" * 32)
RP_NONCE = bytes.fromhex("c3" * 32)
BINDING_SECRET = bytes.fromhex("e5" * 32)
TOKEN = "enrolltoken_0123456789abcdef"
DEVICE_NAME = "Alice's phone"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

CONTEXTS: list[dict[str, str]] = [
    {},
    {"app": "Payroll"},
    {"app": "Payroll", "ip": "203.0.113.9", "location": "Zürich, CH", "browser": "Firefox 128"},
    # Sorted by UTF-8 bytes: "B" < "a" < "é" < "\ue000" < "😀" (UTF-16 order would put 😀 first).
    {"😀": "emoji", "\ue000": "private use", "é": "accent", "a": "", "B": "upper"},
    {"a": "bc"},
    {"ab": "c"},
]

CHALLENGE = Challenge(
    ch="ch_7Jq2",
    cid="cred_A1",
    rp="rp_example",
    rp_name="Example Corp",
    account="alice@example.com",
    nonce=CH_NONCE,
    rp_nonce=RP_NONCE,
    ctx=CONTEXTS[2],
    created=T0,
    expires=T0 + 60_000,
    digits=2,
)
NOTICE = RecoveryNotice(
    notice="rn_4kQ9", cid="cred_A1", new_cid="cred_N1", new_name="Alice's new phone", time=T0
)


def _hex(data: bytes) -> str:
    return data.hex()


def _key(seed: bytes) -> dict[str, str]:
    return {"seed": seed.hex(), "public_key": signing.public_key(seed).hex()}


def tagged(value: Any) -> Any:
    """A decoded msgpack value as JSON: bin as {"bin": hex}."""
    if isinstance(value, bytes):
        return {"bin": value.hex()}
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [tagged(v) for v in value]
    return value


def untagged(value: Any) -> Any:
    """The inverse of `tagged`."""
    if isinstance(value, dict):
        if set(value) == {"bin"} and isinstance(value["bin"], str):
            return bytes.fromhex(value["bin"])
        return {k: untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untagged(v) for v in value]
    return value


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -- frames ----------------------------------------------------------------------------


def sample_frames() -> list[Frame]:
    """One valid frame of every type (two where an optional field matters)."""
    answer = sign_answer(CHALLENGE, seed=SEEDS[0], decision="approve", number="42", ts=T0 + 10_000)
    deny = sign_answer(CHALLENGE, seed=SEEDS[0], decision="deny", number="", ts=T0 + 11_000)
    # `nm` (added within version 2): a challenge without number matching, and its
    # approval, which signs the empty number.
    numberless = dataclasses.replace(CHALLENGE, ch="ch_9Nn0", nm=False)
    numberless_approval = sign_answer(
        numberless, seed=SEEDS[0], decision="approve", number="", ts=T0 + 12_000
    )
    return [
        Hello(nonce=HELLO_NONCE, time=T0, max_frame=MAX_FRAME_SIZE, node="node-a"),
        Authenticate(
            creds=(
                {"cid": "cred_A1", "sig": signing.sign(SEEDS[0], signing.auth_bytes(HELLO_NONCE, "cred_A1"))},
                {"cid": "cred_B1", "sig": signing.sign(SEEDS[1], signing.auth_bytes(HELLO_NONCE, "cred_B1"))},
            )
        ),
        Authenticate(creds=()),
        Welcome(
            accepted=("cred_A1",),
            rejected=({"cid": "cred_B1", "code": "credential_revoked"},),
            pending=1,
            notices=1,
        ),
        enroll(
            HELLO_NONCE,
            rid=7,
            token=TOKEN,
            seed=SEEDS[0],
            name=DEVICE_NAME,
            rp="rp_example",
            binding_secret=BINDING_SECRET,
            recovery_pk=signing.public_key(RECOVERY_SEED),
        ),
        enroll(
            HELLO_NONCE,
            rid=1,
            token=TOKEN,
            seed=SEEDS[1],
            name=DEVICE_NAME,
            rp="rp_example",
            binding_secret=None,
            recovery_pk=None,
        ),
        Enrolled(
            rid=7,
            cid="cred_A1",
            rp="rp_example",
            rp_name="Example Corp",
            user="alice",
            account="alice@example.com",
        ),
        CHALLENGE,
        answer,
        deny,
        numberless,
        numberless_approval,
        AnswerResult(ch=CHALLENGE.ch, outcome="approved"),
        Cancel(ch=CHALLENGE.ch, reason="answered"),
        # `by` (added within version 2): this connection's own credential answered.
        Cancel(ch=CHALLENGE.ch, reason="answered", by="cred_A1"),
        Revoke(rid=8, cid="cred_A1"),
        Revoked(cid="cred_A1", reason="removed_by_device", rid=8),
        Revoked(cid="cred_A1", reason="removed_by_rp", rid=None),
        NOTICE,
        # `recovery_ts` (added within version 2): the recovery's signed ts, here the new
        # device's clock 90 s ahead of the broker's; the old device's rotation follows it.
        dataclasses.replace(NOTICE, recovery_ts=T0 + 90_000),
        sign_recovery_answer(NOTICE, seed=SEEDS[0], decision="disown", ts=T0 + 20_000, rid=9),
        RecoveryResult(notice=NOTICE.notice, cid="cred_A1", outcome="disowned", rid=9),
        Error(code="already_answered", message="challenge already ended: approved", ref=CHALLENGE.ch),
        PushSubscribe(
            rid=10,
            cids=("cred_A1",),
            endpoint="https://push.example.net/send/abc123",
            p256dh=b"\x04" + bytes(range(1, 65)),
            auth=bytes(range(16)),
        ),
        PushSubscribe(rid=11, cids=("cred_A1",), endpoint=None, p256dh=None, auth=None),
        PushSubscribed(rid=10, key=b"\x04" + bytes(range(64, 128)), cids=("cred_A1",)),
        Ping(rid=12),
        Pong(rid=12),
    ]


def _sample(frame_type: str) -> Frame:
    return next(f for f in sample_frames() if frame_type == f.TYPE)


def frame_vectors() -> list[dict[str, Any]]:
    out = []
    for frame in sample_frames():
        fields = frame.to_wire()
        out.append(
            {
                "type": frame.TYPE,
                "sender": frame.SENDER.value,
                "fields": tagged(fields),
                "msgpack": _hex(encode(frame)),
            }
        )
    return out


def _frame_bytes(t: str, fields: dict[str, Any], *, v: Any = PROTOCOL_VERSION) -> bytes:
    return _pack({"v": v, "t": t, **fields})


def _answer_fields(**changes: Any) -> dict[str, Any]:
    base = sign_answer(CHALLENGE, seed=SEEDS[0], decision="approve", number="42", ts=T0 + 10_000).to_wire()
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def _padded(size: int) -> bytes:
    """An `authenticate` frame of exactly `size` bytes: an unknown key `pad` holds
    bin 32 zero bytes (unknown keys are ignored, so only the size matters)."""
    head = _pack({"v": PROTOCOL_VERSION, "t": "authenticate", "creds": []})
    # fixmap header of 3 -> 4 entries, then "pad" (a3 706164), then bin32 header.
    assert head[0] == 0x83
    prefix = bytes([0x84]) + head[1:] + bytes([0xA3]) + b"pad" + b"\xc6"
    count = size - len(prefix) - 4
    return prefix + struct.pack(">I", count) + bytes(count)


def _message(data: bytes) -> dict[str, Any]:
    """How a message appears in the file (see the module docstring)."""
    if len(data) <= 4096:
        return {"msgpack": _hex(data)}
    head = data.rstrip(b"\x00")
    return {"msgpack_head": _hex(head), "zeros": len(data) - len(head)}


def message_bytes(entry: dict[str, Any]) -> bytes:
    """The message a vector entry describes (the inverse of `_message`)."""
    if "msgpack" in entry:
        return bytes.fromhex(entry["msgpack"])
    return bytes.fromhex(entry["msgpack_head"]) + bytes(entry["zeros"])


def decode_vectors() -> list[dict[str, Any]]:
    """Frames a receiver must accept, though not as the reference encoder writes them,
    with the fields they decode to."""
    answer = _answer_fields()
    reordered = {"t": "answer", **{k: answer[k] for k in reversed(list(answer))}, "v": PROTOCOL_VERSION}
    cases: list[tuple[str, str, str, bytes, dict[str, Any]]] = [
        ("unknown keys are ignored", "broker", "answer", _frame_bytes("answer", {**answer, "x_new": [1, {"a": b"\x00"}]}), answer),
        ("keys in any order", "broker", "answer", _pack(reordered), answer),
        (
            "an integer in a wider encoding than needed (ts as uint64 is already; rid 8 as uint32)",
            "broker",
            "revoke",
            bytes([0x84, 0xA1]) + b"v" + bytes([PROTOCOL_VERSION, 0xA1]) + b"t" + _pack("revoke")
            + bytes([0xA3]) + b"rid" + b"\xce\x00\x00\x00\x08" + bytes([0xA3]) + b"cid" + _pack("cred_A1"),
            {"rid": 8, "cid": "cred_A1"},
        ),
        (
            "a str in a wider encoding than needed (cid as str8)",
            "broker",
            "revoke",
            bytes([0x84, 0xA1]) + b"v" + bytes([PROTOCOL_VERSION, 0xA1]) + b"t" + _pack("revoke")
            + bytes([0xA3]) + b"rid" + bytes([8]) + bytes([0xA3]) + b"cid" + b"\xd9\x07cred_A1",
            {"rid": 8, "cid": "cred_A1"},
        ),
        (
            "a key that is msgpack bin is an unknown key: ignored",
            "broker",
            "revoke",
            bytes([0x85, 0xA1]) + b"v" + bytes([PROTOCOL_VERSION, 0xA1]) + b"t" + _pack("revoke")
            + bytes([0xA3]) + b"rid" + bytes([8]) + bytes([0xA3]) + b"cid" + _pack("cred_A1")
            + b"\xc4\x03cid" + _pack("cred_B1"),
            {"rid": 8, "cid": "cred_A1"},
        ),
        (
            "rid 2^31, the largest (outside int32: read it as a wider integer)",
            "broker",
            "revoke",
            _frame_bytes("revoke", {"rid": 2**31, "cid": "cred_A1"}),
            {"rid": 2**31, "cid": "cred_A1"},
        ),
        (
            f"a frame of exactly max_frame ({MAX_FRAME_SIZE}) bytes",
            "broker",
            "authenticate",
            _padded(MAX_FRAME_SIZE),
            {"creds": []},
        ),
        (
            "a code this version does not send is accepted (receivers treat it generically)",
            "device",
            "cancel",
            _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "teleported_2"}),
            {"ch": "ch_7Jq2", "reason": "teleported_2"},
        ),
        (
            "cancel.by as nil reads as a cancel without it (a key added within version 2 may be missing or nil)",
            "device",
            "cancel",
            _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "answered", "by": None}),
            {"ch": "ch_7Jq2", "reason": "answered"},
        ),
        (
            "cancel.by with another reason is read as sent (a device heeds it with answered only)",
            "device",
            "cancel",
            _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "expired", "by": "cred_A1"}),
            {"ch": "ch_7Jq2", "reason": "expired", "by": "cred_A1"},
        ),
        (
            "welcome.rejected with a code this version does not send",
            "device",
            "welcome",
            _frame_bytes(
                "welcome",
                {"accepted": [], "rejected": [{"cid": "cred_A1", "code": "quarantined", "why": "x"}], "pending": 0, "notices": 0},
            ),
            {"accepted": [], "rejected": [{"cid": "cred_A1", "code": "quarantined"}], "pending": 0, "notices": 0},
        ),
        (
            "an approval with the empty number is accepted at decode: its challenge decides (section 7.1; one without number matching takes it)",
            "broker",
            "answer",
            _frame_bytes("answer", _answer_fields(number="")),
            _answer_fields(number=""),
        ),
        (
            "challenge.nm as nil reads as a challenge with number matching (added within version 2)",
            "device",
            "challenge",
            _frame_bytes("challenge", {**CHALLENGE.to_wire(), "nm": None}),
            CHALLENGE.to_wire(),
        ),
        (
            "challenge.nm true is read as sent: number matching, as when it is missing (a sender leaves it out)",
            "device",
            "challenge",
            _frame_bytes("challenge", {**CHALLENGE.to_wire(), "nm": True}),
            {**CHALLENGE.to_wire(), "nm": True},
        ),
        (
            "push_subscribe before authenticate is accepted, as enroll is (section 6.1: its cids are checked as a request)",
            "broker",
            "push_subscribe",
            _frame_bytes("push_subscribe", {"rid": 3, "cids": [], "endpoint": None, "p256dh": None, "auth": None}),
            {"rid": 3, "cids": [], "endpoint": None, "p256dh": None, "auth": None},
        ),
    ]  # fmt: skip
    before_auth = {"authenticate", "push_subscribe"}  # the broker's state these cases are read in
    return [
        {
            "name": name,
            "receiver": receiver,
            "state": "awaiting_auth" if t in before_auth else "ready",
            "type": t,
            **_message(data),
            "fields": tagged(fields),
        }
        for name, receiver, t, data, fields in cases
    ]


def rejection_vectors() -> list[dict[str, Any]]:
    """Input a receiver must refuse: the error code, and the close code if it is fatal
    (null: an `error` frame answers it, or a device ignores it, and the connection stays).
    `state` is the receiver's connection state before the input (docs/protocol.md,
    state machines); `ref` is what the `error` frame's ref carries."""
    answer = _answer_fields()
    v = PROTOCOL_VERSION
    B, D = "broker", "device"
    AA, R = "awaiting_auth", "ready"
    AH, C, DR = "awaiting_hello", "connected", "ready"
    challenge = CHALLENGE.to_wire()
    cases: list[tuple[str, str, str, bytes | str, str, Any]] = [
        # -- encoding (malformed) --
        ("a text WebSocket message", B, R, "{\"v\":2}", "malformed", None),
        ("not msgpack (reserved byte c1)", B, AA, b"\xc1", "malformed", None),
        ("truncated msgpack", B, AA, _frame_bytes("revoke", {"rid": 8, "cid": "cred_A1"})[:-2], "malformed", None),
        ("trailing bytes after the map", B, R, _frame_bytes("revoke", {"rid": 8, "cid": "cred_A1"}) + b"\xc0", "malformed", None),
        ("an array, not a map", B, AA, _pack([v, "authenticate", []]), "malformed", None),
        ("an empty message", B, AA, b"", "malformed", None),
        (
            "a map repeating a key",
            B, R,
            bytes([0x84, 0xA1]) + b"v" + bytes([v, 0xA1]) + b"t" + _pack("revoke") + bytes([0xA3]) + b"rid" + bytes([8])
            + bytes([0xA3]) + b"rid" + bytes([9]),
            "malformed", None,
        ),
        ("a msgpack extension value", B, AA, _frame_bytes("authenticate", {"creds": [], "x": msgpack.ExtType(1, b"a")}), "malformed", None),
        # msgpack decodes the timestamp type (-1) itself: refused all the same (4.1).
        ("a msgpack timestamp (ext -1) under an unknown key", B, AA, _frame_bytes("authenticate", {"creds": [], "x": msgpack.Timestamp(0, 0)}), "malformed", None),
        ("a map key that is an integer", B, AA, _pack({"v": v, "t": "authenticate", "creds": [], 1: 2}), "malformed", None),
        ("no v", B, AA, _pack({"t": "authenticate", "creds": []}), "malformed", None),
        ("v is a string", B, AA, _frame_bytes("authenticate", {"creds": []}, v="2"), "malformed", None),
        ("v is true", B, AA, _frame_bytes("authenticate", {"creds": []}, v=True), "malformed", None),
        ("no t", B, AA, _pack({"v": v, "creds": []}), "malformed", None),
        ("t is not a string", B, AA, _pack({"v": v, "t": 3, "creds": []}), "malformed", None),
        # -- version --
        ("v is 1", B, AA, _frame_bytes("authenticate", {"creds": []}, v=1), "unsupported_version", None),
        ("v is 3", B, AA, _frame_bytes("authenticate", {"creds": []}, v=3), "unsupported_version", None),
        ("v is 3 and t unknown: the version is checked first", B, AA, _frame_bytes("frobnicate", {}, v=3), "unsupported_version", None),
        # -- size --
        (f"a frame of max_frame + 1 ({MAX_FRAME_SIZE + 1}) bytes", B, AA, _padded(MAX_FRAME_SIZE + 1), "frame_too_large", None),
        # -- unknown frame types: not fatal --
        ("an unknown frame type with an integer rid", B, R, _frame_bytes("frobnicate", {"rid": 5, "x": 1}), "unknown_frame", "5"),
        ("an unknown frame type without rid", B, AA, _frame_bytes("frobnicate", {"x": 1}), "unknown_frame", None),
        ("an unknown frame type with a rid out of range", B, R, _frame_bytes("frobnicate", {"rid": 2**31 + 1}), "unknown_frame", None),
        ("an unknown frame type with rid 2^31: its ref in decimal", B, R, _frame_bytes("frobnicate", {"rid": 2**31}), "unknown_frame", "2147483648"),
        # -- fields --
        ("a missing field (answer without sig)", B, R, _frame_bytes("answer", _answer_fields(sig=_DROP)), "invalid_field", None),
        ("an integer field as a string", B, R, _frame_bytes("answer", _answer_fields(ts=str(T0))), "invalid_field", None),
        ("an integer field as true", B, R, _frame_bytes("revoke", {"rid": True, "cid": "cred_A1"}), "invalid_field", None),
        ("an integer field as a float", B, R, _frame_bytes("revoke", {"rid": 8.0, "cid": "cred_A1"}), "invalid_field", None),
        ("a negative rid", B, R, _frame_bytes("revoke", {"rid": -1, "cid": "cred_A1"}), "invalid_field", None),
        ("rid over 2^31", B, R, _frame_bytes("revoke", {"rid": 2**31 + 1, "cid": "cred_A1"}), "invalid_field", None),
        ("a str where bin is required (ctx_hash)", B, R, _frame_bytes("answer", _answer_fields(ctx_hash="00" * 32)), "invalid_field", None),
        ("bin where str is required (cid)", B, R, _frame_bytes("revoke", {"rid": 8, "cid": b"cred_A1"}), "invalid_field", None),
        ("a signature of 63 bytes", B, R, _frame_bytes("answer", _answer_fields(sig=bytes(63))), "invalid_field", None),
        ("an ident with a space", B, R, _frame_bytes("revoke", {"rid": 8, "cid": "cred A1"}), "invalid_field", None),
        ("an ident with a trailing newline", B, R, _frame_bytes("revoke", {"rid": 8, "cid": "cred_A1\n"}), "invalid_field", None),
        ("an ident of 65 characters", B, R, _frame_bytes("revoke", {"rid": 8, "cid": "c" * 65}), "invalid_field", None),
        ("an empty ident", B, R, _frame_bytes("revoke", {"rid": 8, "cid": ""}), "invalid_field", None),
        ("an unknown decision", B, R, _frame_bytes("answer", _answer_fields(decision="maybe")), "invalid_field", None),
        ("a typed number of 9 digits", B, R, _frame_bytes("answer", _answer_fields(number="123456789")), "invalid_field", None),
        ("a typed number with a non-digit", B, R, _frame_bytes("answer", _answer_fields(number="4a")), "invalid_field", None),
        ("a typed number in non-ASCII digits", B, R, _frame_bytes("answer", _answer_fields(number="٤٢")), "invalid_field", None),
        ("authenticate with 65 credentials", B, AA, _frame_bytes("authenticate", {"creds": [{"cid": f"c{i}", "sig": bytes(64)} for i in range(65)]}), "invalid_field", None),
        ("authenticate entry without sig", B, AA, _frame_bytes("authenticate", {"creds": [{"cid": "cred_A1"}]}), "invalid_field", None),
        ("enroll token of 15 characters", B, AA, _frame_bytes("enroll", {"rid": 1, "token": "t" * 15, "pk": bytes(32), "name": "n", "rpk": None, "binding": None, "sig": bytes(64)}), "invalid_field", None),
        ("enroll with an empty device name", B, AA, _frame_bytes("enroll", {"rid": 1, "token": TOKEN, "pk": bytes(32), "name": "", "rpk": None, "binding": None, "sig": bytes(64)}), "invalid_field", None),
        ("enroll with a bidi override in the device name", B, AA, _frame_bytes("enroll", {"rid": 1, "token": TOKEN, "pk": bytes(32), "name": "phone\u202e", "rpk": None, "binding": None, "sig": bytes(64)}), "invalid_field", None),
        ("enroll with a Hangul filler in the device name (blank, Default_Ignorable_Code_Point)", B, AA, _frame_bytes("enroll", {"rid": 1, "token": TOKEN, "pk": bytes(32), "name": "phone\u3164", "rpk": None, "binding": None, "sig": bytes(64)}), "invalid_field", None),
        ("enroll with a line feed in the device name", B, AA, _frame_bytes("enroll", {"rid": 1, "token": TOKEN, "pk": bytes(32), "name": "a\nb", "rpk": None, "binding": None, "sig": bytes(64)}), "invalid_field", None),
        ("enroll without the binding key (nil must be sent)", B, AA, _frame_bytes("enroll", {"rid": 1, "token": TOKEN, "pk": bytes(32), "name": "n", "rpk": None, "sig": bytes(64)}), "invalid_field", None),
        ("push_subscribe with an endpoint but no keys", B, R, _frame_bytes("push_subscribe", {"rid": 3, "cids": ["cred_A1"], "endpoint": "https://push.example.net/send/abc123", "p256dh": None, "auth": None}), "invalid_field", None),
        ("push_subscribe with keys but no endpoint", B, AA, _frame_bytes("push_subscribe", {"rid": 3, "cids": [], "endpoint": None, "p256dh": b"\x04" + bytes(64), "auth": bytes(16)}), "invalid_field", None),
        # -- answer shape (before any state; an approval without a number needs its
        # challenge: refused for one with number matching, section 7.1) --
        ("a denial with a number", B, R, _frame_bytes("answer", _answer_fields(decision="deny")), "invalid_field", None),
        ("a fraud report with a number", B, R, _frame_bytes("answer", _answer_fields(decision="fraud")), "invalid_field", None),
        ("a denial with a number, before authenticate: shape before state", B, AA, _frame_bytes("answer", _answer_fields(decision="deny")), "invalid_field", None),
        ("an approval without a number, before authenticate: state first (its shape needs the challenge)", B, AA, _frame_bytes("answer", _answer_fields(number="")), "not_authenticated", None),
        # -- direction and state --
        ("a broker frame sent by a device (hello)", B, AA, encode(_sample("hello")), "unexpected_frame", None),
        ("a broker frame sent by a device (error)", B, R, _frame_bytes("error", {"code": "x", "message": "", "ref": None}), "unexpected_frame", None),
        ("a second authenticate", B, R, _frame_bytes("authenticate", {"creds": []}), "unexpected_frame", None),
        ("answer before authenticate", B, AA, _frame_bytes("answer", answer), "not_authenticated", None),
        ("revoke before authenticate", B, AA, _frame_bytes("revoke", {"rid": 8, "cid": "cred_A1"}), "not_authenticated", None),
        ("recovery_answer before authenticate", B, AA, encode(_sample("recovery_answer")), "not_authenticated", None),
        # -- device side --
        ("first frame is not hello", D, AH, _frame_bytes("welcome", {"accepted": [], "rejected": [], "pending": 0, "notices": 0}), "unexpected_frame", None),
        ("hello twice", D, C, encode(_sample("hello")), "unexpected_frame", None),
        ("challenge before welcome", D, C, encode(CHALLENGE), "unexpected_frame", None),
        ("recovery_notice before welcome", D, C, encode(NOTICE), "unexpected_frame", None),
        ("a device frame sent by a broker (answer)", D, DR, _frame_bytes("answer", answer), "unexpected_frame", None),
        ("an unknown frame type (a device ignores it)", D, DR, _frame_bytes("frobnicate", {"x": 1}), "unknown_frame", None),
        ("an unknown frame type before hello (a device ignores it too)", D, AH, _frame_bytes("frobnicate", {"x": 1}), "unknown_frame", None),
        ("a challenge context with a bin key (not an ignored unknown key: the context is shown and hashed)", D, DR, _frame_bytes("challenge", {**challenge, "ctx": {b"app": "Webmail"}}), "invalid_field", None),
        ("a challenge context with a bin value", D, DR, _frame_bytes("challenge", {**challenge, "ctx": {"app": b"Webmail"}}), "invalid_field", None),
        ("a code with upper-case letters", D, DR, _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "Answered"}), "invalid_field", None),
        ("a code of 33 characters", D, DR, _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "a" * 33}), "invalid_field", None),
        ("cancel.by that is not an ident (empty)", D, DR, _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "answered", "by": ""}), "invalid_field", None),
        ("recovery_notice.recovery_ts that is not an integer", D, DR, _frame_bytes("recovery_notice", {"notice": "rn_4kQ9", "cid": "cred_A1", "new_cid": "cred_N1", "new_name": "N", "time": T0, "recovery_ts": "1"}), "invalid_field", None),
        ("cancel.by that is not a string", D, DR, _frame_bytes("cancel", {"ch": "ch_7Jq2", "reason": "answered", "by": 7}), "invalid_field", None),
        ("challenge digits 9", D, DR, _frame_bytes("challenge", {**challenge, "digits": 9}), "invalid_field", None),
        ("challenge.nm as 0, not a boolean", D, DR, _frame_bytes("challenge", {**challenge, "nm": 0}), "invalid_field", None),
        ("challenge.nm as the string false", D, DR, _frame_bytes("challenge", {**challenge, "nm": "false"}), "invalid_field", None),
        ("challenge without rp_nonce (a version 1 challenge)", D, DR, _frame_bytes("challenge", {k: x for k, x in challenge.items() if k != "rp_nonce"}), "invalid_field", None),
        ("challenge context with 17 entries", D, DR, _frame_bytes("challenge", {**challenge, "ctx": {f"k{i}": "" for i in range(17)}}), "invalid_field", None),
        ("challenge context value of 257 characters", D, DR, _frame_bytes("challenge", {**challenge, "ctx": {"app": "x" * 257}}), "invalid_field", None),
        ("a msgpack timestamp (ext -1) in place of created", D, DR, _frame_bytes("challenge", {**challenge, "created": msgpack.Timestamp(0, 0)}), "malformed", None),
        ("hello max_frame below 1024", D, AH, _frame_bytes("hello", {"nonce": HELLO_NONCE, "time": T0, "max_frame": 1023, "node": ""}), "invalid_field", None),
        ("a version 1 hello", D, AH, _frame_bytes("hello", {"nonce": HELLO_NONCE, "time": T0, "max_frame": 32768, "node": ""}, v=1), "unsupported_version", None),
        (f"a broker frame over {MAX_FRAME_SIZE} bytes", D, DR, _padded(MAX_FRAME_SIZE + 1).replace(b"authenticate", b"frobnicate__"), "frame_too_large", None),
    ]  # fmt: skip
    out = []
    for name, receiver, state, data, code, ref in cases:
        close = CLOSE_CODES.get(ErrorCode(code))
        entry: dict[str, Any] = {"name": name, "receiver": receiver, "state": state}
        if isinstance(data, str):
            entry["text"] = data
        else:
            entry.update(_message(data))
        entry.update({"code": code, "fatal": close is not None, "close_code": close, "ref": ref})
        out.append(entry)
    return out


# -- URIs ------------------------------------------------------------------------------

_BASE_Q = [
    ("v", "2"),
    ("broker", "wss://push.example.com/v1/device"),
    ("token", TOKEN),
    ("rp", "rp_example"),
    ("rp_name", "Example Corp"),
    ("account", "alice@example.com"),
]
_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _uri(*changes: tuple[str, str | None], extra: list[tuple[str, str]] | None = None) -> str:
    q = dict(_BASE_Q)
    for key, value in changes:
        if value is None:
            q.pop(key, None)
        else:
            q[key] = value
    return "pushauth://enroll?" + urlencode(list(q.items()) + (extra or []))


def uri_vectors() -> dict[str, list[dict[str, Any]]]:
    es = b64.encode(BINDING_SECRET)
    valid = [
        ("the required parameters", _uri()),
        ("recoverable, binding secret and TOTP", _uri(extra=[("recoverable", "1"), ("es", es), ("secret", _TOTP_SECRET), ("algorithm", "SHA256"), ("digits", "8"), ("period", "60")])),
        ("TOTP defaults (SHA1, 6 digits, 30 s); a lower-case secret with padding and spaces", _uri(extra=[("secret", "jbsw y3dp ehpk 3pxp===="), ("algorithm", "sha1")])),
        ("recoverable=0; an unknown parameter is ignored", _uri(extra=[("recoverable", "0"), ("future", "x")])),
        ("a space as + and as %20; white space around the URI", "  " + _uri().replace("Example+Corp", "Example%20Corp") + "\n"),
        ("a ws:// broker on loopback with a port and a query", _uri(("broker", "ws://127.0.0.1:8080/v1/device?x=1"))),
        ("reserved characters in the labels", _uri(("rp_name", "Bob & Alice's = Shop #1 + 100%"), ("account", "ä ö/?&=#"))),
        # Read as application/x-www-form-urlencoded (section 11.1), not by the builder's grammar:
        ("empty pieces (&&, a trailing &) are skipped", _uri().replace("&token=", "&&token=", 1) + "&"),
        ("a raw = in a value belongs to the value; a bare name is an empty unknown parameter", _uri().replace("rp_name=Example+Corp", "rp_name=Example=Corp", 1) + "&flag"),
        ("TOTP digits with a leading zero", _uri(extra=[("secret", _TOTP_SECRET), ("digits", "06")])),
        ("a ws:// broker on another host: parsed (a device refuses to connect, section 2.1)", _uri(("broker", "ws://push.example.com/v1/device"))),
        ("ASCII white space around the URI: tab, form feed, CR LF", "\t\f " + _uri() + "\r\n"),
        ("the scheme in another case (RFC 3986: schemes are case-insensitive)", _uri().replace("pushauth://", "PushAuth://", 1)),
        ("a percent-encoded parameter name (%76 is v)", _uri().replace("v=2", "%76=2", 1)),
        ("a TOTP secret of 18 characters whose unused bits are not zero (not checked)", _uri(extra=[("secret", "JBSWY3DPEHPK3PXPJB")])),
        # A link wrapped across lines (section 11.1): line breaks, the spaces and tabs
        # beside them, and tabs, are removed before it is read.
        ("wrapped: a line break inside the account name", _uri().replace("%40example", "%40exam\nple", 1)),
        ("wrapped: CR LF and an indented next line inside the service name", _uri().replace("Example+Corp", "Exam\r\n    ple+Corp", 1)),
        ("wrapped: a mail client's soft break (a space before CR LF) in the broker URL and the token", _uri().replace("push.example", "push.exa \r\nmple", 1).replace(TOKEN, TOKEN[:9] + " \r\n" + TOKEN[9:], 1)),
        ("wrapped: inside the scheme and inside a parameter name", _uri().replace("pushauth", "push\nauth", 1).replace("rp_name=", "rp_na\r\nme=", 1)),
        ("wrapped: several breaks and a blank line in a row, with a tab", _uri().replace("Example+Corp", "Exa \n\n \r\n\tmple+Corp", 1)),
        ("a tab anywhere is removed", _uri().replace("Example+Corp", "Exa\tmple+Corp", 1)),
        ("a raw space away from a line break stays: read as a space", _uri().replace("Example+Corp", "Example Corp", 1)),
    ]  # fmt: skip
    invalid = [
        ("another scheme", _uri().replace("pushauth://", "otpauth://", 1)),
        ("another host", _uri().replace("//enroll?", "//add?", 1)),
        ("version 1", _uri(("v", "1"))),
        ("version missing", _uri(("v", None))),
        ("a parameter given twice", _uri(extra=[("token", TOKEN)])),
        ("broker missing", _uri(("broker", None))),
        ("token missing", _uri(("token", None))),
        ("rp missing", _uri(("rp", None))),
        ("rp_name missing", _uri(("rp_name", None))),
        ("account empty", _uri(("account", ""))),
        ("broker is http://", _uri(("broker", "http://push.example.com/v1/device"))),
        ("broker without a host", _uri(("broker", "ws:///v1/device"))),
        ("broker with user info", _uri(("broker", "wss://user:pw@push.example.com/v1/device"))),
        ("broker with a fragment", _uri(("broker", "wss://push.example.com/v1/device#x"))),
        ("broker with a malformed port", _uri(("broker", "wss://push.example.com:99999/v1/device"))),
        ("broker with a broken IPv6 host", _uri(("broker", "wss://[::1/v1/device"))),
        ("token of 15 characters", _uri(("token", "t" * 15))),
        ("token with a dot", _uri(("token", "enrolltoken.0123456789abcdef"))),
        ("rp with a space", _uri(("rp", "rp example"))),
        ("rp_name of 257 characters", _uri(("rp_name", "x" * 257))),
        ("recoverable=2", _uri(extra=[("recoverable", "2")])),
        ("recoverable=true", _uri(extra=[("recoverable", "true")])),
        ("es of 31 bytes", _uri(extra=[("es", b64.encode(bytes(31)))])),
        ("es with padding", _uri(extra=[("es", es + "=")])),
        ("es in standard base64 (+ and /)", _uri(extra=[("es", "+/" + es[2:])])),
        ("es with non-zero unused bits (not canonical base64url)", _uri(extra=[("es", es[:-1] + "V")])),
        ("a % that starts no escape", _uri(("account", "100%")).replace("100%25", "100%", 1)),
        ("a percent-escape that is not UTF-8", _uri(("account", "x")).replace("account=x", "account=%C3%28", 1)),
        ("TOTP secret not base32", _uri(extra=[("secret", "JBSWY3DP1HPK3PXP")])),
        ("TOTP secret under 80 bits", _uri(extra=[("secret", "JBSWY3DPEHPK3PX")])),
        ("TOTP algorithm MD5", _uri(extra=[("secret", _TOTP_SECRET), ("algorithm", "MD5")])),
        ("TOTP digits 7", _uri(extra=[("secret", _TOTP_SECRET), ("digits", "7")])),
        ("TOTP digits +6", _uri(extra=[("secret", _TOTP_SECRET), ("digits", "+6")])),
        ("TOTP period 0", _uri(extra=[("secret", _TOTP_SECRET), ("period", "0")])),
        ("TOTP period 3601", _uri(extra=[("secret", _TOTP_SECRET), ("period", "3601")])),
        ("TOTP parameters without a secret", _uri(extra=[("digits", "6")])),
        ("longer than 2048 characters", _uri(("account", "x" * 256), extra=[("pad", "p" * 1900)])),
        ("an unknown parameter given twice", _uri(extra=[("future", "1"), ("future", "2")])),
        ("a TOTP secret of 17 characters (a length base32 cannot end with)", _uri(extra=[("secret", "JBSWY3DPEHPK3PXPJ")])),
        ("a byte-order mark (U+FEFF) before it: only ASCII white space is removed", "\ufeff" + _uri()),
        ("U+0085 (next line) before it: only ASCII white space is removed", "\x85" + _uri()),
        ("U+001C (file separator) before it: only ASCII white space is removed", "\x1c" + _uri()),
        ("the host in upper case: only the scheme's case does not matter", _uri().replace("//enroll?", "//ENROLL?", 1)),
        ("a no-break space (U+00A0) beside a line break stays: a malformed token", _uri().replace(TOKEN, TOKEN[:9] + "\u00a0\n" + TOKEN[9:], 1)),
        ("a raw space in the token away from a line break stays: a malformed token", _uri().replace(TOKEN, TOKEN[:9] + " " + TOKEN[9:], 1)),
    ]  # fmt: skip
    out_valid = []
    for name, text in valid:
        parsed = parse(text)
        fields: dict[str, Any] = {
            "broker": parsed.broker,
            "token": parsed.token,
            "rp": parsed.rp,
            "rp_name": parsed.rp_name,
            "account": parsed.account,
            "recoverable": parsed.recoverable,
            "es": None if parsed.binding_secret is None else parsed.binding_secret.hex(),
            "totp": None
            if parsed.totp is None
            else {
                "secret": parsed.totp.secret,
                "algorithm": parsed.totp.algorithm,
                "digits": parsed.totp.digits,
                "period": parsed.totp.period,
            },
        }
        out_valid.append({"name": name, "uri": text, "parsed": fields})
    return {
        "valid": out_valid,
        "invalid": [{"name": name, "uri": text, "code": "invalid_uri"} for name, text in invalid],
    }


# -- numbers ---------------------------------------------------------------------------


def number_vectors() -> dict[str, Any]:
    match = [
        ("42", "42"),
        ("42", "042"),
        ("42", "4"),
        ("42", "24"),
        ("42", ""),
        ("10", "10"),
        ("10", "1"),
        ("12345678", "12345678"),
        ("12345678", "1234567"),
        ("123456", "123456"),
        ("123456", "0123456"),
    ]
    # (decision, typed, expected, number_matching): without number matching the RP keeps
    # no number (expected ""), and any approval approves (section 12).
    outcomes = [
        ("approve", "42", "42", True),
        ("approve", "43", "42", True),
        ("approve", "042", "42", True),
        ("deny", "", "42", True),
        ("fraud", "", "42", True),
        ("approve", "", "", False),
        ("approve", "17", "", False),
        ("deny", "", "", False),
        ("fraud", "", "", False),
    ]
    return {
        "generation": [
            {"digits": d, "min": 10 ** (d - 1), "max": 10**d - 1}
            for d in range(numbers.MIN_DIGITS, numbers.MAX_DIGITS + 1)
        ],
        "match": [{"expected": e, "typed": t, "match": numbers.matches(e, t)} for e, t in match],
        "outcome": [
            {
                "decision": d,
                "typed": t,
                "expected": e,
                "number_matching": nm,
                "outcome": outcome_for(d, t, e, number_matching=nm).value,
            }
            for d, t, e, nm in outcomes
        ],
    }


# -- signing ---------------------------------------------------------------------------


def _signed(seed: bytes, message: bytes, **inputs: Any) -> dict[str, Any]:
    return {
        **_key(seed),
        **inputs,
        "signing_bytes": message.hex(),
        "signature": signing.sign(seed, message).hex(),
    }


def signing_vectors() -> dict[str, Any]:
    rpk = signing.public_key(RECOVERY_SEED)
    out: dict[str, Any] = {}
    out["auth"] = [
        _signed(seed, signing.auth_bytes(nonce, cid), nonce=nonce.hex(), cid=cid)
        for seed, nonce, cid in [
            (SEEDS[0], HELLO_NONCE, "cred_A1"),
            (SEEDS[1], bytes(32), "c"),
            (SEEDS[2], HELLO_NONCE, "x" * 64),
        ]
    ]
    out["enroll"] = []
    for seed, token, name, recovery_pk in [
        (SEEDS[0], TOKEN, DEVICE_NAME, rpk),
        (SEEDS[0], TOKEN, DEVICE_NAME, None),
        (SEEDS[2], "T" * 128, "Téléphone 📱", None),
    ]:
        pk = signing.public_key(seed)
        message = signing.enroll_bytes(HELLO_NONCE, token, pk, name, recovery_pk)
        out["enroll"].append(
            _signed(
                seed,
                message,
                nonce=HELLO_NONCE.hex(),
                token=token,
                device_name=name,
                recovery_pk=None if recovery_pk is None else recovery_pk.hex(),
            )
        )
    out["binding"] = []
    for seed, rp, secret, recovery_pk in [
        (SEEDS[0], "rp_example", BINDING_SECRET, rpk),
        (SEEDS[1], "rp_example", bytes(32), None),
    ]:
        pk = signing.public_key(seed)
        message = signing.binding_bytes(rp, TOKEN, secret, pk, DEVICE_NAME, recovery_pk)
        out["binding"].append(
            _signed(
                seed,
                message,
                rp=rp,
                token=TOKEN,
                es=secret.hex(),
                es_b64=b64.encode(secret),
                device_name=DEVICE_NAME,
                recovery_pk=None if recovery_pk is None else recovery_pk.hex(),
            )
        )
    out["context_hash"] = [{"context": ctx, "hash": signing.context_hash(ctx).hex()} for ctx in CONTEXTS]
    out["answer"] = []
    for i, (decision, number, ctx_i, seed_i) in enumerate(
        [
            ("approve", "42", 2, 0),
            ("approve", "07", 0, 1),
            ("deny", "", 2, 0),
            ("fraud", "", 3, 2),
            ("approve", "12345678", 1, 2),
        ]
    ):
        ctx = CONTEXTS[ctx_i]
        inputs: dict[str, Any] = {
            "rp": "rp_example",
            "ch": f"ch_{i}",
            "nonce": CH_NONCE.hex(),
            "rp_nonce": RP_NONCE.hex(),
            "cid": "cred_A1",
            "decision": decision,
            "number": number,
            "ts": T0 + 10_000 + i,
            "context": ctx,
            "ctx_hash": signing.context_hash(ctx).hex(),
        }
        message = signing.answer_bytes(
            rp=inputs["rp"],
            ch=inputs["ch"],
            nonce=CH_NONCE,
            rp_nonce=RP_NONCE,
            cid=inputs["cid"],
            decision=decision,
            number=number,
            ts=inputs["ts"],
            ctx_hash=signing.context_hash(ctx),
        )
        out["answer"].append(_signed(SEEDS[seed_i], message, **inputs))
    # Keys and signatures verifiers disagree on unless they follow section 9's rule, over
    # the first answer's bytes (its ordinary signature is the first, valid, case).
    first = out["answer"][0]
    out["ed25519"] = ed25519_edges.edge_vectors(
        SEEDS[0], bytes.fromhex(first["signing_bytes"]), bytes.fromhex(first["signature"])
    )
    body = b'{"sealed":"example"}'

    out["backup"] = [
        _signed(
            SEEDS[1],
            signing.backup_bytes(op, b64.encode(signing.public_key(SEEDS[1])), T0 + 30_000 + i, hashlib.sha256(data).digest()),
            op=op,
            blob_id=b64.encode(signing.public_key(SEEDS[1])),
            ts=T0 + 30_000 + i,
            body=data.hex(),
            body_sha256=hashlib.sha256(data).hexdigest(),
        )
        for i, (op, data) in enumerate([("put", body), ("get", b""), ("delete", b"")])
    ]  # fmt: skip
    out["recovery_key"] = [
        _signed(
            SEEDS[0],
            signing.recovery_key_bytes("cred_A1", rpk, T0 + 40_000),
            cid="cred_A1",
            recovery_pk=rpk.hex(),
            ts=T0 + 40_000,
        )
    ]
    new_seed, new_rpk = SEEDS[1], signing.public_key(SEEDS[2])
    message = signing.recover_bytes(
        "rp_example", "cred_A1", signing.public_key(new_seed), "Alice's new phone", new_rpk, T0 + 50_000
    )
    out["recover"] = [
        {
            "rp": "rp_example",
            "old_cid": "cred_A1",
            "recovery_seed": RECOVERY_SEED.hex(),
            "recovery_key": rpk.hex(),
            "new_seed": new_seed.hex(),
            "pk": signing.public_key(new_seed).hex(),
            "device_name": "Alice's new phone",
            "new_recovery_pk": new_rpk.hex(),
            "ts": T0 + 50_000,
            "signing_bytes": message.hex(),
            "recovery_signature": signing.sign(RECOVERY_SEED, message).hex(),
            "signature": signing.sign(new_seed, message).hex(),
        }
    ]  # fmt: skip
    out["recovery_answer"] = [
        _signed(
            SEEDS[seed_i],
            signing.recovery_answer_bytes(notice, cid, new_cid, decision, T0 + 20_000 + i),
            notice=notice,
            cid=cid,
            new_cid=new_cid,
            decision=decision,
            ts=T0 + 20_000 + i,
        )
        for i, (notice, cid, new_cid, decision, seed_i) in enumerate(
            [
                ("rn_0", "cred_A1", "cred_N1", "confirm", 0),
                ("rn_1", "cred_A1", "cred_N2", "disown", 0),
                ("rn_" + "n" * 61, "x" * 64, "c", "disown", 2),
            ]
        )
    ]
    return out


def text_vectors() -> list[dict[str, Any]]:
    """Untrusted text (section 18.4): the first character a broker refuses (`unsafe`,
    as U+XXXX, or null) and what a device shows (`printable`)."""
    cases: list[tuple[str, str]] = [
        ("ASCII", "Firefox 128 on Windows"),
        ("letters of other scripts", "서울, 東京, Zürich, Αθήνα, ᄀ, ㄱ, ﾡ"),
        ("an emoji without a variation selector", "Anna's \u2764 phone"),
        ("ESC of an ANSI sequence (Cc)", "Firefox\x1b[1A\x1b[2K"),
        ("carriage return (Cc)", "Lyon\rParis"),
        ("NEXT LINE (C1, Cc)", "Webmail\x85"),
        ("RIGHT-TO-LEFT OVERRIDE (Cf)", "moc.\u202elive"),
        ("ZERO WIDTH SPACE (Cf)", "Web\u200bmail"),
        ("SOFT HYPHEN (Cf)", "Web\xadmail"),
        ("a tag character (Cf, astral)", "Webmail\U000e0041"),
        ("LINE SEPARATOR (Zl)", "203.0.113.5\u2028IP: 10.0.0.1"),
        ("HANGUL FILLER (Lo, default ignorable)", "\u3164"),
        ("HANGUL CHOSEONG FILLER (Lo, default ignorable)", "Bank\u115f"),
        ("HANGUL JUNGSEONG FILLER (Lo, default ignorable)", "Bank\u1160"),
        ("HALFWIDTH HANGUL FILLER (Lo, default ignorable)", "Bank\uffa0 evil.example"),
        ("COMBINING GRAPHEME JOINER (Mn, default ignorable)", "pay\u034fpal"),
        ("KHMER VOWEL INHERENT AQ and AA (Mn, default ignorable)", "a\u17b4\u17b5"),
        ("MONGOLIAN FREE VARIATION SELECTOR ONE (Mn, default ignorable)", "a\u180b"),
        ("VARIATION SELECTOR-16 after an emoji (Mn, default ignorable)", "Anna's \u2764\ufe0f phone"),
        ("VARIATION SELECTOR-17 (Mn, astral, default ignorable)", "Web\U000e0100mail"),
        ("a reserved default ignorable code point", "a\u2065b"),
        ("BRAILLE PATTERN BLANK (So)", "\u2800\u2800"),
        ("another Braille pattern", "\u2801"),
        ("NO-BREAK SPACE in a location: shown as a space", "Saint-Denis,\xa0France"),
        ("NARROW NO-BREAK SPACE before AM: shown as a space", "10:00\u202fAM"),
        (
            "a run of wide spaces: each shown as a space",
            "Webmail\u3000\u3000\u2003\u2001\u200a\u205f\u1680\u2007evil.example",
        ),
        ("spaces and an unsafe character together", "a\xa0\u3164\u3000b"),
    ]
    return [
        {
            "name": name,
            "text": value,
            "unsafe": None if (bad := shown_text.first_unsafe(value)) is None else f"U+{ord(bad):04X}",
            "printable": shown_text.printable(value),
        }
        for name, value in cases
    ]


# -- the file --------------------------------------------------------------------------


def purpose_vectors() -> list[dict[str, Any]]:
    """Contexts, the agreed purpose a device words them by (15.1; None: a sign-in), and
    whether that is a setup test notification."""
    contexts: list[tuple[str, dict[str, str]]] = [
        ("the marker", {"purpose": "setup test"}),
        ("the marker with other entries", {"app": "Payroll", "purpose": "setup test", "ip": "203.0.113.5"}),
        ("no purpose: a sign-in", {"app": "Payroll"}),
        ("empty context", {}),
        ("another purpose", {"purpose": "sign-in"}),
        ("case differs", {"purpose": "Setup test"}),
        ("spaces around", {"purpose": " setup test"}),
        ("the value under another key", {"action": "setup test"}),
        ("empty value", {"purpose": ""}),
        ("verify", {"purpose": "verify"}),
        ("verify with other entries", {"app": "Payroll", "purpose": "verify", "action": "Remove a device"}),
        ("verify, case differs", {"purpose": "Verify"}),
        ("verify, spaces around", {"purpose": "verify "}),
        ("verify under another key", {"action": "verify"}),
    ]
    return [
        {
            "name": name,
            "ctx": ctx,
            "purpose": purpose.purpose_of(ctx),
            "setup_test": purpose.is_setup_test(ctx),
        }
        for name, ctx in contexts
    ]


def build() -> dict[str, Any]:
    return {
        "description": (
            f"pushauth protocol version {PROTOCOL_VERSION} known-answer vectors (docs/protocol.md, "
            "section 'Test vectors'). Generated by `python -m protocol.vectors`; do not edit by hand. "
            'Hex for binary values; in frame field maps a binary value is {"bin": hex}. Signing bytes: '
            "the domain string, then each item as a 4-byte big-endian length and its bytes (strings "
            "UTF-8, integers 8-byte big-endian unsigned, binary as is). Signatures: Ed25519 (RFC 8032) "
            "with the key from the 32-byte seed."
        ),
        "version": PROTOCOL_VERSION,
        "subprotocols": list(SUBPROTOCOLS),
        "limits": {
            "max_frame": MAX_FRAME_SIZE,
            "authenticate_creds": 64,
            "ttl_s": [MIN_TTL_S, MAX_TTL_S],
            "max_clock_skew_ms": 120_000,
        },
        "domains": {
            "auth": signing.DOMAIN_AUTH,
            "enroll": signing.DOMAIN_ENROLL,
            "binding": signing.DOMAIN_BINDING,
            "answer": signing.DOMAIN_ANSWER,
            "context": signing.DOMAIN_CONTEXT,
            "backup": signing.DOMAIN_BACKUP,
            "recovery_key": signing.DOMAIN_RECOVERY_KEY,
            "recover": signing.DOMAIN_RECOVER,
            "recovery_answer": signing.DOMAIN_RECOVERY_ANSWER,
        },
        "frames": frame_vectors(),
        "decode": decode_vectors(),
        "rejections": rejection_vectors(),
        "uris": uri_vectors(),
        "numbers": number_vectors(),
        "purposes": purpose_vectors(),
        "text": text_vectors(),
        "signing": signing_vectors(),
        "rp": rp_vectors(),
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


def count(vectors: dict[str, Any]) -> int:
    """How many individual vectors the file holds."""
    n = len(vectors["frames"]) + len(vectors["decode"]) + len(vectors["rejections"])
    n += len(vectors["uris"]["valid"]) + len(vectors["uris"]["invalid"])
    n += sum(len(v) for v in vectors["numbers"].values())
    n += len(vectors["purposes"])
    n += len(vectors["text"])
    n += sum(len(v) for v in vectors["signing"].values())
    n += sum(len(v) for v in vectors["rp"].values())
    return n


if __name__ == "__main__":
    sys.stdout.write(render(build()))
