"""pushauth-radius end to end: radclient (FreeRADIUS's client) against the real server,
the real broker and Redis, with the real agent CLI approving on the "device".

Access-Request (user, password) -> Access-Challenge "Type NN in your authenticator"
-> the agent approves (or denies, or types a wrong number) -> the follow-up
Access-Request with the State -> Access-Accept / Access-Reject. Then what must be
dropped: a wrong shared secret, no Message-Authenticator, a replay, an unknown client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from e2e_helpers import agent, agent_env, agent_ok, approve, only_pending, pending  # noqa: F401 - agent_env is a fixture
from host_cli import command, command_ok, rename_device, stored_devices
from pyrad import packet as rp
from shared_broker import broker, new_rp  # noqa: F401 - broker is a fixture
from support import (
    DEADLINE,
    BrokerProcess,
    ManagedProcess,
    RedisServer,
    assert_cli_error,
    console_script,
    free_port,
    line_on_stdout,
    set_policy,
    wait_until,
)
from support.hostile_broker import HostileBroker

from relying_party.host.store import UserStore
from relying_party.radius import cli, core, dictionary
from relying_party.sdk import PushAuthClient
from relying_party.web import totp
from relying_party.web.db import Database, Device

RADIUS = console_script("pushauth-radius")
SECRET = "testing123"
NUMBER_RE = re.compile(r'Reply-Message = "Type (\d+) in your authenticator, then press Enter"')
UPSTREAM_SECRET = "upstream-secret"
FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
STATE_RE = re.compile(r"State = (0x[0-9a-f]+)")


@dataclass
class Setup:
    base: Path
    broker: BrokerProcess
    rp: dict[str, Any]
    home: Path  # the agent's home, alice enrolled
    store: Path
    enroll_output: str


def write_config(
    setup: Setup,
    port: int,
    *,
    ttl: int | None = None,
    digits: int | None = None,
    push_only: bool = False,
    name: str = "radius",
    rate: int = 1000,
    upstream: int | None = None,
    broker_url: str | None = None,
    when_unreachable: str = "reject",
    api_key: str | None = None,
    redis_url: str | None = None,
) -> Path:
    """`ttl` and `digits` None: left out, so the RP's policy at the broker decides.
    `api_key` None: the RP's own; `redis_url` None: the broker's Redis."""
    key_file = setup.base / f"{name}-api-key"
    key_file.write_text(setup.rp["api_key"] if api_key is None else api_key)
    key_file.chmod(0o600)
    path = setup.base / f"{name}.toml"
    first_factor = 'mode = "gateway"'
    if upstream is not None:
        first_factor = (
            f'mode = "upstream"\nhost = "127.0.0.1"\nport = {upstream}\nsecret = "{UPSTREAM_SECRET}"\n'
            "timeout = 1\nretries = 0"
        )
    path.write_text(
        f"""
[broker]
url = "{broker_url or setup.broker.http_url}"
api_key_file = "{key_file}"
when_unreachable = "{when_unreachable}"
timeout = 2

[radius]
listen = "127.0.0.1"
port = {port}
redis_url = "{redis_url or setup.broker.redis_url}"
store = "{setup.store}"
app_name = "Test VPN"

[challenge]
{"" if digits is None else f"digits = {digits}"}
{"" if ttl is None else f"ttl = {ttl}"}
answer_wait = 25

[first_factor]
{first_factor}

[limits]
user_requests = {rate}
user_window = 60

