"""Exports that hold each account as an otpauth:// link, or as its parts, in a JSON
or CSV file of their own: Bitwarden (JSON and CSV, the login's "totp" field), Proton
Authenticator (JSON) and FreeOTP+ (JSON). Each entry is read as the otpauth importer
reads a link (a Steam one, steam://, refused by its type); a bare base32 secret, as
Bitwarden allows, becomes a 30 s, 6-digit TOTP account named after its item.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .entries import account, collect, from_link, malformed, text
from .report import Parsed, Refused

BITWARDEN_CSV_COLUMNS = {"name", "login_totp"}


def looks_like_bitwarden(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("items"), list) and "encrypted" in doc


def looks_like_proton(doc: Any) -> bool:
    entries = doc.get("entries") if isinstance(doc, dict) else None
    return isinstance(entries, list) and all(isinstance(e, dict) and "content" in e for e in entries)


def looks_like_freeotp_plus(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("tokens"), list) and "tokenOrder" in doc


def looks_like_bitwarden_csv(source: str) -> bool:
    header = source.partition("\n")[0].strip().split(",")
    return set(header) >= BITWARDEN_CSV_COLUMNS


def _item(name: str, totp: Any, fallback: str) -> Any:
    label = name or fallback
    if isinstance(totp, str) and "://" not in totp:  # a bare secret
        return account(fallback, secret=totp, name="", issuer=name, kind="totp")
    return from_link(label, totp)


def parse_bitwarden(doc: Any) -> Parsed:
    """The items of a Bitwarden JSON export that have a TOTP; an encrypted export is
    refused whole (its key is the account's, which we never see)."""
    if doc.get("encrypted") is not False:
        raise malformed(
            "Bitwarden", "it is encrypted: export it from Bitwarden as .json or .csv, unencrypted"
        )
    results = []
    for number, item in enumerate(doc["items"], 1):
        login = item.get("login") if isinstance(item, dict) else None
        totp = login.get("totp") if isinstance(login, dict) else None
        if totp:
            results.append(_item(text(item.get("name")), totp, f"item {number}"))
    return collect(results)


def parse_bitwarden_csv(source: str) -> Parsed:
    rows = csv.DictReader(io.StringIO(source))
    return collect(
        _item(text(row.get("name")), row["login_totp"].strip(), f"row {number}")
        for number, row in enumerate(rows, 2)
        if (row.get("login_totp") or "").strip()
    )


def parse_proton(doc: Any) -> Parsed:
    results = []
    for number, entry in enumerate(doc["entries"], 1):
        content = entry["content"] if isinstance(entry["content"], dict) else {}
        results.append(from_link(text(content.get("name")) or f"entry {number}", content.get("uri")))
    return collect(results)


def _freeotp_secret(value: Any) -> bytes | None:
    """FreeOTP+ writes the secret as Java's signed bytes (-128..127)."""
    if not isinstance(value, list) or not all(type(b) is int and -128 <= b <= 127 for b in value):
        return None
    return bytes(b & 0xFF for b in value)


def parse_freeotp_plus(doc: Any) -> Parsed:
    results: list[Any] = []
    for number, token in enumerate(doc["tokens"], 1):
        if not isinstance(token, dict):
            results.append(Refused(f"token {number}", "not a JSON object"))
            continue
        issuer, name = text(token.get("issuerExt")), text(token.get("label"))
        results.append(
            account(
                f"token {number}",
                secret=_freeotp_secret(token.get("secret")),
                name=name,
                issuer=issuer,
                kind=text(token.get("type")) or "totp",
                algorithm=token.get("algo"),
                digits=token.get("digits", 6),
                period=token.get("period", 30),
                counter=_freeotp_next(token.get("counter", 0)),
            )
        )
    return collect(results)


def _freeotp_next(counter: Any) -> Any:
    """FreeOTP(+) keeps an HOTP token's last used counter (a link with counter=50 is
    stored as 49, and its next code is made with 50); an account here keeps the next
    one, so that its first code is the one FreeOTP+ would show next."""
    return counter + 1 if type(counter) is int else counter
