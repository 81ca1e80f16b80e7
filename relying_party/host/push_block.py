"""After a sign-in by another way: lift the user's push block at the broker.

The broker blocks push for a user after a "this wasn't me" report or after too many
pushes without a sign-in, "until the user signs in another way and the RP lifts the
block" (docs/http-api.md). A relying party that let the user in by a verification code
must therefore lift it, or push stays blocked for good. Shared by pushauth-pam and
pushauth-radius, as the demo RP does it in relying_party/web/fraud.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import PushAuthError

if TYPE_CHECKING:
    from ..sdk import PushAuthClient

log = logging.getLogger(__name__)


async def lift_after_signin(sdk: PushAuthClient, handle: str) -> str | None:
    """Lift the push block of the user `handle` (a fraud mute, and the count of pushes
    since the last sign-in) after a successful sign-in by another way. Best effort: the
    sign-in stands whatever happens here; returns None when lifted, else a short reason
    for the audit line's detail (its values are cut short: the error's kind only, the
    whole error goes to the log)."""
    try:
        await sdk.lift_push_block(handle)
    except PushAuthError as exc:
        log.warning("cannot lift the push block of %s: %s", handle, exc)
        return not_lifted(type(exc).__name__)
    return None


def not_lifted(reason: str) -> str:
    """The audit detail of a sign-in whose lift did not happen, for `reason`."""
    return f"push block not lifted ({reason})"
