"""`pushauth-broker serve --workers 2` as a real process tree (issue 15): two workers on
one port (SO_REUSEPORT) and one embedded Redis; devices on either worker get their
challenges whichever worker the RP called; SIGTERM to the supervisor stops every
worker in order (each device closed with 1001) and the Redis; a restart gives the
devices their pending challenge back; a killed supervisor or worker leaves nothing
behind or is replaced."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from support import BROKER, BrokerProcess, assert_cli_error, free_port, line_on_stdout, run_cli, wait_until
from test_broker_device_ws import CTX, Device, approve_push, keys_of, online_device

from protocol.frames import Challenge
from relying_party.sdk import PushAuthClient

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="SO_REUSEPORT, /proc: Linux")

ALL_READY = r"listening on http://\S+ \(2 workers\)"
MAX_USERS = 40  # connections until both workers hold one; the kernel hashes them: 2**-39 to fail


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def start(tmp_path: Path, data: Path) -> BrokerProcess:
    broker = BrokerProcess(
        log_dir=tmp_path / "logs", redis_url=None, data_dir=data, node="multi", extra_args=["--workers", "2"]
    ).start()
    broker.wait_ready(line_on_stdout(ALL_READY))
    return broker


def worker_pids(broker: BrokerProcess) -> list[int]:
    """The workers' pids, worker 0 first (they announce themselves in any order)."""
    found = dict(re.findall(r"worker (\d) \(pid (\d+)\) ready", broker.run_stdout()))
    assert sorted(found) == ["0", "1"], broker.run_stdout()
    return [int(found["0"]), int(found["1"])]


def add_rp(data: Path) -> dict[str, Any]:
    result = run_cli([BROKER, "rp", "add", "Workers RP", "--data-dir", data, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def one_device_per_worker(
    client: PushAuthClient, broker: BrokerProcess
) -> dict[str, tuple[str, Device]]:
    """worker node -> (user, a device connected to it)."""
    by_node: dict[str, tuple[str, Device]] = {}
    for i in range(MAX_USERS):
        user = f"user{i}"
        dev = await online_device(client, broker.ws_url, user)
        node = dev.session.hello.node if dev.session.hello else ""
        if node in by_node:
            await dev.close()
        else:
            by_node[node] = (user, dev)
        if len(by_node) == 2:
            break
    assert sorted(by_node) == ["multi-w0", "multi-w1"], by_node
    return by_node


@pytest.fixture
def leftovers() -> Any:
    """Pids the test learned: SIGKILLed at teardown if the test failed before they ended
    (workers and Redis run in sessions of their own)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_two_workers_get_challenges_to_either_and_stop_together(
    tmp_path: Path, leftovers: list[int]
) -> None:
    data = tmp_path / "data"
    broker = start(tmp_path, data)
    workers = worker_pids(broker)
    redis_pid = int((data / "redis.pid").read_text())
    leftovers += [*workers, redis_pid]
    # A second supervisor on the same port is refused, not given half the connections
    # (SO_REUSEPORT would share the port with it).
    port = broker.http_url.rpartition(":")[2]
    second = run_cli([BROKER, "serve", "--port", port, "--workers", "2", "--data-dir", tmp_path / "other"])
    assert second.returncode == 1
    assert_cli_error(second, contains="address already in use")
    assert not (tmp_path / "other").exists()
    rp = add_rp(data)  # `rp` shares the supervisor's embedded Redis
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        devices = await one_device_per_worker(client, broker)
        for user, dev in devices.values():
            ch = await client.create_challenge(user, CTX)
            await approve_push(dev, ch)
            result = await client.wait_result(ch, await keys_of(client, user), timeout=10)
            assert result.approved, result
        user0, dev0 = devices["multi-w0"]
        pending = await client.create_challenge(user0, CTX)
        assert isinstance(await dev0.frame(), Challenge)

    assert broker.kill(signal.SIGTERM) == 0
    for _, dev in devices.values():
        assert await dev.closed() == (1001, "broker shutting down")
    for pid in (*workers, redis_pid):
        wait_until(lambda pid=pid: not running(pid), message=f"process {pid} to end with the supervisor")
    out = broker.run_stdout()
    assert "pushauth-broker: stopped in" in out and out.count("] pushauth-broker: stopped in") == 2, out
    assert "Traceback" not in broker.output(), broker.output()

    broker.start()  # a restart: the devices' pending challenge waits for them
    broker.wait_ready(line_on_stdout(ALL_READY))
    leftovers += worker_pids(broker)
    back = await Device.connect(broker.ws_url, seed=dev0.seed)
    back.cid = dev0.cid
    welcome, frames = await back.authenticate()
    assert welcome.accepted == (back.cid,)
    assert [f.ch for f in frames] == [pending.id]
    await back.close()
    assert broker.terminate() == 0


async def test_a_killed_supervisor_stops_its_workers_in_order_and_a_dead_worker_is_replaced(
    tmp_path: Path, leftovers: list[int]
) -> None:
    data = tmp_path / "data"
    broker = start(tmp_path, data)
    w0, w1 = worker_pids(broker)
    redis_pid = int((data / "redis.pid").read_text())
    leftovers += [w0, w1, redis_pid]

    os.kill(w0, signal.SIGKILL)  # a crashed worker: the supervisor starts another
    broker.wait_ready(line_on_stdout(r"worker 0 \(pid \d+\) back: "))
    (again,) = map(int, re.findall(r"worker 0 \(pid (\d+)\) back", broker.run_stdout()))
    leftovers.append(again)
    assert running(w1) and running(redis_pid)
    # The operator's log says how the worker ended, not asyncio's "-9".
    assert f"worker 0 (pid {w0}) was killed by SIGKILL; starting it again in 1s" in broker.output()

    rp = add_rp(data)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        devices = await one_device_per_worker(client, broker)
        broker.kill(signal.SIGKILL)  # the supervisor itself, without a word to anyone
        for _, dev in devices.values():  # the kernel tells the workers: they stop in order
            assert await dev.closed() == (1001, "broker shutting down")
    for pid in (again, w1, redis_pid):
        wait_until(lambda pid=pid: not running(pid), message=f"process {pid} to end after the supervisor")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--workers", "0"], "--workers must be 1 to 64"),
        (["--workers", "2", "--enrollment-ttl", "5"], "--enrollment-ttl"),
        (["--workers", "2", "--metrics-port", "65535"], "--metrics-port"),
    ],
)
def test_bad_worker_arguments_get_one_line_before_anything_starts(args: list[str], words: str) -> None:
    assert_cli_error(run_cli([BROKER, "serve", "--port", "0", *args]), contains=words)


def test_a_worker_that_cannot_start_is_reported_without_a_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli([BROKER, "serve", "--port", "0", "--workers", "2", "--redis-url", url])
    assert result.returncode == 2
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, result.stderr
