"""One valid example of every device frame, with fixed keys and values.

Deterministic (fixed seeds, so fixed signatures), so tests and test vectors can pin
exact bytes. Tests that need a valid frame to start from (and then break one field)
take it from here.
"""

from __future__ import annotations

from dataclasses import replace

from protocol import signing, vectors
from protocol.frames import (
    FRAME_TYPES,
    Answer,
    AnswerResult,
    Authenticate,
    Cancel,
    Challenge,
    Enroll,
    Enrolled,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    PushSubscribe,
    PushSubscribed,
    RecoveryAnswer,
    RecoveryNotice,
    RecoveryResult,
    Revoke,
    Revoked,
    Welcome,
)
from protocol.session import enroll

# The fixed inputs are those of the published test vectors (protocol/vectors.py), so
# these samples and docs/test-vectors.json pin the same keys, nonces and challenge.
SEED_A, SEED_B = vectors.SEEDS[0], vectors.SEEDS[1]  # 000102...1f, 202122...3f
PK_A = signing.public_key(SEED_A)
NONCE = vectors.HELLO_NONCE  # a hello nonce
CH_NONCE = vectors.CH_NONCE  # a challenge nonce
RP_NONCE = vectors.RP_NONCE  # the RP's own fresh value for that challenge
RECOVERY_SEED = vectors.RECOVERY_SEED
RECOVERY_PK = signing.public_key(RECOVERY_SEED)
BINDING_SECRET = vectors.BINDING_SECRET  # the enrollment link's `es`
TOKEN = vectors.TOKEN
DEVICE_NAME = vectors.DEVICE_NAME
CHALLENGE = vectors.CHALLENGE
CONTEXT = CHALLENGE.ctx
ANSWER_TS = vectors.T0 + 10_000
ANSWER_NUMBER = "42"


def _answer() -> Answer:
    ctx_hash = signing.context_hash(CONTEXT)
    message = signing.answer_bytes(
        rp=CHALLENGE.rp,
        ch=CHALLENGE.ch,
        nonce=CHALLENGE.nonce,
        rp_nonce=CHALLENGE.rp_nonce,
        cid=CHALLENGE.cid,
        decision="approve",
        number=ANSWER_NUMBER,
        ts=ANSWER_TS,
        ctx_hash=ctx_hash,
    )
    return Answer(
        ch=CHALLENGE.ch,
        cid=CHALLENGE.cid,
        decision="approve",
        number=ANSWER_NUMBER,
        ts=ANSWER_TS,
        ctx_hash=ctx_hash,
        sig=signing.sign(SEED_A, message),
    )


RECOVERY_TS = vectors.T0 + 20_000
# With the recovery's ts (added within version 2), so that every field is exercised.
RECOVERY_NOTICE = replace(vectors.NOTICE, recovery_ts=vectors.T0 + 5_000)


def _recovery_answer() -> RecoveryAnswer:
    n = RECOVERY_NOTICE
    message = signing.recovery_answer_bytes(n.notice, n.cid, n.new_cid, "disown", RECOVERY_TS)
    return RecoveryAnswer(
        rid=9,
        notice=n.notice,
        cid=n.cid,
        decision="disown",
        ts=RECOVERY_TS,
        sig=signing.sign(SEED_A, message),
    )


SAMPLES: dict[type[Frame], Frame] = {
    Hello: Hello(nonce=NONCE, time=1_767_225_600_000, max_frame=16384, node="node-a"),
    Welcome: Welcome(
        accepted=("cred_A1", "cred_A2"),
        rejected=({"cid": "cred_old", "code": "credential_revoked"},),
        pending=1,
        notices=1,
    ),
    Enrolled: Enrolled(
        rid=7,
        cid="cred_A1",
        rp="rp_example",
        rp_name="Example Corp",
        user="alice",
        account="alice@example.com",
    ),
    Challenge: replace(CHALLENGE, nm=False),  # its field added within version 2 set too
    AnswerResult: AnswerResult(ch=CHALLENGE.ch, outcome="approved"),
    Cancel: Cancel(ch=CHALLENGE.ch, reason="answered", by="cred_A1"),
    Revoked: Revoked(cid="cred_A1", reason="removed_by_device", rid=8),
    Error: Error(code="already_answered", message="challenge already ended: approved", ref=CHALLENGE.ch),
    Authenticate: Authenticate(
        creds=(
            {"cid": "cred_A1", "sig": signing.sign(SEED_A, signing.auth_bytes(NONCE, "cred_A1"))},
            {"cid": "cred_B1", "sig": signing.sign(SEED_B, signing.auth_bytes(NONCE, "cred_B1"))},
        )
    ),
    Enroll: enroll(
        NONCE,
        rid=7,
        token=TOKEN,
        seed=SEED_A,
        name=DEVICE_NAME,
        rp="rp_example",
        binding_secret=BINDING_SECRET,
        recovery_pk=RECOVERY_PK,
    ),
    Answer: _answer(),
    Revoke: Revoke(rid=8, cid="cred_A1"),
    RecoveryNotice: RECOVERY_NOTICE,
    RecoveryResult: RecoveryResult(notice=RECOVERY_NOTICE.notice, cid="cred_A1", outcome="disowned", rid=9),
    RecoveryAnswer: _recovery_answer(),
    PushSubscribe: PushSubscribe(
        rid=10,
        cids=("cred_A1",),
        endpoint="https://push.example.net/send/abc123",
        p256dh=b"\x04" + bytes(range(1, 65)),
        auth=bytes(range(16)),
    ),
    PushSubscribed: PushSubscribed(rid=10, key=b"\x04" + bytes(range(64, 128)), cids=("cred_A1",)),
    Ping: Ping(rid=12),
    Pong: Pong(rid=12),
}

assert set(SAMPLES) == set(FRAME_TYPES.values()), "a frame type has no sample"
