"""Fixtures for every test: real Redis servers, broker processes, a private HOME.

Everything a test starts is ended when the test ends, pass or fail, and the output
of its processes is shown when it fails (a "process NAME" section in the report).
The logs of a failed test (its processes' output, the *.log files in its tmp dir,
and for a browser test a screenshot, the page and its console) are kept under
artifacts/failed/<test id>/, and the run ends by naming each failed test and that
directory, so a red CI run can be diagnosed from its output alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from support import FAILED_DIR, BrokerProcess, ManagedProcess, RedisServer, TcpProxy, new_rp_sync
from support.redis_cluster import RedisCluster

from relying_party.sdk import PushAuthClient

# The property tests draw the same examples in every run, as the OpenAPI fuzz test runs
# with a fixed seed: a case found by chance must not turn one CI run red and the next
# green (a fresh clone has no Hypothesis database to replay it from; it happened once, to
# test_fuzz_frames_with_fields_replaced). To look for new cases, draw fresh ones:
# `HYPOTHESIS_PROFILE=explore make test` (README, "Tests"), and pin what is found with
# @example.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

pytest_plugins = ["pytester"]  # tests/support tests check the fixtures in a child pytest run


_FIRST_START = pytest.StashKey[int]()  # ManagedProcess.history length when a test began


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_START] = len(ManagedProcess.history)
    # An event loop marked as running between tests breaks every async test after it,
    # far from its cause: name the cause instead (Playwright's sync API does this
    # while it lives, see the browser fixture in tests/browser/conftest.py).
    if asyncio._get_running_loop() is not None and not item.nodeid.startswith("tests/browser/"):
        raise RuntimeError(
            "an event loop is still marked as running in this thread, left by an earlier test "
            "(a Playwright sync API session that outlived its module?): async tests cannot run"
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # On failure, attach the output of every process the test ran, and of shared ones
    # still running: made here, before teardown stops the fixtures' processes.
    report = yield
    ran = ManagedProcess.history[item.stash.get(_FIRST_START, 0) :]
    if report.failed and report.when in ("setup", "call"):
        shown = dict.fromkeys([*ran, *sorted(ManagedProcess.live, key=lambda p: p.name)])
        for proc in shown:
            shared = "" if proc in ran else ", shared"
            report.sections.append((f"process {proc.name}{shared}", proc.describe()))
        item.stash[_KEPT] = list(shown)
    if report.failed or (report.when == "teardown" and _KEPT in item.stash):
        # Copied when the test fails (a browser page is still open then), and again
        # after teardown, when its processes have been stopped and their logs are whole.
        where = _keep_artifacts(item, report, [*item.stash.get(_KEPT, []), *ran])
        if report.failed:
            report.sections.append(("kept logs", str(where)))
            if report.when in ("setup", "call"):
                item.stash[FAILED_DIR] = where  # fixtures' teardowns add to it
        prop = ("artifacts", _shown_path(item.config, where))
        if prop not in item.user_properties:
            item.user_properties.append(prop)  # on the teardown report too: junit XML shows it
        if prop not in report.user_properties:
            report.user_properties.append(prop)  # travels to the xdist controller
    return report


# -- logs of failed tests ------------------------------------------------------

_KEPT = pytest.StashKey[list[ManagedProcess]]()  # the processes a failed test showed
_STARTED = pytest.StashKey[bool]()  # this run has begun the test's artifacts dir
_LOG_FILE_LIMIT = 20 * 1024 * 1024  # keep the tail of anything bigger


def artifacts_dir(config: pytest.Config, nodeid: str) -> Path:
    """Where the logs of the failed test `nodeid` are kept: artifacts/failed/<id>/."""
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", nodeid.replace("::", "__")).strip("_")
    if len(name) > 120:  # file names have limits; the hash keeps long ids apart
        name = f"{name[:100]}-{hashlib.sha1(nodeid.encode()).hexdigest()[:12]}"
    return config.rootpath / "artifacts" / "failed" / name


def _shown_path(config: pytest.Config, path: Path) -> str:
    """Relative to the project's root (where `make test` runs), else absolute."""
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def _keep_artifacts(item: pytest.Item, report: pytest.TestReport, procs: list[ManagedProcess]) -> Path:
    dest = artifacts_dir(item.config, item.nodeid)
    if _STARTED not in item.stash:
        item.stash[_STARTED] = True
        shutil.rmtree(dest, ignore_errors=True)  # an earlier run's
    dest.mkdir(parents=True, exist_ok=True)
    if report.failed:
        with (dest / "report.txt").open("a") as out:
            out.write(f"{item.nodeid}\nfailed in {report.when}\n\n{report.longreprtext}\n\n")
            for proc in dict.fromkeys(procs):
                out.write(f"process {proc.name}:\n$ {' '.join(proc.argv)}\nexit status {proc.poll()}\n")
                out.write(f"logs: {proc.stdout_path}, {proc.stderr_path}\n\n")
        if report.when in ("setup", "call"):
            _keep_browser_state(item, dest)
    copied: set[Path] = set()
    for number, proc in enumerate(dict.fromkeys(procs), 1):
        for log in (proc.stdout_path, proc.stderr_path):
            _copy_log(log, dest / "processes" / f"{number:02d}-{log.name}")
            copied.add(log.resolve())
    tmp_path = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if isinstance(tmp_path, Path) and tmp_path.is_dir():
        for log in sorted(tmp_path.rglob("*.log")):
            if log.is_file() and log.resolve() not in copied:
                _copy_log(log, dest / "tmp" / log.relative_to(tmp_path))
    return dest


