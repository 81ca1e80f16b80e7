"""The audit line format of pushauth-pam and pushauth-radius: key=value, which syslog and
log search read well, e.g.

    decision=accept outcome=approved user=alice client=vpn-gw challenge=ch_3KQ... ms=1834

Values are quoted when they hold spaces or quotes, and stripped of control characters:
a user name is input.
"""

from __future__ import annotations

# Values are cut short, so that one from the network (a user name) cannot flood the log;
# `detail` is the reason the administrator reads, an error with its cause at the end
# ("cannot reach the pushauth broker at URL: ... [Connection refused]"): kept longer.
MAX_VALUE = 128
MAX_DETAIL = 512


def _value(value: object, limit: int = MAX_VALUE) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)[:limit]
    if any(c in text for c in ' "='):
        text = '"' + text.replace('"', "'") + '"'
    return text


def line(decision: str, **fields: object) -> str:
    return " ".join(
        [
            f"decision={decision}",
            *(f"{k}={_value(v, MAX_DETAIL if k == 'detail' else MAX_VALUE)}" for k, v in fields.items()),
        ]
    )
