"""Verification codes (RFC 6238): the secret we provision per device, and the check.

Each device credential has its own secret (DESIGN.md flow 3), so a code is checked
against every confirmed device of the user; one time step of clock skew either way
is allowed, and a code (or an earlier one) of a device that was used once is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import pyotp

from .db import Database, Device

SKEW_STEPS = 1
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def code_at(device: Device, counter: int) -> str:
    otp = pyotp.TOTP(
        device.totp_secret,
        digits=device.totp_digits,
        digest=_DIGESTS[device.totp_algorithm],
        interval=device.totp_period,
    )
    return otp.generate_otp(counter)


@dataclass(frozen=True, slots=True)
class CodeCheck:
    device: Device | None  # the device whose code it was, when accepted
    replayed: bool = False


def check(db: Database, devices: list[Device], code: str, *, now: float | None = None) -> CodeCheck:
    t = time.time() if now is None else now
    replayed = False
    for device in devices:
        if len(code) != device.totp_digits:
            continue
        step = int(t // device.totp_period)
        for counter in (step, step - SKEW_STEPS, step + SKEW_STEPS):
            if hmac.compare_digest(code_at(device, counter), code):
                if db.use_totp_counter(device.credential_id, counter):
                    return CodeCheck(device)
                replayed = True
    return CodeCheck(None, replayed)
