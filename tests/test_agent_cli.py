"""pushauth-agent as a real subprocess: help, argument errors, bad input, no broker.

Everything here runs without a broker: errors that must be caught before anything
is sent, and the behaviour when the broker cannot be reached. The flows against a
real broker are in test_agent_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import add_push_account, agent_env  # noqa: F401  (autouse: the vault passphrase for every agent run)
from support import AGENT, ManagedProcess, assert_cli_error, free_port, port_accepts, run_cli, wait_until

from device_agent.cli import COMMANDS, build_parser
from device_agent.help_texts import COMMAND_EXITS
from device_agent.store import AccountStore
from protocol import signing
from protocol.uri import EnrollmentURI, TotpParams

TOKEN = "t" * 32


def agent(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli([AGENT, "--home", str(home), *args], input=input, timeout=60)


def dead_broker() -> str:
    """A ws:// URL where nothing listens."""
    return f"ws://127.0.0.1:{free_port()}/v1/device"


def enroll_uri(broker: str, **kw: object) -> str:
    fields: dict[str, object] = {
        "broker": broker,
        "token": TOKEN,
        "rp": "rp1",
        "rp_name": "Example",
        "account": "alice@example.com",
    }
    fields.update(kw)
    return EnrollmentURI(**fields).build()  # type: ignore[arg-type]


def store_with_account(home: Path, broker: str, name: str = "alice@example.com") -> AccountStore:
    return add_push_account(home, name, broker)


# -- help ---------------------------------------------------------------------------


def test_help_explains_commands_exit_codes_and_environment() -> None:
    result = run_cli([AGENT, "--help"])
    assert result.returncode == 0
    for text in ("enroll", "listen", "pending", "approve", "deny", "remove", "accounts"):
        assert text in result.stdout
    assert "exit codes" in result.stdout
    assert "PUSHAUTH_AGENT_HOME" in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_help_text_is_filled_to_the_width_of_its_paragraph(command: str) -> None:
    # Text edited in place left lines like "else goes back to the request). Requests are"
    # followed by the rest on the next line: read as a paragraph break in a terminal.
    text = run_cli([AGENT, command, "--help"]).stdout
    body = text.split("\n\n", 1)[1].split("positional arguments:")[0].split("options:")[0]
    short = []
    for paragraph in body.split("\n\n"):
        lines = paragraph.split("\n")
        for line, after in itertools.pairwise(lines):
            table = line.startswith(" ") or "   " in line or after.startswith(" ")  # columns
            if not table and len(line) < 60:
                short.append(line)
    assert not short, short


