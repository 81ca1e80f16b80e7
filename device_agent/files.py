"""Crash-safe file writes for the agent's home (keys and vault)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, make_parents: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file.

    With make_parents (the agent's home), missing folders are made (mode 0700); without
    it (a backup in a folder the user named), a missing folder is an OSError.

    Write a temporary file in the same directory with the final mode from the
    start (never world-readable, even briefly), fsync it, rename it over the
    target, then fsync the directory so the rename itself is durable.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
