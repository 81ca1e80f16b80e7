"""How pushauth-pam and pushauth-radius name the end of a push: the same audit words
(`outcome=...`) from the SDK's verified status. Each has its own Outcome enum (with its
own outcomes besides these); these values are common to both."""

from __future__ import annotations

from protocol.challenge import Status

# The SDK's verified status -> the outcome's audit word. APPROVED here means the SDK
# approved it (signature, number and freshness checked), never the broker's word.
BY_STATUS: dict[Status, str] = {
    Status.APPROVED: "approved",
    Status.DENIED: "denied",
    Status.NUMBER_MISMATCH: "number_mismatch",
    Status.REPORTED: "reported",
    Status.EXPIRED: "expired",
    Status.PENDING: "expired",  # still unanswered when the wait ended
    Status.CANCELLED: "cancelled",
    Status.SUPERSEDED: "superseded",
    Status.WITHDRAWN: "withdrawn",
}
ENDED = "ended"  # a final status neither knows: not approved
