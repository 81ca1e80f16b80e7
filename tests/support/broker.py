"""BrokerProcess and CLI helpers: the real `pushauth-broker` console script, as a subprocess.

Interface used (see broker/cli.py):
    pushauth-broker serve --host 127.0.0.1 --port PORT --redis-url URL [--data-dir DIR] [--node NAME]
        ready when GET /healthz answers 200
    pushauth-broker rp add NAME --redis-url URL --json
        prints {"id": ..., "name": ..., "api_key": ...}
    pushauth-broker rp set RP_ID [--max-pushes N ...] --redis-url URL --json
        prints the RP's policy now in force
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broker.activation import activated_argv
from broker.store import Store

from .ports import LOCALHOST, free_port
from .process import ManagedProcess
from .waiting import DEADLINE


def console_script(name: str) -> Path:
    """A console script of the venv running the tests (never whatever is on PATH)."""
    return Path(sys.executable).parent / name


BROKER = console_script("pushauth-broker")
AGENT = console_script("pushauth-agent")


class BrokerProcess(ManagedProcess):
    def __init__(
        self,
        *,
        log_dir: Path,
        redis_url: str | None,
        data_dir: Path | None = None,
        node: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout: float = DEADLINE,
        listen_socket: socket.socket | None = None,
    ) -> None:
        """`listen_socket`: serve on this listening socket, passed as systemd socket
        activation passes it (the test holds it across restarts, as systemd does)."""
        if listen_socket is not None:
            port = listen_socket.getsockname()[1]
        self.port = port if port is not None else free_port()
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.node = node
        argv: list[str] = [str(BROKER), "serve", "--host", LOCALHOST, "--port", str(self.port)]
        if redis_url is not None:
            argv += ["--redis-url", redis_url]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        if node is not None:
            argv += ["--node", node]
        argv += list(extra_args)
        pass_fds: tuple[int, ...] = ()
        if listen_socket is not None:
            argv = activated_argv(argv, listen_socket.fileno())
            pass_fds = (listen_socket.fileno(),)
        super().__init__(
            argv,
            pass_fds=pass_fds,
            log_dir=log_dir,
            name=f"broker-{node or self.port}",
            env=env,
            ready=lambda _proc: self._answers_healthz(),
            ready_timeout=ready_timeout,
        )

    def _answers_healthz(self) -> bool:
        """GET /healthz answered 200: the readiness probe. Once a connection is taken, it
        waits for that connection's answer for as long as the broker lives (up to its
        ready timeout). A probe that gave up after a second and connected again left
        its abandoned connections in the listen backlog of a broker that a loaded
        machine held up: each was counted when accepted, from 127.0.0.1, and with a
        limit of 3 the fourth was refused, so a test found refusals counted that were
        not its own (tests/test_broker_connection_limits.py)."""
        deadline = time.monotonic() + self.ready_timeout
        try:
            sock = socket.create_connection((LOCALHOST, self.port), timeout=1.0)
        except OSError:  # not listening yet
            return False
        with sock:
            sock.settimeout(0.2)  # how often it looks whether the broker still lives
            try:
                sock.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % LOCALHOST.encode()
                )
                head = b""
                while b"\r\n" not in head:
                    try:
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        if self.poll() is not None or time.monotonic() >= deadline:
                            return False
                        continue
                    if not chunk:
                        return False
                    head += chunk
            except OSError:
                return False
        return head.startswith(b"HTTP/1.1 200 ")

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}/v1/device"

    def health(self) -> tuple[int | None, dict[str, Any]]:
        """GET /healthz: (status, body), or (None, {}) when the node does not answer."""
        try:
            with urllib.request.urlopen(self.http_url + "/healthz", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return None, {}

    def long_polls(self) -> int:
        """RP long-polls waiting at this node now (from /healthz)."""
        return int(self.health()[1].get("events", {}).get("long_polls", -1))

    def add_rp(self, name: str) -> dict[str, Any]:
        """Register a relying party in this broker's Redis (see add_rp)."""
        if self.redis_url is None:
            raise RuntimeError("add_rp needs a broker started with --redis-url")
        return add_rp(name, redis_url=self.redis_url, env=self.env)


