"""Device management for pushauth-pam and pushauth-radius: `devices USER` lists a user's
devices as this host's store has them, `remove USER DEVICE` removes one (a lost or
stolen phone) as the demo RP's Security info page does: revoked at the broker, then
deleted from the store (relying_party.web.credentials.remove).

Each CLI maps its USER to the pushauth user (as its `enroll` does) and builds the SDK
client from its configuration; the rest is here, once.

When the broker cannot be reached, removal is refused (nothing changes), unless the
operator asks for `--here-only`: the device is deleted from this host's store at once
(its answers and verification codes stop counting here), while the broker still lists
it, still sends it this user's pushes and takes its answers. Such an answer fails here
(the SDK verifies with the stored keys only: the sign-in is refused and logged as a
security event), and a "this wasn't me" report from it still mutes the user's push at
the broker. `remove USER CREDENTIAL_ID` later revokes it there: a credential no longer
in the store is revoked only if the broker lists it for this very user (the API key
reaches every user of this RP). A sync (relying_party.web.credentials.sync) meanwhile
never brings it back: the SDK accepts no credential the store does not hold, except
a recovery proven with a stored recovery key.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from protocol.text import printable

from ..errors import BrokerUnavailable, PushAuthError
from ..web.db import Device, User
from .store import UserStore

if TYPE_CHECKING:
    # The client (aiohttp) only for `remove`: `add_commands` builds part of the host
    # CLIs' parsers, which every run of them builds (docs/performance.md, "Command start-up").
    from ..sdk import PushAuthClient

# What the broker did on a removal.
REVOKED = "revoked"  # revoked now: an online device is told at once
GONE = "gone"  # it had it no more (removed on the device, or revoked before)
NOT_ASKED = "not asked"  # --here-only: the broker still lists it


class DeviceError(Exception):
    """The command cannot be done: one line for the CLI, and nothing was changed."""


class UnknownUser(DeviceError):
    """No such pushauth user in this host's store (never enrolled here)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """One of a user's devices as the store has it."""

    name: str
    credential_id: str
    added_at: int  # ms since the epoch
    last_used_at: int | None  # its last approval (the setup's included) or code; None: never
    confirmed: bool  # False: its setup's test push was never approved ("setup not finished")
    restored_from: str | None  # the credential id of the device whose backup it came from
    restored_from_name: str | None  # that device's name, while it is still stored

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "credential_id": self.credential_id,
            "added": _iso(self.added_at),
            "last_used": _iso(self.last_used_at) if self.last_used_at else None,
            "confirmed": self.confirmed,
            "restored_from": self.restored_from,
            "restored_from_name": self.restored_from_name,
        }

    @property
    def state(self) -> str:
        state = "confirmed" if self.confirmed else "setup not finished"
        if self.restored_from is not None:
            source = (
                f"{printable(self.restored_from_name)} ({self.restored_from})"
                if self.restored_from_name is not None
                else f"{self.restored_from} (removed)"
            )
            state += f", restored from {source}"
        return state


@dataclass(frozen=True, slots=True)
class Removed:
    """What `remove` did."""

    credential_id: str
    name: str | None  # None: it was not in this host's store (revoked at the broker only)
    broker: str  # REVOKED, GONE or NOT_ASKED
    same_codes: list[str]  # other devices of the user showing the same codes (a restore)
    left: int | None  # devices of the user still in the store (None: not looked at)


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).isoformat(timespec="seconds")


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def listing(devices: list[Device]) -> list[Listed]:
    names = {d.credential_id: d.name for d in devices}
    return [
        Listed(
            name=d.name,
            credential_id=d.credential_id,
            added_at=d.created_at,
            last_used_at=d.last_used_at,
            confirmed=d.confirmed,
            restored_from=d.recovered_from,
            restored_from_name=names.get(d.recovered_from) if d.recovered_from else None,
        )
        for d in devices
    ]


def table(listed: list[Listed]) -> str:
    """The devices as aligned columns; names shown through `printable` (a device chose
    its name: a control character in it must not reach the terminal as one)."""
    rows = [("NAME", "CREDENTIAL ID", "ADDED", "LAST USED", "STATE")]
    rows += [
        (printable(d.name), d.credential_id, _when(d.added_at), _when(d.last_used_at), d.state)
        for d in listed
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]])
        for row in rows
    )


def find(devices: list[Device], which: str, who: str) -> Device | None:
    """The device named `which`: by credential id, else by name (exactly, else ignoring
    case). None if none; DeviceError if several share that name."""
    for device in devices:
        if device.credential_id == which:
            return device
    for same in (lambda d: d.name == which, lambda d: d.name.casefold() == which.casefold()):
        found = [d for d in devices if same(d)]
        if len(found) > 1:
            ids = ", ".join(d.credential_id for d in found)
            raise DeviceError(
                f'{who} has {len(found)} devices named "{printable(which)}" ({ids}): '
                "name the one to remove by its credential id"
            )
        if found:
            return found[0]
    return None


def _open(store: Path, name: str, who: str) -> tuple[UserStore, User]:
    users = UserStore(store)  # StoreError: one line already
    user = users.user(name)
    if user is None:
        users.close()
        raise UnknownUser(f"{who} is not enrolled here (no pushauth user {name!r} in {store})")
    return users, user


def show(store: Path, name: str, *, who: str, as_json: bool, out: TextIO) -> None:
    """`devices USER`: pushauth user `name`'s devices (`who` names the user in messages)."""
    users, user = _open(store, name, who)
    try:
        listed = listing(users.devices(user))
    except sqlite3.Error as exc:
        raise DeviceError(f"cannot read the user store {store}: {exc}") from None
    finally:
        users.close()
    if as_json:
        print(json.dumps([d.to_json() for d in listed], indent=2), file=out)
    elif listed:
        print(table(listed), file=out)
    else:
        print(f"{who} has no devices on this host (enroll one first)", file=out)


