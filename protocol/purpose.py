"""Context entries with a meaning to devices (docs/protocol.md, section 15.1).

A challenge's context is the RP's data, shown to the user as plain text and hashed into
the answer. One entry also tells the device how to word the request: `purpose` set to
`setup test` marks the test notification an RP sends to a device it is adding, so the
device asks "finish adding this device?" instead of "are you trying to sign in?". The
entry is still shown and signed like any other: a broker cannot add, drop or change it
without the answer failing the context hash (section 10), so it never turns a sign-in
into something that looks harmless to approve.
"""

from __future__ import annotations

from collections.abc import Mapping

PURPOSE = "purpose"
# The exact value, compared as is (no case folding, no trimming): one spelling for all RPs.
SETUP_TEST = "setup test"


def is_setup_test(ctx: Mapping[str, str]) -> bool:
    """Whether a challenge with this context is an RP's test notification for a device
    being added (its number is on the RP's setup page, not a sign-in page)."""
    return ctx.get(PURPOSE) == SETUP_TEST


def setup_test_context(ctx: Mapping[str, str]) -> dict[str, str]:
    """`ctx` with the setup test marker: what an RP sends with a new device's test push."""
    return {**ctx, PURPOSE: SETUP_TEST}
