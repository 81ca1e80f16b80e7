"""`pushauth-broker serve`'s options and their checks: everything about its command
line that needs no server.

Light on purpose: neither aiohttp, nor redis-py, nor the broker's server modules are
imported here (the defaults come from broker/bounds.py), so that `serve --help` and a
`serve` refused for a bad value (a port, a URL, a number, two options that conflict, a
file that must exist) answer before the server is imported: that took a second of
CPU, several on a loaded machine. broker/serve_cli.py, which runs the server, is
imported once the arguments are accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from protocol import text
from protocol.uri import is_loopback, split_url

from . import cpus, webapp_static
from .activation import DEFAULT_HOST, DEFAULT_PORT
from .bounds import (
    AUTH_TIMEOUT_S,
    BACKUP_STORE_MAX_BLOBS,
    BACKUP_STORE_MAX_BYTES,
    BLOB_TTL_S,
    BODY_TIMEOUT_S,
    CONNECTIONS_PER_IP,
    EVENTS_GRACE_S,
    HEAD_TIMEOUT_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_WORKERS,
    NEW_BLOBS_PER_IP_DAY,
    WRITE_TIMEOUT_S,
    BackupQuota,
    Limits,
    Rate,
    Timeouts,
)
from .cli_common import CliError, check_redis_url
from .logs import FORMATS
from .policy_cli import add_deprecated_serve_flags

DEFAULT_LIMITS = Limits()
MAX_NODE = 128  # --node: a host name (up to 64) and a pid, with room to spare
Settings = tuple[Limits, Timeouts, BackupQuota]


def add_arguments(
    serve: argparse.ArgumentParser, add_store_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The options of `serve`, their defaults taken from the modules that use them;
    `add_store_args` adds --redis-url and --data-dir, which the `rp` commands share."""
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s); not used when systemd passes the "
        "listening socket (socket activation: deploy/pushauth-broker@.socket)",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default: %(default)s)"
    )
    serve.add_argument(
        "--public-url",
        help="the URL devices reach this service at, e.g. https://push.example.com behind a load "
        "balancer; put into enrollment URIs as wss://.../v1/device; http:// only on loopback, "
        "since devices refuse a broker without TLS elsewhere (default: the request's Host)",
    )
    serve.add_argument(
        "--webapp",
        action="store_true",
        help="also serve the web authenticator's static files at /app/ (for the demo; "
        "deploy/webapp.md says how to host them on their own origin)",
    )
    serve.add_argument(
        "--push-key",
        type=Path,
        metavar="FILE",
        help="send Web Push wake-ups to web authenticators that are closed, signed with the VAPID key in "
        "FILE (a P-256 PEM key, made there if absent, in a folder that exists; docs/protocol.md appendix A)",
    )
    serve.add_argument(
        "--push-subject",
        default="mailto:postmaster@localhost",
        help="the VAPID contact push services may write to (mailto: or https: URL; default: %(default)s)",
    )
    serve.add_argument(
        "--push-service",
        action="append",
        metavar="ORIGIN",
        help="a push service the broker may send to (repeatable; replaces the browsers' services, "
        "e.g. https://fcm.googleapis.com)",
    )
    serve.add_argument(
        "--enrollment-ttl",
        type=int,
        default=600,
        metavar="SECONDS",
        help="how long an enrollment QR code stays valid, 10..600 (default: %(default)s)",
    )
    serve.add_argument(
        "--auth-timeout",
        type=float,
        default=AUTH_TIMEOUT_S,
        metavar="SECONDS",
        help="how long a device connection may stay open before a credential is authenticated "
        "or an enrollment completed on it; then it is closed with 4408 auth_timeout, "
        "0.5..600 (default: %(default)g)",
    )
    add_deprecated_serve_flags(serve)  # push policy is per RP now: `rp set`
    serve.add_argument(
        "--events-grace",
        type=float,
        default=EVENTS_GRACE_S,
        metavar="SECONDS",
        help="how long this node may be unsubscribed from its event channels (Redis restarting, "
        "a failover) before /healthz answers 503; it catches up from Redis when back, more than 0 and at "
        "most 3600 (default: %(default)s)",
    )
    limits = serve.add_argument_group(
        "limits on clients (DESIGN invariant 13)",
        "RATE[:BURST] is a token bucket: RATE requests a second, BURST at once (default BURST: 10 x RATE); "
        "0 turns a limit off. Over a limit: HTTP 429 rate_limited with Retry-After. Per client address "
        "(an IPv6 address counts as its /64), and per node for all clients together.",
    )
    for flag, attr, what in (
        ("--device-connects-per-ip", "device_per_ip", "new device WebSockets from one address"),
        ("--device-connects", "device", "new device WebSockets to this node"),
        ("--backup-requests-per-ip", "backup_per_ip", "backup reads, writes, deletes from one address"),
        ("--backup-requests", "backup", "backup reads, writes, deletes on this node"),
        (
            "--recovery-requests-per-ip",
            "recovery_per_ip",
            "recoveries and recovery-key rotations from one address",
        ),
        ("--recovery-requests", "recovery", "recoveries and recovery-key rotations on this node"),
    ):
        limits.add_argument(
            flag,
            type=_rate,
            default=getattr(DEFAULT_LIMITS, attr),
            dest=f"limit_{attr}",
            metavar="RATE[:BURST]",
            help=f"{what} (default: %(default)s)",
        )
    limits.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR[/BITS]",
        help="a load balancer whose X-Forwarded-For names the client (its last entry), for the "
        "per-address limits and the access log; repeatable. Without it every client behind a "
        "balancer shares the balancer's address",
    )
    limits.add_argument(
        "--http-connections-per-ip",
        type=int,
        default=CONNECTIONS_PER_IP,
        metavar="N",
        help="open HTTP connections from one address, 0: no limit; a device WebSocket counts until it "
        "proves a credential, and a connection that carries a valid RP API key no longer counts (429 "
        "too_many_connections, sent before the request is read; default: %(default)s)",
    )
    limits.add_argument(
        "--http-connections",
        type=int,
        metavar="N",
        help="open HTTP connections to this process from all addresses, device WebSockets counted until "
        "they prove a credential, 0: no limit. When full, a newcomer takes the place of the oldest unproven "
        "connection of the address holding most, if it holds more than the newcomer's would; else 503 "
        "node_busy (default: a quarter of the open-file limit, which the broker lifts to its hard limit at "
        "start, at most 10000)",
    )
    limits.add_argument(
        "--new-backups-per-ip",
        type=int,
        default=NEW_BLOBS_PER_IP_DAY,
        metavar="N",
        help="new backup ids one address may store per UTC day, 0: no limit (429 quota_exceeded; "
        "default: %(default)s)",
    )
    limits.add_argument(
        "--backup-store-max-mib",
        type=int,
        default=BACKUP_STORE_MAX_BYTES // 2**20,
        metavar="MIB",
        help="total size of all stored backups, 0: no limit (507 backup_store_full; default: %(default)s)",
    )
    limits.add_argument(
        "--backup-store-max-blobs",
        type=int,
        default=BACKUP_STORE_MAX_BLOBS,
        metavar="N",
        help="number of stored backups, 0: no limit (507 backup_store_full; default: %(default)s)",
    )
    limits.add_argument(
        "--backup-ttl-days",
        type=int,
        default=BLOB_TTL_S // 86400,
        metavar="DAYS",
        help="a backup not written again for this long is deleted (default: %(default)s)",
    )
    limits.add_argument(
        "--head-timeout",
        type=float,
        default=HEAD_TIMEOUT_S,
        metavar="SECONDS",
        help="time to send a request's line and headers, from connecting or from its first byte "
        "(408, connection closed; default: %(default)s)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT_S,
        metavar="SECONDS",
        help="time to send a request's body (408; a request without a valid API key is refused "
        "at its head, without waiting for its body; default: %(default)s)",
    )
    limits.add_argument(
        "--keepalive-timeout",
        type=float,
        default=KEEPALIVE_TIMEOUT_S,
        metavar="SECONDS",
        help="an idle keep-alive connection is closed after this (default: %(default)s)",
    )
    limits.add_argument(
        "--write-timeout",
        type=float,
        default=WRITE_TIMEOUT_S,
        metavar="SECONDS",
        help="a client that reads none of a response for this long is disconnected (default: %(default)s)",
    )
    serve.add_argument(
        "--node",
        help=f"this node's name in logs and /healthz: 1 to {MAX_NODE} characters, no spaces or control "
        "characters (default: host-pid)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=f"processes serving the port (SO_REUSEPORT), each a node of its own named NODE-wI on the same "
        f"Redis (one embedded Redis for all); with --metrics-port P, worker I serves metrics on P+I; "
        f"1..{MAX_WORKERS} (default: %(default)s)",
    )
    serve.add_argument(
        "--cpus",
        type=cpus.cpu_list_arg,
        metavar="LIST",
        help="run on these CPUs only, e.g. 1, 0,2 or 2-3 (as taskset -c): a core of its own answers "
        "sooner than one shared with busy processes; with --workers N, worker I takes the list's "
        "(I mod length)-th CPU alone; the embedded Redis is not pinned (default: wherever the "
        "system puts it)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for workers
    # Set for workers when the supervisor was given a socket (broker/activation.py).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://METRICS_HOST:PORT/metrics, a listener of its own "
        "(default: none); 0 picks a free port (printed)",
    )
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics listener; it has no authentication, so keep it on loopback or "
        "a private network (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe log lines written to stderr: INFO says when the node loses or regains "
        "Redis, why a device connection was closed and (--access-log) each request; DEBUG adds each "
        "refused request, timed-out connection and client that went away. The node's start and stop "
        "are status lines on stdout, at every level (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="log lines on stderr as text, or one JSON object per line with ts, level, node, event, "
        "logger and fields (default: %(default)s)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request (off: it costs)")
    serve.add_argument(
        "--access-log-no-checks",
        dest="access_log_checks",
        action="store_false",
        help="with --access-log, leave out GET /healthz answered 200 (a load balancer's checks: half "
        "the lines behind HAProxy); a failed check is still logged",
    )
    serve.add_argument(
        "--no-rp-lane",
        dest="rp_lane",
        action="store_false",
        help="serve every request through aiohttp, a sign-in's RP requests (POST /v1/challenges, "
        "GET /v1/challenges/ID) and device WebSocket upgrades (GET /v1/device) included; by default "
        "those are answered from protocol callbacks, which costs less CPU (docs/performance.md, "
        "sections 11 and 24). The answers are the same either way",
    )
    add_store_args(serve)


