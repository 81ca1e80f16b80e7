"""protocol/durations.py: the one wording of a clock offset (broker, agent, RP SDK)."""

from __future__ import annotations

import pytest

from protocol.durations import clock_offset


@pytest.mark.parametrize(
    ("ms", "words"),
    [
        # Rounded to the unit shown, never cut: a reading a millisecond short of the true
        # offset (half a round trip off, as a loaded host's are) says the same.
        (-4_040, "4.0 s"),
        (9_949, "9.9 s"),
        (9_960, "10 s"),
        (19_600, "20 s"),
        (59_700, "1 min 0 s"),
        (89_990, "1 min 30 s"),
        (90_400, "1 min 30 s"),
        (179_600, "3 min 0 s"),
        (299_980, "5 min 0 s"),
        (599_600, "10 min"),  # from 10 minutes, seconds say nothing
        (1_199_800, "20 min"),
        (3_599_700, "1 h 0 min"),
        ((23 * 3600 + 40 * 60) * 1000, "23 h 40 min"),
        (-86_399_600, "1 d 0 h"),  # read "23 h 59 min" cut, and failed a CI run
        (86_400_400, "1 d 0 h"),
        (2 * 86_400_000 + 5 * 3_600_000, "2 d 5 h"),
    ],
)
def test_a_clock_offset_is_told_rounded_to_the_unit_shown(ms: int, words: str) -> None:
    assert clock_offset(ms) == words
