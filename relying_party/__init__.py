"""pushauth for relying parties: the SDK (a client of the broker's RP API) and the demo app.

The SDK verifies every device answer end to end with the public keys the RP stored
at enrollment; see relying_party.sdk and relying_party.verify.
"""

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
    RelyingParty,
    SignInResult,
    Status,
    VerifiedAnswer,
)
from .one_request import PendingSignIn
from .sdk import PushAuthClient
from .totp import TotpParams, new_totp

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
    "PushAuthClient",
    "PushAuthError",
    "PushBlocked",
    "RateLimited",
    "RelyingParty",
    "ServiceUnavailable",
    "SignInResult",
    "Status",
    "TotpParams",
    "Unauthorized",
    "VerificationFailed",
    "VerificationReason",
    "VerifiedAnswer",
    "new_totp",
]
