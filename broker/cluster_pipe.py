"""The broker's fast path on a Redis Cluster: redis_pipe.py's auto-pipelined
connection, one per master, with every command sent to the master of its key's slot.

The same interface as RedisPipe (execute, execute_many, script, evalsha) so the store
does not care which one it has, plus what only a cluster needs:

- Routing: a slot map (CLUSTER SLOTS) says which master serves each of the 16384
  slots; a command goes to the master of its first key's slot (every multi-key step
  of the broker keeps its keys in one slot: broker/keys.py). Concurrent commands for
  the same master share its connection's writes, as on a single Redis.
- Redirections: MOVED (the slot has a new owner: learn it, refresh the whole map in
  the background, resend), ASK (a slot being migrated: ASKING + resend there, once),
  TRYAGAIN / CLUSTERDOWN / LOADING / READONLY (a failover or migration under way:
  refresh, back off, resend). None of these ran the command, so resending is safe.
- A connection lost after a command was written may or may not have run it. It is
  resent only when running it twice does no harm: reads, and the scripts registered
  as idempotent (an answer, an expiry or a cancel finds the challenge already ended
  the second time and changes nothing). A challenge creation is not: it fails
  (ConnectionError, 503 at the API) and the RP creates a new one, which supersedes a
  first one that did get through.
- Durable writes: replication in a Redis Cluster is asynchronous, so a master killed
  right after a write can take it along, and its promoted replica never saw it. A
  script registered as durable is followed by `WAIT 1 <ms>` before its caller hears
  that it succeeded: the write is on a replica too, and the promoted replica has it
  (the election prefers the replica with the most replicated data). The WAIT blocks
  the connection it is sent on, so durable writes use a second connection per
  master, and every durable write of one event-loop iteration shares one WAIT (a
  group commit). docs/operations.md, "Redis Cluster", has the trade-off.
- A failover takes the cluster a few seconds (cluster-node-timeout plus an
  election): a command keeps being resent within `retry_budget_s`, then it fails
  with ConnectionError, as on a single Redis that went away.

Sharded pub/sub (SSUBSCRIBE, Redis >= 7) is ShardedSubscriber below.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from .redis_pipe import CONNECT_TIMEOUT_S, RedisPipe, _Protocol

log = logging.getLogger(__name__)

Address = tuple[str, int]
Command = tuple[Any, ...]

RETRY_BUDGET_S = 8.0  # a failover of a cluster with cluster-node-timeout ~5 s fits
MAX_REDIRECTS = 16  # MOVED/ASK hops of one command before it gives up (a map in flux)
BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.4)  # between resends while the cluster heals
DURABLE_REPLICAS = 1
DURABLE_WAIT_MS = 1000

# Errors that say the command did not run: resending it is always safe.
_NOT_RUN = ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN")


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def command_slot(command: Command) -> int | None:
    """The slot of a command's first key (None: no key; any master serves it)."""
    if command[0] == "MULTI":  # ClusterPipe.transaction: the slot of its first command
        return command_slot(command[1]) if len(command) > 1 else None
    name = _encode(command[0]).upper()
    if name in (b"EVALSHA", b"EVAL", b"FCALL", b"EVALSHA_RO", b"EVAL_RO"):
        if int(command[2]) == 0:
            return None
        return key_slot(_encode(command[3]))
    if len(command) < 2 or name in (b"PING", b"WAIT", b"SCRIPT", b"INFO", b"CLUSTER", b"ASKING", b"WAITAOF"):
        return None
    return key_slot(_encode(command[1]))


def _redirect(text: str) -> tuple[str, int, Address] | None:
    """("MOVED" | "ASK", slot, address) of a redirection error, else None."""
    kind, _, rest = text.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


@dataclass(slots=True)
class _Script:
    source: str
    idempotent: bool
    durable: bool


