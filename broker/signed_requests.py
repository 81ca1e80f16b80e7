"""Device requests over HTTP, signed with a device-held key over a timestamp.

The encrypted-backup store and credential recovery are served over HTTP (a device
may have no credential, hence no WebSocket session, when it needs them). Instead
of a broker nonce (a second round trip), each request signs its time: the broker
accepts it within MAX_SKEW_MS of its own clock and at most once (the signature is
remembered in Redis for twice that long), so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from protocol import b64, signing

from . import keys
from .jsonio import as_int
from .problems import ApiError
from .store import Store, now_ms

MAX_SKEW_MS = 5 * 60 * 1000


def b64_field(body: dict[str, Any], name: str, size: int) -> bytes:
    try:
        raw = b64.decode(body.get(name))  # type: ignore[arg-type]
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ApiError(400, "invalid_request", f"'{name}' must be {size} bytes in base64url")
    return raw


def parse_ts(value: Any) -> int:
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)
    value = as_int(value)  # 1.0 is the number 1 in JSON
    if value is None or value < 0:
        raise ApiError(400, "invalid_request", "'ts' must be the request time in Unix milliseconds")
    return value


async def check_signed(store: Store, public_key: bytes, message: bytes, signature: bytes, ts: int) -> None:
    """Verify a signed device request: fresh, valid, and never seen before."""
    if abs(now_ms() - ts) > MAX_SKEW_MS:
        raise ApiError(403, "stale_request", "the request time is more than 5 minutes off the broker's clock")
    if not signing.is_valid(public_key, message, signature):
        raise ApiError(403, "bad_signature", "the signature does not verify")
    first = await store.redis.set(
        keys.seen_signature(hashlib.sha256(signature).hexdigest()), b"1", nx=True, px=2 * MAX_SKEW_MS
    )
    if not first:
        raise ApiError(409, "replayed", "this signed request was used already")
