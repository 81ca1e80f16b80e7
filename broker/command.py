"""What every `pushauth-broker` command shares: the error it reports, its status
lines, and the Redis it works on (--redis-url, or the embedded Redis in --data-dir)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import RedisClusterException, ResponseError

from . import layout, redis_cluster, sentinel
from .embedded import EmbeddedRedis, EmbeddedRedisError

REDIS_CONNECTIONS = 64  # redis-py's pool; the hot path has its own pipelined connection
REDIS_POOL_WAIT_S = 10.0


class CliError(Exception):
    """Bad input or environment: one line on stderr, exit status 2."""


def say(line: str) -> None:
    """A status line on stdout. A worker's stdout is a pipe to its supervisor: if that
    died (and this worker is stopping because of it), the stop must go on regardless."""
    with contextlib.suppress(OSError):
        print(line, flush=True)


def check_redis_url(url: str | None) -> None:
    """--redis-url (or PUSHAUTH_REDIS_URL): a URL no client can use is refused before
    anything starts, with the reason, instead of as a traceback from inside redis-py (a
    bad scheme, port or IPv6 host)."""
    if url is None:
        return  # the embedded Redis
    try:
        if sentinel.is_sentinel_url(url):
            sentinel.parse(url)
        elif redis_cluster.is_cluster_url(url):
            redis_cluster.parse(url)
        elif not url.startswith(PLAIN_SCHEMES):
            raise ValueError(f"the scheme must be one of {', '.join(ALL_SCHEMES)}")
        else:
            parse_url(url)
    except ValueError as exc:
        raise CliError(f"bad --redis-url {shown_url(url)!r}: {exc}") from None
    if url.startswith(PLAIN_SCHEMES[:2]) and not re.fullmatch(r"/?(\d+)?", urlsplit(url).path):
        raise CliError(f"bad --redis-url {shown_url(url)!r}: the path must be a database number, e.g. /0")


def shown_url(url: str) -> str:
    """`url` fit for a message or a log line: its password (of every host of a
    Sentinel or Cluster URL: they share one user part) replaced by ***."""
    url = re.sub(r"^([a-z+]+://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)  # unix:///path?password=...


def store_line(url: str | None, data_dir: Path) -> str:
    """Which Redis a node keeps its state in, for its status lines: a node meant to share
    one Redis with others that got none (an unset PUSHAUTH_REDIS_URL) runs on an embedded
    Redis of its own, healthy to every check, and says so only here."""
    if url:
        return shown_url(url)
    return f"the embedded Redis in {data_dir} (no --redis-url: shared with no other node)"


async def _other_cluster_nodes(client: aioredis.Redis) -> bool:
    try:
        if not (await client.info("cluster")).get("cluster_enabled"):
            return False
        info = await client.execute_command("CLUSTER", "INFO")
    except ResponseError:  # a user whose ACL forbids INFO or CLUSTER: not known, go on
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    known = re.search(r"cluster_known_nodes:(\d+)", text)
    return known is None or int(known.group(1)) > 1


def _reason(exc: Exception) -> str:
    """What went wrong, in a line: redis-py's Sentinel error carries its client's repr."""
    if isinstance(exc, MasterNotFoundError):
        return str(exc).split(" : ")[0] + " (no Sentinel answered, or none knows that service)"
    return str(exc)


# How Redis says that a password is wrong, or that one is needed (RESP3's HELLO, which
# redis-py sends first, and AUTH); a cluster client passes them on only as text.
_WRONG_PASSWORD = ("wrongpass", "invalid username-password pair")
_NEEDS_PASSWORD = (
    "noauth",
    "hello must be called with the client already authenticated",
    "authentication required",
)


def _not_reached(url: str, exc: Exception) -> str:
    """The line for a Redis that did not answer PING: a refused or missing password is
    said as such ("cannot reach" sent operators looking for a network fault)."""
    reason, shown = _reason(exc), shown_url(url)
    text = reason.lower()
    if any(words in text for words in _WRONG_PASSWORD):
        return f"Redis at {shown} refused the user name or password given in --redis-url ({reason})"
    if any(words in text for words in _NEEDS_PASSWORD):
        scheme = url.partition("://")[0]
        return (
            f"Redis at {shown} needs a password: give it in --redis-url, as "
            f"{scheme}://:PASSWORD@HOST:PORT (or USER:PASSWORD@ with an ACL user)"
        )
    return f"cannot reach Redis at {shown}: {reason}"


PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
ALL_SCHEMES = (*PLAIN_SCHEMES, f"{sentinel.SCHEME}://", f"{redis_cluster.SCHEME}://")


@contextlib.asynccontextmanager
async def open_redis(args: argparse.Namespace) -> AsyncIterator[aioredis.Redis]:
    embedded: EmbeddedRedis | None = None
    url = args.redis_url
    check_redis_url(url)
    if url and getattr(args, "data_dir_given", False):
        # Said, not refused: the two often come from different places (a unit file's
        # environment, a flag typed on top); but whoever gave --data-dir expects the
        # state there, and it is not.
        print(
            "pushauth-broker: note: --data-dir is not used with --redis-url (no embedded Redis is started; "
            "the state is in that Redis)",
            file=sys.stderr,
        )
    if not url:
        embedded = EmbeddedRedis(args.data_dir)
        try:
            # In this (the main) thread, not a worker thread: the server's death signal
            # is tied to the thread that starts it (broker/lifeline.py). Nothing is
            # served yet, so blocking the loop while it starts costs nothing.
            url = embedded.start()
        except EmbeddedRedisError as exc:
            raise CliError(str(exc)) from None
    client: aioredis.Redis | aioredis.RedisCluster
    if sentinel.is_sentinel_url(url):
        client = sentinel.master_client(url)  # check_redis_url parsed it
    elif redis_cluster.is_cluster_url(url):
        client = redis_cluster.cluster_client(url)
    else:
        # Blocking: a burst of more concurrent commands than pooled connections waits for
        # a free one (the default pool raised MaxConnectionsError: 500s, dropped devices).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, health_check_interval=0, max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT_S
        )
        client = aioredis.Redis.from_pool(pool)
    try:
        try:
            await client.ping()
        except (aioredis.RedisError, RedisClusterException, OSError) as exc:
            raise CliError(_not_reached(url, exc)) from None
        # One node of a cluster behind a plain URL answers PING, then MOVED for most keys
        # (a cluster of one node serves every slot itself: that one works).
        if not isinstance(client, aioredis.RedisCluster) and await _other_cluster_nodes(client):
            raise CliError(
                f"Redis at {shown_url(url)} is a node of a Redis Cluster: give all of it as "
                "--redis-url redis+cluster://HOST:PORT,HOST:PORT"
            )
        try:
            await layout.ensure(client)  # Redis 7+; a store of key layout 1 is moved once
        except layout.LayoutError as exc:
            raise CliError(str(exc)) from None
        except ResponseError as exc:  # e.g. READONLY: a replica
            raise CliError(f"Redis at {shown_url(url)} refused: {exc}") from None
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
