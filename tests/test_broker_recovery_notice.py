""" "Was this you?" after a recovery, on the wire against real brokers and Redis: the
old device is asked live (on any node) and on every connect until it answers; "no"
revokes the new credential and mutes push atomically; forged, misdirected, unknown
and replayed answers get an error frame and change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import websockets
from shared_broker import broker, new_rp, rp  # noqa: F401 - fixtures
from support import BrokerProcess, RedisServer

from device_agent import broker_http
from protocol import SUBPROTOCOLS, signing
from protocol.challenge import Status
from protocol.codec import encode
from protocol.frames import (
    Cancel,
    Challenge,
    Enrolled,
    Error,
    Frame,
    RecoveryAnswer,
    RecoveryNotice,
    RecoveryResult,
    Revoked,
    Welcome,
)
from protocol.session import ClientSession, sign_recovery_answer
from protocol.uri import parse as parse_uri
from relying_party.errors import PushBlocked
from relying_party.sdk import PushAuthClient

F = TypeVar("F", bound=Frame)
CTX = {"app": "Portal"}


@dataclass
class Device:
    """One WebSocket, driven frame by frame; frames skipped while waiting are kept."""

    ws: websockets.ClientConnection
    session: ClientSession
    seen: list[Frame] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str) -> Device:
        ws = await websockets.connect(url, max_size=None, subprotocols=list(SUBPROTOCOLS))
        session = ClientSession()
        session.receive(await ws.recv())
        return cls(ws, session)

    async def send(self, frame: Frame | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, bytes) else encode(frame))

    async def frame(self, timeout: float = 5.0) -> Frame:
        got = self.session.receive(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(got)
        return got

    async def next_of(self, cls: type[F], timeout: float = 5.0) -> F:
        deadline = time.monotonic() + timeout
        while True:
            got = await self.frame(max(0.01, deadline - time.monotonic()))
            if isinstance(got, cls):
                return got

    async def quiet(self, seconds: float = 0.3) -> list[Frame]:
        """The frames that arrive within `seconds` (none, usually)."""
        got: list[Frame] = []
        try:
            while True:
                got.append(await self.frame(seconds))
        except TimeoutError:
            return got

    async def enroll(self, uri: str, seed: bytes, name: str, recovery_pk: bytes | None = None) -> str:
        link = parse_uri(uri)
        frame = self.session.enroll_frame(
            rid=1,
            token=link.token,
            seed=seed,
            name=name,
            rp=link.rp,
            binding_secret=link.binding_secret,
            recovery_pk=recovery_pk,
        )
        await self.send(frame)
        got = await self.frame()
        assert isinstance(got, Enrolled), got
        return got.cid

    async def authenticate(
        self, seeds: dict[str, bytes]
    ) -> tuple[Welcome, list[Challenge], list[RecoveryNotice]]:
        await self.send(self.session.authenticate_frame(seeds))
        welcome = await self.frame()
        assert isinstance(welcome, Welcome), welcome
        challenges = [await self.frame() for _ in range(welcome.pending)]
        notices = [await self.frame() for _ in range(welcome.notices)]
        assert all(isinstance(c, Challenge) for c in challenges)
        assert all(isinstance(n, RecoveryNotice) for n in notices), notices
        return welcome, challenges, notices  # type: ignore[return-value]

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Recovered:
    """Alice's old device (connected, authenticated) after a new device recovered."""

    old: Device
    old_cid: str
    old_seed: bytes
    new_cid: str
    new_seed: bytes
    notice: RecoveryNotice


async def recoverable_device(
    client: PushAuthClient, url: str, user: str = "alice"
) -> tuple[Device, str, bytes, bytes]:
    started = await client.create_enrollment(user, f"{user}@example.com", recoverable=True)
    seed, recovery_seed = signing.new_seed(), signing.new_seed()
    dev = await Device.connect(url)
    # A recoverable link: the recovery key is named in `enroll` (bound for the RP).
    cid = await dev.enroll(started.uri or "", seed, "old phone", signing.public_key(recovery_seed))
    await client.confirm_credential(cid)
    await dev.authenticate({cid: seed})
    return dev, cid, seed, recovery_seed


async def recover(
    client: PushAuthClient, url: str, old_cid: str, recovery_seed: bytes, name: str = "new phone"
) -> tuple[str, bytes]:
    seed, rp = signing.new_seed(), (await client.rp()).id
    got = await asyncio.to_thread(
        broker_http.recover, url, rp, old_cid, recovery_seed, seed, signing.new_seed(), name
    )
    return got["id"], seed


async def recovered(client: PushAuthClient, url: str, recover_at: str | None = None) -> Recovered:
    old, old_cid, old_seed, recovery_seed = await recoverable_device(client, url)
    new_cid, new_seed = await recover(client, recover_at or url, old_cid, recovery_seed)
    notice = await old.next_of(RecoveryNotice)
    return Recovered(old, old_cid, old_seed, new_cid, new_seed, notice)


