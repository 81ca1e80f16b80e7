"""`pushauth-broker serve`: what it runs, once its arguments are accepted.

Its own module because it imports the server (aiohttp, the app, Web Push, metrics,
Redis): broker/cli.py imports it only for a `serve` whose options
broker/serve_options.py has parsed and checked, so that `--help`, a refused `serve`
and the `rp` commands do not pay for it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import time

from aiohttp import web

from . import cpus, webapp_static, webpush
from .access_log import ChecksQuietAccessLogger, ClientAccessLogger
from .activation import LISTEN_BACKLOG, url_address
from .app import create_app, stop_serving
from .cli_common import CliError, say, store_line
from .command import open_redis
from .connections import ConnectionGate, ConnectionLimits, node_connections_default, raise_nofile_limit
from .context import NODE
from .event_listener import LISTENER, EventChannelError
from .http_guard import GuardedSite
from .metrics import metrics_app
from .policy_cli import deprecated_flags
from .rp_lane import Lane
from .serve_options import Settings, check_push_key_folder

log = logging.getLogger("pushauth.broker")
SHUTDOWN_TIMEOUT_S = 5.0  # for the RP API requests in flight when the broker is told to stop


async def serve(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, with the `settings` serve_options.check_serve
    made of `args`."""
    node = args.node
    limits, timeouts, quota = settings
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
            # Again, for a key in --data-dir, which the embedded Redis has just made
            # (check_serve checked every other folder before anything started).
            check_push_key_folder(args)
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
