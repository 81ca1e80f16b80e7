"""What this device last measured of each broker's clock, and what it may do with it.

A phone's clock can be wrong (set by hand, a dead clock battery, a restored VM). Each
connection measures the broker's clock against this device's (`hello.time`,
docs/protocol.md section 13). Answers already carry that estimate as their `ts`; this
module keeps the last measurement per broker in the agent's home so that the offline
`code` command can use it too, and words the one message about a wrong clock.

Trust (README, "If your phone's clock is wrong"): the broker is trusted to deliver,
never to decide, so its clock is used only where a wrong one can do no more than a
refusal could:
- verification codes of the accounts enrolled at that broker (never an imported
  account's: a pushauth broker must not steer a bank's codes), and only while the
  offset is at most CODE_CORRECTION_MAX_MS: a broker that lies about its time could
  make the device show codes of another time, which a phishing page could collect and
  use later; the cap bounds "later" to minutes, about what a real-time relay gets anyway;
- never the `ts` of signed HTTP requests (backups, recovery, recovery-key rotation):
  a rotation's and a recovery's `ts` order them at the RP (section 16), and a broker
  that could move them into the future could make the RP refuse the user's later
  rotations. There the agent signs its own clock and, when the broker refuses it as
  stale, says which clock is wrong and by how much.

A measurement counts only while this device's clock has not been set since (it keeps
the wall clock minus the time since boot, which changes when the clock is set or the
device restarts): after the user corrects the clock, an old offset would be wrong the
other way.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from protocol import durations

from .files import atomic_write

CLOCKS_FILE = "broker-clocks.json"
# The skew an RP accepts on an answer's `ts` (docs/protocol.md, section 2.2:
# MAX_CLOCK_SKEW_MS); a device clock further off the broker's is warned about.
WARN_AFTER_MS = 120_000
# The largest offset by which codes are shown on the broker's clock (see above).
CODE_CORRECTION_MAX_MS = 10 * 60 * 1000
# The RP's check of a code allows one 30 s step either way: a smaller offset needs no word.
CODE_QUIET_MS = 15_000
# How far "wall clock minus time since boot" may drift (NTP slewing) and still be the
# same clock setting.
_SAME_SETTING_MS = 2_000


def _boot_ms() -> float | None:
    clock = getattr(time, "CLOCK_BOOTTIME", None)  # Linux; elsewhere nothing is kept
    return None if clock is None else time.clock_gettime(clock) * 1000


def _setting_ms() -> float | None:
    """This device's wall clock minus its time since boot: constant until the clock is set."""
    boot = _boot_ms()
    return None if boot is None else time.time() * 1000 - boot


def describe(offset_ms: int) -> str:
    """'3 min 5 s behind' / '20 s ahead of': how this device's clock stands to a clock
    `offset_ms` ahead of it (positive: this device is behind; protocol/durations.py words
    the size)."""
    return f"{durations.clock_offset(offset_ms)} {'behind' if offset_ms > 0 else 'ahead of'}"


def wrong_clock(offset_ms: int, broker: str) -> str:
    """The one sentence about this device's clock being off a broker's."""
    return (
        f"this device's clock is {describe(offset_ms)} the broker's at {broker}:"
        " set this device's clock right"
    )


def rotation_too_early(account: str, recovery_ts: int, recovery_time: int, offset_ms: int | None) -> str:
    """Why the recovery key of `account` cannot be renewed after "yes, it was me": the
    restore was signed at `recovery_ts` (the new device's clock; the broker's then was
    `recovery_time`), more than signing.ROTATION_AHEAD_MAX_MS ahead of this device's
    clock, and the service takes a new key only after it. Names the clock that is wrong
    (`offset_ms`: the broker's clock minus this device's, if measured) and what to do."""
    from .display import local_time

    wrong = []
    if offset_ms is None or offset_ms > WARN_AFTER_MS:
        mine = "" if offset_ms is None else f" ({describe(offset_ms)} the broker's)"
        wrong.append(f"if this device's clock is behind{mine}, set it right")
    new_ahead = recovery_ts - recovery_time
    if new_ahead > WARN_AFTER_MS:
        wrong.append(
            f"the new device's clock was {describe(-new_ahead)} the broker's when it restored: set that"
            f" device's clock right, and wait until {local_time(recovery_ts)} by a right clock"
        )
    return (
        f"the recovery key of {account} was NOT renewed: the restore was signed by the new device at"
        f" {local_time(recovery_ts)}, more than 10 min after this device's clock, and the service takes a"
        f" new key only after that; {'; '.join(wrong)}; then run pushauth-agent backup retire (until then"
        " your backups do not recover this account)"
    )


def rotation_refused(newer_than: int, offset_ms: int | None) -> str:
    """Why a recovery key was not renewed: the broker takes a new one only
    signed after `newer_than` (a restore of the account, or its last new key, signed by a
    clock ahead), which is more than signing.ROTATION_AHEAD_MAX_MS after this device's
    clock. Names the clock that is wrong (`offset_ms`: the broker's clock minus this
    device's, if measured) and what to do."""
    from .display import local_time

    if offset_ms is not None and offset_ms > WARN_AFTER_MS:
        wrong = f"this device's clock is {describe(offset_ms)} the broker's: set it right"
    else:
        wrong = (
            "if this device's clock is right, the device that restored this account had a clock ahead:"
            f" wait until {local_time(newer_than)} by a right clock"
        )
    return (
        "the service takes a new key only if signed after"
        f" {local_time(newer_than)} (a restore of this account, or its last new key, was signed then), more"
        f" than 10 min after this device's clock; {wrong}; then run pushauth-agent backup retire (until then"
        " the old recovery key stays the one that works, unless a restore used it)"
    )


def record(home: Path, broker: str, offset_ms: int) -> None:
    """Keep the offset just measured on a connection to `broker`."""
    setting = _setting_ms()
    if setting is None or not home.is_dir():
        return
    book = _read(home)
    book[broker] = {"offset_ms": int(offset_ms), "setting_ms": int(setting)}
    with contextlib.suppress(OSError):  # a convenience for `code`: never a reason to fail a sign-in
        atomic_write(home / CLOCKS_FILE, json.dumps(book).encode(), make_parents=False)


def measured(home: Path, broker: str) -> int | None:
    """The last offset measured for `broker` (its clock minus this device's), if this
    device's clock was not set since."""
    item = _read(home).get(broker)
    setting = _setting_ms()
    if not isinstance(item, dict) or setting is None:
        return None
    offset, then = item.get("offset_ms"), item.get("setting_ms")
    if not isinstance(offset, int) or not isinstance(then, int) or abs(setting - then) > _SAME_SETTING_MS:
        return None
    return offset


def _read(home: Path) -> dict[str, object]:
    try:
        book = json.loads((home / CLOCKS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return book if isinstance(book, dict) else {}
