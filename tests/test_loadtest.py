"""pushauth-loadtest: a short real run of each mode (a few seconds), its report, and bad input.

Each run starts its own redis-server and broker(s) on free ports, real devices and a
real RP, in real subprocesses. Nothing here asserts on speed: the load tester's
figures are benchmarks (docs/performance.md), not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hdrh.histogram import HdrHistogram
from support import (
    BrokerProcess,
    ManagedProcess,
    descendants,
    free_port,
    interruptible,
    new_rp,
    pid_alive,
    until,
    wait_until,
)

from loadtest.cli import build_parser, command_line
from loadtest.device import Credential, LinkError, enroll
from loadtest.idle_device import Dialer, IdleDevice
from loadtest.report import signin_table
from loadtest.runs import _signin_summary
from loadtest.schedule import Profile, arrivals, parse_rate
from loadtest.stats import STAGES, Recorder
from loadtest.worker import SigninWorker, WorkerConfig

LOADTEST = Path(sys.executable).parent / "pushauth-loadtest"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADTEST), *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def assert_clean_signin(r: dict[str, Any]) -> None:
    assert r["errors"] == {}
    assert r["started"] > 0
    assert r["completed"] == r["started"]
    for stage in STAGES:
        assert r["latency_ms"][stage]["count"] == r["completed"], stage
    # Every milestone comes after the sign-in's intended start, and the device's answer
    # after its challenge. The device's answer_result and the RP's result travel
    # separately (through different nodes in cross-node runs): either may come first.
    p50 = {stage: r["latency_ms"][stage]["p50"] for stage in STAGES}
    assert p50["create"] > 0
    assert 0 < p50["deliver"] <= p50["answer"]
    assert p50["deliver"] <= p50["result"]


# The smoke runs enroll two devices per sign-in a second: the generator starts a sign-in
# only for a user with none open (else `no_idle_user`, an error), and on a loaded
# machine a sign-in took up to 0.7 s in a clean-clone run; with one device per sign-in
# a second, a user had to be free again within 1 s.


def test_signin_smoke_run_completes_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        "signin", "--rate", "40", "--duration", "1", "--warmup", "0.5", "--devices", "80", "--workers", "1",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = results(out)
    assert r["mode"] == "signin"
    assert r["command"].startswith("pushauth-loadtest signin --rate 40")
    assert_clean_signin(r)
    assert r["started"] == 40  # 40/s for 1 s, the warm-up not counted
    assert r["broker_cpu_ms_per_signin"] > 0
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)
    assert "result" in proc.stdout and "errors: none" in proc.stdout
    # The processes it started are gone: their logs are left behind.
    assert (out / "processes" / "broker-n1.log").exists()


def test_crossnode_smoke_run_reports_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        "crossnode", "--rate", "30", "--duration", "1", "--warmup", "0.5", "--devices", "60", "--rounds", "1",
        "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = results(out)
    assert_clean_signin(r["same_node"])
    assert_clean_signin(r["cross_node"])
    assert set(r["cross_node_overhead_ms"]) == {"p50", "p90", "p99"}
    assert [p["kind"] for p in r["phases"]] == ["same_node", "cross_node"]
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)


def test_flows_smoke_run_reports_the_two_and_the_one_request_flow(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        "flows", "--rate", "30", "--duration", "1", "--warmup", "0.5", "--devices", "60", "--rounds", "1",
        "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = results(out)
    assert_clean_signin(r["two_requests"])
    assert_clean_signin(r["one_request"])
    assert [(p["kind"], p["rp_flow"]) for p in r["phases"]] == [
        ("two_requests", "two_requests"),
        ("one_request", "one_request"),
    ]
    assert set(r["one_request_difference_ms"]) == {"p50", "p90", "p99"}
    assert "one request minus two" in proc.stdout


def test_routing_smoke_run_counts_the_messages_each_node_received(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        "routing", "--nodes", "1,3", "--rate", "20", "--duration", "1", "--warmup", "0", "--devices", "40",
        "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    runs = results(out)["runs"]
    assert [r["nodes"] for r in runs] == [1, 3]
    for r in runs:
        assert r["errors"] == {} and r["sign_ins"] == 20 and len(r["per_node"]) == r["nodes"]
    # Alone, a node hears each sign-in's two events (its own); with three, the RP's node
    # hears the end and the device's node both: never the idle share of the others.
    assert runs[0]["per_sign_in"] == 2.0
    assert 2.0 <= runs[1]["per_sign_in"] <= 4.0, runs[1]
    assert "per sign-in" in proc.stdout


@pytest.mark.parametrize("held", [False, True], ids=["port-closed", "held-socket"])
def test_idle_smoke_run_weighs_devices_and_sees_them_back_after_a_restart(tmp_path: Path, held: bool) -> None:
    out = tmp_path / "run"
    extra = ["--held-socket"] if held else []
    proc = run("idle", "--devices", "30", "--workers", "2", "--settle", "0.2", *extra, "--out", str(out))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = results(out)
    assert r["devices"] == 30
    assert r["first_connect_s"] > 0
    restart = r["restart"]
    # Devices come back to the new node, which starts only after the old one exited. Not
    # after "ready": that is when /healthz first answered the poll, and the new node may
    # serve every device before then (CI saw 2.291 s against 2.292 s with a held socket).
    assert restart["all_back_after_stop_s"] >= restart["old_broker_exit_s"] > 0
    assert restart["broker_down_to_ready_s"] >= restart["old_broker_exit_s"]
    assert r["broker_rss_connected_mib"] > 0
    assert r["held_socket"] is held
    if held:  # the socket stayed open: no device was refused while no broker ran
        assert r["restart"]["failed_connects"] == {}, r["restart"]
        assert "restart (held socket):" in proc.stdout


async def test_an_idle_device_is_back_only_at_a_welcome_that_accepts_its_signature(
    broker: BrokerProcess,
) -> None:
    """loadtest/idle_device.py, the lean devices of `idle`: a device counts as back at a
    welcome that accepted its credential, whose signature over the broker's nonce the
    broker checked; signed with another key, it is a failed connect (and tries again)."""
    rp = await new_rp(broker)
    async with aiohttp.ClientSession() as http:
        (cred,) = await enroll(http, broker.http_url, broker.ws_url, rp["api_key"], ["alice"])
    welcomed: list[IdleDevice] = []
    failed: list[Exception] = []
    dialer = Dialer(broker.ws_url, welcomed.append, lambda _: None, failed.append, limit=4)
    good = IdleDevice(dialer, cred)
    forged = IdleDevice(dialer, Credential(cred.cid, os.urandom(32), cred.user, cred.public_key))
    good.start()
    forged.start()

    async def both_heard() -> bool:
        return bool(welcomed and failed)

    await until(both_heard, message="a welcome and a refusal")
    dialer.stopped = True
    good.close()
    forged.close()
    assert welcomed == [good]
    assert isinstance(failed[0], LinkError) and "bad_signature" in str(failed[0]), failed


async def test_an_idle_device_refused_is_counted_by_kind_without_a_task_per_attempt() -> None:
    """While no broker listens, an idle device's connects are refused again and again
    (a restart with the port closed: thousands a run). Each is counted as
    create_connection counted it (ConnectionRefusedError) and retried with the backoff;
    after the first, they cost no task (Dialer._probe; docs/performance.md 26)."""
    loop = asyncio.get_running_loop()
    tasks = 0
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal tasks
        tasks += 1
        return factory(loop, coro, **kwargs) if factory else asyncio.Task(coro, loop=loop, **kwargs)

    failed: list[Exception] = []
    dialer = Dialer(f"ws://127.0.0.1:{free_port()}/v1/device", print, print, failed.append, limit=4)
    device = IdleDevice(dialer, Credential("c", os.urandom(32), "u", b""))

    def refused(times: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(failed) >= times

        return check

    try:
        device.start()
        await until(refused(1), message="a refused connect")
        loop.set_task_factory(counting)
        await until(refused(3), message="two more refused connects")
    finally:
        loop.set_task_factory(factory)
        dialer.stopped = True
        device.close()
    assert all(type(exc) is ConnectionRefusedError for exc in failed), failed
    assert tasks == 0


def _gone_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["signin", "--rate", "0"], "rate"),
        (["signin", "--rate", "fast"], "rate"),
        (["signin", "--rate", "1:2:3"], "rate"),
        (["signin", "--duration", "-1"], "duration"),
        (["signin", "--devices", "0"], "devices"),
        (["signin", "--broker-url", "http://192.0.2.1:80", "--api-key", "x"], "127.0.0.1"),
        (["signin", "--broker-url", "http://127.0.0.1:1"], "--api-key"),
        (["signin", "--rate", "10:20", "--warmup", "1"], "ramp"),
        (["signin", "--broker-pid", "1"], "--broker-pid is for --broker-url runs"),
        (["signin", "--broker-url", "http://127.0.0.1:1", "--api-key", "x", "--nodes", "2"], "--nodes"),
        (
            ["signin", "--broker-url", "http://127.0.0.1:1", "--api-key", "x", "--broker-pid", "GONE"],
            "GONE: no such",
        ),
        (["nosuchmode"], "invalid choice"),
        # Each was found only once the run had started: "cannot reach" a port out of range,
        # a path put before /v1/rp, a broker that failed to start (exit 1), a CPU it lacks.
        (["signin", "--broker-url", "http://127.0.0.1:99999", "--api-key", "x"], "127.0.0.1:PORT"),
        (["signin", "--broker-url", "http://127.0.0.1:1/base?x", "--api-key", "x"], "127.0.0.1:PORT"),
        (["signin", "--redis-url", "foo://x"], "bad --redis-url 'foo://x': the scheme must be"),
        (["signin", "--redis-url", "redis://127.0.0.1:1/0?foo=1"], "unknown option 'foo'"),
        (["signin", "--broker-cpus", "4095"], "--broker-cpus: CPU 4095 does not exist here"),
        # A run of no sign-in, a node count twice: "zip() argument 2 is longer than argument 1"
        # once the run was over.
        (["signin", "--rate", "1", "--duration", "0.5", "--warmup", "0"], "makes no sign-in"),
        (["routing", "--nodes", "1,1"], "each node count once"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_started(
    tmp_path: Path, args: list[str], message: str
) -> None:
    if "GONE" in args:  # before anything starts: no device enrolled, no directory made
        gone = str(_gone_pid())
        args, message = [gone if a == "GONE" else a for a in args], message.replace("GONE", gone)
    proc = run(*args, "--out", str(tmp_path / "out"), timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_results_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where a directory must go
    out = tmp_path / "file" / "run"
    proc = run("signin", "--duration", "1", "--rate", "10", "--devices", "1", "--out", str(out), timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (
        proc.stderr.strip() == f"pushauth-loadtest: cannot make the results directory {out}: Not a directory"
    )


def test_a_broker_that_cannot_start_says_why_and_where_its_log_is(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run(
        "signin", "--redis-url", "redis://127.0.0.1:1/0", "--devices", "1", "--out", str(out), timeout=60
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    log = out / "processes" / "broker-n1.log"
    assert "broker-n1 exited with code 2 while starting" in proc.stderr
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in proc.stderr  # the broker's own words
    assert f"log: {log}" in proc.stderr and log.is_file()
    assert f"the run's logs are kept in {out}" in proc.stderr
    assert not (out / "results.json").exists()


def test_help_gives_every_default_the_ranges_and_the_exit_status() -> None:
    proc = run("signin", "--help", timeout=30)
    assert proc.returncode == 0
    for words in ("(default: 200)", "1..64", "0.5..3600", "exit status:", "2    bad arguments"):
        assert words in proc.stdout, words
    # Every option with a default says it, in every mode.
    parser = build_parser()
    modes = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, mode in modes.items():
        text = mode.format_help()
        assert "exit status:" in text, name
        for action in mode._actions:
            if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            option = action.option_strings[-1]
            block = text[text.index(f"  {option} ") :].split("\n  -", 1)[0]
            assert "default" in block, (name, option, block)


def test_the_api_key_is_never_in_the_recorded_command() -> None:
    key = "pak_H82lYewNtNzbsjLKiTthbuY-G_tbyqHp2N6NBV_llAM"
    for given in (["--api-key", key], [f"--api-key={key}"], ["--api-k", key], [f"--api={key}"]):
        shown = command_line(["signin", "--broker-url", "http://127.0.0.1:8700", *given], key)
        assert key not in shown and "pak_..." in shown, shown
    # Other words that merely contain a short key stay as they were.
    assert command_line(["signin", "--devices", "10"], "1") == "pushauth-loadtest signin --devices 10"


def test_a_run_on_a_redis_it_did_not_start_says_its_cpu_is_not_measured() -> None:
    rec = Recorder()
    result = _signin_summary(rec, Profile(10, 10, 1), 0, 1, 1, (), [], [], [])
    result.update(redis_cpu_ms_per_signin=None, generator_cpu_ms_per_signin=1.0)
    table = signin_table(result, "t")
    assert "Redis not measured" in table and "broker CPU not measured" in table


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    from loadtest.cluster import free_port

    url = f"http://127.0.0.1:{free_port()}"
    proc = run("signin", "--broker-url", url, "--api-key", "pak_x", "--out", str(tmp_path / "o"), timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "cannot reach the broker" in proc.stderr
    assert not (tmp_path / "o").exists()  # the failed run left no empty directory


def _signing_in(metrics_port: int) -> bool:
    """The broker node has created challenges: the generator's devices are connected and
    the run is under way (every process of the tester has long finished starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    created = re.search(r"^pushauth_challenges_created_total (\S+)$", text, re.MULTILINE)
    return created is not None and float(created[1]) > 0


def _under_way(tester: int, when: str, metrics_port: int) -> dict[int, str]:
    """The tester's processes once they are there: at "start", its Redis and its broker
    node (starting); in the "run", once sign-ins are being made."""
    found = descendants(tester)
    if not {"redis-server", "pushauth-broker"} <= set(found.values()):
        return {}
    if when == "run" and not _signing_in(metrics_port):
        return {}
    return found


# Ctrl-C at start is not among them: it reaches the whole group, and a Python process
# interrupted while its interpreter starts prints a traceback of Python's own.
@pytest.mark.parametrize(("stop", "when"), [("sigterm", "start"), ("sigterm", "run"), ("ctrl-c", "run")])
def test_a_stopped_run_leaves_nothing_it_started_running(tmp_path: Path, stop: str, when: str) -> None:
    metrics_port = free_port()
    argv: list[str | Path] = [
        LOADTEST, "signin", "--rate", "10", "--duration", "120", "--warmup", "0", "--devices", "2",
        "--workers", "1", "--no-progress", "--out", tmp_path / "run",
        f"--broker-option=--metrics-port={metrics_port}",
    ]  # fmt: skip
    if stop == "ctrl-c":
        argv = interruptible(argv)  # Ctrl-C reaches it whatever this run inherited
    with ManagedProcess(argv, log_dir=tmp_path / "logs", name="loadtest") as tester:
        started = wait_until(
            lambda: _under_way(tester.pid, when, metrics_port), message=f"the tester's processes ({when})"
        )
        assert isinstance(started, dict)
        if stop == "sigterm":  # kill, timeout(1), a cancelled CI job: the tester alone
            tester.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C: the whole foreground process group
            os.killpg(tester.pid, signal.SIGINT)
        code = tester.wait(60)
        left = lambda: {pid: name for pid, name in started.items() if pid_alive(pid)}  # noqa: E731
        wait_until(lambda: not left(), message=lambda: f"the tester's processes to end, left: {left()}")
    assert code == 128 + (signal.SIGTERM if stop == "sigterm" else signal.SIGINT), tester.output()
    assert "Traceback" not in tester.output()


# -- the pure parts --------------------------------------------------------------


@pytest.mark.parametrize(("rate", "duration", "workers"), [(200, 3, 2), (7, 1.5, 3), (1000, 0.5, 4)])
def test_fixed_rate_arrivals_are_evenly_spaced_across_workers(
    rate: float, duration: float, workers: int
) -> None:
    profile = Profile(rate, rate, duration)
    merged = sorted(t for w in range(workers) for _, t in arrivals(profile, w, workers))
    assert len(merged) == int(rate * duration)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(merged)}
    assert gaps == {round(1 / rate, 9)}


