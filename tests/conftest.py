"""Fixtures for every test: real Redis servers, broker processes, a private HOME.

Everything a test starts is ended when the test ends, pass or fail, and the output
of its processes is shown when it fails (a "process NAME" section in the report).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import BrokerProcess, ManagedProcess, RedisServer, TcpProxy

from relying_party.sdk import PushAuthClient

pytest_plugins = ["pytester"]  # tests/support tests check the fixtures in a child pytest run


_FIRST_START = pytest.StashKey[int]()  # ManagedProcess.history length when a test began


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_START] = len(ManagedProcess.history)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # On failure, attach the output of every process the test ran, and of shared ones
    # still running: made here, before teardown stops the fixtures' processes.
    report = yield
    if report.failed and report.when in ("setup", "call"):
        ran = ManagedProcess.history[item.stash.get(_FIRST_START, 0) :]
        shown = dict.fromkeys([*ran, *sorted(ManagedProcess.live, key=lambda p: p.name)])
        for proc in shown:
            shared = "" if proc in ran else ", shared"
            report.sections.append((f"process {proc.name}{shared}", proc.describe()))
    return report


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
def broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> BrokerProcess:
    """One broker node on its own Redis, ready to serve."""
    return broker_factory(redis_url=redis_server.url, data_dir=tmp_path / "broker-data", node="a")


@pytest.fixture
def rp(broker: BrokerProcess) -> dict[str, Any]:
    """A relying party registered at `broker`: {"id", "name", "api_key"}."""
    return broker.add_rp("Example RP")


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests last: Playwright's browser session lives until the end of the
    # run, and nothing else should run beside it.
    items.sort(key=lambda item: item.nodeid.startswith("tests/browser/"))
