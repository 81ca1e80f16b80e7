"""RedisServer: a real redis-server (or valkey-server) on a free port, for one test.

No persistence by default (`--save '' --appendonly no`): tests start from nothing
and leave nothing. Durability tests pass `appendonly=True` and use kill()/restart(),
which keep the port and the data directory, as a crashed and restarted server would.

`cluster=True` (or PUSHAUTH_TEST_REDIS_CLUSTER=1 in the environment, for every server
the tests start) makes it a Redis Cluster of one node that serves every hash slot: the
broker talks to it as to a single Redis, and it refuses, as every cluster node does,
any command or script whose keys span slots (CROSSSLOT) and any shard channel outside
the script's slot. tests/test_broker_key_slots.py runs on one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from pathlib import Path
from typing import Any, Self

import redis

from .ports import LOCALHOST, free_port
from .process import ManagedProcess, ProcessFailed
from .waiting import DEADLINE, wait_until

# Inline commands (no RESP framing) are the simplest probes.
_PING = b"PING\r\n"
_INFO = b"INFO server\r\n"
_PROCESS_ID = re.compile(rb"^process_id:(\d+)", re.MULTILINE)


def redis_executable() -> str:
    """Path of redis-server, or valkey-server where only that is installed."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("neither redis-server nor valkey-server is on PATH (scripts/ensure-tools test)")


def ping(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING on host:port (it is loaded and serving)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PING)
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def server_pid(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> int | None:
    """The pid of the Redis server serving host:port, or None if none answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_INFO)
            reply = sock.makefile("rb")
            header = reply.readline()  # a bulk string: b"$<length>\r\n", then the text
            if not header.startswith(b"$"):
                return None
            data = reply.read(int(header[1:]))
    except (OSError, ValueError):
        return None
    match = _PROCESS_ID.search(data)
    return int(match.group(1)) if match else None


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
        name: str = "redis",
        cluster: bool | None = None,
        config_file: Path | None = None,
    ) -> None:
        """`config_file`: a redis.conf to start from; the options here override it."""
        if cluster is None:
            cluster = os.environ.get("PUSHAUTH_TEST_REDIS_CLUSTER", "") not in ("", "0")
        self.cluster = cluster
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self.config_file = config_file
        self.name = name
        self.process = self._process()

    def _process(self) -> ManagedProcess:
        argv = [
            redis_executable(),
            *([str(self.config_file)] if self.config_file else []),  # must come first
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", "",
            *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] if self.cluster else []),
            *self.extra_args,
        ]  # fmt: skip
        return ManagedProcess(
            argv,
            log_dir=self.directory,
            name=self.name,
            # Our own server, not another one that holds the port (ours then exits).
            ready=lambda proc: server_pid(self.port) == proc.pid,
            ready_timeout=DEADLINE,
        )

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> Self:
        try:
            self.process.start()
        except ProcessFailed:
            if self._fixed_port or self.process.starts > 1:
                raise
            # Most likely someone took the port between free_port() and bind: retry once.
            self.port = free_port()
            self.process = self._process()
            self.process.start()
        self._serve_every_slot()
        return self

    def _serve_every_slot(self) -> None:
        """A cluster node of its own: give it all 16384 slots (kept in nodes.conf over a
        restart), and wait until it says the cluster is ok."""
        if not self.cluster:
            return
        client = self.client()
        try:
            if client.execute_command("CLUSTER", "INFO").decode().find("cluster_slots_assigned:16384") < 0:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(
                lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"),
                message="the one-node cluster to serve every slot",
            )
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what the server already wrote."""
        self.process.kill(signal.SIGKILL)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: Redis flushes its append-only file first)."""
        self.process.terminate()

    def restart(self) -> Self:
        """Start again on the same port and data directory (after kill() or stop())."""
        if self.process.running:
            self.process.terminate()
        self.process.start()
        self._serve_every_slot()
        return self

    @property
    def running(self) -> bool:
        return self.process.running

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client, for assertions on what the broker stored."""
        return redis.Redis(host=LOCALHOST, port=self.port, db=0, **kwargs)

    def cleanup(self) -> None:
        self.process.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} running={self.running}>"
