"""`pushauth-rp`: run the demo relying party and manage its users.

    pushauth-rp serve --broker http://127.0.0.1:8700 [--db FILE] [--host H] [--port P]
    pushauth-rp user add NAME [--password-stdin] [--db FILE]
    pushauth-rp user passwd NAME [--password-stdin] [--db FILE]
    pushauth-rp user tap NAME [--minutes N] [--db FILE]
    pushauth-rp user delete NAME --broker URL --yes [--db FILE]

The broker API key comes from the environment (PUSHAUTH_RP_API_KEY) or a file
(--api-key-file), never from the command line, where every local user could read it.

Each command imports what it needs when it runs (the database, the password hashing,
the form checks; the web app and aiohttp only for `serve`): every run builds the whole
parser, which needs none of them (docs/performance.md, "Command start-up").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from protocol import numbers
from protocol import text as shown_text
from protocol.challenge import MAX_TTL_S, MIN_TTL_S

from .host.config import BY_POLICY, CONTEXT_VALUE_MAX, policy_summary
from .web import access_pass

if TYPE_CHECKING:
    from aiohttp import web

    from .web.db import Database

PROG = "pushauth-rp"
DEFAULT_DB = "pushauth-rp.db"
API_KEY_ENV = "PUSHAUTH_RP_API_KEY"


class CliError(Exception):
    """Bad input or environment: one line on stderr, exit status 1."""

    exit_code = 1


class UsageError(CliError):
    """A wrong argument or option value, found before anything is done: exit status 2,
    as argparse's own usage errors (a missing argument, a word that is no number)."""

    exit_code = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts and people read the reason first.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="The pushauth demo relying party: a web sign-in with push approval and number matching.",
        epilog="exit codes: 0 done; 1 failed (no database, no such user, the broker refused or "
        "could not be reached, ...); 2 usage error (a missing or wrong argument or option value; "
        "nothing done); 130 interrupted",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    serve = sub.add_parser("serve", help="run the web app", description="Run the demo relying party web app.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8471, help="port to listen on (default: 8471)")
    serve.add_argument(
        "--db", type=Path, default=Path(DEFAULT_DB), help=f"SQLite database (default: {DEFAULT_DB})"
    )
    serve.add_argument("--broker", required=True, help="the broker's HTTP URL, e.g. http://127.0.0.1:8700")
    serve.add_argument(
        "--api-key-file", type=Path, help=f"file holding the RP's broker API key (default: ${API_KEY_ENV})"
    )
    serve.add_argument("--name", default="pushauth demo portal", help="application name shown on devices")
    serve.add_argument(
        "--app-url",
        help="where the phone app (the web authenticator) is served, linked from the setup page: "
        "e.g. https://push.example.com/app/ when the broker runs with --webapp (default: no link)",
    )
    serve.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark cookies Secure (use when the site is served over https)",
    )
    serve.add_argument(
        "--digits",
        type=int,
        help=f"digits of the sign-in number, {numbers.MIN_DIGITS}..{numbers.MAX_DIGITS} (default: not sent, "
        f"{BY_POLICY} decides: 2 unless set with pushauth-broker rp set)",
    )
    serve.add_argument(
        "--ttl",
        type=int,
        help=f"seconds a push request stays valid, {MIN_TTL_S}..{MAX_TTL_S} (default: not sent, "
        f"{BY_POLICY} decides: 60 unless set with pushauth-broker rp set)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS_OR_CIDR",
        help="a reverse proxy whose X-Forwarded-For is believed (repeat for each; default: none, "
        "the header is ignored)",
    )

    user = sub.add_parser("user", help="manage users", description="Manage the demo's users.")
    user_sub = user.add_subparsers(dest="user_command", required=True, parser_class=OneLineParser)
    for name, text in (("add", "create a user"), ("passwd", "set a user's password")):
        cmd = user_sub.add_parser(name, help=text, description=text.capitalize() + ".")
        cmd.add_argument("name", help="user name: letters, digits, . _ - @ (at most 64)")
        cmd.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
        cmd.add_argument(
            "--db", type=Path, default=Path(DEFAULT_DB), help=f"SQLite database (default: {DEFAULT_DB})"
        )
    tap = user_sub.add_parser(
        "tap",
        help="issue a temporary access pass",
        description=(
            "Issue a temporary access pass: the user signs in with it after the password, in place "
            "of the push, once, and can then add a new device. An unused earlier pass stops working. "
            "The pass is printed once; only its hash is kept."
        ),
    )
    tap.add_argument("name", help="the user's name")
    tap.add_argument(
        "--minutes",
        type=int,
        default=access_pass.DEFAULT_MINUTES,
        help=f"how long it stays valid, {access_pass.MIN_MINUTES}..{access_pass.MAX_MINUTES} "
        f"(default: {access_pass.DEFAULT_MINUTES})",
    )
    tap.add_argument(
        "--db", type=Path, default=Path(DEFAULT_DB), help=f"SQLite database (default: {DEFAULT_DB})"
    )
    delete = user_sub.add_parser(
        "delete",
        help="delete a user here and erase them at the broker",
        description=(
            "Delete a user for good (the right to erasure): first the broker erases everything it "
            "holds about them (their devices are told at once), then this database forgets them: "
            "password, devices, TOTP secrets, sign-in activity, recovery codes, access passes. "
            "When the broker cannot be asked, nothing is deleted: run it again."
        ),
    )
    delete.add_argument("name", help="the user's name")
    delete.add_argument("--broker", required=True, help="the broker's HTTP URL, e.g. http://127.0.0.1:8700")
    delete.add_argument(
        "--api-key-file", type=Path, help=f"file holding the RP's broker API key (default: ${API_KEY_ENV})"
    )
    delete.add_argument(
        "--yes", action="store_true", help="delete without asking (required: it cannot be undone)"
    )
    delete.add_argument(
        "--db", type=Path, default=Path(DEFAULT_DB), help=f"SQLite database (default: {DEFAULT_DB})"
    )
    return parser


