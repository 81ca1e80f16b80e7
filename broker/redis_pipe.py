"""One Redis connection shared by every request of this node, auto-pipelined.

redis-py's asyncio client takes a connection from its pool for each command and
spends far more CPU on that (pool lock, health checks, observability hooks,
pure-Python command packing) than Redis spends on the command: profiled at about
a third of the broker's CPU per sign-in. Here each command is written at once on
one connection and answered in order (Redis answers in order), so concurrent
requests pipeline themselves with no pool at all. Packing and parsing are done
by hiredis, in C. Used for the hot path only (store.py): challenges, answers,
device authentication; everything else stays on redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any
from urllib.parse import unquote

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

CONNECT_TIMEOUT_S = 5.0
# A connection with commands outstanding and no reply for this long is given up (its
# commands fail, the next one reconnects): a Redis that hangs (stopped, a stalled host,
# a network path that drops packets without a reset) must cost requests a prompt 503,
# not a wait as long as TCP's retransmissions. Each hot-path command is a short script
# (Redis answers it in well under a millisecond), so seconds of silence mean a hang.
REPLY_TIMEOUT_S = 5.0


class _Protocol(asyncio.Protocol):
    def __init__(self, reply_timeout: float = REPLY_TIMEOUT_S) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.BaseTransport | None = None
        self.lost: Exception | None = None
        self.pending: list[bytes] = []  # commands of this loop iteration, written together
        self.reply_timeout = reply_timeout
        # The loop's time of the last sign of life: a reply, or the first command sent
        # to an idle connection. Checked by `_watch` while commands are outstanding.
        self.progress_at = 0.0
        self.watching: asyncio.TimerHandle | None = None

    def expect(self, futs: list[asyncio.Future[Any]]) -> None:
        """Commands sent: their replies are awaited (and the connection watched)."""
        if self.lost is not None:
            # Lost between the caller getting this connection and sending (a server that
            # accepts and closes at once): nothing will answer, so fail them now.
            for fut in futs:
                fut.set_exception(self.lost)
            return
        if not self.waiters:
            self.progress_at = asyncio.get_running_loop().time()
        self.waiters.extend(futs)
        if self.watching is None:
            self.watching = asyncio.get_running_loop().call_later(self.reply_timeout / 5, self._watch)

    def _watch(self) -> None:
        self.watching = None
        if not self.waiters or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self.progress_at < self.reply_timeout:
            self.watching = loop.call_later(self.reply_timeout / 5, self._watch)
            return
        self.lost = ConnectionError(f"Redis did not answer for {self.reply_timeout:g} s")
        self.transport.abort()  # type: ignore[union-attr]  # connection_lost fails the waiters

    def write(self, data: bytes) -> None:
        # Commands issued by different requests in the same event-loop iteration
        # go out in one write (one syscall, one wake-up of Redis).
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        data, self.pending = b"".join(self.pending), []
        if self.lost is None and self.transport is not None:
            self.transport.write(data)  # type: ignore[attr-defined]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.progress_at = asyncio.get_running_loop().time()
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiters.popleft()
            if fut.done():  # its caller was cancelled; the reply still had to be read
                continue
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                fut.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watching is not None:
            self.watching.cancel()
            self.watching = None
        if self.lost is None:  # else given up by _watch, which said why
            self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed by server'}")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(self.lost)


class RedisPipe:
    def __init__(
        self,
        *,
        host: str | None,
        port: int,
        path: str | None,
        db: int,
        auth: list[str],
        reply_timeout: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.reply_timeout = reply_timeout  # longer where a command blocks on purpose (WAIT)
        # Sent first on every connection (broker/subscriber.py connects alike).
        self.setup = ([["AUTH", *auth]] if auth else []) + ([["SELECT", str(db)]] if db else [])
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._scripts: dict[str, str] = {}  # sha1 -> source

    @classmethod
    def for_client(cls, redis: Redis) -> RedisPipe | None:
        """A pipe to the server `redis` talks to, or None where it needs more than plain
        TCP or a Unix socket (TLS, Sentinel, Cluster): those keep using redis-py."""
        pool = getattr(redis, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", {})
        cls_ = getattr(pool, "connection_class", None)
        auth = [unquote(v) for v in (kwargs.get("username"), kwargs.get("password")) if v]
        if kwargs.get("password") and not kwargs.get("username"):
            auth = [unquote(kwargs["password"])]
        db = int(kwargs.get("db") or 0)
        if cls_ is Connection:
            return cls(
                host=kwargs.get("host", "localhost"),
                port=int(kwargs.get("port", 6379)),
                path=None,
                db=db,
                auth=auth,
            )
        if cls_ is UnixDomainSocketConnection:
            return cls(host=None, port=0, path=kwargs["path"], db=db, auth=auth)
        return None

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:  # one task connects; the others wait for it
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                proto = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ResponseError) as exc:
                err = ConnectionError(f"cannot connect to Redis: {exc}")
                self._connecting.set_exception(err)
                self._connecting.exception()  # retrieved: nobody else may be waiting
                self._connecting = None
                raise err from None
            self._proto = proto
            self._connecting.set_result(proto)
            self._connecting = None
            return proto
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.path is not None:
            _, proto = await loop.create_unix_connection(lambda: _Protocol(self.reply_timeout), self.path)
        else:
            _, proto = await loop.create_connection(
                lambda: _Protocol(self.reply_timeout), self.host, self.port
            )
        try:
            for command in self.setup:
                await self._send(proto, command)[0]
        except BaseException:
            proto.transport.close()  # type: ignore[union-attr]
            raise
        return proto

    @staticmethod
    def _send(proto: _Protocol, *commands: list[Any] | tuple[Any, ...]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        proto.expect(futs)
        proto.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        return futs

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (bytes, int, list, None) or ResponseError/ConnectionError."""
        return await self._send(await self._connection(), args)[0]

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands written together (one write, in order); their replies."""
        if not commands:
            return []
        futs = self._send(await self._connection(), *commands)
        return list(await asyncio.gather(*futs))

    def script(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    async def evalsha(self, sha: str, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            # First use on this server (or it was restarted / SCRIPT FLUSHed): load it once.
            await self.execute("SCRIPT", "LOAD", self._scripts[sha])
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
