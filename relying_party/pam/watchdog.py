"""A push outlives the PAM process that sent it: a watchdog process ends it.

sshd ends the PAM process of a client that disconnects during keyboard-interactive (at
the number prompt, say) with SIGTERM; a terminal that hangs up, or an administrator's
kill, ends it too. Nothing in that process can react: SIGTERM's default action ends it
at once, and libpam-python holds the GIL for the whole conversation call, so no thread
of ours would run while sshd waits for the process to exit. The push would stay live on
the person's devices until it expired, and no audit line would say what happened.

So once a push is out, a small process forked from this one waits on a pipe whose only
writer is this process: a byte on it means the sign-in ended as usual; end of file
without one means this process died first, and the watchdog runs `on_orphaned` (withdraw
the push, write the audit line) from its copy of the sign-in's state. It is a grandchild
in a session of its own, so the host never sees an unknown child (sudo and sshd reap
their own) and a hangup of the terminal does not reach it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Callable


class Watchdog:
    def __init__(self, writer: int) -> None:
        self._writer = writer

    @classmethod
    def start(cls, on_orphaned: Callable[[], None], *, deadline: float) -> Watchdog:
        """`on_orphaned` gets `deadline` seconds, then the watchdog ends regardless (a
        lock some thread held at the fork would otherwise keep it for ever)."""
        reader, writer = os.pipe()  # not inherited across exec: only this process writes
        pid = os.fork()
        if pid == 0:  # the short-lived middle process: fork again and leave
            try:
                if os.fork() == 0:
                    _watch(reader, writer, on_orphaned, deadline)
            finally:
                os._exit(0)
        os.close(reader)
        with contextlib.suppress(ChildProcessError):  # a host that reaps every child got it first
            os.waitpid(pid, 0)
        return cls(writer)

    def dismiss(self) -> None:
        """The sign-in ended as usual: the watchdog leaves without doing anything."""
        with contextlib.suppress(OSError):
            os.write(self._writer, b".")
        with contextlib.suppress(OSError):
            os.close(self._writer)


def _watch(reader: int, writer: int, on_orphaned: Callable[[], None], deadline: float) -> None:
    """The watchdog's whole life. Never returns; never runs the host's exit handlers."""
    try:
        os.close(writer)
        os.setsid()
        # Hold nothing of the host's open (its sockets, sshd's PAM channel, the terminal).
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, reader)
        os.closerange(reader + 1, os.sysconf("SC_OPEN_MAX"))
        if not os.read(reader, 1):
            with contextlib.suppress(ValueError):  # Python may not let a sub-interpreter
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not the host's handler: end
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            signal.alarm(max(1, math.ceil(deadline)))
            on_orphaned()
    finally:
        os._exit(0)
