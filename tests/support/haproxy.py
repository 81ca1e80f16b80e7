"""HAProxyProcess: a real haproxy running a loopback rendering of deploy/haproxy.cfg.

The test runs the shipped file, not a copy of it: `render` changes only what ties it to
a production host and keeps every other line as written:

- each frontend's `bind` lines become one plain-HTTP `bind 127.0.0.1:PORT` (no TLS); or,
  when the test gives a `certificate`, a TLS bind keeps its options (`ssl`, `alpn`) with
  that file as its `crt`, so the test runs the shipped TLS settings;
- each `server NAME ADDRESS ...` gets the test's address for NAME (options kept);
- `log` lines in `global` go to stdout (the test reads the access log);
- the `stats socket` goes to the test's directory (added if the file has none, as an
  older config: the measurements of docs/performance.md run one);
- `user`, `group` and `chroot` in `global` are kept when the tests run as root (here and
  in CI: PRIVILEGED), so the tested haproxy drops root as the shipped one does, and
  `serving_identity` can prove it; elsewhere they are dropped, since haproxy started by
  another user cannot change user or chroot and refuses to start. The chroot needs no
  other change: the log goes to stdout (a descriptor already open) and the stats socket
  and errorfiles are opened before it, as the TLS key is in production;
- `daemon` and `pidfile` in `global` are dropped (the test runs haproxy in the
  foreground and reads its PID), and its `maxconn` lowered to TEST_MAXCONN: haproxy
  refuses to start when it cannot raise its open-file limit to twice that, and a test
  process here may hold at most 20,000;
- `hard-stop-after` in `global`, when a test asks, gets the test's shorter time (a
  reload test cannot wait the shipped minutes);
- each `errorfile` names the shipped file of that name in deploy/haproxy-errors/.

A line the renderer needs but does not find (a frontend without a port, a server
without an address) is an error, so the file and the test cannot drift apart.
"""

from __future__ import annotations

import csv
import grp
import io
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .ports import LOCALHOST, port_accepts
from .process import ManagedProcess, children
from .waiting import DEADLINE, wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "haproxy.cfg"
ERROR_FILES = REPO / "deploy" / "haproxy-errors"
_HOST_ONLY = {"daemon", "pidfile"}
_PRIVILEGE = {"user", "group", "chroot"}
# haproxy can change user and chroot only when started as root.
PRIVILEGED = os.geteuid() == 0


