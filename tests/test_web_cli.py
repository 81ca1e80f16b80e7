"""`pushauth-rp` and `pushauth-demo` as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from support import (
    BrokerProcess,
    ManagedProcess,
    assert_cli_error,
    console_script,
    free_port,
    interruptible,
    port_accepts,
    run_cli,
)
from test_broker_device_ws import online_device

from protocol.frames import Revoked
from relying_party import demo as demo_cli
from relying_party.sdk import PushAuthClient
from relying_party.web.db import Database

RP = console_script("pushauth-rp")
DEMO = console_script("pushauth-demo")


def test_help() -> None:
    for argv in ([RP, "--help"], [sys.executable, "-m", "relying_party", "--help"]):
        result = run_cli(argv)
        assert result.returncode == 0
        assert "serve" in result.stdout and "user" in result.stdout
    result = run_cli([RP, "user", "add", "--help"])
    assert result.returncode == 0 and "--password-stdin" in result.stdout
    result = run_cli([DEMO, "--help"])
    assert result.returncode == 0 and "Ctrl-C" in result.stdout


def test_user_add_and_passwd(tmp_path: Path) -> None:
    db_path = tmp_path / "rp.db"
    result = run_cli(
        [RP, "user", "add", "alice", "--password-stdin", "--db", db_path], input="a good password\n"
    )
    assert result.returncode == 0, result.stderr
    db = Database(db_path)
    user = db.user_by_name("alice")
    assert user is not None and user.password_hash.startswith("$argon2id$")
    first_hash = user.password_hash
    result = run_cli(
        [RP, "user", "passwd", "alice", "--password-stdin", "--db", db_path], input="another one!\n"
    )
    assert result.returncode == 0, result.stderr
    changed = db.user_by_name("alice")
    assert changed is not None and changed.password_hash != first_hash


# What the command could not do with well-formed arguments: exit 1. Every other bad
# input below is a usage error, exit 2 as argparse's own (a wrong --digits, --minutes or
# user name was exit 1 where a missing argument was 2).
NOT_USAGE = ("at least 8", "already exists", "no user", "API key", "not one word", "cannot open database")


def exit_for(message: str) -> int:
    return 1 if any(said in message for said in NOT_USAGE) else 2


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["user", "add", "bad name", "--password-stdin"], "a good password\n", "user name"),
        (["user", "add", "bob", "--password-stdin"], "short\n", "at least 8"),
        (["user", "add", "bob"], None, "--password-stdin"),
        (["user", "add", "alice", "--password-stdin"], "a good password\n", "already exists"),
        (["user", "passwd", "nobody", "--password-stdin"], "a good password\n", "no user"),
        (["user", "frobnicate"], None, "invalid choice"),
        (["serve", "--broker", "http://127.0.0.1:1"], None, "API key"),
        (["serve", "--broker", "ftp://x"], None, "http://"),
        (["serve", "--broker", "http://127.0.0.1:1", "--digits", "9"], None, "--digits"),
        (["serve", "--broker", "http://127.0.0.1:1", "--ttl", "5"], None, "--ttl"),
        (
            ["serve", "--broker", "http://127.0.0.1:1", "--trusted-proxy", "10.0.0.0/33"],
            None,
            "--trusted-proxy",
        ),
        (["serve", "--broker", "http://127.0.0.1:1", "--port", "notaport"], None, "invalid int"),
        (["serve", "--broker", "http://127.0.0.1:1", "--app-url", "javascript:x"], None, "--app-url"),
        (["serve"], None, "--broker"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, argv: list[str], stdin: str | None, message: str
) -> None:
    db_path = tmp_path / "rp.db"
    run_cli([RP, "user", "add", "alice", "--password-stdin", "--db", db_path], input="a good password\n")
    before = Database(db_path).user_by_name("alice")
    extra = ["--db", str(db_path)] if argv[0] == "user" and argv[1] in ("add", "passwd") else []
    result = run_cli([RP, *argv, *extra], input=stdin, env={"PUSHAUTH_RP_API_KEY": ""})
    assert_cli_error(result, contains=message)
    assert result.returncode == exit_for(message), result.stderr
    db = Database(db_path)
    assert db.user_by_name("alice") == before
    assert db.user_by_name("bob") is None


@pytest.mark.parametrize(
    ("argv", "key", "message"),
    [
        # Each was a traceback (the SDK's or the database's ValueError / OSError), exit 1.
        (["--broker", "http://"], "pak_x", "--broker must be an http:// or https:// URL"),
        (["--broker", "https://"], "pak_x", "--broker must be an http:// or https:// URL"),
        (["--broker", "http://[::1"], "pak_x", "Invalid IPv6 URL"),
        (["--broker", "http://127.0.0.1:99999"], "pak_x", "Port out of range"),
        (["--broker", "http://127.0.0.1:1"], "pak_a b", "not one word of printable ASCII"),
        (["--broker", "http://127.0.0.1:1"], "pak_\u20ac", "not one word of printable ASCII"),
        (["--broker", "http://127.0.0.1:1", "--db", "."], "pak_x", "cannot open database"),
        # In every push's context, where the broker refuses it (400): no push sign-in worked.
        (["--broker", "http://127.0.0.1:1", "--name", "Portal\x07"], "pak_x", "--name must not contain"),
        (["--broker", "http://127.0.0.1:1", "--name", "Portal\u202e"], "pak_x", "--name must not contain"),
        (["--broker", "http://127.0.0.1:1", "--name", ""], "pak_x", "--name must be 1 to 256"),
    ],
)
def test_bad_serve_settings_are_one_line_before_it_starts(
    tmp_path: Path, argv: list[str], key: str, message: str
) -> None:
    result = run_cli([RP, "serve", "--port", "0", *argv], env={"PUSHAUTH_RP_API_KEY": key}, cwd=tmp_path)
    assert_cli_error(result, contains=message)
    assert result.returncode == exit_for(message), result.stderr
    assert "listening" not in result.stdout


def test_missing_database_folder(tmp_path: Path) -> None:
    result = run_cli(
        [RP, "user", "add", "alice", "--password-stdin", "--db", tmp_path / "nope" / "rp.db"],
        input="a good pw!\n",
    )
    assert_cli_error(result, contains="does not exist")


def test_serve_on_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            [RP, "serve", "--broker", "http://127.0.0.1:1", "--port", str(port), "--db", tmp_path / "rp.db"],
            env={"PUSHAUTH_RP_API_KEY": "k"},
        )
    assert_cli_error(result, contains="cannot listen")


def _sign_in(url: str, user: str, password: str) -> str:
    """A password sign-in with urllib (CSRF token and cookie as a browser has them); the landing path."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(url + "/signin", timeout=10) as r:
        html = r.read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    body = urllib.parse.urlencode(
        {"csrf_token": token.group(1), "username": user, "password": password}
    ).encode()
    with opener.open(url + "/signin", data=body, timeout=10) as r:
        return urllib.parse.urlsplit(r.geturl()).path


