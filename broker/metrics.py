"""Prometheus metrics of one broker process, served on their own listener (`serve
--metrics-port`, loopback by default: see docs/operations.md).

The hot path (create, deliver, answer, long-poll) pays for what it counts and nothing
more: what it touches is bound once, here, at import (no label lookup per request),
and is a plain single-thread count (`Tally`, `Spread`: an addition, or a bisect and
two), read by `HotCollector` when Prometheus scrapes, on the same event loop. Rarer
counts (errors, refusals) are prometheus-client Counters. What can be read off the
node's own state (devices, credentials and challenges held, long-polls, the event
listener's counts) is read only at scrape, by `NodeCollector`.
`scripts/metrics-cost` measures what a sign-in pays.

Stage latencies are measured on one node with its monotonic clock, except the first
stage of a challenge created on another node, which can only be measured from its
creation time (wall clock, milliseconds): the nodes' clocks must agree (NTP).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from protocol.challenge import Status

from . import clock
from .clock import now_ms
from .events import ChallengeCreated, ChallengeEnded, ChallengesEnded, Event

if TYPE_CHECKING:
    from .connections import ConnectionGate
    from .event_listener import EventListener
    from .hub import Hub
    from .models import ChallengeRecord

disable_created_metrics()  # no *_created series: each would double the exposition for nothing
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds

# -- the hot path's own counts ------------------------------------------------------


class Tally:
    """A counter for the event loop's thread alone: `inc` is one addition. (A
    prometheus-client Counter takes a lock per increment, for threads the broker
    does not have; read here by `HotCollector` at scrape, on the same thread.)"""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Spread:
    """A histogram for the event loop's thread alone: `observe` is a bisect and two
    additions (0.4 us here, against 1.4 us for prometheus-client's, with its locks)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: "le"
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = list(accumulate(self.counts))
        return [*zip(map(floatToGoString, self.bounds), cumulative, strict=False), ("+Inf", cumulative[-1])]


# Outcomes of sign-ins: each end counted once, by the node that recorded it.
SIGNIN_OUTCOME = {s: Tally() for s in Status if s not in (Status.PENDING, Status.UNKNOWN)}
_SIGNIN_REFUSED = {"blocked": Tally(), "rate_limited": Tally()}  # refused before any push
CHALLENGES_CREATED = Tally()

# Seconds; the answer stage includes the person reading and typing.
_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HUMAN = (0.005, 0.025, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STAGE_BOUNDS = tuple(sorted({*_FAST, *_HUMAN}))
STAGE_DELIVERED = Spread(_STAGE_BOUNDS)
STAGE_ANSWERED = Spread(_STAGE_BOUNDS)
STAGE_RESULT = Spread(_STAGE_BOUNDS)
EVENT_LAG = Spread(_FAST)


class HotCollector(Collector):
    """The hot path's tallies and spreads as Prometheus metrics, at scrape time."""

    def collect(self) -> Iterator[Metric]:
        signins = CounterMetricFamily(
            "pushauth_signins",
            "Sign-in challenges ended, by outcome, counted by the node that recorded the end (for an "
            "answer: the device's node); blocked and rate_limited: refused before a push was sent",
            labels=["outcome"],
        )
        for status, tally in SIGNIN_OUTCOME.items():
            signins.add_metric([status.value], tally.value)
        for outcome, tally in _SIGNIN_REFUSED.items():
            signins.add_metric([outcome], tally.value)
        yield signins
        yield CounterMetricFamily(
            "pushauth_challenges_created",
            "Sign-in challenges created on this node and sent",
            value=CHALLENGES_CREATED.value,
        )
        stages = HistogramMetricFamily(
            "pushauth_signin_stage_seconds",
            "Time of each stage of a sign-in on this node: delivered: created -> challenge frame written "
            "to the first device here (live pushes, not the backlog of a device coming online); answered: "
            "delivered -> the device's answer verified here (includes the person); result: answered -> "
            "the RP's long-poll answered (recorded in Redis, announced; when the answer arrived at the "
            "long-poll's node)",
            labels=["stage"],
        )
        for stage, spread in (
            ("delivered", STAGE_DELIVERED), ("answered", STAGE_ANSWERED), ("result", STAGE_RESULT)
        ):  # fmt: skip
            stages.add_metric([stage], spread.buckets(), spread.sum)
        yield stages
        lag = HistogramMetricFamily(
            "pushauth_event_lag_seconds",
            "From a challenge's creation on another node to this node handling its event (pub/sub lag "
            "plus the creating node's own work; wall clocks of both nodes)",
        )
        lag.add_metric([], EVENT_LAG.buckets(), EVENT_LAG.sum)
        yield lag


REGISTRY.register(HotCollector())

# -- errors and refusals -----------------------------------------------------------

_REDIS_ERRORS = Counter(
    "pushauth_redis_errors",
    "Redis failures seen on this node: api (a request answered 503), device (a device frame, "
    "connection closed 1011), expiry (a challenge's expiry timer), events (the event channel lost)",
    ["where"],
    registry=REGISTRY,
)
REDIS_ERRORS_API = _REDIS_ERRORS.labels("api")
REDIS_ERRORS_DEVICE = _REDIS_ERRORS.labels("device")
REDIS_ERRORS_EXPIRY = _REDIS_ERRORS.labels("expiry")
REDIS_ERRORS_EVENTS = _REDIS_ERRORS.labels("events")

_REJECTED = Counter(
    "pushauth_http_rejected",
    "HTTP requests answered with a problem document, by status and problem code",
    ["status", "code"],
    registry=REGISTRY,
)
_rejected_children: dict[tuple[int, str], Counter] = {}
SILENT_CONNECTIONS = Counter(
    "pushauth_http_silent_connections",
    "Connections closed at --head-timeout without having sent a byte: connections opened "
    "ahead of need (browsers' preconnect, load balancers, the load tester's prewarm) and "
    "left unused, or a slow-loris; not counted as rejected requests",
    registry=REGISTRY,
)

_DEVICE_ERRORS = Counter(
    "pushauth_device_errors",
    "Device frames refused (an error frame or a close), by protocol error code",
    ["code"],
    registry=REGISTRY,
)
_device_error_children: dict[str, Counter] = {}

_WEBPUSH_WAKEUPS = Counter(
    "pushauth_webpush_wakeups",
    "Web Push decisions for a new challenge, per subscribed credential: sent (pushed, the "
    "push service took it), connected (no push: a connection is live on some node), failed "
    "(the push service refused or could not be reached), gone (the push service said the "
    "subscription no longer exists: it is removed)",
    ["outcome"],
    registry=REGISTRY,
)
WEBPUSH_SENT = _WEBPUSH_WAKEUPS.labels("sent")
WEBPUSH_CONNECTED = _WEBPUSH_WAKEUPS.labels("connected")
WEBPUSH_FAILED = _WEBPUSH_WAKEUPS.labels("failed")
WEBPUSH_GONE = _WEBPUSH_WAKEUPS.labels("gone")


def rejected(status: int, code: str) -> None:
    """Count one problem response (not the hot path: a refusal already costs more)."""
    child = _rejected_children.get((status, code))
    if child is None:
        if len(_rejected_children) > 200:  # codes are ours, but keep the label set bounded anyway
            code = "other"
        child = _rejected_children.setdefault((status, code), _REJECTED.labels(str(status), code))
    child.inc()


def device_error(code: str) -> None:
    child = _device_error_children.get(code)
    if child is None:
        child = _device_error_children.setdefault(code, _DEVICE_ERRORS.labels(code))
    child.inc()


# -- events this node publishes ------------------------------------------------------


def count_event(event: Event) -> None:
    """Called for each event this node published (store.on_event): so every outcome is
    counted once, by the node that wrote it."""
    cls = type(event)
    if cls is ChallengeEnded:
        SIGNIN_OUTCOME[event.status].inc()  # type: ignore[union-attr]
    elif cls is ChallengeCreated:
        CHALLENGES_CREATED.inc()
    elif cls is ChallengesEnded:
        SIGNIN_OUTCOME[event.status].inc(len(event.chs))  # type: ignore[union-attr]


def signin_refused(code: str) -> None:
    """A challenge refused by the fatigue policy (fatigue.PushRefused.code)."""
    outcome = "blocked" if code == "push_blocked" else code
    tally = _SIGNIN_REFUSED.get(outcome)
    if tally is None:
        tally = _SIGNIN_REFUSED.setdefault(outcome, Tally())
    tally.inc()


# -- stage timing (called on the hot path) ------------------------------------------

perf = time.perf_counter


def delivered(record: ChallengeRecord) -> None:
    """The first challenge frame for `record` was written to a device on this node."""
    if record.delivered_at:
        return
    now = perf()
    record.delivered_at = now
    if record.created_at:
        STAGE_DELIVERED.observe(now - record.created_at)
    else:  # created on another node: only its wall-clock creation time is known
        STAGE_DELIVERED.observe(max(0.0, (now_ms() - record.created) / 1000))


def answered(record: ChallengeRecord) -> None:
    now = perf()
    record.answered_at = now
    if record.delivered_at:
        STAGE_ANSWERED.observe(now - record.delivered_at)


def result_sent(record: ChallengeRecord | None) -> None:
    if record is not None and record.answered_at:
        STAGE_RESULT.observe(perf() - record.answered_at)


def event_lag(created_ms: int) -> None:
    EVENT_LAG.observe(max(0.0, (now_ms() - created_ms) / 1000))


# -- read at scrape time ---------------------------------------------------------------


class NodeCollector(Collector):
    """Gauges and counts that the node keeps anyway, read when Prometheus asks."""

    def __init__(
        self, node: str, hub: Hub, listener: EventListener, gate: ConnectionGate | None = None
    ) -> None:
        self.node = node
        self.hub = hub
        self.listener = listener
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        hub, listener = self.hub, self.listener
        info = GaugeMetricFamily(
            "pushauth_node", "This broker process (1), named by its node", labels=["node"]
        )
        info.add_metric([self.node], 1)
        yield info
        yield GaugeMetricFamily(
            "pushauth_devices_connected", "Device WebSockets open on this node", value=len(hub.sockets)
        )
        yield GaugeMetricFamily(
            "pushauth_credentials_online",
            "Credentials authenticated on a device connection of this node",
            value=len(hub.by_cid),
        )
        yield GaugeMetricFamily(
            "pushauth_users_online", "Users (RP, user) with a device on this node", value=len(hub.by_user)
        )
        yield GaugeMetricFamily(
            "pushauth_challenges_pending",
            "Challenges created on this node that have not ended yet",
            value=len(hub.live),
        )
        yield GaugeMetricFamily(
            "pushauth_long_polls",
            "RP long-polls waiting on this node for a result or an enrollment",
            value=sum(map(len, hub.result_waiters.values())) + sum(map(len, hub.enrollment_waiters.values())),
        )
        healthy, _ = listener.health()
        yield GaugeMetricFamily(
            "pushauth_event_channel_subscribed",
            "1 while this node is subscribed to its event channels",
            value=1 if listener.subscribed and healthy else 0,
        )
        yield GaugeMetricFamily(
            "pushauth_clock_offset_seconds",
            "This host's clock minus Redis's, which the broker keeps time by (broker/clock.py): "
            "beyond a second or two, this host's NTP is broken",
            value=clock.host_offset_ms() / 1000,
        )
        down = 0.0 if listener.down_since is None else time.monotonic() - listener.down_since
        yield GaugeMetricFamily(
            "pushauth_event_channel_down_seconds", "How long the node has been unsubscribed now", value=down
        )
        yield CounterMetricFamily(
            "pushauth_event_channel_resubscriptions",
            "Times the node subscribed again after losing the event channel",
            value=max(0, listener.subscriptions - 1),
        )
        yield CounterMetricFamily(
            "pushauth_event_channel_malformed",
            "Messages on the event channel skipped as malformed or not usable",
            value=listener.bad_events,
        )
        yield CounterMetricFamily(
            "pushauth_events_received",
            "Event messages this node received from Redis (its own included): what routing events "
            "to the nodes that need them keeps constant per sign-in as nodes are added",
            value=hub.channels.received,
        )
        yield GaugeMetricFamily(
            "pushauth_event_channels",
            "User event channels this node listens on (devices here, challenges and long-polls)",
            value=hub.channels.channels(),
        )
        yield CounterMetricFamily(
            "pushauth_event_channel_catch_ups",
            "Catch-ups from Redis completed after a resubscription",
            value=listener.catch_ups,
        )
        store = listener.store
        if store.clustered:
            # Availability first: such a write is served, not refused, so this counter (and
            # a log line a minute) is how an operator learns a master runs without a replica.
            yield CounterMetricFamily(
                "pushauth_redis_unreplicated_writes",
                "Redis Cluster: durable writes (creations, enrollments, revocations) that no replica "
                "confirmed within the WAIT bound, so they are on the master only",
                value=store.pipe.unreplicated,  # type: ignore[union-attr]  # a ClusterPipe
            )
        if self.gate is not None:
            yield GaugeMetricFamily(
                "pushauth_http_connections",
                "HTTP connections open on this node (device WebSockets until they prove a credential)",
                value=self.gate.open,
            )
            refused = CounterMetricFamily(
                "pushauth_http_connections_refused",
                "Connections refused before their request was read: per_ip (too many open from one "
                "address, --http-connections-per-ip), node (--http-connections)",
                labels=["limit"],
            )
            for limit, count in self.gate.refused.items():
                refused.add_metric([limit], count)
            yield refused
            yield CounterMetricFamily(
                "pushauth_http_connections_evicted",
                "Unproven connections closed to make room on a full node for a client holding fewer "
                "(the oldest of the address holding most)",
                value=self.gate.evicted,
            )
            yield CounterMetricFamily(
                "pushauth_http_write_timeouts",
                "Connections dropped because the client read none of a response for --write-timeout",
                value=self.gate.write_timeouts,
            )


# -- the listener ------------------------------------------------------------------------


def metrics_app(
    node: str, hub: Hub, listener: EventListener, gate: ConnectionGate | None = None
) -> web.Application:
    """GET /metrics (text exposition format); nothing else on this port."""
    REGISTRY.register(NodeCollector(node, hub, listener, gate))

    async def handler(_request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app
