"""The RP SDK against a compromised broker: forged answers must never approve.

The threat model of the SDK is a broker that lies, so the broker here is a small
real aiohttp server written by the test that returns crafted JSON. The device
answers are real Ed25519 signatures made with real keys by protocol.session.sign_answer,
then forged in every way a broker could: another key, another credential, another
challenge / nonce / RP, altered fields, a wrong number claimed as approved.

Each forgery is tried through both ways the SDK reads a result: the long-poll
(create_challenge + wait_result) and the one request (sign_in: the broker streams the
challenge and the forged result as two lines, docs/http-api.md "One request").
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web
from support import serving

from protocol import signing
from protocol.frames import Answer, Decision
from protocol.frames import Challenge as ChallengeFrame
from protocol.session import sign_answer
from relying_party import (
    BadBrokerResponse,
    Challenge,
    PushAuthClient,
    SignInResult,
    Status,
    VerificationFailed,
    VerificationReason,
)
from relying_party.sdk import LONG_POLL_S
from relying_party.verify import MAX_CLOCK_SKEW_MS
from relying_party.wire import b64encode

NDJSON = "application/x-ndjson"
RP_ID = "rp_acme"
NUMBER = "42"
CONTEXT = {"app": "Payroll", "ip": "203.0.113.7", "browser": "Firefox on Linux"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FakeBroker:
    """A broker under the test's control. `result` builds each GET /v1/challenges/{id} body."""

    url: str = ""
    rp_id: str = RP_ID
    number: str = NUMBER
    ttl_ms: int = 60_000
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    result: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Edits the POST /v1/challenges answer (what the SDK is told it created).
    on_create: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    polls: list[int] = field(default_factory=list)
    # The bodies of POST /v1/challenges, as the SDK sent them.
    asked: list[dict[str, Any]] = field(default_factory=list)
    # Set: POST /v1/challenges with Accept: application/x-ndjson is streamed, its second
    # line made by stream_result(the challenge as the SDK will know it) (and later
    # long-polls say the same). None: the broker does not stream (an older broker).
    stream_result: Callable[[Challenge], Callable[[dict[str, Any]], dict[str, Any]]] | None = None
    # Raw bytes to stream after the first line instead of a result line.
    stream_tail: bytes | None = None

    async def rp(self, request: web.Request) -> web.Response:
        return web.json_response({"id": self.rp_id, "name": "Acme"})

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.asked.append(body)
        now = _now_ms()
        ch = {
            "id": "ch_" + secrets.token_hex(8),
            "user": body["user"],
            # An honest broker's answer to number_matching (RP API 1.9): echoed, no number when off.
            "number": self.number if body.get("number_matching", True) else None,
            "number_matching": body.get("number_matching", True),
            "digits": body.get("digits", 2),  # this broker's policy: 2 digits
            "nonce": b64encode(secrets.token_bytes(32)),
            # The SDK's own value, echoed (the SDK refuses a challenge without it).
            "rp_nonce": body["rp_nonce"],
            "context": body["context"],
            "created_at": now,
            "expires_at": now + self.ttl_ms,
            "devices": 1,
            "credential_id": body.get("credential_id"),  # a test push's target, echoed
            # as a broker of RP API 1.8 says whom it was aimed at
            "credential_ids": body.get("credential_ids")
            or ([body["credential_id"]] if body.get("credential_id") else None),
        }
        if self.on_create is not None:
            ch = self.on_create(ch)
        self.created[ch["id"]] = ch
        streams = self.stream_result is not None or self.stream_tail is not None
        if not (streams and NDJSON in request.headers.get("Accept", "")):
            return web.json_response(ch, status=201)
        response = web.StreamResponse(status=201, headers={"Content-Type": NDJSON})
        await response.prepare(request)
        await response.write(json.dumps(ch).encode() + b"\n")
        if self.stream_result is not None:
            self.result = self.stream_result(Challenge.from_json(ch, context=body["context"]))
            await response.write(json.dumps(self._result_body(ch)).encode() + b"\n")
        else:
            assert self.stream_tail is not None
            await response.write(self.stream_tail)
        await response.write_eof()
        return response

    async def get(self, request: web.Request) -> web.Response:
        self.polls.append(int(request.query.get("wait", "0")))
        return web.json_response(self._result_body(self.created[request.match_info["id"]]))

    def _result_body(self, ch: dict[str, Any]) -> dict[str, Any]:
        base = {k: ch[k] for k in ("id", "user", "nonce", "rp_nonce", "context", "created_at", "expires_at")}
        body = {**base, "status": "pending", "answer": None}
        return body if self.result is None else self.result(body)


