"""The processes under test: a redis-server and one or more broker nodes, on free ports.

Everything listens on 127.0.0.1 only. The load tester starts them itself (or is
pointed at a running broker) and stops exactly the processes it started.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from broker.activation import activated_argv
from broker.cpus import pin
from broker.policy import MAX_ENROLLMENTS_PER_MINUTE

LOCALHOST = "127.0.0.1"
# A held socket's backlog: every device's connection attempt made while no broker runs
# waits in it (the kernel caps it at net.core.somaxconn; the broker calls listen(1024)).
HELD_BACKLOG = 4096


class ClusterError(Exception):
    """A process under test could not be started or reached."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _script(name: str) -> str:
    """A console script of the running venv, so the broker under test is this checkout's."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"{what} exited with code {proc.returncode} while starting" + _why(log_path))
        if check():
            return
        time.sleep(0.02)
    raise ClusterError(f"{what} did not become ready within {timeout:.0f}s" + _why(log_path))


def _why(log_path: Path | None, lines: int = 3) -> str:
    """The last lines a process wrote (the reason it gave, as a rule) and where its log is."""
    if log_path is None:
        return ""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - 4096))
            text = log.read().decode(errors="replace")
    except OSError:
        return f"\n  log: {log_path}"
    last = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    said = "".join(f"\n  {line}" for line in last) if last else "\n  (it wrote nothing)"
    return f"; its last words:{said}\n  log: {log_path}"


@dataclass
class Managed:
    """One child process with its log file; stopped by its own PID only."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    pass_fds: tuple[int, ...] = ()

    def spawn(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=self.pass_fds,
        )

    def spawn_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Spawn, then wait until `ready()`. A process that fails to become ready, or whose
        start is interrupted (Ctrl-C, SIGTERM), is stopped here: the caller never got it
        to stop, and nothing the tester starts may outlive it."""
        self.spawn()
        try:
            _wait_until(ready, timeout, self.name, self.proc, self.log_path)  # type: ignore[arg-type]
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class RedisServer(Managed):
    def __init__(self, workdir: Path, name: str = "redis", port: int | None = None) -> None:
        self.port = port or free_port()
        exe = shutil.which("redis-server") or shutil.which("valkey-server")
        if exe is None:
            raise ClusterError("redis-server is not on PATH (it is needed to start a broker)")
        # No persistence: the load test's state is thrown away with the server.
        argv = [exe, "--port", str(self.port), "--bind", LOCALHOST, "--dir", str(workdir), "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--maxclients", "1000"]
        super().__init__(name, argv, workdir / f"{name}.log")

    @property
    def pids(self) -> tuple[int, ...]:
        return (self.pid,)

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> RedisServer:
        self.spawn_until(self._ping, 10)
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class RedisClusterNodes:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, made with
    `redis-cli --cluster create` as deploy/redis-cluster/ describes (no persistence)."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        exe = shutil.which("redis-server") or shutil.which("valkey-server")
        self.cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
        if exe is None or self.cli is None:
            raise ClusterError("redis-server and redis-cli are needed to start a Redis Cluster")
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            home = workdir / f"redis-c{i}"  # its own: a replica's sync writes dump.rdb there
            home.mkdir(parents=True, exist_ok=True)
            node = RedisServer(home, name=f"redis-c{i}")
            # The cluster bus on a port of its own (the default, port + 10000, can be
            # above 65535 or taken).
            node.argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            node.argv += ["--cluster-port", str(free_port())]
            node.argv += ["--cluster-node-timeout", "5000", "--repl-diskless-sync-delay", "0"]
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOCALHOST}:{n.port}" for n in self.nodes)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(n.pid for n in self.nodes)

    def start(self) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{LOCALHOST}:{n.port}" for n in self.nodes]
            replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            made = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, *replicas],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if made.returncode != 0:
                raise ClusterError(f"redis-cli --cluster create failed: {made.stdout[-2000:]} {made.stderr}")
            first = self.nodes[0].proc
            # Every node ok, and every replica in sync: a load test must not begin while a
            # replica still loads (the broker's durable writes would wait for it).
            ready = lambda: all(map(_cluster_ok, self.nodes)) and self._replicas_synced()  # noqa: E731
            _wait_until(ready, 60, "the Redis Cluster", first)  # type: ignore[arg-type]
        except BaseException:
            self.stop()  # what did start: nothing of a failed start is left running
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _replicas_synced(self) -> bool:
        masters = [_ask(n, b"INFO replication") for n in self.nodes]
        online = sum(text.count(b",state=online,") for text in masters if b"role:master" in text)
        return online == len(self.nodes) - len(self.nodes) // (1 + self.replicas)


def _ask(node: RedisServer, inline: bytes) -> bytes:
    """An inline command's reply (enough of it for a status check); b"" if none."""
    try:
        with socket.create_connection((LOCALHOST, node.port), timeout=0.5) as s:
            s.sendall(inline + b"\r\n")
            return s.recv(65536)
    except OSError:
        return b""


def _cluster_ok(node: RedisServer) -> bool:
    return b"cluster_state:ok" in _ask(node, b"CLUSTER INFO")


@dataclass
class ExternalRedis:
    """A Redis (or Redis Cluster) the tester did not start: nothing to stop or weigh."""

    url: str
    pids: tuple[int, ...] = ()

    def stop(self) -> None:
        pass


