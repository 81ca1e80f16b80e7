"""A compromised broker cannot approve a sign-in or plant a key (DESIGN.md invariant 11).

Each attack runs against a real broker (real Redis, real agent subprocesses) through
tests/support/hostile_broker.py, a proxy that records, replays, rewrites and forges
the broker's answers and the device frames. Each test first runs the same flow
honestly and sees it succeed, so a refusal below is the SDK's doing, not a broken
setup; then the SDK must never report approved, and must name the reason
(VerificationFailed.reason).

The findings they answer (issue 10): a replayed approval of an earlier sign-in with
the same user and context; a recovered credential trusted on the broker's word; an
enrolled key taken on the broker's word; another key listed under a stored id.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_helpers import agent_env, agent_ok  # noqa: F401  (agent_env: autouse, the vault passphrase)
from hostile_fixtures import client, hostile  # noqa: F401  (fixtures: the SDK through the hostile proxy)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker per module, an RP per test)
from support import BrokerProcess
from support.hostile_broker import DeviceLink, Exchange, HostileBroker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from broker import keys as broker_keys
from device_agent import broker_http
from device_agent.store import AccountStore
from protocol import SUBPROTOCOLS, signing
from protocol import uri as enrollment_uri
from protocol.codec import encode
from protocol.frames import Challenge as ChallengeFrame
from protocol.frames import Enroll, Frame, Hello, Welcome
from protocol.session import ClientSession, enroll, sign_answer
from relying_party import (
    BadBrokerResponse,
    Challenge,
    Credential,
    Enrollment,
    PushAuthClient,
    SignInResult,
    Status,
    VerificationFailed,
    VerificationReason,
    verify,
)
from relying_party.wire import b64decode, b64encode

USER = "alice"
ACCOUNT = "alice@example.com"
# Equal context on purpose: the replayed approval is for the same user, app and IP.
CONTEXT = {"app": "Payroll", "ip": "203.0.113.7"}
WAIT_S = 10


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- honest steps, through the proxy ---------------------------------------------------------


async def run(home: Path, *args: str) -> str:
    """The real agent CLI (in a thread: the SDK's loop stays free)."""
    return await asyncio.to_thread(agent_ok, home, *args)


async def start_enrollment(
    client: PushAuthClient, hostile: HostileBroker, *, recoverable: bool = False
) -> Enrollment:
    started = await client.create_enrollment(USER, ACCOUNT, recoverable=recoverable)
    assert started.uri is not None
    # The broker made the link from the proxy's address: the device talks through it too.
    assert enrollment_uri.parse(started.uri).broker == hostile.ws_url
    return started


async def enroll_agent(
    client: PushAuthClient, hostile: HostileBroker, home: Path, name: str, *, recoverable: bool = False
) -> Credential:
    """An honest enrollment of the real agent: the RP gets the key, its binding checked,
    and finishes the setup with a test push aimed at it (then confirm_credential)."""
    started = await start_enrollment(client, hostile, recoverable=recoverable)
    assert started.uri is not None
    await run(home, "enroll", started.uri, "--name", name)
    done = await client.wait_enrollment(started, timeout=WAIT_S)
    assert done.completed and done.credential is not None, done
    cred = done.credential
    assert cred.public_key == signing.public_key(AccountStore(home).seed(cred.id))
    test = await client.create_challenge(USER, {"app": "device setup"}, credential_id=cred.id)
    await run(home, "approve", test.id, "--number", test.number)
    assert (await client.wait_result(test, keys_of(cred), timeout=WAIT_S)).approved
    await client.confirm_credential(cred.id)
    return cred


async def sign_in(
    client: PushAuthClient, home: Path, keys: dict[str, bytes]
) -> tuple[Challenge, SignInResult]:
    """The RP pushes a challenge, the agent approves it with the number, the SDK verifies."""
    challenge = await client.create_challenge(USER, CONTEXT)
    await run(home, "approve", challenge.id, "--number", challenge.number)
    return challenge, await client.wait_result(challenge, keys, timeout=WAIT_S)


def keys_of(*creds: Credential) -> dict[str, bytes]:
    return {c.id: c.public_key for c in creds}


# -- the attacker's tools --------------------------------------------------------------------


def forged_approval(created: Exchange, rp_id: str, seed: bytes, cid: str) -> dict[str, Any]:
    """What a compromised broker can sign for a challenge it relayed (it knows the number,
    the nonces and the context) with a key it holds: a well-formed, valid approval."""
    sent, body = created.request_json, created.json
    frame = ChallengeFrame(
        ch=body["id"],
        cid=cid,
        rp=rp_id,
        rp_name="",
        account=ACCOUNT,
        nonce=b64decode(body["nonce"]),
        rp_nonce=b64decode(sent["rp_nonce"]),
        ctx=sent["context"],
        created=body["created_at"],
        expires=body["expires_at"],
        digits=body["digits"],
    )
    answer = sign_answer(frame, seed=seed, decision="approve", number=body["number"], ts=_now_ms())
    return {
        "credential_id": cid,
        "decision": "approve",
        "number": body["number"],
        "ts": answer.ts,
        "ctx_hash": b64encode(answer.ctx_hash),
        "signature": b64encode(answer.sig),
    }


def claim_approved(hostile: HostileBroker, created: Exchange, answer: dict[str, Any]) -> None:
    """The broker says at once "approved", with `answer`, about the challenge `created` made."""
    body = {**created.json, "status": "approved", "answer": answer}
    hostile.answer("GET", f"/v1/challenges/{body['id']}", lambda _ex: (200, body))


class AttackerDevice:
    """The attacker's own device, holding a key the broker registered: protocol.session
    over a real WebSocket to the real broker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = ClientSession()
        self.ws: Any = None

    async def __aenter__(self) -> AttackerDevice:
        self.ws = await connect(self.url, subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS])
        assert isinstance(await self.recv(), Hello)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def recv(self) -> Frame:
        data = await asyncio.wait_for(self.ws.recv(), WAIT_S)
        return self.session.receive(data)

    async def authenticate(self, cid: str, seed: bytes) -> Welcome:
        await self.ws.send(self.session.authenticate_frame({cid: seed}))
        while not isinstance(frame := await self.recv(), Welcome):
            pass
        return frame

    async def approve(self, challenge: Challenge, seed: bytes) -> ChallengeFrame:
        """Wait for the broker to push `challenge`, and approve it with its number (the
        broker knows it)."""
        while not (isinstance(frame := await self.recv(), ChallengeFrame) and frame.ch == challenge.id):
            pass
        number = challenge.number
        answer = sign_answer(frame, seed=seed, decision="approve", number=number, ts=_now_ms())
        await self.ws.send(encode(answer))
        return frame


# -- 1. a replayed approval ------------------------------------------------------------------


async def test_replayed_approval_with_equal_context_is_refused(
    client: PushAuthClient,
    hostile: HostileBroker,
    rp: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Finding 1: a broker answers a new sign-in with an earlier, really approved
    challenge of the same user and context, then serves its old signed approval."""
    home = tmp_path / "phone"
    cred = await enroll_agent(client, hostile, home, "phone")
    keys = keys_of(cred)

    # Honest: a real sign-in, approved on the device, verified by the SDK; recorded.
    old, honest = await sign_in(client, home, keys)
    assert honest.approved and honest.credential_id == cred.id
    created = hostile.last("POST", "/v1/challenges")
    approved = hostile.last("GET", f"/v1/challenges/{old.id}")
    assert approved.json["status"] == "approved"
    # The recording is a genuine approval: it verifies for the challenge it was made for.
    assert verify.evaluate(old, approved.json, rp_id=rp["id"], public_keys=keys, now_ms=_now_ms()).approved

    # (a) The old challenge as it was: its rp_nonce is not the one the SDK just sent.
    hostile.replay("POST", "/v1/challenges", created)
    forwarded = len([e for e in hostile.recorded("POST", "/v1/challenges") if e.forwarded])
    with pytest.raises(BadBrokerResponse, match="nonce"):
        await client.create_challenge(USER, CONTEXT)
    assert len([e for e in hostile.recorded("POST", "/v1/challenges") if e.forwarded]) == forwarded

    # (b) The old challenge (id, nonce, number) with the new rp_nonce echoed: the SDK takes
    # it, and the real broker serves the old challenge's approval as its result.
    hostile.clear()
    hostile.replay(
        "POST",
        "/v1/challenges",
        created,
        edit=lambda request, body: {**body, "rp_nonce": request.request_json["rp_nonce"]},
    )
    replayed = await client.create_challenge(USER, CONTEXT)
    assert (replayed.id, replayed.nonce, replayed.number) == (old.id, old.nonce, old.number)
    assert replayed.context == old.context and replayed.rp_nonce != old.rp_nonce
    with pytest.raises(VerificationFailed) as failure:
        await client.wait_result(replayed, keys, timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    assert failure.value.broker_status is Status.APPROVED
    served = hostile.last("GET", f"/v1/challenges/{old.id}")
    assert served.forwarded and not served.rules  # the real broker's own answer, unchanged
    assert served.json["answer"] == approved.json["answer"]
    # Only the RP's own value stops it: over the old one, the same answer would pass.
    with_old_nonce = replace(replayed, rp_nonce=old.rp_nonce)
    result = verify.evaluate(with_old_nonce, served.json, rp_id=rp["id"], public_keys=keys, now_ms=_now_ms())
    assert result.approved

    # (c) An old answer signed outside the challenge's lifetime by the RP's clock: refused
    # even where every signed value matches (the verifier's unit path).
    later = replace(old, created_at=old.created_at + 600_000, expires_at=old.expires_at + 600_000)
    with pytest.raises(VerificationFailed) as stale:
        verify.evaluate(later, approved.json, rp_id=rp["id"], public_keys=keys, now_ms=_now_ms())
    assert stale.value.reason is VerificationReason.STALE_ANSWER


# -- 3. enrollment: the key is the device's, not the broker's --------------------------------


async def test_substituted_enrollment_key_is_refused(
    client: PushAuthClient,
    hostile: HostileBroker,
    rp: dict[str, Any],
    broker: BrokerProcess,
    tmp_path: Path,
) -> None:
    """Finding 3: a broker reports (or registers) its own key for the user's enrollment."""
    phone = tmp_path / "phone"
    cred = await enroll_agent(client, hostile, phone, "phone")  # honest: bound and stored
    stored = keys_of(cred)
    attacker = signing.new_seed()
    attacker_pk = signing.public_key(attacker)

    # (a) The answer to GET /v1/enrollments/{id} names the attacker's key. He has the token
    # but not the link's secret, so his binding is over a secret of his own; or he keeps
    # the device's binding, made for the device's key.
    tablet = tmp_path / "tablet"
    started = await start_enrollment(client, hostile)
    assert started.uri is not None and started.token is not None
    await run(tablet, "enroll", started.uri, "--name", "tablet")
    honest = await client.get_enrollment(started)  # the same read, untouched: it verifies
    assert honest.completed and honest.credential is not None
    for keep_device_binding in (False, True):

        def substitute(credential: dict[str, Any], keep: bool = keep_device_binding) -> dict[str, Any]:
            assert started.token is not None
            own = signing.binding_bytes(
                rp["id"], started.token, secrets.token_bytes(32), attacker_pk, credential["name"], None
            )
            binding = credential["binding"] if keep else b64encode(signing.sign(attacker, own))
            return {**credential, "public_key": b64encode(attacker_pk), "binding": binding}

        hostile.clear()
        hostile.edit_enrolled_credential(substitute)
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_enrollment(started, timeout=WAIT_S)
        assert failure.value.reason is VerificationReason.BAD_BINDING
        assert failure.value.credential_id == honest.credential.id
    hostile.clear()

    # (b) The device's enroll frame is rewritten in flight: the attacker's key, with the
    # proof of possession the broker checks re-signed over the hello nonce, is what the
    # real broker registers. The binding he cannot make.
    def swap_key(frame: Frame, link: DeviceLink) -> Frame:
        if not isinstance(frame, Enroll):
            return frame
        assert link.hello is not None
        return enroll(
            link.hello.nonce,
            rid=frame.rid,
            token=frame.token,
            seed=attacker,
            name=frame.name,
            rp=rp["id"],
            binding_secret=secrets.token_bytes(32),
            recovery_pk=frame.rpk,
        )

    hostile.on_device_frame(swap_key)
    laptop = tmp_path / "laptop"
    started = await start_enrollment(client, hostile)
    assert started.uri is not None
    await run(laptop, "enroll", started.uri, "--name", "laptop")
    [sent] = hostile.device_frames(Enroll)[-1:]
    assert sent.tampered and isinstance(sent.frame, Enroll)
    assert sent.frame.pk != attacker_pk  # the device sent its own key...
    with pytest.raises(VerificationFailed) as failure:
        await client.wait_enrollment(started, timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.BAD_BINDING
    planted = hostile.last("GET", f"/v1/enrollments/{started.id}")
    assert not planted.rules  # ...and the real broker itself now reports the attacker's
    assert planted.json["credential"]["public_key"] == b64encode(attacker_pk)
    planted_cid = planted.json["credential"]["id"]
    hostile.clear()

    # The planted key is active at the broker and can answer for the user (the broker
    # saw the RP's API key go by, so it confirms the setup itself); the RP stored nothing
    # from that enrollment, so its approval counts for nothing.
    async with PushAuthClient(broker.http_url, rp["api_key"]) as insider:
        await insider.confirm_credential(planted_cid)
    async with AttackerDevice(broker.ws_url) as device:
        welcome = await device.authenticate(planted_cid, attacker)
        assert welcome.accepted == (planted_cid,)
        challenge = await client.create_challenge(USER, CONTEXT)
        frame = sign_answer(
            ChallengeFrame(
                ch=challenge.id,
                cid=planted_cid,
                rp=rp["id"],
                rp_name="",
                account=ACCOUNT,
                nonce=challenge.nonce,
                rp_nonce=challenge.rp_nonce,
                ctx=CONTEXT,
                created=challenge.created_at,
                expires=challenge.expires_at,
                digits=challenge.digits,
            ),
            seed=attacker,
            decision="approve",
            number=challenge.number,
            ts=_now_ms(),
        )
        await device.ws.send(encode(frame))
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, stored, timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
    assert failure.value.broker_status is Status.APPROVED  # the real broker took it
    assert failure.value.credential_id == planted_cid
    result = hostile.last("GET", f"/v1/challenges/{challenge.id}").json
    # Had the RP stored the key the broker reported, this very answer would approve.
    trusting = {**stored, planted_cid: attacker_pk}
    assert verify.evaluate(challenge, result, rp_id=rp["id"], public_keys=trusting, now_ms=_now_ms()).approved
    # The honest device still signs in.
    _, again = await sign_in(client, phone, stored)
    assert again.approved and again.credential_id == cred.id


# -- 2. recovered credentials need the stored recovery key's proof ----------------------------


async def test_injected_recovered_credential_is_refused(
    client: PushAuthClient,
    hostile: HostileBroker,
    rp: dict[str, Any],
    broker: BrokerProcess,
    tmp_path: Path,
) -> None:
    """Finding 2: the broker lists a credential "recovered from" the user's real one,
    with the attacker's key and proofs he made himself."""
    phone = tmp_path / "phone"
    cred = await enroll_agent(client, hostile, phone, "phone", recoverable=True)
    assert cred.recovery_key is not None  # bound at enrollment: the RP keeps it
    stored = {cred.id: cred}

    # Honest: the listing matches the store, nothing to add or refuse.
    synced = await client.sync_credentials(USER, stored)
    assert synced.public_keys() == keys_of(cred) and not synced.refused and not synced.added

    attacker, attacker_recovery = signing.new_seed(), signing.new_seed()
    attacker_pk = signing.public_key(attacker)
    ts = _now_ms()
    message = signing.recover_bytes(
        rp["id"], cred.id, attacker_pk, "new phone", signing.public_key(attacker_recovery), ts
    )
    forged_cid = "cred_" + secrets.token_hex(8)
    forged = {
        **cred.to_json(),
        "id": forged_cid,
        "name": "new phone",
        "public_key": b64encode(attacker_pk),
        "created_at": ts,
        "recovered_from": cred.id,
        "binding": None,
        "recovery_key": {
            "public_key": b64encode(signing.public_key(attacker_recovery)),
            "ts": None,
            "signature": None,
        },
        # Signed by the attacker's keys: he does not hold the user's recovery key.
        "recovery": {
            "from": cred.id,
            "ts": ts,
            "recovery_signature": b64encode(signing.sign(attacker_recovery, message)),
            "signature": b64encode(signing.sign(attacker, message)),
        },
    }
    hostile.edit_credential_list(lambda _user, listed: [*listed, forged])
    synced = await client.sync_credentials(USER, stored)
    assert [f.reason for f in synced.refused] == [VerificationReason.BAD_RECOVERY]
    assert synced.refused[0].credential_id == forged_cid
    assert synced.public_keys() == keys_of(cred) and not synced.added and not synced.spent
    assert synced.current[cred.id].recovery_key == cred.recovery_key  # still unused
    keys = synced.public_keys()

    # An approval signed by the injected key: the broker claims it, the SDK does not hold it.
    challenge = await client.create_challenge(USER, CONTEXT)
    created = hostile.last("POST", "/v1/challenges")
    claim_approved(hostile, created, forged_approval(created, rp["id"], attacker, forged_cid))
    with pytest.raises(VerificationFailed) as failure:
        await client.wait_result(challenge, keys, timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
    assert failure.value.credential_id == forged_cid
    hostile.clear()

    # The same credential written straight into the broker's Redis (a compromised store):
    # the real broker lists it, pushes to it and takes its approval; the SDK does not.
    redis = aioredis.Redis.from_url(broker.redis_url or "")
    try:
        await redis.hset(
            broker_keys.credential(forged_cid),
            mapping={
                "rp": rp["id"], "user": USER, "account": ACCOUNT, "name": "new phone", "pk": attacker_pk,
                "created": ts, "status": "active", "recovered_from": cred.id,
                "recovery_pk": signing.public_key(attacker_recovery), "rec_ts": ts,
                "rec_sig": b64decode(forged["recovery"]["recovery_signature"]),
                "rec_pop": b64decode(forged["recovery"]["signature"]),
            },
        )  # fmt: skip
        await redis.hset(broker_keys.user_credentials(rp["id"], USER), forged_cid, ACCOUNT)
    finally:
        await redis.aclose()
    listed = {c.id for c in await client.list_credentials(USER)}
    assert listed == {cred.id, forged_cid} and not hostile.recorded("GET", ".*credentials")[-1].rules
    synced = await client.sync_credentials(USER, stored)
    assert [(f.reason, f.credential_id) for f in synced.refused] == [
        (VerificationReason.BAD_RECOVERY, forged_cid)
    ]
    assert synced.public_keys() == keys_of(cred)
    async with AttackerDevice(broker.ws_url) as device:
        assert (await device.authenticate(forged_cid, attacker)).accepted == (forged_cid,)
        challenge = await client.create_challenge(USER, CONTEXT)
        await device.approve(challenge, attacker)
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, synced.public_keys(), timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
    assert failure.value.broker_status is Status.APPROVED  # the real broker took it
    assert failure.value.credential_id == forged_cid
    await client.revoke_credential(forged_cid)  # what an RP does with a refused credential

    # The same flow with a real recovery (the device's own recovery key, through the real
    # broker) is accepted: the refusal above is about the proof, not about recoveries.
    store = AccountStore(phone)
    recovery_seed = store.recovery_seed(ACCOUNT)
    assert recovery_seed is not None
    new_seed = signing.new_seed()
    made = await asyncio.to_thread(
        broker_http.recover,
        hostile.ws_url,
        rp["id"],
        cred.id,
        recovery_seed,
        new_seed,
        signing.new_seed(),
        "new phone",
    )
    synced = await client.sync_credentials(USER, stored)
    assert not synced.refused
    assert [c.id for c in synced.added] == [made["id"]]
    assert synced.current[made["id"]].public_key == signing.public_key(new_seed)
    assert synced.spent == [cred.id]


# -- 4. a stored id listed with another key ---------------------------------------------------


async def test_swapped_key_in_credential_list_is_refused(
    client: PushAuthClient,
    hostile: HostileBroker,
    rp: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The broker lists the user's credential id with the attacker's public key."""
    phone = tmp_path / "phone"
    cred = await enroll_agent(client, hostile, phone, "phone")
    stored = {cred.id: cred}
    synced = await client.sync_credentials(USER, stored)  # honest: nothing changes
    assert synced.public_keys() == keys_of(cred) and not synced.refused

    attacker = signing.new_seed()
    attacker_pk = signing.public_key(attacker)
    hostile.edit_credential_list(
        lambda _user, listed: [
            {**c, "public_key": b64encode(attacker_pk)} if c["id"] == cred.id else c for c in listed
        ]
    )
    synced = await client.sync_credentials(USER, stored)
    assert [(f.reason, f.credential_id) for f in synced.refused] == [
        (VerificationReason.KEY_MISMATCH, cred.id)
    ]
    assert synced.public_keys() == keys_of(cred)  # the stored key stays
    keys = synced.public_keys()

    # An approval signed by the attacker's key under the stored id.
    challenge = await client.create_challenge(USER, CONTEXT)
    created = hostile.last("POST", "/v1/challenges")
    claim_approved(hostile, created, forged_approval(created, rp["id"], attacker, cred.id))
    with pytest.raises(VerificationFailed) as failure:
        await client.wait_result(challenge, keys, timeout=WAIT_S)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    assert failure.value.credential_id == cred.id
    # With the listed key taken on the broker's word, the same answer would approve.
    result = hostile.last("GET", f"/v1/challenges/{challenge.id}").json
    trusting = {cred.id: attacker_pk}
    assert verify.evaluate(challenge, result, rp_id=rp["id"], public_keys=trusting, now_ms=_now_ms()).approved
    hostile.clear()
    # And the honest device still signs in with the stored key.
    _, again = await sign_in(client, phone, keys)
    assert again.approved


# -- 5. the one request: the streamed result is verified like the long-poll's -----------------


async def test_forged_result_in_the_one_request_stream_is_refused(
    client: PushAuthClient,
    hostile: HostileBroker,
    rp: dict[str, Any],
    tmp_path: Path,
) -> None:
    """sign_in gets the challenge and its result as two lines of one streamed response.
    A broker that turns the user's denial on the second line into an approval, signed
    by a key it holds under the user's credential id, gets a VerificationFailed; and
    a broker that swaps the stream for a plain body only sends the SDK to the long-poll,
    whose answer is verified the same way."""
    home = tmp_path / "phone"
    cred = await enroll_agent(client, hostile, home, "phone")
    keys = keys_of(cred)

    # Honest, through the proxy, line by line: the number comes before the answer.
    async with await client.sign_in(USER, CONTEXT) as pending:
        assert pending.streamed
        await run(home, "approve", pending.challenge.id, "--number", pending.challenge.number)
        assert (await pending.result(keys)).approved
    honest = hostile.last("POST", "/v1/challenges")
    assert honest.lines[0]["number"] == pending.challenge.number and not honest.rules
    assert honest.lines[1]["status"] == "approved"

    # The user denies; the broker's second line says approved, with its own signature.
    attacker = signing.new_seed()

    def approve_instead(exchange: Exchange, index: int, body: Any) -> Any:
        if index == 0:
            return body
        created = replace(exchange, response_body=json.dumps(exchange.lines[0]).encode())
        return {**body, "status": "approved", "answer": forged_approval(created, rp["id"], attacker, cred.id)}

    hostile.rewrite_stream("POST", "/v1/challenges", approve_instead)
    async with await client.sign_in(USER, CONTEXT) as pending:
        await run(home, "deny", pending.challenge.id)
        with pytest.raises(VerificationFailed) as failure:
            await pending.result(keys)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE
    assert failure.value.broker_status is Status.APPROVED
    streamed = hostile.last("POST", "/v1/challenges")
    assert "rewrite_line" in streamed.rules and streamed.upstream_body is not None
    assert b'"denied"' in streamed.upstream_body  # the real broker said denied

    # A broker that does not stream (as an older one: the proxy drops the stream from
    # Accept): the SDK carries on by long-poll, with the same verification.
    hostile.clear()
    hostile.streaming = False
    creates = len(hostile.recorded("POST", "/v1/challenges"))
    async with await client.sign_in(USER, CONTEXT) as pending:
        assert not pending.streamed
        await run(home, "approve", pending.challenge.id, "--number", pending.challenge.number)
        assert (await pending.result(keys)).approved
    assert hostile.last("POST", "/v1/challenges").json["number"] == pending.challenge.number
    assert hostile.last("GET", f"/v1/challenges/{pending.challenge.id}").json["status"] == "approved"
    assert len(hostile.recorded("POST", "/v1/challenges")) == creates + 1  # one challenge, not two


# -- the harness itself ------------------------------------------------------------------------


async def test_the_hostile_proxy_is_transparent_when_honest(
    hostile: HostileBroker,
    broker: BrokerProcess,
) -> None:
    """Without rules it changes nothing a device sees: the broker's version pick, its
    frames and its close codes (so the attacks above are the rules' doing alone)."""
    async with connect(hostile.ws_url, subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS]) as ws:
        assert ws.subprotocol == SUBPROTOCOLS[0]
        assert isinstance(ClientSession().receive(await asyncio.wait_for(ws.recv(), WAIT_S)), Hello)

    # A device that offers no version the broker speaks (a version 1 agent) gets its 4406,
    # through the proxy exactly as from the broker itself.
    async def refusal(url: str) -> tuple[int, str]:
        async with connect(url) as ws:
            assert ws.subprotocol is None
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT_S)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason

    direct = await refusal(broker.ws_url)
    assert direct[0] == 4406 and direct[1].startswith("unsupported_version")
    assert await refusal(hostile.ws_url) == direct
    assert [link.subprotocol for link in hostile.links] == [SUBPROTOCOLS[0], None]
    assert hostile.links[1].close is not None and hostile.links[1].close[0] == 4406
    assert all(not record.tampered for link in hostile.links for record in link.frames)