def run_cli(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a CLI to completion and capture its output (text)."""
    return subprocess.run(
        [os.fspath(a) for a in argv],
        env={**os.environ, **(env or {})},
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def assert_cli_error(result: subprocess.CompletedProcess[str], *, contains: str | None = None) -> str:
    """Bad input to a CLI: non-zero exit, one line on stderr, no traceback. Returns the line."""
    shown = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode != 0, f"expected a failure\n{shown}"
    assert "Traceback" not in result.stderr + result.stdout, f"a traceback instead of a message\n{shown}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr\n{shown}"
    if contains is not None:
        assert contains.lower() in lines[0].lower(), f"expected {contains!r} in the message\n{shown}"
    return lines[0]


def set_policy(rp_id: str, *flags: str, redis_url: str) -> dict[str, Any]:
    """`pushauth-broker rp set RP_ID FLAGS... --redis-url URL --json`: the policy now in force."""
    result = run_cli([BROKER, "rp", "set", rp_id, *flags, "--redis-url", redis_url, "--json"])
    if result.returncode != 0:
        raise AssertionError(f"rp set failed with {result.returncode}\n{result.stderr}{result.stdout}")
    return json.loads(result.stdout)


async def store_policy(broker: BrokerProcess, rp_id: str, **settings: int) -> None:
    """`pushauth-broker rp set RP_ID --SETTING VALUE ...` with the broker's own Store code,
    without a subprocess (the CLI itself is tested in test_broker_policy.py). Set it before
    the broker reads the RP's policy (an enrollment or a challenge does): a node keeps
    what it read for 2 s."""
    if broker.redis_url is None:
        raise RuntimeError("store_policy needs a broker started with --redis-url")
    redis = aioredis.Redis.from_url(broker.redis_url)
    try:
        await Store(redis, node="test").set_policy(rp_id, settings)
    finally:
        await redis.aclose()


async def allow_numberless_push(broker: BrokerProcess, rp_id: str) -> None:
    """`pushauth-broker rp set RP_ID --allow-numberless-push` (store_policy)."""
    await store_policy(broker, rp_id, allow_numberless_push=1)


async def new_rp(broker: BrokerProcess, name: str = "Test RP") -> dict[str, Any]:
    """Register an RP in the broker's Redis with the broker's own Store code: what
    `pushauth-broker rp add` runs, without a subprocess (about 0.4 s of CPU) per test.
    The CLI itself is tested through `add_rp`."""
    if broker.redis_url is None:
        raise RuntimeError("new_rp needs a broker started with --redis-url")
    redis = aioredis.Redis.from_url(broker.redis_url)
    try:
        created, api_key = await Store(redis, node="test").add_rp(name)
    finally:
        await redis.aclose()
    return {"id": created.id, "name": created.name, "api_key": api_key}


def new_rp_sync(broker: BrokerProcess, name: str = "Test RP") -> dict[str, Any]:
    """`new_rp` for synchronous code (a sync fixture, a Playwright test), which may run
    while this thread's event loop is running: it runs on a thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, new_rp(broker, name)).result()


def add_rp(name: str, *, redis_url: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`pushauth-broker rp add NAME --redis-url URL --json`: returns {"id", "name", "api_key"}."""
    result = run_cli([BROKER, "rp", "add", name, "--redis-url", redis_url, "--json"], env=env)
    if result.returncode != 0:
        raise AssertionError(f"rp add failed with {result.returncode}\n{result.stderr}{result.stdout}")
    rp = json.loads(result.stdout)
    missing = {"id", "name", "api_key"} - rp.keys()
    assert not missing, f"rp add --json lacks {sorted(missing)}: {result.stdout!r}"
    return rp
