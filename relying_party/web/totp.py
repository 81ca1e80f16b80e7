"""Verification codes of our devices: the SDK's check (relying_party.totp, the one place
a code is computed and matched) over the secrets and used steps in our database.

Each device credential has its own secret (DESIGN.md flow 3), so a code is checked
against every confirmed device of the user; one time step of clock skew either way
is allowed, and a code (or an earlier one) of a device that was used once is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from protocol.uri import TotpParams

from .. import totp as sdk_totp
from ..totp import SKEW_STEPS
from .db import Database, Device

__all__ = ["SKEW_STEPS", "CodeCheck", "check", "code_at", "params_of", "unfinished_hint"]


def params_of(device: Device) -> TotpParams:
    """The TOTP parameters we provisioned for `device` at its enrollment."""
    return TotpParams(device.totp_secret, device.totp_algorithm, device.totp_digits, device.totp_period)


def code_at(device: Device, counter: int) -> str:
    return sdk_totp.code_at(params_of(device), counter)


@dataclass(frozen=True, slots=True)
class CodeCheck:
    device: Device | None  # the device whose code it was, when accepted
    replayed: bool = False


def check(db: Database, devices: list[Device], code: str, *, now: float | None = None) -> CodeCheck:
    t = time.time() if now is None else now
    replayed = False
    for device in devices:
        for counter in sdk_totp.matching_steps(params_of(device), code, now=t):
            # The compare and set of the used step, atomic in the database.
            if db.use_totp_counter(device.credential_id, counter):
                return CodeCheck(device)
            replayed = True
    return CodeCheck(None, replayed)


# A code of a device that was added but whose test notification was never approved: it
# does not sign in (a device counts once its setup is finished), but "not right" sent the
# person checking a code that is right.
UNFINISHED = (
    "That code is from {name}, whose setup was not finished, so it cannot {purpose}. "
    "Use a code from another device{or_else}; then finish setting up {name} under Security info."
)


def unfinished_hint(
    devices: list[Device], code: str, *, purpose: str, or_else: str = "", now: float | None = None
) -> tuple[str, Device] | None:
    """Why `code` was refused if it is the code of one of `devices` not set up yet: the
    message and the device. Only for a refused code (nothing is accepted or recorded of
    it here: the device's used steps are not spent). It names the device: shown only
    after the password step, where the account's Security info would name it as well."""
    t = time.time() if now is None else now
    for device in devices:
        if not device.confirmed and sdk_totp.matching_steps(params_of(device), code, now=t):
            return UNFINISHED.format(name=device.name, purpose=purpose, or_else=or_else), device
    return None
