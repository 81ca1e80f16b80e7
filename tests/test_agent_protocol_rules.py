"""The device agent against docs/protocol.md's device rules (notes/spec-gaps.md 1-8).

Every case runs the real `pushauth-agent` CLI in a subprocess. Where a real broker can
say it, a real broker does (tests/shared_broker.py), through the hostile proxy of
tests/support/hostile_broker.py when the broker must lie (a compromised broker: another
RP name or RP id in `enrolled` or `challenge`, a garbled reply). What no broker process
ever sends (a 44xx close after `authenticate`, a clock ten minutes off) comes from a
few lines of the `websockets` library written here, as in test_agent_hostile_broker.py:
the peer the agent must cope with, not a stand-in for our broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent, agent_env, agent_ok, assert_clear_failure, run_agent  # noqa: F401  (agent_env: autouse, the vault passphrase)
from hostile_fixtures import client, hostile  # noqa: F401  (fixtures: the SDK through the hostile proxy)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker per module, an RP per test)
from support import AGENT, BrokerProcess, until, wait_until
from support.certs import self_signed
from support.hostile_broker import DeviceLink, HostileBroker
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from device_agent.backup_keys import BackupCode
from device_agent.display import clock_time
from device_agent.listen import Listener
from device_agent.store import AccountStore, Registration
from protocol import SUBPROTOCOLS, signing
from protocol import uri as enrollment_uri
from protocol.codec import encode
from protocol.frames import Answer, Challenge, Enroll, Enrolled, Frame, Hello, Welcome
from relying_party import Enrollment, PushAuthClient

USER = "alice"
ACCOUNT = "alice@example.com"
REMOTE_WS = "ws://push.example.com/v1/device"


# -- a real broker, through the hostile proxy ---------------------------------------


async def start_enrollment(client: PushAuthClient) -> tuple[Enrollment, str]:
    started = await client.create_enrollment(USER, ACCOUNT)
    assert started.uri is not None
    return started, started.uri


def accounts(home: Path) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(agent_ok(home, "accounts", "--json"))
    return listed


def one_line_error(result: subprocess.CompletedProcess[str], code: int, contains: str) -> None:
    assert result.returncode == code, result.stderr + result.stdout
    assert_clear_failure(result.returncode, result.stderr, contains)


# -- gap 1: no ws:// to a host other than this computer ------------------------------


def remote_link(broker: str = REMOTE_WS) -> str:
    return enrollment_uri.EnrollmentURI(
        broker=broker, token="t" * 32, rp="rp1", rp_name="Example", account=ACCOUNT
    ).build()


def store_account(home: Path, broker: str, *, cid: str = "cid-alice", rp: str = "rp1") -> None:
    AccountStore(home).add(
        cid,
        Registration(
            rp=rp,
            rp_name="Example",
            user=USER,
            label=ACCOUNT,
            broker=broker,
            cid=cid,
            device_name="laptop",
            seed=signing.new_seed(),
        ),
    )


@pytest.mark.parametrize("broker_url", [REMOTE_WS, "ws://10.0.0.8:8700/v1/device", "ws://localhost.example/"])
def test_an_unencrypted_link_to_another_host_is_refused_before_anything(
    tmp_path: Path, broker_url: str
) -> None:
    home = tmp_path / "agent"
    one_line_error(agent(home, "enroll", remote_link(broker_url)), 2, "is not encrypted: wss:// is required")
    assert not home.exists() or not any(home.iterdir())  # no vault, no passphrase asked


def test_reactivate_and_restore_refuse_an_unencrypted_remote_broker(tmp_path: Path) -> None:
    home = tmp_path / "agent"
    store_account(home, "ws://127.0.0.1:9/v1/device")
    AccountStore(home).mark_revoked("cid-alice", "removed by the service")
    one_line_error(agent(home, "reactivate", "cid-alice", remote_link()), 2, "is not encrypted")
    assert AccountStore(home).load()[0].status == "revoked"  # unchanged
    fresh = tmp_path / "new-device"
    one_line_error(agent(fresh, "restore", "--from", "broker", "--broker", REMOTE_WS), 2, "is not encrypted")


async def test_a_broker_whose_certificate_does_not_verify_is_left_before_anything(tmp_path: Path) -> None:
    """Section 18.2: wss:// with certificate checks. A TLS server on this computer with a
    certificate no CA the agent trusts vouches for (whoever sits on the path to the
    broker can make one) gets no WebSocket request and no frame: the agent stops at the
    TLS handshake and says why."""
    pem = self_signed(tmp_path / "impostor.pem", "localhost")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pem)
    requests: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        requests.append(ws.request.path if ws.request else "")
        await ws.send(hello())

    async with serve(handler, "127.0.0.1", 0, ssl=tls) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        home = tmp_path / "agent"
        link = remote_link(f"wss://localhost:{port}/v1/device")
        enroll = await asyncio.to_thread(agent, home, "enroll", link)
        one_line_error(enroll, 3, "certificate verify failed")
    assert requests == []
    assert accounts(home) == []


@pytest.mark.parametrize("command", ["enroll", "restore"])
def test_https_or_wss_to_a_plain_broker_is_named_without_an_openssl_error(
    tmp_path: Path, broker: BrokerProcess, command: str
) -> None:
    """A broker that serves plain http:// and ws:// (as the README's) named with https://
    or wss://, as a person may type it: the TLS handshake fails, and the agent says so in
    its own words, not with OpenSSL's "[SSL: WRONG_VERSION_NUMBER] ... (_ssl.c:1006)"."""
    home = tmp_path / "agent"
    tls_url = broker.ws_url.replace("ws://", "wss://")
    if command == "enroll":
        result = agent(home, "enroll", remote_link(tls_url))
    else:
        code = BackupCode.new().text
        https = broker.http_url.replace("http://", "https://")
        result = agent(
            home, "restore", "--from", "broker", "--broker", https, PUSHAUTH_AGENT_BACKUP_CODE=code
        )
    one_line_error(result, 3, "the TLS handshake failed")
    assert "[SSL:" not in result.stderr and "_ssl.c" not in result.stderr, result.stderr
    assert "is it serving https:// (wss://) there?" in result.stderr