def _check_public_url(url: str | None) -> None:
    """--public-url: where devices reach this service. Each enrollment link carries it
    (as ws(s)://.../v1/device): a value no device can use would make every link useless,
    so it is refused at start."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError as exc:
        raise CliError(f"bad --public-url {url!r}: {exc}") from None
    # Bytes that are not UTF-8 (from the shell) made every enrollment a 500 with a
    # traceback; a space, a link no device can read.
    if (bad := _unsafe(url)) is not None:
        raise CliError(f"bad --public-url {url!r}: {bad}")
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.hostname:
        raise CliError(f"bad --public-url {url!r}: expected an https:// (or http://) URL with a host")
    if "?" in url or "#" in url or parts.username is not None:
        raise CliError(f"bad --public-url {url!r}: it takes no user, ?query or #fragment")
    if parts.scheme in ("http", "ws") and not is_loopback(parts.hostname or ""):
        # Devices refuse an unencrypted broker anywhere but on their own machine
        # (docs/protocol.md, section 2.1): every link would be refused by every device.
        raise CliError(
            f"bad --public-url {url!r}: devices refuse a broker without TLS except on loopback; "
            "give the https:// URL of the TLS load balancer in front of the nodes"
        )


def _unsafe(value: str) -> str | None:
    """Why `value` (a name or URL the node sends on) is refused: a space, or a control,
    format or invisible character, or bytes that are not UTF-8 (shown as U+DCxx)."""
    bad = text.first_unsafe(value) or next((c for c in value if c.isspace()), None)
    if bad is None:
        return None
    return f"must not contain spaces, control, format or invisible characters (found {text.describe(bad)})"


def _check_push(args: argparse.Namespace) -> None:
    """--push-subject and --push-service, as RFC 8292 and the push services take them."""
    subject = args.push_subject
    if not (subject.startswith("mailto:") and "@" in subject) and not subject.startswith("https://"):
        raise CliError(f"bad --push-subject {subject!r}: a mailto: address or an https:// URL")
    if (bad := _unsafe(subject)) is not None:  # signed into every push's VAPID token
        raise CliError(f"bad --push-subject {subject!r}: {bad}")
    for origin in args.push_service or ():
        parts = split_url(origin)  # None: a malformed IPv6 host or port (a traceback before)
        if parts is None or (bad := _unsafe(origin)) is not None:
            why = "not a URL" if parts is None else bad
            raise CliError(f"bad --push-service {origin!r}: {why}")
        # http:// only on this machine (a push relay beside the broker, a test's service).
        secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
        if not secure or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise CliError(
                f"bad --push-service {origin!r}: an https:// origin (http:// on loopback), "
                "e.g. https://fcm.googleapis.com"
            )


def _rate(text: str) -> Rate:
    try:
        return Rate.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE or RATE:BURST (e.g. 20:300), not {text!r}") from None


def check_serve(args: argparse.Namespace) -> Settings:
    """Refuse bad `serve` arguments with one message, before anything starts or is
    imported (with --workers, in the supervisor, so that N workers do not each say it);
    the limits, timeouts and backup quota they set, for the server."""
    if not 10 <= args.enrollment_ttl <= 600:
        raise CliError("--enrollment-ttl must be 10 to 600 seconds")
    if not 0.5 <= args.auth_timeout <= 600:  # also refuses nan
        raise CliError("--auth-timeout must be 0.5 to 600 seconds")
    if not 0 < args.events_grace <= 3600:
        raise CliError("--events-grace must be more than 0 and at most 3600 seconds")
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0 to 65535")
    _check_node(args.node)
    _check_public_url(args.public_url)
    check_redis_url(args.redis_url)
    _check_push(args)
    _check_ports(args)
    if args.webapp and (lacking := webapp_static.missing()):
        raise CliError(f"--webapp: {webapp_static.incomplete(lacking)}")
    if args.cpus:
        try:
            cpus.check(args.cpus)
        except cpus.CpusError as exc:
            raise CliError(str(exc)) from None
    if not _folder_made_at_start(args):
        check_push_key_folder(args)
    return _limits(args)


def _check_node(node: str) -> None:
    """--node goes into every event the node publishes, its Redis keys, its metrics and
    log lines: a name that is not UTF-8 (bytes from the shell) started a node whose every
    write to Redis failed (/healthz 503 for good) and whose /metrics was a 500."""
    if not 1 <= len(node) <= MAX_NODE:
        raise CliError(f"--node must be 1 to {MAX_NODE} characters")
    if (bad := _unsafe(node)) is not None:
        raise CliError(f"--node {node!r} {bad}")


def check_push_key_folder(args: argparse.Namespace) -> None:
    """--push-key FILE: the key is made there if absent, but not its folder (a mistyped
    path would leave the key where no one looks for it)."""
    if args.push_key is not None and not args.push_key.parent.is_dir():
        raise CliError(f"--push-key {args.push_key}: the folder {args.push_key.parent} does not exist")


def _folder_made_at_start(args: argparse.Namespace) -> bool:
    """Whether --push-key's folder is --data-dir or one of its parents, which the
    embedded Redis makes when it starts: that one is checked once it has (serve_cli)."""
    if args.push_key is None or args.redis_url:
        return False
    data_dir = args.data_dir.resolve()
    return args.push_key.parent.resolve() in (data_dir, *data_dir.parents)


def _check_ports(args: argparse.Namespace) -> None:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise CliError(f"--workers must be 1 to {MAX_WORKERS}")
    last = (args.metrics_port or 0) + args.workers - 1
    if args.metrics_port is not None and not (args.metrics_port >= 0 and last <= 65535):
        raise CliError("--metrics-port must be 0 to 65535 (with --workers N: up to 65536 - N)")


def _limits(args: argparse.Namespace) -> Settings:
    for name in ("head_timeout", "body_timeout", "keepalive_timeout", "write_timeout"):
        if not 0 < getattr(args, name) <= 3600:
            raise CliError(f"--{name.replace('_', '-')} must be more than 0 and at most 3600 seconds")
    counts = (
        "new_backups_per_ip",
        "backup_store_max_mib",
        "backup_store_max_blobs",
        "http_connections_per_ip",
    )
    if args.http_connections is not None and args.http_connections < 0:
        raise CliError("--http-connections must be 0 or more")
    if any(getattr(args, n) < 0 for n in counts) or not 1 <= args.backup_ttl_days <= 3650:
        raise CliError("backup limits must be 0 or more, and --backup-ttl-days 1 to 3650")
    try:
        limits = Limits(
            **{a: getattr(args, f"limit_{a}") for a in _RATE_FIELDS},
            trusted_proxies=tuple(str(ipaddress.ip_network(p, strict=False)) for p in args.trusted_proxy),
        )
    except ValueError as exc:
        raise CliError(f"bad --trusted-proxy: {exc}") from None
    timeouts = Timeouts(
        head_s=args.head_timeout,
        body_s=args.body_timeout,
        keepalive_s=args.keepalive_timeout,
        write_s=args.write_timeout,
    )
    quota = BackupQuota(
        new_per_ip_day=args.new_backups_per_ip,
        max_bytes=args.backup_store_max_mib * 2**20,
        max_blobs=args.backup_store_max_blobs,
        ttl_s=args.backup_ttl_days * 86400,
    )
    return limits, timeouts, quota


_RATE_FIELDS = ("device_per_ip", "device", "backup_per_ip", "backup", "recovery_per_ip", "recovery")
