"""Human messages for protocol error codes, close codes and answer outcomes.

The one place where the agent turns stable codes into words; the CLI and a
terminal UI both print these.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from protocol.challenge import Status
from protocol.codes import CancelReason, NoticeOutcome, RevokeReason
from protocol.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, ErrorCode
from protocol.purpose import SETUP_TEST, VERIFY
from protocol.text import printable

if TYPE_CHECKING:  # the frame types are built only by the commands that talk to a broker
    from protocol.frames import Cancel

ERROR_MESSAGES: dict[str, str] = {
    ErrorCode.MALFORMED: "the broker and this agent do not understand each other (malformed frame)",
    ErrorCode.FRAME_TOO_LARGE: "a message was larger than the protocol allows",
    ErrorCode.UNSUPPORTED_VERSION: "the broker speaks another protocol version; update the agent",
    ErrorCode.UNKNOWN_FRAME: "the broker and this agent do not understand each other (unknown frame)",
    ErrorCode.INVALID_FIELD: "the broker and this agent do not understand each other (invalid field)",
    ErrorCode.UNEXPECTED_FRAME: "the broker and this agent disagree on the protocol (unexpected frame)",
    ErrorCode.AUTH_FAILED: "the broker did not accept this device's keys",
    ErrorCode.NOT_AUTHENTICATED: "the broker did not accept this device's keys",
    ErrorCode.AUTH_TIMEOUT: "the connection timed out before the device signed in to the broker",
    ErrorCode.BAD_SIGNATURE: "the broker rejected this device's signature",
    ErrorCode.UNKNOWN_CREDENTIAL: "the broker does not know this account any more",
    ErrorCode.CREDENTIAL_REVOKED: "this account was removed at the broker",
    ErrorCode.UNKNOWN_CHALLENGE: "there is no such sign-in request",
    ErrorCode.CHALLENGE_EXPIRED: "the sign-in request has expired",
    ErrorCode.ALREADY_ANSWERED: (
        "the sign-in request has already ended (answered, cancelled, or replaced by a newer one)"
    ),
    ErrorCode.CONTEXT_MISMATCH: "the sign-in details changed; the answer was refused",
    ErrorCode.BAD_TOKEN: (
        "the setup link is unknown, already used, withdrawn by the service or expired; ask the"
        " service for a new QR code"
    ),
    ErrorCode.TOO_MANY_CREDENTIALS: (
        "the service allows no more devices for this account; remove one you no longer use (on its"
        " Security info page), then use the same setup link or QR code again while it is valid"
    ),
    ErrorCode.UNKNOWN_NOTICE: (
        "there is no such open recovery question (it was answered already, or withdrawn)"
    ),
    ErrorCode.RATE_LIMITED: "too many requests; try again later",
    ErrorCode.PUSH_UNAVAILABLE: "this broker sends no background notifications (Web Push)",
    ErrorCode.PUSH_SERVICE_REFUSED: "the broker does not send notifications through that push service",
    ErrorCode.INTERNAL: "the broker had an internal error; try again later",
    ErrorCode.INVALID_URI: "not a valid enrollment URI",
}

_CLOSE_MESSAGES: dict[int, str] = {
    CLOSE_NORMAL: "the broker closed the connection",
    CLOSE_GOING_AWAY: "the broker is shutting down or restarting",
    1006: "the connection was lost",
    1009: "a message was larger than the protocol allows",
    1011: "the broker had an internal error",
    1012: "the broker is restarting",
    1013: "the broker is overloaded; try again later",
}

OUTCOME_MESSAGES: dict[str, str] = {
    Status.APPROVED: "approved: the sign-in is allowed",
    Status.DENIED: "denied: the sign-in was refused",
    Status.NUMBER_MISMATCH: "number_mismatch: the number did not match, so the sign-in was denied",
    # What next, since the report leaves the account changed: whoever started the sign-in
    # got past its first step, and push stays off until the service turns it back on.
    Status.REPORTED: (
        "reported: the sign-in was refused and reported as not you. Push requests for this"
        " account are paused until the service lifts the pause; whoever tried may know your"
        " password there: change it (sign in with a verification code: pushauth-agent code)"
    ),
    Status.EXPIRED: "expired: the sign-in request timed out",
    Status.CANCELLED: "cancelled: the service cancelled the sign-in request",
    Status.SUPERSEDED: "superseded: a newer sign-in request replaced it",
    Status.WITHDRAWN: "withdrawn: ended after a report that a sign-in was not you",
    Status.UNKNOWN: "ended",
}

# A setup's test notification (docs/protocol.md 15.1) approves no sign-in: its answer
# decides whether the service finishes adding this device. Other outcomes read as above.
SETUP_TEST_OUTCOME_MESSAGES: dict[str, str] = {
    Status.APPROVED: "approved: the service can now finish adding this device",
    Status.DENIED: "denied: this device is not added",
    # A slip of the finger, not a "no": the account stays here, and the page offers to send
    # another test ("enroll again" would only make a second device at the service).
    Status.NUMBER_MISMATCH: (
        "number_mismatch: the number did not match, so this device is not added yet; on the"
        " service's setup page, send a new test notification and type the number it shows"
    ),
    Status.REPORTED: "reported: adding this device was refused and reported as not you",
}

# A re-authentication (docs/protocol.md 15.1, `purpose` = "verify"): a person already
# signed in confirms it is them before a sensitive change; no sign-in is at stake. A
# report means someone else may hold a session there, hence its advice.
VERIFY_OUTCOME_MESSAGES: dict[str, str] = {
    Status.APPROVED: "approved: it was you, the service can go on with the change",
    Status.DENIED: "denied: the verification was refused",
    Status.NUMBER_MISMATCH: "number_mismatch: the number did not match, so the verification was denied",
    Status.REPORTED: (
        "reported: the verification was refused and reported as not you. Push requests for this"
        " account are paused until the service lifts the pause; someone may be signed in to your"
        " account there: change your password (sign in with a verification code: pushauth-agent code)"
    ),
    Status.EXPIRED: "expired: the verification request timed out",
    Status.CANCELLED: "cancelled: the service cancelled the verification request",
    Status.SUPERSEDED: "superseded: a newer verification request replaced it",
}

_PURPOSE_OUTCOME_MESSAGES: dict[str, dict[str, str]] = {
    SETUP_TEST: SETUP_TEST_OUTCOME_MESSAGES,
    VERIFY: VERIFY_OUTCOME_MESSAGES,
}

CANCEL_MESSAGES: dict[str, str] = {
    # The broker names the credential that answered (`cancel.by`) only when it is one of
    # this connection's own: then approve/deny (or another listen/ui) with this same home
    # answered it; otherwise it was another device (docs/protocol.md, `cancel`).
    CancelReason.ANSWERED: "was answered on another device",
    CancelReason.EXPIRED: "expired",
    CancelReason.REVOKED: "was withdrawn because its account was removed",
    CancelReason.CANCELLED: "was cancelled by the service",
    CancelReason.SUPERSEDED: "was replaced by a newer request",
    CancelReason.WITHDRAWN: "was withdrawn after your report",
}


ANSWERED_HERE = "was answered on this device (by approve/deny, or another listen or ui window)"


def cancel_message(cancel: Cancel, own: Container[str]) -> str:
    """Words for a `cancel` frame; a newer broker's reasons mean "ended". `own`: the
    credential ids this connection authenticated (a `by` naming one of them means the
    answer came from this device, through another connection)."""
    if cancel.reason == CancelReason.ANSWERED and cancel.by is not None and cancel.by in own:
        return ANSWERED_HERE
    return CANCEL_MESSAGES.get(cancel.reason, f"has ended ({cancel.reason})")


REVOKE_MESSAGES: dict[str, str] = {
    RevokeReason.BY_RP: "removed by the service",
    RevokeReason.BY_DEVICE: "removed from this device",
    RevokeReason.DISOWNED: 'removed: your other device said this restore was "not me"',
    RevokeReason.RP_REMOVED: "removed: the service no longer uses this broker",
    ErrorCode.CREDENTIAL_REVOKED: "removed at the broker",
    ErrorCode.UNKNOWN_CREDENTIAL: "unknown to the broker",
}


NOTICE_OUTCOME_MESSAGES: dict[str, str] = {
    NoticeOutcome.CONFIRMED: "confirmed: both devices keep working",
    NoticeOutcome.DISOWNED: (
        "disowned: the new device's key was removed and push sign-in is paused until the service "
        "lifts it; change your backup passphrase, someone else has used it"
    ),
    NoticeOutcome.WITHDRAWN: "withdrawn: the new device was removed meanwhile; no answer is needed",
}


def notice_outcome_message(outcome: str) -> str:
    return NOTICE_OUTCOME_MESSAGES.get(outcome, outcome)


# A key the broker does not know was never removed by anyone: the service erased the
# user, or the broker's data was restored from a copy older than this enrollment
# (docs/operations.md, "Restoring from an older backup"). The service dropped it too
# once it listed the broker's devices, so the way back is a new enrollment, which
# replaces this account in place (actions.enroll).
UNKNOWN_WAY_BACK = (
    " The broker has no record of this device's key (its data may have been restored from an older"
    " copy, or the service erased the account there): add this device again on the service's"
    " security page, then enroll its new link here (pushauth-agent enroll URI: it replaces this account)."
)


def revoked_notice(account: str, rp_name: str | None, reason: str) -> str:
    """What the user reads when one of their accounts stops working here."""
    # The names come from the RP's link (or the broker's frame): shown as display.shown does.
    who = f'"{printable(account)}" ({printable(rp_name)})' if rp_name else f'"{printable(account)}"'
    way_back = UNKNOWN_WAY_BACK if reason == REVOKE_MESSAGES[ErrorCode.UNKNOWN_CREDENTIAL] else ""
    return f"Account {who} was {reason}: this device gets no more sign-in requests for it.{way_back}"


def error_message(code: str, detail: str = "") -> str:
    """Words for an `error` frame's code (or a ProtocolError's), with the peer's detail."""
    known = ERROR_MESSAGES.get(code)
    if known is None:
        return f"the broker refused: {detail or code}"
    return known


