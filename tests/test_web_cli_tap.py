"""`pushauth-rp user tap` as a real subprocess: a temporary access pass is printed
once, kept only as a hash, replaces an unused earlier one; bad input is one line."""

from __future__ import annotations

import re
import shlex
import sqlite3
import time
from pathlib import Path

import pytest
from support import assert_cli_error, console_script, run_cli

from relying_party.demo import _banner
from relying_party.web import access_pass
from relying_party.web.db import Database

RP = console_script("pushauth-rp")
PASS_RE = re.compile(r"^temporary access pass for alice: ([0-9a-z]{4}(?:-[0-9a-z]{4}){3})$", re.M)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "rp.db"
    added = run_cli([RP, "user", "add", "alice", "--password-stdin", "--db", path], input="a good password\n")
    assert added.returncode == 0, added.stderr
    return path


def _tap(db_path: Path, *args: str) -> str:
    result = run_cli([RP, "user", "tap", "alice", "--db", db_path, *args])
    assert result.returncode == 0, result.stderr
    found = PASS_RE.search(result.stdout)
    assert found, result.stdout
    assert "not shown again" in result.stdout
    return found.group(1)


def test_tap_is_printed_once_and_kept_hashed(db_path: Path) -> None:
    before = time.time()
    first = _tap(db_path, "--minutes", "30")
    second = _tap(db_path)
    assert first != second
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT pass_hash, salt, created_at, expires_at, used_at, revoked_at"
            " FROM access_passes ORDER BY id"
        ).fetchall()
        dump = b"\n".join(line.encode() for line in conn.iterdump())
    assert len(rows) == 2
    # Only hashes: neither pass appears anywhere in the database.
    for secret in (first, second):
        assert secret.encode() not in dump and secret.replace("-", "").encode() not in dump
    (h1, s1, c1, e1, u1, r1), (_h2, s2, c2, e2, u2, r2) = rows
    assert len(h1) == 32 and s1 != s2
    assert e1 - c1 == 30 * 60_000 and e2 - c2 == access_pass.DEFAULT_MINUTES * 60_000
    assert c1 >= before * 1000 - 1000
    # The newer pass replaced the unused earlier one.
    assert r1 is not None and r2 is None and u1 is None and u2 is None
    db = Database(db_path)
    try:
        latest = access_pass.latest(db, db.user_by_name("alice").id)  # type: ignore[union-attr]
        assert latest is not None and latest.state == "active"
    finally:
        db.close()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["nobody"], "no user 'nobody'", 1),
        # The rest are usage errors: exit 2, as argparse's own (--minutes out of its range
        # was exit 1).
        (["bad name"], "user name", 2),
        (["alice", "--minutes", "9"], "10 to 43200 minutes", 2),
        (["alice", "--minutes", "43201"], "10 to 43200 minutes", 2),
        (["alice", "--minutes", "ten"], "invalid int value", 2),
        (["alice", "--minutes"], "expected one argument", 2),
        ([], "the following arguments are required", 2),
        (["--minutes", "5"], "the following arguments are required: name", 2),
    ],
)
def test_tap_bad_input_is_one_line(db_path: Path, args: list[str], message: str, code: int) -> None:
    result = run_cli([RP, "user", "tap", *args, "--db", db_path])
    assert_cli_error(result, contains=message)
    assert result.returncode == code, result.stderr
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM access_passes").fetchone() == (0,)


def test_tap_without_the_database(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    assert_cli_error(run_cli([RP, "user", "tap", "alice", "--db", missing]), contains="no database")
    # A usage error is said as such before the database is looked for.
    result = run_cli([RP, "user", "tap", "alice", "--minutes", "5", "--db", missing])
    assert_cli_error(result, contains="--minutes: a temporary access pass lasts 10 to 43200 minutes, not 5")
    assert result.returncode == 2
    assert not missing.exists()  # not created empty by mistake
    assert_cli_error(
        run_cli([RP, "user", "tap", "alice", "--db", tmp_path / "no" / "such.db"]), contains="no database"
    )


def test_demo_banner_starts_listen_first_and_its_tap_command_works(tmp_path: Path) -> None:
    """The banner `make demo` prints: `listen` before `enroll --name`, and the
    administrator's command for a temporary access pass runs as printed."""
    data = tmp_path / "demo-data"
    data.mkdir()
    added = run_cli(
        [RP, "user", "add", "demo", "--password-stdin", "--db", data / "rp.db"], input="a good password\n"
    )
    assert added.returncode == 0, added.stderr
    text = _banner("http://127.0.0.1:8701", {"name": "demo", "password": "x"}, data)
    assert text.index(" listen\n") < text.index(" enroll --name ")
    assert "press r" not in text
    (tap_line,) = [line for line in text.splitlines() if " user tap " in line]
    result = run_cli(shlex.split(tap_line))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("temporary access pass for demo: ")
