"""The embedded default store: a private redis-server (or valkey-server) that the
broker starts itself when no --redis-url is given, with append-only persistence
in the data directory, reachable only through a Unix socket there.

Several processes on one data directory share it: whoever finds the socket
answering uses it; only the process that started the server stops it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

SOCKET_NAME = "redis.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, less elsewhere


class EmbeddedRedisError(RuntimeError):
    pass


def server_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    raise EmbeddedRedisError(
        "no redis-server or valkey-server on PATH: install one (scripts/ensure-tools does) "
        "or point the broker at a running Redis with --redis-url"
    )


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / SOCKET_NAME
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> str:
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(f"data directory path too long for a Unix socket: {self.data_dir}")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _alive(self.url):
            return self.url  # another broker process on this data dir runs it
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale, from a process that died
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                server_binary(),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                # Append-only file: credentials and enrollments survive restarts and
                # crashes of the broker; fsync once a second bounds a power loss.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C goes to the broker, which stops it in order
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if _alive(self.url):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError("redis-server did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError, OSError):
            # SHUTDOWN flushes the append-only file before exiting.
            redis.Redis.from_url(self.url, socket_timeout=timeout).shutdown(nosave=False)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
