"""msgpack codec for device frames, with strict validation and a size limit."""

from __future__ import annotations

from typing import Any

import msgpack

from . import PROTOCOL_VERSION
from .errors import ErrorCode, ProtocolError
from .frames import FRAME_TYPES, Frame

# 16 KiB holds the largest legal frame (a challenge with a full context, or an
# authenticate frame with 64 credentials) with room to spare.
MAX_FRAME_SIZE = 16 * 1024


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, "msgpack extension types are not allowed")


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
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True)
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
