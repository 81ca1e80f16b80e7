"""Failed attempts per client address (in memory): a sliding window.

Per-account lockouts live in the database (db.record_failure); this limiter stops
one address from trying many accounts, which per-account counting cannot see.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque

# An IPv6 client is counted by its /64: a subscriber is given at least that many
# addresses and may take a fresh one for every request (RFC 8981), so counted one by
# one, each guess could come from an address with no failures yet.
IPV6_CLIENT_PREFIX = 64


def address_key(address: str) -> str:
    """What one client's failures are counted under: the address, an IPv6 one's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class AttemptLimiter:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        now = time.monotonic()
        q = self._recent(key, now)
        if len(q) < self.limit:
            return 0.0
        return max(q[0] + self.window - now, 0.0)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        q = self._recent(key, now)
        q.append(now)
        self._failures[key] = q
        if len(self._failures) > 10_000:
            self.prune()

    def prune(self) -> None:
        """Forget addresses whose failures all left the window (bounds memory)."""
        now = time.monotonic()
        for key in list(self._failures):
            self._recent(key, now)
