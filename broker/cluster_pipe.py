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
  master, with at most one WAIT in flight on it: the writes made meanwhile share the
  next one (_GroupCommit). docs/operations.md, "Redis Cluster", has the trade-off.
- A failover takes the cluster a few seconds (cluster-node-timeout plus an
  election): a command keeps being resent within `retry_budget_s`, then it fails
  with ConnectionError, as on a single Redis that went away.

Sharded pub/sub (SSUBSCRIBE, Redis >= 7) is ClusterSubscriber below.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from .redis_pipe import CONNECT_TIMEOUT_S, REPLY_TIMEOUT_S, RedisPipe, _Protocol
from .subscriber import HeartbeatSocket, _Channels, _pack, heartbeats

log = logging.getLogger(__name__)

Address = tuple[str, int]
Command = tuple[Any, ...]
OnReply = Callable[[Any], Awaitable[None]]

RETRY_BUDGET_S = 8.0  # a failover of a cluster with cluster-node-timeout ~5 s fits
MAX_REDIRECTS = 16  # MOVED/ASK hops of one command before it gives up (a map in flux)
BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.4)  # between resends while the cluster heals
DURABLE_REPLICAS = 1
DURABLE_WAIT_MS = 1000
UNREPLICATED_LOG_S = 60.0  # how often a master without a confirming replica is logged
REPLICA_RECHECK_S = 5.0  # meanwhile, how often the slot map is read to see a replica back

# A slot map read asks the next node when one has not answered within MAP_HEDGE_S (a
# live node answers in a millisecond; a hung one never does), and asks a node that
# failed or was passed over last for SLOW_FORGOTTEN_S: a hung master is failed over
# within seconds, and every read of the map that asked it first waited for it.
MAP_HEDGE_S = 0.5
SLOW_FORGOTTEN_S = 30.0

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
    name = command[0]
    name = name.upper().encode() if isinstance(name, str) else bytes(name).upper()
    if name in (b"EVALSHA", b"EVAL", b"FCALL", b"EVALSHA_RO", b"EVAL_RO"):
        if int(command[2]) == 0:
            return None
        return key_slot(_encode(command[3]))
    if len(command) < 2 or name in (b"PING", b"WAIT", b"SCRIPT", b"INFO", b"CLUSTER", b"ASKING", b"WAITAOF"):
        return None
    return key_slot(_encode(command[1]))


def live_replicas(cluster_nodes: str, default_host: str) -> dict[Address, int]:
    """Master address -> its replicas that are up (not flagged fail or fail?, link
    connected), from CLUSTER NODES. (CLUSTER SLOTS leaves out replicas that have not
    replicated a byte yet, as in a new cluster, so it cannot say this.)"""
    rows = [line.split() for line in cluster_nodes.splitlines() if line.strip()]
    where: dict[str, Address] = {}
    for row in rows:
        host, _, port = row[1].split("@")[0].rpartition(":")
        where[row[0]] = (host or default_host, int(port))
    count: dict[Address, int] = {}
    for row in rows:
        flags = set(row[2].split(","))
        if "master" in flags:
            count.setdefault(where[row[0]], 0)
        elif (
            row[3] in where and not flags & {"fail", "fail?", "handshake", "noaddr"} and row[7] == "connected"
        ):
            count[where[row[3]]] = count.get(where[row[3]], 0) + 1
    return count


def _resendable(text: str) -> bool:
    """An error that says the command did not run, and may succeed elsewhere or later."""
    return text.startswith(_NOT_RUN) or text.startswith(("MOVED ", "ASK "))


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
    commit: _GroupCommit | None = None  # the WAITs of the durable connection

    def close(self) -> None:
        self.pipe.close()
        self.durable.close()


