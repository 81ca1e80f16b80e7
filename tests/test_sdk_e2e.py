"""The RP SDK against the real broker: a real redis-server, `pushauth-broker serve` as a
subprocess, and a device simulated with protocol.session over a real `websockets` client.

enroll -> challenge -> the device answers -> the SDK verifies the signed answer itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from support import BrokerProcess, new_rp_sync, set_policy
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from protocol import SUBPROTOCOLS, signing
from protocol import uri as enrollment_uri
from protocol.codec import encode
from protocol.frames import (
    AnswerResult,
    Cancel,
    Decision,
    Enrolled,
    Error,
    Frame,
    Hello,
    Revoked,
    Welcome,
)
from protocol.frames import Challenge as ChallengeFrame
from protocol.session import ClientSession, sign_answer
from relying_party import (
    Credential,
    EnrollmentStatus,
    InvalidRequest,
    NoDevices,
    NotFound,
    PushAuthClient,
    Status,
    Unauthorized,
    VerificationFailed,
    VerificationReason,
    keys_for,
    new_totp,
)

CONTEXT = {"app": "Payroll", "ip": "198.51.100.4", "location": "Lyon, FR", "browser": "Firefox"}
FRAME_WAIT_S = 10


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatedDevice:
    """A device agent reduced to the protocol: ClientSession for state, websockets for bytes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session = ClientSession()
        self.seeds: dict[str, bytes] = {}

    @classmethod
    async def connect(cls, url: str) -> SimulatedDevice:
        device = cls(await connect(url, max_size=None, subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS]))
        hello = await device.recv()
        assert isinstance(hello, Hello)
        return device

    async def recv(self) -> Frame:
        data = await asyncio.wait_for(self.ws.recv(), FRAME_WAIT_S)
        assert isinstance(data, bytes), "the broker sends binary frames only"
        return self.session.receive(data)

    async def recv_type(self, kind: type[Frame]) -> Any:
        frame = await self.recv()
        assert isinstance(frame, kind), f"expected {kind.TYPE}, got {frame}"
        return frame

    async def enroll(self, uri: str, name: str = "Test phone") -> Enrolled:
        parsed = enrollment_uri.parse(uri)
        seed = signing.new_seed()
        frame = self.session.enroll_frame(
            rid=1,
            token=parsed.token,
            seed=seed,
            name=name,
            rp=parsed.rp,
            binding_secret=parsed.binding_secret,
            recovery_pk=None,
        )
        await self.ws.send(frame)
        enrolled = await self.recv_type(Enrolled)
        self.seeds[enrolled.cid] = seed
        return enrolled

    async def authenticate(self) -> Welcome:
        """Prove every credential; challenges flow only after the welcome (protocol/session.py)."""
        await self.ws.send(self.session.authenticate_frame(self.seeds))
        return await self.recv_type(Welcome)

    async def answer(self, challenge: ChallengeFrame, decision: str, number: str) -> Frame:
        seed = self.seeds[challenge.cid]
        answer = sign_answer(challenge, seed=seed, decision=decision, number=number, ts=_now_ms())
        await self.ws.send(encode(answer))
        return await self.recv()


async def enroll_device(
    client: PushAuthClient, broker: BrokerProcess, user: str
) -> tuple[SimulatedDevice, Credential]:
    """The enrollment flow: RP asks, device scans the URI and registers, RP stores the credential."""
    totp = new_totp()
    enrollment = await client.create_enrollment(user, f"{user}@example", totp=totp)
    assert enrollment.uri is not None
    parsed = enrollment_uri.parse(enrollment.uri)
    assert parsed.broker == broker.ws_url
    assert parsed.totp == totp
    device = await SimulatedDevice.connect(parsed.broker)
    waiting = asyncio.create_task(client.wait_enrollment(enrollment, timeout=FRAME_WAIT_S))
    enrolled = await device.enroll(enrollment.uri)
    welcome = await device.authenticate()
    assert (welcome.accepted, welcome.rejected, welcome.pending) == ((enrolled.cid,), (), 0)
    done = await waiting
    assert done.status is EnrollmentStatus.COMPLETED
    assert done.credential is not None
    assert done.credential.id == enrolled.cid
    assert done.credential.public_key == signing.public_key(device.seeds[enrolled.cid])
    await client.confirm_credential(enrolled.cid)  # as after its test push
    return device, done.credential


