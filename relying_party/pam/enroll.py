"""`pushauth-pam enroll USER`: add a local user's authenticator, as the demo's Security info page.

Prints the enrollment link and its QR code in the terminal, waits for the device to
enroll (the SDK checks its key against the link's secret), stores the key and the
TOTP secret provisioned here (in the RP's own store), then sends a test push that the
user approves with the number shown; only then does the device get sign-ins.
"""

from __future__ import annotations

import json
from typing import TextIO

import segno

from ..errors import VerificationFailed
from ..radius.store import UserStore
from ..sdk import PushAuthClient
from ..totp import new_totp
from ..web.db import Enrollment
from .config import Config


class EnrollError(Exception):
    """The enrollment did not complete: one line for the CLI."""


async def enroll(config: Config, local: str, name: str, *, out: TextIO) -> None:
    """Enroll a device for local account `local`, pushauth user `name`."""
    store = UserStore(config.store)
    try:
        user = store.ensure_user(name)
        async with PushAuthClient(
            config.broker_url, config.api_key, request_timeout=config.request_timeout
        ) as sdk:
            params = new_totp()
            started = await sdk.create_enrollment(user.handle, name, totp=params)
            assert started.uri is not None  # the SDK guarantees it on creation
            row = Enrollment(
                id=started.id,
                user_id=user.id,
                uri=started.uri,
                totp_secret=params.secret,
                totp_algorithm=params.algorithm,
                totp_digits=params.digits,
                totp_period=params.period,
                expires_at=started.expires_at,
                credential_id=None,
                sdk_enrollment=json.dumps(started.to_json()),
            )
            store.add_enrollment(row)
            print(f"Enrollment of {local} ({name}) at {config.app_name}.", file=out)
            print("Scan this QR code with the authenticator, or give it the link below:", file=out)
            segno.make(started.uri, error="l").terminal(out=out, compact=True)
            print(f"link: {started.uri}", file=out, flush=True)
            try:
                done = await sdk.wait_enrollment(started, timeout=config.enroll_timeout)
            except VerificationFailed as exc:
                raise EnrollError(
                    f"the broker reported a key the device did not bind to this link: {exc}"
                ) from None
            if not done.completed or done.credential is None:
                raise EnrollError(f"the device did not enroll in time ({done.status}); run enroll again")
            cred = done.credential
            store.add_device(row, cred)
            print(f"device {cred.name!r} enrolled; sending a test push", file=out, flush=True)
            test = await sdk.create_challenge(
                user.handle,
                {"app": config.app_name, "purpose": "setup test", "user": local},
                digits=config.digits,
                ttl=config.push_ttl,
                credential_id=cred.id,
            )
            print(f"Test push: type {test.number} in your authenticator", file=out, flush=True)
            result = await sdk.wait_result(test, {cred.id: cred.public_key})
            if not result.approved:
                raise EnrollError(f"the test push was not approved: {result.reason}; run enroll again")
            await sdk.confirm_credential(cred.id)
            store.confirm_device(cred.id)
            print(f"{local} can now sign in with push approval or a verification code", file=out, flush=True)
    finally:
        store.close()
