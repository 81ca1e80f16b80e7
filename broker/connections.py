"""Open HTTP connections: how many one client address and the whole node may hold
(DESIGN invariant 13).

Why: the rate limits (broker/limits.py) count requests, the timeouts (http_guard.py)
end idle and slow connections, but neither bounds how many connections are open at
once. One address held 3,000 keep-alive connections, sending one request a minute;
about 1,000 idle ones used up a broker with the common 1,024 file limit, and then
neither devices nor Redis could get a socket.

What is counted: every connection from its accept until it closes, or until a device
WebSocket made of it proves a credential (broker/device_ws.py; 18,000 authenticated
device sockets per node is a design target), and again once every credential proven on
it was revoked (Slot.rejoin): a soak run left 164 such sockets open, outside every
limit, since a credential any user of an RP can get and have revoked would otherwise
take a socket out of the count for good. Not at the upgrade: anyone can open device
sockets and prove nothing on them for the authentication timeout, and the connect rate
alone (per address and per node) let 66 addresses hold 19,000 of them, every file
descriptor of a node with a 20,000 file limit, so that it accepted no one and could
not reconnect to Redis. A connection whose request carried a valid RP API key leaves
its address's count (an RP keeps a pool, and waits for results on many connections at
once; its key makes it accountable), but stays in the node's. Behind a trusted proxy
the peer is the proxy, which multiplexes many clients: its connections count only for
the node. Over a limit, the connection gets one response before any request is read, a
429 `too_many_connections` (per address) or a 503 `node_busy` (the node), both with
Retry-After, and is closed.

A full node makes room before it refuses: the newcomer takes the place of the oldest
unproven connection of the address that holds the most, when that address holds more
than the newcomer's would with it (fair shares, as a fair queue gives them). Why: the
per-address limit stops one address, but twenty addresses of 512 connections each filled
a node of 10,000, and then the load balancer's health checks were refused too and the
node was taken out of service; an RP's first connection and a device's too. Now those
holding one or two connections always get in while anyone holds many; the evicted
connection is one that proved nothing (no RP key, no device credential), closed at once
(a client may see any idle keep-alive connection closed, and retries). Only when every
address holds about as many as the newcomer would is it refused: equal shares are the
best a node can do alone against that many addresses.

The node's limit defaults to a quarter of the process's open-file limit, which the
broker first lifts to its hard limit (as Go programs and nginx's worker_rlimit_nofile
do): the rest stays for device sockets, Redis and the embedded Redis's pipes. And at
most MAX_NODE_CONNECTIONS: a connection whose client reads nothing holds its unsent
responses until the write timeout (about 58 KB each, measured with the OpenAPI
document), and a quarter of a 1,048,576 file limit would have let that grow to 15 GB.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from dataclasses import dataclass
from typing import Any

import orjson

from .bounds import CONNECTIONS_PER_IP
from .limits import address_key
from .problems import problem_document

log = logging.getLogger(__name__)

# The node's share of its open-file limit for HTTP connections (the rest: device
# sockets, Redis), and the least it is given whatever the limit.
NODE_SHARE = 4
MIN_NODE_CONNECTIONS = 64
# ... and the most (10,000 x ~58 KB of unread responses: well under a GB).
MAX_NODE_CONNECTIONS = 10_000
# A refused connection is kept open this long to read what the client sends, so that
# closing it does not reset the connection before the client has read the refusal
# (a close with unread bytes sends RST, which can discard the response in flight);
# at most this many at once, beyond that they are closed at once.
LINGER_S = 2.0
MAX_LINGERING = 64


def raise_nofile_limit() -> int:
    """Lift this process's open-files soft limit to the hard limit (children inherit
    it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # a system capping it below the hard limit
            return soft
    return want