def test_an_account_stored_with_a_remote_ws_url_is_never_connected(tmp_path: Path) -> None:
    """An account from before the rule (or a restored backup) with ws:// to another
    host: one-shot commands fail with the reason; `listen` says it and does not retry."""
    home = tmp_path / "agent"
    store_account(home, REMOTE_WS)
    pending = agent(home, "pending")
    assert pending.returncode != 0
    assert "is not encrypted" in pending.stderr and "Traceback" not in pending.stderr
    with Listening(home, tmp_path / "listen") as listening:
        listening.wait_for(f"Not reconnecting to {REMOTE_WS}")
        assert "Reconnecting to" not in listening.output()
    removed = agent(home, "remove", "cid-alice", "--yes")
    assert removed.returncode != 0 and "is not encrypted" in removed.stderr
    agent_ok(home, "remove", "cid-alice", "--local-only", "--yes")  # the way out: forget it here
    assert AccountStore(home).load() == []


async def test_ws_to_localhost_by_name_is_allowed(
    tmp_path: Path, broker: BrokerProcess, rp: dict[str, Any]
) -> None:
    async with PushAuthClient(broker.http_url, rp["api_key"]) as sdk:
        started = await sdk.create_enrollment(USER, ACCOUNT)
        assert started.uri is not None
        parsed = enrollment_uri.parse(started.uri)
        by_name = replace(parsed, broker=parsed.broker.replace("127.0.0.1", "localhost"))
        assert by_name.broker.startswith("ws://localhost:")
        home = tmp_path / "agent"
        agent_ok(home, "enroll", by_name.build())
        done = await sdk.wait_enrollment(started, timeout=10)
        assert done.completed
        assert accounts(home)[0]["broker"] == by_name.broker


# -- gaps 2 and 3: the RP's id and name come from the link, not from the broker --------


async def test_the_stored_rp_name_is_shown_not_the_brokers(
    tmp_path: Path, client: PushAuthClient, hostile: HostileBroker, rp: dict[str, Any]
) -> None:
    def relabel(frame: Frame, _link: DeviceLink) -> Frame:
        if isinstance(frame, Enrolled | Challenge):
            return replace(frame, rp_name="Your Bank (urgent)")
        return frame

    hostile.on_broker_frame(relabel)
    home = tmp_path / "agent"
    started, uri = await start_enrollment(client)
    agent_ok(home, "enroll", uri)
    [stored] = accounts(home)
    assert (stored["rp"], stored["rp_name"]) == (rp["id"], rp["name"])  # the link's, not "Your Bank"
    assert stored["label"] == ACCOUNT
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    await client.confirm_credential(done.credential.id)
    ch = await client.create_challenge(USER, {"app": "Payroll"}, ttl=60)

    text = agent_ok(home, "pending")
    service = next(line for line in text.splitlines() if line.strip().startswith("service:"))
    assert rp["name"] in service
    assert "the broker calls it 'Your Bank (urgent)'" in service
    [listed] = json.loads(agent_ok(home, "pending", "--json"))
    assert listed["id"] == ch.id
    assert (listed["rp_name"], listed["broker_rp_name"]) == (rp["name"], "Your Bank (urgent)")


