"""The demo RP's small parts on their own: codes, lockouts, limits, fields, QR, context."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from relying_party.clocks import ClockWatch
from relying_party.errors import BrokerUnavailable, VerificationFailed, VerificationReason
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp
from relying_party.web import forms, passwords, qr, signin_context, totp
from relying_party.web.config import Settings
from relying_party.web.credentials import clock_off
from relying_party.web.db import MIGRATIONS, SCHEMA, Database, Enrollment, now_ms
from relying_party.web.push import setup_ttl
from relying_party.web.ratelimit import AttemptLimiter
from relying_party.web.revocations import next_attempt_at


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "rp.db")


def _device(db: Database, name: str, *, algorithm: str = "SHA1", digits: int = 6) -> tuple[str, str]:
    user = db.user_by_name(name) or db.add_user(name, "x")
    params = new_totp(algorithm=algorithm, digits=digits)
    cid = f"cred-{name}-{algorithm}-{digits}"
    e = Enrollment(f"e-{cid}", user.id, "u", params.secret, algorithm, digits, 30, now_ms(), None)
    db.add_enrollment(e)
    db.add_device(e, cid, "Phone", bytes(32))
    db.confirm_device(cid)
    return cid, params.secret


def oathtool(secret: str, at: float, *, digits: int = 6, algorithm: str = "SHA1") -> str:
    """The code an independent implementation computes (oathtool, from scripts/ensure-tools)."""
    exe = shutil.which("oathtool")
    assert exe, "oathtool is not installed: run scripts/ensure-tools test"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    out = subprocess.run(
        [exe, f"--totp={algorithm.lower()}", "-b", secret, "--digits", str(digits), "--now", stamp],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(("algorithm", "digits"), [("SHA1", 6), ("SHA256", 8), ("SHA512", 6)])
def test_codes_agree_with_oathtool_within_one_step(db: Database, algorithm: str, digits: int) -> None:
    cid, secret = _device(db, "alice", algorithm=algorithm, digits=digits)
    user = db.user_by_name("alice")
    assert user is not None
    now = 1_800_000_015.0
    # One step back is accepted, then the current step, then one step ahead.
    for offset in (-30, 0, 30):
        code = oathtool(secret, now + offset, digits=digits, algorithm=algorithm)
        result = totp.check(db, db.devices(user.id), code, now=now)
        assert result.device is not None and result.device.credential_id == cid, offset
    # Two steps ahead: too far.
    far = oathtool(secret, now + 60, digits=digits, algorithm=algorithm)
    assert totp.check(db, db.devices(user.id), far, now=now).device is None


def test_a_used_code_and_earlier_codes_are_refused(db: Database) -> None:
    _cid, secret = _device(db, "alice")
    user = db.user_by_name("alice")
    assert user is not None
    now = 1_800_000_015.0
    current = oathtool(secret, now)
    assert totp.check(db, db.devices(user.id), current, now=now).device is not None
    again = totp.check(db, db.devices(user.id), current, now=now)
    assert again.device is None and again.replayed
    previous = oathtool(secret, now - 30)
    assert totp.check(db, db.devices(user.id), previous, now=now).device is None


def test_each_device_has_its_own_secret(db: Database) -> None:
    _device(db, "alice", algorithm="SHA1")
    cid2, secret2 = _device(db, "alice", algorithm="SHA256")
    user = db.user_by_name("alice")
    assert user is not None
    now = time.time()
    result = totp.check(db, db.devices(user.id), oathtool(secret2, now, algorithm="SHA256"), now=now)
    assert result.device is not None and result.device.credential_id == cid2
    # Another user's device never matches.
    _cid3, secret3 = _device(db, "bob")
    assert totp.check(db, db.devices(user.id), oathtool(secret3, now), now=now).device is None


def test_lockout_doubles_and_resets_on_success(db: Database) -> None:
    user = db.add_user("alice", "x")
    for _ in range(3):
        db.record_failure(user.id, after=3, base_s=60, max_s=900)
    first = db.user_by_id(user.id)
    assert first is not None and 55_000 < first.locked_until - now_ms() <= 60_000
    for _ in range(3):
        db.record_failure(user.id, after=3, base_s=60, max_s=900)
    second = db.user_by_id(user.id)
    assert second is not None and 115_000 < second.locked_until - now_ms() <= 120_000
    for _ in range(30):
        db.record_failure(user.id, after=3, base_s=60, max_s=900)
    capped = db.user_by_id(user.id)
    assert capped is not None and capped.locked_until - now_ms() <= 900_000
    db.record_success(user.id)
    reset = db.user_by_id(user.id)
    assert reset is not None and (reset.failed_attempts, reset.lockouts, reset.locked_until) == (0, 0, 0)


def _restored(db: Database, user_id: int, cid: str) -> None:
    """A device "cred-new" restored with `cid`'s recovery key, the restore made at 1,000
    (the proof's checks are the SDK's, not the database's)."""
    source = db.device(user_id, cid)
    assert source is not None
    db.set_recovery_key(cid, bytes(range(32)))
    proof = '{"from": "x", "ts": 1, "recovery_signature": "", "signature": ""}'
    assert db.add_recovered_device(
        source,
        "cred-new",
        "New phone",
        bytes(32),
        recovery_public_key=bytes(32),
        recovery_proof=proof,
        added_at=1_000,
    )


def test_a_restored_device_shares_the_code_count_of_its_source(db: Database) -> None:
    """The restored app has the account's secret from its backup: a code used on either
    device is used on both."""
    cid, secret = _device(db, "alice")
    user = db.user_by_name("alice")
    assert user is not None
    _restored(db, user.id, cid)
    new = db.device(user.id, "cred-new")
    assert new is not None and new.recovered_from == cid and new.confirmed and new.totp_secret == secret
    assert new.created_at == 1_000  # when the restore was made, not when it was stored
    assert db.device(user.id, cid).recovery_public_key is None  # type: ignore[union-attr]  # spent
    now = 1_800_000_015.0
    code = oathtool(secret, now)
    assert totp.check(db, [new], code, now=now).device is not None
    again = totp.check(db, db.devices(user.id), code, now=now)
    assert again.device is None and again.replayed


OLD_SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    handle TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0, lockouts INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices (
    credential_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL, public_key BLOB NOT NULL, totp_secret TEXT NOT NULL,
    totp_algorithm TEXT NOT NULL, totp_digits INTEGER NOT NULL, totp_period INTEGER NOT NULL,
    totp_last_counter INTEGER NOT NULL DEFAULT -1, confirmed INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, last_used_at INTEGER
);
CREATE TABLE enrollments (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uri TEXT NOT NULL, totp_secret TEXT NOT NULL, totp_algorithm TEXT NOT NULL,
    totp_digits INTEGER NOT NULL, totp_period INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    credential_id TEXT
);
INSERT INTO users (name, handle, password_hash, created_at) VALUES ('alice', 'u-1', 'x', 1);
INSERT INTO devices (credential_id, user_id, name, public_key, totp_secret, totp_algorithm,
    totp_digits, totp_period, confirmed, created_at)
    VALUES ('cred-old', 1, 'Phone', x'00', 'S', 'SHA1', 6, 30, 1, 1);
INSERT INTO enrollments (id, user_id, uri, totp_secret, totp_algorithm, totp_digits, totp_period,
    expires_at) VALUES ('en-old', 1, 'pushauth://enroll?v=1', 'S', 'SHA1', 6, 30, 99999999999999);
"""


def test_a_database_of_the_previous_demo_is_migrated(tmp_path: Path) -> None:
    """The demo's database from before protocol v2 opens with its devices as they were;
    a setup it left half done cannot be verified (no link secret), so it reads as such."""
    path = tmp_path / "rp.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    for _ in range(2):  # a second open finds nothing left to do
        db = Database(path)
        device = db.device(1, "cred-old")
        assert device is not None and device.name == "Phone" and device.confirmed
        assert device.recovery_public_key is None and device.recovered_from is None
        assert device.setup_challenge is None  # no test notification to look for
        enrollment = db.enrollment(1, "en-old")
        assert enrollment is not None and enrollment.sdk_enrollment is None and not enrollment.refused
        db.close()
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(devices)")}
    assert {"recovery_public_key", "recovery_key_ts", "recovered_from", "setup_challenge"} <= columns
    # Removal pending came later than all of that: the table is there, and works.
    db = Database(path)
    assert db.pending_revocations(1) == []
    assert db.remove_device_revocation_pending(1, "cred-old", error="503", next_attempt_at=1)
    assert db.device(1, "cred-old") is None
    assert [(p.credential_id, p.name) for p in db.pending_revocations(1)] == [("cred-old", "Phone")]
    db.close()


def test_a_pending_revocation_keeps_its_backoff_and_says_it_is_listed_once(db: Database) -> None:
    """The background's failures count and move its next turn; one on the user's own
    request (a page load) does not. "Still listed" is news once. The broker's word ends it."""
    cid, _ = _device(db, "alice")
    uid = db.user_by_name("alice").id  # type: ignore[union-attr]
    assert db.remove_device_revocation_pending(uid, cid, error="503", next_attempt_at=10)
    assert not db.remove_device_revocation_pending(uid, "cred-none", error="503", next_attempt_at=10)
    assert db.devices(uid) == [] and db.due_revocations(9, limit=5) == []
    db.revocation_failed(cid, error="timeout")
    (pending,) = db.due_revocations(10, limit=5)
    assert (pending.attempts, pending.next_attempt_at, pending.last_error) == (1, 10, "timeout")
    db.revocation_failed(cid, error="503", next_attempt_at=70)
    (pending,) = db.pending_revocations(uid)
    assert (pending.attempts, pending.next_attempt_at) == (2, 70) and db.due_revocations(69, limit=5) == []
    assert db.note_revocation_listed(cid) and not db.note_revocation_listed(cid)
    assert db.revocation_done(cid) and not db.revocation_done(cid)
    assert db.pending_revocations(uid) == []


def test_the_revocation_backoff_doubles_up_to_its_cap() -> None:
    delays = [next_attempt_at(n, 30, 3600, 1_000) - 1_000 for n in (1, 2, 3, 7, 8, 100)]
    assert delays == [30_000, 60_000, 120_000, 1_920_000, 3_600_000, 3_600_000]


def test_the_migration_marks_accounts_with_a_finished_device_as_needing_a_second_step(
    tmp_path: Path,
) -> None:
    """A database of the demo from before users.second_factor: an account with a device
    whose setup was finished needs a second step from the first open on, whatever the
    broker's list says later; one with only an unfinished setup, or none, does not."""
    path = tmp_path / "rp.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for table, column, declaration in MIGRATIONS:
        if (table, column) != ("users", "second_factor"):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    for uid, name in ((1, "alice"), (2, "bob"), (3, "carol")):
        conn.execute(
            "INSERT INTO users (id, name, handle, password_hash, created_at) VALUES (?, ?, ?, 'x', 1)",
            (uid, name, f"u-{uid}"),
        )
    for cid, uid, confirmed in (("cred-a", 1, 1), ("cred-a2", 1, 0), ("cred-b", 2, 0)):
        conn.execute(
            "INSERT INTO devices (credential_id, user_id, name, public_key, totp_secret, totp_algorithm,"
            " totp_digits, totp_period, confirmed, created_at)"
            " VALUES (?, ?, 'Phone', x'00', 'S', 'SHA1', 6, 30, ?, 1)",
            (cid, uid, confirmed),
        )
    conn.commit()
    conn.close()
    for _ in range(2):  # a second open finds nothing left to do
        db = Database(path)
        flags = {name: db.user_by_name(name).second_factor for name in ("alice", "bob", "carol")}  # type: ignore[union-attr]
        assert flags == {"alice": True, "bob": False, "carol": False}
        db.close()
    # The pre-v2 database of the test above is covered the same way.
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    db = Database(old)
    assert db.user_by_name("alice").second_factor  # type: ignore[union-attr]
    db.close()


def test_the_second_step_ends_only_when_the_user_removes_the_last_device(db: Database) -> None:
    """Set by a finished setup (or a restore); a device dropped on the broker's word
    (remove_device) leaves it; end_second_factor (the user's own removal on Security
    info) ends it only once no finished device is left."""
    first, _ = _device(db, "alice")
    alice = db.user_by_name("alice")
    assert alice is not None and alice.second_factor
    assert not db.add_user("bob", "x").second_factor
    _restored(db, alice.id, first)
    assert db.remove_device(alice.id, first)
    assert not db.end_second_factor(alice.id)  # the restored one is left
    assert db.remove_device(alice.id, "cred-new")
    assert db.user_by_id(alice.id).second_factor  # type: ignore[union-attr]  # dropped: still owed
    assert db.end_second_factor(alice.id)
    assert not db.user_by_id(alice.id).second_factor  # type: ignore[union-attr]


def test_database_file_is_private(tmp_path: Path) -> None:
    Database(tmp_path / "rp.db").close()
    assert (tmp_path / "rp.db").stat().st_mode & 0o777 == 0o600


def test_attempt_limiter_window() -> None:
    limiter = AttemptLimiter(limit=2, window_s=0.2)
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    limiter.failed("a")
    assert 0 < limiter.retry_after("a") <= 0.2
    assert limiter.retry_after("b") == 0  # other addresses are not affected
    time.sleep(0.25)
    assert limiter.retry_after("a") == 0
    limiter.prune()
    assert limiter._failures == {}


async def test_passwords() -> None:
    stored = passwords.hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.check(stored, "correct horse")
    assert not await passwords.check(stored, "wrong horse")
    assert not await passwords.check(None, "correct horse")  # unknown user
    assert not await passwords.check("not a hash", "x")
    assert passwords.password_problem("short") is not None
    assert passwords.password_problem("x" * 257) is not None
    assert passwords.password_problem("long enough") is None


def test_the_unknown_name_hash_costs_what_a_users_hash_costs() -> None:
    """Refusing an unknown name verifies a fixed hash: it must be a real Argon2id hash
    with the parameters users' hashes get now, or the answer's time would tell."""
    dummy, fresh = passwords.DUMMY_HASH, passwords.hash_password("any password")
    # $argon2id$v=19$m=...,t=...,p=...$SALT$HASH: all but the last two fields
    assert dummy.rsplit("$", 2)[0] == fresh.rsplit("$", 2)[0]
    assert passwords.verify_password(passwords.DUMMY_HASH, "not a real password")


@pytest.mark.parametrize("bad", ["", " ", "al ice", "a" * 65, "-alice", "ali\nce", "ali\u00e7e", "<script>"])
def test_user_names_refused(bad: str) -> None:
    with pytest.raises(forms.FormError):
        forms.user_name(bad)


def test_user_names_and_device_names_accepted() -> None:
    assert forms.user_name(" alice.smith@example ") == "alice.smith@example"
    assert forms.device_name("  Pixel   8 ") == "Pixel 8"


def test_qr_code_is_svg_with_a_title() -> None:
    svg = qr.svg("pushauth://enroll?v=2&token=abc", title="QR <code>")
    assert svg.startswith("<svg") and "<title>QR &lt;code&gt;</title>" in svg
    assert "style=" not in svg  # the page's CSP allows no inline styles


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", "Chrome on Linux"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Firefox on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Version/17.0 Mobile Safari/604.1",
            "Safari on iOS",
        ),
        ("curl/8.0", "Unknown browser"),
    ],
)
def test_browser_names(ua: str, expected: str) -> None:
    assert signin_context.browser(ua) == expected


