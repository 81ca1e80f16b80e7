"""Child processes that end with the broker that started them, even when it is killed.

On Linux a child asks the kernel for a signal when its parent dies
(prctl(PR_SET_PDEATHSIG)), set between fork and exec (`preexec_fn`). The kernel sends
it when the *thread* that forked the child ends, so children are started from the
thread that lives as long as the process: the main thread. Elsewhere there is no such
call; the embedded Redis's lock (broker/embedded.py) still finds a leftover server
at the next start and stops it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc.prctl  # type: ignore[no-any-return]


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent `sig` when this process dies (None where
    the platform cannot). Looked up here, before the fork: the child only calls it."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody will signal
            os.kill(os.getpid(), sig)

    return preexec
