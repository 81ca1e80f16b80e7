"""The number shown on the sign-in page, and its constant-time comparison."""

from __future__ import annotations

import hmac
import secrets
import unicodedata

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


def as_typed(typed: str) -> str:
    """A number or code as a person types or pastes it, as the digits it means: without
    spaces (pages and authenticators group digits, "856 825"; a paste may bring a no-break
    or thin space), and each decimal digit of any script (Arabic-Indic, full-width, ...)
    as its ASCII digit, since a keyboard in another script types its own. What a device
    signs, and what an RP compares, is the ASCII digits."""
    return "".join(
        str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in "".join(typed.split())
    )


def matches(expected: str, typed: str) -> bool:
    """Constant-time comparison (the typed number is attacker-chosen)."""
    return hmac.compare_digest(expected.encode(), typed.encode())
