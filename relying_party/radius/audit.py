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
import sys

from ..host.audit import line

log = logging.getLogger("pushauth.radius.audit")


def record(decision: str, **fields: object) -> None:
    log.info("%s", line(decision, **fields))


def setup(*, syslog: bool, level: int = logging.INFO) -> None:
    """Audit and server logs to stderr (with time), or to the local syslog (facility
    authpriv, as sshd's) with the program name as tag."""
    root = logging.getLogger()
    root.setLevel(level)
    handler: logging.Handler
    if syslog:
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV
        )
        handler.setFormatter(logging.Formatter("pushauth-radius[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pushauth-radius: %(message)s"))
    root.handlers[:] = [handler]
