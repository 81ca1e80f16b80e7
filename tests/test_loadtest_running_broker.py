"""pushauth-loadtest against a broker it did not start (--broker-url): the CPU of every
process of a `serve --workers` broker, the API key kept out of what the run writes, the
credentials revoked at the end, and a 429 on device connections explained.

Real brokers and Redis, the tester as a subprocess, runs of a second or so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support import BROKER, BrokerProcess, RedisServer, line_on_stdout, new_rp_sync, run_cli
from test_loadtest import run

ALL_READY = r"listening on http://\S+ \(2 workers\)"


@pytest.fixture
def workers_broker(tmp_path: Path) -> Iterator[tuple[BrokerProcess, Path]]:
    """`serve --workers 2` on its embedded Redis (started as README shows, with the flag
    a load test needs): (the supervisor, its data dir)."""
    data = tmp_path / "data"
    broker = BrokerProcess(
        log_dir=tmp_path / "logs",
        redis_url=None,
        data_dir=data,
        node="multi",
        extra_args=["--workers", "2", "--device-connects-per-ip", "0"],
    )
    pids: list[int] = []
    try:
        broker.start()
        broker.wait_ready(line_on_stdout(ALL_READY))
        pids += [int(pid) for pid in re.findall(r"worker \d \(pid (\d+)\) ready", broker.run_stdout())]
        pids.append(int((data / "redis.pid").read_text()))
        yield broker, data
        assert broker.terminate() == 0
    finally:
        broker.cleanup()
        for pid in pids:  # in sessions of their own: ended here if the test failed first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# Users for 20 sign-ins/s: one is busy until its sign-in ends, and the generator refuses
# to start one with no idle user (`no_idle_user`, an error). With 10, a loaded machine
# (sign-ins of 0.35-0.7 s in a clean-clone run on two cores) ran out; 40 last for 2 s each.
DEVICES = 40


def test_a_workers_broker_is_measured_whole_and_its_key_and_credentials_do_not_stay(
    tmp_path: Path, workers_broker: tuple[BrokerProcess, Path]
) -> None:
    broker, data = workers_broker
    added = run_cli([BROKER, "rp", "add", "Load test", "--data-dir", data, "--json"])
    assert added.returncode == 0, added.stderr
    key = json.loads(added.stdout)["api_key"]
    out = tmp_path / "run"
    proc = run(
        "signin", "--broker-url", broker.http_url, f"--api-key={key}", "--broker-pid", str(broker.pid),
        "--broker-pid", str(broker.pid), "--rate", "20", "--duration", "1", "--warmup", "0.2",
        "--devices", str(DEVICES), "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    text = (out / "results.json").read_text()
    assert key not in text and key not in proc.stdout + proc.stderr
    r = json.loads(text)
    assert "--api-key=pak_... " in r["command"]
    assert r["completed"] == r["started"] == 20 and r["errors"] == {}
    # The supervisor (given twice, counted once) and its two workers, which did the work;
    # the embedded Redis, its child too, as Redis.
    workers = {int(p) for p in re.findall(r"worker \d \(pid (\d+)\) ready", broker.run_stdout())}
    assert r["brokers"][0]["pid"] == broker.pid
    assert {b["pid"] for b in r["brokers"]} == {broker.pid, *workers}
    assert sum(b["cpu_s"] for b in r["brokers"] if b["pid"] in workers) > 0
    assert r["broker_cpu_ms_per_signin"] > 0
    assert r["redis_cpu_ms_per_signin"] is not None
    # The run's credentials are revoked: no user of its RP has one any more.
    assert r["credentials_revoked"] == {"revoked": DEVICES, "enrolled": DEVICES}
    assert f"revoked {DEVICES} of the {DEVICES} this run enrolled" in proc.stdout
    with redis.Redis(unix_socket_path=str(data / "redis.sock")) as db:
        assert list(db.scan_iter(match="pa:*:uc:*")) == []  # users' credential indexes
        assert len(list(db.scan_iter(match="pa:*:cred:*"))) == DEVICES  # the revoked records stay


def test_a_429_on_device_connections_names_the_broker_setting(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # One device connection from an address, then none: the enrolling connection takes it.
    broker = BrokerProcess(
        log_dir=tmp_path / "logs",
        redis_url=redis_server.url,
        extra_args=["--device-connects-per-ip", "0.001:1"],
    ).start()
    rp = new_rp_sync(broker, "Load test")
    out = tmp_path / "run"
    proc = run(
        "signin", "--broker-url", broker.http_url, "--api-key", rp["api_key"], "--rate", "5",
        "--duration", "1", "--warmup", "0", "--devices", "1", "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "HTTP 429" in proc.stderr and "--device-connects-per-ip 0" in proc.stderr
    assert not out.exists()  # it held nothing: no empty run directory left behind
