"""The device socket's own WebSocket layer (broker/wsframes.py, broker/device_ws.py):
the handshake (in the RP lane, or an aiohttp handler), the hand-over of the socket, frames from a raw
TCP client (pipelined, fragmented, broken), the close handshake and the heartbeat.

The broker is real (a process, or the app in this process where the test drives the
heartbeat's timer by hand); the client is a plain TCP socket writing RFC 6455 bytes, so
the tests can send what no WebSocket library would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from shared_broker import broker  # noqa: F401 - fixture
from support import BrokerProcess, RedisServer, serving, until, wait_until

from broker import metrics, wsframes
from broker.app import create_app
from broker.context import NODE
from broker.device_ws import CLOSING_READ_LIMIT, FRAME_BURST, HEARTBEAT, WS_READ_LIMIT, Heartbeat
from broker.ratelimit import TokenBucket
from protocol import SUBPROTOCOLS
from protocol.frames import Hello, Welcome
from protocol.session import ClientSession

WAIT_S = 10.0  # an upper bound on waiting for the broker, never a pause


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + wsframes.mask(payload, key)


class RawDevice:
    """A TCP connection speaking RFC 6455 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(
        cls, port: int, *, protocols: str = ", ".join(SUBPROTOCOLS), then: bytes = b""
    ) -> RawDevice:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /v1/device HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        )
        writer.write(head.encode() + then)  # `then`: frames in the same packet as the head
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        assert f"Sec-WebSocket-Accept: {wsframes.accept_key(key)}".encode() in answer
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, *, pings: bool = False) -> tuple[int, bytes]:
        """The next frame from the broker: (opcode, payload); the heartbeat's pings are
        answered and skipped unless `pings`."""
        while True:
            opcode, payload = await self._frame()
            if pings or opcode != wsframes.OP_PING:
                return opcode, payload
            self.send(client_frame(wsframes.OP_PONG, payload))

    async def _frame(self) -> tuple[int, bytes]:
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), WAIT_S)
        assert not b1 & 0x80, "a server never masks"
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), WAIT_S)

    async def closed_with(self) -> int:
        """Reads to the broker's close frame; its code."""
        while True:
            opcode, payload = await self.frame()
            if opcode == wsframes.OP_CLOSE:
                return int.from_bytes(payload[:2], "big")

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), WAIT_S) == b""

    def close(self) -> None:
        self.writer.close()


async def test_a_plain_get_of_the_device_path_is_a_problem_document(broker: BrokerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(
        f"GET /v1/device HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\nConnection: close\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"application/problem+json" in answer
    assert b'"code":"invalid_request"' in answer.replace(b" ", b"")


async def test_frames_sent_with_the_handshake_are_served_after_the_hello(broker: BrokerProcess) -> None:
    dev = await RawDevice.open(broker.port, then=client_frame(wsframes.OP_PING, b"early"))
    opcode, hello = await dev.frame()
    assert opcode == wsframes.OP_BINARY
    assert isinstance(ClientSession().receive(hello), Hello)
    assert await dev.frame() == (wsframes.OP_PONG, b"early")
    dev.close()


async def test_a_fragmented_message_with_a_ping_inside_is_reassembled(broker: BrokerProcess) -> None:
    dev = await RawDevice.open(broker.port)
    session = ClientSession()
    session.receive((await dev.frame())[1])
    frame = session.authenticate_frame({})  # names no credential: answered with a welcome
    dev.send(client_frame(wsframes.OP_BINARY, frame[:3], fin=False))
    dev.send(client_frame(wsframes.OP_PING, b"mid"))
    dev.send(client_frame(wsframes.OP_CONTINUATION, frame[3:5], fin=False))
    dev.send(client_frame(wsframes.OP_CONTINUATION, frame[5:]))
    assert await dev.frame() == (wsframes.OP_PONG, b"mid")
    opcode, payload = await dev.frame()
    assert opcode == wsframes.OP_BINARY
    assert isinstance(session.receive(payload), Welcome)
    dev.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(wsframes.OP_BINARY, b"x", masked=False), 1002),
        (client_frame(wsframes.OP_BINARY, b"x", rsv=0x40), 1002),
        (client_frame(0x3, b"x"), 1002),
        (client_frame(wsframes.OP_CONTINUATION, b"x"), 1002),
        (client_frame(wsframes.OP_PING, b"x" * 126), 1002),
        (client_frame(wsframes.OP_CLOSE, (999).to_bytes(2, "big")), 1002),
        (client_frame(wsframes.OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007),
        (client_frame(wsframes.OP_BINARY, b"\x00" * (WS_READ_LIMIT + 1)), 1009),
        # Empty pieces add nothing to the size, and each was kept until the message ended.
        (
            client_frame(wsframes.OP_BINARY, b"", fin=False)
            + client_frame(wsframes.OP_CONTINUATION, b"", fin=False) * wsframes.MAX_FRAGMENTS,
            1009,
        ),
    ],
    ids=[
        "unmasked",
        "rsv",
        "opcode",
        "continuation",
        "long-ping",
        "close-code",
        "close-utf8",
        "too-big",
        "endless-pieces",
    ],
)
async def test_a_frame_that_breaks_rfc_6455_ends_the_connection_with_its_code(
    broker: BrokerProcess,
    frame: bytes,
    code: int,
) -> None:
    dev = await RawDevice.open(broker.port)
    await dev.frame()  # hello
    dev.send(frame)
    assert await dev.closed_with() == code
    assert await dev.at_eof()


