"""`pushauth-broker serve`: its options and what it runs.

Its own module because it imports the server (aiohttp, the app, Web Push, metrics),
for the options' defaults too: 0.3 s that `rp` commands and `--help` do not pay
(broker/cli.py imports this module only for `serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from protocol.uri import is_loopback

from . import cpus, webapp_static, webpush
from .access_log import ChecksQuietAccessLogger, ClientAccessLogger
from .activation import DEFAULT_HOST, DEFAULT_PORT, LISTEN_BACKLOG, url_address
from .app import create_app, stop_serving
from .backups import (
    BACKUP_STORE_MAX_BLOBS,
    BACKUP_STORE_MAX_BYTES,
    BLOB_TTL_S,
    NEW_BLOBS_PER_IP_DAY,
    BackupQuota,
)
from .command import CliError, check_redis_url, open_redis, say, store_line
from .connections import (
    CONNECTIONS_PER_IP,
    ConnectionGate,
    ConnectionLimits,
    node_connections_default,
    raise_nofile_limit,
)
from .context import NODE
from .device_ws import AUTH_TIMEOUT_S
from .event_listener import EVENTS_GRACE_S, LISTENER, EventChannelError
from .http_guard import (
    BODY_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    KEEPALIVE_TIMEOUT_S,
    WRITE_TIMEOUT_S,
    GuardedSite,
    Timeouts,
)
from .limits import Limits, Rate
from .logs import FORMATS
from .metrics import metrics_app
from .policy_cli import add_deprecated_serve_flags, deprecated_flags
from .rp_lane import Lane
from .webapp_static import incomplete as incomplete_webapp
from .workers import MAX_WORKERS

log = logging.getLogger("pushauth.broker")
DEFAULT_LIMITS = Limits()
SHUTDOWN_TIMEOUT_S = 5.0  # for the RP API requests in flight when the broker is told to stop


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
    serve.add_argument("--node", help="this node's name in logs and /healthz (default: host-pid)")
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


def _check_push(args: argparse.Namespace) -> None:
    """--push-subject and --push-service, as RFC 8292 and the push services take them."""
    subject = args.push_subject
    if not (subject.startswith("mailto:") and "@" in subject) and not subject.startswith("https://"):
        raise CliError(f"bad --push-subject {subject!r}: a mailto: address or an https:// URL")
    for origin in args.push_service or ():
        parts = urlsplit(origin)
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


def check_serve(args: argparse.Namespace) -> tuple[Limits, Timeouts, BackupQuota]:
    """Refuse bad `serve` arguments with one message, before anything starts (with
    --workers, in the supervisor, so that N workers do not each say it)."""
    if not 10 <= args.enrollment_ttl <= 600:
        raise CliError("--enrollment-ttl must be 10 to 600 seconds")
    if not 0.5 <= args.auth_timeout <= 600:  # also refuses nan
        raise CliError("--auth-timeout must be 0.5 to 600 seconds")
    if not 0 < args.events_grace <= 3600:
        raise CliError("--events-grace must be more than 0 and at most 3600 seconds")
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0 to 65535")
    _check_public_url(args.public_url)
    check_redis_url(args.redis_url)
    _check_push(args)
    _check_ports(args)
    if args.webapp and (lacking := webapp_static.missing()):
        raise CliError(f"--webapp: {incomplete_webapp(lacking)}")
    if args.cpus:
        try:
            cpus.check(args.cpus)
        except cpus.CpusError as exc:
            raise CliError(str(exc)) from None
    return _limits(args)


async def serve(args: argparse.Namespace) -> None:
    node = args.node
    limits, timeouts, quota = check_serve(args)
    raise_nofile_limit()  # before the embedded Redis starts: it inherits the limit
    gate = ConnectionGate(
        ConnectionLimits(
            per_ip=args.http_connections_per_ip,
            node=node_connections_default() if args.http_connections is None else args.http_connections,
            trusted_proxies=limits.trusted_proxies,
        )
    )
    for warning in deprecated_flags(args):
        log.warning("%s", warning)
    async with open_redis(args) as redis:
        say(f"pushauth-broker node {node} store: {store_line(args.redis_url, args.data_dir)}")
        if args.cpus:  # after the embedded Redis started: it keeps the machine's CPUs
            cpus.pin(args.cpus)
        app = create_app(
            redis,
            node=node,
            public_url=args.public_url,
            enrollment_ttl_s=args.enrollment_ttl,
            auth_timeout_s=args.auth_timeout,
            events_grace_s=args.events_grace,
            limits=limits,
            timeouts=timeouts,
            backup_quota=quota,
        )
        if args.webapp:
            webapp_static.add_routes(app)
        if args.push_key is not None:
            # Checked here, not with the other options: the key may sit in --data-dir,
            # which the embedded Redis has just made.
            if not args.push_key.parent.is_dir():
                raise CliError(
                    f"--push-key {args.push_key}: the folder {args.push_key.parent} does not exist"
                )
            try:
                key = webpush.load_or_create_key(args.push_key)
            except ValueError as exc:
                raise CliError(
                    f"--push-key {args.push_key}: not a P-256 private key in PEM ({exc})"
                ) from None
            push = webpush.WebPush(key, args.push_subject)
            if args.push_service:
                push.services = tuple(args.push_service)
            webpush.install(app, push)
        runner = web.AppRunner(
            app,
            access_log=log if args.access_log else None,
            access_log_class=ClientAccessLogger if args.access_log_checks else ChecksQuietAccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        try:
            await runner.setup()  # subscribes to the event channel (broker/app.py)
        except EventChannelError as exc:
            await runner.cleanup()
            raise CliError(str(exc)) from None
        metrics: web.AppRunner | None = None
        try:
            if args.metrics_port is not None:
                metrics = await _serve_metrics(app, node, args.metrics_host, args.metrics_port, gate)
            site = GuardedSite(
                runner,
                args.host,
                args.port,
                timeouts=timeouts,
                sock=args.listen_sock,
                backlog=LISTEN_BACKLOG,
                reuse_port=args.reuse_port or None,
                lane=Lane(app, timeouts, log if args.access_log else None, gate) if args.rp_lane else None,
                gate=gate,
            )
            site.handler_args(
                access_log=log if args.access_log else None,
                access_log_class=ClientAccessLogger if args.access_log_checks else ChecksQuietAccessLogger,
            )
            await site.start()
            host, port = args.host, runner.addresses[0][1]
            if args.listen_sock is not None:
                host, port = url_address(args.listen_sock)
            tune_gc()
            say(f"pushauth-broker node {node} listening on http://{host}:{port}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        except BaseException:
            await runner.cleanup()
            if metrics is not None:
                await metrics.cleanup()
            raise
        say("pushauth-broker: shutting down")
        # Closing thousands of sockets allocates enough to set off full garbage
        # collections of a heap that is about to be dropped: seconds, for nothing.
        gc.disable()
        began = time.monotonic()
        if not await stop_serving(runner, SHUTDOWN_TIMEOUT_S):
            log.warning("stopped with requests still in flight after %.0fs", SHUTDOWN_TIMEOUT_S)
        if metrics is not None:
            await metrics.cleanup()
        say(f"pushauth-broker: stopped in {time.monotonic() - began:.2f}s")


async def _serve_metrics(
    app: web.Application, node: str, host: str, port: int, gate: ConnectionGate
) -> web.AppRunner:
    """The metrics listener: its own port, so that it is never on the public one."""
    runner = web.AppRunner(metrics_app(node, app[NODE].hub, app[LISTENER], gate), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except (socket.gaierror, UnicodeError) as exc:  # a name that cannot be (IDNA: "bad..host")
        await runner.cleanup()
        raise CliError(f"cannot listen on --metrics-host {host}: {exc}") from None
    except OSError as exc:  # taken, or not this host's address: say which listener it was
        await runner.cleanup()
        raise OSError(exc.errno, f"metrics listener (--metrics-port): {exc.strerror or exc}") from None
    bound = runner.addresses[0][1]
    say(f"pushauth-broker node {node} metrics on http://{host}:{bound}/metrics")
    return runner


def _check_ports(args: argparse.Namespace) -> None:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise CliError(f"--workers must be 1 to {MAX_WORKERS}")
    last = (args.metrics_port or 0) + args.workers - 1
    if args.metrics_port is not None and not (args.metrics_port >= 0 and last <= 65535):
        raise CliError("--metrics-port must be 0 to 65535 (with --workers N: up to 65536 - N)")


def _limits(args: argparse.Namespace) -> tuple[Limits, Timeouts, BackupQuota]:
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


def tune_gc() -> None:
    """Garbage collection for a heap of thousands of long-lived connections.

    With CPython's defaults a full collection runs each time the heap grows by a
    quarter, and it walks every object: measured while 18,000 devices reconnected
    after a restart, 11 full collections took 3.7 s of the 13 s. Startup objects are
    frozen (never walked again) and a full collection waits for ten times as many
    younger ones; reference counting still frees everything without cycles at once.
    """
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)
