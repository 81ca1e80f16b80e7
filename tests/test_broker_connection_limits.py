"""Open HTTP connections per client address and per node, and clients that read no
responses (DESIGN invariant 13; broker/connections.py), against real broker processes:
raw sockets hold connections, http.client is a real client reading the refusals, and
the broker's own metrics say what it holds.

- one address may hold `--http-connections-per-ip` connections; the next gets a 429
  problem before its request is read, and a closed one frees its place;
- a device WebSocket counts until it proves a credential (anyone can open one and
  prove nothing until the authentication timeout), then no longer, and again once every
  credential proven on it was revoked; nor does a
  connection whose request carried a valid RP API key (a wrong key does);
- one credential is authenticated on at most MAX_SOCKETS_PER_CREDENTIAL connections;
- behind a trusted proxy only the node's limit applies (503 node_busy over it);
- a full node makes room for a client holding fewer connections by closing the oldest
  unproven connection of the address holding most, so a load balancer's health check
  and an RP still get in while some addresses hold the node (loopback has many
  addresses: 127.0.0.2, 127.0.0.3, ... stand for clients);
- a client that sends requests and reads none of the answers is dropped after
  `--write-timeout`, on aiohttp's path and on the RP lane's, and until then the broker
  stops reading its requests a little ahead of the one it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from e2e_helpers import agent, agent_env, enroll  # noqa: F401  (agent_env: autouse, the vault passphrase)
from support import BrokerProcess, RedisServer, free_port, new_rp, new_rp_sync, wait_until
from support.metrics import scrape, value
from test_broker_device_ws import CTX, Device, online_device

from broker.connections import ConnectionGate, ConnectionLimits, Slot
from broker.device_ws import MAX_SOCKETS_PER_CREDENTIAL
from protocol.frames import Challenge, Revoked
from relying_party.sdk import PushAuthClient

DEADLINE_S = 20.0  # far beyond every timeout under test (1 s): "within this"


class Node:
    """A broker process under test and its metrics port."""

    def __init__(self, broker: BrokerProcess, metrics_port: int) -> None:
        self.broker = broker
        self.metrics_port = metrics_port
        self.held: list[socket.socket] = []

    def metric(self, name: str, **labels: str) -> float:
        return value(scrape(self.metrics_port), name, **labels)

    def open_connections(self) -> float:
        return self.metric("pushauth_http_connections")

    def wait_open(self, count: int) -> None:
        wait_until(lambda: self.open_connections() == count, message=lambda: f"{count} connections open")

    def hold(self, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
        """Open `count` connections from `source` that send nothing, and wait until the
        broker has them."""
        before = self.open_connections()
        held = [
            socket.create_connection(("127.0.0.1", self.broker.port), DEADLINE_S, (source, 0))
            for _ in range(count)
        ]
        self.held += held
        self.wait_open(int(before) + count)
        return held

    def http(self, source: str = "127.0.0.1") -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.broker.port, timeout=DEADLINE_S, source_address=(source, 0)
        )

    def close(self) -> None:
        for sock in self.held:
            sock.close()


@pytest.fixture
def start_node(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(*args: str) -> Node:
        port = free_port()
        extra = ["--metrics-port", str(port), "--log-level", "DEBUG", *args]
        node = Node(broker_factory(redis_url=redis_server.url, node=f"n{len(nodes)}", extra_args=extra), port)
        nodes.append(node)
        node.wait_open(0)  # the readiness probe's connection closed: counts start from nothing
        return node

    yield start
    for node in nodes:
        node.close()
        node.broker.terminate()
        log = node.broker.stderr_path.read_text()
        assert "Traceback" not in log, log[-4000:]
        assert " ERROR " not in log, log[-4000:]


def get(conn: http.client.HTTPConnection, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def refused_with(node: Node, status: int, code: str, source: str = "127.0.0.1") -> dict[str, Any]:
    """A new connection's request, answered with the refusal `status`/`code` and closed."""
    conn = node.http(source)
    try:
        got, headers, body = get(conn, "/healthz")
    finally:
        conn.close()
    assert got == status, body
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["retry-after"] == "1" and headers["connection"] == "close"
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == status and doc["code"] == code, doc
    return doc


def served(node: Node, source: str = "127.0.0.1") -> int:
    conn = node.http(source)
    try:
        return get(conn, "/healthz")[0]
    finally:
        conn.close()


def test_one_address_holds_at_most_its_share_of_connections(start_node: Callable[..., Node]) -> None:
    node = start_node("--http-connections-per-ip", "3")
    node.hold(3)
    doc = refused_with(node, 429, "too_many_connections")
    assert "3 connections are open from this address" in doc["detail"]
    assert node.metric("pushauth_http_connections_refused_total", limit="per_ip") == 1
    # The ones it holds are served as before...
    node.held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
    assert node.held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
    # ... and one it closes frees its place.
    node.held.pop().close()
    node.wait_open(2)
    assert served(node) == 200
    assert node.metric("pushauth_http_connections_refused_total", limit="per_ip") == 1


