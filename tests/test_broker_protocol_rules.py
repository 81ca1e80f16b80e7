"""The broker's device-protocol rules of issue 16, against a real broker process over
real WebSockets: retries after a lost reply are idempotent, a frame flood is cut off,
every socket hears a shutdown, the authentication deadline holds until a credential
is proven, a credential revoked on the connection is named as such, and refusals
come in one fixed order. /work/notes/for-spec-broker.md lists the rules and values."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import msgpack
import pytest
import websockets
from shared_broker import broker, rp  # noqa: F401 - fixtures
from support import BROKER, BrokerProcess, RedisServer, add_rp, assert_cli_error, run_cli
from test_broker_device_ws import CTX, Device, approve_push, keys_of, online_device

from broker.device_ws import BYTE_BURST, FRAME_BURST, UNPROVEN_BYTES, UNPROVEN_FRAME_BURST
from protocol import signing
from protocol.codec import MAX_FRAME_SIZE
from protocol.conformance import padded
from protocol.frames import (
    Answer,
    AnswerResult,
    Cancel,
    Challenge,
    Enrolled,
    Error,
    Pong,
    PushSubscribe,
    Revoke,
    Revoked,
    Welcome,
)
from protocol.session import sign_answer
from protocol.uri import parse as parse_uri
from relying_party.sdk import PushAuthClient

# -- 1. retries after a lost reply -------------------------------------------------


def enroll_frame(
    dev: Device, uri: str, rid: int = 7, seed: bytes | None = None, name: str = "phone"
) -> bytes:
    """An enroll frame over this connection's nonce, bound to the link as the agent does."""
    link = parse_uri(uri)
    return dev.session.enroll_frame(
        rid=rid,
        token=link.token,
        seed=seed or dev.seed,
        name=name,
        rp=link.rp,
        binding_secret=link.binding_secret,
    )


