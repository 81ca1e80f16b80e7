"""pushauth for relying parties: the SDK (a client of the broker's RP API) and the demo app.

The SDK verifies every device answer end to end with the public keys the RP stored
at enrollment; see relying_party.sdk and relying_party.verify.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The context marker of a new device's test push: an RP needs it with the client.
    from protocol.purpose import setup_test_context, verify_context

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
        TooManyCredentials,
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
        EnrollmentRefusal,
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
    from .one_request import PendingSignIn
    from .sdk import PushAuthClient
    from .totp import TotpCheck, TotpParams, check_code, new_totp

# Every name is imported from its module on first use, not with the package: each
# `relying_party.*` module (the host CLIs `pushauth-pam` and `pushauth-radius`, the
# demo's `pushauth-rp`, the PAM module in every sign-in) imports this package first,
# and most of them need neither the client (aiohttp, about 0.2 s of CPU) nor the data
# models (which load the frame types) nor pyotp (docs/performance.md, "Command start-up").
_LAZY = {
    "setup_test_context": "protocol.purpose",
    "verify_context": "protocol.purpose",
    **dict.fromkeys(
        (
            "BadBrokerResponse",
            "BrokerError",
            "BrokerUnavailable",
            "Conflict",
            "InvalidRequest",
            "NoDevices",
            "NotFound",
            "PushAuthError",
            "PushBlocked",
            "RateLimited",
            "ServiceUnavailable",
            "TooManyCredentials",
            "Unauthorized",
            "VerificationFailed",
            "VerificationReason",
        ),
        ".errors",
    ),
    **dict.fromkeys(
        (
            "Challenge",
            "Credential",
            "CredentialSync",
            "Decision",
            "Enrollment",
            "EnrollmentRefusal",
            "EnrollmentStatus",
            "Health",
            "Policy",
            "PushBlock",
            "RelyingParty",
            "SignInResult",
            "Status",
            "VerifiedAnswer",
            "credentials_from_json",
            "keys_for",
            "totp_from_json",
            "totp_to_json",
        ),
        ".models",
    ),
    "PendingSignIn": ".one_request",
    "PushAuthClient": ".sdk",
    **dict.fromkeys(("TotpCheck", "TotpParams", "check_code", "new_totp"), ".totp"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "EnrollmentRefusal",
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
    "TooManyCredentials",
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
    "verify_context",
]
