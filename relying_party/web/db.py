"""The demo RP's own SQLite database: users, their devices, pending setups, sessions.

All queries are tiny and indexed, so they run on the event loop thread; only the
password hashing (deliberately slow) goes to a worker thread.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.uri import TotpParams

    from ..models import Enrollment as SdkEnrollment

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    handle TEXT NOT NULL UNIQUE,           -- the user id the broker knows: opaque, never reused
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    lockouts INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    credential_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    public_key BLOB NOT NULL,              -- verifies every answer end to end (DESIGN.md flow 2.7)
    totp_secret TEXT NOT NULL,             -- provisioned by us, never seen by the broker
    totp_algorithm TEXT NOT NULL,
    totp_digits INTEGER NOT NULL,
    totp_period INTEGER NOT NULL,
    totp_last_counter INTEGER NOT NULL DEFAULT -1,  -- refuses a code used once already
    confirmed INTEGER NOT NULL DEFAULT 0,  -- the setup's test push was approved
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS devices_user ON devices(user_id);
CREATE TABLE IF NOT EXISTS enrollments (
    id TEXT PRIMARY KEY,                   -- the broker's enrollment id
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uri TEXT NOT NULL,
    totp_secret TEXT NOT NULL,
    totp_algorithm TEXT NOT NULL,
    totp_digits INTEGER NOT NULL,
    totp_period INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    credential_id TEXT
);
-- Sign-in activity (as Microsoft's My Sign-ins): every sign-in and attempt, newest first.
-- A push attempt keeps its challenge (Challenge.to_json()) until its result is read and
-- verified ("settled"), so an attempt whose page was closed (an attacker's, after a
-- report) still gets its true result the next time the user looks or signs in.
CREATE TABLE IF NOT EXISTS signin_activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    method TEXT NOT NULL,                  -- password | push | code | recovery (activity.METHODS)
    result TEXT NOT NULL,                  -- activity.RESULTS; "pending" until settled
    purpose TEXT NOT NULL DEFAULT 'signin',  -- signin | reauth
    app TEXT NOT NULL,
    place TEXT NOT NULL,
    ip TEXT NOT NULL,
    browser TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',       -- the device, or why a push was refused
    challenge_id TEXT UNIQUE,
    challenge TEXT,                        -- while pending only
    seen INTEGER NOT NULL DEFAULT 0        -- a report the user was shown after signing in
);
CREATE INDEX IF NOT EXISTS activity_user ON signin_activity(user_id, at);
-- Recovery methods (recovery_codes.py, access_pass.py): only scrypt hashes are kept.
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,               -- scrypt(code, the set's salt)
    salt BLOB NOT NULL,                    -- one per set: one hash per attempt finds the code
    created_at INTEGER NOT NULL,
    used_at INTEGER,                       -- set once, atomically: a code works once
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE IF NOT EXISTS access_passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pass_hash BLOB NOT NULL,               -- scrypt(pass, salt)
    salt BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,                       -- set once, atomically: a pass works once
    used_ip TEXT,
    used_browser TEXT,
    revoked_at INTEGER                     -- replaced by a newer pass before it was used
);
CREATE INDEX IF NOT EXISTS access_passes_user ON access_passes(user_id);
-- Removal pending (revocations.py): devices the user removed on Security info whose
-- revocation the broker did not confirm (it refused, or could not be reached). The
-- device row is gone, so nothing of it approves or verifies here; this row only asks
-- the broker again until it revokes the credential or no longer knows it. New in a
-- database of an older demo too: CREATE TABLE IF NOT EXISTS adds it on open.
CREATE TABLE IF NOT EXISTS pending_revocations (
    credential_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,                    -- the device's name, for the page and the logs
    removed_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,             -- asked at removal and in the background (the backoff's count)
    next_attempt_at INTEGER NOT NULL,      -- the background retry's backoff (ms)
    last_error TEXT NOT NULL,
    listed_noted INTEGER NOT NULL DEFAULT 0  -- "still listed by the broker" logged (once)
);
CREATE INDEX IF NOT EXISTS pending_revocations_user ON pending_revocations(user_id);
CREATE INDEX IF NOT EXISTS pending_revocations_due ON pending_revocations(next_attempt_at);
-- Failed sign-ins on user names that do not exist, counted and locked exactly as a
-- user's (Database.record_failure): a lockout that lasted, doubled or decayed otherwise
-- would tell which names exist. Kept like a user's counts (until the name signs in,
-- which it cannot), up to UNKNOWN_NAMES_MAX rows. New in a database of an older demo too.
CREATE TABLE IF NOT EXISTS unknown_name_failures (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    failed_attempts INTEGER NOT NULL,
    lockouts INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_failed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS unknown_name_failures_age ON unknown_name_failures(last_failed_at);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash BLOB PRIMARY KEY,              -- SHA-256 of the cookie: a leaked DB holds no live cookie
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"""

