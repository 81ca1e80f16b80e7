"""The number shown on the sign-in page, and its constant-time comparison."""

from __future__ import annotations

import hmac
import secrets

DEFAULT_DIGITS = 2  # as Microsoft Authenticator
MIN_DIGITS = 2
MAX_DIGITS = 8
STRICT_MIN_DIGITS = 6  # NIST SP 800-63B-4 out-of-band profile


def generate(digits: int = DEFAULT_DIGITS) -> str:
    """A uniformly random number of exactly `digits` digits, no leading zero.

    No leading zero because people read "07" as "7" and type it so; dropping
    them costs a tenth of the space, which for 2 digits leaves 90 choices.
    """
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be {MIN_DIGITS}..{MAX_DIGITS}")
    low = 10 ** (digits - 1)
    return str(low + secrets.randbelow(9 * low))


def matches(expected: str, typed: str) -> bool:
    """Constant-time comparison (the typed number is attacker-chosen)."""
    return hmac.compare_digest(expected.encode(), typed.encode())
