"""The agent facing a broken or hostile WebSocket server instead of a broker.

The server is a few lines of the `websockets` library written here, so that it can
send what no real broker would: garbage, frames out of order, oversized messages,
protocol close codes. The agent must close with the protocol's close code, print
one line and exit 3, never a traceback; and never sign anything for such a peer.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import msgpack
import pytest
from e2e_helpers import agent_env, assert_clear_failure, make_home, run_agent  # noqa: F401  (agent_env: autouse, the vault passphrase)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from device_agent.store import AccountStore
from protocol import SUBPROTOCOLS
from protocol.codec import MAX_FRAME_SIZE, encode
from protocol.frames import Challenge, Hello, Welcome

Behaviour = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class Server:
    url: str = ""
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    behaviour: Behaviour | None = None
    # The protocol version the server picks from the device's offer (None: none, as a
    # version 1 broker, which ignores the offer); what the device offered.
    speaks: str | None = SUBPROTOCOLS[0]
    offered: list[list[str]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handler(ws: ServerConnection) -> None:
        assert state.behaviour is not None
        try:
            await state.behaviour(ws)
            async for message in ws:  # keep reading until the agent closes
                state.received.append(message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed:
            pass
        state.closes.append((ws.close_code, ws.close_reason or ""))

    def pick(_conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        state.offered.append(list(offered))
        return Subprotocol(state.speaks) if state.speaks in offered else None

    async with serve(handler, "127.0.0.1", 0, max_size=None, select_subprotocol=pick) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}/v1/device"
        yield state


def hello() -> bytes:
    return encode(
        Hello(nonce=secrets.token_bytes(32), time=int(time.time() * 1000), max_frame=16384, node="x")
    )


async def send_text(ws: ServerConnection) -> None:
    await ws.send("hello in a text frame")


async def send_garbage(ws: ServerConnection) -> None:
    await ws.send(b"\xc1 not msgpack")


async def send_challenge_first(ws: ServerConnection) -> None:
    ch = Challenge(
        ch="c1",
        cid="cid-alice",
        rp="rp1",
        rp_name="Example",
        account="alice",
        nonce=bytes(32),
        rp_nonce=bytes(32),
        ctx={},
        created=0,
        expires=2**40,
        digits=2,
    )
    await ws.send(encode(ch))


async def send_newer_version(ws: ServerConnection) -> None:
    await ws.send(msgpack.packb({"v": 3, "t": "hello"}))


async def send_older_version(ws: ServerConnection) -> None:
    # A version 1 hello (no subprotocol talk) on a connection that picked version 2.
    await ws.send(msgpack.packb({"v": 1, "t": "hello", "nonce": bytes(32), "time": 1, "max_frame": 16384}))


async def send_hello_missing_a_field(ws: ServerConnection) -> None:
    await ws.send(msgpack.packb({"v": 2, "t": "hello", "nonce": bytes(32), "time": 1}))


async def send_oversized(ws: ServerConnection) -> None:
    await ws.send(b"\x00" * (MAX_FRAME_SIZE + 1))


@pytest.mark.parametrize(
    ("behaviour", "close_code", "reason", "message"),
    [
        (send_text, 4400, "malformed", "malformed frame"),
        (send_garbage, 4400, "malformed", "malformed frame"),
        (send_challenge_first, 4400, "unexpected_frame", "unexpected frame"),
        (send_newer_version, 4406, "unsupported_version", "another protocol version"),
        (send_older_version, 4406, "unsupported_version", "another protocol version"),
        (send_hello_missing_a_field, 4400, "invalid_field", "invalid"),
        (send_oversized, 1009, "", "larger than the protocol allows"),
    ],
)
async def test_a_broken_peer_is_closed_with_the_protocol_code(
    tmp_path: Path, server: Server, behaviour: Behaviour, close_code: int, reason: str, message: str
) -> None:
    server.behaviour = behaviour
    home = make_home(tmp_path, server.url)
    code, _out, err = await run_agent(home, "deny", "c1")
    assert_clear_failure(code, err, message, exit_code=3)
    assert len(server.closes) == 1
    got_code, got_reason = server.closes[0]
    assert got_code == close_code
    if reason:
        assert got_reason == reason
    assert server.received == []  # nothing was signed for this peer
    assert AccountStore(home).load()[0].active  # and nothing changed locally


async def test_a_broker_that_picks_no_version_is_left_before_any_frame(
    tmp_path: Path, server: Server
) -> None:
    """A version 1 broker ignores the device's offer of pushauth.v2: the agent closes
    4406 itself and says the broker is older, without reading or signing anything."""
    server.speaks = None
    server.behaviour = lambda ws: ws.send(hello())
    home = make_home(tmp_path, server.url)
    code, _out, err = await run_agent(home, "deny", "c1")
    assert_clear_failure(code, err, "speaks an older protocol", exit_code=3)
    assert server.offered == [list(SUBPROTOCOLS)]
    assert server.closes == [(4406, "unsupported_version")]
    assert server.received == []
    assert AccountStore(home).load()[0].active


async def test_unknown_frame_types_and_keys_are_ignored(tmp_path: Path, server: Server) -> None:
    """A newer broker's frame type, and keys a frame does not define, change nothing:
    the agent reads on (docs/protocol.md, "Evolution")."""

    async def newer(ws: ServerConnection) -> None:
        await ws.send(msgpack.packb({"v": 2, "t": "surprise", "rid": 7, "what": "new"}))
        await ws.send(hello())
        await ws.recv()  # the authenticate frame
        await ws.send(msgpack.packb({"v": 2, "t": "surprise"}))
        welcome = msgpack.unpackb(encode(Welcome(accepted=("cid-alice",), rejected=(), pending=0)))
        await ws.send(msgpack.packb({**welcome, "extra": {"later": True}}))

    server.behaviour = newer
    code, out, err = await run_agent(make_home(tmp_path, server.url), "pending")
    assert code == 0, err
    assert "Traceback" not in err
    assert "No sign-in requests are waiting." in out
    assert server.closes == [(1000, "")]  # an orderly close, not a protocol error


async def test_a_protocol_close_from_the_broker_is_explained(tmp_path: Path, server: Server) -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.send(hello())
        await ws.recv()  # the authenticate frame
        await ws.close(4401, "auth_failed")

    server.behaviour = refuse
    code, _out, err = await run_agent(make_home(tmp_path, server.url), "pending")
    assert_clear_failure(code, err, "did not accept this device's keys", exit_code=3)


async def test_a_refusal_nested_past_the_json_parsers_limit_is_one_line(tmp_path: Path) -> None:
    """A server that answers the WebSocket handshake with a 400 whose body is arrays nested
    thousands deep: the agent read it as a problem document, and json.loads' RecursionError
    ended the command with a traceback."""

    def refuse(connection: ServerConnection, _request: Request) -> Response:
        return connection.respond(HTTPStatus.BAD_REQUEST, "[" * 5000 + "]" * 5000)

    async with serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=refuse) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        home = make_home(tmp_path, f"ws://127.0.0.1:{port}/v1/device")
        code, _out, err = await run_agent(home, "pending")
    assert "Traceback" not in err, err
    assert code != 0 and "HTTP 400 instead of a WebSocket" in err, err


async def test_a_welcome_with_a_bogus_pending_count_does_not_hang_forever(
    tmp_path: Path, server: Server
) -> None:
    # The agent waits for the announced challenges only as long as its reply timeout.
    async def lie(ws: ServerConnection) -> None:
        await ws.send(hello())
        await ws.recv()
        await ws.send(encode(Welcome(accepted=("cid-alice",), rejected=(), pending=1)))
        await ws.close(1011, "internal")

    server.behaviour = lie
    code, _out, err = await run_agent(make_home(tmp_path, server.url), "pending")
    assert_clear_failure(code, err, "internal error", exit_code=3)
