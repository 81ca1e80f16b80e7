"""`serve --cpus LIST`: the CPUs a broker process runs on.

A node is one event loop on one thread, and most of a sign-in's time on it is spent
waiting to be woken: by the RP's request, Redis's reply, the device's answer. On a
machine it shares with busy processes (its Redis, a load generator, other services)
the scheduler moves it between cores and queues it behind the processes it has just
woken on its own core. Given a core of its own it is always there to take the next
message: measured at 200 sign-ins/s on two cores shared with the load generator,
p50 1.25-1.39 ms pinned against 1.43-1.57 unpinned (docs/performance.md, section 13).

The list has the syntax of `taskset -c` and systemd's `CPUAffinity=`: "1", "0,2",
"2-3", "0-1,4". A single process runs on the whole list; with `--workers N`, worker I
runs on the list's (I mod len)-th CPU alone (broker/workers.py), as HAProxy's
`cpu-map` does. The embedded Redis and the `--workers` supervisor are not pinned.
"""

from __future__ import annotations

import argparse
import os
import re

_NUMBER = re.compile("[0-9]+")  # str.isdigit() also takes "²", which int() refuses
MAX_CPU = 4095  # the kernel's CONFIG_NR_CPUS is at most 8192; a larger number is a typo


class CpusError(Exception):
    pass


def parse_cpus(text: str) -> tuple[int, ...]:
    """ "0-1,4" -> (0, 1, 4): sorted, each once. ValueError says what is wrong."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo_text, sep, hi_text = part.partition("-")
        if not _NUMBER.fullmatch(lo_text) or (sep and not _NUMBER.fullmatch(hi_text)):
            raise ValueError(f"{text!r} is not a CPU list (examples: 1, 0,2, 2-3)")
        lo, hi = int(lo_text), int(hi_text) if sep else int(lo_text)
        if lo > hi:
            raise ValueError(f"{part!r}: a range goes from low to high")
        if hi > MAX_CPU:
            raise ValueError(f"CPU {hi} is out of range")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def cpu_list_arg(text: str) -> tuple[int, ...]:
    """parse_cpus as an argparse `type` (serve --cpus, the load tester's --broker-cpus)."""
    try:
        return parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def for_worker(cpus: tuple[int, ...], index: int) -> tuple[int, ...]:
    """The one CPU of `--workers` worker `index`: round robin over the list."""
    return (cpus[index % len(cpus)],)


def check(cpus: tuple[int, ...], option: str = "--cpus") -> None:
    """Refuse a list this process could not run on, before anything starts: each CPU is
    tried on the calling thread, whose own mask is then put back."""
    if not hasattr(os, "sched_setaffinity"):
        raise CpusError(f"{option} needs Linux (sched_setaffinity)")
    present = os.cpu_count() or 1
    missing = [c for c in cpus if c >= present]
    if missing:
        raise CpusError(f"{option}: CPU {missing[0]} does not exist here (CPUs 0-{present - 1})")
    before = os.sched_getaffinity(0)
    try:
        for cpu in cpus:
            try:
                os.sched_setaffinity(0, (cpu,))
            except OSError as exc:  # EINVAL: outside this process's cpuset (cgroup)
                raise CpusError(f"{option}: CPU {cpu} cannot be used here: {exc.strerror}") from None
    finally:
        os.sched_setaffinity(0, before)


def pin(cpus: tuple[int, ...], pid: int | None = None, option: str = "--cpus") -> None:
    """Run every thread of process `pid` (default: this one), and the threads and
    processes it starts later, on `cpus` only."""
    check(cpus, option)
    # One call sets one thread's mask: every thread there is now, then the new ones
    # inherit it from the thread that starts them.
    for tid in os.listdir(f"/proc/{'self' if pid is None else pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError as exc:
            raise CpusError(f"{option} {format_cpus(cpus)}: {exc.strerror}") from None
