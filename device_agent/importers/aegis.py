"""Aegis Authenticator vault exports (.json), plain and encrypted.

Format (public: docs/vault.md of the Aegis project):

    {"version": 1,
     "header": {"slots": null | [slot, ...], "params": null | {"nonce": hex, "tag": hex}},
     "db": {"version": N, "entries": [...]}        # plain
           | "base64 of AES-256-GCM ciphertext"}   # encrypted

An encrypted vault has a random 256-bit master key, wrapped once per slot. Password
slots (type 1) hold scrypt parameters (n, r, p, salt) and the master key encrypted
with AES-256-GCM under scrypt(password); the db is AES-256-GCM under the master key,
with the GCM tag stored apart from the ciphertext (hex, in key_params / params).

libsodium (PyNaCl) provides both scrypt and AES-256-GCM, the latter only on CPUs with
AES instructions (every x86-64 since about 2010 and ARMv8 with the crypto extension);
elsewhere an encrypted Aegis file is refused with that reason.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from typing import Any

import nacl.bindings
import nacl.exceptions

from ..accounts_model import OtpAccount
from .entries import KINDS, account, gcm_open, json_of, label_of, text
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

PASSWORD_SLOT = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
DB_VERSIONS = (1, 2, 3)
# scrypt needs 128 * n * r bytes: refuse files that would ask for more than 1 GiB.
MAX_SCRYPT_MEMORY = 1024**3


def _malformed(why: str) -> ImportSourceError:
    return ImportSourceError(ImportErrorCode.MALFORMED, f"not a valid Aegis vault file: {why}")


def looks_like_aegis(doc: Any) -> bool:
    return isinstance(doc, dict) and {"version", "header", "db"} <= doc.keys()


def _load(data: bytes) -> dict[str, Any]:
    doc = json_of(data)
    if doc is None:
        raise _malformed("not JSON")
    if not looks_like_aegis(doc):
        raise _malformed("no version / header / db")
    if doc["version"] != 1:
        raise ImportSourceError(
            ImportErrorCode.UNSUPPORTED_VERSION,
            f"Aegis vault file version {doc['version']!r} is not supported",
        )
    if not isinstance(doc["header"], dict):
        raise _malformed("the header is not an object")
    return doc


def is_encrypted(data: bytes) -> bool:
    """Whether the Aegis file needs a password (so the CLI knows to ask for one)."""
    return isinstance(_load(data)["db"], str)


def _hex(value: Any, size: int | None, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise _malformed(f"{what} is not {size or 'some'} bytes of hex")
    return raw


def _gcm_open(key: bytes, params: Any, ciphertext: bytes, what: str) -> bytes | None:
    """AES-256-GCM decryption with the tag kept apart; None when authentication fails."""
    if not isinstance(params, dict):
        raise _malformed(f"{what} has no nonce and tag")
    nonce = _hex(params.get("nonce"), NONCE_BYTES, f"{what} nonce")
    tag = _hex(params.get("tag"), TAG_BYTES, f"{what} tag")
    return gcm_open("Aegis", key, nonce, ciphertext + tag)


def _password_slot_key(slot: dict[str, Any], password: bytes) -> bytes | None:
    n, r, p = slot.get("n"), slot.get("r"), slot.get("p")
    if not all(type(v) is int and v > 0 for v in (n, r, p)):
        raise _malformed("a password slot has invalid scrypt parameters")
    if n & (n - 1) or 128 * n * r > MAX_SCRYPT_MEMORY or r * p >= 1 << 30:  # type: ignore[operator]
        raise _malformed("a password slot has out-of-range scrypt parameters")
    salt = _hex(slot.get("salt"), None, "a slot salt")
    derived = nacl.bindings.crypto_pwhash_scryptsalsa208sha256_ll(
        password,
        salt,
        n,  # type: ignore[arg-type]
        r,  # type: ignore[arg-type]
        p,  # type: ignore[arg-type]
        dklen=KEY_BYTES,
        maxmem=MAX_SCRYPT_MEMORY + 1024**2,
    )
    wrapped = _hex(slot.get("key"), KEY_BYTES, "a slot key")
    return _gcm_open(derived, slot.get("key_params"), wrapped, "a slot key")


def _decrypt_db(doc: dict[str, Any], password: str | None) -> Any:
    header = doc["header"]
    slots = header.get("slots")
    if not isinstance(slots, list):
        raise _malformed("an encrypted vault without key slots")
    password_slots = [s for s in slots if isinstance(s, dict) and s.get("type") == PASSWORD_SLOT]
    if not password_slots:
        raise ImportSourceError(
            ImportErrorCode.UNSUPPORTED_VERSION, "this Aegis vault has no password slot (biometric only?)"
        )
    if not password:
        raise ImportSourceError(
            ImportErrorCode.PASSWORD_REQUIRED, "this Aegis vault is encrypted: give its password"
        )
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    master = next((k for s in password_slots if (k := _password_slot_key(s, secret)) is not None), None)
    if master is None:
        raise ImportSourceError(ImportErrorCode.WRONG_PASSWORD, "wrong password for this Aegis vault")
    try:
        ciphertext = base64.b64decode(doc["db"], validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("the encrypted db is not base64") from None
    plain = _gcm_open(master, header.get("params"), ciphertext, "the db")
    if plain is None:
        raise _malformed("the encrypted db fails authentication (damaged or altered)")
    doc = json_of(plain)
    if doc is None:
        raise _malformed("the decrypted db is not JSON")
    return doc


def _entry(entry: Any, position: int) -> OtpAccount | Refused:
    if not isinstance(entry, dict):
        return Refused(f"entry {position}", "not a JSON object")
    name, issuer = text(entry.get("name")), text(entry.get("issuer"))
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        label = label_of(issuer, name, f"entry {position}")
        return Refused(label, f"unsupported token type {kind!r} (only totp and hotp)")
    info = entry.get("info") if isinstance(entry.get("info"), dict) else {}
    return account(
        f"entry {position}",
        secret=info.get("secret"),
        name=name,
        issuer=issuer,
        kind=kind,
        algorithm=info.get("algo", "SHA1"),
        digits=info.get("digits", 6),
        period=info.get("period", 30),
        counter=info.get("counter", 0),
    )


def parse(data: bytes, password: str | None = None) -> Parsed:
    """The accounts of an Aegis vault export; `password` is needed only if it is encrypted."""
    doc = _load(data)
    db = _decrypt_db(doc, password) if isinstance(doc["db"], str) else doc["db"]
    if not isinstance(db, dict) or not isinstance(db.get("entries"), list):
        raise _malformed("the db has no entries list")
    if db.get("version") not in DB_VERSIONS:
        raise ImportSourceError(
            ImportErrorCode.UNSUPPORTED_VERSION, f"Aegis db version {db.get('version')!r} is not supported"
        )
    parsed = Parsed()
    for position, entry in enumerate(db["entries"], 1):
        result = _entry(entry, position)
        if isinstance(result, Refused):
            parsed.refused.append(result)
        else:
            parsed.accounts.append(result)
    return parsed