def test_rp_connections_leave_the_count(start_node: Callable[..., Node]) -> None:
    node = start_node("--http-connections-per-ip", "2")
    rp = new_rp_sync(node.broker)
    bearer = {"Authorization": f"Bearer {rp['api_key']}"}
    # Six RP connections, kept open: three on the RP lane's path, three on aiohttp's.
    rp_conns = []
    for path in ["/v1/challenges/no-such-challenge"] * 3 + ["/v1/users/alice/credentials"] * 3:
        conn = node.http()
        status, _, body = get(conn, path, **bearer)
        assert status in (200, 404), body
        rp_conns.append(conn)
    node.wait_open(6)  # counted for the node, not for the address
    assert served(node) == 200
    # A wrong key does not take a connection out of the count; nor does a healthz.
    anonymous = [node.http(), node.http()]
    assert get(anonymous[0], "/v1/users/alice/credentials", Authorization="Bearer pak_wrong")[0] == 401
    assert get(anonymous[1], "/healthz")[0] == 200
    refused_with(node, 429, "too_many_connections")
    for conn in rp_conns + anonymous:
        conn.close()


async def test_a_device_socket_counts_until_it_proves_a_credential(start_node: Callable[..., Node]) -> None:
    """Anyone can open device WebSockets and prove nothing on them until the
    authentication timeout: had they left the count at the upgrade, the connect rate
    alone (20 a second per address, 3000 for the node) would bound them, and a few
    dozen addresses held every file descriptor of a node. So a socket counts as the
    connection it was until a credential is proven on it, and again once every
    credential proven on it was revoked."""
    node = start_node("--http-connections-per-ip", "2")
    rp = new_rp_sync(node.broker)
    async with PushAuthClient(node.broker.http_url, rp["api_key"]) as client:
        enrollment = await client.create_enrollment("alice", "alice@example.com")
        idle = await Device.connect(node.broker.ws_url)
        enrolling = await Device.connect(node.broker.ws_url)
        # Two sockets that proved nothing: the address's share is taken.
        await asyncio.to_thread(refused_with, node, 429, "too_many_connections")
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Device.connect(node.broker.ws_url)
        assert refused.value.response.status_code == 429
        # A credential proven (an enrollment completed): that socket counts no more.
        await enrolling.enroll(enrollment.uri or "")
        await asyncio.to_thread(wait_until, lambda: served(node) == 200, message="a place freed")
        await asyncio.to_thread(node.hold, 1)  # the other place; the idle socket has one
        await asyncio.to_thread(refused_with, node, 429, "too_many_connections")
        # It still talks to the device that proved its key.
        await enrolling.authenticate()
        # Its only credential revoked (the RP removed the device), it counts again, as an
        # unproven socket would: no credential any user can get and have revoked keeps
        # a socket out of the limits. The address holds three of its two places now.
        await client.revoke_credential(enrolling.cid)
        assert await enrolling.frame() == Revoked(cid=enrolling.cid, reason="removed_by_rp", rid=None)
        before = await asyncio.to_thread(node.open_connections)
        node.held.pop().close()
        await asyncio.to_thread(node.wait_open, int(before) - 1)
        await asyncio.to_thread(refused_with, node, 429, "too_many_connections")
        await idle.close()
        await asyncio.to_thread(node.wait_open, int(before) - 2)
        assert await asyncio.to_thread(served, node) == 200
        await enrolling.close()


async def test_one_credential_holds_at_most_its_share_of_device_sockets(
    start_node: Callable[..., Node],
) -> None:
    """A key proven on one connection more than MAX_SOCKETS_PER_CREDENTIAL closes the
    oldest (4429 rate_limited): one enrolled key, which any user of an RP can get, no
    longer holds as many sockets as it opens. The newest connections keep working."""
    node = start_node()
    rp = new_rp_sync(node.broker)
    async with PushAuthClient(node.broker.http_url, rp["api_key"]) as client:
        first = await online_device(client, node.broker.ws_url)
        others = []
        for _ in range(MAX_SOCKETS_PER_CREDENTIAL):
            other = await Device.connect(node.broker.ws_url, seed=first.seed)
            other.cid = first.cid
            await other.authenticate()
            others.append(other)
        assert await first.closed() == (4429, "rate_limited")
        ch = await client.create_challenge("alice", CTX)
        for other in others:  # still served: each gets the sign-in
            pushed = await other.frame()
            assert isinstance(pushed, Challenge) and pushed.ch == ch.id, pushed
            await other.close()