def answer(r: Recovered, decision: str, rid: int = 5, **over: Any) -> RecoveryAnswer:
    seed = over.pop("seed", r.old_seed)
    frame = sign_recovery_answer(r.notice, seed=seed, decision=decision, ts=int(time.time() * 1000), rid=rid)
    return RecoveryAnswer(**{**{k: getattr(frame, k) for k in RecoveryAnswer.SCHEMA}, **over})


async def open_notices(url: str, cid: str, seed: bytes) -> list[RecoveryNotice]:
    dev = await Device.connect(url)
    try:
        return (await dev.authenticate({cid: seed}))[2]
    finally:
        await dev.close()


async def active_ids(client: PushAuthClient) -> set[str]:
    return {c.id for c in await client.list_credentials("alice")}


# -- the question ----------------------------------------------------------------------


async def test_the_old_device_is_asked_live_and_on_every_connect_until_it_confirms(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    before = int(time.time() * 1000)
    r = await recovered(client, broker.ws_url)
    n = r.notice
    assert (n.cid, n.new_cid, n.new_name) == (r.old_cid, r.new_cid, "new phone")
    assert before - 1000 <= n.time <= int(time.time() * 1000) + 1000
    creds = {c.id: c for c in await client.list_credentials("alice")}
    assert creds[r.new_cid].recovered_from == r.old_cid

    # A second connection of the old device gets it after its welcome (counted there).
    second = await Device.connect(broker.ws_url)
    welcome, _, again = await second.authenticate({r.old_cid: r.old_seed})
    assert welcome.notices == 1 and again == [n]
    assert await open_notices(broker.ws_url, r.old_cid, r.old_seed) == [n]

    await r.old.send(answer(r, "confirm", rid=41))
    assert await r.old.next_of(RecoveryResult) == RecoveryResult(n.notice, r.old_cid, "confirmed", 41)
    assert await second.next_of(RecoveryResult) == RecoveryResult(n.notice, r.old_cid, "confirmed", None)
    assert await open_notices(broker.ws_url, r.old_cid, r.old_seed) == []
    # "Yes" changes nothing else: both credentials stay, push is not muted.
    assert await active_ids(client) == {r.old_cid, r.new_cid}
    assert (await client.push_block("alice"))["muted_until"] is None
    await client.create_challenge("alice", CTX)
    await r.old.close()
    await second.close()


async def test_disown_revokes_the_new_credential_mutes_push_and_tells_the_new_device(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    r = await recovered(client, broker.ws_url)
    new = await Device.connect(broker.ws_url)
    welcome, _, notices = await new.authenticate({r.new_cid: r.new_seed})
    assert welcome.accepted == (r.new_cid,) and notices == []  # the new device is not asked
    ch = await client.create_challenge("alice", CTX)
    assert (await new.next_of(Challenge)).ch == ch.id
    assert (await r.old.next_of(Challenge)).ch == ch.id

    await r.old.send(answer(r, "disown", rid=7))
    result = await r.old.next_of(RecoveryResult)
    assert result == RecoveryResult(r.notice.notice, r.old_cid, "disowned", 7)
    assert await new.next_of(Revoked) == Revoked(cid=r.new_cid, reason="disowned", rid=None)
    assert await new.next_of(Cancel) == Cancel(ch=ch.id, reason="revoked")
    # As after a fraud report, the pending sign-in is withdrawn (the old device too drops it).
    assert await r.old.next_of(Cancel) == Cancel(ch=ch.id, reason="withdrawn")
    assert (await client.get_result(ch, {})).status is Status.WITHDRAWN
    assert not any(isinstance(f, RecoveryResult) and f.outcome == "withdrawn" for f in await r.old.quiet())

    assert await active_ids(client) == {r.old_cid}
    block = await client.push_block("alice")
    assert block["muted_until"] is not None and block["muted_until"] != 0
    with pytest.raises(PushBlocked):
        await client.create_challenge("alice", CTX)
    # The new key cannot come back; the notice is gone; the old key still works.
    again = await Device.connect(broker.ws_url)
    welcome, _, _ = await again.authenticate({r.new_cid: r.new_seed})
    assert welcome.rejected == ({"cid": r.new_cid, "code": "credential_revoked"},)
    assert await open_notices(broker.ws_url, r.old_cid, r.old_seed) == []
    await client.lift_push_block("alice")
    await client.create_challenge("alice", CTX)
    await r.old.close()
    await new.close()
    await again.close()


# -- bad answers -------------------------------------------------------------------------


async def expect_error(dev: Device, code: str, ref: str) -> None:
    got = await dev.next_of(Error)
    assert (got.code, got.ref) == (code, ref), got


async def test_forged_misdirected_unknown_and_replayed_answers_change_nothing(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    r = await recovered(client, broker.ws_url)
    new = await Device.connect(broker.ws_url)
    await new.authenticate({r.new_cid: r.new_seed})
    # Another user's recoverable device on the same RP, with its own open notice.
    bob, bob_cid, bob_seed, bob_recovery = await recoverable_device(client, broker.ws_url, "bob")
    await recover(client, broker.ws_url, bob_cid, bob_recovery)
    bob_notice = await bob.next_of(RecoveryNotice)

    # Forged: signed by another key (a stranger's, or the new credential's own).
    await r.old.send(answer(r, "disown", rid=1, seed=signing.new_seed()))
    await expect_error(r.old, "bad_signature", "1")
    await r.old.send(answer(r, "disown", rid=2, seed=r.new_seed))
    await expect_error(r.old, "bad_signature", "2")
    # A valid signature over "confirm" does not pass as "disown".
    await r.old.send(answer(r, "disown", rid=3, sig=answer(r, "confirm").sig))
    await expect_error(r.old, "bad_signature", "3")
    # Unknown notice id.
    await r.old.send(answer(r, "disown", rid=4, notice="rn_doesnotexist"))
    await expect_error(r.old, "unknown_notice", "4")
    # Another credential's notice: bob's, answered with alice's old key, or by bob's
    # device about alice's; and the new device answering the question about itself.
    await r.old.send(answer(r, "disown", rid=5, notice=bob_notice.notice))
    await expect_error(r.old, "unknown_notice", "5")
    forged = sign_recovery_answer(r.notice, seed=bob_seed, decision="disown", ts=1, rid=6)
    await bob.send(RecoveryAnswer(6, r.notice.notice, bob_cid, "disown", 1, forged.sig))
    await expect_error(bob, "unknown_notice", "6")
    await bob.send(answer(r, "disown", rid=7))  # alice's old cid, not proven on bob's connection
    await expect_error(bob, "unknown_credential", "7")
    await new.send(answer(r, "disown", rid=8, cid=r.new_cid, seed=r.new_seed))
    await expect_error(new, "unknown_notice", "8")

    # Nothing changed: both of alice's credentials, no mute, the notices still open.
    assert await active_ids(client) == {r.old_cid, r.new_cid}
    assert (await client.push_block("alice"))["muted_until"] is None
    assert await open_notices(broker.ws_url, r.old_cid, r.old_seed) == [r.notice]
    assert await open_notices(broker.ws_url, bob_cid, bob_seed) == [bob_notice]
    assert not any(isinstance(f, Revoked | RecoveryResult) for f in new.seen + r.old.seen + bob.seen)

    # The real answer works once; the same frame again finds nothing to act on.
    valid = answer(r, "confirm", rid=9)
    await r.old.send(valid)
    assert (await r.old.next_of(RecoveryResult)).outcome == "confirmed"
    await r.old.send(valid)
    await expect_error(r.old, "unknown_notice", "9")
    disown_after = answer(r, "disown", rid=10)
    await r.old.send(disown_after)
    await expect_error(r.old, "unknown_notice", "10")
    assert await active_ids(client) == {r.old_cid, r.new_cid}
    assert (await client.push_block("alice"))["muted_until"] is None
    for dev in (r.old, new, bob):
        await dev.close()


async def test_a_notice_about_a_removed_credential_is_withdrawn_and_cannot_be_answered(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    r = await recovered(client, broker.ws_url)
    await client.revoke_credential(r.new_cid)  # the RP removed the new device itself
    withdrawn = await r.old.next_of(RecoveryResult)
    assert withdrawn == RecoveryResult(r.notice.notice, r.old_cid, "withdrawn", None)
    await r.old.send(answer(r, "disown", rid=3))
    await expect_error(r.old, "credential_revoked", "3")
    assert (await client.push_block("alice"))["muted_until"] is None
    assert await active_ids(client) == {r.old_cid}
    assert await open_notices(broker.ws_url, r.old_cid, r.old_seed) == []
    await r.old.close()


async def test_a_revoked_new_credential_found_on_connect_drops_its_notice(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    old, old_cid, old_seed, recovery_seed = await recoverable_device(client, broker.ws_url)
    await old.close()  # offline during the recovery
    new_cid, _ = await recover(client, broker.ws_url, old_cid, recovery_seed)
    (notice,) = await open_notices(broker.ws_url, old_cid, old_seed)  # asked on its next connect
    assert notice.new_cid == new_cid
    await client.revoke_credential(new_cid)
    assert await open_notices(broker.ws_url, old_cid, old_seed) == []


# -- across nodes ------------------------------------------------------------------------


async def test_the_question_and_the_answer_cross_broker_nodes(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    node_a = broker_factory(redis_url=redis_server.url, data_dir=tmp_path / "a", node="a")
    node_b = broker_factory(redis_url=redis_server.url, data_dir=tmp_path / "b", node="b")
    rp_b = await new_rp(node_b)
    async with PushAuthClient(node_a.http_url, rp_b["api_key"]) as client:
        # The old device is on node b, the recovery is made on node a.
        r = await recovered(client, node_b.ws_url, recover_at=node_a.ws_url)
        new = await Device.connect(node_a.ws_url)
        await new.authenticate({r.new_cid: r.new_seed})
        await r.old.send(answer(r, "disown", rid=2))
        assert (await r.old.next_of(RecoveryResult)).outcome == "disowned"
        assert (await new.next_of(Revoked)).reason == "disowned"  # told on node a
        with pytest.raises(PushBlocked):
            await client.create_challenge("alice", CTX)
        await r.old.close()
        await new.close()
