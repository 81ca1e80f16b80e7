"""The embedded default store: a private redis-server (or valkey-server) that the
broker starts itself when no --redis-url is given, with append-only persistence
in the data directory, reachable only through a Unix socket there.

Several processes on one data directory share it; only the process that started the
server (its owner) stops it. The owner holds an exclusive lock on `redis.lock` in the
data directory for as long as it lives; the kernel releases it when the owner dies,
however it dies. So a process that finds the lock taken shares the running server,
and one that gets the lock owns the directory: a server still answering there (or
named by `redis.pid`) is a leftover of an owner that died, and is shut down (its
append-only file flushed) before a new one starts, never left running beside it.

A broker that is killed (SIGKILL, OOM) cannot stop its server, so the server is
started with a death signal (broker/lifeline.py): the kernel sends it SIGTERM when the
broker dies, and Redis shuts down in order, flushing its append-only file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import redis

from .lifeline import die_with_parent

SOCKET_NAME = "redis.sock"
HASH_MAX_LISTPACK_VALUE = 1024
LOCK_NAME = "redis.lock"
PID_NAME = "redis.pid"
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


def _is_redis(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) redis-server or valkey-server."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z" and (b"redis-server" in cmdline or b"valkey-server" in cmdline)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / SOCKET_NAME
        self.pidfile = self.data_dir / PID_NAME
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None

    def start(self, timeout: float = 10.0) -> str:
        """The URL of the data directory's server: ours (started now), or the one its
        living owner runs. Call it from the main thread (see broker/lifeline.py)."""
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(f"data directory path too long for a Unix socket: {self.data_dir}")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            # mkdir's own words were "--data-dir /etc/hosts: File exists".
            raise EmbeddedRedisError(f"--data-dir {self.data_dir} is not a directory")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._take_lock():
            return self._share(timeout)  # another living process owns the server
        try:
            self._stop_leftover(timeout)
            return self._spawn(timeout)
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self) -> bool:
        lock = (self.data_dir / LOCK_NAME).open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._lock = lock  # held (not inherited by children: close_fds) until stop()
        return True

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _share(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not _alive(self.url):  # its owner may be starting it right now
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"another process holds {self.data_dir / LOCK_NAME} but its Redis does not answer"
                )
            time.sleep(0.05)
        return self.url

    def _stop_leftover(self, timeout: float) -> None:
        """A server of an owner that died (it had no death signal: an older release, or
        a platform without one). SHUTDOWN flushes its append-only file; only then may a
        new server open the same files."""
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
        if pid is not None and not _is_redis(pid):
            pid = None  # gone, or the number reused by another program
        if _alive(self.url):
            with contextlib.suppress(redis.RedisError, OSError):
                redis.Redis.from_url(self.url, socket_timeout=timeout).shutdown(nosave=False)
        elif pid is not None:
            os.kill(pid, signal.SIGTERM)  # its socket file is gone, but it has the files open
        deadline = time.monotonic() + timeout
        while _alive(self.url) or (pid is not None and _is_redis(pid)):
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(f"a leftover redis-server in {self.data_dir} did not stop")
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale, from a process that died

    def _spawn(self, timeout: float) -> str:
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                server_binary(),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                "--pidfile", str(self.pidfile),
                # Append-only file: credentials and enrollments survive restarts and
                # crashes of the broker; fsync once a second bounds a power loss.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                # A challenge's hash holds its context as one JSON value, usually over
                # Redis's 64-byte default for the compact listpack encoding: then it
                # takes 1.6-1.9 KiB instead of 0.7 (docs/operations.md, "Long-running
                # nodes"); challenges are most of what Redis holds under load.
                "--hash-max-listpack-value", str(HASH_MAX_LISTPACK_VALUE),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C goes to the broker, which stops it in order
            preexec_fn=die_with_parent(signal.SIGTERM),  # and a killed broker, by the kernel
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
        try:
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
        finally:
            self._release_lock()  # after the server is gone: the next owner starts afresh

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
