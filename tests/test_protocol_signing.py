"""protocol.signing: canonical bytes, domain separation, context hashes, Ed25519."""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.protocol_samples import (
    CH_NONCE,
    CHALLENGE,
    CONTEXT,
    NONCE,
    PK_A,
    RP_NONCE,
    SEED_A,
    SEED_B,
    TOKEN,
)

from protocol import signing
from protocol.errors import ErrorCode, ProtocolError
from protocol.session import sign_answer

PK_B = signing.public_key(SEED_B)

ANSWER_FIELDS: dict[str, Any] = {
    "rp": "rp_example",
    "ch": "ch_1",
    "nonce": CH_NONCE,
    "rp_nonce": RP_NONCE,
    "cid": "cred_A1",
    "decision": "approve",
    "number": "42",
    "ts": 1_767_225_610_000,
    "ctx_hash": signing.context_hash(CONTEXT),
}


def answer_message(**changes: Any) -> bytes:
    return signing.answer_bytes(**{**ANSWER_FIELDS, **changes})


# -- canonical encoding ------------------------------------------------------------


def test_canonical_layout() -> None:
    assert signing.canonical("d", "ab", b"\x00\xff", 1) == (
        b"\x00\x00\x00\x01d"
        + b"\x00\x00\x00\x02ab"
        + b"\x00\x00\x00\x02\x00\xff"
        + b"\x00\x00\x00\x08"
        + struct.pack(">Q", 1)
    )
    assert signing.canonical("d", "") == b"\x00\x00\x00\x01d\x00\x00\x00\x00"
    assert (
        signing.canonical("d", "é") == b"\x00\x00\x00\x01d\x00\x00\x00\x02\xc3\xa9"
    )  # length in UTF-8 bytes
    assert signing.canonical("d", 2**64 - 1).endswith(b"\xff" * 8)


def test_length_prefixes_make_item_boundaries_unambiguous() -> None:
    assert signing.canonical("d", "ab", "c") != signing.canonical("d", "a", "bc")
    assert signing.canonical("d", "a", "") != signing.canonical("d", "", "a")
    assert signing.canonical("d", "abc") != signing.canonical("d", "ab", "c")
    assert signing.canonical("d", b"1") != signing.canonical("d", 1)


@pytest.mark.parametrize("bad", [True, False])
def test_booleans_are_not_signing_items(bad: bool) -> None:
    with pytest.raises(TypeError):
        signing.canonical("d", bad)


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_integers_out_of_uint64_cannot_be_signed(bad: int) -> None:
    with pytest.raises(struct.error):
        signing.canonical("d", bad)


# -- domain separation --------------------------------------------------------------


def test_domains_are_distinct_and_versioned() -> None:
    domains = [
        signing.DOMAIN_AUTH,
        signing.DOMAIN_ENROLL,
        signing.DOMAIN_ANSWER,
        signing.DOMAIN_CONTEXT,
        signing.DOMAIN_BACKUP,
        signing.DOMAIN_RECOVERY_KEY,
        signing.DOMAIN_RECOVER,
        signing.DOMAIN_RECOVERY_ANSWER,
        signing.DOMAIN_BINDING,
    ]
    assert len(set(domains)) == 9
    # Each domain names its own version: it changes when the items it signs change.
    assert all(re.fullmatch(r"pushauth/[a-z-]+/v[0-9]+", d) for d in domains)
    # Protocol version 2 changed these (docs/protocol.md, "Signing bytes").
    assert signing.DOMAIN_ANSWER.endswith("/v2")
    assert signing.DOMAIN_ENROLL.endswith("/v2")
    assert signing.DOMAIN_RECOVER.endswith("/v2")


def test_an_auth_signature_never_verifies_as_anything_else() -> None:
    # Even with the inputs chosen to line up, a signature is only good for its own purpose.
    cid = "cred_A1"
    auth_sig = signing.sign(SEED_A, signing.auth_bytes(NONCE, cid))
    assert signing.is_valid(PK_A, signing.auth_bytes(NONCE, cid), auth_sig)
    others = [
        signing.enroll_bytes(NONCE, cid, PK_A, cid, None),
        signing.binding_bytes(cid, cid, NONCE, PK_A, cid, None),
        answer_message(nonce=NONCE, cid=cid),
        signing.canonical(signing.DOMAIN_ANSWER, NONCE, cid),
        signing.canonical(signing.DOMAIN_ENROLL, NONCE, cid),
        signing.canonical("", NONCE, cid),
        signing.canonical(signing.DOMAIN_AUTH, cid, NONCE),
    ]
    for message in others:
        assert not signing.is_valid(PK_A, message, auth_sig)


