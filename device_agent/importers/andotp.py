"""andOTP backups: plain (.json) and encrypted with a password (.json.aes).

Format (public: andOTP's backup code; Aegis reads it too): a JSON list of entries
{"secret" (base32), "issuer", "label", "digits", "type": "TOTP" | "HOTP" | "STEAM",
"algorithm", "period", "counter", ...}; files from before andOTP 0.6.3 have no issuer
and write "Issuer - name" as the label.

Encrypted (andOTP 0.6.3 and later): 4 bytes big-endian PBKDF2 rounds, a 12-byte salt,
a 12-byte IV, then the AES-256-GCM ciphertext with its tag; the key PBKDF2-HMAC-SHA1
of the password, 256 bits. There is no header to recognize it by: any binary file is
tried as one once a password is given.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .entries import TAG_BYTES, account, collect, gcm_open, json_of, malformed, text
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

APP = "andOTP"
SALT_BYTES = NONCE_BYTES = 12
HEADER_BYTES = 4 + SALT_BYTES + NONCE_BYTES
# andOTP asks for 140,000-160,000 rounds; far more is not an andOTP file (and would
# keep this computer busy for minutes).
MAX_ROUNDS = 10_000_000


def looks_like(doc: Any) -> bool:
    return isinstance(doc, list) and all(isinstance(e, dict) and "secret" in e and "type" in e for e in doc)


def may_be_encrypted(data: bytes) -> bool:
    """Whether binary `data` can be an encrypted andOTP backup (its round count is
    plausible and it has room for a header, a tag and something sealed)."""
    return len(data) > HEADER_BYTES + TAG_BYTES and 1 <= int.from_bytes(data[:4], "big") <= MAX_ROUNDS


def decrypt(data: bytes, password: str | None) -> Any:
    if not password:
        raise ImportSourceError(
            ImportErrorCode.PASSWORD_REQUIRED, "this looks like an encrypted andOTP backup: give its password"
        )
    rounds = int.from_bytes(data[:4], "big")
    salt, nonce = data[4 : 4 + SALT_BYTES], data[4 + SALT_BYTES : HEADER_BYTES]
    key = hashlib.pbkdf2_hmac("sha1", password.encode("utf-8"), salt, rounds, 32)
    plain = gcm_open(APP, key, nonce, data[HEADER_BYTES:])
    if plain is None:
        raise ImportSourceError(
            ImportErrorCode.WRONG_PASSWORD,
            "wrong password for this andOTP backup (or it is no andOTP backup at all)",
        )
    doc = json_of(plain)
    if doc is None:
        raise malformed(APP, "the decrypted backup is not JSON")
    return doc


def _entry(entry: Any, number: int) -> Any:
    if not isinstance(entry, dict):
        return Refused(f"entry {number}", "not a JSON object")
    name, issuer = text(entry.get("label")), text(entry.get("issuer"))
    if "issuer" not in entry and " - " in name:  # before 0.6.3: "Issuer - name"
        issuer, _, name = (part.strip() for part in name.partition(" - "))
    return account(
        f"entry {number}",
        secret=entry.get("secret"),
        name=name,
        issuer=issuer,
        kind=text(entry.get("type")) or "totp",
        algorithm=entry.get("algorithm"),
        digits=entry.get("digits", 6),
        period=entry.get("period", 30),
        counter=entry.get("counter", 0),
    )


def parse(doc: Any) -> Parsed:
    """The accounts of an andOTP backup's JSON list, in its order."""
    if not looks_like(doc):
        raise malformed(APP, "not a list of entries with a secret and a type")
    return collect(_entry(entry, number) for number, entry in enumerate(doc, 1))
