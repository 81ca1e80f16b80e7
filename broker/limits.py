"""Limits on what clients without an API key may take (DESIGN invariant 13).

Backups, recoveries, recovery-key rotations and device sockets before they prove a
credential are open to anyone: each costs a signature check, Redis work, a socket.
Each class of them has two token buckets: one per client address (one client cannot
starve the others) and one for the node (a crowd cannot starve sign-ins). Over
either, the answer is a 429 problem with Retry-After, before any work is done.

A bucket refills `rate` tokens a second up to `burst`; each request takes one. The
defaults sit far above what people and their devices do (a device connects once and
stays; a backup is written when accounts change) and far below what hurts a node.
Behind a load balancer every client has the balancer's address: name it with
`serve --trusted-proxy` and the address is read from its X-Forwarded-For instead.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from .bounds import Limits, Rate
from .http_head import DEVICE_PATH
from .problems import Handler, problem

# Addresses remembered at once per class; beyond it, the full (idle) buckets are forgotten.
MAX_TRACKED_ADDRESSES = 100_000
# An IPv6 client is counted by its /64: a subscriber is given at least that many
# addresses (RFC 6177) and its host picks new ones at will (privacy addresses, RFC 8981),
# so counted one by one, one client had 2^64 fresh buckets and daily backup quotas.
IPV6_CLIENT_PREFIX = 64


def address_key(address: str) -> str:
    """The key one client's requests are counted under: the address itself, an IPv6
    address's /64 network, an IPv4-mapped IPv6 address as the IPv4 address it maps."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a Unix socket's ""): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class TokenBuckets:
    """One token bucket per key (client address), created on first use, forgotten
    when full again (a full bucket is the same as none)."""

    def __init__(self, rate: Rate, *, max_keys: int = MAX_TRACKED_ADDRESSES) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for `key`: 0.0 if granted, else the seconds until one is there."""
        if self.rate.per_s <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - at) * self.rate.per_s)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate.per_s
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        rate, burst = self.rate.per_s, self.rate.burst
        self._buckets = {k: (t, a) for k, (t, a) in self._buckets.items() if t + (now - a) * rate < burst}
        if len(self._buckets) > self.max_keys:  # all busy: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[len(self._buckets) // 2 :]
            self._buckets = dict(keep)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class Limiter:
    limits: Limits
    _per_ip: dict[str, TokenBuckets] = field(default_factory=dict)
    _node: dict[str, TokenBuckets] = field(default_factory=dict)
    _proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lim = self.limits
        for name, per_ip, node in (
            ("device", lim.device_per_ip, lim.device),
            ("backup", lim.backup_per_ip, lim.backup),
            ("recovery", lim.recovery_per_ip, lim.recovery),
        ):
            self._per_ip[name] = TokenBuckets(per_ip)
            self._node[name] = TokenBuckets(node)
            self.refused[name] = 0
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in lim.trusted_proxies]

    def client_address(self, request: web.Request) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the
        last address that proxy put in X-Forwarded-For (the one it saw connecting;
        earlier entries are whatever the client claimed)."""
        peer = request.remote or ""
        if self._proxies and _in(peer, self._proxies):
            forwarded = request.headers.getall("X-Forwarded-For", [])
            hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
            if hops:
                return hops[-1]
        return peer

    def check(self, kind: str, request: web.Request) -> float:
        """0.0 if this request of class `kind` may go on, else seconds to wait."""
        wait = self._per_ip[kind].take(address_key(self.client_address(request)))
        if not wait:
            wait = self._node[kind].take("")
        if wait:
            self.refused[kind] += 1
        return wait


def _in(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


LIMITER = web.AppKey("limiter", Limiter)


def device_request_path(path: str) -> str | None:
    """The class of a device HTTP request's path, "backup" or "recovery" (open to anyone,
    signed by device keys: broker/backups.py, broker/recovery.py); None for other paths."""
    if path.startswith("/v1/backups/"):
        return "backup"
    if path == "/v1/recoveries" or (path.startswith("/v1/credentials/") and path.endswith("/recovery-key")):
        return "recovery"
    return None


def request_class(request: web.Request) -> str | None:
    """Which limited class an unauthenticated request belongs to, if any."""
    if request.path == DEVICE_PATH:
        return "device"
    kind = device_request_path(request.path)
    if kind == "recovery" and request.method != "POST":
        return None
    return kind


def refusal(kind: str, wait: float) -> tuple[int, str, str, dict[str, str]]:
    """The problem (status, code, detail, headers) refusing a request of class `kind`
    that may come again in `wait` seconds (aiohttp's requests and the RP lane's device
    upgrades alike)."""
    retry = max(1, math.ceil(wait))
    detail = f"too many {kind} requests from this address or to this node; try again in {retry} s"
    return 429, "rate_limited", detail, {"Retry-After": str(retry)}


def limit_middleware(classify: Callable[[web.Request], str | None] = request_class) -> Handler:
    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = classify(request)
        if kind is not None:
            wait = request.app[LIMITER].check(kind, request)
            if wait:
                return problem(*refusal(kind, wait))
        return await handler(request)

    return limits  # type: ignore[return-value]
