"""`pushauth-radius enroll USER`: add a user's authenticator, as the demo's Security info
page does (relying_party.host.enroll: link and terminal QR code, binding check, test push
to the new device alone, then confirmed)."""

from __future__ import annotations

from typing import TextIO

from ..host.enroll import EnrollError as EnrollError  # the CLI's one-line failure
from ..host.enroll import enroll_in_terminal
from ..sdk import PushAuthClient
from .config import Config


async def enroll(config: Config, name: str, *, account: str | None, timeout: float, out: TextIO) -> None:
    async with PushAuthClient(
        config.broker_url, config.api_key, request_timeout=config.broker_timeout
    ) as sdk:
        await enroll_in_terminal(
            store=config.store,
            sdk=sdk,
            user=name,
            account=account or name,
            intro=(
                f"Enrollment of {name} at {config.app_name}. Scan this QR code with the authenticator,\n"
                "or give it the link below (pushauth-agent enroll LINK):"
            ),
            test_context={"app": config.app_name},
            digits=config.digits,
            ttl=config.ttl,
            timeout=timeout,
            done=f"{name} can now sign in with push approval or a verification code",
            out=out,
        )
