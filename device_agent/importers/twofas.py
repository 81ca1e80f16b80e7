"""2FAS Authenticator backups (.2fas), plain and encrypted (schema versions 2 to 4).

Format (public: the 2FAS apps' backup code; Aegis reads it too):

    {"schemaVersion": 4, "services": [service, ...], "servicesEncrypted": "..."?, ...}
    service = {"name", "secret" (base32), "otp": {"account", "issuer", "digits",
               "period", "algorithm", "tokenType": "TOTP" | "HOTP" | "STEAM", "counter"},
               "order": {"position": n}}

An encrypted backup has `services` empty and `servicesEncrypted` =
"base64(ciphertext + GCM tag):base64(salt):base64(iv)", the key PBKDF2-HMAC-SHA256 of
the password over the salt, 10,000 rounds, 256 bits; AES-256-GCM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from .entries import account, collect, gcm_open, json_of, malformed, text
from .report import ImportErrorCode, ImportSourceError, Parsed, Refused

APP = "2FAS"
PBKDF2_ROUNDS = 10_000


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and "services" in doc and "schemaVersion" in doc


def is_encrypted(doc: Any) -> bool:
    return looks_like(doc) and bool(doc.get("servicesEncrypted"))


def _decrypted(sealed: Any, password: str | None) -> Any:
    if not password:
        raise ImportSourceError(
            ImportErrorCode.PASSWORD_REQUIRED, "this 2FAS backup is encrypted: give its password"
        )
    parts = sealed.split(":") if isinstance(sealed, str) else []
    try:
        data, salt, iv = (base64.b64decode(p, validate=True) for p in parts)
    except (binascii.Error, ValueError):
        raise malformed(APP, "servicesEncrypted is not three base64 parts") from None
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, PBKDF2_ROUNDS, 32)
    plain = gcm_open(APP, key, iv, data)
    if plain is None:
        raise ImportSourceError(ImportErrorCode.WRONG_PASSWORD, "wrong password for this 2FAS backup")
    doc = json_of(plain)
    if doc is None:
        raise malformed(APP, "the decrypted services are not JSON")
    return doc


def _position(service: Any) -> float:
    order = service.get("order") if isinstance(service, dict) else None
    position = order.get("position") if isinstance(order, dict) else None
    return position if isinstance(position, int) else float("inf")


def _entry(service: Any, number: int) -> Any:
    if not isinstance(service, dict):
        return Refused(f"service {number}", "not a JSON object")
    otp = service.get("otp") if isinstance(service.get("otp"), dict) else {}
    issuer = text(otp.get("issuer")) or text(service.get("name"))
    name = text(otp.get("account")) or text(otp.get("label"))
    return account(
        f"service {number}",
        secret=service.get("secret"),
        name=name,
        issuer=issuer,
        kind=text(otp.get("tokenType")) or "totp",
        algorithm=otp.get("algorithm"),
        digits=otp.get("digits", 6),
        period=otp.get("period", 30),
        counter=otp.get("counter", 0),
    )


def parse(doc: Any, password: str | None = None) -> Parsed:
    """The accounts of a 2FAS backup (its JSON), in the app's order."""
    services = _decrypted(doc["servicesEncrypted"], password) if is_encrypted(doc) else doc["services"]
    if not isinstance(services, list):
        raise malformed(APP, "services is not a list")
    ordered = sorted(enumerate(services, 1), key=lambda item: _position(item[1]))
    return collect(_entry(service, number) for number, service in ordered)
