"""The exit codes and examples of `pushauth-agent` and each of its commands, in one place.

The general meaning of each exit code is written once (EXIT_MEANINGS); each command
lists the codes it can end with (COMMAND_EXITS), with words of its own only where
they say more than the general meaning. `--help` of the agent shows the general
table; `COMMAND --help` shows that command's codes and examples (EXAMPLES).
"""

from __future__ import annotations

import textwrap

from .errors import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE

EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_REFUSED: "the broker was asked and refused, or has no such thing",
    EXIT_USAGE: "bad arguments or input (a file, the passphrase, the vault); nothing was sent",
    EXIT_UNREACHABLE: "a broker could not be reached, or the connection broke",
}

# Per command: the codes it can end with; None = the general meaning above.
_BAD_INPUT = None
_UNREACHABLE = None
# Commands that only read and write this device's vault: never 1 or 3 (a failed
# automatic backup after a change is a warning, not a failure of the command).
_OFFLINE: dict[int, str | None] = {EXIT_OK: None, EXIT_USAGE: _BAD_INPUT}

COMMAND_EXITS: dict[str, dict[int, str | None]] = {
    "enroll": {
        EXIT_OK: "the account was added (the service's test notification is still to approve)",
        EXIT_REFUSED: "the broker refused: the setup link is used, withdrawn or expired, ...",
        EXIT_USAGE: "bad URI or device name, an image without its QR code, an unencrypted remote "
        "broker, or the account is here already and no --again off a terminal; nothing was sent. Or "
        "the account could not be saved here: the key just registered was revoked",
        EXIT_UNREACHABLE: _UNREACHABLE,
    },
    "accounts": _OFFLINE,
    "listen": {
        EXIT_OK: "stopped (Ctrl-C, SIGTERM, or the end of input); a broker that is down is retried",
        EXIT_USAGE: "bad input, or passwd changed the vault's passphrase meanwhile (start it again)",
    },
    "pending": {
        EXIT_OK: "every broker was asked (what is waiting is listed; maybe nothing)",
        EXIT_USAGE: "no active accounts, or bad input",
        EXIT_UNREACHABLE: "a broker could not be asked (named; what the others have is listed)",
    },
    "approve": {
        EXIT_OK: "the broker recorded the answer, whatever the outcome (a wrong number too)",
        EXIT_REFUSED: "the broker refused: no such request (it was answered, cancelled, replaced or "
        "has expired), ...",
        EXIT_USAGE: "a malformed number or id, or no active accounts; nothing was sent",
        EXIT_UNREACHABLE: _UNREACHABLE,
    },
    "deny": {
        EXIT_OK: "the broker recorded the answer",
        EXIT_REFUSED: "the broker refused: no such request (it was answered, cancelled, replaced or "
        "has expired), ...",
        EXIT_USAGE: "a malformed id, an id that names several requests, or no active accounts; "
        "nothing was sent",
        EXIT_UNREACHABLE: _UNREACHABLE,
    },
    "recovery": {
        EXIT_OK: "the broker recorded the answer",
        EXIT_REFUSED: "no such open question (answered already, or withdrawn)",
        EXIT_USAGE: "a malformed id, or bad input; nothing was sent",
        EXIT_UNREACHABLE: "a broker could not be reached; after confirm or disown also: a recovery key or "
        "a backup could not be renewed (each named)",
    },
    "remove": {
        EXIT_OK: "removed (or, with --local-only or when it had no valid key, forgotten here), or "
        "kept because the question was not answered y",
        EXIT_REFUSED: "the broker refused the revocation (the account stays)",
        EXIT_USAGE: "no such account, or not on a terminal and no --yes; nothing was sent",
        EXIT_UNREACHABLE: "the broker could not be reached: the account was NOT removed",
    },
    "ui": {
        EXIT_OK: "quit",
        EXIT_USAGE: "stdin or stdout is not a terminal, or bad input, or passwd changed the vault's "
        "passphrase meanwhile (start it again)",
    },
    "code": {EXIT_OK: None, EXIT_USAGE: "no such account, or it has no codes"},
    "add": {
        EXIT_OK: None,
        EXIT_USAGE: "not a usable otpauth:// URI (or no image of one), or the name is taken",
    },
    "rename": {EXIT_OK: None, EXIT_USAGE: "no such account, or the new name is taken"},
    "move": {EXIT_OK: None, EXIT_USAGE: "no such account, or no such position"},
    "import": {
        EXIT_OK: "something was added, or all of it is here already (each named)",
        EXIT_REFUSED: "nothing in it was usable (each refused one named, with the reason)",
        EXIT_USAGE: "a file cannot be read or is no export (an image without such a QR code), or "
        "the password is wrong; nothing was added",
    },
    "export": {EXIT_OK: None, EXIT_USAGE: "bad input, or --no-qr without --format migration"},
    "backup": {
        EXIT_OK: "written (or deleted, turned on or off, shown)",
        EXIT_REFUSED: "the broker refused it, or (delete) has no such backup",
        EXIT_USAGE: "bad arguments; a missing folder or an existing file; a weak passphrase",
        EXIT_UNREACHABLE: "the broker could not be reached; retire: a recovery key or a backup "
        "could not be renewed (each named)",
    },
    "restore": {
        EXIT_OK: 'restored (accounts that need action are listed as "action required")',
        EXIT_REFUSED: "the broker has no backup there under this name for this passphrase and backup "
        "code (any of them may be mistyped)",
        EXIT_USAGE: "a malformed backup code, the wrong passphrase of a backup file, a damaged file, "
        "or a home with accounts already",
        EXIT_UNREACHABLE: "restored, but a recoverable account could not reach its broker: it keeps "
        "its recovery key (pushauth-agent reactivate ACCOUNT, once the broker can be reached); "
        "do not restore again",
    },
    "reactivate": {
        EXIT_OK: "the new key was registered (the test notification is still to approve); without "
        "URI: recovered",
        EXIT_REFUSED: "the broker refused (the link is used or expired; without URI: the recovery "
        "key), or the link is for another user",
        EXIT_USAGE: "bad URI, an active account, or a link for another service; without URI: an "
        "account with no recovery key; nothing was sent. Or the new key could not be saved here: it "
        "was revoked, the account stays as it was",
        EXIT_UNREACHABLE: _UNREACHABLE,
    },
    "passwd": {
        EXIT_OK: "changed, and the recovery keys and backups renewed",
        EXIT_USAGE: "the current passphrase is wrong, or the new one weak or the same; nothing was changed",
        EXIT_UNREACHABLE: "the passphrase WAS changed, but a recovery key or a broker backup could "
        "not be renewed (each named; then: backup retire)",
    },
}

EXAMPLES: dict[str, list[str]] = {
    "enroll": [
        "pushauth-agent enroll 'pushauth://enroll?v=2&broker=wss://...' --name 'work laptop'",
        "pushauth-agent enroll ~/Pictures/setup-screenshot.png    # the page's QR code",
    ],
    "approve": ["pushauth-agent pending", "pushauth-agent approve ch_7Hq2 --number 47"],
    "deny": ["pushauth-agent deny ch_7Hq2", "pushauth-agent deny ch_7Hq2 --fraud    # this wasn't me"],
    "pending": [
        "pushauth-agent pending",
        "pushauth-agent pending --json | jq '.[] | select(.type == \"sign_in\")'",
    ],
    "listen": [
        "pushauth-agent listen",
        "pushauth-agent listen --no-input    # only print; answer with approve/deny",
    ],
    "backup": [
        "pushauth-agent backup --to ~/Sync/pushauth.backup",
        "pushauth-agent backup auto on --to broker --backup-name phones",
        "pushauth-agent backup delete --from broker --backup-name phones",
    ],
    "restore": [
        "pushauth-agent --home ~/new-phone restore --from ~/Sync/pushauth.backup",
        "pushauth-agent restore --from broker --broker wss://push.example.com/v1/device --backup-name phones",
    ],
    "code": ["pushauth-agent code", "pushauth-agent code 'ACME: alice' --json"],
    "remove": [
        "pushauth-agent remove 'GitHub: carol'",
        "pushauth-agent remove 'GitHub: carol' --yes    # in a script",
    ],
    "export": ["pushauth-agent export > codes.txt", "pushauth-agent export --format migration"],
    "import": [
        "pushauth-agent import aegis-export.json",
        "pushauth-agent import 'otpauth-migration://offline?data=...'",
        "pushauth-agent import export-1.jpg export-2.jpg    # photos of each QR code of the export",
    ],
}


def _entries(codes: dict[int, str | None]) -> list[str]:
    lines = []
    for code, words in codes.items():
        text = words or EXIT_MEANINGS[code]
        lines += textwrap.wrap(text, width=80, initial_indent=f"  {code}  ", subsequent_indent="     ")
    return lines


def main_exit_codes() -> str:
    """The general table, for `pushauth-agent --help`."""
    return "\n".join(
        [
            "exit codes (each command's --help lists the ones it uses):",
            *_entries({code: None for code in EXIT_MEANINGS}),
            "  130  interrupted (Ctrl-C)",
            "  141  the reader of its output went away (| head): it stops quietly, as on SIGPIPE",
        ]
    )


def command_epilog(name: str) -> str:
    """Examples (for the commands used most) and the exit codes of command `name`."""
    lines = []
    if name in EXAMPLES:
        lines += ["examples:", *(f"  {example}" for example in EXAMPLES[name]), ""]
    lines += ["exit codes:", *_entries(COMMAND_EXITS[name]), ""]
    lines.append("environment and files: see pushauth-agent --help")
    return "\n".join(lines) + "\n"
