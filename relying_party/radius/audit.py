"""One audit line per decision, in key=value form that syslog and log search read well.

    pushauth-radius: decision=accept outcome=approved user=alice client=vpn-gw addr=10.0.0.1
    station=203.0.113.9 challenge=ch_3KQ... ms=1834

Dropped packets get a line too (decision=drop), since an unknown client or a bad
Message-Authenticator is what an operator must see. Values are quoted when they
hold spaces or quotes, and stripped of control characters (relying_party.host.audit).
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys

from ..host.audit import line

log = logging.getLogger("pushauth.radius.audit")


def record(decision: str, **fields: object) -> None:
    log.info("%s", line(decision, **fields))


SYSLOG_SOCKET = "/dev/log"


class _Syslog(logging.handlers.SysLogHandler):
    """The local syslog; a line it cannot send (the daemon restarting, or gone) goes to
    stderr as a plain line, where the standard handler printed a traceback per line and
    lost the line itself."""

    def handleError(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - the record itself is broken: as logging would
            super().handleError(record)
            return
        sys.stderr.write(f"{text} (syslog at {self.address} unreachable)\n")
        sys.stderr.flush()


def _listening(address: str) -> None:
    """Raise OSError unless a syslog daemon listens at `address`: Python's handler
    ignores that at its start and then fails on every line."""
    last: OSError | None = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # as SysLogHandler tries them
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(address)
                return
            except OSError as exc:
                last = exc
    assert last is not None
    raise last


def setup(*, syslog: bool, level: int = logging.INFO, address: str = SYSLOG_SOCKET) -> None:
    """Audit and server logs to stderr (with time), or to the local syslog (facility
    authpriv, as sshd's) with the program name as tag. With syslog, OSError when no
    syslog daemon listens at `address`."""
    root = logging.getLogger()
    root.setLevel(level)
    handler: logging.Handler
    if syslog:
        _listening(address)
        handler = _Syslog(address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
        handler.setFormatter(logging.Formatter("pushauth-radius[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pushauth-radius: %(message)s"))
    root.handlers[:] = [handler]
