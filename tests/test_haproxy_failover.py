"""deploy/haproxy.cfg, run by a real HAProxy in front of two real broker nodes: a node
killed (SIGKILL) or stopped (SIGTERM) under a steady sign-in load costs the RPs no
5xx, every sign-in ends approved and verified by the SDK, and the devices that were on
that node reconnect through HAProxy and answer the sign-ins after it. A node cut off
from Redis costs no 5xx either (its 503s are sent to the other node), and every
sign-in after HAProxy took it out is approved. What a hung node (SIGSTOP) holds is sent
to the live node: a keyed create after 2 s, a long-poll after its wait + 2 s or when
HAProxy's checks take the node out, whichever comes first.

The config is the shipped file rendered for loopback (support/haproxy.py: bind,
server addresses, log target, stats socket); the load and the counting are
support/failover.py, which also measures the old config for docs/performance.md.
Counts only, never timings: the one bound is the generous DEADLINE on waits.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import DEADLINE, wait_until
from support.failover import (
    CONTEXT,
    FRONTEND,
    Cluster,
    Fleet,
    Load,
    Report,
    back_after,
    device_url,
    enroll_fleet,
    restore_redis,
    signins_around_stop,
    wait_async,
)
from support.haproxy import (
    ERROR_FILES,
    PRIVILEGED,
    SHIPPED,
    AccessLine,
    RenderError,
    frontends,
    haproxy_executable,
    identity,
    render,
    serving_identity,
)

from protocol.challenge import MIN_TTL_S, Status
from relying_party.sdk import PushAuthClient
from relying_party.wire import b64encode

RATE = 60  # sign-ins per second
BEFORE_S, AFTER_S = 2.0, 4.0  # load before and after the signal
USERS = 50  # one device each; each user signs in about once a second


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Node b reaches Redis through a proxy of its own, which the Redis test cuts.
    started = Cluster(tmp_path_factory.mktemp("haproxy"), SHIPPED.read_text(), nodes=2, redis_proxied=["b"])
    try:
        yield started.start()
    finally:
        started.cleanup()


def _render_shipped(directory: Path, **options: Any) -> tuple[str, str]:
    text = SHIPPED.read_text()
    rendered = render(
        text,
        binds={name: 20000 + i for i, name in enumerate(frontends(text))},
        servers={"a": "127.0.0.1:18701", "b": "127.0.0.1:18702"},
        stats_socket=directory / "admin.sock",
        **options,
    )
    return text, rendered


def test_the_tested_config_is_the_shipped_one(tmp_path: Path) -> None:
    """Only what ties the file to a production host changes; haproxy accepts the result."""
    text, rendered = _render_shipped(tmp_path)
    replaced = ("bind ", "server ", "log ", "stats socket ", "maxconn ", "errorfile ")
    if not PRIVILEGED:  # haproxy started by another user than root cannot change user or chroot
        replaced += ("user ", "group ", "chroot ")
    kept = [line for line in text.splitlines() if not line.strip().startswith(replaced)]
    assert kept, "the renderer would replace every line"
    missing = [line for line in kept if line not in rendered.splitlines()]
    assert not missing, f"lines of deploy/haproxy.cfg missing from the tested config: {missing}"
    settings = "\n".join(line for line in rendered.splitlines() if not line.strip().startswith("#"))
    assert "ssl crt" not in settings and "/run/haproxy" not in settings
    assert "server a 127.0.0.1:18701 track api/a" in rendered  # options after the address kept
    assert f"    errorfile 503 {ERROR_FILES / '503.http'}" in rendered.splitlines()  # the shipped files
    check = subprocess.run(
        [haproxy_executable(), "-c", "-f", str(_write(tmp_path / "haproxy.cfg", rendered))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    # Started by another user than root haproxy would refuse them: the renderer drops them.
    privileged = {"user haproxy", "group haproxy", "chroot /var/lib/haproxy"}
    assert privileged <= {line.strip() for line in text.splitlines()}
    _, unprivileged = _render_shipped(tmp_path, privileged=False)
    assert not privileged & {line.strip() for line in unprivileged.splitlines()}


def test_render_refuses_a_config_it_cannot_map(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    socket = tmp_path / "admin.sock"
    with pytest.raises(RenderError, match="stats"):  # a frontend the test has no port for
        render(text, binds={"pushauth": 20000}, servers={"a": "x:1", "b": "x:2"}, stats_socket=socket)
    with pytest.raises(RenderError, match="'b'"):  # a server the test has no node for
        render(text, binds=dict.fromkeys(frontends(text), 1), servers={"a": "x:1"}, stats_socket=socket)
    binds, servers = dict.fromkeys(frontends(text), 1), {"a": "x:1", "b": "x:2"}
    shorter = render(text, binds=binds, servers=servers, stats_socket=socket, hard_stop_after="2s")
    assert "    hard-stop-after 2s" in shorter.splitlines()
    without = "\n".join(line for line in text.splitlines() if "hard-stop-after" not in line)
    with pytest.raises(RenderError, match="hard-stop-after"):  # a shorter time asked of a file without one
        render(without, binds=binds, servers=servers, stats_socket=socket, hard_stop_after="2s")
    with pytest.raises(RenderError, match=r"no 599\.http in"):  # an errorfile deploy/ does not ship
        render(
            text + "    errorfile 599 /etc/haproxy/pushauth-errors/599.http\n",
            binds=binds,
            servers=servers,
            stats_socket=socket,
        )


async def test_a_killed_node_costs_no_5xx(cluster: Cluster) -> None:
    try:
        report = await signins_around_stop(
            cluster,
            node="a",
            event="KILL",
            rate=RATE,
            before=BEFORE_S,
            after=AFTER_S,
            users=USERS,
            prefix="k",
        )
    finally:  # back for the next test: HAProxy takes it in again once its checks pass
        _restart(cluster, "a")
    _assert_no_failure(report)


async def test_a_stopped_node_costs_no_5xx(cluster: Cluster) -> None:
    """SIGTERM: the node stops accepting, tells its devices 1001, answers its long-polls
    with the current state (the SDK asks again, through HAProxy) and exits."""
    try:
        report = await signins_around_stop(
            cluster,
            node="b",
            event="TERM",
            rate=RATE,
            before=BEFORE_S,
            after=AFTER_S,
            users=USERS,
            prefix="t",
        )
        assert cluster.nodes["b"].returncode == 0, cluster.nodes["b"].describe()
    finally:
        _restart(cluster, "b")
    _assert_no_failure(report)


async def test_a_node_that_loses_redis_costs_no_5xx(cluster: Cluster) -> None:
    """Node b's connection to Redis is cut: it answers 503 (having done nothing) until
    its /healthz check takes it out, and HAProxy sends those requests to node a; what
    b was holding (long-polls, streams) is answered at once. Before that, 18-22 of 360
    sign-ins of this run ended on the SDK's timeout."""
    try:
        report = await signins_around_stop(
            cluster,
            node="b",
            event="REDIS",
            rate=RATE,
            before=BEFORE_S,
            after=AFTER_S,
            users=USERS,
            prefix="r",
        )
    finally:
        restore_redis(cluster, "b")
        cluster.wait_node("b", "UP")
    summary = report.summary()
    assert not report.server_errors(), summary
    assert not [a for a in report.access if a.status >= 500], summary
    assert any(a.status < 500 and a.retries for a in report.access), f"no request sent again: {summary}"
    # Every sign-in was approved, those in flight when node b lost Redis too: what b
    # held was answered 503 at once and sent on, or asked again by the SDK.
    assert report.outcomes() == {"approved": len(report.results)}, summary
    after_down = [r for r in report.results if r.started >= report.stop.down]
    assert len(after_down) >= RATE * AFTER_S / 4, summary


