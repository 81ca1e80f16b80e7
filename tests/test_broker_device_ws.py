"""The device WebSocket against a real broker process: bad input is refused with a
protocol close code or an error frame, changes nothing, and leaves other devices
working; and the invariants of DESIGN.md 1-7 hold on the wire."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import redis
import websockets
from shared_broker import broker, new_rp, rp  # noqa: F401 - fixtures
from support import BrokerProcess, RedisServer, add_rp, free_port, wait_until
from support.metrics import scrape, value

from broker import keys, webpush
from protocol import SUBPROTOCOLS, signing
from protocol.challenge import Status
from protocol.codec import encode
from protocol.frames import (
    Answer,
    AnswerResult,
    Authenticate,
    Cancel,
    Challenge,
    Enrolled,
    Error,
    Frame,
    Ping,
    Pong,
    PushSubscribe,
    PushSubscribed,
    Revoked,
    Welcome,
)
from protocol.session import ClientSession, sign_answer
from protocol.uri import parse as parse_uri
from relying_party.models import Challenge as RpChallenge
from relying_party.sdk import PushAuthClient

CTX = {"app": "Portal", "ip": "198.51.100.4", "location": "Lyon"}


@dataclass
class Device:
    """One credential on a real WebSocket, driven frame by frame."""

    ws: websockets.ClientConnection
    session: ClientSession
    seed: bytes
    cid: str = ""

    @classmethod
    async def connect(cls, url: str, seed: bytes | None = None, open_timeout: float = 10.0) -> Device:
        ws = await websockets.connect(
            url, max_size=None, subprotocols=list(SUBPROTOCOLS), open_timeout=open_timeout
        )
        session = ClientSession()
        session.receive(await ws.recv())
        return cls(ws, session, seed or signing.new_seed())

    async def send(self, data: bytes | Frame) -> None:
        await self.ws.send(data if isinstance(data, bytes) else encode(data))

    async def frame(self, timeout: float = 5.0) -> Frame:
        return self.session.receive(await asyncio.wait_for(self.ws.recv(), timeout))

    async def closed(self, timeout: float = 5.0) -> tuple[int, str]:
        close = None
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            close = exc.rcvd
        assert close is not None, "the broker did not send a close frame"
        return close.code, close.reason

    async def enroll(self, uri: str, name: str = "dev") -> Enrolled:
        token = parse_uri(uri).token
        await self.send(self.session.enroll_frame(rid=7, token=token, seed=self.seed, name=name))
        got = await self.frame()
        assert isinstance(got, Enrolled), got
        self.cid = got.cid
        return got

    async def authenticate(self) -> tuple[Welcome, list[Challenge]]:
        await self.send(self.session.authenticate_frame({self.cid: self.seed}))
        welcome = await self.frame()
        assert isinstance(welcome, Welcome), welcome
        pending = [await self.frame() for _ in range(welcome.pending)]
        return welcome, pending  # type: ignore[return-value]

    def answer(self, ch: Challenge, decision: str = "approve", number: str = "", **over: Any) -> Answer:
        frame = sign_answer(ch, seed=self.seed, decision=decision, number=number, ts=int(time.time() * 1000))
        return frame if not over else Answer(**{**{k: getattr(frame, k) for k in Answer.SCHEMA}, **over})

    async def close(self) -> None:
        await self.ws.close()


async def online_device(client: PushAuthClient, url: str, user: str = "alice") -> Device:
    enrollment = await client.create_enrollment(user, f"{user}@example.com")
    dev = await Device.connect(url)
    await dev.enroll(enrollment.uri or "")
    await client.confirm_credential(dev.cid)  # setup done: it gets ordinary sign-ins
    await dev.authenticate()
    return dev


async def test_a_device_confirmed_while_connected_gets_ordinary_sign_ins(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """The web authenticator's setup: enroll on its open connection, the test push, then
    the RP confirms; the next (untargeted) sign-in reaches that same connection."""
    enrollment = await client.create_enrollment("zed", "zed@example.com")
    dev = await Device.connect(broker.ws_url)
    await dev.enroll(enrollment.uri or "")
    await dev.authenticate()
    test = await client.create_challenge("zed", CTX, credential_id=dev.cid)
    await approve_push(dev, test)
    await client.confirm_credential(dev.cid)
    ch = await client.create_challenge("zed", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == ch.id, pushed


async def keys_of(client: PushAuthClient, user: str) -> dict[str, bytes]:
    return {c.id: c.public_key for c in await client.list_credentials(user)}


async def approve_push(dev: Device, ch: RpChallenge) -> None:
    """`dev`'s next frame is a push; it approves with the RP's number and gets approved."""
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    await dev.send(dev.answer(pushed, number=ch.number))
    assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")


# -- structural errors close the connection with a protocol code -------------------

BAD_FRAMES: dict[str, tuple[bytes | str, int, str]] = {
    "not-msgpack": (b"\xc1\xc1\xc1", 4400, "malformed"),
    "trailing-bytes": (encode(Authenticate(creds=())) + b"\x00", 4400, "malformed"),
    "not-a-map": (msgpack.packb([1, "authenticate"]), 4400, "malformed"),
    "text-message": ("hello", 4400, "malformed"),
    "wrong-field-type": (msgpack.packb({"v": 2, "t": "authenticate", "creds": "all"}), 4400, "invalid_field"),
    "bool-as-int": (msgpack.packb({"v": True, "t": "authenticate", "creds": []}), 4400, "malformed"),
    "other-version": (
        msgpack.packb({"v": 3, "t": "authenticate", "creds": []}),
        4406,
        "unsupported_version",
    ),
    "oversized": (msgpack.packb({"v": 1, "t": "authenticate", "pad": b"x" * 40000}), 4413, "frame_too_large"),
    "broker-frame": (encode(Welcome(accepted=(), rejected=(), pending=0)), 4400, "unexpected_frame"),
    # A shape fault before anything else (push sent or not, authenticated or not).
    "push-subscribe-half": (
        msgpack.packb(
            {
                "v": 2,
                "t": "push_subscribe",
                "rid": 1,
                "cids": [],
                "endpoint": "https://p.example/x",
                "p256dh": None,
                "auth": None,
            }
        ),
        4400,
        "invalid_field",
    ),
    "answer-first": (
        encode(Answer(ch="c", cid="c", decision="deny", number="", ts=1, ctx_hash=b"h" * 32, sig=b"s" * 64)),
        4401,
        "not_authenticated",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_structural_errors_close_with_a_code_and_change_nothing(
    case: str, client: PushAuthClient, broker: BrokerProcess
) -> None:
    good = await online_device(client, broker.ws_url)
    bad = await Device.connect(broker.ws_url)
    data, code, reason = BAD_FRAMES[case]
    await bad.ws.send(data)
    assert await bad.closed() == (code, reason)
    # The other connection is unaffected and sign-in still works end to end.
    ch = await client.create_challenge("alice", CTX)
    pushed = await good.frame()
    assert isinstance(pushed, Challenge)
    assert pushed.ch == ch.id
    await good.send(good.answer(pushed, number=ch.number))
    assert await good.frame() == AnswerResult(ch=ch.id, outcome="approved")
    assert (await client.wait_result(ch, await keys_of(client, "alice"), timeout=5)).approved


async def test_a_ping_frame_gets_a_pong_before_and_after_authentication(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """`ping` (added within version 2): a page cannot send WebSocket pings, so it asks
    with a frame whether its connection still reaches the broker. The pong names the
    ping's rid, on a connection that has proven nothing yet as on an authenticated one."""
    dev = await Device.connect(broker.ws_url)
    await dev.send(encode(Ping(rid=7)))
    assert await dev.frame() == Pong(rid=7)
    await dev.send(encode(Authenticate(creds=())))
    assert isinstance(await dev.frame(), Welcome)
    await dev.send(encode(Ping(rid=2**31 - 1)))
    assert await dev.frame() == Pong(rid=2**31 - 1)


