"""A process's wall clock set off or stepped by libfaketime (installed by scripts/ensure-tools
test): a real skewed clock for the whole process, not a patched function. Monotonic clocks
are left as they are, as a real step leaves them."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

_FOUND = glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1")
LIBFAKETIME = _FOUND[0] if _FOUND else ""
# For a module whose tests all need it: `pytestmark = needs_faketime`.
needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME, reason="libfaketime is missing: scripts/ensure-tools test"
)


def skewed(seconds: int) -> dict[str, str]:
    """The environment that sets a process's clock `seconds` off."""
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"{seconds:+d}", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def stepped(stamp: Path, offset: str = "+0") -> dict[str, str]:
    """The environment whose clock is off by what `stamp` says (e.g. "+300"), read on every
    call: writing the file steps the running process's clock."""
    stamp.write_text(offset)
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(stamp),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
