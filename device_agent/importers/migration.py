"""Google Authenticator's "Transfer accounts" export: otpauth-migration://offline?data=...

`data` is base64 of a protobuf MigrationPayload (field numbers as Google's app
writes them; the schema is public in Aegis and extract_otp_secrets):

    MigrationPayload { repeated OtpParameters otp_parameters = 1; int32 version = 2;
                       int32 batch_size = 3; int32 batch_index = 4; int32 batch_id = 5; }
    OtpParameters    { bytes secret = 1; string name = 2; string issuer = 3;
                       Algorithm algorithm = 4;  // 0 unspecified, 1 SHA1, 2 SHA256, 3 SHA512, 4 MD5
                       DigitCount digits = 5;    // 0 unspecified, 1 six, 2 eight
                       OtpType type = 6;         // 0 unspecified, 1 HOTP, 2 TOTP
                       int64 counter = 7; }

The app puts at most 10 accounts in one QR code; a bigger export is a batch of
codes sharing batch_id, numbered batch_index 0..batch_size-1.

The protobuf wire format needed here is two messages of varints and byte strings,
so a strict 60-line codec below does it; the protobuf package would need generated
code or runtime descriptors for the same two messages.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..accounts_model import InvalidAccount, OtpAccount
from .report import ExportResult, ImportErrorCode, ImportSourceError, Parsed, Refused

PREFIX = "otpauth-migration://offline?"
MAX_PER_CODE = 10
MAX_URI_CHARS = 64 * 1024

_ALGORITHMS = {0: "SHA1", 1: "SHA1", 2: "SHA256", 3: "SHA512"}
_ALGORITHM_IDS = {"SHA1": 1, "SHA256": 2, "SHA512": 3}
_DIGITS = {0: 6, 1: 6, 2: 8}
_DIGIT_IDS = {6: 1, 8: 2}
_TYPES = {1: "hotp", 2: "totp"}
_TYPE_IDS = {"hotp": 1, "totp": 2}
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _malformed(why: str) -> ImportSourceError:
    return ImportSourceError(ImportErrorCode.MALFORMED, f"not a valid Google Authenticator export: {why}")


# --- protobuf wire format --------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _malformed("truncated data")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _malformed("a number is too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; unknown wire types are errors."""
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _malformed("field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise _malformed("truncated data")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == _BYTES:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise _malformed("truncated data")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise _malformed(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    """Protobuf int32/int64 travel as 64-bit two's complement varints."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise _malformed(f"a number does not fit in int{bits}")
    return value


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64: ten bytes, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3 | _VARINT) + _varint(value)
    return _varint(number << 3 | _BYTES) + _varint(len(value)) + value


# --- payload <-> accounts ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MigrationBatch:
    """One QR code's worth: its accounts and refusals, and its place in a batch."""

    parsed: Parsed
    version: int
    batch_size: int
    batch_index: int
    batch_id: int


def _entry_label(name: str, issuer: str, position: int) -> str:
    label = f"{issuer}: {name}" if issuer and name else issuer or name
    return label or f"entry {position}"


def _parse_entry(buf: bytes, position: int) -> OtpAccount | Refused:
    f: dict[int, int | bytes] = {}
    for number, wire, value in _fields(buf):
        expected = _BYTES if number in (1, 2, 3) else _VARINT if number <= 7 else wire
        if wire != expected:
            raise _malformed(f"account field {number} has the wrong wire type")
        f[number] = value  # protobuf: the last occurrence of a scalar wins
    try:
        name = bytes(f.get(2, b"")).decode("utf-8").strip()
        issuer = bytes(f.get(3, b"")).decode("utf-8").strip()
    except UnicodeDecodeError:
        return Refused(f"entry {position}", "its name or issuer is not UTF-8 text")
    # The app often stores "Issuer:name" in the name as well; show the name once.
    prefix, sep, rest = name.partition(":")
    if sep and issuer and prefix.strip() == issuer:
        name = rest.strip()
    label = _entry_label(name, issuer, position)
    algorithm = _ALGORITHMS.get(int(f.get(4, 0)))
    digits = _DIGITS.get(int(f.get(5, 0)))
    kind = _TYPES.get(int(f.get(6, 0)))
    if kind is None:
        return Refused(label, f"unsupported token type (code {f.get(6, 0)})")
    if algorithm is None:
        return Refused(label, "unsupported algorithm (MD5 or unknown)")
    if digits is None:
        return Refused(label, f"unsupported number of digits (code {f.get(5)})")
    try:
        return OtpAccount(
            secret=bytes(f.get(1, b"")),
            name=name,
            issuer=issuer,
            kind=kind,  # type: ignore[arg-type]
            algorithm=algorithm,  # type: ignore[arg-type]
            digits=digits,
            counter=_signed(int(f.get(7, 0)), 64) if kind == "hotp" else 0,
        )
    except InvalidAccount as exc:
        return Refused(label, str(exc))


