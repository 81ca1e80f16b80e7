"""msgpack codec for device frames, with strict validation and a size limit."""

from __future__ import annotations

from typing import Any

import msgpack

from . import PROTOCOL_VERSION
from .errors import ErrorCode, ProtocolError
from .frames import FRAME_TYPES, Frame

# 32 KiB holds the largest legal frame with room to spare: a challenge whose text
# fields are all at their limits in 4-byte UTF-8 characters is about 21 KiB (16 KiB
# did not hold it; tests/test_protocol_codec.py builds it).
MAX_FRAME_SIZE = 32 * 1024


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, "msgpack extension types are not allowed")


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # A repeated key would mean one thing to a decoder that keeps the first value
    # and another to one that keeps the last: refuse it rather than pick one.
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
            data, raw=False, strict_map_key=True, ext_hook=_no_ext, object_pairs_hook=_map, use_list=True
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData etc. are ValueErrors
        raise ProtocolError(ErrorCode.MALFORMED, f"not a msgpack value: {type(exc).__name__}") from None
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.MALFORMED, "a frame is a msgpack map")
    version = raw.pop("v", None)
    if type(version) is not int:
        raise ProtocolError(ErrorCode.MALFORMED, "missing protocol version 'v'")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"version {version} is not supported (1 is)")
    ftype = raw.pop("t", None)
    cls = FRAME_TYPES.get(ftype) if type(ftype) is str else None
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_FRAME, f"unknown frame type {str(ftype)[:32]!r}")
    return validate(cls, raw)


def validate(cls: type[Frame], body: dict[str, Any]) -> Frame:
    schema = cls.SCHEMA
    extra = body.keys() - schema.keys()
    if extra:
        names = sorted(str(k)[:32] for k in extra)
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{cls.TYPE}: unknown fields {names}")
    values = {}
    for name, check in schema.items():
        if name not in body:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{cls.TYPE}: missing field {name!r}")
        values[name] = check(name, body[name])
    return cls(**values)
