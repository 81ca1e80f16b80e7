"""One load generator process: its share of the devices, and (in sign-in mode) of the RP load.

The parent (runs.py) starts several of these, because one process may hold at
most 20,000 open files here and because one Python process is one core. Each
worker talks to the parent over two multiprocessing queues: commands in,
messages out (`("ready"|"progress"|"result"|"count"|"all"|"marked"|"failed", index, ...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from broker.connections import raise_nofile_limit
from protocol.challenge import Status
from protocol.codec import encode
from protocol.frames import AnswerResult, Challenge, Error, Frame
from protocol.session import sign_answer
from relying_party.errors import BadBrokerResponse, VerificationFailed
from relying_party.models import Challenge as RpChallenge
from relying_party.verify import evaluate

from .device import Credential, DeviceLink, enroll
from .http import HttpError, HttpPool, Streamed
from .idle_device import Dialer, IdleDevice
from .schedule import Profile, arrivals
from .stats import LAG, Recorder

CONTEXT = {"app": "Load test", "ip": "127.0.0.1", "browser": "pushauth-loadtest"}
WAIT_S = 10  # the RP's long-poll; a sign-in slower than `timeout` counts as an error
NDJSON = "application/x-ndjson"
STREAM_ACCEPT = f"{NDJSON}, application/json;q=0.5"  # what the SDK sends (relying_party/one_request.py)
PREWARM_CONNECTIONS = 256  # RP connections per worker opened before the run
HANDSHAKES = 64  # concurrent WebSocket handshakes per worker (the broker's backlog is 1024)
# Timers wake up to ~1 ms late (epoll/libuv count milliseconds), so the scheduler wakes
# this much early. Latency counts from the earlier of intended and actual start: from the
# intended one when late (queueing cannot hide), from the send when early (never flattered).
EARLY_S = 0.001
REVOKE_AT_ONCE = 16  # credentials revoked concurrently at the end of a --broker-url run
REVOKE_S = 60.0  # ... within this many seconds


@dataclass(frozen=True)
class WorkerConfig:
    mode: str  # "signin" | "idle"
    index: int
    workers: int
    rp_url: str  # where the RP's requests go
    device_url: str  # ws:// URL the devices connect to
    enroll_url: str  # http:// URL of the node that enrolls (same node as device_url)
    rp_id: str
    api_key: str
    devices: int  # this worker's devices (one credential each)
    run_id: str
    profile: Profile | None = None
    warmup: float = 0.0
    timeout: float = 10.0
    # The RP's flow: False, create + long-poll (two requests); True, the one-request
    # sign-in (POST /v1/challenges streamed: the number, then the result).
    one_request: bool = False
    # ws:// URLs the devices connect to for sign-ins, one after the other (event
    # routing: devices spread over nodes); empty: all on device_url, where they enroll.
    device_urls: tuple[str, ...] = ()
    # After the result, on the parent's "revoke": DELETE this worker's credentials at the
    # broker (a --broker-url run: a broker the tester did not start keeps them).
    revoke: bool = False


def main(cfg: WorkerConfig, commands: Queue[Any], out: Queue[Any]) -> None:
    """Process entry point (multiprocessing, spawn)."""
    raise_nofile_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(_amain(cfg, commands, out))
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole process group: the parent stops the run and everything
        # it started, so a worker just ends, without a traceback of its own.
        return
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        detail = "".join(traceback.format_exception_only(exc)).strip()
        out.put(("failed", cfg.index, detail))


async def _amain(cfg: WorkerConfig, commands: Queue[Any], out: Queue[Any]) -> None:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        users = [f"{cfg.run_id}-w{cfg.index}-u{i}" for i in range(cfg.devices)]
        creds = await enroll(http, cfg.enroll_url, cfg.device_url, cfg.api_key, users)
        if cfg.mode == "signin":
            await SigninWorker(cfg, http, creds, out).run(commands)
        else:
            await IdleWorker(cfg, http, creds, out).run(commands)


async def _command(commands: Queue[Any]) -> tuple[Any, ...]:
    return tuple(await asyncio.to_thread(commands.get))


@dataclass(slots=True)
class SignIn:
    """One sign-in in flight: what the RP and the device each know of it."""

    start: float  # perf_counter origin of its latencies: min(intended, actual start)
    cred: Credential
    recorded: bool
    number: str | None = None
    frame: tuple[Challenge, float, DeviceLink] | None = None
    answered: bool = False
    rp_done: bool = False


@dataclass
class SigninWorker:
    cfg: WorkerConfig
    http: aiohttp.ClientSession
    creds: list[Credential]
    out: Queue[Any]
    rec: Recorder = field(default_factory=Recorder)
    inflight: dict[str, SignIn] = field(default_factory=dict)
    # Challenge frames that beat the RP's POST response home (the broker sends the
    # frame before it answers the POST): the device waits for the number.
    early: dict[str, tuple[Challenge, float, DeviceLink]] = field(default_factory=dict)
    busy: set[int] = field(default_factory=set)  # indexes of creds with a sign-in open

    async def run(self, commands: Queue[Any]) -> None:
        urls = self.cfg.device_urls or (self.cfg.device_url,)
        links = [DeviceLink(urls[i % len(urls)], [c], self.on_frame) for i, c in enumerate(self.creds)]
        gate = asyncio.Semaphore(HANDSHAKES)

        async def connect(link: DeviceLink) -> None:
            async with gate:
                await link.connect()

        await asyncio.gather(*(connect(link) for link in links))
        listeners = [asyncio.create_task(link.listen()) for link in links]
        self.public_keys = {c.cid: c.public_key for c in self.creds}
        # Made once: deriving a key from its seed for every answer cost as much as signing.
        self.signing_keys = {c.cid: SigningKey(c.seed) for c in self.creds}
        self.rp = HttpPool(self.cfg.rp_url, {"Authorization": f"Bearer {self.cfg.api_key}"})
        await self.rp.prewarm(PREWARM_CONNECTIONS)
        self.bodies = [json.dumps({"user": c.user, "context": CONTEXT}).encode() for c in self.creds]
        self.out.put(("ready", self.cfg.index, len(links)))
        _, t0_wall = await _command(commands)
        progress = asyncio.create_task(self._report_progress())
        await self._drive(t0_wall)
        progress.cancel()
        self.out.put(("result", self.cfg.index, self.rec.to_wire()))
        for task in listeners:
            task.cancel()
        for link in links:
            link.close()
        if self.cfg.revoke:
            # Told by the parent once it has measured (the revocations' CPU is not the
            # run's); "stop" instead when the run is ending otherwise.
            while (command := await _command(commands))[0] not in ("revoke", "stop"):
                pass
            if command[0] == "revoke":
                revoked = await self._revoke()
                self.out.put(("revoked", self.cfg.index, revoked, len(self.creds)))
        self.rp.close()

    async def _revoke(self) -> int:
        """DELETE /v1/credentials/{id} for each of this worker's credentials, a few at a
        time, within REVOKE_S: best effort; returns how many the broker revoked (204)."""
        gate = asyncio.Semaphore(REVOKE_AT_ONCE)
        done = 0

        async def one(cid: str) -> None:
            nonlocal done
            async with gate:
                try:
                    status, _ = await self.rp.request("DELETE", f"/v1/credentials/{cid}")
                except (HttpError, OSError):
                    return
                done += status == 204

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(c.cid) for c in self.creds)), REVOKE_S)
        return done

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.out.put(("progress", self.cfg.index, self.rec.completed, sum(self.rec.errors.values())))

    async def _drive(self, t0_wall: float) -> None:
        assert self.cfg.profile is not None
        origin = time.perf_counter() + (t0_wall - time.time())
        tasks: set[asyncio.Task[None]] = set()
        for n, offset in arrivals(self.cfg.profile, self.cfg.index, self.cfg.workers):
            intended = origin + offset
            delay = intended - time.perf_counter() - EARLY_S
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.signin(n, intended, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        # No timer per sign-in (they cost more than the rest of the RP side): the result's
        # long-poll is bounded by the broker, and stragglers are cut off here.
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.cfg.timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        # The RP may hold its result before the device's answer_result arrives (the two
        # travel separately, through different nodes in cross-node runs): wait for those.
        for _ in range(200):  # at most 2 s
            if not any(s.recorded and not s.answered for s in self.inflight.values()):
                break
            await asyncio.sleep(0.01)

    def _idle_user(self, n: int) -> int | None:
        """The credential of sign-in `n`: the next in turn whose user has none open. A
        second sign-in of a user with one open would end that one as superseded (the
        broker keeps one live prompt per user and RP): the generator's doing, not the
        broker's. None when every user has one open (too few --devices for the rate)."""
        if len(self.busy) >= len(self.creds):  # overloaded: say so at once, no scan
            return None
        first = (n // self.cfg.workers) % len(self.creds)
        for k in range(len(self.creds)):
            index = (first + k) % len(self.creds)
            if index not in self.busy:
                return index
        return None

    async def signin(self, n: int, intended: float, offset: float) -> None:
        cfg = self.cfg
        recorded = offset >= cfg.warmup
        now = time.perf_counter()
        index = self._idle_user(n)
        if index is None:
            if recorded:
                self.rec.started += 1
                self.rec.error("no_idle_user")
            return
        self.busy.add(index)
        s = SignIn(min(intended, now), self.creds[index], recorded)
        second = int(offset - cfg.warmup)
        if recorded:
            self.rec.started += 1
            self.rec.record(LAG, max(0.0, now - intended))
        ch_id: str | None = None
        stream: Streamed | None = None
        result_read = False
        try:
            if cfg.one_request:
                path = f"/v1/challenges?wait={WAIT_S}"
                stream = await self.rp.stream("POST", path, self.bodies[index], STREAM_ACCEPT)
                if stream.status != 201:
                    return self._error(s, f"create_http_{stream.status}")
                if not stream.streamed:
                    return self._error(s, "not_streamed")
                raw = await stream.next_line()
                if raw is None:
                    return self._error(s, "stream_ended_before_challenge")
            else:
                status, raw = await self.rp.request("POST", "/v1/challenges", self.bodies[index])
                if status != 201:
                    return self._error(s, f"create_http_{status}")
            if recorded:
                self.rec.record("create", time.perf_counter() - s.start)
            challenge = RpChallenge.from_json(json.loads(raw), context=CONTEXT)
            ch_id = challenge.id
            s.number = challenge.number
            self.inflight[ch_id] = s
            early = self.early.pop(ch_id, None)
            if early is not None:
                self._answer(s, *early)
            if stream is not None:
                raw = await stream.next_line()
                if raw is None:
                    return self._error(s, "stream_ended_before_result")
                result_read = True
            else:
                status, raw = await self.rp.request("GET", f"/v1/challenges/{ch_id}?wait={WAIT_S}")
                if status != 200:
                    return self._error(s, f"result_http_{status}")
            result = evaluate(
                challenge,
                json.loads(raw),
                rp_id=cfg.rp_id,
                public_keys=self.public_keys,
                now_ms=time.time_ns() // 1_000_000,
            )
            if result.status is not Status.APPROVED:
                return self._error(s, f"outcome_{result.status.value}")
            elapsed = time.perf_counter() - s.start
            if elapsed > cfg.timeout:
                return self._error(s, "timeout")
            if recorded:
                self.rec.record_result(second, elapsed)
        except asyncio.CancelledError:  # still running `timeout` after the last arrival
            self._error(s, "timeout")
        except VerificationFailed as exc:
            self._error(s, f"verification_failed_{exc.reason.value}")
        except BadBrokerResponse:
            self._error(s, "bad_broker_response")
        except HttpError as exc:
            self._error(s, f"http_{exc.kind}")
        except OSError as exc:
            self._error(s, f"http_{type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - anything else is counted, never lost
            self._error(s, f"unexpected_{type(exc).__name__}")
        finally:
            self.busy.discard(index)
            s.rp_done = True
            if ch_id is not None and (s.answered or not s.recorded):
                self.inflight.pop(ch_id, None)
            if stream is not None:
                if result_read:  # after the latency was taken: the last chunk follows at once
                    await stream.close()
                else:  # cut off, refused or failed midway: the connection is not reused
                    stream.abort()

    def _error(self, s: SignIn, kind: str) -> None:
        if s.recorded:
            self.rec.error(kind)

    def _answer(self, s: SignIn, frame: Challenge, received: float, link: DeviceLink) -> None:
        """The user reads the number off the sign-in page and types it on the device."""
        assert s.number is not None
        if s.recorded:
            self.rec.record("deliver", received - s.start)
        key = self.signing_keys[s.cred.cid]
        ts = time.time_ns() // 1_000_000
        answer = sign_answer(frame, seed=key, decision="approve", number=s.number, ts=ts)
        link.send(encode(answer))

    def on_frame(self, link: DeviceLink, frame: Frame, received: float) -> None:
        if isinstance(frame, Challenge):
            s = self.inflight.get(frame.ch)
            if s is None:
                self.early[frame.ch] = (frame, received, link)
            else:
                self._answer(s, frame, received, link)
        elif isinstance(frame, AnswerResult):
            s = self.inflight.get(frame.ch)
            if s is None:
                return
            s.answered = True
            if s.recorded:
                self.rec.record("answer", received - s.start)
                if frame.outcome != Status.APPROVED.value:
                    self.rec.error(f"device_outcome_{frame.outcome}")
            if s.rp_done:
                self.inflight.pop(frame.ch, None)
        elif isinstance(frame, Error):
            s = self.inflight.get(frame.ref or "")
            if s is not None:
                self._error(s, f"device_error_{frame.code}")


@dataclass
class IdleWorker:
    """Devices that connect, authenticate and stay; they reconnect when the broker restarts."""

    cfg: WorkerConfig
    http: aiohttp.ClientSession
    creds: list[Credential]
    out: Queue[Any]
    waiting: set[IdleDevice] = field(default_factory=set)  # not welcomed since the last mark
    connected: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # failed (re)connects by kind

    async def run(self, commands: Queue[Any]) -> None:
        # Lean devices (loadtest/idle_device.py): no task while idle, keys made now.
        dialer = Dialer(self.cfg.device_url, self._welcomed, self._dropped, self._failed, HANDSHAKES)
        devices = [IdleDevice(dialer, c) for c in self.creds]
        # Thousands of long-lived devices: the garbage collector walking them over and
        # over cost the generator more per device the more it held (as in the broker,
        # broker/serve_cli.py tune_gc). What exists now is never collected again.
        gc.collect()
        gc.freeze()
        gc.set_threshold(gc.get_threshold()[0], gc.get_threshold()[1], 100)
        self.out.put(("ready", self.cfg.index, len(devices)))
        reporter = asyncio.create_task(self._report())
        try:
            while True:
                command = await _command(commands)
                if command[0] == "connect":
                    self.waiting = set(devices)
                    for device in devices:
                        device.start()
                elif command[0] == "mark":
                    self.waiting = set(devices)
                    self.out.put(("marked", self.cfg.index))
                elif command[0] == "stop":
                    break
        finally:
            reporter.cancel()
            dialer.stopped = True
            for device in devices:
                device.close()

    def _welcomed(self, device: IdleDevice) -> None:
        self.connected += 1
        if device in self.waiting:
            self.waiting.discard(device)
            if not self.waiting:
                self.out.put(("all", self.cfg.index, time.time()))

    def _dropped(self, device: IdleDevice) -> None:
        self.connected -= 1

    def _failed(self, exc: Exception) -> None:
        kind = type(exc).__name__
        self.failures[kind] = self.failures.get(kind, 0) + 1

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.out.put(("count", self.cfg.index, self.connected, time.time(), dict(self.failures)))