def _start_demo(tmp_path: Path, data: Path, broker_port: int, port: int) -> ManagedProcess:
    demo = ManagedProcess(
        [DEMO, "--data-dir", data, "--broker-port", str(broker_port), "--port", str(port)],
        log_dir=tmp_path / "logs",
        name="pushauth-demo",
        cwd=tmp_path,
    )
    demo.start()
    demo.wait_for_output(r"Press Ctrl-C to stop everything", timeout=60)
    return demo


@pytest.mark.timeout(180)
def test_demo_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    broker_port, port = free_port(), free_port()
    demo = _start_demo(tmp_path, data, broker_port, port)
    out = demo.stdout()
    url = re.search(r"Open\s+(http://\S+)", out).group(1)  # type: ignore[union-attr]
    password = re.search(r"Password\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert url == f"http://127.0.0.1:{port}"
    assert "pushauth-agent --home" in out
    # The printed password works: a password-only user lands on Security info.
    assert _sign_in(url, "demo", password) == "/security"
    rp = json.loads((data / "rp.json").read_text())
    assert (data / "rp.json").stat().st_mode & 0o777 == 0o600

    demo.send_signal(signal.SIGINT)  # Ctrl-C
    assert demo.wait(30) == 0
    assert "stopped." in demo.stdout()
    assert not port_accepts(port) and not port_accepts(broker_port)

    # A second run reuses the registration and the demo user.
    demo = _start_demo(tmp_path, data, broker_port, port)
    assert json.loads((data / "rp.json").read_text()) == rp
    assert f"Password    {password}" in demo.stdout()
    assert _sign_in(url, "demo", password) == "/security"
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(30) == 0

    # A password changed since (on the site, or here with pushauth-rp) is not shown as
    # if it still worked.
    changed = run_cli(
        [RP, "user", "passwd", "demo", "--password-stdin", "--db", data / "rp.db"],
        input="a new password for the demo user\n",
    )
    assert changed.returncode == 0, changed.stderr
    demo = _start_demo(tmp_path, data, broker_port, port)
    banner = demo.stdout().rsplit("pushauth demo is running.", 1)[1]  # (the log keeps earlier runs)
    assert password not in banner
    assert "Password    (the one you set on the site; the first one no longer works)" in banner
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(30) == 0


def test_ctrl_c_in_a_demo_set_up_step_is_a_stop_not_an_error() -> None:
    """Ctrl-C on the terminal reaches the whole foreground group, so a set-up step the demo
    runs as a subprocess (registering the RP, adding the demo user) dies of it as well.
    That is the person stopping the demo: it says "stopped." and exits 0, as after its
    start (run() ends on Interrupted), where it said "pushauth-demo: error: ... python -m
    relying_party failed (130)" and exited 1. A step that fails otherwise is still one."""
    for interrupted in ("import os, signal; os.kill(os.getpid(), signal.SIGINT)", "raise SystemExit(130)"):
        with pytest.raises(demo_cli.Interrupted):
            demo_cli._run(interruptible([sys.executable, "-c", interrupted]))
    with pytest.raises(demo_cli.DemoError, match=r"failed \(3\)"):
        demo_cli._run([sys.executable, "-c", "raise SystemExit(3)"])


def test_demo_names_what_is_wrong_in_its_data_folder(tmp_path: Path) -> None:
    """Each was a traceback: a --data-dir that is a file (FileExistsError), an rp.json whose
    key has a line break in it (http.client's ValueError), a damaged rp.db (sqlite3's
    DatabaseError). Now one line, exit 1, and everything started is stopped."""
    taken = tmp_path / "a-file"
    taken.write_text("")
    ports = ["--broker-port", str(free_port()), "--port", str(free_port())]
    result = run_cli([DEMO, "--data-dir", taken, *ports])
    assert_cli_error(result, contains=f"cannot use {taken} as the data folder")

    data = tmp_path / "demo-data"
    data.mkdir()
    (data / "rp.json").write_text(json.dumps({"id": "rp_x", "name": "x", "api_key": "pak_x\ny"}))
    (data / "demo-user.json").write_text(json.dumps({"name": "demo", "password": "a password"}))
    (data / "rp.db").write_text("not a database\n")
    result = run_cli([DEMO, "--data-dir", data, *ports], timeout=90)
    assert_cli_error(result, contains=f"cannot open database {data / 'rp.db'}")
    # The stored key could not be sent: the demo registered its RP anew, as when the
    # broker refuses a stored key.
    assert json.loads((data / "rp.json").read_text())["api_key"].startswith("pak_")
    assert "\n" not in json.loads((data / "rp.json").read_text())["api_key"]
    assert not port_accepts(int(ports[1])) and not port_accepts(int(ports[3]))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "99999"], "--port must be 1..65535, not 99999"),
        (["--broker-port", "0"], "--broker-port must be 1..65535, not 0"),
        (["--port", "8790", "--broker-port", "8790"], "--port and --broker-port must differ"),
        (["--trusted-proxy", "10.0.0.0/33"], "--trusted-proxy: "),
    ],
)
def test_demo_usage_errors_exit_2_before_anything_starts(tmp_path: Path, args: list[str], said: str) -> None:
    # Found by the web app once the broker had started, and said as its exit (1).
    data = tmp_path / "demo-data"
    result = run_cli([DEMO, "--data-dir", data, *args])
    assert_cli_error(result, contains=said)
    assert result.returncode == 2 and result.stdout == ""
    assert not data.exists()


