"""Bounds the broker keeps and its command line states in `--help` (the defaults of
`serve`'s options, the limits they are checked against).

In a module of their own, which imports nothing, so that building and checking the
command line (every `pushauth-broker` run: `--help`, a refused `serve`, the `rp`
commands) does not import the server, the store, Redis or the frame types. Each value
is used from here by the module it bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RP_CACHE_S = 2.0  # a removed RP's key stops working within this time

# A connection on which no credential was authenticated and no enrollment completed
# within this time is closed (4408 auth_timeout); an `authenticate` whose credentials
# were all refused does not stop the clock. `serve --auth-timeout` sets it per node.
AUTH_TIMEOUT_S = 30.0

# How long the listener may be unsubscribed before /healthz says 503. Short blips
# (a Redis restart, a failover) heal by themselves and the catch-up covers them; a
# node that stays deaf longer should get no new traffic. `serve --events-grace`.
EVENTS_GRACE_S = 10.0

# A request head (request line and headers, at most ~8 KiB by aiohttp's limits) must
# arrive within this time of the connection opening or of its first byte. Real
# clients send it in one packet; 10 s allows for a very slow mobile link.
HEAD_TIMEOUT_S = 10.0
# A request body (at most 16 KiB of JSON, or a 256 KiB backup) must arrive within
# this time of the handler asking for it: 256 KiB at 20 KB/s takes 13 s.
BODY_TIMEOUT_S = 30.0
# An idle keep-alive connection is closed after this. Longer than the idle timeouts
# of the RP SDK's pool (15 s) and of common load balancers (60 s), so that it is the
# client that closes an idle connection, not the broker racing its next request.
KEEPALIVE_TIMEOUT_S = 75.0
# A response the client does not read (its window and our buffer full) must start
# moving again within this time, else the connection is dropped: a client that sends
# requests and never reads the answers held its connection and its handler for good.
# A 256 KiB backup read at 20 KB/s pauses for about 12 s.
WRITE_TIMEOUT_S = 30.0

# Open connections from one address: above an RP SDK's pool (aiohttp's default of 100
# a process) and an office of devices reconnecting at once after a restart (their
# connect-rate burst is 300), far below what hurts a node.
CONNECTIONS_PER_IP = 512

# Backups (broker/backups.py). Refreshed by every write (the agent writes on every
# change of its accounts). Was 400 days: anyone may store a blob here without an
# account, in the Redis that holds sign-in state, so abandoned copies (a lost phone, a
# replaced passphrase) and junk should not pile up against the store's cap for over a
# year; six months still outlives any phone upgrade.
BLOB_TTL_S = 180 * 24 * 3600
# New backup ids per client address per UTC day (overwriting one's own is free): a
# household makes a few; more is someone filling the store (429 quota_exceeded).
NEW_BLOBS_PER_IP_DAY = 20
# The whole store: at most this many bytes and blobs (507 backup_store_full). 256 MiB
# bounds what strangers can put next to sign-in state; size Redis above it.
BACKUP_STORE_MAX_BYTES = 256 * 1024 * 1024
BACKUP_STORE_MAX_BLOBS = 100_000

MAX_WORKERS = 64  # serve --workers


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_s` requests a second, `burst` at once; per_s == 0: no limit (the token
    buckets of broker/limits.py)."""

    per_s: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'RATE' or 'RATE:BURST' (burst defaults to 10 x RATE, at least 1); '0': none."""
        rate_s, _, burst_s = text.partition(":")
        per_s = float(rate_s)
        # Checked before the default burst is counted from it: an infinite RATE ('inf',
        # '1e400', or '1e308' times 10) was an OverflowError, a traceback for `serve`.
        if not (per_s >= 0 and math.isfinite(per_s * 10)):
            raise ValueError("RATE must be >= 0 and BURST >= 1")
        burst = int(burst_s) if burst_s else max(1, math.ceil(per_s * 10))
        if burst < 1:
            raise ValueError("RATE must be >= 0 and BURST >= 1")
        return cls(per_s, burst)

    def __str__(self) -> str:
        return f"{self.per_s:g}:{self.burst}"


# Device sockets before authentication: per address, a whole office behind one NAT
# reconnecting after a broker restart (burst), then 20 a second; per node, 18,000
# devices back within seconds of a restart (DESIGN performance targets).
DEVICE_CONNECTS_PER_IP = Rate(20, 300)
DEVICE_CONNECTS = Rate(3000, 20000)
# Backup reads, writes and deletes (/v1/backups/...): a device writes one on change.
BACKUP_REQUESTS_PER_IP = Rate(2, 60)
BACKUP_REQUESTS = Rate(200, 2000)
# Recoveries and recovery-key rotations: once per account per new device or passphrase.
RECOVERY_REQUESTS_PER_IP = Rate(1, 30)
RECOVERY_REQUESTS = Rate(50, 500)


@dataclass(frozen=True, slots=True)
class Limits:
    """The rates of broker/limits.py's token buckets (`serve --device-connects` ...)."""

    device_per_ip: Rate = DEVICE_CONNECTS_PER_IP
    device: Rate = DEVICE_CONNECTS
    backup_per_ip: Rate = BACKUP_REQUESTS_PER_IP
    backup: Rate = BACKUP_REQUESTS
    recovery_per_ip: Rate = RECOVERY_REQUESTS_PER_IP
    recovery: Rate = RECOVERY_REQUESTS
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks (CIDR)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """broker/http_guard.py's time limits on a connection (`serve --head-timeout` ...)."""

    head_s: float = HEAD_TIMEOUT_S
    body_s: float = BODY_TIMEOUT_S
    keepalive_s: float = KEEPALIVE_TIMEOUT_S
    write_s: float = WRITE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class BackupQuota:
    """What strangers may store in the backups (`serve --new-backups-per-ip` ...)."""

    new_per_ip_day: int = NEW_BLOBS_PER_IP_DAY
    max_bytes: int = BACKUP_STORE_MAX_BYTES
    max_blobs: int = BACKUP_STORE_MAX_BLOBS
    ttl_s: int = BLOB_TTL_S
