"""Conformance runner: drives any broker through the flows of docs/protocol.md.

    python -m protocol.conformance --broker-url http://HOST:PORT --api-key KEY [--slow]

It is an RP (over the broker's HTTP API, with the API key of one RP) and devices
(over the device WebSocket, with keys of its own), and checks what the broker does
against the specification's requirements. It prints one line per requirement:

    <id> <MUST|SHOULD> <pass|fail|skip> <what is required>: <what happened>

and exits 1 if any MUST failed, 2 if it could not start (broker unreachable, API
key refused), 0 otherwise. Requirement ids are those of docs/protocol.md, section
"Conformance". Each run uses fresh users (names start with `conformance-`), so it
can run against a broker in use; it leaves their credentials revoked or unused.
`--slow` adds the checks that wait for the broker's own timers (the 30 s
authentication deadline).

This module does I/O (websockets, aiohttp), unlike the rest of protocol/: it is a
test tool shipped with the specification, not part of an implementation.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
import websockets.exceptions as wse
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from . import PROTOCOL_VERSION, SUBPROTOCOLS, b64, signing, uri
from .codec import MAX_FRAME_SIZE, encode
from .errors import ProtocolError
from .frames import (
    Answer,
    AnswerResult,
    Cancel,
    Challenge,
    Enroll,
    Enrolled,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    Revoke,
    Revoked,
    Welcome,
)
from .session import ClientSession, enroll, sign_answer

TIMEOUT_S = 10.0
# ENR-6 enrolls max_credentials devices for one user: done where that is a few (the
# default is 10), skipped above.
MAX_CAP_CHECKED = 16
MUST, SHOULD = "MUST", "SHOULD"


class Failed(Exception):
    """A requirement did not hold; the message says what happened instead."""


@dataclass
class Outcome:
    rid: str
    level: str
    title: str
    status: str  # pass | fail | skip
    detail: str

    def line(self) -> str:
        return f"{self.rid:<9} {self.level:<6} {self.status:<4}  {self.title}: {self.detail}"


# -- the RP side --------------------------------------------------------------------------


class RP:
    def __init__(self, http: aiohttp.ClientSession, base: str, api_key: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.id = ""

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers, timeout=aiohttp.ClientTimeout(total=70)
        ) as resp:
            text = await resp.text()
            try:
                data = await resp.json(content_type=None) if text else None
            except ValueError:
                data = text
            return resp.status, data

    async def ok(self, method: str, path: str, body: Any = None, *, want: int = 200) -> Any:
        status, data = await self.call(method, path, body)
        if status != want:
            raise Failed(f"{method} {path} answered {status} {str(data)[:200]}")
        return data

    async def challenge(self, user: str, cid: str | None, **options: Any) -> tuple[dict[str, Any], bytes]:
        """A challenge for `cid` only, or (None) for every confirmed credential of `user`."""
        rp_nonce = secrets.token_bytes(32)
        body = {"user": user, "rp_nonce": b64.encode(rp_nonce), **options}
        if cid is not None:
            body["credential_id"] = cid
        made = await self.ok("POST", "/v1/challenges", body, want=201)
        return made, rp_nonce


# -- a device ------------------------------------------------------------------------------


class Device:
    """One device WebSocket, speaking through protocol.session.ClientSession."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.session = ClientSession()
        self.hello: Hello | None = None
        self.seen: list[Frame] = []  # frames skipped while waiting for another
        self._rid = 100

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    @property
    def nonce(self) -> bytes:
        assert self.hello is not None
        return self.hello.nonce

    async def connect(self, offer: list[str] | None = list(SUBPROTOCOLS)) -> ClientConnection:  # noqa: B006
        protocols = None if offer is None else [Subprotocol(p) for p in offer]
        self.ws = await connect(
            self.url, subprotocols=protocols, max_size=4 * MAX_FRAME_SIZE, open_timeout=TIMEOUT_S
        )
        return self.ws

    async def open(self) -> Hello:
        ws = await self.connect()
        if ws.subprotocol != SUBPROTOCOLS[0]:
            raise Failed(f"the broker picked subprotocol {ws.subprotocol!r}, not {SUBPROTOCOLS[0]!r}")
        frame = await self.frame()
        assert isinstance(frame, Hello)
        self.hello = frame
        return frame

    async def raw(self, timeout: float = TIMEOUT_S) -> bytes | str:
        assert self.ws is not None
        try:
            async with asyncio.timeout(timeout):
                return await self.ws.recv()
        except TimeoutError:
            raise Failed(f"nothing from the broker within {timeout:g} s") from None
        except wse.ConnectionClosed:
            raise Failed(f"the broker closed the connection ({self.close_text()})") from None

    async def frame(self, timeout: float = TIMEOUT_S) -> Frame:
        data = await self.raw(timeout)
        if isinstance(data, str):
            raise Failed("the broker sent a text message")
        try:
            return self.session.receive(data)
        except ProtocolError as err:
            raise Failed(f"the broker sent an invalid frame: {err}") from None

    async def expect(
        self, kind: type[Frame], pred: Callable[[Any], bool] = lambda f: True, timeout: float = TIMEOUT_S
    ) -> Any:
        """The next frame of `kind` matching `pred`; others are kept in `seen`. An
        `error` frame, when not what is waited for, fails the check with its code."""
        for i, f in enumerate(self.seen):
            if isinstance(f, kind) and pred(f):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            f = await self.frame(max(0.01, deadline - time.monotonic()))
            if isinstance(f, kind) and pred(f):
                return f
            if isinstance(f, Error) and kind is not Error:
                raise Failed(f"error {f.code} (ref {f.ref}): {f.message}")
            self.seen.append(f)

    async def send(self, data: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def send_frame(self, frame: Frame, **extra: Any) -> None:
        if not extra:
            return await self.send(encode(frame))
        body = {**frame.to_wire(), **extra, "v": PROTOCOL_VERSION, "t": frame.TYPE}
        await self.send(msgpack.packb(body, use_bin_type=True))

    async def closed(self, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
        """Wait for the broker to close; its close code and reason."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except wse.ConnectionClosed:
            pass
        except TimeoutError:
            raise Failed(f"the connection is still open after {timeout:g} s") from None
        return self.ws.close_code, self.ws.close_reason or ""

    def close_text(self) -> str:
        ws = self.ws
        return (
            "no close frame"
            if ws is None or ws.close_code is None
            else f"{ws.close_code} {ws.close_reason!r}"
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def authenticate(self, seeds: dict[str, bytes], **extra: Any) -> Welcome:
        creds = [
            {"cid": cid, "sig": signing.sign(seed, signing.auth_bytes(self.nonce, cid))}
            for cid, seed in seeds.items()
        ]
        body = {"creds": creds, **extra, "v": PROTOCOL_VERSION, "t": "authenticate"}
        await self.send(msgpack.packb(body, use_bin_type=True))
        return await self.expect(Welcome)


@dataclass
class Account:
    """A user enrolled by the runner: its credential, key and live connection."""

    user: str
    cid: str
    seed: bytes
    device: Device
    challenges: dict[str, Challenge] = field(default_factory=dict)


# -- the runner ---------------------------------------------------------------------------


class Runner:
    def __init__(self, rp: RP, *, ws_url: str | None, slow: bool) -> None:
        self.rp = rp
        self.ws_url = ws_url
        self.slow = slow
        self.results: list[Outcome] = []
        self.run_id = secrets.token_hex(4)
        self.device_url = ""
        self.links: dict[str, str] = {}  # enrollment id -> the link as the broker made it
        self.c1: dict[str, Any] = {}  # the first sign-in challenge, as the RP created it

    # -- bookkeeping --

    def record(self, rid: str, level: str, title: str, ok: bool, detail: str) -> None:
        self.results.append(Outcome(rid, level, title, "pass" if ok else "fail", detail))
        print(self.results[-1].line(), flush=True)

    async def req(self, rid: str, level: str, title: str, body: Callable[[], Awaitable[str]]) -> bool:
        """Run one requirement's check; a Failed (or any error) is a fail with its text."""
        try:
            detail = await body()
        except Failed as exc:
            self.record(rid, level, title, False, str(exc))
            return False
        except (OSError, wse.WebSocketException, aiohttp.ClientError, TimeoutError) as exc:
            self.record(rid, level, title, False, f"{type(exc).__name__}: {exc}")
            return False
        self.record(rid, level, title, True, detail)
        return True

    def skip(self, rid: str, level: str, title: str, why: str) -> None:
        self.results.append(Outcome(rid, level, title, "skip", why))
        print(self.results[-1].line(), flush=True)

    def user(self, name: str) -> str:
        return f"conformance-{self.run_id}-{name}"

    async def device(self) -> Device:
        d = Device(self.device_url)
        await d.open()
        return d

    # -- enrollment --

    async def new_enrollment(
        self, name: str, *, recoverable: bool = False
    ) -> tuple[str, uri.EnrollmentURI, str]:
        user = self.user(name)
        made = await self.rp.ok(
            "POST",
            "/v1/enrollments",
            {"user": user, "account": f"{name}@conformance", "recoverable": recoverable},
            want=201,
        )
        self.links[made["id"]] = made["uri"]
        # The RP adds its own binding secret to the broker's link (the broker never sees it).
        link = uri.parse(made["uri"]).with_binding_secret(secrets.token_bytes(32))
        return user, link, made["id"]

    async def enrolled_account(self, name: str) -> Account:
        user, link, _ = await self.new_enrollment(name)
        device = await self.device()
        seed = signing.new_seed()
        rid = device.rid()
        await device.send_frame(enroll_frame(device.nonce, rid, link, seed, None))
        got = await device.expect(Enrolled, lambda f: f.rid == rid)
        welcome = await device.authenticate({got.cid: seed})
        if got.cid not in welcome.accepted:
            raise Failed(f"the new credential was not accepted by authenticate: {welcome}")
        return Account(user, got.cid, seed, device)

    async def challenge(self, acct: Account, **options: Any) -> tuple[dict[str, Any], Challenge]:
        made, rp_nonce = await self.rp.challenge(acct.user, acct.cid, **options)
        ch = await acct.device.expect(Challenge, lambda f: f.ch == made["id"])
        if ch.rp_nonce != rp_nonce:
            raise Failed("the challenge frame does not carry the RP's rp_nonce")
        return made, ch

    async def answer(
        self, acct: Account, ch: Challenge, decision: str, number: str = "", **changes: Any
    ) -> Frame:
        ans = sign_answer(ch, seed=acct.seed, decision=decision, number=number, ts=int(time.time() * 1000))
        if changes:
            ans = Answer(**{**ans.to_wire(), **changes})
        await acct.device.send_frame(ans)
        return await acct.device.expect(
            AnswerResult | Error,
            lambda f: getattr(f, "ch", None) == ch.ch or getattr(f, "ref", None) == ch.ch,
        )  # type: ignore[arg-type]

    async def ends(self, acct: Account, decision: str, outcome: str) -> str:
        """A new challenge answered `decision` (no number) ends `outcome` for the device and the RP."""
        _, ch = await self.challenge(acct)
        res = await self.answer(acct, ch, decision)
        status = (await self.rp.ok("GET", f"/v1/challenges/{ch.ch}"))["status"]
        if not isinstance(res, AnswerResult) or res.outcome != outcome or status != outcome:
            raise Failed(f"got {res}, the RP sees {status}")
        return f"{outcome} on both sides"

    # -- the flows --

    async def run(self) -> None:
        me = await self.rp.ok("GET", "/v1/rp")
        self.rp.id = me["id"]
        _, probe, _ = await self.new_enrollment("probe")
        self.device_url = self.ws_url or probe.broker
        await self.versions()
        await self.encoding()
        await self.enrollment()
        await self.device_cap()
        acct = await self.enrolled_account("expiry")
        expiring = await self.challenge(acct, ttl=10)
        await self.challenges()
        await self.number_matching()
        await self.answered_by()
        await self.aimed()
        await self.fraud()
        await self.revocation()
        await self.limits()
        await self.expiry(acct, *expiring)

    async def versions(self) -> None:
        async def v1() -> str:
            d = await self.device()
            h = d.hello
            assert h is not None
            if h.max_frame < MAX_FRAME_SIZE:
                raise Failed(f"hello.max_frame is {h.max_frame}, below {MAX_FRAME_SIZE}")
            await d.close()
            return f"picked {SUBPROTOCOLS[0]}; hello first (max_frame {h.max_frame}, node {h.node!r})"

        await self.req("VER-1", MUST, "a device offering pushauth.v2 gets it and a hello first", v1)

        async def refused(offer: list[str] | None) -> str:
            d = Device(self.device_url)
            ws = await d.connect(offer)
            if ws.subprotocol is not None:
                raise Failed(f"the broker picked {ws.subprotocol!r} from {offer}")
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    data = await ws.recv()
                raise Failed(f"a message before the close: {data[:40]!r}")
            except wse.ConnectionClosed:
                pass
            code, reason = ws.close_code, ws.close_reason or ""
            if code != 4406 or not reason.startswith("unsupported_version"):
                raise Failed(f"closed {code} {reason!r}, not 4406 unsupported_version")
            if "pushauth.v2" not in reason:
                raise Failed(f"the close reason does not name the versions spoken: {reason!r}")
            return f"4406 {reason!r}, no frame"

        await self.req(
            "VER-2",
            MUST,
            "a device offering no subprotocol (version 1) gets 4406 before any frame",
            lambda: refused(None),
        )
        await self.req(
            "VER-3",
            MUST,
            "a device offering only unknown versions gets 4406",
            lambda: refused(["pushauth.v1", "pushauth.v99"]),
        )

        async def newer() -> str:
            d = Device(self.device_url)
            ws = await d.connect(["pushauth.v3", "pushauth.v2"])
            if ws.subprotocol != "pushauth.v2":
                raise Failed(f"picked {ws.subprotocol!r}")
            d.hello = await d.frame()  # type: ignore[assignment]
            await d.close()
            return "picked pushauth.v2 from [pushauth.v3, pushauth.v2]"

        await self.req("VER-4", MUST, "the highest common version is picked", newer)

        async def bad_version() -> str:
            d = await self.device()
            await d.send(msgpack.packb({"v": 1, "t": "authenticate", "creds": []}))
            return await expect_close(d, 4406, "unsupported_version")

        await self.req("VER-5", MUST, "a frame with another v closes 4406", bad_version)

    async def encoding(self) -> None:
        async def closes(data: bytes | str, code: int, name: str, *, authenticated: bool = False) -> str:
            d = await self.device()
            if authenticated:
                await d.authenticate({})
            await d.send(data)
            return await expect_close(d, code, name)

        await self.req(
            "ENC-1",
            MUST,
            "a text message closes 4400 malformed",
            lambda: closes('{"v":2}', 4400, "malformed"),
        )
        await self.req(
            "ENC-2",
            MUST,
            "bytes that are not one msgpack map close 4400 malformed",
            lambda: closes(b"\xc1", 4400, "malformed"),
        )
        await self.req(
            "ENC-3",
            MUST,
            f"a frame over {MAX_FRAME_SIZE} bytes closes 4413 frame_too_large",
            lambda: closes(padded(MAX_FRAME_SIZE + 1), 4413, "frame_too_large"),
        )

        async def at_limit() -> str:
            d = await self.device()
            await d.send(padded(MAX_FRAME_SIZE))  # an authenticate with an unknown key
            await d.expect(Welcome)
            await d.close()
            return f"an authenticate of exactly {MAX_FRAME_SIZE} bytes (unknown key 'pad') got welcome"

        await self.req("ENC-4", MUST, f"a frame of exactly {MAX_FRAME_SIZE} bytes is accepted", at_limit)

        async def unknown_type() -> str:
            d = await self.device()
            await d.send(msgpack.packb({"v": PROTOCOL_VERSION, "t": "x_future", "rid": 42, "x": 1}))
            err = await d.expect(Error)
            if (err.code, err.ref) != ("unknown_frame", "42"):
                raise Failed(f"error {err.code} ref {err.ref!r}, not unknown_frame ref '42'")
            await d.send(msgpack.packb({"v": PROTOCOL_VERSION, "t": "x_future", "x": 1}))
            err = await d.expect(Error)
            if (err.code, err.ref) != ("unknown_frame", None):
                raise Failed(f"without rid: error {err.code} ref {err.ref!r}, not unknown_frame ref nil")
            await d.authenticate({})  # still open and in its first state
            await d.close()
            return "error unknown_frame (ref '42', then nil); the connection stayed open"

        await self.req("ENC-5", MUST, "an unknown frame type gets an error frame, not a close", unknown_type)

        async def ping() -> str:
            d = await self.device()
            await d.send_frame(Ping(rid=7))
            await d.expect(Pong, lambda f: f.rid == 7)  # an error frame (unknown_frame) fails it
            await d.authenticate({})
            await d.send_frame(Ping(rid=8))
            await d.expect(Pong, lambda f: f.rid == 8)
            await d.close()
            return "pong rid 7 before authenticate, pong rid 8 after"

        await self.req(
            "ENC-6", SHOULD, "ping gets pong with its rid, in any state (added within version 2)", ping
        )
        await self.req(
            "STATE-1",
            MUST,
            "answer before authenticate closes 4401 not_authenticated",
            lambda: closes(encode(_some_answer()), 4401, "not_authenticated"),
        )
        await self.req(
            "STATE-2",
            MUST,
            "a second authenticate closes 4400 unexpected_frame",
            lambda: closes(
                msgpack.packb({"v": PROTOCOL_VERSION, "t": "authenticate", "creds": []}),
                4400,
                "unexpected_frame",
                authenticated=True,
            ),
        )
        await self.req(
            "STATE-3",
            MUST,
            "a broker frame from a device closes 4400 unexpected_frame",
            lambda: closes(
                encode(Hello(nonce=bytes(32), time=0, max_frame=MAX_FRAME_SIZE, node="")),
                4400,
                "unexpected_frame",
            ),
        )
        # A deny with a number: the shape fault that needs no state. (An approval without
        # a number needs its challenge since `nm`: section 7.1.)
        shape = Answer(**{**_some_answer().to_wire(), "decision": "deny"})
        await self.req(
            "STATE-4",
            MUST,
            "a denial with a number closes 4400 invalid_field (shape before state)",
            lambda: closes(encode(shape), 4400, "invalid_field"),
        )
        many = [{"cid": f"c{i}", "sig": bytes(64)} for i in range(65)]
        await self.req(
            "LIM-1",
            MUST,
            "authenticate with 65 credentials closes 4400 invalid_field",
            lambda: closes(
                msgpack.packb({"v": PROTOCOL_VERSION, "t": "authenticate", "creds": many}),
                4400,
                "invalid_field",
            ),
        )

    async def enrollment(self) -> None:
        user, link, eid = await self.new_enrollment("enroll", recoverable=True)
        seed, other = signing.new_seed(), signing.new_seed()
        rpk = signing.public_key(signing.new_seed())
        state: dict[str, Any] = {}

        async def link_check() -> str:
            try:
                parsed = uri.parse(self.links[eid])
            except ProtocolError as err:
                raise Failed(str(err)) from None
            if parsed.rp != self.rp.id:
                raise Failed(f"the link's rp is {parsed.rp!r}, not the RP's id {self.rp.id!r}")
            if not parsed.recoverable:
                raise Failed("a recoverable enrollment's link lacks recoverable=1")
            if parsed.binding_secret is not None:
                raise Failed("the broker wrote an es (the binding secret is the RP's alone)")
            return f"v=2 link, broker {parsed.broker}, recoverable=1, no es"

        await self.req(
            "ENR-1",
            MUST,
            "the broker's enrollment URI is version 2 with the RP's id, recoverable=1 when asked, no es",
            link_check,
        )

        async def bad_sig() -> str:
            d = await self.device()
            frame = enroll_frame(d.nonce, 1, link, seed, rpk)
            await d.send_frame(Enroll(**{**frame.to_wire(), "sig": bytes(64)}))
            err = await d.expect(Error)
            await d.close()
            if (err.code, err.ref) != ("bad_signature", "1"):
                raise Failed(f"error {err.code} ref {err.ref!r}, not bad_signature ref '1'")
            return "error bad_signature, ref '1' (the token stays usable: ENR-2 uses it)"

        await self.req("ENR-5", MUST, "an enroll with a bad proof of possession gets bad_signature", bad_sig)

        async def first() -> str:
            d = await self.device()
            frame = enroll_frame(d.nonce, 7, link, seed, rpk)
            await d.send_frame(frame, x_future={"a": 1})  # an unknown key: ignored
            got = await d.expect(Enrolled, lambda f: f.rid == 7)
            if (got.rp, got.user) != (self.rp.id, user):
                raise Failed(f"enrolled for rp {got.rp!r} user {got.user!r}")
            state["cid"], state["device"] = got.cid, d
            done = await self.rp.ok("GET", f"/v1/enrollments/{eid}")
            cred = done.get("credential") or {}
            if done.get("status") != "completed" or cred.get("id") != got.cid:
                raise Failed(f"the RP sees status {done.get('status')!r}, credential {cred.get('id')!r}")
            if b64.decode(cred["public_key"]) != signing.public_key(seed):
                raise Failed("the RP sees another public key")
            binding = b64.decode(cred.get("binding") or "")
            message = signing.binding_bytes(
                self.rp.id,
                link.token,
                link.binding_secret or b"",
                signing.public_key(seed),
                cred["name"],
                rpk,
            )
            if not signing.is_valid(signing.public_key(seed), message, binding):
                raise Failed("the binding the RP sees does not verify with its link secret")
            listed = (cred.get("recovery_key") or {}).get("public_key")
            if listed is None or b64.decode(listed) != rpk:
                raise Failed("the RP does not see the recovery key named in the enroll frame")
            return f"enrolled {got.cid}; the RP sees the key, a binding that verifies and the recovery key"

        ok = await self.req(
            "ENR-2",
            MUST,
            "enroll (with an unknown key) registers the key; the RP sees key, binding, recovery key",
            first,
        )
        if not ok:
            for rid, title in (
                ("ENR-3", "enroll retried with the same token and key gets the same enrolled"),
                ("ENR-4", "the same token with another key is bad_token"),
            ):
                self.skip(rid, MUST, title, "ENR-2 failed")
            return

        async def retry() -> str:
            d = await self.device()  # the first enrolled was "lost": a new connection, a new nonce
            frame = enroll_frame(d.nonce, 3, link, seed, rpk)
            await d.send_frame(frame)
            got = await d.expect(
                Enrolled | Error, lambda f: f.rid == 3 if isinstance(f, Enrolled) else f.ref == "3"
            )  # type: ignore[arg-type]
            await d.close()
            if isinstance(got, Error):
                raise Failed(f"error {got.code}: {got.message}")
            if got.cid != state["cid"]:
                raise Failed(f"a second credential {got.cid} instead of {state['cid']}")
            return f"the same cid {got.cid} on a new connection"

        await self.req(
            "ENR-3", MUST, "enroll retried with the same token and key gets the same enrolled", retry
        )

        async def other_key() -> str:
            d = state["device"]
            frame = enroll_frame(d.nonce, 9, link, other, None)
            await d.send_frame(frame)
            err = await d.expect(Error)
            if (err.code, err.ref) != ("bad_token", "9"):
                raise Failed(f"error {err.code} ref {err.ref!r}, not bad_token ref '9'")
            return "error bad_token, ref '9'; the connection stays open"

        await self.req("ENR-4", MUST, "the same token with another key is bad_token", other_key)

        async def auth() -> str:
            d = await self.device()
            welcome = await d.authenticate({state["cid"]: seed, "cred_nope": seed, "x": other}, x_future=1)
            codes = {r["cid"]: r["code"] for r in welcome.rejected}
            if list(welcome.accepted) != [state["cid"]]:
                raise Failed(f"accepted {welcome.accepted}")
            want = {"cred_nope": "unknown_credential", "x": "unknown_credential"}
            if codes != want:
                raise Failed(f"rejected {codes}, not {want}")
            bad = await self.device()
            welcome = await bad.authenticate({state["cid"]: other})
            if [r["code"] for r in welcome.rejected] != ["bad_signature"]:
                raise Failed(f"a wrong key: rejected {welcome.rejected}")
            await d.close()
            await bad.close()
            return (
                "accepted the proven one; unknown_credential, bad_signature in rejected; unknown key ignored"
            )

        await self.req(
            "AUTH-1", MUST, "authenticate accepts proven credentials and lists refused ones with codes", auth
        )
        await state["device"].close()

    async def device_cap(self) -> None:
        """The RP's `max_credentials` (12.1; RP API 1.10, `too_many_credentials` added
        within version 2): an enroll past it is refused with the token kept, and works
        once one of the user's credentials was removed."""
        title = "an enroll past max_credentials is too_many_credentials, the token kept for after a removal"
        status, policy = await self.rp.call("GET", "/v1/rp/policy")
        cap = policy.get("max_credentials") if status == 200 and isinstance(policy, dict) else None
        if type(cap) is not int or not 1 <= cap <= MAX_CAP_CHECKED:
            why = "the broker names no max_credentials" if cap is None else f"max_credentials is {cap}"
            self.skip("ENR-6", SHOULD, title, f"{why} (checked up to {MAX_CAP_CHECKED})")
            return

        async def capped() -> str:
            d = await self.device()
            links = [await self.new_enrollment("cap") for _ in range(cap + 1)]
            cids = []
            try:
                for rid, (_, link, _) in enumerate(links[:cap], start=1):
                    await d.send_frame(enroll_frame(d.nonce, rid, link, signing.new_seed(), None))
                    cids.append((await d.expect(Enrolled, lambda f, rid=rid: f.rid == rid)).cid)
                user, last, last_id = links[cap]
                seed, rid = signing.new_seed(), cap + 1
                await d.send_frame(enroll_frame(d.nonce, rid, last, seed, None))
                err = await d.expect(
                    Enrolled | Error, lambda f: f.rid == rid if isinstance(f, Enrolled) else f.ref == str(rid)
                )  # type: ignore[arg-type]
                if not isinstance(err, Error) or err.code != "too_many_credentials":
                    raise Failed(f"enroll number {cap + 1} of max_credentials {cap} got {err}")
                # RP API 1.11: the refusal is on the enrollment, still pending (an older
                # broker names no `refused`).
                enr = await self.rp.ok("GET", f"/v1/enrollments/{last_id}")
                if not isinstance(enr, dict):
                    raise Failed(f"the refused device's enrollment reads {str(enr)[:200]}")
                refusal = enr.get("refused") if "refused" in enr else {"code": "too_many_credentials"}
                if (
                    enr.get("status") != "pending"
                    or not isinstance(refusal, dict)
                    or refusal.get("code") != "too_many_credentials"
                    or refusal.get("max_credentials", cap) != cap
                ):
                    raise Failed(
                        f"the refused device's enrollment reads {enr.get('status')}, refused {refusal}"
                    )
                status, problem = await self.rp.call(
                    "POST", "/v1/enrollments", {"user": user, "account": "cap@conformance"}
                )
                if (
                    status != 409
                    or not isinstance(problem, dict)
                    or problem.get("code") != "too_many_credentials"
                ):
                    raise Failed(f"a new enrollment for the user at the cap answered {status} {problem}")
                await self.rp.ok("DELETE", f"/v1/credentials/{cids.pop()}", want=204)
                rid += 1
                await d.send_frame(enroll_frame(d.nonce, rid, last, seed, None))
                await d.expect(Enrolled, lambda f: f.rid == rid)
            finally:
                await d.close()
            return (
                f"enroll {cap + 1} of {cap}: too_many_credentials, its enrollment pending"
                f"{' with refused' if 'refused' in enr else ''}; the RP's create 409; "
                "after a removal the same token enrolls"
            )

        await self.req("ENR-6", SHOULD, title, capped)

    async def challenges(self) -> None:
        a = await self.enrolled_account("signin")
        ctx = {"app": "conformance", "ip": "192.0.2.1"}

        async def shown() -> str:
            made, ch = await self.challenge(a, context=ctx, digits=3)
            a.challenges["c1"] = ch
            self.c1 = made
            if ch.ctx != ctx or ch.digits != 3 or ch.cid != a.cid or ch.rp != self.rp.id:
                raise Failed(f"the frame says ctx {ch.ctx}, digits {ch.digits}, cid {ch.cid}, rp {ch.rp}")
            if made.get("rp_nonce") is not None and b64.decode(made["rp_nonce"]) != ch.rp_nonce:
                raise Failed("the RP's response does not echo its rp_nonce")
            return "rp_nonce, context, digits as the RP sent them; no number"

        if not await self.req(
            "CH-1", MUST, "a challenge reaches the device with the RP's rp_nonce, context and digits", shown
        ):
            return
        ch = a.challenges["c1"]

        async def approve() -> str:
            res = await self.answer(a, ch, "approve", self.c1["number"])
            if not isinstance(res, AnswerResult) or res.outcome != "approved":
                raise Failed(f"got {res}")
            result = await self.rp.ok("GET", f"/v1/challenges/{ch.ch}")
            rp_verify(self.rp.id, self.c1, result, signing.public_key(a.seed), ctx)
            return "answer_result approved; the RP's result verifies over its own values"

        await self.req(
            "CH-2", MUST, "approve with the right number: approved, and the RP can verify it", approve
        )

        async def retry() -> str:
            res = await self.answer(a, ch, "approve", self.c1["number"])  # re-signed, new ts
            if not isinstance(res, AnswerResult) or res.outcome != "approved":
                raise Failed(f"got {res}")
            return "answer_result approved again"

        await self.req("CH-6", MUST, "the same answer retried gets the recorded outcome again", retry)

        async def different() -> str:
            res = await self.answer(a, ch, "deny")
            if not isinstance(res, Error) or res.code != "already_answered":
                raise Failed(f"got {res}")
            return "error already_answered"

        await self.req(
            "CH-7", MUST, "a different answer to an ended challenge is already_answered", different
        )

        async def replay() -> str:
            made, ch2 = await self.challenge(a, context=ctx, digits=3)
            old = sign_answer(
                ch, seed=a.seed, decision="approve", number=self.c1["number"], ts=int(time.time() * 1000)
            )
            await a.device.send_frame(Answer(**{**old.to_wire(), "ch": ch2.ch}))
            err = await a.device.expect(Error, lambda f: f.ref == ch2.ch)
            if err.code != "bad_signature":
                raise Failed(f"error {err.code}")
            res = await self.answer(a, ch2, "approve", made["number"])
            if not isinstance(res, AnswerResult) or res.outcome != "approved":
                raise Failed(f"the challenge did not stay answerable: {res}")
            return "bad_signature; the challenge stayed pending and was approved after"

        await self.req(
            "CH-8",
            MUST,
            "an approval replayed onto another challenge is bad_signature and changes nothing",
            replay,
        )

        async def mismatch() -> str:
            made, ch3 = await self.challenge(a, digits=3)
            wrong = "999" if made["number"] != "999" else "998"
            res = await self.answer(a, ch3, "approve", wrong)
            if not isinstance(res, AnswerResult) or res.outcome != "number_mismatch":
                raise Failed(f"got {res}")
            status = (await self.rp.ok("GET", f"/v1/challenges/{ch3.ch}"))["status"]
            if status != "number_mismatch":
                raise Failed(f"the RP sees {status}")
            return "number_mismatch on both sides"

        await self.req("CH-3", MUST, "approve with a wrong number ends number_mismatch", mismatch)

        await self.req("CH-4", MUST, "deny ends denied", lambda: self.ends(a, "deny", "denied"))

        made5, ch5 = await self.challenge(a, context=ctx)

        async def precedence() -> str:
            seen = []
            cases = [
                (
                    "unknown_credential",
                    dict(cid="cred_not_here", ch="ch_nope", ctx_hash=bytes(32), sig=bytes(64)),
                ),
                ("unknown_challenge", dict(ch="ch_nope", ctx_hash=bytes(32), sig=bytes(64))),
                ("context_mismatch", dict(ctx_hash=bytes(32), sig=bytes(64))),
                ("bad_signature", dict(sig=bytes(64))),
            ]
            for want, changes in cases:
                ans = sign_answer(
                    ch5, seed=a.seed, decision="approve", number=made5["number"], ts=int(time.time() * 1000)
                )
                await a.device.send_frame(Answer(**{**ans.to_wire(), **changes}))
                err = await a.device.expect(Error, lambda f: f.ref in (ch5.ch, "ch_nope"))
                if err.code != want:
                    raise Failed(f"with faults {sorted(changes)}: {err.code}, not {want}")
                seen.append(want)
            res = await self.answer(a, ch5, "approve", made5["number"])
            if not isinstance(res, AnswerResult) or res.outcome != "approved":
                raise Failed(f"the refused answers changed the challenge: {res}")
            return " > ".join(seen) + "; none changed the challenge"

        await self.req(
            "PREC-1",
            MUST,
            "error precedence: ownership, existence, context, signature (each refusal changes nothing)",
            precedence,
        )
        await a.device.close()

    async def number_matching(self) -> None:
        """An approval with an empty number (sections 7.1 step 2a and 12.1): refused, and
        fatal, for a challenge with number matching; approved for one without (`nm` false,
        RP API 1.9, added within version 2), which only an RP whose policy the operator set
        may create."""
        a = await self.enrolled_account("nm")

        async def empty_refused() -> str:
            d = await self.device()  # a second connection of the credential: it takes the close
            await d.authenticate({a.cid: a.seed})
            made, _ = await self.rp.challenge(a.user, a.cid)
            ch = await d.expect(Challenge, lambda f: f.ch == made["id"])
            await d.send_frame(
                sign_answer(ch, seed=a.seed, decision="approve", number="", ts=int(time.time() * 1000))
            )
            closed = await expect_close(d, 4400, "invalid_field")
            status = (await self.rp.ok("GET", f"/v1/challenges/{ch.ch}"))["status"]
            if status != "pending":
                raise Failed(f"{closed}, but the challenge is {status}, not pending")
            return f"{closed}; the challenge stayed pending"

        await self.req(
            "CH-18",
            MUST,
            "an approval without a number, to a challenge with number matching, closes 4400",
            empty_refused,
        )
        title = "without number matching (nm false) an approval without a number is approved and verifies"
        status, policy = await self.rp.call("GET", "/v1/rp/policy")
        if status != 200 or not isinstance(policy, dict) or policy.get("allow_numberless_push") is not True:
            self.skip(
                "CH-19", SHOULD, title, "this RP's policy does not allow it (the operator sets it: 12.1)"
            )
        else:

            async def numberless() -> str:
                made, ch = await self.challenge(a, number_matching=False)
                if made.get("number") is not None or ch.nm is not False:
                    raise Failed(f"the RP got number {made.get('number')!r}, the device nm {ch.nm!r}")
                res = await self.answer(a, ch, "approve")
                if not isinstance(res, AnswerResult) or res.outcome != "approved":
                    raise Failed(f"an approval without a number got {res}")
                result = await self.rp.ok("GET", f"/v1/challenges/{ch.ch}")
                rp_verify(self.rp.id, made, result, signing.public_key(a.seed), {}, number_matching=False)
                return "number null for the RP, nm false for the device; approved, and it verifies"

            await self.req("CH-19", SHOULD, title, numberless)
        await a.device.close()

    async def answered_by(self) -> None:
        """`cancel.by` (section 5, added within version 2): a second connection of the
        answering credential is told it was its own; another device of the user is not."""
        got: dict[str, Any] = {}
        opened: list[Device] = []
        try:
            mine = await self.enrolled_account("by")
            opened.append(mine.device)
            # Another device of the same user (the same name: the same user), and a second
            # connection of the first credential.
            theirs = await self.enrolled_account("by")
            opened.append(theirs.device)
            other = theirs.device
            twin = await self.device()
            opened.append(twin)
            await twin.authenticate({mine.cid: mine.seed})
            for cid in (mine.cid, theirs.cid):  # an untargeted challenge reaches confirmed credentials
                await self.rp.ok("POST", f"/v1/credentials/{cid}/confirm", want=204)
            made, _ = await self.rp.challenge(mine.user, None, digits=3)
            ch = made["id"]
            shown = [await d.expect(Challenge, lambda f: f.ch == ch) for d in (mine.device, twin, other)]
            res = await self.answer(mine, shown[0], "approve", made["number"])
            if not isinstance(res, AnswerResult) or res.outcome != "approved":
                raise Failed(f"the approval ended {res}")
            got["mine"] = mine.cid
            for name, d in (("twin", twin), ("other", other)):
                got[name] = await d.expect(Cancel, lambda f: f.ch == ch)
        except (Failed, OSError, wse.WebSocketException, aiohttp.ClientError, TimeoutError) as exc:
            got["failed"] = exc if isinstance(exc, Failed) else Failed(f"{type(exc).__name__}: {exc}")
        finally:
            for d in opened:
                await d.close()

        async def own() -> str:
            if "failed" in got:
                raise got["failed"]
            twin_cancel = got["twin"]
            if (twin_cancel.reason, twin_cancel.by) != ("answered", got["mine"]):
                raise Failed(f"the credential's other connection got {twin_cancel}")
            return "cancel answered, by = the answering credential"

        async def private() -> str:
            if "failed" in got:
                raise got["failed"]
            other_cancel = got["other"]
            if other_cancel.reason != "answered" or other_cancel.by is not None:
                raise Failed(f"another device of the user got {other_cancel}")
            return "cancel answered, without by"

        await self.req(
            "CH-15", SHOULD, "a connection of the answering credential gets cancel answered with by", own
        )
        await self.req("CH-16", MUST, "another device's connection gets cancel answered without by", private)

    async def aimed(self) -> None:
        """A challenge aimed at some of the user's credentials (`credential_ids`, RP API 1.8,
        added within version 2: section 12 "Delivery"): it reaches those alone, and another
        device of the user can neither see nor answer it."""

        async def only_them() -> str:
            opened: list[Device] = []
            try:
                left_out = await self.enrolled_account("aimed")
                opened.append(left_out.device)
                aimed_at = await self.enrolled_account("aimed")  # the same user's second device
                opened.append(aimed_at.device)
                for cid in (left_out.cid, aimed_at.cid):  # confirmed: an untargeted one would reach both
                    await self.rp.ok("POST", f"/v1/credentials/{cid}/confirm", want=204)
                made, _ = await self.rp.challenge(
                    aimed_at.user, None, digits=3, credential_ids=[aimed_at.cid]
                )
                if made.get("credential_ids") != [aimed_at.cid]:
                    raise Failed(f"the broker says it aimed it at {made.get('credential_ids')}")
                shown = await aimed_at.device.expect(Challenge, lambda f: f.ch == made["id"])
                # The left-out device answers what it would have been shown, signed with its own key.
                res = await self.answer(
                    left_out, Challenge(**{**shown.to_wire(), "cid": left_out.cid}), "approve", made["number"]
                )
                if not isinstance(res, Error) or res.code != "unknown_challenge":
                    raise Failed(f"the left-out device's approval got {res}, not unknown_challenge")
                res = await self.answer(aimed_at, shown, "approve", made["number"])
                if not isinstance(res, AnswerResult) or res.outcome != "approved":
                    raise Failed(f"the device it was aimed at got {res} after the other's answer")
                # Its cancel would come before the answer to a later ping on the same connection.
                await left_out.device.send_frame(Ping(rid=7))
                await left_out.device.expect(Pong, lambda f: f.rid == 7)
                told = [f for f in left_out.device.seen if getattr(f, "ch", None) == made["id"]]
                if told:
                    raise Failed(f"the left-out device was sent {told}")
                return "only the device named got it; the other: unknown_challenge, no frame, no cancel"
            finally:
                for d in opened:
                    await d.close()

        await self.req(
            "CH-17",
            SHOULD,
            "a challenge aimed at credential_ids reaches those alone (added within version 2)",
            only_them,
        )

    async def fraud(self) -> None:
        f = await self.enrolled_account("fraud")

        await self.req("CH-5", MUST, "fraud ends reported", lambda: self.ends(f, "fraud", "reported"))

        async def muted() -> str:
            status, body = await self.rp.call(
                "POST", "/v1/challenges", {"user": f.user, "credential_id": f.cid}
            )
            if status != 409:
                raise Failed(f"a new challenge answered {status}")
            return f"409 {(body or {}).get('code')}"

        await self.req("CH-14", SHOULD, "after a fraud report the user's push is muted", muted)
        await f.device.close()

    async def revocation(self) -> None:
        r = await self.enrolled_account("revoke")

        async def by_device() -> str:
            _, ch = await self.challenge(r)
            r.challenges["pending"] = ch
            await r.device.send_frame(Revoke(rid=5, cid=r.cid))
            got = await r.device.expect(
                Revoked | Error, lambda x: getattr(x, "cid", None) == r.cid or getattr(x, "ref", None) == "5"
            )  # type: ignore[arg-type]
            if not isinstance(got, Revoked) or (got.reason, got.rid) != ("removed_by_device", 5):
                raise Failed(f"got {got}")
            listed = await self.rp.ok("GET", f"/v1/users/{r.user}/credentials")
            if any(c["id"] == r.cid for c in listed["credentials"]):
                raise Failed("the RP still lists the credential")
            return "revoked removed_by_device rid 5; the RP no longer lists it"

        if not await self.req("REV-1", MUST, "a device revokes its credential", by_device):
            return

        async def cancel() -> str:
            ch = r.challenges["pending"]
            c = await r.device.expect(Cancel, lambda x: x.ch == ch.ch)
            if c.reason != "revoked":
                raise Failed(f"cancel reason {c.reason}")
            return "cancel reason revoked"

        await self.req(
            "REV-4", SHOULD, "the revoked credential's pending request is cancelled (revoked)", cancel
        )

        async def after() -> str:
            res = await self.answer(r, r.challenges["pending"], "deny")
            if not isinstance(res, Error) or res.code != "credential_revoked":
                raise Failed(f"an answer got {res}")
            await r.device.send_frame(Revoke(rid=6, cid=r.cid))
            err = await r.device.expect(Error, lambda x: x.ref == "6")
            if err.code != "credential_revoked":
                raise Failed(f"a second revoke got {err.code}")
            return "answer and second revoke: credential_revoked"

        await self.req(
            "REV-2",
            MUST,
            "frames naming a credential revoked on this connection are credential_revoked",
            after,
        )
        await r.device.close()

        q = await self.enrolled_account("rp-delete")

        async def by_rp() -> str:
            await self.rp.ok("DELETE", f"/v1/credentials/{q.cid}", want=204)
            got = await q.device.expect(Revoked, lambda x: x.cid == q.cid)
            if (got.reason, got.rid) != ("removed_by_rp", None):
                raise Failed(f"got {got}")
            return "revoked removed_by_rp, rid nil"

        await self.req("REV-3", MUST, "the RP's removal reaches the connected device", by_rp)
        await q.device.close()

    async def limits(self) -> None:
        async def flood() -> str:
            d = await self.device()
            frame = msgpack.packb({"v": PROTOCOL_VERSION, "t": "x_future"})
            for _ in range(260):
                await d.send(frame)
            return await expect_close(d, 4429, "rate_limited")

        await self.req("LIM-2", MUST, "more than 200 frames at once close 4429 rate_limited", flood)

        async def bytes_before_proof() -> str:
            d = await self.device()
            for rid in (1, 2):  # 64 KiB in all: the whole budget, which is allowed
                await d.send(padded(MAX_FRAME_SIZE, {"t": "ping", "rid": rid}))
                await d.expect(Pong, lambda f, rid=rid: f.rid == rid)
            await d.send_frame(Ping(rid=3))  # anything more is not
            return "two pings of 32 KiB answered; a third ping: " + await expect_close(
                d, 4429, "rate_limited"
            )

        await self.req(
            "LIM-4",
            SHOULD,
            "more than 64 KiB of frames before a credential is proven closes 4429 (added within version 2)",
            bytes_before_proof,
        )

        title = "a connection that proves no credential in 30 s closes 4408 auth_timeout"
        if not self.slow:
            self.skip("LIM-3", MUST, title, "takes 30 s: run with --slow")
            return

        async def idle() -> str:
            d = await self.device()
            await d.authenticate({})  # refused or empty: the clock keeps running
            return await expect_close(d, 4408, "auth_timeout", timeout=45)

        await self.req("LIM-3", MUST, title, idle)

    async def expiry(self, acct: Account, made: dict[str, Any], ch: Challenge) -> None:
        async def cancelled() -> str:
            wait = max(0.0, ch.expires / 1000 - time.time()) + TIMEOUT_S
            c = await acct.device.expect(Cancel, lambda x: x.ch == ch.ch, timeout=wait)
            if c.reason != "expired":
                raise Failed(f"cancel reason {c.reason}")
            return "cancel reason expired"

        got_cancel = await self.req("CH-12", SHOULD, "a device is told when a request expires", cancelled)
        if not got_cancel:  # wait out the expiry by the RP's word instead
            await self.rp.ok("GET", f"/v1/challenges/{ch.ch}?wait=15")

        async def late() -> str:
            res = await self.answer(acct, ch, "approve", made["number"], sig=bytes(64))
            if not isinstance(res, Error) or res.code != "bad_signature":
                raise Failed(
                    f"a bad signature after expiry got {res}, not bad_signature (signature before time)"
                )
            res = await self.answer(acct, ch, "approve", made["number"])
            if not isinstance(res, Error) or res.code != "challenge_expired":
                raise Failed(f"got {res}")
            status = (await self.rp.ok("GET", f"/v1/challenges/{ch.ch}"))["status"]
            if status != "expired":
                raise Failed(f"the RP sees {status}")
            return "bad_signature before challenge_expired; the RP sees expired"

        await self.req(
            "CH-11", MUST, "an answer after expiry is challenge_expired (after the signature check)", late
        )
        await acct.device.close()


# -- helpers ------------------------------------------------------------------------------


async def expect_close(d: Device, code: int, name: str, *, timeout: float = TIMEOUT_S) -> str:
    got, reason = await d.closed(timeout)
    if got != code or not reason.startswith(name):
        raise Failed(f"closed {got} {reason!r}, not {code} {name}")
    return f"closed {got} {reason!r}"


def enroll_frame(
    nonce: bytes, rid: int, link: uri.EnrollmentURI, seed: bytes, recovery_pk: bytes | None
) -> Enroll:
    """The runner's enroll for `link` (device name "conformance"), signed with `seed`."""
    return enroll(
        nonce,
        rid=rid,
        token=link.token,
        seed=seed,
        name="conformance",
        rp=link.rp,
        binding_secret=link.binding_secret,
        recovery_pk=recovery_pk,
    )


def padded(size: int, body: dict[str, Any] | None = None) -> bytes:
    """A frame of exactly `size` bytes, an empty `authenticate` unless `body` gives the
    fields (`t` included), with an unknown key `pad` (bin 32) to fill it."""
    fields = {"v": PROTOCOL_VERSION, **(body or {"t": "authenticate", "creds": []})}
    prefix = bytes([0x80 | (len(fields) + 1)]) + msgpack.packb(fields)[1:] + b"\xa3pad\xc6"
    fill = size - len(prefix) - 4
    return prefix + struct.pack(">I", fill) + bytes(fill)


def _some_answer() -> Answer:
    seed = bytes(32)
    ch = Challenge(
        ch="ch_x",
        cid="cred_x",
        rp="rp_x",
        rp_name="",
        account="",
        nonce=bytes(32),
        rp_nonce=bytes(32),
        ctx={},
        created=0,
        expires=1,
        digits=2,
    )
    return sign_answer(ch, seed=seed, decision="approve", number="42", ts=0)


def rp_verify(
    rp_id: str,
    made: dict[str, Any],
    result: dict[str, Any],
    public_key: bytes,
    ctx: dict[str, str],
    *,
    number_matching: bool = True,
) -> None:
    """What an RP checks of an approved result (docs/protocol.md, "What an RP verifies");
    `number_matching`: the RP's own choice at creation, not the broker's word."""
    if result.get("id") != made["id"] or result.get("status") != "approved":
        raise Failed(f"the RP sees {result.get('id')} {result.get('status')}")
    ans = result.get("answer") or {}
    ctx_hash = b64.decode(ans.get("ctx_hash", ""))
    if ctx_hash != signing.context_hash(ctx):
        raise Failed("the answer's ctx_hash is not the hash of the context the RP sent")
    message = signing.answer_bytes(
        rp=rp_id,
        ch=made["id"],
        nonce=b64.decode(made["nonce"]),
        rp_nonce=b64.decode(made["rp_nonce"]),
        cid=ans.get("credential_id", ""),
        decision=ans.get("decision", ""),
        number=ans.get("number", ""),
        ts=int(ans.get("ts", 0)),
        ctx_hash=ctx_hash,
    )
    if not signing.is_valid(public_key, message, b64.decode(ans.get("signature", ""))):
        raise Failed("the answer's signature does not verify over the RP's values")
    if number_matching and ans.get("number") != made["number"]:
        raise Failed("the signed number is not the RP's number")


async def main_async(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as http:
        rp = RP(http, args.broker_url, args.api_key)
        try:
            status, body = await rp.call("GET", "/v1/rp")
        except aiohttp.ClientError as exc:
            print(f"conformance: cannot reach {args.broker_url}: {exc}", file=sys.stderr)
            return 2
        if status != 200:
            print(
                f"conformance: GET /v1/rp answered {status}: is the API key right? {str(body)[:200]}",
                file=sys.stderr,
            )
            return 2
        runner = Runner(rp, ws_url=args.ws_url, slow=args.slow)
        try:
            await runner.run()
        except (Failed, OSError, wse.WebSocketException, aiohttp.ClientError, TimeoutError) as exc:
            print(f"conformance: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    results = runner.results
    failed_must = [r for r in results if r.status == "fail" and r.level == MUST]
    failed_should = [r for r in results if r.status == "fail" and r.level == SHOULD]
    passed = sum(r.status == "pass" for r in results)
    skipped = sum(r.status == "skip" for r in results)
    print(
        f"{passed} passed, {len(failed_must)} MUST failed, "
        f"{len(failed_should)} SHOULD failed, {skipped} skipped",
        flush=True,
    )
    return 1 if failed_must else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocol.conformance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--broker-url", required=True, help="the broker's HTTP base URL, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument("--api-key", required=True, help="an RP's API key (pushauth-broker rp add NAME)")
    parser.add_argument(
        "--ws-url", help="the device WebSocket URL (default: the one in the enrollment links)"
    )
    parser.add_argument(
        "--slow", action="store_true", help="also the checks that wait for the broker's timers"
    )
    args = parser.parse_args(argv)
    # A key with a space or a line break cannot go in a header (aiohttp raised ValueError,
    # a traceback); `rp add` prints one word of printable ASCII.
    if not (args.api_key.isascii() and args.api_key.isprintable()) or " " in args.api_key:
        parser.error("--api-key must be one word of printable ASCII, as `pushauth-broker rp add` prints it")
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
