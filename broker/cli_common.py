"""What every `pushauth-broker` command shares that needs no Redis and no server: the
error it reports, its status lines, and its --redis-url, checked and shown without its
password. Light on purpose (neither redis-py nor aiohttp is imported here): a command
given bad arguments is refused before the modules it would run with are imported
(broker/command.py opens the Redis, broker/serve_cli.py runs the server)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from . import redis_cluster, sentinel

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
ALL_SCHEMES = (*PLAIN_SCHEMES, f"{sentinel.SCHEME}://", f"{redis_cluster.SCHEME}://")


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
            # redis-py's own reading of the URL, so that a URL passed here is one its
            # client takes; imported only now: it loads the whole of redis-py.
            from redis.asyncio.connection import parse_url

            if (problem := option_problem(parse_url(url))) is not None:
                raise ValueError(problem)
    except ValueError as exc:
        raise CliError(f"bad --redis-url {shown_url(url)!r}: {exc}") from None
    if url.startswith(PLAIN_SCHEMES[:2]) and not re.fullmatch(r"/?(\d+)?", urlsplit(url).path):
        raise CliError(f"bad --redis-url {shown_url(url)!r}: the path must be a database number, e.g. /0")


# Options redis-py reads from a URL's query that make its replies text, not the bytes
# every reader of our keys expects: a traceback at the first reply.
TEXT_REPLIES = frozenset({"decode_responses", "encoding", "encoding_errors"})


def option_problem(kwargs: dict[str, object]) -> str | None:
    """Why a `?name=value` of a plain Redis URL (redis-py's parse_url gave `kwargs`) cannot
    be used, or None. redis-py passes a name it does not know to its connection class as
    it is: a TypeError traceback when the first connection is made."""
    import inspect

    from redis.asyncio.connection import BlockingConnectionPool, Connection

    given = kwargs.get("connection_class")  # parse_url's class for rediss:// and unix://
    cls = given if isinstance(given, type) else Connection
    classes = (*cls.__mro__, *BlockingConnectionPool.__mro__)  # the pool's own: max_connections
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    known = {
        p.name
        for klass in classes
        for p in inspect.signature(klass.__init__).parameters.values()
        if p.kind in named and p.name not in ("self", "connection_class")
    }
    for name, value in kwargs.items():
        if name in TEXT_REPLIES:
            return f"the option {name!r} is not supported (pushauth reads replies as bytes): leave it out"
        if name not in known and not (name == "connection_class" and isinstance(value, type)):
            return f"unknown option {name!r} in the query"
    return None


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