# Columns added since the first schema, as (table, column, declaration). A new
# database and one made by an older demo both get them here, the same way: SQLite's
# CREATE TABLE IF NOT EXISTS never changes an existing table.
MIGRATIONS: tuple[tuple[str, str, str], ...] = (
    # Protocol v2: the SDK's pending Enrollment (Enrollment.to_json(): it holds the
    # link's secret, which checks the device's binding; kept server-side only). NULL
    # in setups started by an older demo: those cannot be verified, so they read as
    # expired.
    ("enrollments", "sdk_enrollment", "TEXT"),
    # The SDK refused the key the broker reported (VerificationFailed, BAD_BINDING):
    # the setup is over, nothing was stored.
    ("enrollments", "refused", "INTEGER NOT NULL DEFAULT 0"),
    # The credential's recovery key as we accepted it (NULL: not recoverable, or used
    # by a restore): a restored device counts only if this key signed its recovery.
    # ts and signature are NULL for the key named at enrollment (the binding covers it)
    # and set for a rotation signed by the credential's own key.
    ("devices", "recovery_public_key", "BLOB"),
    ("devices", "recovery_key_ts", "INTEGER"),
    ("devices", "recovery_key_signature", "BLOB"),
    # A device restored from another one: that credential's id, and the recovery proof
    # the SDK checked (RecoveryProof.to_json()).
    ("devices", "recovered_from", "TEXT"),
    ("devices", "recovery_proof", "TEXT"),
    # When a restore we accepted spent this credential's recovery key (the SDK's
    # Credential.recovery_spent_at): a key the device names later counts only if newer,
    # also once the restored device is gone ("No, not me", removed). NULL: never spent,
    # or spent before this column (then the restored device's proof, while we keep it).
    ("devices", "recovery_spent_at", "INTEGER"),
    # "Sign out everywhere" and a password change raise the epoch: a session made at a
    # lower one is signed out on its next request (sessions are rows we cannot list by
    # user cheaply; the check is one integer per request).
    ("users", "session_epoch", "INTEGER NOT NULL DEFAULT 0"),
    # After a "this wasn't me" report the next sign-in must change the password (which
    # lifts the push pause at the broker): set when the report is seen, cleared by it.
    ("users", "must_change_password", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "password_changed_at", "INTEGER"),
    # The last test notification sent to a device not confirmed yet (Challenge.to_json()):
    # approved after its page was closed, it still finishes the setup when Security info
    # is shown next (views_security.finish_from_test). NULL once confirmed.
    ("devices", "setup_challenge", "TEXT"),
    # The account has had a second factor: set when a device's setup is first finished
    # (or a device is restored), cleared only when the user removes their last device
    # on Security info. Sign-in asks for a second step while it is set, whatever the
    # broker's list of devices says (auth.second_factor_required): the broker can make
    # us drop devices, never make the account password-only again.
    ("users", "second_factor", "INTEGER NOT NULL DEFAULT 0"),
    # When the device being added answered its own setup's test notification "this wasn't
    # me" (verified: its own key signed the report). Security info says so beside it, and
    # names it as the cause of the push pause the report set at the broker. Cleared if its
    # setup is finished after all.
    ("devices", "setup_reported_at", "INTEGER"),
)
# Run once, in the same transaction, right after its column was added to an existing
# database: what that database already knew, carried into the new column.
BACKFILLS: dict[tuple[str, str], str] = {
    ("users", "second_factor"): (
        "UPDATE users SET second_factor = 1 WHERE id IN (SELECT user_id FROM devices WHERE confirmed = 1)"
    ),
}
ACTIVITY_KEEP = 200  # rows per user: enough for months of sign-ins, bounded against floods
# (beyond it, only reports not yet answered by a password change: Database.add_activity)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    handle: str
    password_hash: str
    created_at: int
    failed_attempts: int
    lockouts: int
    locked_until: int
    session_epoch: int = 0
    must_change_password: bool = False
    password_changed_at: int | None = None
    second_factor: bool = False  # see MIGRATIONS and auth.second_factor_required


