"""protocol.fields (the validators behind every frame schema) and protocol.b64."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import b64
from protocol import fields as f
from protocol.errors import ErrorCode, ProtocolError


def refused(check: f.Validator, value: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        check("field", value)
    assert info.value.code is ErrorCode.INVALID_FIELD
    assert "'field'" in info.value.message or "field" in info.value.message
    return info.value.message


# -- validators ---------------------------------------------------------------------


def test_str() -> None:
    check = f.Str(max_len=3, min_len=1, pattern=re.compile(r"^[a-z]+$"))
    assert check("field", "abc") == "abc"
    for bad in ["", "abcd", "ab1", "ab\n", b"ab", 1, None, True, ["a"]]:
        refused(check, bad)
    assert f.Str()("field", "") == ""  # no pattern, no minimum
    assert (
        f.Str(max_len=2)("field", "\U0001f600\U0001f600") == "\U0001f600\U0001f600"
    )  # characters, not bytes


def test_bytes() -> None:
    assert f.Bytes(length=2)("field", b"ab") == b"ab"
    assert f.Bytes(max_len=3)("field", b"") == b""
    for bad in [b"a", b"abc", "ab", bytearray(b"ab"), 2, None, False]:
        refused(f.Bytes(length=2), bad)
    assert "at most 3 bytes" in refused(f.Bytes(max_len=3), b"abcd")


def test_int() -> None:
    check = f.Int(-1, 1)
    assert [check("field", v) for v in (-1, 0, 1)] == [-1, 0, 1]
    for bad in [-2, 2, True, False, 0.0, "0", None, b"\x00"]:
        refused(check, bad)


def test_bool() -> None:
    assert f.Bool()("field", True) is True
    assert f.Bool()("field", False) is False
    for bad in [0, 1, "true", None]:
        refused(f.Bool(), bad)


def test_one_of() -> None:
    check = f.OneOf(frozenset({"a", "b"}))
    assert check("field", "a") == "a"
    for bad in ["c", "A", b"a", 0, None]:
        refused(check, bad)


def test_optional() -> None:
    check = f.Optional(f.Int(0, 5))
    assert check("field", None) is None
    assert check("field", 5) == 5
    refused(check, 6)
    refused(check, "x")


def test_list_of() -> None:
    check = f.ListOf(f.Int(0, 9), max_items=2)
    assert check("field", [1, 2]) == (1, 2)
    assert check("field", []) == ()
    refused(check, [1, 2, 3])
    refused(check, (1, 2))  # msgpack gives lists; a tuple is not what the decoder produces
    assert "field[1]" in refused(check, [1, 10])


def test_str_map() -> None:
    check = f.StrMap(max_items=2)
    assert check("field", {"a": "", "b": "x"}) == {"a": "", "b": "x"}
    for bad in [{"a": 1}, {1: "a"}, {"": "a"}, {"a": "1", "b": "2", "c": "3"}, [], None, {"k" * 33: "v"}]:
        refused(check, bad)


def test_record() -> None:
    check = f.Record((("a", f.Int()), ("b", f.Str())))
    assert check("field", {"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
    assert "field.b" in refused(check, {"a": 1})
    assert check("field", {"a": 1, "b": "x", "c": 0}) == {"a": 1, "b": "x"}  # unknown keys are ignored (v2)
    assert "field.a" in refused(check, {"a": "1", "b": "x"})
    refused(check, [("a", 1), ("b", "x")])


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (f.IDENT, ["a", "A-z_09", "x" * 64], ["", "x" * 65, "a b", "a.b", "a/b", "a\n", "\na", "é"]),
        (f.NONCE, [bytes(32)], [bytes(31), bytes(33)]),
        (f.PUBLIC_KEY, [bytes(32)], [bytes(64)]),
        (f.SIGNATURE, [bytes(64)], [bytes(32)]),
        (f.HASH, [bytes(32)], [b""]),
        (f.TIMESTAMP_MS, [0, 2**53], [-1, 2**53 + 1]),
        (f.REQUEST_ID, [0, 2**31], [-1, 2**31 + 1]),
        (f.NAME, ["n", "n" * 64], ["", "n" * 65]),
        (f.TEXT, ["", "t" * 256], ["t" * 257]),
    ],
)
def test_shared_field_types(check: f.Validator, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        assert check("field", value) == value
    for value in bad:
        refused(check, value)


# -- base64url ----------------------------------------------------------------------------


@given(st.binary(max_size=100))
def test_b64_round_trip(data: bytes) -> None:
    text = b64.encode(data)
    assert "=" not in text
    assert b64.decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padding is not sent
        "A",  # a length no encoder produces
        "AAAAA",
        "AA+/",  # the standard alphabet, not the URL-safe one
        "AA AA",
        "AAAA\n",  # a trailing newline ("$" in a regex would let it through)
        "AA\n",
        "ÄÄÄÄ",
        b"AAAA",
        None,
        1234,
    ],
)
def test_b64_decode_is_strict(text: Any) -> None:
    with pytest.raises(ValueError, match="not base64url"):
        b64.decode(text)


def test_b64_known_values() -> None:
    assert b64.encode(b"") == ""
    assert b64.encode(b"\xfb\xff") == "-_8"
    assert b64.decode("-_8") == b"\xfb\xff"
