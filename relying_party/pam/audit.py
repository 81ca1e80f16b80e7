"""One audit line per decision, to syslog (authpriv, as sshd's own lines) and optionally a file.

    pushauth-pam[812]: decision=allow outcome=approved user=alice pushauth_user=alice@example.com
    service=sshd rhost=203.0.113.9 tty=ssh challenge=ch_3KQ... ms=5120

The key=value form is the RADIUS server's too (relying_party.host.audit.line), so one log
search reads both.
"""

from __future__ import annotations

import contextlib
import os
import syslog
import time
from pathlib import Path

from ..host.audit import line
from .core import ALLOWED, Outcome

TAG = "pushauth-pam"


def decision_line(outcome: Outcome, **fields: object) -> str:
    return line("allow" if outcome in ALLOWED else "deny", outcome=outcome.value, **fields)


def record(text: str, *, to_syslog: bool, audit_file: Path | None, priority: int = syslog.LOG_INFO) -> None:
    """Write one audit (or error) line. Never raises: a full disk must not decide a sign-in."""
    if to_syslog:
        syslog.openlog(TAG, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(priority, text)
    if audit_file is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with contextlib.suppress(OSError):
            # Made readable by its owner alone, as the store: who signed in when, from
            # where, and the users' handles at the broker are no one else's business
            # (under sshd's umask open() made it 0644). A file that exists keeps its mode.
            fd = os.open(audit_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a") as out:
                out.write(f"{stamp} {TAG}[{os.getpid()}]: {text}\n")
