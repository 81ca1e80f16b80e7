"""The load tester's modes: sign-in load (one node or across nodes) and idle connections.

The parent process starts the processes under test, spreads the devices over
worker processes (worker.py), tells them when to start, watches the broker with
psutil, and merges what they recorded.
"""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import worker
from .monitor import Profiler, Sampler, snapshot, top_frames, with_descendants
from .schedule import Profile
from .stats import LAG, STAGES, Recorder, summary_ms

START_DELAY_S = 1.0  # workers get the start time this far ahead, so all begin together


class RunError(Exception):
    """The run could not be carried out (a worker failed, a process died)."""


@dataclass(frozen=True)
class Target:
    """Where the load goes: the RP's node and the devices' node (the same one unless cross-node)."""

    rp_url: str
    device_http_url: str
    rp_id: str
    api_key: str
    # What psutil watches, with their descendants (a `serve --workers` supervisor's
    # workers, and an embedded Redis, measured as Redis); empty: no broker CPU measured.
    broker_pids: tuple[int, ...] = ()
    redis_pids: tuple[int, ...] = ()  # one redis-server, or every node of a Redis Cluster
    # Nodes the devices connect to for sign-ins, spread evenly (they enroll on
    # device_http_url); empty: all on device_http_url.
    spread_http_urls: tuple[str, ...] = ()

    @property
    def device_ws_url(self) -> str:
        return _ws(self.device_http_url)

    @property
    def spread_ws_urls(self) -> tuple[str, ...]:
        return tuple(_ws(url) for url in self.spread_http_urls)


