"""Context entries with a meaning to devices (docs/protocol.md, section 15.1).

A challenge's context is the RP's data, shown to the user as plain text and hashed into
the answer. One entry also tells the device how to word the request, `purpose`, with two
agreed values: `setup test` marks the test notification an RP sends to a device it is
adding, so the device asks "finish adding this device?" instead of "are you trying to
sign in?"; `verify` marks a re-authentication of a person already signed in ("verify
it's you" before a sensitive change), so the device asks whether they are verifying
their identity and points at the page asking them to. The entry is still shown and
signed like any other: a broker cannot add, drop or change it without the answer failing
the context hash (section 10), so it never turns a sign-in into something that looks
harmless to approve.
"""

from __future__ import annotations

from collections.abc import Mapping

PURPOSE = "purpose"
# The exact values, compared as is (no case folding, no trimming): one spelling for all RPs.
SETUP_TEST = "setup test"
VERIFY = "verify"
KNOWN = (SETUP_TEST, VERIFY)


def purpose_of(ctx: Mapping[str, str]) -> str | None:
    """The agreed purpose of a challenge with this context (SETUP_TEST or VERIFY), or
    None for a sign-in: no `purpose` entry, or a value devices do not know."""
    value = ctx.get(PURPOSE)
    return value if value in KNOWN else None


def is_setup_test(ctx: Mapping[str, str]) -> bool:
    """Whether a challenge with this context is an RP's test notification for a device
    being added (its number is on the RP's setup page, not a sign-in page)."""
    return purpose_of(ctx) == SETUP_TEST


def is_verify(ctx: Mapping[str, str]) -> bool:
    """Whether a challenge with this context asks a person already signed in to verify
    it is them (its number is on the RP's page asking them to, not a sign-in page)."""
    return purpose_of(ctx) == VERIFY


def setup_test_context(ctx: Mapping[str, str]) -> dict[str, str]:
    """`ctx` with the setup test marker: what an RP sends with a new device's test push."""
    return {**ctx, PURPOSE: SETUP_TEST}


def verify_context(ctx: Mapping[str, str]) -> dict[str, str]:
    """`ctx` with the verify marker: what an RP sends to re-authenticate a signed-in person."""
    return {**ctx, PURPOSE: VERIFY}