@pytest.fixture
async def fake_broker() -> AsyncIterator[FakeBroker]:
    fake = FakeBroker()
    app = web.Application()
    app.router.add_get("/v1/rp", fake.rp)
    app.router.add_post("/v1/challenges", fake.create)
    app.router.add_get("/v1/challenges/{id}", fake.get)
    async with serving(app) as url:
        fake.url = url
        yield fake


@dataclass
class Device:
    """One real device credential: a seed the device holds, the public key the RP stored."""

    cid: str
    seed: bytes = field(default_factory=signing.new_seed)

    @property
    def public_key(self) -> bytes:
        return signing.public_key(self.seed)

    def answer(
        self,
        challenge: Challenge,
        decision: str = Decision.APPROVE,
        number: str = NUMBER,
        *,
        rp: str = RP_ID,
        ch: str | None = None,
        nonce: bytes | None = None,
        rp_nonce: bytes | None = None,
        cid: str | None = None,
        ctx: dict[str, str] | None = None,
        ts: int | None = None,
    ) -> Answer:
        """The device's real signed answer to the challenge frame it was (maybe falsely) shown."""
        frame = ChallengeFrame(
            ch=ch or challenge.id,
            cid=cid or self.cid,
            rp=rp,
            rp_name="Acme",
            account="alice@acme",
            nonce=nonce or challenge.nonce,
            rp_nonce=rp_nonce or challenge.rp_nonce,
            ctx=CONTEXT if ctx is None else ctx,
            created=challenge.created_at,
            expires=challenge.expires_at,
            digits=challenge.digits,
        )
        return sign_answer(
            frame, seed=self.seed, decision=decision, number=number, ts=_now_ms() if ts is None else ts
        )


def answer_json(answer: Answer, **override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "credential_id": answer.cid,
        "decision": answer.decision,
        "number": answer.number,
        "ts": answer.ts,
        "ctx_hash": b64encode(answer.ctx_hash),
        "signature": b64encode(answer.sig),
    }
    body.update(override)
    return body


