"""Devices per user (DESIGN invariant 13; broker/credential_cap.py; RP API 1.10, 1.11).

Every active credential of a user gets each of that user's challenges, so without a cap
one user's sign-in could fan out to as many devices as the RP's enrollment rate allowed
it to add. On two real broker nodes sharing one real Redis: the RP's `max_credentials`
refuses a new enrollment for a user at the cap (409, nothing stored), a device's
`enroll` past it (`error` too_many_credentials, the token kept for later), and of two
devices enrolling at once one below the cap on two nodes exactly one gets in; a removal
frees a place at once; other users are not touched. A device refused at the cap is
written on its enrollment (`refused`), and the RP's long-poll on it, on the other node,
answers at once (API 1.11)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from e2e_helpers import agent, agent_env  # noqa: F401  (agent_env: autouse)
from shared_broker import two_nodes_on_one_redis
from support import DEADLINE, BrokerProcess, assert_cli_error, new_rp, store_policy, wait_until
from test_broker_device_ws import Device

from device_agent.store import AccountStore
from protocol.frames import Enrolled, Error, Ping, Pong, Revoke, Revoked
from protocol.uri import parse as parse_uri
from relying_party.errors import TooManyCredentials
from relying_party.models import Enrollment
from relying_party.sdk import PushAuthClient


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two broker nodes on one Redis, for the module (each test has RPs of its own)."""
    yield from two_nodes_on_one_redis(tmp_path_factory, "cap")


def everything(url: str) -> dict[bytes, Any]:
    """Every key of the broker's with its value, as they are now."""
    out: dict[bytes, Any] = {}
    with redis.Redis.from_url(url) as r:
        for key in r.scan_iter(match="pa:*", count=1000):
            kind = r.type(key)
            if kind == b"hash":
                out[key] = r.hgetall(key)
            elif kind == b"string":
                out[key] = r.get(key)
            elif kind == b"set":
                out[key] = r.smembers(key)
            elif kind == b"zset":
                out[key] = r.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = kind
    return out


def enrollment_key(url: str, eid: str) -> bytes:
    """The enrollment's hash, found by its id (whatever the key layout's tag)."""
    with redis.Redis.from_url(url) as r:
        (key,) = list(r.scan_iter(match=f"pa:*:enr:{eid}", count=1000))
        return bytes(key)


async def send_enroll(dev: Device, enrollment: Enrollment, rid: int = 7) -> Any:
    link = parse_uri(enrollment.uri or "")  # bound to the link as the agent does
    frame = dev.session.enroll_frame(
        rid=rid,
        token=link.token,
        seed=dev.seed,
        name=f"dev{rid}",
        rp=link.rp,
        binding_secret=link.binding_secret,
    )
    await dev.send(frame)
    return await dev.frame()


async def still_open(dev: Device) -> None:
    await dev.send(Ping(rid=99))
    assert await dev.frame() == Pong(rid=99)