def wrong_number(number: str) -> str:
    """The number with its last digit changed: what a user misreading the screen types."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


@pytest.mark.parametrize(
    ("decision", "typed", "status"),
    [
        (Decision.APPROVE, "right", Status.APPROVED),
        (Decision.APPROVE, "wrong", Status.NUMBER_MISMATCH),
        (Decision.DENY, "", Status.DENIED),
        (Decision.FRAUD, "", Status.REPORTED),
    ],
)
async def test_enroll_then_sign_in_is_verified_end_to_end(
    client: PushAuthClient,
    broker: BrokerProcess,
    rp: dict[str, Any],
    decision: str,
    typed: str,
    status: Status,
) -> None:
    assert (await client.rp()).id == rp["id"]
    device, cred = await enroll_device(client, broker, "alice")
    async with device.ws:
        challenge = await client.create_challenge("alice", CONTEXT, digits=6)
        assert challenge.devices == 1
        assert len(challenge.number) == 6
        pushed = await device.recv_type(ChallengeFrame)
        assert (pushed.ch, pushed.cid, pushed.rp, pushed.nonce) == (
            challenge.id,
            cred.id,
            rp["id"],
            challenge.nonce,
        )
        assert pushed.ctx == CONTEXT
        # The device never learns the number: no field of the frame is or holds it
        # (the millisecond timestamps are skipped: six digits can turn up in them by chance).
        shown = [getattr(pushed, k) for k in ChallengeFrame.SCHEMA if k not in ("created", "expires")]
        assert not any(challenge.number in repr(v) for v in shown)
        # The user types the number from the sign-in page, or a wrong one, or none.
        number = {"right": challenge.number, "wrong": wrong_number(challenge.number)}.get(typed, typed)
        reply = await device.answer(pushed, decision, number)
        assert isinstance(reply, AnswerResult)
        assert reply.outcome == status
        result = await client.wait_result(challenge, {cred.id: cred.public_key}, timeout=FRAME_WAIT_S)
    assert result.status is status
    assert result.approved is (status is Status.APPROVED)
    assert result.credential_id == cred.id


async def test_rp_with_another_stored_key_does_not_accept_the_brokers_approval(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """The honest broker says approved; an RP whose store holds another key for that id refuses."""
    device, cred = await enroll_device(client, broker, "bob")
    async with device.ws:
        challenge = await client.create_challenge("bob", CONTEXT)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        other_key = signing.public_key(signing.new_seed())
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, {cred.id: other_key}, timeout=FRAME_WAIT_S)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    assert failure.value.broker_status is Status.APPROVED


async def test_keys_in_the_wrong_shape_are_a_programming_error_not_a_forgery(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """An outsider's trial passed its stored {id: Credential} (the README's
    `stored_credentials(user)`) where the keys go: every honest approval then failed as
    BAD_SIGNATURE, the security event of a forged answer. The wrong shape is refused as
    a TypeError naming keys_for, before any wait; the right call still approves."""
    device, cred = await enroll_device(client, broker, "bea")
    stored = {cred.id: replace(cred, confirmed=True)}
    async with device.ws:
        challenge = await client.create_challenge("bea", CONTEXT)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        text_key = {cred.id: cred.to_json()["public_key"]}  # base64url, as stored in JSON
        for wrong in (stored, list(stored.values()), text_key):
            with pytest.raises(TypeError, match=r"keys_for\(challenge, stored\)"):
                await client.wait_result(challenge, wrong, timeout=FRAME_WAIT_S)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"keys_for\(challenge, stored\)"):
                await client.get_result(challenge, wrong)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not an Ed25519 public key"):
            await client.get_result(challenge, {cred.id: cred.public_key[:31]})
        with pytest.raises(TypeError, match="keys_for takes the RP's stored credentials"):
            keys_for(challenge, list(stored.values()))  # type: ignore[arg-type]
        result = await client.wait_result(challenge, keys_for(challenge, stored), timeout=FRAME_WAIT_S)
    assert result.approved


async def test_second_answer_is_refused_and_first_one_stands(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    device, cred = await enroll_device(client, broker, "carol")
    async with device.ws:
        challenge = await client.create_challenge("carol", CONTEXT)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.DENY, ""), AnswerResult)
        again = await device.answer(pushed, Decision.APPROVE, challenge.number)
        assert isinstance(again, Error)
        assert (again.code, again.ref) == ("already_answered", challenge.id)
        result = await client.wait_result(challenge, {cred.id: cred.public_key}, timeout=FRAME_WAIT_S)
    assert result.status is Status.DENIED


async def test_revoked_credential_gets_no_more_challenges(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    device, cred = await enroll_device(client, broker, "dave")
    async with device.ws:
        [listed] = await client.list_credentials("dave")
        assert (listed.id, listed.public_key, listed.name) == (cred.id, cred.public_key, "Test phone")
        assert (listed.user, listed.account) == ("dave", "dave@example")
        await client.revoke_credential(cred.id)
        revoked = await device.recv_type(Revoked)
        assert (revoked.cid, revoked.reason, revoked.rid) == (cred.id, "removed_by_rp", None)
        assert await client.list_credentials("dave") == []
        with pytest.raises(NoDevices):
            await client.create_challenge("dave", CONTEXT)
        with pytest.raises(NotFound):
            await client.revoke_credential(cred.id)


async def test_unanswered_challenge_expires(client: PushAuthClient, broker: BrokerProcess) -> None:
    device, cred = await enroll_device(client, broker, "erin")
    async with device.ws:
        challenge = await client.create_challenge("erin", CONTEXT, ttl=10)
        await device.recv_type(ChallengeFrame)
        result = await client.wait_result(challenge, {cred.id: cred.public_key})
        assert result.status is Status.EXPIRED
        cancel = await device.recv_type(Cancel)
        assert (cancel.ch, cancel.reason) == (challenge.id, "expired")


async def test_reconnecting_device_gets_pending_challenges(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    device, cred = await enroll_device(client, broker, "frank")
    await device.ws.close()
    challenge = await client.create_challenge("frank", CONTEXT)
    again = await SimulatedDevice.connect(broker.ws_url)
    again.seeds = device.seeds
    async with again.ws:
        welcome = await again.authenticate()
        assert (welcome.accepted, welcome.pending) == ((cred.id,), 1)
        pushed = await again.recv_type(ChallengeFrame)
        assert isinstance(await again.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        result = await client.wait_result(challenge, {cred.id: cred.public_key}, timeout=FRAME_WAIT_S)
    assert result.approved


async def test_broker_refusals_are_typed_errors(client: PushAuthClient, broker: BrokerProcess) -> None:
    with pytest.raises(NoDevices) as no_devices:
        await client.create_challenge("nobody", CONTEXT)
    assert no_devices.value.code == "no_devices"
    with pytest.raises(InvalidRequest):
        await client.create_challenge("nobody", CONTEXT, digits=9)
    with pytest.raises(InvalidRequest):
        await client.create_challenge("nobody", {"k" * 33: "v"})
    started = await client.create_enrollment("nobody", "nobody@example")
    with pytest.raises(NotFound):
        await client.get_enrollment(replace(started, id="no_such_enrollment"))
    with pytest.raises(NotFound):
        await client.revoke_credential("no_such_credential")
    # An empty user: the broker refuses it in a body (400); in a path it could only say
    # 404 (no such route), so the SDK refuses it alike before sending anything.
    with pytest.raises(InvalidRequest) as in_body:
        await client.create_challenge("", CONTEXT)
    for call in (client.list_credentials, client.push_block, client.lift_push_block):
        with pytest.raises(InvalidRequest) as in_path:
            await call("")
        assert (in_path.value.status, in_path.value.code) == (400, "invalid_request")
        assert in_path.value.detail == in_body.value.detail
    async with PushAuthClient(broker.http_url, "wrong-key") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.rp()
    health = await client.health()
    assert (health.ok, health.redis) == (True, "ok")


async def test_other_rp_cannot_see_or_answer_for_this_rp(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    device, cred = await enroll_device(client, broker, "gina")
    other = broker.add_rp("Other RP")
    async with device.ws, PushAuthClient(broker.http_url, other["api_key"]) as other_client:
        assert await other_client.list_credentials("gina") == []
        with pytest.raises(NoDevices):
            await other_client.create_challenge("gina", CONTEXT)
        with pytest.raises(NotFound):
            await other_client.revoke_credential(cred.id)


async def test_cancel_enrollment_withdraws_the_link(client: PushAuthClient, broker: BrokerProcess) -> None:
    """cancel_enrollment: the link is refused afterwards (bad_token), the enrollment reads
    as expired, a second call is harmless, another RP's or an unknown id is NotFound."""
    enrollment = await client.create_enrollment("hana", "hana@example", totp=new_totp())
    assert enrollment.uri is not None
    other = broker.add_rp("Other RP")
    async with PushAuthClient(broker.http_url, other["api_key"]) as other_client:
        with pytest.raises(NotFound):
            await other_client.cancel_enrollment(enrollment)
    with pytest.raises(NotFound):
        await client.cancel_enrollment("en_no_such_enrollment")
    assert (await client.get_enrollment(enrollment)).status is EnrollmentStatus.PENDING
    await client.cancel_enrollment(enrollment)
    await client.cancel_enrollment(enrollment.id)
    assert (await client.wait_enrollment(enrollment, timeout=0)).status is EnrollmentStatus.EXPIRED
    device = await SimulatedDevice.connect(broker.ws_url)
    async with device.ws:
        parsed = enrollment_uri.parse(enrollment.uri)
        await device.ws.send(
            device.session.enroll_frame(
                rid=1,
                token=parsed.token,
                seed=signing.new_seed(),
                name="late",
                rp=parsed.rp,
                binding_secret=parsed.binding_secret,
                recovery_pk=None,
            )
        )
        refused = await device.recv_type(Error)
    assert refused.code == "bad_token"
    assert await client.list_credentials("hana") == []


