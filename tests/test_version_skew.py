"""Version skew: peers of different protocol versions meet (docs/protocol.md, "Versions").

- a version 1 device (it offers no subprotocol and waits for a v=1 hello) against the
  version 2 broker: the handshake succeeds, then close 4406 naming the versions the
  broker speaks, before any frame;
- the version 2 agent CLI against a version 1 broker (a minimal aiohttp server that
  accepts the WebSocket without picking a subprotocol and sends a v=1 hello, as a
  version 1 broker does): one clear line, a non-zero exit, nothing signed or stored;
- a version 1 enrollment link given to the version 2 agent: refused before any
  connection, saying which version it reads;
- a version 2 device that also speaks a hypothetical version 3 offers
  ["pushauth.v3", "pushauth.v2"] to the real broker: it gets pushauth.v2 and a
  working version 2 connection.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from e2e_helpers import agent_env, assert_clear_failure, make_home, run_agent  # noqa: F401  (agent_env: autouse, the vault passphrase)
from support import BrokerProcess, serving
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from device_agent.store import AccountStore
from protocol.session import ClientSession
from protocol.uri import EnrollmentURI


async def test_a_version_1_device_gets_4406_naming_the_versions(broker: BrokerProcess) -> None:
    # Exactly what a version 1 client does: no Sec-WebSocket-Protocol, then wait for hello.
    async with connect(broker.ws_url) as ws:
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed):  # no frame first: the close is the first thing read
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4406
        assert ws.close_reason == "unsupported_version: this broker speaks pushauth.v2"


async def test_a_device_speaking_v3_and_v2_gets_v2(broker: BrokerProcess, rp: dict[str, Any]) -> None:
    offer = [Subprotocol("pushauth.v3"), Subprotocol("pushauth.v2")]
    async with connect(broker.ws_url, subprotocols=offer) as ws:
        assert ws.subprotocol == "pushauth.v2"
        session = ClientSession()
        hello = session.receive(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
        assert hello.TYPE == "hello"
        await ws.send(session.authenticate_frame({}))
        welcome = session.receive(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
        assert welcome.TYPE == "welcome"


@dataclass
class V1Broker:
    """What a version 1 broker does on /v1/device: accept, ignore the offered
    subprotocols, send a v=1 hello, and record what the device sends back."""

    url: str = ""
    offered: list[str] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)


@pytest.fixture
async def v1_broker() -> AsyncIterator[V1Broker]:
    state = V1Broker()

    async def device(request: web.Request) -> web.WebSocketResponse:
        state.offered.append(request.headers.get("Sec-WebSocket-Protocol", ""))
        ws = web.WebSocketResponse()  # no `protocols`: picks none, as version 1 did
        await ws.prepare(request)
        hello = {"v": 1, "t": "hello", "nonce": secrets.token_bytes(32), "time": int(time.time() * 1000)}
        await ws.send_bytes(msgpack.packb({**hello, "max_frame": 32768, "node": "v1"}, use_bin_type=True))
        async for msg in ws:
            state.received.append(msg.data if isinstance(msg.data, bytes) else str(msg.data).encode())
        state.closes.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/v1/device", device)
    async with serving(app) as url:
        state.url = url.replace("http://", "ws://", 1) + "/v1/device"
        yield state


async def test_the_v2_agent_against_a_v1_broker_fails_clearly(v1_broker: V1Broker, tmp_path: Path) -> None:
    home = make_home(tmp_path, v1_broker.url)
    code, _out, err = await run_agent(home, "pending")
    assert_clear_failure(code, err, "older protocol", v1_broker.url)
    assert v1_broker.offered == ["pushauth.v2"]
    assert v1_broker.received == []  # nothing signed for it: no authenticate
    assert v1_broker.closes == [4406]


async def test_enrolling_at_a_v1_broker_fails_clearly_and_stores_nothing(
    v1_broker: V1Broker, tmp_path: Path
) -> None:
    home = tmp_path / "agent"
    link = EnrollmentURI(v1_broker.url, "enrolltoken_0123456789abcdef", "rp1", "Example", "alice").build()
    code, _out, err = await run_agent(home, "enroll", link)
    assert_clear_failure(code, err, "older protocol")
    assert v1_broker.received == []  # no enroll frame: the key was never offered
    assert not home.exists() or AccountStore(home).load() == []


async def test_a_version_1_link_is_refused_by_the_v2_agent(v1_broker: V1Broker, tmp_path: Path) -> None:
    link = EnrollmentURI(v1_broker.url, "enrolltoken_0123456789abcdef", "rp1", "Example", "alice").build()
    code, _out, err = await run_agent(tmp_path / "agent", "enroll", link.replace("v=2", "v=1", 1))
    assert_clear_failure(code, err, "v=2")
    assert v1_broker.offered == []  # refused before connecting