def node_connections_default() -> int:
    """The node's default limit on open HTTP connections, from its file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return min(MAX_NODE_CONNECTIONS, max(MIN_NODE_CONNECTIONS, soft // NODE_SHARE))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    per_ip: int = CONNECTIONS_PER_IP  # 0: no limit per address
    node: int = 0  # 0: no limit for the node
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks (CIDR), as Limits'


# The group of the connections a trusted proxy forwards: one peer, many clients. Not
# limited per address, but still where a full node looks for room.
PROXIED = "proxied"


class Slot:
    """One counted connection. `release` ends it (idempotent): at close, when its
    device WebSocket proves a credential; `authenticated` (an RP's key) takes it out of
    its address's count. Until either, it may be evicted to make room (ConnectionGate).
    `rejoin` counts a released one again: a device socket whose every proven credential
    was revoked is accountable for nothing any more."""

    __slots__ = ("_gate", "address", "key", "released", "transport")

    def __init__(self, gate: ConnectionGate, key: str, transport: asyncio.BaseTransport) -> None:
        self._gate = gate
        self.address = key  # its address's group, for good
        self.key: str | None = key  # its address's group; None: proven, not evictable
        self.transport = transport
        self.released = False

    def authenticated(self) -> None:
        if self.key is not None and not self.released:
            self._gate._leave_group(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            if self.key is not None:
                self._gate._leave_group(self)
            self._gate.open -= 1

    def rejoin(self) -> None:
        """Counted again, for its address and the node, as a connection just admitted
        (evictable, the newest of its address). Never refused: it is open already, and
        its address's next connections are refused while it holds its share."""
        if self.released and not self.transport.is_closing():
            self.released = False
            self.key = self.address
            self._gate._join_group(self)
            self._gate.open += 1


class ConnectionGate:
    """The counts of one broker process's listening site."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in limits.trusted_proxies]
        # The unproven connections of each address (or PROXIED), oldest first; and the
        # addresses by how many they hold, to find the one holding most in O(1).
        self._groups: dict[str, dict[Slot, None]] = {}
        self._by_size: dict[int, dict[str, None]] = {}
        self._largest = 0
        self.open = 0
        self.refused = {"per_ip": 0, "node": 0}
        self.evicted = 0  # unproven connections closed to make room on a full node
        self.write_timeouts = 0  # connections dropped for reading no response
        self._lingering = 0

    def admit(self, transport: asyncio.BaseTransport) -> Slot | None:
        """A slot for this new connection, or None: then it was answered with a
        refusal and is being closed, and its protocol is no longer the caller."""
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        key = PROXIED if self._is_proxy(host) else address_key(host)
        limits = self.limits
        group = self._groups.get(key)
        count = len(group) if group is not None else 0
        if limits.per_ip and key != PROXIED and count >= limits.per_ip:
            self._refuse(transport, "per_ip", host)
            return None
        if limits.node and self.open >= limits.node and not self._make_room(count + 1):
            self._refuse(transport, "node", host)
            return None
        slot = Slot(self, key, transport)
        self._join_group(slot)
        self.open += 1
        return slot

    def _join_group(self, slot: Slot) -> None:
        key = slot.key
        assert key is not None
        group = self._groups.setdefault(key, {})
        group[slot] = None
        self._resize(key, len(group) - 1, len(group))

    def _make_room(self, newcomer: int) -> bool:
        """Evict the oldest unproven connection of the address holding most, if it holds
        more than the newcomer's address would with it (`newcomer`). True: room made."""
        if self._largest <= newcomer:
            return False
        key = next(iter(self._by_size[self._largest]))
        victim = next(iter(self._groups[key]))
        victim.release()  # counted out now; its protocol's release at close is a no-op
        victim.transport.abort()  # not close(): that waits to send what it may never read
        self.evicted += 1
        log.debug("closed a connection from %s to make room on a full node", key)
        return True

    def _leave_group(self, slot: Slot) -> None:
        key = slot.key
        assert key is not None
        slot.key = None
        group = self._groups[key]
        del group[slot]
        if not group:
            del self._groups[key]
        self._resize(key, len(group) + 1, len(group))

    def _resize(self, key: str, old: int, new: int) -> None:
        """Move `key` from the addresses holding `old` connections to those holding `new`."""
        if old:
            sized = self._by_size[old]
            del sized[key]
            if not sized:
                del self._by_size[old]
        if new:
            self._by_size.setdefault(new, {})[key] = None
        # Counts move by one: the largest is the new count, or the old one's neighbour.
        if new > self._largest or (old == self._largest and old not in self._by_size):
            self._largest = new

    def _is_proxy(self, host: str) -> bool:
        if not self._proxies:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def _refuse(self, transport: asyncio.BaseTransport, reason: str, host: str) -> None:
        self.refused[reason] += 1
        if reason == "node":
            status, code = 503, "node_busy"
            detail = f"this node has {self.limits.node} connections open; try again shortly or another node"
        else:
            status, code = 429, "too_many_connections"
            detail = f"{self.limits.per_ip} connections are open from this address; close some or reuse them"
        log.debug("refused a connection from %s: %s", host, code)
        self.linger(transport, refusal_response(status, code, detail))

    def linger(self, transport: asyncio.BaseTransport, response: bytes = b"") -> None:
        """End a connection the client may still be sending on: `response` (unless it
        was written already), the end of our side, then what comes is dropped (Refusal).
        The caller gave back the connection's slot, if it had one."""
        lingering = self._lingering < MAX_LINGERING
        refusal = Refusal(response, self if lingering else None)
        transport.set_protocol(refusal)
        refusal.connection_made(transport)  # type: ignore[arg-type]  # a stream transport


def refusal_response(status: int, code: str, detail: str) -> bytes:
    """The whole response refusing a connection: a problem, Retry-After, Connection: close."""
    body = orjson.dumps(problem_document(status, code, detail))
    phrase = b"Too Many Requests" if status == 429 else b"Service Unavailable"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (status, phrase, len(body), body)
    )