class BrokerNode(Managed):
    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        node: str,
        port: int | None = None,
        listen: socket.socket | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """`listen`: a listening socket the tester holds and passes to the node as systemd
        socket activation does (broker/activation.py), so that it outlives restarts.
        `options`: more options for `serve` (the load tester's --broker-option)."""
        self.port = listen.getsockname()[1] if listen is not None else port or free_port()
        self.redis_url = redis_url
        self.listen = listen
        argv = [_script("pushauth-broker"), "serve", "--host", LOCALHOST, "--port", str(self.port)]
        argv += ["--redis-url", redis_url, "--node", node, "--log-level", "WARNING"]
        # Every simulated device connects from 127.0.0.1: the per-address limits on
        # handshakes and open connections (meant for one client's address) would
        # throttle the whole load test.
        argv += ["--device-connects-per-ip", "0", "--http-connections-per-ip", "0", *options]
        self.options = tuple(options)
        fds: tuple[int, ...] = ()
        if listen is not None:
            argv, fds = activated_argv(argv, listen.fileno()), (listen.fileno(),)
        super().__init__(f"broker-{node}", argv, workdir / f"broker-{node}.log", pass_fds=fds)

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}/v1/device"

    def start(self, timeout: float = 30.0) -> BrokerNode:
        self.spawn_until(lambda: healthy(self.http_url), timeout)
        return self


def healthy(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(http_url + "/healthz", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def add_rp(redis_url: str, name: str = "Load test") -> tuple[str, str]:
    """Register an RP with the broker's own CLI; returns (rp id, API key)."""
    result = subprocess.run(
        [_script("pushauth-broker"), "rp", "add", name, "--redis-url", redis_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"pushauth-broker rp add failed: {result.stderr.strip()}")
    rp = json.loads(result.stdout)
    # A run enrolls its whole fleet at once (18,000 devices or more), far above an RP's
    # default enrollment rate (600 a minute, docs/http-api.md "Enrollment quota"); each
    # is completed at once, so the pending cap is never near.
    result = subprocess.run(
        [
            _script("pushauth-broker"), "rp", "set", rp["id"], "--enrollments-per-minute",
            str(MAX_ENROLLMENTS_PER_MINUTE), "--redis-url", redis_url,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"pushauth-broker rp set failed: {result.stderr.strip()}")
    return rp["id"], rp["api_key"]


class Cluster:
    """A Redis and `nodes` broker nodes on it; a context manager that stops them all.

    The Redis is one redis-server by default, a Redis Cluster (three masters, three
    replicas) with `redis_cluster`, or one already running at `redis_url`; with
    `redis_cpus`, the Redis processes it starts run on those CPUs only. With
    `held_sockets`, the tester holds each node's listening socket, as systemd socket
    activation does, and it stays open across `restart_broker`."""

    def __init__(
        self,
        workdir: Path,
        nodes: int = 1,
        *,
        redis_cluster: bool = False,
        redis_url: str | None = None,
        held_sockets: bool = False,
        broker_options: Sequence[str] = (),
        redis_cpus: tuple[int, ...] = (),
    ) -> None:
        self.workdir = workdir  # process logs stay here after the run
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n_nodes = nodes
        self.redis_cluster = redis_cluster
        self.redis_url = redis_url
        self.redis: RedisServer | RedisClusterNodes | ExternalRedis | None = None
        self.brokers: list[BrokerNode] = []
        self.held_sockets = held_sockets
        self.sockets: list[socket.socket] = []
        self.broker_options = tuple(broker_options)
        self.redis_cpus = redis_cpus

    def __enter__(self) -> Cluster:
        try:
            if self.redis_url:
                self.redis = ExternalRedis(self.redis_url)
            elif self.redis_cluster:
                self.redis = RedisClusterNodes(self.workdir).start()
            else:
                self.redis = RedisServer(self.workdir).start()
            if self.redis_cpus:
                for pid in self.redis.pids:
                    pin(self.redis_cpus, pid, "--redis-cpus")
            for i in range(self.n_nodes):
                listen = None
                if self.held_sockets:
                    listen = socket.create_server((LOCALHOST, 0), backlog=HELD_BACKLOG)
                    self.sockets.append(listen)
                self.brokers.append(
                    BrokerNode(
                        self.workdir, self.redis.url, f"n{i + 1}", listen=listen, options=self.broker_options
                    ).start()
                )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def restart_broker(self, index: int = 0) -> tuple[float, float, float]:
        """Stop a node (SIGTERM, as an orderly restart) and start it on the same port.

        Returns wall times: the stop began, the old node exited, the new node answered /healthz."""
        old = self.brokers[index]
        began = time.time()
        old.stop()
        exited = time.time()
        assert self.redis is not None
        new = BrokerNode(
            self.workdir,
            self.redis.url,
            old.name.removeprefix("broker-"),
            port=old.port,
            listen=old.listen,
            options=old.options,
        )
        new.start()
        self.brokers[index] = new
        return began, exited, time.time()

    def close(self) -> None:
        for b in self.brokers:
            with contextlib.suppress(OSError):
                b.stop()
        if self.redis is not None:
            with contextlib.suppress(OSError):
                self.redis.stop()
        for sock in self.sockets:
            sock.close()
