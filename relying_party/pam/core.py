"""The decisions of pushauth-pam, as plain functions and data: no PAM, no sockets.

Which outcome allows the sign-in, what the person is told for each, and what a line
typed at the number prompt means. flow.py and the PAM shells only move values in and
out of here.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from protocol.challenge import Status

from ..host import outcomes

CODE_RE = re.compile(r"[0-9]{6,8}")
# Typed at the number prompt: "I cannot get the push, let me type a verification code".
CODE_WORD = "code"


class Outcome(enum.StrEnum):
    """How one PAM authentication ended: the `outcome=` of its audit line."""

    APPROVED = "approved"
    DENIED = "denied"
    NUMBER_MISMATCH = "number_mismatch"
    REPORTED = "reported"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"
    ENDED = "ended"  # a final status this module does not know: not approved
    TOTP_OK = "totp_ok"
    TOTP_BAD = "totp_bad"
    TOTP_REPLAYED = "totp_replayed"
    NO_CODE = "no_code"  # asked for a code, nothing typed
    NOT_ENROLLED = "not_enrolled"  # no authenticator stored for the user on this host
    NO_DEVICES = "no_devices"  # the broker has no active device of the user
    BLOCKED = "push_blocked"  # and no valid code was typed instead
    BROKER_UNAVAILABLE = "broker_unavailable"  # unreachable before the push was sent
    # Any other broker failure: one after the push was sent (the person may have denied
    # it), or a refusal that is no configuration error. Never routed as "unreachable".
    BROKER_ERROR = "broker_error"
    FAIL_OPEN = "fail_open"  # the broker was unreachable and the config allows that
    BYPASS = "bypass"  # a member of a bypass group
    VERIFICATION_FAILED = "verification_failed"  # the SDK refused the broker's result
    UNMAPPED = "unmapped"  # the local user has no pushauth user (map file)
    CONFIG_ERROR = "config_error"


ALLOWED = frozenset({Outcome.APPROVED, Outcome.TOTP_OK, Outcome.FAIL_OPEN, Outcome.BYPASS})

NOT_SET_UP = "No authenticator is set up for you on this host. Ask your administrator (pushauth-pam enroll)."

# What the person reads at the end (PAM_TEXT_INFO when allowed, PAM_ERROR_MSG when not).
MESSAGES: dict[Outcome, str] = {
    Outcome.APPROVED: "Approved on your authenticator.",
    Outcome.TOTP_OK: "Verification code accepted.",
    Outcome.FAIL_OPEN: "The approval service is unreachable: signed in without push approval "
    "(this host allows that).",
    Outcome.BYPASS: "",
    Outcome.DENIED: "Denied on your authenticator.",
    Outcome.NUMBER_MISMATCH: "Wrong number typed in your authenticator: sign-in refused. Try again.",
    Outcome.REPORTED: "You reported this sign-in as not yours: refused, and your administrator can see it.",
    Outcome.EXPIRED: "No answer in time: the request expired. Try again.",
    Outcome.CANCELLED: "The request was cancelled. Try again.",
    Outcome.SUPERSEDED: "A newer sign-in request replaced this one.",
    Outcome.WITHDRAWN: "Push sign-in is paused for your account. Use a verification code.",
    Outcome.ENDED: "The request ended without approval. Try again.",
    Outcome.TOTP_BAD: "Wrong verification code.",
    Outcome.TOTP_REPLAYED: "That verification code was used already. Wait for the next one.",
    Outcome.NO_CODE: "No verification code typed: sign-in refused.",
    Outcome.NOT_ENROLLED: NOT_SET_UP,
    Outcome.NO_DEVICES: NOT_SET_UP,
    Outcome.BLOCKED: "Push sign-in is paused for your account, and no valid verification code was typed.",
    Outcome.BROKER_UNAVAILABLE: "The approval service is unreachable: sign-in refused.",
    Outcome.BROKER_ERROR: "The approval service failed: sign-in refused. Try again.",
    Outcome.VERIFICATION_FAILED: "The answer could not be verified: sign-in refused.",
    Outcome.UNMAPPED: "Push sign-in is not set up for your account on this host. Ask your administrator.",
    Outcome.CONFIG_ERROR: "Push sign-in is misconfigured on this host. Ask your administrator.",
}


def outcome_of(status: Status) -> Outcome:
    """The outcome of the SDK's verified status (APPROVED only when the SDK approved it)."""
    return Outcome(outcomes.BY_STATUS.get(status, outcomes.ENDED))


def number_prompt(number: str, *, code_fallback: bool = True) -> str:
    """The prompt that carries the number (SSH keyboard-interactive shows prompts at
    once, while it holds plain info messages back until the next prompt)."""
    tail = f' (or type "{CODE_WORD}" for a verification code)' if code_fallback else ""
    return f"Type {number} in your authenticator, then press Enter{tail}: "


def number_info(number: str) -> str:
    """The number where nothing can be typed back (pam_exec): the push is the only way."""
    return f"Type {number} in your authenticator"


CODE_PROMPT = "Verification code: "
UNREACHABLE_CODE_PROMPT = "The approval service is unreachable. Verification code (or Enter to give up): "
BLOCKED_CODE_PROMPT = "Push sign-in is paused for your account. Verification code (or Enter to give up): "


@dataclass(frozen=True, slots=True)
class WaitForPush:
    """An empty line, the number itself or anything else: wait for the device's answer."""


@dataclass(frozen=True, slots=True)
class AskCode:
    """The person typed "code": cancel the push, ask for a verification code."""


@dataclass(frozen=True, slots=True)
class Totp:
    code: str


def read_answer(typed: str | None, number: str) -> WaitForPush | AskCode | Totp:
    """What the line typed at the number prompt means. The number comes first, since
    with 6+ digit numbers it and a verification code look alike."""
    text = (typed or "").strip()
    if text.lower() == CODE_WORD:
        return AskCode()
    if text == number:
        return WaitForPush()
    if CODE_RE.fullmatch(text):
        return Totp(text)
    return WaitForPush()


def clean_code(typed: str | None) -> str | None:
    """A typed verification code (spaces allowed, as authenticators group digits), or None."""
    text = "".join((typed or "").split())
    return text if CODE_RE.fullmatch(text) else None


def pam_result(outcome: Outcome) -> str:
    """The PAM return code's name for an outcome. The broker being unreachable before
    the push was sent is PAM_AUTHINFO_UNAVAIL (a stack may route it, docs/pam.md); a
    bad configuration (a refused API key too) PAM_SERVICE_ERR; every other refusal,
    a broker failure after the push was sent included, PAM_AUTH_ERR."""
    if outcome in ALLOWED:
        return "PAM_SUCCESS"
    if outcome is Outcome.BROKER_UNAVAILABLE:
        return "PAM_AUTHINFO_UNAVAIL"
    if outcome is Outcome.CONFIG_ERROR:
        return "PAM_SERVICE_ERR"
    return "PAM_AUTH_ERR"
