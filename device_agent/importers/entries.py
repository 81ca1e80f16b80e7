"""What the importers of other apps' JSON exports share: an entry made an account or
refused by name, an export's JSON read, and AES-256-GCM opened (libsodium).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import nacl.bindings
import nacl.exceptions

from ..accounts_model import InvalidAccount, OtpAccount, decode_base32_secret, normalize_algorithm
from . import otpauth
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

TAG_BYTES = 16
# What Aegis and the otpauth:// importer say of a token type we cannot make codes for
# (Steam's five letters, Yandex, mOTP): refused by name, never dropped.
KINDS = ("totp", "hotp")


def malformed(app: str, why: str) -> ImportSourceError:
    return ImportSourceError(ImportErrorCode.MALFORMED, f"not a valid {app} export: {why}")


def label_of(issuer: str, name: str, fallback: str) -> str:
    return f"{issuer}: {name}" if issuer and name else issuer or name or fallback


def text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def account(
    fallback: str,
    *,
    secret: Any,
    name: str,
    issuer: str,
    kind: str,
    algorithm: Any = "SHA1",
    digits: Any = 6,
    period: Any = 30,
    counter: Any = 0,
) -> OtpAccount | Refused:
    """One entry's account, or its refusal with the reason under its label ("Issuer:
    name", or `fallback`, e.g. "entry 3", when it has neither). `secret` is base32
    text or bytes; anything else is no secret."""
    label = label_of(issuer, name, fallback)
    kind = kind.lower()
    if kind not in KINDS:
        return Refused(label, f"unsupported token type {kind!r} (only totp and hotp)")
    if not isinstance(secret, str | bytes):
        return Refused(label, "no secret")
    try:
        raw = decode_base32_secret(secret) if isinstance(secret, str) else secret
        if not raw:
            return Refused(label, "no secret")
        return OtpAccount(
            secret=raw,
            name=name,
            issuer=issuer,
            kind=kind,  # type: ignore[arg-type]
            algorithm=normalize_algorithm(str(algorithm or "SHA1")),
            digits=digits,
            period=period if kind == "totp" else 30,
            counter=counter if kind == "hotp" else 0,
        )
    except InvalidAccount as exc:
        return Refused(label, str(exc))


def from_link(label: str, link: Any) -> OtpAccount | Refused:
    """An entry held as a link: otpauth:// as the otpauth importer reads it; any other
    scheme (steam://) refused by its type."""
    if not isinstance(link, str) or not link.strip():
        return Refused(label, "no secret")
    scheme = link.strip().partition(":")[0].lower()
    if scheme != "otpauth":
        return Refused(label, f"unsupported token type {scheme!r} (only totp and hotp)")
    try:
        return otpauth.parse_uri(link)
    except ImportSourceError as exc:
        return Refused(label, exc.message)


def collect(results: Iterable[OtpAccount | Refused]) -> Parsed:
    parsed = Parsed()
    for result in results:
        (parsed.refused if isinstance(result, Refused) else parsed.accounts).append(result)  # type: ignore[arg-type]
    return parsed


def json_of(data: bytes | str) -> Any:
    """The JSON document, or None if it is none (or is JSON's null, which no export is)."""
    try:
        return json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    # RecursionError: arrays or objects nested past the parser's recursion limit (a few
    # KB of "[[[[" in a file given to `import`), a traceback before.
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def gcm_open(app: str, key: bytes, nonce: bytes, sealed: bytes) -> bytes | None:
    """AES-256-GCM decryption of ciphertext + tag; None when authentication fails (a
    wrong password, or a damaged file). libsodium has it only on CPUs with AES
    instructions (every x86-64 since about 2010, ARMv8 with the crypto extension)."""
    try:
        return nacl.bindings.crypto_aead_aes256gcm_decrypt(sealed, None, nonce, key)
    except nacl.exceptions.UnavailableError:
        raise ImportSourceError(
            ImportErrorCode.CRYPTO_UNAVAILABLE,
            f"this CPU has no AES instructions, which libsodium needs for encrypted {app} files;"
            f" export a plain (unencrypted) file from {app} instead",
        ) from None
    except (nacl.exceptions.CryptoError, ValueError):
        return None