@dataclass(frozen=True, slots=True)
class Device:
    credential_id: str
    user_id: int
    name: str
    public_key: bytes
    totp_secret: str
    totp_algorithm: str
    totp_digits: int
    totp_period: int
    totp_last_counter: int
    confirmed: bool
    created_at: int
    last_used_at: int | None
    recovery_public_key: bytes | None = None
    recovery_key_ts: int | None = None
    recovery_key_signature: bytes | None = None
    recovered_from: str | None = None
    recovery_proof: str | None = None  # JSON
    recovery_spent_at: int | None = None  # see MIGRATIONS
    setup_challenge: str | None = None  # JSON, see MIGRATIONS
    setup_reported_at: int | None = None  # ms, see MIGRATIONS


@dataclass(frozen=True, slots=True)
class Enrollment:
    id: str
    user_id: int
    uri: str
    totp_secret: str
    totp_algorithm: str
    totp_digits: int
    totp_period: int
    expires_at: int
    credential_id: str | None
    sdk_enrollment: str | None = None  # JSON, see MIGRATIONS
    refused: bool = False

    @classmethod
    def started(cls, created: SdkEnrollment, user_id: int, totp: TotpParams) -> Enrollment:
        """The row of a setup the broker has just created (`created`, the SDK's state,
        with the link's secret: kept only here, server-side) with the TOTP secret
        provisioned for it (the demo RP's Security info, pushauth-pam/-radius enroll)."""
        assert created.uri is not None  # the SDK guarantees it on creation
        return cls(
            id=created.id,
            user_id=user_id,
            uri=created.uri,
            totp_secret=totp.secret,
            totp_algorithm=totp.algorithm,
            totp_digits=totp.digits,
            totp_period=totp.period,
            expires_at=created.expires_at,
            credential_id=None,
            sdk_enrollment=json.dumps(created.to_json()),
        )


@dataclass(frozen=True, slots=True)
class PendingRevocation:
    """A device removed here whose revocation the broker has not confirmed (see SCHEMA)."""

    credential_id: str
    user_id: int
    name: str
    removed_at: int
    attempts: int
    next_attempt_at: int
    last_error: str
    listed_noted: bool


@dataclass(frozen=True, slots=True)
class Activity:
    id: int
    user_id: int
    at: int
    method: str
    result: str
    purpose: str
    app: str
    place: str
    ip: str
    browser: str
    detail: str
    challenge_id: str | None
    challenge: str | None  # JSON, while pending
    seen: bool


class UserExists(Exception):
    pass


# Names that do not exist whose failed sign-ins are kept (unknown_name_failures).
UNKNOWN_NAMES_MAX = 100_000


def _failed_once(row: sqlite3.Row | None, after: int, base_s: int, max_s: int) -> tuple[int, int, int]:
    """(failed_attempts, lockouts, locked_until) after one more failure on an account or
    name whose counts are `row` (None: none yet): a lock after `after` in a row."""
    failed, lockouts = (row["failed_attempts"] + 1, row["lockouts"]) if row else (1, 0)
    if failed < after:
        return failed, lockouts, 0
    # Each lockout in a row doubles the wait, so guessing stays slow for good.
    return 0, lockouts + 1, now_ms() + min(base_s * 2**lockouts, max_s) * 1000


