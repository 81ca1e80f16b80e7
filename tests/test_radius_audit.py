"""pushauth-radius's audit lines to the local syslog, over a real Unix datagram socket
standing in for /dev/log: refused at start when nobody listens, and a line the daemon
cannot take (restarting, gone) written to stderr as a plain line, never a traceback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from relying_party.radius import audit


@pytest.fixture
def root_logging() -> Iterator[None]:
    """audit.setup replaces the root logger's handlers: put them back for later tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket's path must be short (108 bytes); pytest's tmp_path may be longer.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pa-log-", dir="/tmp") as name:
        yield Path(name)


def test_setup_refuses_syslog_where_no_daemon_listens(root_logging: None, short_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        audit.setup(syslog=True, address=str(short_dir / "log"))


def test_a_line_syslog_cannot_take_goes_to_stderr_plainly(
    root_logging: None, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = short_dir / "log"
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(str(path))
    daemon.settimeout(10)
    try:
        audit.setup(syslog=True, address=str(path))
        audit.record("accept", outcome="approved", user="alice")
        got = daemon.recv(4096).decode()
        assert "pushauth-radius[" in got and "decision=accept outcome=approved user=alice" in got, got
    finally:
        daemon.close()
        path.unlink()
    audit.record("reject", outcome="denied", user="bob")  # the daemon gone
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert f"decision=reject outcome=denied user=bob (syslog at {path} unreachable)" in err, err
