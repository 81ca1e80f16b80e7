"""TcpProxy: a tiny load balancer for failover tests.

Each new client connection is forwarded to the first backend in the list that
accepts a connection; existing connections stay where they are until either side
closes. So when broker node A is killed, its clients are cut off (as behind a real
load balancer) and their reconnects land on node B.

It runs its own asyncio loop in a thread (ThreadedServer), so sync and async tests
can use it alike (an async test's own loop would otherwise have to drive it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Sequence

from .ports import LOCALHOST
from .threaded_server import ThreadedServer

Backend = tuple[str, int]
_CONNECT_TIMEOUT = 1.0
_CHUNK = 64 * 1024


class TcpProxy(ThreadedServer):
    def __init__(self, backends: Sequence[Backend | int], *, port: int | None = None) -> None:
        super().__init__("tcp-proxy", port=port)
        self._backends: list[Backend] = [_backend(b) for b in backends]
        # How many client connections went to each backend, for assertions.
        self.routed: collections.Counter[Backend] = collections.Counter()
        self.refused = 0  # client connections no backend would take
        # The next this many connections lose every byte the backend sends back (a path that
        # fails one way: the request arrives and is carried out, the answer never comes).
        self.mute_replies = 0
        # One switch per open connection: on, it loses what the backend sends back from then on.
        self._mutes: set[_Switch] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()
        # Set: new connections go on to a backend; clear: they are accepted and wait.
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = 0  # new connections held now (hold_new_connections)

    # -- control (from the test's thread) --------------------------------------

    @property
    def backends(self) -> list[Backend]:
        with self._lock:
            return list(self._backends)

    def set_backends(self, backends: Sequence[Backend | int]) -> None:
        """Replace the backend list; affects new connections only."""
        with self._lock:
            self._backends = [_backend(b) for b in backends]

    def lose_replies(self) -> None:
        """From now on, lose every byte the backends send back on the connections open
        now, and their end (a network that fails one way mid-connection: the device's
        answer arrives and is carried out, the broker's reply never comes, and nothing
        tells the device until it gives up on the connection). New connections work."""
        with self._lock:
            for switch in self._mutes:
                switch.on = True

    def hold_new_connections(self) -> None:
        """From now on, accept new connections but forward nothing either way until
        `let_through`: a connection attempt that neither fails nor succeeds (a backend's
        listen queue full, a SYN lost), for as long as the test needs. Open connections
        are not touched."""
        self._run(self._set_open(False))

    def let_through(self) -> None:
        """Held and new connections go on to a backend (after `hold_new_connections`)."""
        self._run(self._set_open(True))

    def drop_connections(self) -> None:
        """Cut every open connection (both sides), as a restarted load balancer would."""
        self._run(self._drop())

    # -- the proxy (in its own loop) ---------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, self.port, reuse_address=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        try:
            if not self._open.is_set():
                self.waiting += 1
                try:
                    await self._open.wait()
                finally:
                    self.waiting -= 1
            upstream = await self._connect()
            if upstream is None:
                self.refused += 1
                return
            backend, (up_r, up_w) = upstream
            self.routed[backend] += 1
            self._writers.add(up_w)
            with self._lock:
                muted, self.mute_replies = self.mute_replies > 0, max(0, self.mute_replies - 1)
                mute = _Switch()
                self._mutes.add(mute)
            try:
                # When one direction ends, close both: half-open is not what an LB does here.
                pumps = [
                    asyncio.create_task(_pump(client_r, up_w)),
                    asyncio.create_task(_discard(up_r) if muted else _pump(up_r, client_w, mute)),
                ]
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            finally:
                with self._lock:
                    self._mutes.discard(mute)
                self._writers.discard(up_w)
                _close(up_w)
        finally:
            self._writers.discard(client_w)
            _close(client_w)
            self._tasks.discard(task)

    async def _connect(self) -> tuple[Backend, tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None:
        for backend in self.backends:
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(*backend), _CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            return backend, streams
        return None

    async def _set_open(self, open_: bool) -> None:
        if open_:
            self._open.set()
        else:
            self._open.clear()

    async def _drop(self) -> None:
        for writer in list(self._writers):
            _abort(writer)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop()
        # Aborted sockets end the connection tasks by themselves; cancelling them instead
        # would make asyncio log each one as an error.
        if self._tasks:
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=2)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)


class _Switch:
    on = False


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mute: _Switch | None = None
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            if mute is not None and mute.on:
                continue  # lost on the way
            writer.write(data)
            await writer.drain()
    if mute is not None and mute.on:
        await asyncio.Event().wait()  # its end is lost too: the client never hears of it


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read the backend's answer and drop it: a client that never hears back. Ends with
    the client's side (the answer's end would close the connection, an answer of sorts)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while await reader.read(_CHUNK):
            pass
    await asyncio.Event().wait()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    with contextlib.suppress(OSError, RuntimeError):
        transport.abort()


def _backend(value: Backend | int) -> Backend:
    return (LOCALHOST, value) if isinstance(value, int) else (value[0], int(value[1]))
