"""Temporary access passes (as Entra ID's TAP): issued by an administrator
(`pushauth-rp user tap USER`), time-limited, good for one sign-in after the password
in place of the push, so that someone who lost their only device can sign in and add
a new one. Kept hashed (recovery_secrets.py); a newer pass replaces an unused older
one; each use is recorded (when, from where), and Security info shows it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import recovery_secrets
from .db import Database, now_ms

DEFAULT_MINUTES = 60
MIN_MINUTES = 10  # Entra's range too: 10 minutes to 30 days
MAX_MINUTES = 30 * 24 * 60
# 4 groups of 4 symbols: 80 random bits.
GROUPS, GROUP_LEN = 4, 4


@dataclass(frozen=True, slots=True)
class AccessPass:
    id: int
    created_at: int
    expires_at: int
    used_at: int | None
    used_ip: str | None
    used_browser: str | None
    revoked_at: int | None

    @property
    def state(self) -> str:
        """What Security info says of it: used, replaced, expired or active."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "replaced"
        return "expired" if self.expires_at <= now_ms() else "active"


class Use(enum.Enum):
    ACCEPTED = "accepted"
    EXPIRED = "expired"
    USED = "used"
    WRONG = "wrong"


class BadMinutes(ValueError):
    pass


def issue(db: Database, user_id: int, minutes: int = DEFAULT_MINUTES) -> tuple[str, int]:
    """A new pass for the user (an unused earlier one stops working); the pass, to show
    once, and when it expires (Unix ms). Runs scrypt once: fine for the CLI."""
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise BadMinutes(f"a temporary access pass lasts {MIN_MINUTES} to {MAX_MINUTES} minutes")
    secret = recovery_secrets.new_secret(GROUPS, GROUP_LEN)
    salt = recovery_secrets.new_salt()
    pass_hash = recovery_secrets.digest(secret, salt)
    now = now_ms()
    expires = now + minutes * 60_000
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute(
            "UPDATE access_passes SET revoked_at = ? WHERE user_id = ? AND used_at IS NULL"
            " AND revoked_at IS NULL",
            (now, user_id),
        )
        db.conn.execute(
            "INSERT INTO access_passes (user_id, pass_hash, salt, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, pass_hash, salt, now, expires),
        )
    return secret, expires


def latest(db: Database, user_id: int) -> AccessPass | None:
    row = db.conn.execute(
        "SELECT id, created_at, expires_at, used_at, used_ip, used_browser, revoked_at"
        " FROM access_passes WHERE user_id = ? ORDER BY id DESC LIMIT 1",
        (user_id,),
    ).fetchone()
    return AccessPass(**row) if row else None


async def use(db: Database, user_id: int, typed: str, *, ip: str, browser: str) -> Use:
    """Spend the user's latest pass if `typed` is it, it is unused and not expired.
    The checks and the spending are one UPDATE (two racing requests: one wins)."""
    row = db.conn.execute(
        "SELECT id, pass_hash, salt FROM access_passes WHERE user_id = ? ORDER BY id DESC LIMIT 1",
        (user_id,),
    ).fetchone()
    bare = recovery_secrets.normalize(typed)
    if row is None or bare is None or len(bare) != GROUPS * GROUP_LEN:  # no hash for junk
        return Use.WRONG
    typed_hash = await recovery_secrets.digest_async(typed, bytes(row["salt"]))
    if not recovery_secrets.same(typed_hash, bytes(row["pass_hash"])):
        return Use.WRONG
    now = now_ms()
    cur = db.conn.execute(
        "UPDATE access_passes SET used_at = ?, used_ip = ?, used_browser = ? WHERE id = ?"
        " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
        (now, ip, browser, row["id"], now),
    )
    if cur.rowcount == 1:
        return Use.ACCEPTED
    (used_at,) = db.conn.execute("SELECT used_at FROM access_passes WHERE id = ?", (row["id"],)).fetchone()
    return Use.USED if used_at is not None else Use.EXPIRED