async def test_a_hung_node_s_keyed_create_is_sent_to_the_live_node(cluster: Cluster) -> None:
    """SIGSTOP: node a accepts connections and answers nothing. A plain create with an
    Idempotency-Key (the SDK's carry one) is sent on by HAProxy after 2 s of silence,
    so an RP whose own resend comes later (here: never within 30 s) gets its challenge
    from node b, the number in it, and its device the prompt."""
    assert cluster.haproxy is not None
    creds = await enroll_fleet(cluster, 6, "h")
    fleet = Fleet(cluster.ws_url, creds)
    await fleet.start()
    log_from = len(cluster.haproxy.access_log())
    cluster.nodes["a"].kill(signal.SIGSTOP)
    try:
        async with PushAuthClient(
            cluster.url, cluster.rp["api_key"], request_timeout=30, answer_timeout=30
        ) as client:
            made = await asyncio.gather(*(client.create_challenge(c.user, CONTEXT) for c in creds))
            assert client.creates_sent_again == 0
            for challenge in made:
                fleet.shown(challenge.id, challenge.number)
            # Long-polls are read requests that a hung node holds for their whole wait:
            # asked once HAProxy has taken it out (the SDK asks again after 13 s).
            await asyncio.to_thread(cluster.wait_node, "a", "DOWN")
            keys = {c.cid: c.public_key for c in creds}
            results = await asyncio.gather(*(client.wait_result(ch, keys, timeout=30) for ch in made))
    finally:
        cluster.nodes["a"].kill(signal.SIGCONT)
        await fleet.stop()
        cluster.wait_node("a", "UP")
    assert [r.status for r in results] == [Status.APPROVED] * len(creds)
    creates = _logged(cluster, log_from, "POST /v1/challenges ", len(creds))
    assert all(a.status == 201 and a.server == "b" for a in creates), creates
    # Round robin sent some to the hung node first: those waited 2 s and were sent on.
    assert any(a.retries and a.redispatched for a in creates), creates


