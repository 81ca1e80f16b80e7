"""A broker node's death under load, through a real HAProxy: what
tests/test_haproxy_failover.py asserts on and docs/performance.md measures.

Real parts only: a Redis of its own, broker nodes as `pushauth-broker serve`
subprocesses (`--trusted-proxy 127.0.0.1`), haproxy running a loopback rendering of a
config file (support/haproxy.py), simulated devices from the load tester (real Ed25519
keys on real WebSockets, through HAProxy, reconnecting as the agent does), and the RP
SDK (`create_challenge`, then `wait_result`, which verifies every answer end to end).

Sign-ins start at a fixed rate, each for a user with no sign-in in flight (a second
one would supersede the first: an outcome of the test, not of the balancer). In the
middle an action runs (SIGKILL or SIGTERM of a node); every sign-in's outcome is
counted with its start and end time, so a run says how many RP requests failed, how,
and for how long after the action.

As a command, the before/after measurement of docs/performance.md:

    PYTHONPATH=tests .venv/bin/python -m support.failover --config deploy/haproxy.cfg
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.device import Credential, DeviceLink, enroll
from protocol.codec import encode
from protocol.frames import Challenge, Frame
from protocol.session import sign_answer
from relying_party.errors import BrokerError, BrokerUnavailable, PushAuthError, VerificationFailed
from relying_party.sdk import PushAuthClient

from .broker import BrokerProcess, add_rp, set_policy
from .haproxy import SHIPPED, AccessLine, HAProxyProcess, frontends
from .ports import LOCALHOST, free_port
from .process import ManagedProcess
from .proxy import TcpProxy
from .redis_server import RedisServer
from .waiting import DEADLINE, wait_until

CONTEXT = {"app": "Failover test", "ip": "203.0.113.7", "browser": "pushauth-failover"}
FRONTEND = "pushauth"  # the frontend RPs and devices use (the config's others get ports too)
WAIT_RESULT_S = 20.0  # a sign-in not ended after this counts as "pending" (generous: only a failure waits)
HANDSHAKES = 32  # concurrent device handshakes (the load tester's bound, smaller)
# The RP's flow: "two" requests (create_challenge, then wait_result's long-poll), "one"
# (sign_in: the streamed create), or "both" alternating.
FLOWS = ("two", "one", "both")


# -- the servers ------------------------------------------------------------------


class Cluster:
    """Redis, broker nodes named a, b, ... and HAProxy in front, from a config file."""

    def __init__(
        self,
        directory: Path,
        config: str,
        nodes: int = 2,
        redis_proxied: Collection[str] = (),
        master_worker: bool = False,
        broker_args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.broker_args = list(broker_args)  # more `pushauth-broker serve` options, every node
        self.config = config
        self.redis = RedisServer(directory / "redis")
        self.nodes: dict[str, BrokerProcess] = {}
        self.names = [chr(ord("a") + i) for i in range(nodes)]
        # Nodes that reach Redis through a proxy of their own, which cut_redis cuts.
        self.redis_proxied = set(redis_proxied)
        self.redis_proxies: dict[str, TcpProxy] = {}
        self.haproxy: HAProxyProcess | None = None
        self.master_worker = master_worker  # HAProxy as systemd runs it, for RELOAD
        self.rp: dict[str, Any] = {}

    def start(self) -> Cluster:
        self.redis.start()
        for name in self.names:
            redis_url = self.redis.url
            if name in self.redis_proxied:
                proxy = self.redis_proxies[name] = TcpProxy([self.redis.port]).start()
                redis_url = f"redis://{LOCALHOST}:{proxy.port}/0"
            self.nodes[name] = BrokerProcess(
                log_dir=self.directory,
                redis_url=redis_url,
                node=name,
                # HAProxy's X-Forwarded-For names the client (the per-address limits).
                extra_args=["--trusted-proxy", LOCALHOST, *self.broker_args],
            )
        for node in self.nodes.values():  # started one after another: ports are claimed first
            node.start()
        self.haproxy = self.balancer(master_worker=self.master_worker).start()
        for name in self.names:
            self.wait_node(name, "UP")
        self.rp = add_rp("Failover test", redis_url=self.redis.url)
        # Each user signs in about once a second here: far above the per-minute cap
        # that protects real users from push fatigue. And a fleet is enrolled at once,
        # faster than the RP's default enrollment rate (600 a minute).
        set_policy(
            self.rp["id"],
            "--max-pushes-per-minute",
            "10000",
            "--enrollments-per-minute",
            "100000",
            redis_url=self.redis.url,
        )
        return self

    def balancer(self, name: str = "haproxy", **options: Any) -> HAProxyProcess:
        """An HAProxy (not started) on this cluster's config and nodes, on ports of its
        own; `options` as HAProxyProcess takes them (say, master_worker)."""
        return HAProxyProcess(
            log_dir=self.directory,
            config=self.config,
            binds={frontend: free_port() for frontend in frontends(self.config)},
            servers={node_name: f"{LOCALHOST}:{node.port}" for node_name, node in self.nodes.items()},
            name=name,
            **options,
        )

    @property
    def url(self) -> str:
        assert self.haproxy is not None
        return self.haproxy.url(FRONTEND)

    @property
    def ws_url(self) -> str:
        return device_url(self.url)

    def wait_node(self, name: str, status: str, timeout: float = DEADLINE) -> None:
        """Wait until HAProxy shows every server named `name` (in each backend) as `status`."""
        assert self.haproxy is not None
        haproxy = self.haproxy

        def reached() -> bool:
            mine = [s for (_, server), s in haproxy.server_status().items() if server == name]
            return bool(mine) and all(s == status for s in mine)

        wait_until(
            reached, timeout=timeout, message=lambda: f"node {name} {status}: {haproxy.server_status()}"
        )

    def processes(self) -> list[ManagedProcess]:
        return [self.redis.process, *self.nodes.values(), *([self.haproxy] if self.haproxy else [])]

    def cleanup(self) -> None:
        for proc in reversed(self.processes()):
            proc.cleanup()
        for proxy in self.redis_proxies.values():
            proxy.close()


# -- devices ----------------------------------------------------------------------


def device_url(http_url: str) -> str:
    """The device WebSocket URL behind the balancer at `http_url`."""
    return http_url.replace("http://", "ws://") + "/v1/device"


@dataclass
class Device:
    cred: Credential
    link: DeviceLink
    welcomes: list[float] = field(default_factory=list)  # monotonic times of each welcome
    drops: list[float] = field(default_factory=list)  # monotonic times the socket ended
    answers: list[str] = field(default_factory=list)  # challenge ids it approved, in order


class Fleet:
    """Devices that stay connected through the balancer (reconnecting with the load
    tester's backoff, as the agent does) and approve each challenge with the number
    its RP showed, as a person reading it off the sign-in page would."""

    def __init__(self, ws_url: str, creds: list[Credential]) -> None:
        self.devices = {c.cid: Device(c, DeviceLink(ws_url, [c], self._on_frame)) for c in creds}
        self.numbers: dict[str, str] = {}  # challenge id -> the number the RP shows
        self.early: dict[str, tuple[Challenge, DeviceLink]] = {}  # frames that beat the RP's answer
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        gate = asyncio.Semaphore(HANDSHAKES)
        for device in self.devices.values():
            self._tasks.append(
                asyncio.create_task(device.link.stay_connected(gate, self._welcomed, self._dropped))
            )
        await wait_async(lambda: all(d.welcomes for d in self.devices.values()), "every device connected")

    def _device(self, link: DeviceLink) -> Device:
        return self.devices[link.creds[0].cid]

    def _welcomed(self, link: DeviceLink) -> None:
        self._device(link).welcomes.append(time.monotonic())

    def _dropped(self, link: DeviceLink) -> None:
        self._device(link).drops.append(time.monotonic())

    def shown(self, challenge_id: str, number: str) -> None:
        """The RP shows `number` for this challenge: the device can answer it now."""
        self.numbers[challenge_id] = number
        early = self.early.pop(challenge_id, None)
        if early is not None:
            self._approve(*early, number)

    def _on_frame(self, link: DeviceLink, frame: Frame, _received: float) -> None:
        if not isinstance(frame, Challenge):
            return
        number = self.numbers.get(frame.ch)
        if number is None:
            self.early[frame.ch] = (frame, link)
        else:  # a challenge sent again after a reconnect is answered again: harmless
            self._approve(frame, link, number)

    def _approve(self, frame: Challenge, link: DeviceLink, number: str) -> None:
        device = self._device(link)
        answer = sign_answer(
            frame, seed=device.cred.seed, decision="approve", number=number, ts=time.time_ns() // 1_000_000
        )
        link.send(encode(answer))  # a socket that just died drops it; the challenge comes again
        device.answers.append(frame.ch)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for device in self.devices.values():
            device.link.close()


async def enroll_fleet(cluster: Cluster, users: int, prefix: str) -> list[Credential]:
    """New users with one confirmed device each, enrolled through the balancer."""
    async with aiohttp.ClientSession() as http:
        return await enroll(
            http,
            cluster.url,
            cluster.ws_url,
            cluster.rp["api_key"],
            [f"{prefix}-u{i}" for i in range(users)],
            concurrency=8,
        )


# -- sign-ins ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    user: str
    started: float  # monotonic
    ended: float
    outcome: str  # "approved", or how it failed: "http_503", "unreachable", "pending", ...
    challenge: str | None = None
    created: float | None = None  # monotonic: the RP had the challenge (its number)
    one_request: bool = False  # PushAuthClient.sign_in (streamed), else create_challenge + wait_result
    detail: str = ""  # the error's message, when it failed


class Load:
    """Sign-ins at a fixed rate, each for a user without one in flight."""

    def __init__(
        self,
        url: str,
        api_key: str,
        fleet: Fleet,
        flow: str = "both",
        wait_result_s: float = WAIT_RESULT_S,
        request_timeout: float = 10.0,  # the SDK's default
    ) -> None:
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        self.client = PushAuthClient(url, api_key, request_timeout=request_timeout)
        self.fleet = fleet
        self.flow = flow
        self.wait_result_s = wait_result_s
        self.idle = deque(fleet.devices.values())
        self.results: list[SignIn] = []
        self.skipped = 0  # ticks with no idle user (none, unless sign-ins hang)

    async def run(
        self, rate: float, duration: float, at: float | None = None, action: Callable[[], None] | None = None
    ) -> None:
        """`rate` sign-ins a second for `duration` s; `action` runs in a thread `at` s in
        (while the load goes on), and the load ends no earlier than the action."""
        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        acting: asyncio.Future[None] | None = None
        for n in range(int(rate * duration)):
            offset = n / rate
            if action is not None and acting is None and at is not None and offset >= at:
                acting = asyncio.ensure_future(asyncio.to_thread(action))
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.idle:
                self.skipped += 1
                continue
            one_request = self.flow == "one" or (self.flow == "both" and n % 2 == 1)
            task = asyncio.create_task(self._one(self.idle.popleft(), one_request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:  # before the action's outcome: a failed action leaves no task behind
            await asyncio.wait(tasks)
        if acting is not None:
            await acting

    async def _one(self, device: Device, one_request: bool) -> None:
        started = time.monotonic()
        challenge_id, created, detail = None, None, ""
        keys = {device.cred.cid: device.cred.public_key}
        try:
            if one_request:  # the number and the result in one streamed response (or by long-poll)
                async with await self.client.sign_in(device.cred.user, CONTEXT) as pending:
                    challenge_id, created = pending.challenge.id, time.monotonic()
                    self.fleet.shown(pending.challenge.id, pending.challenge.number)
                    result = await pending.result(keys, timeout=self.wait_result_s)
            else:
                challenge = await self.client.create_challenge(device.cred.user, CONTEXT)
                challenge_id, created = challenge.id, time.monotonic()
                self.fleet.shown(challenge.id, challenge.number)
                result = await self.client.wait_result(challenge, keys, timeout=self.wait_result_s)
            outcome = result.status.value
        except BrokerError as exc:
            outcome, detail = f"http_{exc.status}", str(exc)
        except BrokerUnavailable as exc:  # no HTTP answer at all: reset, refused, timed out
            outcome, detail = "unreachable", str(exc)
        except VerificationFailed as exc:
            outcome, detail = f"verification_failed_{exc.reason.value}", str(exc)
        except PushAuthError as exc:
            outcome, detail = type(exc).__name__, str(exc)
        finally:
            self.idle.append(device)
        self.results.append(
            SignIn(
                device.cred.user,
                started,
                time.monotonic(),
                outcome,
                challenge_id,
                created,
                one_request,
                detail,
            )
        )

    async def close(self) -> None:
        await self.client.close()


async def wait_async(condition: Callable[[], object], message: str, timeout: float = DEADLINE) -> None:
    """wait_until for the event loop's own state (polls without blocking the loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        await asyncio.sleep(0.02)


# -- one node's death, start to end -------------------------------------------------


# What happens to the node: a signal (KILL: it dies; TERM: an orderly stop; STOP: it
# hangs), or REDIS: its connection to Redis is cut (the node needs redis_proxied); or
# RELOAD: no node, HAProxy is reloaded as `systemctl reload` does (needs master_worker).
EVENTS = ("KILL", "TERM", "STOP", "REDIS", "RELOAD")


@dataclass
class Stop:
    """What happened to the node that was stopped, by the monotonic clock."""

    node: str
    event: str  # one of EVENTS
    sent: float = 0.0  # the signal, or the cut
    down: float = 0.0  # HAProxy showed it DOWN (RELOAD: HAProxy's new worker runs)


def stop_node(cluster: Cluster, stop: Stop) -> Callable[[], None]:
    """The action: do `stop.event` to the node, wait (for its exit after KILL or TERM)
    until HAProxy marks it DOWN."""
    if stop.event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {stop.event!r}")

    def act() -> None:
        stop.sent = time.monotonic()
        if stop.event == "RELOAD":
            assert cluster.haproxy is not None
            cluster.haproxy.reload()
            stop.down = time.monotonic()
            return
        if stop.event == "REDIS":
            proxy = cluster.redis_proxies[stop.node]
            proxy.set_backends([])  # new connections refused ...
            proxy.drop_connections()  # ... and the node's open ones reset
        else:
            cluster.nodes[stop.node].kill(signal.Signals[f"SIG{stop.event}"], timeout=DEADLINE)
        cluster.wait_node(stop.node, "DOWN")
        stop.down = time.monotonic()

    return act


def restore_redis(cluster: Cluster, name: str) -> None:
    """Undo a REDIS cut: the node reconnects by itself."""
    cluster.redis_proxies[name].set_backends([cluster.redis.port])


@dataclass
class Report:
    stop: Stop
    results: list[SignIn]
    skipped: int
    devices: list[Device]
    access: list[AccessLine]  # HAProxy's log lines of this run

    def outcomes(self, after: float | None = None) -> Counter[str]:
        return Counter(r.outcome for r in self.results if after is None or r.started >= after)

    def server_errors(self) -> list[SignIn]:
        return [r for r in self.results if r.outcome.startswith("http_5")]

    def summary(self) -> dict[str, Any]:
        errors = sorted(self.server_errors(), key=lambda r: r.started)
        approved = [r for r in self.results if r.outcome == "approved"]
        t0 = self.stop.sent
        lb_5xx = [a for a in self.access if a.status >= 500]
        backs = [back_after(d, t0) for d in self.devices if any(t >= t0 for t in d.drops)]
        return {
            "node": self.stop.node,
            "event": self.stop.event,
            "marked_down_after_s": round(self.stop.down - t0, 3),
            "sign_ins": len(self.results),
            "outcomes": dict(self.outcomes()),
            "outcomes_one_request": dict(Counter(r.outcome for r in self.results if r.one_request)),
            "skipped_no_idle_user": self.skipped,
            "rp_5xx": len(errors),
            # Seconds after the signal: when the failed sign-ins started, and when their 5xx came.
            "rp_5xx_started_s": _span([r.started - t0 for r in errors]),
            "rp_5xx_answered_s": _span([r.ended - t0 for r in errors]),
            "slowest_approved_s": max((round(r.ended - r.started, 3) for r in approved), default=None),
            "approved_slower_than_0_5_s": sum(1 for r in approved if r.ended - r.started > 0.5),
            "haproxy_5xx": len(lb_5xx),
            "haproxy_retried": sum(1 for a in self.access if a.retries),
            "haproxy_redispatched": sum(1 for a in self.access if a.redispatched),
            "devices_dropped": sum(1 for d in self.devices if any(t >= t0 for t in d.drops)),
            # When (s after the event) devices lost their socket: a reload's old worker
            # holds them until its hard-stop-after.
            "devices_dropped_s": _span([t - t0 for d in self.devices for t in d.drops if t >= t0]),
            # When (s after the event) each dropped device was connected again: the
            # last one is when the whole fleet was back. Those still out at the end are
            # counted, never left out of the span.
            "devices_back_s": _span([t - t0 for t in backs if t is not None]),
            "devices_not_back": sum(1 for t in backs if t is None),
            # The first few failures: when (s after the event), which flow, what the SDK said.
            "failures": [
                [round(r.started - t0, 3), "one" if r.one_request else "two", r.outcome, r.detail]
                for r in self.results
                if r.outcome != "approved"
            ][:10],
        }


def back_after(device: Device, t0: float) -> float | None:
    """When `device` was welcomed again after its first drop at or after `t0`, or None."""
    dropped = min(t for t in device.drops if t >= t0)
    return next((t for t in device.welcomes if t > dropped), None)


def _span(values: list[float]) -> list[float] | None:
    return [round(min(values), 3), round(max(values), 3)] if values else None


async def signins_around_stop(
    cluster: Cluster,
    *,
    node: str,
    event: str,
    rate: float,
    before: float,
    after: float,
    users: int,
    prefix: str,
    flow: str = "both",
    wait_result_s: float = WAIT_RESULT_S,
    request_timeout: float = 10.0,
) -> Report:
    """Enroll `users` devices, run the load for before + after seconds, do `event` to
    `node` `before` s in; the report covers this run only."""
    assert cluster.haproxy is not None
    creds = await enroll_fleet(cluster, users, prefix)
    fleet = Fleet(cluster.ws_url, creds)
    await fleet.start()
    load = Load(cluster.url, cluster.rp["api_key"], fleet, flow, wait_result_s, request_timeout)
    log_from = len(cluster.haproxy.access_log())
    stop = Stop(node, event)
    try:
        await load.run(rate, before + after, at=before, action=stop_node(cluster, stop))
    finally:
        await load.close()
        await fleet.stop()
    return Report(
        stop,
        load.results,
        load.skipped,
        list(fleet.devices.values()),
        cluster.haproxy.access_log()[log_from:],
    )


# -- the measurement command ------------------------------------------------------


@contextlib.contextmanager
def cluster_from(
    config: Path,
    nodes: int,
    keep: Path | None,
    redis_proxied: Collection[str] = (),
    master_worker: bool = False,
) -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="pushauth-failover-")) if keep is None else keep
    cluster = Cluster(
        directory,
        config.read_text(),
        nodes=nodes,
        redis_proxied=redis_proxied,
        master_worker=master_worker,
        # Every simulated device connects from 127.0.0.1, where real ones have addresses
        # of their own: the per-address limit (300 at once, then 20 a second) would
        # hold back a fleet of thousands and measure itself.
        broker_args=["--device-connects-per-ip", "0"],
    )
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m support.failover",
        description="Kill (or stop) one broker node behind HAProxy under a steady sign-in load, "
        "and count what the RPs saw: 5xx answers, and for how long after the signal. "
        "Everything on loopback, started here and stopped at the end.",
    )
    parser.add_argument("--config", type=Path, default=SHIPPED, help="HAProxy config (default: %(default)s)")
    parser.add_argument("--nodes", type=int, default=2, help="broker nodes (servers a, b, ... of the config)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="sign-ins per second (default: %(default)s)"
    )
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before the signal")
    parser.add_argument("--after", type=float, default=7.0, help="seconds of load after it")
    parser.add_argument("--users", type=int, default=100, help="users, one device each")
    parser.add_argument(
        "--signal",
        choices=EVENTS,
        default="KILL",
        help="to node a: KILL, TERM, STOP (a hung node), or REDIS (its connection to Redis cut); "
        "or RELOAD: HAProxy (run with -W, as systemd does) reloaded, no node touched",
    )
    parser.add_argument(
        "--flow",
        choices=FLOWS,
        default="two",
        help="the RP's requests: two (create, long-poll), one (the streamed create), both alternating",
    )
    parser.add_argument("--out", type=Path, help="keep the processes' logs and the rendered config here")
    args = parser.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    proxied = ["a"] if args.signal == "REDIS" else []
    with cluster_from(
        args.config, args.nodes, args.out, proxied, master_worker=args.signal == "RELOAD"
    ) as cluster:
        report = asyncio.run(
            signins_around_stop(
                cluster,
                node="a",
                event=args.signal,
                rate=args.rate,
                before=args.before,
                after=args.after,
                users=args.users,
                prefix=f"m{os.getpid()}",
                flow=args.flow,
            )
        )
    summary = {
        "config": str(args.config),
        "rate": args.rate,
        "flow": args.flow,
        "before_s": args.before,
        "after_s": args.after,
        **report.summary(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