def test_demo_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_cli(
            [DEMO, "--data-dir", tmp_path / "d", "--broker-port", str(busy), "--port", str(free_port())],
            timeout=90,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("pushauth-demo: error: broker exited at start")


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",  # a NUL in a header
    b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",  # a header over 8190 bytes
    b"POST /signin HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",  # both
]


def test_malformed_requests_get_a_4xx_and_no_traceback_in_the_log(tmp_path: Path) -> None:
    port = free_port()
    rp = ManagedProcess(
        [RP, "serve", "--broker", "http://127.0.0.1:1", "--port", str(port), "--db", tmp_path / "rp.db"],
        log_dir=tmp_path / "logs",
        name="pushauth-rp",
        env={"PUSHAUTH_RP_API_KEY": "k"},
    )
    rp.start()
    try:
        rp.wait_for_output(r"listening on", timeout=60)
        for raw in MALFORMED:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(raw)
                assert sock.recv(65536).startswith(b"HTTP/1.0 400 "), raw[:40]
        # A cookie of bytes that are not UTF-8 was a 500 with a traceback (hashing it failed):
        # it is not one of ours, so it is ignored.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /signin HTTP/1.1\r\nHost: x\r\nCookie: pushauth_rp=\xff\xfe\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # A client that hangs up mid-form was an ERROR with a traceback. Expect: 100-continue,
        # so that the form's handler is reading when it goes.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            sock.sendall(head + b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b"csrf_token=T&username=al")
        rp.wait_for_output(r"client went away during POST /signin", timeout=30, stream="stderr")
        # A body sent with Content-Encoding: gzip that is not gzip: read (and failing) after
        # the page was answered, aiohttp logged "Unhandled exception" with a traceback.
        junk = b"not gzip at all" * 20
        for method in (b"GET", b"POST"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = method + b" /signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                head += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n"
                sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(junk) + junk)
                answer = b""
                while chunk := sock.recv(65536):  # until the server closes, after it read the rest
                    answer += chunk
                assert answer.split(b" ", 2)[1] in (b"200", b"400"), answer[:200]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/signin", timeout=10) as r:
            assert r.status == 200  # and it serves on
    finally:
        rp.terminate()
    log = rp.stderr_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