def _delete_command(args: argparse.Namespace) -> None:
    import asyncio

    from .web import forms

    try:
        name = forms.user_name(args.name)
    except forms.FormError as exc:
        raise UsageError(exc.message) from None
    _broker_url(args.broker)
    if not args.db.exists():
        raise CliError(f"no database {args.db} (the demo keeps it in its data folder: --db FILE)")
    key = _api_key(args)
    db = _open_db(args.db)
    try:
        user = db.user_by_name(name)
        if user is None:
            raise CliError(f"no user {name!r}")
        if not args.yes:
            raise UsageError(f"deleting {name} cannot be undone: pass --yes")
        asyncio.run(_erase_at_broker(args.broker, key, user.handle))
        db.delete_user(user.id)  # only once the broker has erased them: a retry finds the user
    finally:
        db.close()
    print(f"user {name} deleted: erased at the broker and here")


async def _erase_at_broker(broker: str, api_key: str, handle: str) -> None:
    from .errors import PushAuthError
    from .sdk import PushAuthClient

    try:
        async with PushAuthClient(broker, api_key) as client:
            await client.erase_user(handle)
    except PushAuthError as exc:
        raise CliError(f"the broker did not erase the user ({exc}): nothing deleted, run it again") from None


def _tap_command(args: argparse.Namespace) -> None:
    import datetime

    from .web import forms

    try:
        name = forms.user_name(args.name)
    except forms.FormError as exc:
        raise UsageError(exc.message) from None
    if not access_pass.MIN_MINUTES <= args.minutes <= access_pass.MAX_MINUTES:
        # Checked before the database is opened: a usage error, whatever the database holds.
        raise UsageError(
            f"--minutes: a temporary access pass lasts {access_pass.MIN_MINUTES} to "
            f"{access_pass.MAX_MINUTES} minutes, not {args.minutes}"
        )
    if not args.db.exists():
        raise CliError(f"no database {args.db} (the demo keeps it in its data folder: --db FILE)")
    db = _open_db(args.db)
    try:
        user = db.user_by_name(name)
        if user is None:
            raise CliError(f"no user {name!r}")
        try:
            secret, expires = access_pass.issue(db, user.id, args.minutes)
        except access_pass.BadMinutes as exc:
            raise UsageError(f"--minutes: {exc}") from None
    finally:
        db.close()
    until = datetime.datetime.fromtimestamp(expires / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"temporary access pass for {user.name}: {secret}")
    print(f"valid until {until}, for one sign-in; give it to {user.name} only, it is not shown again")


def _read_password(from_stdin: bool) -> str:
    import getpass

    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CliError("the passwords do not match")
    return first


def _user_command(args: argparse.Namespace) -> None:
    from .web import forms, passwords
    from .web.db import UserExists

    try:
        name = forms.user_name(args.name)
    except forms.FormError as exc:
        raise UsageError(exc.message) from None
    password = _read_password(args.password_stdin)
    problem = passwords.password_problem(password)
    if problem:
        raise CliError(problem)
    db = _open_db(args.db)
    try:
        if args.user_command == "add":
            if db.user_by_name(name) is not None:
                raise CliError(f"user {name!r} already exists")
            try:
                db.add_user(name, passwords.hash_password(password))
            except UserExists:
                raise CliError(f"user {name!r} already exists") from None
            print(f"user {name} added")
        else:
            user = db.user_by_name(name)
            if user is None:
                raise CliError(f"no user {name!r}")
            db.set_password(user.id, passwords.hash_password(password))
            print(f"password of {name} changed")
    finally:
        db.close()


