"""Invariant 8, push fatigue protection, on a real broker: pushes since the last
successful sign-in are capped and rate-limited; a fraud report mutes push for the
user until the RP lifts it or the mute times out; a sign-in resets the count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, get_type_hints

import pytest
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, set_policy, until
from test_broker_device_ws import CTX, Device, online_device

from protocol.frames import AnswerResult, Cancel, Challenge
from relying_party.errors import PushBlocked, RateLimited
from relying_party.models import Challenge as RpChallenge
from relying_party.models import PushBlock
from relying_party.sdk import PushAuthClient


@pytest.fixture
def policy_broker(redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    return broker_factory(redis_url=redis_server.url)


@pytest.fixture
async def client(policy_broker: BrokerProcess) -> AsyncIterator[PushAuthClient]:
    rp: dict[str, Any] = await new_rp(policy_broker, "Fatigue RP")
    flags = ["--max-pushes", "4", "--max-pushes-per-minute", "3", "--fraud-mute", "0"]
    set_policy(rp["id"], *flags, redis_url=str(policy_broker.redis_url))
    async with PushAuthClient(policy_broker.http_url, rp["api_key"]) as c:
        yield c


async def answer(dev: Device, decision: str, number: str = "") -> str:
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    await dev.send(dev.answer(pushed, decision=decision, number=number))
    result = await dev.frame()
    assert isinstance(result, AnswerResult), result
    return result.outcome


async def test_rate_limit_and_a_sign_in_resets_it(
    client: PushAuthClient, policy_broker: BrokerProcess
) -> None:
    dev = await online_device(client, policy_broker.ws_url)
    for _ in range(3):
        await client.create_challenge("alice", CTX)
        assert await answer(dev, "deny") == "denied"
    with pytest.raises(RateLimited) as refused:
        await client.create_challenge("alice", CTX)
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 60
    assert (await client.push_block("alice"))["pushes_since_sign_in"] == 3
    # Another user of the same RP is not affected.
    other = await online_device(client, policy_broker.ws_url, user="bob")
    ch = await client.create_challenge("bob", CTX)
    assert await answer(other, "approve", ch.number) == "approved"
    # A successful sign-in (here after the RP lifted the block) resets the count.
    await client.lift_push_block("alice")
    ch = await client.create_challenge("alice", CTX)
    assert await answer(dev, "approve", ch.number) == "approved"
    state = await client.push_block("alice")
    assert state["pushes_since_sign_in"] == 0
    assert state["blocked"] is False
    # The SDK's type names exactly the broker's fields.
    assert (
        set(state) == PushBlock.__required_keys__ and get_type_hints(client.push_block)["return"] is PushBlock
    )


async def test_cap_since_the_last_sign_in(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(redis_url=redis_server.url)
    rp = await new_rp(broker, "Cap RP")
    set_policy(rp["id"], "--max-pushes", "2", redis_url=redis_server.url)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        first = await client.create_challenge("alice", CTX, ttl=10)
        assert isinstance(await dev.frame(), Challenge)  # never answered
        second = await client.create_challenge("alice", CTX, ttl=10)
        assert await dev.frame() == Cancel(ch=first.id, reason="superseded")  # "send again"
        assert isinstance(await dev.frame(), Challenge)
        with pytest.raises(PushBlocked) as refused:
            await client.create_challenge("alice", CTX)
        assert "since the last successful sign-in" in refused.value.detail
        state = await client.push_block("alice")
        assert state["blocked"] is True
        assert state["pushes_since_sign_in"] == 2
        # The block withdraws the prompt still pending; the refused one was not stored.
        assert await dev.frame() == Cancel(ch=second.id, reason="withdrawn")
        with pytest.raises(asyncio.TimeoutError):
            await dev.frame(timeout=0.3)


async def test_fraud_report_mutes_push_until_the_rp_lifts_it(
    client: PushAuthClient, policy_broker: BrokerProcess
) -> None:
    dev = await online_device(client, policy_broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    assert await answer(dev, "fraud") == "reported"
    # The RP learns of the report from the result itself.
    result = await client.get_result(ch, {c.id: c.public_key for c in await client.list_credentials("alice")})
    assert result.status.value == "reported"
    with pytest.raises(PushBlocked) as refused:
        await client.create_challenge("alice", CTX)
    assert "fraud report" in refused.value.detail
    assert (refused.value.status, refused.value.retry_after) == (409, None)  # no set end
    assert (await client.push_block("alice"))["muted_until"] == -1
    await client.lift_push_block("alice")
    ch = await client.create_challenge("alice", CTX)
    assert await answer(dev, "approve", ch.number) == "approved"


async def test_fraud_mute_times_out(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(redis_url=redis_server.url)
    rp = await new_rp(broker, "Mute RP")
    set_policy(rp["id"], "--fraud-mute", "5", redis_url=redis_server.url)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        await client.create_challenge("alice", CTX)
        assert await answer(dev, "fraud") == "reported"
        with pytest.raises(PushBlocked) as refused:
            await client.create_challenge("alice", CTX)
        # A mute with a set end says when (Retry-After), still a 409 push_blocked.
        assert refused.value.status == 409 and refused.value.retry_after in range(1, 6)
        muted_until = (await client.push_block("alice"))["muted_until"]
        assert str(muted_until) in refused.value.detail

        async def after_the_mute() -> RpChallenge | None:
            try:  # the broker's clock decides when it ends: asked until it has
                return await client.create_challenge("alice", CTX)
            except PushBlocked:
                return None

        ch = await until(after_the_mute, interval=0.2, message="the mute's end")
        assert isinstance(ch, RpChallenge)
        assert await answer(dev, "approve", ch.number) == "approved"
