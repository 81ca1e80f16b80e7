"""JSON in and out of the RP API, with orjson.

Every sign-in encodes two responses and decodes one body; the standard library's
encoder was 3-7% of the broker's CPU per sign-in (py-spy at 200-1,500/s) and orjson
does the same work several times faster. Output is UTF-8 (non-ASCII characters are
not escaped) and NaN, Infinity and integers beyond 64 bits are refused on input.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

loads = orjson.loads  # raises orjson.JSONDecodeError, a ValueError


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return out


class TooDeep(ValueError):
    """Arrays or objects nested deeper than the duplicate-key check can follow."""


_PAIRS = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def loads_request(raw: bytes) -> Any:
    """A request body: orjson's strict parse (no NaN, no integers beyond 64 bits), and
    DuplicateKey for an object that names a key twice. orjson keeps the last of two
    equal keys silently, another parser the first: a body that two parsers (a gateway,
    the broker) would read differently is refused. The standard library's parser finds
    them (object_pairs_hook): a few microseconds for a request body of the RP API."""
    value = orjson.loads(raw)
    if isinstance(value, dict | list):
        # orjson takes 1,024 levels, the standard library's parser about as many as the
        # interpreter's recursion limit leaves: a body in between was a RecursionError (a
        # 500). No request of the API nests more than a few levels.
        try:
            _PAIRS.decode(raw.decode())
        except RecursionError:
            raise TooDeep("the body nests arrays or objects too deeply") from None
    return value


def json_response(
    data: Any,
    *,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type=content_type, charset="utf-8", headers=headers
    )


def as_int(value: object) -> int | None:
    """A JSON number that is an integer, as an int (None otherwise). JSON has one number
    type: 10 and 10.0 are the same number, and JSON Schema's "integer" (the OpenAPI
    document) accepts both; true and false are not numbers."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None
