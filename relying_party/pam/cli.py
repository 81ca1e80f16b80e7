"""`pushauth-pam`: enroll a host's users, check the configuration, and the pam_exec mode.

    pushauth-pam [--config FILE] enroll USER     QR code + link, test push, store the device
    pushauth-pam [--config FILE] check-config    read the configuration, say what it means
    pushauth-pam [--config FILE] pam-line        the pam.d line for libpam-python, this install
    pushauth-pam [--config FILE] exec            for pam_exec (no prompts: push only)

The libpam-python module (relying_party/pam/pam_module.py) is the main way: it can
ask for the "code" fallback. `exec` is for hosts without libpam-python:

    auth required pam_exec.so stdout quiet /opt/pushauth/.venv/bin/pushauth-pam exec
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import sys
import sysconfig
import time
from pathlib import Path
from typing import NoReturn

from ..errors import PushAuthError
from ..host.store import StoreError
from . import mapping, pam_module, shell
from .config import DEFAULT_PATH, Config, ConfigError, load
from .core import Outcome
from .enroll import EnrollError, enroll
from .flow import Request

PROG = "pushauth-pam"


class CliError(Exception):
    """Bad input or environment: one line on stderr, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Push approval with number matching for PAM (SSH, sudo).")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_PATH, help=f"the TOML configuration (default: {DEFAULT_PATH})"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add = sub.add_parser(
        "enroll",
        help="add a local user's authenticator (QR code in the terminal)",
        description="Print an enrollment QR code and link for USER, wait for the device, "
        "send a test push and store the device.",
    )
    add.add_argument("user", help="the local account (mapped to its pushauth user by the configuration)")
    sub.add_parser("check-config", help="read the configuration and say what it means")
    sub.add_parser("pam-line", help="print the pam.d line that loads the module for this installation")
    sub.add_parser("exec", help="authenticate PAM_USER for pam_exec (push only, no prompts)")
    return parser


def _config(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _enroll(args: argparse.Namespace) -> None:
    config = _config(args.config)
    try:
        pwd.getpwnam(args.user)
    except KeyError:
        raise CliError(f"no local user {args.user!r} on this host") from None
    name = mapping.pushauth_user(config, args.user)
    if name is None:
        raise CliError(f"{args.user!r} has no pushauth user (users.map_file has no line for it)")
    try:
        asyncio.run(enroll(config, args.user, name, out=sys.stdout))
    except (EnrollError, StoreError, PushAuthError) as exc:
        raise CliError(str(exc)) from None


def _check(args: argparse.Namespace) -> None:
    c = _config(args.config)
    print(f"broker: {c.broker_url} (API key read from its root-only file)")
    print(f"store: {c.store}")
    print(f"when the broker is unreachable: {'allow (fail open)' if c.fail_open else 'deny (fail closed)'}")
    users = (
        f"map file ({len(c.user_map)} users)" if c.user_map is not None else f"template {c.user_template!r}"
    )
    print(f"users: {users}; bypass groups: {', '.join(c.bypass_groups) or 'none'}")
    print(f"number: {c.digits} digits; push valid {c.push_ttl} s; broker requests {c.request_timeout:g} s")


def _pam_line(args: argparse.Namespace) -> None:
    module = Path(pam_module.__file__).resolve()
    purelib = sysconfig.get_paths()["purelib"]
    print(f"auth required pam_python.so {module} site={purelib} config={args.config}")


class _ExecConversation:
    """pam_exec's `stdout` option shows what we print; nothing can be typed back."""

    interactive = False

    def prompt(self, text: str, *, echo: bool) -> str | None:
        return None

    def info(self, text: str) -> None:
        print(text, flush=True)

    def error(self, text: str) -> None:
        print(text, flush=True)


def _exec(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if os.environ.get("PAM_TYPE", "auth") != "auth":
        return 0  # account, session, password: nothing of ours to check
    user = os.environ.get("PAM_USER", "")
    if not user:
        raise CliError("no PAM_USER: run by pam_exec (auth ... pam_exec.so stdout ... pushauth-pam exec)")
    request = Request(
        user=user,
        service=os.environ.get("PAM_SERVICE", "-"),
        rhost=os.environ.get("PAM_RHOST") or None,
        tty=os.environ.get("PAM_TTY") or None,
        ruser=os.environ.get("PAM_RUSER") or None,
    )
    decision = shell.decide(args.config, request, _ExecConversation(), started)
    return 0 if decision.allowed else (2 if decision.outcome is Outcome.CONFIG_ERROR else 1)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "enroll":
            _enroll(args)
        elif args.command == "check-config":
            _check(args)
        elif args.command == "pam-line":
            _pam_line(args)
        else:
            return _exec(args)
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