def claims(status: str, answer: dict[str, Any] | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {**body, "status": status, "answer": answer}


ALICE = Device("cred_alice_phone")
ALICE_TABLET = Device("cred_alice_tablet")
MALLORY = Device("cred_mallory")


FLOWS = ("long-poll", "one request")


@pytest.fixture(params=FLOWS)
def flow(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def run_sign_in(
    fake: FakeBroker,
    make_result: Callable[[Challenge], Callable[[dict[str, Any]], dict[str, Any]]],
    *,
    keys: dict[str, bytes] | None = None,
    timeout: float | None = 5,
    ttl: int = 60,
    flow: str = "long-poll",
    credential_ids: list[str] | None = None,
) -> SignInResult:
    """Create a challenge through the SDK, let the broker answer as told, return the SDK's verdict:
    with create_challenge + wait_result, or with sign_in (the broker streams its lie)."""
    store = {ALICE.cid: ALICE.public_key, ALICE_TABLET.cid: ALICE_TABLET.public_key} if keys is None else keys
    async with PushAuthClient(fake.url, "test-key") as client:
        if flow == "one request":
            fake.stream_result = make_result
            async with await client.sign_in(
                "alice", CONTEXT, ttl=ttl, credential_ids=credential_ids
            ) as pending:
                assert pending.streamed
                return await pending.result(store, timeout=timeout)
        challenge = await client.create_challenge("alice", CONTEXT, ttl=ttl, credential_ids=credential_ids)
        fake.result = make_result(challenge)
        return await client.wait_result(challenge, store, timeout=timeout)


# -- honest answers: the SDK reaches each outcome itself ------------------------


@pytest.mark.parametrize(
    ("decision", "number", "status"),
    [
        (Decision.APPROVE, NUMBER, Status.APPROVED),
        (Decision.APPROVE, "17", Status.NUMBER_MISMATCH),
        (Decision.DENY, "", Status.DENIED),
        (Decision.FRAUD, "", Status.REPORTED),
    ],
)
async def test_valid_answer_gives_the_outcome_the_sdk_computes(
    fake_broker: FakeBroker, flow: str, decision: str, number: str, status: Status
) -> None:
    result = await run_sign_in(
        fake_broker, lambda ch: claims(status, answer_json(ALICE.answer(ch, decision, number))), flow=flow
    )
    assert result.status is status
    assert result.approved is (status is Status.APPROVED)
    assert result.credential_id == ALICE.cid
    assert result.answer is not None
    assert result.answer.decision == decision


async def test_second_device_of_the_user_can_approve(fake_broker: FakeBroker, flow: str) -> None:
    result = await run_sign_in(
        fake_broker, lambda ch: claims("approved", answer_json(ALICE_TABLET.answer(ch))), flow=flow
    )
    assert result.approved
    assert result.credential_id == ALICE_TABLET.cid


# -- forged answers: a VerificationFailed with the reason, never an approval ------

FORGERIES: dict[str, tuple[Callable[[Challenge], dict[str, Any] | None], VerificationReason]] = {
    # Signed by a key the RP did not store, under the name of Alice's credential.
    "wrong key": (
        lambda ch: answer_json(MALLORY.answer(ch, cid=ALICE.cid)),
        VerificationReason.BAD_SIGNATURE,
    ),
    # A valid signature by a credential that is not in the RP's store for Alice.
    "credential not in the store": (
        lambda ch: answer_json(MALLORY.answer(ch)),
        VerificationReason.UNKNOWN_CREDENTIAL,
    ),
    # Alice's phone signed, the broker says it was her tablet.
    "relabelled credential id": (
        lambda ch: answer_json(ALICE.answer(ch), credential_id=ALICE_TABLET.cid),
        VerificationReason.BAD_SIGNATURE,
    ),
    "signed over another challenge id": (
        lambda ch: answer_json(ALICE.answer(ch, ch="ch_other")),
        VerificationReason.BAD_SIGNATURE,
    ),
    "signed over another nonce": (
        lambda ch: answer_json(ALICE.answer(ch, nonce=secrets.token_bytes(32))),
        VerificationReason.BAD_SIGNATURE,
    ),
    # The RP's own fresh value is what ties an answer to this very sign-in.
    "signed over another rp_nonce": (
        lambda ch: answer_json(ALICE.answer(ch, rp_nonce=secrets.token_bytes(32))),
        VerificationReason.BAD_SIGNATURE,
    ),
    # A real signature, but made long before this challenge existed (by the RP's clock).
    "signed before the challenge": (
        lambda ch: answer_json(ALICE.answer(ch, ts=ch.created_at - 10 * 60_000)),
        VerificationReason.STALE_ANSWER,
    ),
    "signed after the challenge expired": (
        lambda ch: answer_json(ALICE.answer(ch, ts=ch.expires_at + 10 * 60_000)),
        VerificationReason.STALE_ANSWER,
    ),
    "signed for another RP": (
        lambda ch: answer_json(ALICE.answer(ch, rp="rp_other")),
        VerificationReason.BAD_SIGNATURE,
    ),
    # The user typed a wrong number; the broker rewrites it to the right one.
    "number altered": (
        lambda ch: answer_json(ALICE.answer(ch, number="17"), number=NUMBER),
        VerificationReason.BAD_SIGNATURE,
    ),
    # The user denied; the broker turns it into an approval with the right number.
    "decision altered": (
        lambda ch: answer_json(ALICE.answer(ch, Decision.DENY, ""), decision="approve", number=NUMBER),
        VerificationReason.BAD_SIGNATURE,
    ),
    "timestamp altered": (
        lambda ch: answer_json((a := ALICE.answer(ch)), ts=a.ts + 1),
        VerificationReason.BAD_SIGNATURE,
    ),
    # The device was shown another context (say, another app); the hash says so.
    "signed over another context": (
        lambda ch: answer_json(ALICE.answer(ch, ctx={**CONTEXT, "app": "Evil"})),
        VerificationReason.CONTEXT_MISMATCH,
    ),
    # ...and the broker swapped in the hash of the real context: the signature breaks.
    "context hash replaced": (
        lambda ch: answer_json(
            ALICE.answer(ch, ctx={"app": "Evil"}), ctx_hash=b64encode(signing.context_hash(CONTEXT))
        ),
        VerificationReason.BAD_SIGNATURE,
    ),
    "signature bit flipped": (
        lambda ch: answer_json(
            (a := ALICE.answer(ch)), signature=b64encode(bytes([a.sig[0] ^ 1]) + a.sig[1:])
        ),
        VerificationReason.BAD_SIGNATURE,
    ),
    "no answer at all": (lambda ch: None, VerificationReason.MISSING_ANSWER),
    # A real approval with the wrong number, claimed as approved.
    "wrong number claimed approved": (
        lambda ch: answer_json(ALICE.answer(ch, number="17")),
        VerificationReason.STATUS_MISMATCH,
    ),
    "deny claimed approved": (
        lambda ch: answer_json(ALICE.answer(ch, Decision.DENY, "")),
        VerificationReason.STATUS_MISMATCH,
    ),
    "fraud report claimed approved": (
        lambda ch: answer_json(ALICE.answer(ch, Decision.FRAUD, "")),
        VerificationReason.STATUS_MISMATCH,
    ),
    "signature not base64url": (
        lambda ch: answer_json(ALICE.answer(ch), signature="not base64!"),
        VerificationReason.MALFORMED_ANSWER,
    ),
    "signature too short": (
        lambda ch: answer_json((a := ALICE.answer(ch)), signature=b64encode(a.sig[:63])),
        VerificationReason.MALFORMED_ANSWER,
    ),
    "signature missing": (
        lambda ch: {k: v for k, v in answer_json(ALICE.answer(ch)).items() if k != "signature"},
        VerificationReason.MALFORMED_ANSWER,
    ),
    "unknown decision": (
        lambda ch: answer_json(ALICE.answer(ch), decision="allow"),
        VerificationReason.MALFORMED_ANSWER,
    ),
    "timestamp is a boolean": (
        lambda ch: answer_json(ALICE.answer(ch), ts=True),
        VerificationReason.MALFORMED_ANSWER,
    ),
    "approval without a number": (
        lambda ch: answer_json(ALICE.answer(ch, number="")),
        VerificationReason.MALFORMED_ANSWER,
    ),
    "answer is a list": (lambda ch: [answer_json(ALICE.answer(ch))], VerificationReason.MALFORMED_ANSWER),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
async def test_forged_approval_is_a_verification_failure(
    fake_broker: FakeBroker, flow: str, case: str
) -> None:
    forge, reason = FORGERIES[case]
    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(fake_broker, lambda ch: claims("approved", forge(ch)), flow=flow)
    assert failure.value.reason is reason
    assert failure.value.broker_status is Status.APPROVED


async def test_replayed_answer_of_an_earlier_challenge_is_refused(fake_broker: FakeBroker) -> None:
    """A real approval of yesterday's sign-in does not approve today's."""
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        earlier = await client.create_challenge("alice", CONTEXT)
        old = answer_json(ALICE.answer(earlier))
        challenge = await client.create_challenge("alice", CONTEXT)
        fake_broker.result = lambda body: {**body, "status": "approved", "answer": old}
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, {ALICE.cid: ALICE.public_key}, timeout=5)
    assert failure.value.reason is VerificationReason.BAD_SIGNATURE


async def test_result_about_another_challenge_is_refused(fake_broker: FakeBroker) -> None:
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        earlier = await client.create_challenge("alice", CONTEXT)
        challenge = await client.create_challenge("alice", CONTEXT)
        good_old = {**fake_broker.created[earlier.id], "status": "approved"}
        good_old["answer"] = answer_json(ALICE.answer(earlier))
        fake_broker.result = lambda body: good_old
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, {ALICE.cid: ALICE.public_key}, timeout=5)
    assert failure.value.reason is VerificationReason.WRONG_CHALLENGE


@pytest.mark.parametrize("status", ["approved", "denied"])
async def test_a_test_push_is_answered_by_its_own_credential_alone(
    fake_broker: FakeBroker, status: str
) -> None:
    """A new device's test push (aimed at one credential) answered by another of the
    user's devices counts for nothing, even when the caller passed that device's key too
    (its confirmed keys, as for a sign-in): else the RP would confirm a device whose own
    key never approved anything (docs/protocol.md section 17, step 4)."""
    decision = Decision.APPROVE if status == "approved" else Decision.DENY
    number = NUMBER if status == "approved" else ""
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        test = await client.create_challenge("alice", CONTEXT, credential_id=ALICE_TABLET.cid)
        fake_broker.result = claims(status, answer_json(ALICE.answer(test, decision, number)))
        keys = {ALICE.cid: ALICE.public_key, ALICE_TABLET.cid: ALICE_TABLET.public_key}
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(test, keys, timeout=5)
        assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
        assert failure.value.credential_id == ALICE.cid
        # The target's own answer passes, with the same keys.
        fake_broker.result = claims(status, answer_json(ALICE_TABLET.answer(test, decision, number)))
        assert (await client.wait_result(test, keys, timeout=5)).status.value == status


async def test_a_sign_in_aimed_at_some_devices_is_answered_by_them_alone(
    fake_broker: FakeBroker, flow: str
) -> None:
    """credential_ids leaves alice's phone out (say, its removal is pending): a broker that
    delivers to it all the same gets its real approval refused, though the caller passed
    the phone's key too (all of alice's keys, as for an ordinary sign-in); an answer from
    one it was aimed at passes with the same keys. Both flows: create + long-poll and the
    one request."""
    aimed = [ALICE_TABLET.cid, "cred_alice_laptop"]
    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(
            fake_broker,
            lambda ch: claims("approved", answer_json(ALICE.answer(ch))),
            flow=flow,
            credential_ids=aimed,
        )
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
    assert failure.value.credential_id == ALICE.cid
    assert fake_broker.asked[-1]["credential_ids"] == aimed
    result = await run_sign_in(
        fake_broker,
        lambda ch: claims("approved", answer_json(ALICE_TABLET.answer(ch))),
        flow=flow,
        credential_ids=aimed,
    )
    assert result.approved and result.credential_id == ALICE_TABLET.cid


@pytest.mark.parametrize(
    "said",
    [
        [ALICE.cid, ALICE_TABLET.cid],  # one more than asked: the phone left out
        [ALICE_TABLET.cid],  # one fewer
        None,  # every confirmed device
    ],
)
async def test_a_challenge_aimed_elsewhere_than_asked_is_refused(
    fake_broker: FakeBroker, said: list[str] | None
) -> None:
    fake_broker.on_create = lambda ch: {**ch, "credential_ids": said, "credential_id": None}
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        with pytest.raises(BadBrokerResponse, match="aimed it at other credentials"):
            await client.create_challenge(
                "alice", CONTEXT, credential_ids=[ALICE_TABLET.cid, "cred_alice_laptop"]
            )


async def test_credential_ids_of_the_wrong_kind_are_the_callers_mistake(fake_broker: FakeBroker) -> None:
    """A string would read as a list of its characters; with credential_id as well, which
    one was meant is unclear: raised before anything is sent."""
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        with pytest.raises(TypeError, match="list of credential ids"):
            await client.create_challenge("alice", CONTEXT, credential_ids=ALICE.cid)
        with pytest.raises(TypeError, match="list of credential ids"):
            await client.sign_in("alice", CONTEXT, credential_ids=[ALICE.cid, 7])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="not both"):
            await client.create_challenge(
                "alice", CONTEXT, credential_id=ALICE.cid, credential_ids=[ALICE_TABLET.cid]
            )
    assert fake_broker.asked == []