class Database:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            # Password hashes and TOTP secrets: readable by the owner only, from the start.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA busy_timeout = 5000")  # the CLI may write while the server runs
        self.conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns of MIGRATIONS that the database lacks (see there)."""
        with self.conn:
            # One writer at a time: the CLI and the server may open it together.
            self.conn.execute("BEGIN IMMEDIATE")
            for table, column, declaration in MIGRATIONS:
                have = {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                    if (table, column) in BACKFILLS:
                        self.conn.execute(BACKFILLS[table, column])

    def close(self) -> None:
        self.conn.close()

    # Users.

    def add_user(self, name: str, password_hash: str) -> User:
        now = now_ms()
        try:
            # password_changed_at: when the password was last set (here, with the account).
            # NULL only for accounts of a demo before it was kept: when is unknown then.
            self.conn.execute(
                "INSERT INTO users (name, handle, password_hash, created_at, password_changed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, "u-" + secrets.token_urlsafe(12), password_hash, now, now),
            )
        except sqlite3.IntegrityError:
            raise UserExists(name) from None
        user = self.user_by_name(name)
        assert user is not None
        return user

    def set_password(self, user_id: int, password_hash: str) -> None:
        self.conn.execute(
            "UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = 0,"
            " must_change_password = 0, password_changed_at = ? WHERE id = ?",
            (password_hash, now_ms(), user_id),
        )

    def user_by_name(self, name: str) -> User | None:
        row = self.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return _user(row) if row else None

    def user_by_id(self, user_id: int) -> User | None:
        row = self.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def delete_user(self, user_id: int) -> None:
        """The user and everything kept about them here: devices (keys, TOTP secrets),
        enrollments, sign-in activity (addresses, places, browsers), recovery codes,
        access passes and pending revocations go with the row (ON DELETE CASCADE). A session cookie still held
        names a user who is gone: it is signed out. Ids are never reused (AUTOINCREMENT)."""
        self.conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    def bump_session_epoch(self, user_id: int) -> int:
        """Sign out every session of the user made before now; the new epoch."""
        self.conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?", (user_id,))
        row = self.conn.execute("SELECT session_epoch FROM users WHERE id = ?", (user_id,)).fetchone()
        return int(row["session_epoch"]) if row else 0

    def require_password_change(self, user_id: int) -> None:
        self.conn.execute("UPDATE users SET must_change_password = 1 WHERE id = ?", (user_id,))

    def record_failure(self, user_id: int, *, after: int, base_s: int, max_s: int) -> None:
        """Count a failed password or code; lock the account after `after` in a row."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "SELECT failed_attempts, lockouts FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            if row is None:
                return
            failed, lockouts, locked_until = _failed_once(row, after, base_s, max_s)
            self.conn.execute(
                "UPDATE users SET failed_attempts = ?, lockouts = ?,"
                " locked_until = MAX(locked_until, ?) WHERE id = ?",
                (failed, lockouts, locked_until, user_id),
            )

    def record_unknown_name_failure(self, name: str, *, after: int, base_s: int, max_s: int) -> None:
        """record_failure for a user name that does not exist: the same counts and locks."""
        now = now_ms()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "SELECT failed_attempts, lockouts FROM unknown_name_failures WHERE name = ?", (name,)
            ).fetchone()
            failed, lockouts, locked_until = _failed_once(row, after, base_s, max_s)
            self.conn.execute(
                "INSERT INTO unknown_name_failures VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET failed_attempts = excluded.failed_attempts, lockouts = excluded.lockouts,"
                " locked_until = MAX(locked_until, excluded.locked_until),"
                " last_failed_at = excluded.last_failed_at",
                (name, failed, lockouts, locked_until, now),
            )
            # Bounded: past the cap the names failed on longest ago are forgotten (a sign-in
            # attempt costs a password hash and counts against its address, so reaching it
            # takes many addresses and days; the users table keeps its counts regardless).
            self.conn.execute(
                "DELETE FROM unknown_name_failures WHERE name IN (SELECT name FROM unknown_name_failures"
                " ORDER BY last_failed_at DESC LIMIT -1 OFFSET ?)",
                (UNKNOWN_NAMES_MAX,),
            )

    def unknown_name_locked_until(self, name: str) -> int:
        row = self.conn.execute(
            "SELECT locked_until FROM unknown_name_failures WHERE name = ?", (name,)
        ).fetchone()
        return row["locked_until"] if row else 0

    def record_success(self, user_id: int) -> None:
        self.conn.execute(
            "UPDATE users SET failed_attempts = 0, lockouts = 0, locked_until = 0 WHERE id = ?", (user_id,)
        )

    # Devices.

    def add_device(
        self,
        enrollment: Enrollment,
        credential_id: str,
        name: str,
        public_key: bytes,
        *,
        recovery_public_key: bytes | None = None,
    ) -> bool:
        """Store a new credential once (several waiting pages may see it complete), under a
        name none of the user's other devices has (unique_device_name)."""
        name = self.unique_device_name(enrollment.user_id, name, credential_id)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO devices (credential_id, user_id, name, public_key, totp_secret,"
            " totp_algorithm, totp_digits, totp_period, created_at, recovery_public_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                credential_id,
                enrollment.user_id,
                name,
                public_key,
                enrollment.totp_secret,
                enrollment.totp_algorithm,
                enrollment.totp_digits,
                enrollment.totp_period,
                now_ms(),
                recovery_public_key,
            ),
        )
        # Done: the link's secret (in sdk_enrollment) is not needed any more.
        self.conn.execute(
            "UPDATE enrollments SET credential_id = ?, sdk_enrollment = NULL WHERE id = ?",
            (credential_id, enrollment.id),
        )
        return cur.rowcount == 1

    def add_recovered_device(
        self,
        source: Device,
        credential_id: str,
        name: str,
        public_key: bytes,
        *,
        recovery_public_key: bytes,
        recovery_proof: str,
        added_at: int,
    ) -> bool:
        """Store a credential that a restored device made with `source`'s recovery key
        (checked by the SDK), and spend that key: it works once. `added_at`: when the
        restore made it (its proof's signed time), not when this RP first listed it.

        The restored app has the account's verification-code secret from its backup,
        so the new row gets `source`'s, with its used-code counter (see
        use_totp_counter). It is confirmed: its owner proved the recovery key."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            name = self.unique_device_name(source.user_id, name, credential_id)
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO devices (credential_id, user_id, name, public_key, totp_secret,"
                " totp_algorithm, totp_digits, totp_period, totp_last_counter, confirmed, created_at,"
                " recovery_public_key, recovered_from, recovery_proof)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    credential_id,
                    source.user_id,
                    name,
                    public_key,
                    source.totp_secret,
                    source.totp_algorithm,
                    source.totp_digits,
                    source.totp_period,
                    source.totp_last_counter,
                    added_at,
                    recovery_public_key,
                    source.credential_id,
                    recovery_proof,
                ),
            )
            self.set_recovery_key(source.credential_id, None)
            self._second_factor_set(credential_id)
        return cur.rowcount == 1

    def set_recovery_key(
        self,
        credential_id: str,
        public_key: bytes | None,
        ts: int | None = None,
        signature: bytes | None = None,
    ) -> None:
        """The credential's recovery key from now on (None: spent by a restore)."""
        self.conn.execute(
            "UPDATE devices SET recovery_public_key = ?, recovery_key_ts = ?, recovery_key_signature = ?"
            " WHERE credential_id = ?",
            (public_key, ts, signature, credential_id),
        )

    def set_recovery_spent_at(self, credential_id: str, spent_at: int | None) -> None:
        """When a restore spent the credential's recovery key, as the SDK's sync says."""
        self.conn.execute(
            "UPDATE devices SET recovery_spent_at = ? WHERE credential_id = ?", (spent_at, credential_id)
        )

    def device_named(self, user_id: int, name: str, *, other_than: str | None = None) -> Device | None:
        """The user's device called `name` (case and spacing aside), but `other_than`."""
        key = _name_key(name)
        for device in self.devices(user_id):
            if device.credential_id != other_than and _name_key(device.name) == key:
                return device
        return None

    def unique_device_name(self, user_id: int, name: str, credential_id: str | None = None) -> str:
        """`name`, or `name (2)`, `name (3)` ... when another of the user's devices has it:
        the same phone added again, or two phones that report the same default name, are
        told apart wherever they are named (Security info, its Remove, the activity). The
        device keeps its own name; this is this site's name for it, which the user can
        change (Rename). At most DEVICE_NAME_MAX characters, the name cut to make room."""
        # Here, not at the top: forms imports the TOTP code (pyotp), which the PAM module's
        # per-login `exec` must not load (tests/test_cli_startup.py).
        from .forms import DEVICE_NAME_MAX

        taken = {_name_key(d.name) for d in self.devices(user_id) if d.credential_id != credential_id}
        if _name_key(name) not in taken:
            return name
        n = 2
        while True:
            suffix = f" ({n})"
            candidate = name[: DEVICE_NAME_MAX - len(suffix)].rstrip() + suffix
            if _name_key(candidate) not in taken:
                return candidate
            n += 1

    def devices(self, user_id: int, *, confirmed_only: bool = False) -> list[Device]:
        sql = "SELECT * FROM devices WHERE user_id = ?"
        if confirmed_only:
            sql += " AND confirmed = 1"
        rows = self.conn.execute(sql + " ORDER BY created_at, credential_id", (user_id,)).fetchall()
        return [_device(r) for r in rows]

    def device(self, user_id: int, credential_id: str) -> Device | None:
        row = self.conn.execute(
            "SELECT * FROM devices WHERE user_id = ? AND credential_id = ?", (user_id, credential_id)
        ).fetchone()
        return _device(row) if row else None

    def confirm_device(self, credential_id: str) -> None:
        """The device's setup is finished: it answers sign-ins, and its user needs a
        second step from now on (second_factor, see MIGRATIONS)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE devices SET confirmed = 1, last_used_at = ?, setup_challenge = NULL,"
                " setup_reported_at = NULL WHERE credential_id = ?",
                (now_ms(), credential_id),
            )
            self._second_factor_set(credential_id)

    def _second_factor_set(self, credential_id: str) -> None:
        self.conn.execute(
            "UPDATE users SET second_factor = 1 WHERE id IN"
            " (SELECT user_id FROM devices WHERE credential_id = ? AND confirmed = 1)",
            (credential_id,),
        )

    def end_second_factor(self, user_id: int) -> bool:
        """Password only again: for the user's own removal of their last device on
        Security info, and only if no confirmed device is left. Never for a device
        dropped because the broker no longer lists it (remove_device)."""
        cur = self.conn.execute(
            "UPDATE users SET second_factor = 0 WHERE id = ? AND NOT EXISTS"
            " (SELECT 1 FROM devices WHERE user_id = ? AND confirmed = 1)",
            (user_id, user_id),
        )
        return cur.rowcount == 1

    def set_setup_challenge(self, credential_id: str, challenge: str | None) -> None:
        """The test notification sent to a device being set up (None: none to look at)."""
        self.conn.execute(
            "UPDATE devices SET setup_challenge = ? WHERE credential_id = ? AND confirmed = 0",
            (challenge, credential_id),
        )

    def note_setup_report(self, user_id: int, credential_id: str) -> bool:
        """The device being set up reported its test notification as not made by the user
        (the first report's time is kept). Not for a device whose setup was finished."""
        cur = self.conn.execute(
            "UPDATE devices SET setup_reported_at = COALESCE(setup_reported_at, ?)"
            " WHERE user_id = ? AND credential_id = ? AND confirmed = 0",
            (now_ms(), user_id, credential_id),
        )
        return cur.rowcount == 1

    def rename_device(self, user_id: int, credential_id: str, name: str) -> bool:
        cur = self.conn.execute(
            "UPDATE devices SET name = ? WHERE user_id = ? AND credential_id = ?",
            (name, user_id, credential_id),
        )
        return cur.rowcount == 1

    def remove_device(self, user_id: int, credential_id: str) -> bool:
        cur = self.conn.execute(
            "DELETE FROM devices WHERE user_id = ? AND credential_id = ?", (user_id, credential_id)
        )
        return cur.rowcount == 1

    def remove_device_revocation_pending(
        self, user_id: int, credential_id: str, *, error: str, next_attempt_at: int
    ) -> bool:
        """Remove one of the user's devices whose revocation the broker did not confirm,
        and keep a record to ask it again (revocations.py): both in one step, so a device
        is never gone here without its record. False if there was no such device."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "SELECT name FROM devices WHERE user_id = ? AND credential_id = ?", (user_id, credential_id)
            ).fetchone()
            if row is None:
                return False
            self.conn.execute(
                "DELETE FROM devices WHERE user_id = ? AND credential_id = ?", (user_id, credential_id)
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO pending_revocations (credential_id, user_id, name, removed_at,"
                " attempts, next_attempt_at, last_error) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (credential_id, user_id, row["name"], now_ms(), next_attempt_at, error),
            )
        return True

    def pending_revocations(self, user_id: int) -> list[PendingRevocation]:
        rows = self.conn.execute(
            "SELECT * FROM pending_revocations WHERE user_id = ? ORDER BY removed_at, credential_id",
            (user_id,),
        ).fetchall()
        return [_pending_revocation(r) for r in rows]

    def due_revocations(self, now: int, *, limit: int) -> list[PendingRevocation]:
        """Records whose next retry is due, the longest waiting first."""
        rows = self.conn.execute(
            "SELECT * FROM pending_revocations WHERE next_attempt_at <= ?"
            " ORDER BY next_attempt_at, credential_id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_pending_revocation(r) for r in rows]

    def revocation_failed(
        self, credential_id: str, *, error: str, next_attempt_at: int | None = None
    ) -> None:
        """The broker did not confirm a revocation asked again. `next_attempt_at`: a
        background attempt, counted, with its next turn; None: one on the user's own
        request, which leaves the backoff as it was."""
        if next_attempt_at is None:
            self.conn.execute(
                "UPDATE pending_revocations SET last_error = ? WHERE credential_id = ?",
                (error, credential_id),
            )
            return
        self.conn.execute(
            "UPDATE pending_revocations SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE credential_id = ?",
            (next_attempt_at, error, credential_id),
        )

    def revocation_done(self, credential_id: str) -> bool:
        """The broker revoked the credential (or has it no more): the record ends."""
        cur = self.conn.execute("DELETE FROM pending_revocations WHERE credential_id = ?", (credential_id,))
        return cur.rowcount == 1

    def note_revocation_listed(self, credential_id: str) -> bool:
        """True the first time the broker's list is found still naming this credential."""
        cur = self.conn.execute(
            "UPDATE pending_revocations SET listed_noted = 1 WHERE credential_id = ? AND listed_noted = 0",
            (credential_id,),
        )
        return cur.rowcount == 1

    def touch_device(self, credential_id: str) -> None:
        self.conn.execute(
            "UPDATE devices SET last_used_at = ? WHERE credential_id = ?", (now_ms(), credential_id)
        )

    def use_totp_counter(self, credential_id: str, counter: int) -> bool:
        """Record that the code of time step `counter` was used; False if it (or a later one) was.

        A restored device shares its secret with the device it was restored from, so
        the count is kept on every device of the user with that secret: a code used
        on one is used on all. One immediate transaction, so two requests racing
        with the same code cannot both win.
        """
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "SELECT user_id, totp_secret FROM devices WHERE credential_id = ?", (credential_id,)
            ).fetchone()
            if row is None:
                return False
            same = "WHERE user_id = ? AND totp_secret = ?"
            (used,) = self.conn.execute(
                f"SELECT MAX(totp_last_counter) FROM devices {same}", (row["user_id"], row["totp_secret"])
            ).fetchone()
            if used >= counter:
                return False
            self.conn.execute(
                f"UPDATE devices SET totp_last_counter = ? {same}",
                (counter, row["user_id"], row["totp_secret"]),
            )
            self.conn.execute(
                "UPDATE devices SET last_used_at = ? WHERE credential_id = ?", (now_ms(), credential_id)
            )
        return True

    # Enrollments in progress.

    def add_enrollment(self, enrollment: Enrollment) -> None:
        self.conn.execute(
            "INSERT INTO enrollments (id, user_id, uri, totp_secret, totp_algorithm, totp_digits,"
            " totp_period, expires_at, sdk_enrollment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                enrollment.id,
                enrollment.user_id,
                enrollment.uri,
                enrollment.totp_secret,
                enrollment.totp_algorithm,
                enrollment.totp_digits,
                enrollment.totp_period,
                enrollment.expires_at,
                enrollment.sdk_enrollment,
            ),
        )

    def open_enrollments(self, user_id: int) -> list[Enrollment]:
        """The user's setups whose link may still work: no device registered through
        them yet, not refused, not expired."""
        rows = self.conn.execute(
            "SELECT * FROM enrollments WHERE user_id = ? AND credential_id IS NULL AND refused = 0"
            " AND expires_at > ? ORDER BY expires_at",
            (user_id, now_ms()),
        ).fetchall()
        return [_enrollment(r) for r in rows]

    def remove_enrollment(self, user_id: int, enrollment_id: str) -> None:
        """A setup that was cancelled (its link withdrawn at the broker): forgotten."""
        self.conn.execute("DELETE FROM enrollments WHERE user_id = ? AND id = ?", (user_id, enrollment_id))

    def refuse_enrollment(self, enrollment_id: str) -> None:
        """The SDK refused what the broker reported for this setup: it is over."""
        self.conn.execute("UPDATE enrollments SET refused = 1 WHERE id = ?", (enrollment_id,))

    def enrollment(self, user_id: int, enrollment_id: str) -> Enrollment | None:
        """Only the user's own enrollments: another user's id reads as unknown."""
        row = self.conn.execute(
            "SELECT * FROM enrollments WHERE user_id = ? AND id = ?", (user_id, enrollment_id)
        ).fetchone()
        return _enrollment(row) if row else None

    # Sign-in activity (see activity.py).

    def add_activity(
        self,
        user_id: int,
        method: str,
        result: str,
        context: dict[str, str],
        *,
        purpose: str = "signin",
        detail: str = "",
        challenge_id: str | None = None,
        challenge: str | None = None,
    ) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT OR IGNORE INTO signin_activity (user_id, at, method, result, purpose, app, place,"
                " ip, browser, detail, challenge_id, challenge) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    now_ms(),
                    method,
                    result,
                    purpose,
                    context.get("app", ""),
                    context.get("location", ""),
                    context.get("ip", ""),
                    context.get("browser", ""),
                    detail,
                    challenge_id,
                    challenge,
                ),
            )
            # A report not yet answered by a password change stays whatever follows it:
            # it is what pauses push here (unresolved_report), and an attacker who knows
            # the password could otherwise push it out with refused sign-ins.
            self.conn.execute(
                "DELETE FROM signin_activity WHERE user_id = ? AND NOT (result = 'reported' AND seen = 0)"
                " AND id NOT IN"
                " (SELECT id FROM signin_activity WHERE user_id = ? ORDER BY at DESC, id DESC LIMIT ?)",
                (user_id, user_id, ACTIVITY_KEEP),
            )

    def settle_activity(self, challenge_id: str, result: str, detail: str | None = None) -> bool:
        """The final result of a push attempt, once (a settled row never changes)."""
        cur = self.conn.execute(
            "UPDATE signin_activity SET result = ?, detail = COALESCE(?, detail), challenge = NULL"
            " WHERE challenge_id = ? AND result = 'pending'",
            (result, detail, challenge_id),
        )
        return cur.rowcount == 1

    def activity(self, user_id: int, *, limit: int = 50) -> list[Activity]:
        rows = self.conn.execute(
            "SELECT * FROM signin_activity WHERE user_id = ? ORDER BY at DESC, id DESC LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return [_activity(r) for r in rows]

    def pending_activity(self, user_id: int, *, limit: int = 10) -> list[Activity]:
        rows = self.conn.execute(
            "SELECT * FROM signin_activity WHERE user_id = ? AND result = 'pending'"
            " AND challenge IS NOT NULL ORDER BY at DESC, id DESC LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return [_activity(r) for r in rows]

    def unseen_reports(self, user_id: int) -> list[Activity]:
        rows = self.conn.execute(
            "SELECT * FROM signin_activity WHERE user_id = ? AND result = 'reported' AND seen = 0"
            " ORDER BY at DESC, id DESC",
            (user_id,),
        ).fetchall()
        return [_activity(r) for r in rows]

    def unresolved_report(self, user_id: int) -> bool:
        """A request was reported as "not me" and the password was not changed since (the
        fraud flow, fraud.py): this RP's own record, which pauses push whatever the
        broker says (its mute is lost when its data is restored from an older copy)."""
        row = self.conn.execute(
            "SELECT must_change_password OR EXISTS (SELECT 1 FROM signin_activity"
            " WHERE user_id = users.id AND result = 'reported' AND seen = 0) AS unresolved"
            " FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        return bool(row and row["unresolved"])

    def mark_reports_seen(self, user_id: int) -> None:
        self.conn.execute(
            "UPDATE signin_activity SET seen = 1 WHERE user_id = ? AND result = 'reported'", (user_id,)
        )

    # Sessions (see sessions.py).

    def session_get(self, id_hash: bytes) -> str | None:
        row = self.conn.execute(
            "SELECT data FROM sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now_ms())
        ).fetchone()
        return row["data"] if row else None

    def session_put(self, id_hash: bytes, data: str, expires_at: int) -> None:
        self.conn.execute(
            "INSERT INTO sessions (id_hash, data, created_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
            (id_hash, data, now_ms(), expires_at),
        )

    def session_delete(self, id_hash: bytes) -> None:
        self.conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    def sessions_purge(self) -> None:
        self.conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now_ms(),))


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _user(row: sqlite3.Row) -> User:
    d = dict(row)
    d["must_change_password"] = bool(d.get("must_change_password", 0))
    d["second_factor"] = bool(d.get("second_factor", 0))
    return User(**d)


def _pending_revocation(row: sqlite3.Row) -> PendingRevocation:
    d = dict(row)
    d["listed_noted"] = bool(d["listed_noted"])
    return PendingRevocation(**d)


def _activity(row: sqlite3.Row) -> Activity:
    d = dict(row)
    d["seen"] = bool(d["seen"])
    return Activity(**d)


def _device(row: sqlite3.Row) -> Device:
    d = dict(row)
    d["confirmed"] = bool(d["confirmed"])
    d["public_key"] = bytes(d["public_key"])
    for blob in ("recovery_public_key", "recovery_key_signature"):
        if d[blob] is not None:
            d[blob] = bytes(d[blob])
    return Device(**d)


def _enrollment(row: sqlite3.Row) -> Enrollment:
    d = dict(row)
    d["refused"] = bool(d["refused"])
    return Enrollment(**d)