class _GroupCommit:
    """The WAITs of one durable connection: a group commit.

    A WAIT blocks its connection in Redis until the replica confirms: commands written
    after it run only when it returns. One WAIT per batch of writes would chain their
    round trips one after the other, and throughput would fall to a batch per replica
    round trip (it collapsed at 1,500 sign-ins/s on a loaded machine). So at most one
    WAIT is in flight: the writes of one event-loop iteration share the WAIT written
    after them, and whatever is written while a WAIT is in flight (it runs as soon as
    that WAIT returns) shares the one WAIT written when the first one's answer comes."""

    def __init__(self, proto: _Protocol, timeout_ms: int) -> None:
        self.proto = proto
        self.timeout_ms = timeout_ms
        self.wanted = 1
        self.scheduled: asyncio.Future[Any] | None = None  # written at the end of this iteration
        self.in_flight = False
        self.next: asyncio.Future[Any] | None = None  # written when the one in flight returns

    def join(self, wanted: int) -> asyncio.Future[Any]:
        """The future of the WAIT that will cover a write just written."""
        self.wanted = wanted
        if self.scheduled is not None:
            return self.scheduled
        loop = asyncio.get_running_loop()
        if not self.in_flight:
            self.scheduled = loop.create_future()
            loop.call_soon(self._write_scheduled)
            return self.scheduled
        if self.next is None:
            self.next = loop.create_future()
        return self.next

    def _write_scheduled(self) -> None:
        group, self.scheduled = self.scheduled, None
        if group is not None:
            self._write(group)

    def _write(self, group: asyncio.Future[Any]) -> None:
        if self.proto.lost is not None:
            if not group.done():
                group.set_exception(self.proto.lost)
            self.in_flight = False
            return
        self.in_flight = True
        (fut,) = RedisPipe._send(self.proto, ("WAIT", self.wanted, self.timeout_ms))
        fut.add_done_callback(lambda f: self._returned(f, group))

    def _returned(self, fut: asyncio.Future[Any], group: asyncio.Future[Any]) -> None:
        self.in_flight = False
        if not group.done():
            _chain(fut, group)
        waiting, self.next = self.next, None
        if waiting is not None:
            self._write(waiting)


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
        self._replica_count: dict[Address, int] = {}  # live replicas of each master (the map's)
        self._warned: dict[Address, float] = {}
        self._behind: dict[Address, float] = {}  # master -> until when its writes do not wait
        self._refreshed_at = 0.0
        # Slot map reads: nodes that failed or were passed over (loop time), and what the
        # last read did with each node it asked ("answered", "passed over", "failed: ...").
        self._slow: dict[Address, float] = {}
        self.last_map_read: dict[Address, str] = {}

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
        wait_ms = int(getattr(redis, "pushauth_wait_ms", DURABLE_WAIT_MS))  # the URL's ?wait_ms
        return cls(seeds, auth=auth, durable_replicas=1 if wait_ms else 0, durable_wait_ms=wait_ms)

    # -- the slot map ----------------------------------------------------------------

    def _node(self, address: Address) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            node = _Node(
                address,
                RedisPipe(host=host, port=port, path=None, db=0, auth=self._auth),
                # Its WAIT blocks up to durable_wait_ms by design: not a hang.
                RedisPipe(
                    host=host,
                    port=port,
                    path=None,
                    db=0,
                    auth=self._auth,
                    reply_timeout=REPLY_TIMEOUT_S + self.durable_wait_ms / 1000,
                ),
            )
            self._nodes[address] = node
        return node

    async def refresh(self) -> None:
        """Read the slot map again (one read at a time; callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    def map_sources(self) -> list[Address]:
        """The nodes a slot map read asks, in order: the masters we know first (they have
        the freshest view of their own slots), then everything else we ever heard of;
        a node that failed or was slow in a recent read goes last (a hung master is
        failed over, and asking it first again would cost every read its wait)."""
        candidates = list(dict.fromkeys([*self._nodes, *self._known, *self._seeds]))
        now = asyncio.get_running_loop().time()
        for address, since in list(self._slow.items()):
            if now - since >= SLOW_FORGOTTEN_S:
                del self._slow[address]
        return sorted(candidates, key=lambda a: a in self._slow)  # stable: the order kept otherwise

    async def _refresh(self) -> None:
        # Asked one after another, but a node that has not answered within MAP_HEDGE_S
        # does not hold the read up: the next is asked meanwhile, and the first answer
        # wins. One that fails is followed by the next at once.
        sources = iter(self.map_sources())
        asking: dict[asyncio.Future[Any], Address] = {}
        self.last_map_read = read = {}
        errors: list[str] = []

        def ask_next() -> None:
            address = next(sources, None)
            if address is not None:
                command = self._node(address).pipe.execute_many([("CLUSTER", "SLOTS"), ("CLUSTER", "NODES")])
                asking[asyncio.ensure_future(asyncio.wait_for(command, CONNECT_TIMEOUT_S))] = address
                read[address] = "asked"

        loop = asyncio.get_running_loop()
        ask_next()
        try:
            while asking:
                done, _ = await asyncio.wait(asking, timeout=MAP_HEDGE_S, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    ask_next()
                    continue
                for fut in done:
                    address = asking.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        read[address] = "answered"
                        for slow in asking.values():  # passed over: asked last next time
                            read[slow] = "passed over"
                            self._slow[slow] = loop.time()
                        self._slow.pop(address, None)
                        self._apply_map(address, *fut.result())
                        return
                    if not isinstance(exc, (ConnectionError, ResponseError, TimeoutError, OSError)):
                        raise exc
                    read[address] = f"failed: {exc!r}"
                    self._slow[address] = loop.time()
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
                    ask_next()
        finally:
            for fut in asking:
                fut.cancel()
        raise ConnectionError("cannot read the Redis Cluster's slot map: " + "; ".join(errors))

    def _apply_map(self, address: Address, reply: Any, nodes: bytes) -> None:
        """The slot map `address` answered (CLUSTER SLOTS and CLUSTER NODES) in force."""
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        known: list[Address] = []
        for start, end, master, *replicas in reply:
            # An empty host means "the address you reached me at".
            owner = (master[0].decode() or address[0], int(master[1]))
            known += [owner, *((r[0].decode() or address[0], int(r[1])) for r in replicas)]
            for slot in range(int(start), int(end) + 1):
                slots[slot] = owner
        self._slots = slots
        self._replica_count = live_replicas(nodes.decode(), address[0])
        self._refreshed_at = asyncio.get_running_loop().time()
        self._known = list(dict.fromkeys(known)) or self._known
        # Forget nodes that own no slots and whose connections broke (a dead master).
        # A demoted master that lives keeps its connections: what is in flight there
        # gets its MOVED and goes on, and nothing new is sent to it.
        owners = set(slots)
        for address_, node in list(self._nodes.items()):
            if address_ not in owners and _broken(node.pipe) and _broken(node.durable):
                node.close()
                del self._nodes[address_]

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
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(_consume)

    # -- sending ------------------------------------------------------------------------

    def _send_durable(
        self,
        node: _Node,
        proto: _Protocol,
        wanted: int,
        command: Command | None,
        sent: asyncio.Future[Any] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """The command (or the reply future of one `sent` already), and the future of the
        WAIT for `wanted` replicas that covers it (_GroupCommit)."""
        futs = RedisPipe._send(proto, command) if command is not None else [sent]  # type: ignore[list-item]
        if node.commit is None or node.commit.proto is not proto:  # a new connection
            node.commit = _GroupCommit(proto, self.durable_wait_ms)
        return [*futs, node.commit.join(wanted)]

    async def _attempt(
        self, node: _Node, command: Command, *, asking: bool, durable: bool, early: OnReply | None = None
    ) -> Any:
        """Send once; ConnectionError before sending is turned into _NotSent."""
        # A master with no live replica (its own died, a failover made it master) has
        # nobody to wait for: a WAIT would only cost its timeout on every write. Nor has
        # one whose replica just let a WAIT time out (it is syncing, or far behind): for
        # a while its writes do not wait, then one WAIT tries again.
        if self.durable_replicas == 0:  # the operator chose so (?wait_ms=0)
            durable = False
        wanted = min(self.durable_replicas, self._replica_count.get(node.address, self.durable_replicas))
        if durable and self._behind.get(node.address, 0.0) > asyncio.get_running_loop().time():
            wanted = 0
        if durable and wanted == 0:
            self._unreplicated(node.address)
            durable = False
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
                reply_fut, wait_fut = self._send_durable(node, proto, wanted, None, futs[-1])
                return await self._durable_reply(node, wanted, reply_fut, wait_fut, early)
            return await futs[-1]
        if asking:
            asking_fut, *futs = RedisPipe._send(proto, ("ASKING",), command)
            asking_fut.add_done_callback(_consume)
            return await futs[0]
        if not durable:
            return await RedisPipe._send(proto, command)[0]
        reply_fut, wait_fut = self._send_durable(node, proto, wanted, command)
        return await self._durable_reply(node, wanted, reply_fut, wait_fut, early)

    async def _durable_reply(
        self,
        node: _Node,
        wanted: int,
        reply_fut: asyncio.Future[Any],
        wait_fut: asyncio.Future[Any],
        early: OnReply | None,
    ) -> Any:
        try:
            reply = await reply_fut
            if early is not None:  # while the WAIT is under way
                await early(reply)
        except BaseException:
            wait_fut.add_done_callback(_consume)  # shared: others may still await it
            raise
        try:
            acked = await wait_fut
        except ResponseError:
            acked = 0
        if int(acked) < wanted:
            # No replica confirmed in time (it is far behind, or died since the slot map
            # was read): the write is on the master only. Serving on is the lesser harm.
            self._behind[node.address] = asyncio.get_running_loop().time() + REPLICA_RECHECK_S
            self._unreplicated(node.address)
        return reply

    def _unreplicated(self, address: Address) -> None:
        """A durable write that is on the master only: counted, and logged now and then.
        The slot map is read again now and then meanwhile, to see a replica come back
        (or learn that the one it lists has died)."""
        self.unreplicated += 1
        loop = asyncio.get_running_loop()
        if loop.time() - self._refreshed_at >= REPLICA_RECHECK_S:
            self._refresh_soon()
        if loop.time() - self._warned.get(address, -UNREPLICATED_LOG_S) >= UNREPLICATED_LOG_S:
            self._warned[address] = loop.time()
            log.warning(
                "Redis Cluster master %s:%d has no replica that confirms writes within %d ms: "
                "its writes are on the master only (%d so far on all masters)",
                *address,
                self.durable_wait_ms,
                self.unreplicated,
            )

    def _ready(self, slot: int | None) -> _Protocol | None:
        """The live connection to the master of `slot`, if there is one already."""
        if slot is None:
            return None
        address = self._slots[slot]
        node = self._nodes.get(address) if address is not None else None
        proto = node.pipe._proto if node is not None else None
        return proto if proto is not None and proto.lost is None else None

    async def _run(
        self,
        command: Command,
        *,
        idempotent: bool,
        durable: bool = False,
        script: str | None = None,
        early: OnReply | None = None,
    ) -> Any:
        """One command, routed, redirected and resent until it has a reply or the
        retry budget is spent."""
        slot = command_slot(command)
        # The common case, in as few steps as RedisPipe.execute: a known master, connected.
        if not durable and (proto := self._ready(slot)) is not None:
            try:
                return await RedisPipe._send(proto, command)[0]
            except ResponseError as exc:  # NOSCRIPT too: the slow way loads it
                if not isinstance(exc, NoScriptError) and not _resendable(str(exc)):
                    raise
            except ConnectionError:
                if not idempotent:
                    raise  # it may have run: the caller must not assume either way
        return await self._resend(
            command, slot, idempotent=idempotent, durable=durable, script=script, early=early
        )

    async def _resend(
        self,
        command: Command,
        slot: int | None,
        *,
        idempotent: bool,
        durable: bool,
        script: str | None,
        early: OnReply | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget_s
        asking: Address | None = None
        hops = 0
        failures = 0
        while True:
            node = self._node(asking) if asking is not None else await self._owner(slot)
            try:
                return await self._attempt(
                    node, command, asking=asking is not None, durable=durable, early=early
                )
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
        # Fast path: connect to the masters needed (none to wait for once connected), then
        # send everything without another pause, so the commands for one master go out
        # in one write; whatever meets a redirection or a lost connection goes the slow
        # way, on its own.
        slots = [command_slot(c) for c in commands]
        for slot in slots:
            if slot is not None and self._ready(slot) is None:
                with contextlib.suppress(ConnectionError):
                    await (await self._owner(slot)).pipe._connection()
        futs: list[asyncio.Future[Any] | None] = []
        for command, slot in zip(commands, slots, strict=True):
            proto = self._ready(slot)
            futs.append(RedisPipe._send(proto, command)[0] if proto is not None else None)
        replies: list[Any] = []
        for command, slot, fut in zip(commands, slots, futs, strict=True):
            if fut is not None:
                try:
                    replies.append(await fut)
                    continue
                except NoScriptError:
                    raise
                except ResponseError as exc:
                    if not _resendable(str(exc)):
                        raise
                except ConnectionError:
                    pass
            replies.append(await self._resend(command, slot, idempotent=True, durable=False, script=None))
        return replies

    def script(self, source: str, *, idempotent: bool = True, durable: bool = False) -> str:
        """Register a script; `idempotent`: running it twice does no harm (resent after a
        lost connection); `durable`: its write is on a replica before it returns."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = _Script(source, idempotent, durable)
        return sha

    async def evalsha(
        self, sha: str, keys: list[Any], args: list[Any], *, on_reply: OnReply | None = None
    ) -> Any:
        """Run a registered script. `on_reply(reply)` is awaited once with its reply before
        this returns; for a durable script as soon as the reply is in, while the WAIT for
        the replica is still under way (what only this node's own devices hear of early:
        its own event, which other nodes have from the script's SPUBLISH already)."""
        info = self._scripts[sha]
        called = False

        async def once(reply: Any) -> None:
            nonlocal called
            if not called and on_reply is not None:
                called = True
                await on_reply(reply)

        reply = await self._run(
            ("EVALSHA", sha, len(keys), *keys, *args),
            idempotent=info.idempotent,
            durable=info.durable,
            script=sha,
            early=once if info.durable and on_reply is not None else None,
        )
        await once(reply)
        return reply

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

    def subscriber(self) -> ClusterSubscriber:
        return ClusterSubscriber(self)

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