@pytest.mark.parametrize(
    "policy",
    [("--digits", "6", "--ttl", "120"), ("--profile", "nist-800-63b-4", "--ttl", "120")],
    ids=["6 digits, 120 s", "nist-800-63b-4, 120 s"],
)
async def test_a_challenge_that_names_no_digits_or_ttl_takes_the_rps_policy(
    client: PushAuthClient, broker: BrokerProcess, rp: dict[str, Any], policy: tuple[str, ...]
) -> None:
    """The operator's `rp set` decides what a default create_challenge / sign_in gets:
    a 6-digit number and a 120 s lifetime (by the RP's clock too: the SDK's freshness
    window is the broker's lifetime when the RP named none), verified end to end as
    always. A value the RP names is still sent, and the policy still bounds it."""
    assert broker.redis_url is not None
    await asyncio.to_thread(set_policy, rp["id"], *policy, redis_url=broker.redis_url)
    device, cred = await enroll_device(client, broker, "ivy")
    keys = {cred.id: cred.public_key}
    async with device.ws:
        before = _now_ms()
        challenge = await client.create_challenge("ivy", CONTEXT)
        assert before <= challenge.created_at <= _now_ms()
        assert (challenge.digits, len(challenge.number)) == (6, 6)
        assert challenge.expires_at - challenge.created_at == 120_000
        pushed = await device.recv_type(ChallengeFrame)
        assert (pushed.ch, pushed.digits, pushed.expires - pushed.created) == (challenge.id, 6, 120_000)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        result = await client.wait_result(challenge, keys, timeout=FRAME_WAIT_S)
        assert result.approved and result.credential_id == cred.id

        # The one-request form takes the policy the same way.
        async with await client.sign_in("ivy", CONTEXT) as pending:
            streamed = pending.challenge
            assert (streamed.digits, len(streamed.number)) == (6, 6)
            assert streamed.expires_at - streamed.created_at == 120_000
            pushed = await device.recv_type(ChallengeFrame)
            assert isinstance(await device.answer(pushed, Decision.APPROVE, streamed.number), AnswerResult)
            assert (await pending.result(keys, timeout=FRAME_WAIT_S)).approved

        # Named values are sent as they are: within the policy they count, below its
        # min_digits (6 under the NIST profile, 2 otherwise) the broker refuses, naming
        # the field, and makes nothing.
        pinned = await client.create_challenge("ivy", CONTEXT, ttl=30, digits=8)
        assert (pinned.digits, len(pinned.number), pinned.expires_at - pinned.created_at) == (8, 8, 30_000)
        pushed = await device.recv_type(ChallengeFrame)
        assert (pushed.ch, pushed.digits, pushed.expires - pushed.created) == (pinned.id, 8, 30_000)
        if "--profile" in policy:
            with pytest.raises(InvalidRequest, match="digits"):
                await client.create_challenge("ivy", CONTEXT, digits=2)
        else:
            two = await client.create_challenge("ivy", CONTEXT, digits=2)
            assert (two.digits, len(two.number), two.expires_at - two.created_at) == (2, 2, 120_000)