async def test_empty_key_store_approves_nothing(fake_broker: FakeBroker, flow: str) -> None:
    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(
            fake_broker, lambda ch: claims("approved", answer_json(ALICE.answer(ch))), keys={}, flow=flow
        )
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL


async def test_broker_cannot_change_the_number_after_creation(fake_broker: FakeBroker, flow: str) -> None:
    """The number the SDK compares with is the one from creation, whatever the result echoes."""

    def result(ch: Challenge) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda body: {
            **body,
            "status": "approved",
            "number": "17",
            "answer": answer_json(ALICE.answer(ch, number="17")),
        }

    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(fake_broker, result, flow=flow)
    assert failure.value.reason is VerificationReason.STATUS_MISMATCH


async def test_broker_cannot_change_the_context_after_creation(fake_broker: FakeBroker, flow: str) -> None:
    """The context the SDK checks is the one it sent, not the broker's echo."""
    evil = {"app": "Evil"}

    def result(ch: Challenge) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda body: {
            **body,
            "status": "approved",
            "context": evil,
            "answer": answer_json(ALICE.answer(ch, ctx=evil)),
        }

    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(fake_broker, result, flow=flow)
    assert failure.value.reason is VerificationReason.CONTEXT_MISMATCH


async def test_denial_claim_with_an_approving_answer_is_refused(fake_broker: FakeBroker, flow: str) -> None:
    with pytest.raises(VerificationFailed) as failure:
        await run_sign_in(fake_broker, lambda ch: claims("denied", answer_json(ALICE.answer(ch))), flow=flow)
    assert failure.value.reason is VerificationReason.STATUS_MISMATCH
    assert failure.value.broker_status is Status.DENIED


