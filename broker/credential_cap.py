"""How many devices one user may have at one RP (DESIGN invariant 13; RP API 1.10).

Each active credential of a user gets every challenge sent to that user (section 12 of
docs/protocol.md), so the work of one sign-in, the broker's frames and Redis reads,
grows with the user's credentials; and each one is kept in Redis until it is removed.
Without a cap, only the RP's enrollment rate bounded that: one user could be given
thousands of devices, and every sign-in of that user would then fan out to all of
them. The RP's policy sets `max_credentials` (broker/policy.py), and the broker counts
the user's active credentials in the same atomic step that adds one, so that two
devices enrolling at once on two nodes cannot both pass a count of one below the cap:

- `POST /v1/enrollments` for a user already at the cap: `409 too_many_credentials`,
  nothing stored (the RP can tell the person before showing a QR code that would fail).
- A device's `enroll` that would go over the cap (enrollments made while there was
  room, completed after others): `error` `too_many_credentials`, and the token is not
  used up, so the same QR code works once a device is removed, while it is valid. The
  enrollment stays pending, and the same script writes the refusal on it (`refused`:
  code, time, cap; RP API 1.11) and publishes an event that answers the RP's long-poll
  on it on any node: the RP tells the person now, not at the link's expiry.
- A recovery (`POST /v1/recoveries`) over the cap: `409 too_many_credentials`, and
  the recovery key is not used up either. The old credential it recovers from does not
  count: a recovery replaces a lost device, whose credential stays valid until someone
  removes it (and removing it first would revoke the very key that recovers), so a user
  at the cap can still recover, and holds at most one more until the old one goes.

Removing a device (the RP's `DELETE /v1/credentials/{id}`, the device's `revoke`)
frees its place at once. A lower cap set later removes nobody's devices: it refuses
new ones until the user is under it.
"""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError

from .api_error import ApiError

CODE = ErrorCode.TOO_MANY_CREDENTIALS.value


def detail(limit: int) -> str:
    """The words of every refusal (problem detail, `error` frame message)."""
    return (
        # "as many as", not "N": a cap lowered later leaves users with more.
        f"this user has as many devices at this service as its policy allows ({limit}, "
        "max_credentials); remove one (DELETE /v1/credentials/{id}, or on the device) "
        "before adding another"
    )


class TooManyCredentials(ProtocolError):
    """Nothing was added: an `error` frame on a device's connection, a 409 in the RP API."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.TOO_MANY_CREDENTIALS, detail(limit))
        self.limit = limit

    def api_error(self) -> ApiError:
        # The limit as a member of its own, so an RP can say it without parsing words.
        return ApiError(409, CODE, self.message, extra={"max_credentials": self.limit})
