"""The OTP account (TOTP or HOTP) as the vault, backups, importers and exporters hold it.

One dataclass and the rules every source must meet, so that an account imported from
any app, restored from a backup or read from the vault is valid in the same way.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["totp", "hotp"]
Algorithm = Literal["SHA1", "SHA256", "SHA512"]

KINDS: tuple[Kind, ...] = ("totp", "hotp")
ALGORITHMS: tuple[Algorithm, ...] = ("SHA1", "SHA256", "SHA512")
# 7 digits is unusual but real apps export it (Aegis, andOTP) and oathtool computes it.
DIGITS = (6, 7, 8)
MAX_PERIOD = 3600
MAX_SECRET_BYTES = 1024
MAX_LABEL_CHARS = 256
_BASE32_RE = re.compile(r"^[A-Z2-7]+$")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an account in the agent's list (the web app's nameProblem
    says the same), or None: shown on a terminal, it must be printable text."""
    name = name.strip()
    if not name or len(name) > MAX_LABEL_CHARS or any(not ch.isprintable() for ch in name):
        return f"an account name must be 1 to {MAX_LABEL_CHARS} printable characters"
    return None


# RFC 4226 section 4 asks for 128 bits and recommends 160, but many services hand out
# 80-bit secrets (16 base32 characters): those are taken, shorter ones refused where an
# account comes in (add, import), as the enrollment link's TOTP secret is (protocol/uri.py).
# An account held already (a vault, a backup) is not refused for it.
MIN_SECRET_BYTES = 10


def secret_problem(secret: bytes) -> str | None:
    """Why an added or imported account's secret is too weak to take (the web app's
    secretProblem says the same), or None."""
    if len(secret) < MIN_SECRET_BYTES:
        return f"secret is {len(secret) * 8} bits; at least {MIN_SECRET_BYTES * 8} are needed"
    return None


class InvalidAccount(ValueError):
    """An account field breaks the rules; the message names the field and is for people."""


def decode_base32_secret(text: str) -> bytes:
    """Decode a base32 secret as people and apps write it.

    Accepts lower case, spaces and dashes between groups ("jbsw y3dp-ehpk"), and
    missing or present "=" padding: all are common in QR codes and manual entry.
    """
    cleaned = re.sub(r"[\s-]", "", text).upper().rstrip("=")
    if not cleaned:
        raise InvalidAccount("the secret is empty")
    if not _BASE32_RE.match(cleaned):
        raise InvalidAccount("the secret is not base32 (letters A-Z and digits 2-7)")
    if len(cleaned) % 8 in (1, 3, 6):
        # No whole number of bytes has this many base32 characters: a typo or a truncation.
        raise InvalidAccount("the secret has an impossible base32 length (truncated?)")
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise InvalidAccount("the secret is not base32") from None
    return raw


def encode_base32_secret(secret: bytes) -> str:
    """Upper-case base32 without padding: what otpauth:// URIs and people expect."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def normalize_algorithm(text: str) -> Algorithm:
    """Map "sha1", "SHA-256", "HmacSHA512" and the like to SHA1 / SHA256 / SHA512."""
    name = text.strip().upper().replace("-", "").replace("_", "")
    name = name.removeprefix("HMAC")
    for algorithm in ALGORITHMS:
        if name == algorithm:
            return algorithm
    raise InvalidAccount(f"unsupported algorithm {text!r} (SHA1, SHA256 or SHA512)")


@dataclass(frozen=True, slots=True)
class OtpAccount:
    """One TOTP or HOTP account. Immutable: HOTP use makes a new one with `advanced()`.

    `name` is the account (e.g. "alice@example.com"), `issuer` the service
    ("Example"), empty when the source had none. `period` matters for TOTP only,
    `counter` (the next counter to use) for HOTP only.
    """

    secret: bytes = field(repr=False)
    name: str
    issuer: str = ""
    kind: Kind = "totp"
    algorithm: Algorithm = "SHA1"
    digits: int = 6
    period: int = 30
    counter: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidAccount(f"unsupported token type {self.kind!r} (totp or hotp)")
        if self.algorithm not in ALGORITHMS:
            raise InvalidAccount(f"unsupported algorithm {self.algorithm!r}")
        if not isinstance(self.secret, bytes) or not self.secret:
            raise InvalidAccount("the secret is empty")
        if len(self.secret) > MAX_SECRET_BYTES:
            raise InvalidAccount(f"the secret is longer than {MAX_SECRET_BYTES} bytes")
        if type(self.digits) is not int or self.digits not in DIGITS:
            raise InvalidAccount(f"unsupported number of digits {self.digits!r} (6, 7 or 8)")
        if type(self.period) is not int or not 1 <= self.period <= MAX_PERIOD:
            raise InvalidAccount(f"the period must be 1..{MAX_PERIOD} seconds, not {self.period!r}")
        if type(self.counter) is not int or not 0 <= self.counter < 2**63:
            raise InvalidAccount(f"the counter must be 0..2^63-1, not {self.counter!r}")
        for label, value in (("name", self.name), ("issuer", self.issuer)):
            if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
                raise InvalidAccount(f"the {label} must be text of at most {MAX_LABEL_CHARS} characters")
        if not self.name and not self.issuer:
            raise InvalidAccount("the account has neither a name nor an issuer")

    @property
    def label(self) -> str:
        """How people see the account: "Issuer: name" (or whichever of the two exists)."""
        if self.issuer and self.name:
            return f"{self.issuer}: {self.name}"
        return self.issuer or self.name

    def same_codes_as(self, other: OtpAccount) -> bool:
        """Whether both produce the same codes, i.e. one is a duplicate of the other.

        Labels are ignored on purpose: the same secret saved under another name is
        still the same account at the service. The HOTP counter is ignored too.
        """
        fields = ("kind", "secret", "algorithm", "digits")
        if any(getattr(self, f) != getattr(other, f) for f in fields):
            return False
        return self.kind == "hotp" or self.period == other.period

    def advanced(self) -> OtpAccount:
        """The HOTP account after one code was used (counter + 1)."""
        if self.kind != "hotp":
            raise InvalidAccount("only HOTP accounts have a counter")
        return replace(self, counter=self.counter + 1)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the secret in base32), the form the vault and backups store."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "issuer": self.issuer,
            "secret": encode_base32_secret(self.secret),
            "algorithm": self.algorithm,
            "digits": self.digits,
        }
        if self.kind == "totp":
            data["period"] = self.period
        else:
            data["counter"] = self.counter
        return data

    @classmethod
    def from_json(cls, data: Any) -> OtpAccount:
        """Strict inverse of `to_json`; raises InvalidAccount on any missing or extra field."""
        if not isinstance(data, dict):
            raise InvalidAccount("an account must be a JSON object")
        kind = data.get("kind")
        wanted = {"kind", "name", "issuer", "secret", "algorithm", "digits"}
        wanted.add("period" if kind == "totp" else "counter")
        if set(data) != wanted:
            raise InvalidAccount(f"account fields must be exactly {sorted(wanted)}")
        if not isinstance(data["secret"], str):
            raise InvalidAccount("the secret must be base32 text")
        return cls(
            secret=decode_base32_secret(data["secret"]),
            name=data["name"],
            issuer=data["issuer"],
            kind=kind,
            algorithm=data["algorithm"],
            digits=data["digits"],
            period=data.get("period", 30),
            counter=data.get("counter", 0),
        )
