"""One "add" for whatever an authenticator is given, as a phone app's single "+"
button takes it: a service's setup link (enroll), a verification-code link (add), an
export (import), or an image of any of their QR codes. The terminal screen's Add
dialog runs this; the CLI keeps one command for each, which scripts call by name.
"""

from __future__ import annotations

from . import actions, links, otp_actions
from .display import enrolled_lines, shown
from .errors import UsageError
from .store import Account, AccountStore


class AlreadyHere(UsageError):
    """The service's account is active on this device already: adding it again makes a
    second sign-in method of the same person, seldom meant (a QR code scanned twice)."""

    def __init__(self, twin: Account, message: str | None = None) -> None:
        super().__init__(
            message
            or f'"{shown(twin.name)}" is here already for {shown(twin.rp_name)}: add it again only for'
            " a second sign-in method on this device"
        )
        self.twin = twin


async def add_anything(store: AccountStore, text: str, *, again: bool = False) -> list[str]:
    """Add what `text` is (a link, or the path of an image or export file) and say
    what was done, a line each. Raises AlreadyHere for an enrollment of an account
    that is here already, unless `again`; an AgentError for anything refused."""
    given = text.strip()
    command = links.command_for(given)
    if command == "enroll":
        link = links.link_argument(given, "enroll")
        twin = actions.twin_of(store, links.parse_uri(link))
        if twin is not None and not again:
            raise AlreadyHere(twin)
        return enrolled_lines(*await actions.enroll(store, link))
    if command == "add":
        entry = otp_actions.add_uri(store, links.link_argument(given, "add"))
        return [f'Added "{shown(entry.name)}" (verification codes).']
    sources = otp_actions.read_sources([given])
    if otp_actions.needs_password(sources):
        raise UsageError(
            f"{given} is an encrypted export: pushauth-agent import {given} asks for its password"
        )
    return otp_actions.import_sources(store, sources, None).lines()