class Refusal(asyncio.Protocol):
    """A refused connection (or a request refused before its body was read): the
    response, the end of our side, then what the client still sends is read and
    dropped until it closes or LINGER_S passes."""

    __slots__ = ("_gate", "_response", "_timer", "transport")

    def __init__(self, response: bytes, gate: ConnectionGate | None) -> None:
        self._response = response
        self._gate = gate  # None: no lingering (too many already)
        self._timer: asyncio.TimerHandle | None = None
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self._response:
            transport.write(self._response)  # type: ignore[attr-defined]
        if self._gate is None or not transport.can_write_eof():  # type: ignore[attr-defined]
            transport.close()
            return
        self._gate._lingering += 1
        transport.write_eof()  # type: ignore[attr-defined]
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request we refused: dropped

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if self._gate is not None:
                self._gate._lingering -= 1


def rp_authenticated(request: Any) -> None:
    """`request` carried a valid RP API key: its connection leaves its address's count
    (served by the RP lane, the request holds the slot; by aiohttp, its protocol does)."""
    slot = getattr(request, "connection_slot", None)
    if slot is None:
        slot = getattr(getattr(request, "protocol", None), "connection_slot", None)
    if slot is not None:
        slot.authenticated()


def write_deadline(
    transport: asyncio.BaseTransport | None, seconds: float, gate: ConnectionGate | None
) -> asyncio.TimerHandle | None:
    """Arm a connection's write deadline, when its transport stops taking our bytes
    (pause_writing; the caller cancels the handle at resume_writing and at close): if
    the client reads nothing for `seconds`, the connection is dropped. None: no deadline."""
    if seconds <= 0 or transport is None:
        return None
    return asyncio.get_running_loop().call_later(seconds, _write_expired, transport, seconds, gate)


def _write_expired(transport: asyncio.BaseTransport, seconds: float, gate: ConnectionGate | None) -> None:
    if transport.is_closing():
        return
    peer = transport.get_extra_info("peername")
    log.debug("dropping a connection from %s: its client read no response for %gs", peer, seconds)
    if gate is not None:
        gate.write_timeouts += 1
    transport.abort()  # aborted, not closed: a close would wait to send what nobody reads