async def test_an_enrollment_the_broker_made_for_another_rp_is_revoked(
    tmp_path: Path, client: PushAuthClient, hostile: HostileBroker
) -> None:
    def elsewhere(frame: Frame, _link: DeviceLink) -> Frame:
        return replace(frame, rp="another_rp") if isinstance(frame, Enrolled) else frame

    hostile.on_broker_frame(elsewhere)
    home = tmp_path / "agent"
    started, uri = await start_enrollment(client)
    result = agent(home, "enroll", uri)
    one_line_error(result, 1, "the enrollment link is for")
    assert "the key just registered was revoked at once" in result.stderr
    assert AccountStore(home).load() == []  # nothing stored
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None  # the broker did register it...
    assert await client.list_credentials(USER) == []  # ...and the device took it back


@pytest.mark.parametrize(
    "moved", [{"rp": "another_rp"}, {"user": "mallory"}], ids=["another rp", "another user"]
)
async def test_a_recovery_the_broker_answers_for_another_account_is_not_kept(
    tmp_path: Path, client: PushAuthClient, hostile: HostileBroker, moved: dict[str, str]
) -> None:
    """A restored account recovers by itself with its recovery key; a broker that answers
    the recovery for another service or user does not move the account there: it stays
    "action required" under the service and user it was enrolled at."""
    old, new = tmp_path / "old", tmp_path / "new"
    started = await client.create_enrollment(USER, ACCOUNT, recoverable=True)
    assert started.uri is not None
    agent_ok(old, "enroll", started.uri)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    backup = tmp_path / "phone.backup"
    agent_ok(old, "backup", "--to", str(backup))
    hostile.rewrite("POST", r"/v1/recoveries", lambda _exchange, body: {**body, **moved})
    out = agent_ok(new, "restore", "--from", str(backup), "--device-name", "new phone")
    assert f"action required: {ACCOUNT}: the broker answered for another account" in out
    (account,) = AccountStore(new).load()
    assert not account.active and (account.rp, account.user) == ((await client.rp()).id, USER)


# -- gap 4: a challenge naming another RP than the account's, or one already expired, is ignored


def _for_another_rp(frame: Challenge) -> Challenge:
    return replace(frame, rp="another_rp")


def _ended_a_minute_ago(frame: Challenge) -> Challenge:
    return replace(frame, created=frame.created - 120_000, expires=frame.created - 60_000)


@pytest.mark.parametrize(
    ("tamper", "why"),
    [(_for_another_rp, "another service (another_rp)"), (_ended_a_minute_ago, "it had expired")],
    ids=["another rp", "expired"],
)
async def test_a_challenge_for_another_rp_or_expired_is_neither_shown_nor_answered(
    tmp_path: Path,
    client: PushAuthClient,
    hostile: HostileBroker,
    tamper: Callable[[Challenge], Challenge],
    why: str,
) -> None:
    """Section 18.2: a challenge naming another RP than the account's, or whose `expires`
    has passed (by the broker's own clock, as its hello told: an old request sent again),
    is ignored: neither shown nor signed, by `pending`, `approve` or `listen`."""
    home = tmp_path / "agent"
    started, uri = await start_enrollment(client)
    agent_ok(home, "enroll", uri)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    await client.confirm_credential(done.credential.id)

    def tampered(frame: Frame, _link: DeviceLink) -> Frame:
        return tamper(frame) if isinstance(frame, Challenge) else frame

    hostile.on_broker_frame(tampered)
    ch = await client.create_challenge(USER, {"app": "Payroll"}, ttl=60)
    pending = agent(home, "pending")
    assert pending.returncode == 0, pending.stderr
    assert "No sign-in requests are waiting." in pending.stdout
    assert f"Sign-in request {ch.id} was ignored" in pending.stderr
    assert why in pending.stderr
    approve = agent(home, "approve", ch.id, "--number", ch.number)
    assert approve.returncode == 1, approve.stderr
    assert f"no pending sign-in request {ch.id}" in approve.stderr
    with Listening(home, tmp_path / "listen") as listening:
        listening.wait_for(f"Sign-in request {ch.id} was ignored")
        assert why in listening.output() and "Answer with" not in listening.output()
    assert hostile.device_frames(Answer) == []  # nothing was signed
    cred = done.credential
    assert (await client.get_result(ch, {cred.id: cred.public_key})).status == "pending"


