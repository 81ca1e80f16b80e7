"""The broker's push block (GET /v1/users/{user}/push-block) in the person's words.

One place for reading it: the sign-in pages (why a push was refused), Security info
(the pause and its end) and the password change that lifts it (fraud.py).

This RP's own record of a report (Database.unresolved_report) pauses push too, until
the password change, whatever the broker says: a broker whose data was restored from an
older copy has lost its mute (docs/operations.md, "Restoring from an older backup"),
and one whose timed mute ended would let whoever knows the password push again.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PushPause:
    kind: str  # paused (after a report) | blocked (too many requests, or wrong numbers)
    until: int | None  # ms, the end of a pause; None: until lifted
    # True: this RP's own record of a sign-in reported here. False: the broker's mute,
    # which a "not me" answer to a restore of the account on a new device (a disown) sets
    # as well, and which this RP cannot tell apart from a report.
    reported_here: bool = False
    # The device that answered its own setup's test notification "not me" (Security info
    # names it: Database.note_setup_report), when that report is the pause's likely cause.
    setup_reported_by: str | None = None


# The pause this RP keeps itself after a report: until the password change (no end time).
REPORTED = PushPause("paused", None, reported_here=True)
# Why push is paused, in the words of the sign-in pages and Security info.
REPORTED_WHY = "a sign-in request was reported as not made by you"
NOT_ME_WHY = (
    "one of your devices answered \u201cnot me\u201d, to a sign-in request, to its own setup, "
    "or to a restore of your account on a new device"
)


def pause_of(state: dict[str, Any] | None, now: int) -> PushPause | None:
    """The broker's PushBlock (docs/http-api.md) as what the person is told; None: push works."""
    if not state:
        return None
    muted = state.get("muted_until")
    if isinstance(muted, int) and not isinstance(muted, bool) and (muted < 0 or muted > now):
        return PushPause("paused", None if muted < 0 else muted)
    if state.get("blocked") is True:
        return PushPause("blocked", None)
    return None


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%d %b %Y, %H:%M UTC")


def paused_message(until: int | None, *, reported_here: bool) -> str:
    """A fraud pause in words; `until` in ms (None: until lifted); `reported_here`: this
    RP's own record of a report (else the broker's mute, whose cause it does not know)."""
    end = f"until {_when(until)}" if until is not None and until > 0 else "until you change your password"
    why = REPORTED_WHY if reported_here else NOT_ME_WHY
    return (
        f"Push requests to your devices are paused {end}, because {why}. Sign in with a "
        "verification code from the app; you will then be asked to change your password, which "
        "resumes push requests."
    )


BLOCKED_MESSAGE = (
    "Push requests to your devices are paused: too many requests were sent without a "
    "successful sign-in. Sign in with a verification code from the app to resume them."
)
