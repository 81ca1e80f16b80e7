"""A user store made by another account (root running `pushauth-radius enroll` before the
service, run as its own user, ever did): the error says whose it is and how to fix it.
A real file with real permissions, opened by a forked child that dropped to `nobody`."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from relying_party.host.store import StoreError, UserStore

NOBODY = pwd.getpwnam("nobody")


def _open_as_nobody(path: Path) -> str:
    """UserStore(path) in a child running as nobody; what it raised (or "opened")."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(reader)
        try:
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            try:
                UserStore(path).close()
                said = "opened"
            except StoreError as exc:
                said = str(exc)
            os.write(writer, said.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as out:
        said = out.read()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a store another account cannot open")
def test_a_store_of_another_account_names_its_owner_and_the_fix() -> None:
    with tempfile.TemporaryDirectory(prefix="pa-store-") as name:
        folder = Path(name)
        folder.chmod(0o755)  # nobody may reach the file; the file itself stays root's, 0600
        path = folder / "users.db"
        UserStore(path).close()
        said = _open_as_nobody(path)
    assert said.startswith(f"cannot open the user store {path}: "), said
    assert "(it belongs to root, and this runs as nobody: run enroll, devices and remove as" in said
    assert f"chown nobody {path}*)" in said, said
