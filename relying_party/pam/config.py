"""The TOML configuration file of pushauth-pam (documented in docs/pam.md).

Every value is checked here, once, with a message that names the key; the rest only
sees the typed Config. The broker API key lives in a file of its own that only root
may read: one readable by a group or by everyone is refused, since with it any local
user could push to (and so pester) every user of this RP. The configuration file and the
user map decide who signs in how: one that a group or everyone may write, or that root
does not own, is refused too (as sshd's StrictModes refuses such an authorized_keys).
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.config import ConfigError, TomlReader, read_toml

DEFAULT_PATH = Path("/etc/pushauth/pam.toml")
MAX_NAME = 64  # the longest pushauth user name
NAME_CHARS = "letters, digits and . _ - @ +"


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a pushauth user name, or None when it can."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    bad = sorted({c for c in name if not (c.isalnum() or c in "._-@+")})
    if bad:
        return f"holds {', '.join(repr(c) for c in bad)}: only {NAME_CHARS}"
    return None


@dataclass(frozen=True, slots=True)
class Config:
    broker_url: str
    api_key: str
    store: Path = Path("/var/lib/pushauth-pam/users.db")
    app_name: str = field(default_factory=lambda: f"{socket.gethostname()} sign-in")
    # "deny" (fail closed, the default) or "allow" (fail open) when the broker cannot be reached.
    when_unreachable: str = "deny"
    # None: not sent, the RP's policy at the broker decides (docs/pam.md, "Configuration").
    digits: int | None = None
    # Timeouts, in seconds (docs/pam.md, "Timeouts").
    request_timeout: float = 5.0  # each HTTP request to the broker
    # How long the push stays valid, and so the longest wait for it; None: the RP's policy
    # at the broker decides, and the challenge's expires_at (its answer) bounds the wait.
    push_ttl: int | None = None
    enroll_timeout: float = 600.0  # how long `pushauth-pam enroll` waits for the device
    code_fallback: bool = True  # "code" at the prompt, and a code when the broker is unreachable
    user_template: str = "{user}"
    user_map: dict[str, str] | None = None  # from map_file: local user -> pushauth user
    bypass_groups: tuple[str, ...] = ()
    syslog: bool = True
    audit_file: Path | None = None  # also append the audit lines here

    @property
    def fail_open(self) -> bool:
        return self.when_unreachable == "allow"


# Every key the file may hold, by table (docs/pam.md): another one is refused by name.
KEYS = {
    "broker": frozenset({"url", "api_key_file", "when_unreachable"}),
    "pam": frozenset({"store", "app_name", "syslog", "audit_file"}),
    "challenge": frozenset({"digits", "code_fallback"}),
    "users": frozenset({"template", "map_file", "bypass_groups"}),
    "timeouts": frozenset({"push", "request", "enroll"}),
}


def load(path: Path) -> Config:
    data = read_toml(path)
    only_root_writes(path)
    return parse(data, base=path.parent, name=str(path))


def only_root_writes(path: Path, where: str = "") -> None:
    """Refuse a file that someone other than root may change. The module runs as root in
    sshd and sudo; whoever can write its configuration could name their own group in
    bypass_groups or set when_unreachable = "allow", and whoever can write the user map
    could map an account to a pushauth user whose device they hold: the second factor off."""
    fix = ", since whoever writes it decides who signs in; chmod go-w"
    _root_only(path, where, 0o022, "writable by group or others", fix)


def _root_only(path: Path, where: str, mask: int, loose: str, fix: str, *, regular: bool = False) -> None:
    """Refuse `path` when it is not a regular file (with `regular`), its mode has any bit
    of `mask` (said as `loose`, and how to `fix` it), or someone other than root (or
    this user) owns it."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{where}cannot read {path}: {exc.strerror}") from None
    if regular and not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}{path} is not a regular file")
    if info.st_mode & mask:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(f"{where}{path} is {loose} (mode {mode:04o}): refused{fix} {path}")
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{where}{path} is not owned by root: refused; chown root {path}")


def parse(data: dict[str, Any], *, base: Path, name: str = "config") -> Config:
    r = TomlReader(data, base, name)
    broker, pam, challenge, users, timeouts = (
        r.table(t) for t in ("broker", "pam", "challenge", "users", "timeouts")
    )
    r.refuse_unknown(KEYS)
    url = r.http_url(broker, "broker.url")
    when = r.str(broker, "broker.when_unreachable", "deny")
    if when not in ("deny", "allow"):
        raise r.error("broker.when_unreachable", 'must be "deny" (fail closed) or "allow" (fail open)')
    template = r.str(users, "users.template", "{user}")
    if template.count("{user}") != 1 or template.replace("{user}", "").count("{") != 0:
        raise r.error(
            "users.template", 'must hold "{user}" once and no other {field}, e.g. "{user}@example.com"'
        )
    # What the template adds to every local name must itself be allowed in a pushauth
    # name, or every user maps to a name that is refused (outcome=unmapped for all).
    problem = name_problem(template.replace("{user}", "a"))
    if problem is not None:
        raise r.error("users.template", f"{template!r} makes no valid pushauth user name: it {problem}")
    user_map = None
    if "map_file" in users:
        user_map = _read_map(r, r.path(users, "users.map_file", None))
    groups = users.get("bypass_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise r.error("users.bypass_groups", "must be a list of group names")
    audit_file = r.str(pam, "pam.audit_file", "")
    return Config(
        broker_url=url,
        api_key=read_api_key(r.path(broker, "broker.api_key_file", None)),
        store=r.path(pam, "pam.store", "/var/lib/pushauth-pam/users.db"),
        app_name=r.shown(pam, "pam.app_name", f"{socket.gethostname()} sign-in"),
        when_unreachable=when,
        digits=r.digits(challenge, "challenge.digits"),
        request_timeout=r.positive(timeouts, "timeouts.request", 5.0),
        push_ttl=r.ttl(timeouts, "timeouts.push"),
        enroll_timeout=r.positive(timeouts, "timeouts.enroll", 600.0),
        code_fallback=r.bool(challenge, "challenge.code_fallback", True),
        user_template=template,
        user_map=user_map,
        bypass_groups=tuple(groups),
        syslog=r.bool(pam, "pam.syslog", True),
        audit_file=base / audit_file if audit_file else None,
    )


def read_api_key(path: Path) -> str:
    """The broker API key, from a regular file that only its owner, root, can read."""
    where = "broker.api_key_file: "
    _root_only(path, where, 0o077, "readable or writable by group or others", "; chmod 600", regular=True)
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}{path} is not UTF-8 text") from None
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"broker.api_key_file: {path} holds no API key (one line, no spaces)")
    return key


def _read_map(r: TomlReader, path: Path) -> dict[str, str]:
    """`local_user pushauth_user` per line; # starts a comment."""
    if path.exists() and not path.is_file():  # a FIFO waited forever, /dev/zero filled the memory
        raise r.error("users.map_file", f"{path} is not a regular file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise r.error("users.map_file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise r.error("users.map_file", f"{path} is not UTF-8 text") from None
    only_root_writes(path, f"{r.name}: users.map_file: ")
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise r.error("users.map_file", f"{path} line {n}: expected 'local_user pushauth_user'")
        problem = name_problem(parts[1])
        if problem is not None:
            raise r.error("users.map_file", f"{path} line {n}: pushauth user {parts[1]!r} {problem}")
        out[parts[0]] = parts[1]
    return out
