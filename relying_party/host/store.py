"""The users a host-side relying party (pushauth-pam, pushauth-radius) serves and their
devices: the demo RP's own database.

A PAM module or a RADIUS server is a relying party like the demo: it stores each device's public key
(every answer is verified with it) and the TOTP secret it provisioned (the broker
never sees those). So it keeps them in the same SQLite schema, with the same code
(relying_party.web.db, .totp, .credentials): one place for storing credentials,
checking codes and following the broker's list (restored devices). Its users have no
password in it: the first factor is the host's (PAM) or the VPN gateway's or upstream
server's (RADIUS).
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from protocol.codes import Decision

from ..web.db import Database, Device, Enrollment, User, UserExists

if TYPE_CHECKING:
    # Imported where they are used: listing a user's devices needs none of them, and a
    # sign-in needs the code check (pyotp) only when a code is typed.
    from ..models import Credential, SignInResult
    from ..sdk import PushAuthClient
    from ..web import credentials, totp

# The web schema wants a password hash; this one never verifies (it is no Argon2 string).
NO_PASSWORD = "!pushauth-radius: no password here"


class StoreError(Exception):
    """The user store cannot be opened: one line for the CLI."""


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owner_hint(path: Path) -> str:
    """Why a store another account owns cannot be opened, and the fix: `enroll` run as
    root makes a store (mode 0600) that the server, run as its own user, cannot open."""
    try:
        owner = path.stat().st_uid
    except OSError:
        return ""
    me = os.geteuid()
    if owner == me:
        return ""
    return (
        f" (it belongs to {_account(owner)}, and this runs as {_account(me)}: run enroll, devices"
        f" and remove as the account the server runs as, or give it the store: chown"
        f" {_account(me)} {path}*)"
    )


class UserStore:
    def __init__(self, path: Path) -> None:
        try:
            self.db = Database(path)
        except (OSError, sqlite3.Error) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"cannot open the user store {path}: {why}{_owner_hint(path)}") from None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o006:
            # Made 0600; a store every local user may read gives them every user's TOTP
            # secrets (so their verification codes), one they may write a device of theirs.
            self.db.close()
            raise StoreError(
                f"the user store {path} is readable or writable by others (mode {mode:04o}): "
                f"refused, its TOTP secrets give every user's verification codes; chmod 600 {path}"
            )

    def close(self) -> None:
        self.db.close()

    def user(self, name: str) -> User | None:
        return self.db.user_by_name(name)

    def ensure_user(self, name: str) -> User:
        user = self.db.user_by_name(name)
        if user is not None:
            return user
        try:
            return self.db.add_user(name, NO_PASSWORD)
        except UserExists:  # added meanwhile by another enrollment
            found = self.db.user_by_name(name)
            assert found is not None
            return found

    def devices(self, user: User, *, confirmed_only: bool = False) -> list[Device]:
        return self.db.devices(user.id, confirmed_only=confirmed_only)

    def public_keys(self, user: User) -> dict[str, bytes]:
        """The keys that verify the user's sign-ins: those of the devices confirmed here
        (their setup's test push approved, or recovered with a proof). An answer signed
        by anything else is refused, also by a device whose setup never finished (an
        enrollment stopped hard at its test push), whatever a broker routes to it."""
        return {d.credential_id: d.public_key for d in self.devices(user, confirmed_only=True)}

    def check_code(self, user: User, code: str) -> totp.CodeCheck:
        """A verification code of one of the user's confirmed devices, used at most once."""
        from ..web import totp

        return totp.check(self.db, self.devices(user, confirmed_only=True), code)

    def add_enrollment(self, enrollment: Enrollment) -> None:
        self.db.add_enrollment(enrollment)

    def add_device(self, enrollment: Enrollment, credential: Credential) -> None:
        recovery = None if credential.recovery_key is None else credential.recovery_key.public_key
        self.db.add_device(
            enrollment, credential.id, credential.name, credential.public_key, recovery_public_key=recovery
        )

    def forget_enrollment(self, user: User, enrollment_id: str, credential_id: str | None) -> None:
        """Undo a failed enrollment: its row, its unconfirmed device."""
        if credential_id is not None:
            self.db.conn.execute(
                "DELETE FROM devices WHERE user_id = ? AND credential_id = ? AND confirmed = 0",
                (user.id, credential_id),
            )
        self.db.remove_enrollment(user.id, enrollment_id)

    def forget_user(self, user: User) -> None:
        """Remove a user added by a failed enrollment (only while nothing else refers to it)."""
        self.db.conn.execute(
            "DELETE FROM users WHERE id = ? AND NOT EXISTS (SELECT 1 FROM devices WHERE user_id = ?)"
            " AND NOT EXISTS (SELECT 1 FROM enrollments WHERE user_id = ?)",
            (user.id, user.id, user.id),
        )

    def confirm_device(self, credential_id: str) -> None:
        self.db.confirm_device(credential_id)

    def answered(self, result: SignInResult) -> None:
        """A verified approval: its device's "last used" is now (`devices USER` shows it;
        a verification code sets it in check_code)."""
        answer = result.answer
        if answer is not None and answer.decision is Decision.APPROVE:
            self.db.touch_device(answer.credential_id)

    async def sync(self, client: PushAuthClient, user: User) -> credentials.SyncReport:
        """Follow the broker's list of the user's devices, as far as it verifies."""
        from ..web import credentials

        return await credentials.sync(client, self.db, user)

    async def follow(self, client: PushAuthClient, user: User) -> None:
        """Before a code is checked (credentials.follow): a device removed on the phone
        itself no longer counts; the broker unreachable leaves the store as it is."""
        from ..web import credentials

        await credentials.follow(client, self.db, user)