@dataclass(slots=True)
class _Node:
    """One master: its pipelined connection, and the one its durable writes take."""

    address: Address
    pipe: RedisPipe
    durable: RedisPipe
    # The WAIT that the durable writes of this event-loop iteration will share.
    wait: asyncio.Future[Any] | None = None
    scripts_loaded: set[str] = field(default_factory=set)

    def close(self) -> None:
        self.pipe.close()
        self.durable.close()


class ClusterPipe:
    def __init__(
        self,
        seeds: Iterable[Address],
        *,
        auth: list[str],
        retry_budget_s: float = RETRY_BUDGET_S,
        durable_replicas: int = DURABLE_REPLICAS,
        durable_wait_ms: int = DURABLE_WAIT_MS,
    ) -> None:
        self._seeds = list(dict.fromkeys(seeds))
        self._auth = auth
        self.retry_budget_s = retry_budget_s
        self.durable_replicas = durable_replicas
        self.durable_wait_ms = durable_wait_ms
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._known: list[Address] = list(self._seeds)  # every node the last map named
        self._nodes: dict[Address, _Node] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._scripts: dict[str, _Script] = {}
        # What happened, for tests and metrics: resends by reason, durable writes whose
        # WAIT timed out before a replica had them.
        self.redirects = 0
        self.resends = 0
        self.unreplicated = 0

    @classmethod
    def for_client(cls, redis: Any) -> ClusterPipe | None:
        """A pipe to the cluster that redis-py's RedisCluster `redis` talks to, or None
        for any other client (or a cluster over TLS: that stays on redis-py)."""
        if not isinstance(redis, RedisCluster):
            return None
        kwargs = redis.get_connection_kwargs()
        if kwargs.get("ssl") or "ssl" in str(kwargs.get("connection_class", "")).lower():
            return None
        username, password = kwargs.get("username"), kwargs.get("password")
        auth = ([username, password] if username else [password]) if password else []
        seeds = [(n.host, int(n.port)) for n in redis.nodes_manager.startup_nodes.values()]
        seeds += [(n.host, int(n.port)) for n in redis.get_nodes()]
        return cls(seeds, auth=auth)

    # -- the slot map ----------------------------------------------------------------

    def _node(self, address: Address) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            node = _Node(
                address,
                RedisPipe(host=host, port=port, path=None, db=0, auth=self._auth),
                RedisPipe(host=host, port=port, path=None, db=0, auth=self._auth),
            )
            self._nodes[address] = node
        return node

    async def refresh(self) -> None:
        """Read the slot map again (one read at a time; callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        # Ask the masters we know first (they have the freshest view of their own
        # slots), then everything else we ever heard of.
        candidates = list(dict.fromkeys([*self._nodes, *self._known, *self._seeds]))
        errors: list[str] = []
        for address in candidates:
            try:
                reply = await asyncio.wait_for(
                    self._node(address).pipe.execute("CLUSTER", "SLOTS"), CONNECT_TIMEOUT_S
                )
            except (ConnectionError, ResponseError, TimeoutError, OSError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            known: list[Address] = []
            for start, end, master, *replicas in reply:
                # An empty host means "the address you reached me at".
                owner = (master[0].decode() or address[0], int(master[1]))
                known += [owner, *((r[0].decode() or address[0], int(r[1])) for r in replicas)]
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = owner
            self._slots = slots
            self._known = list(dict.fromkeys(known)) or self._known
            # Forget nodes that own no slots and whose connections broke (a dead master).
            # A demoted master that lives keeps its connections: what is in flight there
            # gets its MOVED and goes on, and nothing new is sent to it.
            owners = set(slots)
            for address_, node in list(self._nodes.items()):
                if address_ not in owners and _broken(node.pipe) and _broken(node.durable):
                    node.close()
                    del self._nodes[address_]
            return
        raise ConnectionError("cannot read the Redis Cluster's slot map: " + "; ".join(errors))

    async def _owner(self, slot: int | None) -> _Node:
        if slot is None:
            slot = random.randrange(REDIS_CLUSTER_HASH_SLOTS)
        address = self._slots[slot]
        if address is None:
            await self.refresh()
            address = self._slots[slot]
            if address is None:
                raise ConnectionError(f"no Redis Cluster master serves slot {slot} (CLUSTERDOWN)")
        return self._node(address)

    def _moved(self, slot: int, address: Address) -> None:
        self._slots[slot] = address
        self.redirects += 1
        # One slot moved usually means many did (a failover): refresh the rest, in the background.
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(_consume)

    # -- sending ------------------------------------------------------------------------

    def _send_durable(
        self, node: _Node, proto: _Protocol, command: Command | None, sent: asyncio.Future[Any] | None = None
    ) -> list[asyncio.Future[Any]]:
        """The command (or the reply future of one `sent` already), and the WAIT it
        shares with the other durable writes sent to this master in this event-loop
        iteration (sent right after them)."""
        futs = RedisPipe._send(proto, command) if command is not None else [sent]  # type: ignore[list-item]
        if node.wait is None:
            loop = asyncio.get_running_loop()
            node.wait = loop.create_future()

            def send_wait(wait: asyncio.Future[Any] = node.wait) -> None:
                node.wait = None
                if proto.lost is not None:
                    wait.set_exception(proto.lost)
                    return
                (fut,) = RedisPipe._send(proto, ("WAIT", self.durable_replicas, self.durable_wait_ms))
                fut.add_done_callback(lambda f: wait.done() or _chain(f, wait))

            loop.call_soon(send_wait)
        return [*futs, node.wait]

    async def _attempt(self, node: _Node, command: Command, *, asking: bool, durable: bool) -> Any:
        """Send once; ConnectionError before sending is turned into _NotSent."""
        pipe = node.durable if durable else node.pipe
        try:
            proto = await pipe._connection()
        except ConnectionError as exc:
            raise _NotSent(str(exc)) from None
        if command[0] == "MULTI":  # a transaction: its EXEC's reply is the command's
            futs = RedisPipe._send(proto, ("MULTI",), *command[1:], ("EXEC",))
            for fut in futs[:-1]:
                fut.add_done_callback(_consume)  # +OK / +QUEUED; an error shows in EXEC's
            if durable:
                reply_fut, wait_fut = self._send_durable(node, proto, None, futs[-1])
                return await self._durable_reply(reply_fut, wait_fut)
            return await futs[-1]
        if asking:
            asking_fut, *futs = RedisPipe._send(proto, ("ASKING",), command)
            asking_fut.add_done_callback(_consume)
            return await futs[0]
        if not durable:
            return await RedisPipe._send(proto, command)[0]
        reply_fut, wait_fut = self._send_durable(node, proto, command)
        return await self._durable_reply(reply_fut, wait_fut)

    async def _durable_reply(self, reply_fut: asyncio.Future[Any], wait_fut: asyncio.Future[Any]) -> Any:
        try:
            reply = await reply_fut
        except BaseException:
            wait_fut.add_done_callback(_consume)  # shared: others may still await it
            raise
        try:
            acked = await wait_fut
        except ResponseError:
            acked = 0
        if int(acked) < self.durable_replicas:
            # No replica confirmed in time (one is down or far behind): the write is on
            # the master only. Serving on is the lesser harm; it is counted and logged.
            self.unreplicated += 1
            log.warning("a durable write reached no replica within %d ms", self.durable_wait_ms)
        return reply

    async def _run(
        self, command: Command, *, idempotent: bool, durable: bool = False, script: str | None = None
    ) -> Any:
        """One command, routed, redirected and resent until it has a reply or the
        retry budget is spent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget_s
        slot = command_slot(command)
        asking: Address | None = None
        hops = 0
        failures = 0
        while True:
            node = self._node(asking) if asking is not None else await self._owner(slot)
            try:
                return await self._attempt(node, command, asking=asking is not None, durable=durable)
            except NoScriptError:
                if script is None:
                    raise
                # First use on this master (a new one after a failover): load it once.
                await node.pipe.execute("SCRIPT", "LOAD", self._scripts[script].source)
                continue
            except ResponseError as exc:
                text = str(exc)
                where = _redirect(text)
                if where is not None:
                    hops += 1
                    if hops > MAX_REDIRECTS:
                        raise ConnectionError(f"too many cluster redirections: {text}") from None
                    kind, moved_slot, address = where
                    if kind == "MOVED":
                        self._moved(moved_slot, address)
                        asking = None
                    else:
                        asking = address
                    continue
                if not text.startswith(_NOT_RUN):
                    raise
                reason = text
            except _NotSent as exc:
                reason = str(exc)
            except ConnectionError as exc:
                if not idempotent:
                    raise  # it may have run: the caller must not assume either way
                reason = str(exc)
            # The cluster is changing under us (a failover): look again, a little later.
            asking = None
            failures += 1
            self.resends += 1
            if loop.time() >= deadline:
                raise ConnectionError(f"Redis Cluster unavailable: {reason}")
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
            with contextlib.suppress(ConnectionError):
                await self.refresh()

    # -- RedisPipe's interface -------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """One command (routed by its first key); resent after a lost connection (use it
        for reads and for writes that may safely run twice)."""
        return await self._run(args, idempotent=True)

    async def execute_many(self, commands: list[Command]) -> list[Any]:
        """Reads (or other commands safe to run twice), each to its slot's master: those
        for one master are written together; the replies in the commands' order."""
        if not commands:
            return []
        # Fast path: connect to the masters needed (at once when connected already),
        # then send everything without another pause, so the commands for one master go
        # out in one write; whatever meets a redirection or a lost connection goes the
        # slow way, on its own.
        targets: list[_Node | None] = []
        for command in commands:
            try:
                node = await self._owner(command_slot(command))
                await node.pipe._connection()
            except ConnectionError:
                node = None
            targets.append(node)
        futs: list[asyncio.Future[Any] | None] = []
        for command, node in zip(commands, targets, strict=True):
            proto = node.pipe._proto if node is not None else None
            if proto is None or proto.lost is not None:
                futs.append(None)
            else:
                futs.append(RedisPipe._send(proto, command)[0])
        replies: list[Any] = []
        for command, fut in zip(commands, futs, strict=True):
            if fut is not None:
                try:
                    replies.append(await fut)
                    continue
                except NoScriptError:
                    raise
                except ResponseError as exc:
                    if _redirect(str(exc)) is None and not str(exc).startswith(_NOT_RUN):
                        raise
                except ConnectionError:
                    pass
            replies.append(await self._run(command, idempotent=True))
        return replies

    def script(self, source: str, *, idempotent: bool = True, durable: bool = False) -> str:
        """Register a script; `idempotent`: running it twice does no harm (resent after a
        lost connection); `durable`: its write is on a replica before it returns."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = _Script(source, idempotent, durable)
        return sha

    async def evalsha(self, sha: str, keys: list[Any], args: list[Any]) -> Any:
        info = self._scripts[sha]
        return await self._run(
            ("EVALSHA", sha, len(keys), *keys, *args),
            idempotent=info.idempotent,
            durable=info.durable,
            script=sha,
        )

    async def durable(self, *args: Any, idempotent: bool = True) -> Any:
        """A write that is on a replica too before this returns (see the module doc)."""
        return await self._run(args, idempotent=idempotent, durable=True)

    async def transaction(self, commands: list[Command], *, durable: bool = False) -> list[Any]:
        """MULTI, the commands, EXEC: atomic on the master of their (one) slot; their
        replies. Written in one piece, so nothing of other callers comes in between.
        Resent after a lost connection, so only for writes that may run twice."""
        reply = await self._run(("MULTI", *commands), idempotent=True, durable=durable)
        if reply is None:
            raise ResponseError("the transaction was aborted")
        return list(reply)

    async def masters(self) -> list[Address]:
        """Every master now (for scans: each one holds part of the keys)."""
        if all(s is None for s in self._slots):
            await self.refresh()
        return list(dict.fromkeys(a for a in self._slots if a is not None))

    async def on_master(self, address: Address, *args: Any) -> Any:
        """A command for one given master (SCAN over its keys)."""
        return await self._node(address).pipe.execute(*args)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            node.close()
        self._nodes.clear()


def _broken(pipe: RedisPipe) -> bool:
    return pipe._proto is None or pipe._proto.lost is not None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a future's exception nobody else will (no "never retrieved" noise)."""
    if not fut.cancelled():
        fut.exception()


