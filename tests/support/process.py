"""ManagedProcess: a real subprocess owned by one test, always cleaned up.

Output goes to files in the test's tmp dir (never to pipes, which fill up and stall
a chatty server), so a test can assert on it and a failure can show it. Each process
is started in its own session, so the whole group (a broker and, say, the Redis it
started itself) is ended at cleanup even after its leader was SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

from .waiting import DEADLINE

Ready = Callable[["ManagedProcess"], bool]

# Tail of the output shown in failure messages: enough to see a traceback.
_TAIL_CHARS = 6000


class ProcessFailed(AssertionError):
    """A managed process died, or never became ready (pytest shows it as a failure)."""


class ManagedProcess:
    """One subprocess: start, wait until ready, signal, stop, read its output."""

    live: ClassVar[set[ManagedProcess]] = set()
    # Every start, in order, so a failed test can show the output of what it ran,
    # including processes that a fixture has already stopped again.
    history: ClassVar[list[ManagedProcess]] = []

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_dir: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Ready | None = None,
        ready_timeout: float = DEADLINE,
        stdin: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.pass_fds = tuple(pass_fds)  # descriptors the process inherits (a held socket)
        self.name = name or Path(self.argv[0]).name
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{self.name}.stdout.log"
        self.stderr_path = self.log_dir / f"{self.name}.stderr.log"
        # Unbuffered so that lines show up as they are printed (readiness by line).
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.stdin = stdin  # a pipe for send_line() (a person typing), else /dev/null
        self.starts = 0
        self._run_offset = 0  # where this run's stdout starts in the (appended) log
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        # Append, so that a restarted process keeps the earlier run's output.
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            if self.starts > 1:
                marker = f"\n--- restart {self.starts} ---\n".encode()
                out.write(marker)
                err.write(marker)
                out.flush()
                err.flush()
            self._run_offset = out.tell()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
        ManagedProcess.live.add(self)
        ManagedProcess.history.append(self)
        if self.ready is not None:
            self.wait_ready(self.ready, timeout=self.ready_timeout)
        return self

    def wait_ready(self, ready: Ready, *, timeout: float | None = None) -> None:
        """Poll `ready` until it holds; stop the process and fail if it dies or times out."""
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            # Ready only counts while the process lives: a port that answers may be
            # someone else's server (ours then fails to bind and exits).
            if ready(self) and self.poll() is None:
                return
            if self.poll() is not None:
                raise ProcessFailed(
                    f"{self.name} exited with {self.returncode} before it was ready\n{self.describe()}"
                )
            if time.monotonic() >= deadline:
                self.terminate(timeout=2)
                raise ProcessFailed(f"{self.name} was not ready after {limit:g} s\n{self.describe()}")
            time.sleep(0.02)

    def restart(self, *, timeout: float = 10.0) -> Self:
        """Stop gracefully (if running) and start again with the same arguments."""
        if self.running:
            self.terminate(timeout=timeout)
        return self.start()

    def send_line(self, text: str) -> None:
        """Write one line to the process's stdin (needs stdin=True)."""
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError(f"{self.name} was not started with stdin=True")
        self._proc.stdin.write(text.encode() + b"\n")
        self._proc.stdin.flush()

    def close_stdin(self) -> None:
        """End of input (Ctrl-D)."""
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()

    def send_signal(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise ProcessFailed(f"{self.name} is not running\n{self.describe()}")
        self._proc.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL, *, timeout: float = 10.0) -> int | None:
        """Send `sig` to the process itself (a crash, by default).

        Waits for the exit when the signal is SIGKILL, SIGTERM or SIGINT and returns
        the exit status; other signals (SIGSTOP, SIGHUP, ...) just get delivered.
        Children in its group are left alone: a crash of the leader does not take
        them down either. Cleanup ends them.
        """
        self.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            return self.wait(timeout)
        return None

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; then end the rest of the group."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._kill_group()
        self.close_stdin()
        ManagedProcess.live.discard(self)
        return proc.returncode

    stop = terminate

    def cleanup(self) -> None:
        """End the process and its group at once, whatever state they are in."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            self._kill_group()
        self.close_stdin()
        ManagedProcess.live.discard(self)

    def _kill_group(self) -> None:
        # The group id is the leader's pid (start_new_session); SIGKILL whatever
        # of our own group is left, e.g. a server the leader started itself.
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def wait(self, timeout: float = 10.0) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(f"{self.name} did not exit within {timeout:g} s\n{self.describe()}") from None

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # -- state and output ------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    def poll(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def run_stdout(self) -> str:
        """What the current (or last) run printed on stdout: not earlier runs before a restart."""
        return _read(self.stdout_path, self._run_offset)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def output(self) -> str:
        """Everything the process printed so far, stdout then stderr."""
        return self.stdout() + self.stderr()

    def wait_for_output(
        self, pattern: str, *, timeout: float = DEADLINE, stream: str = "run"
    ) -> re.Match[str]:
        """Wait until `pattern` (a regex) appears in this run's stdout ("run"), or in all
        of "stdout", "stderr" or "both"."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = {
                "run": self.run_stdout,
                "stdout": self.stdout,
                "stderr": self.stderr,
                "both": self.output,
            }[stream]()
            match = regex.search(text)
            if match:
                return match
            if self.poll() is not None or time.monotonic() >= deadline:
                state = "exited" if self.poll() is not None else f"timed out after {timeout:g} s"
                raise ProcessFailed(f"{self.name} {state} without printing /{pattern}/\n{self.describe()}")
            time.sleep(0.02)

    def describe(self) -> str:
        """Command, status and the tail of the output: what a failure message needs."""
        status = "not started" if self._proc is None else f"pid {self._proc.pid}, exit status {self.poll()}"
        return (
            f"$ {' '.join(self.argv)}\n({status})\n"
            f"--- stdout ({self.stdout_path}) ---\n{self.stdout()[-_TAIL_CHARS:]}\n"
            f"--- stderr ({self.stderr_path}) ---\n{self.stderr()[-_TAIL_CHARS:]}"
        )

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} running={self.running}>"


