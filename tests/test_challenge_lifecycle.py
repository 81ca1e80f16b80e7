"""Issue 11, the sign-in request lifecycle: cancelled, superseded, withdrawn, targeted
challenges and confirmed credentials, through the real broker and Redis, the real agent
CLI (`listen`, `pending`, `approve`) as subprocesses, a device speaking the protocol over
a real WebSocket where the frames themselves matter, and the RP SDK verifying results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent, agent_env, agent_ok, enroll, pending  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, new_rp, rp  # noqa: F401 - fixtures
from support import BrokerProcess, RedisServer, add_rp, new_rp, set_policy
from test_agent_e2e import Listen, listener  # noqa: F401 - fixture
from websockets.asyncio.client import ClientConnection, connect

from protocol import SUBPROTOCOLS, b64, signing
from protocol import uri as enrollment_uri
from protocol.codec import encode
from protocol.frames import AnswerResult, Cancel, Enrolled, Error, Frame, Hello, Welcome
from protocol.frames import Challenge as ChallengeFrame
from protocol.session import ClientSession, sign_answer
from relying_party import InvalidRequest, NoDevices, NotFound, PushAuthClient, PushBlocked, Status, keys_for
from relying_party.models import Challenge
from relying_party.verify import evaluate

CONTEXT = {"app": "Webmail", "ip": "203.0.113.9", "browser": "Firefox"}
FRAME_WAIT_S = 10


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Device:
    """One device connection reduced to the protocol, to see the frames themselves."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session = ClientSession()
        self.seeds: dict[str, bytes] = {}

    @classmethod
    async def connect(cls, url: str) -> Device:
        device = cls(await connect(url, subprotocols=list(SUBPROTOCOLS), max_size=None))  # type: ignore[arg-type]
        assert isinstance(await device.recv(), Hello)
        return device

    async def recv(self) -> Frame:
        data = await asyncio.wait_for(self.ws.recv(), FRAME_WAIT_S)
        assert isinstance(data, bytes)
        return self.session.receive(data)

    async def enroll(self, uri: str, name: str) -> str:
        parsed = enrollment_uri.parse(uri)
        seed = signing.new_seed()
        await self.ws.send(self.session.enroll_frame(rid=1, token=parsed.token, seed=seed, name=name))
        enrolled = await self.recv()
        assert isinstance(enrolled, Enrolled), enrolled
        self.seeds[enrolled.cid] = seed
        return enrolled.cid

    async def authenticate(self) -> list[ChallengeFrame]:
        await self.ws.send(self.session.authenticate_frame(self.seeds))
        welcome = await self.recv()
        assert isinstance(welcome, Welcome), welcome
        return [await self.recv() for _ in range(welcome.pending)]  # type: ignore[misc]

    async def answer(self, ch: ChallengeFrame, decision: str, number: str = "", *, cid: str = "") -> None:
        """Sign and send an answer to `ch` with credential `cid` (default: the one it came to)."""
        cid = cid or ch.cid
        frame = ChallengeFrame(**{**{k: getattr(ch, k) for k in ChallengeFrame.SCHEMA}, "cid": cid})
        answer = sign_answer(frame, seed=self.seeds[cid], decision=decision, number=number, ts=_now_ms())
        await self.ws.send(encode(answer))

    async def close(self) -> None:
        await self.ws.close()


async def device_for(client: PushAuthClient, url: str, name: str, *, confirm: bool = True) -> Device:
    """A device enrolled for alice (and, with `confirm`, confirmed as after its test push)."""
    enrollment = await client.create_enrollment("alice", "alice@example.com")
    dev = await Device.connect(url)
    cid = await dev.enroll(enrollment.uri or "", name)
    if confirm:
        await client.confirm_credential(cid)
    return dev


@pytest.fixture
async def client(broker: BrokerProcess, rp: dict[str, Any]) -> Any:
    async with PushAuthClient(broker.http_url, rp["api_key"]) as sdk:
        yield sdk


def keys(*creds: Any) -> dict[str, bytes]:
    return {c.id: c.public_key for c in creds}


# -- superseded: "send again" --------------------------------------------------------


