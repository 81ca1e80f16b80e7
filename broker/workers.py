"""`pushauth-broker serve --workers N`: N broker processes serving one port.

The supervisor (this module, the process the operator started) holds the port, starts
the embedded Redis when there is no --redis-url, and runs N workers: each an ordinary
`serve` process of its own (node name `<node>-w<i>`), listening on the same port with
SO_REUSEPORT, so the kernel spreads new connections over them. Workers are separate
broker nodes on one Redis, exactly as separate machines would be: the event channel
carries what one does to the devices and long-polls held by another.

- Ready when every worker is: then it prints "pushauth-broker node NODE listening on
  URL (N workers)", the line a single process prints.
- SIGTERM or SIGINT: each worker is told SIGTERM and stops in order, as a single
  process does (devices closed with 1001, long-polls answered); then the embedded
  Redis stops, and the supervisor exits 0.
- A worker that dies is started again (after 1 s, doubling up to 30 s while it keeps
  dying young); its devices reconnect, to the others meanwhile.
- Given a listening socket (systemd socket activation, broker/activation.py), it passes
  that one socket to every worker instead: one accept queue, kept across restarts.
- Killed itself (SIGKILL), the supervisor leaves nothing behind: workers and the
  embedded Redis get SIGTERM from the kernel (broker/lifeline.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from .activation import url_address
from .cpus import for_worker, format_cpus
from .embedded import EmbeddedRedis, EmbeddedRedisError
from .lifeline import die_with_parent

log = logging.getLogger("pushauth.broker")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0  # a worker's own orderly stop takes at most its 5 s shutdown timeout
_READY = b" listening on "


class WorkersError(Exception):
    pass


@dataclass
class Worker:
    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    starts: int = 0
    pass_fds: tuple[int, ...] = ()


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to host:port with SO_REUSEPORT: it fixes the port
    (a free one for port 0) until the workers have bound it too, and takes no
    connections itself."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if port:
        # SO_REUSEPORT would also share the port with another server that set it (a
        # second `serve --workers` on the same port: each would get half the traffic).
        # A bind without it fails while any server listens there: "address in use".
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_argv(serve_argv: list[str], *, index: int, node: str, port: int, redis_url: str,
                metrics_port: int | None, listen_fd: int | None = None,
                cpus: tuple[int, ...] | None = None) -> list[str]:  # fmt: skip
    """The worker's command line: the operator's own `serve` arguments, then overrides
    (argparse keeps an option's last value)."""
    argv = [sys.executable, "-P", "-m", "broker", *serve_argv]
    argv += ["--workers", "1", "--node", f"{node}-w{index}"]
    if listen_fd is not None:  # the supervisor's passed socket: one accept queue for all
        argv += ["--listen-fd", str(listen_fd)]
    else:
        argv += ["--reuse-port", "--port", str(port)]
    argv += ["--redis-url", redis_url]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port + index if metrics_port else 0)]
    if cpus:  # one CPU each, round robin (broker/cpus.py)
        argv += ["--cpus", format_cpus(for_worker(cpus, index))]
    return argv


async def supervise(args: argparse.Namespace, serve_argv: list[str]) -> None:
    passed: socket.socket | None = args.listen_sock  # socket activation (broker/activation.py)
    holder = passed if passed is not None else hold_port(args.host, args.port)
    host, port = url_address(holder) if passed is not None else (args.host, holder.getsockname()[1])
    embedded: EmbeddedRedis | None = None
    url = args.redis_url
    if not url:
        embedded = EmbeddedRedis(args.data_dir)
        try:
            url = embedded.start()  # main thread: see broker/lifeline.py
        except EmbeddedRedisError as exc:
            holder.close()
            raise WorkersError(str(exc)) from None
    listen_fd = passed.fileno() if passed is not None else None
    workers = [
        Worker(i, worker_argv(serve_argv, index=i, node=args.node, port=port, redis_url=url,
                              metrics_port=args.metrics_port, listen_fd=listen_fd, cpus=args.cpus),
               pass_fds=(listen_fd,) if listen_fd is not None else ())
        for i in range(args.workers)
    ]  # fmt: skip
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    keepers = [asyncio.create_task(_keep(w, stopping)) for w in workers]
    try:
        await _all_ready(workers, keepers, stopping)
        if passed is None:
            holder.close()  # the workers hold the port now; a passed socket stays, for restarts
        if not stopping.is_set():
            print(
                f"pushauth-broker node {args.node} listening on http://{host}:{port} "
                f"({len(workers)} workers)",
                flush=True,
            )
            await stopping.wait()
        print("pushauth-broker: shutting down", flush=True)
        began = time.monotonic()
        await _stop(workers, keepers)
        print(f"pushauth-broker: stopped in {time.monotonic() - began:.2f}s", flush=True)
    finally:
        stopping.set()
        holder.close()
        await _stop(workers, keepers)
        if embedded is not None:
            embedded.stop()