class _NotSent(Exception):
    """The command never left: no connection to the node (resending is safe)."""


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


# -- sharded pub/sub ----------------------------------------------------------------------


class _ShardConnection(asyncio.Protocol):
    """One SSUBSCRIBE connection to one master: smessages to the subscriber, the rest
    (confirmations, errors, unsolicited sunsubscribes) to it as well."""

    def __init__(self, owner: ShardedSubscriber, address: Address) -> None:
        self.owner = owner
        self.address = address
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.channels: set[bytes] = set()  # confirmed here
        self.confirming: dict[bytes, asyncio.Future[None]] = {}
        self.setup: asyncio.Future[Any] | None = None  # the AUTH reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if type(reply) is list and len(reply) == 3:
                kind = reply[0]
                if kind == b"smessage":
                    self.owner.on_message(reply[1], reply[2])
                    continue
                if kind == b"ssubscribe":
                    self.channels.add(reply[1])
                    fut = self.confirming.pop(reply[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                    continue
                if kind == b"sunsubscribe":
                    self.channels.discard(reply[1])
                    self.owner._unsubscribed(self, reply[1])
                    continue
            if self.setup is not None and not self.setup.done():
                if isinstance(reply, hiredis.ReplyError):
                    self.setup.set_exception(ResponseError(str(reply)))
                else:
                    self.setup.set_result(reply)
                continue
            if isinstance(reply, hiredis.ReplyError):
                # A refused SSUBSCRIBE (MOVED: the slot is elsewhere now). Every channel
                # still unconfirmed here is retried through a fresh slot map.
                for fut in self.confirming.values():
                    if not fut.done():
                        fut.set_exception(ResponseError(str(reply)))
                self.confirming.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for fut in self.confirming.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"Redis connection lost: {exc or 'closed by server'}"))
        self.confirming.clear()
        self.owner._lost(self)

    def send(self, *command: Any) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(hiredis.pack_command(command))


