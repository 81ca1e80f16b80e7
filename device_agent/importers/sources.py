"""Recognize what the user gave to `import` and hand it to the right importer.

Accepted: an Aegis vault export (JSON), or text with one URI per line, where each
line is an otpauth:// URI or an otpauth-migration:// URI (a scanned QR code of
Google Authenticator's export; give every code of a multi-code export). Blank lines
and # comments are skipped; any other line is refused by line number.
"""

from __future__ import annotations

import json

from . import aegis, migration, otpauth
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

MAX_SOURCE_BYTES = 16 * 1024**2


def is_password_protected(data: bytes) -> bool:
    """Whether `parse_source` will need a password (an encrypted Aegis file)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    try:
        return aegis.looks_like_aegis(doc) and aegis.is_encrypted(data)
    except ImportSourceError:
        return False  # parse_source will report what is wrong with it


def parse_source(data: bytes, *, password: str | None = None) -> Parsed:
    """All accounts in `data`, with refusals and notes. Whole-source problems raise
    ImportSourceError (unrecognized, malformed, password required or wrong)."""
    if len(data) > MAX_SOURCE_BYTES:
        raise ImportSourceError(ImportErrorCode.MALFORMED, "the file is too large for an account export")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportSourceError(
            ImportErrorCode.UNRECOGNIZED,
            "not a supported export (Aegis .json, otpauth:// or otpauth-migration:// text)",
        ) from None
    if text.lstrip().startswith("{"):
        return aegis.parse(data, password)
    return parse_lines(text)


def parse_lines(text: str) -> Parsed:
    parsed = Parsed()
    batches: list[migration.MigrationBatch] = []
    recognized = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scheme = line.partition(":")[0].lower()
        if scheme == "otpauth":
            recognized = True
            parsed.extend(otpauth.parse_lines([line], first_line=number))
        elif scheme == "otpauth-migration":
            recognized = True
            try:
                batch = migration.parse_uri(line)
            except ImportSourceError as exc:
                parsed.refused.append(Refused(f"line {number} (Google Authenticator export)", exc.message))
                continue
            batches.append(batch)
            parsed.extend(batch.parsed)
        else:
            parsed.refused.append(Refused(f"line {number}", "not an otpauth:// or otpauth-migration:// URI"))
    if not recognized:
        raise ImportSourceError(
            ImportErrorCode.UNRECOGNIZED,
            "no otpauth:// or otpauth-migration:// URI found (nor an Aegis .json vault)",
        )
    parsed.notes += migration.missing_codes(batches)
    return parsed