async def test_pings_from_a_client_that_reads_nothing_do_not_pile_up_pongs(broker: BrokerProcess) -> None:
    # A pong per ping waited in the broker's memory for a client that never reads them
    # (120 MB of pings grew it by 186 MB). Now pings take from the connection's frame
    # budget (a flood of them kept a core busy): a few are answered, then it is closed.
    dev = await RawDevice.open(broker.port)
    await dev.frame()  # hello
    pings = 10 * FRAME_BURST
    dev.send(b"".join(client_frame(wsframes.OP_PING, b"%08d" % i + b"p" * 117) for i in range(pings)))
    await dev.writer.drain()
    pongs, opcode, payload = 0, wsframes.OP_PONG, b""
    # (A ping is the broker's own heartbeat, every 30 s, on a machine slow enough.)
    while opcode in (wsframes.OP_PONG, wsframes.OP_PING):
        opcode, payload = await dev.frame(pings=True)
        pongs += opcode == wsframes.OP_PONG
    assert (opcode, payload) == (wsframes.OP_CLOSE, (4429).to_bytes(2, "big") + b"rate_limited")
    assert 0 < pongs < pings // 2, pongs  # about UNPROVEN_FRAME_BURST
    dev.close()


async def test_a_device_that_floods_on_after_the_close_is_dropped(broker: BrokerProcess) -> None:
    """After its close frame the broker reads on for the device's reply, for up to
    CLOSE_REPLY_TIMEOUT_S: a device that kept sending had every frame of that second
    decoded and unmasked for nothing. Now it reads at most CLOSING_READ_LIMIT more, and
    the device can still read why it was closed."""
    dev = await RawDevice.open(broker.port)
    await dev.frame()  # hello
    # Far past the budget of a connection that proved nothing: the broker closes it
    # (4429) while most of this still waits in the socket for it to read.
    unknown = msgpack.packb({"v": 2, "t": "flood", "pad": "x" * 1000})  # each an error frame
    flood = client_frame(wsframes.OP_BINARY, unknown) * 2000
    dev.send(flood)
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await dev.writer.drain()
    dropped = f"reading no more: the device sent over {CLOSING_READ_LIMIT} bytes after the close"
    await asyncio.to_thread(
        wait_until, lambda: dropped in broker.stderr(), message="no more read after the close"
    )
    assert await dev.closed_with() == 4429
    with contextlib.suppress(ConnectionError):  # (a reset, once the close reply is overdue)
        assert await dev.at_eof()
    dev.close()


