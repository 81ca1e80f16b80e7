"""Reading the broker's JSON strictly, with base64url from protocol.b64.

The SDK does not trust the broker, so every field it reads is checked for type
and shape here; a missing or wrong field is a BadBrokerResponse, not a KeyError
or a silently wrong value further down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from protocol import b64

from .errors import BadBrokerResponse

T = TypeVar("T")

# base64url without padding lives in protocol/b64.py; re-exported for SDK users.
b64encode = b64.encode
b64decode = b64.decode


def obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadBrokerResponse(f"{what}: expected a JSON object")
    return value


def get(body: Mapping[str, Any], name: str, kind: type[T], what: str) -> T:
    value = body.get(name)
    # bool is an int subclass; a JSON true must not pass as 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadBrokerResponse(f"{what}: field {name!r} missing or not a {kind.__name__}")
    return value


def get_optional(body: Mapping[str, Any], name: str, kind: type[T], what: str) -> T | None:
    return None if body.get(name) is None else get(body, name, kind, what)


def get_bytes(body: Mapping[str, Any], name: str, what: str, *, length: int | None = None) -> bytes:
    text = get(body, name, str, what)
    try:
        raw = b64decode(text)
    except ValueError:
        raise BadBrokerResponse(f"{what}: field {name!r} is not base64url") from None
    if length is not None and len(raw) != length:
        raise BadBrokerResponse(f"{what}: field {name!r} must be {length} bytes")
    return raw


def get_str_map(body: Mapping[str, Any], name: str, what: str) -> dict[str, str]:
    value = obj(body.get(name, {}) if body.get(name) is not None else {}, f"{what}.{name}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadBrokerResponse(f"{what}: field {name!r} must map strings to strings")
    return dict(value)
