"""The UDP shell: datagrams in, replies out. Everything it decides comes from elsewhere.

Per datagram: the client by source address (unknown: drop), the RFC 5080 duplicate
cache (a retransmission gets the same reply, or nothing while the first copy is
being processed), then in a task: the request's checks (packets.parse: the
Message-Authenticator), the replay check across instances (state.first_seen), the
engine, the reply, and one audit line.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.exceptions
from pyrad import packet as rp

from . import audit, core, packets
from .config import Client, Config
from .core import Cached, DuplicateCache, InProgress, Outcome
from .engine import Engine, Verdict
from .state import StateStore

log = logging.getLogger("pushauth.radius")
DECISIONS = {rp.AccessAccept: "accept", rp.AccessReject: "reject", rp.AccessChallenge: "challenge"}


class RadiusProtocol(asyncio.DatagramProtocol):
    def __init__(self, config: Config, engine: Engine, states: StateStore) -> None:
        self.config = config
        self.engine = engine
        self.states = states
        self.duplicates = DuplicateCache(config.duplicate_window)
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        client = self.config.client_for(host)
        if client is None:
            audit.record("drop", outcome=Outcome.UNKNOWN_CLIENT, addr=host)
            return
        head = packets.header(data)
        if head is None:
            audit.record("drop", outcome=Outcome.MALFORMED, client=client.name, addr=host)
            return
        key = (host, port, head.identifier, head.authenticator)
        seen = self.duplicates.seen(key, time.monotonic())
        if isinstance(seen, InProgress):
            return  # a retransmission while the first copy is processed: its reply will come
        if isinstance(seen, Cached):
            self._send(seen.reply, addr)  # RFC 5080: the same reply again
            return
        task = asyncio.create_task(self._process(data, addr, client, key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _process(
        self, data: bytes, addr: tuple[str, int], client: Client, key: core.DuplicateKey
    ) -> None:
        started = time.monotonic()
        host = addr[0]
        reply: bytes | None = None
        request: packets.AccessRequest | Outcome | None = None
        try:
            request = packets.parse(data, client)
            if isinstance(request, Outcome):
                audit.record("drop", outcome=request, client=client.name, addr=host)
                return
            if not await self.states.first_seen(
                client.name, request.authenticator, self.config.replay_window
            ):
                audit.record(
                    "drop", outcome=Outcome.REPLAYED, user=request.user_name, client=client.name, addr=host
                )
                return
            verdict = await self.engine.handle(request)
            reply = _encode(request, verdict)
            self._send(reply, addr)
            audit.record(
                DECISIONS[verdict.code],
                outcome=verdict.outcome,
                user=verdict.user,
                client=client.name,
                addr=host,
                station=request.calling_station or verdict.station,
                challenge=verdict.challenge_id,
                **({"device": verdict.device} if verdict.device else {}),
                ms=round((time.monotonic() - started) * 1000),
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            # No reply: the gateway retries, or fails over to another instance. An audit
            # line as every other drop's, so that a search on decision= finds it.
            audit.record(
                "drop",
                outcome=Outcome.STORE_UNAVAILABLE,
                user=request.user_name if isinstance(request, packets.AccessRequest) else None,
                client=client.name,
                addr=host,
                detail=f"Redis unavailable: {exc}",
            )
        except Exception:
            # One request's failure (a bug) must not stop the server: no
            # reply, so the client retries or fails over; the log says why.
            log.exception("request from %s (%s) failed", client.name, host)
        finally:
            self.duplicates.answered(key, reply, time.monotonic())

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


def _encode(request: packets.AccessRequest, verdict: Verdict) -> bytes:
    if verdict.code == rp.AccessChallenge:
        assert verdict.state is not None
        return packets.challenge(request, verdict.message, verdict.state)
    return packets.reply(request, verdict.code, verdict.message)