def test_ramp_arrivals_speed_up_and_total_the_integral() -> None:
    profile = Profile(100, 300, 10)
    times = [t for _, t in arrivals(profile, 0, 1)]
    assert len(times) == 2000  # (100 + 300) / 2 * 10
    first, last = times[1] - times[0], times[-1] - times[-2]
    assert first == pytest.approx(1 / 100, rel=0.01)
    assert last == pytest.approx(1 / 300, rel=0.01)


def test_parse_rate() -> None:
    assert parse_rate("250") == (250.0, 250.0)
    assert parse_rate("10:2000") == (10.0, 2000.0)
    for bad in ("0", "-5", "x", "1:2:3", "", "60000"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)


def test_recorders_from_several_processes_merge_exactly() -> None:
    a, b = Recorder(), Recorder()
    for i in range(1, 101):
        a.record_result(0, i / 1000)  # 1..100 ms
        b.record_result(1, (100 + i) / 1000)  # 101..200 ms
    a.error("timeout")
    b.error("timeout")
    b.error("create_http_500")
    merged = Recorder()
    merged.merge_wire(a.to_wire())
    merged.merge_wire(b.to_wire())
    hist: HdrHistogram = merged.stages["result"]
    assert hist.get_total_count() == 200 == merged.completed
    assert hist.get_value_at_percentile(50) == pytest.approx(100_000, rel=0.001)
    assert hist.get_max_value() == pytest.approx(200_000, rel=0.001)
    assert sorted(merged.per_second) == [0, 1]
    assert dict(merged.errors) == {"timeout": 2, "create_http_500": 1}


def test_a_users_next_sign_in_goes_to_another_user_while_one_is_open() -> None:
    """A second sign-in of a user with one open would supersede it (one live prompt per
    user and RP): the generator takes the next user without one instead, and says so
    when every user has one open (too few --devices for the rate)."""
    cfg = WorkerConfig("signin", 0, 1, "", "", "", "rp", "key", 3, "run")
    worker = SigninWorker(cfg, http=None, creds=[None] * 3, out=None)  # type: ignore[arg-type, list-item]
    assert [worker._idle_user(n) for n in range(4)] == [0, 1, 2, 0]  # in turn while all are idle
    worker.busy = {1}
    assert [worker._idle_user(n) for n in range(3)] == [0, 2, 2]
    worker.busy = {0, 1, 2}
    assert worker._idle_user(0) is None
