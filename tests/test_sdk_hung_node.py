"""A broker node that hangs holding an RP's create (SIGSTOP: the kernel still accepts its
connections, and nothing answers): the SDK sends the create again after `answer_timeout`,
and through a balancer that has taken the hung node out it reaches a live node. The RP
gets that node's challenge, the device approves it, and the SDK verifies the approval.
With `supersede=False` it is sent again only to a broker whose creates are keyed (RP API
1.2: the same Idempotency-Key gets the challenge the first made), as this one is.

The balancer is a TcpProxy (support/proxy.py) that the test points away from the hung
node once the first attempt has reached it, as HAProxy's checks do a few seconds in
(docs/operations.md, "Load balancer")."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

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


async def created(
    client: PushAuthClient, flow: str, *, supersede: bool = True
) -> tuple[RpChallenge, PendingSignIn | None]:
    """A create by `flow`: create_challenge, or sign_in (the streamed one request)."""
    if flow == "sign_in":
        pending = await client.sign_in("alice", CTX, supersede=supersede)
        return pending.challenge, pending
    return await client.create_challenge("alice", CTX, supersede=supersede), None


@dataclass
class Rig:
    live: BrokerProcess
    hung: BrokerProcess
    proxy: TcpProxy
    direct: PushAuthClient  # to the live node
    client: PushAuthClient  # through the proxy, answer_timeout 1 s
    dev: Device  # alice's, online at the live node
    keys: dict[str, bytes]


@contextlib.asynccontextmanager
async def rig(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], *, first: str
) -> AsyncIterator[Rig]:
    """A live and a hung node, the proxy sending new connections to the `first` one
    ("hung" or "live"), and alice's device online at the live node."""
    live, hung = nodes(redis_server, broker_factory)
    rp = add_rp("Hung RP", redis_url=redis_server.url)
    with TcpProxy([hung.port if first == "hung" else live.port]) as proxy:
        async with (
            PushAuthClient(live.http_url, rp["api_key"]) as direct,
            PushAuthClient(f"http://{LOCALHOST}:{proxy.port}", rp["api_key"], answer_timeout=1.0) as client,
        ):
            dev = await online_device(direct, live.ws_url)
            yield Rig(live, hung, proxy, direct, client, dev, await keys_of(direct, "alice"))


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
    async with rig(redis_server, broker_factory, first="hung") as r:
        balancer = asyncio.ensure_future(taken_out_after_first_attempt(r.proxy, r.hung, r.live))
        challenge, pending = await created(r.client, flow)
        await balancer
        assert r.client.creates_sent_again >= 1
        assert r.proxy.routed[(LOCALHOST, r.live.port)] >= 1
        # Only the live node's challenge reaches the device: the hung one never ran.
        await approved(r.dev, r.client, challenge, pending, r.keys)


@pytest.mark.parametrize("flow", ["create_challenge", "sign_in"])
async def test_a_create_that_keeps_other_prompts_is_sent_again_to_a_keyed_broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], flow: str
) -> None:
    """With `supersede=False` a second create on an older broker would leave two prompts;
    this broker says RP API 1.2 (keyed creates), so the SDK sends it again all the same:
    the device gets the new prompt once, and the earlier one stays pending."""
    async with rig(redis_server, broker_factory, first="live") as r:
        # The first such create reads the API version, at the live node.
        earlier = await r.client.create_challenge("alice", CTX, supersede=False)
        pushed = await r.dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == earlier.id
        r.proxy.set_backends([r.hung.port])
        r.proxy.drop_connections()  # the client's kept-alive connection to the live node too
        balancer = asyncio.ensure_future(taken_out_after_first_attempt(r.proxy, r.hung, r.live))
        challenge, pending = await created(r.client, flow, supersede=False)
        await balancer
        assert r.client.creates_sent_again >= 1 and challenge.id != earlier.id
        await approved(r.dev, r.client, challenge, pending, r.keys)
        still = await r.direct.get_result(earlier, r.keys)
        assert still.status is Status.PENDING


async def test_a_create_that_keeps_other_prompts_is_sent_once_when_the_version_is_unknown(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """The version read reaches the hung node too: nothing learned, so the create is sent
    once, with what is left of the request timeout, and never to the live node."""
    live, hung = nodes(redis_server, broker_factory)
    rp = add_rp("Hung RP", redis_url=redis_server.url)
    with TcpProxy([hung.port]) as proxy:
        async with PushAuthClient(
            f"http://{LOCALHOST}:{proxy.port}", rp["api_key"], request_timeout=2.0, answer_timeout=1.0
        ) as client:
            with pytest.raises(BrokerUnavailable, match="no answer within 1 s"):
                await client.create_challenge("alice", CTX, supersede=False)
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


async def test_a_result_read_with_no_wait_left_gives_a_hung_node_the_answer_timeout(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """wait_result's last read (its `timeout` spent, or the challenge at its expiry) asks
    with no long-poll. It got the whole request timeout (10 s by default) rather than the
    answer timeout, so on a hung node wait_result(timeout=T), and the one request's
    result(timeout=T) which ends in that read, held a sign-in page T + 10 s (an outsider's
    trial measured 5 + 4 s with request_timeout=4). Now every read of wait_result is given
    up `answer_timeout` after its wait; the error says so."""
    live, hung = nodes(redis_server, broker_factory)
    rp = add_rp("Hung RP", redis_url=redis_server.url)
    async with (
        PushAuthClient(live.http_url, rp["api_key"]) as direct,
        PushAuthClient(hung.http_url, rp["api_key"], request_timeout=30, answer_timeout=1.0) as stuck,
    ):
        dev = await online_device(direct, live.ws_url)
        challenge = await direct.create_challenge("alice", CTX)
        keys = await keys_of(direct, "alice")
        with pytest.raises(BrokerUnavailable, match=r"no answer within 1 s$"):
            await stuck.wait_result(challenge, keys, timeout=0)
        with pytest.raises(BrokerUnavailable, match=r"no answer within 1 s$"):
            await PendingSignIn(stuck, challenge, None).result(keys, timeout=0)
        await dev.close()
