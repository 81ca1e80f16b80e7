"""One-time recovery codes: a set of COUNT codes per user, shown once, kept hashed
(recovery_secrets.py), each good for one sign-in in place of the push or a
verification code. A new set replaces the old one entirely.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from . import recovery_secrets
from .db import Database, now_ms

COUNT = 10
# 2 groups of 5 symbols: 50 random bits per code (recovery_secrets.py says why that
# is enough with scrypt), short enough to type from paper.
GROUPS, GROUP_LEN = 2, 5
LOW = 3  # at or below this many left, the pages suggest a new set


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    left: int
    created_at: int

    @property
    def low(self) -> bool:
        return self.left <= LOW


class Use(enum.Enum):
    ACCEPTED = "accepted"
    USED = "used"  # one of the user's codes, used already
    WRONG = "wrong"  # not one of the user's codes (or none are set up)


def _new_codes() -> list[str]:
    codes: set[str] = set()
    while len(codes) < COUNT:
        codes.add(recovery_secrets.new_secret(GROUPS, GROUP_LEN))
    return sorted(codes)


async def replace_set(db: Database, user_id: int) -> list[str]:
    """A new set of codes for the user, in place of any earlier one (whose codes stop
    working at once); the codes themselves, to show once."""
    codes = _new_codes()
    salt = recovery_secrets.new_salt()
    hashes = await asyncio.to_thread(lambda: [recovery_secrets.digest(c, salt) for c in codes])
    now = now_ms()
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
        db.conn.executemany(
            "INSERT INTO recovery_codes (user_id, code_hash, salt, created_at) VALUES (?, ?, ?, ?)",
            [(user_id, h, salt, now) for h in hashes],
        )
    return codes


def summary(db: Database, user_id: int) -> Summary | None:
    """How many codes the user has and how many are left; None if no set was made."""
    row = db.conn.execute(
        "SELECT COUNT(*) AS total, SUM(used_at IS NULL) AS left, MIN(created_at) AS created_at"
        " FROM recovery_codes WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    if not row["total"]:
        return None
    return Summary(row["total"], row["left"], row["created_at"])


async def use(db: Database, user_id: int, typed: str) -> Use:
    """Spend the code the user typed, if it is one of theirs and unused. The check and
    the spending are one UPDATE, so two requests racing with one code cannot both win."""
    row = db.conn.execute("SELECT salt FROM recovery_codes WHERE user_id = ? LIMIT 1", (user_id,)).fetchone()
    bare = recovery_secrets.normalize(typed)
    if row is None or bare is None or len(bare) != GROUPS * GROUP_LEN:  # no hash for junk
        return Use.WRONG
    code_hash = await recovery_secrets.digest_async(typed, bytes(row["salt"]))
    cur = db.conn.execute(
        "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
        (now_ms(), user_id, code_hash),
    )
    if cur.rowcount == 1:
        return Use.ACCEPTED
    known = db.conn.execute(
        "SELECT 1 FROM recovery_codes WHERE user_id = ? AND code_hash = ?", (user_id, code_hash)
    ).fetchone()
    return Use.USED if known else Use.WRONG
