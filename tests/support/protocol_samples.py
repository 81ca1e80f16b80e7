"""One valid example of every device frame, with fixed keys and values.

Deterministic (fixed seeds, so fixed signatures), so tests and test vectors can pin
exact bytes. Tests that need a valid frame to start from (and then break one field)
take it from here.
"""

from __future__ import annotations

from protocol import signing
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
    RecoveryAnswer,
    RecoveryNotice,
    RecoveryResult,
    Revoke,
    Revoked,
    Welcome,
)
from protocol.session import enroll

SEED_A = bytes(range(32))  # 000102...1f
SEED_B = bytes(range(32, 64))
PK_A = signing.public_key(SEED_A)
NONCE = bytes.fromhex("a5" * 32)  # a hello nonce
CH_NONCE = bytes.fromhex("5a" * 32)  # a challenge nonce
RP_NONCE = bytes.fromhex("c3" * 32)  # the RP's own fresh value for that challenge
RECOVERY_SEED = bytes(range(64, 96))
RECOVERY_PK = signing.public_key(RECOVERY_SEED)
BINDING_SECRET = bytes.fromhex("e5" * 32)  # the enrollment link's `es`
TOKEN = "enrolltoken_0123456789abcdef"
DEVICE_NAME = "Alice's phone"
CONTEXT = {"app": "Payroll", "ip": "203.0.113.9", "location": "Zürich, CH", "browser": "Firefox 128"}

CHALLENGE = Challenge(
    ch="ch_7Jq2",
    cid="cred_A1",
    rp="rp_example",
    rp_name="Example Corp",
    account="alice@example.com",
    nonce=CH_NONCE,
    rp_nonce=RP_NONCE,
    ctx=CONTEXT,
    created=1_767_225_600_000,
    expires=1_767_225_660_000,
    digits=2,
)
ANSWER_TS = 1_767_225_610_000
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


RECOVERY_NOTICE = RecoveryNotice(
    notice="rn_4kQ9", cid="cred_A1", new_cid="cred_N1", new_name="Alice's new phone", time=1_767_225_600_000
)
RECOVERY_TS = 1_767_225_620_000


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
    Challenge: CHALLENGE,
    AnswerResult: AnswerResult(ch=CHALLENGE.ch, outcome="approved"),
    Cancel: Cancel(ch=CHALLENGE.ch, reason="answered"),
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
}

assert set(SAMPLES) == set(FRAME_TYPES.values()), "a frame type has no sample"
