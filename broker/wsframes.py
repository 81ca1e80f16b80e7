"""The server side of RFC 6455 without I/O: the opening handshake's checks and answer,
a frame decoder for what clients send, and the frames the broker writes.

Why not aiohttp's WebSocketResponse for device sockets: it keeps, per connection, the
HTTP request and its headers, a reader, a writer, a message queue, two timers and a
chain of about ten suspended coroutines (the request handler, the middlewares, the
receive loop), about 19 KiB of broker memory per idle device. The device socket needs
only binary messages, ping/pong and close, so the handshake is checked here, by the RP
lane (broker/rp_lane.py, which applies the device connect limits as aiohttp's middleware
does) or by an ordinary aiohttp handler (broker/device_ws.py, for what the lane hands
over), and then broker/device_ws.py takes the socket over and serves it from protocol
callbacks with this decoder. No extension is negotiated (no compression), so every RSV bit must be 0.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)

# Close codes (RFC 6455 section 7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG = 1000, 1001, 1002, 1007, 1009
# Codes a peer may send in a close frame: the registered ones it may use, and the
# ranges for libraries (3000-3999) and applications (4000-4999).
_SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
# Frames one message may come in. The size limit alone did not bound them: empty
# continuation frames add nothing to a message's size, and a client that sent 20 million
# of them (120 MB, in 15 s, before authenticating) grew the broker by 164 MB, each frame
# kept in the message's list, none counted by the frame rate limit (it counts messages).
# Devices send each message in one frame; libraries that fragment use a few big pieces.
MAX_FRAGMENTS = 128


class HandshakeError(Exception):
    """The upgrade request is not a WebSocket opening handshake (answered with a 400)."""


class FrameError(Exception):
    """The client broke RFC 6455: the connection is closed with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def handshake(headers: Mapping[str, str], protocols: tuple[str, ...]) -> tuple[str, str | None]:
    """Check an upgrade request's headers; return (Sec-WebSocket-Accept, subprotocol).

    The subprotocol is the first one the client offered that is in `protocols`, or None
    (no overlap: the handshake still succeeds, RFC 6455 4.2.2, and the caller decides)."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError(f"no WebSocket Upgrade header: {headers.get('Upgrade')!r}")
    if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
        raise HandshakeError(f"no Connection: upgrade header: {headers.get('Connection')!r}")
    version = headers.get("Sec-WebSocket-Version", "")
    if version != "13":
        raise HandshakeError(f"unsupported WebSocket version: {version!r}")
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64")
    except ValueError:  # binascii.Error, or a key that is not ASCII (b64decode's ValueError)
        raise HandshakeError("Sec-WebSocket-Key is not base64") from None
    chosen = None
    if "Sec-WebSocket-Protocol" in headers:
        offered = [p.strip() for p in headers["Sec-WebSocket-Protocol"].split(",")]
        chosen = next((p for p in offered if p in protocols), None)
    return accept_key(key), chosen


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching_protocols(accept: str, protocol: str | None) -> bytes:
    """The server's 101 response head."""
    head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    head += f"Sec-WebSocket-Accept: {accept}\r\n"
    if protocol is not None:
        head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    return (head + "\r\n").encode()


def mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key repeated (masking and unmasking are the same)."""
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One unfragmented, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, code.to_bytes(2, "big") + reason[:123])


def close_code(payload: bytes) -> int | None:
    """The code of a client's close frame (None: it gave none); FrameError if invalid."""
    if not payload:
        return None
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        raise FrameError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "close reason is not UTF-8") from None
    return code


class Decoder:
    """Client frames in, whole messages out: `feed(data)` returns (opcode, payload)
    pairs, text and binary messages reassembled from fragments, control frames as they
    come. Messages over `limit` bytes raise FrameError(1009) as soon as their length is
    known, before their payload is buffered. An idle connection holds no buffer."""

    __slots__ = ("_buf", "_fragment_op", "_fragment_size", "_fragments", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf: bytearray | None = None  # an incomplete frame, if any
        self._fragment_op = 0  # opcode of the message being reassembled (0: none)
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._buf is not None:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if b0 & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if not b1 & 0x80:
                raise FrameError(PROTOCOL_ERROR, "unmasked frame from a client")
            n, head = b1 & 0x7F, 2
            if n == 126:
                if end - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if end - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if opcode in _CONTROL_OPS:
                if not fin or n > 125:
                    raise FrameError(PROTOCOL_ERROR, "fragmented or oversized control frame")
            elif opcode == OP_CONTINUATION:
                if not self._fragment_op:
                    raise FrameError(PROTOCOL_ERROR, "continuation frame without a message to continue")
                if self._fragment_size + n > self.limit:
                    raise FrameError(MESSAGE_TOO_BIG, f"message over {self.limit} bytes")
                if self._fragments is not None and len(self._fragments) >= MAX_FRAGMENTS:
                    raise FrameError(MESSAGE_TOO_BIG, f"message in over {MAX_FRAGMENTS} frames")
            elif opcode in _DATA_OPS:
                if self._fragment_op:
                    raise FrameError(PROTOCOL_ERROR, "new message before the last one was complete")
                if n > self.limit:
                    raise FrameError(MESSAGE_TOO_BIG, f"message over {self.limit} bytes")
            else:
                raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            start = pos + head + 4
            if end - start < n:
                break
            payload = mask(bytes(buf[start : start + n]), bytes(buf[pos + head : start]))
            pos = start + n
            if opcode in _CONTROL_OPS:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                assert self._fragments is not None
                self._fragments.append(payload)
                self._fragment_size += n
                if fin:
                    out.append((self._fragment_op, b"".join(self._fragments)))
                    self._fragment_op, self._fragments, self._fragment_size = 0, None, 0
            elif fin:
                out.append((opcode, payload))
            else:
                self._fragment_op, self._fragments, self._fragment_size = opcode, [payload], n
        if pos == end:
            self._buf = None
        elif self._buf is None:
            self._buf = bytearray(buf[pos:])
        else:
            del self._buf[:pos]
        return out