def _ws(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/v1/device"


class Workers:
    """Worker processes and the queues to and from them."""

    def __init__(self, configs: list[worker.WorkerConfig]) -> None:
        ctx = multiprocessing.get_context("spawn")  # no forked copy of the parent's state
        self.out: Any = ctx.Queue()
        self.commands = [ctx.Queue() for _ in configs]
        self.procs = [
            ctx.Process(target=worker.main, args=(cfg, cmd, self.out), daemon=True, name=f"lt-worker-{i}")
            for i, (cfg, cmd) in enumerate(zip(configs, self.commands, strict=True))
        ]
        for p in self.procs:
            p.start()

    def send_all(self, *command: Any) -> None:
        for q in self.commands:
            q.put(command)

    def messages(self, timeout: float) -> Iterator[tuple[Any, ...]]:
        """Messages until `timeout` passes with none; a failed worker ends the run."""
        silent = 0.0
        while True:
            try:
                msg = self.out.get(timeout=1.0)
            except queue.Empty:
                # A worker that died without a word (killed, or failed to start) ends the run now.
                dead = [p.name for p in self.procs if p.exitcode not in (None, 0)]
                silent += 1.0
                if dead or silent >= timeout:
                    raise RunError(f"no word from the workers for {silent:.0f}s (exited: {dead})") from None
                continue
            silent = 0.0
            if msg[0] == "failed":
                raise RunError(f"worker {msg[1]} failed: {msg[2]}")
            yield msg

    def wait_for(
        self, kind: str, timeout: float, on_other: Callable[[tuple[Any, ...]], None] | None = None
    ) -> list[Any]:
        """One `kind` message from every worker; returns their payloads by worker index."""
        got: dict[int, Any] = {}
        for msg in self.messages(timeout):
            if msg[0] == kind:
                got[msg[1]] = msg[2:]
                if len(got) == len(self.procs):
                    return [got[i] for i in range(len(self.procs))]
            elif on_other is not None:
                on_other(msg)
        raise AssertionError("unreachable")

    def close(self, grace: float = 10.0) -> None:
        """Ask each worker to stop; one still there after `grace` seconds is terminated."""
        self.send_all("stop")
        for p in self.procs:
            p.join(grace)
            if p.is_alive():
                p.terminate()
                p.join()


@contextmanager
def workers(configs: list[worker.WorkerConfig]) -> Iterator[Workers]:
    w = Workers(configs)
    try:
        yield w
    except BaseException:
        # A failed or interrupted run: a worker in the middle of its schedule reads no
        # "stop" until the schedule ends, so it is not waited for.
        w.close(grace=0)
        raise
    w.close()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def worker_configs(
    mode: str,
    *,
    devices: int,
    n_workers: int,
    run_id: str,
    rp_url: str,
    device_url: str,
    enroll_url: str,
    rp_id: str,
    api_key: str,
    **extra: Any,
) -> list[worker.WorkerConfig]:
    """One config per worker process, the devices spread evenly over them."""
    return [
        worker.WorkerConfig(
            mode=mode,
            index=i,
            workers=n_workers,
            rp_url=rp_url,
            device_url=device_url,
            enroll_url=enroll_url,
            rp_id=rp_id,
            api_key=api_key,
            devices=n,
            run_id=run_id,
            **extra,
        )
        for i, n in enumerate(split(devices, n_workers))
    ]


def signin_run(
    target: Target,
    profile: Profile,
    *,
    warmup: float,
    devices: int,
    n_workers: int,
    out_dir: Path,
    profile_broker: bool = False,
    progress: bool = True,
    one_request: bool = False,
    on_ready: Callable[[], None] | None = None,
    revoke: bool = False,
) -> dict[str, Any]:
    """Drive sign-ins at `profile` (after `warmup` seconds at its start rate) and measure them.
    `one_request`: the RP's flow is the streamed create (else create + long-poll).
    `on_ready`: called once every device is enrolled and connected, before the first sign-in.
    `revoke`: at the end, revoke the credentials the run enrolled (a broker it did not start)."""
    run_id = "lt" + secrets.token_hex(4)
    full = Profile(profile.start_rate, profile.end_rate, profile.duration)
    # The warm-up runs at the start rate before the measured profile begins.
    schedule = _with_warmup(full, warmup)
    configs = worker_configs(
        "signin",
        devices=devices,
        n_workers=n_workers,
        run_id=run_id,
        rp_url=target.rp_url,
        device_url=target.device_ws_url,
        enroll_url=target.device_http_url,
        rp_id=target.rp_id,
        api_key=target.api_key,
        profile=schedule,
        warmup=warmup,
        one_request=one_request,
        device_urls=target.spread_ws_urls,
        revoke=revoke,
    )
    rec = Recorder()
    watched_brokers = with_descendants(target.broker_pids)
    broker_pids = watched_brokers.brokers
    redis_pids = (*target.redis_pids, *watched_brokers.redis)
    with workers(configs) as w:
        w.wait_for("ready", timeout=300)
        if on_ready is not None:
            on_ready()
        t0 = time.time() + START_DELAY_S
        w.send_all("go", t0)
        measure_from, measure_to = t0 + warmup, t0 + warmup + profile.duration
        samplers = [Sampler(pid).start() for pid in broker_pids]
        # Brokers first, then Redis and the generator's own workers (is the generator the limit?).
        others = [*redis_pids, *(p.pid for p in w.procs if p.pid)]
        watched = [*broker_pids, *others]
        before: list[Any] = []
        after: list[Any] = []
        profiler: Profiler | None = None
        bar = tqdm(total=full.total, unit="sign-in", disable=not progress, desc="sign-ins", leave=False)
        done = [0] * n_workers
        errors = [0] * n_workers
        results: dict[int, Any] = {}

        def on_progress(msg: tuple[Any, ...]) -> None:
            nonlocal before, after, profiler
            if msg[0] == "progress":
                done[msg[1]], errors[msg[1]] = msg[2], msg[3]
                bar.n = sum(done)
                bar.set_postfix(errors=sum(errors), refresh=False)
                bar.refresh()

        # CPU is read at the edges of the measured window, between progress messages.
        for msg in w.messages(timeout=profile.duration + warmup + 60):
            now = time.time()
            if not before and now >= measure_from:
                before = [snapshot(pid) for pid in watched]
                profiled = watched_brokers.first_worker  # not a `serve --workers` supervisor
                if profile_broker and profiled is not None:
                    profiler = Profiler(profiled, out_dir / "broker-profile.txt", profile.duration)
            if before and not after and now >= measure_to:
                after = [snapshot(pid) for pid in watched]
            if msg[0] == "result":
                results[msg[1]] = msg[2]
                if len(results) == n_workers:
                    break
            else:
                on_progress(msg)
        bar.close()
        if not after:  # the run ended before the first message past measure_to
            after = [snapshot(pid) for pid in watched]
        series = [s.stop() for s in samplers]
        revoked = None
        if revoke:
            w.send_all("revoke")
            counts = w.wait_for("revoked", timeout=120)
            revoked = {"revoked": sum(c[0] for c in counts), "enrolled": sum(c[1] for c in counts)}
    for wire in results.values():
        rec.merge_wire(wire)
    unaccounted = rec.started - rec.completed - sum(rec.errors.values())
    if unaccounted > 0:  # a bug in the generator must not look like a clean run
        rec.errors["unaccounted"] = unaccounted
    nb = len(broker_pids)
    out = _signin_summary(
        rec, profile, warmup, devices, n_workers, broker_pids, before[:nb], after[:nb], series
    )
    out["rp_flow"] = "one_request" if one_request else "two_requests"
    completed = max(rec.completed, 1)
    cpu = [a.cpu_s - b.cpu_s for b, a in zip(before[nb:], after[nb:], strict=True)]
    nr = len(redis_pids)
    # None: a Redis the tester neither started nor found under a --broker-pid (--redis-url,
    # --broker-url with an external Redis) is not measured.
    out["redis_cpu_ms_per_signin"] = round(1000 * sum(cpu[:nr]) / completed, 4) if nr else None
    out["generator_cpu_ms_per_signin"] = round(1000 * sum(cpu[nr:]) / completed, 4)
    if revoked is not None:
        out["credentials_revoked"] = revoked
    if profiler is not None:
        problem = profiler.finish()
        out["broker_profile"] = (
            {"file": "broker-profile.txt", "top_self": top_frames(profiler.path)}
            if problem is None
            else {"error": problem}
        )
    out["_recorder"] = rec  # for the PNG report; dropped from the JSON
    return out


def recorder_summary(rec: Recorder) -> dict[str, Any]:
    """Counts, errors and per-stage latency of a (merged) recording."""
    return {
        "started": rec.started,
        "completed": rec.completed,
        "errors": dict(rec.errors),
        "latency_ms": {stage: summary_ms(rec.stages[stage]) for stage in STAGES},
    }


def _with_warmup(profile: Profile, warmup: float) -> Profile:
    if warmup <= 0:
        return profile
    if profile.start_rate != profile.end_rate:
        raise ValueError("a ramp is measured from its start: use --warmup 0 with FROM:TO rates")
    return Profile(profile.start_rate, profile.end_rate, profile.duration + warmup)


def _signin_summary(
    rec: Recorder,
    profile: Profile,
    warmup: float,
    devices: int,
    n_workers: int,
    pids: tuple[int, ...],
    before: list[Any],
    after: list[Any],
    series: list[list[Any]],
) -> dict[str, Any]:
    completed = rec.completed
    out: dict[str, Any] = {
        "offered_rate": [profile.start_rate, profile.end_rate],
        "duration_s": profile.duration,
        "warmup_s": warmup,
        "devices": devices,
        "workers": n_workers,
        "started": rec.started,
        "completed": completed,
        "throughput_per_s": round(completed / profile.duration, 1),
        "errors": dict(rec.errors),
        "latency_ms": {stage: summary_ms(rec.stages[stage]) for stage in STAGES},
        "generator_start_lag_ms": summary_ms(rec.stages[LAG]),
    }
    brokers = []
    for pid, b, a, s in zip(pids, before, after, series, strict=False):
        cpu = a.cpu_s - b.cpu_s
        brokers.append(
            {
                "pid": pid,
                "cpu_s": round(cpu, 3),
                "cpu_share_of_one_core": round(cpu / max(a.at - b.at, 1e-9), 3),
                "cpu_ms_per_signin": round(1000 * cpu / completed, 4) if completed else None,
                "rss_mib": round(a.rss / 2**20, 1),
                "series": [(round(x.at - s[0].at, 2), x.cpu_s, x.rss) for x in s] if s else [],
            }
        )
    if brokers:
        out["brokers"] = brokers
        total_cpu = sum(b["cpu_s"] for b in brokers)
        out["broker_cpu_ms_per_signin"] = round(1000 * total_cpu / completed, 4) if completed else None
    return out


def idle_run(
    cluster: Any,
    *,
    devices: int,
    n_workers: int,
    settle: float,
    out_dir: Path,
    profile_broker: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Connect `devices` idle devices to one broker, weigh them, restart the broker, time the return."""
    from .cluster import add_rp

    broker = cluster.brokers[0]
    rp_id, api_key = add_rp(cluster.redis.url)
    run_id = "lt" + secrets.token_hex(4)
    configs = worker_configs(
        "idle",
        devices=devices,
        n_workers=n_workers,
        run_id=run_id,
        rp_url=broker.http_url,
        device_url=broker.ws_url,
        enroll_url=broker.http_url,
        rp_id=rp_id,
        api_key=api_key,
    )
    out: dict[str, Any] = {"devices": devices, "workers": n_workers, "held_socket": bool(cluster.sockets)}
    counts = [0] * n_workers
    bar = tqdm(total=devices, unit="device", disable=not progress, leave=False)
    # Devices connected over time after the restart (the workers report every 0.25 s):
    # a steady climb means the machine's CPU sets the pace, steps mean the backoff does.
    curve: list[tuple[float, int]] = []
    curve_from: list[float] = []
    failures: list[dict[str, int]] = [{} for _ in range(n_workers)]  # failed connects, by kind

    def on_count(msg: tuple[Any, ...]) -> None:
        if msg[0] == "count":
            _, index, counts[index], at, failures[index] = msg
            bar.n = sum(counts)
            bar.refresh()
            if curve_from:
                curve.append((round(at - curve_from[0], 2), sum(counts)))

    with workers(configs) as w:
        bar.set_description("enrolling")
        w.wait_for("ready", timeout=900)
        # Weigh a fresh broker: enrolling grew the old one's heap with short-lived objects.
        cluster.restart_broker(0)
        broker = cluster.brokers[0]
        time.sleep(settle)
        # CPU of the others on the same cores: the load generator's workers and Redis.
        others = [p.pid for p in w.procs if p.pid is not None] + [cluster.redis.pid]
        empty = snapshot(broker.pid)
        others_before = [snapshot(pid).cpu_s for pid in others]
        bar.set_description("connecting")
        began = time.time()
        w.send_all("connect")
        all_at = w.wait_for("all", timeout=300, on_other=on_count)
        out["first_connect_s"] = round(max(a[0] for a in all_at) - began, 3)
        out["first_connect_failures"] = _total(failures)
        others_after = [snapshot(pid).cpu_s for pid in others]
        time.sleep(settle)
        full = snapshot(broker.pid)
        out["broker_rss_empty_mib"] = round(empty.rss / 2**20, 1)
        out["broker_rss_connected_mib"] = round(full.rss / 2**20, 1)
        out["broker_kib_per_device"] = round((full.rss - empty.rss) / 1024 / devices, 2)
        out["broker_cpu_s_first_connect"] = round(full.cpu_s - empty.cpu_s, 3)
        spent = [a - b for a, b in zip(others_after, others_before, strict=True)]
        out["generator_cpu_s_first_connect"] = round(sum(spent[:-1]), 3)
        out["redis_cpu_s_first_connect"] = round(spent[-1], 3)

        w.send_all("mark")
        w.wait_for("marked", timeout=30, on_other=on_count)
        failed_before = _total(failures)
        bar.set_description("restarting")
        others_before = [snapshot(pid).cpu_s for pid in others]
        curve_from.append(time.time())
        stop_began, exited_at, ready_at = cluster.restart_broker(0)
        curve_from[0] = stop_began
        profiler = (
            Profiler(cluster.brokers[0].pid, out_dir / "broker-profile.txt", 15) if profile_broker else None
        )
        all_at = w.wait_for("all", timeout=300, on_other=on_count)
        back = max(a[0] for a in all_at)
        spent = [a - b for a, b in zip([snapshot(pid).cpu_s for pid in others], others_before, strict=True)]
        new_broker = snapshot(cluster.brokers[0].pid)
        out["restart"] = {
            "old_broker_exit_s": round(exited_at - stop_began, 3),
            "broker_down_to_ready_s": round(ready_at - stop_began, 3),
            "all_back_after_stop_s": round(back - stop_began, 3),
            "all_back_after_ready_s": round(back - ready_at, 3),
            "each_worker_all_back_after_stop_s": [round(a[0] - stop_began, 3) for a in all_at],
            # From the stop to the last device back; the new broker's since it started.
            "new_broker_cpu_s": round(new_broker.cpu_s, 3),
            "generator_cpu_s": round(sum(spent[:-1]), 3),
            "redis_cpu_s": round(spent[-1], 3),
            "connected_curve": sorted((t, n) for t, n in curve if t <= back - stop_began + 1.0),
        }
        time.sleep(0.5)  # the workers' next counts include every failure until all were back
        for index, (_, _, failed) in enumerate(w.wait_for("count", timeout=30, on_other=on_count)):
            failures[index] = failed
        out["restart"]["failed_connects"] = {
            k: v - failed_before.get(k, 0) for k, v in _total(failures).items() if v - failed_before.get(k, 0)
        }
        time.sleep(settle)
        out["broker_rss_after_restart_mib"] = round(snapshot(cluster.brokers[0].pid).rss / 2**20, 1)
        if profiler is not None:
            problem = profiler.finish()
            out["broker_profile"] = (
                {"file": "broker-profile.txt", "top_self": top_frames(profiler.path)}
                if problem is None
                else {"error": problem}
            )
    bar.close()
    return out


def _total(per_worker: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in per_worker:
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return total
