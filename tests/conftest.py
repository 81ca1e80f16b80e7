"""Fixtures for every test: real Redis servers, broker processes, a private HOME.

Everything a test starts is ended when the test ends, pass or fail, and the output
of its processes is printed when it fails (pytest shows it under "Captured stdout").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import BrokerProcess, ManagedProcess, RedisServer, TcpProxy

pytest_plugins = ["pytester"]  # tests/support tests check the fixtures in a child pytest run


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keep each phase's report on the item, so fixtures can tell a failed test at teardown.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture(autouse=True)
def _end_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever process a test started and left running ends with the test."""
    before = set(ManagedProcess.live)
    yield
    started = [p for p in ManagedProcess.live if p not in before]
    if _failed(request):
        # Shared ones (from module fixtures) too: their log tail often explains the failure.
        for proc in sorted(ManagedProcess.live, key=lambda p: p.name):
            shared = "" if proc in started else " (shared, still running)"
            print(f"\n===== {proc.name}{shared} =====\n{proc.describe()}")
    for proc in started:
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
