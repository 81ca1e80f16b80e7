"""The broker's log lines: text (the default, as always) or one JSON object per line
(`serve --log-format json`) for a log pipeline.

A JSON line holds `ts` (UTC, ISO 8601, milliseconds), `level`, `node`, `event` (the
message, as the text format would print it), `logger`, and `fields`: whatever a call
passed with `extra=` (empty for most lines), plus `exc` with the traceback, if any.
The same filters apply to both formats (e.g. BlobIdFilter, which hides backup
ids), since they rewrite the record before any formatter sees it.
"""

from __future__ import annotations

import logging
import re
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
        return orjson.dumps(line, default=str).decode()


def configure(level: str, fmt: str, node: str, filters: list[logging.Filter]) -> None:
    """Root logging to stderr in `fmt` ("text" or "json"), with `filters` on its handler
    (so they apply to every logger's lines, aiohttp's access log included)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


_BLOB_PATH = re.compile(r"(/v1/backups/)([A-Za-z0-9_-]{4})[A-Za-z0-9_%=-]*")


class BlobIdFilter(logging.Filter):
    """Shortens backup ids in log lines (access log, errors) to their first 4 characters:
    enough to tell requests apart, not to name a person's blob in the store."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/v1/backups/" in message:
            record.msg, record.args = _BLOB_PATH.sub(r"\1\2…", message), None
            # The access log's fields too (the request line), which JSON logs show.
            for key, value in list(vars(record).items()):
                if key != "msg" and isinstance(value, str) and "/v1/backups/" in value:
                    setattr(record, key, _BLOB_PATH.sub(r"\1\2…", value))
        return True
