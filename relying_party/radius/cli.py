"""`pushauth-radius`: the RADIUS server with push approval, its users' enrollment and
device management.

    pushauth-radius [--config FILE] serve               run the RADIUS server
    pushauth-radius [--config FILE] check-config        read the configuration, say what it means
    pushauth-radius [--config FILE] enroll USER         QR code + link, test push, store the device
    pushauth-radius [--config FILE] devices USER [--json]
                                                        the user's devices as the store has them
    pushauth-radius [--config FILE] remove USER DEVICE [--here-only]
                                                        revoke a device at the broker, delete it here

Each command imports what it needs when it runs: the server (Redis's asyncio client,
pyrad, the engine) only for `serve`, the SDK's client (aiohttp) only for the commands
that talk to the broker; `--help` needs none of them (docs/performance.md, "Command
start-up").
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from protocol import text

from ..errors import PushAuthError
from ..host import devices
from ..host.store import StoreError
from . import config, core

if TYPE_CHECKING:
    from ..sdk import PushAuthClient

PROG = "pushauth-radius"
DEFAULT_CONFIG = Path("/etc/pushauth/radius.toml")

DESCRIPTION = """\
A RADIUS server for VPN gateways that adds push approval with number matching.

The gateway sends an Access-Request with the user's name and password (PAP). The
password is checked by an upstream RADIUS server ([first_factor] mode = "upstream"),
or was checked by the gateway already (mode = "gateway"). Then the user's devices get
a push, and the gateway gets an Access-Challenge saying "Type 47 in your
authenticator, then press Enter". The follow-up Access-Request (with the State) gets
Access-Accept once the device's signed approval with that number is verified here;
a 6-8 digit verification code typed at that prompt is checked as TOTP instead.
Clients marked push_only get no challenge: the first request waits for the approval,
a push without number matching (plain approve / deny on the device), which the
broker's operator must allow for this RP: pushauth-broker rp set RP_ID
--allow-numberless-push (never under nist-800-63b-4; docs/radius.md).
"""

EPILOG = """\
questions:
  Which gateways may ask?  Only the [[client]] entries (address or network, secret);
                        anything else is dropped and logged (decision=drop).
  Message-Authenticator?  Required on every Access-Request; without it, or wrong
                        (a wrong shared secret), the packet is dropped and logged.
  Gateway timeout?      Set the gateway's RADIUS timeout above challenge.answer_wait
                        (default 25 s), and above the push's lifetime for push_only
                        clients: challenge.ttl, or when it is left out the RP's
                        policy at the broker (its ttl, 60 s unless set otherwise).
  Digits and lifetime?  challenge.digits and challenge.ttl are sent only when set;
                        left out, the RP's policy at the broker decides them
                        (pushauth-broker rp set RP --digits/--ttl/--profile).
  Several instances?    Point them at one Redis (radius.redis_url): the State of a
                        challenge is kept there, so any instance can take the answer.
  Audit log?            One line per decision on stderr, or to syslog (authpriv) with
                        radius.syslog = true: decision, outcome, user, client, challenge.
  Broker unreachable?   broker.when_unreachable = "reject" (default, fail closed) or
                        "accept" (fail open: the first factor alone lets users in).

environment:
  PUSHAUTH_RADIUS_API_KEY  the broker API key, when broker.api_key_file is not set

exit codes: 0 done, 1 error (one line on stderr), 2 bad arguments.
See docs/radius.md for every setting and deploy/radius/ for an OpenVPN example.
"""


ACCOUNT_MAX = 256  # the broker's longest account label (POST /v1/enrollments)


class CliError(Exception):
    """A command failed (the server could not start, an enrollment did not complete, a
    user name no user can have): one line on stderr, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _account(value: str) -> str:
    """An --account the broker takes (1 to 256 plain characters), checked before anything is
    created: bytes that are not UTF-8 were sent as a body the broker called 'not valid JSON'."""
    if not 1 <= len(value) <= ACCOUNT_MAX:
        raise argparse.ArgumentTypeError(f"1 to {ACCOUNT_MAX} characters, not {len(value)}")
    if (bad := text.first_unsafe(value)) is not None:
        raise argparse.ArgumentTypeError(text.refusal(bad))
    return value