# -- the challenge as created: the SDK's own values, not the broker's word ---------

CREATE_LIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # Freshness is the RP's own random value: a broker that swaps it (say, for the
    # value of an older challenge it wants to replay an approval of) is caught here.
    "another rp_nonce": lambda ch: {**ch, "rp_nonce": b64encode(secrets.token_bytes(32))},
    "no rp_nonce": lambda ch: {k: v for k, v in ch.items() if k != "rp_nonce"},
    "another user": lambda ch: {**ch, "user": "mallory"},
    "another digit count": lambda ch: {**ch, "digits": 3, "number": "123"},
    # An ordinary sign-in the broker calls a test push of one credential: an RP that
    # picks the keys it verifies with by the challenge's credential_id (the demo RP
    # does) would then take an unconfirmed device's approval.
    "aimed at one credential": lambda ch: {**ch, "credential_id": ALICE_TABLET.cid},
    # ... or one aimed at some of the user's devices (RP API 1.8): likewise.
    "aimed at some credentials": lambda ch: {**ch, "credential_ids": [ALICE_TABLET.cid, ALICE.cid]},
    # Number matching turned off behind the RP's back: an approval would need no number.
    "without number matching": lambda ch: {**ch, "number_matching": False, "number": None},
    "without number matching, the number still sent": lambda ch: {**ch, "number_matching": False},
}
# What a broker may not answer to a create without number matching (the RP shows no
# number, so one "with" it could only confuse: nobody would type it).
NUMBERLESS_CREATE_LIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "with number matching": lambda ch: {**ch, "number_matching": True, "number": NUMBER},
    "silent about it (as a broker before 1.9), with a number": lambda ch: {
        **{k: v for k, v in ch.items() if k != "number_matching"},
        "number": NUMBER,
    },
    "without, but with a number": lambda ch: {**ch, "number": NUMBER},
}


