"""A lean HTTP/1.1 client for the RP side of the load: keep-alive connections, one request at a time each.

Why not aiohttp's client: measured here, it costs 0.3-0.5 ms of CPU per request,
so at 1,500 sign-ins/s (3,000 requests/s) the RP side alone would need more than
one of the machine's two cores, and the generator, not the broker, would set the
figures. This client does only what the broker's API needs: requests with a JSON
body or none, responses with a Content-Length (or none: 204), and the one-request sign-in's chunked
stream of JSON lines (docs/http-api.md, "One request"). Anything else is an error.
"""

from __future__ import annotations

import asyncio
from collections import deque

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
# A pooled connection idle this long is closed rather than reused: well under the
# broker's keep-alive timeout (75 s, broker/http_guard.py), so the broker never closes
# one as a request is written to it (aiohttp's client uses 15 s too).
IDLE_LIMIT_S = 15.0
# A connection opened ahead (prewarm) that has carried no request yet is reused only this
# soon after it was opened: the broker closes one that sends no request line within its
# head timeout (10 s by default, `serve --head-timeout`), and must not do so just as the
# first request goes out.
FRESH_LIMIT_S = 5.0


class HttpError(Exception):
    """The connection broke, or the response was not one this client understands.
    `kind` names which, for the run's error counts (e.g. `connection_lost`)."""

    def __init__(self, message: str, kind: str = "bad_response") -> None:
        super().__init__(message)
        self.kind = kind


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.reusable = True
        # A chunked response being read: its lines so far, the partial one, the reader
        # waiting for the next, and whether the last chunk came.
        self.chunked = False
        self.lines: deque[bytes] = deque()
        self.partial = bytearray()
        self.line_waiter: asyncio.Future[None] | None = None
        self.ended = False
        self.idle_since = 0.0  # the loop's time when it was opened or went back to the pool
        self.used = False  # has carried a request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.chunked:
            try:
                self._read_chunks()
            except HttpError as exc:
                self.reusable = False
                self.chunked, self.ended = False, True
                self._wake(exc)
            return
        if self.waiter is not None and not self.waiter.done():
            try:
                parsed = self._parse()
            except HttpError as exc:
                self.reusable = False
                self.waiter.set_exception(exc)
                return
            if parsed is not None:
                self.waiter.set_result(parsed)

    def _parse(self) -> tuple[int, bytes] | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                raise HttpError("response head too large")
            return None
        head = bytes(self.buf[:end]).lower()
        if not head.startswith(b"http/1.1 "):
            raise HttpError(f"not an HTTP/1.1 response: {head[:40]!r}")
        status = int(head[9:12])
        if b"\r\ntransfer-encoding: chunked" in head:
            # The one-request sign-in's stream: the head now, the lines as they come.
            del self.buf[: end + 4]
            if b"\r\nconnection: close" in head:
                self.reusable = False
            self.chunked, self.ended = True, False
            self.lines.clear()
            self.partial.clear()
            self._read_chunks()
            return status, b""
        at = head.find(b"\r\ncontent-length:")
        if at < 0 and status in (204, 304):  # no body, whatever the headers say (RFC 9112 6.3)
            del self.buf[: end + 4]
            if b"\r\nconnection: close" in head:
                self.reusable = False
            return status, b""
        if at < 0:
            raise HttpError("response without Content-Length")
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end > 0 else None])
        if length > MAX_BODY:
            raise HttpError("response body too large")
        if len(self.buf) < end + 4 + length:
            return None
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        if b"\r\nconnection: close" in head:
            self.reusable = False
        return status, body

    def _read_chunks(self) -> None:
        """Whole chunks out of the buffer (aiohttp writes each line as one), split into lines."""
        while not self.ended:
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                return
            try:
                size = int(bytes(self.buf[:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise HttpError(f"bad chunk size line {bytes(self.buf[:eol])[:20]!r}") from None
            if len(self.buf) < eol + 2 + size + 2:
                return
            self.partial += self.buf[eol + 2 : eol + 2 + size]
            del self.buf[: eol + 4 + size]
            if len(self.partial) > MAX_BODY:
                raise HttpError("streamed line too large")
            while (at := self.partial.find(b"\n")) >= 0:
                line = bytes(self.partial[:at])
                del self.partial[: at + 1]
                if line.strip():
                    self.lines.append(line)
            if size == 0:  # the last chunk (no trailers: the broker sends none)
                self.chunked, self.ended = False, True
            self._wake(None)

    def _wake(self, exc: Exception | None) -> None:
        if self.line_waiter is not None and not self.line_waiter.done():
            if exc is None:
                self.line_waiter.set_result(None)
            else:
                self.line_waiter.set_exception(exc)

    async def next_line(self) -> bytes | None:
        """The next line of the stream, or None once it ended."""
        while not self.lines:
            if self.ended:
                return None
            self.line_waiter = asyncio.get_running_loop().create_future()
            try:
                await self.line_waiter
            finally:
                self.line_waiter = None
        return self.lines.popleft()

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}", "connection_lost"))
        if self.chunked:
            self.chunked, self.ended = False, True
            self._wake(HttpError(f"connection lost mid-stream: {exc}", "connection_lost_mid_stream"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.ended = False
        self.used = True
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Keep-alive connections to one host: opened ahead (`prewarm`), grown on demand at
    most `max_opening` at a time, up to `max_connections`; beyond that requests wait,
    first come first served, and the wait counts in their latency.

    Opening is throttled because hundreds of connects at once overflow the broker's
    listen backlog, and a dropped SYN is retried only after 1, 3, 7 s: the run would
    measure the kernel's retransmission timer instead of the broker. The ceiling is
    high because each sign-in holds a connection for its whole long-poll: too few and
    the pool, not the broker, would cap the rate (a closed loop in an open-loop test).
    """

    def __init__(
        self, base_url: str, headers: dict[str, str], max_connections: int = 2048, max_opening: int = 16
    ) -> None:
        rest = base_url.removeprefix("http://").rstrip("/")
        host, _, port = rest.partition(":")
        self.host, self.port = host, int(port or 80)
        lines = [f"Host: {rest}", *(f"{k}: {v}" for k, v in headers.items())]
        self._headers = "\r\n".join(lines)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._max = max_connections
        self._max_opening = max_opening
        self._opening = 0
        self._queue: deque[asyncio.Future[_Connection | None]] = deque()

    async def prewarm(self, n: int) -> None:
        while len(self._all) < min(n, self._max):
            batch = min(self._max_opening, n - len(self._all))
            self._idle.extend(await asyncio.gather(*(self._connect() for _ in range(batch))))

    def _encode(self, method: str, path: str, body: bytes | None, extra: str = "") -> bytes:
        if body is None:
            return f"{method} {path} HTTP/1.1\r\n{self._headers}\r\n{extra}\r\n".encode()
        head = f"{method} {path} HTTP/1.1\r\n{self._headers}\r\n{extra}Content-Type: application/json\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def stream(self, method: str, path: str, body: bytes, accept: str) -> Streamed:
        """Send one request whose answer may be a chunked stream of lines: the status and
        (for a non-streamed answer) the body at once, the lines from `Streamed.next_line`.
        Call `Streamed.close` when done: the connection goes back to the pool only once
        the stream ended."""
        data = self._encode(method, path, body, f"Accept: {accept}\r\n")
        conn = await self._acquire()
        try:
            status, raw = await conn.request(data)
        except BaseException:
            self._discard(conn)
            raise
        return Streamed(self, conn, status, raw)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request."""
        data = self._encode(method, path, body)
        conn = await self._acquire()
        try:
            result = await conn.request(data)
        except BaseException:
            self._discard(conn)  # a cancelled or failed request leaves it in an unknown state
            raise
        self._done_with(conn)
        return result

    async def _acquire(self) -> _Connection:
        while True:
            now = asyncio.get_running_loop().time()
            while self._idle:
                conn = self._idle.pop()
                if conn.reusable and now - conn.idle_since < (IDLE_LIMIT_S if conn.used else FRESH_LIMIT_S):
                    return conn
                # The broker closed it while idle (its keep-alive timeout): a request
                # written to it would wait for an answer that never comes. Or it has been
                # idle long enough that the broker may be closing it right now, as the
                # request goes out (seen: 'connection lost' on 3 of 24,000 requests of a
                # flows run whose phases left connections idle): close it ourselves. The
                # same for one opened ahead and unused for longer than FRESH_LIMIT_S.
                self._discard(conn)
            if len(self._all) + self._opening < self._max and self._opening < self._max_opening:
                self._opening += 1
                try:
                    return await self._connect()
                finally:
                    self._opening -= 1
                    self._hand_over(None)  # a waiter may open the next one
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            conn = await waiter
            if conn is not None:
                return conn

    def _release(self, conn: _Connection) -> None:
        if not self._hand_over(conn):
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)
        self._hand_over(None)

    def _hand_over(self, conn: _Connection | None) -> bool:
        """Give `conn` (or, with None, a turn to open one) to the longest waiter."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise HttpError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}", "cannot_connect"
            ) from None
        conn.idle_since = loop.time()  # a prewarmed one waits in the pool from now
        self._all.add(conn)
        return conn

    def _done_with(self, conn: _Connection) -> None:
        if conn.reusable and not conn.chunked:
            self._release(conn)
        else:
            self._discard(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()


class Streamed:
    """A response of HttpPool.stream: `status`, `body` (empty for a stream), `lines`."""

    __slots__ = ("_conn", "_pool", "body", "status", "streamed")

    def __init__(self, pool: HttpPool, conn: _Connection, status: int, body: bytes) -> None:
        self._pool, self._conn = pool, conn
        self.status, self.body = status, body
        self.streamed = conn.chunked or conn.ended  # ended: the whole stream came in one read

    async def next_line(self) -> bytes | None:
        """The next line of a streamed answer; None once it ended (or for a plain one)."""
        return await self._conn.next_line() if self.streamed else None

    def abort(self) -> None:
        """Close the connection (a stream not read to its end)."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            self._pool._discard(conn)

    async def close(self) -> None:
        """Read the stream to its end (the last chunk follows the last line at once), then
        give the connection back; on any error, or if cancelled, close it instead."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        try:
            while conn.chunked and await conn.next_line() is not None:
                pass
        except BaseException:
            self._pool._discard(conn)
            raise
        self._pool._done_with(conn)