class ShardedSubscriber:
    """Sharded pub/sub on a cluster: each channel is SSUBSCRIBEd at the master of its
    slot (one connection per master, the channels of one slot in one command).

    When a master's connection breaks (it died: a failover) or the server drops a
    channel (`sunsubscribe` pushed when its slot moved to another master), the
    channels it held are subscribed again wherever their slots are now, and then
    `on_resubscribed` is told which ones: what was published meanwhile is gone, so
    the owner catches up from the state in Redis (broker/event_listener.py).
    """

    def __init__(
        self,
        pipe: ClusterPipe,
        on_message: Callable[[bytes, bytes], None],
        on_resubscribed: Callable[[set[bytes]], Awaitable[None] | None],
    ) -> None:
        self.pipe = pipe
        self.on_message = on_message
        self.on_resubscribed = on_resubscribed
        self.wanted: set[bytes] = set()
        self._conns: dict[Address, _ShardConnection] = {}
        self._orphans: set[bytes] = set()
        self._repairing: asyncio.Task[None] | None = None
        self.resubscriptions = 0  # channels subscribed again after a failover or a move
        self.closed = False

    async def _connection(self, address: Address) -> _ShardConnection:
        conn = self._conns.get(address)
        if conn is not None and not conn.lost:
            return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _ShardConnection(self, address), *address), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis at {address[0]}:{address[1]}: {exc}") from None
        if self.pipe._auth:
            conn.setup = loop.create_future()
            conn.send("AUTH", *self.pipe._auth)
            try:
                await asyncio.wait_for(conn.setup, CONNECT_TIMEOUT_S)
            except BaseException:
                conn.transport.close()  # type: ignore[union-attr]
                raise
        self._conns[address] = conn
        return conn

    async def _subscribe_once(self, channels: Iterable[bytes]) -> set[bytes]:
        """SSUBSCRIBE where the slot map says; the channels that failed."""
        by_slot: dict[int, list[bytes]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel), []).append(channel)
        waits: list[tuple[bytes, asyncio.Future[None]]] = []
        failed: set[bytes] = set()
        loop = asyncio.get_running_loop()
        for slot, group in by_slot.items():
            try:
                node = await self.pipe._owner(slot)
                conn = await self._connection(node.address)
            except (ConnectionError, ResponseError):
                failed.update(group)
                continue
            todo = [c for c in group if c not in conn.channels]
            for channel in todo:
                fut = conn.confirming.get(channel) or loop.create_future()
                conn.confirming[channel] = fut
                waits.append((channel, fut))
            if todo:
                conn.send("SSUBSCRIBE", *todo)
        for channel, fut in waits:
            try:
                await asyncio.wait_for(asyncio.shield(fut), CONNECT_TIMEOUT_S)
            except (ConnectionError, ResponseError, TimeoutError):
                failed.add(channel)
        return failed

    async def subscribe(self, *channels: str | bytes) -> None:
        """Listen on these channels (confirmed by their masters when this returns;
        ConnectionError if the cluster could not be reached within the retry budget)."""
        wanted = {_encode(c) for c in channels}
        self.wanted |= wanted
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pipe.retry_budget_s
        failures = 0
        while wanted := await self._subscribe_once(wanted) & self.wanted:
            failures += 1
            if loop.time() >= deadline:
                self._orphan(wanted)  # keep trying in the background
                raise ConnectionError(f"cannot subscribe to {len(wanted)} sharded channel(s)")
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
            with contextlib.suppress(ConnectionError):
                await self.pipe.refresh()

    async def unsubscribe(self, *channels: str | bytes) -> None:
        gone = {_encode(c) for c in channels}
        self.wanted -= gone
        self._orphans -= gone
        by_conn: dict[_ShardConnection, list[bytes]] = {}
        for conn in self._conns.values():
            for channel in gone & (conn.channels | set(conn.confirming)):
                by_conn.setdefault(conn, []).append(channel)
        for conn, group in by_conn.items():
            by_slot: dict[int, list[bytes]] = {}
            for channel in group:
                conn.channels.discard(channel)
                by_slot.setdefault(key_slot(channel), []).append(channel)
            for slot_group in by_slot.values():
                conn.send("SUNSUBSCRIBE", *slot_group)

    # -- repair ---------------------------------------------------------------------

    def _lost(self, conn: _ShardConnection) -> None:
        if self._conns.get(conn.address) is conn:
            del self._conns[conn.address]
        self._orphan(conn.channels & self.wanted)

    def _unsubscribed(self, conn: _ShardConnection, channel: bytes) -> None:
        if channel in self.wanted:  # not our own SUNSUBSCRIBE: the server dropped it
            self._orphan({channel})

    def _orphan(self, channels: set[bytes]) -> None:
        if not channels or self.closed:
            return
        self._orphans |= channels
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.get_running_loop().create_task(self._repair())

    async def _repair(self) -> None:
        failures = 0
        while self._orphans and not self.closed:
            batch, self._orphans = self._orphans & self.wanted, set()
            with contextlib.suppress(ConnectionError):
                await self.pipe.refresh()
            failed = await self._subscribe_once(batch) & self.wanted
            done = batch - failed
            self._orphans |= failed
            if done:
                self.resubscriptions += len(done)
                try:
                    result = self.on_resubscribed(done)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("catching up after a resubscription failed")
            if failed:
                failures += 1
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
            else:
                failures = 0

    @property
    def healthy(self) -> bool:
        """Every wanted channel is confirmed by a live connection."""
        held: set[bytes] = set()
        for conn in self._conns.values():
            if not conn.lost:
                held |= conn.channels
        return self.wanted <= held

    async def close(self) -> None:
        self.closed = True
        if self._repairing is not None:
            self._repairing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repairing
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
