"""pushauth for relying parties: the SDK (a client of the broker's RP API) and the demo app.

The SDK verifies every device answer end to end with the public keys the RP stored
at enrollment; see relying_party.sdk and relying_party.verify.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The context marker of a new device's test push: an RP needs it with the client.
from protocol.purpose import setup_test_context

from .errors import (
    BadBrokerResponse,
    BrokerError,
    BrokerUnavailable,
    Conflict,
    InvalidRequest,
    NoDevices,
    NotFound,
    PushAuthError,
    PushBlocked,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    VerificationFailed,
    VerificationReason,
)
from .models import (
    Challenge,
    Credential,
    CredentialSync,
    Decision,
    Enrollment,
    EnrollmentStatus,
    Health,
    Policy,
    PushBlock,
    RelyingParty,
    SignInResult,
    Status,
    VerifiedAnswer,
    credentials_from_json,
    keys_for,
    totp_from_json,
    totp_to_json,
)
from .totp import TotpCheck, TotpParams, check_code, new_totp

if TYPE_CHECKING:
    from .one_request import PendingSignIn
    from .sdk import PushAuthClient

# The client and the one-request sign-in need aiohttp; the rest of the package (the
# demo's user commands, the PAM and RADIUS integrations' code checks) does not, so
# they are imported on first use: a CLI command should not pay 0.3 s for a client it
# never opens.
_LAZY = {"PendingSignIn": ".one_request", "PushAuthClient": ".sdk"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BadBrokerResponse",
    "BrokerError",
    "BrokerUnavailable",
    "Challenge",
    "Conflict",
    "Credential",
    "CredentialSync",
    "Decision",
    "Enrollment",
    "EnrollmentStatus",
    "Health",
    "InvalidRequest",
    "NoDevices",
    "NotFound",
    "PendingSignIn",
    "Policy",
    "PushAuthClient",
    "PushAuthError",
    "PushBlock",
    "PushBlocked",
    "RateLimited",
    "RelyingParty",
    "ServiceUnavailable",
    "SignInResult",
    "Status",
    "TotpCheck",
    "TotpParams",
    "Unauthorized",
    "VerificationFailed",
    "VerificationReason",
    "VerifiedAnswer",
    "check_code",
    "credentials_from_json",
    "keys_for",
    "new_totp",
    "setup_test_context",
    "totp_from_json",
    "totp_to_json",
]
