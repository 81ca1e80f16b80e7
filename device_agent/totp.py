"""TOTP (RFC 6238) and HOTP (RFC 4226) codes for OTP accounts.

pyotp computes the HMAC and the dynamic truncation. We compute the TOTP time step
ourselves (floor(unix time / period)) instead of calling `pyotp.TOTP.at`, which goes
through local-time datetimes and can be off by an hour around a DST change.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pyotp

from .accounts_model import Algorithm, OtpAccount, encode_base32_secret

_DIGESTS: dict[Algorithm, Callable[..., object]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}


class _HOTP(pyotp.HOTP):
    # pyotp refuses secrets under 112 bits (NIST SP 800-63B's rule for issuing new
    # ones). An authenticator must show codes for the secrets services already gave
    # out, and 80-bit ones (16 base32 characters) are common, so any length is allowed.
    min_secret_length_bits = 8


def hotp(secret: bytes, counter: int, *, algorithm: Algorithm = "SHA1", digits: int = 6) -> str:
    """The HOTP code for `counter`, zero-padded to `digits`."""
    if counter < 0:
        raise ValueError("the HOTP counter cannot be negative")
    generator = _HOTP(encode_base32_secret(secret), digits=digits, digest=_DIGESTS[algorithm])
    return generator.at(counter)


def time_step(at: float, period: int = 30) -> int:
    """The RFC 6238 counter T = floor((unix time - T0) / period), with T0 = 0."""
    if at < 0:
        raise ValueError("times before 1970 have no TOTP code")
    return int(at // period)


def totp(
    secret: bytes, at: float, *, algorithm: Algorithm = "SHA1", digits: int = 6, period: int = 30
) -> str:
    """The TOTP code valid at unix time `at`."""
    return hotp(secret, time_step(at, period), algorithm=algorithm, digits=digits)


def seconds_left(at: float, period: int = 30) -> float:
    """How long the TOTP code shown at `at` stays valid."""
    return period - (at % period)


def code(account: OtpAccount, at: float | None = None) -> str:
    """The code to show for `account`: TOTP at `at` (default now), HOTP at its counter.

    For HOTP the caller must store `account.advanced()` after showing the code, so
    that the next code differs (the service moves its counter forward as well).
    """
    if account.kind == "hotp":
        return hotp(account.secret, account.counter, algorithm=account.algorithm, digits=account.digits)
    now = time.time() if at is None else at
    return totp(
        account.secret, now, algorithm=account.algorithm, digits=account.digits, period=account.period
    )