@pytest.mark.parametrize("case", sorted(CREATE_LIES))
async def test_a_created_challenge_that_is_not_the_rps_is_refused(fake_broker: FakeBroker, case: str) -> None:
    fake_broker.on_create = CREATE_LIES[case]
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        with pytest.raises(BadBrokerResponse):
            await client.create_challenge("alice", CONTEXT, digits=2)


@pytest.mark.parametrize("case", sorted(NUMBERLESS_CREATE_LIES))
async def test_a_created_challenge_with_other_number_matching_than_asked_is_refused(
    fake_broker: FakeBroker, case: str
) -> None:
    fake_broker.on_create = NUMBERLESS_CREATE_LIES[case]
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        with pytest.raises(BadBrokerResponse, match="number"):
            await client.create_challenge("alice", CONTEXT, number_matching=False)
        assert fake_broker.asked[-1]["number_matching"] is False


async def test_without_number_matching_an_approval_needs_everything_but_the_number(
    fake_broker: FakeBroker,
) -> None:
    """A challenge the RP made without number matching: any approval signed by a stored
    key over exactly this challenge approves, whatever it typed, and everything else the
    SDK refuses stays refused (another key, another challenge's rp_nonce, a stale ts, a
    broker's "approved" over a deny)."""
    keys = {ALICE.cid: ALICE.public_key}
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        ch = await client.create_challenge("alice", CONTEXT, number_matching=False)
        assert (ch.number, ch.number_matching) == ("", False)
        for typed in ("", "17"):
            fake_broker.result = claims("approved", answer_json(ALICE.answer(ch, number=typed)))
            assert (await client.wait_result(ch, keys, timeout=0)).approved
        forged = {
            VerificationReason.BAD_SIGNATURE: ALICE.answer(ch, number="", rp_nonce=secrets.token_bytes(32)),
            VerificationReason.UNKNOWN_CREDENTIAL: MALLORY.answer(ch, number=""),
            VerificationReason.STALE_ANSWER: ALICE.answer(ch, number="", ts=ch.created_at - 3_600_000),
            VerificationReason.STATUS_MISMATCH: ALICE.answer(ch, Decision.DENY, ""),
        }
        for reason, answer in forged.items():
            fake_broker.result = claims("approved", answer_json(answer))
            with pytest.raises(VerificationFailed) as failure:
                await client.wait_result(ch, keys, timeout=0)
            assert failure.value.reason is reason
        # The same empty approval of a challenge with number matching is no approval.
        normal = await client.create_challenge("alice", CONTEXT)
        fake_broker.result = claims("approved", answer_json(ALICE.answer(normal, number="")))
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(normal, keys, timeout=0)
        assert failure.value.reason is VerificationReason.MALFORMED_ANSWER


# What a broker may not answer to a create that named no digits or ttl (the RP's policy
# decides): the protocol's bounds hold whatever the broker says its policy is.
UNBOUNDED_POLICY_LIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "9 digits": lambda ch: {**ch, "digits": 9, "number": "123456789"},
    "1 digit": lambda ch: {**ch, "digits": 1, "number": "7"},
    "a lifetime of 9.999 s": lambda ch: {**ch, "expires_at": ch["created_at"] + 9_999},
    "a lifetime of 600.001 s": lambda ch: {**ch, "expires_at": ch["created_at"] + 600_001},
    "a lifetime of a century": lambda ch: {**ch, "created_at": 0, "expires_at": 2**52},
    "a negative lifetime": lambda ch: {**ch, "expires_at": ch["created_at"] - 60_000},
}