def test_an_answer_or_enroll_signature_never_verifies_as_auth() -> None:
    answer_sig = signing.sign(SEED_A, answer_message())
    enroll_sig = signing.sign(SEED_A, signing.enroll_bytes(NONCE, TOKEN, PK_A, "phone", None))
    binding_sig = signing.sign(SEED_A, signing.binding_bytes("rp", TOKEN, NONCE, PK_A, "phone", None))
    for sig in (answer_sig, enroll_sig, binding_sig):
        assert not signing.is_valid(PK_A, signing.auth_bytes(NONCE, "cred_A1"), sig)
        assert not signing.is_valid(PK_A, signing.auth_bytes(CH_NONCE, "cred_A1"), sig)
    assert not signing.is_valid(PK_A, answer_message(), enroll_sig)
    # The broker's proof of possession is never a binding for the RP, nor the reverse.
    assert not signing.is_valid(
        PK_A, signing.binding_bytes("rp", TOKEN, NONCE, PK_A, "phone", None), enroll_sig
    )
    assert not signing.is_valid(PK_A, signing.enroll_bytes(NONCE, TOKEN, PK_A, "phone", None), binding_sig)


def test_signing_bytes_start_with_their_domain() -> None:
    def prefix(domain: str) -> bytes:
        return struct.pack(">I", len(domain)) + domain.encode()

    assert signing.auth_bytes(NONCE, "c").startswith(prefix(signing.DOMAIN_AUTH))
    assert signing.enroll_bytes(NONCE, TOKEN, PK_A, "n", None).startswith(prefix(signing.DOMAIN_ENROLL))
    assert signing.binding_bytes("rp", TOKEN, NONCE, PK_A, "n", None).startswith(
        prefix(signing.DOMAIN_BINDING)
    )
    assert signing.recover_bytes("rp", "c", PK_A, "n", PK_B, 1).startswith(prefix(signing.DOMAIN_RECOVER))
    assert answer_message().startswith(prefix(signing.DOMAIN_ANSWER))


# -- every input is bound ------------------------------------------------------------

CHANGED: dict[str, list[Any]] = {
    "rp": ["rp_other", "rp_exampl", ""],
    "ch": ["ch_2", "ch_10", ""],
    "nonce": [bytes(32), CH_NONCE[:-1] + b"\x5b", CH_NONCE + b"\x00"],
    "rp_nonce": [bytes(32), RP_NONCE[:-1] + b"\x00", CH_NONCE],
    "cid": ["cred_A2", "cred_B1"],
    "decision": ["deny", "fraud"],
    "number": ["24", "420", "", "042"],
    "ts": [ANSWER_FIELDS["ts"] + 1, 0],
    "ctx_hash": [signing.context_hash({}), bytes(32)],
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in CHANGED.items() for value in values]
)
def test_every_answer_field_changes_the_signing_bytes(name: str, value: Any) -> None:
    original = answer_message()
    changed = answer_message(**{name: value})
    assert changed != original
    sig = signing.sign(SEED_A, original)
    assert signing.is_valid(PK_A, original, sig)
    assert not signing.is_valid(PK_A, changed, sig)


def test_answer_fields_cannot_shift_into_each_other() -> None:
    # Moving characters from one field to the next never gives the same bytes.
    assert answer_message(rp="rp_a", ch="b") != answer_message(rp="rp_", ch="ab")
    assert answer_message(decision="approve", number="") != answer_message(decision="approv", number="e")


@pytest.mark.parametrize(
    ("args", "changed"),
    [
        ((NONCE, TOKEN, PK_A, "phone", None), (CH_NONCE, TOKEN, PK_A, "phone", None)),
        ((NONCE, TOKEN, PK_A, "phone", None), (NONCE, TOKEN + "x", PK_A, "phone", None)),
        ((NONCE, TOKEN, PK_A, "phone", None), (NONCE, TOKEN, PK_B, "phone", None)),
        ((NONCE, TOKEN, PK_A, "phone", None), (NONCE, TOKEN, PK_A, "phone2", None)),
        ((NONCE, TOKEN, PK_A, "phone", None), (NONCE, TOKEN, PK_A, "phone", PK_B)),
        ((NONCE, TOKEN, PK_A, "phone", PK_A), (NONCE, TOKEN, PK_A, "phone", PK_B)),
    ],
)
def test_every_enroll_field_changes_the_signing_bytes(
    args: tuple[Any, ...], changed: tuple[Any, ...]
) -> None:
    assert signing.enroll_bytes(*args) != signing.enroll_bytes(*changed)
    sig = signing.sign(SEED_A, signing.enroll_bytes(*args))
    assert not signing.is_valid(PK_A, signing.enroll_bytes(*changed), sig)