async def test_unknown_frame_types_and_keys_are_not_fatal(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """Version 2: a frame type the broker does not know gets an `error` unknown_frame
    (ref: its rid, if it had one) and the connection stays; keys a frame does not
    define are ignored."""
    dev = await Device.connect(broker.ws_url)
    await dev.send(msgpack.packb({"v": 2, "t": "launch_missiles", "rid": 5}))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("unknown_frame", "5")
    await dev.send(msgpack.packb({"v": 2, "t": "authenticate", "creds": [], "x": 1}))
    assert isinstance(await dev.frame(), Welcome)


async def test_a_frame_past_the_transport_limit_is_refused(broker: BrokerProcess) -> None:
    dev = await Device.connect(broker.ws_url)
    await dev.ws.send(b"\x00" * 200_000)
    code, _ = await dev.closed()
    assert code == 1009  # the WebSocket layer's "message too big"


# -- refused answers: an error frame, the challenge unchanged ----------------------


async def test_forged_signature_is_refused_and_changes_nothing(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    forged = sign_answer(pushed, seed=signing.new_seed(), decision="approve", number=ch.number, ts=1)
    await dev.send(forged)
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_signature", ch.id)
    result = await client.get_result(ch, await keys_of(client, "alice"))
    assert result.status is Status.PENDING
    # The real key still answers: nothing was used up.
    await dev.send(dev.answer(pushed, number=ch.number))
    assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")


async def test_replayed_answer_changes_nothing(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    answer = dev.answer(pushed, decision="deny")
    await dev.send(answer)
    assert await dev.frame() == AnswerResult(ch=ch.id, outcome="denied")
    # The same signed bytes again, on this connection and on a fresh one: the recorded
    # outcome again (a retry after a lost reply), nothing new recorded.
    await dev.send(answer)
    assert await dev.frame() == AnswerResult(ch=ch.id, outcome="denied")
    other = await Device.connect(broker.ws_url, seed=dev.seed)
    other.cid = dev.cid
    await other.authenticate()
    await other.send(answer)
    assert await other.frame() == AnswerResult(ch=ch.id, outcome="denied")
    # Another decision, validly signed, is refused.
    await other.send(other.answer(pushed, decision="fraud"))
    err = await other.frame()
    assert isinstance(err, Error)
    assert err.code == "already_answered"
    assert (await client.get_result(ch, await keys_of(client, "alice"))).status is Status.DENIED


async def test_answer_after_expiry_is_refused(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX, ttl=10)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    cancel = await dev.frame(timeout=15)  # the broker says it expired
    assert cancel == Cancel(ch=ch.id, reason="expired")
    await dev.send(dev.answer(pushed, number=ch.number))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert err.code in ("challenge_expired", "already_answered")
    assert (await client.get_result(ch, await keys_of(client, "alice"))).status is Status.EXPIRED


async def test_answer_to_another_users_challenge_is_refused(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    alice = await online_device(client, broker.ws_url, "alice")
    mallory = await online_device(client, broker.ws_url, "mallory")
    ch = await client.create_challenge("alice", CTX)
    pushed = await alice.frame()
    assert isinstance(pushed, Challenge)
    # Mallory signs alice's challenge with her own (active, authenticated) key.
    stolen = Challenge(**{**{k: getattr(pushed, k) for k in Challenge.SCHEMA}, "cid": mallory.cid})
    await mallory.send(mallory.answer(stolen, number=ch.number))
    err = await mallory.frame()
    assert isinstance(err, Error)
    assert err.code == "unknown_challenge"
    # Nor may she use alice's credential id on her connection.
    await mallory.send(mallory.answer(pushed, number=ch.number))
    err = await mallory.frame()
    assert isinstance(err, Error)
    assert err.code == "unknown_credential"
    assert (await client.get_result(ch, await keys_of(client, "alice"))).status is Status.PENDING


async def test_invariant_5_another_rp_reaches_none_of_this_rps_objects(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """Another RP at the same broker, whose own user is also called alice, neither reads,
    cancels, confirms nor removes this RP's challenge, enrollment or credential by id
    (each is a 404, as a missing one), and its alice's device cannot answer our alice's
    challenge; everything stays as it was (docs/protocol.md section 20, "Another RP")."""
    ours = await online_device(client, broker.ws_url, "alice")
    ch = await client.create_challenge("alice", CTX)
    pushed = await ours.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == ch.id
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    other_rp = await new_rp(broker, "Other RP")
    async with PushAuthClient(broker.http_url, other_rp["api_key"]) as other:
        theirs = await online_device(other, broker.ws_url, "alice")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {other_rp['api_key']}"}) as http:
            for method, path in [
                ("GET", f"/v1/challenges/{ch.id}"),
                ("DELETE", f"/v1/challenges/{ch.id}"),
                ("GET", f"/v1/enrollments/{enrollment.id}"),
                ("DELETE", f"/v1/enrollments/{enrollment.id}"),
                ("POST", f"/v1/credentials/{ours.cid}/confirm"),
                ("DELETE", f"/v1/credentials/{ours.cid}"),
            ]:
                async with http.request(method, broker.http_url + path) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 404 and body["code"] == "not_found", (method, path, body)
        # Its device signs our challenge, over our RP id, with its own active key.
        stolen = Challenge(**{**{k: getattr(pushed, k) for k in Challenge.SCHEMA}, "cid": theirs.cid})
        await theirs.send(theirs.answer(stolen, number=ch.number))
        err = await theirs.frame()
        assert isinstance(err, Error) and err.code == "unknown_challenge", err
        assert [c.id for c in await other.list_credentials("alice")] == [theirs.cid]
    assert (await client.get_result(ch, await keys_of(client, "alice"))).status is Status.PENDING
    assert [c.id for c in await client.list_credentials("alice")] == [ours.cid]
    assert (await client.get_enrollment(enrollment)).status.value == "pending"
    await ours.send(ours.answer(pushed, number=ch.number))  # and our device still answers it
    assert await ours.frame() == AnswerResult(ch=ch.id, outcome="approved")


async def test_answer_over_another_context_is_refused(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    shown = Challenge(**{**{k: getattr(pushed, k) for k in Challenge.SCHEMA}, "ctx": {"app": "Harmless"}})
    await dev.send(dev.answer(shown, number=ch.number))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert err.code == "context_mismatch"
    assert (await client.get_result(ch, await keys_of(client, "alice"))).status is Status.PENDING


# -- invariants ---------------------------------------------------------------------


async def test_invariant_1_first_answer_wins_across_nodes(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    a = broker_factory(redis_url=redis_server.url, node="a")
    b = broker_factory(redis_url=redis_server.url, node="b")
    rp = add_rp("Race RP", redis_url=redis_server.url)
    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        for _ in range(5):  # several rounds: the race must never let both win
            phone = await online_device(client, a.ws_url)
            laptop = await online_device(client, b.ws_url)
            ch = await client.create_challenge("alice", CTX)
            p1, p2 = await phone.frame(), await laptop.frame()
            assert isinstance(p1, Challenge)
            assert isinstance(p2, Challenge)
            await asyncio.gather(
                phone.send(phone.answer(p1, number=ch.number)),
                laptop.send(laptop.answer(p2, decision="deny")),
            )
            replies = [await phone.frame(), await laptop.frame()]
            wins = [r for r in replies if isinstance(r, AnswerResult)]
            losers = [r for r in replies if not isinstance(r, AnswerResult)]
            assert len(wins) == 1, replies
            assert isinstance(losers[0], Cancel | Error), replies
            result = await client.wait_result(ch, await keys_of(client, "alice"), timeout=5)
            assert result.status.value == wins[0].outcome
            for dev in (phone, laptop):
                await dev.close()


async def test_answered_names_the_credential_only_to_its_own_other_connections(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """`cancel.by` (docs/protocol.md section 5, added within version 2): the other
    connections of the credential that answered, on this node and on another, learn
    that it was their own credential; a connection of another device of the same user
    gets `cancel` without the key, on either node (privacy, section 19)."""
    a = broker_factory(redis_url=redis_server.url, node="a")
    b = broker_factory(redis_url=redis_server.url, node="b")
    rp = add_rp("By RP", redis_url=redis_server.url)

    async def again(dev: Device, url: str) -> Device:
        """Another connection of `dev`'s credential (another process of that device)."""
        other = await Device.connect(url, seed=dev.seed)
        other.cid = dev.cid
        await other.authenticate()
        return other

    async def cancel_of(dev: Device, ch: str) -> tuple[Cancel, dict[str, Any]]:
        data = await asyncio.wait_for(dev.ws.recv(), 5)
        frame = dev.session.receive(data)
        assert isinstance(frame, Cancel) and frame.ch == ch, frame
        return frame, msgpack.unpackb(data)

    async with PushAuthClient(a.http_url, rp["api_key"]) as client:
        phone = await online_device(client, a.ws_url)
        laptop = await online_device(client, b.ws_url)
        phones = [await again(phone, a.ws_url), await again(phone, b.ws_url)]
        laptops = [laptop, await again(laptop, a.ws_url)]
        for answering, mine, others in ((phone, phones, laptops), (laptop, laptops[1:], [phone, *phones])):
            ch = await client.create_challenge("alice", CTX)
            pushed = {id(dev): await dev.frame() for dev in [answering, *mine, *others]}
            await answering.send(answering.answer(pushed[id(answering)], decision="deny"))  # type: ignore[arg-type]
            assert await answering.frame() == AnswerResult(ch=ch.id, outcome="denied")
            for dev in mine:
                frame, raw = await cancel_of(dev, ch.id)
                assert frame == Cancel(ch=ch.id, reason="answered", by=answering.cid)
                assert raw["by"] == answering.cid
            for dev in others:
                frame, raw = await cancel_of(dev, ch.id)
                assert frame == Cancel(ch=ch.id, reason="answered")
                assert "by" not in raw, "another device's credential id is not told"
        for dev in [phone, laptop, *phones, laptops[1]]:
            await dev.close()


async def test_invariant_3_the_device_never_sees_the_number(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX, digits=8)
    raw = msgpack.unpackb(await dev.ws.recv())
    assert raw["t"] == "challenge"
    assert "number" not in raw
    assert ch.number.encode() not in msgpack.packb(raw)
    assert raw["digits"] == 8


async def test_invariant_6_auth_proofs_are_bound_to_the_connection_nonce(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    old_proof = dev.session.authenticate_frame({dev.cid: dev.seed})  # signed over the old nonce
    replay = await Device.connect(broker.ws_url)
    await replay.send(old_proof)
    welcome = await replay.frame()
    assert isinstance(welcome, Welcome)
    assert welcome.accepted == ()
    assert welcome.rejected == ({"cid": dev.cid, "code": "bad_signature"},)
    # With no proven credential it gets no pushes: the challenge goes to `dev` only.
    await client.create_challenge("alice", CTX)
    assert isinstance(await dev.frame(), Challenge)
    with pytest.raises(asyncio.TimeoutError):
        await replay.frame(timeout=0.5)


async def test_invariant_6_revoked_credential_is_cut_off_at_once(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    await client.revoke_credential(dev.cid)
    assert await dev.frame() == Revoked(cid=dev.cid, reason="removed_by_rp", rid=None)
    assert await dev.frame() == Cancel(ch=ch.id, reason="revoked")
    await dev.send(dev.answer(pushed, number=ch.number))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert err.code == "credential_revoked"  # revoked while on this connection
    assert await client.list_credentials("alice") == []
    # It cannot come back, and no new challenge can target it.
    again = await Device.connect(broker.ws_url, seed=dev.seed)
    again.cid = dev.cid
    welcome, _ = await again.authenticate()
    assert welcome.rejected == ({"cid": dev.cid, "code": "credential_revoked"},)
    from relying_party.errors import NoDevices

    with pytest.raises(NoDevices):
        await client.create_challenge("alice", CTX)


async def test_a_user_whose_devices_are_gone_leaves_no_lasting_key(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """What has no TTL is durable state only (an active credential, a count or a mute):
    after a denied and an approved sign-in and the revocation, nothing of the user stays
    for ever. The fatigue guard, zeroed instead of removed, used to: one key per user
    ever signed in (a soak run, docs/operations.md "Long-running nodes")."""
    dev = await online_device(client, broker.ws_url, user="gone")
    await client.create_challenge("gone", CTX)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    await dev.send(dev.answer(pushed, decision="deny"))
    assert (await dev.frame()).outcome == "denied"  # type: ignore[union-attr]
    await approve_push(dev, await client.create_challenge("gone", CTX))
    await client.revoke_credential(dev.cid)
    tag = keys.user_tag((await client.rp()).id, "gone")
    r = redis.Redis.from_url(str(broker.redis_url))
    try:
        names = list(r.scan_iter(match=f"pa:{{{tag}}}:*"))
        assert names  # the ended challenges and the revoked credential, with their TTLs
        assert [n for n in names if r.pttl(n) == -1] == []
    finally:
        r.close()


async def test_invariant_7_enrollment_token_is_single_use(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    first = await Device.connect(broker.ws_url)
    await first.enroll(enrollment.uri or "")
    second = await Device.connect(broker.ws_url)
    token = parse_uri(enrollment.uri or "").token
    await second.send(second.session.enroll_frame(rid=9, token=token, seed=second.seed, name="thief"))
    err = await second.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_token", "9")
    assert [c.id for c in await client.list_credentials("alice")] == [first.cid]


async def test_invariant_7_proof_of_possession_is_required(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    token = parse_uri(enrollment.uri or "").token
    dev = await Device.connect(broker.ws_url)
    good = dev.session.enroll_frame(rid=1, token=token, seed=dev.seed, name="phone")
    fields = msgpack.unpackb(good)
    fields["pk"] = signing.public_key(signing.new_seed())  # someone else's key, our signature
    await dev.send(msgpack.packb(fields))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert err.code == "bad_signature"
    # Refused without using the token up: a correct proof still enrolls.
    await dev.enroll(enrollment.uri or "")
    assert len(await client.list_credentials("alice")) == 1


async def test_a_device_name_with_control_or_format_characters_is_refused(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """The RP lists a device's name, and other devices show it after a recovery: a bidi
    override, a line break or a blank Hangul filler in it is refused (invalid_field), and
    the link still works."""
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    token = parse_uri(enrollment.uri or "").token
    for name in ("phone\u202e", "a\nb", "\u200bphone", "phone\u3164"):
        dev = await Device.connect(broker.ws_url)
        fields = msgpack.unpackb(dev.session.enroll_frame(rid=1, token=token, seed=dev.seed, name="phone"))
        fields["name"] = name
        await dev.send(msgpack.packb(fields))
        code, reason = await dev.closed()
        assert (code, reason) == (4400, "invalid_field"), name
    assert await client.list_credentials("alice") == []
    dev = await Device.connect(broker.ws_url)
    await dev.enroll(enrollment.uri or "")
    assert [c.name for c in await client.list_credentials("alice")] == ["dev"]


async def test_invariant_7_enrollment_token_expires(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(redis_url=redis_server.url, extra_args=["--enrollment-ttl", "10"])
    rp = add_rp("Short TTL RP", redis_url=redis_server.url)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        enrollment = await client.create_enrollment("alice", "alice@example.com")
        await asyncio.sleep(10.2)
        dev = await Device.connect(broker.ws_url)
        token = parse_uri(enrollment.uri or "").token
        await dev.send(dev.session.enroll_frame(rid=1, token=token, seed=dev.seed, name="late"))
        err = await dev.frame()
        assert isinstance(err, Error)
        assert err.code == "bad_token"
        assert (await client.get_enrollment(enrollment)).status.value == "expired"
        assert await client.list_credentials("alice") == []


async def test_pending_challenges_reach_a_device_that_comes_online(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    await dev.close()
    ch = await client.create_challenge("alice", CTX)
    back = await Device.connect(broker.ws_url, seed=dev.seed)
    back.cid = dev.cid
    welcome, pending = await back.authenticate()
    assert welcome.pending == 1
    assert [p.ch for p in pending] == [ch.id]


async def test_device_removes_its_own_account(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    from protocol.frames import Revoke

    dev = await online_device(client, broker.ws_url)
    await dev.send(Revoke(rid=3, cid=dev.cid))
    assert await dev.frame() == Revoked(cid=dev.cid, reason="removed_by_device", rid=3)
    assert await client.list_credentials("alice") == []


async def test_revocation_withdraws_the_pending_requests(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    assert isinstance(await dev.frame(), Challenge)
    await client.revoke_credential(dev.cid)
    assert await dev.frame() == Revoked(cid=dev.cid, reason="removed_by_rp", rid=None)
    assert await dev.frame() == Cancel(ch=ch.id, reason="revoked")


async def test_an_orderly_stop_tells_every_device_going_away_and_keeps_its_state(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """SIGTERM: each connected device gets close 1001 with a reason at once (no wait for
    its reply), an RP long-poll in progress is answered with the challenge's current
    state instead of being cut off, the broker exits 0, and a restarted broker takes
    the device back with the challenge that was pending."""
    node = broker_factory(redis_url=redis_server.url, node="a")
    rp = add_rp("Restart RP", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        devices = [await online_device(client, node.ws_url, user) for user in ("alice", "bob")]
        ch = await client.create_challenge("alice", CTX)
        assert isinstance(await devices[0].frame(), Challenge)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {rp['api_key']}"}) as http:
            poll = asyncio.ensure_future(http.get(f"{node.http_url}/v1/challenges/{ch.id}?wait=30"))
            await asyncio.to_thread(
                wait_until, lambda: node.long_polls() == 1, message="the long-poll waiting at the broker"
            )
            began = time.monotonic()
            assert await asyncio.to_thread(node.kill, signal.SIGTERM) == 0
            async with await poll as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "pending"
            # Not held for its 30 s (a bound far from both: a slow machine's stop takes seconds).
            assert time.monotonic() - began < 20
        for dev in devices:
            assert await dev.closed() == (1001, "broker shutting down")
        assert "pushauth-broker: stopped in" in node.stdout()
        assert "Traceback" not in node.output() and "WARNING" not in node.output(), node.output()
        again = broker_factory(redis_url=redis_server.url, node="a")
        back = await Device.connect(again.ws_url, seed=devices[0].seed)
        back.cid = devices[0].cid
        welcome, pending = await back.authenticate()
        assert welcome.accepted == (back.cid,)
        assert [p.ch for p in pending] == [ch.id]


# -- Web Push subscriptions (docs/protocol.md, appendix A) ----------------------------


async def test_a_push_endpoint_only_on_a_listed_service_and_a_bad_one_fails_quietly(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    args = ["--push-key", str(tmp_path / "vapid.pem"), "--metrics-port", str(metrics_port)]
    args += ["--push-service", f"https://*.localhost:{port}", "--push-service", f"http://127.0.0.1:{port}"]
    broker = broker_factory(redis_url=redis_server.url, node="push", extra_args=args)
    rp = add_rp("Push RP", redis_url=redis_server.url)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url, user="mallory")
        keys = {"p256dh": b"\x04" + bytes(64), "auth": bytes(16)}  # 65 bytes, but no P-256 point
        # A host that only ends in a listed "*." domain: the resolver stopped at the NUL
        # and the broker connected to 127.0.0.1.
        await dev.send(
            PushSubscribe(
                rid=1, cids=(dev.cid,), endpoint=f"https://127.0.0.1\x00.localhost:{port}/p", **keys
            )
        )
        refused = await dev.frame()
        assert isinstance(refused, Error) and refused.code == "push_service_refused", refused
        await dev.send(PushSubscribe(rid=2, cids=(dev.cid,), endpoint=f"http://127.0.0.1:{port}/p", **keys))
        assert isinstance(await dev.frame(), PushSubscribed)
        await dev.close()
        with redis.Redis.from_url(redis_server.url) as store:  # closed: no connection holds it now
            gone = lambda: not store.exists(webpush._live_key(dev.cid))  # noqa: E731
            await asyncio.to_thread(wait_until, gone, message="the closed device's presence to end")
        await client.create_challenge("mallory", CTX)
        failed = lambda: value(scrape(metrics_port), "pushauth_webpush_wakeups_total", outcome="failed")  # noqa: E731
        await asyncio.to_thread(wait_until, lambda: failed() == 1, message="the failed wake-up")
    broker.terminate()
    log = broker.stderr_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
