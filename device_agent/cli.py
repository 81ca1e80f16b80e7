"""`pushauth-agent`: the command-line device agent (argument parsing and printing).

The work is done by actions.py (one-shot commands) and listen.py (the long-running
`listen`); this module parses arguments, prints results and maps failures to one
line on stderr and an exit code.

Each command imports what it needs when it runs, not this module: the commands that
talk to a broker import actions.py (and with it asyncio and websockets), the code,
backup and restore commands their own modules (the importers, the backups' crypto,
the frame types). Every run builds the whole parser, so it takes its choices and
defaults from options.py, which imports nothing. Importing it all up front was most
of every run's CPU, `accounts` and `--help` included (docs/performance.md, "Command
start-up").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import platformdirs

from protocol.codes import Decision, NoticeDecision, NoticeOutcome
from protocol.purpose import purpose_of

from . import auto_backup_status, timeouts
from .display import (
    enrolled_lines,
    entry_json,
    entry_line,
    notice_json,
    notice_text,
    request_json,
    request_text,
    shown,
    shown_lines,
)
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    AgentError,
    UsageError,
)
from .help_texts import command_epilog, main_exit_codes
from .messages import notice_outcome_message, outcome_message, removal_loss
from .options import DEFAULT_BACKUP_NAME, DEVICE_NAME_HELP, EXPORT_FORMATS, IMAGE_FORMATS_SAID
from .passphrase import (
    BACKUP_CODE_ENV,
    IMPORT_PASSWORD_ENV,
    KDF_ENV,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    Passphrases,
)
from .store import Account, AccountStore, Entry, State, StoreError

if TYPE_CHECKING:
    from . import backup_actions, recovery_keys

HOME_ENV = "PUSHAUTH_AGENT_HOME"

DESCRIPTION = """\
The pushauth device agent: approve sign-ins with number matching.

Add an account by enrolling the pushauth://enroll URI that a service shows as a QR
code on its security page (or a screenshot of that code). Each account gets its own
Ed25519 key, made on this device and never sent anywhere. Then run `listen` to see
sign-in requests as they come and answer them, or use `pending`, `approve` and `deny`
from scripts. Without a command, on a terminal, the full screen opens (the same as
`ui`: + adds an account there).

Verification codes: `code`, `add otpauth://...`, `import`, `export`. Every key and
secret is kept in one vault encrypted with your passphrase (`passwd` changes it).
Moving to a new device: `backup`, then `restore` there, then `reactivate` the push
accounts marked "action required". When a new device restores a recoverable account,
this device is asked "was this you?" (`listen`, `pending`, `recovery`).

