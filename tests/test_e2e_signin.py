"""Issue 2, end to end: the real broker and the real agent CLI as subprocesses, the
RP SDK verifying every answer with the key it stored at enrollment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import AGENT_ENV, agent, agent_ok, enroll, pending
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from support import (
    AGENT,
    BROKER,
    BrokerProcess,
    ManagedProcess,
    RedisServer,
    TcpProxy,
    add_rp,
    run_cli,
    wait_until,
)

from device_agent.timeouts import CONNECT_TIMEOUT_ENV
from protocol.challenge import Status
from relying_party.sdk import PushAuthClient

CONTEXT = {"app": "Contoso Portal", "ip": "203.0.113.7", "location": "Oslo, Norway", "browser": "Firefox"}


async def test_enroll_then_approve_with_the_right_number(client: PushAuthClient, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    accounts = agent_ok(home, "accounts", "--json")
    assert cred.id in accounts and "alice@example.com" in accounts

    ch = await client.create_challenge("alice", CONTEXT)
    [req] = pending(home)
    assert req["id"] == ch.id and req["context"] == CONTEXT
    out = agent_ok(home, "approve", ch.id, "--number", ch.number)
    assert "approved" in out.lower()
    result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
    assert result.approved and result.status is Status.APPROVED
    assert result.credential_id == cred.id
    # The credential's last use is now recorded at the broker.
    [listed] = await client.list_credentials("alice")
    assert listed.id == cred.id and listed.last_used_at is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["approve", "{ch}", "--number", "{wrong}"], Status.NUMBER_MISMATCH),
        (["deny", "{ch}"], Status.DENIED),
        (["deny", "{ch}", "--fraud"], Status.REPORTED),
    ],
    ids=["wrong-number", "deny", "fraud"],
)
async def test_answers_that_do_not_sign_in(
    client: PushAuthClient, tmp_path: Path, args: list[str], expected: Status
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    ch = await client.create_challenge("alice", CONTEXT, digits=6)
    wrong = str((int(ch.number) + 1) % 900000 + 100000)
    result = agent(home, *[a.format(ch=ch.id, wrong=wrong) for a in args])
    assert result.returncode == 0, result.stderr
    verdict = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
    assert verdict.status is expected and not verdict.approved
    # A wrong number ends the challenge: no second try.
    again = agent(home, "approve", ch.id, "--number", ch.number)
    assert again.returncode == 1 and "Traceback" not in again.stderr


async def test_no_answer_expires(client: PushAuthClient, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    ch = await client.create_challenge("alice", CONTEXT, ttl=10)
    result = await client.wait_result(ch, {cred.id: cred.public_key})
    assert result.status is Status.EXPIRED and not result.approved
    late = agent(home, "approve", ch.id, "--number", ch.number)
    assert late.returncode == 1 and "Traceback" not in late.stderr
    assert (await client.get_result(ch, {cred.id: cred.public_key})).status is Status.EXPIRED


def _listen(home: Path, log_dir: Path, name: str) -> ManagedProcess:
    proc = ManagedProcess(
        [AGENT, "--home", home, "listen", "--no-input"],
        log_dir=log_dir,
        name=name,
        env=AGENT_ENV,
        ready=lambda p: "Connected to" in p.run_stdout(),
    )
    return proc.start()


async def test_two_devices_first_answer_wins_other_is_cancelled(
    client: PushAuthClient, tmp_path: Path
) -> None:
    phone, laptop = tmp_path / "phone", tmp_path / "laptop"
    cred_phone = await enroll(client, phone, name="phone")
    cred_laptop = await enroll(client, laptop, name="laptop")
    keys = {cred_phone.id: cred_phone.public_key, cred_laptop.id: cred_laptop.public_key}
    watcher = _listen(laptop, tmp_path / "logs", "laptop-listen")

    ch = await client.create_challenge("alice", CONTEXT)
    assert ch.devices == 2
    wait_until(lambda: ch.id in watcher.run_stdout(), timeout=10, message="the laptop shows the request")
    assert [r["id"] for r in pending(phone)] == [ch.id]
    assert [r["id"] for r in pending(laptop)] == [ch.id]

    agent_ok(phone, "approve", ch.id, "--number", ch.number)
    result = await client.wait_result(ch, keys, timeout=10)
    assert result.approved and result.credential_id == cred_phone.id
    wait_until(
        lambda: f"Request {ch.id} was answered on another device." in watcher.run_stdout(),
        timeout=10,
        message="the laptop is told the request was handled elsewhere",
    )
    # The loser's answer is refused, and the result stays the phone's approval.
    late = agent(laptop, "deny", ch.id)
    assert late.returncode == 1
    assert (await client.get_result(ch, keys)).credential_id == cred_phone.id


async def test_two_nodes_device_on_a_rp_on_b(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    node_a = broker_factory(redis_url=redis_server.url, node="a")
    node_b = broker_factory(redis_url=redis_server.url, node="b")
    rp = add_rp("Two-node RP", redis_url=redis_server.url)
    home = tmp_path / "phone"
    async with PushAuthClient(node_a.http_url, rp["api_key"]) as on_a:
        cred = await enroll(on_a, home)  # the URI names node A: the device talks to A
    watcher = _listen(home, tmp_path / "logs", "listen")
    async with PushAuthClient(node_b.http_url, rp["api_key"]) as on_b:
        ch = await on_b.create_challenge("alice", CONTEXT)
        wait_until(lambda: ch.id in watcher.run_stdout(), timeout=10, message="node A delivers B's challenge")
        waiting = asyncio.create_task(on_b.wait_result(ch, {cred.id: cred.public_key}, timeout=15))
        # The approval must reach the RP's long-poll on node B through the event channel.
        await asyncio.to_thread(wait_until, lambda: node_b.long_polls() == 1, message="the long-poll on B")
        await asyncio.to_thread(agent_ok, home, "approve", ch.id, "--number", ch.number)
        result = await waiting
    assert result.approved


async def test_node_killed_while_pending_device_fails_over(
    redis_server: RedisServer,
    broker_factory: Callable[..., BrokerProcess],
    tcp_proxy: Callable[..., TcpProxy],
    tmp_path: Path,
) -> None:
    node_a = broker_factory(redis_url=redis_server.url, node="a")
    node_b = broker_factory(redis_url=redis_server.url, node="b")
    lb = tcp_proxy([node_a.port, node_b.port])  # first live backend wins: A, then B
    rp = add_rp("Failover RP", redis_url=redis_server.url)
    home = tmp_path / "phone"
    async with PushAuthClient(f"http://127.0.0.1:{lb.port}", rp["api_key"]) as via_lb:
        cred = await enroll(via_lb, home)
    listener = _interactive_listener(home, tmp_path / "logs")
    async with PushAuthClient(node_b.http_url, rp["api_key"]) as on_b:
        ch = await on_b.create_challenge("alice", CONTEXT, ttl=60)
        wait_until(
            lambda: ch.id in listener.out(), timeout=10, message="the request reaches the device via A"
        )
        node_a.kill(signal.SIGKILL)
        wait_until(
            lambda: listener.out().count("Connected to") >= 2, timeout=20, message="the agent reconnects to B"
        )
        # B delivers the pending challenge again; the person types the number.
        listener.type(ch.number)
        result = await on_b.wait_result(ch, {cred.id: cred.public_key}, timeout=15)
    assert result.approved
    listener.stop()


async def test_an_answer_whose_result_was_lost_is_sent_again_after_reconnecting(
    broker: BrokerProcess,
    rp: dict[str, Any],
    tcp_proxy: Callable[..., TcpProxy],
    tmp_path: Path,
) -> None:
    """A bad mobile network (a lift, a train): the approval reaches the broker, its result
    never comes back, and only keepalive finds the connection dead. After reconnecting,
    `listen` sends the answer again (an idempotent retry, docs/protocol.md section 8) and
    shows the outcome the broker recorded: not silence, and not the same prompt again."""
    lb = tcp_proxy([broker.port])
    home = tmp_path / "phone"
    async with PushAuthClient(f"http://127.0.0.1:{lb.port}", rp["api_key"]) as via_lb:
        cred = await enroll(via_lb, home)  # its broker URL is the proxy's
    # Keepalive pings every second, dead after a second without a pong.
    listener = _interactive_listener(home, tmp_path / "logs", {CONNECT_TIMEOUT_ENV: "1"})
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        ch = await client.create_challenge("alice", CONTEXT, ttl=60)
        wait_until(lambda: "Type the 2-digit number" in listener.out(), message="the prompt")
        lb.lose_replies()
        listener.type(ch.number)
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=15)
    assert result.approved  # recorded: only the reply was lost
    wait_until(
        lambda: f"Request {ch.id}: approved: the sign-in is allowed." in listener.out(),
        message="the outcome after reconnecting",
    )
    out = listener.out()
    listener.stop()
    assert f"Request {ch.id}: answer sent again (approve)." in out
    assert out.count("Type the 2-digit number") == 1, out  # not asked again


class _interactive_listener:
    """`pushauth-agent listen` with its stdin a pipe, as a person at a terminal."""

    def __init__(self, home: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / "listen-interactive.log"
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(AGENT), "--home", str(home), "listen"],
            env={**os.environ, **AGENT_ENV, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: "Connected to" in self.out(), timeout=15, message="listen connects")

    def out(self) -> str:
        return self.log.read_text(errors="replace")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._fh.close()


async def test_restart_with_embedded_redis_keeps_credentials(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = BrokerProcess(log_dir=tmp_path / "logs", redis_url=None, data_dir=data, node="solo").start()
    try:
        rp = _rp_add_on_data_dir("Embedded RP", data)
        home = tmp_path / "phone"
        async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
            cred = await enroll(client, home)
        broker.restart()  # SIGTERM: the broker stops its Redis, then starts both again
        async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
            assert [c.id for c in await client.list_credentials("alice")] == [cred.id]
            ch = await client.create_challenge("alice", CONTEXT)
            agent_ok(home, "approve", ch.id, "--number", ch.number)  # no re-enrollment
            assert (await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)).approved
    finally:
        broker.terminate()
    assert not (data / "redis.sock").exists(), "the embedded Redis was not stopped with the broker"
    # Both stops were orderly: no lost event channel, no traceback.
    assert broker.stdout().count("pushauth-broker: stopped in") == 2, broker.output()
    assert "Traceback" not in broker.output() and "WARNING" not in broker.output(), broker.output()


def _rp_add_on_data_dir(name: str, data: Path) -> dict[str, Any]:
    result = run_cli([BROKER, "rp", "add", name, "--data-dir", data, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
