"""Socket activation (broker/activation.py, deploy/pushauth-broker@.socket): the test holds
the listening socket as systemd does and passes it to the real `pushauth-broker` with
LISTEN_PID and LISTEN_FDS. Across a restart, devices and RPs that connect while no broker
runs wait in the backlog and are served by the next one: nobody is refused. Bad passed
sockets get one line and exit 2, before anything starts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    BROKER,
    DEADLINE,
    LOCALHOST,
    BrokerProcess,
    RedisServer,
    add_rp,
    assert_cli_error,
    free_port,
    line_on_stdout,
    run_cli,
)
from test_broker_device_ws import CTX, Device, online_device

from broker.activation import activated_argv
from protocol.frames import Challenge
from relying_party.sdk import PushAuthClient


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A listening socket owned by the test (systemd's part), open for the whole test."""
    sock = socket.create_server((LOCALHOST, 0), backlog=128)
    yield sock
    sock.close()


def http_get_on(sock: socket.socket, path: str = "/healthz") -> socket.socket:
    """A connection to the held socket with a request sent: the kernel accepts it into the
    backlog whether or not a broker runs (a connect to a closed port is refused)."""
    conn = socket.create_connection(sock.getsockname()[:2], timeout=30)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}\r\nConnection: close\r\n\r\n".encode())
    return conn


def response_of(conn: socket.socket) -> bytes:
    with conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


