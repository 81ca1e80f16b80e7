"""Challenge states and their transitions, as plain functions.

    pending --approve, right number--> approved
    pending --approve, wrong number--> number_mismatch   (counts as denied; no retry)
    pending --approve, any number----> approved  (a challenge without number matching)
    pending --deny-------------------> denied
    pending --fraud------------------> reported
    pending --time passes expiry-----> expired
    pending --the RP cancels it------> cancelled
    pending --a newer challenge------> superseded  (same user at the same RP; the RP may opt out)
    pending --fraud report or block--> withdrawn   (every other pending one of that user at that RP)

Every state but `pending` is final. Only approved, denied, number_mismatch and
reported come with a device's signed answer; the others are the broker ending a
prompt, a negative claim that needs no proof (it could always withhold an answer).
The broker applies a transition atomically in Redis (a Lua script checks "still
pending and not expired" and writes the result); this module decides *which*
transition an answer asks for, and is the one place that says what is allowed.
"""

from __future__ import annotations

import enum

from . import numbers
from .codes import Decision
from .errors import ErrorCode, ProtocolError


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    NUMBER_MISMATCH = "number_mismatch"
    REPORTED = "reported"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # the RP cancelled it (DELETE /v1/challenges/{id})
    SUPERSEDED = "superseded"  # a newer challenge for the same user at the same RP
    WITHDRAWN = "withdrawn"  # ended by a fraud report, a "disown" recovery answer or a block
    # Never stored or sent by this version: what a reader (the RP SDK) reports for a
    # final status it does not know, e.g. from a newer broker. Never an approval.
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self is not Status.PENDING

    @property
    def approved(self) -> bool:
        return self is Status.APPROVED


FINAL_STATES = frozenset(s for s in Status if s.final)
# Final states the broker sets by itself, without a device's answer: a prompt that ended.
ENDED_WITHOUT_ANSWER = frozenset(
    {Status.EXPIRED, Status.CANCELLED, Status.SUPERSEDED, Status.WITHDRAWN, Status.UNKNOWN}
)
MIN_TTL_S = 10
MAX_TTL_S = 600  # NIST SP 800-63B-4: an out-of-band secret is valid at most 10 minutes
# The most credentials one challenge may be aimed at (the RP API's credential_ids): far
# more devices than a person has, and a bound on the ids a create checks in its one
# atomic step.
MAX_TARGETS = 32
DEFAULT_TTL_S = 60


def outcome_for(decision: str, typed: str, expected: str, *, number_matching: bool = True) -> Status:
    """The final state an answer leads to (assuming it is valid and in time).

    Without number matching (a challenge the RP created with `number_matching` false)
    an approval approves whatever it typed: no number was shown, and a device that
    predates the challenge frame's `nm` still asks for one, so its user typed anything."""
    if decision == Decision.DENY:
        return Status.DENIED
    if decision == Decision.FRAUD:
        return Status.REPORTED
    if decision == Decision.APPROVE:
        if not number_matching or numbers.matches(expected, typed):
            return Status.APPROVED
        return Status.NUMBER_MISMATCH
    raise ProtocolError(ErrorCode.INVALID_FIELD, f"unknown decision {decision!r}")


def check_answerable(status: Status, now_ms: int, expires_ms: int) -> None:
    """Raise unless a challenge in `status` may take an answer at `now_ms`."""
    if status is Status.EXPIRED:  # ended by time, not by an answer: say so
        raise ProtocolError(ErrorCode.CHALLENGE_EXPIRED, "challenge expired")
    if status.final:
        raise ProtocolError(ErrorCode.ALREADY_ANSWERED, f"challenge already ended: {status}")
    if now_ms >= expires_ms:
        raise ProtocolError(ErrorCode.CHALLENGE_EXPIRED, "challenge expired")


def effective_status(status: Status, now_ms: int, expires_ms: int) -> Status:
    """What a reader should report: a pending challenge past expiry is expired."""
    if status is Status.PENDING and now_ms >= expires_ms:
        return Status.EXPIRED
    return status


def check_answer_shape(decision: str, typed: str) -> None:
    """The shape that needs no state: a deny or report carries no number."""
    if decision != Decision.APPROVE and typed:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "only an approval carries a number")


def check_answer_number(decision: str, typed: str, *, number_matching: bool) -> None:
    """The shape that needs the challenge: an approval of a challenge with number
    matching carries the typed number; one of a challenge without it may carry none
    (docs/protocol.md section 12: it signs the empty number)."""
    if decision == Decision.APPROVE and number_matching and not typed:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "an approval must carry the typed number")
