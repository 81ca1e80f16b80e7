"""The codes device frames carry: decisions, and the reasons and outcomes the broker sends.

Plain enums, kept apart from frames.py (which re-exports them) so that a program that
only names a code, such as a command line listing its choices or a table of messages,
does not build every frame type and its checks on start-up.
"""

from __future__ import annotations

import enum


class Decision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    FRAUD = "fraud"  # "this wasn't me"


class CancelReason(enum.StrEnum):
    ANSWERED = "answered"  # another device (or this one, on another connection) answered
    EXPIRED = "expired"
    REVOKED = "revoked"  # the credential it was sent to was removed
    CANCELLED = "cancelled"  # the RP cancelled it
    SUPERSEDED = "superseded"  # a newer request for the same user at the same RP replaced it
    WITHDRAWN = "withdrawn"  # ended by a fraud report (this device's or another's), or a block


class RevokeReason(enum.StrEnum):
    BY_RP = "removed_by_rp"
    BY_DEVICE = "removed_by_device"
    DISOWNED = "disowned"  # the old device answered "no, that was not me" to its recovery
    RP_REMOVED = "rp_removed"  # the operator removed the RP from the broker (`rp remove`)


class NoticeDecision(enum.StrEnum):
    """The old device's answer to "was this you?" after a recovery (DESIGN flow 5)."""

    CONFIRM = "confirm"  # "yes, it was me": the notice is dismissed, nothing else changes
    DISOWN = "disown"  # "no": the new credential is revoked and push is muted, as after fraud


class NoticeOutcome(enum.StrEnum):
    CONFIRMED = "confirmed"
    DISOWNED = "disowned"
    # The new (or old) credential was removed meanwhile: there is nothing left to answer.
    WITHDRAWN = "withdrawn"
