"""The broker's log lines: text (the default, as always) or one JSON object per line
(`serve --log-format json`) for a log pipeline.

A JSON line holds `ts` (UTC, ISO 8601, milliseconds), `level`, `node`, `event` (the
message, as the text format would print it), `logger`, and `fields`: whatever a call
passed with `extra=` (empty for most lines), plus `exc` with the traceback, if any.
The same filters apply to both formats (PathFilter, which hides backup and user
ids), since they rewrite the record before any formatter sees it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")

# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "node": self.node,
            "event": record.getMessage(),
            "logger": record.name,
            "fields": {k: v for k, v in vars(record).items() if k not in _STANDARD},
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        # default=str: a field orjson cannot encode is shown, not lost with the line.
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:
            # A string with lone surrogates: a client's header bytes that are not UTF-8
            # (aiohttp decodes them with surrogateescape), in an access log line's
            # User-Agent, say. orjson refuses them, and the line was lost to a "Logging
            # error" traceback: a client could keep its requests out of the log.
            return orjson.dumps(_escaped(line), default=str).decode()


def _escaped(value: Any) -> Any:
    """`value` with every string's lone surrogates written as backslash escapes (as the
    text format's stderr writes them)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def configure(level: str, fmt: str, node: str, filters: list[logging.Filter]) -> None:
    """Root logging to stderr in `fmt` ("text" or "json"), with `filters` on its handler
    (so they apply to every logger's lines, aiohttp's access log included)."""
    # Here, not at the top: it imports redis-py, and `serve`'s options (broker/serve_options.py)
    # take FORMATS from this module before anything is run.
    from . import redis_refusals

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    repeated = [(name, TOPOLOGY_REFRESH_FAILED) for name in REDIS_CLUSTER_LOGGERS]
    repeated += [(redis_refusals.LOGGER, r.what) for r in redis_refusals.REFUSALS]
    repeated += STORE_UNAVAILABLE
    for name in {name for name, _ in repeated}:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
    for name, prefix in repeated:
        logging.getLogger(name).addFilter(RepeatFilter(prefix))


# redis-py's cluster client logs this at ERROR each time it fails to re-read the slot
# map, which during a whole-cluster outage is about once a second per worker process.
# The broker reports the outage its own way (503 /healthz, its warnings, the
# pushauth_redis_errors_total metric), so these lines would only page whoever alerts on
# ERROR over and over: RepeatFilter keeps the first at WARNING, then one a minute.
# So for a Redis that refuses writes (full, unable to persist: broker/redis_refusals.py),
# which fails every request until someone acts: one line a minute says so, of each kind.
REDIS_CLUSTER_LOGGERS = ("redis.asyncio.cluster", "redis.cluster")
TOPOLOGY_REFRESH_FAILED = "Topology refresh failed"
REPEAT_EVERY_S = 60.0
# Redis down or restarting: each request, device frame and expiry that needs it fails
# and used to log a line, so a 10 s outage at 2,000 sign-ins/s wrote 20,000 lines.
# The outage itself is told by the event listener (lost and regained), /healthz and
# pushauth_redis_errors_total; of these, the first line goes out, then one a minute
# with the count (a soak run, docs/operations.md "Long-running nodes").
STORE_UNAVAILABLE = [
    ("broker.problems", "store unavailable in "),
    ("broker.device_ws", "store unavailable while handling a device frame"),
    ("broker.app", "could not expire challenge"),
    ("broker.webpush", "web push: store unavailable"),
]


class RepeatFilter(logging.Filter):
    """On a logger: its lines that start with `prefix` go out at WARNING (whatever level
    they were logged at), at most one every `every_s` seconds; one that follows lines
    held back says how many. A held-back line is kept at DEBUG when the log level is
    DEBUG (each one, for whoever looks closely), else dropped."""

    def __init__(
        self, prefix: str, every_s: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.every_s = every_s
        self.clock = clock
        self.last: float | None = None  # when a line last went out at WARNING
        self.held = 0  # lines held back since

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = self.clock()
        since = now - self.last if self.last is not None else None
        if since is not None and since < self.every_s:
            self.held += 1
            _relevel(record, logging.DEBUG)
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        if self.held:
            record.msg = f"{record.msg} (and {self.held} more like it in the last {since:.0f} s)"
            record.repeats = self.held  # a field of JSON lines
        _relevel(record, logging.WARNING)
        self.last, self.held = now, 0
        return True


def _relevel(record: logging.LogRecord, level: int) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)


# What log lines must not carry of a request's path (access log, warnings that name
# it): a backup id (the key of a person's blob) is shortened to 4 characters, and a
# user id (the RP's name for a person, often an e-mail address) is left out: the
# operator's logs need neither, and erasing a user (DELETE /v1/users/{user}) cannot
# reach log files (docs/operations.md, "Personal data").
_BLOB_PATH = re.compile(r"(/v1/backups/)([A-Za-z0-9_-]{4})[A-Za-z0-9_%=-]*")
_USER_PATH = re.compile(r"(/v1/users/)[^/?#\s\"]+")
_MARKERS = ("/v1/backups/", "/v1/users/")


def _redacted(text: str) -> str:
    return _USER_PATH.sub(r"\1…", _BLOB_PATH.sub(r"\1\2…", text))


class PathFilter(logging.Filter):
    """Rewrites request paths in log lines as _BLOB_PATH and _USER_PATH say: enough to
    tell requests apart, not to name a person."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(m in message for m in _MARKERS):
            record.msg, record.args = _redacted(message), None
            # The access log's fields too (the request line), which JSON logs show.
            for key, value in list(vars(record).items()):
                if key != "msg" and isinstance(value, str) and any(m in value for m in _MARKERS):
                    setattr(record, key, _redacted(value))
        return True
