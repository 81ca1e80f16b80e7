"""`pushauth-broker`: run the broker and manage the relying parties it serves.

Every run builds the whole parser; what a command runs with (Redis, asyncio, the
store, the server) is imported once it is known which command runs and its arguments
are accepted, so that `--help` and a refused command cost no more than the parser and
its checks, and an `rp` command does not load the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from protocol import text

from .bounds import RP_CACHE_S
from .policy_cli import add_rp_policy_commands, rp_policy_command

if TYPE_CHECKING:
    import socket

    from .models import RelyingParty
    from .serve_options import Settings

MAX_KEEP_OLD_MIN = 7 * 24 * 60  # a week: long enough to roll out a new key anywhere

EPILOG = """\
State lives in Redis only. With no --redis-url (or PUSHAUTH_REDIS_URL) the broker
starts a private redis-server itself, with append-only persistence in --data-dir,
and stops it on exit; `rp` commands on the same --data-dir use the running one.
Several broker nodes pointed at one Redis behave as one service.

examples:
  pushauth-broker serve --port 8700
  pushauth-broker rp add "Contoso Portal"        # prints the RP id and API key
  pushauth-broker serve --redis-url redis://10.0.0.5:6379/0 --public-url https://push.example.com

a running node's state (each node answers for itself; there is no status command):
  curl http://127.0.0.1:8700/healthz     # 200, or 503 when it cannot use Redis or its event channel
  serve --metrics-port 9700 --log-format json   # Prometheus at :9700/metrics; JSON log lines
  docs/operations.md: the metrics and logs, --workers, Redis Cluster, backing up Redis

exit status:
  0  done (serve: stopped by SIGINT or SIGTERM)
  1  the system refused: a port in use, a directory that cannot be made or read
  2  bad arguments or input, or Redis cannot be reached; nothing was changed
  130  interrupted (Ctrl-C) before serving
"""


def _default_data_dir() -> Path:
    env = os.environ.get("PUSHAUTH_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("pushauth")) / "broker"


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=os.environ.get("PUSHAUTH_REDIS_URL") or None,  # set but empty: not set
        help="Redis URL, e.g. redis://host:6379/0, unix:///path/redis.sock, through Redis "
        "Sentinel redis+sentinel://host1:26379,host2:26379/SERVICE[/DB], or a Redis Cluster "
        "redis+cluster://host1:6379,host2:6379 (Redis >= 7) "
        "(env PUSHAUTH_REDIS_URL; default: the embedded Redis in --data-dir)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=_default_data_dir(),
        help="where the embedded Redis keeps its data (env PUSHAUTH_DATA_DIR; default: %(default)s)",
    )


class _Version(argparse._VersionAction):
    """argparse's --version, with the line made only when asked for: it reads the
    installed package's metadata, which no other run needs."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from .versions import version_line

        self.version = version_line()
        super().__call__(parser, *args, **kwargs)