async def test_the_device_closing_is_answered_and_ends_the_connection(broker: BrokerProcess) -> None:
    dev = await RawDevice.open(broker.port)
    await dev.frame()  # hello
    dev.send(client_frame(wsframes.OP_CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    assert await dev.closed_with() == 1000
    assert await dev.at_eof()


async def test_a_device_offering_no_known_version_gets_4406_after_the_handshake(
    broker: BrokerProcess,
) -> None:
    dev = await RawDevice.open(broker.port, protocols="pushauth.v1")
    assert await dev.closed_with() == 4406
    dev.send(client_frame(wsframes.OP_CLOSE, (4406).to_bytes(2, "big")))
    assert await dev.at_eof()


@pytest.fixture
async def local_app(tmp_path: Path) -> AsyncIterator[tuple[web.Application, int]]:
    """The broker's app in this process (its heartbeat driven by the test), real Redis."""
    with RedisServer(tmp_path / "redis") as server:
        redis = aioredis.Redis.from_url(server.url)
        app = create_app(redis, node="local")
        try:
            async with serving(app) as url:
                yield app, int(url.rsplit(":", 1)[1])
        finally:
            await redis.aclose()


async def test_a_client_that_stops_reading_and_leaves_leaves_no_error(
    local_app: tuple[web.Application, int],
) -> None:
    # Its socket's buffer filled with pongs nobody waits on; the wait the buffer made was
    # failed when the connection ended, unretrieved: asyncio logged it at ERROR each time.
    app, port = local_app
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        await _fill_and_leave(app, port)
        gc.collect()
    finally:
        loop.set_exception_handler(before)
    assert not errors, errors


async def _fill_and_leave(app: web.Application, port: int) -> None:
    """A client fills its socket's buffer with pongs it never reads, then goes."""
    loop = asyncio.get_running_loop()
    hub = app[NODE].hub
    dev = await RawDevice.open(port)
    await dev.frame()  # hello
    # Pings take from the frames' budget, which would close the connection long before
    # its buffer fills: this socket is given a budget that does not (what is under test
    # is a full buffer's connection going away, whatever filled it).
    for sock in hub.connections:
        sock.frames = TokenBucket(1e9, 1e9)  # type: ignore[attr-defined]
    pings = b"".join(client_frame(wsframes.OP_PING, b"p" * 125) for _ in range(1000))
    deadline = loop.time() + WAIT_S
    while all(sock.keeps_up for sock in hub.connections):  # until its buffer is full
        assert loop.time() < deadline, "the broker's buffer never filled"
        dev.send(pings)
        await dev.writer.drain()
    dev.writer.transport.abort()

    async def gone() -> bool:
        return not hub.connections

    await until(gone, message="the broker to see the client go")


async def test_the_heartbeat_drops_a_silent_device_and_keeps_one_that_answers(
    local_app: tuple[web.Application, int],
) -> None:
    app, port = local_app
    heartbeat: Heartbeat = app[HEARTBEAT]
    heartbeat.interval = 3600.0  # its own timer stays out of the way: the test ticks
    silent = await RawDevice.open(port)
    lively = await RawDevice.open(port)
    for dev in (silent, lively):
        await dev.frame()  # hello

    def one_round() -> None:  # every slot visited once: every socket pinged (or dropped)
        for _ in range(Heartbeat.SLOTS):
            heartbeat.tick()

    one_round()
    for dev in (silent, lively):
        assert (await dev.frame(pings=True))[0] == wsframes.OP_PING
    lively.send(client_frame(wsframes.OP_PONG))
    await asyncio.wait_for(lively.writer.drain(), WAIT_S)
    # The pong must have reached the broker before the next round: a frame it answers
    # (a ping) proves it, without a pause.
    lively.send(client_frame(wsframes.OP_PING, b"sync"))
    assert await lively.frame() == (wsframes.OP_PONG, b"sync")
    one_round()
    assert await silent.at_eof()  # pinged, never answered: dropped
    assert (await lively.frame(pings=True))[0] == wsframes.OP_PING  # answered: pinged again
    lively.close()


async def test_the_heartbeat_passes_over_a_socket_that_is_closing(
    local_app: tuple[web.Application, int],
) -> None:
    """A socket whose transport is closing, its end not yet reported (a device that left
    just as its ping was due), is not pinged: the write raised, and asyncio logged the
    heartbeat's timer callback failing at ERROR, with a traceback."""
    app, port = local_app
    heartbeat: Heartbeat = app[HEARTBEAT]
    heartbeat.interval = 3600.0  # the test ticks
    dev = await RawDevice.open(port)
    await dev.frame()  # hello
    (conn,) = app[NODE].hub.connections
    assert conn.transport is not None
    conn.transport.close()  # closing; connection_lost comes in a later step of the loop
    for _ in range(Heartbeat.SLOTS):
        heartbeat.tick()  # raised ConnectionResetError
    assert await dev.at_eof()


async def test_a_refusal_for_a_device_that_already_closed_is_not_logged_as_an_error(
    local_app: tuple[web.Application, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A flaky mobile network delivers a device's held frames and its close together (a
    lift, then the device gave up): the frame is refused (an `error` frame, not fatal)
    after the close made the socket closing. The refusal cannot be sent, and that is no
    error of the broker's: it logged "error handling a device frame" with a traceback."""
    _app, port = local_app
    dev = await RawDevice.open(port)
    session = ClientSession()
    session.receive((await dev.frame())[1])  # hello
    refused = metrics.REGISTRY.get_sample_value("pushauth_device_errors_total", {"code": "bad_token"}) or 0
    enroll = session.enroll_frame(rid=1, token="t" * 32, seed=os.urandom(32), name="phone")
    dev.send(
        client_frame(wsframes.OP_BINARY, enroll) + client_frame(wsframes.OP_CLOSE, (1001).to_bytes(2, "big"))
    )
    await dev.closed_with()

    async def handled() -> bool:  # the refusal and any log of it come in one step
        return (
            metrics.REGISTRY.get_sample_value("pushauth_device_errors_total", {"code": "bad_token"}) or 0
        ) > refused

    await until(handled, message="the enroll refused")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_the_decoder_takes_frames_split_anywhere() -> None:
    frames = [
        client_frame(wsframes.OP_BINARY, b"a" * 130, fin=False),
        client_frame(wsframes.OP_PING, b"p"),
        client_frame(wsframes.OP_CONTINUATION, b"b" * 70_000),
        client_frame(wsframes.OP_BINARY, b""),
        client_frame(wsframes.OP_CLOSE, (1000).to_bytes(2, "big")),
    ]
    stream = b"".join(frames)
    expected = [
        (wsframes.OP_PING, b"p"),
        (wsframes.OP_BINARY, b"a" * 130 + b"b" * 70_000),
        (wsframes.OP_BINARY, b""),
        (wsframes.OP_CLOSE, (1000).to_bytes(2, "big")),
    ]
    for step in (1, 7, 4096, len(stream)):
        decoder = wsframes.Decoder(WS_READ_LIMIT)
        got = [m for i in range(0, len(stream), step) for m in decoder.feed(stream[i : i + step])]
        assert got == expected, step


def test_a_message_may_come_in_up_to_max_fragments_frames() -> None:
    decoder = wsframes.Decoder(WS_READ_LIMIT)
    pieces = [client_frame(wsframes.OP_BINARY, b"a", fin=False)]
    pieces += [client_frame(wsframes.OP_CONTINUATION, b"b", fin=False)] * (wsframes.MAX_FRAGMENTS - 2)
    pieces.append(client_frame(wsframes.OP_CONTINUATION, b"c"))
    assert decoder.feed(b"".join(pieces)) == [(wsframes.OP_BINARY, b"a" + b"b" * 126 + b"c")]


def test_the_decoder_refuses_an_oversized_message_from_its_header() -> None:
    decoder = wsframes.Decoder(1000)
    head = client_frame(wsframes.OP_BINARY, b"\x00" * 1001)[:8]  # the header and mask only
    with pytest.raises(wsframes.FrameError) as err:
        decoder.feed(head)
    assert err.value.code == 1009
    decoder = wsframes.Decoder(1000)
    decoder.feed(client_frame(wsframes.OP_BINARY, b"\x00" * 600, fin=False))
    with pytest.raises(wsframes.FrameError) as err:
        decoder.feed(client_frame(wsframes.OP_CONTINUATION, b"\x00" * 401)[:8])
    assert err.value.code == 1009


def test_the_handshake_checks_match_rfc_6455() -> None:
    key = base64.b64encode(b"k" * 16).decode()
    good = {"Upgrade": "websocket", "Connection": "keep-alive, Upgrade", "Sec-WebSocket-Version": "13"}
    good["Sec-WebSocket-Key"] = key
    # RFC 6455 1.3's example key and answer.
    assert wsframes.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wsframes.handshake({**good, "Sec-WebSocket-Protocol": "x, pushauth.v2"}, SUBPROTOCOLS)[1] == (
        "pushauth.v2"
    )
    assert wsframes.handshake(good, SUBPROTOCOLS)[1] is None
    for broken in (
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": "short"},
        {"Sec-WebSocket-Key": "!!!!"},
    ):
        with pytest.raises(wsframes.HandshakeError):
            wsframes.handshake({**good, **broken}, SUBPROTOCOLS)


def test_a_token_bucket_takes_costs_and_may_start_low_or_never_refill() -> None:
    """The byte budget's bucket (broker/device_ws.py): a fixed allowance until a credential
    is proven (rate 0), then a refilling one that starts with what was left."""
    allowance = TokenBucket(0.0, 100, now=0.0)
    assert allowance.take(60, now=0.0)
    assert not allowance.take(41, now=1000.0)  # nothing added, however long it waits
    assert allowance.take(40, now=1000.0)
    assert allowance.left(now=2000.0) == 0
    bucket = TokenBucket(10.0, 1000, now=0.0, tokens=allowance.left(now=0.0))
    assert not bucket.take(1, now=0.0)
    assert bucket.take(25, now=2.5)  # 10 a second
    assert bucket.left(now=500.0) == 1000  # up to the burst
    assert not TokenBucket(1.0, 5, now=0.0).take(6, now=0.0)  # a cost over the burst never fits