def close_message(code: int | None, reason: str = "") -> str:
    """Words for a WebSocket close; protocol closes carry the ErrorCode as reason."""
    if reason in ERROR_MESSAGES:
        return ERROR_MESSAGES[reason]
    if code in _CLOSE_MESSAGES:
        return _CLOSE_MESSAGES[code]
    if code is None:
        return "the connection was lost"
    return f"the broker closed the connection (code {code}{': ' + reason if reason else ''})"


def outcome_message(outcome: str, *, purpose: str | None = None) -> str:
    """Words for an answer's outcome; `purpose`: the request's agreed purpose
    (protocol.purpose.purpose_of of its context: a setup's test notification or a
    re-authentication), None for a sign-in."""
    special = _PURPOSE_OUTCOME_MESSAGES.get(purpose or "", {})
    return special.get(outcome) or OUTCOME_MESSAGES.get(outcome, outcome)


def removal_loss(rp_name: str | None, *, active_key: bool, codes: bool) -> str:
    """What `remove` loses for good, for its question (and its refusal without --yes).
    `rp_name`: the service of a push account (None: a verification-code account);
    `active_key`: it has a key the service still accepts; `codes`: it has code secrets."""
    lost = []
    if active_key:
        lost.append(f"its key is revoked at {rp_name}, and only a new QR code from {rp_name} adds it again")
    if codes:
        lost.append(
            "its verification-code secret is deleted here and from the automatic backup, and only "
            "the service can set up codes again"
        )
    if not lost:
        return "it is forgotten here (it has no key the service accepts, and no codes)"
    return "; ".join(lost)


