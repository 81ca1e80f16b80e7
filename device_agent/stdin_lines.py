"""Lines typed on stdin, delivered to asyncio, whatever stdin is (tty, pipe, file).

asyncio's own pipe readers refuse regular files and behave differently on ttys,
so a daemon thread does blocking reads and hands lines to the loop. It reads the
raw file descriptor rather than sys.stdin: a daemon thread blocked inside the
buffered reader would hold its lock and abort the interpreter at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading


class StdinLines:
    """`await get()` returns the next line without its newline, or None at EOF."""

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="stdin-reader", daemon=True).start()

    def _put(self, item: str | None) -> None:
        # The loop may be closed already when the program ends while we read.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._put(pending.decode(errors="replace"))
                self._put(None)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._put(line.rstrip(b"\r").decode(errors="replace"))

    async def get(self) -> str | None:
        return await self._queue.get()