async def test_five_send_agains_leave_one_live_prompt_and_the_device_drops_each_older_one(
    client: PushAuthClient, tmp_path: Path, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    watch = listener(home, "--no-input")
    watch.wait_for("Connected to")
    first = await client.create_challenge("alice", CONTEXT)
    watch.wait_for(f"Sign-in request {first.id}")
    sent = [first]
    for _ in range(5):  # "Send again", five times
        sent.append(await client.create_challenge("alice", CONTEXT))
        watch.wait_for(f"Request {sent[-2].id} was replaced by a newer request.")
        watch.wait_for(f"Sign-in request {sent[-1].id}")
    latest = sent[-1]
    assert [r["id"] for r in pending(home)] == [latest.id]  # exactly one live prompt
    # The number on the page is the newest one, and it is the one the device answers.
    assert "approved" in agent_ok(home, "approve", latest.id, "--number", latest.number)
    assert (await client.wait_result(latest, keys(cred), timeout=10)).approved
    for older in sent[:-1]:
        result = await client.wait_result(older, keys(cred), timeout=10)
        assert result.status is Status.SUPERSEDED and result.final and not result.approved
    # An older prompt cannot be answered any more.
    late = agent(home, "approve", first.id, "--number", first.number)
    assert late.returncode != 0 and "Traceback" not in late.stderr


async def test_opting_out_of_supersede_keeps_both_and_the_newest_is_asked_first(
    client: PushAuthClient, tmp_path: Path, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    older = await client.create_challenge("alice", CONTEXT, digits=6)
    # "Newest" is by creation time (ms): let the clock move on, so the two differ.
    made = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= made:  # at most a millisecond
        pass
    newer = await client.create_challenge("alice", CONTEXT, digits=6, supersede=False)
    assert [r["id"] for r in pending(home)] == [newer.id, older.id]  # newest first
    ask = listener(home)
    ask.wait_for(f"Sign-in request {newer.id}")
    ask.wait_for("Type the 6-digit number")
    ask.type(newer.number)
    ask.wait_for(f"Sign-in request {older.id}")  # asked as soon as the first answer went
    ask.type(older.number)
    ask.wait_for(f"Request {older.id}: approved")
    for ch in (older, newer):
        assert (await client.wait_result(ch, keys(cred), timeout=10)).approved


# -- cancelled -------------------------------------------------------------------------


async def test_the_rp_cancels_and_the_device_drops_the_prompt(
    client: PushAuthClient, tmp_path: Path, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    watch = listener(home, "--no-input")
    watch.wait_for("Connected to")
    ch = await client.create_challenge("alice", CONTEXT)
    watch.wait_for(f"Sign-in request {ch.id}")
    assert await client.cancel_challenge(ch) is True
    watch.wait_for(f"Request {ch.id} was cancelled by the service.")
    assert pending(home) == []
    result = await client.wait_result(ch, keys(cred), timeout=10)
    assert result.status is Status.CANCELLED and not result.approved
    assert result.reason == "cancelled by this service"
    assert await client.cancel_challenge(ch) is True  # a retried cancel is harmless
    refused = agent(home, "approve", ch.id, "--number", ch.number)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    # A challenge that ended otherwise stays as it ended: cancel says so.
    done = await client.create_challenge("alice", CONTEXT)
    agent_ok(home, "approve", done.id, "--number", done.number)
    assert await client.cancel_challenge(done) is False
    assert (await client.wait_result(done, keys(cred), timeout=10)).approved


async def test_cancel_is_refused_for_another_rps_challenge(
    client: PushAuthClient,
    broker: BrokerProcess,
    tmp_path: Path,
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)
    ch = await client.create_challenge("alice", CONTEXT)
    other = await new_rp(broker, "Other RP")
    async with PushAuthClient(broker.http_url, other["api_key"]) as stranger:
        with pytest.raises(NotFound):
            await stranger.cancel_challenge(ch)
    assert [r["id"] for r in pending(home)] == [ch.id]  # nothing changed


# -- withdrawn: "this wasn't me" --------------------------------------------------------


async def test_a_fraud_report_withdraws_the_other_prompt_before_its_result_returns(
    client: PushAuthClient,
    broker: BrokerProcess,
    tmp_path: Path,
    listener: Callable[..., Listen],
) -> None:
    phone = await device_for(client, broker.ws_url, "phone")
    laptop_home = tmp_path / "laptop"
    laptop = await enroll(client, laptop_home, name="laptop")
    watch = listener(laptop_home, "--no-input")
    watch.wait_for("Connected to")
    await phone.authenticate()
    # The attacker's two prompts, both live (an RP that opted out of superseding).
    older = await client.create_challenge("alice", CONTEXT)
    newer = await client.create_challenge("alice", CONTEXT, supersede=False)
    got = [await phone.recv(), await phone.recv()]
    assert [f.ch for f in got if isinstance(f, ChallengeFrame)] == [older.id, newer.id]
    frames = {f.ch: f for f in got if isinstance(f, ChallengeFrame)}
    await phone.answer(frames[newer.id], "fraud")
    # The other prompt is withdrawn before the report's own result comes back.
    withdrawn = await phone.recv()
    assert isinstance(withdrawn, Cancel) and (withdrawn.ch, withdrawn.reason) == (older.id, "withdrawn")
    result = await phone.recv()
    assert isinstance(result, AnswerResult) and (result.ch, result.outcome) == (newer.id, "reported")
    # Approving it now is too late, and the SDK says why.
    await phone.answer(frames[older.id], "approve", older.number)
    refused = await phone.recv()
    assert isinstance(refused, Error) and (refused.code, refused.ref) == ("already_answered", older.id)
    verdict = await client.wait_result(older, keys(laptop), timeout=10)
    assert verdict.status is Status.WITHDRAWN and not verdict.approved
    # The other device dropped both, with the reason.
    watch.wait_for(f"Request {older.id} was withdrawn after your report.")
    assert pending(laptop_home) == []
    with pytest.raises(PushBlocked):  # and push is muted
        await client.create_challenge("alice", CONTEXT)
    await phone.close()


async def test_a_block_withdraws_the_pending_prompts(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    node = broker_factory(redis_url=redis_server.url)
    capped = add_rp("Capped RP", redis_url=redis_server.url)
    set_policy(capped["id"], "--max-pushes", "2", redis_url=redis_server.url)
    async with PushAuthClient(node.http_url, capped["api_key"]) as client:
        dev = await device_for(client, node.ws_url, "phone")
        await dev.authenticate()
        first = await client.create_challenge("alice", CONTEXT)
        second = await client.create_challenge("alice", CONTEXT, supersede=False)
        assert {(await dev.recv()).ch, (await dev.recv()).ch} == {first.id, second.id}  # type: ignore[attr-defined]
        with pytest.raises(PushBlocked):
            await client.create_challenge("alice", CONTEXT)
        cancels = {await dev.recv(), await dev.recv()}
        assert cancels == {Cancel(ch=first.id, reason="withdrawn"), Cancel(ch=second.id, reason="withdrawn")}
        for ch in (first, second):
            assert (await client.get_result(ch, {})).status is Status.WITHDRAWN
        await dev.close()


# -- targeted challenges and confirmed credentials ---------------------------------------


async def test_a_targeted_challenge_goes_only_to_that_credential(
    client: PushAuthClient, tmp_path: Path
) -> None:
    phone_home, laptop_home = tmp_path / "phone", tmp_path / "laptop"
    phone = await enroll(client, phone_home)
    laptop = await enroll(client, laptop_home, name="laptop", confirm=False)  # setup not finished
    test_push = await client.create_challenge("alice", {"app": "Setup test"}, credential_id=laptop.id)
    assert test_push.devices == 1 and test_push.credential_id == laptop.id
    assert pending(phone_home) == []
    [req] = pending(laptop_home)
    assert req["id"] == test_push.id
    agent_ok(laptop_home, "approve", test_push.id, "--number", test_push.number)
    verdict = await client.wait_result(test_push, keys(laptop), timeout=10)
    assert verdict.approved and verdict.credential_id == laptop.id
    # Aimed at the phone, the laptop does not see it; at another user's key: not found.
    to_phone = await client.create_challenge("alice", CONTEXT, credential_id=phone.id)
    assert pending(laptop_home) == [] and [r["id"] for r in pending(phone_home)] == [to_phone.id]
    with pytest.raises(NotFound):
        await client.create_challenge("bob", CONTEXT, credential_id=phone.id)


async def test_a_challenge_aimed_at_some_credentials_reaches_them_alone(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """credential_ids (RP API 1.8): alice's phone and tablet are asked, her stolen phone
    (its removal pending at the RP) is left out. It is online at the creation and
    connects again after it (the pending challenges read from Redis): it never gets the
    frame, nor the end of the prompt; an answer it makes anyway (it learned the id) is
    refused. The tablet, offline at the creation, gets it when it connects, and its
    answer approves. Bad targets (another user's or another RP's credential, an empty
    list) are refused, naming the ones that are not alice's, and store nothing. (Across
    nodes: tests/test_broker_redis_cluster.py.)"""
    other = await new_rp(broker, "Other RP")
    async with PushAuthClient(broker.http_url, other["api_key"]) as other_client:
        elsewhere = await device_for(other_client, broker.ws_url, "other RP's phone")
    phone = await device_for(client, broker.ws_url, "phone")
    tablet = await device_for(client, broker.ws_url, "tablet")
    stolen = await device_for(client, broker.ws_url, "stolen")
    [phone_cid], [tablet_cid], [stolen_cid], [elsewhere_cid] = (
        list(d.seeds) for d in (phone, tablet, stolen, elsewhere)
    )
    await tablet.close()
    await elsewhere.close()
    await phone.authenticate()
    await stolen.authenticate()

    refusals = [
        ("bob", [phone_cid], [phone_cid]),  # another user's
        ("alice", [phone_cid, elsewhere_cid], [elsewhere_cid]),  # another RP's
    ]
    for user, aimed, named in refusals:
        with pytest.raises(NotFound) as unknown:
            await client.create_challenge(user, CONTEXT, credential_ids=aimed)
        assert unknown.value.credential_ids == tuple(named)
        assert named[0] in unknown.value.detail
    with pytest.raises(InvalidRequest, match="credential_ids"):  # never "every device"
        await client.create_challenge("alice", CONTEXT, credential_ids=[])
    assert (await client.push_block("alice"))["pushes_since_sign_in"] == 0  # nothing made

    ch = await client.create_challenge("alice", CONTEXT, credential_ids=[phone_cid, tablet_cid])
    assert (ch.devices, ch.credential_ids, ch.credential_id) == (2, (phone_cid, tablet_cid), None)
    frame = await phone.recv()
    assert isinstance(frame, ChallengeFrame) and frame.ch == ch.id
    # The stolen phone connects again after the creation: nothing pending for it.
    late = await Device.connect(broker.ws_url)
    late.seeds = dict(stolen.seeds)
    assert await late.authenticate() == []
    # An answer it makes anyway is refused (the broker never sent it there).
    await stolen.answer(frame, "approve", ch.number, cid=stolen_cid)
    refused = await stolen.recv()
    assert isinstance(refused, Error) and (refused.code, refused.ref) == ("unknown_challenge", ch.id)
    # The tablet, offline at the creation, gets it on connecting, and approves.
    tablet_again = await Device.connect(broker.ws_url)
    tablet_again.seeds = dict(tablet.seeds)
    [pending_frame] = await tablet_again.authenticate()
    assert pending_frame.ch == ch.id and pending_frame.cid == tablet_cid
    await tablet_again.answer(pending_frame, "approve", ch.number)
    assert isinstance(await tablet_again.recv(), AnswerResult)
    stored = {c.id: c for c in await client.list_credentials("alice")}
    verdict = await client.wait_result(ch, keys_for(ch, stored), timeout=10)
    assert verdict.approved and verdict.credential_id == tablet_cid
    assert await phone.recv() == Cancel(ch=ch.id, reason="answered")
    # The stolen phone's connections got neither the prompt nor its end: the next frame
    # each gets is that of a request aimed at it.
    own = await client.create_challenge("alice", CONTEXT, credential_id=stolen_cid)
    for conn in (stolen, late):
        got = await conn.recv()
        assert isinstance(got, ChallengeFrame) and got.ch == own.id, got
    for dev in (phone, stolen, late, tablet_again):
        await dev.close()


async def test_an_unconfirmed_credential_gets_no_ordinary_sign_in_and_cannot_answer_one(
    client: PushAuthClient,
    broker: BrokerProcess,
) -> None:
    phone = await device_for(client, broker.ws_url, "phone")
    laptop = await device_for(client, broker.ws_url, "laptop", confirm=False)
    [laptop_cid] = laptop.seeds
    listed = {c.name: c.confirmed for c in await client.list_credentials("alice")}
    assert listed == {"phone": True, "laptop": False}
    await phone.authenticate()
    assert await laptop.authenticate() == []
    ch = await client.create_challenge("alice", CONTEXT)
    assert ch.devices == 1  # only the confirmed phone counts
    frame = await phone.recv()
    assert isinstance(frame, ChallengeFrame) and frame.ch == ch.id
    # The laptop never got it; an answer it makes anyway (it learned the id) is refused.
    await laptop.answer(frame, "approve", ch.number, cid=laptop_cid)
    refused = await laptop.recv()
    assert isinstance(refused, Error) and (refused.code, refused.ref) == ("unknown_challenge", ch.id)
    assert (await client.get_result(ch, {})).status is Status.PENDING
    # Once the RP confirms it, the laptop gets ordinary sign-ins (and counts).
    await client.confirm_credential(laptop_cid)
    again = await client.create_challenge("alice", CONTEXT)
    assert again.devices == 2
    assert (await laptop.recv()).ch == again.id  # type: ignore[attr-defined]
    await phone.close()
    await laptop.close()


async def test_a_user_with_only_an_unfinished_setup_has_no_devices(
    client: PushAuthClient,
    broker: BrokerProcess,
) -> None:
    dev = await device_for(client, broker.ws_url, "phone", confirm=False)
    with pytest.raises(NoDevices, match="not confirmed"):
        await client.create_challenge("alice", CONTEXT)
    [cid] = dev.seeds
    await client.confirm_credential(cid)
    await client.confirm_credential(cid)  # twice is harmless
    assert (await client.create_challenge("alice", CONTEXT)).devices == 1
    with pytest.raises(NotFound):
        await client.confirm_credential("cr_unknown")
    await dev.close()


# -- the SDK's verdict on statuses that need no proof, and on unknown ones ---------------


def _approved_body(status: str) -> tuple[Challenge, dict[str, Any], dict[str, bytes]]:
    """A challenge and a broker body carrying a VALID signed approval, with `status`."""
    seed, now, cid = signing.new_seed(), _now_ms(), "cr_phone"
    challenge = Challenge(
        id="ch_1",
        user="alice",
        number="42",
        digits=2,
        nonce=b"n" * 32,
        rp_nonce=b"r" * 32,
        context={},
        created_at=now,
        expires_at=now + 60_000,
    )
    ctx_hash = signing.context_hash({})
    message = signing.answer_bytes(
        rp="rp_1", ch="ch_1", nonce=b"n" * 32, rp_nonce=b"r" * 32, cid=cid, decision="approve",
        number="42", ts=now, ctx_hash=ctx_hash,
    )  # fmt: skip
    answer = {
        "credential_id": cid,
        "decision": "approve",
        "number": "42",
        "ts": now,
        "ctx_hash": b64.encode(ctx_hash),
        "signature": b64.encode(signing.sign(seed, message)),
    }
    return challenge, {"id": "ch_1", "status": status, "answer": answer}, {cid: signing.public_key(seed)}


def test_the_sdk_approves_only_with_a_known_answered_status() -> None:
    challenge, body, pks = _approved_body("approved")
    assert evaluate(challenge, body, rp_id="rp_1", public_keys=pks, now_ms=_now_ms()).approved


@pytest.mark.parametrize("status", ["cancelled", "superseded", "withdrawn", "expired"])
def test_ended_statuses_need_no_proof_and_approve_nothing(status: str) -> None:
    challenge, body, pks = _approved_body(status)  # even with a valid approval attached
    result = evaluate(challenge, body, rp_id="rp_1", public_keys=pks, now_ms=_now_ms())
    assert result.status is Status(status) and result.final and not result.approved
    assert result.answer is None and result.reason


def test_an_unknown_status_from_a_newer_broker_is_final_and_not_approved() -> None:
    challenge, body, pks = _approved_body("quarantined")
    result = evaluate(challenge, body, rp_id="rp_1", public_keys=pks, now_ms=_now_ms())
    assert result.status is Status.UNKNOWN and result.final and not result.approved
    assert result.broker_status == "quarantined"
    assert "'quarantined'" in result.reason and "not approved" in result.reason
