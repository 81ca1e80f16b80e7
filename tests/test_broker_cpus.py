"""`pushauth-broker serve --cpus LIST` (broker/cpus.py): the real CLI, its processes'
CPU masks read from /proc, and the load tester's `--broker-cpus`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    BROKER,
    BrokerProcess,
    ManagedProcess,
    assert_cli_error,
    children,
    line_on_stdout,
    run_cli,
    wait_until,
)

from broker.cpus import MAX_CPU, for_worker, format_cpus, parse_cpus

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity: Linux")

LOADTEST = Path(sys.executable).parent / "pushauth-loadtest"


def allowed() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def cpus_of(pid: int) -> set[int]:
    """The union of every thread's mask (a pinned process has all of them on the list)."""
    masks = {tid: os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}
    return set().union(*masks.values())


def threads_on(pid: int, cpus: set[int]) -> bool:
    return all(os.sched_getaffinity(int(tid)) == cpus for tid in os.listdir(f"/proc/{pid}/task"))


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0", (0,)),
        ("1", (1,)),
        ("0,2", (0, 2)),
        ("2-3", (2, 3)),
        ("0-1,4", (0, 1, 4)),
        ("3,1,3", (1, 3)),
        (" 1 , 2 ", (1, 2)),
        (f"{MAX_CPU}", (MAX_CPU,)),
    ],
)
def test_cpu_lists_read_as_taskset_writes_them(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpus(text) == cpus
    assert parse_cpus(format_cpus(cpus)) == cpus


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not a CPU list"),
        ("x", "not a CPU list"),
        ("-1", "not a CPU list"),
        ("1-", "not a CPU list"),
        ("0,,1", "not a CPU list"),
        ("1.5", "not a CPU list"),
        ("1-2-3", "not a CPU list"),
        ("\u00b2", "not a CPU list"),
        ("3-1", "from low to high"),
        (f"{MAX_CPU + 1}", "out of range"),
        ("0-99999999999", "out of range"),
    ],
)
def test_bad_cpu_lists_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_cpus(text)


def test_workers_take_one_cpu_each_round_robin() -> None:
    assert [for_worker((2, 5), i) for i in range(5)] == [(2,), (5,), (2,), (5,), (2,)]


def test_a_pinned_broker_runs_on_its_cpu_and_its_embedded_redis_does_not(tmp_path: Path) -> None:
    cpu = allowed()[-1]
    data = tmp_path / "data"
    broker = BrokerProcess(
        log_dir=tmp_path / "logs", redis_url=None, data_dir=data, extra_args=["--cpus", str(cpu)]
    ).start()
    try:
        # Pinned after the embedded Redis started: every thread of the broker, none of Redis's.
        assert threads_on(broker.pid, {cpu}), {cpu}
        redis_pid = int((data / "redis.pid").read_text())
        assert cpus_of(redis_pid) == set(allowed())
        # And it serves as ever.
        rp = json.loads(run_cli([BROKER, "rp", "add", "Pinned RP", "--data-dir", data, "--json"]).stdout)
        assert rp["name"] == "Pinned RP"
    finally:
        assert broker.terminate() == 0
    assert "Traceback" not in broker.output()


def test_workers_are_pinned_one_cpu_each(tmp_path: Path) -> None:
    cpus = allowed()[:2]
    broker = BrokerProcess(
        log_dir=tmp_path / "logs",
        redis_url=None,
        data_dir=tmp_path / "data",
        node="pinned",
        extra_args=["--workers", "2", "--cpus", format_cpus(tuple(cpus))],
    ).start()
    broker.wait_ready(line_on_stdout(r"listening on http://\S+ \(2 workers\)"))
    try:
        found = dict(re.findall(r"worker (\d) \(pid (\d+)\) ready", broker.run_stdout()))
        assert sorted(found) == ["0", "1"], broker.run_stdout()
        for index, pid in found.items():
            want = {cpus[int(index) % len(cpus)]}
            wait_until(
                lambda pid=pid, want=want: threads_on(int(pid), want), message=f"worker {index} on {want}"
            )
        assert cpus_of(os.getpid()) == cpus_of(broker.pid)  # the supervisor is not pinned
    finally:
        assert broker.terminate() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_cpu_that_is_not_there_is_one_line_before_anything_starts(tmp_path: Path, workers: str) -> None:
    absent = str(os.cpu_count() or 1)
    result = run_cli(
        [BROKER, "serve", "--port", "0", "--data-dir", tmp_path, "--workers", workers, "--cpus", absent]
    )
    assert_cli_error(result, contains=f"CPU {absent} does not exist here")
    assert not (tmp_path / "redis.pid").exists()  # nothing was started


