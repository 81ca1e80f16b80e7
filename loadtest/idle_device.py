"""Idle simulated devices that cost the generator as little CPU as they can.

`idle` measures the broker's memory per connected device and how soon all devices are
back after a restart. A real device costs this machine nothing, but the simulated
ones share its two cores with the broker: at 18,000 devices their return after a
restart took more CPU than the broker's (docs/performance.md, section 24). So an idle
device here is one asyncio.Protocol and its state, with no task, coroutine or future
of its own:

- the opening handshake is one request made once per worker process (one key for all
  its connections: the broker's answer is still checked against it), written from
  `connection_made`;
- the handshake, `hello`, `authenticate` and `welcome` are handled in `data_received`
  as they come; a task exists only while the TCP connect is in flight (asyncio has no
  callback form of it; after a refusal the next connect is cheaper, Dialer._probe), a
  timer only while a device waits to reconnect;
- at most `limit` devices of a worker (worker.HANDSHAKES) are between connect and
  welcome at once, the others queue (the broker's listen backlog is finite), as
  DeviceLink's semaphore did.

What is checked is what `DeviceLink.connect` checks: a 101 with the key's accept value,
`hello` first (protocol.session.ClientSession), `authenticate` signed with the device's
real Ed25519 key over the broker's nonce, and `welcome` with no credential rejected:
only then does the device count as back. Backoff and failure kinds are DeviceLink's.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import random
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from nacl.signing import SigningKey

from protocol.errors import ProtocolError
from protocol.frames import Welcome
from protocol.session import ClientSession

from .device import RETRY_MAX_S, RETRY_MIN_S, Credential, LinkError
from .ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    WsError,
    accept_for,
    close_payload,
    frame,
    opening_answer,
    opening_request,
    read_frames,
)

# A device's state.
# _FAILED: counted as a failed connect, its connection still closing (it retries once closed).
_DOWN, _OPENING, _HELLO, _WELCOME, _READY, _FAILED = range(6)
_CLOSE_NORMAL = frame(OP_CLOSE, (1000).to_bytes(2, "big"))


class Dialer:
    """One worker's devices' way to the broker: the request made once, the handshake
    gate, and what the worker counts (welcomed, dropped, failed by kind)."""

    def __init__(
        self,
        url: str,
        on_welcome: Callable[[IdleDevice], None],
        on_drop: Callable[[IdleDevice], None],
        on_fail: Callable[[Exception], None],
        limit: int,
    ) -> None:
        hostport, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port or 80)
        # Resolved once, for _probe (a worker's devices all dial the same address).
        family, _, _, _, self.address = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)[0]
        self.family = family
        key = base64.b64encode(os.urandom(16))
        self.request = opening_request(hostport, "/" + path, key)
        self.accept = accept_for(key)
        self.on_welcome, self.on_drop, self.on_fail = on_welcome, on_drop, on_fail
        self.limit = limit
        self.opening = 0  # devices between connect and welcome (or failure)
        self.queue: deque[IdleDevice] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # connects in flight
        self.stopped = False

    def want(self, device: IdleDevice) -> None:
        """`device` connects as soon as fewer than `limit` others are opening."""
        if self.stopped:
            return
        if self.opening < self.limit:
            self._open(device)
        else:
            self.queue.append(device)

    def _open(self, device: IdleDevice) -> None:
        self.opening += 1
        if device.refused:
            self._probe(device)
            return
        self._spawn(self._connect(device))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, device: IdleDevice) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: device, self.host, self.port)
        except OSError as exc:
            device.failed(exc)

    def _probe(self, device: IdleDevice) -> None:
        """A connect for a device that was refused last time: while no broker listens,
        each device is refused about twice a second (tens of thousands of times in a
        restart with the port closed). uvloop's create_connection spends about 26 us of
        CPU on a refusal, half of it the kernel's; here it is a non-blocking connect
        asked twice, about 14 us: on loopback the kernel has answered by the second
        call (0, connected; ECONNREFUSED), else (EALREADY) the loop watches the
        socket. A connect that succeeds is wrapped in a transport from a task, a few
        us more than create_connection, so devices that were not refused use that."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err == errno.EINPROGRESS:
            err = sock.connect_ex(self.address)
        if err in (errno.EINPROGRESS, errno.EALREADY):
            asyncio.get_running_loop().add_writer(sock, self._probed, device, sock)
        else:
            self._probed(device, sock, 0 if err == errno.EISCONN else err)

    def _probed(self, device: IdleDevice, sock: socket.socket, err: int | None = None) -> None:
        if err is None:  # from the loop's watch
            asyncio.get_running_loop().remove_writer(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            # OSError picks the subclass from errno (ConnectionRefusedError, ...): the
            # failure kinds counted are the ones create_connection raises.
            device.failed(OSError(err, os.strerror(err)))
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as create_connection does
        self._spawn(self._wrap(device, sock))

    async def _wrap(self, device: IdleDevice, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: device, sock=sock)
        except OSError as exc:
            sock.close()
            device.failed(exc)

    def opened(self) -> None:
        """A device is through (welcomed or failed): the next in line may open."""
        self.opening -= 1
        while self.queue and self.opening < self.limit and not self.stopped:
            self._open(self.queue.popleft())


class IdleDevice(asyncio.Protocol):
    """One credential on one WebSocket that connects, authenticates and stays, and
    reconnects with DeviceLink's backoff whenever the connection ends."""

    __slots__ = (
        "_buf",
        "_delay",
        "_dialer",
        "_key",
        "_session",
        "_state",
        "_timer",
        "cred",
        "refused",
        "transport",
    )

    def __init__(self, dialer: Dialer, cred: Credential) -> None:
        self._dialer = dialer
        self.cred = cred
        self._key = {cred.cid: SigningKey(cred.seed)}  # made once (as DeviceLink's)
        self._state = _DOWN
        self._buf = bytearray()
        self._session = ClientSession()
        self._delay = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.refused = False  # the last connect was refused: the next is Dialer._probe

    def start(self) -> None:
        self._dialer.want(self)

    def close(self) -> None:
        """Stop for good (the run ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport, self.transport = self.transport, None
        self._state = _DOWN
        if transport is not None and not transport.is_closing():
            transport.write(_CLOSE_NORMAL)
            transport.close()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._state = _OPENING
        self._buf.clear()
        self._session = ClientSession()
        self.transport.write(self._dialer.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self._state in (_FAILED, _DOWN):
            return  # closing
        buf = self._buf
        buf += data
        try:
            if self._state == _OPENING:
                if not opening_answer(buf, self._dialer.accept):
                    return
                self._state = _HELLO
            for opcode, payload in read_frames(buf):
                if opcode == OP_BINARY:
                    self._message(payload)
                elif opcode == OP_PING:
                    self._send(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    self._closed_by_broker(payload)
                    return
        except (WsError, ProtocolError, LinkError) as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        state, self._state = self._state, _DOWN
        if self._dialer.stopped:
            return
        if state == _READY:
            self._dialer.on_drop(self)
            self._delay = RETRY_MIN_S
            self._later()
        elif state == _FAILED:
            self._later()
        elif state == _OPENING:
            self.failed(WsError(f"connection lost during the handshake: {exc}"))
        elif state != _DOWN:  # after the 101, before welcome
            self.failed(LinkError("connection ended before welcome"))

    # -- the device's side -------------------------------------------------------

    def _message(self, payload: bytes) -> None:
        received = self._session.receive(payload)  # ProtocolError if malformed or out of turn
        if self._state == _HELLO:
            self._state = _WELCOME
            self._send(OP_BINARY, self._session.authenticate_frame(self._key))
        elif self._state == _WELCOME and isinstance(received, Welcome):
            if received.rejected:
                raise LinkError(f"credentials rejected: {received.rejected}")
            self._state = _READY
            self._delay = 0.0
            self.refused = False
            self._dialer.opened()
            self._dialer.on_welcome(self)
        # Anything else before welcome can only be a protocol error (ignored, as
        # DeviceLink does); an idle device gets nothing after it.

    def _closed_by_broker(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(frame(OP_CLOSE, payload[:2]))
            transport.close()
        if self._state in (_OPENING, _HELLO, _WELCOME):
            code, reason = close_payload(payload)
            self.failed(LinkError(f"connection ended: {code} {reason}"))

    def _fail(self, exc: Exception) -> None:
        transport = self.transport
        ready = self._state == _READY
        if self._state in (_OPENING, _HELLO, _WELCOME):
            self.failed(exc)
        if transport is not None and not transport.is_closing():
            if ready:  # a bad frame after welcome: the device drops the connection
                transport.write(_CLOSE_NORMAL)
            transport.close()

    def failed(self, exc: Exception) -> None:
        """A connect that did not end in welcome: counted, and tried again after the
        backoff (once its connection, if any, has closed)."""
        self.refused = isinstance(exc, ConnectionRefusedError)
        self._dialer.on_fail(exc)
        self._dialer.opened()
        self._delay = min(max(self._delay * 2, RETRY_MIN_S), RETRY_MAX_S)
        if self.transport is None:
            self._state = _DOWN
            self._later()
        else:
            self._state = _FAILED

    def _later(self) -> None:
        if self._dialer.stopped:
            return
        # Jittered, so thousands of devices do not all knock at the same instant.
        delay = self._delay * (0.5 + random.random())
        self._timer = asyncio.get_running_loop().call_later(delay, self._again)

    def _again(self) -> None:
        self._timer = None
        self._dialer.want(self)

    def _send(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame(opcode, payload))