def test_version_is_one_line_from_the_package_metadata() -> None:
    # As pushauth-broker --version: the installed package's version, and the protocol spoken.
    from importlib import metadata

    from protocol import SUBPROTOCOLS

    result = run_cli([AGENT, "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"pushauth-agent {metadata.version('pushauth')} (device protocol {', '.join(SUBPROTOCOLS)})\n"
    )
    assert result.stderr == ""


def test_help_says_what_to_do_when_this_device_is_lost() -> None:
    # It said how to move while both devices are at hand; a lost phone is the other case,
    # and its order matters: a lost device removed before the restore leaves its
    # recoverable accounts nothing to recover from.
    text = " ".join(run_cli([AGENT, "--help"]).stdout.split())
    assert "Lost this device? On the new one, `restore` your backup first" in text
    assert "remove the lost device" in text and "not before the restore" in text
    assert "recovery codes" in text


@pytest.mark.parametrize("command", ["enroll", "accounts", "listen", "pending", "approve", "deny", "remove"])
def test_each_command_has_its_own_help(command: str) -> None:
    result = run_cli([AGENT, command, "--help"])
    assert result.returncode == 0
    assert f"pushauth-agent {command}" in result.stdout
    assert "exit codes" in result.stdout


def help_section(text: str, title: str) -> str:
    """The lines of `title:` in a --help text, up to the next blank line."""
    start = text.index(f"\n{title}:\n") + len(title) + 3
    return text[start : text.index("\n\n", start)]


@pytest.mark.parametrize("command", sorted(COMMAND_EXITS))
def test_each_command_lists_only_its_own_exit_codes(command: str) -> None:
    result = run_cli([AGENT, command, "--help"])
    assert result.returncode == 0
    codes = help_section(result.stdout, "exit codes")
    listed = [int(line.split()[0]) for line in codes.splitlines() if not line.startswith("     ")]
    assert listed == sorted(COMMAND_EXITS[command])
    # No other command's codes (the generic block said "for approve: ..." and "import: ...").
    others = {"approve", "import", "enroll", "restore"} - {command}
    assert not any(f"for {other}" in codes or f"{other}:" in codes for other in others), codes


def test_the_commands_used_most_have_examples_of_themselves() -> None:
    for command in (
        "enroll",
        "approve",
        "deny",
        "pending",
        "listen",
        "backup",
        "restore",
        "code",
        "export",
        "import",
    ):
        examples = help_section(run_cli([AGENT, command, "--help"]).stdout, "examples")
        lines = examples.splitlines()
        assert lines and all(line.startswith("  pushauth-agent ") for line in lines), examples
        assert any(f" {command} " in line or line.endswith(f" {command}") for line in lines), examples


def test_every_command_has_its_exit_codes_written_once() -> None:
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert parser_commands == set(COMMAND_EXITS)


def test_python_dash_m_runs_the_same_cli() -> None:
    result = run_cli([sys.executable, "-m", "device_agent", "--help"])
    assert result.returncode == 0
    assert "pushauth-agent" in result.stdout


# -- argument errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        ([], "required"),
        (["bogus"], "invalid choice"),
        (["enroll"], "required"),
        (["approve"], "required"),  # the ID (--number is left out for a request without a number)
        (["deny"], "required"),
        (["remove"], "required"),
        (["accounts", "--frobnicate"], "unrecognized"),
    ],
)
def test_argument_errors_are_one_line_with_exit_2(tmp_path: Path, args: list[str], contains: str) -> None:
    result = agent(tmp_path / "home", *args)
    assert_cli_error(result, contains=contains)
    assert result.returncode == 2
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("stdin_tty", [False, True])
def test_ui_refuses_without_a_terminal(tmp_path: Path, stdin_tty: bool) -> None:
    # `pushauth-agent ui </dev/null | tail`, and `pushauth-agent ui | tail` from a terminal:
    # no escape codes into the pipe, no screen waiting for keys; it ends at once.
    main, other = os.openpty()
    try:
        result = subprocess.run(
            [AGENT, "--home", str(tmp_path / "home"), "ui"],
            stdin=other if stdin_tty else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(main)
        os.close(other)
    assert_cli_error(result, contains="the screen opens only on a terminal")
    assert result.returncode == 2
    assert result.stdout == ""
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("uri", "contains"),
    [
        ("https://example.com/enroll?v=1", "pushauth://enroll"),
        # A link of protocol v1 (an RP or broker not updated) and one from the future.
        ("pushauth://enroll?v=1&broker=ws://h/&token=" + TOKEN + "&rp=r&rp_name=R&account=a", "version"),
        ("pushauth://enroll?v=3&broker=ws://h/&token=" + TOKEN + "&rp=r&rp_name=R&account=a", "version"),
        ("pushauth://enroll?v=2&broker=ws://h/&rp=r&rp_name=R&account=a", "token"),
        ("pushauth://enroll?v=2&broker=http://h/&token=" + TOKEN + "&rp=r&rp_name=R&account=a", "ws://"),
        ("pushauth://enroll?v=2&broker=ws://h/&token=short&rp=r&rp_name=R&account=a", "token"),
        (
            "pushauth://enroll?v=2&broker=ws://h/&token=" + TOKEN + "&rp=r&rp_name=R&account=a&secret=!!",
            "base32",
        ),
        (
            "pushauth://enroll?v=2&broker=ws://h/&token=" + TOKEN + "&rp=r&rp_name=R&account=al%FFice",
            "the account name in the link is not valid UTF-8",
        ),
        ("", "pushauth://enroll"),
    ],
)
def test_bad_enrollment_uri_is_refused_before_anything_happens(
    tmp_path: Path, uri: str, contains: str
) -> None:
    result = agent(tmp_path / "home", "enroll", uri)
    line = assert_cli_error(result, contains=contains)
    assert result.returncode == 2
    assert "not a valid enrollment URI" in line
    assert not (tmp_path / "home").exists()