def build_parser(*, serve_options: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without `serve_options`, `serve` is listed but has no
    options (broker/serve_options.py: imported by a `serve` run only)."""
    parser = argparse.ArgumentParser(
        prog="pushauth-broker",
        description="The pushauth broker: relying parties send sign-in challenges over its HTTP API; "
        "device agents receive them over a WebSocket and answer with signed approvals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="print the package, RP API, device protocol and key layout versions, and exit "
        "(a running node says them in GET /healthz)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the broker (RP API and device WebSocket on one port)",
        description="Serve the RP HTTP API (/v1/..., OpenAPI at /v1/openapi.json) and the device "
        "WebSocket (/v1/device) on one port until SIGINT/SIGTERM.",
    )
    if serve_options:
        from .serve_options import add_arguments

        add_arguments(serve, _add_store_args)

    rp = sub.add_parser(
        "rp",
        help="register, list and remove relying parties, rotate their API keys; "
        "set and show their push policy",
    )
    rp_sub = rp.add_subparsers(dest="rp_command", required=True, metavar="ACTION")
    add = rp_sub.add_parser(
        "add",
        help="register an RP; prints its id and API key",
        description="Register a relying party. The API key is shown once and stored only as a hash: "
        "keep it in the RP's secret store. Devices show the name as plain text: control and format "
        "characters are refused.",
        epilog="""examples:
  pushauth-broker rp add "Contoso Portal"
  pushauth-broker rp add "Contoso Portal" --json --redis-url redis://10.0.0.5:6379/0 > rp.json""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", help="display name shown on devices, e.g. 'Contoso Portal'")
    add.add_argument("--json", action="store_true", help='print {"id", "name", "api_key"} as JSON')
    _add_store_args(add)
    lst = rp_sub.add_parser(
        "list", help="list registered RPs, and which still take a previous key (rotate-key --keep-old)"
    )
    lst.add_argument("--json", action="store_true", help="print JSON")
    _add_store_args(lst)
    rm = rp_sub.add_parser(
        "remove",
        help="remove an RP: its API key stops working within seconds, its devices are revoked",
        description="Remove a relying party: its API key and policy are deleted, every credential of "
        "its users is revoked (online devices are told at once and can no longer authenticate) and its "
        "pending sign-in requests end (withdrawn). It asks for no confirmation and cannot be undone: "
        "the RP's users enroll again with an RP added anew.",
        epilog="example:\n  pushauth-broker rp remove rp_Cm-Kvhqvpefc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rm.add_argument("rp_id", help="the RP id printed by `rp add`")
    _add_store_args(rm)
    rot = rp_sub.add_parser(
        "rotate-key",
        help="give an RP a new API key; the old one ends at once or after --keep-old",
        description="Replace an RP's API key: the new key is shown once, the old one stops working "
        f"on every node within {RP_CACHE_S:g} seconds (a leaked key), or after --keep-old minutes so "
        "that the RP can switch to the new key without a refused request. The RP's users, devices "
        "and pending sign-ins are not touched.",
        epilog="""examples:
  pushauth-broker rp rotate-key rp_Cm-Kvhqvpefc                  # leaked: the old key ends now
  pushauth-broker rp rotate-key rp_Cm-Kvhqvpefc --keep-old 60    # routine: both work for an hour""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rot.add_argument("rp_id", help="the RP id printed by `rp add`")
    rot.add_argument(
        "--keep-old",
        type=int,
        default=0,
        metavar="MINUTES",
        help=f"how long the old key keeps working, 0..{MAX_KEEP_OLD_MIN} (default: 0, it ends now); "
        "a key kept from an earlier rotation ends now either way",
    )
    rot.add_argument("--json", action="store_true", help='print {"id", "name", "api_key"} as JSON')
    _add_store_args(rot)
    end = rp_sub.add_parser(
        "end-old-key",
        help="end now the previous API key that `rotate-key --keep-old` kept working",
        description="End the RP's previous API key, kept working by `rp rotate-key --keep-old`, now "
        f"rather than when its minutes are up: every node refuses it within {RP_CACHE_S:g} seconds. The "
        "current key is not touched. `rp list` shows which RPs have such a key and until when.",
        epilog="example:\n  pushauth-broker rp end-old-key rp_Cm-Kvhqvpefc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    end.add_argument("rp_id", help="the RP id printed by `rp add`")
    _add_store_args(end)
    add_rp_policy_commands(rp_sub, _add_store_args)
    return parser


def check_rp(args: argparse.Namespace) -> None:
    """Refuse bad `rp` arguments before Redis (and redis-py, the store, asyncio) is
    imported or reached: what needs no stored state to be judged."""
    from .cli_common import CliError, check_redis_url

    check_redis_url(args.redis_url)
    rp_id = getattr(args, "rp_id", None)
    if rp_id is not None and (not rp_id.isascii() or not rp_id.isprintable()):
        # No RP has such an id (they are ASCII); not UTF-8 (bytes from the shell), it was
        # "'utf-8' codec can't encode character '\udcff'..." from inside redis-py.
        raise CliError(f"no relying party with id {rp_id!r}")
    if args.rp_command == "add":
        args.name = args.name.strip()
        if not 1 <= len(args.name) <= 256:
            raise CliError("the RP name must be 1 to 256 characters")
        # Devices show it as plain text (docs/protocol.md, section 18.4).
        if (bad := text.first_unsafe(args.name)) is not None:
            raise CliError(f"the RP name {text.refusal(bad)}")
    elif args.rp_command == "rotate-key" and not 0 <= args.keep_old <= MAX_KEEP_OLD_MIN:
        raise CliError(f"--keep-old must be 0 to {MAX_KEEP_OLD_MIN} minutes")


async def rp_command(args: argparse.Namespace) -> None:
    from .cli_common import CliError
    from .command import open_redis
    from .store import Store

    async with open_redis(args) as redis:
        store = Store(redis, node="cli")
        if args.rp_command == "add":
            rp, key = await store.add_rp(args.name)  # check_rp stripped and checked it
            _show_key(args, rp, key)
            if not args.json:
                print("The API key is shown only now; the broker keeps a hash of it.", file=sys.stderr)
        elif args.rp_command == "rotate-key":
            rp = await store.get_rp(args.rp_id)
            key = await store.rotate_rp_key(args.rp_id, args.keep_old * 60) if rp is not None else None
            if rp is None or key is None:
                raise CliError(f"no relying party with id {args.rp_id!r}")
            _show_key(args, rp, key)
            old = (
                f"works for {args.keep_old} more minute(s)"
                if args.keep_old
                else f"stops working within {RP_CACHE_S:g} seconds"
            )
            print(f"The new API key is shown only now; the old one {old}.", file=sys.stderr)
        elif args.rp_command == "end-old-key":
            if await store.get_rp(args.rp_id) is None:
                raise CliError(f"no relying party with id {args.rp_id!r}")
            if await store.end_kept_key(args.rp_id):
                print(f"The previous API key of {args.rp_id} stops working within {RP_CACHE_S:g} seconds.")
            else:
                print(f"{args.rp_id} has no previous API key working; nothing to end.")
        elif args.rp_command == "list":
            rps = await store.list_rps()
            # A key kept by `rotate-key --keep-old` still signs in: an operator who
            # rotated after a leak must be able to see that it does, and until when.
            kept = await store.kept_keys([r.id for r in rps])
            if args.json:
                print(
                    json.dumps(
                        [
                            {"id": r.id, "name": r.name, "previous_key_ends": _ends(kept.get(r.id))}
                            for r in rps
                        ]
                    )
                )
            elif not rps:
                print("no relying parties registered (add one with `pushauth-broker rp add NAME`)")
            else:
                for r in rps:
                    line = f"{r.id}  {text.printable(r.name)}"  # one stored before names were checked
                    if r.id in kept:
                        line += (
                            f"  (its previous API key works until {_ends(kept[r.id])}; "
                            f"`rp end-old-key {r.id}` ends it now)"
                        )
                    print(line)
        else:
            try:
                await rp_policy_command(args, store)
            except ValueError as exc:
                raise CliError(str(exc)) from None


def _ends(remaining_ms: int | None) -> str | None:
    """When a kept key ends, as UTC ISO 8601 to the second (None: no key kept)."""
    if remaining_ms is None:
        return None
    ends = datetime.now(UTC) + timedelta(milliseconds=remaining_ms)
    return ends.strftime("%Y-%m-%dT%H:%M:%SZ")


def _show_key(args: argparse.Namespace, rp: RelyingParty, key: str) -> None:
    """An RP's new API key, on stdout: shown this once (`rp add`, `rp rotate-key`)."""
    if args.json:
        print(json.dumps({"id": rp.id, "name": rp.name, "api_key": key}))
    else:
        print(f"RP id:   {rp.id}\nname:    {text.printable(rp.name)}\nAPI key: {key}")


def _run(main: Callable[[], Coroutine[Any, Any, None]], *, exit_after: bool = False) -> None:
    import asyncio

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
        if exit_after:
            _exit_now()


def _exit_now() -> None:
    """The server has stopped: state is in Redis, devices were told, requests answered,
    the embedded Redis stopped. Exit without tearing down what is left one object at a
    time: cancelling the tasks of 18,000 device connections and freeing their objects
    took seconds after the broker had otherwise stopped."""
    logging.shutdown()
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(serve_options=words[:1] == ["serve"]).parse_args(argv)
    if args.command == "serve":
        import socket

        args.node = args.node or f"{socket.gethostname()}-{os.getpid()}"
    return run(args, words)


def run(args: argparse.Namespace, words: Sequence[str]) -> int:
    import socket

    from . import cpus
    from .activation import ActivationError
    from .cli_common import CliError

    # Read by open_redis: a --data-dir given with a Redis URL is said to be unused.
    args.data_dir_given = any(w == "--data-dir" or w.startswith("--data-dir=") for w in words)
    try:
        if args.command == "serve":
            from .serve_options import check_serve

            # Before anything is imported or started: a refusal costs the parser only.
            settings = check_serve(args)
            args.listen_sock = _listening_socket(args)  # before anything else is imported
        else:
            check_rp(args)
        from . import logs  # (it imports redis-py)

        logs.configure(
            getattr(args, "log_level", "WARNING"),
            getattr(args, "log_format", "text"),
            getattr(args, "node", None) or "cli",
            [logs.PathFilter()],  # every logger's lines, the access log's too
        )
        if args.command == "serve":
            _serve(args, words, settings)
        elif args.command == "rp":
            import asyncio

            asyncio.run(rp_command(args))  # an admin command: no need of uvloop's speed
    except (CliError, ActivationError, cpus.CpusError) as exc:
        print(f"pushauth-broker: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rp show ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except (socket.gaierror, UnicodeError) as exc:  # --host: not an address, or a name that is not
        reason = getattr(exc, "strerror", None) or exc
        print(f"pushauth-broker: cannot listen on {getattr(args, 'host', '?')}: {reason}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken, a --data-dir that cannot be made
        print(f"pushauth-broker: {_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _listening_socket(args: argparse.Namespace) -> socket.socket | None:
    """The socket `serve` was given (systemd's, or a supervisor's --listen-fd); else, for
    one process, its own, made before the server's modules are imported
    (activation.listen_early); else None: the server binds --host and --port itself."""
    from .activation import listening_socket, systemd_socket

    if args.listen_fd is not None:
        return listening_socket(args.listen_fd)
    sock = systemd_socket()
    if sock is None and args.workers == 1 and not args.reuse_port:
        sock = _listen_early(args.host, args.port)
    return sock


def _serve(args: argparse.Namespace, words: Sequence[str], settings: Settings) -> None:
    """`serve` with accepted arguments and its listening socket: the server's modules."""
    from .cli_common import CliError

    if args.workers != 1:
        import asyncio

        from .workers import WorkersError, supervise

        try:
            asyncio.run(supervise(args, list(words)))
        except WorkersError as exc:
            raise CliError(str(exc)) from None
    else:
        from . import serve_cli

        _run(lambda: serve_cli.serve(args, settings), exit_after=True)


def _listen_early(host: str, port: int) -> socket.socket | None:
    """The listening socket for --host and --port (activation.listen_early), or None
    when it does not apply (a host name) or the bind fails: serve binds again then, and
    says why."""
    from .activation import LISTEN_BACKLOG, listen_early

    try:
        return listen_early(host, port, LISTEN_BACKLOG)
    except OSError:
        return None


def _os_error(exc: OSError) -> str:
    """The system's reason, with the file it was about when it names one."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


if __name__ == "__main__":
    sys.exit(main())