async def test_a_stream_that_waits_longer_than_a_create_may_take_is_not_cut(cluster: Cluster) -> None:
    """The 2 s server timeout is for plain creates only: a streamed create (keyed, and
    without ?wait, so it may wait 60 s) whose result comes after 10 s of silence (the
    shortest lifetime, unanswered: its device is offline) gets it through HAProxy, in
    one response."""
    (cred,) = await enroll_fleet(cluster, 1, "s")
    body = {
        "user": cred.user,
        "context": CONTEXT,
        "ttl": MIN_TTL_S,
        "rp_nonce": b64encode(secrets.token_bytes(32)),
    }
    headers = {
        "Authorization": f"Bearer {cluster.rp['api_key']}",
        "Accept": "application/x-ndjson",
        "Idempotency-Key": secrets.token_urlsafe(16),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{cluster.url}/v1/challenges", json=body, headers=headers) as response,
    ):
        assert response.status == 201 and response.content_type == "application/x-ndjson"
        challenge = json.loads(await response.content.readline())
        result = json.loads(await response.content.readline())
        assert await response.content.read() == b""
    assert result["id"] == challenge["id"] and result["status"] == "expired", result


async def test_a_long_poll_a_hung_node_holds_is_asked_of_the_live_node(cluster: Cluster) -> None:
    """A long-poll (?wait=1) held by a hung node goes to another node after 1 + 2 s of
    silence: reads are safe to repeat. Node a's checks are off here, so that HAProxy
    keeps sending it requests (and the test knows some reach it) until it wakes."""
    assert cluster.haproxy is not None
    (cred,) = await enroll_fleet(cluster, 1, "p")
    async with PushAuthClient(cluster.url, cluster.rp["api_key"]) as client:
        challenge = await client.create_challenge(cred.user, CONTEXT)
    log_from = len(cluster.haproxy.access_log())
    cluster.haproxy.command("disable health api/a")
    cluster.nodes["a"].kill(signal.SIGSTOP)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as http:
            answers = await asyncio.gather(*(_long_poll(http, cluster, challenge.id, 1) for _ in range(4)))
    finally:
        cluster.nodes["a"].kill(signal.SIGCONT)
        cluster.haproxy.command("enable health api/a")
        cluster.wait_node("a", "UP")
    assert all(status == 200 and body["status"] == "pending" for status, body in answers), answers
    _assert_polls_answered_by_b(cluster, log_from, len(answers))