async def test_a_user_at_the_cap_gets_no_new_device_until_one_is_removed(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    a, b = nodes
    url = a.redis_url or ""
    rp = await new_rp(a, "Capped")
    await store_policy(a, rp["id"], max_credentials=2)
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as on_a,
        PushAuthClient(b.http_url, rp["api_key"]) as on_b,
    ):
        assert (await on_b.policy())["max_credentials"] == 2
        # Three setups while alice has no device: each was allowed when it was made.
        setups = [await node.create_enrollment("alice", "alice@example.com") for node in (on_a, on_b, on_a)]
        first, second = await Device.connect(a.ws_url), await Device.connect(b.ws_url)
        await first.enroll(setups[0].uri or "")
        await second.enroll(setups[1].uri or "")

        # The third device, on the other node: refused, told why, its connection kept,
        # no credential stored, and its setup still pending (the same QR code works
        # later); the refusal is written on the enrollment, and only there (API 1.11).
        third = await Device.connect(a.ws_url)
        before = everything(url)
        refused = await send_enroll(third, setups[2])
        assert isinstance(refused, Error), refused
        assert (refused.code, refused.ref) == ("too_many_credentials", "7")
        assert "as many devices at this service as its policy allows (2, max_credentials)" in refused.message
        await still_open(third)
        after = everything(url)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed == {enrollment_key(url, setups[2].id)}, "a refused enroll changed the store"
        key = enrollment_key(url, setups[2].id)
        assert {k: v for k, v in after[key].items() if before[key].get(k) != v}.keys() == {
            b"refused",
            b"refused_at",
            b"refused_max",
        }
        assert (await on_b.get_enrollment(setups[2])).status == "pending"
        before = after

        # A new setup for her is refused before any QR code is shown, on either node, with
        # the limit said; nothing is stored. Bob, at the same RP, is not touched.
        for node in (on_a, on_b):
            with pytest.raises(TooManyCredentials) as caught:
                await node.create_enrollment("alice", "alice@example.com")
            assert (caught.value.status, caught.value.code) == (409, "too_many_credentials")
            assert caught.value.max_credentials == 2
        assert everything(url) == before, "a refused create stored something"
        bob = await on_a.create_enrollment("bob", "bob@example.com")
        await (await Device.connect(b.ws_url)).enroll(bob.uri or "")

        # The RP removes one of her devices: the third one's same frame now gets in.
        await on_b.revoke_credential(second.cid)
        enrolled = await send_enroll(third, setups[2])
        assert isinstance(enrolled, Enrolled), enrolled
        assert len(await on_a.list_credentials("alice")) == 2
        with pytest.raises(TooManyCredentials):
            await on_b.create_enrollment("alice", "alice@example.com")

        # A device removing its own account frees a place too.
        await first.authenticate()
        await first.send(Revoke(rid=3, cid=first.cid))
        assert isinstance(await first.frame(), Revoked)
        assert len(await on_a.list_credentials("alice")) == 1
        await on_a.create_enrollment("alice", "alice@example.com")
        for dev in (first, second, third):
            await dev.close()


async def test_a_device_refused_at_the_cap_answers_the_rps_long_poll_on_the_other_node(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """The RP's setup page waits on B; the device is refused on A: the long-poll answers
    then, the enrollment still pending, with the refusal and the cap said. The same link
    works after a removal, and the refusal stays readable as the latest one."""
    a, b = nodes
    rp = await new_rp(a, "Heard")
    await store_policy(a, rp["id"], max_credentials=1)
    headers = {"Authorization": f"Bearer {rp['api_key']}"}
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as client,
        aiohttp.ClientSession(headers=headers) as http,
    ):
        setups = [await client.create_enrollment("erin", "erin@example.com") for _ in range(2)]
        first = await Device.connect(b.ws_url)
        await first.enroll(setups[0].uri or "")

        async def read(wait: int) -> dict[str, Any]:
            async with http.get(f"{b.http_url}/v1/enrollments/{setups[1].id}?wait={wait}") as r:
                assert r.status == 200, await r.text()
                return dict(await r.json())

        assert (await read(0))["refused"] is None
        waiting = asyncio.create_task(read(60))
        await asyncio.to_thread(wait_until, lambda: b.long_polls() == 1, message="the long-poll on B")
        second = await Device.connect(a.ws_url)
        error = await send_enroll(second, setups[1])
        assert isinstance(error, Error) and error.code == "too_many_credentials", error
        # Within the test's deadline, well before the long-poll's wait: woken, not timed out.
        answered = await asyncio.wait_for(waiting, DEADLINE)
        assert answered["status"] == "pending" and answered["credential"] is None
        refusal = answered["refused"]
        assert refusal is not None
        assert refusal.keys() == {"code", "at", "max_credentials"}
        assert (refusal["code"], refusal["max_credentials"]) == ("too_many_credentials", 1)
        assert refusal == (await read(0))["refused"]

        # After a removal the same link gets in; the enrollment completes, and its last
        # refusal stays as it was.
        await client.revoke_credential(first.cid)
        assert isinstance(await send_enroll(second, setups[1], rid=8), Enrolled)
        done = await read(0)
        assert done["status"] == "completed" and done["refused"] == refusal
        for dev in (first, second):
            await dev.close()


