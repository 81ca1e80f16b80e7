"""TOTP parameters the RP provisions for each device (the broker never sees them)."""

from __future__ import annotations

import pyotp

from protocol.uri import ALGORITHMS, TotpParams

SECRET_LENGTH = 32  # base32 characters: 160 bits, the RFC 4226 recommended size for SHA-1


def new_totp(algorithm: str = "SHA1", digits: int = 6, period: int = 30) -> TotpParams:
    """Fresh TOTP parameters with a random secret, for one device's enrollment."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}")
    if digits not in (6, 8):
        raise ValueError("digits must be 6 or 8")
    if not 1 <= period <= 3600:
        raise ValueError("period must be 1..3600 seconds")
    return TotpParams(pyotp.random_base32(SECRET_LENGTH), algorithm, digits, period)
