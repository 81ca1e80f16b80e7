"""Simulated authenticators: real Ed25519 keys on real WebSockets, speaking protocol/ directly.

A `DeviceLink` is one WebSocket holding one or more credentials, like the device
agent's connection to one broker; `enroll` registers new credentials the way the
agent does (RP creates an enrollment, the device proves possession of a new key).
aiohttp's client is used rather than `websockets` because thousands of links share
one event loop and one connector here, and it is the cheaper of the two per frame.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from nacl.signing import SigningKey

from protocol import SUBPROTOCOLS
from protocol.errors import ProtocolError
from protocol.frames import Enrolled, Error, Frame, Welcome
from protocol.session import ClientSession
from protocol.signing import Signer, new_seed, public_key

from .ws import TOO_MANY_CONNECTS, WsClient, WsError

# Reconnect backoff (doubling, jittered): short enough to be back soon after a broker
# restart, long enough that thousands of devices do not flood a broker that is down.
RETRY_MIN_S, RETRY_MAX_S = 0.2, 2.0
# Enrollments sent over one provisioning connection before it is replaced: below the
# broker's frame burst (broker/device_ws.py FRAME_BURST, 200), whatever the pace, and
# its byte budget (about 200 bytes each: 30 KB, against the 64 KiB it starts with).
ENROLLS_PER_CONNECTION = 150


class LinkError(Exception):
    """The broker refused or dropped a simulated device; the message says how."""


@dataclass(frozen=True, slots=True)
class Credential:
    cid: str
    seed: bytes
    user: str
    public_key: bytes


FrameHandler = Callable[["DeviceLink", Frame, float], None]


class DeviceLink:
    def __init__(self, url: str, creds: list[Credential], on_frame: FrameHandler | None = None) -> None:
        self.url = url
        self.creds = creds
        self.on_frame = on_frame
        self.ws: WsClient | None = None
        self.session = ClientSession()
        self.welcomes = 0  # successful (re)authentications so far
        self._ready = False
        self._early: deque[bytes] = deque()  # messages before `welcome` was handled
        self._waiter: asyncio.Future[None] | None = None
        # Keys made once: deriving one from its seed at every connect cost the generator
        # as much as the signature (it reconnects 18,000 devices after a restart).
        self._keys: dict[str, Signer] | None = None

    def _on_message(self, data: bytes) -> None:
        received = time.perf_counter()  # the loop's clock may count whole milliseconds (uvloop)
        if not self._ready:
            self._early.append(data)
            self._wake()
            return
        try:
            frame = self.session.receive(data)
        except ProtocolError as exc:
            if self.ws is not None:
                self.ws.close_reason = f"bad frame from the broker: {exc}"
                self.ws.close()
            return
        if self.on_frame is not None:
            self.on_frame(self, frame, received)

    def _wake(self, _: object = None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next(self) -> bytes:
        assert self.ws is not None
        while not self._early:
            if self.ws.closed.done():
                code, reason = self.ws.closed.result()
                raise LinkError(f"connection ended: {code} {reason}")
            # One future, woken by a message or by the close (asyncio.wait on two
            # futures cost the generator more than the rest of the handshake).
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._early.popleft()

    async def connect(self) -> Welcome:
        """Open the socket, authenticate every credential, and return the welcome."""
        self.session = ClientSession()
        self._ready = False
        self._early.clear()
        self.ws = await WsClient.connect(self.url, self._on_message)
        self.ws.closed.add_done_callback(self._wake)
        self.session.receive(await self._next())  # hello
        if self._keys is None:
            self._keys = {c.cid: SigningKey(c.seed) for c in self.creds}
        self.ws.send(self.session.authenticate_frame(self._keys))
        while True:  # frames before welcome can only be protocol errors
            frame = self.session.receive(await self._next())
            if isinstance(frame, Welcome):
                break
        if frame.rejected:
            self.ws.close()
            raise LinkError(f"credentials rejected: {frame.rejected}")
        self._ready = True
        self.welcomes += 1
        while self._early:  # pending challenges that came with the welcome
            self._on_message(self._early.popleft())
        return frame

    async def listen(self) -> None:
        """Until the broker closes the socket (frames go to `on_frame` as they come)."""
        assert self.ws is not None
        await self.ws.closed

    def send(self, data: bytes) -> None:
        assert self.ws is not None
        self.ws.send(data)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()

    async def stay_connected(
        self,
        gate: asyncio.Semaphore,
        on_welcome: Callable[[DeviceLink], None],
        on_drop: Callable[[DeviceLink], None],
        on_fail: Callable[[Exception], None] | None = None,
    ) -> None:
        """Reconnect for ever (until cancelled), as the device agent does after a broker restart."""
        delay = 0.0
        while True:
            if delay:
                # Jittered, so thousands of devices do not all knock at the same instant.
                await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                async with gate:  # bounds concurrent handshakes (the listen backlog is finite)
                    await self.connect()
            except (OSError, LinkError, WsError, ProtocolError) as exc:
                if on_fail is not None:
                    on_fail(exc)
                delay = min(max(delay * 2, RETRY_MIN_S), RETRY_MAX_S)
                continue
            delay = 0.0
            on_welcome(self)
            await self.listen()
            on_drop(self)
            delay = RETRY_MIN_S


async def enroll(
    http: aiohttp.ClientSession,
    http_url: str,
    ws_url: str,
    api_key: str,
    users: list[str],
    concurrency: int = 32,
) -> list[Credential]:
    """Enroll one new credential for each user, over a few provisioning connections."""
    headers = {"Authorization": f"Bearer {api_key}"}
    queue = list(reversed(users))
    out: list[Credential] = []

    async def provisioner() -> None:
        while queue:
            await provision_some()

    async def provision_some() -> None:
        # A fresh connection every ENROLLS_PER_CONNECTION: a broker closes a connection
        # that sends more than its frame burst faster than its sustained rate (4429).
        session = ClientSession()
        try:
            ws = await http.ws_connect(ws_url, max_msg_size=0, protocols=SUBPROTOCOLS)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 429:
                raise LinkError(TOO_MANY_CONNECTS) from None
            raise
        async with ws:
            msg = await ws.receive()
            session.receive(bytes(msg.data))  # hello
            rid = 0
            while queue and rid < ENROLLS_PER_CONNECTION:
                user = queue.pop()
                async with http.post(
                    http_url + "/v1/enrollments", json={"user": user, "account": user}, headers=headers
                ) as resp:
                    body = await resp.json()
                    if resp.status != 201:
                        raise LinkError(f"POST /v1/enrollments: {resp.status} {body}")
                seed = new_seed()
                rid += 1
                await ws.send_bytes(session.enroll_frame(rid=rid, token=body["token"], seed=seed, name="lt"))
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    raise LinkError(f"enrollment connection ended: {msg.type.name} {msg.extra!r}")
                frame = session.receive(bytes(msg.data))
                if isinstance(frame, Error):
                    raise LinkError(f"enroll refused: {frame.code} {frame.message}")
                assert isinstance(frame, Enrolled), frame
                # Setup done (no test push in a load test): it gets ordinary sign-ins.
                async with http.post(
                    f"{http_url}/v1/credentials/{frame.cid}/confirm", headers=headers
                ) as resp:
                    if resp.status != 204:
                        raise LinkError(f"POST /v1/credentials/{frame.cid}/confirm: {resp.status}")
                out.append(Credential(frame.cid, seed, user, public_key(seed)))

    await asyncio.gather(*(provisioner() for _ in range(min(concurrency, len(users)))))
    return out
