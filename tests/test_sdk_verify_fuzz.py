"""Randomised forgeries against the SDK's verdict: no change to a genuine approval,
on the broker's side or in what the RP holds, may still come out approved.

Seeded, so a failure reproduces; each case changes one value to another value of the
same valid shape (a forgery the field checks alone cannot catch).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from protocol import signing
from protocol.challenge import Status
from protocol.frames import Challenge as ChallengeFrame
from protocol.session import sign_answer
from relying_party import Challenge, VerificationFailed
from relying_party.verify import MAX_CLOCK_SKEW_MS, evaluate
from relying_party.wire import b64decode, b64encode

RP_ID = "rp_fuzz"
SEED = signing.new_seed()
CID = "cred_fuzz"
KEYS = {CID: signing.public_key(SEED)}
ROUNDS = 150


def ident(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "_-", k=rng.randint(1, 64)))


def genuine(rng: random.Random) -> tuple[Challenge, dict[str, Any]]:
    digits = rng.randint(2, 8)
    number = str(rng.randrange(10 ** (digits - 1), 10**digits))
    context = {ident(rng)[:32]: ident(rng) for _ in range(rng.randint(0, 4))}
    challenge = Challenge(
        id=ident(rng),
        user="alice",
        number=number,
        digits=digits,
        nonce=rng.randbytes(32),
        rp_nonce=rng.randbytes(32),
        context=context,
        created_at=0,
        expires_at=2**53,
    )
    frame = ChallengeFrame(
        ch=challenge.id,
        cid=CID,
        rp=RP_ID,
        rp_name="Fuzz",
        account="alice",
        nonce=challenge.nonce,
        rp_nonce=challenge.rp_nonce,
        ctx=context,
        created=0,
        expires=2**53,
        digits=digits,
    )
    answer = sign_answer(frame, seed=SEED, decision="approve", number=number, ts=rng.randrange(2**53))
    body = {
        "id": challenge.id,
        "status": "approved",
        "answer": {
            "credential_id": CID,
            "decision": "approve",
            "number": number,
            "ts": answer.ts,
            "ctx_hash": b64encode(answer.ctx_hash),
            "signature": b64encode(answer.sig),
        },
    }
    return challenge, body


def other_number(rng: random.Random, number: str) -> str:
    while True:
        candidate = "".join(rng.choices(string.digits, k=rng.randint(1, 8)))
        if candidate != number:
            return candidate


def flip_bit(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) * 8)
    return bytes(b ^ (1 << (i % 8)) if n == i // 8 else b for n, b in enumerate(data))


Mutation = Callable[[random.Random, Challenge, dict[str, Any]], tuple[Challenge, dict[str, Any], str]]


def answer_field(name: str, make: Callable[[random.Random, Any], Any]) -> Mutation:
    def mutate(
        rng: random.Random, ch: Challenge, body: dict[str, Any]
    ) -> tuple[Challenge, dict[str, Any], str]:
        answer = dict(body["answer"])
        answer[name] = make(rng, answer[name])
        return ch, {**body, "answer": answer}, RP_ID

    return mutate


def b64_flip(rng: random.Random, value: str) -> str:
    return b64encode(flip_bit(rng, b64decode(value)))


MUTATIONS: dict[str, Mutation] = {
    "answer number": answer_field("number", other_number),
    "answer ts": answer_field("ts", lambda rng, ts: (ts + rng.randint(1, 2**40)) % 2**53),
    "answer ctx_hash": answer_field("ctx_hash", b64_flip),
    "answer signature": answer_field("signature", b64_flip),
    "answer decision": answer_field("decision", lambda rng, _: rng.choice(["deny", "fraud"])),
    "challenge number held by the RP": lambda rng, ch, body: (
        replace(ch, number=other_number(rng, ch.number)),
        body,
        RP_ID,
    ),
    "challenge nonce held by the RP": lambda rng, ch, body: (
        replace(ch, nonce=flip_bit(rng, ch.nonce)),
        body,
        RP_ID,
    ),
    # The RP's own fresh value: an answer over any other (an older challenge's) is void.
    "rp_nonce held by the RP": lambda rng, ch, body: (
        replace(ch, rp_nonce=flip_bit(rng, ch.rp_nonce)),
        body,
        RP_ID,
    ),
    # The lifetime by the RP's clock no longer holds the signed ts (well past the skew).
    "lifetime held by the RP": lambda rng, ch, body: (
        replace(
            ch,
            created_at=(start := body["answer"]["ts"] + rng.randint(MAX_CLOCK_SKEW_MS + 1, 2**40)),
            expires_at=start + rng.randint(0, 600_000),
        ),
        body,
        RP_ID,
    ),
    "context the RP sent": lambda rng, ch, body: (
        replace(ch, context={**ch.context, ident(rng)[:32]: "x"}),
        body,
        RP_ID,
    ),
    "RP id": lambda rng, ch, body: (ch, body, ident(rng)),
    "challenge id (RP and result alike)": lambda rng, ch, body: (
        replace(ch, id=(new := ident(rng))),
        {**body, "id": new},
        RP_ID,
    ),
}


def test_genuine_approvals_are_approved() -> None:
    rng = random.Random(1)
    for _ in range(ROUNDS):
        challenge, body = genuine(rng)
        result = evaluate(challenge, body, rp_id=RP_ID, public_keys=KEYS, now_ms=0)
        assert result.status is Status.APPROVED


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_no_single_change_stays_approved(name: str) -> None:
    rng = random.Random(name)
    for _ in range(ROUNDS):
        challenge, body = genuine(rng)
        changed, forged, rp_id = MUTATIONS[name](rng, challenge, body)
        try:
            result = evaluate(changed, forged, rp_id=rp_id, public_keys=KEYS, now_ms=0)
        except VerificationFailed:
            continue
        assert not result.approved, f"{name}: a forged answer was approved: {forged}"
