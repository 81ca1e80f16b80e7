"""msgpack codec for device frames, with strict validation and a size limit.

Strict about what is there (types, lengths, encodings, repeated keys), lenient about
what is new: keys a frame type does not define are ignored, so a later minor
revision can add fields without breaking older peers (docs/protocol.md, "Evolution").
"""

from __future__ import annotations

from typing import Any

import msgpack

from . import PROTOCOL_VERSION
from . import fields as f
from .errors import ErrorCode, ProtocolError
from .frames import FRAME_TYPES, Frame

# 32 KiB holds the largest legal frame with room to spare: a challenge whose text
# fields are all at their limits in 4-byte UTF-8 characters is about 21 KiB (16 KiB
# did not hold it; tests/test_protocol_codec.py builds it).
MAX_FRAME_SIZE = 32 * 1024


EXTENSIONS_REFUSED = "msgpack extension types are not allowed"
# What msgpack's C unpacker says when max_ext_len=0 refuses an extension value before
# any hook sees it (every extension with data, the timestamp type -1 included) and when
# it finds an empty timestamp: only to word the refusal, which is malformed either way.
_EXT_ERRORS = ("max_ext_len", "timestamp")


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, EXTENSIONS_REFUSED)


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # A repeated key would mean one thing to a decoder that keeps the first value
    # and another to one that keeps the last: refuse it rather than pick one.
    # msgpack calls this for every map in the message, unknown keys' values included,
    # and a 32 KiB frame holds up to 32,000 maps: it makes no other Python call and
    # walks no values (extension types are refused in C). A map of 0 or 1 pairs cannot
    # repeat a key, and is built without the call to dict(): [{}] * 32,000 took 4.2 ms
    # that way, 2.4 ms this way.
    if not pairs:
        return {}
    if len(pairs) == 1:
        ((key, value),) = pairs
        return {key: value}
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ProtocolError(ErrorCode.MALFORMED, "a msgpack map repeats a key")
    return out


def encode(frame: Frame) -> bytes:
    body = frame.to_wire()
    body["v"] = PROTOCOL_VERSION
    body["t"] = frame.TYPE
    return msgpack.packb(body, use_bin_type=True)


def decode(data: bytes, *, max_size: int = MAX_FRAME_SIZE) -> Frame:
    """Parse and validate one frame; raise ProtocolError on anything off."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(ErrorCode.MALFORMED, "frames are binary WebSocket messages")
    if len(data) > max_size:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            # Extension values are refused wherever they are (docs/protocol.md 4.1), by the C
            # unpacker: one with data fails max_ext_len (the timestamp type -1 too, which
            # msgpack decodes itself and never hands to ext_hook), an empty timestamp is
            # invalid, and an empty one of another type reaches ext_hook. Refusing them
            # here, rather than looking for Timestamp objects in every list and map
            # afterwards, keeps lists free of Python calls: a frame of 32,000 empty
            # arrays cost 10 ms of CPU that way.
            max_ext_len=0,
            ext_hook=_no_ext,
            object_pairs_hook=_map,
            use_list=True,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData etc. are ValueErrors
        if isinstance(exc, ValueError) and any(word in str(exc) for word in _EXT_ERRORS):
            raise ProtocolError(ErrorCode.MALFORMED, EXTENSIONS_REFUSED) from None
        raise ProtocolError(ErrorCode.MALFORMED, f"not a msgpack value: {type(exc).__name__}") from None
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.MALFORMED, "a frame is a msgpack map")
    version = raw.pop("v", None)
    if type(version) is not int:
        raise ProtocolError(ErrorCode.MALFORMED, "missing protocol version 'v'")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"version {version} is not supported ({PROTOCOL_VERSION} is)"
        )
    ftype = raw.pop("t", None)
    if type(ftype) is not str:
        raise ProtocolError(ErrorCode.MALFORMED, "missing frame type 't'")
    cls = FRAME_TYPES.get(ftype)
    if cls is None:
        # Not fatal: a newer peer may send a type this one does not know. A request
        # (it has an integer rid) is refused by rid so that its sender is not left waiting.
        rid = raw.get("rid")
        ref = rid if type(rid) is int and 0 <= rid <= 2**31 else None
        raise ProtocolError(ErrorCode.UNKNOWN_FRAME, f"unknown frame type {ftype[:32]!r}", ref=ref)
    return validate(cls, raw)


def validate(cls: type[Frame], body: dict[str, Any]) -> Frame:
    """Check every field of `cls`'s schema; keys it does not define are ignored."""
    schema = cls.SCHEMA
    values = {}
    for name, check in schema.items():
        if name not in body:
            if isinstance(check, f.Added):  # added within the version: older peers omit it
                values[name] = None
                continue
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{cls.TYPE}: missing field {name!r}")
        values[name] = check(name, body[name])
    return cls(**values)