def _data_param(text: str) -> bytes:
    if not text.startswith(PREFIX):
        raise _malformed("expected otpauth-migration://offline?data=...")
    data = None
    for part in text[len(PREFIX) :].split("&"):
        key, _, value = part.partition("=")
        if key == "data":
            if data is not None:
                raise _malformed("data is given twice")
            data = value
    if not data:
        raise _malformed("no data parameter")
    # Decode %XX but keep "+": some tools paste the base64 without URL-encoding it,
    # and there "+" is a base64 character, never a space.
    b64 = unquote(data).replace("-", "+").replace("_", "/").replace(" ", "").rstrip("=")
    try:
        return base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("data is not base64") from None


def parse_uri(text: str) -> MigrationBatch:
    """Parse one otpauth-migration:// URI (one QR code of an export)."""
    text = text.strip()
    if len(text) > MAX_URI_CHARS:
        raise _malformed("the URI is too long")
    payload = _data_param(text)
    entries: list[bytes] = []
    header = {2: 0, 3: 0, 4: 0, 5: 0}
    for number, wire, value in _fields(payload):
        if number == 1:
            if wire != _BYTES:
                raise _malformed("accounts have the wrong wire type")
            entries.append(bytes(value))  # type: ignore[arg-type]
        elif number in header:
            if wire != _VARINT:
                raise _malformed(f"field {number} has the wrong wire type")
            header[number] = _signed(int(value), 32)
    version, size, index, batch_id = header[2], header[3], header[4], header[5]
    if version not in (0, 1):
        raise ImportSourceError(
            ImportErrorCode.UNSUPPORTED_VERSION,
            f"Google Authenticator export version {version} is not supported",
        )
    if size < 0 or index < 0 or (size and index >= size):
        raise _malformed(f"QR code {index + 1} of {size} is impossible")
    parsed = Parsed()
    for position, entry in enumerate(entries, 1):
        result = _parse_entry(entry, position)
        if isinstance(result, Refused):
            parsed.refused.append(result)
        else:
            parsed.accounts.append(result)
    return MigrationBatch(parsed, version, size, index, batch_id)


def missing_codes(batches: Sequence[MigrationBatch]) -> list[str]:
    """Notes naming the QR codes of each export that were not given (never silent)."""
    notes: list[str] = []
    seen: dict[int, tuple[int, set[int]]] = {}
    for batch in batches:
        if batch.batch_size > 1:
            size, indices = seen.setdefault(batch.batch_id, (batch.batch_size, set()))
            indices.add(batch.batch_index)
    for size, indices in seen.values():
        missing = [str(i + 1) for i in range(size) if i not in indices]
        if missing:
            notes.append(
                f"Google Authenticator export: QR code {', '.join(missing)} of {size} was not given,"
                " so its accounts were not imported; scan it too"
            )
    return notes


def parse_uris(texts: Sequence[str]) -> Parsed:
    """All QR codes of one or more exports, with notes for codes that are missing."""
    batches = [parse_uri(t) for t in texts]
    parsed = Parsed()
    for batch in batches:
        parsed.extend(batch.parsed)
    parsed.notes += missing_codes(batches)
    return parsed


def _encode_entry(account: OtpAccount) -> bytes:
    # Field by field as Google Authenticator writes them: no empty issuer, no counter for TOTP.
    out = _field(1, account.secret) + _field(2, account.name.encode())
    if account.issuer:
        out += _field(3, account.issuer.encode())
    out += _field(4, _ALGORITHM_IDS[account.algorithm]) + _field(5, _DIGIT_IDS[account.digits])
    out += _field(6, _TYPE_IDS[account.kind])
    if account.kind == "hotp":
        out += _field(7, account.counter)
    return out


def export_uris(accounts: Sequence[OtpAccount], *, batch_id: int | None = None) -> ExportResult:
    """otpauth-migration:// URIs, one per QR code of at most 10 accounts, as one batch.

    Accounts the format cannot carry (7 digits; a TOTP period other than 30 s, as
    the format has no period field) are refused by name, never changed.
    """
    refused: list[Refused] = []
    fitting: list[OtpAccount] = []
    for account in accounts:
        if account.digits not in _DIGIT_IDS:
            refused.append(
                Refused(account.label, f"Google Authenticator has no {account.digits}-digit codes")
            )
        elif account.kind == "totp" and account.period != 30:
            refused.append(
                Refused(account.label, f"Google Authenticator only has 30 s codes, not {account.period} s")
            )
        else:
            fitting.append(account)
    chunks = [fitting[i : i + MAX_PER_CODE] for i in range(0, len(fitting), MAX_PER_CODE)]
    if batch_id is None:
        batch_id = secrets.randbits(31)
    uris = []
    for index, chunk in enumerate(chunks):
        payload = b"".join(_field(1, _encode_entry(a)) for a in chunk)
        payload += _field(2, 1) + _field(3, len(chunks)) + _field(4, index) + _field(5, batch_id)
        data = base64.b64encode(payload).decode("ascii")
        uris.append(f"{PREFIX}data={quote(data, safe='')}")
    return ExportResult(uris, refused)