def _copy_log(src: Path, dest: Path) -> None:
    try:
        size = src.stat().st_size
        dest.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as file, dest.open("wb") as out:
            if size > _LOG_FILE_LIMIT:
                file.seek(size - _LOG_FILE_LIMIT)
                out.write(b"[... earlier output cut ...]\n")
            shutil.copyfileobj(file, out)
    except OSError:
        pass  # never started, or removed by the test itself: nothing to keep


def _keep_browser_state(item: pytest.Item, dest: Path) -> None:
    """A failed browser test: each open page's screenshot, HTML and console messages."""
    for name, value in getattr(item, "funcargs", {}).items():
        if not (hasattr(value, "screenshot") and hasattr(value, "content") and hasattr(value, "url")):
            continue  # not a Playwright page
        try:
            value.screenshot(path=str(dest / f"{name}.png"), full_page=True, timeout=10_000)
            (dest / f"{name}.html").write_text(f"<!-- {value.url} -->\n{value.content()}")
            messages = getattr(value, "console_messages", lambda: [])()
            (dest / f"{name}.console.txt").write_text(
                "".join(f"{m.type}: {m.text}\n" for m in messages) or "(no console messages)\n"
            )
        except Exception as exc:  # noqa: BLE001 - a closed or crashed page must not hide the failure
            (dest / f"{name}.error.txt").write_text(f"could not keep the page: {exc!r}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Iterator[None]:
    """The run's last words: each failed test and where its logs are (on the xdist
    controller too: the reports arrive there, the workers wrote the logs).

    A wrapper around the terminal reporter's own, so it comes after the short summary
    (-ra), right before pytest's closing line."""
    yield
    failed: dict[str, str] = {}
    for key in ("failed", "error"):
        for report in terminalreporter.stats.get(key, []):
            nodeid = getattr(report, "nodeid", "") or "(collection)"
            kept = dict(getattr(report, "user_properties", ()) or ()).get("artifacts")
            if kept or nodeid not in failed:
                failed[nodeid] = kept or ""
    if not failed:
        return
    terminalreporter.section("failed tests and their kept logs", sep="=", red=True, bold=True)
    for nodeid, kept in failed.items():
        where = f"logs: {kept}/" if kept else "no logs kept (failed outside a test)"
        terminalreporter.line(f"FAILED {nodeid}  {where}")
    terminalreporter.line(
        "Each logs dir has report.txt (the failure), processes/ (broker, Redis, agent, web output), "
        "tmp/ (the test's *.log files) and, for browser tests, a screenshot, the page and its console."
    )


@pytest.fixture(autouse=True)
def _end_processes() -> Iterator[None]:
    """Whatever process a test started and left running ends with the test."""
    before = set(ManagedProcess.live)
    yield
    for proc in [p for p in ManagedProcess.live if p not in before]:
        proc.cleanup()


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME (and XDG dirs), so nothing reads or writes the real user's files.

    Set in os.environ, so subprocesses started by the test inherit it too.
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_RUNTIME_DIR", "run"),
    ):
        path = home / sub
        path.mkdir(parents=True, mode=0o700)
        monkeypatch.setenv(var, str(path))
    return home


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty, non-persistent Redis on a free port."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real Redis Cluster (three masters, a replica each), once per test module: it
    costs seconds. A test that kills or fails over nodes heals it before it ends."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start more Redis servers: `redis_factory(appendonly=True)`; all cleaned up."""
    servers: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis-{len(servers) + 1}", name=f"redis-{len(servers) + 1}", **kwargs
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Start broker nodes: `broker_factory(redis_url=..., node="a")`; all cleaned up."""
    brokers: list[BrokerProcess] = []

    def start(**kwargs: Any) -> BrokerProcess:
        kwargs.setdefault("log_dir", tmp_path / "logs")
        broker = BrokerProcess(**kwargs)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.cleanup()


@pytest.fixture
def own_broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> BrokerProcess:
    """One broker node on its own Redis, ready to serve: for a test that kills or
    restarts it, also in a module whose other tests share one (tests/shared_broker.py)."""
    return broker_factory(redis_url=redis_server.url, data_dir=tmp_path / "broker-data", node="a")


@pytest.fixture
def broker(own_broker: BrokerProcess) -> BrokerProcess:
    """The test's broker: its own here; tests/shared_broker.py has one per module."""
    return own_broker