@pytest.mark.parametrize("case", sorted(UNBOUNDED_POLICY_LIES))
async def test_a_policy_answer_outside_the_protocols_bounds_is_refused(
    fake_broker: FakeBroker, flow: str, case: str
) -> None:
    """With no ttl or digits named, the SDK takes the broker's (the RP's policy there),
    only within 2..8 digits and 10..600 s: a broker cannot stretch the RP's freshness
    window past 600 s, nor make a number of 9 digits or of 1."""
    fake_broker.on_create = UNBOUNDED_POLICY_LIES[case]
    fake_broker.stream_result = (lambda ch: claims("pending", None)) if flow == "one request" else None
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        create = client.sign_in if flow == "one request" else client.create_challenge
        with pytest.raises(BadBrokerResponse, match=r"digits|lifetime"):
            await create("alice", CONTEXT)
    assert [set(body) & {"ttl", "digits"} for body in fake_broker.asked] == [set()]


@pytest.mark.parametrize("lifetime_ms", [10_000, 120_000, 600_000])
async def test_without_a_ttl_the_lifetime_is_the_brokers_counted_by_the_rps_clock(
    fake_broker: FakeBroker, flow: str, lifetime_ms: int
) -> None:
    """No ttl named: the window is the lifetime the broker answered (expires_at -
    created_at), counted from the RP's own clock, whatever the broker's clock says; an
    answer signed past it is STALE_ANSWER, one within it approves."""
    fake_broker.on_create = lambda ch: {**ch, "created_at": 5_000, "expires_at": 5_000 + lifetime_ms}
    fake_broker.ttl_ms = lifetime_ms
    keys = {ALICE.cid: ALICE.public_key}
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        before = _now_ms()
        if flow == "one request":
            fake_broker.stream_result = lambda ch: claims("pending", None)
            async with await client.sign_in("alice", CONTEXT) as pending:
                challenge = pending.challenge
        else:
            challenge = await client.create_challenge("alice", CONTEXT)
        assert before <= challenge.created_at <= _now_ms()
        assert challenge.expires_at == challenge.created_at + lifetime_ms
        assert challenge.digits == 2
        late = challenge.expires_at + MAX_CLOCK_SKEW_MS + 1
        fake_broker.result = claims("approved", answer_json(ALICE.answer(challenge, ts=late)))
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, keys, timeout=5)
        assert failure.value.reason is VerificationReason.STALE_ANSWER
        fake_broker.result = claims("approved", answer_json(ALICE.answer(challenge, ts=late - 1)))
        assert (await client.wait_result(challenge, keys, timeout=5)).approved
    assert [set(body) & {"ttl", "digits"} for body in fake_broker.asked] == [set()]


async def test_the_challenge_lifetime_is_the_sdks_own(fake_broker: FakeBroker) -> None:
    """created_at/expires_at come from the RP's clock and ttl, whatever the broker claims:
    they bound when a signed answer may have been made (STALE_ANSWER outside them)."""
    fake_broker.on_create = lambda ch: {**ch, "created_at": 0, "expires_at": 2**52}
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        before = _now_ms()
        challenge = await client.create_challenge("alice", CONTEXT, ttl=30)
        after = _now_ms()
        assert before <= challenge.created_at <= after
        assert challenge.expires_at == challenge.created_at + 30_000
        fake_broker.result = claims("approved", answer_json(ALICE.answer(challenge, ts=10**12)))
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_result(challenge, {ALICE.cid: ALICE.public_key}, timeout=5)
    assert failure.value.reason is VerificationReason.STALE_ANSWER


# -- expiry and waiting ---------------------------------------------------------


async def test_expired_claim_is_expired_even_with_a_valid_answer(fake_broker: FakeBroker, flow: str) -> None:
    result = await run_sign_in(
        fake_broker, lambda ch: claims("expired", answer_json(ALICE.answer(ch))), flow=flow
    )
    assert result.status is Status.EXPIRED
    assert not result.approved


async def test_pending_past_expiry_is_expired_by_the_sdks_own_clock(
    fake_broker: FakeBroker, flow: str
) -> None:
    """A broker that keeps saying "pending" after the challenge's expiry by the RP's clock
    cannot keep the RP waiting, even if it claims a far later expires_at."""
    fake_broker.ttl_ms = 3_600_000  # the broker's claim: an hour
    result = await run_sign_in(
        fake_broker, lambda ch: claims("pending", None), timeout=None, ttl=1, flow=flow
    )
    assert result.status is Status.EXPIRED


async def test_timeout_while_pending_returns_pending(fake_broker: FakeBroker, flow: str) -> None:
    result = await run_sign_in(fake_broker, lambda ch: claims("pending", None), timeout=0, flow=flow)
    assert result.status is Status.PENDING
    assert not result.final
    assert not result.approved


