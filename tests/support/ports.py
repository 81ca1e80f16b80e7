"""Free TCP ports on the loopback interface.

The kernel picks a free port when we bind to port 0; we close the socket and hand
the number to a server that binds it a moment later. Another process could take it
in between, which is why the servers started here retry with a fresh port when the
port was not chosen by the caller.
"""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
