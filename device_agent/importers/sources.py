"""Recognize what the user gave to `import` and hand it to the right importer.

Accepted: an Aegis vault export (JSON), a 2FAS backup (.2fas, plain or encrypted), an
andOTP backup (JSON, or encrypted), a Bitwarden export (JSON or CSV), a FreeOTP+ or
Proton Authenticator export (JSON); text with one URI per line, where each
line is an otpauth:// URI or an otpauth-migration:// URI (a scanned QR code of
Google Authenticator's export; give every code of a multi-code export), blank lines
and # comments skipped, any other line refused by line number; or an image of such
QR codes (a screenshot or photo), any other code in it refused by its number.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import qr_images
from ..links import other_command, scheme_of, takes
from ..options import IMAGE_FORMATS_SAID
from . import aegis, andotp, linked, migration, otpauth, twofas
from .entries import json_of
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

MAX_SOURCE_BYTES = 16 * 1024**2
SUPPORTED = (
    "Aegis, 2FAS, andOTP, Bitwarden, FreeOTP+ or Proton Authenticator exports, otpauth:// or"
    f" otpauth-migration:// text, or an image of their QR codes: {IMAGE_FORMATS_SAID}"
)


def is_password_protected(data: bytes) -> bool:
    """Whether `parse_source` will need a password: an encrypted Aegis vault or 2FAS
    backup, or a binary file that may be an encrypted andOTP backup."""
    doc = json_of(data)
    if doc is None:
        return _binary(data) and andotp.may_be_encrypted(data)
    try:
        return (aegis.looks_like_aegis(doc) and aegis.is_encrypted(data)) or twofas.is_encrypted(doc)
    except ImportSourceError:
        return False  # parse_source will report what is wrong with it


def _binary(data: bytes) -> bool:
    if qr_images.is_image(data):
        return False
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return True
    return False


def parse_source(data: bytes, *, password: str | None = None) -> Parsed:
    """All accounts in `data`, with refusals and notes. Whole-source problems raise
    ImportSourceError (unrecognized, malformed, password required or wrong)."""
    return parse_sources([("", data)], password=password)


def parse_sources(sources: Sequence[tuple[str, bytes]], *, password: str | None = None) -> Parsed:
    """All accounts of several sources, each (file name, bytes), as one import: the QR
    codes of a Google Authenticator export may come one screenshot each, and a code
    is missing only if no source holds it. Refusals name their source when there are
    several. A source that is not an export at all fails the whole import, naming it
    (when named): nothing is added from a command line with a wrong file on it."""
    parsed = Parsed()
    uris: list[tuple[str, str]] = []  # (how a refusal names it, the URI's text)
    for name, data in sources:
        try:
            found = _read_source(data, password)
        except ImportSourceError as exc:
            if not name:
                raise
            raise ImportSourceError(exc.code, f"{name}: {exc.message}") from None
        if isinstance(found, Parsed):
            parsed.extend(found)
        else:
            at = f"{name}, " if len(sources) > 1 else ""
            uris += [(at + where, text) for where, text in found]
    parsed.extend(_parse_uris(uris))
    return parsed


def _read_source(data: bytes, password: str | None) -> Parsed | list[tuple[str, str]]:
    """An Aegis vault parsed, or the URIs of a text file or an image's QR codes, each
    with where it was found ("line 3", "QR code 2")."""
    if qr_images.is_image(data):  # before the size check: screenshots may be larger than exports
        try:
            codes = qr_images.decode(data)
        except qr_images.QrImageError as exc:
            raise ImportSourceError(ImportErrorCode.UNRECOGNIZED, exc.message) from None
        uris = [(f"QR code {n}", code) for n, code in enumerate(codes, 1)]
        other = next((o for code in codes if (o := other_command(code, "import")) is not None), None)
        why = "no QR code in it is an otpauth:// or otpauth-migration:// link"
        if other is not None:
            why = f"its QR code is {other[0]}, not an export: use pushauth-agent {other[1]} with it"
        _check_recognized(uris, why)
        return uris
    if len(data) > MAX_SOURCE_BYTES:
        raise ImportSourceError(ImportErrorCode.MALFORMED, "the file is too large for an account export")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if andotp.may_be_encrypted(data):
            return andotp.parse(andotp.decrypt(data, password))
        raise ImportSourceError(
            ImportErrorCode.UNRECOGNIZED, f"not a supported export ({SUPPORTED})"
        ) from None
    if text.lstrip().startswith(("{", "[")):
        return _parse_json(data, text, password)
    if linked.looks_like_bitwarden_csv(text):
        return linked.parse_bitwarden_csv(text)
    lines = [(f"line {n}", line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    uris = [(where, line) for where, line in lines if line and not line.startswith("#")]
    _check_recognized(uris, "no otpauth:// or otpauth-migration:// URI found (nor an Aegis .json vault)")
    return uris


def _parse_json(data: bytes, text: str, password: str | None) -> Parsed:
    doc = json_of(text)
    if doc is None or aegis.looks_like_aegis(doc):
        return aegis.parse(data, password)  # says what is wrong with a JSON file that is none
    if twofas.looks_like(doc):
        return twofas.parse(doc, password)
    if linked.looks_like_bitwarden(doc):
        return linked.parse_bitwarden(doc)
    if linked.looks_like_proton(doc):
        return linked.parse_proton(doc)
    if linked.looks_like_freeotp_plus(doc):
        return linked.parse_freeotp_plus(doc)
    if andotp.looks_like(doc):
        return andotp.parse(doc)
    raise ImportSourceError(
        ImportErrorCode.UNRECOGNIZED, f"a JSON file of no export this reads ({SUPPORTED})"
    )


def _check_recognized(uris: Sequence[tuple[str, str]], why: str) -> None:
    if not any(takes("import", text) for _, text in uris):
        raise ImportSourceError(ImportErrorCode.UNRECOGNIZED, why)


def _parse_uris(uris: Sequence[tuple[str, str]]) -> Parsed:
    parsed = Parsed()
    batches: list[migration.MigrationBatch] = []
    for where, text in uris:
        scheme = scheme_of(text)
        if scheme == "otpauth":
            try:
                parsed.accounts.append(otpauth.parse_uri(text))
            except ImportSourceError as exc:
                parsed.refused.append(Refused(f"{where} ({otpauth.describe(text)})", exc.message))
        elif scheme == "otpauth-migration":
            try:
                batch = migration.parse_uri(text)
            except ImportSourceError as exc:
                parsed.refused.append(Refused(f"{where} (Google Authenticator export)", exc.message))
                continue
            batches.append(batch)
            parsed.extend(batch.parsed)
        else:
            parsed.refused.append(Refused(where, "not an otpauth:// or otpauth-migration:// URI"))
    parsed.notes += migration.missing_codes(batches)
    return parsed