def _test_maxconn() -> int:
    """As many connections as the open-file limit lets haproxy have (it needs about two
    files per connection, and refuses to start without them), at most 9,000: room for
    support.failover's fleets of 8,000 devices."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 1_000_000 if hard == resource.RLIM_INFINITY else hard
    return max(256, min(9000, (files - 200) // 2))


TEST_MAXCONN = _test_maxconn()


class RenderError(ValueError):
    """The config does not have the lines the loopback rendering replaces."""


def haproxy_executable() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("haproxy is not installed (scripts/ensure-tools test installs it)")
    return found


def haproxy_version() -> tuple[int, int]:
    """The (major, minor) version of the haproxy the tests run."""
    out = subprocess.run([haproxy_executable(), "-v"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read haproxy's version from {out!r}")
    return int(match[1]), int(match[2])


def render(
    text: str,
    *,
    binds: Mapping[str, int],
    servers: Mapping[str, str],
    stats_socket: Path,
    hard_stop_after: str | None = None,
    privileged: bool = PRIVILEGED,
    certificate: Path | None = None,
) -> str:
    """The loopback variant of a config (see the module's docstring); `privileged`: keep
    its user, group and chroot; `certificate`: serve its TLS binds with that PEM file."""
    out: list[str] = []
    section, name = "", ""
    bound: set[str] = set()
    placed: set[str] = set()
    has_socket = False
    hard_stop_set = False
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):  # blank or a comment, wherever it starts
            out.append(line)
            continue
        if line[:1].strip():  # a section header starts at column 0
            section, name = words[0], words[1] if len(words) > 1 else ""
            out.append(line)
            if section == "global":
                out.append("    # rendered for a loopback test run by tests/support/haproxy.py")
            continue
        keyword = words[0]
        if section == "global" and (keyword in _HOST_ONLY or (keyword in _PRIVILEGE and not privileged)):
            continue
        if section == "global" and keyword == "maxconn":
            out.append(f"    maxconn {min(int(words[1]), TEST_MAXCONN)}")
        elif section == "global" and keyword == "log":
            out.append("    log stdout format raw local0")
        elif section == "global" and keyword == "hard-stop-after" and hard_stop_after is not None:
            out.append(f"    hard-stop-after {hard_stop_after}")
            hard_stop_set = True
        elif section == "global" and words[:2] == ["stats", "socket"]:
            out.append(f"    stats socket {stats_socket} mode 600 level admin")
            has_socket = True
        elif keyword == "errorfile" and len(words) == 3:
            shipped = ERROR_FILES / Path(words[2]).name
            if not shipped.is_file():
                raise RenderError(f"errorfile {words[2]}: no {shipped.name} in {ERROR_FILES}")
            out.append(f"{line[: len(line) - len(line.lstrip())]}errorfile {words[1]} {shipped}")
        elif section in ("frontend", "listen") and keyword == "bind":
            if name not in binds:
                raise RenderError(f"no test port for {section} {name!r}")
            if name not in bound:  # several binds (say IPv4 and IPv6) become one
                out.append(f"    bind {LOCALHOST}:{binds[name]}{_tls_options(words, certificate)}")
                bound.add(name)
        elif section in ("backend", "listen") and keyword == "server":
            if len(words) < 3 or words[1] not in servers:
                raise RenderError(f"no test address for server {words[1:2]} in {section} {name!r}")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}server {words[1]} {servers[words[1]]} {' '.join(words[3:])}".rstrip())
            placed.add(words[1])
        else:
            out.append(line)
    if missing := set(binds) - bound:
        raise RenderError(f"the config has no frontend {sorted(missing)}")
    if missing := set(servers) - placed:
        raise RenderError(f"the config has no server {sorted(missing)}")
    if hard_stop_after is not None and not hard_stop_set:
        raise RenderError("the config has no hard-stop-after in global")
    if not has_socket:
        at = next(i for i, line in enumerate(out) if line.split()[:1] == ["global"])
        out.insert(at + 1, f"    stats socket {stats_socket} mode 600 level admin")
    return "\n".join(out) + "\n"


def _tls_options(bind: list[str], certificate: Path | None) -> str:
    """A bind line's options after its address, `crt` naming `certificate`, when the test
    serves TLS and the line does; else none (plain HTTP)."""
    if certificate is None or "ssl" not in bind:
        return ""
    options = bind[2:]
    if "crt" not in options[:-1]:
        raise RenderError(f"a TLS bind without a crt: {' '.join(bind)}")
    options[options.index("crt") + 1] = str(certificate)
    return " " + " ".join(options)


def frontends(text: str) -> list[str]:
    """Names of the config's frontends (each needs a port)."""
    return [m.group(1) for m in re.finditer(r"^(?:frontend|listen)\s+(\S+)", text, re.MULTILINE)]


@dataclass(frozen=True)
class Identity:
    """Who a process runs as, and the directory it sees as /."""

    uids: tuple[int, ...]  # real, effective, saved, filesystem
    gids: tuple[int, ...]
    groups: tuple[int, ...]  # supplementary
    root: str


def identity(pid: int) -> Identity:
    """The running process's identity, from /proc (its root link needs root to read)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Identity(
        uids=tuple(int(v) for v in fields["Uid"].split()),
        gids=tuple(int(v) for v in fields["Gid"].split()),
        groups=tuple(int(v) for v in fields["Groups"].split()),
        root=os.readlink(f"/proc/{pid}/root"),
    )


def serving_identity() -> Identity:
    """What a serving haproxy process of the shipped file is: user and group haproxy (made
    by Debian's package), no other group, shut in /var/lib/haproxy."""
    uid, gid = pwd.getpwnam("haproxy").pw_uid, grp.getgrnam("haproxy").gr_gid
    return Identity(uids=(uid,) * 4, gids=(gid,) * 4, groups=(), root="/var/lib/haproxy")


@dataclass(frozen=True)
class AccessLine:
    """One request from HAProxy's httplog line (the fields the tests count)."""

    backend: str
    server: str
    status: int
    retries: int  # connection attempts beyond the first
    redispatched: bool  # "+" before the retries: sent to another server than first chosen
    termination: str  # the 4-letter termination state, e.g. "----", "SH--", "CD--"
    request: str


# client [date] frontend backend/server Tq/Tw/Tc/Tr/Ta status bytes - - tsc act/fe/be/srv/+retries q "req"
_ACCESS = re.compile(
    r"^\S+ \[[^\]]+\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) \S+ (?P<status>-?\d+) \S+ \S+ \S+ "
    r'(?P<tsc>\S{4}) \d+/\d+/\d+/\d+/(?P<plus>\+?)(?P<retries>\d+) \S+ "(?P<request>[^"]*)"',
    re.MULTILINE,
)


def parse_access_log(text: str) -> list[AccessLine]:
    lines = []
    for match in _ACCESS.finditer(text.replace("\r", "")):
        lines.append(
            AccessLine(
                backend=match["backend"],
                server=match["server"],
                status=int(match["status"]),
                retries=int(match["retries"]),
                redispatched=bool(match["plus"]),
                termination=match["tsc"],
                request=match["request"],
            )
        )
    return lines


class HAProxyProcess(ManagedProcess):
    """haproxy in the foreground (-db) on a rendered config; its log on stdout. With
    `master_worker`, as systemd runs it (-W): a master that `reload()` tells to start a
    new worker on the file while the old one finishes what it holds (a soft stop)."""

    def __init__(
        self,
        *,
        log_dir: Path,
        config: str,
        binds: Mapping[str, int],
        servers: Mapping[str, str],
        name: str = "haproxy",
        master_worker: bool = False,
        hard_stop_after: str | None = None,
        certificate: Path | None = None,
    ) -> None:
        self.binds = dict(binds)
        self.socket_path = Path(log_dir) / f"{name}.sock"
        self.config_path = Path(log_dir) / f"{name}.cfg"
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render(
                config,
                binds=binds,
                servers=servers,
                stats_socket=self.socket_path,
                hard_stop_after=hard_stop_after,
                certificate=certificate,
            )
        )
        super().__init__(
            [haproxy_executable(), *(["-W"] if master_worker else []), "-db", "-f", str(self.config_path)],
            log_dir=log_dir,
            name=name,
            ready=lambda _proc: (
                self.socket_path.exists() and all(port_accepts(p) for p in self.binds.values())
            ),
            ready_timeout=DEADLINE,
        )

    def url(self, frontend: str) -> str:
        return f"http://{LOCALHOST}:{self.binds[frontend]}"

    def reload(self) -> None:
        """`systemctl reload haproxy`: SIGUSR2 to the master (master_worker only); returns
        once the new worker runs (the old one may still serve what it holds)."""
        old = self.workers()
        self.send_signal(signal.SIGUSR2)
        wait_until(lambda: self.workers() - old, message="HAProxy's new worker")

    def workers(self) -> set[int]:
        """PIDs of the master's worker processes (master_worker only)."""
        return set(children(self.pid))

    def command(self, line: str) -> str:
        """One command on the stats socket (the runtime API), its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self) -> dict[tuple[str, str], str]:
        """(backend, server) -> status as `show stat` says: UP, DOWN, "UP 1/2", MAINT, ..."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            (row["pxname"], row["svname"]): row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_status(self, backend: str, server: str, status: str, timeout: float = DEADLINE) -> None:
        """Wait until `show stat` gives `status` (UP, DOWN, ...) for backend/server."""
        wait_until(
            lambda: self.server_status().get((backend, server)) == status,
            timeout=timeout,
            message=lambda: f"{backend}/{server} {status} (now: {self.server_status()})",
        )

    def access_log(self) -> list[AccessLine]:
        return parse_access_log(self.stdout())
