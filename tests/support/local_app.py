"""An aiohttp application of the test's own (a scripted broker, a static site, the
broker's app driven from the test) served in the test's process on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .ports import LOCALHOST


@contextlib.asynccontextmanager
async def serving(app: web.Application, **runner_args: Any) -> AsyncIterator[str]:
    """`app` on a loopback port the kernel picks (no race for a port); yields its base
    URL, `http://127.0.0.1:PORT`, and stops serving on exit."""
    runner = web.AppRunner(app, **runner_args)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOCALHOST, 0).start()
        yield f"http://{LOCALHOST}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
