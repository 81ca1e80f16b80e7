"""How long the agent waits to reach a broker (a module of its own: the command line
checks the setting at start without importing the WebSocket client)."""

from __future__ import annotations

import math
import os

from .errors import UsageError

# How long opening a connection may take, up to the broker's greeting (TCP, TLS, the
# WebSocket handshake, `hello`): a hung broker (a stopped process, a black-holed port)
# costs a one-shot command this long, and is then named as not answering; other
# brokers are not waited for once what a command needs was found. Scripts on slow
# links (and tests) set CONNECT_TIMEOUT_ENV.
OPEN_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_ENV = "PUSHAUTH_AGENT_CONNECT_TIMEOUT"
MAX_CONNECT_TIMEOUT_S = 3600.0
# While connected, keepalive pings find a dead or hung broker (a sleeping laptop, a
# dropped NAT entry, a stopped broker process), so `listen` reconnects instead of
# showing its accounts connected for good: a ping every PING_INTERVAL_S (or every
# connect timeout, when that is shorter), whose pong must come within the connect
# timeout, the one setting for how long a broker may stay silent. By default a hung
# broker is noticed within 20 s.
PING_INTERVAL_S = 10.0


def connect_timeout() -> float:
    """Seconds to wait for a broker's greeting: CONNECT_TIMEOUT_ENV, else OPEN_TIMEOUT_S."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not text:
        return OPEN_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_CONNECT_TIMEOUT_S:  # nan too
        raise UsageError(
            f"{CONNECT_TIMEOUT_ENV} must be a number of seconds above 0 and at most "
            f"{MAX_CONNECT_TIMEOUT_S:g}, not {text!r}"
        )
    return value
