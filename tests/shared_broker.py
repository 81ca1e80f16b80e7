"""A broker shared by the tests of one module, and a fresh RP for each test.

Starting a Redis and a broker per test costs about a second; tests that need
neither a restart nor their own Redis share one. Each test gets its own relying
party, so users and credentials of different tests never meet (RP isolation).
Import both fixtures into the test module: `from shared_broker import broker, rp`;
a test that kills or restarts its broker takes conftest's `own_broker` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support import BrokerProcess, RedisServer, new_rp


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for this module (starting one per test costs seconds); each test
    gets its own RP, so users and credentials never meet across tests."""
    yield from broker_on_own_redis(tmp_path_factory, "shared")


def broker_on_own_redis(tmp_path_factory: pytest.TempPathFactory, node: str) -> Iterator[BrokerProcess]:
    """A broker named `node` on a Redis of its own, for a module-scoped fixture to yield."""
    base = tmp_path_factory.mktemp(f"broker-{node}")
    # No per-address budget for backups and recoveries (1 a second, a burst of 30 for
    # recoveries): every test of the module comes from 127.0.0.1, so the budget would be
    # the whole module's, and a fast run of one that recovers often was refused
    # rate_limited. The per-node limits stay; test_broker_http_guard tests the others.
    no_address_limits = ["--backup-requests-per-ip", "0", "--recovery-requests-per-ip", "0"]
    with RedisServer(base / "redis") as redis_server:
        started = BrokerProcess(
            log_dir=base / "logs", redis_url=redis_server.url, node=node, extra_args=no_address_limits
        ).start()
        yield started
        started.cleanup()


def two_nodes_on_one_redis(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Nodes "a" and "b" sharing one Redis, for a module-scoped fixture to yield (each
    test makes RPs of its own): what holds across nodes is counted in Redis."""
    base = tmp_path_factory.mktemp(name)
    with RedisServer(base / "redis") as server:
        a = BrokerProcess(log_dir=base / "logs", redis_url=server.url, node="a").start()
        b = BrokerProcess(log_dir=base / "logs", redis_url=server.url, node="b").start()
        yield a, b
        a.cleanup()
        b.cleanup()


@pytest.fixture
async def rp(broker: BrokerProcess) -> dict[str, Any]:
    return await new_rp(broker)