async def remove(
    store: Path,
    client: Callable[[], AbstractAsyncContextManager[PushAuthClient]],
    name: str,
    which: str,
    *,
    here_only: bool,
    who: str,
) -> Removed:
    """`remove USER DEVICE`: revoke device `which` (a name or a credential id) of pushauth
    user `name` at the broker, then delete it from the store. With `here_only`, the
    broker is not asked. `client` opens the SDK client (only when the broker is asked)."""
    users, user = _open(store, name, who)
    try:
        devices = users.devices(user)
        device = find(devices, which, who)
        if device is None:
            if here_only:
                raise DeviceError(f'{who} has no device "{printable(which)}" in this host\'s store')
            async with client() as sdk:
                return await _revoke_listed(sdk, user, which, who)
        cid = device.credential_id
        others = [d for d in devices if d.credential_id != cid]
        # A device restored from this one's backup (or the other way round) has its
        # verification-code secret: those codes keep working there.
        same_codes = [d.name for d in others if d.totp_secret == device.totp_secret]
        if here_only:
            users.db.remove_device(user.id, cid)
            return Removed(cid, device.name, NOT_ASKED, same_codes, len(others))
        from ..web import credentials

        async with client() as sdk:
            try:
                revoked = await credentials.remove(sdk, users.db, user, cid)
            except BrokerUnavailable as exc:
                raise DeviceError(
                    f"nothing was removed: the broker cannot be reached ({exc}); try again later, "
                    "or remove it from this host only with --here-only (see --help)"
                ) from None
            except PushAuthError as exc:
                raise DeviceError(f"nothing was removed: {exc}") from None
        return Removed(cid, device.name, REVOKED if revoked else GONE, same_codes, len(others))
    except sqlite3.Error as exc:
        raise DeviceError(f"the user store {store}: {exc}") from None
    finally:
        users.close()


