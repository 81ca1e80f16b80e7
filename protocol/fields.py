"""Field validators for strict frame decoding.

Each validator checks one decoded msgpack value and returns it (possibly converted)
or raises ProtocolError(INVALID_FIELD). They are small on purpose: the frame table
in frames.py reads as the schema, and docs/protocol.md mirrors it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import text
from .errors import ErrorCode, ProtocolError

Validator = Callable[[str, Any], Any]

# Identifiers minted by the broker (challenge ids, credential ids, ...): URL-safe.
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Bearer-like tokens (enrollment tokens) are longer.
ID_RE_LONG = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
DIGITS_RE = re.compile(r"^[0-9]{1,8}$")


def _bad(name: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, f"field {name!r}: {why}")


@dataclass(frozen=True)
class Str:
    max_len: int = 256
    min_len: int = 0
    pattern: re.Pattern[str] | None = None
    # No control, format, line-separator or invisible character (protocol.text): for text a peer
    # states about itself, which others show (a device's own name).
    plain: bool = False

    def __call__(self, name: str, value: Any) -> str:
        if type(value) is not str:
            raise _bad(name, "expected a string")
        if not self.min_len <= len(value) <= self.max_len:
            raise _bad(name, f"length must be {self.min_len}..{self.max_len}")
        if self.plain and (bad := text.first_unsafe(value)) is not None:
            raise _bad(name, text.refusal(bad))
        # fullmatch: with match(), "$" also matches before a trailing newline ("abc\n").
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise _bad(name, "has characters or a form that is not allowed")
        return value


@dataclass(frozen=True)
class Bytes:
    length: int | None = None
    max_len: int = 1024

    def __call__(self, name: str, value: Any) -> bytes:
        if type(value) is not bytes:
            raise _bad(name, "expected binary data")
        if self.length is not None and len(value) != self.length:
            raise _bad(name, f"must be exactly {self.length} bytes")
        if len(value) > self.max_len:
            raise _bad(name, f"at most {self.max_len} bytes")
        return value


@dataclass(frozen=True)
class Int:
    lo: int = 0
    hi: int = 2**53

    def __call__(self, name: str, value: Any) -> int:
        # bool is an int subclass in Python; msgpack true must not pass as 1.
        if type(value) is not int:
            raise _bad(name, "expected an integer")
        if not self.lo <= value <= self.hi:
            raise _bad(name, f"must be in {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True)
class Bool:
    def __call__(self, name: str, value: Any) -> bool:
        if type(value) is not bool:
            raise _bad(name, "expected true or false")
        return value


@dataclass(frozen=True)
class OneOf:
    choices: frozenset[str]

    def __call__(self, name: str, value: Any) -> str:
        if type(value) is not str or value not in self.choices:
            raise _bad(name, f"must be one of {sorted(self.choices)}")
        return value


@dataclass(frozen=True)
class Optional:
    inner: Validator

    def __call__(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner(name, value)


@dataclass(frozen=True)
class Added(Optional):
    """A key added within a protocol version (docs/protocol.md, section 3.2): a peer of
    the same version that predates it never sends it, so a missing key reads as nil
    (and so does nil); the encoder leaves the key out when the value is nil, so a frame
    that does not use it is byte for byte what it was before the key was added."""


@dataclass(frozen=True)
class ListOf:
    inner: Validator
    max_items: int = 64

    def __call__(self, name: str, value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _bad(name, "expected a list")
        if len(value) > self.max_items:
            raise _bad(name, f"at most {self.max_items} items")
        return tuple(self.inner(f"{name}[{i}]", item) for i, item in enumerate(value))


@dataclass(frozen=True)
class StrMap:
    """A map of short strings to short strings (sign-in context)."""

    max_items: int = 16
    key: Str = Str(max_len=32, min_len=1)
    value: Str = Str(max_len=256)

    def __call__(self, name: str, value: Any) -> dict[str, str]:
        if type(value) is not dict:
            raise _bad(name, "expected a map")
        if len(value) > self.max_items:
            raise _bad(name, f"at most {self.max_items} entries")
        return {self.key(f"{name} key", k): self.value(f"{name}[{k!r}]", v) for k, v in value.items()}


@dataclass(frozen=True)
class Record:
    """A nested map with fixed keys, decoded into a plain dict."""

    fields: tuple[tuple[str, Validator], ...]

    def __call__(self, name: str, value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise _bad(name, "expected a map")
        # Keys it does not define are ignored, as in frames (docs/protocol.md, "Evolution").
        out: dict[str, Any] = {}
        for key, check in self.fields:
            if key not in value:
                raise _bad(f"{name}.{key}", "missing")
            out[key] = check(f"{name}.{key}", value[key])
        return out


IDENT = Str(max_len=64, min_len=1, pattern=ID_RE)
# A code the broker sends (a reason, an outcome, an error code): receivers accept any
# well-formed code, since later versions add codes, and treat unknown ones generically.
CODE = Str(max_len=32, min_len=1, pattern=re.compile(r"^[a-z0-9_]{1,32}$"))
NONCE = Bytes(length=32)
PUBLIC_KEY = Bytes(length=32)
SIGNATURE = Bytes(length=64)
HASH = Bytes(length=32)
TIMESTAMP_MS = Int(0, 2**53)
REQUEST_ID = Int(0, 2**31)
TEXT = Str(max_len=256)
NAME = Str(max_len=64, min_len=1)
# A device's name as the device sends it (enroll): the RP lists it and other devices
# show it, so it is plain text. What a device receives (new_name) is only escaped.
DEVICE_NAME = Str(max_len=64, min_len=1, plain=True)
