"""What every `pushauth-broker` command shares: the error it reports, its status
lines, and the Redis it works on (--redis-url, or the embedded Redis in --data-dir)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisClusterException

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
        raise CliError(f"bad --redis-url {url!r}: {exc}") from None


PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
ALL_SCHEMES = (*PLAIN_SCHEMES, f"{sentinel.SCHEME}://", f"{redis_cluster.SCHEME}://")


@contextlib.asynccontextmanager
async def open_redis(args: argparse.Namespace) -> AsyncIterator[aioredis.Redis]:
    embedded: EmbeddedRedis | None = None
    url = args.redis_url
    check_redis_url(url)
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
        try:
            client = sentinel.master_client(url)
        except ValueError as exc:
            raise CliError(f"bad --redis-url {url!r}: {exc}") from None
    elif redis_cluster.is_cluster_url(url):
        try:
            client = redis_cluster.cluster_client(url)
        except ValueError as exc:
            raise CliError(f"bad --redis-url {url!r}: {exc}") from None
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
            raise CliError(f"cannot reach Redis at {url}: {exc}") from None
        try:
            await layout.ensure(client)  # Redis 7+; a store of key layout 1 is moved once
        except layout.LayoutError as exc:
            raise CliError(str(exc)) from None
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
