"""Sign-in activity (as Microsoft's My Sign-ins): what each row says, and recording one.

Rows live in the database (db.signin_activity). A push attempt is recorded as
"pending" with its challenge when it is sent, and settled with its verified result
when any page learns it (push.settle_pending reads the ones nobody watched).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.challenge import Status

from .db import Activity, Database, User

METHODS: dict[str, str] = {
    "password": "Password",
    "push": "Push notification",
    "code": "Verification code",
    "recovery": "Recovery code",
    "access_pass": "Temporary access pass",
}


@dataclass(frozen=True, slots=True)
class ResultView:
    label: str
    tone: str  # success | error | info


RESULTS: dict[str, ResultView] = {
    "approved": ResultView("Approved", "success"),
    "code": ResultView("Signed in with a code", "success"),
    "password": ResultView("Signed in with the password only", "success"),
    "denied": ResultView("Denied in the app", "error"),
    "wrong_number": ResultView("Wrong number entered", "error"),
    "reported": ResultView("Reported as not you", "error"),
    "expired": ResultView("Expired without an answer", "error"),
    "cancelled": ResultView("Cancelled", "info"),
    "replaced": ResultView("Replaced by a newer request", "info"),
    "withdrawn": ResultView("Withdrawn after a report", "error"),
    "refused": ResultView("Not sent", "error"),
    "unverified": ResultView("Answer failed verification", "error"),
    "clock_off": ResultView("Not confirmed: a clock is off", "error"),
    "wrong_code": ResultView("Wrong code", "error"),
    # A right code typed again (one seen by whoever typed it: a shoulder, a phishing page).
    "used_code": ResultView("Code already used", "error"),
    "wrong_password": ResultView("Wrong password", "error"),
    "pending": ResultView("Waiting for an answer", "info"),
}
UNKNOWN = ResultView("Ended", "info")

# The result of a push attempt, from the verified status of its challenge.
_BY_STATUS: dict[Status, str] = {
    Status.APPROVED: "approved",
    Status.DENIED: "denied",
    Status.NUMBER_MISMATCH: "wrong_number",
    Status.REPORTED: "reported",
    Status.EXPIRED: "expired",
    Status.CANCELLED: "cancelled",
    Status.SUPERSEDED: "replaced",
    Status.WITHDRAWN: "withdrawn",
}


def result_of(status: Status) -> str | None:
    """The activity result of a final status; None while pending (nothing to settle)."""
    if status == Status.PENDING:
        return None
    return _BY_STATUS.get(status, "expired")


def view(result: str) -> ResultView:
    return RESULTS.get(result, UNKNOWN)


# Why a push was not sent (push.Refusal.reason), as the activity list says it.
REFUSALS: dict[str, str] = {
    "paused": "Push paused after a report",
    "blocked": "Too many requests without a sign-in",
    "rate_limited": "Too many requests in a minute",
    "no_devices": "No device could receive it",
    "unavailable": "Sign-in service unreachable",
    "too_many": "Request limit of one sign-in reached",
    "failed": "Could not be sent",
}


def detail_label(result: str, detail: str) -> str:
    return REFUSALS.get(detail, detail) if result == "refused" else detail


def method_label(method: str) -> str:
    return METHODS.get(method, method.capitalize())


def record(
    db: Database,
    user: User,
    method: str,
    result: str,
    context: dict[str, str],
    *,
    purpose: str = "signin",
    detail: str = "",
) -> None:
    """One row for a sign-in or an attempt that is over as it happens (not a push)."""
    db.add_activity(user.id, method, result, context, purpose=purpose, detail=detail)


def rows(db: Database, user: User, limit: int = 50) -> list[Activity]:
    return db.activity(user.id, limit=limit)