def test_behind_a_trusted_proxy_only_the_node_limit_applies(start_node: Callable[..., Node]) -> None:
    node = start_node(
        "--trusted-proxy", "127.0.0.1", "--http-connections-per-ip", "1", "--http-connections", "3"
    )
    node.hold(3)  # one address, three connections: the proxy's, many clients'
    doc = refused_with(node, 503, "node_busy")
    assert "3 connections open" in doc["detail"]
    assert node.metric("pushauth_http_connections_refused_total", limit="node") == 1
    node.held.pop().close()
    node.wait_open(2)
    assert served(node) == 200


def closed_by_broker(sock: socket.socket) -> bool:
    """Whether the broker has closed this idle connection (it reads an end or a reset)."""
    sock.settimeout(DEADLINE_S)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_full_node_makes_room_for_a_client_holding_fewer(start_node: Callable[..., Node]) -> None:
    """Twenty addresses of 512 connections fill a node of 10,000, the per-address limit
    notwithstanding; then the load balancer's health checks were refused and the node
    taken out. Now the newcomer takes the place of the oldest unproven connection of
    the address holding most, while that address holds more than the newcomer's would."""
    node = start_node("--http-connections", "6")
    rp = new_rp_sync(node.broker)
    heavy = node.hold(4, "127.0.0.2")
    # An RP's connection from the heavy address, its key proven: never evicted.
    rp_conn = node.http("127.0.0.2")
    assert get(rp_conn, "/v1/challenges/no-such", Authorization=f"Bearer {rp['api_key']}")[0] == 404
    node.hold(1, "127.0.0.3")
    node.wait_open(6)  # full
    # A health check from a third address: the heavy one's oldest goes.
    assert served(node, "127.0.0.4") == 200
    assert closed_by_broker(heavy[0])
    assert node.metric("pushauth_http_connections_evicted_total") == 1
    node.wait_open(5)
    # The heavy address's next connections: one to the free place, then refused, since
    # it would hold the most; a light address's gets in, in place of a heavy one's.
    node.hold(1, "127.0.0.2")
    doc = refused_with(node, 503, "node_busy", "127.0.0.2")
    assert "6 connections open" in doc["detail"]
    assert node.metric("pushauth_http_connections_refused_total", limit="node") == 1
    assert served(node, "127.0.0.3") == 200
    assert closed_by_broker(heavy[1])
    assert node.metric("pushauth_http_connections_evicted_total") == 2
    # The RP's connection serves on.
    assert get(rp_conn, "/v1/challenges/no-such", Authorization=f"Bearer {rp['api_key']}")[0] == 404
    rp_conn.close()


def test_a_full_node_of_equal_shares_refuses(start_node: Callable[..., Node]) -> None:
    """Every address holding one: nobody holds more than a newcomer would, so nothing
    is evicted and the newcomer is refused."""
    node = start_node("--http-connections", "3")
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        node.hold(1, source)
    refused_with(node, 503, "node_busy", "127.0.0.5")
    assert node.metric("pushauth_http_connections_evicted_total") == 0
    assert node.open_connections() == 3
    node.held.pop().close()
    node.wait_open(2)
    assert served(node, "127.0.0.5") == 200