Lost this device? On the new one, `restore` your backup first: verification codes
work at once and recoverable accounts get a new key by themselves. Then, on each
service's security page (signed in with a code, or the service's recovery code),
remove the lost device: its keys stop at once (not before the restore: a removed
device's accounts cannot be recovered), and add the new one for the accounts that
say "action required" (`reactivate`). With no backup, each service's recovery codes
or administrator are the way back in.
"""

EPILOG = f"""\
{main_exit_codes()}

environment:
  {HOME_ENV}  the agent's home directory when --home is not given
                       (default: {platformdirs.user_config_dir("pushauth")})
  {PASSPHRASE_ENV}  the vault passphrase, for scripts (else it is asked on
                       the terminal: twice when the vault is made; up to three
                       times when it is wrong or empty)
  {NEW_PASSPHRASE_ENV}  the new passphrase for `passwd` in scripts
  {BACKUP_CODE_ENV}  the backup code for `restore --from broker` in scripts
  {IMPORT_PASSWORD_ENV}  the password of an encrypted export for `import`
  {timeouts.CONNECT_TIMEOUT_ENV}  seconds to wait for a broker to answer
                       when connecting, and for the reply to each keepalive ping
                       while connected (default {timeouts.OPEN_TIMEOUT_S:g}; a ping goes out
                       every {timeouts.PING_INTERVAL_S:g} s, or this often when it is less):
                       a broker that does not answer is named, `listen` reconnects to
                       it, and the others are served meanwhile
  {KDF_ENV}=test-insecure  FOR TESTS ONLY: new vaults and backups get the
                       cheapest key derivation, which does not protect them

files:
  HOME/vault.pav       every account and its keys and secrets, encrypted with a key
                       derived from the passphrase (Argon2id); mode 0600, HOME 0700.
                       An accounts.json of older agents is moved into it and deleted.
"""


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Version(argparse._VersionAction):
    """argparse's --version, as pushauth-broker has it: the line is made only when asked
    for, since it reads the installed package's metadata, which no other run needs."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib import metadata

        from protocol import SUBPROTOCOLS

        try:
            version = metadata.version("pushauth")
        except metadata.PackageNotFoundError:  # run from a source tree without an install
            version = "unknown"
        self.version = f"pushauth-agent {version} (device protocol {', '.join(SUBPROTOCOLS)})"
        super().__call__(parser, *args, **kwargs)


def build_parser() -> Parser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = Parser(prog="pushauth-agent", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument(
        "--version",
        action=_Version,
        help="print the package and device protocol versions, and exit",
    )
    p.add_argument(
        "--home",
        metavar="DIR",
        type=Path,
        help=f"where accounts and keys are kept (default: ${HOME_ENV}, else the user config dir)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, summary: str, details: str) -> Parser:
        return sub.add_parser(
            name,
            help=summary,
            description=f"{summary}\n\n{details}",
            epilog=command_epilog(name),
            formatter_class=fmt,
        )

    c = command(
        "enroll",
        "Add an account from a pushauth://enroll URI (the text of the service's QR code).",
        "URI is the link the service's security page shows next to its QR code, or an\n"
        f"image of that QR code ({IMAGE_FORMATS_SAID}): a screenshot, or a photo.\n\n"
        "Makes a new key pair for the account, registers its public key with the broker\n"
        "named in the URI (the code in it works once, for a few minutes), and saves the\n"
        "account. If the URI carries a TOTP secret, the account also shows verification\n"
        "codes. An account of the same user at the same service that was revoked is\n"
        "replaced. One that is active here already (same service and account label) is\n"
        "added again only when you say so: asked on a terminal, --again elsewhere; the\n"
        'second one gets a suffix like " (2)" and the service lists two devices.',
    )
    c.add_argument(
        "uri",
        metavar="URI|IMAGE",
        help="the pushauth://enroll?... URI (quote it in the shell), or an image of its QR code",
    )
    c.add_argument(
        "--again",
        action="store_true",
        help="add it even if this device has the account already (a second sign-in method)",
    )
    c.add_argument(
        "--name",
        metavar="NAME",
        help=f"this device's name as the service will list it ({DEVICE_NAME_HELP})",
    )

    c = command("accounts", "List the accounts on this device.", "Never shows keys or secrets.")
    c.add_argument("--json", action="store_true", help="print a JSON list instead of text")

    c = command(
        "listen",
        "Stay connected and answer sign-in requests as they come.",
        "Connects to every broker this device has accounts on (one connection each). When\n"
        "a broker is down or a connection drops it keeps retrying, at most about 60 s\n"
        "apart, and gets the requests it missed on reconnect. A broker that refuses the\n"
        "protocol (a close code 44xx other than 4429 or 4408) is not retried: listen says\n"
        "why and keeps the other brokers.\n\n"
        "Each request shows the service, account, application, IP address, location,\n"
        "browser, time and seconds left; type the number shown on the sign-in screen to\n"
        "approve, n to deny, or r to report that the sign-in was not you (then y to\n"
        "confirm: a report denies it and pauses push requests for the account; anything\n"
        "else goes back to the request). Requests are asked one after another, newest\n"
        "first (a new request from a service normally replaces its older ones: they are\n"
        "dropped with a message). Accounts added or removed by other commands meanwhile\n"
        "are picked up within a second. On a terminal, each new request rings its bell\n"
        "(a sound, a flash or a mark on the tab, as the terminal is set; --no-bell: none).\n\n"
        "Stops on Ctrl-C, SIGTERM, or when input ends (after waiting a few seconds for\n"
        "answers already sent). With --no-input it never reads input: it only prints\n"
        "requests and events until stopped, for use with approve/deny from elsewhere.",
    )
    c.add_argument("--no-input", action="store_true", help="only print; do not read answers from stdin")
    c.add_argument(
        "--no-bell",
        action="store_true",
        help="no terminal bell for a new request (it rings only when the output is a terminal)",
    )

    c = command(
        "pending",
        "Print the sign-in requests waiting for an answer, and exit.",
        "Asks every broker this device has accounts on. Also lists the open recovery\n"
        'questions ("was this you?": a new device restored one of these accounts); answer\n'
        "them with: pushauth-agent recovery confirm|disown ID.\n\n"
        "Each broker's requests are printed as soon as it answered. A broker that cannot\n"
        "be reached, or does not answer within 10 s (hung), is named on stderr at the end\n"
        f"(the 10 s: {timeouts.CONNECT_TIMEOUT_ENV}), and what the others have is still\n"
        'listed; "No sign-in requests are waiting" is said only when every broker\n'
        "answered.\n\n"
        '--json prints one list; each item has a "type": "sign_in" (a request: id, rp,\n'
        'rp_name, account, context, seconds_left, ...), "recovery_notice" (a question), or\n'
        '"unreachable" (a broker that could not be asked: "broker" its URL, "error" why).\n'
        "So [] means that every broker answered and nothing is waiting.",
    )
    c.add_argument("--json", action="store_true", help="print a JSON list instead of text")

    c = command(
        "approve",
        "Approve one sign-in request, typing the number shown on the sign-in screen.",
        "A wrong number is recorded too: it ends the request as denied (number_mismatch),\n"
        'with no second try. A service\'s test notification ("finish adding this device?")\n'
        "is approved the same way, with the number shown on its setup page. A request that\n"
        '`pending` lists with "number: none to compare" (a service that shows no number,\n'
        "such as a VPN client that cannot) is approved without --number: approve it only\n"
        "if you started that sign-in just now.",
    )
    c.add_argument(
        "id", metavar="ID", help="the request id (as `pending` shows it; a unique prefix is enough)"
    )
    c.add_argument(
        "--number",
        "-n",
        metavar="N",
        help="the number shown on the sign-in screen (or the setup page); left out for a request "
        "without a number",
    )

    c = command(
        "deny",
        "Deny one sign-in request.",
        'With --fraud it is reported as "this wasn\'t me": the service is told, and may\n'
        "block push sign-in for the account for a while.",
    )
    c.add_argument(
        "id", metavar="ID", help="the request id (as `pending` shows it; a unique prefix is enough)"
    )
    c.add_argument(
        "--fraud",
        action="store_true",
        help='report "this wasn\'t me": the service is told, and may block push sign-in for a while',
    )

    c = command(
        "recovery",
        'Answer "was this you?" after a new device restored one of your accounts.',
        "When a new device restores a backup holding a recoverable account, it registers\n"
        "its own new key for that account by itself, and this (old) device is asked\n"
        "whether that was you. `pending` (and `listen`) show the open questions with their\n"
        "IDs.\n\n"
        "  recovery confirm ID   yes, it was me: both devices keep working (remove this\n"
        "                        one on the service's security page once the new one works).\n"
        "                        The restore used the account's recovery key, so this device\n"
        "                        gives it a new one and rewrites its automatic and broker\n"
        "                        backups (if the broker cannot be reached: exit 3, and run\n"
        "                        pushauth-agent backup retire once it can)\n"
        "  recovery disown ID    no, it was not me: the new device's key is removed at once\n"
        "                        and push sign-in for the account is paused until the\n"
        '                        service lifts it, as after a "this wasn\'t me" report.\n'
        "                        Someone has your backup and its passphrase: change it,\n"
        "                        and add each account's verification codes again at its\n"
        "                        service (the backup's code secrets still work).\n\n"
        "The answer is signed with this device's key for the account.",
    )
    c.add_argument(
        "decision",
        metavar="confirm|disown",
        choices=[d.value for d in NoticeDecision],
        help="confirm: it was me; disown: it was not me",
    )
    c.add_argument(
        "id", metavar="ID", help="the question's id (as `pending` shows it; a unique prefix is enough)"
    )

    c = command(
        "remove",
        "Remove an account: revoke its key at the broker, then delete it here.",
        "By default nothing is deleted unless the broker confirms the revocation, so\n"
        "the account cannot be left valid at the service with no way to remove it.\n\n"
        "It cannot be undone: a push account needs a new QR code from its service, and a\n"
        "verification-code secret is gone from this device and its automatic backup. So\n"
        "on a terminal it first asks (naming what is lost; anything but y keeps it), and\n"
        "elsewhere (a script, a pipe) it refuses with exit 2 unless given --yes.",
    )
    c.add_argument("account", metavar="ACCOUNT", help="the account name as `accounts` lists it")
    c.add_argument("--yes", "-y", action="store_true", help="remove it without asking")
    c.add_argument(
        "--local-only",
        action="store_true",
        help="if the broker cannot be reached, delete the account here anyway "
        "(then remove this device on the service's security page)",
    )
    command(
        "ui",
        "Open the terminal screen (also what `pushauth-agent` alone does on a terminal).",
        "The account list with live codes and a countdown, and sign-in requests as they\n"
        "come: a dialog shows the service, account and context; type the number shown on\n"
        'the sign-in screen and Enter to approve, Ctrl+N to deny, Ctrl+R to report "this\n'
        "wasn't me\" (then y to confirm, n or Escape to go back), Escape to answer later\n"
        "(a: show it again). q or Ctrl+Q quits. Accounts that need action (restored push\n"
        'accounts) are marked. A "was this you?" question after a new device restored an\n'
        "account opens a dialog too: y (it was me), n (it was not). Each new request rings\n"
        "the terminal's bell.\n\n"
        "+ (or n) adds an account: paste the service's setup link or a verification-code\n"
        "link, or type the path of a screenshot of its QR code, or of an export file; the\n"
        "setup's test notification then comes as a request. c copies the selected account's\n"
        "code (arrow keys select) to the clipboard, through the terminal (OSC 52); r renames\n"
        "it, d or Delete removes it (asked first, as `remove` asks: a push account's key is\n"
        "revoked at the service); Enter on a restored account marked ACTION REQUIRED asks for\n"
        "its new setup link (as reactivate). On a new home the vault's passphrase is asked\n"
        "before the screen opens.\n\n"
        "It needs a terminal: with stdin or stdout not one (a pipe, a file), it refuses\n"
        "(exit 2) and nothing is opened.",
    )

    c = command(
        "code",
        "Print the current verification codes and the seconds each stays valid.",
        "Without ACCOUNT: every account with codes (TOTP). HOTP (counter-based) codes are\n"
        "shown only when the account is named, since showing one uses it up.",
    )
    c.add_argument("account", metavar="ACCOUNT", nargs="?", help="only this account")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")

    c = command(
        "add",
        "Add a verification-code-only account from an otpauth:// URI.",
        "The URI is the text of the QR code a service shows for an authenticator app\n"
        "(otpauth://totp/... or otpauth://hotp/...). Quote it in the shell. Or give an\n"
        f"image of the QR code ({IMAGE_FORMATS_SAID}): a screenshot of the page, or a photo.\n"
        "A secret shorter than 80 bits (16 base32 characters) is refused. A\n"
        "pushauth://enroll link (push sign-in requests) is added with `enroll`, an\n"
        "otpauth-migration:// export with `import`.",
    )
    c.add_argument("uri", metavar="URI|IMAGE", help="the otpauth:// URI, or an image of its QR code")
    c.add_argument("--name", metavar="NAME", help='the name to list it under (default: "Issuer: account")')

    c = command("rename", "Rename an account (on this device only).", "Names are unique on this device.")
    c.add_argument("account", metavar="ACCOUNT", help="the account name as `accounts` lists it")
    c.add_argument("new_name", metavar="NEW_NAME", help="its new name")

    c = command(
        "move",
        "Move an account to another place in the list.",
        "Positions count from 1 (the top). Backups keep the order.",
    )
    c.add_argument("account", metavar="ACCOUNT", help="the account name as `accounts` lists it")
    c.add_argument("position", metavar="POSITION", type=int, help="its new place, 1 = first")

    c = command(
        "import",
        "Import verification-code accounts from another authenticator's export.",
        "FILE is another app's export: Aegis (.json), 2FAS (.2fas), andOTP (.json, or\n"
        "encrypted), Bitwarden (.json or .csv, unencrypted), FreeOTP+ (.json) or Proton\n"
        "Authenticator (.json); for an encrypted one the password is asked, or taken from\n"
        f"{IMPORT_PASSWORD_ENV}. Or a text file with otpauth:// or\n"
        "otpauth-migration:// URIs (Google Authenticator's export QR codes), one per line,\n"
        f"or an image of such QR codes ({IMAGE_FORMATS_SAID}; a screenshot, or a photo of\n"
        "the other phone's screen; one image may hold several codes). A single such URI can\n"
        "be given instead of a FILE. Give every QR code of an export of more than 10\n"
        "accounts in one import (one screenshot each): a missing one is named.\n"
        "Prints what was added, what was skipped as a duplicate and what was refused, by\n"
        "name, with the reason (e.g. a label whose %-escapes are not UTF-8 text, or a\n"
        "secret shorter than 80 bits). If one FILE is no export at all (or an image\n"
        "without such a code), nothing is added.",
    )
    c.add_argument("sources", metavar="FILE|URI", nargs="+", help="export files or images, or URIs")

    c = command(
        "export",
        "Print the verification-code accounts for another authenticator app.",
        "--format otpauth prints one otpauth:// URI per account. --format migration prints\n"
        "Google Authenticator's otpauth-migration:// URIs (at most 10 accounts each) and\n"
        'their QR codes, to scan with the app\'s "Import accounts". Accounts a format\n'
        "cannot hold, and push accounts without codes (their sign-in requests cannot move),\n"
        "are named on stderr with the reason. The output holds the secrets: keep it safe.",
    )
    c.add_argument("--format", choices=EXPORT_FORMATS, default="otpauth", help="default: otpauth")
    c.add_argument(
        "--no-qr", action="store_true", help="with --format migration: print only the URIs (alone: exit 2)"
    )

    c = command(
        "backup",
        "Write an encrypted backup of every account, or turn automatic backups on or off.",
        "backup --to FILE          write the backup to FILE (e.g. in a synced folder that\n"
        "                          exists: a missing folder is refused, not made); an\n"
        "                          existing FILE is replaced only with --force, and never\n"
        "                          the vault, another file in the agent's home, a folder\n"
        "                          or what is not a regular file (a device, a pipe)\n"
        "backup --to broker        store it in the broker's encrypted-backup store\n"
        "backup auto on --to FILE  also rewrite it after every change from now on\n"
        "backup auto off           stop the automatic backups\n"
        "backup auto               say where they go and whether the last one was written;\n"
        "                          a copy that is gone or older than the last one written\n"
        "                          (a broker restored from an older copy) is written again\n"
        "backup delete --from broker   delete a backup from the broker\n"
        "backup delete             delete the automatic backup (its file, or its copy on\n"
        "                          the broker); automatic backups stop\n"
        "backup code               show this device's backup code\n"
        "backup retire             a backup was lost, or its passphrase may be known: give\n"
        "                          every recoverable account a new recovery key (older\n"
        "                          backups then recover nothing; their verification codes\n"
        "                          still work: remove such an account at its service and\n"
        "                          add it again), a new backup code, and rewrite the\n"
        "                          broker and automatic backups, deleting the old copies\n\n"
        "The backup is encrypted with the vault passphrase (Argon2id, XChaCha20-Poly1305)\n"
        "and keeps the accounts' order and names. It holds the verification-code secrets\n"
        "and, for accounts the service enrolled as recoverable, their recovery keys; never\n"
        "the push keys, which stay on this device (a restored push account needs a new\n"
        "QR code from its service: pushauth-agent reactivate).\n\n"
        "On the broker, the backup is kept as ciphertext under keys derived from the\n"
        "passphrase AND a backup code (144 random bits, made by the first backup --to\n"
        "broker and shown then: write it down), with the broker's address and\n"
        "--backup-name. Restoring it needs both (restore --from broker on the new device);\n"
        "whoever steals the broker's whole database cannot even try passphrases without\n"
        "the code. passwd, a recovery disown and backup retire rewrite it and delete\n"
        "the old copy.",
    )
    c.add_argument(
        "auto",
        metavar="auto on|off|delete|code|retire",
        nargs="*",
        help="automatic backups, delete, code, or retire",
    )
    c.add_argument("--to", metavar="FILE|broker", help="where the backup goes")
    c.add_argument("--from", dest="source", metavar="broker", help="with delete: where the backup is")
    c.add_argument("--force", action="store_true", help="with --to FILE: replace an existing regular file")
    broker_options(c)

    c = command(
        "restore",
        "Restore a backup into this (new, empty) home.",
        "Asks for the backup's passphrase, which becomes this vault's passphrase too (a home\n"
        "with an empty vault already, made by listen say, keeps the vault's own passphrase).\n"
        f"From the broker it also asks for the backup code (scripts: {BACKUP_CODE_ENV}).\n"
        'Each account is listed as it comes back. "ready:" verification codes work at once.\n'
        '"recovered:" a push account the service enrolled as recoverable: this device\n'
        "registered its own new key with the backup's recovery key, by itself, and it works\n"
        'at once (the old device is asked "was this you?"). "action required:" any other\n'
        "push account (or a recoverable one whose recovery the broker refused): it needs a\n"
        "new enrollment URI from the service (pushauth-agent reactivate ACCOUNT URI). A\n"
        "recoverable account whose broker could not be reached keeps its recovery key:\n"
        "once the broker is back, pushauth-agent reactivate ACCOUNT (no URI) recovers it.",
    )
    c.add_argument(
        "--from", dest="source", metavar="FILE|broker", required=True, help="the backup file, or broker"
    )
    broker_options(c)
    c.add_argument(
        "--device-name",
        metavar="NAME",
        help="this device's name at the services of recoverable accounts, and later for "
        'reactivate and enroll without --name (default: "pushauth-agent on HOST")',
    )

    c = command(
        "reactivate",
        "Give a restored push account a new key, with a new enrollment URI from its service.",
        "On the service's security page, add this device again (or ask for a new QR code)\n"
        "and give its pushauth://enroll URI here. The account keeps its name and place.\n"
        "As after enroll, the service then sends a test notification: the new key gets\n"
        "sign-in requests once that is approved (pushauth-agent listen, or pending and\n"
        "approve) and the service has confirmed it.\n\n"
        "Without URI: a recoverable account that restore could not recover because the\n"
        "broker could not be reached tries its recovery key again (as restore does: it\n"
        'works at once, and the old device is asked "was this you?").',
    )
    c.add_argument("account", metavar="ACCOUNT", help="the account name as `accounts` lists it")
    c.add_argument(
        "uri",
        metavar="URI",
        nargs="?",
        help="the new pushauth://enroll?... URI, or an image of its QR code; without it, a "
        "recoverable account that restore could not recover (the broker was down) tries its "
        "recovery key again",
    )
    c.add_argument(
        "--name",
        metavar="NAME",
        help=f"this device's name at the service ({DEVICE_NAME_HELP})",
    )

    command(
        "passwd",
        "Change the vault passphrase.",
        "Asks for the current passphrase, then the new one twice (scripts: set\n"
        f"{PASSPHRASE_ENV} and {NEW_PASSPHRASE_ENV}). The vault is rewritten at once.\n"
        "A new passphrase must be hard to guess (at least 12 characters; four or more\n"
        "random words do). Backups on the broker are rewritten under it and their old\n"
        "copies deleted; the backup code stays the same. A listen or screen running\n"
        "meanwhile can no longer read the keys: it stops (exit 2); start it again.",
    )
    return p


def broker_options(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--broker",
        metavar="URL",
        help="with broker: the broker's URL (default: the broker of the first push account)",
    )
    c.add_argument(
        "--backup-name",
        metavar="NAME",
        help=f"with broker: the name of this backup at the broker (default: {DEFAULT_BACKUP_NAME}); "
        "a file has none (with a FILE: exit 2, nothing done)",
    )


def home_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir("pushauth"))


def say(text: str = "") -> None:
    """One message on stdout. Names in it come through display.shown(); shown_lines is
    the last guard for a broker's or RP's words that reach here unescaped: no control
    character gets to the terminal (docs/protocol.md, section 18.4)."""
    print(shown_lines(text), flush=True)


def warn(text: str) -> None:
    print(shown_lines(text), file=sys.stderr, flush=True)


# -- commands ---------------------------------------------------------------------


TEST_NOTIFICATION_HINT = (
    "To approve the service's test notification: pushauth-agent listen (unless it is running)"
)


def cmd_enroll(store: AccountStore, args: argparse.Namespace) -> int:
    from .links import link_argument, parse_uri

    args.uri = link_argument(args.uri, "enroll")
    link = parse_uri(args.uri)  # a bad link is refused before what enrolls is imported
    import asyncio

    from . import actions

    twin = actions.twin_of(store, link)
    if twin is not None and not args.again and not confirm_again(twin):
        say("Nothing was added; the link was not used.")
        return EXIT_OK
    account, replaced = asyncio.run(actions.enroll(store, args.uri, args.name))
    for line in enrolled_lines(account, replaced):
        say(line)
    # The service sends a test notification to finish the setup: it waits at the broker
    # until this device connects, so `listen` may start now or be running already.
    say(TEST_NOTIFICATION_HINT)
    return EXIT_OK


def auto_backup(store: AccountStore, state: State) -> None:
    """The store's on_change: write the automatic backup, if one is set, after a change."""
    from . import backup_actions

    backup_actions.auto_backup_hook(backup_actions.upload, warn)(store, state)


def cmd_accounts(store: AccountStore, args: argparse.Namespace) -> int:
    entries = store.entries()
    if args.json:
        say(json.dumps([entry_json(e) for e in entries], indent=2))
    elif not entries:
        say("No accounts yet (add one with: pushauth-agent enroll URI).")
    else:
        for entry in entries:
            say(entry_line(entry))
    return EXIT_OK


def cmd_code(store: AccountStore, args: argparse.Namespace) -> int:
    from . import otp_actions

    lines = otp_actions.codes(store, args.account)
    for note in otp_actions.clock_notes(store):
        warn(f"Warning: {note}.")
    if args.json:
        say(
            json.dumps(
                [
                    {"name": c.name, "code": c.code, "seconds_left": c.seconds_left, "revoked": c.revoked}
                    for c in lines
                ]
            )
        )
        return EXIT_OK
    if not lines:
        say("No account here has verification codes (add one with: pushauth-agent add otpauth://...).")
    for c in lines:
        flag = "  [action required for push]" if c.needs_action else ""
        if c.revoked:
            flag = "  [revoked: the service removed this account; its codes no longer work]"
        if c.code is None:
            say(f"{c.name}: (HOTP: pushauth-agent code {c.name!r} shows the next code){flag}")
        elif c.seconds_left is None:
            say(f"{c.name}: {c.code}{flag}")
        else:
            say(f"{c.name}: {c.code}  ({c.seconds_left} s left){flag}")
    return EXIT_OK


def cmd_add(store: AccountStore, args: argparse.Namespace) -> int:
    from . import otp_actions
    from .links import link_argument

    uri = link_argument(args.uri, "add")
    entry = otp_actions.add_uri(store, uri, args.name)
    say(f'Added "{entry.name}" (verification codes).')
    return EXIT_OK


def cmd_rename(store: AccountStore, args: argparse.Namespace) -> int:
    entry = store.rename(args.account, args.new_name)
    say(f'Renamed "{args.account}" to "{entry.name}".')
    return EXIT_OK


def cmd_move(store: AccountStore, args: argparse.Namespace) -> int:
    for i, entry in enumerate(store.move(args.account, args.position), 1):
        say(f"{i}. {shown(entry.name)}")
    return EXIT_OK


def cmd_import(store: AccountStore, args: argparse.Namespace) -> int:
    from . import otp_actions

    sources = otp_actions.read_sources(args.sources)
    password = None
    if otp_actions.needs_password(sources):
        password = store.passphrases.other("Password of the exported vault: ", IMPORT_PASSWORD_ENV)
    report = otp_actions.import_sources(store, sources, password)
    for line in report.lines():
        say(line)
    # Nothing usable at all (e.g. one malformed URI): a failure for scripts too.
    return EXIT_REFUSED if report.refused and not report.added and not report.duplicates else EXIT_OK


def cmd_export(store: AccountStore, args: argparse.Namespace) -> int:
    import segno  # 18 ms of every command's start otherwise, and only export draws QR codes

    from . import otp_actions

    if args.no_qr and args.format != "migration":
        # Said but meaning nothing: the user may expect codes the otpauth format never prints.
        raise UsageError("--no-qr goes with --format migration (--format otpauth prints no QR codes)")
    result = otp_actions.export(store, args.format)
    for i, uri in enumerate(result.uris, 1):
        if args.format == "migration" and not args.no_qr:
            say(f"QR code {i} of {len(result.uris)}:")
            segno.make(uri, error="l").terminal(out=sys.stdout, compact=True)
        say(uri)
    for refused in result.refused:
        warn(f"not exported: {refused.label}: {refused.reason}")
    return EXIT_OK


def cmd_pending(store: AccountStore, args: argparse.Namespace) -> int:
    import asyncio

    from . import actions

    def show(requests: list[actions.PendingRequest]) -> None:
        # Printed as each broker answers: a hung one (named at the end, once its connect
        # timeout has passed) does not hold up what the others have.
        for r in requests:
            say(request_text(r.challenge, r.account, r.broker_now_ms))
            say()

    report = asyncio.run(actions.pending(store, None if args.json else show))
    for notice in report.notices:
        warn(notice)
    for failure in report.failures:
        warn(failure)
    if args.json:
        listed = [request_json(r.challenge, r.account, r.broker_now_ms) for r in report.requests]
        listed += [notice_json(q.notice, q.account) for q in report.recoveries]
        # A broker that could not be asked is an item too: [] means "nothing is waiting",
        # never "could not ask".
        listed += [
            {"type": "unreachable", "broker": broker, "error": why}
            for broker, why in zip(report.unreachable, report.failures, strict=True)
        ]
        say(json.dumps(listed))
        return EXIT_UNREACHABLE if report.failures else EXIT_OK
    if not report.requests:
        if not report.unreachable:
            say("No sign-in requests are waiting.")
        elif len(report.unreachable) == report.asked:
            say("No broker could be asked: whether sign-in requests are waiting is not known.")
        else:
            answered = report.asked - len(report.unreachable)
            say(
                f"No sign-in requests are waiting at the {answered} of {report.asked} brokers that "
                f"answered; not known for {', '.join(shown(b) for b in report.unreachable)}."
            )
    else:  # each listed already, as its broker answered
        say(
            "Answer with: pushauth-agent approve ID --number N (no --number where it says "
            '"number: none to compare"), or: pushauth-agent deny ID [--fraud]'
        )
        if report.unreachable:
            say(f"Not asked (could not be reached): {', '.join(shown(b) for b in report.unreachable)}.")
    if report.recoveries:
        say()
        for q in report.recoveries:
            say(notice_text(q.notice, q.account))
            say()
        say("Answer with: pushauth-agent recovery confirm ID (it was me), or: ... recovery disown ID")
    return EXIT_UNREACHABLE if report.failures else EXIT_OK


def cmd_answer(store: AccountStore, args: argparse.Namespace) -> int:
    import asyncio

    from . import actions

    if args.command == "approve":
        decision, number = Decision.APPROVE, (None if args.number is None else args.number.strip())
    else:
        decision, number = (Decision.FRAUD if args.fraud else Decision.DENY), None
    report = asyncio.run(actions.answer(store, args.id, decision, number))
    for notice in report.notices:
        warn(notice)
    challenge = report.request.challenge
    say(f"Request {challenge.ch}: {outcome_message(report.outcome, purpose=purpose_of(challenge.ctx))}.")
    return EXIT_OK


def cmd_recovery(store: AccountStore, args: argparse.Namespace) -> int:
    import asyncio

    from . import actions, backup_actions, recovery_keys

    report = asyncio.run(actions.answer_notice(store, args.id, NoticeDecision(args.decision)))
    for notice in report.notices:
        warn(notice)
    say(f"Recovery question {report.question.notice.notice}: {notice_outcome_message(report.outcome)}.")
    if report.outcome == NoticeOutcome.DISOWNED:
        # Someone restored our backup with our passphrase: new recovery keys (the old
        # ones are in that backup), then a new backup code, and no copy left on the
        # broker that opens with what they know.
        rotated = report_rotation(recovery_keys.rotate_recovery_keys(store))
        renewed = backup_actions.after_secret_change(store, backup_actions.DISOWN)
        return report_secret_change(renewed) or rotated
    if report.outcome == NoticeOutcome.CONFIRMED:
        # The restore used this account's recovery key: a new one, and backups that hold it.
        rotation, rewritten = recovery_keys.after_confirm(store, report.question.notice)
        rotated = report_rotation(rotation)
        return (report_secret_change(rewritten) if rewritten else EXIT_OK) or rotated
    return EXIT_OK


def cmd_remove(store: AccountStore, args: argparse.Namespace) -> int:
    import asyncio

    from . import actions

    if not args.yes and not confirm_removal(store.find_entry(args.account)):
        say("Nothing was removed.")
        return EXIT_OK
    say(asyncio.run(actions.remove(store, args.account, local_only=args.local_only)))
    return EXIT_OK


def confirm_again(twin: Account) -> bool:
    """Ask before `enroll` adds an account this device has already (as the web app
    asks); off a terminal, --again says so instead. Nothing is sent before the answer."""
    has = f'This device already has "{shown(twin.name)}" for {shown(twin.rp_name)} (user {shown(twin.user)})'
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(f"{has}: add --again to add it as a second sign-in method; nothing was sent")
    print(
        f"{has}. Add it again as a second sign-in method? The service will list two devices. [y/N] ", end=""
    )
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")  # "" at the end of input


def confirm_removal(entry: Entry) -> bool:
    """Ask before `remove` loses a key or a code secret for good; off a terminal, --yes
    says so instead (a script that meant another account loses nothing)."""
    account = entry.account
    loss = removal_loss(
        account.rp_name if account else None,
        active_key=account is not None and account.active,
        codes=entry.otp is not None,
    )
    name = shown(entry.name)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(f'removing "{name}" cannot be undone ({loss}): add --yes to remove it')
    print(f'Remove "{name}"? {loss[0].upper()}{loss[1:]}. [y/N] ', end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")  # "" at the end of input


def cmd_passwd(store: AccountStore, args: argparse.Namespace) -> int:
    from . import backup_actions, recovery_keys

    if not store.path.exists() and not store.legacy_path.exists():
        raise StoreError("there is no vault yet (it is made with the first account)")
    store.load()  # the current passphrase, checked before the new one is asked
    old = store.passphrase()
    store.change_passphrase(store.passphrases.new(store.what, env_var=NEW_PASSPHRASE_ENV, current=old))
    say("The vault passphrase was changed.")
    # Backups made with the old passphrase hold the recovery keys: renew those first,
    # so that the rewritten backups carry the new ones.
    rotated = report_rotation(recovery_keys.rotate_recovery_keys(store))
    # Backups follow the new passphrase, and old copies that open with the old one go.
    renewed = backup_actions.after_secret_change(store, backup_actions.PASSWD, old_passphrase=old)
    return report_secret_change(renewed) or rotated


def report_rotation(report: recovery_keys.Rotation) -> int:
    return report_lines(report.lines(), report.failures)


def report_secret_change(report: backup_actions.SecretChange) -> int:
    return report_lines(report.text(), report.failures)


def report_lines(lines: list[str], failures: list[str]) -> int:
    """What was done, then each failure as a warning; any failure fails the command."""
    for line in lines:
        say(line)
    for failure in failures:
        warn(f"pushauth-agent: {failure}")
    return EXIT_UNREACHABLE if failures else EXIT_OK


def backup_target(
    store: AccountStore | None, args: argparse.Namespace, where: str, option: str = "--to"
) -> dict[str, str]:
    from . import backup_actions, broker_http

    if where != backup_actions.BROKER:
        # Said but meaning nothing for a file: whoever gave a name expects to find the
        # backup under it (restore --from broker --backup-name NAME), and would not.
        if args.backup_name is not None:
            raise UsageError(
                f"--backup-name names a backup at the service ({option} broker), not a file: "
                f"leave it out with {option} FILE; nothing was done"
            )
        if args.broker is not None:
            raise UsageError(
                f"--broker says which service keeps a backup ({option} broker), not where a file is: "
                f"leave it out with {option} FILE; nothing was done"
            )
        return {"to": str(Path(where).resolve())}
    broker = args.broker
    if broker is None and store is not None:
        brokers = [a.broker for a in store.load()]
        broker = brokers[0] if brokers else None
    if broker is None:
        raise UsageError("say which broker keeps the backup: --broker URL")
    broker_http.http_base(broker)  # a malformed URL is refused before anything happens
    name = DEFAULT_BACKUP_NAME if args.backup_name is None else args.backup_name
    if not name or len(name) > 64:
        raise UsageError("the backup name must be 1 to 64 characters")
    return {"to": backup_actions.BROKER, "broker": broker, "name": name}


def cmd_backup(store: AccountStore, args: argparse.Namespace) -> int:
    from . import backup_actions

    words = [w.lower() for w in args.auto]
    if words == ["auto", "off"]:
        store.set_setting(backup_actions.AUTO_BACKUP, None)
        auto_backup_status.forget(store.home)
        say("Automatic backups are off.")
        return EXIT_OK
    if words == ["auto"] and args.to is None:
        for line in backup_actions.auto_lines(store):
            say(line)
        return EXIT_OK
    if words == ["delete"]:
        return backup_delete(store, args)
    if words == ["retire"]:
        return backup_retire(store)
    if words == ["code"]:
        code = backup_actions.code_of(store.settings())
        if code is None:
            raise UsageError("this device has no backup code yet (backup --to broker makes one)")
        for line in backup_actions.code_lines(code, new=False):
            say(line)
        return EXIT_OK
    if words not in ([], ["auto", "on"]):
        raise UsageError(
            "expected: backup --to WHERE, backup auto on --to WHERE, backup auto off, backup auto, "
            "backup delete [--from broker], backup code, or backup retire"
        )
    if args.to is None:
        raise UsageError("say where the backup goes: --to FILE, or --to broker")
    if not store.path.exists() and not store.legacy_path.exists():
        raise UsageError("there is nothing to back up yet")
    target = backup_target(store, args, args.to)
    if target["to"] == backup_actions.BROKER:
        data = backup_actions.backup_bytes(store)  # a weak passphrase is refused before a code is made
        code, made = backup_actions.ensure_code(store)
        if made:
            for line in backup_actions.code_lines(code, new=True):
                say(line)
        for line in backup_actions.backup_to_broker(store, target, data, first_code=made):
            say(line)
        where = f"the broker {target['broker']}"
    else:
        backup_actions.check_file_target(store, Path(args.to), force=args.force)
        backup_actions.upload(store, target, backup_actions.backup_bytes(store))
        where = target["to"]
    say(f"Backup written to {where}.")
    if words:
        store.set_setting(backup_actions.AUTO_BACKUP, target)
        say("It is rewritten after every change from now on (backup auto off stops that).")
    if target == backup_actions.auto_target(store.settings()):
        auto_backup_status.written(store.home)  # by hand, where the automatic one goes: current
    return EXIT_OK


def backup_retire(store: AccountStore) -> int:
    """Older backups recover nothing: new recovery keys first (so that the rewritten
    backups carry them), then a new code and no copy left that opens with the old one."""
    from . import backup_actions, recovery_keys

    if not store.path.exists() and not store.legacy_path.exists():
        raise UsageError("there is nothing to retire: this device has no accounts yet")
    store.load()
    rotated = report_rotation(recovery_keys.rotate_recovery_keys(store))
    renewed = backup_actions.after_secret_change(store, backup_actions.RETIRE)
    failed = report_secret_change(renewed) or rotated
    say(backup_actions.OLD_CODES_STILL_WORK)
    return failed


def backup_delete(store: AccountStore, args: argparse.Namespace) -> int:
    from . import backup_actions

    if args.source is None:
        # Alone: the automatic backup, which then stops (or the next change writes it again).
        target = backup_actions.auto_target(store.settings()) if store.path.exists() else None
        if target is None:
            raise UsageError(
                "there is no automatic backup; say which backup to delete: "
                "backup delete --from broker [--backup-name NAME]"
            )
        if target["to"] != backup_actions.BROKER:
            for line in backup_actions.delete_auto_file(store, target):
                say(line)
            return EXIT_OK
    elif args.source != backup_actions.BROKER:
        raise UsageError(
            "backup delete deletes a backup on the broker (--from broker); delete files yourself"
        )
    else:
        target = backup_target(store, args, backup_actions.BROKER)
    for line in backup_actions.delete_from_broker(store, target):
        say(line)
    return EXIT_OK


def cmd_restore(store: AccountStore, args: argparse.Namespace) -> int:
    from . import backup_actions, device_names
    from .backup_keys import BackupCode, BackupCodeError

    device_name = device_names.check_device_name(args.device_name or device_names.default_device_name())
    target = backup_target(None, args, args.source, "--from")
    # A vault made before (by listen, or emptied by remove) keeps the passphrase it was
    # made with: only a new one takes the backup's (adopt_passphrase). Said at the end.
    had_vault = store.path.exists()
    if store.entries():
        raise UsageError("this home has accounts already; restore into a new home (--home DIR)")
    code = None
    if target["to"] == backup_actions.BROKER:
        # A typo is caught before Argon2id, and asked again on a terminal.
        code = store.passphrases.parsed_backup_code(BackupCode.parse, BackupCodeError)

    def opens(passphrase: str) -> backup_actions.Backup:
        return backup_actions.open_backup(backup_actions.download(target, passphrase, code), passphrase)

    passphrase, backup = store.passphrases.opened("the backup", opens)
    store.adopt_passphrase(passphrase)
    report = backup_actions.restore(store, backup, code)
    if args.device_name:  # what reactivate and enroll then use unless --name says otherwise
        store.set_setting(device_names.SETTING, device_name)
    recovered = backup_actions.recover_accounts(store, report.recoverable, device_name)
    lines = report.lines(recovered.lines)
    for line in lines:
        say(line)
    need = sum(line.startswith("action required") for line in lines)
    say(f"{len(lines)} restored, {need} need action")
    if had_vault:
        say(
            "This home had a vault already (empty), so it keeps its own passphrase, not the "
            "backup's: type that one from now on (pushauth-agent passwd changes it)."
        )
    if recovered.unreachable:
        # The restore is done (do not run it again: this home has accounts now), but
        # what it was to do with the broker is not: say so by the exit status too.
        say(
            "The broker could not be reached, so not every recoverable account recovered yet;"
            " run pushauth-agent reactivate ACCOUNT for each once it can (no new QR code needed)."
        )
        return EXIT_UNREACHABLE
    return EXIT_OK


def cmd_reactivate(store: AccountStore, args: argparse.Namespace) -> int:
    import asyncio

    from . import actions, backup_actions, device_names
    from .links import link_argument

    if args.uri is None:
        # Without a link: the recovery that restore could not finish (the broker was
        # down), with the recovery key the backup gave.
        name = device_names.device_name_for(args.name, store.settings())
        again = backup_actions.recover_again(store, args.account, name)
        for line in again.lines.values():
            say(line)
        if again.unreachable:
            return EXIT_UNREACHABLE
        if not store.find(args.account).active:
            return EXIT_REFUSED
        return EXIT_OK
    uri = link_argument(args.uri, "reactivate")
    account = asyncio.run(actions.reactivate(store, args.account, uri, args.name))
    name, rp_name = shown(account.name), shown(account.rp_name)
    say(f'Re-activated "{name}" for {rp_name} with a new key (user {shown(account.user)}).')
    say(f"  this device is listed as: {shown(account.device_name)}")
    # As after enroll: the new key gets ordinary sign-in requests only once the service
    # has confirmed it, after its test notification is approved.
    say(f"Its sign-in requests come once {rp_name} has confirmed the new key with a test notification.")
    say(TEST_NOTIFICATION_HINT)
    return EXIT_OK


def cmd_ui(store: AccountStore, args: argparse.Namespace) -> int:
    from .tui import run_ui  # textual loads in a blink, but only the screen needs it

    return run_ui(store)


def cmd_listen(store: AccountStore, args: argparse.Namespace) -> int:
    # Started before the first `enroll` (as the walkthrough does): the vault is made now,
    # with its new passphrase typed here, so the account `enroll` adds later is read
    # without a passphrase prompt in the middle of listening.
    store.ensure_vault()
    store.load()  # a damaged accounts file is reported before anything starts
    import asyncio

    from .listen import listen  # only this command and the screen need it

    bell = not args.no_bell and sys.stdout.isatty()  # never a BEL in a file or a pipe
    return asyncio.run(listen(store, interactive=not args.no_input, bell=bell))


COMMANDS = {
    "enroll": cmd_enroll,
    "accounts": cmd_accounts,
    "listen": cmd_listen,
    "pending": cmd_pending,
    "approve": cmd_answer,
    "deny": cmd_answer,
    "remove": cmd_remove,
    "recovery": cmd_recovery,
    "passwd": cmd_passwd,
    "code": cmd_code,
    "add": cmd_add,
    "rename": cmd_rename,
    "move": cmd_move,
    "import": cmd_import,
    "export": cmd_export,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "reactivate": cmd_reactivate,
    "ui": cmd_ui,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The one place every command (and --help) exits through."""
    try:
        return run(argv)
    except BrokenPipeError:
        if not stdout_gone():
            raise
        # Whoever reads our output stopped (`export | head -5`): stop quietly, as a
        # program killed by SIGPIPE does, with its status. Point stdout at devnull so
        # that the flush at exit cannot fail again (the Python docs' note on SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def stdout_gone() -> bool:
    """Is stdout a pipe or socket whose reader has gone away?"""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def run(argv: Sequence[str] | None = None) -> int:
    # Scripts and tests read our output through pipes: never sit in a buffer.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    on_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if args.command is None:
        if not on_terminal:
            parser.error("a command is required (the screen opens only on a terminal)")
        args.command = "ui"
    elif args.command == "ui" and not on_terminal:
        # Escape codes into a pipe, and a screen that waits for keys no one can type.
        parser.error(
            "ui: the screen opens only on a terminal (stdin and stdout); "
            "in scripts use listen, pending, approve, deny or code"
        )
    home = home_dir(args.home)
    if home.exists() and not home.is_dir():
        where = "--home" if args.home is not None else (HOME_ENV if os.environ.get(HOME_ENV) else "home")
        warn(f"pushauth-agent: {where} {home} is not a folder (the agent keeps its vault in a folder)")
        return EXIT_USAGE
    store = AccountStore(home, Passphrases())
    store.on_change = auto_backup
    try:
        timeouts.connect_timeout()  # a malformed setting is refused before anything is done
        return COMMANDS[args.command](store, args)
    except AgentError as exc:
        warn(f"pushauth-agent: {exc}")
        return exc.exit_code
    except StoreError as exc:
        warn(f"pushauth-agent: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_gone():
            raise  # nobody reads our output any more: main() stops quietly
        warn(f"pushauth-agent: {exc.filename or 'file'}: {exc.strerror or exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Mostly at a prompt, whose line a hidden passphrase left unended: start a new one.
        start = "\n" if sys.stderr.isatty() else ""
        warn(f"{start}pushauth-agent: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