def _seconds(text: str) -> float:
    """A --timeout: seconds, finite and above 0 (checked before anything is created)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the TOML configuration (default: {DEFAULT_CONFIG})",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    sub.add_parser(
        "serve",
        help="run the RADIUS server",
        description="Run the RADIUS server until SIGINT or SIGTERM. Prints "
        "'pushauth-radius listening on udp HOST:PORT' once it serves.",
    )
    check = sub.add_parser(
        "check-config",
        help="read the configuration and say what it means",
        description="Check the configuration file.",
    )
    check.set_defaults(quiet=False)
    enroll_cmd = sub.add_parser(
        "enroll",
        help="add a user's authenticator (prints a QR code)",
        description="Add an authenticator for USER: prints the enrollment link and its QR code, waits "
        "for the device to enroll, then sends a test push to approve with the number shown. "
        "USER is mapped as the gateway's User-Name is ([users]: realm stripped, lower case).",
    )
    enroll_cmd.add_argument("user", help="the user's name as pushauth-radius sees it (e.g. alice)")
    enroll_cmd.add_argument(
        "--account",
        type=_account,
        help=f"the account label shown on the device: 1 to {ACCOUNT_MAX} characters (default: USER)",
    )
    enroll_cmd.add_argument(
        "--timeout",
        type=_seconds,
        default=600,
        help="seconds to wait for the device and the test push (default: 600)",
    )
    devices.add_commands(
        sub,
        who="a user's",
        user_help="the user's name as pushauth-radius sees it, mapped as for enroll (e.g. alice)",
        store="the user store",
        shared=" (on every instance sharing the store)",
    )
    return parser


def _user(cfg: config.Config, user: str) -> str:
    """The pushauth user of `user`: the server's own mapping, so "CORP\\alice" names the
    alice it looks up."""
    name = core.map_user(user, strip_realm=cfg.strip_realm, lowercase=cfg.lowercase)
    if name is None:
        raise CliError("a user name has 1 to 64 letters, digits, dots, dashes, underscores or @")
    return name


def _remove(cfg: config.Config, args: argparse.Namespace) -> None:
    import asyncio
    import shlex

    name = _user(cfg, args.user)

    def client() -> PushAuthClient:
        from ..sdk import PushAuthClient

        return PushAuthClient(cfg.broker_url, cfg.api_key, request_timeout=cfg.broker_timeout)

    removed = asyncio.run(
        devices.remove(cfg.store, client, name, args.device, here_only=args.here_only, who=name)
    )
    config_arg = [] if args.config == DEFAULT_CONFIG else ["--config", str(args.config)]
    again = shlex.join([PROG, *config_arg, "remove", name])
    print(devices.report(removed, who=name, again=again))


def _describe(cfg: config.Config) -> str:
    from ..host.config import policy_summary

    lines = [
        f"listen: udp {cfg.listen}:{cfg.port}",
        f"broker: {cfg.broker_url} (when unreachable: {cfg.broker_down})",
        f"redis: {cfg.redis_url}",
        f"user store: {cfg.store}",
        f"first factor: {cfg.first_factor}"
        + (f" ({cfg.upstream.host}:{cfg.upstream.port})" if cfg.upstream else " (checked by the gateway)"),
        f"challenge: {policy_summary(cfg.digits, cfg.ttl)}; answer wait {cfg.answer_wait:g} s",
    ]
    lines += [
        f"client {c.name}: {c.network}"
        + (" (push only: no number; needs the RP's policy --allow-numberless-push)" if c.push_only else "")
        for c in cfg.clients
    ]
    lines += [f"warning: {w}" for w in config.short_secrets(cfg)]
    return "\n".join(lines)


def _serve(cfg: config.Config) -> None:
    import asyncio

    from . import audit
    from .server import StartError, serve

    try:
        audit.setup(syslog=cfg.audit_syslog)
    except OSError as exc:
        raise CliError(
            f"radius.syslog: cannot log to syslog ({audit.SYSLOG_SOCKET}): {exc.strerror}; "
            "start a syslog daemon (journald, rsyslog), or set syslog = false for stderr"
        ) from None
    try:
        asyncio.run(serve(cfg))
    except StartError as exc:
        raise CliError(str(exc)) from None


def _enroll(cfg: config.Config, args: argparse.Namespace) -> None:
    import asyncio

    from .enroll import EnrollError, enroll

    name = _user(cfg, args.user)
    try:
        asyncio.run(enroll(cfg, name, account=args.account, timeout=args.timeout, out=sys.stdout))
    except EnrollError as exc:
        raise CliError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
        if args.command == "check-config":
            print(_describe(cfg))
        elif args.command == "serve":
            _serve(cfg)
        elif args.command == "enroll":
            _enroll(cfg, args)
        elif args.command == "devices":
            name = _user(cfg, args.user)
            devices.show(cfg.store, name, who=name, as_json=args.json, out=sys.stdout)
        else:
            _remove(cfg, args)
    except (config.ConfigError, CliError, StoreError, devices.DeviceError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except PushAuthError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