# Runs argv[1:] with SIGINT back to its default first. A runner started in the background
# by a shell without job control (a script's `cmd &`, some CI agents) has SIGINT ignored,
# every process it starts inherits that across exec, and Python then installs no
# KeyboardInterrupt: a test's Ctrl-C would be lost on the program it tests.
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def interruptible(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """`argv` as a person at a terminal runs it: Ctrl-C (SIGINT) interrupts it, whatever
    this test run inherited. argv[0] must be a path (it is exec'd, not looked up)."""
    return [sys.executable, "-c", _DEFAULT_SIGINT, *(os.fspath(a) for a in argv)]


def line_on_stdout(pattern: str) -> Ready:
    """A readiness check: `pattern` (a regex) appeared on stdout since the last start."""
    regex = re.compile(pattern, re.MULTILINE)
    return lambda proc: regex.search(proc.run_stdout()) is not None


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/PID/stat; None once it is gone. The
    name may hold spaces and parentheses, so the fields are split after its last ")"."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`: PID -> command name."""
    found = {}
    for entry in os.listdir("/proc"):
        stat = _stat(entry) if entry.isdigit() else None
        if stat is not None and int(stat[1][1]) == pid:  # state, then the parent's PID
            found[int(entry)] = stat[0]
    return found


def descendants(pid: int) -> dict[int, str]:
    """Children, their children, and so on: PID -> command name."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, name in children(todo.pop()).items():
            found[child] = name
            todo.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (which is dead for our purposes)."""
    stat = _stat(pid)
    return stat is not None and stat[1][0] != "Z"


def cleanup_all() -> None:
    for proc in list(ManagedProcess.live):
        proc.cleanup()


def _read(path: Path, offset: int = 0) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


# Last resort for processes started outside a fixture: never outlive the test run.
atexit.register(cleanup_all)