BROKEN_URLS = ["ws://[::1", "ws://[::1]:99999/v1/device", "wss://[nope]/v1/device"]


@pytest.mark.parametrize("broker", BROKEN_URLS)
def test_enroll_and_reactivate_refuse_a_broker_url_urllib_cannot_split(tmp_path: Path, broker: str) -> None:
    # urllib.parse raises ValueError on these ("Invalid IPv6 URL", "Port out of range").
    link = f"pushauth://enroll?v=2&broker={broker}&token={TOKEN}&rp=rp1&rp_name=X&account=a"
    result = agent(tmp_path / "home", "enroll", link)
    assert_cli_error(result, contains="broker must be a ws:// or wss:// URL with a host")
    assert result.returncode == 2
    assert not (tmp_path / "home").exists()
    store_with_account(tmp_path / "old", dead_broker())
    result = agent(tmp_path / "old", "reactivate", "alice@example.com", link)
    assert_cli_error(result, contains="not a valid enrollment URI")
    assert result.returncode == 2


@pytest.mark.parametrize("broker", [*BROKEN_URLS, "http://[::1", "https://h:70000/"])
def test_backup_commands_refuse_a_broker_url_urllib_cannot_split(tmp_path: Path, broker: str) -> None:
    home = tmp_path / "home"
    store_with_account(home, dead_broker())
    for args in (
        ["backup", "--to", "broker", "--broker", broker],
        ["backup", "delete", "--from", "broker", "--broker", broker],
    ):
        result = agent(home, *args)
        assert_cli_error(result, contains="not a broker URL")
        assert result.returncode == 2
    result = agent(tmp_path / "new", "restore", "--from", "broker", "--broker", broker)
    assert_cli_error(result, contains="not a broker URL")
    assert result.returncode == 2
    assert not (tmp_path / "new" / "vault.pav").exists()


@pytest.mark.parametrize("name", ["x" * 65, "bad\tname", ""])
def test_bad_device_name_is_refused(tmp_path: Path, name: str) -> None:
    result = agent(tmp_path / "home", "enroll", enroll_uri(dead_broker()), "--name", name)
    assert_cli_error(result, contains="device name")
    assert result.returncode == 2
    assert not (tmp_path / "home").exists()


def test_enroll_with_broker_down_says_so_and_stores_nothing(tmp_path: Path) -> None:
    broker = dead_broker()
    result = agent(tmp_path / "home", "enroll", enroll_uri(broker))
    assert_cli_error(result, contains=f"cannot reach the broker at {broker}")
    assert result.returncode == 3
    assert AccountStore(tmp_path / "home").load() == []


def test_enroll_at_something_that_is_not_a_broker(tmp_path: Path) -> None:
    # An HTTP server that is not a WebSocket endpoint: a clear message, not a traceback.
    port = free_port()
    server = ManagedProcess(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log_dir=tmp_path / "logs",
        ready=lambda _p: port_accepts(port),
    ).start()
    try:
        result = agent(tmp_path / "home", "enroll", enroll_uri(f"ws://127.0.0.1:{port}/v1/device"))
    finally:
        server.terminate()
    assert_cli_error(result, contains="cannot reach the broker")
    assert result.returncode == 3


# -- commands on the local store ---------------------------------------------------------


