"""The node's pub/sub connection: the shard channels it listens on, held by reference.

Events about a user are published on that user's shard channel (keys.channel), and a
node listens only on the channels of the users it serves now (docs/scaling.md, "Event
routing"): those with a device connected here, and those an RP request here waits on.
The hub and the API `hold` a channel while they need it and `release` it after; the
first hold subscribes, the last release unsubscribes. Changes made in one event-loop
iteration go out in one write, one SSUBSCRIBE / SUNSUBSCRIBE per channel (Redis
Cluster wants the channels of one command in one slot).

A subscription counts only once Redis confirmed it: `ready(channel)` waits for that.
Whoever must not miss an event subscribes first, waits, and reads the stored state
after (the event listener's catch-up does the same for everything after a reconnect).
While the connection is down `ready` returns at once: the catch-up that follows the
resubscription covers whatever the caller reads meanwhile.

`Subscriber` is the interface (a Redis Cluster variant routes the channels to their
shards); `RawSubscriber` speaks RESP on a socket of its own (hiredis parses), on the
plain TCP / Unix socket connections that broker/redis_pipe.py pipelines, and
`ClientSubscriber` uses redis-py's PubSub (TLS, Sentinel).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError

from .redis_pipe import CONNECT_TIMEOUT_S, REPLY_TIMEOUT_S, RedisPipe


class Refused(ConnectionError):
    """Redis answered the subscription connection with an error (AUTH, SELECT or a
    subscription refused): its configuration, which trying again does not change."""


class Subscriber(Protocol):
    received: int  # messages received, all channels, since start

    def hold(self, channel: str) -> bool:
        """Listen on `channel` until released; True if the subscription is confirmed
        already (what is published from now on arrives)."""
        ...

    def release(self, channel: str) -> None: ...

    def epoch(self, channel: str) -> int | None:
        """A number for the current confirmed subscription to `channel`, new at every
        (re)subscription; None while not confirmed. Equal numbers at two moments: no
        message on the channel published between them was missed."""
        ...

    async def ready(self, channels: Iterable[str]) -> None:
        """Until these held channels are confirmed (at once while disconnected)."""
        ...

    def messages(self, on_subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        """Connect, subscribe every held channel, call `on_subscribed` once all are
        confirmed, then the data of every message until the connection breaks
        (ConnectionError)."""
        ...

    def channels(self) -> int: ...

    def close(self) -> None: ...


_SUB, _UNSUB = b"ssubscribe", b"sunsubscribe"
_PING_COMMAND = b"ping"  # ClientSubscriber's writer: the heartbeat's PING
_MESSAGES = (b"smessage", b"message")


class _Channels:
    """The bookkeeping both implementations share (no I/O of its own): how many hold
    each channel, which subscriptions Redis confirmed, which commands await a reply.
    Redis answers the commands of one connection in order, so the replies about one
    channel match its sent commands first to last."""

    def __init__(self) -> None:
        self.received = 0
        self._holds: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}  # channel -> epoch of its subscription
        self._epochs = 0
        self._sent: dict[str, deque[bytes]] = {}  # channel -> commands awaiting a reply
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._dirty: set[str] = set()
        self._live = False  # connected and subscribed in pub/sub mode
        self._flush_soon = False

    # -- what the hub and the API call --------------------------------------------

    def hold(self, channel: str) -> bool:
        n = self._holds.get(channel, 0)
        self._holds[channel] = n + 1
        if n == 0:
            self._changed(channel)
        return channel in self._confirmed and channel not in self._sent

    def epoch(self, channel: str) -> int | None:
        return self._confirmed.get(channel) if channel not in self._sent else None

    def release(self, channel: str) -> None:
        n = self._holds.get(channel, 0)
        if n <= 1:
            self._holds.pop(channel, None)
            self._changed(channel)
        else:
            self._holds[channel] = n - 1

    async def ready(self, channels: Iterable[str]) -> None:
        futs = []
        loop = asyncio.get_running_loop()
        for channel in channels:
            if not self._live or (channel in self._confirmed and channel not in self._sent):
                continue
            if channel not in self._holds:
                continue
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(channel, []).append(fut)
            futs.append(fut)
        if futs:
            await asyncio.gather(*futs)

    def channels(self) -> int:
        return len(self._holds)

    # -- the connection's side ---------------------------------------------------------

    def _changed(self, channel: str) -> None:
        if not self._live:
            return  # sent with all the others on (re)connect
        self._dirty.add(channel)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        dirty, self._dirty = self._dirty, set()
        if not self._live:
            return
        commands: list[tuple[bytes, str]] = []
        for channel in dirty:
            sent = self._sent.get(channel)
            subscribed = sent[-1] == _SUB if sent else channel in self._confirmed
            wanted = channel in self._holds
            if wanted != subscribed:
                command = _SUB if wanted else _UNSUB
                self._sent.setdefault(channel, deque()).append(command)
                commands.append((command, channel))
        if commands:
            self._write(commands)

    def _write(self, commands: list[tuple[bytes, str]]) -> None:
        raise NotImplementedError

    def _connected(self) -> list[tuple[bytes, str]]:
        """The subscriptions to send on a new connection: every held channel."""
        self._live = True
        self._confirmed.clear()
        self._sent = {channel: deque([_SUB]) for channel in self._holds}
        self._dirty.clear()
        return [(_SUB, channel) for channel in self._holds]

    def _disconnected(self) -> None:
        self._live = False
        self._confirmed.clear()
        self._sent.clear()
        for futs in self._waiters.values():  # see `ready`: the catch-up covers them
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()

    def _reply(self, reply: Any) -> bytes | None:
        """A reply or push from Redis: a message's data, or None (a confirmation)."""
        if isinstance(reply, hiredis.ReplyError | ResponseError):
            # A refused SSUBSCRIBE (a Redis without sharded pub/sub, a cluster node
            # that does not serve the slot) would break the matching of replies.
            raise Refused(f"Redis refused a subscription: {reply}")
        if type(reply) is not list or len(reply) != 3:
            raise ConnectionError(f"unexpected reply on the subscription: {reply!r:.80}")
        kind = reply[0]
        if kind in _MESSAGES:
            self.received += 1
            return reply[2]  # type: ignore[no-any-return]
        channel = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        sent = self._sent.get(channel)
        if not sent or sent[0] != kind:
            raise ConnectionError(f"unexpected {kind!r} for {channel}")
        sent.popleft()
        if sent:
            return None
        del self._sent[channel]
        if kind == _SUB:
            self._epochs += 1
            self._confirmed[channel] = self._epochs
        else:
            self._confirmed.pop(channel, None)
        for fut in self._waiters.pop(channel, ()):
            if not fut.done():
                fut.set_result(None)
        return None

    def _all_confirmed(self, channels: list[str]) -> bool:
        return not any(c in self._sent for c in channels)


