"""The embedded Redis never outlives its broker (issue 15): a broker killed with SIGKILL
takes its redis-server down with it (the kernel's death signal; Redis flushes its
append-only file), a leftover server of a broker that died without that signal is
stopped by the next broker on the data dir before it starts its own, and the data
survives both. Real broker processes, real redis-server, real `rp` CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import BROKER, BrokerProcess, ManagedProcess, redis_executable, run_cli, wait_until
from support.redis_cluster import redis_cli

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")


def redis_running(pid: int) -> bool:
    """Whether `pid` is a live redis-server: not gone, not a zombie waiting to be reaped
    (it is the broker's child; after the broker dies, init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    alive = stat.rpartition(")")[2].split()[0] != "Z"
    return alive and (b"redis-server" in cmdline or b"valkey-server" in cmdline)


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def redis_pid(data: Path) -> int:
    """The embedded server's pid, from the pidfile it writes once it serves."""
    text = wait_until(lambda: _read(data / "redis.pid"), message="redis.pid in the data dir")
    return int(str(text))


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return ""


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """redis-server pids a test saw: killed at teardown should the test fail midway
    (they live in a session of their own, which the broker's process group cleanup
    does not reach)."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if redis_running(pid):
            os.kill(pid, signal.SIGKILL)


def rp_cli(data: Path, *args: str) -> Any:
    result = run_cli([BROKER, "rp", *args, "--data-dir", data, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start_broker(tmp_path: Path, data: Path) -> BrokerProcess:
    return BrokerProcess(log_dir=tmp_path / "logs", redis_url=None, data_dir=data, node="solo").start()


def test_sigkill_of_the_broker_stops_its_redis_and_a_new_broker_starts_afresh(
    tmp_path: Path, pids: list[int]
) -> None:
    data = tmp_path / "data"
    broker = start_broker(tmp_path, data)
    # A node that got no --redis-url (an unset PUSHAUTH_REDIS_URL) says it shares nothing.
    assert f"store: the embedded Redis in {data} (no --redis-url" in broker.stdout()
    first = redis_pid(data)
    pids.append(first)
    rp = rp_cli(data, "add", "Kept RP")  # through the broker's running Redis
    broker.kill(signal.SIGKILL)
    wait_until(lambda: not redis_running(first), message=f"redis-server {first} to stop after SIGKILL")
    assert "is now ready to exit" in (data / "redis.log").read_text()  # a SHUTDOWN, not a crash
    again = start_broker(tmp_path, data)
    second = redis_pid(data)
    pids.append(second)
    assert second != first and redis_running(second)
    assert [r["id"] for r in rp_cli(data, "list")] == [rp["id"]]  # the append-only file was flushed
    again.terminate()
    wait_until(lambda: not redis_running(second), message="redis-server to stop with its broker")


def test_a_leftover_redis_is_stopped_before_the_next_broker_starts_its_own(
    tmp_path: Path, pids: list[int]
) -> None:
    """As an older release (or a platform without a death signal) left it: a server
    still running on the data dir, with no broker. The next broker stops it (SHUTDOWN,
    so nothing is lost) rather than run a second server on the same files, or hand
    out a server nobody will stop."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    sock = data / "redis.sock"
    leftover = ManagedProcess(
        [
            redis_executable(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(data), "--appendonly", "yes", "--save", "", "--daemonize", "no",
        ],
        log_dir=tmp_path / "logs",
        name="leftover-redis",
        ready=lambda _p: answers(f"unix://{sock}"),
    ).start()  # fmt: skip
    pids.append(leftover.pid)
    rp = json.loads(
        run_cli([BROKER, "rp", "add", "Old RP", "--redis-url", f"unix://{sock}", "--json"]).stdout
    )
    broker = start_broker(tmp_path, data)
    assert leftover.wait(timeout=30) == 0  # stopped in order by the new broker
    ours = redis_pid(data)
    pids.append(ours)
    assert ours != leftover.pid and redis_running(ours)
    assert [r["id"] for r in rp_cli(data, "list")] == [rp["id"]]
    broker.terminate()
    wait_until(lambda: not redis_running(ours), message="redis-server to stop with its broker")


def test_a_second_process_on_the_data_dir_shares_the_running_redis(tmp_path: Path, pids: list[int]) -> None:
    """The lock tells a living owner from a dead one: `rp` commands (and a second
    broker) use the running server and never stop it."""
    data = tmp_path / "data"
    broker = start_broker(tmp_path, data)
    pid = redis_pid(data)
    pids.append(pid)
    for name in ("One", "Two"):
        rp_cli(data, "add", name)
    assert redis_running(pid) and _read(data / "redis.pid") == str(pid)
    assert sorted(r["name"] for r in rp_cli(data, "list")) == ["One", "Two"]
    # Challenge hashes (their context over 64 bytes) in the compact encoding: half the memory.
    embedded = redis.Redis(unix_socket_path=str(data / "redis.sock"))
    try:
        assert embedded.config_get("hash-max-listpack-value") == {"hash-max-listpack-value": "1024"}
    finally:
        embedded.close()
    broker.terminate()
    wait_until(lambda: not redis_running(pid), message="redis-server to stop with its broker")


def test_a_copy_taken_with_redis_cli_restores_as_operations_md_says(tmp_path: Path, pids: list[int]) -> None:
    """docs/operations.md, "Backing up the broker's data", step by step with the embedded
    Redis: a copy taken while the broker runs, restored into an empty data directory,
    brings back what the copy held (and only that)."""
    data, copy, restored = tmp_path / "data", tmp_path / "pushauth.rdb", tmp_path / "restored"
    broker = start_broker(tmp_path, data)
    pids.append(redis_pid(data))
    rp_cli(data, "add", "Backed up RP")
    taken = subprocess.run(
        [redis_cli(), "-s", data / "redis.sock", "--rdb", copy], capture_output=True, text=True, timeout=60
    )
    assert taken.returncode == 0, taken.stderr
    rp_cli(data, "add", "Added after the copy")
    broker.terminate()

    restored.mkdir()
    shutil.copy(copy, restored / "dump.rdb")
    sock = restored / "redis.sock"
    argv = [redis_executable(), "--dir", restored, "--appendonly", "no", "--save", "", "--port", "0"]
    with ManagedProcess(
        [*argv, "--unixsocket", sock],
        log_dir=tmp_path / "logs",
        name="restore",
        ready=lambda _: sock.exists(),
    ) as once:
        client = redis.Redis(unix_socket_path=str(sock))
        client.config_set("appendonly", "yes")
        wait_until(
            lambda: (
                (info := client.info("persistence"))["aof_enabled"] == 1
                and info["aof_rewrite_in_progress"] == 0
                and info["aof_rewrite_scheduled"] == 0
            ),
            message="the append-only file written from the copy",
        )
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        assert once.wait() == 0

    again = start_broker(tmp_path, restored)
    pids.append(redis_pid(restored))
    assert [r["name"] for r in rp_cli(restored, "list")] == ["Backed up RP"]
    again.terminate()
