"""relying_party/pam/watchdog.py in a process of its own: the watchdog acts when its
process dies, and ends when `on_orphaned` overruns its deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from support import DEADLINE, wait_until

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading
    from pathlib import Path
    from relying_party.pam.watchdog import Watchdog

    out = Path(sys.argv[1])

    def orphaned():
        out.write_text(str(os.getpid()))
        threading.Event().wait()  # hangs for good: the deadline must end it

    Watchdog.start(orphaned, deadline=1)
    print("watching", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reparented to init, which may not have reaped it yet.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_a_dead_process_is_noticed_and_a_hung_watchdog_ends_by_its_deadline(tmp_path: Path) -> None:
    out = tmp_path / "orphaned"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, timeout=DEADLINE
    )
    assert proc.returncode == -9 and proc.stdout == "watching\n", proc
    pid = int(wait_until(lambda: out.exists() and out.read_text(), message="the watchdog's on_orphaned"))
    try:
        wait_until(lambda: _gone(pid), message=f"watchdog {pid} ended by its deadline")
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)  # ours, and left behind only if the test failed
