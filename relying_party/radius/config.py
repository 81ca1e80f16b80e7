"""The TOML configuration file of pushauth-radius (documented in docs/radius.md).

Every value is checked here, once, with a message that names the key; the rest of
the server only sees the typed Config.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host.config import ConfigError as ConfigError  # raised by parse and load
from ..host.config import TomlReader, read_toml

API_KEY_ENV = "PUSHAUTH_RADIUS_API_KEY"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    """A RADIUS client (a VPN gateway, a NAS) allowed to ask, and its shared secret."""

    name: str
    network: Network
    secret: bytes
    push_only: bool = False  # it cannot show an Access-Challenge (see docs/radius.md)


@dataclass(frozen=True, slots=True)
class Upstream:
    """The RADIUS server that checks passwords in mode "upstream"."""

    host: str
    port: int
    secret: bytes
    timeout: float = 5.0
    retries: int = 2


# RFC 2865 section 3: the shared secret SHOULD be at least 16 octets (and is all that
# hides a password in User-Password and signs every answer); docs/radius.md asks for 32+.
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class Config:
    broker_url: str
    api_key: str
    clients: tuple[Client, ...]
    listen: str = "0.0.0.0"
    port: int = 1812
    redis_url: str = "redis://127.0.0.1:6379/0"
    store: Path = Path("/var/lib/pushauth-radius/users.db")
    app_name: str = "VPN"
    broker_timeout: float = 10.0
    # None: not sent, the RP's policy at the broker decides (docs/radius.md, "The
    # number's digits and the push's lifetime").
    digits: int | None = None
    ttl: int | None = None
    answer_wait: float = 25.0
    first_factor: str = "gateway"  # or "upstream"
    upstream: Upstream | None = None
    broker_down: str = "reject"  # or "accept" (fail-open)
    strip_realm: bool = True
    lowercase: bool = True
    user_rate: int = 10
    rate_window: int = 60
    duplicate_window: float = 30.0
    replay_window: int = 600
    audit_syslog: bool = False

    def client_for(self, address: str) -> Client | None:
        """The most specific client whose network holds `address`, or None (unknown: drop)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        best: Client | None = None
        for client in self.clients:
            inside = ip.version == client.network.version and ip in client.network
            if inside and (best is None or client.network.prefixlen > best.network.prefixlen):
                best = client
        return best


# Every key the file may hold, by table (docs/radius.md): another one is refused by name.
KEYS = {
    "broker": frozenset({"url", "api_key_file", "when_unreachable", "timeout"}),
    "radius": frozenset({"listen", "port", "redis_url", "store", "app_name", "syslog"}),
    "challenge": frozenset({"digits", "ttl", "answer_wait"}),
    "first_factor": frozenset({"mode", "host", "port", "secret", "secret_file", "timeout", "retries"}),
    "users": frozenset({"strip_realm", "lowercase"}),
    "limits": frozenset({"user_requests", "user_window", "duplicate_window", "replay_window"}),
}
CLIENT_KEYS = frozenset({"name", "address", "secret", "secret_file", "push_only"})


def load(path: Path) -> Config:
    return parse(read_toml(path), base=path.parent, name=str(path))


def parse(data: dict[str, Any], *, base: Path, name: str = "config") -> Config:
    r = _Reader(data, base, name)
    r.refuse_unknown(KEYS, {"client": CLIENT_KEYS})
    broker = r.table("broker")
    radius = r.table("radius")
    challenge = r.table("challenge")
    first = r.table("first_factor")
    users = r.table("users")
    limits = r.table("limits")

    mode = r.str(first, "first_factor.mode", "gateway")
    if mode not in ("gateway", "upstream"):
        raise r.error("first_factor.mode", 'must be "gateway" or "upstream"')
    upstream = None
    if mode == "upstream":
        upstream = Upstream(
            host=r.str(first, "first_factor.host", None),
            port=r.port(first, "first_factor.port", 1812),
            secret=r.secret(first, "first_factor"),
            timeout=r.positive(first, "first_factor.timeout", 5.0),
            retries=r.int(first, "first_factor.retries", 2),
        )
    broker_down = r.str(broker, "broker.when_unreachable", "reject")
    if broker_down not in ("reject", "accept"):
        raise r.error("broker.when_unreachable", 'must be "reject" (fail closed) or "accept" (fail open)')
    url = r.http_url(broker, "broker.url")

    clients = []
    raw_clients = data.get("client", [])
    if not isinstance(raw_clients, list) or not raw_clients:
        raise r.error("client", "add at least one [[client]] (a VPN gateway: name, address, secret)")
    for i, raw in enumerate(raw_clients):
        where = f"client[{i}]"
        if not isinstance(raw, dict):
            raise r.error(where, "must be a table")
        try:
            network = ipaddress.ip_network(r.str(raw, f"{where}.address", None), strict=False)
        except ValueError as exc:
            raise r.error(f"{where}.address", str(exc)) from None
        clients.append(
            Client(
                # Every push from this client shows its name (the context's "client"): one
                # the broker refuses (a control character, over 256) failed every sign-in.
                name=r.shown(raw, f"{where}.name", str(network)),
                network=network,
                secret=r.secret(raw, where),
                push_only=r.bool(raw, f"{where}.push_only", False),
            )
        )

    return Config(
        broker_url=url,
        api_key=r.api_key(broker),
        clients=tuple(clients),
        listen=r.str(radius, "radius.listen", "0.0.0.0"),
        port=r.port(radius, "radius.port", 1812),
        redis_url=r.redis_url(radius, "radius.redis_url", "redis://127.0.0.1:6379/0"),
        store=r.path(radius, "radius.store", "/var/lib/pushauth-radius/users.db"),
        app_name=r.shown(radius, "radius.app_name", "VPN"),
        broker_timeout=r.positive(broker, "broker.timeout", 10.0),
        digits=r.digits(challenge, "challenge.digits"),
        ttl=r.ttl(challenge, "challenge.ttl"),
        answer_wait=r.positive(challenge, "challenge.answer_wait", 25.0),
        first_factor=mode,
        upstream=upstream,
        broker_down=broker_down,
        strip_realm=r.bool(users, "users.strip_realm", True),
        lowercase=r.bool(users, "users.lowercase", True),
        user_rate=r.int(limits, "limits.user_requests", 10),
        rate_window=r.int(limits, "limits.user_window", 60),
        duplicate_window=r.positive(limits, "limits.duplicate_window", 30.0),
        replay_window=r.int(limits, "limits.replay_window", 600),
        audit_syslog=r.bool(radius, "radius.syslog", False),
    )


