"""The decisions of pushauth-radius, as plain functions and data: no sockets, no Redis.

What a reply says for each outcome, what a typed challenge answer means, how a
RADIUS User-Name becomes a pushauth user, and the RFC 5080 duplicate cache. The
engine and the UDP shell around it only move values in and out of here.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from dataclasses import dataclass

from protocol.challenge import Status

from ..host import outcomes

CODE_RE = re.compile(r"[0-9]{6,8}")


class Outcome(enum.StrEnum):
    """How one Access-Request ended: the `outcome=` of its audit line."""

    CHALLENGED = "challenged"  # Access-Challenge sent: the push is out
    CODE_ONLY = "code_only"  # Access-Challenge asking for a code: push is blocked for the user
    APPROVED = "approved"
    DENIED = "denied"
    NUMBER_MISMATCH = "number_mismatch"
    REPORTED = "reported"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"
    ENDED = "ended"  # a final status this server does not know: not approved
    TOTP_OK = "totp_ok"
    TOTP_BAD = "totp_bad"
    TOTP_REPLAYED = "totp_replayed"
    FIRST_FACTOR_FAILED = "first_factor_failed"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    NOT_ENROLLED = "not_enrolled"
    NO_DEVICES = "no_devices"
    BLOCKED = "push_blocked"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_STATE = "unknown_state"
    BROKER_UNAVAILABLE = "broker_unavailable"
    # The broker refused this server's API key or the challenge its configuration makes
    # (digits or a lifetime the RP's policy does not allow): every sign-in fails alike.
    CONFIG_ERROR = "config_error"
    FAIL_OPEN = "fail_open"  # the broker was unreachable and the config says accept
    VERIFICATION_FAILED = "verification_failed"  # the SDK refused the broker's result
    BAD_REQUEST = "bad_request"
    # Dropped: no reply at all (RFC 2865: silently discard what does not authenticate).
    UNKNOWN_CLIENT = "unknown_client"
    NO_MESSAGE_AUTHENTICATOR = "no_message_authenticator"
    BAD_MESSAGE_AUTHENTICATOR = "bad_message_authenticator"
    REPLAYED = "replayed"
    DUPLICATE_IN_PROGRESS = "duplicate_in_progress"
    MALFORMED = "malformed"
    # Redis (State records, replay and code checks) cannot be reached: no reply, so the
    # gateway retries or fails over to an instance that can.
    STORE_UNAVAILABLE = "store_unavailable"


ACCEPTED = frozenset({Outcome.APPROVED, Outcome.TOTP_OK, Outcome.FAIL_OPEN})
DROPPED = frozenset(
    {
        Outcome.UNKNOWN_CLIENT,
        Outcome.NO_MESSAGE_AUTHENTICATOR,
        Outcome.BAD_MESSAGE_AUTHENTICATOR,
        Outcome.REPLAYED,
        Outcome.DUPLICATE_IN_PROGRESS,
        Outcome.MALFORMED,
        Outcome.STORE_UNAVAILABLE,
    }
)

# A push-only client cannot send a verification code, and in a push-only setup no other
# client asks for one: what its user can do instead (never "use a code").
PUSH_ONLY_BLOCKED = (
    "Push sign-in is blocked for your account for now (a request was reported as not yours, "
    "or too many were sent). Ask your administrator to unblock it."
)

# Reply-Message of each final outcome: what the VPN client shows the person.
MESSAGES: dict[Outcome, str] = {
    Outcome.APPROVED: "Approved.",
    Outcome.TOTP_OK: "Verification code accepted.",
    Outcome.FAIL_OPEN: "Signed in without push approval: the approval service is unreachable.",
    Outcome.DENIED: "Denied on your authenticator.",
    Outcome.NUMBER_MISMATCH: "The number typed in your authenticator did not match. Sign in again.",
    Outcome.REPORTED: "You reported this sign-in as not yours. It was refused and your administrator told.",
    Outcome.EXPIRED: "No answer in time: the request expired. Sign in again.",
    Outcome.CANCELLED: "The request was cancelled. Sign in again.",
    Outcome.SUPERSEDED: "A newer sign-in request replaced this one.",
    Outcome.WITHDRAWN: "Push sign-in is blocked for your account for now. Use a verification code.",
    Outcome.ENDED: "The request ended without approval. Sign in again.",
    Outcome.TOTP_BAD: "Wrong verification code.",
    Outcome.TOTP_REPLAYED: "That verification code was used already. Wait for the next one.",
    Outcome.FIRST_FACTOR_FAILED: "Wrong user name or password.",
    Outcome.UPSTREAM_UNAVAILABLE: "The password cannot be checked right now. Try again later.",
    Outcome.NOT_ENROLLED: "No authenticator is set up for this account. Ask your administrator.",
    Outcome.NO_DEVICES: "No authenticator is set up for this account. Ask your administrator.",
    Outcome.BLOCKED: PUSH_ONLY_BLOCKED,
    Outcome.RATE_LIMITED: "Too many sign-in attempts. Wait a minute and try again.",
    Outcome.UNKNOWN_STATE: "This sign-in request is unknown or over. Sign in again.",
    Outcome.BROKER_UNAVAILABLE: "The approval service is unreachable. Try again later.",
    Outcome.CONFIG_ERROR: "Push sign-in is misconfigured on this server. Ask your administrator.",
    Outcome.VERIFICATION_FAILED: "The answer could not be verified. Sign in again.",
    Outcome.BAD_REQUEST: "The request lacks a user name or password.",
}


# Push-only clients: the same outcomes, in words that say what to do on the
# authenticator, with no number to match (none was shown) and no verification code.
PUSH_ONLY_MESSAGES: dict[Outcome, str] = {
    Outcome.WITHDRAWN: PUSH_ONLY_BLOCKED,
    Outcome.EXPIRED: (
        "No answer from your authenticator in time (is it online?). Sign in again, then approve the"
        " request on your authenticator."
    ),
    Outcome.NUMBER_MISMATCH: (
        "The request was not approved. Sign in again, then approve it on your authenticator."
    ),
    Outcome.SUPERSEDED: "A newer sign-in request replaced this one: approve that one on your authenticator.",
}


def message(outcome: Outcome, *, push_only: bool) -> str:
    """The Reply-Message of a final outcome, for a push-only client or not."""
    return (push_only and PUSH_ONLY_MESSAGES.get(outcome)) or MESSAGES[outcome]


def outcome_of(status: Status) -> Outcome:
    """The outcome of the SDK's verified status (APPROVED only when the SDK approved)."""
    return Outcome(outcomes.BY_STATUS.get(status, outcomes.ENDED))


