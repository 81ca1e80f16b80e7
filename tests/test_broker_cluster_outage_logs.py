"""A whole Redis Cluster down: redis-py's cluster client logs "Topology refresh
failed, keeping the current one" each time it fails to re-read the slot map (about
once a second per worker process), at ERROR. The broker reports the outage its own
way, so these lines go out at WARNING, the first at once and then one a minute with
the count held back (broker/logs.py RepeatFilter); with --log-level DEBUG the held
ones are at DEBUG. Checked on a real cluster whose six nodes are killed under a
broker with two workers, and the filter's counting on its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from support import BrokerProcess, http_status, wait_until
from support.redis_cluster import RedisCluster

from broker.logs import REDIS_CLUSTER_LOGGERS, TOPOLOGY_REFRESH_FAILED, RepeatFilter

HELD_SEEN = 2  # refresh failures per worker logged at DEBUG (held back) before the test checks


def test_the_filter_lets_one_line_a_minute_out_at_warning_with_the_count() -> None:
    now = [100.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.repeat_filter")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.addFilter(RepeatFilter(TOPOLOGY_REFRESH_FAILED, every_s=60, clock=lambda: now[0]))
    try:
        for step in (0, 1, 1, 30, 27.9, 0.2, 1):  # seconds between failures
            now[0] += step
            logger.error(f"{TOPOLOGY_REFRESH_FAILED}, keeping the current one: refused")
        logger.error("another error")
    finally:
        logger.removeHandler(handler)
    # At 100 and 160.1 (60 s after the first: the 4 between held back), not at 161.1.
    assert [(r.levelname, r.getMessage().removeprefix(TOPOLOGY_REFRESH_FAILED)) for r in records] == [
        ("WARNING", ", keeping the current one: refused"),
        ("WARNING", ", keeping the current one: refused (and 4 more like it in the last 60 s)"),
        ("ERROR", "another error"),
    ]
    assert records[1].repeats == 4  # type: ignore[attr-defined]


def test_a_whole_cluster_outage_is_not_an_error_a_second(
    redis_cluster: RedisCluster, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(
        redis_url=redis_cluster.url,
        node="o",
        extra_args=["--workers", "2", "--log-format", "json", "--log-level", "DEBUG"],
    )
    wait_until(lambda: "(2 workers)" in broker.stdout(), message="both workers ready")
    try:
        for node in redis_cluster.nodes:
            node.kill()

        def refresh_lines() -> list[dict[str, Any]]:
            lines = (json.loads(x) for x in broker.stderr().splitlines() if x.startswith("{"))
            return [
                x
                for x in lines
                if x["logger"] in REDIS_CLUSTER_LOGGERS and x["event"].startswith(TOPOLOGY_REFRESH_FAILED)
            ]

        def held_by_each() -> bool:
            # Asked as a load balancer's checks ask (the refreshes follow commands).
            http_status(f"{broker.http_url}/healthz")
            lines = refresh_lines()
            if any(x["level"] not in ("WARNING", "DEBUG") for x in lines):
                return True  # (the assertions below say what)
            return all(
                sum(1 for x in lines if x["node"] == worker and x["level"] == "DEBUG") >= HELD_SEEN
                for worker in ("o-w0", "o-w1")
            )

        # Several failures per worker, each logged (at DEBUG: held back) ...
        wait_until(
            held_by_each, interval=0.25, message=lambda: f"held-back refresh failures: {refresh_lines()}"
        )
        lines = refresh_lines()
        # ... and only the first of each worker's at WARNING, none at ERROR.
        for worker in ("o-w0", "o-w1"):
            levels = [x["level"] for x in lines if x["node"] == worker]
            assert levels[0] == "WARNING" and set(levels[1:]) == {"DEBUG"}, lines
    finally:
        redis_cluster.heal()