async def test_a_restart_on_a_held_socket_refuses_no_one(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], held: socket.socket
) -> None:
    node = broker_factory(redis_url=redis_server.url, node="a", listen_socket=held)
    assert node.port == held.getsockname()[1]
    assert f"listening on http://{LOCALHOST}:{node.port}" in node.stdout()
    rp = add_rp("Activated RP", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online_device(client, node.ws_url, "alice")
        ch = await client.create_challenge("alice", CTX)
        assert isinstance(await dev.frame(), Challenge)

        assert await asyncio.to_thread(node.kill, signal.SIGTERM) == 0
        assert await dev.closed() == (1001, "broker shutting down")
        # No broker runs now. An RP's request and a device's reconnection are not
        # refused: they wait in the socket's backlog.
        waiting = await asyncio.to_thread(http_get_on, held)
        # Its handshake waits across the next broker's start: allow it the tests' deadline.
        back_task = asyncio.ensure_future(Device.connect(node.ws_url, seed=dev.seed, open_timeout=DEADLINE))
        done, _ = await asyncio.wait([back_task], timeout=0.5)
        assert not done  # connected at the TCP level, waiting for a broker to answer

        again = broker_factory(redis_url=redis_server.url, node="a", listen_socket=held)
        assert again.port == node.port
        reply = await asyncio.to_thread(response_of, waiting)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
        back = await asyncio.wait_for(back_task, 30)
        back.cid = dev.cid
        welcome, pending = await back.authenticate()
        assert welcome.accepted == (back.cid,)
        assert [p.ch for p in pending] == [ch.id]  # nothing lost across the restart
        await back.close()
    for proc in (node, again):
        assert "Traceback" not in proc.output(), proc.output()


async def test_workers_share_a_held_socket(tmp_path: Path, held: socket.socket) -> None:
    """--workers N given a socket passes that one socket to each worker (--listen-fd):
    they take connections from it, and after they stop it still takes connections."""
    sup = BrokerProcess(
        log_dir=tmp_path / "logs",
        redis_url=None,
        data_dir=tmp_path / "data",
        node="multi",
        extra_args=["--workers", "2"],
        listen_socket=held,
        ready_timeout=60,
    ).start()
    try:
        sup.wait_ready(line_on_stdout(r"listening on http://\S+ \(2 workers\)"))
        assert f"listening on http://{LOCALHOST}:{sup.port} (2 workers)" in sup.run_stdout()
        for _ in range(4):
            reply = await asyncio.to_thread(response_of, http_get_on(held))
            assert reply.startswith(b"HTTP/1.1 200 ") and b'"node":"multi-w' in reply, reply[:300]
        assert sup.terminate() == 0
        assert "Traceback" not in sup.output() and "never retrieved" not in sup.output(), sup.output()
        # Stopped: the socket is the test's, still listening, not closed by the workers.
        waiting = await asyncio.to_thread(http_get_on, held)
        waiting.close()
    finally:
        sup.cleanup()


def run_activated(tmp_path: Path, passed: int, *extra: str, env: dict[str, str] | None = None) -> str:
    """`pushauth-broker serve` with descriptor `passed` as systemd's socket; its stderr.
    It must refuse before serving: a broker that served would not exit by itself."""
    argv = activated_argv([str(BROKER), "serve", "--data-dir", str(tmp_path / "data"), *extra], passed)
    result = subprocess.run(
        argv,
        pass_fds=(passed,),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return assert_cli_error(result)


def test_without_a_passed_socket_the_broker_listens_before_it_starts() -> None:
    """Without socket activation, `serve` listens before it imports the server and
    reaches Redis (broker/activation.py listen_early): after a restart, devices that
    connect while it starts wait in the backlog instead of being refused. Here "Redis"
    is a socket that accepts and never answers, so the broker stays in its start; its
    port already takes connections (it refused them until the start was over before)."""
    with socket.create_server((LOCALHOST, 0)) as stalled:
        stalled.settimeout(DEADLINE)
        port = free_port()
        url = f"redis://{LOCALHOST}:{stalled.getsockname()[1]}/0"
        proc = subprocess.Popen(
            [BROKER, "serve", "--port", str(port), "--redis-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            redis_side, _ = stalled.accept()  # the broker is connecting to Redis
            with socket.create_connection((LOCALHOST, port), timeout=DEADLINE):
                pass  # accepted into the backlog: ConnectionRefusedError before
            redis_side.close()
        finally:
            stalled.close()
            _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2 and b"cannot reach Redis" in err, err


def test_a_socket_that_is_not_listening_is_refused(tmp_path: Path) -> None:
    with socket.socket() as bound:  # bound, never listen()ed: a .socket unit mistake
        bound.bind((LOCALHOST, 0))
        assert "not listening" in run_activated(tmp_path, bound.fileno())
    with socket.socket(type=socket.SOCK_DGRAM) as udp:  # ListenDatagram= instead of ListenStream=
        assert "not a TCP socket" in run_activated(tmp_path, udp.fileno())
    with open(tmp_path / "file", "w") as file:
        assert "not a socket" in run_activated(tmp_path, file.fileno())


def test_a_listen_fd_that_is_no_descriptor_is_one_line(tmp_path: Path) -> None:
    for fd in ("-1", "99999999999"):
        result = run_cli([BROKER, "serve", "--listen-fd", fd, "--data-dir", tmp_path / "data"])
        assert result.returncode == 2
        assert_cli_error(result, contains=f"file descriptor {fd} is not a socket")
    assert not (tmp_path / "data").exists()


def test_more_than_one_passed_socket_is_refused(tmp_path: Path, held: socket.socket) -> None:
    argv = activated_argv([str(BROKER), "serve", "--data-dir", str(tmp_path / "data")], held.fileno())
    argv[4] = argv[4].replace('LISTEN_FDS="1"', 'LISTEN_FDS="2"')
    assert 'LISTEN_FDS="2"' in argv[4]
    result = subprocess.run(
        argv,
        pass_fds=(held.fileno(),),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "passed 2 sockets" in assert_cli_error(result)


def test_variables_meant_for_another_process_are_ignored(
    tmp_path: Path,
    held: socket.socket,
    broker_factory: Callable[..., BrokerProcess],
    redis_server: RedisServer,
) -> None:
    """LISTEN_PID naming another process (a parent that did not unset them): the broker
    binds its own --port, as without activation, and leaves descriptor 3 alone."""
    node = broker_factory(redis_url=redis_server.url, node="b", env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    assert node.port != held.getsockname()[1]
    assert f"listening on http://{LOCALHOST}:{node.port}" in node.stdout()
