"""What the pushauth-pam tests share: a local test account, a PAM service file in
/etc/pam.d/, pushauth-pam's configuration, and the account enrolled on the real agent.

Everything made here has a unique name (parallel test workers never meet) and is
removed again: the account and group (userdel/groupdel), the pam.d file. Root's own
login configuration is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e_helpers import agent_ok, approve
from shared_broker import new_rp
from support import DEADLINE, BrokerProcess, ManagedProcess, console_script, set_policy, wait_until

import relying_party.pam.pam_module as pam_module_file

PAM = console_script("pushauth-pam")
PAM_MODULE = Path(pam_module_file.__file__).resolve()
PAM_D = Path("/etc/pam.d")
PYTHON_SITE = subprocess.run(
    [str(PAM.parent / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    capture_output=True,
    text=True,
    check=True,
).stdout.strip()
NUMBER_PROMPT = re.compile(r"Type (\d+) in your authenticator, then press Enter")
PASSWORD = "pam-test-Password-1"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=DEADLINE)


@dataclass
class Account:
    name: str
    group: str  # a group of its own that no bypass names
    bypass_group: str  # made for the bypass test; `name` is not in it unless added


@contextlib.contextmanager
def local_account() -> Iterator[Account]:
    """A fresh local account with a password (for pam_unix in the sshd stack)."""
    tag = secrets.token_hex(3)
    account = Account(f"pat{tag}", f"pat{tag}", f"pab{tag}")
    _run("useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", account.name)
    try:
        _run("groupadd", account.bypass_group)
        subprocess.run(
            ["chpasswd"], input=f"{account.name}:{PASSWORD}\n", text=True, check=True, timeout=DEADLINE
        )
        yield account
    finally:
        subprocess.run(["userdel", account.name], capture_output=True, timeout=DEADLINE)
        subprocess.run(["groupdel", account.bypass_group], capture_output=True, timeout=DEADLINE)


def add_to_group(user: str, group: str) -> None:
    _run("gpasswd", "--add", user, group)


def remove_from_group(user: str, group: str) -> None:
    _run("gpasswd", "--delete", user, group)


@contextlib.contextmanager
def pam_service(lines: str, prefix: str = "pushauth-test") -> Iterator[str]:
    """A PAM service file /etc/pam.d/<unique name> holding `lines`; its name."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    path = PAM_D / name
    path.write_text(lines)
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


def module_line(config: Path, control: str = "required") -> str:
    return f"auth {control} pam_python.so {PAM_MODULE} site={PYTHON_SITE} config={config}\n"


@dataclass
class World:
    base: Path
    broker: BrokerProcess
    rp: dict[str, Any]
    account: Account
    home: Path  # the agent's home: the account enrolled
    store: Path
    audit: Path
    key_file: Path
    enroll_output: str = ""
    configs: dict[str, Path] = field(default_factory=dict)

    def config(
        self,
        name: str = "pam",
        *,
        broker_url: str | None = None,
        when_unreachable: str = "deny",
        ttl: int | None = None,
        digits: int | None = None,
        bypass: bool = False,
        extra_users: str = "",
    ) -> Path:
        """`ttl` and `digits` None: left out, so the RP's policy at the broker decides."""
        path = self.base / f"{name}.toml"
        digits_line = "" if digits is None else f"digits = {digits}"
        ttl_line = "" if ttl is None else f"push = {ttl}"
        groups = f'bypass_groups = ["{self.account.bypass_group}"]' if bypass else ""
        path.write_text(
            f"""
[broker]
url = "{broker_url or self.broker.http_url}"
api_key_file = "{self.key_file}"
when_unreachable = "{when_unreachable}"

[pam]
store = "{self.store}"
app_name = "Test host"
syslog = false
audit_file = "{self.audit}"

[challenge]
{digits_line}

[timeouts]
request = 2
{ttl_line}

[users]
template = "{{user}}@test.example"
{groups}
{extra_users}
"""
        )
        return path

    def audit_line(self, pattern: str, after: int = 0) -> str:
        """Wait for an audit line matching `pattern` among those after the first `after`."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.audit_lines(after) if regex.search(line)), None)

        line = wait_until(found, message=lambda: f"an audit line /{pattern}/ in {self.audit}")
        assert isinstance(line, str)
        return line

    def audit_lines(self, after: int = 0) -> list[str]:
        return self.audit.read_text().splitlines()[after:] if self.audit.exists() else []

    def audit_count(self) -> int:
        return len(self.audit_lines())


def make_world(broker: BrokerProcess, base: Path, account: Account, policy: Sequence[str] = ()) -> World:
    """pushauth-pam configured for `account`, enrolled with `pushauth-pam enroll` (QR code,
    link, the agent enrolls, the test push approved with the number shown). `policy`:
    `pushauth-broker rp set` flags for the new RP, set before anything reads it."""
    rp = asyncio.run(new_rp(broker, "Test host"))
    if policy:
        assert broker.redis_url is not None
        set_policy(rp["id"], *policy, redis_url=broker.redis_url)
    key_file = base / "api-key"
    key_file.write_text(rp["api_key"] + "\n")
    key_file.chmod(0o600)
    world = World(base, broker, rp, account, base / "agent", base / "users.db", base / "audit.log", key_file)
    world.enroll_output = enroll_device(world, world.home)
    return world


def enroll_device(world: World, home: Path, name: str = "phone", user: str | None = None) -> str:
    """`pushauth-pam enroll` of the world's account (or `user`) with the agent at `home`;
    its output."""
    enroll = ManagedProcess(
        [PAM, "--config", world.config(), "enroll", user or world.account.name],
        log_dir=world.base / "logs",
        name=f"pam-enroll-{name}",
    ).start()
    try:
        link = enroll.wait_for_output(r"^link: (\S+)$").group(1)
        agent_ok(home, "enroll", link, "--name", name)
        number = enroll.wait_for_output(r"Test push: type (\d+) in your authenticator").group(1)
        approve(home, number)
        assert enroll.wait(timeout=DEADLINE) == 0, enroll.describe()
        return enroll.stdout()
    finally:
        enroll.cleanup()
