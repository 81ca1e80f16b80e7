"""Wrong clocks as they happen: real processes under libfaketime (a real skewed clock for
the whole process, not a patched function), real Redis, the RP SDK.

A phone's clock is tests/test_agent_clock.py's; here: a broker node whose NTP broke (its
clock off the other node's and Redis's), a clock stepped while the agent listens, and an
RP server whose clock is off. docs/operations.md, "Clocks", says what each may be off.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_helpers import agent_env  # noqa: F401  (autouse: the vault passphrase for every agent run)
from support import BrokerProcess, RedisServer, new_rp, wait_until
from support.faketime import needs_faketime, skewed, stepped
from test_agent_e2e import RP, Listen, enroll, listener  # noqa: F401  (listener: a fixture)
from test_broker_device_ws import CTX, Device

from broker import clock
from protocol.frames import AnswerResult, Challenge
from relying_party.models import Status
from relying_party.sdk import PushAuthClient

pytestmark = needs_faketime


async def online(client: PushAuthClient, url: str) -> Device:
    """alice's confirmed device, authenticated on the node at `url`."""
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    dev = await Device.connect(url)
    await dev.enroll(enrollment.uri or "")
    await client.confirm_credential(dev.cid)
    await dev.authenticate()
    return dev


async def test_a_node_whose_clock_is_off_keeps_the_stores_time(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """Node b's NTP broke: its clock is 90 s ahead of node a's and Redis's. Before, each
    node decided by its own clock, and a challenge created on a (60 s) was expired at once
    on b: every answer from a device connected there was refused `challenge_expired`, the
    RP waited out the minute, and no one was told why. Now both keep Redis's time: the
    answer counts, b's `hello` and its challenges' times are the store's, and b's log
    names its clock."""
    a = broker_factory(redis_url=redis_server.url, node="a")
    b = broker_factory(redis_url=redis_server.url, node="b", env=skewed(90))
    rp = await new_rp(a)
    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        dev = await online(client, b.ws_url)
        ch = await client.create_challenge("alice", CTX, ttl=60)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == ch.id, pushed
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        assert (await client.wait_result(ch, keys, timeout=10)).status is Status.APPROVED
        # b's hello tells the store's time, not its own (90 s off; 30 s is room for a slow run).
        assert dev.session.hello is not None
        assert abs(dev.session.hello.time - time.time() * 1000) < 30_000, "b's hello tells its own clock"

    # A challenge created on b: its times are the store's too (a device on a answers it).
    async with PushAuthClient(b.http_url, rp["api_key"]) as on_b:
        raw = await on_b.create_challenge("alice", CTX, ttl=60)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == raw.id
        assert pushed.expires - pushed.created == 60_000
        assert abs(pushed.created - time.time() * 1000) < 30_000, "b dated it by its own clock"
    await dev.close()
    async with aiohttp.ClientSession() as http, http.get(b.http_url + "/healthz") as reply:
        # The Date a device measures its own clock by, when a signed request is refused as stale.
        assert abs(parsedate_to_datetime(reply.headers["Date"]).timestamp() - time.time()) < 30
    # Measured to within half a round trip to Redis, rounded to the second.
    ahead = re.compile(r"this node's clock is 1 min (29|30|31) s ahead of Redis's")
    wait_until(lambda: ahead.search(b.stderr()) is not None, message=b.stderr)
    assert "set this host's clock right (NTP)" in b.stderr()
    assert "clock" not in a.stderr(), a.stderr()


@pytest.mark.parametrize(
    ("at_connect", "then"),
    [("-600", "+0"), ("+0", "+600")],
    ids=["set-right-while-listening", "stepped-ahead-while-listening"],
)
async def test_a_clock_stepped_while_listening_changes_nothing_in_a_sign_in(
    tmp_path: Path,
    broker: BrokerProcess,
    rp: dict[str, Any],
    listener: Callable[..., Listen],
    monkeypatch: pytest.MonkeyPatch,
    at_connect: str,
    then: str,
) -> None:
    """The device's clock is stepped 10 minutes while `listen` is connected (NTP setting a
    wrong clock right, a VM resumed). The agent carried the broker's clock as its own wall
    clock plus the offset measured at hello, so after the step it was 10 minutes off: it
    showed "expires in: 0 s", signed the answer 10 minutes ahead of the broker, printed
    "approved: the sign-in is allowed", and the RP refused the answer as stale. Now the
    broker's clock is carried on the boot-time clock, which no step moves."""
    home = tmp_path / "agent"
    enroll(home, RP(broker, rp))
    stamp = tmp_path / "faketime"  # libfaketime reads the offset from it on every call
    for name, value in stepped(stamp, at_connect).items():
        monkeypatch.setenv(name, value)
    listening = listener(home)
    for name in ("LD_PRELOAD", "FAKETIME_TIMESTAMP_FILE"):
        monkeypatch.delenv(name)
    listening.wait_for("Connected to")
    stamp.write_text(then)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        ch = await client.create_challenge("alice", {"app": "Webmail"})
        listening.wait_for(f"Sign-in request {ch.id}")
        listening.wait_for("expires in:")
        listening.type(ch.number)
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        result = await client.wait_result(ch, keys, timeout=20)
    assert result.status is Status.APPROVED
    listening.wait_for(f"Request {ch.id}: approved")
    assert "expires in:  0 s" not in listening.output(), listening.output()


# An RP server: the SDK in a process of its own, so that its clock can be skewed.
_RP_SCRIPT = """
import asyncio, json, logging, sys
from relying_party.sdk import PushAuthClient

async def main(url, key):
    async with PushAuthClient(url, key) as client:
        ch = await client.create_challenge("alice", {"app": "Portal"})
        print(json.dumps({"id": ch.id, "number": ch.number}), flush=True)
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        try:
            print(json.dumps({"status": (await client.wait_result(ch, keys, timeout=30)).status}), flush=True)
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)

logging.basicConfig(level=logging.WARNING)
asyncio.run(main(*sys.argv[1:]))
"""


async def test_an_rp_server_whose_clock_is_off_is_told_so(
    broker: BrokerProcess, rp: dict[str, Any], client: PushAuthClient
) -> None:
    """The RP server's clock is 5 minutes ahead. Its window for answers is counted by its
    own clock, so every push answer (signed on the broker's clock) is refused as stale:
    that holds, and must (a replayed old answer looks the same). But nothing named the
    clock: the refusal gave two raw millisecond times, which read like an attack. Now
    the SDK logs the offset it measures when it creates the challenge, and the refusal
    says how far outside and that a clock off the broker's is the cause if every answer
    is refused so."""
    dev = await online(client, broker.ws_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RP_SCRIPT,
        broker.http_url,
        rp["api_key"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **skewed(300)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    created = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == created["id"]
    await dev.send(dev.answer(pushed, number=created["number"]))
    assert await dev.frame() == AnswerResult(ch=created["id"], outcome="approved")  # the broker's word
    outcome = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    logged = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await proc.wait() == 0, logged
    await dev.close()
    assert outcome["error"] == "VerificationFailed", outcome  # never an approval
    assert re.search(
        r"stale_answer: signed (5 min 0|4 min 5\d) s before the challenge was created", outcome["message"]
    )
    assert "this server's clock is off the broker's" in outcome["message"]
    assert re.search(r"this server's clock is (5 min 0|4 min 5\d) s ahead of the broker's at http", logged), (
        logged
    )
    assert "set this server's clock right (NTP)" in logged


async def test_a_node_clock_stepped_while_a_challenge_is_pending_changes_nothing(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """The node's clock is stepped an hour ahead while a challenge waits (NTP stepping a
    clock, a VM resumed from a snapshot). Before, the node then judged the challenge
    expired and refused the answer; now its time is Redis's, carried on the boot-time
    clock, which no step moves."""
    stamp = tmp_path / "faketime"  # libfaketime reads the offset from it on every call
    env = stepped(stamp)
    node = broker_factory(redis_url=redis_server.url, node="a", env=env)
    rp = await new_rp(node)
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online(client, node.ws_url)
        ch = await client.create_challenge("alice", CTX, ttl=60)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == ch.id
        stamp.write_text("+3600")
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        assert (await client.wait_result(ch, keys, timeout=10)).status is Status.APPROVED
    await dev.close()


def test_the_broker_clock_does_not_go_back_for_a_reads_own_error() -> None:
    """A read of Redis's clock is off by up to half its round trip: a reading a little
    behind the kept one is not taken (a wait until `expires` would wake before it by the
    new reading), one ahead is, and a step back of more than a second is followed."""
    ms = 1_000_000
    assert clock.next_offset(None, 5 * ms) == 5 * ms
    assert clock.next_offset(5 * ms, 7 * ms) == 7 * ms
    assert clock.next_offset(5 * ms, 5 * ms - 40 * ms) == 5 * ms
    assert clock.next_offset(5 * ms, 5 * ms - clock.STEP_BACK_NS) == 5 * ms
    assert clock.next_offset(5 * ms, 5 * ms - clock.STEP_BACK_NS - 1) == 5 * ms - clock.STEP_BACK_NS - 1


def test_a_clock_offset_is_told_to_the_nearest_second() -> None:
    """A node 90 s ahead is measured to within half a round trip either side: 89.99 s
    was told as "1 min 29 s" (cut, not rounded) whenever the reading fell just short, as
    a loaded host's do."""
    assert clock.describe(89_990) == "1 min 30 s ahead of"
    assert clock.describe(-4_040) == "4.0 s behind"
