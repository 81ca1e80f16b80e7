"""Reading pushauth-pam's and pushauth-radius's TOML files: every value checked for its
type, and every error one line that names the file and the key (`pam.toml: timeouts.push:
must be a positive number of seconds`), for a log or a terminal."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration cannot be used: one line that names the file and the key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


class TomlReader:
    """Typed values out of a parsed TOML document; `key` is the dotted name shown in errors,
    its last part the key in `table`; `default` None means required. Paths are relative to
    the file's folder (`base`)."""

    def __init__(self, data: dict[str, Any], base: Path, name: str) -> None:
        self.data, self.base, self.name = data, base, name

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.name}: {key}: {why}")

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return value

    def _get(self, table: dict[str, Any], key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        short = key.rsplit(".", 1)[-1]
        if short not in table:
            if default is None:
                raise self.error(key, "missing")
            return default
        value = table[short]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {getattr(kind, '__name__', 'a number')}")
        return value

    def str(self, table: dict[str, Any], key: str, default: str | None) -> str:
        return self._get(table, key, default, str)

    def bool(self, table: dict[str, Any], key: str, default: bool) -> bool:
        return self._get(table, key, default, bool)

    def int(self, table: dict[str, Any], key: str, default: int) -> int:
        value = self._get(table, key, default, int)
        if value < 0:
            raise self.error(key, "must not be negative")
        return value

    def positive(self, table: dict[str, Any], key: str, default: float) -> float:
        value = self._get(table, key, default, (int, float))
        if isinstance(value, bool) or value <= 0:
            raise self.error(key, "must be a positive number of seconds")
        return float(value)

    def path(self, table: dict[str, Any], key: str, default: str | None) -> Path:
        return self.base / Path(self.str(table, key, default))