@pytest.mark.parametrize(
    ("ip", "place"),
    [
        ("127.0.0.1", "This computer"),
        ("::1", "This computer"),
        ("192.168.1.5", "Local network"),
        ("8.8.8.8", "Internet"),
        ("garbage", "Unknown location"),
    ],
)
def test_places(ip: str, place: str) -> None:
    assert signin_context.place(ip) == place


async def test_a_setup_push_waits_once_for_a_broker_that_does_not_answer(tmp_path: Path) -> None:
    """The setup's test push reads the RP's policy first (for its lifetime). A broker that
    accepts connections and never answers (hung) raises there, so the page reports it
    after one request timeout rather than fall back and wait for the create as well."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel accepts; nothing ever answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        async with PushAuthClient(url, "pa_" + "k" * 40, request_timeout=0.2) as client:
            settings = Settings(db_path=tmp_path / "rp.db", broker_url=url, api_key="pa_" + "k" * 40)
            with pytest.raises(BrokerUnavailable):
                await setup_ttl(client, settings)


@pytest.mark.parametrize(
    ("typed", "taken"),
    [
        ("123 456", "123456"),
        ("١٢٣٤٥٦", "123456"),  # Arabic-Indic, as an Arabic keyboard types it
        ("۱۲۳ ۴۵۶", "123456"),  # Persian, with the space the app shows
        ("१२३४५६७८", "12345678"),  # Devanagari
        ("\uff11\uff12\uff13\u00a0\uff14\uff15\uff16", "123456"),  # full-width, a no-break space pasted
    ],
)
def test_a_code_in_any_scripts_digits_is_the_same_code(typed: str, taken: str) -> None:
    """As the web authenticator takes the number (asciiDigits in its app.js)."""
    assert forms.totp_code(typed) == taken


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("12ab56", "only digits"),
        ("١٢٣٤٥", "6 or 8 digits"),  # five digits, in any script: the length is what is wrong
        ("²³⁴⁵⁶⁷", "only digits"),  # superscripts are not decimal digits
        ("", "Enter the code"),
    ],
)
def test_a_code_that_is_not_one_says_what_is_wrong(typed: str, says: str) -> None:
    with pytest.raises(forms.FormError) as refused:
        forms.totp_code(typed)
    assert says in refused.value.message and refused.value.field == "code"


def test_an_answer_refused_for_its_time_names_the_clock_that_is_off(db: Database) -> None:
    """Which clock the warning names (credentials.clock_off), by the offset the SDK measured
    when it created the request: this server's when it is off the broker's, else the
    device's; either before any measure. The whole way through: tests/browser."""
    user = db.add_user("alice", "x")
    exc = VerificationFailed(
        VerificationReason.STALE_ANSWER, "signed 10 min 0 s after it expired", challenge_id="ch"
    )
    watch = ClockWatch("http://broker.example", 120_000)
    said = clock_off(user, exc, watch)
    assert (
        "was refused as signed at the wrong time, not forged" in said
        and "this server's clock or the device's" in said
    )
    watch.measured(issued=1_000_000, broker_created=1_000_000 - 300_000, received=1_000_050)
    said = clock_off(user, exc, watch)
    assert "this server's clock is 5 min 0 s ahead of the broker's at http://broker.example" in said, said
    watch.measured(issued=1_000_000, broker_created=1_000_020, received=1_000_050)
    said = clock_off(user, exc, watch)
    assert "so the device's is the one off" in said and "check the device's date and time" in said, said
    assert "[challenge ch: stale_answer: signed 10 min 0 s after it expired]" in said, said
