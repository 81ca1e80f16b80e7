"""pushauth-pam behind a real OpenSSH server, driven by a real SSH client (paramiko).

sshd runs on a free port with a configuration and host key of its own, `UsePAM yes`
and keyboard-interactive as its only method; its PAM service (sshd takes its program
name as the service name, so it runs through a symlink with a unique name) asks for
the password with pam_unix first, then loads pushauth-pam through libpam-python. The
client answers the prompts as a person would: the password, then it reads the number
from the prompt "Type NN in your authenticator, then press Enter", the test's agent
approves with it, and the client presses Enter.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from e2e_helpers import agent_env, agent_ok, approve, only_pending, pending  # noqa: F401 - agent_env is a fixture
from pam_world import (
    NUMBER_PROMPT,
    PASSWORD,
    Account,
    World,
    local_account,
    make_world,
    module_line,
    pam_service,
)
from shared_broker import broker  # noqa: F401 - a fixture
from support import DEADLINE, BrokerProcess, ManagedProcess, free_port, port_accepts, wait_until

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    with local_account() as made:
        yield made


@pytest.fixture(scope="module")
def world(broker: BrokerProcess, account: Account, tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(broker, tmp_path_factory.mktemp("pam-sshd"), account)


@dataclass
class Sshd:
    proc: ManagedProcess
    port: int
    service: str


@pytest.fixture(scope="module")
def sshd(world: World) -> Iterator[Sshd]:
    base = world.base / "sshd"
    base.mkdir()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", base / "host_ed25519"],
        check=True,
        capture_output=True,
        timeout=DEADLINE,
    )
    stack = (
        "auth requisite pam_unix.so nodelay\n"
        + module_line(world.config())
        + "account required pam_permit.so\nsession required pam_permit.so\n"
    )
    with pam_service(stack, prefix="sshd-pushauth") as service:
        program = base / service  # sshd's PAM service name is its program name
        program.symlink_to(SSHD)
        port = free_port()
        (base / "sshd_config").write_text(
            f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_ed25519
PidFile {base}/sshd.pid
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication no
AuthenticationMethods keyboard-interactive
AllowUsers {world.account.name}
PermitRootLogin no
StrictModes no
LogLevel VERBOSE
"""
        )
        proc = ManagedProcess(
            [program, "-D", "-e", "-f", base / "sshd_config"], log_dir=world.base / "logs", name="sshd"
        ).start()
        try:
            wait_until(lambda: port_accepts(port), message=f"sshd listening on {port}")
            yield Sshd(proc, port, service)
        finally:
            proc.cleanup()


@dataclass
class Login:
    prompts: list[str] = field(default_factory=list)
    ok: bool = False
    error: str = ""


def ssh_login(
    sshd: Sshd,
    user: str,
    on_number: Callable[[str], str],
    *,
    password: str = PASSWORD,
    on_other: Callable[[str], str] = lambda text: "",
) -> Login:
    """Keyboard-interactive login with paramiko, answering as a person would: the
    password, `on_number(number)` at the number prompt, `on_other(text)` elsewhere."""
    login = Login()

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        answers = []
        for text, _echo in prompts:
            login.prompts.append(text)
            match = NUMBER_PROMPT.search(text)
            if match:
                answers.append(on_number(match.group(1)))
            elif text.startswith("Password"):
                answers.append(password)
            else:
                answers.append(on_other(text))
        return answers

    transport = paramiko.Transport(("127.0.0.1", sshd.port))
    try:
        transport.start_client(timeout=DEADLINE)
        transport.auth_interactive(user, handler)
        login.ok = transport.is_authenticated()
    except paramiko.AuthenticationException as exc:
        login.error = str(exc)
    finally:
        transport.close()
    return login


def test_ssh_login_with_the_right_number(world: World, sshd: Sshd) -> None:
    before = world.audit_count()
    seen: dict[str, str] = {}

    def answer(number: str) -> str:
        seen["request"] = approve(world.home, number)["context"]["from"]
        return ""  # Enter, after approving on the device

    login = ssh_login(sshd, world.account.name, answer)
    assert login.ok, login
    assert login.prompts[0].startswith("Password")
    assert re.fullmatch(
        r'Type \d\d in your authenticator, then press Enter \(or type "code".*: ', login.prompts[1]
    )
    assert seen["request"] == "127.0.0.1"  # the device shows where the sign-in comes from
    line = world.audit_line(r"decision=allow outcome=approved", before)
    assert f"service={sshd.service} rhost=127.0.0.1 tty=ssh" in line


def test_a_wrong_password_sends_no_push(world: World, sshd: Sshd) -> None:
    login = ssh_login(sshd, world.account.name, lambda n: "", password="not-the-password")
    assert not login.ok
    assert not any(NUMBER_PROMPT.search(p) for p in login.prompts)
    assert pending(world.home) == []


def test_ssh_login_denied_on_the_device(world: World, sshd: Sshd) -> None:
    before = world.audit_count()

    def deny(number: str) -> str:
        agent_ok(world.home, "deny", only_pending(world.home)["id"])
        return ""

    login = ssh_login(sshd, world.account.name, deny)
    assert not login.ok, login
    world.audit_line(
        rf"decision=deny outcome=denied user={world.account.name} .*service={sshd.service}", before
    )


def test_ssh_login_with_code_at_the_prompt(world: World, sshd: Sshd) -> None:
    before = world.audit_count()
    (code,) = [line["code"] for line in json.loads(agent_ok(world.home, "code", "--json"))]

    def verification_code(text: str) -> str:
        assert text == "Verification code: "
        return code

    login = ssh_login(sshd, world.account.name, lambda number: "code", on_other=verification_code)
    assert login.ok, login
    assert login.prompts[-1] == "Verification code: "
    world.audit_line(r"decision=allow outcome=totp_ok", before)
    assert pending(world.home) == []  # the push it replaced was cancelled


def test_a_client_that_goes_away_at_the_number_prompt_ends_the_push(world: World, sshd: Sshd) -> None:
    """sshd ends the PAM conversation of a client that disconnects with SIGTERM to its
    PAM process: the push must still be withdrawn from the device and audited."""
    before = world.audit_count()
    transport = paramiko.Transport(("127.0.0.1", sshd.port))
    asked: dict[str, str] = {}

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        (text, _echo), *_ = prompts
        if text.startswith("Password"):
            return [PASSWORD]
        match = NUMBER_PROMPT.search(text)
        assert match, text
        asked["id"] = only_pending(world.home)["id"]  # the push reached the device
        transport.sock.close()  # the client goes away without answering
        raise EOFError("gone")

    try:
        transport.start_client(timeout=DEADLINE)
        with pytest.raises((EOFError, OSError, paramiko.SSHException)):  # paramiko: the closed socket
            transport.auth_interactive(world.account.name, handler)
    finally:
        transport.close()
    assert asked, "the number prompt was never shown"
    line = world.audit_line(rf"decision=deny outcome=cancelled .*challenge={asked['id']} ", before)
    assert f"user={world.account.name} " in line and f"service={sshd.service} " in line
    wait_until(lambda: pending(world.home) == [], message="the push withdrawn from the device")
