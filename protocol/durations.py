"""How far apart two clocks are, in words: one wording for the broker, the agent and the
RP SDK, each of which tells a person that some clock is off (and by how much).

Plain functions, no I/O (as the rest of protocol/).
"""

from __future__ import annotations


def clock_offset(ms: int) -> str:
    """'4.2 s', '42 s', '3 min 5 s', '12 min', '2 h 5 min', '1 d 3 h': the size of an
    offset of `ms` (either sign), rounded to the unit shown, never cut. An offset is
    measured to within half a round trip either way: cut, a node 90 s ahead read "1 min
    29 s" and a device a day ahead "23 h 59 min" whenever the reading fell a millisecond
    short, as a loaded host's do (each failed a test run). From 10 minutes on, seconds
    say nothing (and a Date header measures none); under 10 s, tenths still do."""
    ms = abs(ms)
    if ms < 9_950:
        return f"{ms / 1000:.1f} s"
    s, minutes = (ms + 500) // 1000, (ms + 30_000) // 60_000
    if minutes >= 24 * 60:
        hours = (ms + 1_800_000) // 3_600_000
        return f"{hours // 24} d {hours % 24} h"
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    if s >= 600:
        return f"{minutes} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"