# A subscription connection carries nothing while no one publishes, so silence alone says
# nothing: each one is PINGed this often, and one that answers none within
# REPLY_TIMEOUT_S is taken for lost, and subscribed anew. A Redis that hangs (SIGSTOP, a
# stalled host: a Sentinel or the cluster fails it over) or a network path that drops
# without a reset (a firewall's state lost) otherwise left the node listening on a
# connection that would never carry an event again, for good, and /healthz content.
SUBSCRIPTION_PING_S = 1.0
_PING = hiredis.pack_command(("PING",))
# PING's answer outside pub/sub mode (no channel held yet) and inside it (RESP2).
_PONGS = (b"PONG", [b"pong", b""])


class Pings:
    """When a subscription connection is PINGed, and when its silence means it is lost
    (no I/O: each subscriber sends and reads in its own way)."""

    def __init__(self) -> None:
        self.out_since: float | None = None  # a PING without its PONG yet

    def answered(self) -> None:
        self.out_since = None

    def tick(self, now: float, peer: str) -> bool:
        """Called every SUBSCRIPTION_PING_S: True when a PING is to be sent now (none is
        out); ConnectionError when the one out is overdue (drop the connection)."""
        if self.out_since is None:
            self.out_since = now
            return True
        if now - self.out_since > REPLY_TIMEOUT_S:
            raise ConnectionError(f"{peer} answered no PING within {REPLY_TIMEOUT_S:g} s (hung?)")
        return False


