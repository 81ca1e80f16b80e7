"""`pushauth-pam`: enroll a host's users, manage their devices, check the configuration,
and the pam_exec mode.

    pushauth-pam [--config FILE] enroll USER     QR code + link, test push, store the device
    pushauth-pam [--config FILE] devices USER [--json]
                                                 the user's devices as this host stores them
    pushauth-pam [--config FILE] remove USER DEVICE [--here-only]
                                                 revoke a device at the broker, delete it here
    pushauth-pam [--config FILE] check-config    read the configuration, say what it means
    pushauth-pam [--config FILE] pam-line        the pam.d line for libpam-python, this install
    pushauth-pam [--config FILE] exec            for pam_exec (no prompts: push only)

The libpam-python module (relying_party/pam/pam_module.py) is the main way: it can
ask for the "code" fallback. `exec` is for hosts without libpam-python:

    auth required pam_exec.so stdout quiet /opt/pushauth/.venv/bin/pushauth-pam exec

Each command imports what it needs when it runs: `exec` runs on every sign-in (and
returns at once for a PAM_TYPE other than auth), the SDK and aiohttp are most of a
run's CPU, and `--help`, `check-config`, `pam-line` and `devices` need no client
(docs/performance.md, "Command start-up").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ..host import devices
from . import mapping
from .config import DEFAULT_PATH, Config, ConfigError, load

if TYPE_CHECKING:
    from ..sdk import PushAuthClient

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
    devices.add_commands(
        sub,
        who="a local user's",
        user_help="the local account (mapped to its pushauth user by the configuration)",
        store="this host's store",
    )
    sub.add_parser(
        "check-config",
        help="read the configuration and say what it means",
        description="Read --config as a sign-in would and say what it means; a wrong, missing or "
        "misspelled key, or a file others may write, is one line naming it (exit 1). The broker "
        "is not asked.",
    )
    sub.add_parser(
        "pam-line",
        help="print the pam.d line that loads the module for this installation",
        description="Print the auth line for /etc/pam.d/SERVICE that loads the libpam-python "
        "module of this installation with this --config (made absolute).",
    )
    sub.add_parser(
        "exec",
        help="authenticate PAM_USER for pam_exec (push only, no prompts)",
        description="For hosts without libpam-python: authenticate PAM_USER (with PAM_SERVICE, "
        "PAM_RHOST, PAM_TTY) as pam_exec sets them, printing the number for pam_exec's stdout "
        "option and waiting for the push; there is no verification code fallback. In /etc/pam.d: "
        "auth required pam_exec.so stdout quiet /path/to/pushauth-pam --config FILE exec",
        epilog="exit codes: 0 allow, 1 deny, 2 configuration error (pam_exec turns any "
        "non-zero status into PAM_SYSTEM_ERR: pamtester says 'System error'); any PAM_TYPE "
        "other than auth exits 0 at once.",
    )
    return parser


def _config(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _enroll(args: argparse.Namespace) -> None:
    import asyncio
    import pwd

    from ..errors import PushAuthError
    from ..host.store import StoreError
    from .enroll import EnrollError, enroll

    config = _config(args.config)
    try:
        pwd.getpwnam(args.user)
    except KeyError:
        raise CliError(f"no local user {args.user!r} on this host") from None
    name = _pushauth_user(config, args.user)
    try:
        asyncio.run(enroll(config, args.user, name, out=sys.stdout))
    except (EnrollError, StoreError, PushAuthError) as exc:
        raise CliError(str(exc)) from None


def _pushauth_user(config: Config, local: str) -> str:
    """The pushauth user of local account `local`, by the configuration's mapping. For
    `devices` and `remove` the local account need not exist any more: a departed user's
    devices can still be listed and removed."""
    name = mapping.pushauth_user(config, local)
    if name is None:
        raise CliError(f"{local!r} has no pushauth user (users.map_file has no line for it)")
    return name


def _unknown(local: str, exc: devices.UnknownUser) -> CliError:
    import pwd

    try:
        pwd.getpwnam(local)
    except KeyError:
        return CliError(f"no local user {local!r} on this host, and {exc}")
    return CliError(str(exc))


def _devices(args: argparse.Namespace) -> None:
    from ..host.store import StoreError

    config = _config(args.config)
    name = _pushauth_user(config, args.user)
    try:
        devices.show(config.store, name, who=args.user, as_json=args.json, out=sys.stdout)
    except devices.UnknownUser as exc:
        raise _unknown(args.user, exc) from None
    except (devices.DeviceError, StoreError) as exc:
        raise CliError(str(exc)) from None


def _remove(args: argparse.Namespace) -> None:
    import asyncio
    import shlex

    from ..host.store import StoreError

    config = _config(args.config)
    name = _pushauth_user(config, args.user)

    def client() -> PushAuthClient:
        from ..sdk import PushAuthClient

        return PushAuthClient(config.broker_url, config.api_key, request_timeout=config.request_timeout)

    try:
        removed = asyncio.run(
            devices.remove(config.store, client, name, args.device, here_only=args.here_only, who=args.user)
        )
    except devices.UnknownUser as exc:
        raise _unknown(args.user, exc) from None
    except (devices.DeviceError, StoreError) as exc:
        raise CliError(str(exc)) from None
    config_arg = [] if args.config == DEFAULT_PATH else ["--config", str(args.config)]
    again = shlex.join([PROG, *config_arg, "remove", args.user])
    print(devices.report(removed, who=args.user, again=again))


def _check(args: argparse.Namespace) -> None:
    from ..host.config import policy_summary

    c = _config(args.config)
    if c.audit_file is not None:
        # Sign-ins do not wait on it (a full disk must not decide one), so its lines would
        # be lost in silence: said here, where the administrator checks the file.
        if c.audit_file.exists() and not c.audit_file.is_file():
            raise CliError(
                f"pam.audit_file: {c.audit_file} is not a regular file: no audit line could be written"
            )
        if not c.audit_file.parent.is_dir():
            raise CliError(
                f"pam.audit_file: the folder {c.audit_file.parent} does not exist: "
                "no audit line could be written"
            )
    print(f"broker: {c.broker_url} (API key read from its root-only file)")
    print(f"store: {c.store}")
    print(f"when the broker is unreachable: {'allow (fail open)' if c.fail_open else 'deny (fail closed)'}")
    users = (
        f"map file ({len(c.user_map)} users)" if c.user_map is not None else f"template {c.user_template!r}"
    )
    print(f"users: {users}; bypass groups: {', '.join(c.bypass_groups) or 'none'}")
    print(f"{policy_summary(c.digits, c.push_ttl)}; broker requests {c.request_timeout:g} s")
    # Where the audit lines go is what an administrator looks for first.
    sinks = [sink for sink in ("syslog (authpriv)" if c.syslog else "", str(c.audit_file or "")) if sink]
    print(f"audit lines: {' and '.join(sinks) or 'nowhere (pam.syslog = false, no pam.audit_file)'}")
    print(f"shown on the device: {c.app_name!r}; verification codes: {'yes' if c.code_fallback else 'no'}")


def _pam_line(args: argparse.Namespace) -> None:
    import sysconfig

    from . import pam_module

    module = Path(pam_module.__file__).resolve()
    purelib = sysconfig.get_paths()["purelib"]
    # Absolute: the module runs in the PAM application's working directory (sshd's is /),
    # not the one this command was given a relative --config in.
    words = [str(module), f"site={purelib}", f"config={args.config.absolute()}"]
    print("auth required pam_python.so " + " ".join(_pam_arg(w) for w in words))


def _pam_arg(word: str) -> str:
    """One argument of a pam.d line: PAM splits a line at blanks, so an argument holding one
    goes in [brackets], a ']' in it escaped (pam.conf(5)). Printed bare, a config in
    "/etc/push auth/" was read as config=/etc/push: every sign-in a config_error."""
    if not any(c.isspace() for c in word) and not word.startswith("["):
        return word
    return "[" + word.replace("]", "\\]") + "]"


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
    from . import shell
    from .core import Outcome
    from .flow import Request

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
        elif args.command == "devices":
            _devices(args)
        elif args.command == "remove":
            _remove(args)
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