[[client]]
name = "gw-local"
address = "127.0.0.1/32"
secret = "{SECRET}"
push_only = {str(push_only).lower()}
"""
    )
    return path


def make_setup(broker: BrokerProcess, base: Path, policy: tuple[str, ...] = ()) -> Setup:
    """alice enrolled with `pushauth-radius enroll` (QR, link, test push approved by the
    agent) at a new RP; `policy`: `pushauth-broker rp set` flags, set before anything reads it."""
    rp = asyncio.run(new_rp(broker, "VPN"))
    if policy:
        assert broker.redis_url is not None
        set_policy(rp["id"], *policy, redis_url=broker.redis_url)
    made = Setup(base, broker, rp, base / "agent", base / "users.db", "")
    made.enroll_output = enroll_device(made, "alice", made.home, "phone")
    return made


@pytest.fixture(scope="module")
def setup(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    # Its push-only clients need push without number matching, which the broker's operator
    # allows per RP (docs/radius.md, "Push-only clients").
    return make_setup(broker, tmp_path_factory.mktemp("radius"), ("--allow-numberless-push",))


def enroll_device(setup: Setup, user: str, home: Path, name: str) -> str:
    """`pushauth-radius enroll USER` with the agent at `home` (its device `name`): its output."""
    config = write_config(setup, free_port())
    enroll = ManagedProcess(
        [RADIUS, "--config", config, "enroll", user],
        log_dir=setup.base / "logs",
        name=f"radius-enroll-{user}",
    ).start()
    try:
        link = enroll.wait_for_output(r"^link: (\S+)$").group(1)
        agent_ok(home, "enroll", link, "--name", name)
        number = enroll.wait_for_output(r"Test push: type (\d+) in your authenticator").group(1)
        # Marked as a setup test (docs/protocol.md 15.1), so the agent asks to finish
        # adding the device rather than whether someone is signing in.
        waiting = agent_ok(home, "pending")
        assert "Test notification" in waiting and "finish adding this device?" in waiting, waiting
        request = approve(home, number)
        assert request["setup_test"] is True and request["context"] == {
            "app": "Test VPN",
            "purpose": "setup test",
        }
        assert enroll.wait(timeout=DEADLINE) == 0, enroll.describe()
        return enroll.stdout()
    finally:
        enroll.cleanup()


READY = r"pushauth-radius listening on udp"


def test_a_test_push_answered_with_a_wrong_number_adds_no_device(setup: Setup, tmp_path: Path) -> None:
    """Said of adding a device, not of a sign-in; nothing is left at the service."""
    config = write_config(setup, free_port())
    enroll = ManagedProcess(
        [RADIUS, "--config", config, "enroll", "walter"], log_dir=tmp_path, name="radius-enroll-walter"
    ).start()
    try:
        home = tmp_path / "phone"
        agent_ok(home, "enroll", enroll.wait_for_output(r"^link: (\S+)$").group(1), "--name", "phone")
        number = enroll.wait_for_output(r"Test push: type (\d+) in your authenticator").group(1)
        wrong = str((int(number) + 1) % 10 ** len(number)).zfill(len(number))
        agent(home, "approve", only_pending(home)["id"], "--number", wrong)
        assert enroll.wait(timeout=DEADLINE) != 0, enroll.describe()
        said = enroll.stdout() + enroll.stderr()
        assert (
            "the test push was not approved (the number typed on the device did not match): "
            "the device was not added; run enroll again"
        ) in said, said
        assert "sign-in" not in said.split("Test push:")[1], said
    finally:
        enroll.cleanup()
    # The key was taken back at the service: the device learns so when it next connects.
    agent(home, "pending")
    (account,) = json.loads(agent_ok(home, "accounts", "--json"))
    assert account["status"] == "revoked", account


@pytest.fixture(scope="module")
def hostile(broker: BrokerProcess) -> Iterator[HostileBroker]:
    """A compromised broker (the real one behind a lying proxy) for the "hostile" server."""
    with HostileBroker(broker.http_url) as proxy:
        yield proxy
    proxy.check()


@pytest.fixture(scope="module")
def own_redis(setup: Setup) -> Iterator[RedisServer]:
    """A Redis of the "own-redis" server alone, which a test may take down."""
    with RedisServer(setup.base / "own-redis") as server:
        yield server


@pytest.fixture(scope="module")
def servers(
    setup: Setup, hostile: HostileBroker, own_redis: RedisServer
) -> Iterator[dict[str, tuple[ManagedProcess, int]]]:
    """The RADIUS servers of this module, by name, started at once (each start costs an
    interpreter's imports): the main one, and one per setting the tests need."""
    nobody = free_port()  # nothing listens there: an unreachable broker
    settings: dict[str, dict[str, Any]] = {
        "main": {},
        "short-ttl": {"ttl": 10},
        "push-only": {"push_only": True},
        "rate": {"rate": 2},
        "down-reject": {"broker_url": f"http://127.0.0.1:{nobody}", "when_unreachable": "reject"},
        "down-accept": {"broker_url": f"http://127.0.0.1:{nobody}", "when_unreachable": "accept"},
        # A key the broker refuses, where an unreachable broker would let people in.
        "bad-key": {"api_key": "pa_" + "x" * 40, "when_unreachable": "accept"},
        # Its SDK talks to the broker through the lying proxy (the devices do not).
        "hostile": {"broker_url": hostile.http_url},
        "own-redis": {"redis_url": own_redis.url},
    }
    with started_servers(setup, settings) as started:
        yield started


@contextlib.contextmanager
def started_servers(
    setup: Setup, settings: dict[str, dict[str, Any]]
) -> Iterator[dict[str, tuple[ManagedProcess, int]]]:
    """A RADIUS server per entry of `settings` (write_config's options), started at once."""
    started: dict[str, tuple[ManagedProcess, int]] = {}
    try:
        for name, options in settings.items():
            port = free_port()
            config = write_config(setup, port, name=name, **options)
            proc = ManagedProcess(
                [RADIUS, "--config", config, "serve"], log_dir=setup.base / "logs", name=f"radius-{name}"
            )
            started[name] = (proc.start(), port)
        for proc, _ in started.values():
            proc.wait_ready(line_on_stdout(READY))
        yield started
    finally:
        for proc, _ in started.values():
            proc.cleanup()


@pytest.fixture
def server(servers: dict[str, tuple[ManagedProcess, int]]) -> tuple[ManagedProcess, int]:
    return servers["main"]


def _serve(setup: Setup, config: Path, name: str = "radius") -> ManagedProcess:
    return ManagedProcess(
        [RADIUS, "--config", config, "serve"],
        log_dir=setup.base / "logs",
        name=name,
        ready=line_on_stdout(READY),
    ).start()


@dataclass
class Reply:
    code: str | None  # "Access-Accept", ... or None: no reply
    text: str

    @property
    def number(self) -> str:
        match = NUMBER_RE.search(self.text)
        assert match, self.text
        return match.group(1)

    @property
    def state(self) -> str:
        match = STATE_RE.search(self.text)
        assert match, self.text
        return match.group(1)

    @property
    def message(self) -> str:
        match = re.search(r'Reply-Message = "([^"]*)"', self.text)
        assert match, self.text
        return match.group(1)


def radclient(port: int, *attrs: str, secret: str = SECRET, timeout: float = 30, ma: bool = True) -> Reply:
    """One request with radclient; `ma` adds a Message-Authenticator (radclient computes it)."""
    line = ", ".join([*attrs, *(["Message-Authenticator = 0x00"] if ma else [])])
    result = subprocess.run(
        ["radclient", "-x", "-t", str(timeout), "-r", "1", f"127.0.0.1:{port}", "auth", secret],
        input=line,
        capture_output=True,
        text=True,
        timeout=timeout + DEADLINE,
    )
    text = result.stdout + result.stderr
    match = re.search(r"Received (Access-\w+) Id", text)
    return Reply(match.group(1) if match else None, text)


def start(port: int, user: str = "alice", *attrs: str) -> Reply:
    reply = radclient(port, f'User-Name = "{user}"', 'User-Password = "gateway-checked"', *attrs)
    assert reply.code == "Access-Challenge", reply.text
    return reply


def follow_up(port: int, challenge: Reply, typed: str = "", user: str = "alice") -> Reply:
    return radclient(
        port, f'User-Name = "{user}"', f'User-Password = "{typed}"', f"State = {challenge.state}"
    )


def audit_line(proc: ManagedProcess, pattern: str) -> str:
    return proc.wait_for_output(pattern, stream="stderr").group(0)


# -- tests --------------------------------------------------------------------------


def test_enroll_prints_a_qr_code_and_confirms_with_a_test_push(setup: Setup) -> None:
    out = setup.enroll_output
    assert "pushauth://enroll?" in out
    assert "█" in out or "▀" in out  # the QR code, drawn in the terminal
    assert "alice can now sign in with push approval or a verification code" in out


def test_right_number_is_accepted(setup: Setup, server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    used = _device(setup).last_used_at or 0
    # A station id with blank characters the broker refuses (docs/protocol.md 18.4): left out.
    challenge = start(port, "alice", 'Calling-Station-Id = "10.0.0.9\u3164\u2800"')
    assert re.fullmatch(r"\d\d", challenge.number)
    assert approve(setup.home, challenge.number)["context"]["from"] == "10.0.0.9"
    reply = follow_up(port, challenge)
    assert reply.code == "Access-Accept", reply.text
    assert reply.message == "Approved."
    # Which device approved: its credential id, as `pushauth-radius devices` lists it; the
    # station is the first request's (the follow-up sent none).
    audit_line(
        proc,
        r"decision=accept outcome=approved user=alice client=gw-local addr=127\.0\.0\.1 "
        rf"station=10\.0\.0\.9\S* challenge=\S+ device={_device(setup).credential_id} ms=",
    )
    assert (_device(setup).last_used_at or 0) > used  # what `pushauth-radius devices` shows as last used


def test_the_answer_may_reach_another_instance(
    setup: Setup, servers: dict[str, tuple[ManagedProcess, int]]
) -> None:
    """Behind a load balancer: the State's record is in the shared Redis."""
    _, first = servers["main"]
    other, second = servers["short-ttl"]
    challenge = start(first)
    approve(setup.home, challenge.number)
    reply = follow_up(second, challenge)
    assert reply.code == "Access-Accept", reply.text
    audit_line(other, r"decision=accept outcome=approved user=alice")


def test_wrong_number_is_rejected(setup: Setup, server: tuple[ManagedProcess, int]) -> None:
    _, port = server
    challenge = start(port)
    wrong = "10" if challenge.number != "10" else "11"
    approve(setup.home, wrong)
    reply = follow_up(port, challenge)
    assert reply.code == "Access-Reject", reply.text
    assert "did not match" in reply.message


def test_deny_is_rejected(setup: Setup, server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    challenge = start(port)
    agent_ok(setup.home, "deny", only_pending(setup.home)["id"])
    reply = follow_up(port, challenge)
    assert reply.code == "Access-Reject", reply.text
    assert reply.message == "Denied on your authenticator."
    audit_line(proc, r"decision=reject outcome=denied user=alice")


def test_a_verification_code_at_the_prompt_is_checked_as_totp(
    setup: Setup, server: tuple[ManagedProcess, int]
) -> None:
    proc, port = server
    (code,) = [line["code"] for line in json.loads(agent_ok(setup.home, "code", "--json"))]
    challenge = start(port)
    reply = follow_up(port, challenge, typed=code)
    assert reply.code == "Access-Accept", reply.text
    assert reply.message == "Verification code accepted."
    audit_line(
        proc, rf"decision=accept outcome=totp_ok .* device={_device(setup).credential_id} ms="
    )  # whose code
    assert pending(setup.home) == []  # the push it replaced was cancelled
    again = follow_up(port, start(port), typed=code)
    assert again.code == "Access-Reject", again.text
    assert "used already" in again.message
    wrong = follow_up(port, start(port), typed="000000" if code != "000000" else "111111")
    assert wrong.code == "Access-Reject" and wrong.message == "Wrong verification code."


def test_a_code_of_a_device_removed_on_the_phone_is_refused(
    setup: Setup, server: tuple[ManagedProcess, int]
) -> None:
    """Removed on the phone itself (revoked at the broker only): the push still goes to
    the user's other device, and the removed one's code no longer signs in."""
    _, port = server
    home = setup.base / "agent-alice-spare"
    enroll_device(setup, "alice", home, "spare phone")
    (account,) = json.loads(agent_ok(home, "accounts", "--json"))
    (code,) = [line["code"] for line in json.loads(agent_ok(home, "code", "--json"))]
    agent_ok(home, "remove", account["name"], "--yes")
    reply = follow_up(port, start(port), typed=code)
    assert reply.code == "Access-Reject" and reply.message == "Wrong verification code.", reply.text
    assert "spare phone" not in [d.name for d in stored_devices(setup.store, "alice")]


def test_after_a_fraud_report_a_verification_code_still_signs_in(
    setup: Setup, servers: dict[str, tuple[ManagedProcess, int]]
) -> None:
    proc, port = servers["main"]
    challenge = start(port)
    agent_ok(setup.home, "deny", "--fraud", only_pending(setup.home)["id"])
    reported = follow_up(port, challenge)
    assert reported.code == "Access-Reject" and "reported this sign-in" in reported.message, reported.text
    device = _device(setup)
    code = ""
    try:
        blocked = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"')
        assert blocked.code == "Access-Challenge", blocked.text
        assert "Push sign-in is blocked" in blocked.message and "verification code" in blocked.message
        audit_line(proc, r"decision=challenge outcome=code_only user=alice")
        # A push-only client cannot send a code: its reject says what else to do.
        push_only_proc, push_only_port = servers["push-only"]
        refused = radclient(push_only_port, 'User-Name = "alice"', 'User-Password = "pw"')
        assert refused.code == "Access-Reject", refused.text
        assert refused.message == core.PUSH_ONLY_BLOCKED
        assert "Ask your administrator" in refused.message and "code" not in refused.message
        audit_line(push_only_proc, r"decision=reject outcome=push_blocked user=alice")
        assert pending(setup.home) == []  # no push was sent
        # The code of the next time step (one step of skew is allowed): not used before.
        code = totp.code_at(device, int(time.time() // device.totp_period) + 1)
        not_a_code = follow_up(port, blocked, typed="")
        assert not_a_code.code == "Access-Reject", not_a_code.text
        blocked = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"')
        accepted = follow_up(port, blocked, typed=code)
        assert accepted.code == "Access-Accept", accepted.text
        # Signed in another way: the block is lifted, the next sign-in is a push again.
        again = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"')
        assert again.code == "Access-Challenge" and "blocked" not in again.message, again.text
        agent_ok(setup.home, "deny", only_pending(setup.home)["id"])
        assert follow_up(port, again).code == "Access-Reject"
    finally:
        # Leave alice as she was for the other tests, whatever their order: push allowed,
        # and this step's code unused (here and in Redis).
        asyncio.run(_lift(setup))
        db = Database(setup.store)
        try:
            db.conn.execute(
                "UPDATE devices SET totp_last_counter = ? WHERE credential_id = ?",
                (device.totp_last_counter, device.credential_id),
            )
        finally:
            db.close()
        with redis.Redis.from_url(setup.broker.redis_url) as store:
            store.delete(f"pushauth:radius:code:alice:{code}")


def _device(setup: Setup) -> Device:
    """alice's one device as the RADIUS server stores it."""
    db = Database(setup.store)
    try:
        user = db.user_by_name("alice")
        assert user is not None
        (device,) = db.devices(user.id)
    finally:
        db.close()
    return device


async def _lift(setup: Setup) -> None:
    db = Database(setup.store)
    try:
        user = db.user_by_name("alice")
    finally:
        db.close()
    assert user is not None
    async with PushAuthClient(setup.broker.http_url, setup.rp["api_key"]) as sdk:
        await sdk.lift_push_block(user.handle)


def test_a_device_whose_setup_never_finished_approves_nothing(
    setup: Setup, server: tuple[ManagedProcess, int], tmp_path: Path
) -> None:
    """An enrollment stopped hard at its test push (the process killed: no clean-up)
    leaves a device here whose user never proved they saw the number (whoever scanned the
    QR code holds it). A compromised broker that calls it confirmed and sends it a
    sign-in does not make its approval count: only devices confirmed here verify
    sign-ins (docs/protocol.md section 17, step 4)."""
    enroll_device(setup, "ursula", tmp_path / "phone", "phone")
    config = write_config(setup, free_port())
    enroll = ManagedProcess(
        [RADIUS, "--config", config, "enroll", "ursula"], log_dir=tmp_path, name="radius-enroll-stopped"
    ).start()
    intruder = tmp_path / "intruder"
    try:
        agent_ok(intruder, "enroll", enroll.wait_for_output(r"^link: (\S+)$").group(1), "--name", "intruder")
        enroll.wait_for_output(r"Test push: type (\d+) in your authenticator")
        enroll.kill()
    finally:
        enroll.cleanup()
    db = Database(setup.store)
    try:
        user = db.user_by_name("ursula")
        assert user is not None
        (unfinished,) = [d for d in db.devices(user.id) if not d.confirmed]
    finally:
        db.close()

    async def confirm_at_the_broker() -> None:
        async with PushAuthClient(setup.broker.http_url, setup.rp["api_key"]) as sdk:
            await sdk.confirm_credential(unfinished.credential_id)

    asyncio.run(confirm_at_the_broker())
    proc, port = server
    challenge = start(port, user="ursula")
    (request,) = wait_until(
        lambda: [r for r in pending(intruder) if not r["setup_test"]] or None,
        message="the sign-in sent to the unfinished device",
    )
    agent_ok(intruder, "approve", request["id"], "--number", challenge.number)
    reply = follow_up(port, challenge, user="ursula")
    assert reply.code == "Access-Reject", reply.text
    audit_line(proc, r"decision=reject .*user=ursula")


def test_a_broker_replaying_an_earlier_approval_gets_a_reject(
    setup: Setup, servers: dict[str, tuple[ManagedProcess, int]], hostile: HostileBroker
) -> None:
    """A compromised broker answers a new sign-in with an earlier, really approved one of
    the same user and context (its id, nonce and number, with the SDK's new rp_nonce
    echoed) and serves its genuine signed approval: the VPN gets an Access-Reject and the
    audit log a security event, not an Access-Accept (the SDK's freshness check, through
    the integration; docs/protocol.md section 20)."""
    proc, port = servers["hostile"]
    hostile.clear()
    honest = start(port)  # through the proxy, honestly: approved on the device, accepted
    approve(setup.home, honest.number)
    assert follow_up(port, honest).code == "Access-Accept"
    created = hostile.last("POST", "/v1/challenges")
    old_id = created.json["id"]
    assert hostile.last("GET", f"/v1/challenges/{old_id}").json["status"] == "approved"

    hostile.replay(
        "POST",
        "/v1/challenges",
        created,
        edit=lambda request, body: {**body, "rp_nonce": request.request_json["rp_nonce"]},
    )
    try:
        replayed = start(port)
        assert replayed.number == honest.number  # the old challenge, as the broker claims
        reply = follow_up(port, replayed)
    finally:
        hostile.clear()
    assert reply.code == "Access-Reject", reply.text
    served = hostile.last("GET", f"/v1/challenges/{old_id}")
    assert served.forwarded and served.json["status"] == "approved"  # the real, old approval
    audit_line(proc, r"decision=reject outcome=verification_failed user=alice")
    assert "SECURITY EVENT" in proc.stderr()


def test_a_state_is_answered_once(setup: Setup, server: tuple[ManagedProcess, int]) -> None:
    _, port = server
    challenge = start(port)
    agent_ok(setup.home, "deny", only_pending(setup.home)["id"])
    assert follow_up(port, challenge).code == "Access-Reject"
    again = follow_up(port, challenge)  # a new request (radclient: new authenticator), same State
    assert again.code == "Access-Reject"
    assert "unknown or over" in again.message


def test_a_state_answers_only_for_its_own_user(setup: Setup, server: tuple[ManagedProcess, int]) -> None:
    _, port = server
    challenge = start(port)
    other = radclient(port, 'User-Name = "mallory"', 'User-Password = ""', f"State = {challenge.state}")
    assert other.code == "Access-Reject" and "unknown or over" in other.message, other.text
    assert pending(setup.home) == []  # the push was cancelled
    assert follow_up(port, challenge).code == "Access-Reject"  # and the State is spent


def test_a_challenge_not_answered_in_time_expires(
    servers: dict[str, tuple[ManagedProcess, int]],
) -> None:
    proc, port = servers["short-ttl"]
    challenge = start(port)
    reply = follow_up(port, challenge)  # waits until the 10 s are up
    assert reply.code == "Access-Reject", reply.text
    assert "expired" in reply.message
    audit_line(proc, r"decision=reject outcome=expired user=alice")


@contextlib.contextmanager
def push_only_request(port: int) -> Iterator[dict[str, Reply]]:
    """alice's Access-Request to a push-only server, sent from a thread (the reply comes
    only once the push is answered); its reply is in ["reply"] after the block."""
    result: dict[str, Reply] = {}

    def ask() -> None:
        result["reply"] = radclient(port, 'User-Name = "alice"', 'User-Password = "x"')

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        yield result
    finally:
        asking.join(DEADLINE)


def test_push_only_waits_for_the_approval_in_the_first_request(
    setup: Setup, servers: dict[str, tuple[ManagedProcess, int]]
) -> None:
    proc, port = servers["push-only"]
    with push_only_request(port) as result:
        request = only_pending(setup.home)
        # A push without number matching: the device asks no number (and is told no
        # "type any number" in the context), and approves with none.
        assert request["number_matching"] is False
        assert not any("number" in key for key in request["context"]), request["context"]
        out = agent_ok(setup.home, "approve", request["id"])
        # The device's own result, from the broker: approved (not "the number did not match").
        assert f"Request {request['id']}: approved: the sign-in is allowed." in out, out
    assert result["reply"].code == "Access-Accept", result["reply"].text
    audit_line(proc, r"decision=accept outcome=approved user=alice client=gw-local .* device=cr_\S+ ms=")


NistServers = tuple[Setup, dict[str, tuple[ManagedProcess, int]]]


@pytest.fixture(scope="module")
def nist(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NistServers]:
    """alice at a second RP that the broker holds to the NIST SP 800-63B-4 profile (6
    digits or more) with a 120 s lifetime, enrolled with a configuration that names
    neither digits nor ttl (so its test push already takes the policy); servers that
    name neither ("main", "push-only") and one that names `digits = 2`."""
    made = make_setup(
        broker, tmp_path_factory.mktemp("radius-nist"), ("--profile", "nist-800-63b-4", "--ttl", "120")
    )
    settings: dict[str, dict[str, Any]] = {"main": {}, "push-only": {"push_only": True}, "two": {"digits": 2}}
    with started_servers(made, settings) as started:
        yield made, started


def test_digits_and_lifetime_left_out_of_the_config_follow_the_rps_policy(
    nist: NistServers, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, servers = nist
    assert re.search(r"Test push: type \d{6} in your authenticator", setup.enroll_output)
    assert cli.main(["--config", str(write_config(setup, 1812, name="check")), "check-config"]) == 0
    shown = (
        "challenge: number: digits the RP's policy at the broker; push valid: the RP's policy at the broker"
    )
    assert shown in capsys.readouterr().out
    proc, port = servers["main"]
    challenge = start(port)
    assert re.fullmatch(r"\d{6}", challenge.number)
    request = approve(setup.home, challenge.number)
    # The broker's lifetime (the policy's 120 s, not a number of pushauth-radius's own),
    # which the State's lifetime in Redis and the waits follow (the challenge's expires_at).
    assert (request["digits"], request["expires_at"] - request["created_at"]) == (6, 120_000)
    reply = follow_up(port, challenge)
    assert reply.code == "Access-Accept", reply.text
    audit_line(proc, r"decision=accept outcome=approved user=alice")


def test_push_only_under_the_nist_profile_is_a_configuration_error(nist: NistServers) -> None:
    """The NIST profile needs a number typed on the device: the broker refuses a push
    without number matching, so a push-only client's sign-in is rejected as a
    configuration to fix (never "unreachable"), and no push is sent."""
    setup, servers = nist
    proc, port = servers["push-only"]
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "x"')
    assert reply.code == "Access-Reject" and "misconfigured on this server" in reply.message, reply.text
    proc.wait_for_output(
        r"client gw-local is push_only, and the broker refuses a push without number", stream="stderr"
    )
    audit_line(proc, r"decision=reject outcome=config_error user=alice")
    assert pending(setup.home) == []


def test_digits_named_in_the_config_are_still_sent_and_the_policy_refuses_too_few(nist: NistServers) -> None:
    setup, servers = nist
    proc, port = servers["two"]
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "x"')
    # Not "unreachable" (which broker_down = "accept" would let in): a configuration to fix.
    assert reply.code == "Access-Reject", reply.text
    assert "misconfigured on this server" in reply.message, reply.text
    proc.wait_for_output(
        r"challenge.digits/challenge.ttl vs RP policy: 'digits' 2 is below this service's "
        r"policy minimum of 6",
        stream="stderr",
    )
    audit_line(proc, r"decision=reject outcome=config_error user=alice")
    assert pending(setup.home) == []  # no push was sent


def test_requests_per_user_are_limited(servers: dict[str, tuple[ManagedProcess, int]]) -> None:
    proc, port = servers["rate"]
    for _ in range(2):
        reply = radclient(port, 'User-Name = "bob"', 'User-Password = "pw"')
        assert reply.code == "Access-Reject" and "No authenticator" in reply.message, reply.text
    third = radclient(port, 'User-Name = "bob"', 'User-Password = "pw"')
    assert third.code == "Access-Reject" and "Too many" in third.message, third.text
    audit_line(proc, r"decision=reject outcome=rate_limited user=bob")


def test_a_wrong_shared_secret_is_dropped_and_logged(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"', secret="not-the-secret", timeout=1)
    assert reply.code is None, reply.text
    audit_line(proc, r"decision=drop outcome=bad_message_authenticator client=gw-local")


def test_a_request_without_message_authenticator_is_dropped(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"', ma=False, timeout=1)
    assert reply.code is None, reply.text
    audit_line(proc, r"decision=drop outcome=no_message_authenticator client=gw-local")


def _request(user: str = "mallory") -> bytes:
    pkt = rp.AuthPacket(
        code=rp.AccessRequest, secret=SECRET.encode(), dict=dictionary.load(), message_authenticator=True
    )
    pkt["User-Name"] = user
    pkt["User-Password"] = pkt.PwCrypt("pw")
    return pkt.RequestPacket()


def _socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(DEADLINE)
    return sock


def test_a_retransmission_gets_the_same_reply_and_a_replay_none(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    data = _request()
    with _socket() as first, _socket() as other:
        first.sendto(data, ("127.0.0.1", port))
        reply, _ = first.recvfrom(4096)
        assert reply[0] == rp.AccessReject  # mallory has no authenticator
        first.sendto(data, ("127.0.0.1", port))  # RFC 5080: same source, id and authenticator
        assert first.recvfrom(4096)[0] == reply
        other.sendto(data, ("127.0.0.1", port))  # the same packet from elsewhere: a replay
        audit_line(proc, r"decision=drop outcome=replayed user=mallory client=gw-local")
        other.setblocking(False)
        with pytest.raises(BlockingIOError):
            other.recvfrom(4096)


def test_an_unknown_client_is_dropped_and_logged(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    with _socket("127.0.0.2") as sock:
        sock.sendto(_request(), ("127.0.0.1", port))
        audit_line(proc, r"decision=drop outcome=unknown_client addr=127\.0\.0\.2")
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(4096)


def test_a_request_while_redis_is_down_is_dropped_with_an_audit_line(
    servers: dict[str, tuple[ManagedProcess, int]], own_redis: RedisServer
) -> None:
    """No reply (the gateway retries or fails over), and a line in the format of every
    other, so that a log search on decision= finds it."""
    proc, port = servers["own-redis"]
    own_redis.kill()
    with _socket() as sock:
        sock.sendto(_request("rita"), ("127.0.0.1", port))
        audit_line(
            proc,
            r"decision=drop outcome=store_unavailable user=rita client=gw-local addr=127\.0\.0\.1 "
            r'detail="Redis unavailable: [^"]+"$',
        )
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(4096)
    assert "Traceback" not in proc.stderr()


def _freeradius(base: Path, port: int) -> ManagedProcess:
    """FreeRADIUS with a minimal configuration: PAP for alice from a users file, and a
    Message-Authenticator in every reply (3.2.1 adds none by itself; pushauth-radius
    takes no upstream reply without one: BlastRADIUS)."""
    conf = base / "freeradius"
    conf.mkdir()
    (conf / "authorize").write_text('alice Cleartext-Password := "right-password"\n')
    sign = "update reply {\n Message-Authenticator := 0x00\n }"
    (conf / "radiusd.conf").write_text(
        f"""
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {conf}
raddbdir = {conf}
radacctdir = {conf}
name = freeradius
confdir = {conf}
modconfdir = {conf}
run_dir = {conf}
db_dir = {conf}
libdir = /usr/lib/freeradius
pidfile = {conf}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
 destination = stdout
 auth = yes
}}
security {{
 allow_core_dumps = no
 max_attributes = 200
 reject_delay = 0
 status_server = no
}}
client local {{
 ipaddr = 127.0.0.1
 secret = {UPSTREAM_SECRET}
}}
thread pool {{
 start_servers = 1
 max_servers = 2
 min_spare_servers = 1
 max_spare_servers = 2
}}
modules {{
 pap {{
 }}
 files {{
  filename = {conf}/authorize
 }}
}}
server default {{
 listen {{
  type = auth
  ipaddr = 127.0.0.1
  port = {port}
 }}
 authorize {{
  files
  pap
 }}
 authenticate {{
  pap
 }}
 post-auth {{
  {sign}
  Post-Auth-Type REJECT {{
   {sign}
  }}
 }}
}}
"""
    )
    return ManagedProcess(
        [FREERADIUS, "-f", "-l", "stdout", "-d", conf],
        log_dir=base / "logs",
        name="freeradius",
        ready=line_on_stdout(r"Ready to process requests"),
    ).start()


def test_upstream_mode_checks_the_password_at_a_real_radius_server(setup: Setup, tmp_path: Path) -> None:
    upstream_port, port = free_port(), free_port()
    freeradius = _freeradius(tmp_path, upstream_port)
    proc = _serve(setup, write_config(setup, port, upstream=upstream_port, name="upstream"), name="radius-up")
    try:
        right = radclient(port, 'User-Name = "alice"', 'User-Password = "right-password"')
        assert right.code == "Access-Challenge", right.text
        freeradius.wait_for_output(r"Login OK: \[alice\]")
        agent_ok(setup.home, "deny", only_pending(setup.home)["id"])  # end the push
        wrong = radclient(port, 'User-Name = "alice"', 'User-Password = "wrong-password"')
        assert wrong.code == "Access-Reject", wrong.text
        assert wrong.message == "Wrong user name or password."
        audit_line(proc, r"decision=reject outcome=first_factor_failed user=alice")
        assert pending(setup.home) == []  # no push for a wrong password
        freeradius.terminate()
        down = radclient(port, 'User-Name = "alice"', 'User-Password = "right-password"')
        assert down.code == "Access-Reject", down.text
        assert "cannot be checked right now" in down.message
    finally:
        proc.cleanup()
        freeradius.cleanup()


@pytest.mark.parametrize("choice", ["reject", "accept"])
def test_broker_unreachable_fails_closed_or_open_as_configured(
    servers: dict[str, tuple[ManagedProcess, int]], choice: str
) -> None:
    proc, port = servers[f"down-{choice}"]
    # Said at start already, not only at the first sign-in.
    proc.wait_for_output(
        r"at start: cannot reach the pushauth broker at .*; sign-ins are (rejected|accepted)", stream="stderr"
    )
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"')
    if choice == "reject":
        assert reply.code == "Access-Reject", reply.text
        assert "unreachable" in reply.message
        audit_line(proc, r"decision=reject outcome=broker_unavailable user=alice")
    else:
        assert reply.code == "Access-Accept", reply.text
        assert "without push approval" in reply.message
        audit_line(proc, r"decision=accept outcome=fail_open user=alice")


def test_a_user_whose_devices_were_all_removed_gets_no_fail_open(
    setup: Setup, servers: dict[str, tuple[ManagedProcess, int]]
) -> None:
    """`remove USER DEVICE` of a user's last device leaves the user's row in the store: with
    the broker unreachable and `when_unreachable = "accept"` that user was let in on the
    password alone (fail_open), where one never enrolled is not_enrolled."""
    store = UserStore(setup.store)
    try:
        store.ensure_user("dora")  # the row a user keeps after their last device is removed
    finally:
        store.close()
    proc, port = servers["down-accept"]
    reply = radclient(port, 'User-Name = "dora"', 'User-Password = "pw"')
    assert reply.code == "Access-Reject", reply.text
    assert "No authenticator is set up" in reply.message, reply.text
    audit_line(proc, r"decision=reject outcome=not_enrolled user=dora")


def test_a_refused_api_key_is_a_configuration_error_not_unreachable(
    servers: dict[str, tuple[ManagedProcess, int]],
) -> None:
    """The broker answered 401: not "unreachable", so `when_unreachable = "accept"` lets no
    one in, and the person is told to ask the administrator rather than to try again."""
    proc, port = servers["bad-key"]
    # Said at start, before any sign-in: the start looked healthy until every user failed.
    proc.wait_for_output(
        r"at start: the broker at \S+ refused the API key of broker\.api_key_file", stream="stderr"
    )
    reply = radclient(port, 'User-Name = "alice"', 'User-Password = "pw"')
    assert reply.code == "Access-Reject", reply.text
    assert "misconfigured on this server" in reply.message, reply.text
    proc.wait_for_output(r"broker.api_key_file: the broker refused the API key", stream="stderr")
    audit_line(proc, r"decision=reject outcome=config_error user=alice")


def test_check_config_and_bad_config_say_one_line(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = write_config(setup, 1812, name="check")
    assert cli.main(["--config", str(checked), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "client gw-local: 127.0.0.1/32" in out
    # The tests' shared secret is short: said (RFC 2865 asks for 16 bytes), not refused.
    assert f"warning: client gw-local's shared secret is {len(SECRET)} bytes" in out, out
    long_secret = checked.read_text().replace(f'"{SECRET}"', '"' + "s" * 32 + '"')
    checked.write_text(long_secret)
    assert cli.main(["--config", str(checked), "check-config"]) == 0
    assert "warning" not in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nurl = "ftp://x"\n')
    assert cli.main(["--config", str(bad), "check-config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broker.url" in err and "Traceback" not in err


def test_remove_revokes_a_device_at_the_broker_and_here_or_here_only_when_it_is_down(
    setup: Setup, server: tuple[ManagedProcess, int]
) -> None:
    proc, port = server
    lost_home, kept_home = setup.base / "agent-carol-lost", setup.base / "agent-carol-kept"
    enroll_device(setup, "carol", lost_home, "phone")
    enroll_device(setup, "carol", kept_home, "phone")
    config = write_config(setup, 1812, name="devices")
    listed = json.loads(
        command_ok(RADIUS, config, "devices", "CORP\\Carol", "--json")
    )  # mapped as the server maps it
    # Two devices of one name are told apart (the second "phone (2)"), as on the demo RP.
    assert [(d["name"], d["confirmed"], d["restored_from"]) for d in listed] == [
        ("phone", True, None),
        ("phone (2)", True, None),
    ]
    lost, kept = (str(d["credential_id"]) for d in listed)

    # Two devices named "phone" (a store from before a second one was kept as "phone (2)"):
    # refused with both ids, nothing changed.
    rename_device(setup.store, kept, "phone")
    stored = stored_devices(setup.store, "carol")
    ambiguous = command(RADIUS, config, "remove", "carol", "phone")
    line = assert_cli_error(ambiguous, contains='2 devices named "phone"')
    assert ambiguous.returncode == 1 and lost in line and kept in line
    assert stored_devices(setup.store, "carol") == stored

    (device,) = [d for d in stored if d.credential_id == lost]
    code = totp.code_at(device, int(time.time() // device.totp_period))  # the lost phone's code now
    out = command_ok(RADIUS, config, "remove", "carol", lost)
    assert f'removed "phone" ({lost}) of carol' in out and "revoked at the broker" in out, out
    assert [d.credential_id for d in stored_devices(setup.store, "carol")] == [kept]

    # The next sign-in pushes to the kept phone alone, and the lost phone's code is refused.
    challenge = start(port, "carol")
    only_pending(kept_home)
    told = agent(lost_home, "pending", "--json")  # the lost phone's agent is told, and gets no push
    assert told.returncode == 0 and json.loads(told.stdout) == [], told
    assert "no more sign-in requests" in told.stderr, told.stderr
    reply = follow_up(port, challenge, typed=code, user="carol")
    assert reply.code == "Access-Reject" and reply.message == "Wrong verification code.", reply.text
    audit_line(proc, r"decision=reject outcome=totp_bad user=carol")

    # The broker unreachable: refused, nothing changed.
    down = write_config(setup, 1812, name="devices-down", broker_url=f"http://127.0.0.1:{free_port()}")
    refused = command(RADIUS, down, "remove", "carol", "phone")
    line = assert_cli_error(refused, contains="nothing was removed: the broker cannot be reached")
    assert refused.returncode == 1 and "--here-only" in line
    assert [d.credential_id for d in stored_devices(setup.store, "carol")] == [kept]

    # --here-only: gone from the store at once; the output says the broker still lists it.
    out = command_ok(RADIUS, down, "remove", "carol", "phone", "--here-only")
    assert "the broker still lists it" in out, out
    assert f"pushauth-radius --config {down} remove carol {kept}" in out, out
    assert stored_devices(setup.store, "carol") == []

    # The broker back: its credential id revokes it there, and the device is told.
    out = command_ok(RADIUS, config, "remove", "carol", kept)
    assert f"{kept} was not in this host's store; now revoked at the broker" in out, out
    told = agent(kept_home, "pending", "--json")
    assert "no more sign-in requests" in told.stderr, told.stderr


def test_devices_and_remove_name_an_unknown_user_or_device(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(setup, 1812, name="devices-unknown")
    result = command(RADIUS, config, "devices", "nobody")
    assert result.returncode == 1
    assert_cli_error(result, contains="nobody is not enrolled here")
    stored = stored_devices(setup.store, "alice")
    result = command(RADIUS, config, "remove", "alice", "no such phone")
    assert result.returncode == 1
    assert_cli_error(result, contains='alice has no device "no such phone"')
    assert stored_devices(setup.store, "alice") == stored
    with pytest.raises(SystemExit) as exited:
        cli.main(["--config", str(config), "remove", "alice", "phone", "--here-only", "--everywhere"])
    assert exited.value.code == 2 and "unrecognized arguments: --everywhere" in capsys.readouterr().err


def _store_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = Database(path)
    try:
        return {
            table: [tuple(row) for row in db.conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
            for table in ("users", "enrollments", "devices")
        }
    finally:
        db.close()


@pytest.mark.parametrize("timeout", ["-5", "nan", "0", "inf", "soon"])
def test_enroll_checks_its_timeout_before_creating_anything(
    setup: Setup, timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(setup, 1812, name="enroll-timeout")
    before = _store_rows(setup.store)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--config", str(config), "enroll", "newcomer", "--timeout", timeout])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "--timeout" in err, err
    assert _store_rows(setup.store) == before


@pytest.mark.parametrize(
    ("account", "why"),
    [
        ("phone\udcff", "(found U+DCFF)"),  # bytes that are not UTF-8: "not valid JSON" at the broker
        ("a\x1b[2Jb", "(found U+001B (ESC))"),
        ("a" * 257, "1 to 256 characters, not 257"),
    ],
)
def test_enroll_checks_its_account_label_before_creating_anything(
    setup: Setup, account: str, why: str
) -> None:
    config = write_config(setup, 1812, name="enroll-account")
    before = _store_rows(setup.store)
    result = subprocess.run(
        [RADIUS, "--config", config, "enroll", "newcomer", "--account", account, "--timeout", "5"],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    line = assert_cli_error(result, contains="argument --account: ")
    assert why in line, line
    assert _store_rows(setup.store) == before


def test_a_failed_enroll_leaves_the_store_as_it_was(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(setup, 1812, name="enroll-fail")
    before = _store_rows(setup.store)
    # No device uses the link: the wait ends after the 1 s asked for.
    assert cli.main(["--config", str(config), "enroll", "latecomer", "--timeout", "1"]) == 1
    out, err = capsys.readouterr()
    assert "link: pushauth://enroll?" in out
    assert "did not enroll in time" in err and err.count("\n") == 1, err
    assert _store_rows(setup.store) == before
    # alice exists already: a failed second device for her keeps her and her device.
    assert cli.main(["--config", str(config), "enroll", "alice", "--timeout", "1"]) == 1
    assert _store_rows(setup.store) == before


def test_enroll_past_the_devices_cap_says_so_and_leaves_the_store_as_it_was(
    broker: BrokerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The RP allows one device per user (the broker's max_credentials): alice has hers, so a
    second enroll is refused before any link is printed, in one line that says what to do."""
    capped = make_setup(broker, tmp_path, ("--max-credentials", "1"))
    config = write_config(capped, 1812, name="enroll-capped")
    before = _store_rows(capped.store)
    assert cli.main(["--config", str(config), "enroll", "alice", "--timeout", "5"]) == 1
    out, err = capsys.readouterr()
    assert "pushauth://" not in out and err.count("\n") == 1, err
    assert "alice has as many devices as the service allows (1): remove one first" in err
    assert _store_rows(capped.store) == before


def test_a_device_refused_at_the_cap_while_enroll_waits_is_said_at_once(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """Two setups for alice started while she had room for one more (max_credentials 2):
    the first link's device gets in, the second's is refused by the broker; that enroll
    says so in one line and exits 1 then, not at its timeout (RP API 1.11)."""
    capped = make_setup(broker, tmp_path, ("--max-credentials", "2"))
    config = write_config(capped, free_port(), name="enroll-refused")
    first, second = (
        ManagedProcess(
            [RADIUS, "--config", config, "enroll", "alice", "--timeout", str(4 * DEADLINE)],
            log_dir=tmp_path,
            name=f"radius-enroll-{n}",
        ).start()
        for n in ("first", "second")
    )
    try:
        links = [p.wait_for_output(r"^link: (\S+)$").group(1) for p in (first, second)]
        agent_ok(tmp_path / "tablet", "enroll", links[0], "--name", "tablet")
        first.wait_for_output(r"Test push: type (\d+) in your authenticator")
        refused = agent(tmp_path / "laptop", "enroll", links[1], "--name", "laptop")
        assert refused.returncode == 1, refused
        assert second.wait(timeout=DEADLINE) == 1, second.describe()
        err = second.stderr()
        assert err.count("\n") == 1, err
        assert (
            "the device was refused: alice already has the most devices the service allows (2); "
            "remove one first"
        ) in err, err
        assert "did not enroll in time" not in err
    finally:
        first.cleanup()
        second.cleanup()


def test_a_user_name_that_is_not_utf8_is_a_bad_request(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    pkt = rp.AuthPacket(
        code=rp.AccessRequest, secret=SECRET.encode(), dict=dictionary.load(), message_authenticator=True
    )
    pkt["User-Name"] = b"\xff\xfe\xfd"
    pkt["User-Password"] = pkt.PwCrypt("pw")
    pkt["Calling-Station-Id"] = b"10.9.8.\xff"
    with _socket() as sock:
        sock.sendto(pkt.RequestPacket(), ("127.0.0.1", port))
        data, _ = sock.recvfrom(4096)
    reply = pkt.CreateReply(packet=data)
    assert reply.code == rp.AccessReject
    assert reply["Reply-Message"] == [core.MESSAGES[core.Outcome.BAD_REQUEST]]
    line = audit_line(proc, r"decision=reject outcome=bad_request .*station=10\.9\.8\.\\xff")
    assert "b'" not in line


def test_an_oversized_request_is_dropped_as_malformed(server: tuple[ManagedProcess, int]) -> None:
    proc, port = server
    pkt = rp.AuthPacket(
        code=rp.AccessRequest, secret=SECRET.encode(), dict=dictionary.load(), message_authenticator=True
    )
    pkt["User-Name"] = "oversized"
    pkt["User-Password"] = pkt.PwCrypt("pw")
    pkt["Proxy-State"] = [b"p" * 253] * 20
    data = pkt.RequestPacket()
    assert len(data) > 4096
    with _socket() as sock:
        sock.sendto(data, ("127.0.0.1", port))
        audit_line(proc, r"decision=drop outcome=malformed client=gw-local")
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(8192)