async def _all_ready(
    workers: list[Worker], keepers: list[asyncio.Task[None]], stopping: asyncio.Event
) -> None:
    ready = asyncio.gather(*(w.ready.wait() for w in workers))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait(
            [ready, stop, *keepers], timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.cancel()
        ready.cancel()
        # Not all ready (stopped, or a worker failed): the cancelled gather's error is
        # read here, or asyncio logs it as never retrieved, with a traceback.
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())
    for task in done:
        if task in keepers:
            task.result()  # a worker failed before it was ready: raises WorkersError
    if not done:
        raise WorkersError(f"the workers were not ready within {READY_TIMEOUT_S:g} s")


def _ended(code: int) -> str:
    """How a worker ended, in an operator's words: asyncio gives a signal as -N."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


async def _keep(worker: Worker, stopping: asyncio.Event) -> None:
    """Run one worker until the supervisor stops, starting it again when it dies."""
    delay = 1.0
    while not stopping.is_set():
        began = time.monotonic()
        proc = await _spawn(worker)
        await _forward(worker, proc)
        code = await proc.wait()
        if stopping.is_set():
            return
        if not worker.ready.is_set():
            raise WorkersError(f"worker {worker.index} {_ended(code)} before it was ready")
        if time.monotonic() - began > 60:
            delay = 1.0
        log.warning("worker %d (pid %d) %s; starting it again in %gs", worker.index, proc.pid,
                    _ended(code), delay)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, 30.0)


async def _spawn(worker: Worker) -> asyncio.subprocess.Process:
    worker.starts += 1
    worker.proc = await asyncio.create_subprocess_exec(
        *worker.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,  # read for the ready line, and passed on
        stderr=None,  # the worker's log lines go straight to ours
        pass_fds=worker.pass_fds,
        preexec_fn=die_with_parent(signal.SIGTERM),
        # Its own process group: a Ctrl-C reaches the supervisor alone, which then
        # stops the workers in order (they would otherwise each get it at once).
        start_new_session=True,
    )
    return worker.proc


async def _forward(worker: Worker, proc: asyncio.subprocess.Process) -> None:
    """The worker's stdout, line by line, on ours; its ready line marks it ready."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        if _READY in line and not worker.ready.is_set():
            worker.ready.set()
            line = f"pushauth-broker: worker {worker.index} (pid {proc.pid}) ready: ".encode() + line
        elif _READY in line:
            line = f"pushauth-broker: worker {worker.index} (pid {proc.pid}) back: ".encode() + line
        else:
            line = f"[w{worker.index}] ".encode() + line
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


async def _stop(workers: list[Worker], keepers: list[asyncio.Task[None]]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
    done, pending = await asyncio.wait(keepers, timeout=STOP_TIMEOUT_S)
    for w in workers:
        if w.proc is not None and w.proc.returncode is None:
            log.warning("worker %d (pid %d) did not stop in %gs; killing it", w.index, w.proc.pid,
                        STOP_TIMEOUT_S)  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            await w.proc.wait()
    for task in pending:
        task.cancel()
    for task in done:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            task.result()
