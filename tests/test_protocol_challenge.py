"""protocol.challenge: every transition of the challenge state machine.

pending --approve, right number--> approved
pending --approve, wrong number--> number_mismatch
pending --deny-------------------> denied
pending --fraud------------------> reported
pending --time passes expiry-----> expired
every other state is final: no answer moves it.
"""

from __future__ import annotations

import itertools

import pytest

from protocol.challenge import (
    DEFAULT_TTL_S,
    FINAL_STATES,
    MAX_TTL_S,
    MIN_TTL_S,
    Status,
    check_answer_number,
    check_answer_shape,
    check_answerable,
    effective_status,
    outcome_for,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import Decision

EXPIRES = 1_000_000
BEFORE, AT, AFTER = EXPIRES - 1, EXPIRES, EXPIRES + 1
EXPECTED = "42"
# (decision, typed number) pairs: well-formed and malformed answers.
ANSWERS = [
    ("approve", "42"),
    ("approve", "24"),
    ("approve", "042"),
    ("approve", ""),
    ("deny", ""),
    ("deny", "42"),
    ("fraud", ""),
    ("fraud", "42"),
]


def test_statuses() -> None:
    assert [s.value for s in Status] == [
        "pending",
        "approved",
        "denied",
        "number_mismatch",
        "reported",
        "expired",
        "cancelled",
        "superseded",
        "withdrawn",
        "unknown",
    ]
    assert set(Status) - {Status.PENDING} == FINAL_STATES
    assert not Status.PENDING.final
    assert all(s.final for s in FINAL_STATES)
    assert [s for s in Status if s.approved] == [Status.APPROVED]
    assert Status("approved") is Status.APPROVED


def test_ttl_limits() -> None:
    assert MIN_TTL_S <= DEFAULT_TTL_S <= MAX_TTL_S
    assert MAX_TTL_S == 600  # NIST SP 800-63B-4: at most 10 minutes


def expected_result(
    status: Status, now: int, decision: str, typed: str, number_matching: bool = True
) -> Status | ErrorCode:
    """The specification, written independently of protocol/challenge.py."""
    if status is Status.EXPIRED:
        return ErrorCode.CHALLENGE_EXPIRED
    if status is not Status.PENDING:
        return ErrorCode.ALREADY_ANSWERED
    if now >= EXPIRES:
        return ErrorCode.CHALLENGE_EXPIRED
    if decision != "approve" and typed:
        return ErrorCode.INVALID_FIELD
    if decision == "approve" and not typed and number_matching:
        return ErrorCode.INVALID_FIELD
    if decision == "deny":
        return Status.DENIED
    if decision == "fraud":
        return Status.REPORTED
    # Without number matching any approval approves, whatever it typed (section 12).
    return Status.APPROVED if typed == EXPECTED or not number_matching else Status.NUMBER_MISMATCH


def apply(
    status: Status, now: int, decision: str, typed: str, number_matching: bool = True
) -> Status | ErrorCode:
    """What the broker does with an answer, in the order it does it."""
    try:
        check_answerable(status, now, EXPIRES)
        check_answer_shape(decision, typed)
        check_answer_number(decision, typed, number_matching=number_matching)
        return outcome_for(decision, typed, EXPECTED, number_matching=number_matching)
    except ProtocolError as error:
        return error.code


TRANSITIONS = list(itertools.product(Status, [BEFORE, AT, AFTER], ANSWERS, [True, False]))


@pytest.mark.parametrize(
    ("status", "now", "answer", "number_matching"),
    TRANSITIONS,
    ids=[
        f"{s.value}-{['before', 'at', 'after'][[BEFORE, AT, AFTER].index(n)]}-{d}:{t}{'' if nm else '-nm0'}"
        for s, n, (d, t), nm in TRANSITIONS
    ],
)
def test_every_transition(status: Status, now: int, answer: tuple[str, str], number_matching: bool) -> None:
    decision, typed = answer
    assert apply(status, now, decision, typed, number_matching) == expected_result(
        status, now, decision, typed, number_matching
    )


def test_the_transition_table_reaches_every_outcome() -> None:
    results = {apply(s, n, d, t, nm) for s, n, (d, t), nm in TRANSITIONS}
    assert results == {
        Status.APPROVED,
        Status.NUMBER_MISMATCH,
        Status.DENIED,
        Status.REPORTED,
        ErrorCode.ALREADY_ANSWERED,
        ErrorCode.CHALLENGE_EXPIRED,
        ErrorCode.INVALID_FIELD,
    }


def test_outcome_for() -> None:
    assert outcome_for(Decision.APPROVE, "42", "42") is Status.APPROVED
    assert outcome_for("approve", "43", "42") is Status.NUMBER_MISMATCH  # counts as denied; no retry
    assert outcome_for("deny", "", "42") is Status.DENIED
    assert outcome_for("fraud", "", "42") is Status.REPORTED
    # Without number matching (the RP's choice, section 12) any approval approves: the
    # empty number a new device signs, and whatever an older device's user typed.
    for typed in ("", "17", "42"):
        assert outcome_for("approve", typed, "42", number_matching=False) is Status.APPROVED
    assert outcome_for("deny", "", "42", number_matching=False) is Status.DENIED
    assert outcome_for("fraud", "", "42", number_matching=False) is Status.REPORTED
    for bad in ["", "APPROVE", "approved", "report", "maybe"]:
        with pytest.raises(ProtocolError) as info:
            outcome_for(bad, "42", "42")
        assert info.value.code is ErrorCode.INVALID_FIELD


def test_check_answerable() -> None:
    check_answerable(Status.PENDING, BEFORE, EXPIRES)
    check_answerable(Status.PENDING, 0, EXPIRES)
    for now in (AT, AFTER):  # the expiry instant itself is too late
        with pytest.raises(ProtocolError) as info:
            check_answerable(Status.PENDING, now, EXPIRES)
        assert info.value.code is ErrorCode.CHALLENGE_EXPIRED
    for status in FINAL_STATES - {Status.EXPIRED}:
        for now in (BEFORE, AFTER):  # answered takes precedence over expired
            with pytest.raises(ProtocolError) as info:
                check_answerable(status, now, EXPIRES)
            assert info.value.code is ErrorCode.ALREADY_ANSWERED
            assert status.value in info.value.message
    with pytest.raises(ProtocolError) as info:
        check_answerable(Status.EXPIRED, BEFORE, EXPIRES)
    assert info.value.code is ErrorCode.CHALLENGE_EXPIRED


@pytest.mark.parametrize(
    ("decision", "typed", "ok"),
    [
        ("approve", "42", True),
        ("approve", "0", True),  # the shape only; whether it matches is outcome_for's job
        ("approve", "", True),  # whether it must carry one depends on the challenge: below
        ("deny", "", True),
        ("deny", "42", False),  # only an approval carries a number
        ("fraud", "", True),
        ("fraud", "7", False),
    ],
)
def test_check_answer_shape(decision: str, typed: str, ok: bool) -> None:
    if ok:
        check_answer_shape(decision, typed)
    else:
        with pytest.raises(ProtocolError) as info:
            check_answer_shape(decision, typed)
        assert info.value.code is ErrorCode.INVALID_FIELD


def test_an_approval_without_a_number_only_for_a_challenge_without_number_matching() -> None:
    with pytest.raises(ProtocolError) as info:
        check_answer_number("approve", "", number_matching=True)
    assert (info.value.code, info.value.fatal) == (ErrorCode.INVALID_FIELD, True)
    check_answer_number("approve", "", number_matching=False)
    for decision, typed, matching in (("approve", "42", True), ("approve", "7", False), ("deny", "", True)):
        check_answer_number(decision, typed, number_matching=matching)


@pytest.mark.parametrize("status", list(Status))
def test_effective_status(status: Status) -> None:
    assert effective_status(status, BEFORE, EXPIRES) is status
    after = Status.EXPIRED if status is Status.PENDING else status
    assert effective_status(status, AT, EXPIRES) is after
    assert effective_status(status, AFTER, EXPIRES) is after


def test_effective_status_agrees_with_check_answerable() -> None:
    # A reader and a writer never disagree about whether a challenge is still open.
    for status, now in itertools.product(Status, [0, BEFORE, AT, AFTER]):
        open_by_status = effective_status(status, now, EXPIRES) is Status.PENDING
        try:
            check_answerable(status, now, EXPIRES)
        except ProtocolError:
            answerable = False
        else:
            answerable = True
        assert open_by_status == answerable, (status, now)