def challenge_message(number: str) -> str:
    return f"Type {number} in your authenticator, then press Enter"


# Access-Challenge when push cannot be sent (blocked after a report or too many pushes):
# the person can still sign in with a verification code from the authenticator.
CODE_ONLY_MESSAGE = "Push sign-in is blocked for your account for now. Type a verification code"


@dataclass(frozen=True, slots=True)
class Totp:
    code: str


@dataclass(frozen=True, slots=True)
class WaitForPush:
    pass


def read_answer(typed: str, number: str | None) -> Totp | WaitForPush:
    """What the text typed at the challenge prompt means.

    The number itself (typed on the VPN instead of, or as well as, the authenticator),
    an empty line or anything else: wait for the push answer. 6 to 8 digits: a
    verification code. The number comes first, since with 6+ digit numbers both
    look alike. With no push (`number` None) only a code counts."""
    text = typed.strip()
    if number is not None and text == number:
        return WaitForPush()
    if CODE_RE.fullmatch(text):
        return Totp(text)
    return WaitForPush()


def map_user(user_name: str, *, strip_realm: bool, lowercase: bool) -> str | None:
    """The pushauth user of a RADIUS User-Name ("alice@CORP" -> "alice"), or None if unusable."""
    name = user_name.strip()
    if strip_realm:
        # user@realm and DOMAIN\\user, as VPN clients send them.
        name = name.split("@", 1)[0] if "@" in name else name.rsplit("\\", 1)[-1]
    if lowercase:
        name = name.lower()
    if not name or len(name) > 64 or any(not (c.isalnum() or c in "._-@") for c in name):
        return None
    return name


# -- RFC 5080 section 2.2.2: duplicate detection -------------------------------------

DuplicateKey = tuple[str, int, int, bytes]  # client address, source port, identifier, authenticator


class New:
    """Not seen: process it."""


class InProgress:
    """Seen and still being processed: drop this copy (the reply will come)."""


@dataclass(frozen=True, slots=True)
class Cached:
    """Answered already: send the same reply again."""

    reply: bytes


class DuplicateCache:
    """Requests seen in the last `window` seconds, with their replies once sent.

    A client retransmits a request it got no reply for with the same identifier and
    authenticator; the reply must then be the same, and the request must not be
    processed twice (a second push, a second TOTP check). The clock is passed in."""

    def __init__(self, window: float, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._busy: set[DuplicateKey] = set()  # being processed, however long that takes
        self._done: OrderedDict[DuplicateKey, tuple[float, bytes]] = OrderedDict()

    def seen(self, key: DuplicateKey, now: float) -> New | InProgress | Cached:
        self._expire(now)
        if key in self._busy:
            return InProgress()
        done = self._done.get(key)
        if done is not None:
            return Cached(done[1])
        self._busy.add(key)
        return New()

    def answered(self, key: DuplicateKey, reply: bytes | None, now: float) -> None:
        """Keep `reply` for retransmissions (None: nothing was sent; forget the request)."""
        self._busy.discard(key)
        if reply is not None:
            self._done[key] = (now, reply)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._done:
            key, (at, _) = next(iter(self._done.items()))
            if now - at < self.window:
                return
            del self._done[key]
