"""`pushauth-demo` (what `make demo` runs): the broker and the demo RP, ready to try.

1. makes a data folder (./demo-data by default),
2. starts `pushauth-broker serve` with its embedded Redis kept in that folder,
3. registers the demo RP at the broker once (the API key is kept in the folder,
   mode 0600, and reused on the next run),
4. creates the demo user with a generated password (kept there too),
5. starts the demo RP, prints the URL, the password and what to do next,
6. stops both, in order, on Ctrl-C (or SIGTERM), or when either one dies.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device_agent.files import atomic_write

from .cli import OneLineParser

PROG = "pushauth-demo"
APP_NAME = "pushauth demo portal"
DEMO_USER = "demo"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class DemoError(Exception):
    """Why the demo cannot start: one line for the person, exit status 1."""


class Interrupted(Exception):
    """Ctrl-C while starting up."""


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Run the pushauth broker and the demo relying party together, ready to try in a browser.",
        epilog="Stop everything with Ctrl-C. Delete the data folder to start from scratch. "
        "Exit codes: 1 it could not start (said why), 2 a usage error (nothing started).",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="default: ./demo-data")
    parser.add_argument("--host", default="127.0.0.1", help="address both listen on (default: 127.0.0.1)")
    parser.add_argument("--broker-port", type=int, default=8700, help="default: 8700")
    parser.add_argument("--port", type=int, default=8701, help="the web app's port (default: 8701)")
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS_OR_CIDR",
        help="a reverse proxy in front of the web app whose X-Forwarded-For is believed (repeatable)",
    )
    return parser


class Child:
    """One server process of the demo, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            # A session of its own: Ctrl-C reaches only the demo, which stops the
            # servers in order (the web app before the broker it talks to).
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def last_lines(self, n: int = 5) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _http_status(url: str, headers: dict[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _wait_ready(child: Child, url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while _http_status(url) != 200:
        if stop.is_set():
            raise Interrupted
        if not child.running():
            raise DemoError(f"{child.name} exited at start (log: {child.log}):\n{child.last_lines()}")
        if time.monotonic() > deadline:
            raise DemoError(f"{child.name} was not ready after {READY_TIMEOUT_S:g} s (log: {child.log})")
        time.sleep(0.1)


def _run(argv: Sequence[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=60,
    )
    if result.returncode in (-signal.SIGINT, 128 + signal.SIGINT):
        # Ctrl-C while a set-up step ran: the terminal sent it to that step too, which is
        # no failure to report (it was one: "python -m relying_party failed (130)").
        raise Interrupted
    if result.returncode != 0:
        raise DemoError(result.stderr.strip() or f"{' '.join(argv[:3])} failed ({result.returncode})")
    return result.stdout


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _register_rp(data: Path, broker_url: str, broker_dir: Path) -> dict[str, Any]:
    """The demo RP's id and API key: the stored one if the broker still accepts it."""
    path = data / "rp.json"
    stored = _read_json(path)
    key = stored.get("api_key") if stored else None
    # One word of printable ASCII, as `rp add` wrote it: an edited file's key with a line
    # break in it was a ValueError from http.client (a traceback); registered anew instead,
    # as when the broker refuses the stored key.
    if isinstance(key, str) and key.isascii() and key.isprintable() and " " not in key:
        status = _http_status(f"{broker_url}/v1/rp", {"Authorization": f"Bearer {key}"})
        if status == 200 and stored is not None:
            return stored
    out = _run(
        [sys.executable, "-m", "broker", "rp", "add", APP_NAME, "--data-dir", str(broker_dir), "--json"]
    )
    try:
        rp = json.loads(out)
    except ValueError:
        rp = None
    if not isinstance(rp, dict) or not isinstance(rp.get("api_key"), str):
        raise DemoError(f"unexpected output from `pushauth-broker rp add`: {out[:200]!r}")
    atomic_write(path, json.dumps(rp).encode(), mode=0o600)
    return rp


def _demo_user(data: Path, db: Path) -> dict[str, str]:
    """The demo user's name and password (made once, then kept in the data folder)."""
    path = data / "demo-user.json"
    stored = _read_json(path)
    rp_cli = [sys.executable, "-m", "relying_party", "user"]
    if stored and isinstance(stored.get("password"), str) and db.exists():
        name = str(stored.get("name", DEMO_USER))
        if not _still_the_password(db, name, stored["password"]):
            # Changed on the site (Security info > Change password): the banner must not
            # show one that no longer works, and cannot know the new one.
            return {"name": name, "password": "(the one you set on the site; the first one no longer works)"}
        return {"name": name, "password": stored["password"]}
    password = "-".join(secrets.token_hex(2) for _ in range(4))  # easy to type, 64 bits
    try:
        _run([*rp_cli, "add", DEMO_USER, "--password-stdin", "--db", str(db)], stdin=password + "\n")
    except DemoError as exc:
        if "already exists" not in str(exc):
            raise
        _run([*rp_cli, "passwd", DEMO_USER, "--password-stdin", "--db", str(db)], stdin=password + "\n")
    user = {"name": DEMO_USER, "password": password}
    atomic_write(path, json.dumps(user).encode(), mode=0o600)
    return user


def _still_the_password(db: Path, name: str, password: str) -> bool:
    from .web.db import Database
    from .web.passwords import verify_password

    try:
        database = Database(db)
        try:
            user = database.user_by_name(name)
        finally:
            database.close()
    except (sqlite3.Error, OSError) as exc:  # a damaged file: a traceback before
        raise DemoError(
            f"cannot open database {db}: {exc}; move it away to start the demo user anew"
        ) from None
    return user is not None and verify_password(user.password_hash, password)


def _banner(url: str, user: dict[str, str], data: Path, app_url: str = "") -> str:
    # The agent from the same installation, so the commands work without an activated venv.
    agent = f"{Path(sys.executable).parent / 'pushauth-agent'} --home {data / 'agent'}"
    return f"""
  pushauth demo is running.

    Open        {url}
    User name   {user["name"]}
    Password    {user["password"]}
    Phone app   {app_url or "(not served)"}  (the web authenticator: open it in a browser on
                this computer and paste the setup link there, instead of steps 1 and 3)

  What to do next:
    1. In another terminal, start the app (the first time it asks for a new
       passphrase to protect its keys), and leave it running:
         {agent} listen
    2. Sign in with the user name and password above. You land on Security info.
    3. Choose "Add sign-in method" > Authenticator app. The page shows a QR code
       and the setup link. Copy the link and, in a third terminal, run
         {agent} enroll --name 'My laptop' 'LINK'
       Or, for steps 1 and 3 at once, the full screen, where + takes the link or
       the path of a screenshot of the QR code:
         {agent}
    4. The page sends a test notification to the new device only: type the
       number it shows into `listen`. The device now approves sign-ins.
    5. Sign out and sign in again: type the number into `listen` to approve, or n
       to deny. Or choose "Use a verification code instead" with a code from
         {agent} code
    6. Security info also has recovery codes, for when the app is lost. Lost it
       anyway? An administrator issues a temporary access pass:
         {Path(sys.executable).parent / "pushauth-rp"} user tap {user["name"]} --db {data / "rp.db"}

  Data and logs: {data}/   Press Ctrl-C to stop everything.
"""


def run(args: argparse.Namespace) -> None:
    data: Path = args.data_dir.resolve()
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a file of that name, a folder it may not write in
        raise DemoError(f"cannot use {data} as the data folder: {exc.strerror}") from None
    broker_dir = data / "broker"
    host = args.host
    broker_url = f"http://{host}:{args.broker_port}"
    url = f"http://{host}:{args.port}"
    children: list[Child] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"starting the broker on {broker_url} (embedded Redis in {broker_dir}) ...", flush=True)
        broker = Child(
            "broker",
            [
                sys.executable,
                "-m",
                "broker",
                "serve",
                "--host",
                host,
                "--port",
                str(args.broker_port),
                "--data-dir",
                str(broker_dir),
                "--webapp",  # the web authenticator at /app/ (deploy/webapp.md)
                # Web Push wake-ups for it (they need the browser's push service online).
                "--push-key",
                str(broker_dir / "vapid.pem"),
            ],
            data / "broker.log",
        )
        children.append(broker)
        _wait_ready(broker, f"{broker_url}/healthz", stop)
        # localhost, not 127.0.0.1: WebAuthn (the app's optional screen-lock check) needs a name.
        app_host = "localhost" if host == "127.0.0.1" else host
        app_url = f"http://{app_host}:{args.broker_port}/app/"
        rp = _register_rp(data, broker_url, broker_dir)
        db = data / "rp.db"
        user = _demo_user(data, db)
        print(f"starting the demo web app on {url} ...", flush=True)
        web = Child(
            "web app",
            [
                sys.executable,
                "-m",
                "relying_party",
                "serve",
                "--host",
                host,
                "--port",
                str(args.port),
                "--db",
                str(db),
                "--broker",
                broker_url,
                "--name",
                APP_NAME,
                "--app-url",  # the setup page links to the phone app
                app_url,
                *(f"--trusted-proxy={proxy}" for proxy in args.trusted_proxy),
            ],
            data / "web.log",
            env={"PUSHAUTH_RP_API_KEY": rp["api_key"]},
        )
        children.append(web)
        _wait_ready(web, f"{url}/signin", stop)
        print(_banner(url, user, data, app_url), flush=True)
        while not stop.wait(0.5):
            for child in children:
                if not child.running():
                    raise DemoError(
                        f"{child.name} stopped unexpectedly (log: {child.log}):\n{child.last_lines()}"
                    )
        print("\nstopping ...", flush=True)
    except Interrupted:
        print("\nstopping ...", flush=True)
    finally:
        for child in reversed(children):
            child.stop()
    print("stopped.", flush=True)


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A wrong port or proxy is a usage error (exit 2) before anything starts: it was
    found by the web app after the broker had started, and said as the web app's exit (1)."""
    from .web import proxies

    for option, port in (("--broker-port", args.broker_port), ("--port", args.port)):
        if not 1 <= port <= 65535:
            parser.error(f"{option} must be 1..65535, not {port}")
    if args.port == args.broker_port:
        parser.error(f"--port and --broker-port must differ (both {args.port})")
    try:
        proxies.parse_networks(args.trusted_proxy)
    except ValueError as exc:
        parser.error(f"--trusted-proxy: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    try:
        run(args)
    except DemoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