class HeartbeatSocket(asyncio.Protocol):
    """A subscription connection that `heartbeat` PINGs: a reply that is a PONG is
    taken by `_pong`, never handed on; a PING unanswered past REPLY_TIMEOUT_S aborts
    the connection, with `lost` saying why (the subscriber's `messages` then raises it,
    and the event listener subscribes anew and catches up)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: ConnectionError | None = None
        self.pings = Pings()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def peer(self) -> str:
        """Who answers, for the log: "Redis", "Redis Cluster node HOST:PORT"."""
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _pong(self, reply: Any) -> bool:
        """Whether `reply` is the heartbeat's answer (the server is alive)."""
        if reply in _PONGS:
            self.pings.answered()
            return True
        return False

    def heartbeat(self, now: float) -> None:
        if self.lost is not None or self.transport is None:
            return
        try:
            if self.pings.tick(now, self.peer()):
                self.transport.write(_PING)
        except ConnectionError as silent:
            self.lost = silent
            self.transport.abort()
            self._wake()


async def heartbeats(socks: Callable[[], Iterable[HeartbeatSocket]]) -> None:
    """Every SUBSCRIPTION_PING_S, the heartbeat of each socket `socks()` names now."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SUBSCRIPTION_PING_S)
        for sock in list(socks()):
            sock.heartbeat(loop.time())


class _Socket(HeartbeatSocket):
    """RESP replies of the subscription connection, parsed by hiredis, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: deque[Any] = deque()
        self.wakeup: asyncio.Future[None] | None = None

    def peer(self) -> str:
        return "Redis"

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self._pong(reply):
                self.replies.append(reply)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:  # the heartbeat may have said why first
            self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed by server'}")
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    async def wait(self) -> None:
        if self.lost is not None:
            raise self.lost
        if self.replies:
            return
        self.wakeup = asyncio.get_running_loop().create_future()
        await self.wakeup


def _pack(commands: list[tuple[bytes, str]]) -> bytes:
    return b"".join(hiredis.pack_command((command, channel)) for command, channel in commands)


