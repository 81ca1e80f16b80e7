"""Free TCP ports on the loopback interface, never handed out twice at once.

A port from bind(port 0) is free only for a moment: the kernel picks it from the
ephemeral range (ip_local_port_range, 32768-60999 on Linux), the same range it
draws from for the source port of every outgoing connection and for every other
bind(0) — another xdist worker's, another test run's, or a client socket of our own
that happens to connect in between. On a busy machine that made a server now and
then fail with "address already in use".

So ports come from below the ephemeral range (10000-32767 by default), and each one
is claimed with an exclusive lock file under the system temp dir before it is
handed out: two workers, or two test runs on the same machine, never get the same
port while the one that claimed it lives (the lock goes with the process). Each
worker starts at its own random place and moves on port by port, so ports are not
reused soon even within one worker. A port is only handed out when it also binds,
so a stray server on it is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

LOCALHOST = "127.0.0.1"

# Below the kernel's ephemeral range, above the well-known ports and common services.
PORT_RANGE = range(10000, 32768)
_LOCK_DIR = Path(tempfile.gettempdir()) / "pushauth-test-ports"


class _Claims:
    """This process's claimed ports: port -> its open, flock()ed lock file."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.held: dict[int, IO[bytes]] = {}
        self.cursor = random.randrange(len(PORT_RANGE))
        # Claims kept at once: enough that a port is not handed out again while a
        # server of an earlier test might still linger, few enough for the fd limit.
        self.keep = 256

    def _release_oldest(self) -> None:
        port = next(iter(self.held))
        self.held.pop(port).close()

    def claim(self, host: str) -> int:
        _LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
        for _ in range(len(PORT_RANGE)):
            self.cursor = (self.cursor + 1) % len(PORT_RANGE)
            port = PORT_RANGE[self.cursor]
            if port in self.held:
                continue
            lock = (_LOCK_DIR / str(port)).open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()  # claimed by another worker or test run
                continue
            if not _bindable(port, host):
                lock.close()
                continue
            self.held[port] = lock
            while len(self.held) > self.keep:
                self._release_oldest()
            return port
        raise RuntimeError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


_claims: _Claims | None = None


def free_port(host: str = LOCALHOST) -> int:
    """A port that binds now and that no other test (worker or run) is handed meanwhile."""
    global _claims
    if _claims is None or _claims.pid != os.getpid():  # a forked child claims its own
        _claims = _Claims()
    return _claims.claim(host)


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


with contextlib.suppress(OSError):  # shared by every user of the machine
    _LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    os.chmod(_LOCK_DIR, 0o1777)
