"""Verification-code accounts: show codes, add, import and export.

These work on the vault alone (no broker). They return data and raise errors;
the CLI and the terminal UI print.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import broker_clock, qr_images, totp
from .accounts_model import OtpAccount, name_problem, secret_problem
from .display import shown_clipped
from .errors import UsageError
from .importers import migration, otpauth
from .importers.report import ExportResult, ImportReport, ImportSourceError, Refused, merge
from .importers.sources import MAX_SOURCE_BYTES, is_password_protected, parse_sources
from .links import check_link_command, takes
from .options import EXPORT_FORMATS
from .store import AccountStore, Entry


@dataclass(frozen=True, slots=True)
class CodeLine:
    name: str
    code: str | None  # None: an HOTP account not asked for by name (showing it uses it up)
    seconds_left: int | None  # TOTP only
    kind: str
    needs_action: bool
    revoked: bool = False  # the service removed the account: its codes no longer work there


def code_line(entry: Entry, otp: OtpAccount, at: float) -> CodeLine:
    left = int(totp.seconds_left(at, otp.period) + 0.999) if otp.kind == "totp" else None
    return CodeLine(entry.name, totp.code(otp, at), left, otp.kind, entry.needs_action, entry.revoked)


def codes(store: AccountStore, name: str | None = None, at: float | None = None) -> list[CodeLine]:
    """Current codes of every account with a code generator, or of one account.

    An HOTP code is used up once shown (the service moves its counter on), so it is
    shown, and its counter advanced in the vault, only when the account is named.
    A push account's TOTP codes are shown on its broker's clock when this device's is
    off by at most CODE_CORRECTION_MAX_MS (code_clock).
    """
    now = time.time() if at is None else at
    if name is not None:
        entry = store.find_entry(name)
        if entry.otp is None:
            raise UsageError(f'"{entry.name}" has no verification codes (push sign-in only)')
        line = code_line(entry, entry.otp, now + _shift_s(store, entry))
        if entry.otp.kind == "hotp":
            store.replace_otp(entry.name, entry.otp.advanced())
        return [line]
    out = []
    for entry in store.entries():
        if entry.otp is None:
            continue
        if entry.otp.kind == "hotp":
            out.append(CodeLine(entry.name, None, None, "hotp", entry.needs_action, entry.revoked))
        else:
            out.append(code_line(entry, entry.otp, now + _shift_s(store, entry)))
    return out


@dataclass(frozen=True, slots=True)
class CodeClock:
    """How the codes of one broker's accounts are timed: `shift_ms` added to this
    device's clock (0: its own), and what to tell the user (None: nothing)."""

    shift_ms: int
    note: str | None


def code_clock(home: Path, broker: str) -> CodeClock:
    """Codes of `broker`'s accounts follow its clock as last measured (broker_clock),
    within CODE_CORRECTION_MAX_MS; further off, this device's own clock, with a warning."""
    off = broker_clock.measured(home, broker)
    if off is None:
        return CodeClock(0, None)
    if abs(off) <= broker_clock.CODE_QUIET_MS:
        return CodeClock(off, None)
    wrong = broker_clock.wrong_clock(off, broker)
    if abs(off) <= broker_clock.CODE_CORRECTION_MAX_MS:
        return CodeClock(
            off,
            f"{wrong}; the codes of its accounts are shown on the broker's clock meanwhile,"
            " those of other accounts here are wrong until then",
        )
    limit = broker_clock.CODE_CORRECTION_MAX_MS // 60_000
    return CodeClock(
        0,
        f"{wrong}; services will refuse the codes shown here until then (off by more than"
        f" {limit} min, the codes are not shown on the broker's clock)",
    )


def clock_notes(store: AccountStore) -> list[str]:
    """One note per broker whose accounts' codes are shown and whose clock is far off."""
    brokers = dict.fromkeys(
        e.account.broker for e in store.entries() if e.account is not None and e.otp is not None
    )
    return [n for b in brokers if (n := code_clock(store.home, b).note) is not None]


def _shift_s(store: AccountStore, entry: Entry) -> float:
    if entry.account is None or entry.otp is None or entry.otp.kind != "totp":
        return 0.0  # an imported account's codes never follow a pushauth broker's clock
    return code_clock(store.home, entry.account.broker).shift_ms / 1000


def _held(store: AccountStore) -> list[tuple[str, OtpAccount]]:
    return [(e.name, e.otp) for e in store.entries() if e.otp is not None]


def add_uri(store: AccountStore, text: str, name: str | None = None) -> Entry:
    """Add one otpauth:// URI as a verification-code account."""
    try:
        otp = otpauth.parse_uri(text)
    except ImportSourceError as exc:
        raise UsageError(exc.message) from None
    if (problem := secret_problem(otp.secret)) is not None:
        raise UsageError(f"{shown_clipped(otp.label)}: {problem}; nothing was added")
    if name is None and (problem := name_problem(otp.label)) is not None:
        raise UsageError(f"its label {shown_clipped(otp.label)} cannot name it ({problem}): give --name NAME")
    for held_name, held in _held(store):
        if held.same_codes_as(otp):
            raise UsageError(f'this account is already here as "{held_name}"; nothing was added')
    return store.add_otp(otp, name)


def read_sources(sources: Sequence[str]) -> list[tuple[str, bytes]]:
    """The (name, bytes) of each thing given to import: a URI on the command line
    (named "", as it is its own label), else a file."""
    read: list[tuple[str, bytes]] = []
    for source in sources:
        check_link_command(source, "import")
        if takes("import", source):
            read.append(("", source.encode()))
            continue
        try:
            with open(source, "rb") as fh:  # bounded: the parser refuses more than this anyway
                read.append((source, fh.read(max(MAX_SOURCE_BYTES, qr_images.MAX_IMAGE_BYTES) + 1)))
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    return read


def import_sources(
    store: AccountStore, sources: Sequence[tuple[str, bytes]], password: str | None
) -> ImportReport:
    """Add every new account of one or more exports; duplicates and refusals are
    reported by name, and nothing is added if one source is not an export at all."""
    try:
        parsed = parse_sources(sources, password=password)
    except ImportSourceError as exc:
        raise UsageError(exc.message) from None
    report = merge([otp for _, otp in _held(store)], parsed)
    if report.added:
        store.add_many_otp(report.added)
    return report


def needs_password(sources: Sequence[tuple[str, bytes]]) -> bool:
    return any(is_password_protected(data) for _, data in sources)


# A push-only account in an export: named, never left out in silence (the web app says
# the same of its push-only accounts, js/export.js).
NO_CODES = (
    "it has no verification codes (sign-in requests stay with this device: on a new device, "
    "restore a backup or add the account again at the service)"
)


def export(store: AccountStore, fmt: str) -> ExportResult:
    """Every account with a code generator, in list order, as URIs of format `fmt`;
    push-only accounts and what the format cannot hold are refused by name."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r} ({' or '.join(EXPORT_FORMATS)})")
    entries = store.entries()
    accounts = [e.otp for e in entries if e.otp is not None]
    if not accounts:
        raise UsageError("there are no verification-code accounts to export")
    written = otpauth.export_uris(accounts) if fmt == "otpauth" else migration.export_uris(accounts)
    push_only = [Refused(e.name, NO_CODES) for e in entries if e.otp is None]
    return ExportResult(written.uris, [*push_only, *written.refused])
