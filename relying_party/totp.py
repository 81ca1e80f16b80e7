"""Verification codes (RFC 6238) of the RP: the parameters it provisions for each device
(the broker never sees them), and the check of a code against stored parameters.

Each device credential has its own secret (DESIGN.md flow 3): an RP keeps the
TotpParams it passed to create_enrollment with that credential (Enrollment.totp, kept
through to_json / from_stored), and checks a code against each confirmed credential
of the user. One time step of clock skew either way is allowed, and a code is refused
once its time step (or a later one) was used: the RP stores the step check_code
accepted as the credential's last used step, in one atomic step with the check
(compare and set), so two requests with one code cannot both pass.

Pure functions: no storage, no clock unless none is given.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import pyotp

from protocol import numbers
from protocol.uri import ALGORITHMS, TotpParams

SECRET_LENGTH = 32  # base32 characters: 160 bits, the RFC 4226 recommended size for SHA-1
SKEW_STEPS = 1  # time steps of clock skew allowed either way
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def new_totp(algorithm: str = "SHA1", digits: int = 6, period: int = 30) -> TotpParams:
    """Fresh TOTP parameters with a random secret, for one device's enrollment."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}")
    if digits not in (6, 8):
        raise ValueError("digits must be 6 or 8")
    if not 1 <= period <= 3600:
        raise ValueError("period must be 1..3600 seconds")
    return TotpParams(pyotp.random_base32(SECRET_LENGTH), algorithm, digits, period)


def code_at(params: TotpParams, step: int) -> str:
    """The code of time step `step` (floor(unix time / period)), as the device shows it."""
    # RFC 6238: the HOTP code of the time step. pyotp.HOTP, since pyotp.TOTP refuses
    # periods above 120 s, which enrollment links may carry (1..3600 s).
    return pyotp.HOTP(params.secret, digits=params.digits, digest=_DIGESTS[params.algorithm]).at(step)


# A code as a person types or pastes it, as the digits it means (one rule with the
# device's typed number: protocol.numbers).
normalize_code = numbers.as_typed


def matching_steps(params: TotpParams, code: str, *, now: float | None = None) -> list[int]:
    """The time steps within SKEW_STEPS of `now` (default: this clock) whose code is
    `code` (as typed: normalize_code): the current step first, then the one before, then
    the one after. Empty for none, and for a code that is not `params.digits` digits."""
    code = normalize_code(code)
    if len(code) != params.digits or not (code.isascii() and code.isdigit()):
        return []
    step = int((time.time() if now is None else now) // params.period)
    near = [step, *(step + d for k in range(1, SKEW_STEPS + 1) for d in (-k, k))]
    return [s for s in near if s >= 0 and hmac.compare_digest(code_at(params, s), code)]


@dataclass(frozen=True, slots=True)
class TotpCheck:
    """check_code's verdict. `step`: the time step of the accepted code (store it as the
    credential's last used step), None when refused; `replayed`: refused because it
    matched, but at a step already used (or before one that was)."""

    step: int | None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.step is not None


def check_code(
    params: TotpParams, code: str, *, last_used_step: int | None, now: float | None = None
) -> TotpCheck:
    """Check a verification code against one device credential's stored parameters.

    `code` as the person typed it: spaces and digits of other scripts are read as the
    digits they are (normalize_code), so "123 456", as the web authenticator shows it, is
    the code 123456.

    `last_used_step`: the step this credential's last accepted code had (None: none
    yet). A match at that step or an earlier one is refused (`replayed`): so is every
    code once used, and an older code after a newer one. Accepted, store `step` as the
    new last used step, only if it is still above the stored one (compare and set):
    a request that lost that race is refused as replayed. A device restored from a
    backup shares its secret, and so its last used step, with the device it came from.
    """
    steps = matching_steps(params, code, now=now)
    for step in steps:
        if last_used_step is None or step > last_used_step:
            return TotpCheck(step)
    return TotpCheck(None, replayed=bool(steps))
