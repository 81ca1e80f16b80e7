"""The "was this you?" frames after a recovery (recovery_notice, recovery_answer,
recovery_result): strict decoding, the signing bytes of an answer, and which end
may send them when. Round trips of all three are in test_protocol_codec.py (they
are in support.protocol_samples)."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from support.protocol_samples import RECOVERY_NOTICE, RECOVERY_TS, SAMPLES, SEED_A, SEED_B

from protocol import codec, signing
from protocol import fields as f
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    NoticeDecision,
    RecoveryAnswer,
    RecoveryNotice,
    RecoveryResult,
    RevokeReason,
    Welcome,
)
from protocol.session import ClientSession, ServerSession, sign_recovery_answer

PK_A = signing.public_key(SEED_A)


def wire(frame: Any) -> dict[str, Any]:
    return msgpack.unpackb(codec.encode(frame), raw=False)


def refused(body: dict[str, Any]) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        codec.decode(msgpack.packb(body, use_bin_type=True))
    return info.value.code


# -- strict decoding -----------------------------------------------------------------

BAD_FIELDS: list[tuple[type[Any], str, Any]] = [
    (RecoveryNotice, "notice", ""),
    (RecoveryNotice, "notice", "rn 1"),
    (RecoveryNotice, "cid", b"cred_A1"),
    (RecoveryNotice, "new_cid", "x" * 65),
    (RecoveryNotice, "new_name", ""),
    (RecoveryNotice, "new_name", "n" * 65),
    (RecoveryNotice, "time", -1),
    (RecoveryNotice, "time", True),
    (RecoveryNotice, "time", 1.5),
    (RecoveryAnswer, "rid", 2**31 + 1),
    (RecoveryAnswer, "decision", "yes"),
    (RecoveryAnswer, "decision", "CONFIRM"),
    (RecoveryAnswer, "decision", None),
    (RecoveryAnswer, "sig", b"\x00" * 63),
    (RecoveryAnswer, "sig", "s" * 64),
    (RecoveryAnswer, "ts", "1767225620000"),
    (RecoveryAnswer, "notice", "rn_\n"),
    # Outcome codes are lenient (a newer broker may send one this device does not
    # know: it is shown generically), but still codes.
    (RecoveryResult, "outcome", "Approved!"),
    (RecoveryResult, "outcome", "x" * 33),
    (RecoveryResult, "outcome", ""),
    (RecoveryResult, "rid", -1),
    (RecoveryResult, "cid", None),
    (Welcome, "notices", -1),
    (Welcome, "notices", 65537),
]


@pytest.mark.parametrize(("cls", "name", "value"), BAD_FIELDS, ids=lambda v: repr(v)[:24])
def test_a_bad_field_is_invalid(cls: type[Any], name: str, value: Any) -> None:
    body = wire(SAMPLES[cls])
    body[name] = value
    assert refused(body) is ErrorCode.INVALID_FIELD


@pytest.mark.parametrize("cls", [RecoveryNotice, RecoveryAnswer, RecoveryResult])
def test_missing_fields_are_invalid_and_unknown_keys_ignored(cls: type[Any]) -> None:
    for name, check in cls.SCHEMA.items():
        if isinstance(check, f.Added):
            continue  # may be missing (tests/test_protocol_codec.py covers those)
        body = wire(SAMPLES[cls])
        del body[name]
        assert refused(body) is ErrorCode.INVALID_FIELD, name
    # Protocol version 2: keys a frame does not define are ignored (a newer peer may add some).
    body = wire(SAMPLES[cls])
    body["new_pk"] = b"\x00" * 32
    assert codec.decode(msgpack.packb(body, use_bin_type=True)) == SAMPLES[cls]


def test_an_unknown_outcome_code_is_kept_for_a_generic_message() -> None:
    body = wire(SAMPLES[RecoveryResult])
    body["outcome"] = "approved"
    frame = codec.decode(msgpack.packb(body, use_bin_type=True))
    assert isinstance(frame, RecoveryResult) and frame.outcome == "approved"


def test_a_result_without_rid_is_sent_as_nil_and_values_are_the_enums() -> None:
    result = RecoveryResult(notice="rn_1", cid="c", outcome="withdrawn")
    assert wire(result)["rid"] is None
    assert codec.decode(codec.encode(result)) == result
    assert {d.value for d in NoticeDecision} == {"confirm", "disown"}
    assert RevokeReason.DISOWNED.value == "disowned"


def test_a_welcome_counts_the_notices_that_follow() -> None:
    welcome = Welcome(accepted=("a",), rejected=(), pending=0)
    assert welcome.notices == 0 and wire(welcome)["notices"] == 0
    body = wire(welcome)
    del body["notices"]
    assert refused(body) is ErrorCode.INVALID_FIELD


# -- signing bytes -------------------------------------------------------------------

ITEMS = {
    "notice": "rn_1",
    "cid": "cred_A1",
    "new_cid": "cred_N1",
    "decision": "disown",
    "ts": 1_767_225_620_000,
}


def test_the_signing_bytes_by_hand() -> None:
    def item(raw: bytes) -> bytes:
        return struct.pack(">I", len(raw)) + raw

    expected = b"".join(
        [
            item(b"pushauth/recovery-answer/v1"),
            item(b"rn_1"),
            item(b"cred_A1"),
            item(b"cred_N1"),
            item(b"disown"),
            item(struct.pack(">Q", 1_767_225_620_000)),
        ]
    )
    assert signing.recovery_answer_bytes(**ITEMS) == expected


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("notice", "rn_2"),
        ("cid", "cred_A2"),
        ("new_cid", "cred_N2"),
        ("decision", "confirm"),
        ("ts", 1_767_225_620_001),
    ],
)
def test_every_item_is_bound(name: str, other: Any) -> None:
    sig = signing.sign(SEED_A, signing.recovery_answer_bytes(**ITEMS))
    assert signing.is_valid(PK_A, signing.recovery_answer_bytes(**ITEMS), sig)
    assert not signing.is_valid(PK_A, signing.recovery_answer_bytes(**{**ITEMS, name: other}), sig)


def test_items_cannot_shift_into_each_other() -> None:
    # Length prefixes: "rn_1"+"cred" is not "rn_1c"+"red".
    a = signing.recovery_answer_bytes("rn_1", "cred_A1", "n", "disown", 1)
    b = signing.recovery_answer_bytes("rn_1c", "red_A1", "n", "disown", 1)
    assert a != b


def test_a_recovery_answer_signature_verifies_for_nothing_else() -> None:
    message = signing.recovery_answer_bytes(**ITEMS)
    sig = signing.sign(SEED_A, message)
    others = [
        signing.canonical(signing.DOMAIN_ANSWER, *ITEMS.values()),
        signing.canonical(signing.DOMAIN_AUTH, *ITEMS.values()),
        signing.canonical(signing.DOMAIN_RECOVER, *ITEMS.values()),
        signing.canonical("", *ITEMS.values()),
    ]
    for other in others:
        assert not signing.is_valid(PK_A, other, sig)
    assert not signing.is_valid(signing.public_key(SEED_B), message, sig)


def test_sign_recovery_answer_signs_what_the_broker_checks() -> None:
    frame = sign_recovery_answer(RECOVERY_NOTICE, seed=SEED_A, decision="disown", ts=RECOVERY_TS, rid=9)
    assert frame == SAMPLES[RecoveryAnswer]
    n = RECOVERY_NOTICE
    message = signing.recovery_answer_bytes(n.notice, n.cid, n.new_cid, frame.decision, frame.ts)
    signing.verify(PK_A, message, frame.sig)
    with pytest.raises(ProtocolError) as info:
        signing.verify(signing.public_key(SEED_B), message, frame.sig)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


# -- who sends what when --------------------------------------------------------------


def test_the_broker_refuses_an_answer_before_authenticate_and_notices_from_a_device() -> None:
    srv = ServerSession(node="n", now_ms=1)
    with pytest.raises(ProtocolError) as info:
        srv.receive(codec.encode(SAMPLES[RecoveryAnswer]))
    assert info.value.code is ErrorCode.NOT_AUTHENTICATED and info.value.fatal
    srv.authenticated(["cred_A1"])
    assert srv.receive(codec.encode(SAMPLES[RecoveryAnswer])) == SAMPLES[RecoveryAnswer]
    for cls in (RecoveryNotice, RecoveryResult):
        with pytest.raises(ProtocolError) as info:
            srv.receive(codec.encode(SAMPLES[cls]))
        assert info.value.code is ErrorCode.UNEXPECTED_FRAME


def test_the_device_refuses_a_notice_before_welcome_and_an_answer_from_the_broker() -> None:
    srv = ServerSession(node="n", now_ms=1)
    client = ClientSession()
    client.receive(codec.encode(srv.hello_frame()))
    with pytest.raises(ProtocolError) as info:
        client.receive(codec.encode(RECOVERY_NOTICE))
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME
    client.receive(codec.encode(Welcome(accepted=("cred_A1",), rejected=(), pending=0, notices=1)))
    assert client.receive(codec.encode(RECOVERY_NOTICE)) == RECOVERY_NOTICE
    with pytest.raises(ProtocolError) as info:
        client.receive(codec.encode(SAMPLES[RecoveryAnswer]))
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME


def test_unknown_notice_is_a_non_fatal_code() -> None:
    err = ProtocolError(ErrorCode.UNKNOWN_NOTICE, "no such notice", ref="9")
    assert not err.fatal and ErrorCode.UNKNOWN_NOTICE.value == "unknown_notice"
