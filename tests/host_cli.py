"""What the pushauth-pam and pushauth-radius tests share about their device commands:
the store as it is on disk, and the CLIs run as subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support import run_cli

from relying_party.web.db import Database, Device


def stored_devices(store: Path, name: str) -> list[Device]:
    """The devices of pushauth user `name` in the store."""
    db = Database(store)
    try:
        user = db.user_by_name(name)
        return [] if user is None else db.devices(user.id)
    finally:
        db.close()


def rename_device(store: Path, credential_id: str, name: str) -> None:
    """Name a device as it is in the store, as an older store may have it (two devices of
    one name, which a device added now would not get: Database.unique_device_name)."""
    db = Database(store)
    try:
        with db.conn:
            db.conn.execute("UPDATE devices SET name = ? WHERE credential_id = ?", (name, credential_id))
    finally:
        db.close()


def command(program: Path | str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli([program, "--config", config, *args])


def command_ok(program: Path | str, config: Path, *args: str) -> str:
    """stdout of a run that must succeed without a word on stderr."""
    result = command(program, config, *args)
    assert result.returncode == 0 and result.stderr == "", result
    return result.stdout
