"""A lean WebSocket client (RFC 6455) for simulated devices: binary messages, ping/pong, close.

Why not aiohttp's or websockets' client: thousands of devices share each generator
process, and their handshakes and frames must cost the generator less than the
broker they measure. Measured here, aiohttp's ws_connect and per-message path cost
the generator more CPU per device than the broker spends on it, so reconnection
and sign-in figures were set by the generator. This does only what the device
protocol needs: one binary message per frame, no extensions, no fragmentation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable, Iterator

from protocol import SUBPROTOCOLS

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_MESSAGE = 1 << 20
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


# What a 429 on a device connection means in a load test, and which broker setting to change.
TOO_MANY_CONNECTS = (
    "the broker refused a device connection with HTTP 429: it limits new device WebSockets "
    "per client address (`serve --device-connects-per-ip`, default 20:300) and open connections "
    "per client address (`--http-connections-per-ip`, default 512), and every simulated device "
    "connects from 127.0.0.1; start it with --device-connects-per-ip 0 --http-connections-per-ip 0 "
    "(and, for more than 20,000 devices, a higher --device-connects: the per-node limit, "
    "default 3000:20000)"
)


class WsError(Exception):
    """The handshake failed or the server broke the protocol."""


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)  # clients must mask (RFC 6455 5.3)
    return head + key + _mask(payload, key)


def opening_request(host: str, path: str, key: bytes) -> bytes:
    """The client's opening handshake (RFC 6455 4.1), offering the protocol's versions."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {', '.join(SUBPROTOCOLS)}\r\n\r\n"
    ).encode()


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server answers `key` with (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def opening_answer(buf: bytearray, accept: bytes) -> bool:
    """The server's answer at the start of `buf`: False while incomplete; True, and the
    head taken off `buf`, if it is a 101 with `accept` (the key's Sec-WebSocket-Accept);
    WsError otherwise."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buf[:end])
    del buf[: end + 4]
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        if status.startswith(b"HTTP/1.1 429 "):
            raise WsError(TOO_MANY_CONNECTS)
        raise WsError(f"handshake refused: {status.decode(errors='replace')}")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"sec-websocket-accept") != accept:
        raise WsError("handshake: wrong Sec-WebSocket-Accept")
    return True


def read_frames(buf: bytearray) -> Iterator[tuple[int, bytes]]:
    """The whole frames at the start of `buf`, each taken off it as it is yielded, up to
    and including a close: (opcode, payload). Pongs are left out; WsError if the server
    broke the rules a device relies on (masked, fragmented, too large, text)."""
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise WsError("the server masked a frame")
        if not b0 & 0x80 or b0 & 0x70:
            raise WsError("fragmented frames or extensions are not expected")
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = int.from_bytes(buf[2:10], "big"), 10
        if n > MAX_MESSAGE:
            raise WsError("message too large")
        if len(buf) < pos + n:
            break
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        opcode = b0 & 0x0F
        if opcode == OP_TEXT:
            raise WsError("text message from a binary-only server")
        if opcode != OP_PONG:
            yield opcode, payload
        if opcode == OP_CLOSE:
            return


def close_payload(payload: bytes) -> tuple[int | None, str]:
    """A close frame's code and reason."""
    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    return code, payload[2:].decode(errors="replace")


class WsClient(asyncio.Protocol):
    """One connection; `on_message(bytes)` is called for each binary message, in order."""

    def __init__(self, host: str, path: str, on_message: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.path, self.on_message = host, path, on_message
        self.key = base64.b64encode(os.urandom(16))
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[tuple[int | None, str]] = loop.create_future()
        self.transport: asyncio.BaseTransport | None = None
        self.buf = bytearray()
        self.close_code: int | None = None
        self.close_reason = ""

    @classmethod
    async def connect(cls, url: str, on_message: Callable[[bytes], None]) -> WsClient:
        rest = url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: cls(hostport, "/" + path, on_message), host, int(port or 80)
        )
        await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(opening_request(self.host, self.path, self.key))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            if not self.opened.done() and not self._handshake():
                return
            self._frames()
        except WsError as exc:
            self._fail(exc)

    def _handshake(self) -> bool:
        if not opening_answer(self.buf, accept_for(self.key)):
            return False
        self.opened.set_result(None)
        return True

    def _frames(self) -> None:
        for opcode, payload in read_frames(self.buf):
            if opcode == OP_BINARY:
                self.on_message(payload)
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code, self.close_reason = close_payload(payload)
                self._write(OP_CLOSE, payload[:2])
                self.transport.close()  # type: ignore[union-attr]
                return

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(opcode, payload))  # type: ignore[attr-defined]

    def send(self, data: bytes) -> None:
        self._write(OP_BINARY, data)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.close_reason = str(exc)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(OP_CLOSE, (1000).to_bytes(2, "big"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(WsError(f"connection lost during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result((self.close_code, self.close_reason))
