"""Events go where the device is (issue 15): a node hears only the users it serves.

Three real broker nodes on one real Redis. Alice's device is on node A, the RP talks
to node B, and node C serves Carol only. A sign-in of Alice's reaches A and B and
not one message of it reaches C: counted by the nodes themselves (/healthz
`events.events_received`, the Prometheus counter pushauth_events_received_total),
never timed. C's silence is proven by order, not by waiting: one Redis delivers the
messages of a subscriber connection in publish order, so once C has acted on an
event for Carol published after Alice's sign-in, anything of Alice's sent to C would
have been counted already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shared_broker import new_rp
from support import DEADLINE, BrokerProcess, RedisServer, wait_until
from test_broker_device_ws import CTX, Device, keys_of, online_device

from protocol.frames import AnswerResult, Challenge
from relying_party.models import EnrollmentStatus
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp


def received(node: BrokerProcess) -> int:
    return int(node.health()[1]["events"]["events_received"])


async def test_a_sign_in_reaches_only_the_nodes_of_its_device_and_its_rp(
    redis_factory: Callable[..., RedisServer],
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    redis_server = redis_factory()
    a, b, c = (broker_factory(redis_url=redis_server.url, node=name) for name in "abc")
    rp = await new_rp(b, "Routing RP")
    async with PushAuthClient(b.http_url, rp["api_key"]) as via_b:
        alice = await online_device(via_b, a.ws_url, "alice")
        carol = await online_device(via_b, c.ws_url, "carol")
        alice_keys = await keys_of(via_b, "alice")
        # A first marker, so that C has acted on every event of the setup before counting.
        first = await via_b.create_challenge("carol", CTX, ttl=120)
        got = await carol.frame()
        assert isinstance(got, Challenge) and got.ch == first.id
        before = {node.node: received(node) for node in (a, b, c)}

        # Alice signs in: device on A, the RP's long-poll on B.
        ch = await via_b.create_challenge("alice", CTX, ttl=120)
        result = asyncio.create_task(via_b.wait_result(ch, alice_keys, timeout=60))
        await asyncio.to_thread(wait_until, lambda: b.long_polls() == 1, message="the long-poll on B")
        pushed = await alice.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == ch.id
        await alice.send(alice.answer(pushed, number=ch.number))
        assert await alice.frame() == AnswerResult(ch=ch.id, outcome="approved")
        assert (await result).status.value == "approved"

        # The marker: a challenge for Carol, whose device is on C (one event: it
        # supersedes nothing).
        marker = await via_b.create_challenge("carol", CTX, ttl=120, supersede=False)
        got = await carol.frame()
        assert isinstance(got, Challenge) and got.ch == marker.id
        after = {node.node: received(node) for node in (a, b, c)}
        delta = {name: after[name] - before[name] for name in after}
        assert delta["c"] == 1, delta  # Carol's challenge, and nothing of Alice's sign-in
        assert delta["a"] >= 1 and delta["b"] >= 1, delta  # the push on A, the result on B
        await via_b.cancel_challenge(marker)

        # Alice's device goes away; a challenge made meanwhile reaches it on node C.
        await alice.close()
        idle = lambda: a.health()[1]["events"]["channels"] == 0  # noqa: E731
        await asyncio.to_thread(wait_until, idle, message="A listens on no channel")
        missed = await via_b.create_challenge("alice", CTX, ttl=120)
        again = await Device.connect(c.ws_url, seed=alice.seed)
        again.cid = alice.cid
        welcome, pending = await again.authenticate()
        assert welcome.pending == 1 and pending[0].ch == missed.id
        await again.send(again.answer(pending[0], number=missed.number))
        assert await again.frame() == AnswerResult(ch=missed.id, outcome="approved")
        assert (await via_b.wait_result(missed, alice_keys, timeout=60)).status.value == "approved"
        await again.close()
        await carol.close()
    for node in (a, b, c):
        node.terminate()
        assert "Traceback" not in node.stderr_path.read_text()


async def test_a_cancellation_on_one_node_answers_the_long_poll_on_another(
    redis_factory: Callable[..., RedisServer],
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """The setup page's long-poll waits on B; the RP withdraws the link through A."""
    redis_server = redis_factory()
    a, b = (broker_factory(redis_url=redis_server.url, node=name) for name in "ab")
    rp = await new_rp(b, "Routing RP")
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as via_a,
        PushAuthClient(b.http_url, rp["api_key"]) as via_b,
    ):
        enrollment = await via_a.create_enrollment("dora", "dora@example", totp=new_totp())
        waiting = asyncio.create_task(via_b.wait_enrollment(enrollment, timeout=60))
        await asyncio.to_thread(wait_until, lambda: b.long_polls() == 1, message="the long-poll on B")
        await via_a.cancel_enrollment(enrollment)
        # Within the test's deadline, half the long-poll's wait: woken, not timed out.
        assert (await asyncio.wait_for(waiting, DEADLINE)).status is EnrollmentStatus.EXPIRED
