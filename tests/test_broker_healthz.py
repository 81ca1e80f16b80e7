"""GET /healthz takes no API key and checks Redis with a write: an anonymous client must
not be able to make the node write to Redis as fast as it sends requests (DESIGN
invariant 13). One check runs at a time and its result answers for health.FRESH_S, and
/healthz still follows Redis going away and coming back."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable

import redis
from support import BROKER, BrokerProcess, RedisServer, run_cli, wait_until

from broker.health import FRESH_S
from broker.versions import API_VERSION
from protocol import SUBPROTOCOLS

PIPELINED = 300
MARKER = "pa:health:~marker"  # written by the test itself: all notifications before it are read


def pipelined_healthz(broker: BrokerProcess, count: int) -> list[int]:
    """`count` GET /healthz on one connection, sent at once; their statuses in order."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n" * count)
        data = b""
        while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"}"):
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {data.count(b'HTTP/1.1 ')} answers"
            data += chunk
    return [int(part.split(b" ", 1)[0]) for part in data.split(b"HTTP/1.1 ")[1:]]


def health_writes(pubsub: redis.client.PubSub, client: redis.Redis) -> int:
    """The writes of a health key notified since the last call (a marker write of our own
    comes after them all: one connection's notifications arrive in order)."""
    client.set(MARKER, "1")
    writes = 0
    while True:
        message = pubsub.get_message(timeout=30)
        assert message is not None, "no keyspace notification of the marker"
        if message["type"] != "pmessage":
            continue
        if message["channel"].endswith(MARKER.encode()):
            return writes
        writes += message["data"] == b"set"


def test_anonymous_healthz_requests_do_not_each_write_to_redis(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(redis_url=redis_server.url, node="a")
    client = redis_server.client()
    client.config_set("notify-keyspace-events", "K$")
    pubsub = client.pubsub()
    pubsub.psubscribe("__keyspace@0__:pa:health:*")
    health_writes(pubsub, client)

    started = time.monotonic()
    statuses = pipelined_healthz(broker, PIPELINED)
    elapsed = time.monotonic() - started
    assert statuses == [200] * PIPELINED
    # At most one check per FRESH_S, plus the one under way at each end: a bound that
    # grows with the time taken, so a slow machine cannot fail it (one write per request,
    # 300, would need over a minute for 300 requests to pass).
    writes = health_writes(pubsub, client)
    assert writes <= 2 + elapsed / FRESH_S, (writes, elapsed)

    # Still a health check: it follows Redis away and back.
    redis_server.kill()
    wait_until(lambda: broker.health()[0] == 503, message="/healthz 503 with Redis gone")
    assert broker.health()[1]["code"] == "unavailable"
    redis_server.restart()
    wait_until(lambda: broker.health()[0] == 200, message="/healthz 200 with Redis back")


def test_healthz_and_version_say_what_the_node_runs(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """The three versions that decide whether two releases serve together (docs/
    operations.md, "Upgrading and rolling back"): a running node says those it runs, the
    CLI those of the installed files, and the OpenAPI document the same API version."""
    broker = broker_factory(redis_url=redis_server.url, node="a")
    with urllib.request.urlopen(broker.http_url + "/healthz", timeout=30) as resp:
        health = json.load(resp)
    assert health["versions"] == {"api": API_VERSION, "protocol": list(SUBPROTOCOLS), "layout": 3}
    with urllib.request.urlopen(broker.http_url + "/v1/openapi.json", timeout=30) as resp:
        assert json.load(resp)["info"]["version"] == API_VERSION
    line = run_cli([BROKER, "--version"]).stdout.strip()
    assert line.startswith("pushauth-broker "), line
    assert line.endswith(f"(RP API {API_VERSION}, device protocol pushauth.v2, key layout 3)"), line