async def test_a_retried_enroll_gets_the_same_credential(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    uri = enrollment.uri or ""
    first = await Device.connect(broker.ws_url)
    await first.send(enroll_frame(first, uri))
    await first.close()  # the `enrolled` reply is lost
    done = await client.wait_enrollment(enrollment, timeout=10)
    assert done.completed and done.credential is not None
    cid = done.credential.id

    # The same key retries with the same token on a new connection, with a proof over
    # the new connection's nonce: the same credential, not a second one.
    retry = await Device.connect(broker.ws_url, seed=first.seed)
    await retry.send(enroll_frame(retry, uri, rid=8))
    enrolled = await retry.frame()
    assert isinstance(enrolled, Enrolled)
    assert (enrolled.rid, enrolled.cid, enrolled.user) == (8, cid, "alice")
    assert [c.id for c in await client.list_credentials("alice")] == [cid]
    # ... and it counts as proven on this connection: an `authenticate` naming no
    # credential, and the connection gets and answers the credential's challenges.
    await client.confirm_credential(cid)
    await retry.send(retry.session.authenticate_frame({}))
    assert isinstance(await retry.frame(), Welcome)
    ch = await client.create_challenge("alice", CTX)
    pushed = await retry.frame()
    assert isinstance(pushed, Challenge)
    assert pushed.cid == cid
    await retry.send(retry.answer(pushed, number=ch.number))
    assert await retry.frame() == AnswerResult(ch=ch.id, outcome="approved")

    # Another key with the used token is refused, and so is the old proof replayed on a
    # new connection (it signs another connection's nonce).
    thief = await Device.connect(broker.ws_url)
    await thief.send(enroll_frame(thief, uri, rid=9))
    err = await thief.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_token", "9")
    replay = await Device.connect(broker.ws_url)
    await replay.send(enroll_frame(first, uri, rid=10))  # first's nonce, first's key
    err = await replay.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_signature", "10")
    assert [c.id for c in await client.list_credentials("alice")] == [cid]


async def test_no_retried_enroll_once_the_enrollment_expired(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    node = broker_factory(redis_url=redis_server.url, extra_args=["--enrollment-ttl", "10"])
    rp_ = add_rp("Short TTL RP", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, rp_["api_key"]) as client:
        clock = await online_device(client, node.ws_url, "bob")  # its challenge tells the time
        enrollment = await client.create_enrollment("alice", "alice@example.com")
        uri = enrollment.uri or ""
        first = await Device.connect(node.ws_url)
        await first.send(enroll_frame(first, uri))
        await first.close()  # the `enrolled` reply is lost
        assert (await client.wait_enrollment(enrollment, timeout=10)).completed
        # Made after the enrollment with the same lifetime: once it expired, so did that.
        ch = await client.create_challenge("bob", CTX, ttl=10)
        assert isinstance(await clock.frame(), Challenge)
        assert await clock.frame(timeout=20) == Cancel(ch=ch.id, reason="expired")
        retry = await Device.connect(node.ws_url, seed=first.seed)
        await retry.send(enroll_frame(retry, uri, rid=8))
        err = await retry.frame()
        assert isinstance(err, Error)
        assert (err.code, err.ref) == ("bad_token", "8")


async def test_a_retried_answer_gets_the_recorded_outcome(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    phone = await online_device(client, broker.ws_url)
    laptop = await online_device(client, broker.ws_url)
    ch = await client.create_challenge("alice", CTX)
    pushed = await phone.frame()
    assert isinstance(pushed, Challenge)
    other = await laptop.frame()
    assert isinstance(other, Challenge)
    await phone.send(phone.answer(pushed, number=ch.number))
    await phone.close()  # the `answer_result` is lost
    result = await client.wait_result(ch, await keys_of(client, "alice"), timeout=10)
    assert result.approved
    assert await laptop.frame() == Cancel(ch=ch.id, reason="answered")

    # The phone comes back and answers again (signed anew, another ts): the outcome
    # that was recorded, and nothing else changes.
    back = await Device.connect(broker.ws_url, seed=phone.seed)
    back.cid = phone.cid
    welcome, pending = await back.authenticate()
    assert (welcome.pending, pending) == (0, [])
    await back.send(back.answer(pushed, number=ch.number))
    assert await back.frame() == AnswerResult(ch=ch.id, outcome="approved")
    # Another decision by the same credential, or any answer by another credential,
    # is refused as before.
    await back.send(back.answer(pushed, decision="deny"))
    err = await back.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("already_answered", ch.id)
    await laptop.send(laptop.answer(other, number=ch.number))
    err = await laptop.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("already_answered", ch.id)
    again = await client.get_result(ch, await keys_of(client, "alice"))
    assert again.approved
    assert again.answer == result.answer  # the first answer stands


# -- 2. frame floods ------------------------------------------------------------------


async def yield_to_reader() -> None:
    """One turn of the event loop between a flood's frames, as a real client's reader
    gets: a send that fits the socket buffer never yields, so a loop of them held off
    reading the broker's close frame, and on a loaded machine the broker's wait for the
    close reply (1 s) ran out first: its reset then discarded the unread close frame."""
    await asyncio.sleep(0)


@pytest.mark.parametrize("proven", [False, True])
async def test_a_frame_flood_closes_that_connection_only(
    client: PushAuthClient, broker: BrokerProcess, proven: bool
) -> None:
    good = await online_device(client, broker.ws_url)
    flood = (
        await online_device(client, broker.ws_url, "mallory")
        if proven
        else await Device.connect(broker.ws_url)
    )
    frame = msgpack.packb({"v": 2, "t": "ping_flood"})  # each one would get an error frame
    sent = 0
    try:
        for _ in range(2000):
            await flood.ws.send(frame)
            sent += 1
            await yield_to_reader()
    except websockets.ConnectionClosed:
        pass  # the broker closed it mid-flood
    assert await flood.closed() == (4429, "rate_limited")
    assert sent > (FRAME_BURST if proven else UNPROVEN_FRAME_BURST)
    # Every other connection works as before: a sign-in end to end.
    ch = await client.create_challenge("alice", CTX)
    await approve_push(good, ch)
    assert (await client.wait_result(ch, await keys_of(client, "alice"), timeout=5)).approved


async def test_a_burst_within_the_limit_is_served(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    for rid in range(FRAME_BURST // 2):
        await dev.ws.send(msgpack.packb({"v": 2, "t": "ping_burst", "rid": rid}))
    for rid in range(FRAME_BURST // 2):
        err = await dev.frame()
        assert isinstance(err, Error)
        assert (err.code, err.ref) == ("unknown_frame", str(rid))


async def test_before_a_credential_is_proven_a_connection_has_a_small_budget(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """Anyone can open connections and send refused enrollments on them, each a signature
    check and Redis reads: before a credential is proven, a connection may send
    UNPROVEN_FRAME_BURST frames at once (a device sends one authenticate or enroll)."""
    withdrawn = await client.create_enrollment("prober", "prober@example.com")
    await client.cancel_enrollment(withdrawn.id)
    token = parse_uri(withdrawn.uri or "").token  # refused with bad_token, not fatal
    prober = await Device.connect(broker.ws_url)
    answered = 0
    with contextlib.suppress(websockets.ConnectionClosed):
        for rid in range(FRAME_BURST // 2):  # within the budget of a proven connection
            await prober.send(
                prober.session.enroll_frame(rid=rid, token=token, seed=prober.seed, name="phone")
            )
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while isinstance(await prober.frame(), Error):
            answered += 1
    assert await prober.closed() == (4429, "rate_limited")
    assert UNPROVEN_FRAME_BURST <= answered < FRAME_BURST // 2, answered
    # Proven, a connection has the whole budget (test_a_burst_within_the_limit_is_served);
    # an enrollment on a fresh connection still works.
    enrollment = await client.create_enrollment("newcomer", "newcomer@example.com")
    dev = await Device.connect(broker.ws_url)
    await dev.enroll(enrollment.uri or "")


@pytest.mark.parametrize("proven", [False, True])
async def test_a_ping_flood_closes_that_connection(
    client: PushAuthClient, broker: BrokerProcess, proven: bool
) -> None:
    """Pings and pongs take from the frames' budget: one connection sending nothing but
    pings as fast as it could kept a broker core busy (a pong each, or a decode each)."""
    flood = (
        await online_device(client, broker.ws_url, "pinger")
        if proven
        else await Device.connect(broker.ws_url)
    )
    with contextlib.suppress(websockets.ConnectionClosed):
        for _ in range(2000):  # as the frame flood: over the budget unless it took 36 s
            await flood.ws.ping()
            await yield_to_reader()
    assert await flood.closed() == (4429, "rate_limited")


# -- 2b. byte budgets --------------------------------------------------------------
# A legal 32 KiB frame can cost 3 ms to decode (32,000 empty maps under an ignored key):
# frames are counted in bytes too, before decoding (docs/protocol.md 2.2).


def big_ping(rid: int) -> bytes:
    """A `ping` of exactly MAX_FRAME_SIZE bytes (an ignored key fills it): legal, answered."""
    return padded(MAX_FRAME_SIZE, {"t": "ping", "rid": rid})


async def test_before_a_credential_is_proven_a_connection_may_send_64_kib(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    good = await online_device(client, broker.ws_url)
    enrollment = await client.create_enrollment("late", "late@example.com")
    uri = enrollment.uri or ""
    dev = await Device.connect(broker.ws_url)
    for rid in range(UNPROVEN_BYTES // MAX_FRAME_SIZE):  # the whole allowance: served
        await dev.send(big_ping(rid))
        assert await dev.frame() == Pong(rid=rid)
    # A valid enroll over it is refused unread: the token stays unused.
    await dev.send(enroll_frame(dev, uri))
    assert await dev.closed() == (4429, "rate_limited")
    assert not (await client.get_enrollment(enrollment)).completed
    # A new connection has its own allowance and enrolls with the token; the other
    # connections work as before.
    again = await Device.connect(broker.ws_url, seed=dev.seed)
    await again.enroll(uri)
    ch = await client.create_challenge("alice", CTX)
    await approve_push(good, ch)
    assert (await client.wait_result(ch, await keys_of(client, "alice"), timeout=5)).approved


async def test_once_proven_the_byte_budget_goes_on_from_what_was_left(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """After the proof the bytes refill (16 KiB a second, up to BYTE_BURST) from what the
    connection had left, not from a fresh burst: a credential could otherwise reconnect
    for one, again and again."""
    good = await online_device(client, broker.ws_url)
    flood = await online_device(client, broker.ws_url, "mallory")  # enrolled, authenticated
    with contextlib.suppress(websockets.ConnectionClosed):
        for rid in range(BYTE_BURST // MAX_FRAME_SIZE):  # a full burst's worth
            await flood.send(big_ping(rid))
    pongs = 0
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while isinstance(await flood.frame(), Pong):
            pongs += 1
    assert await flood.closed() == (4429, "rate_limited")
    # Under 64 KiB were left after an enroll and an authenticate: one of these at once,
    # and one more per 2 s since.
    assert 1 <= pongs < BYTE_BURST // MAX_FRAME_SIZE - 1, pongs
    ch = await client.create_challenge("alice", CTX)
    await approve_push(good, ch)
    assert (await client.wait_result(ch, await keys_of(client, "alice"), timeout=5)).approved


async def test_the_largest_legitimate_traffic_is_within_the_byte_budgets(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """A device with 64 accounts, the most one `authenticate` names, every frame at its
    largest: refused enroll retries and the 64 enrollments on one connection (as the load
    tester's provisioning does), then on another a push subscription, the authenticate
    and 64 prompts answered at once."""
    name = "\U0001f4f1" * 64  # the longest device name, in 4-byte characters
    withdrawn = await client.create_enrollment("gone", "gone@example.com")
    await client.cancel_enrollment(withdrawn.id)
    users = [f"many{i}" for i in range(64)]
    links = await asyncio.gather(*(client.create_enrollment(u, f"{u}@example.com") for u in users))
    setup = await Device.connect(broker.ws_url)
    for rid in range(UNPROVEN_FRAME_BURST // 2):  # a scanned code refused, and retried
        await setup.send(
            enroll_frame(setup, withdrawn.uri or "", rid=rid, seed=signing.new_seed(), name=name)
        )
        err = await setup.frame()
        assert isinstance(err, Error) and err.code == "bad_token", err
    seeds: dict[str, bytes] = {}
    for rid, link in enumerate(links, start=100):
        seed = signing.new_seed()
        await setup.send(enroll_frame(setup, link.uri or "", rid=rid, seed=seed, name=name))
        enrolled = await setup.frame()
        assert isinstance(enrolled, Enrolled), enrolled
        seeds[enrolled.cid] = seed
    await asyncio.gather(*(client.confirm_credential(cid) for cid in seeds))

    dev = await Device.connect(broker.ws_url)
    subscribe = PushSubscribe(
        rid=1, cids=tuple(seeds), endpoint="\U0001f514" * 2048, p256dh=bytes(65), auth=bytes(16)
    )
    await dev.send(subscribe)  # this broker sends no Web Push: refused, not fatal
    err = await dev.frame()
    assert isinstance(err, Error) and err.code == "push_unavailable", err
    await dev.send(dev.session.authenticate_frame(seeds))
    welcome = await dev.frame()
    assert isinstance(welcome, Welcome) and len(welcome.accepted) == 64, welcome
    made = await asyncio.gather(*(client.create_challenge(u, CTX) for u in users))
    numbers = {c.id: c.number for c in made}
    pushed = [await dev.frame() for _ in users]
    now = int(time.time() * 1000)
    answers = [
        sign_answer(ch, seed=seeds[ch.cid], decision="approve", number=numbers[ch.ch], ts=now)
        for ch in pushed
        if isinstance(ch, Challenge)
    ]
    for answer in answers:  # all at once, as a device that comes back with a backlog
        await dev.send(answer)
    results = [await dev.frame() for _ in users]
    assert {r.outcome for r in results if isinstance(r, AnswerResult)} == {"approved"}, results
    assert len(results) == 64


# -- 3. shutdown reaches every socket -------------------------------------------------


async def test_a_stopping_broker_tells_unauthenticated_sockets_too(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    node = broker_factory(redis_url=redis_server.url, node="stopping")
    rp_ = add_rp("Stop RP", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, rp_["api_key"]) as client:
        proven = await online_device(client, node.ws_url)
        silent = await Device.connect(node.ws_url)  # only got hello
        refused = await Device.connect(node.ws_url)  # authenticated nothing
        refused.cid = "cr_nobody"
        welcome, _ = await refused.authenticate()
        assert welcome.accepted == ()
        assert await asyncio.to_thread(node.kill, signal.SIGTERM) == 0
        for dev in (proven, silent, refused):
            assert await dev.closed() == (1001, "broker shutting down")


# -- 4. the authentication deadline --------------------------------------------------


async def test_the_auth_deadline_holds_until_a_credential_is_proven(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    node = broker_factory(redis_url=redis_server.url, extra_args=["--auth-timeout", "2"])
    rp_ = add_rp("Deadline RP", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, rp_["api_key"]) as client:
        proven = await online_device(client, node.ws_url)  # connected first
        silent = await Device.connect(node.ws_url)
        refused = await Device.connect(node.ws_url)
        refused.cid = proven.cid  # a proof signed with the wrong key
        welcome, _ = await refused.authenticate()
        assert welcome.rejected == ({"cid": proven.cid, "code": "bad_signature"},)
        empty = await Device.connect(node.ws_url)
        await empty.send(empty.session.authenticate_frame({}))
        assert isinstance(await empty.frame(), Welcome)
        for dev in (silent, refused, empty):
            assert await dev.closed(timeout=15) == (4408, "auth_timeout")
        # The connection that proved a credential outlived them all and still works.
        ch = await client.create_challenge("alice", CTX)
        await approve_push(proven, ch)


@pytest.mark.parametrize("value", ["0", "0.1", "601", "nan"])
def test_auth_timeout_out_of_range_is_a_cli_error(value: str) -> None:
    result = run_cli(
        [BROKER, "serve", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0", "--auth-timeout", value]
    )
    assert_cli_error(result, contains="--auth-timeout")


# -- 5. a credential revoked while on this connection -----------------------------------


async def test_revoke_of_a_credential_revoked_meanwhile_says_so(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    await client.revoke_credential(dev.cid)
    assert await dev.frame() == Revoked(cid=dev.cid, reason="removed_by_rp", rid=None)
    await dev.send(Revoke(rid=4, cid=dev.cid))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("credential_revoked", "4")
    # One this connection never proved is still unknown to it.
    await dev.send(Revoke(rid=5, cid="cr_never"))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("unknown_credential", "5")


# -- 6. the order of refusals ----------------------------------------------------------


async def pushed_challenge(
    client: PushAuthClient, dev: Device, user: str = "alice", ttl: int = 60
) -> Challenge:
    await client.create_challenge(user, CTX, ttl=ttl)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge)
    return pushed


def unsigned(answer: Answer, **over: object) -> Answer:
    return Answer(**{**{k: getattr(answer, k) for k in Answer.SCHEMA}, "sig": b"\x00" * 64, **over})


@pytest.mark.parametrize(("decision", "number"), [("deny", "12"), ("fraud", "7")])
async def test_the_shape_of_an_answer_comes_before_its_credential(
    decision: str, number: str, client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    bad = unsigned(dev.answer(pushed, decision="deny"), decision=decision, number=number, cid="cr_never")
    await dev.send(bad)
    assert await dev.closed() == (4400, "invalid_field")


async def test_an_approval_without_a_number_needs_its_challenge_then_comes_before_the_context(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """Since `challenge.nm` (docs/protocol.md section 7.1): an approval with the empty
    number is refused, 4400 invalid_field, once its challenge is found and has number
    matching, before its context and signature; before that the credential decides."""
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    empty = unsigned(dev.answer(pushed, decision="deny"), decision="approve", number="")
    await dev.send(unsigned(empty, cid="cr_never"))
    err = await dev.frame()
    assert isinstance(err, Error) and (err.code, err.ref) == ("unknown_credential", pushed.ch)
    await dev.send(unsigned(empty, ctx_hash=bytes(32)))
    assert await dev.closed() == (4400, "invalid_field")


async def test_the_credential_comes_before_the_challenge(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    await dev.send(unsigned(dev.answer(pushed, decision="deny"), cid="cr_never", ch="ch_never"))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("unknown_credential", "ch_never")


async def test_the_challenge_comes_before_the_context(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    await dev.send(unsigned(dev.answer(pushed, decision="deny"), ch="ch_never", ctx_hash=b"\x01" * 32))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("unknown_challenge", "ch_never")


async def test_the_context_comes_before_the_signature(client: PushAuthClient, broker: BrokerProcess) -> None:
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    await dev.send(unsigned(dev.answer(pushed, decision="deny"), ctx_hash=b"\x01" * 32))
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("context_mismatch", pushed.ch)


async def test_the_signature_then_expiry_then_the_stored_state(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """bad_signature before challenge_expired, and challenge_expired before
    already_answered (one wait for the shortest lifetime serves both)."""
    alice = await online_device(client, broker.ws_url, "alice")
    bob = await online_device(client, broker.ws_url, "bob")
    answered = await pushed_challenge(client, bob, "bob", ttl=10)
    unanswered = await pushed_challenge(client, alice, "alice", ttl=10)
    await bob.send(bob.answer(answered, decision="deny"))
    assert await bob.frame() == AnswerResult(ch=answered.ch, outcome="denied")
    # alice's challenge was made after bob's: once it has expired, so has bob's.
    assert await alice.frame(timeout=20) == Cancel(ch=unanswered.ch, reason="expired")
    await alice.send(unsigned(alice.answer(unanswered, decision="deny")))
    err = await alice.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_signature", unanswered.ch)
    await bob.send(bob.answer(answered, decision="fraud"))
    err = await bob.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("challenge_expired", answered.ch)


async def test_a_forged_answer_to_an_answered_challenge_is_a_bad_signature(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """The signature comes before the stored state: a forger learns nothing from
    already_answered, and cannot fetch the recorded outcome."""
    dev = await online_device(client, broker.ws_url)
    pushed = await pushed_challenge(client, dev)
    await dev.send(dev.answer(pushed, decision="deny"))
    assert await dev.frame() == AnswerResult(ch=pushed.ch, outcome="denied")
    forged = unsigned(dev.answer(pushed, decision="deny"), sig=signing.sign(signing.new_seed(), b"x"))
    await dev.send(forged)
    err = await dev.frame()
    assert isinstance(err, Error)
    assert (err.code, err.ref) == ("bad_signature", pushed.ch)