def test_auth_bytes_bind_nonce_and_credential() -> None:
    sig = signing.sign(SEED_A, signing.auth_bytes(NONCE, "cred_A1"))
    assert not signing.is_valid(
        PK_A, signing.auth_bytes(CH_NONCE, "cred_A1"), sig
    )  # replay on another connection
    assert not signing.is_valid(PK_A, signing.auth_bytes(NONCE, "cred_A2"), sig)


# -- context hash ----------------------------------------------------------------------


def test_context_hash_ignores_insertion_order() -> None:
    items = list(CONTEXT.items())
    hashes = {signing.context_hash(dict(perm)) for perm in itertools.permutations(items)}
    assert len(hashes) == 1
    assert len(next(iter(hashes))) == 32


@pytest.mark.parametrize(
    "changed",
    [
        {**CONTEXT, "ip": "203.0.113.10"},  # a value
        {**{k: v for k, v in CONTEXT.items() if k != "ip"}, "IP": CONTEXT["ip"]},  # a key
        {**CONTEXT, "extra": ""},  # an added entry, even an empty one
        {k: v for k, v in CONTEXT.items() if k != "browser"},  # a removed entry
        {**CONTEXT, "app": CONTEXT["ip"], "ip": CONTEXT["app"]},  # values swapped between keys
        {**CONTEXT, "location": "Zurich, CH"},  # a similar-looking value
        {},
    ],
)
def test_context_hash_is_sensitive_to_every_change(changed: dict[str, str]) -> None:
    assert signing.context_hash(changed) != signing.context_hash(CONTEXT)


def test_context_hash_separates_keys_from_values() -> None:
    assert signing.context_hash({"a": "bc"}) != signing.context_hash({"ab": "c"})
    assert signing.context_hash({"a": "", "b": ""}) != signing.context_hash({"a": "b"})
    assert signing.context_hash({}) != signing.context_hash({"": ""})


def test_context_keys_sort_by_utf8_bytes() -> None:
    # "\ue000" sorts before "😀" in UTF-8 but after it in UTF-16; the spec says UTF-8.
    ctx = {"😀": "1", "\ue000": "2"}
    items: list[Any] = [2, "\ue000", "2", "😀", "1"]

    expected = hashlib.sha256(signing.canonical(signing.DOMAIN_CONTEXT, *items)).digest()
    assert signing.context_hash(ctx) == expected


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6), st.randoms())
def test_context_hash_order_independence_fuzzed(ctx: dict[str, str], rnd: Any) -> None:
    items = list(ctx.items())
    rnd.shuffle(items)
    assert signing.context_hash(dict(items)) == signing.context_hash(ctx)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=5),
    st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=5),
)
def test_context_hash_distinct_contexts_differ(a: dict[str, str], b: dict[str, str]) -> None:
    assert (signing.context_hash(a) == signing.context_hash(b)) == (a == b)


# -- keys and signatures -----------------------------------------------------------------


def test_a_signature_by_another_key_fails() -> None:
    message = answer_message()
    sig_b = signing.sign(SEED_B, message)
    assert signing.is_valid(PK_B, message, sig_b)
    assert not signing.is_valid(PK_A, message, sig_b)
    with pytest.raises(ProtocolError) as info:
        signing.verify(PK_A, message, sig_b)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize("byte", [0, 31, 32, 63])
def test_a_tampered_signature_fails(byte: int) -> None:
    message = answer_message()
    sig = bytearray(signing.sign(SEED_A, message))
    sig[byte] ^= 0x01
    assert not signing.is_valid(PK_A, message, bytes(sig))


@pytest.mark.parametrize(
    ("public_key", "sig"),
    [
        (PK_A[:31], None),  # short key
        (PK_A + b"\x00", None),
        (b"", None),
        (None, b""),  # short signatures
        (None, bytes(63)),
        (None, bytes(65)),
        (None, bytes(64)),
        (bytes(32), None),  # the all-zero key (a small-order point)
        (b"\xff" * 32, None),  # not a point on the curve
        ("not bytes", None),
        (None, "not bytes"),
    ],
)
def test_malformed_keys_and_signatures_are_bad_signatures(public_key: Any, sig: Any) -> None:
    message = answer_message()
    public_key = PK_A if public_key is None else public_key
    sig = signing.sign(SEED_A, message) if sig is None else sig
    with pytest.raises(ProtocolError) as info:
        signing.verify(public_key, message, sig)
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    assert not signing.is_valid(public_key, message, sig)


