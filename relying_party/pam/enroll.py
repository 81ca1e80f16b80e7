"""`pushauth-pam enroll USER`: add a local user's authenticator, as the demo's Security
info page does (relying_party.host.enroll: link and terminal QR code, binding check,
test push to the new device alone, then confirmed)."""

from __future__ import annotations

from typing import TextIO

from ..host.enroll import EnrollError as EnrollError  # the CLI's one-line failure
from ..host.enroll import enroll_in_terminal
from ..sdk import PushAuthClient
from .config import Config


async def enroll(config: Config, local: str, name: str, *, out: TextIO) -> None:
    """Enroll a device for local account `local`, pushauth user `name`."""
    async with PushAuthClient(
        config.broker_url, config.api_key, request_timeout=config.request_timeout
    ) as sdk:
        await enroll_in_terminal(
            store=config.store,
            sdk=sdk,
            user=name,
            account=name,
            intro=(
                f"Enrollment of {local} ({name}) at {config.app_name}.\n"
                "Scan this QR code with the authenticator, or give it the link below:"
            ),
            test_context={"app": config.app_name, "user": local},
            digits=config.digits,
            ttl=config.push_ttl,
            timeout=config.enroll_timeout,
            done=f"{local} can now sign in with push approval or a verification code",
            out=out,
        )