# -- gap 6: no automatic reconnect after a 44xx close but 4429 and 4408 ---------------


@dataclass
class Peer:
    """A WebSocket server speaking pushauth.v2 as `behaviour` says; counts connections."""

    behaviour: Callable[[ServerConnection], Awaitable[None]]
    url: str = ""
    connections: int = 0
    received: list[bytes] = field(default_factory=list)


def hello(*, clock_off_ms: int = 0) -> bytes:
    now = int(time.time() * 1000) + clock_off_ms
    return encode(Hello(nonce=secrets.token_bytes(32), time=now, max_frame=32768, node="peer"))


@pytest.fixture
async def peers() -> AsyncIterator[
    Callable[[Callable[[ServerConnection], Awaitable[None]]], Awaitable[Peer]]
]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(behaviour: Callable[[ServerConnection], Awaitable[None]]) -> Peer:
            peer = Peer(behaviour)

            async def handler(ws: ServerConnection) -> None:
                peer.connections += 1
                try:
                    await peer.behaviour(ws)
                    async for message in ws:
                        peer.received.append(message if isinstance(message, bytes) else message.encode())
                except ConnectionClosed:
                    pass

            server = await stack.enter_async_context(
                serve(
                    handler,
                    "127.0.0.1",
                    0,
                    select_subprotocol=lambda _c, offered: (
                        Subprotocol(SUBPROTOCOLS[0]) if SUBPROTOCOLS[0] in offered else None
                    ),
                )
            )
            peer.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/v1/device"
            return peer

        yield start


def closes_after_authenticate(code: int, reason: str) -> Callable[[ServerConnection], Awaitable[None]]:
    async def behaviour(ws: ServerConnection) -> None:
        await ws.send(hello())
        await ws.recv()  # authenticate
        await ws.close(code, reason)

    return behaviour


def welcomes(cid: str, *, clock_off_ms: int = 0) -> Callable[[ServerConnection], Awaitable[None]]:
    async def behaviour(ws: ServerConnection) -> None:
        await ws.send(hello(clock_off_ms=clock_off_ms))
        await ws.recv()  # authenticate
        await ws.send(encode(Welcome(accepted=(cid,), rejected=(), pending=0)))

    return behaviour


@pytest.mark.parametrize(
    ("code", "reason", "says"),
    [
        (4400, "invalid_field", "closed the connection with code 4400"),
        (4401, "not_authenticated", "closed the connection with code 4401"),
        (4413, "frame_too_large", "closed the connection with code 4413"),
        (4406, "unsupported_version: this broker speaks pushauth.v9", "must be upgraded"),
        (4499, "some_new_code", "closed the connection with code 4499"),
    ],
)
async def test_after_a_44xx_close_that_broker_is_not_retried_and_the_others_run_on(
    tmp_path: Path, peers: Any, code: int, reason: str, says: str
) -> None:
    refusing = await peers(closes_after_authenticate(code, reason))
    fine = await peers(welcomes("cid-b"))
    home = tmp_path / "agent"
    store_account(home, refusing.url, cid="cid-a")
    store_account(home, fine.url, cid="cid-b")
    with Listening(home, tmp_path / "listen") as listening:
        await listening.until(f"Not reconnecting to {refusing.url}")
        await listening.until(f"Connected to {fine.url}")
        assert says in listening.output()
        assert f"Reconnecting to {refusing.url}" not in listening.output()
    assert refusing.connections == 1
    assert AccountStore(home).load()[0].active  # the account stays: the user decides


@pytest.mark.parametrize(("code", "reason"), [(4429, "rate_limited"), (4408, "auth_timeout")])
async def test_after_4429_or_4408_it_reconnects_with_backoff(
    tmp_path: Path, peers: Any, code: int, reason: str
) -> None:
    refusing = await peers(closes_after_authenticate(code, reason))
    home = tmp_path / "agent"
    store_account(home, refusing.url)
    with Listening(home, tmp_path / "listen") as listening:
        await listening.until(f"Reconnecting to {refusing.url} in")
        delay = float(listening.output().split(f"Reconnecting to {refusing.url} in ")[1].split(" s")[0])
        assert 0 <= delay <= 60
        assert "Not reconnecting" not in listening.output()