def test_accounts_on_an_empty_home(tmp_path: Path) -> None:
    result = agent(tmp_path / "home", "accounts")
    assert result.returncode == 0
    assert "No accounts yet" in result.stdout
    result = agent(tmp_path / "home", "accounts", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("args", [["accounts"], ["accounts", "--json"], ["code"], ["pending"], ["passwd"]])
def test_a_home_that_is_a_file_is_refused(tmp_path: Path, args: list[str]) -> None:
    log = tmp_path / "some.log"
    log.write_text("not a home\n")
    result = agent(log, *args)
    assert_cli_error(result, contains=f"--home {log} is not a folder")
    assert result.returncode == 2
    assert result.stdout == ""
    assert log.read_text() == "not a home\n"
    env = {**os.environ, "PUSHAUTH_AGENT_HOME": str(log)}
    result = subprocess.run([AGENT, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert_cli_error(result, contains=f"PUSHAUTH_AGENT_HOME {log} is not a folder")
    assert result.returncode == 2


def test_accounts_lists_without_secrets_and_honours_the_env_home(tmp_path: Path) -> None:
    home = tmp_path / "env-home"
    store = store_with_account(home, "ws://127.0.0.1:1/v1/device")
    seed = store.seed("cid-alice")
    env = {**os.environ, "PUSHAUTH_AGENT_HOME": str(home)}
    result = subprocess.run(
        [AGENT, "accounts", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == "alice@example.com"
    assert entry["credential_id"] == "cid-alice"
    assert entry["status"] == "active"
    assert "seed" not in entry
    assert signing.public_key(seed).hex() not in result.stdout
    text = subprocess.run(
        [AGENT, "accounts"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "alice@example.com" in text.stdout
    assert "Example" in text.stdout


def test_damaged_accounts_file_is_one_line_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "accounts.json").write_text("{not json")
    for args in (
        ["accounts"],
        ["pending"],
        ["listen"],
        ["remove", "x"],
        ["approve", "abcd", "--number", "12"],
    ):
        result = agent(home, *args)
        assert_cli_error(result, contains="damaged")
        assert result.returncode == 2
    assert (home / "accounts.json").read_text() == "{not json"


def test_commands_that_need_accounts_say_how_to_add_one(tmp_path: Path) -> None:
    for args in (["pending"], ["approve", "abcd", "--number", "12"], ["deny", "abcd"]):
        result = agent(tmp_path / "home", *args)
        assert_cli_error(result, contains="enroll")
        assert result.returncode == 2


def test_a_failed_first_command_leaves_nothing_in_a_new_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused first change used to leave .accounts.lock (and an empty vault, made with a
    # new passphrase, for rename and move): a home that looked used, holding nothing.
    home = tmp_path / "home"
    otp = "otpauth://totp/Example:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example"
    for args, says in (
        (["add", otp, "--name", "bad\tname"], "account name"),
        (["rename", "a", "b"], 'no account named "a"'),
        (["move", "a", "1"], "position"),
        (["enroll", enroll_uri(dead_broker())], "cannot reach the broker"),
        (["passwd"], "no vault yet"),
    ):
        assert_cli_error(agent(home, *args), contains=says)
        assert not home.exists(), (args, sorted(p.name for p in home.iterdir()))
    monkeypatch.setenv("PUSHAUTH_AGENT_PASSPHRASE", "too short")  # the new vault's: refused
    for args in (["add", otp], ["listen"]):
        assert_cli_error(agent(home, *args), contains="too short")
        assert not home.exists(), (args, sorted(p.name for p in home.iterdir()))
    home.mkdir()  # a home made beforehand stays, empty
    assert_cli_error(agent(home, "add", otp), contains="too short")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("number", ["abc", "", "123456789", "12-34", "12345 6789", "-1"])
def test_approve_with_a_malformed_number_sends_nothing(tmp_path: Path, number: str) -> None:
    store_with_account(tmp_path / "home", dead_broker())
    result = agent(tmp_path / "home", "approve", "abcd", "--number", number)
    assert_cli_error(result, contains="digits")
    assert result.returncode == 2


def test_remove_unknown_account(tmp_path: Path) -> None:
    store_with_account(tmp_path / "home", dead_broker())
    result = agent(tmp_path / "home", "remove", "nobody")
    assert_cli_error(result, contains='no account named "nobody"')
    assert result.returncode == 2


def test_remove_refuses_when_the_broker_is_down_unless_local_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = store_with_account(home, dead_broker())
    # Off a terminal, only with --yes: a push account's key cannot come back either.
    unasked = agent(home, "remove", "alice@example.com")
    line = assert_cli_error(unasked, contains='removing "alice@example.com" cannot be undone')
    assert "its key is revoked at Example, and only a new QR code from Example adds it again" in line
    assert "--yes" in line and unasked.returncode == 2
    result = agent(home, "remove", "alice@example.com", "--yes")
    line = assert_cli_error(result, contains="NOT removed")
    assert "--local-only" in line
    assert result.returncode == 3
    assert [a.name for a in store.load()] == ["alice@example.com"]

    result = agent(home, "remove", "alice@example.com", "--local-only", "--yes")
    assert result.returncode == 0, result.stderr
    assert "this device only" in result.stdout
    assert store.load() == []


def test_remove_of_an_already_revoked_account_needs_no_broker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = store_with_account(home, dead_broker())
    store.mark_revoked("cid-alice", "removed by the service")
    result = agent(home, "remove", "alice@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'Forgot "alice@example.com" (it was already removed by the service).\n'
    assert store.load() == []


def test_remove_of_a_restored_account_that_needs_action_does_not_say_to_reactivate_it(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    store_with_account(old, dead_broker())
    backup = tmp_path / "phone.backup"
    assert agent(old, "backup", "--to", str(backup)).returncode == 0
    restored = agent(new, "restore", "--from", str(backup))
    assert "action required: alice@example.com" in restored.stdout, restored.stderr
    assert "then: pushauth-agent reactivate alice@example.com URI" in restored.stdout  # what to type
    result = agent(new, "remove", "alice@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    said = (
        'Forgot "alice@example.com" (a restored push account that was never re-activated: nothing to revoke).'
    )
    assert result.stdout == said + "\n"
    assert "reactivate" not in result.stdout
    assert AccountStore(new).load() == []
    # One with verification codes says that they go too (--yes skipped the question).
    with_codes = tmp_path / "codes"
    totp = TotpParams(secret="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
    add_push_account(with_codes, "bob@example.com", dead_broker(), user="bob", totp=totp)
    assert agent(with_codes, "backup", "--to", str(tmp_path / "codes.backup")).returncode == 0
    assert agent(tmp_path / "new2", "restore", "--from", str(tmp_path / "codes.backup")).returncode == 0
    result = agent(tmp_path / "new2", "remove", "bob@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    assert "nothing to revoke; its verification codes are gone from this device too" in result.stdout


def test_pending_and_approve_with_the_broker_down(tmp_path: Path) -> None:
    broker = dead_broker()
    store_with_account(tmp_path / "home", broker)
    result = agent(tmp_path / "home", "pending")
    assert "cannot reach the broker" in result.stderr
    assert result.returncode == 3
    # It could not ask: it must not say that nothing is waiting.
    assert "No sign-in requests are waiting" not in result.stdout
    assert "No broker could be asked: whether sign-in requests are waiting is not known." in result.stdout
    result = agent(tmp_path / "home", "pending", "--json")
    assert result.returncode == 3
    (item,) = json.loads(result.stdout)
    assert item["type"] == "unreachable" and item["broker"] == broker
    assert item["error"].startswith(f"cannot reach the broker at {broker}")
    result = agent(tmp_path / "home", "approve", "abcd", "--number", "12")
    assert_cli_error(result, contains="cannot reach the broker")
    assert result.returncode == 3


def test_backup_to_an_unreachable_broker_says_what_pending_says(tmp_path: Path) -> None:
    # The HTTP requests (backups, recovery keys) said "[Errno 111] Connection refused"
    # and named the broker by its http:// origin, unlike every WebSocket command.
    broker = dead_broker()
    home = tmp_path / "home"
    store_with_account(home, broker)
    (item,) = json.loads(agent(home, "pending", "--json").stdout)
    said = item["error"]
    assert said == f"cannot reach the broker at {broker}: connection refused (is it running?)"
    for args in (["--broker", broker], []):  # named, or the account's broker
        result = agent(home, "backup", "--to", "broker", *args)
        assert_cli_error(result, contains=said)
        assert result.returncode == 3
        assert "Errno" not in result.stderr


def test_enroll_keeps_totp_parameters_of_the_uri_when_parsing(tmp_path: Path) -> None:
    # The URI parser accepts TOTP parameters; with the broker down nothing is stored.
    uri = enroll_uri(dead_broker(), totp=TotpParams("JBSWY3DPEHPK3PXPJBSWY3DP", "SHA256", 8, 30))
    result = agent(tmp_path / "home", "enroll", uri)
    assert_cli_error(result, contains="cannot reach")


# -- listen without a broker --------------------------------------------------------------


class Listen:
    """`pushauth-agent listen` with a stdin pipe (ManagedProcess reads no stdin)."""

    def __init__(self, home: Path, log_dir: Path, *args: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / "listen.out"
        self.err_path = log_dir / "listen.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [AGENT, "--home", str(home), "listen", *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: text in self.output(), timeout=timeout, message=lambda: f"{text!r} in {self.output()!r}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


StartListen = Callable[..., Listen]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[StartListen]:
    started: list[Listen] = []

    def start(home: Path, *args: str) -> Listen:
        proc = Listen(home, tmp_path / f"listen-{len(started)}", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def test_listen_keeps_retrying_a_down_broker_and_stops_on_sigterm(
    tmp_path: Path, listener: StartListen
) -> None:
    broker = dead_broker()
    store_with_account(tmp_path / "home", broker)
    proc = listener(tmp_path / "home", "--no-input")
    # Several attempts, each one announced: it neither gives up nor crashes.
    wait_until(lambda: proc.output().count("Reconnecting to") >= 3, timeout=30, message="three retries")
    assert f"cannot reach the broker at {broker}" in proc.output()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(10) == 0
    assert "Stopped." in proc.output()
    assert "Traceback" not in proc.err_path.read_text()


def test_listen_stops_when_input_ends(tmp_path: Path, listener: StartListen) -> None:
    store_with_account(tmp_path / "home", dead_broker())
    proc = listener(tmp_path / "home")
    proc.wait_for("Reconnecting to")
    assert proc.proc.stdin is not None
    proc.proc.stdin.write(b"42\n")  # no request is being asked: ignored, said so
    proc.proc.stdin.close()
    assert proc.proc.wait(10) == 0
    out = proc.output()
    assert "input ignored" in out
    assert "Input ended; stopping." in out
    assert "Stopped." in out


def test_listen_with_no_accounts_waits_for_one(tmp_path: Path, listener: StartListen) -> None:
    home = tmp_path / "home"
    proc = listener(home, "--no-input")
    proc.wait_for("No active accounts yet")
    broker = dead_broker()
    store_with_account(home, broker)  # as `enroll` in another terminal would
    proc.wait_for(f"cannot reach the broker at {broker}")
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(10) == 0


@pytest.mark.parametrize("how", ["immutable", "under a file"])
def test_a_home_that_cannot_be_written_says_what_failed(tmp_path: Path, how: str) -> None:
    home = tmp_path / "phone_ro"
    if how == "under a file":
        (tmp_path / "file").write_text("")
        home = tmp_path / "file" / "phone"
        why = "Not a directory"
    else:  # as the trial's home: not writable even by root (chattr +i)
        home.mkdir()
        if run_cli(["chattr", "+i", str(home)]).returncode != 0:
            pytest.skip("chattr +i is not possible here")
        why = "Operation not permitted"
    try:
        result = agent(home, "add", "otpauth://totp/GitHub:carol?secret=JBSWY3DPEHPK3PXP&issuer=GitHub")
    finally:
        if how == "immutable":
            run_cli(["chattr", "-i", str(home)])
    assert_cli_error(result, contains=f"cannot write the vault in {home}: {why}")
    assert result.returncode == 2


def test_listen_started_with_no_input_at_all_says_how_to_run_without_input(tmp_path: Path) -> None:
    # `listen < /dev/null` (nohup, `&`, a service) stopped at once with "Input ended";
    # the way to keep it running without input was only in its --help.
    store_with_account(tmp_path / "home", dead_broker())
    result = agent(tmp_path / "home", "listen")  # stdin: /dev/null
    assert result.returncode == 0, result.stderr
    assert "Input ended; stopping." in result.stdout
    assert "pushauth-agent listen --no-input" in result.stdout