@pytest.fixture
def rp(broker: BrokerProcess) -> dict[str, Any]:
    """A relying party registered at `broker`: {"id", "name", "api_key"}. Synchronous,
    for the browser tests' sync Playwright too."""
    return new_rp_sync(broker, "Example RP")


@pytest.fixture
async def client(broker: BrokerProcess, rp: dict[str, Any]) -> AsyncIterator[PushAuthClient]:
    """The RP SDK for `rp` at `broker` (whichever `broker` and `rp` the module uses)."""
    async with PushAuthClient(broker.http_url, rp["api_key"]) as sdk:
        yield sdk


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """Start TCP proxies (load balancer stand-ins): `tcp_proxy([port_a, port_b])`."""
    proxies: list[TcpProxy] = []

    def start(backends: list[Any]) -> TcpProxy:
        proxy = TcpProxy(backends)
        proxies.append(proxy)
        return proxy.start()

    yield start
    for proxy in proxies:
        proxy.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle",
        metavar="SEED",
        type=int,
        default=None,
        help="run the test files, and the tests in each file, in an order drawn from SEED "
        "(finds tests that depend on another's order or leftovers; see `make stress SHUFFLE=1`)",
    )


@pytest.hookimpl(trylast=True)  # after pytest's own ordering, so the shuffle is not undone
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle", None)
    if seed is not None:
        # The same seed gives every xdist worker the same order, as xdist requires.
        rng = random.Random(seed)
        by_file: dict[Path, list[pytest.Item]] = {}
        for item in items:
            by_file.setdefault(item.path, []).append(item)
        files = list(by_file.values())
        rng.shuffle(files)
        for tests in files:
            rng.shuffle(tests)
        items[:] = [item for tests in files for item in tests]
    elif hasattr(config, "workerinput"):
        # An xdist worker: with --no-loadscope-reorder (the Makefile's XDIST) the scheduler
        # hands each free worker the next file in this order, so the longest go first and
        # the short ones fill in at the end. In xdist's own order (most tests first) the
        # three browser files, 100 s each, came last and ran while the other workers idled.
        seconds = _file_seconds()
        items.sort(key=lambda item: -seconds.get(item.nodeid.split("::", 1)[0], 0.0))
    if not hasattr(config, "workerinput"):
        # Browser tests last in a serial run, as before this order existed.
        items.sort(key=lambda item: item.nodeid.startswith("tests/browser/"))


def _file_seconds() -> dict[str, float]:
    """Each test file's seconds in a measured run (scripts/test-file-seconds writes them);
    a file not measured yet counts as 0 s, and so does every file where none were (a
    child pytest run of tests/support/test_support.py has this conftest but not the file)."""
    path = Path(__file__).parent / "file_seconds.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}
