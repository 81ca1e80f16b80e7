"""pushauth-agent against a real broker on a real Redis, driven through the RP HTTP API.

Every command is the real console script in a subprocess; `listen` gets its
answers through a stdin pipe, as a person would type them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from e2e_helpers import add_push_account, agent_env, on_a_terminal  # noqa: F401  (autouse: the vault passphrase for every agent run)
from shared_broker import broker, broker_on_own_redis, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from support import (
    AGENT,
    DEADLINE,
    BrokerProcess,
    ManagedProcess,
    allow_numberless_push,
    assert_cli_error,
    free_port,
    new_rp_sync,
    run_cli,
    wait_until,
)

from device_agent.passphrase import NEW_PASSPHRASE_ENV
from device_agent.store import LOCK_FILE, AccountStore
from device_agent.timeouts import CONNECT_TIMEOUT_ENV
from protocol import signing
from protocol.purpose import setup_test_context


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RP:
    """The RP side of the HTTP API (docs/http-api.md), as plain HTTP calls."""

    def __init__(self, broker: BrokerProcess, info: dict[str, Any]) -> None:
        self.base = broker.http_url
        self.id = info["id"]
        self.key = info["api_key"]
        self.name = info["name"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                data = response.read()
                return response.status, json.loads(data) if data else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self.call(method, path, body)
        assert 200 <= status < 300, (status, data)
        return data

    def enrollment_uri(self, user: str = "alice", account: str = "alice@example.com") -> str:
        return self.ok("POST", "/v1/enrollments", {"user": user, "account": account})["uri"]

    def challenge(self, user: str = "alice", **body: Any) -> dict[str, Any]:
        body.setdefault("context", {"app": "Webmail", "ip": "203.0.113.5", "browser": "Firefox on Linux"})
        return self.ok("POST", "/v1/challenges", {"user": user, **body})

    def result(self, ch: dict[str, Any]) -> dict[str, Any]:
        return self.ok("GET", f"/v1/challenges/{ch['id']}")

    def credentials(self, user: str = "alice") -> list[dict[str, Any]]:
        return self.ok("GET", f"/v1/users/{user}/credentials")["credentials"]


@pytest.fixture
def rp_api(broker: BrokerProcess, rp: dict[str, Any]) -> RP:
    return RP(broker, rp)


def agent(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli([AGENT, "--home", str(home), *args], timeout=60)


def enroll(home: Path, rp_api: RP, user: str = "alice", account: str = "alice@example.com") -> None:
    result = agent(home, "enroll", rp_api.enrollment_uri(user, account), "--name", f"{user}-laptop")
    assert result.returncode == 0, result.stderr
    for cred in rp_api.credentials(user):  # as the RP does after the test push
        if not cred["confirmed"]:
            rp_api.ok("POST", f"/v1/credentials/{cred['id']}/confirm")


class Listen:
    """`pushauth-agent listen` with stdin on a pipe and stdout in a file."""

    def __init__(self, home: Path, log_dir: Path, *args: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / "stdout"
        self.err_path = log_dir / "stderr"
        self.seen = 0  # how far `wait_for` has read
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [AGENT, "--home", str(home), "listen", *args], stdin=subprocess.PIPE, stdout=out, stderr=err
            )

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait for `text` after everything matched before (output is in order)."""

        def found() -> bool:
            at = self.output().find(text, self.seen)
            if at < 0:
                return False
            self.seen = at + len(text)
            return True

        wait_until(found, timeout=timeout, message=lambda: f"{text!r} in\n{self.output()}{self.errors()}")

    def errors(self) -> str:
        return self.err_path.read_text()

    def sockets_to(self, port: int) -> list[Any]:
        """Its open TCP connections to `port` (the broker's)."""
        conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        return [c for c in conns if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Callable[..., Listen]]:
    started: list[Listen] = []

    def start(home: Path, *args: str) -> Listen:
        proc = Listen(home, tmp_path / f"listen-{len(started)}", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            print(f"listen output:\n{proc.output()}\n{proc.errors()}")
        proc.close()


def enrolled_listening(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen], *args: str
) -> tuple[Path, Listen]:
    """An agent home with alice enrolled, and its `listen ARGS` connected to the broker."""
    home = tmp_path / "agent"
    enroll(home, rp_api)
    agent_proc = listener(home, *args)
    agent_proc.wait_for("Connected to")
    return home, agent_proc


# -- enroll ---------------------------------------------------------------------------


