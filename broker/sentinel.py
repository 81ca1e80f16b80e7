"""Redis Sentinel: the broker finds the current Redis master through sentinels.

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]

The hosts are the sentinels (26379 by default), `service` the name they monitor the
master under (`sentinel monitor <service> ...`), the password and user those of the
master. After a failover redis-py asks the sentinels for the new master on its next
connection; a request that meets the failover gets 503 (docs/http-api.md) and a
device connection is closed with 1011, and both simply try again. Commands go
through redis-py here, not through the pipelined connection of redis_pipe.py, which
speaks only to a fixed address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse(url: str) -> SentinelURL:
    """The parts of a redis+sentinel:// URL; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ValueError(f"a sentinel address is missing its host: {item!r}")
        if port and not (port.isdigit() and 0 < int(port) < 65536):  # 99999: a traceback before
            raise ValueError(f"a sentinel port must be a number from 1 to 65535: {item!r}")
        sentinels.append((host.strip("[]"), int(port) if port else DEFAULT_PORT))
    if parts.query or parts.fragment:
        # Nothing reads them: a timeout or a password there would be ignored in silence.
        raise ValueError("it takes no ?options or #fragment (the user and password go before the hosts)")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("the path must be /service or /service/db, e.g. /mymaster/0")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"the database must be a number: {path[1]!r}")
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def master_client(url: str) -> Redis:
    """A client of the current master of the URL's service (it follows failovers)."""
    # Here, not at the top: parse() checks --redis-url before redis-py is loaded.
    from redis.asyncio.sentinel import Sentinel

    where = parse(url)
    sentinel = Sentinel(list(where.sentinels), socket_timeout=SOCKET_TIMEOUT_S)
    return sentinel.master_for(
        where.service,
        db=where.db,
        username=where.username,
        password=where.password,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=0,
    )