def _open_db(path: Path) -> Database:
    import sqlite3

    from .web.db import Database

    if path.parent and not path.parent.exists():
        raise CliError(f"folder {path.parent} does not exist")
    try:
        return Database(path)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open database {path}: {exc}") from None
    except OSError as exc:  # a folder, a file it may not write
        raise CliError(f"cannot open database {path}: {exc.strerror}") from None


def _broker_url(value: str) -> str:
    """--broker as the SDK takes it: http(s)://HOST[:PORT][/...], said here in one line
    (the SDK's ValueError for 'http://' or 'http://[::1' was a traceback)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is no number or out of range)
    except ValueError as exc:
        raise UsageError(f"--broker {value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("--broker must be an http:// or https:// URL with a host")
    return value


def _api_key(args: argparse.Namespace) -> str:
    if args.api_key_file is not None:
        try:
            key = args.api_key_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.api_key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise CliError(f"no broker API key: set ${API_KEY_ENV} or pass --api-key-file")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        # One word, as `pushauth-broker rp add` printed it: the SDK refused it with a
        # traceback, and a header cannot carry every character.
        where = args.api_key_file if args.api_key_file is not None else f"${API_KEY_ENV}"
        raise CliError(f"the broker API key in {where} is not one word of printable ASCII (pak_...)")
    return key


def _serve(args: argparse.Namespace) -> None:
    import asyncio
    import logging

    from .web import proxies

    if args.digits is not None and not numbers.MIN_DIGITS <= args.digits <= numbers.MAX_DIGITS:
        raise UsageError(f"--digits must be {numbers.MIN_DIGITS}..{numbers.MAX_DIGITS}")
    if args.ttl is not None and not MIN_TTL_S <= args.ttl <= MAX_TTL_S:
        raise UsageError(f"--ttl must be {MIN_TTL_S}..{MAX_TTL_S} seconds")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be 0..65535")
    _broker_url(args.broker)
    # Every push carries --name in its context, which the broker refuses (400) with a
    # control or invisible character: no sign-in by push would have worked.
    if not 1 <= len(args.name) <= CONTEXT_VALUE_MAX:
        raise UsageError(f"--name must be 1 to {CONTEXT_VALUE_MAX} characters (it is shown on the devices)")
    if (bad := shown_text.first_unsafe(args.name)) is not None:
        raise UsageError(f"--name {shown_text.refusal(bad)} (it is shown on the devices)")
    if args.app_url is not None and not args.app_url.startswith(("http://", "https://")):
        raise UsageError("--app-url must be an http:// or https:// URL")
    try:
        proxies.parse_networks(args.trusted_proxy)
    except ValueError as exc:
        raise UsageError(f"--trusted-proxy: {exc}") from None
    key = _api_key(args)
    _open_db(args.db).close()  # fail here, with a message, if the database cannot be opened
    # Only `serve` needs the web app and aiohttp (0.3 s of imports the user commands skip).
    from .web import client_errors
    from .web.app import create_app
    from .web.config import Settings

    settings = Settings(
        db_path=args.db,
        broker_url=args.broker,
        api_key=key,
        app_name=args.name,
        app_url=args.app_url,
        secure_cookies=args.secure_cookies,
        push_digits=args.digits,
        push_ttl=args.ttl,
        trusted_proxies=tuple(args.trusted_proxy),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    client_errors.install()  # a malformed request: one debug line, not an ERROR with a traceback
    asyncio.run(_run(create_app(settings), args.host, args.port, policy_summary(args.digits, args.ttl)))


async def _run(app: web.Application, host: str, port: int, summary: str) -> None:
    import asyncio
    import signal

    from aiohttp import web

    # Open event streams (push pages) would hold a graceful stop for aiohttp's default
    # 60 s; they reconnect by themselves, so a short grace is enough.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"{PROG} listening on http://{host}:{bound}", flush=True)
        print(f"sign-in {summary}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print(f"{PROG} stopping", flush=True)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args)
        elif args.user_command == "tap":
            _tap_command(args)
        elif args.user_command == "delete":
            _delete_command(args)
        else:
            _user_command(args)
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
