"""Reading pushauth-pam's and pushauth-radius's TOML files: every value checked for its
type, and every error one line that names the file and the key (`pam.toml: timeouts.push:
must be a positive number of seconds`), for a log or a terminal."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocol import numbers, text
from protocol.challenge import MAX_TTL_S, MIN_TTL_S

from ..errors import BrokerError

# What decides a value the file leaves out (`challenge.digits`, a push's lifetime): said
# in place of a number wherever the configuration is described (check-config, --help).
BY_POLICY = "the RP's policy at the broker"
# The longest value of a sign-in's context the broker takes (protocol.frames.CONTEXT).
CONTEXT_VALUE_MAX = 256


def policy_summary(digits: int | None, ttl: int | None) -> str:
    """The number's digits and the push's lifetime, as a configuration sets them: a value
    left out is not sent, so the RP's policy at the broker decides it
    (`pushauth-broker rp set RP --digits/--ttl/--profile`)."""
    shown_digits = BY_POLICY if digits is None else str(digits)
    shown_ttl = BY_POLICY if ttl is None else f"{ttl} s"
    return f"number: digits {shown_digits}; push valid: {shown_ttl}"


def refused_challenge(exc: BrokerError, *, digits_key: str, ttl_key: str) -> str:
    """Why every sign-in fails when the broker refuses a challenge as invalid (400): it is
    made of this configuration's values (most often digits or a lifetime the RP's policy
    does not allow), so the administrator is told which keys to compare with what. The
    keys and the broker's words kept short: an audit line's detail keeps its first 512 characters
    (docs/pam.md and docs/radius.md say what to do: `pushauth-broker rp show`)."""
    return f"{digits_key}/{ttl_key} vs RP policy: {exc.detail or exc.code}"


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

    def shown(self, table: dict[str, Any], key: str, default: str) -> str:
        """Text every push shows the device in its context (an app name): what the broker
        takes there, 1 to 256 plain characters, or it refuses every sign-in (400)."""
        value = self.str(table, key, default)
        if not 1 <= len(value) <= CONTEXT_VALUE_MAX:
            raise self.error(key, f"must be 1 to {CONTEXT_VALUE_MAX} characters (it is shown on the device)")
        if (bad := text.first_unsafe(value)) is not None:
            raise self.error(key, text.refusal(bad))
        return value

    def bool(self, table: dict[str, Any], key: str, default: bool) -> bool:
        return self._get(table, key, default, bool)

    def int(self, table: dict[str, Any], key: str, default: int) -> int:
        value = self._get(table, key, default, int)
        if value < 0:
            raise self.error(key, "must not be negative")
        return value

    def optional_int(
        self, table: dict[str, Any], key: str, low: int, high: int, unit: str = ""
    ) -> int | None:
        """An int in low..high, or None when the key is absent."""
        short = key.rsplit(".", 1)[-1]
        if short not in table:
            return None
        value = self.int(table, key, low)
        if not low <= value <= high:
            raise self.error(key, f"must be {low}..{high}{unit}")
        return value

    def digits(self, table: dict[str, Any], key: str) -> int | None:
        """The sign-in number's digits (2..8), or None: left to the RP's policy at the broker,
        which may require more (6 under the NIST SP 800-63B-4 profile)."""
        return self.optional_int(table, key, numbers.MIN_DIGITS, numbers.MAX_DIGITS)

    def ttl(self, table: dict[str, Any], key: str) -> int | None:
        """A push's lifetime in seconds (10..600), or None: left to the RP's policy at the
        broker (its `ttl`; the challenge's `expires_at` says what it was)."""
        return self.optional_int(table, key, MIN_TTL_S, MAX_TTL_S, " seconds")

    def positive(self, table: dict[str, Any], key: str, default: float) -> float:
        value = self._get(table, key, default, (int, float))
        if isinstance(value, bool) or not math.isfinite(value) or value <= 0:  # nan, inf: a hang
            raise self.error(key, "must be a positive number of seconds")
        return float(value)

    def http_url(self, table: dict[str, Any], key: str) -> str:
        """A required http:// or https:// URL with a host (the broker's)."""
        url = self.str(table, key, None)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when not a number in 0..65535
        except ValueError as exc:
            raise self.error(key, f"not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, "must be an http:// or https:// URL with a host")
        return url

    def refuse_unknown(
        self, tables: Mapping[str, frozenset[str]], arrays: Mapping[str, frozenset[str]] = {}
    ) -> None:
        """A key this program does not read is a typing mistake (`stroe = ...`) that would
        otherwise leave the default in force without a word: refused, with its name."""
        for top, value in self.data.items():
            if top in tables and isinstance(value, dict):
                unknown = sorted(set(value) - tables[top])
                where = [f"{top}.{k}" for k in unknown]
            elif top in arrays and isinstance(value, list):
                where = [
                    f"{top}[{i}].{k}"
                    for i, entry in enumerate(value)
                    if isinstance(entry, dict)
                    for k in sorted(set(entry) - arrays[top])
                ]
            elif top in tables or top in arrays:
                continue  # the wrong type is reported where the value is read
            else:
                where = [top]
            if where:
                raise self.error(where[0], "unknown key (misspelled?)")

    def path(self, table: dict[str, Any], key: str, default: str | None) -> Path:
        return self.base / Path(self.str(table, key, default))
