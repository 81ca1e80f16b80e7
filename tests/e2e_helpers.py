"""Shared steps of the end-to-end tests: enroll the real agent, answer with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import AGENT, interruptible, run_cli, wait_until

from device_agent.passphrase import KDF_ENV, KDF_TEST_INSECURE, PASSPHRASE_ENV
from device_agent.store import AccountStore, Registration
from protocol import signing
from protocol.uri import TotpParams
from relying_party.models import Credential
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

TEST_PASSPHRASE = "correct horse battery staple"
# What every agent run in the tests gets: the vault passphrase without a prompt, and
# the cheapest key derivation (for tests only; see device_agent/passphrase.py).
AGENT_ENV = {PASSPHRASE_ENV: TEST_PASSPHRASE, KDF_ENV: KDF_TEST_INSECURE}


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import into a test module to give it (and its subprocesses) AGENT_ENV."""
    for key, value in AGENT_ENV.items():
        monkeypatch.setenv(key, value)


def agent(home: Path, *args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """`pushauth-agent --home HOME ARGS` with AGENT_ENV (plus `env`)."""
    return run_cli([AGENT, "--home", home, *args], timeout=timeout, env={**AGENT_ENV, **env})


def _where(pid: int) -> str:
    """What a process waits in, from /proc: for a failure's message."""
    said = []
    for name in ("wchan", "syscall"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/{name}") as f:
            said.append(f"{name} {f.read().strip()[:60]}")
    return ", ".join(said) or "nothing in /proc"


def on_a_terminal(
    home: Path,
    args: list[str],
    answers: list[tuple[str, str | signal.Signals]],
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """`pushauth-agent --home HOME ARGS` with stdin, stdout and stderr on a pty, in a
    session of its own (so getpass reads that pty, never the terminal of the tests). For
    each (prompt, answer): waits for `prompt` after the last one, types `answer` (or sends
    it, a signal: SIGINT is what Ctrl-C on the terminal sends); returns the exit code and
    all it wrote there. `env`: the environment (default: AGENT_ENV)."""
    main, other = os.openpty()
    proc = subprocess.Popen(
        interruptible([AGENT, "--home", str(home), *args]), stdin=other, stdout=other, stderr=other,
        env=env if env is not None else {**os.environ, **AGENT_ENV}, start_new_session=True,
    )  # fmt: skip
    os.close(other)
    seen = b""

    def read() -> bytes:
        nonlocal seen
        if select.select([main], [], [], 0.05)[0]:
            with contextlib.suppress(OSError):  # EIO: the agent closed its end
                seen += os.read(main, 4096)
        return seen

    try:
        after = 0
        for prompt, answer in answers:
            wanted = prompt.encode()

            def asked(wanted: bytes = wanted, after: int = after) -> bool:
                return wanted in read()[after:] or proc.poll() is not None

            wait_until(asked, message=repr(prompt))
            if wanted not in seen[after:]:
                break  # it ended first: the caller sees what it said
            after = seen.index(wanted, after) + len(wanted)
            if isinstance(answer, signal.Signals):
                proc.send_signal(answer)
            else:
                os.write(main, answer.encode() + b"\n")
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after 30 s, {_where(proc.pid)}; it wrote {read()!r}"
            ) from None
        while len(seen) < len(read()):  # what it wrote before it ended
            pass
    finally:
        os.close(main)
        proc.kill()
        proc.wait()
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


async def run_agent(home: Path, *args: str) -> tuple[int, str, str]:
    """`pushauth-agent --home HOME ARGS` as an asyncio subprocess, so the test's loop keeps
    serving (a fake broker, say) meanwhile: (exit code, stdout, stderr). It inherits the
    test's environment (import `agent_env` for AGENT_ENV)."""
    proc = await asyncio.create_subprocess_exec(
        str(AGENT),
        "--home",
        str(home),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_clear_failure(code: int, err: str, *contains: str, exit_code: int | None = None) -> None:
    """A CLI that refused as it should: exit `exit_code` (None: any but 0) and one line on
    stderr, no traceback, that says each of `contains`."""
    if exit_code is None:
        assert code != 0, err
    else:
        assert code == exit_code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in contains:
        assert text in lines[0], err


def agent_ok(home: Path, *args: str, **env: str) -> str:
    result = agent(home, *args, **env)
    assert result.returncode == 0, f"pushauth-agent {' '.join(args)} failed:\n{result.stderr}{result.stdout}"
    return result.stdout


async def enroll(
    client: PushAuthClient,
    home: Path,
    *,
    user: str = "alice",
    account: str = "alice@example.com",
    name: str = "phone",
    confirm: bool = True,
) -> Credential:
    """The RP starts an enrollment, the agent enrolls with its URI, the RP gets the key
    and (with `confirm`, as after a test push) lets it receive ordinary sign-ins."""
    started = await client.create_enrollment(user, account, totp=new_totp())
    assert started.uri is not None
    agent_ok(home, "enroll", started.uri, "--name", name)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.completed and done.credential is not None, done
    if confirm:
        await client.confirm_credential(done.credential.id)
    return done.credential


def add_push_account(
    home: Path,
    name: str,
    broker: str,
    *,
    rp: str = "rp1",
    rp_name: str = "Example",
    user: str = "alice",
    totp: TotpParams | None = None,
) -> AccountStore:
    """A push account named and labelled `name` (credential id cid-NAME, before any @)
    at `broker` (a dead or fake one, say), with a fresh key: no enrollment needed."""
    store = AccountStore(home)
    store.add(
        name,
        Registration(
            rp=rp,
            rp_name=rp_name,
            user=user,
            label=name,
            broker=broker,
            cid="cid-" + name.split("@")[0],
            device_name="laptop",
            seed=signing.new_seed(),
            totp=totp,
        ),
    )
    return store


def make_home(tmp_path: Path, url: str) -> Path:
    """An agent home (tmp_path/agent) holding one account, alice at rp1, whose broker is
    `url` (a fake one, say), with a fresh key: no enrollment needed."""
    home = tmp_path / "agent"
    add_push_account(home, "alice", url)
    return home


def pending(home: Path) -> list[dict[str, Any]]:
    return json.loads(agent_ok(home, "pending", "--json"))


def only_pending(home: Path) -> dict[str, Any]:
    """The one sign-in request waiting on the agent at `home`, once it has arrived."""

    def one() -> dict[str, Any] | None:
        waiting = pending(home)
        return waiting[0] if len(waiting) == 1 else None

    found = wait_until(one, message="one pending sign-in request on the agent")
    assert isinstance(found, dict)
    return found


def approve(home: Path, number: str) -> dict[str, Any]:
    """Approve the one request waiting on the agent with `number`; return the request."""
    request = only_pending(home)
    agent_ok(home, "approve", request["id"], "--number", number)
    return request