class _Reader(TomlReader):
    def redis_url(self, table: dict[str, Any], key: str, default: str) -> str:
        url = self.str(table, key, default)
        # Here, not at the top: importing redis is about a third of a command's start, and
        # the command line's parser and --help need no configuration read.
        from redis.asyncio.connection import parse_url

        from broker.cli_common import option_problem

        try:
            # redis-py's own reading (scheme, port, options), then the options it would only
            # refuse once connecting (an unknown name) or that make its replies text.
            if (problem := option_problem(parse_url(url))) is not None:
                raise ValueError(problem)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        return url

    def port(self, table: dict[str, Any], key: str, default: int) -> int:
        value = self.int(table, key, default)
        if value > 65535:
            raise self.error(key, "must be 0..65535")
        return value

    def path(self, table: dict[str, Any], key: str, default: str) -> Path:
        return self.base / Path(self.str(table, key, default))

    def _file(self, key: str, value: str) -> str:
        """A secret's file (the broker API key, a shared secret): refused when every local
        user may read it. The group may (root:pushauth 0640, as deploy/radius/ has it)."""
        path = self.base / value
        if path.exists() and not path.is_file():
            # A FIFO waited forever for a writer, /dev/zero filled the memory.
            raise self.error(key, f"{path} is not a regular file")
        try:
            text = path.read_text().strip()
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise self.error(key, f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise self.error(key, f"{path} is not UTF-8 text") from None
        if mode & 0o006:
            # With the API key anyone could push to (and pester) every user of this RP;
            # with a shared secret answer the gateway as this server.
            raise self.error(
                key, f"{path} is readable or writable by others (mode {mode:04o}): refused; chmod o-rw {path}"
            )
        return text

    def secret(self, table: dict[str, Any], where: str) -> bytes:
        """`secret = "..."` or `secret_file = "..."` (better: not in the config file)."""
        if "secret_file" in table:
            text = self._file(f"{where}.secret_file", self.str(table, f"{where}.secret_file", None))
        else:
            text = self.str(table, f"{where}.secret", "")
        if not text:
            raise self.error(f"{where}.secret", "missing or empty (set secret or secret_file)")
        return text.encode()

    def api_key(self, broker: dict[str, Any]) -> str:
        if "api_key_file" in broker:
            key = self._file("broker.api_key_file", self.str(broker, "broker.api_key_file", None))
        else:
            key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise self.error("broker.api_key_file", f"no broker API key: set it or ${API_KEY_ENV}")
        # One printable ASCII word, as the broker issues it: a key with a space or a line
        # in it passed check-config, then every request to the broker was a traceback.
        if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
            where = "broker.api_key_file" if "api_key_file" in broker else f"${API_KEY_ENV}"
            raise self.error(where, "holds no API key (one line of printable ASCII, no spaces)")
        return key


def short_secrets(cfg: Config) -> list[str]:
    """A warning for each shared secret shorter than RFC 2865 asks (accepted: a gateway
    may allow no longer one, but the administrator should know)."""
    named = [(f"client {c.name}", c.secret) for c in cfg.clients]
    if cfg.upstream is not None:
        named.append(("first_factor (upstream)", cfg.upstream.secret))
    return [
        f"{what}'s shared secret is {len(secret)} bytes: RFC 2865 asks for at least "
        f"{MIN_SECRET_BYTES}, this guide for 32 or more random characters (an offline guess "
        "of a short one reveals the passwords in User-Password)"
        for what, secret in named
        if len(secret) < MIN_SECRET_BYTES
    ]