def reader_that_never_reads(node: Node, requests: bytes) -> tuple[socket.socket, threading.Thread]:
    """A connection that sends `requests` (pipelined) from a thread and reads nothing;
    its receive buffer is made small so that the broker's responses back up at once.

    Its segments are Ethernet's size (MSS 1460), as a client across a network has:
    loopback's 64 KB segments made the kernel size the broker's send buffer for them,
    about 4 MB, so some 11,000 answers (7 s of the lane's work on a quiet machine, over
    30 s on a loaded one) had to be written before the broker's writes backed up and
    its write timeout began; with 1460 some 700 do."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)  # the MSS it announces
    sock.connect(("127.0.0.1", node.broker.port))

    def send() -> None:
        with contextlib.suppress(OSError):  # dropped while we were still sending
            sock.sendall(requests)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sock, sender


def responses_before_the_end(sock: socket.socket) -> int:
    """Reads what the broker sent before it dropped the connection (until an end of
    stream or a reset): how many responses began in it."""
    sock.settimeout(DEADLINE_S)
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            data += chunk
    return data.count(b"HTTP/1.1 ")


def peak_rss(node: Node) -> int:
    """The broker process's peak resident memory so far, in bytes (VmHWM)."""
    status = Path(f"/proc/{node.broker.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# What a client that reads nothing sends (far more answer bytes than any socket buffers
# hold: OpenAPI documents or small problems). The broker's peak memory may grow by a
# quarter of it at most: it grew by under 0.3 MB (a read, the lane's MAX_WAITING or
# aiohttp's 32 queued requests), and by 121 MB when the lane read all of it.
FLOOD = 64 << 20


@pytest.mark.parametrize(
    "path", ["/v1/openapi.json", "/v1/challenges/no-such-challenge"], ids=["aiohttp", "lane"]
)
def test_a_client_that_reads_no_responses_is_dropped(start_node: Callable[..., Node], path: str) -> None:
    """Pipelined requests without an API key (anyone may send them), none of the
    answers read: once the answers back up, the broker reads only a little ahead of the
    request it answers (the lane MAX_WAITING bytes, aiohttp 32 requests), so the
    client's sending stops until the write timeout drops it. The lane resumed reading
    after every answer and read on while its writes were paused: it held all 64 MB by
    then; aiohttp before 3.14.1 queued every request it parsed (that broker did not even
    answer its metrics port any more)."""
    node = start_node("--write-timeout", "1")
    before = peak_rss(node)
    one = f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
    count = FLOOD // len(one)
    sock, sender = reader_that_never_reads(node, one * count)
    try:
        wait_until(lambda: node.metric("pushauth_http_write_timeouts_total") == 1, message="dropped")
        node.wait_open(0)  # while the client still holds its end
        assert responses_before_the_end(sock) < count
        sender.join(DEADLINE_S)
        assert not sender.is_alive()
        grown = peak_rss(node) - before
        assert grown < FLOOD // 4, f"the broker's peak memory grew by {grown >> 20} MB"
        assert served(node) == 200  # and the node serves on
    finally:
        sock.close()


async def test_the_agent_says_what_a_busy_broker_said(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    node = start_node("--http-connections-per-ip", "1")
    rp = await new_rp(node.broker)
    home = tmp_path / "agent"
    async with PushAuthClient(node.broker.http_url, rp["api_key"]) as client:
        await enroll(client, home)
    await asyncio.to_thread(node.hold, 1)  # the address's one connection, idle
    result = await asyncio.to_thread(agent, home, "pending")
    assert result.returncode == 3, result.stderr
    assert "HTTP 429 instead of a WebSocket (too_many_connections: 1 connections are open" in result.stderr
    node.held.pop().close()
    await asyncio.to_thread(node.wait_open, 0)
    result = await asyncio.to_thread(agent, home, "pending")
    assert result.returncode == 0, result.stderr


class _Transport:
    """What ConnectionGate asks of a transport: its peer, abort, and what a refusal writes."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return (self.host, 40000) if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    # A refusal's way out: its response, then a close (no lingering without write_eof).
    def set_protocol(self, protocol: Any) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert data.startswith(b"HTTP/1.1 503 ")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_the_gate_always_evicts_from_the_address_holding_most() -> None:
    """The gate's bookkeeping (the address holding most, found in O(1)) against a plain
    recount, over a random run of admissions, closes, RP authentications, and device
    sockets proving a credential then counted again once it is revoked."""
    rng = random.Random(7)
    gate = ConnectionGate(ConnectionLimits(per_ip=0, node=40))
    live: list[Slot] = []
    proven: list[Slot] = []  # device sockets out of the counts, until revoked
    for _ in range(5000):
        op = rng.random()
        if op < 0.6 or not live:
            counts = Counter(s.key for s in live if s.key is not None and not s.released)
            host = f"10.0.{rng.randrange(12)}.1"
            newcomer = counts[host] + 1
            slot = gate.admit(_Transport(host))  # type: ignore[arg-type]
            evicted = [s for s in live if s.released]
            if slot is None:
                # (over 40: sockets counted again are never refused, only evicted later)
                assert gate.open >= 40 and max(counts.values(), default=0) <= newcomer
            else:
                live.append(slot)
            for victim in evicted:  # at most one, from an address holding most, its oldest
                assert victim.transport.aborted  # type: ignore[attr-defined]
                host_of = victim.transport.host  # type: ignore[attr-defined]
                assert counts[host_of] == max(counts.values()) > newcomer
                live.remove(victim)
            assert len(evicted) <= 1
        elif op < 0.85:
            live.pop(rng.randrange(len(live))).release()
        elif op < 0.9:
            live[rng.randrange(len(live))].authenticated()
        elif op < 0.95:  # a device socket proves a credential: out of every count
            slot = live.pop(rng.randrange(len(live)))
            if not slot.released and slot.key is not None:
                slot.release()
                proven.append(slot)
            else:
                live.append(slot)
        elif proven:  # ... and every credential proven on it is revoked: counted again
            slot = proven.pop(rng.randrange(len(proven)))
            slot.rejoin()
            live.append(slot)
        counts = Counter(s.key for s in live if s.key is not None)
        assert gate.open == len(live)
        assert gate._largest == max(counts.values(), default=0)