async def test_long_poll_asks_the_broker_to_hold_for_one_long_poll(fake_broker: FakeBroker) -> None:
    """Each long-poll asks the broker to hold it LONG_POLL_S (or until the RP's expiry, if
    sooner), never the broker's claimed lifetime: a node that hangs holding one is left
    after that, and the SDK asks again."""
    fake_broker.ttl_ms = 5_000  # the broker's claim does not set the wait; the RP's ttl does
    await run_sign_in(
        fake_broker,
        lambda ch: claims("denied", answer_json(ALICE.answer(ch, Decision.DENY, ""))),
        timeout=None,
        ttl=30,
    )
    assert fake_broker.polls
    assert fake_broker.polls[0] == LONG_POLL_S


async def test_broker_ignoring_the_wait_is_not_hammered(fake_broker: FakeBroker, flow: str) -> None:
    """A pending answer that comes back at once is retried after a pause, not in a tight loop."""
    result = await run_sign_in(fake_broker, lambda ch: claims("pending", None), timeout=1.0, flow=flow)
    assert result.status is Status.PENDING
    assert 1 <= len(fake_broker.polls) <= 8


async def test_stored_challenge_round_trips(fake_broker: FakeBroker) -> None:
    """An RP keeps the challenge in its session between requests; the stored form verifies the same."""
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        challenge = await client.create_challenge("alice", CONTEXT)
        restored = Challenge.from_stored(challenge.to_json())
        assert restored == challenge
        fake_broker.result = claims("approved", answer_json(ALICE.answer(challenge)))
        result = await client.wait_result(restored, {ALICE.cid: ALICE.public_key}, timeout=5)
    assert result.approved


async def test_tampered_stored_number_does_not_approve(fake_broker: FakeBroker) -> None:
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        challenge = await client.create_challenge("alice", CONTEXT)
        fake_broker.result = claims("approved", answer_json(ALICE.answer(challenge)))
        other = replace(challenge, number="17")
        with pytest.raises(VerificationFailed):
            await client.wait_result(other, {ALICE.cid: ALICE.public_key}, timeout=5)


# -- the one request: what only the stream can get wrong --------------------------


async def test_sdk_falls_back_to_the_long_poll_when_the_broker_does_not_stream(
    fake_broker: FakeBroker,
) -> None:
    """An older broker answers the streamed create with its plain JSON body (its
    Content-Type says so): one challenge, then the result by long-poll."""
    async with (
        PushAuthClient(fake_broker.url, "test-key") as client,
        await client.sign_in("alice", CONTEXT, ttl=30) as pending,
    ):
        assert not pending.streamed
        fake_broker.result = claims("approved", answer_json(ALICE.answer(pending.challenge)))
        result = await pending.result({ALICE.cid: ALICE.public_key})
    assert result.approved
    assert len(fake_broker.created) == 1
    assert fake_broker.polls == [LONG_POLL_S]


@pytest.mark.parametrize("case", sorted(CREATE_LIES))
async def test_a_streamed_challenge_that_is_not_the_rps_is_refused(
    fake_broker: FakeBroker, case: str
) -> None:
    fake_broker.on_create = CREATE_LIES[case]
    fake_broker.stream_tail = b""
    async with PushAuthClient(fake_broker.url, "test-key") as client:
        with pytest.raises(BadBrokerResponse):
            await client.sign_in("alice", CONTEXT, digits=2)


async def test_a_stream_that_ends_early_is_read_by_long_poll(fake_broker: FakeBroker) -> None:
    """A stream cut after the number (a node going away, a proxy) is no verdict: the
    SDK asks by long-poll, and verifies that answer as always."""
    fake_broker.stream_tail = b'{"id": "ch_half'  # a partial line, then the end
    async with (
        PushAuthClient(fake_broker.url, "test-key") as client,
        await client.sign_in("alice", CONTEXT) as pending,
    ):
        assert pending.streamed
        fake_broker.result = claims("approved", answer_json(MALLORY.answer(pending.challenge)))
        with pytest.raises(VerificationFailed) as failure:
            await pending.result({ALICE.cid: ALICE.public_key})
    assert failure.value.reason is VerificationReason.UNKNOWN_CREDENTIAL
    assert len(fake_broker.polls) == 1


@pytest.mark.parametrize(
    "tail",
    [b"not json\n", b"[1, 2]\n", b'{"id": 1}\n', b"x" * (2 << 20)],
    ids=["not JSON", "a list", "a wrong field", "a line over the limit"],
)
async def test_a_malformed_result_line_is_a_bad_broker_response(fake_broker: FakeBroker, tail: bytes) -> None:
    fake_broker.stream_tail = tail
    async with (
        PushAuthClient(fake_broker.url, "test-key") as client,
        await client.sign_in("alice", CONTEXT) as pending,
    ):
        with pytest.raises(BadBrokerResponse):
            await pending.result({ALICE.cid: ALICE.public_key})