async def test_confirmed_is_the_rps_own_record_and_sync_takes_the_brokers_last_use(
    client: PushAuthClient, broker: BrokerProcess
) -> None:
    """A new credential comes unconfirmed; its setup test push is verified with its key
    alone; confirm_credential(cred) gives the copy to store (confirmed), whose key then
    verifies ordinary sign-ins. sync_credentials keeps the RP's `confirmed` whatever the
    broker lists, takes the broker's later last_used_at, and names a credential the RP
    confirmed that the broker does not."""
    started = await client.create_enrollment("jo", "jo@example", totp=new_totp())
    assert started.uri is not None
    device = await SimulatedDevice.connect(broker.ws_url)
    async with device.ws:
        waiting = asyncio.create_task(client.wait_enrollment(started, timeout=FRAME_WAIT_S))
        await device.enroll(started.uri)
        await device.authenticate()
        done = await waiting
        cred = done.credential
        assert cred is not None and cred.confirmed is False
        unchanged = await client.sync_credentials("jo", {cred.id: cred})
        assert unchanged.current == {cred.id: cred} and not unchanged.changed
        assert unchanged.unconfirmed_at_broker == []

        # The setup test push, verified with the new credential's key alone.
        test = await client.create_challenge("jo", CONTEXT, credential_id=cred.id)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, test.number), AnswerResult)
        assert (await client.wait_result(test, {cred.id: cred.public_key}, timeout=FRAME_WAIT_S)).approved
        confirmed = await client.confirm_credential(cred)
        assert confirmed == replace(cred, confirmed=True)
        assert await client.confirm_credential(cred.id) is None  # twice is harmless

        # An ordinary sign-in, verified with the keys of the confirmed credentials.
        store = {confirmed.id: confirmed}
        challenge = await client.create_challenge("jo", CONTEXT)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        keys = {c.id: c.public_key for c in store.values() if c.confirmed}
        assert (await client.wait_result(challenge, keys, timeout=FRAME_WAIT_S)).approved

    [listed] = await client.list_credentials("jo")
    assert listed.confirmed and listed.last_used_at is not None
    sync = await client.sync_credentials("jo", store)
    assert sync.current == {cred.id: replace(confirmed, last_used_at=listed.last_used_at)}
    assert (sync.last_used, sync.unconfirmed_at_broker, sync.changed) == ([cred.id], [], True)
    again = await client.sync_credentials("jo", sync.current)
    assert again.current == sync.current and not again.changed
    # The broker lists it confirmed; an RP whose own record says not keeps its word.
    assert (await client.sync_credentials("jo", {cred.id: cred})).current[cred.id].confirmed is False

    # A credential the RP holds as confirmed (say its confirm call was lost) that the
    # broker does not: named, so the RP confirms it again; unchanged in `current`.
    second = await client.create_enrollment("jo", "jo@example", totp=new_totp())
    assert second.uri is not None
    other = await SimulatedDevice.connect(broker.ws_url)
    async with other.ws:
        waiting = asyncio.create_task(client.wait_enrollment(second, timeout=FRAME_WAIT_S))
        await other.enroll(second.uri, name="tablet")
        tablet = (await waiting).credential
    assert tablet is not None and not tablet.confirmed
    held = {**sync.current, tablet.id: replace(tablet, confirmed=True)}
    sync = await client.sync_credentials("jo", held)
    assert sync.unconfirmed_at_broker == [tablet.id] and sync.current == held and not sync.changed
    await client.confirm_credential(tablet.id)
    assert (await client.sync_credentials("jo", held)).unconfirmed_at_broker == []


def test_a_client_in_a_synchronous_app_names_the_event_loop_mistake(broker: BrokerProcess) -> None:
    """A Flask or Django view that runs each SDK call with its own asyncio.run: a client
    closed in its loop opens a new session in the next one; one whose session was left
    open in an ended loop says so, with what to do (README, "The SDK is asyncio"),
    rather than aiohttp's bare "Event loop is closed"."""
    key = new_rp_sync(broker)["api_key"]
    client = PushAuthClient(broker.http_url, key)

    async def health_then_close() -> bool:
        try:
            return (await client.health()).ok
        finally:
            await client.close()

    assert asyncio.run(health_then_close()) and asyncio.run(health_then_close())
    left_open = PushAuthClient(broker.http_url, key)
    assert asyncio.run(left_open.health()).ok
    with pytest.raises(RuntimeError, match=r"opened in another event loop \(closed now\).*close the client"):
        asyncio.run(left_open.health())
