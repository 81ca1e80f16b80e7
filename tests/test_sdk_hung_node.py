"""A broker node that hangs holding an RP's create (SIGSTOP: the kernel still accepts its
connections, and nothing answers): the SDK sends the create again after `answer_timeout`,
and through a balancer that has taken the hung node out it reaches a live node. The RP
gets that node's challenge, the device approves it, and the SDK verifies the approval.
With `supersede=False` a second create would leave two prompts: it is not sent again.

The balancer is a TcpProxy (support/proxy.py) that the test points away from the hung
node once the first attempt has reached it, as HAProxy's checks do a few seconds in
(docs/operations.md, "Load balancer")."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest
from support import LOCALHOST, BrokerProcess, RedisServer, TcpProxy, add_rp, wait_until
from test_broker_device_ws import CTX, Device, keys_of, online_device

from protocol.challenge import Status
from protocol.frames import AnswerResult, Challenge
from relying_party.errors import BrokerUnavailable
from relying_party.models import Challenge as RpChallenge
from relying_party.one_request import PendingSignIn
from relying_party.sdk import PushAuthClient


def nodes(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> tuple[BrokerProcess, ...]:
    live = broker_factory(redis_url=redis_server.url, node="live")
    hung = broker_factory(redis_url=redis_server.url, node="hung")
    hung.kill(signal.SIGSTOP)  # fixture cleanup ends it with SIGKILL
    return live, hung


async def taken_out_after_first_attempt(proxy: TcpProxy, hung: BrokerProcess, live: BrokerProcess) -> None:
    """Once a request has reached the hung node, new connections go to the live one."""
    await asyncio.to_thread(
        wait_until, lambda: proxy.routed[(LOCALHOST, hung.port)] >= 1, message="the create at the hung node"
    )
    proxy.set_backends([live.port])


async def created(client: PushAuthClient, flow: str) -> tuple[RpChallenge, PendingSignIn | None]:
    """A create by `flow`: create_challenge, or sign_in (the streamed one request)."""
    if flow == "sign_in":
        pending = await client.sign_in("alice", CTX)
        return pending.challenge, pending
    return await client.create_challenge("alice", CTX), None


async def approved(
    dev: Device, client: PushAuthClient, challenge: RpChallenge, pending: PendingSignIn | None,
    keys: dict[str, bytes],
) -> None:  # fmt: skip
    """The device's next frames: `challenge`, then its approval's result; the SDK verifies it."""
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == challenge.id
    await dev.send(dev.answer(pushed, number=challenge.number))
    assert await dev.frame() == AnswerResult(ch=challenge.id, outcome="approved")
    if pending is not None:
        async with pending:
            result = await pending.result(keys, timeout=30)
    else:
        result = await client.wait_result(challenge, keys, timeout=30)
    assert result.status is Status.APPROVED
    await dev.close()


@pytest.mark.parametrize("flow", ["create_challenge", "sign_in"])
async def test_a_create_a_hung_node_holds_is_sent_again_and_approved(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], flow: str
) -> None:
    live, hung = nodes(redis_server, broker_factory)
    rp = add_rp("Hung RP", redis_url=redis_server.url)
    with TcpProxy([hung.port]) as proxy:
        async with (
            PushAuthClient(live.http_url, rp["api_key"]) as direct,
            PushAuthClient(f"http://{LOCALHOST}:{proxy.port}", rp["api_key"], answer_timeout=1.0) as client,
        ):
            dev = await online_device(direct, live.ws_url)
            keys = await keys_of(direct, "alice")
            balancer = asyncio.ensure_future(taken_out_after_first_attempt(proxy, hung, live))
            challenge, pending = await created(client, flow)
            await balancer
            assert client.creates_sent_again >= 1
            assert proxy.routed[(LOCALHOST, live.port)] >= 1
            # Only the live node's challenge reaches the device: the hung one never ran.
            await approved(dev, client, challenge, pending, keys)


async def test_a_create_that_does_not_supersede_is_not_sent_again(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    live, hung = nodes(redis_server, broker_factory)
    rp = add_rp("Hung RP", redis_url=redis_server.url)
    with TcpProxy([hung.port]) as proxy:
        async with PushAuthClient(
            f"http://{LOCALHOST}:{proxy.port}", rp["api_key"], request_timeout=2.0, answer_timeout=1.0
        ) as client:
            balancer = asyncio.ensure_future(taken_out_after_first_attempt(proxy, hung, live))
            with pytest.raises(BrokerUnavailable, match="no answer within 2 s"):
                await client.create_challenge("alice", CTX, supersede=False)
            await balancer
            assert client.creates_sent_again == 0
            assert proxy.routed[(LOCALHOST, live.port)] == 0


@pytest.mark.parametrize(
    ("request_timeout", "answer_timeout"), [(10.0, 0.0), (10.0, -1.0), (10.0, float("nan"))]
)
def test_bad_timeouts_are_refused(request_timeout: float, answer_timeout: float) -> None:
    with pytest.raises(ValueError, match="answer_timeout"):
        PushAuthClient(
            "http://127.0.0.1:1", "key", request_timeout=request_timeout, answer_timeout=answer_timeout
        )


@pytest.mark.parametrize("flow", ["create_challenge", "sign_in"])
async def test_a_create_whose_answer_was_lost_gets_the_challenge_it_made(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], flow: str
) -> None:
    """The create reaches the broker and is carried out, and its answer never comes back:
    the SDK sends it again with the same Idempotency-Key, and the broker answers with the
    challenge the first made. One prompt on the device, nothing superseded; without the
    key the second create would supersede the challenge the device is showing."""
    live = broker_factory(redis_url=redis_server.url, node="live")
    rp = add_rp("Lost RP", redis_url=redis_server.url)
    with TcpProxy([live.port]) as proxy:
        proxy.mute_replies = 1
        async with (
            PushAuthClient(live.http_url, rp["api_key"]) as direct,
            PushAuthClient(f"http://{LOCALHOST}:{proxy.port}", rp["api_key"], answer_timeout=1.0) as client,
        ):
            dev = await online_device(direct, live.ws_url)
            keys = await keys_of(direct, "alice")
            challenge, pending = await created(client, flow)
            assert client.creates_sent_again >= 1
            # The first attempt's challenge, the one the RP holds, and then the answer's
            # result: no second challenge, no cancel of this one.
            await approved(dev, client, challenge, pending, keys)
