"""Redis Cluster: the broker's state spread over several masters (each with replicas).

    redis+cluster://[[user]:password@]host:port[,host:port...][/][?wait_ms=MS]

The hosts are seed nodes: any reachable one tells the broker the whole cluster (its
slot map), so a few of them suffice and the others may be down at start. No database
number: a cluster has only database 0. The password and user are those of the
cluster's nodes (the same on every node). `wait_ms` bounds the WAIT that follows each
durable write (default 1000; 0: no WAIT, faster, but a master killed right after a
write may take it along: broker/cluster_pipe.py, docs/operations.md).

What runs where: the hot path (challenges, answers, device authentication, events)
goes over broker/cluster_pipe.py, one auto-pipelined connection per master and
sharded pub/sub (Redis >= 7); everything else (RP admin, policies, backups, scans)
over redis-py's asyncio RedisCluster built here. docs/operations.md, "Redis Cluster".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

SCHEME = "redis+cluster"
DEFAULT_PORT = 6379
SOCKET_TIMEOUT_S = 5.0
DEFAULT_WAIT_MS = 1000
MAX_WAIT_MS = 60_000


@dataclass(frozen=True, slots=True)
class ClusterURL:
    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    wait_ms: int = DEFAULT_WAIT_MS


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse(url: str) -> ClusterURL:
    """The parts of a redis+cluster:// URL; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    if parts.fragment:
        raise ValueError("a cluster URL takes no #fragment")
    wait_ms = DEFAULT_WAIT_MS
    for item in filter(None, parts.query.split("&")):
        name, _, value = item.partition("=")
        if name != "wait_ms":
            raise ValueError(f"unknown option {name!r} (the one option is wait_ms)")
        if not value.isdigit() or int(value) > MAX_WAIT_MS:
            raise ValueError(f"wait_ms must be 0 to {MAX_WAIT_MS} (milliseconds), not {value!r}")
        wait_ms = int(value)
    if parts.path.strip("/"):
        raise ValueError(f"a Redis Cluster has only database 0: no path after the hosts ({parts.path!r})")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    seeds: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"a cluster node address is missing its host: {item!r}")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"a cluster node port must be a number from 1 to 65535: {item!r}")
        seeds.append((host, int(port) if port else DEFAULT_PORT))
    return ClusterURL(
        seeds=tuple(dict.fromkeys(seeds)),
        username=unquote(username) or None,
        password=unquote(password) or None,
        wait_ms=wait_ms,
    )


def cluster_client(url: str) -> RedisCluster:
    """redis-py's asyncio cluster client for the URL (it follows the slot map)."""
    # Here, not at the top: parse() checks --redis-url before redis-py is loaded.
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    where = parse(url)
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in where.seeds],
        username=where.username,
        password=where.password,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=0,
    )
    # What the store's ClusterPipe takes from the URL besides what redis-py does.
    client.pushauth_wait_ms = where.wait_ms  # type: ignore[attr-defined]
    return client