class RawSubscriber(_Channels):
    """On a socket of its own to the server RedisPipe `pipe` talks to (hot path: at
    every sign-in a node may subscribe and unsubscribe a user's channel, and receive
    its events; redis-py's PubSub spends more per message than handling it costs)."""

    def __init__(self, pipe: RedisPipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._sock: _Socket | None = None
        self._early: deque[bytes] = deque()  # messages that came with the confirmations

    def _write(self, commands: list[tuple[bytes, str]]) -> None:
        sock = self._sock
        if sock is not None and sock.transport is not None and sock.lost is None:
            sock.transport.write(_pack(commands))

    async def messages(self, on_subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        pipe = self._pipe
        try:
            if pipe.path is not None:
                connecting = loop.create_unix_connection(_Socket, pipe.path)
            else:
                connecting = loop.create_connection(_Socket, pipe.host, pipe.port)
            transport, sock = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from None
        # From here: a server that hangs before it answers AUTH or confirms the
        # subscriptions is found out as well as one that hangs later.
        heartbeat = asyncio.ensure_future(heartbeats(lambda: (sock,)))
        try:
            for command in pipe.setup:  # AUTH: answered before pub/sub mode
                transport.write(hiredis.pack_command(tuple(command)))
                while not sock.replies:
                    await sock.wait()
                reply = sock.replies.popleft()
                if isinstance(reply, hiredis.ReplyError):
                    raise Refused(f"Redis refused {command[0]}: {reply}")
            self._sock = sock
            initial = self._connected()
            if initial:
                transport.write(_pack(initial))
            channels = [channel for _, channel in initial]
            while not self._all_confirmed(channels):
                await sock.wait()
                while sock.replies:
                    data = self._reply(sock.replies.popleft())
                    if data is not None:
                        self._early.append(data)
            on_subscribed()
            while True:
                while self._early:
                    yield self._early.popleft()
                while sock.replies:
                    data = self._reply(sock.replies.popleft())
                    if data is not None:
                        yield data
                await sock.wait()
        finally:
            heartbeat.cancel()
            self._sock = None
            self._disconnected()
            self._early.clear()
            transport.close()

    def close(self) -> None:
        sock = self._sock
        if sock is not None and sock.transport is not None:
            sock.transport.close()


class ClientSubscriber(_Channels):
    """On redis-py's PubSub (TLS, Sentinel: whatever `redis` connects with). One task
    reads; the flush's commands go out in order from one writer task."""

    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self._redis = redis
        self._writes: asyncio.Queue[list[tuple[bytes, str]]] | None = None

    def _write(self, commands: list[tuple[bytes, str]]) -> None:
        if self._writes is not None:
            self._writes.put_nowait(commands)

    @staticmethod
    async def _writer(pubsub: Any, queue: asyncio.Queue[list[tuple[bytes, str]]]) -> None:
        while True:
            for command, channel in await queue.get():
                if command == _SUB:
                    await pubsub.ssubscribe(channel)
                elif command == _UNSUB:
                    await pubsub.sunsubscribe(channel)
                else:
                    await pubsub.ping()

    @staticmethod
    async def _heartbeat(pings: Pings, queue: asyncio.Queue[list[tuple[bytes, str]]]) -> None:
        """PINGs through the writer; ends with ConnectionError when one goes unanswered
        (a hung master that Sentinel fails over: the node must follow it)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SUBSCRIPTION_PING_S)
            if pings.tick(loop.time(), "Redis"):
                queue.put_nowait([(_PING_COMMAND, "")])

    async def messages(self, on_subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        pubsub = self._redis.pubsub()
        tasks: list[asyncio.Task[None]] = []
        try:
            await pubsub.connect()
            queue: asyncio.Queue[list[tuple[bytes, str]]] = asyncio.Queue()
            self._writes = queue
            initial = self._connected()
            if initial:
                queue.put_nowait(initial)
            pings = Pings()
            tasks += [
                asyncio.create_task(self._writer(pubsub, queue)),
                asyncio.create_task(self._heartbeat(pings, queue)),
            ]
            channels = [channel for _, channel in initial]
            early: deque[bytes] = deque()
            while not self._all_confirmed(channels):
                data = self._reply(await self._read(pubsub, tasks, pings))
                if data is not None:
                    early.append(data)
            on_subscribed()
            while early:
                yield early.popleft()
            while True:
                data = self._reply(await self._read(pubsub, tasks, pings))
                if data is not None:
                    yield data
        finally:
            self._writes = None
            self._disconnected()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    @staticmethod
    async def _read(pubsub: Any, tasks: list[asyncio.Task[None]], pings: Pings) -> Any:
        while True:
            for task in tasks:
                if task.done():
                    task.result()  # a failed write, a PING unanswered: raise it
            # redis-py reconnects by itself and subscribes again: the confirmations it
            # gets then match no command sent here, and _reply ends this connection, so
            # the listener starts over and catches up (what was published between is lost).
            # Not blocking for good: the heartbeat's verdict is read at least this often.
            msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=SUBSCRIPTION_PING_S)
            if msg is None:
                continue
            kind = msg["type"]
            if kind in ("pong", b"pong"):
                pings.answered()
                continue
            return [kind.encode() if isinstance(kind, str) else kind, msg["channel"], msg["data"]]

    def close(self) -> None:
        pass


def for_store(redis: Redis, pipe: Any) -> Subscriber:
    """The subscriber for a store's pipe: RedisPipe, ClusterPipe (cluster_pipe.py), or none."""
    if pipe is None:
        return ClientSubscriber(redis)
    if isinstance(pipe, RedisPipe):
        return RawSubscriber(pipe)
    return pipe.subscriber()  # type: ignore[no-any-return]