def test_enroll_registers_this_devices_key_and_the_token_works_once(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    uri = rp_api.enrollment_uri()
    result = agent(home, "enroll", uri, "--name", "work laptop")
    assert result.returncode == 0, result.stderr
    assert 'Added "alice@example.com"' in result.stdout
    store = AccountStore(home)
    (account,) = store.load()
    (cred,) = rp_api.credentials()
    assert cred["id"] == account.cid
    assert cred["name"] == "work laptop"
    assert unb64(cred["public_key"]) == signing.public_key(store.seed(account.cid))
    assert (account.rp, account.user, account.device_name) == (rp_api.id, "alice", "work laptop")

    again = agent(home, "enroll", uri, "--again")  # the same account: asked first without it
    assert_cli_error(again, contains="already used, withdrawn by the service or expired")
    assert again.returncode == 1
    assert len(store.load()) == 1


def test_an_enrollment_this_device_cannot_save_is_taken_back_at_the_broker(
    tmp_path: Path, rp_api: RP
) -> None:
    # It used to leave the credential at the service with its key lost (exit 1, "remove
    # device ... on the security page"): a device listed there that can never answer.
    home = tmp_path / "agent"
    enroll(home, rp_api)  # a vault that opens, with one account
    lock = home / LOCK_FILE
    lock.unlink()
    lock.mkdir()  # reads work, every write fails (as root too)
    result = agent(home, "enroll", rp_api.enrollment_uri("bob", "bob@example.com"))
    assert_cli_error(result, contains="the account could not be saved on this device")
    assert "the key just registered was revoked at once" in result.stderr
    assert result.returncode == 2
    assert rp_api.credentials("bob") == []  # taken back: nothing left at the service
    assert [a.name for a in AccountStore(home).load()] == ["alice@example.com"]
    assert len(rp_api.credentials("alice")) == 1  # the other account is untouched


def test_enrolling_the_same_account_again_is_asked_then_gets_a_unique_name(
    tmp_path: Path, rp_api: RP
) -> None:
    """A second link for an account this device has is seldom meant (the web app asks
    too): off a terminal it needs --again, on one it is asked; a "no" or a refusal
    sends nothing, so the link still works. Said yes to, it gets a unique name."""
    home = tmp_path / "agent"
    enroll(home, rp_api)
    link = rp_api.enrollment_uri()
    refused = agent(home, "enroll", link, "--name", "alice-laptop")
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.strip() == (
        'pushauth-agent: This device already has "alice@example.com" for Test RP (user alice): '
        "add --again to add it as a second sign-in method; nothing was sent"
    )
    code, said = on_a_terminal(home, ["enroll", link], [("[y/N]", "n")])
    assert code == 0 and "Nothing was added; the link was not used." in said, said
    assert "Add it again as a second sign-in method? The service will list two devices." in said
    assert len(rp_api.credentials("alice")) == 1  # nothing reached the service
    code, said = on_a_terminal(home, ["enroll", link, "--name", "alice-laptop"], [("[y/N]", "y")])
    assert code == 0 and 'Added "alice@example.com (2)"' in said, said
    listed = json.loads(agent(home, "accounts", "--json").stdout)
    assert [a["name"] for a in listed] == ["alice@example.com", "alice@example.com (2)"]
    assert len({a["credential_id"] for a in listed}) == 2
    # In a script: --again, asked nothing. A new label is no twin: added without a word.
    assert agent(home, "enroll", rp_api.enrollment_uri(), "--again").returncode == 0
    assert agent(home, "enroll", rp_api.enrollment_uri(account="alice@work.example")).returncode == 0
    listed = json.loads(agent(home, "accounts", "--json").stdout)
    assert len(listed) == 4 and len(rp_api.credentials("alice")) == 4


# -- pending / approve / deny -------------------------------------------------------------


def test_a_prefix_too_short_to_pick_a_request_is_refused_as_such(tmp_path: Path, rp_api: RP) -> None:
    """`approve ch_`: a prefix under 4 characters picks nothing (every id starts so); it is
    refused as too short, exit 2, nothing sent, rather than "no pending request ch_ (...
    never existed)" with exit 1 while one is waiting (seen in a trial)."""
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge(context={"app": "Payroll"})
    for args in (
        ["approve", "ch_", "--number", ch["number"]],
        ["deny", "ch"],
        ["recovery", "confirm", "rn_"],
    ):
        result = agent(home, *args)
        assert result.returncode == 2, result.stderr + result.stdout
        assert "is too short to pick" in result.stderr and "at least 4 characters" in result.stderr
    assert rp_api.result(ch)["status"] == "pending"
    assert agent(home, "approve", ch["id"], "--number", ch["number"]).returncode == 0


def test_pending_then_approve_with_the_right_number(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    # Eight digits: a two-digit number would turn up by chance in the printed clock time.
    # The RP's own fresh value (protocol v2): the device must sign over it.
    rp_nonce = os.urandom(32)
    ch = rp_api.challenge(
        context={"app": "Payroll", "location": "Berlin, DE"}, digits=8, rp_nonce=b64(rp_nonce)
    )
    assert unb64(ch["rp_nonce"]) == rp_nonce

    text = agent(home, "pending")
    assert text.returncode == 0, text.stderr
    for shown in (ch["id"], "Payroll", "Berlin, DE", "alice@example.com", "expires in"):
        assert shown in text.stdout
    assert ch["number"] not in text.stdout.replace(ch["id"], "")  # the device never learns it

    (listed,) = json.loads(agent(home, "pending", "--json").stdout)
    assert listed["id"] == ch["id"]
    assert listed["context"] == {"app": "Payroll", "location": "Berlin, DE"}
    assert 0 < listed["seconds_left"] <= 60
    assert "number" not in listed  # the device never learns it

    # A unique prefix will do; the number as the page groups it too ("1234 5678").
    result = agent(home, "approve", ch["id"][:8], "--number", f"{ch['number'][:4]} {ch['number'][4:]}")
    assert result.returncode == 0, result.stderr
    assert f"Request {ch['id']}: approved" in result.stdout
    final = rp_api.result(ch)
    assert final["status"] == "approved"
    # The signed answer verifies with the key the agent holds, over what was shown.
    answer = final["answer"]
    seed = AccountStore(home).seed(answer["credential_id"])
    message = signing.answer_bytes(
        rp=rp_api.id,
        ch=ch["id"],
        nonce=unb64(final["nonce"]),
        rp_nonce=rp_nonce,
        cid=answer["credential_id"],
        decision="approve",
        number=ch["number"],
        ts=answer["ts"],
        ctx_hash=signing.context_hash(ch["context"]),
    )
    signing.verify(signing.public_key(seed), message, unb64(answer["signature"]))

    late = agent(home, "approve", ch["id"], "--number", ch["number"])
    assert_cli_error(late, contains="no pending sign-in request")
    assert late.returncode == 1
    assert json.loads(agent(home, "pending", "--json").stdout) == []


def test_a_wrong_number_is_recorded_as_a_mismatch(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge()
    wrong = "10" if ch["number"] != "10" else "11"
    result = agent(home, "approve", ch["id"], "--number", wrong)
    assert result.returncode == 0, result.stderr
    assert "number_mismatch" in result.stdout
    assert "did not match, so the sign-in was denied" in result.stdout
    assert rp_api.result(ch)["status"] == "number_mismatch"
    # A setup's test notification (docs/protocol.md 15.1) is no sign-in: said so.
    setup = rp_api.challenge(context=setup_test_context({"app": "Webmail"}))
    wrong = "10" if setup["number"] != "10" else "11"
    result = agent(home, "approve", setup["id"], "--number", wrong)
    assert "number_mismatch: the number did not match, so this device is not added yet" in result.stdout
    # ... and what to do about it: the account stays here, the page sends another test.
    assert "send a new test notification and type the number it shows" in result.stdout


def test_a_number_of_the_wrong_length_is_refused_before_sending(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge()
    result = agent(home, "approve", ch["id"], "--number", ch["number"] + "0")
    assert_cli_error(result, contains="2-digit")
    assert result.returncode == 2
    assert rp_api.result(ch)["status"] == "pending"


def test_a_request_without_a_number_is_approved_without_one(
    tmp_path: Path, broker: BrokerProcess, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    """A push without number matching (the RP's policy allows it; a RADIUS push-only
    client asks for it): `pending` says there is no number to compare, `approve ID`
    takes no --number and signs the empty one, and the broker records approved."""
    asyncio.run(allow_numberless_push(broker, rp_api.id))  # before the broker reads the policy
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge(number_matching=False)
    assert (ch["number"], ch["number_matching"]) == (None, False)
    text = agent(home, "pending").stdout
    assert "none to compare: approve only a sign-in you started just now" in text, text
    assert "(no --number where it says" in text
    (listed,) = json.loads(agent(home, "pending", "--json").stdout)
    assert listed["number_matching"] is False
    typed = agent(home, "approve", ch["id"], "--number", "12")  # nothing to type: refused, not sent
    assert_cli_error(typed, contains="has no number to type")
    assert typed.returncode == 2 and rp_api.result(ch)["status"] == "pending"
    result = agent(home, "approve", ch["id"])
    assert result.returncode == 0, result.stderr
    assert f"Request {ch['id']}: approved: the sign-in is allowed." in result.stdout
    final = rp_api.result(ch)
    assert (final["status"], final["answer"]["number"]) == ("approved", "")
    # A request with number matching still needs its number.
    normal = rp_api.challenge()
    assert_cli_error(agent(home, "approve", normal["id"]), contains="expects the 2-digit number")
    assert rp_api.result(normal)["status"] == "pending"
    # listen asks approve / deny / report, with no number.
    agent_proc = listener(home)
    agent_proc.wait_for(f"Sign-in request {normal['id']}")
    agent_proc.type(normal["number"])
    agent_proc.wait_for(f"Request {normal['id']}: approved")  # before the next one supersedes it
    again = rp_api.challenge(number_matching=False, context={"app": "VPN"})
    agent_proc.wait_for("This request has no number to compare: approve only a sign-in you started just now.")
    agent_proc.type("12")
    agent_proc.wait_for("That is not a, n or r.")
    agent_proc.type("a")
    agent_proc.wait_for(f"Request {again['id']}: approved")
    assert rp_api.result(again)["status"] == "approved"


def test_deny_and_report(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge()
    result = agent(home, "deny", ch["id"])
    assert result.returncode == 0, result.stderr
    assert "denied" in result.stdout
    assert rp_api.result(ch)["status"] == "denied"

    ch = rp_api.challenge()
    result = agent(home, "deny", ch["id"], "--fraud")
    assert result.returncode == 0, result.stderr
    assert "reported" in result.stdout
    # ... with what that changed and what to do next.
    said = " ".join(result.stdout.split())
    assert "Push requests for this account are paused until the service lifts the pause" in said
    assert "change it (sign in with a verification code: pushauth-agent code)" in said
    assert rp_api.result(ch)["status"] == "reported"


def test_unknown_request_id(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    result = agent(home, "deny", "no-such-request")
    assert_cli_error(result, contains="no pending sign-in request no-such-request")
    assert result.returncode == 1


# -- remove -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["approve", "", "--number", "12"], "an empty id is not a request id"),
        (["deny", "ch_\udcff"], "'ch_\\udcff' is not a request id"),  # $'ch_\xff' from a shell
        (["deny", "ch_" + "x" * 100_000], "'ch_" + "x" * 37 + "... (100003 characters)' is not a request id"),
        (["recovery", "confirm", "rn_\n"], "'rn_\\x0a' is not a recovery question id"),
    ],
)
def test_a_malformed_id_is_refused_before_any_broker_is_asked(
    tmp_path: Path, rp_api: RP, args: list[str], shown: str
) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge()
    result = agent(home, *args)
    line = assert_cli_error(result, contains=shown)
    assert "nothing was sent" in line and len(line) < 200
    assert result.returncode == 2
    assert rp_api.result(ch)["status"] == "pending"


def test_remove_revokes_at_the_broker_then_forgets(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    result = agent(home, "remove", "alice@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Removed" in result.stdout
    assert AccountStore(home).load() == []
    assert rp_api.credentials() == []
    status, problem = rp_api.call("POST", "/v1/challenges", {"user": "alice"})
    assert status == 409
    assert problem["code"] == "no_devices"


def test_an_account_removed_by_the_rp_while_offline_is_marked_on_next_contact(
    tmp_path: Path, rp_api: RP
) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    enroll(home, rp_api, "bob", "bob@example.com")
    alice = AccountStore(home).find("alice@example.com")
    rp_api.ok("DELETE", f"/v1/credentials/{alice.cid}")
    result = agent(home, "pending")
    assert result.returncode == 0, result.stderr
    assert '"alice@example.com"' in result.stderr
    assert "no more sign-in requests" in result.stderr
    (listed, bob) = json.loads(agent(home, "accounts", "--json").stdout)
    assert (listed["name"], listed["status"]) == ("alice@example.com", "revoked")
    assert bob["status"] == "active"


# -- listen -------------------------------------------------------------------------------


def test_listen_asks_one_request_after_another_and_answers(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    _, agent_proc = enrolled_listening(tmp_path, rp_api, listener)

    first = rp_api.challenge(context={"app": "Mail", "ip": "198.51.100.7"})
    second = rp_api.challenge(context={"app": "CRM"}, supersede=False)  # both stay live
    agent_proc.wait_for(f"Sign-in request {first['id']}")
    agent_proc.wait_for("198.51.100.7")
    agent_proc.wait_for("expires in:")
    agent_proc.wait_for("2-digit number")
    agent_proc.wait_for("comes next")

    agent_proc.type("7")  # too short: asked again, nothing sent
    agent_proc.wait_for("not a 2-digit number")
    assert rp_api.result(first)["status"] == "pending"
    # Typed as a page may group it, with a space (it signs the digits: approved below).
    agent_proc.type(f"{first['number'][0]} {first['number'][1]}")
    agent_proc.wait_for(f"Sign-in request {second['id']}")
    agent_proc.type("n")
    wait_until(lambda: rp_api.result(second)["status"] == "denied", message="the deny to be recorded")
    assert rp_api.result(first)["status"] == "approved"
    output = agent_proc.output()
    assert f"Request {first['id']}: approved" in output
    wait_until(lambda: f"Request {second['id']}: denied" in agent_proc.output(), message="denied printed")

    third = rp_api.challenge(context={"app": "HR"})
    agent_proc.wait_for(f"Sign-in request {third['id']}")
    # "r" alone reports nothing: it asks first, and anything but "y" goes back.
    agent_proc.type("r")
    agent_proc.wait_for(
        "Report this sign-in as not you? This denies it and pauses push requests for this account [y/N]"
    )
    assert rp_api.result(third)["status"] == "pending"
    agent_proc.type("")
    agent_proc.wait_for("Not reported.")
    assert rp_api.result(third)["status"] == "pending"
    agent_proc.type("r")
    agent_proc.type("y")
    agent_proc.wait_for(f"Request {third['id']}: reported")
    assert rp_api.result(third)["status"] == "reported"

    agent_proc.proc.stdin.close()  # type: ignore[union-attr]
    assert agent_proc.proc.wait(15) == 0
    assert "Stopped." in agent_proc.output()
    assert "Traceback" not in agent_proc.errors()


def test_listen_drops_a_request_answered_elsewhere_and_hears_of_rp_removal(
    tmp_path: Path, broker: BrokerProcess, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    home, agent_proc = enrolled_listening(tmp_path, rp_api, listener)
    ch = rp_api.challenge()
    agent_proc.wait_for(f"Sign-in request {ch['id']}")

    # Answered by another agent process (on the same home: another connection).
    result = agent(home, "approve", ch["id"], "--number", ch["number"])
    assert result.returncode == 0, result.stderr
    # The broker's `cancel.by` names this home's own credential: not "another device".
    agent_proc.wait_for(
        f"Request {ch['id']} was answered on this device (by approve/deny, or another listen or ui window)"
    )
    agent_proc.wait_for("No answer is needed")
    agent_proc.type(ch["number"])
    agent_proc.wait_for("No sign-in request is waiting")

    (cred,) = rp_api.credentials()
    rp_api.ok("DELETE", f"/v1/credentials/{cred['id']}")
    agent_proc.wait_for(f'Account "alice@example.com" ({rp_api.name}) was removed by the service')
    (account,) = AccountStore(home).load()
    assert account.status == "revoked"
    # Nothing left there: the link is closed, not kept open (nor reopened) for nothing...
    agent_proc.wait_for(f"No accounts left at {broker.ws_url}: disconnected.")
    wait_until(
        lambda: not agent_proc.sockets_to(broker.port), message="the agent's socket to the broker closed"
    )
    # ... until an account there is added while listening.
    enroll(home, rp_api, "bob", "bob@example.com")
    agent_proc.wait_for("Connected to")
    assert "Reconnecting" not in agent_proc.output()
    wait_until(lambda: len(agent_proc.sockets_to(broker.port)) == 1, message="one link to the broker")
    assert agent_proc.output().count("No accounts left") == 1

    agent_proc.proc.send_signal(signal.SIGTERM)
    assert agent_proc.proc.wait(15) == 0


def test_listen_output_only_mode(tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]) -> None:
    home, agent_proc = enrolled_listening(tmp_path, rp_api, listener, "--no-input")
    agent_proc.proc.stdin.close()  # type: ignore[union-attr]  # input is not read: it keeps going
    ch = rp_api.challenge()
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.wait_for(f"pushauth-agent approve {ch['id']}")
    assert agent(home, "deny", ch["id"]).returncode == 0
    # The broker's `cancel.by` names this home's own credential: not "another device".
    agent_proc.wait_for(
        f"Request {ch['id']} was answered on this device (by approve/deny, or another listen or ui window)"
    )
    agent_proc.proc.send_signal(signal.SIGINT)
    assert agent_proc.proc.wait(15) == 0
    assert "\a" not in agent_proc.output()  # a file, not a terminal: no bell in it


def test_listen_shows_requests_that_were_pending_before_it_started(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    ch = rp_api.challenge()
    agent_proc = listener(home)
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.type(ch["number"])
    agent_proc.wait_for(f"Request {ch['id']}: approved")


def test_listen_reconnects_after_a_broker_restart(
    tmp_path: Path, own_broker: BrokerProcess, listener: Callable[..., Listen]
) -> None:
    # Its own broker: this test kills it.
    rp_api = RP(own_broker, own_broker.add_rp("Example RP"))
    _, agent_proc = enrolled_listening(tmp_path, rp_api, listener)
    own_broker.kill(signal.SIGKILL)
    agent_proc.wait_for("Reconnecting to")
    own_broker.start()
    agent_proc.wait_for("Connected to", timeout=30)
    ch = rp_api.challenge()
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.type(ch["number"])
    agent_proc.wait_for(f"Request {ch['id']}: approved")


def test_listen_picks_up_an_account_enrolled_meanwhile(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "agent"
    agent_proc = listener(home)
    agent_proc.wait_for("No active accounts yet")
    enroll(home, rp_api, "carol", "carol@example.com")
    agent_proc.wait_for("Connected to")
    ch = rp_api.challenge("carol")
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.wait_for("carol@example.com")
    agent_proc.type("n")
    agent_proc.wait_for(f"Request {ch['id']}: denied")


def test_listen_says_when_a_request_expires(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    _, agent_proc = enrolled_listening(tmp_path, rp_api, listener)
    ch = rp_api.challenge(ttl=10)  # the shortest the API allows
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.wait_for(f"Request {ch['id']} expired", timeout=30)
    agent_proc.type(ch["number"])  # too late: nothing is asked any more
    agent_proc.wait_for("No sign-in request is waiting")
    assert rp_api.result(ch)["status"] == "expired"


def test_remove_while_listening(
    tmp_path: Path, broker: BrokerProcess, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    enroll(home, rp_api, "bob", "bob@example.com")
    agent_proc = listener(home)
    agent_proc.wait_for("Connected to")
    result = agent(home, "remove", "alice@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    assert rp_api.credentials() == []
    # The listening connection still serves the other account.
    ch = rp_api.challenge("bob")
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    agent_proc.type(ch["number"])
    agent_proc.wait_for(f"Request {ch['id']}: approved")
    assert [a.name for a in AccountStore(home).load()] == ["bob@example.com"]
    # The last one removed: the link is closed, and said so once.
    assert agent(home, "remove", "bob@example.com", "--yes").returncode == 0
    agent_proc.wait_for("No accounts left at ")
    wait_until(
        lambda: not agent_proc.sockets_to(broker.port), message="the agent's socket to the broker closed"
    )
    assert agent_proc.output().count("No accounts left") == 1


def test_an_answer_typed_while_the_broker_is_down_goes_out_once_it_is_back(
    tmp_path: Path, own_broker: BrokerProcess, listener: Callable[..., Listen]
) -> None:
    """Typed between connections (a lift, a train, a broker restarting): the answer waits
    for the next connection and goes out on it (before: "the answer was not sent: not
    connected", and the same request was asked again after reconnecting)."""
    # Its own broker: this test kills it.
    rp_api = RP(own_broker, own_broker.add_rp("Example RP"))
    _, agent_proc = enrolled_listening(tmp_path, rp_api, listener)
    ch = rp_api.challenge(ttl=120)
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    own_broker.kill(signal.SIGKILL)
    agent_proc.wait_for("Reconnecting to")
    agent_proc.type(ch["number"])
    agent_proc.wait_for(f"Request {ch['id']}: not connected to {own_broker.ws_url} now; the answer (approve)")
    own_broker.start()  # the challenge waited in Redis meanwhile
    agent_proc.wait_for("Connected to", timeout=30)
    agent_proc.wait_for(f"Request {ch['id']}: answer sent (approve).")
    agent_proc.wait_for(f"Request {ch['id']}: approved")
    assert agent_proc.output().count(f"Sign-in request {ch['id']}") == 1  # not asked again
    assert rp_api.result(ch)["status"] == "approved"


def test_listen_stops_with_a_clear_message_when_passwd_changes_the_vault_meanwhile(
    tmp_path: Path, rp_api: RP, listener: Callable[..., Listen]
) -> None:
    # It used to stay up unable to sign anything: each answer "was not sent: wrong
    # passphrase for this vault (or its header was altered)", and on a terminal it asked
    # for the passphrase from inside the event loop, which hung it for good.
    home, agent_proc = enrolled_listening(tmp_path, rp_api, listener)
    ch = rp_api.challenge(ttl=120)
    agent_proc.wait_for(f"Sign-in request {ch['id']}")
    changed = run_cli(
        [AGENT, "--home", home, "passwd"], env={NEW_PASSPHRASE_ENV: "violet kettle marches upstream"}
    )
    assert changed.returncode == 0, changed.stderr
    assert agent_proc.proc.wait(DEADLINE) == 2
    agent_proc.wait_for("Stopped.")
    err = agent_proc.errors()
    assert "Traceback" not in err
    assert "the vault's passphrase was changed by another command (pushauth-agent passwd)" in err, err
    assert "start it again" in err and "wrong passphrase" not in agent_proc.output() + err
    assert rp_api.result(ch)["status"] == "pending"  # nothing was answered for the user


def test_pending_reports_the_brokers_it_reached_and_the_ones_it_did_not(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    enroll(home, rp_api)
    dead = f"ws://127.0.0.1:{free_port()}/v1/device"
    add_push_account(home, "elsewhere", dead, rp="rp2", rp_name="Elsewhere")
    # Nothing waiting yet: said only of the broker that answered, never "nothing waits".
    result = agent(home, "pending")
    assert result.returncode == 3
    assert "No sign-in requests are waiting." not in result.stdout
    assert f"No sign-in requests are waiting at the 1 of 2 brokers that answered; not known for {dead}." in (
        result.stdout
    )
    (item,) = json.loads(agent(home, "pending", "--json").stdout)
    assert item["type"] == "unreachable" and item["broker"] == dead
    assert item["error"].startswith(f"cannot reach the broker at {dead}: connection refused")
    ch = rp_api.challenge()
    result = agent(home, "pending", "--json")
    assert result.returncode == 3
    listed = json.loads(result.stdout)
    assert [(r["type"], r.get("id"), r.get("broker")) for r in listed] == [
        ("sign_in", ch["id"], None),
        ("unreachable", None, dead),
    ]
    assert f"cannot reach the broker at {dead}" in result.stderr
    result = agent(home, "pending")
    assert result.returncode == 3
    assert ch["id"] in result.stdout
    assert f"Not asked (could not be reached): {dead}." in result.stdout
    # approve still finds the request on the broker that answers.
    result = agent(home, "approve", ch["id"], "--number", ch["number"])
    assert result.returncode == 0, result.stderr
    assert rp_api.result(ch)["status"] == "approved"


def test_an_answer_to_an_id_no_broker_could_be_asked_about_says_so_not_that_it_never_existed(
    tmp_path: Path, rp_api: RP
) -> None:
    # With its only broker down, approve/deny/recovery cannot know whether the id
    # exists: they must say the broker could not be asked, not "answered, expired, or
    # never existed", which sends the user hunting for a typo.
    home = tmp_path / "agent"
    dead = f"ws://127.0.0.1:{free_port()}/v1/device"
    add_push_account(home, "elsewhere", dead, rp="rp2", rp_name="Elsewhere")
    for args, what in [
        (["approve", "ch_abcdef", "--number", "12"], "sign-in request ch_abcdef"),
        (["deny", "ch_abcdef"], "sign-in request ch_abcdef"),
        (["recovery", "confirm", "rn_abcdef"], "recovery question rn_abcdef"),
    ]:
        result = agent(home, *args)
        line = assert_cli_error(result)
        assert result.returncode == 3
        assert line.startswith(f"pushauth-agent: cannot reach the broker at {dead}: connection refused")
        assert f"{what} could not be looked up; nothing was sent" in line and "never existed" not in line
    # With one broker answering and one not: not there, maybe at the other.
    enroll(home, rp_api)
    result = agent(home, "deny", "ch_abcdef")
    line = assert_cli_error(result)
    assert result.returncode == 3 and "never existed" not in line
    assert "sign-in request ch_abcdef is not at the brokers that answered, and cannot reach" in line
    assert "it may be waiting there; nothing was sent" in line


# -- several brokers, one of them hung ------------------------------------------------


@pytest.fixture(scope="module")
def broker_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A second broker on its own Redis (the shared one is "A"), for a test to hang."""
    yield from broker_on_own_redis(tmp_path_factory, "b")


@contextlib.contextmanager
def hung(node: BrokerProcess) -> Iterator[None]:
    """`node` stopped (SIGSTOP): its port still accepts TCP connections, nothing answers."""
    os.kill(node.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.pid, signal.SIGCONT)


def test_a_hung_broker_does_not_hold_up_an_answer_at_another_and_pending_names_it(
    tmp_path: Path, rp_api: RP, broker_b: BrokerProcess
) -> None:
    home = tmp_path / "agent"
    forum = RP(broker_b, new_rp_sync(broker_b, "Forum"))
    enroll(home, rp_api)
    enroll(home, forum)
    ch = rp_api.challenge()
    with hung(broker_b):
        # However long the agent would wait for B, the request found at A is answered at
        # once (it waited for B's connect timeout first: 10 s of the user's sign-in).
        slow_b = {CONNECT_TIMEOUT_ENV: "600"}
        result = run_cli([AGENT, "--home", home, "approve", ch["id"], "--number", ch["number"]], env=slow_b)
        assert result.returncode == 0, result.stderr
        assert rp_api.result(ch)["status"] == "approved"
        # pending lists what A has as soon as A answered, while it still waits for B (it
        # printed nothing until B's connect timeout had passed).
        ch = rp_api.challenge()
        listing = ManagedProcess(
            [AGENT, "--home", home, "pending"], log_dir=tmp_path / "pending", env=slow_b
        ).start()
        try:
            listing.wait_for_output(f"Sign-in request {ch['id']}")
            assert listing.running, listing.describe()  # B is still waited for
        finally:
            listing.terminate()
        # pending waits for B as long as the connect timeout, then names it and why.
        result = run_cli([AGENT, "--home", home, "pending", "--json"], env={CONNECT_TIMEOUT_ENV: "0.5"})
        assert result.returncode == 3, result.stderr
        why = f"cannot reach the broker at {broker_b.ws_url}: it did not answer within 0.5 s"
        sign_in, item = json.loads(result.stdout)
        assert sign_in["id"] == ch["id"]
        assert item["type"] == "unreachable" and item["broker"] == broker_b.ws_url
        assert item["error"].startswith(why), item
        # So does a backup to it (HTTP), and the other one-shot commands work offline.
        to_b = ["backup", "--to", "broker", "--broker", broker_b.ws_url]
        result = run_cli([AGENT, "--home", home, *to_b], env={CONNECT_TIMEOUT_ENV: "0.5"})
        assert result.returncode == 3 and why in result.stderr, result.stderr
        assert "alice@example.com" in run_cli([AGENT, "--home", home, "accounts"]).stdout
    result = run_cli([AGENT, "--home", home, "pending", "--json"], env={CONNECT_TIMEOUT_ENV: "nope"})
    assert_cli_error(result, contains=f"{CONNECT_TIMEOUT_ENV} must be a number of seconds")


def test_listen_serves_the_other_brokers_while_one_is_hung_and_says_since_when(
    tmp_path: Path,
    rp_api: RP,
    broker_b: BrokerProcess,
    listener: Callable[..., Listen],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "agent"
    forum = RP(broker_b, new_rp_sync(broker_b, "Forum"))
    enroll(home, rp_api)
    enroll(home, forum)
    # Not 0.5 s: the timeout also holds A's keepalive pongs, pinged as often while the
    # test runs; a loaded machine must not make A look hung.
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, "2")
    with hung(broker_b):
        proc = listener(home)
        b = broker_b.ws_url
        said = lambda text: lambda: text in proc.output()  # noqa: E731  (the links run side by side)
        wait_until(said(f"Connected to {rp_api.base.replace('http', 'ws')}/v1/device"), message="A connects")
        wait_until(said(f"cannot reach the broker at {b}: it did not answer within 2 s"), message="B fails")
        wait_until(said(f"Reconnecting to {b} in "), message="B's retry")
        retry = proc.output().split(f"Reconnecting to {b} in ")[1].splitlines()[0]
        assert " s (Forum: not reachable since " in retry, retry
        since = retry.split("not reachable since ")[1].rstrip(").")
        ch = rp_api.challenge()  # meanwhile, a sign-in at A is asked and answered
        proc.wait_for(ch["id"])
        proc.type(ch["number"])
        proc.wait_for(f"Request {ch['id']}: approved")
    proc.wait_for(f"Connected to {b} (1 account; not reachable since {since}).")
    ch = forum.challenge()
    proc.wait_for(ch["id"])
    proc.type(ch["number"])
    proc.wait_for(f"Request {ch['id']}: approved")
    # B hangs while connected: the keepalive ping's pong is waited for as long as the
    # connect timeout (it was 20 s, after up to 20 s between pings), then B is retried.
    with hung(broker_b):
        proc.wait_for(f"{b}: the broker stopped answering (no reply to a keepalive ping within 2 s)")
        proc.wait_for(f"Reconnecting to {b} in ")


@pytest.mark.parametrize("args", [[], ["--no-bell"]], ids=["bell", "no-bell"])
def test_listen_on_a_terminal_rings_the_bell_for_a_new_request(
    tmp_path: Path, rp_api: RP, args: list[str]
) -> None:
    """A person in their browser must hear of the request the sign-in page waits on: on
    a terminal, listen rings its bell (BEL) once per new request; --no-bell, never. (In a
    file or a pipe it never does: test_listen_output_only_mode's output has none.)"""
    home = tmp_path / "agent"
    enroll(home, rp_api)
    rp_api.challenge()  # waiting when listen connects: shown, and rung for, at once
    code, said = on_a_terminal(home, ["listen", *args], [("-digit number shown on", signal.SIGINT)])
    assert code in (0, 130), said
    assert said.count("\a") == (0 if args else 1), said