def test_keys_and_seeds() -> None:
    assert signing.public_key(SEED_A) == PK_A
    assert len(PK_A) == 32
    assert signing.sign(SEED_A, b"m") == signing.sign(SEED_A, b"m")  # Ed25519 is deterministic
    assert len(signing.sign(SEED_A, b"m")) == 64
    seeds = {signing.new_seed() for _ in range(20)}
    assert len(seeds) == 20
    assert all(len(seed) == 32 for seed in seeds)


# -- sign_answer, as the device does it ---------------------------------------------------


@pytest.mark.parametrize(("decision", "number"), [("approve", "42"), ("deny", ""), ("fraud", "")])
def test_sign_answer_signs_what_the_rp_checks(decision: str, number: str) -> None:
    answer = sign_answer(CHALLENGE, seed=SEED_A, decision=decision, number=number, ts=123)
    assert answer.ch == CHALLENGE.ch
    assert answer.cid == CHALLENGE.cid
    assert answer.ctx_hash == signing.context_hash(CHALLENGE.ctx)
    message = signing.answer_bytes(
        rp=CHALLENGE.rp,
        ch=CHALLENGE.ch,
        nonce=CHALLENGE.nonce,
        rp_nonce=CHALLENGE.rp_nonce,
        cid=CHALLENGE.cid,
        decision=decision,
        number=number,
        ts=123,
        ctx_hash=signing.context_hash(CHALLENGE.ctx),
    )
    signing.verify(PK_A, message, answer.sig)
    # Bound to this challenge: the same answer does not verify for a challenge with another nonce.
    other = signing.answer_bytes(
        rp=CHALLENGE.rp,
        ch=CHALLENGE.ch,
        nonce=bytes(32),
        rp_nonce=CHALLENGE.rp_nonce,
        cid=CHALLENGE.cid,
        decision=decision,
        number=number,
        ts=123,
        ctx_hash=answer.ctx_hash,
    )
    assert not signing.is_valid(PK_A, other, answer.sig)
    # ... nor for one with another RP freshness value (a replay into a new challenge).
    replayed = signing.answer_bytes(
        rp=CHALLENGE.rp,
        ch=CHALLENGE.ch,
        nonce=CHALLENGE.nonce,
        rp_nonce=bytes(32),
        cid=CHALLENGE.cid,
        decision=decision,
        number=number,
        ts=123,
        ctx_hash=answer.ctx_hash,
    )
    assert not signing.is_valid(PK_A, replayed, answer.sig)


def test_signing_with_a_kept_key_equals_signing_with_its_seed() -> None:
    import nacl.signing

    seed = signing.new_seed()
    message = signing.answer_bytes(
        rp="rp_1",
        ch="ch_1",
        nonce=b"n" * 32,
        rp_nonce=b"r" * 32,
        cid="cr_1",
        decision="approve",
        number="42",
        ts=1,
        ctx_hash=b"h" * 32,
    )
    kept = signing.sign(nacl.signing.SigningKey(seed), message)
    assert kept == signing.sign(seed, message)  # Ed25519 is deterministic
    assert signing.is_valid(signing.public_key(seed), message, kept)


# -- version 2: binding and recovery bytes -------------------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_every_binding_item_changes_the_signing_bytes(index: int) -> None:
    args: list[Any] = ["rp_example", TOKEN, bytes(32), PK_A, "phone", PK_B]
    changed = list(args)
    changed[index] = {0: "rp_other", 1: TOKEN + "x", 2: b"\x01" * 32, 3: PK_B, 4: "phone2", 5: None}[index]
    sig = signing.sign(SEED_A, signing.binding_bytes(*args))
    assert signing.is_valid(PK_A, signing.binding_bytes(*args), sig)
    assert not signing.is_valid(PK_A, signing.binding_bytes(*changed), sig)


@pytest.mark.parametrize("index", range(6))
def test_every_recover_item_changes_the_signing_bytes(index: int) -> None:
    args: list[Any] = ["rp_example", "cred_A1", PK_A, "new phone", PK_B, 1_767_225_600_000]
    changed = list(args)
    changed[index] = {0: "rp_other", 1: "cred_A2", 2: PK_B, 3: "other", 4: PK_A, 5: 1}[index]
    sig = signing.sign(SEED_B, signing.recover_bytes(*args))
    assert signing.is_valid(PK_B, signing.recover_bytes(*args), sig)
    assert not signing.is_valid(PK_B, signing.recover_bytes(*changed), sig)
