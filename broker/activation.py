"""Socket activation: serve on a listening socket that another process holds.

With systemd socket activation (deploy/pushauth-broker@.socket) systemd owns the
listening socket and hands it to each broker it starts (LISTEN_PID, LISTEN_FDS, the
socket at file descriptor 3: sd_listen_fds(3)). The socket outlives the broker: while
one broker stops and the next imports and starts, devices and RPs that connect wait in
the socket's backlog, and the new broker accepts them when it is ready. Without it, the
port is closed for that second: each of thousands of devices is refused and tries again
after its backoff (measured in docs/performance.md, section 3).

`--workers N` passes the socket it was given on to each worker (`--listen-fd`), so the
workers take connections from one queue instead of binding with SO_REUSEPORT.
"""

from __future__ import annotations

import os
import socket
import sys

SD_LISTEN_FDS_START = 3  # systemd's first passed descriptor
_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """A passed socket that the broker cannot serve on; the message says why."""


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed to this process, or None if there is none.

    The variables are removed whatever they hold, as sd_listen_fds(1) does, so that a
    child (a worker, the embedded Redis) never takes them for its own."""
    values = {name: os.environ.pop(name, None) for name in _ENV}
    if values["LISTEN_FDS"] is None:
        return None
    if values["LISTEN_PID"] != str(os.getpid()):
        return None  # meant for another process (a parent that did not unset them)
    try:
        count = int(values["LISTEN_FDS"])
    except ValueError:
        raise ActivationError(f"LISTEN_FDS is not a number: {values['LISTEN_FDS']!r}") from None
    if count != 1:
        raise ActivationError(
            f"socket activation passed {count} sockets; the broker serves one "
            "(one ListenStream= in the .socket unit)"
        )
    return listening_socket(SD_LISTEN_FDS_START)


def listening_socket(fd: int) -> socket.socket:
    """A socket object for inherited descriptor `fd`, checked to be a listening TCP socket."""
    try:
        sock = socket.socket(fileno=fd)
    except (OSError, ValueError) as exc:  # ValueError: a negative --listen-fd (a traceback before)
        raise ActivationError(
            f"file descriptor {fd} is not a socket: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()  # not ours to close: its owner may use it for something else
        raise ActivationError(f"file descriptor {fd} is not a TCP socket")
    if not listening:
        sock.detach()
        raise ActivationError(f"the socket at file descriptor {fd} is not listening (ListenStream=)")
    # Ours from here on: not inherited by processes this one starts (the embedded Redis).
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


# serve's --host and --port defaults.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8700
# The listen backlog of the socket `serve` binds itself: room for the connections of a
# restart's first moments (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024


def listen_early(host: str, port: int, backlog: int) -> socket.socket | None:
    """`serve`'s own listening socket, made before the server's modules are imported.

    Without socket activation the port is closed from the old broker's exit until the
    new one listens. Importing aiohttp, redis and the broker's modules, connecting to
    Redis and subscribing to the event channel is most of that time (0.3 s of CPU on an
    idle machine, more next to thousands of devices knocking): listening first, the
    devices that connect meanwhile wait in the backlog, as with socket activation,
    instead of being refused and waiting out their backoff (docs/performance.md,
    section 26). Only for an address literal (a name may resolve to several, which
    aiohttp then binds each): None otherwise. The options are asyncio's create_server's
    (SO_REUSEADDR; IPV6_V6ONLY for an IPv6 address)."""
    import ipaddress

    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    if not 0 <= port <= 65535:
        return None
    return socket.create_server((host, port), family=family, backlog=backlog)


def url_address(sock: socket.socket) -> tuple[str, int]:
    """The socket's host (bracketed if IPv6) and port, for the "listening on" line."""
    host, port = sock.getsockname()[:2]
    return (f"[{host}]" if ":" in host else host), port


def activated_argv(argv: list[str], fd: int) -> list[str]:
    """A command line that runs `argv` as systemd socket activation would: the listening
    socket now at `fd` moved to descriptor 3, LISTEN_PID and LISTEN_FDS set. For the load
    tester and the tests, which hold a socket across broker restarts as systemd does
    (start the result with pass_fds=(fd,)). A small exec'ing launcher, because LISTEN_PID
    must be the pid of the program itself, known only in the child."""
    return [sys.executable, "-I", "-S", "-c", _LAUNCH, str(fd), *argv]


_LAUNCH = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""