async def test_what_a_hung_node_holds_is_sent_on_when_it_is_taken_out(cluster: Cluster) -> None:
    """Long-polls (?wait=40: a server timeout of 42 s) held by a SIGSTOPped node are
    cut when HAProxy's checks take it out (`on-marked-down shutdown-sessions`) and sent
    to the live node, which answers them when the challenge ends (cancelled here, once
    the node is out): well before the client's DEADLINE, where without the cut they
    would wait the 42 s."""
    assert cluster.haproxy is not None
    (cred,) = await enroll_fleet(cluster, 1, "c")
    async with PushAuthClient(cluster.url, cluster.rp["api_key"]) as client:
        challenge = await client.create_challenge(cred.user, CONTEXT)
        log_from = len(cluster.haproxy.access_log())
        cluster.nodes["a"].kill(signal.SIGSTOP)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as http:
                # Round robin sends every other one to the hung node, before its checks fail.
                polls = [asyncio.create_task(_long_poll(http, cluster, challenge.id, 40)) for _ in range(4)]
                await asyncio.to_thread(cluster.wait_node, "a", "DOWN")
                assert await client.cancel_challenge(challenge)
                answers = await asyncio.gather(*polls)
        finally:
            cluster.nodes["a"].kill(signal.SIGCONT)
            cluster.wait_node("a", "UP")
    assert all(status == 200 and body["status"] == "cancelled" for status, body in answers), answers
    _assert_polls_answered_by_b(cluster, log_from, len(answers))


async def test_a_reload_leaves_no_old_haproxy_behind(cluster: Cluster) -> None:
    """`systemctl reload haproxy` (SIGUSR2 to the master of a -W HAProxy) under a steady
    sign-in load: the old worker keeps its device WebSockets only until
    `hard-stop-after` (2 s here, the shipped file's 2 minutes rendered shorter), then
    exits; its devices reconnect through the new worker, and every sign-in, before,
    during and after the reload, ends approved. Without the setting the pinged
    WebSockets would keep the old worker for good."""
    lb = cluster.balancer("haproxy-reload", master_worker=True, hard_stop_after="2s").start()
    fleet: Fleet | None = None
    load: Load | None = None
    try:
        for name in cluster.nodes:
            lb.wait_status("api", name, "UP")
        creds = await enroll_fleet(cluster, 20, "l")
        fleet = Fleet(device_url(lb.url(FRONTEND)), creds)
        await fleet.start()
        (old,) = lb.workers()
        if PRIVILEGED:  # as systemd runs it: the master stays root to reload, its workers do not
            assert identity(old) == serving_identity()
        reloaded = 0.0

        def reload() -> None:
            nonlocal reloaded
            reloaded = time.monotonic()
            lb.reload()
            wait_until(
                lambda: old not in lb.workers() and len(lb.workers()) == 1,
                message=lambda: f"the old worker {old} gone, one worker left: {lb.workers()}",
            )

        load = Load(lb.url(FRONTEND), cluster.rp["api_key"], fleet)
        await load.run(RATE / 2, BEFORE_S + AFTER_S, at=BEFORE_S, action=reload)
        devices = list(fleet.devices.values())
        await wait_async(
            lambda: all(d.drops and d.drops[-1] > reloaded and d.welcomes[-1] > d.drops[-1] for d in devices),
            "every device dropped by the old worker and back through the new one",
        )
        outcomes = Counter(r.outcome for r in load.results)
        assert outcomes == {"approved": len(load.results)}, [
            r for r in load.results if r.outcome != "approved"
        ]
        after = [r for r in load.results if r.started > reloaded]
        assert len(after) >= RATE / 2 * AFTER_S / 2, f"too few sign-ins after the reload: {outcomes}"
        # And once back, each device approves a sign-in through the new worker.
        made = [await load.client.create_challenge(c.user, CONTEXT) for c in creds]
        for challenge in made:
            fleet.shown(challenge.id, challenge.number)
        keys = {c.cid: c.public_key for c in creds}
        results = await asyncio.gather(*(load.client.wait_result(ch, keys, timeout=DEADLINE) for ch in made))
        assert [r.status for r in results] == [Status.APPROVED] * len(creds)
        if PRIVILEGED:  # the worker started by the reload drops root too
            assert [identity(pid) for pid in lb.workers()] == [serving_identity()]
    finally:
        if load is not None:
            await load.close()
        if fleet is not None:
            await fleet.stop()
        lb.cleanup()