@pytest.mark.parametrize("text", ["x", "3-1", "", f"{MAX_CPU + 1}"])
def test_a_malformed_cpu_list_is_a_usage_error(tmp_path: Path, text: str) -> None:
    result = run_cli([BROKER, "serve", "--port", "0", "--data-dir", tmp_path, "--cpus", text])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "argument --cpus:" in result.stderr.strip().splitlines()[-1]


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADTEST), *args, "--no-progress"], capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.skipif(len(allowed()) < 2, reason="needs a CPU for the broker and one for the generator")
def test_the_load_tester_gives_the_broker_its_cpus_and_takes_the_others(tmp_path: Path) -> None:
    cpu = allowed()[-1]
    out = tmp_path / "run"
    proc = _loadtest(
        "signin", "--rate", "20", "--duration", "1", "--warmup", "0", "--devices", "20", "--workers", "1",
        "--broker-cpus", str(cpu), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = json.loads((out / "results.json").read_text())
    others = format_cpus(tuple(c for c in allowed() if c != cpu))
    assert r["cpus"] == {"broker": str(cpu), "generator": others, "redis": others}
    assert r["completed"] == r["started"] == 20 and r["errors"] == {}


def _child(parent: int, name: str) -> int | None:
    return next((pid for pid, comm in children(parent).items() if comm == name), None)


@pytest.mark.skipif(len(allowed()) < 2, reason="needs a CPU for the broker and one for the generator")
def test_the_load_tester_runs_its_redis_on_redis_cpus(tmp_path: Path) -> None:
    cpu = allowed()[-1]
    others = set(allowed()) - {cpu}
    # A run long enough to look at, stopped (SIGTERM) once its processes were seen.
    argv = [
        LOADTEST, "signin", "--rate", "10", "--duration", "120", "--warmup", "0", "--devices", "2",
        "--workers", "1", "--broker-cpus", str(cpu), "--redis-cpus", str(cpu), "--no-progress",
        "--out", tmp_path / "run",
    ]  # fmt: skip
    with ManagedProcess(argv, log_dir=tmp_path / "logs", name="loadtest") as tester:
        redis = wait_until(lambda: _child(tester.pid, "redis-server"), message="the tester's redis-server")
        assert isinstance(redis, int)
        # Every Redis thread on the broker's CPU, the tester itself on the others.
        wait_until(lambda: threads_on(redis, {cpu}), message=f"redis-server on CPU {cpu}")
        assert threads_on(tester.pid, others)
        broker = wait_until(lambda: _child(tester.pid, "pushauth-broker"), message="the broker node")
        assert isinstance(broker, int)
        wait_until(lambda: threads_on(broker, {cpu}), message=f"the broker on CPU {cpu}")
        assert tester.kill(signal.SIGTERM, timeout=60) == 128 + signal.SIGTERM, tester.output()
    assert "Traceback" not in tester.output()


def test_the_load_tester_refuses_redis_cpus_for_a_redis_it_does_not_start(tmp_path: Path) -> None:
    proc = _loadtest(
        "signin", "--redis-cpus", str(allowed()[0]), "--redis-url", "redis://127.0.0.1:1/0",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "pushauth-loadtest: --redis-cpus needs a Redis the tester starts (not --redis-url, --broker-url)"
    ]
    assert not (tmp_path / "run").exists()


def test_the_load_tester_refuses_to_leave_the_generator_no_cpu(tmp_path: Path) -> None:
    proc = _loadtest("signin", "--broker-cpus", format_cpus(tuple(allowed())), "--out", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "pushauth-loadtest: --broker-cpus leaves no CPU for the load generator"
    ]
