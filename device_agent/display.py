"""How the agent shows accounts and sign-in requests to people (plain text and JSON)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from protocol.purpose import SETUP_TEST, VERIFY, is_setup_test, is_verify, purpose_of
from protocol.text import printable, printable_clipped

from .store import ACTION_REQUIRED, Account, Entry

if TYPE_CHECKING:  # the frame types are built only by the commands that talk to a broker
    from protocol.frames import Challenge, RecoveryNotice

# Context keys the RP SDK and demo RP send, with the labels people read ("action": what
# the demo RP asks for other than a sign-in, e.g. "verify it's you" before a security
# change). Other keys (the setup test's `purpose` among them) are shown as they come: the
# user must see everything the answer signs.
CONTEXT_LABELS: dict[str, str] = {
    "app": "application",
    "application": "application",
    "action": "request",
    "ip": "IP address",
    "location": "location",
    "browser": "browser",
    "os": "system",
    "device": "device",
}


def shown(value: object) -> str:
    """Text from a broker, an RP or a link, as it may be shown on a terminal or in the
    terminal UI: every control, format, line-separator and invisible character made a
    visible escape, other spaces shown as spaces (protocol/text.py), so an ANSI sequence
    in a browser string cannot redraw the IP line. Every place that shows such text goes
    through here."""
    return printable(str(value))


def shown_clipped(value: str, limit: int = 40) -> str:
    """What the user typed, echoed back in a message: shown(), and cut after `limit`
    characters (a pasted page must not fill the terminal), saying how long it was."""
    return printable_clipped(value, limit)


def shown_lines(text: str) -> str:
    """A message of several lines, made by the agent from shown() values and its own
    words, as it goes to the terminal: line breaks kept, anything else unsafe escaped
    (a last guard for a message that carries a broker's words unescaped)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def local_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms / 1000))


def clock_time(seconds: float) -> str:
    """A moment of today on this device's clock (time.time() `seconds`), for statuses."""
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def seconds_left(expires_ms: int, broker_now_ms: int) -> int:
    return max(0, (expires_ms - broker_now_ms + 999) // 1000)


def request_seconds_left(ch: Challenge, broker_now_ms: int) -> int:
    """A request's seconds left, never more than its lifetime: the estimate of the broker's
    clock may run a little early (a round trip's worth), which showed a 60 s request as
    "expires in 61 s"; the broker cannot have made it later than it says."""
    return seconds_left(ch.expires, max(broker_now_ms, ch.created))


def context_lines(ctx: dict[str, str]) -> list[tuple[str, str]]:
    known = [(CONTEXT_LABELS[k], shown(ctx[k])) for k in CONTEXT_LABELS if k in ctx]
    other = [(shown(k), shown(v)) for k, v in sorted(ctx.items()) if k not in CONTEXT_LABELS]
    return known + other


def service_name(ch: Challenge, account: Account | None) -> str:
    """The RP's name to show with a request: the one stored at enrollment (from the link
    the user scanned on the RP's page), not the broker's word in the challenge
    (docs/protocol.md, section 18.3)."""
    return account.rp_name if account is not None else ch.rp_name


def broker_calls_it(ch: Challenge, account: Account | None) -> str | None:
    """The challenge's rp_name when it differs from the stored one (said, not shown as
    the service's name), else None."""
    return ch.rp_name if account is not None and ch.rp_name != account.rp_name else None


# Where the user reads the number to type, by the request's agreed purpose (docs/protocol.md
# 15.1): a setup test notification's is on the service's page for adding a device, a
# re-authentication's on the page that asked the person to verify it is them.
_NUMBER_SOURCES = {SETUP_TEST: "the setup page", VERIFY: "the page asking you to verify"}


def number_source(ch: Challenge) -> str:
    """Where the user reads the number to type (a sign-in's: the sign-in screen)."""
    return _NUMBER_SOURCES.get(purpose_of(ch.ctx) or "", "the sign-in screen")


# What a request without number matching says in place of the number (docs/protocol.md
# section 15): with nothing to compare, only the person's own knowledge that they are
# signing in right now tells their sign-in from an attacker's.
NO_NUMBER = "none to compare: approve only a sign-in you started just now"


def request_heading(ch: Challenge) -> str:
    if is_setup_test(ch.ctx):
        return f"Test notification {shown(ch.ch)}: finish adding this device?"
    if is_verify(ch.ctx):
        return f"Verification request {shown(ch.ch)}: is this you verifying your identity?"
    return f"Sign-in request {shown(ch.ch)}"


def request_text(ch: Challenge, account: Account | None, broker_now_ms: int) -> str:
    """A multi-line description of a sign-in request (or a setup test notification), as
    the user must see it: every context entry, the setup test marker included."""
    other = broker_calls_it(ch, account)
    note = "" if other is None else f"  (the broker calls it '{shown(other)}': not the name enrolled)"
    rows = [
        ("service", shown(service_name(ch, account)) + note),
        ("account", shown(account.name if account else ch.account)),
        *context_lines(ch.ctx),
        ("time", local_time(ch.created)),
        ("expires in", f"{request_seconds_left(ch, broker_now_ms)} s"),
        *([] if ch.number_matching else [("number", NO_NUMBER)]),
    ]
    width = max(len(label) for label, _ in rows) + 1
    body = "\n".join(f"  {label + ':':<{width}} {value}" for label, value in rows)
    return f"{request_heading(ch)}\n{body}"


def request_json(ch: Challenge, account: Account | None, broker_now_ms: int) -> dict[str, Any]:
    return {
        "type": "sign_in",
        "setup_test": is_setup_test(ch.ctx),  # a test notification of a device being added
        "purpose": purpose_of(ch.ctx),  # "setup test", "verify" or None (a sign-in): 15.1
        "id": ch.ch,
        "rp": ch.rp,
        "rp_name": service_name(ch, account),
        "broker_rp_name": broker_calls_it(ch, account),  # set only when it differs
        "account": account.name if account else ch.account,
        "credential_id": ch.cid,
        "context": ch.ctx,
        "created_at": ch.created,
        "expires_at": ch.expires,
        "seconds_left": request_seconds_left(ch, broker_now_ms),
        "digits": ch.digits,
        # False: no number to type (approve with `approve ID`, no --number)
        "number_matching": ch.number_matching,
    }


def notice_question(notice: RecoveryNotice, account: Account | None, *, asking: bool = True) -> str:
    """ "Was this you?" after a recovery, as the user reads it (one line). `asking`: with
    the keys that answer it, where a key press does (listen); `pending` only lists it."""
    name = shown(account.name if account else notice.cid)
    return (
        f"A new device '{shown(notice.new_name)}' restored your account {name} at {local_time(notice.time)}. "
        "Was this you?" + (" [y/n]" if asking else "")
    )


def notice_text(notice: RecoveryNotice, account: Account | None) -> str:
    """A question as `pending` lists it: answered by `recovery confirm|disown ID`, not here."""
    service = f" ({shown(account.rp_name)})" if account else ""
    question = notice_question(notice, account, asking=False)
    return f"Recovery question {shown(notice.notice)}{service}\n  {question}"


def notice_json(notice: RecoveryNotice, account: Account | None) -> dict[str, Any]:
    return {
        "type": "recovery_notice",
        "id": notice.notice,
        "rp_name": account.rp_name if account else None,
        "account": account.name if account else None,
        "credential_id": notice.cid,
        "new_credential_id": notice.new_cid,
        "new_device_name": notice.new_name,
        "restored_at": notice.time,
    }


def account_json(a: Account) -> dict[str, Any]:
    """Everything about an account but its secrets."""
    return {
        "name": a.name,
        "rp": a.rp,
        "rp_name": a.rp_name,
        "user": a.user,
        "label": a.label,
        "broker": a.broker,
        "credential_id": a.cid,
        "device_name": a.device_name,
        "added_at": a.added,
        "status": a.status,
        "status_reason": a.status_reason,
        "totp": a.has_totp,
        "recoverable": a.recoverable,
    }


def account_line(a: Account) -> str:
    if a.status == ACTION_REQUIRED:
        state = f"  [action required: {a.status_reason or 're-activate it'}]"
    else:
        state = "" if a.active else f"  [{a.status}: {a.status_reason or 'no reason given'}]"
    totp = ", verification codes" if a.has_totp else ""
    # Only an active key's recovery key can recover: a revoked account's recovers nothing.
    recoverable = f", {RECOVERABLE}" if a.recoverable and a.active else ""
    return shown(
        f"{a.name}  ({a.rp_name}, user {a.user}, broker {a.broker}, added {local_time(a.added)}"
        f"{totp}{recoverable}){state}"
    )


# What `accounts` and `enroll` say of an account enrolled as recoverable.
RECOVERABLE = "recoverable: a backup brings it back by itself"


def enrolled_lines(account: Account, replaced: Account | None) -> list[str]:
    """What `enroll` (and the terminal screen's Add) says of an account just enrolled."""
    name, rp_name, user = shown(account.name), shown(account.rp_name), shown(account.user)
    if replaced is not None:
        lines = [f'Replaced the revoked account "{name}" for {rp_name} (user {user}).']
    else:
        lines = [f'Added "{name}" for {rp_name} (user {user}).']
    lines += [
        f"  broker: {shown(account.broker)}",
        f"  this device is listed as: {shown(account.device_name)}",
    ]
    if account.has_totp:
        lines.append("  verification codes: yes")
    if account.recoverable:
        lines.append(f"  {RECOVERABLE}")
    return lines


def entry_json(e: Entry) -> dict[str, Any]:
    """Push accounts as `account_json`; verification-code-only ones with their parameters."""
    if e.account is not None:
        return {"type": "push", **account_json(e.account)}
    assert e.otp is not None
    return {
        "type": e.otp.kind,
        "name": e.name,
        "issuer": e.otp.issuer,
        "account": e.otp.name,
        "algorithm": e.otp.algorithm,
        "digits": e.otp.digits,
        **({"period": e.otp.period} if e.otp.kind == "totp" else {}),
        "status": "active",
        "totp": True,
    }


def entry_line(e: Entry) -> str:
    if e.account is not None:
        return account_line(e.account)
    assert e.otp is not None
    timing = f"every {e.otp.period} s" if e.otp.kind == "totp" else "counter-based"
    return shown(
        f"{e.name}  (verification codes only: {e.otp.kind.upper()}, {e.otp.digits} digits, {timing})"
    )