# Asked before a "this wasn't me" report is sent (listen's r, the screen's Ctrl+R): it
# cannot be taken back, and it pauses push for the account at the service.
def cannot_reach(broker: str, exc: BaseException | str) -> str:
    """A broker that could not be reached, named by the URL it is known by (the account's
    ws://.../v1/device, or the --broker given): the same words over WebSocket and HTTP."""
    return f"cannot reach the broker at {broker}: {connect_failure(exc)}"


def silent(timeout: float) -> str:
    """Why a broker that accepted nothing, or nothing more, in `timeout` s is named so."""
    return f"it did not answer within {timeout:g} s (hung, or its port unreachable)"


def connect_failure(exc: BaseException | str) -> str:
    """A short reason for a failed connection, without a traceback or an errno."""
    if isinstance(exc, str):
        return exc
    import ssl  # only once a connection failed (every command imports this module)

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate does not verify (certificate verify failed: {exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        # Not OpenSSL's "[SSL: WRONG_VERSION_NUMBER] ... (_ssl.c:1006)": most often a URL
        # with https:// or wss:// for a server that speaks plain http:// or ws:// there.
        why = exc.reason or "no reason given"
        return f"the TLS handshake failed ({why}): is it serving https:// (wss://) there?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is it running?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


NO_PASSPHRASE_TYPED = "no passphrase typed"


def try_passphrase_again(why: str, *, left: int) -> str:
    """After a wrong or empty passphrase typed on a terminal (`why`), before it is asked again."""
    return f"{why[0].upper()}{why[1:]}, try again ({left} left)"


CONFIRM_REPORT = "Report this sign-in as not you? This denies it and pauses push requests for this account"


# A vault that does not open (damaged, cut short, not a vault at all) is left as it is;
# what brings the accounts back is a backup, restored into a home of its own.
DAMAGED_VAULT_WAY_BACK = (
    "; it was left as it is. To get your accounts back, put back a copy of this file, or"
    " restore your backup into a new home: pushauth-agent --home NEW_FOLDER restore --from FILE|broker"
)
