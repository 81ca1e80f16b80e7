"""Adding a user's authenticator from a terminal, as the demo's Security info page does:
print the enrollment link and its QR code, wait for the device to enroll (the SDK checks
its key against the link's secret), store the key and the TOTP secret provisioned here,
then send a test push to that device alone, which the user approves with the number
shown; only then is the device confirmed and gets ordinary sign-ins."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import segno

from protocol.challenge import Status
from protocol.purpose import setup_test_context

from ..errors import TooManyCredentials, VerificationFailed
from ..models import Credential
from ..models import Enrollment as SdkEnrollment
from ..sdk import PushAuthClient
from ..totp import new_totp
from ..web.db import Enrollment
from .store import UserStore


class EnrollError(Exception):
    """The enrollment did not complete: one line for the CLI."""


async def enroll_in_terminal(
    *,
    store: Path,
    sdk: PushAuthClient,
    user: str,
    account: str,
    intro: str,
    test_context: Mapping[str, str],
    digits: int | None,
    timeout: float,
    done: str,
    out: TextIO,
    ttl: int | None = None,
) -> None:
    """Enroll a device for pushauth user `user` (account label `account`): `intro` is
    printed above the QR code, `done` once the test push is approved. The test push
    carries `test_context` with the setup test marker (the device words it as such) and has
    `digits` and lives `ttl` seconds; None: the RP's policy at the broker decides, as
    for a sign-in (a 6-digit number under the NIST profile)."""
    if not math.isfinite(timeout) or timeout <= 0:
        raise EnrollError(f"the timeout is a number of seconds above 0, not {timeout:g}")
    users = UserStore(store)
    try:
        existed = users.user(user) is not None
        row_user = users.ensure_user(user)
        started = None
        cred = None
        try:
            params = new_totp()
            try:
                started = await sdk.create_enrollment(row_user.handle, account, totp=params)
            except TooManyCredentials as exc:
                limit = f" ({exc.max_credentials})" if exc.max_credentials else ""
                raise EnrollError(
                    f"{user} has as many devices as the service allows{limit}: remove one first (the"
                    " devices command lists them, remove removes one), or ask the broker's operator to"
                    " raise max_credentials"
                ) from None
            row = Enrollment.started(started, row_user.id, params)
            users.add_enrollment(row)
            print(intro, file=out)
            segno.make(started.uri, error="l").terminal(out=out, compact=True)
            print(f"link: {started.uri}", file=out, flush=True)
            try:
                completed = await sdk.wait_enrollment(started, timeout=timeout)
            except VerificationFailed as exc:
                raise EnrollError(
                    f"the broker reported a key the device did not bind to this link: {exc}"
                ) from None
            if not completed.completed and completed.refused is not None:
                # A device used the link while the user had as many as allowed (setups
                # started with room, others finished first): said now, not at the timeout.
                limit = completed.refused.max_credentials
                if limit is None:  # a later broker's reason: the device's app says it
                    raise EnrollError(f"the device was refused ({completed.refused.code}); run enroll again")
                raise EnrollError(
                    f"the device was refused: {user} already has the most devices the service allows"
                    f" ({limit}); remove one first (the devices command lists them, remove removes"
                    " one), then run enroll again"
                )
            if not completed.completed or completed.credential is None:
                raise EnrollError(f"the device did not enroll in time ({completed.status}); run enroll again")
            cred = completed.credential
            users.add_device(row, cred)
            print(f"device {cred.name!r} enrolled; sending a test push", file=out, flush=True)
            test = await sdk.create_challenge(
                row_user.handle,
                setup_test_context(test_context),
                ttl=ttl,
                digits=digits,
                credential_id=cred.id,
            )
            print(f"Test push: type {test.number} in your authenticator", file=out, flush=True)
            result = await sdk.wait_result(test, {cred.id: cred.public_key})
            if not result.approved:
                why = TEST_PUSH_NOT_APPROVED.get(result.status, result.reason)
                raise EnrollError(
                    f"the test push was not approved ({why}): the device was not added; run enroll again"
                )
            await sdk.confirm_credential(cred.id)
            users.confirm_device(cred.id)
        except BaseException:
            # A failed enrollment leaves the store as it was, and withdraws what the
            # broker holds for it (as far as the broker can be reached).
            if started is not None:
                users.forget_enrollment(row_user, started.id, cred.id if cred is not None else None)
            if not existed:
                users.forget_user(row_user)
            await _withdraw(sdk, started, cred)
            raise
        print(done, file=out, flush=True)
    finally:
        users.close()


# Why a test push was not approved, said of adding a device (the SDK's reasons speak of
# sign-ins: "... the sign-in is denied"); other statuses keep the SDK's words.
TEST_PUSH_NOT_APPROVED: dict[Status, str] = {
    Status.DENIED: "it was denied on the device",
    Status.NUMBER_MISMATCH: "the number typed on the device did not match",
    Status.REPORTED: "it was reported on the device as not the user's",
    Status.EXPIRED: "no answer before it expired",
}


async def _withdraw(sdk: PushAuthClient, started: SdkEnrollment | None, cred: Credential | None) -> None:
    """Best effort: the link refused from now on, an unconfirmed credential revoked."""
    with contextlib.suppress(Exception):
        if cred is not None:
            await sdk.revoke_credential(cred.id)
        elif started is not None:
            await sdk.cancel_enrollment(started)