def welcomes_then_closes(cid: str) -> Callable[[ServerConnection], Awaitable[None]]:
    """A reconnect storm: every connection is authenticated, then dropped at once."""

    async def behaviour(ws: ServerConnection) -> None:
        await welcomes(cid)(ws)
        await ws.close(1011, "")

    return behaviour


async def test_a_broker_dropping_every_connection_after_welcome_stays_not_reachable_since_the_first_drop(
    tmp_path: Path, peers: Any
) -> None:
    storm = await peers(welcomes_then_closes("cid-alice"))
    home = tmp_path / "agent"
    store_account(home, storm.url)
    said = io.StringIO()
    listener = Listener(AccountStore(home), interactive=False, out=said)
    await listener.sync_links()
    link = listener.links[storm.url]

    async def retries(n: int) -> bool:
        return said.getvalue().count("Reconnecting to") >= n

    try:
        await until(lambda: retries(1), message="the first retry")
        first = link.down_since
        assert first is not None and link.status() == f"not reachable since {clock_time(first)}, retrying"
        await until(lambda: retries(2), message="the second retry")
        assert storm.connections >= 2 and f"Connected to {storm.url}" in said.getvalue()
        # Connected again for a moment is not reachable again: the status keeps its first time.
        assert link.down_since == first, said.getvalue()
    finally:
        await link.stop()


# -- gap 7: a lost `enrolled` is retried with the same token and key -----------------


async def test_a_lost_enrolled_reply_is_retried_once_with_the_same_key(
    tmp_path: Path, client: PushAuthClient, hostile: HostileBroker
) -> None:
    garbled: list[Enrolled] = []

    def garble_first(frame: Frame, _link: DeviceLink) -> Frame | bytes:
        if isinstance(frame, Enrolled) and not garbled:
            garbled.append(frame)
            return b"\xc1 not a frame"  # the device closes this connection (section 7.2)
        return frame

    hostile.on_broker_frame(garble_first)
    home = tmp_path / "agent"
    started, uri = await start_enrollment(client)
    agent_ok(home, "enroll", uri)
    first, second = [r.frame for r in hostile.device_frames(Enroll)]
    assert isinstance(first, Enroll) and isinstance(second, Enroll)
    assert (first.token, first.pk, first.name, first.rpk, first.binding) == (
        second.token,
        second.pk,
        second.name,
        second.rpk,
        second.binding,
    )
    assert first.sig != second.sig  # each proof signs its own connection's nonce
    [stored] = AccountStore(home).load()
    assert stored.cid == garbled[0].cid  # the credential the lost reply named
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None and done.credential.id == stored.cid
    assert [c.id for c in await client.list_credentials(USER)] == [stored.cid]  # one, not two


# -- gap 8: a device clock off by more than 120 s is warned about ---------------------


async def test_a_clock_off_by_more_than_two_minutes_is_warned_about(tmp_path: Path, peers: Any) -> None:
    peer = await peers(welcomes("cid-alice", clock_off_ms=-10 * 60 * 1000))
    home = tmp_path / "agent"
    store_account(home, peer.url)
    code, out, err = await run_agent(home, "pending")
    assert code == 0, err
    assert "No sign-in requests are waiting." in out
    assert "this device's clock is 10 min ahead of the broker's" in err
    near = await peers(welcomes("cid-alice", clock_off_ms=-60 * 1000))
    store_account(tmp_path / "other", near.url)
    code, _out, err = await run_agent(tmp_path / "other", "pending")
    assert code == 0 and "clock" not in err


# -- `listen --no-input` in the background ---------------------------------------------


class Listening:
    """`pushauth-agent listen --no-input`, its output in a file; SIGTERM at the end."""

    def __init__(self, home: Path, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / "listen.out"
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [AGENT, "--home", str(home), "listen", "--no-input"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: text in self.output(), timeout=timeout, message=lambda: f"{text!r} in {self.output()!r}"
        )

    async def until(self, text: str, timeout: float = 20.0) -> None:
        """wait_for without blocking the event loop (the peers above run on it)."""
        await asyncio.to_thread(self.wait_for, text, timeout)

    def __enter__(self) -> Listening:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        assert "Traceback" not in self.output()