async def _revoke_listed(sdk: PushAuthClient, user: User, which: str, who: str) -> Removed:
    """A credential not in the store (removed here with --here-only): revoked at the
    broker only if the broker lists it for this user; the API key reaches every user of
    this RP, and `remove alice ID` must not revoke bob's phone."""
    from ..web import credentials

    try:
        listed = await sdk.list_credentials(user.handle)
        if not any(cred.id == which for cred in listed):
            raise DeviceError(
                f'{who} has no device "{printable(which)}", on this host or at the broker '
                "(a device removed here only is named by its credential id)"
            )
        revoked = await credentials.revoke(sdk, which)
    except BrokerUnavailable as exc:
        raise DeviceError(
            f'{who} has no device "{printable(which)}" on this host, and the broker cannot be reached '
            f"to look there ({exc})"
        ) from None
    except PushAuthError as exc:
        raise DeviceError(f"nothing was revoked: {exc}") from None
    return Removed(which, None, REVOKED if revoked else GONE, [], None)


def report(removed: Removed, *, who: str, again: str) -> str:
    """What `remove` says it did; `again` is the command that revokes it at the broker
    later (after --here-only), without the credential id."""
    cid = removed.credential_id
    if removed.name is None:
        if removed.broker == GONE:
            return f"{cid} was not in this host's store, and the broker had it no more: nothing left to do"
        return f"{cid} was not in this host's store; now revoked at the broker: no push reaches it again"
    name = printable(removed.name)
    lines = [
        f'removed "{name}" ({cid}) of {who} from this host: its approvals and codes no longer count here'
    ]
    if removed.broker == REVOKED:
        lines.append("revoked at the broker: the device is told at once, and no push reaches it again")
    elif removed.broker == GONE:
        lines.append("the broker had it no more (removed on the device itself, or revoked before)")
    else:
        lines += [
            "warning: the broker still lists it (it was not asked), so it still gets this user's pushes:",
            '  an approval from it is refused here (and ends that sign-in attempt), and a "this wasn\'t me"',
            "  report from it still pauses the user's push. Revoke it at the broker once it can be reached:",
            f"    {again} {cid}",
        ]
    for other in removed.same_codes:
        lines.append(f'note: "{printable(other)}" shows the same verification codes (restored from a backup)')
    if removed.left == 0:
        lines.append(
            f"{who} has no devices left on this host: their sign-ins are refused until one is enrolled"
        )
    return "\n".join(lines)


def add_commands(
    sub: argparse._SubParsersAction[Any], *, who: str, user_help: str, store: str, shared: str = ""
) -> None:
    """The `devices` and `remove` subcommands of a host CLI (pushauth-pam, -radius): `who`
    ("a local user's"), USER's help, and what the CLI calls its store."""
    listing = sub.add_parser(
        "devices",
        help=f"list {who} devices",
        description=f"List USER's devices as {store} has them (the broker is not asked): "
        "name, credential id, when added and last used (its last approval or verification code), "
        "confirmed or 'setup not finished' (its test push never approved), and the device it was "
        "restored from, if any. A device removed on the phone itself leaves this list when "
        "USER next signs in with the broker reachable.",
    )
    listing.add_argument("user", metavar="USER", help=user_help)
    listing.add_argument("--json", action="store_true", help="a JSON list, one object per device")
    drop = sub.add_parser(
        "remove",
        help=f"remove {who} device (lost or stolen): revoke it at the broker, delete it here",
        description="Remove DEVICE of USER: revoke it at the broker (an online device is told at "
        f"once, and no push reaches it again), then delete it from {store} (its "
        f"approvals and verification codes no longer count{shared}). "
        "If the broker cannot be reached, nothing is removed, unless --here-only is given.",
        epilog=f"--here-only deletes the device from {store} without asking the broker: its "
        "approvals and codes stop counting here at once, but the broker still lists it, so it still "
        "gets USER's pushes (an approval from it is refused here, and ends that sign-in attempt) and "
        "a \"this wasn't me\" report from it still pauses USER's push at the broker. Once the broker "
        "can be reached, run remove USER CREDENTIAL_ID (the id --here-only printed) to revoke it there: "
        "a device no longer in the store is revoked only if the broker lists it for USER.",
    )
    drop.add_argument("user", metavar="USER", help=user_help)
    drop.add_argument(
        "device",
        metavar="DEVICE",
        help="its name or credential id (see devices USER); a name two devices share is refused",
    )
    drop.add_argument(
        "--here-only",
        action="store_true",
        help=f"do not ask the broker: delete it from {store} only (see below)",
    )