async def test_user_delete_erases_at_the_broker_then_here(
    tmp_path: Path, broker: BrokerProcess, rp: dict[str, Any]
) -> None:
    """`pushauth-rp user delete`: the broker erases the user (the device is told at once),
    then the database forgets them; without --yes, or with the broker down, nothing goes."""
    db_path = tmp_path / "rp.db"
    added = run_cli(
        [RP, "user", "add", "alice", "--password-stdin", "--db", db_path], input="a good password\n"
    )
    assert added.returncode == 0, added.stderr
    user = Database(db_path).user_by_name("alice")
    assert user is not None
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url, user=user.handle)
        env = {"PUSHAUTH_RP_API_KEY": rp["api_key"]}
        argv = [RP, "user", "delete", "alice", "--db", db_path]

        def delete(*more: str, url: str = broker.http_url) -> subprocess.CompletedProcess[str]:
            return run_cli([*argv, "--broker", url, *more], env={**os.environ, **env})

        refused = await asyncio.to_thread(delete)
        assert refused.returncode == 2 and "--yes" in refused.stderr, refused  # a usage error
        down = await asyncio.to_thread(delete, "--yes", url=f"http://127.0.0.1:{free_port()}")
        assert down.returncode == 1 and "nothing deleted" in down.stderr, down
        assert Database(db_path).user_by_name("alice") is not None
        assert [c.id for c in await client.list_credentials(user.handle)] == [dev.cid]
        done = await asyncio.to_thread(delete, "--yes")
        assert done.returncode == 0, done.stderr
        assert "alice deleted" in done.stdout
        assert await dev.frame() == Revoked(cid=dev.cid, reason="removed_by_rp", rid=None)
        assert await client.list_credentials(user.handle) == []
    assert Database(db_path).user_by_name("alice") is None
    again = run_cli([*argv, "--broker", broker.http_url, "--yes"], env={**os.environ, **env})
    assert again.returncode == 1 and "no user" in again.stderr
