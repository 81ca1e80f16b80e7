"""ThreadedServer: a local server that runs its own asyncio loop in a thread.

TcpProxy and HostileBroker are built on it, so sync and async tests can use them
alike: a test may block (on a CLI subprocess, say) without stalling the server, and an
async test's own loop does not have to drive it. A subclass writes `_start` and
`_close` (run in the server's loop); this class owns the thread and the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self

from .ports import LOCALHOST, free_port

DEVICE_PATH = "/v1/device"


class ThreadedServer:
    # How long start and close wait for the server's loop to do its part.
    run_timeout = 10.0

    def __init__(self, name: str, *, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{name}-{self.port}", daemon=True
        )

    # The same names as BrokerProcess has, so a test can put the server where a node was.
    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}{DEVICE_PATH}"

    def start(self) -> Self:
        self._thread.start()
        self._run(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.run_timeout)

    async def _start(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError
