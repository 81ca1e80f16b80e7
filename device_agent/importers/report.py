"""The common result types of every importer and exporter, and the merge step."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.text import printable_clipped

from ..accounts_model import OtpAccount, name_problem, secret_problem


class ImportErrorCode(enum.StrEnum):
    UNRECOGNIZED = "unrecognized"  # no importer knows this input
    MALFORMED = "malformed"  # the source is damaged as a whole
    UNSUPPORTED_VERSION = "unsupported_version"
    PASSWORD_REQUIRED = "password_required"
    WRONG_PASSWORD = "wrong_password"
    CRYPTO_UNAVAILABLE = "crypto_unavailable"
    INVALID_ACCOUNT = "invalid_account"  # a single URI given on its own is refused


class ImportSourceError(Exception):
    """The whole source cannot be read. Single bad entries are `Refused` instead."""

    def __init__(self, code: ImportErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry that could not be carried over. `label` is how the source names it
    (its issuer and name where readable, else its position); `reason` says why."""

    label: str
    reason: str


@dataclass(slots=True)
class Parsed:
    """What one source holds: valid accounts in source order and refused entries.

    `notes` are source-level remarks a person must see (e.g. a QR code of a
    multi-code Google Authenticator export that was not given).
    """

    accounts: list[OtpAccount] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Parsed) -> None:
        self.accounts += other.accounts
        self.refused += other.refused
        self.notes += other.notes


@dataclass(frozen=True, slots=True)
class Duplicate:
    account: OtpAccount  # the one that was skipped
    existing: OtpAccount  # the one already held (or added earlier in the same import)


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: list[OtpAccount]
    duplicates: list[Duplicate]
    refused: list[Refused]
    notes: list[str]

    def lines(self) -> list[str]:
        """One line per account and note, for the CLI to print."""
        out = [f"added: {a.label}" for a in self.added]
        for d in self.duplicates:
            same = "" if d.existing.label == d.account.label else f" (same as {d.existing.label})"
            out.append(f"skipped, duplicate: {d.account.label}{same}")
        out += [f"refused: {r.label}: {r.reason}" for r in self.refused]
        out += [f"note: {n}" for n in self.notes]
        out.append(f"{len(self.added)} added, {len(self.duplicates)} duplicate, {len(self.refused)} refused")
        return out


def merge(existing: Sequence[OtpAccount], parsed: Parsed) -> ImportReport:
    """Sort parsed accounts into added and duplicates (of held ones or of each other).

    The caller appends `report.added` to its accounts, in this order.
    """
    held = list(existing)
    added: list[OtpAccount] = []
    duplicates: list[Duplicate] = []
    refused = list(parsed.refused)
    for account in parsed.accounts:
        # A label the list cannot show (a control character, an ANSI sequence, 300
        # characters) is refused by name as the web app refuses it: the store would
        # refuse it too, and with it the whole import, naming none.
        problem = name_problem(account.label)
        if problem is not None:
            refused.append(Refused(printable_clipped(account.label), problem))
            continue
        problem = secret_problem(account.secret)
        if problem is not None:
            refused.append(Refused(printable_clipped(account.label), problem))
            continue
        twin = next((h for h in held if h.same_codes_as(account)), None)
        if twin is None:
            added.append(account)
            held.append(account)
        else:
            duplicates.append(Duplicate(account, twin))
    return ImportReport(added, duplicates, refused, list(parsed.notes))


@dataclass(frozen=True, slots=True)
class ExportResult:
    """URIs (or QR-code payloads) written, and accounts the target format cannot hold."""

    uris: list[str]
    refused: list[Refused]
