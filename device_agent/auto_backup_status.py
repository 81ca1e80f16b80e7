"""Whether the automatic backup is current: what the last attempt did, kept in the
home beside the vault (`auto-backup.json`, not secret: times and an error message).

Why a file of its own: the status is written by the store's change hook, after the
change; a vault setting would be a change of its own, and set off the hook again. And
why at all: an automatic backup that fails (the broker down, the folder gone) left
the backup without the change until the next change, with nothing to say so after the
warning scrolled by. Now `backup auto` tells, and `listen` writes it again as soon as
it reaches the broker (backup_actions.retry_auto_backup).

`digest` is the SHA-256 of what was last stored there (the sealed, and for the broker
wrapped, bytes: nothing secret). A copy can go without any attempt failing: the
broker's Redis restored from an older copy brings back an older blob, or none, and a
synced folder can do the same. `backup auto` and `listen` compare the copy with it and
write the backup again (backup_actions.repair_auto_backup).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import atomic_write

STATUS_FILE = "auto-backup.json"


@dataclass(frozen=True, slots=True)
class AutoBackupStatus:
    written_ms: int | None = None  # the last automatic backup that was written
    behind_since_ms: int | None = None  # the first change it missed (None: current)
    error: str | None = None  # why the last attempt failed
    digest: str | None = None  # SHA-256 (hex) of the bytes last stored at the target

    @property
    def behind(self) -> bool:
        return self.behind_since_ms is not None


def read(home: Path) -> AutoBackupStatus:
    """The status; a missing or unreadable file is "nothing known" (current)."""
    try:
        data = json.loads((home / STATUS_FILE).read_text())
        return AutoBackupStatus(
            written_ms=_int(data.get("written_ms")),
            behind_since_ms=_int(data.get("behind_since_ms")),
            error=data["error"] if isinstance(data.get("error"), str) else None,
            digest=data["digest"] if isinstance(data.get("digest"), str) else None,
        )
    except (OSError, ValueError, AttributeError, KeyError):
        return AutoBackupStatus()


def written(home: Path) -> None:
    _write(home, AutoBackupStatus(written_ms=_now_ms(), digest=read(home).digest))


def failed(home: Path, error: str) -> None:
    """An attempt failed: behind since the first change it missed."""
    before = read(home)
    _write(
        home, AutoBackupStatus(before.written_ms, before.behind_since_ms or _now_ms(), error, before.digest)
    )


def stored(home: Path, digest: str) -> None:
    """The automatic backup's target now holds bytes of this digest (whoever wrote them)."""
    before = read(home)
    _write(home, AutoBackupStatus(before.written_ms, before.behind_since_ms, before.error, digest))


def forget(home: Path) -> None:
    """Automatic backups turned off (or to another place): nothing to tell any more."""
    (home / STATUS_FILE).unlink(missing_ok=True)


def _write(home: Path, status: AutoBackupStatus) -> None:
    if home.is_dir():
        atomic_write(home / STATUS_FILE, json.dumps(asdict(status)).encode(), make_parents=False)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _now_ms() -> int:
    return int(time.time() * 1000)
