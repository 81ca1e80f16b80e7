"""CPU time and memory of the processes under test (broker nodes, Redis), via psutil."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# A broker's embedded Redis (serve without --redis-url) is its child: its CPU is Redis's.
REDIS_NAMES = frozenset({"redis-server", "valkey-server"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # wall time
    cpu_s: float  # user + system CPU seconds so far
    rss: int  # bytes


def snapshot(pid: int) -> Snapshot:
    proc = psutil.Process(pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        return Snapshot(time.time(), cpu.user + cpu.system, proc.memory_info().rss)


def usable(pid: int) -> str | None:
    """Why the CPU time of process `pid` cannot be read, or None if it can."""
    try:
        snapshot(pid)
    except psutil.NoSuchProcess:
        return "no such process"
    except psutil.AccessDenied:
        return "its CPU time cannot be read (another user's process?)"
    except psutil.Error as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU a run measures for the brokers it was given."""

    brokers: tuple[int, ...]  # the given processes and their broker descendants
    redis: tuple[int, ...]  # Redis servers among their descendants (an embedded Redis)
    supervisors: frozenset[int] = frozenset()  # brokers with broker children (serve --workers)

    @property
    def first_worker(self) -> int | None:
        """The first broker process that serves sign-ins itself (for --profile)."""
        return next((pid for pid in self.brokers if pid not in self.supervisors), None)


def with_descendants(pids: Iterable[int]) -> Watched:
    """Each process and its descendants, once each: a `serve --workers N` supervisor does
    no sign-in work itself, its N workers (its children) do. A redis-server among the
    descendants (the embedded Redis of a broker started without --redis-url) is counted
    as Redis, not as broker. A process that ended meanwhile raises psutil.NoSuchProcess."""
    brokers: dict[int, None] = {}
    redis: dict[int, None] = {}
    parents: set[int] = set()
    for pid in pids:
        brokers[pid] = None
        for child in psutil.Process(pid).children(recursive=True):
            try:
                name, parent = child.name(), child.ppid()
            except psutil.NoSuchProcess:
                continue  # ended between the listing and the look
            if name in REDIS_NAMES:
                redis[child.pid] = None
            else:
                brokers[child.pid] = None
                parents.add(parent)
    return Watched(tuple(p for p in brokers if p not in redis), tuple(redis), frozenset(parents))


@dataclass
class Sampler:
    """Samples one process once a second in a thread, for the report's time series."""

    pid: int
    interval: float = 1.0
    samples: list[Snapshot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(snapshot(self.pid))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> list[Snapshot]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


class Profiler:
    """py-spy sampling a broker for a set time (collapsed stacks, readable as text)."""

    def __init__(self, pid: int, path: Path, seconds: float) -> None:
        argv = [_py_spy(), "record", "--pid", str(pid), "--format", "raw", "--output", str(path)]
        argv += ["--duration", str(max(1, round(seconds))), "--rate", "250", "--nonblocking"]
        self.path = path
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self, timeout: float = 60.0) -> str | None:
        """Wait for py-spy; returns an error message if it failed."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "py-spy did not finish"
        return None if self.proc.returncode == 0 else err.decode(errors="replace").strip()[-300:]


def _py_spy() -> str:
    """py-spy from this venv (pip install py-spy), else from PATH."""
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise OSError("--profile needs py-spy (pip install py-spy)")
    return found


def top_frames(collapsed: Path, n: int = 15) -> list[tuple[str, float]]:
    """The functions the broker spent most samples in (self time), as (frame, share)."""
    self_time: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        self_time[stack.split(";")[-1]] += int(count)
    return [(frame, round(c / total, 4)) for frame, c in self_time.most_common(n)] if total else []
