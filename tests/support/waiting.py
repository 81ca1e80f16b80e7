"""Polling helpers: wait for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

# The one deadline for waiting on an event (a log line, a frame, a port, a state in
# Redis): generous, because a wait ends as soon as the event happens and only a
# failing test waits this long, while a loaded 2-core CI machine can take seconds
# for what takes milliseconds on a quiet one. PUSHAUTH_TEST_DEADLINE overrides it.
DEADLINE = float(os.environ.get("PUSHAUTH_TEST_DEADLINE", "30"))


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError, so pytest shows it as a failure)."""


def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> object:
    """Poll `condition` until it returns something truthy, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


async def until(
    condition: Callable[[], Awaitable[object]],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.02,
    message: str = "condition",
) -> object:
    """wait_until for a test's event loop: await `condition` until it returns something
    truthy, and return that value (the loop keeps serving meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {message}")
        await asyncio.sleep(interval)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None