async def _long_poll(
    http: aiohttp.ClientSession, cluster: Cluster, challenge_id: str, wait: int
) -> tuple[int, dict[str, Any]]:
    """One GET /v1/challenges/{id}?wait=N through HAProxy: its status and body."""
    url = f"{cluster.url}/v1/challenges/{challenge_id}?wait={wait}"
    async with http.get(url, headers={"Authorization": f"Bearer {cluster.rp['api_key']}"}) as response:
        return response.status, await response.json()


def _assert_polls_answered_by_b(cluster: Cluster, log_from: int, count: int) -> None:
    """The `count` long-polls since `log_from` were all answered by node b, and round
    robin had sent at least one of them to the hung node a first."""
    polls = _logged(cluster, log_from, "GET /v1/challenges/", count)
    assert all(a.status == 200 and a.server == "b" for a in polls), polls
    assert sum(1 for a in polls if a.retries and a.redispatched) >= 1, polls


def _logged(cluster: Cluster, log_from: int, request: str, count: int) -> list[AccessLine]:
    """HAProxy's access lines since `log_from` whose request starts with `request`, once
    there are `count` of them (HAProxy writes a line as the request ends, which may be
    just after its client has the answer)."""
    haproxy = cluster.haproxy
    assert haproxy is not None

    def lines() -> list[AccessLine]:
        return [a for a in haproxy.access_log()[log_from:] if a.request.startswith(request)]

    wait_until(lambda: len(lines()) >= count, message=lambda: f"{count} x {request!r} in {lines()}")
    found = lines()
    assert len(found) == count, found
    return found


def _assert_no_failure(report: Report) -> None:
    summary = report.summary()
    t0 = report.stop.sent
    # No RP request answered 5xx, and HAProxy answered none to anyone (devices included).
    assert not report.server_errors(), summary
    assert not [a for a in report.access if a.status >= 500], summary
    # Every sign-in ended approved and verified (wait_result checks the device's signature),
    # those in flight at the signal too: their requests were sent again to the live node.
    assert report.outcomes() == {"approved": len(report.results)}, summary
    after = [r for r in report.results if r.started >= t0]
    assert len(after) >= RATE * AFTER_S / 2, f"too few sign-ins after the signal: {summary}"
    # The devices that were on the stopped node (about half) came back through HAProxy
    # and approved sign-ins that started after they were back.
    moved = [d for d in report.devices if any(t >= t0 for t in d.drops)]
    assert 0 < len(moved) < len(report.devices), summary
    approved_by_user: dict[str, list[float]] = {}
    for r in report.results:
        if r.outcome == "approved":
            approved_by_user.setdefault(r.user, []).append(r.started)
    for device in moved:
        back = back_after(device, t0)
        assert back is not None, f"{device.cred.user} did not reconnect: {summary}"
        later = [t for t in approved_by_user.get(device.cred.user, []) if t > back]
        assert later, f"{device.cred.user} approved no sign-in after it reconnected: {summary}"


def _restart(cluster: Cluster, name: str) -> None:
    if not cluster.nodes[name].running:
        cluster.nodes[name].start()
    cluster.wait_node(name, "UP")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