class _ShardSocket(HeartbeatSocket):
    """One SSUBSCRIBE connection to one master; its replies go to the subscriber's one
    queue (the order across masters does not matter, within one it is kept). A master
    that hangs is failed over by the cluster, and the events of its slots are published
    at the new master from then on: its heartbeat (subscriber.py) ends the connection,
    and the event listener reads the slot map and subscribes anew."""

    def __init__(self, owner: ClusterSubscriber, address: Address) -> None:
        super().__init__()
        self.owner = owner
        self.address = address

    def peer(self) -> str:
        return f"Redis Cluster node {self.address[0]}:{self.address[1]}"

    def _wake(self) -> None:
        self.owner._wake()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self._pong(reply):
                self.owner._replies.append((self, reply))
        self.owner._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:  # the heartbeat may have said why first
            self.lost = ConnectionError(f"{self.peer()} lost: {exc or 'closed by server'}")
        self.owner._wake()

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.lost is None:
            self.transport.write(data)


class ClusterSubscriber(_Channels):
    """broker/subscriber.py's Subscriber on a Redis Cluster: each held channel is
    SSUBSCRIBEd at the master of its slot, one connection per master.

    Anything that says the slot map changed ends `messages` with ConnectionError, as a
    broken connection does on a single Redis: a master's connection lost (it died) or
    silent (a PING unanswered for REPLY_TIMEOUT_S: it hangs, and is failed over), a
    refused SSUBSCRIBE (MOVED), a `sunsubscribe` pushed by the server (the slot moved to
    another master, as in a manual failover). The event listener then calls `messages`
    again, which reads the slot map afresh and subscribes every held channel where it
    is now, and the node catches up from the state in Redis (broker/event_listener.py).
    While a dead master's replica has not taken over yet, `messages` keeps trying for
    the pipe's retry budget before it gives up."""

    def __init__(self, pipe: ClusterPipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._socks: dict[Address, _ShardSocket] = {}
        self._replies: deque[tuple[_ShardSocket, Any]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._broken: ConnectionError | None = None

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self) -> None:
        if not self._replies and self._failure() is None:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        if (failure := self._failure()) is not None and not self._replies:
            raise failure

    def _failure(self) -> ConnectionError | None:
        if self._broken is not None:
            return self._broken
        return next((s.lost for s in self._socks.values() if s.lost is not None), None)

    def _write(self, commands: list[tuple[bytes, str]]) -> None:
        by_sock: dict[_ShardSocket, list[tuple[bytes, str]]] = {}
        for command, channel in commands:
            owner = self._pipe._slots[key_slot(channel.encode())]
            sock = self._socks.get(owner) if owner is not None else None
            if sock is None:
                # A master this subscription has no connection to: the map changed.
                self._broken = ConnectionError(f"no connection to the master of {channel}")
                self._wake()
                return
            by_sock.setdefault(sock, []).append((command, channel))
        for sock, group in by_sock.items():
            sock.write(_pack(group))

    async def _connect(self, address: Address) -> _ShardSocket:
        loop = asyncio.get_running_loop()
        try:
            _, sock = await asyncio.wait_for(
                loop.create_connection(lambda: _ShardSocket(self, address), *address), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis at {address[0]}:{address[1]}: {exc}") from None
        if self._pipe._auth:  # answered before pub/sub mode, alone on the connection
            sock.write(hiredis.pack_command(("AUTH", *self._pipe._auth)))
            try:
                # A master that hangs now would hold this read, and with it the node's
                # event listener, for as long as it hangs (its heartbeat starts later).
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    while not any(s is sock for s, _ in self._replies):
                        if sock.lost is not None:
                            raise sock.lost
                        self._wakeup = loop.create_future()
                        await self._wakeup
            except TimeoutError:
                if sock.transport is not None:
                    sock.transport.abort()
                raise ConnectionError(
                    f"{sock.peer()} answered no AUTH within {REPLY_TIMEOUT_S:g} s (hung?)"
                ) from None
            ((_, reply),) = [r for r in self._replies if r[0] is sock]
            self._replies.remove((sock, reply))
            if isinstance(reply, hiredis.ReplyError):
                sock.transport.close()  # type: ignore[union-attr]
                raise ConnectionError(f"Redis refused AUTH: {reply}")
        return sock

    async def _connect_all(self) -> None:
        """A connection to every master of a fresh slot map; during a failover (a master
        that does not answer) again, a little later, within the retry budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._pipe.retry_budget_s
        failures = 0
        while True:
            try:
                await self._pipe.refresh()
                for address in await self._pipe.masters():
                    if address not in self._socks:
                        self._socks[address] = await self._connect(address)
                return
            except ConnectionError:
                failures += 1
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])

    async def messages(self, on_subscribed: Callable[[], None]) -> AsyncIterator[bytes]:
        heartbeat: asyncio.Task[None] | None = None
        try:
            self._broken = None
            await self._connect_all()
            # From here: a master that hangs before it confirms the subscriptions is
            # found out as well as one that hangs later.
            heartbeat = asyncio.ensure_future(heartbeats(lambda: self._socks.values()))
            initial = self._connected()
            if initial:
                self._write(initial)
            channels = [channel for _, channel in initial]
            early: deque[bytes] = deque()
            while not self._all_confirmed(channels):
                await self._wait()
                while self._replies:
                    data = self._reply(self._replies.popleft()[1])
                    if data is not None:
                        early.append(data)
            on_subscribed()
            while True:
                while early:
                    yield early.popleft()
                while self._replies:
                    data = self._reply(self._replies.popleft()[1])
                    if data is not None:
                        yield data
                await self._wait()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            socks, self._socks = self._socks, {}
            self._replies.clear()
            self._disconnected()
            for sock in socks.values():
                if sock.transport is not None:
                    sock.transport.close()

    def close(self) -> None:
        for sock in self._socks.values():
            if sock.transport is not None:
                sock.transport.close()
