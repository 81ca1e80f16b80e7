"""The Redis a `pushauth-broker` command works on (--redis-url, or the embedded Redis
in --data-dir), checked to be usable before the command goes on: reached, with the
password it needs, not one node of a cluster, of a key layout this broker knows.
What the commands share that needs no Redis is in broker/cli_common.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import RedisClusterException, ResponseError

from . import layout, redis_cluster, sentinel
from .cli_common import CliError, check_redis_url, shown_url
from .embedded import EmbeddedRedis, EmbeddedRedisError

REDIS_CONNECTIONS = 64  # redis-py's pool; the hot path has its own pipelined connection
REDIS_POOL_WAIT_S = 10.0


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