async def test_the_sdks_wait_enrollment_returns_with_the_refusal(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """The SDK's wait on A returns when the device is refused on B (not at its timeout),
    with `refused`; given that enrollment back, it waits on for news, and completes."""
    a, b = nodes
    rp = await new_rp(a, "Told")
    await store_policy(a, rp["id"], max_credentials=1)
    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        setups = [await client.create_enrollment("fred", "fred@example.com") for _ in range(2)]
        first = await Device.connect(a.ws_url)
        await first.enroll(setups[0].uri or "")
        waiting = asyncio.create_task(client.wait_enrollment(setups[1], timeout=2 * DEADLINE))
        await asyncio.to_thread(wait_until, lambda: a.long_polls() == 1, message="the long-poll on A")
        second = await Device.connect(b.ws_url)
        assert isinstance(await send_enroll(second, setups[1]), Error)
        told = await asyncio.wait_for(waiting, DEADLINE)
        assert told.status == "pending" and told.refused is not None
        assert (told.refused.code, told.refused.max_credentials) == ("too_many_credentials", 1)
        # Waiting on with what it returned: the next news is the completion.
        waiting = asyncio.create_task(client.wait_enrollment(told, timeout=2 * DEADLINE))
        await asyncio.to_thread(wait_until, lambda: a.long_polls() == 1, message="the next long-poll on A")
        await client.revoke_credential(first.cid)
        assert isinstance(await send_enroll(second, setups[1], rid=8), Enrolled)
        done = await asyncio.wait_for(waiting, DEADLINE)
        assert done.completed and done.credential is not None
        for dev in (first, second):
            await dev.close()


async def test_two_devices_enrolling_at_once_one_below_the_cap_on_two_nodes_one_gets_in(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """The count at creation cannot decide this: both setups were made with room for
    one; the count in the enrolling script (atomic, in the user's slot) does."""
    a, b = nodes
    rp = await new_rp(a, "Raced")
    await store_policy(a, rp["id"], max_credentials=1)
    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        setups = [await client.create_enrollment("carol", "carol@example.com") for _ in range(2)]
        devices = [await Device.connect(a.ws_url), await Device.connect(b.ws_url)]
        replies = await asyncio.gather(*(send_enroll(d, s) for d, s in zip(devices, setups, strict=True)))
        assert sorted(type(r).__name__ for r in replies) == ["Enrolled", "Error"], replies
        (error,) = [r for r in replies if isinstance(r, Error)]
        assert error.code == "too_many_credentials"
        (listed,) = await client.list_credentials("carol")
        assert [listed.id] == [r.cid for r in replies if isinstance(r, Enrolled)]
        for dev in devices:
            await dev.close()


async def test_the_agent_says_what_to_do_and_keeps_nothing(
    nodes: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    a, _b = nodes
    rp = await new_rp(a, "Full House")
    await store_policy(a, rp["id"], max_credentials=1)
    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        setups = [await client.create_enrollment("dave", "dave@example.com") for _ in range(2)]
        await (await Device.connect(a.ws_url)).enroll(setups[0].uri or "")
        home = tmp_path / "agent"
        result = await asyncio.to_thread(agent, home, "enroll", setups[1].uri or "")
        line = assert_cli_error(result, contains="the service allows no more devices for this account")
        assert result.returncode == 1 and "use the same setup link or QR code again" in line
        assert AccountStore(home).load() == []
        assert len(await client.list_credentials("dave")) == 1
