"""The browser tests' world: a real broker (on its own Redis), the demo RP as a
`pushauth-rp serve` subprocess, `pushauth-agent` as the phone, and headless Chromium
driven by Playwright. Screenshots of every page go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from shared_broker import broker_on_own_redis
from support import AGENT, BrokerProcess, ManagedProcess, console_script, free_port, run_cli, wait_until
from support.hostile_broker import HostileBroker
from support.waiting import http_status

RP_CLI = console_script("pushauth-rp")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# This machine has no network beyond loopback: nothing may try to reach out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
# The agent keeps its keys in a vault: the passphrase for scripts, and the cheapest
# key derivation, which the agent allows for tests only.
AGENT_ENV = {"PUSHAUTH_AGENT_PASSPHRASE": "phone passphrase", "PUSHAUTH_AGENT_KDF": "test-insecure"}
PUSH_TTL = 15  # seconds: short enough for the expiry test, long enough to answer


def chromium_path(*, full: bool = False) -> str:
    """Chromium's headless shell, the build Playwright itself runs headless: these tests
    measured half the browser CPU with it (17 s against 35 s for this directory's sign-in
    file). With `full`, the whole browser, for what the shell lacks: the fake camera and
    Web Push (test_webapp_scan.py, test_webapp_push.py)."""
    names = ("chromium", "chromium-browser") if full else ("chromium-headless-shell",)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"{names[0]} is not installed: run scripts/ensure-tools test")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: while Playwright's sync API lives it marks its event
    # loop as running in the main thread, and pytest-asyncio then fails every async
    # test with "Runner.run() cannot be called from a running event loop". xdist's
    # scheduler orders files by their number of tests, so other files can follow
    # this one on the same worker (4 tests of test_broker_fatigue.py failed so).
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker (on its own Redis) for each module: one per test cost this directory
    about 1 s of CPU a test (188 -> 172 s with -n 2). Each test still has its own RP
    (conftest's `rp`), so users, devices and policies never meet, and its own demo RP
    process. None of these tests stops or restarts the broker; one that must takes
    conftest's `own_broker`."""
    yield from broker_on_own_redis(tmp_path_factory, "browser")


@dataclass
class Agent:
    """The phone: `pushauth-agent --home DIR ...` as subprocesses."""

    home: Path

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run_cli([AGENT, "--home", str(self.home), *args], timeout=timeout, env=AGENT_ENV)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"agent {args[0]} failed ({result.returncode}): {result.stderr}"
        return result.stdout

    def pending(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("pending", "--json"))

    def wait_request(self, exclude: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
        """The next sign-in request on the phone (one it has not seen before)."""

        def fresh() -> dict[str, Any] | None:
            return next((r for r in self.pending() if r["id"] not in exclude), None)

        return wait_until(fresh, timeout=20, interval=0.3, message="a request on the agent")  # type: ignore[return-value]

    def accounts(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("accounts", "--json"))


@dataclass
class Stack:
    url: str
    user: str
    password: str
    agent: Agent
    web: ManagedProcess
    broker: BrokerProcess
    shots: Path
    seen: set[str] = field(default_factory=set)
    uri: str | None = None

    def shot(self, page: Page, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def sign_in_password(self, page: Page, *, password: str | None = None) -> None:
        page.goto(self.url + "/signin")
        page.get_by_label("User name").fill(self.user)
        page.get_by_label("Password").fill(password or self.password)
        page.get_by_role("button", name="Sign in").click()

    def number(self, page: Page) -> str:
        text = page.locator("#push-number .number-value").inner_text().strip()
        assert re.fullmatch(r"[0-9]{2,8}", text), text
        return text

    def answer(self, *args: str) -> dict[str, Any]:
        """Wait for the new request on the phone and answer it: ('approve', '--number', N) etc."""
        request = self.agent.wait_request(self.seen)
        self.seen.add(request["id"])
        # "--": a request id may start with "-" (base64url), which argparse would take for an option.
        self.agent.ok(*args, "--", request["id"])
        return request

    def status(self, page: Page, status: str) -> None:
        page.locator(f'#push-status[data-status="{status}"]').wait_for(timeout=20_000)

    def enroll(self, page: Page, prefix: str, *, from_screenshot: bool = False) -> None:
        """Password sign-in -> Security info -> add the app -> approve the test push.
        With `from_screenshot`, the agent is given a screenshot of the setup page (what
        Chromium draws, as a person's screenshot would be), not the link's text."""
        self.sign_in_password(page)
        page.wait_for_url("**/security")
        self.shot(page, f"{prefix}-01-security-info-empty")
        # Named without its "+" (a screen reader said "plus Add sign-in method").
        page.get_by_role("link", name="Add sign-in method", exact=True).click()
        self.shot(page, f"{prefix}-02-add-method")
        page.get_by_role("button", name="Add").click()
        page.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
        self.uri = page.get_by_role("textbox", name="Setup link").input_value()
        assert self.uri.startswith("pushauth://enroll?")
        assert page.locator(".qr-frame svg").count() == 1
        self.shot(page, f"{prefix}-03-qr-code")
        given = self.uri
        if from_screenshot:
            given = str(self.agent.home.parent / f"{prefix}-setup-screenshot.png")
            page.screenshot(path=given)  # the visible screen only, as a person's screenshot
        self.agent.ok("enroll", "--name", "Test phone", given)
        # The page sees the device register, then sends the test notification.
        page.wait_for_url("**/security/test-notification")
        self.shot(page, f"{prefix}-04-test-notification")
        self.answer("approve", "--number", self.number(page))
        page.wait_for_url("**/security")
        assert "Test phone" in page.locator("#devices").inner_text()
        self.shot(page, f"{prefix}-05-security-info-device")

    def sign_out(self, page: Page) -> None:
        page.get_by_role("button", name="Sign out", exact=True).click()  # not "Sign out everywhere"
        page.wait_for_url("**/signin")


@pytest.fixture
def stack(broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest) -> Stack:
    return start_stack(broker, rp, tmp_path)


@pytest.fixture
def new_stack(broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path) -> Callable[..., Stack]:
    """A stack the test starts itself: `new_stack(env={...})` (see start_stack)."""
    return lambda **options: start_stack(broker, rp, tmp_path, **options)


@pytest.fixture
def hostile_stack(
    broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[Stack, HostileBroker]]:
    """The demo RP talking to a compromised broker: the real one behind a proxy that can
    rewrite what the RP reads (tests/support/hostile_broker.py)."""
    with HostileBroker(broker.http_url) as hostile:
        yield start_stack(broker, rp, tmp_path, broker_url=hostile.http_url), hostile
        hostile.check()


def start_stack(
    broker: BrokerProcess,
    rp: dict[str, Any],
    tmp_path: Path,
    *,
    broker_url: str = "",
    app_url: str = "",
    env: dict[str, str] | None = None,
) -> Stack:
    """The demo RP as a process (`env`: more of its environment, e.g. libfaketime's)."""
    db = tmp_path / "rp.db"
    user = "alice"
    added = run_cli([RP_CLI, "user", "add", user, "--password-stdin", "--db", db], input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web = ManagedProcess(
        [
            RP_CLI,
            "serve",
            "--port",
            str(port),
            "--db",
            db,
            "--broker",
            broker_url or broker.http_url,
            "--name",
            "Browser Test Portal",
            "--ttl",
            str(PUSH_TTL),
            *(["--app-url", app_url] if app_url else []),
        ],
        log_dir=tmp_path / "logs",
        name="pushauth-rp",
        env={"PUSHAUTH_RP_API_KEY": rp["api_key"], **(env or {})},
        ready=lambda _p: http_status(url + "/signin", timeout=1.0) == 200,
    ).start()
    return Stack(
        url=url,
        user=user,
        password=PASSWORD,
        agent=Agent(tmp_path / "phone"),
        web=web,
        broker=broker,
        shots=ARTIFACTS,
    )


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    """A phone-sized browser (the sign-in pages must work at this width)."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    context.set_default_timeout(20_000)
    pg = context.new_page()
    yield pg
    context.close()


def totp_now(uri: str, offset_steps: int = 0) -> str:
    """The current code for the secret in an enrollment URI, from oathtool (an
    independent implementation, as a second app would compute it)."""
    from urllib.parse import parse_qs, urlsplit

    q = parse_qs(urlsplit(uri).query)
    secret = q["secret"][0]
    argv = ["oathtool", "--totp", "-b", secret, "--digits", q["digits"][0]]
    if offset_steps:
        argv.append(f"--now=now {'+' if offset_steps > 0 else '-'} {abs(offset_steps) * 30} seconds")
    oathtool = shutil.which("oathtool")
    assert oathtool, "oathtool is not installed: run scripts/ensure-tools test"
    out = subprocess.run([oathtool, *argv[1:]], capture_output=True, text=True, check=True)
    return out.stdout.strip()


TotpNow = Callable[..., str]


@pytest.fixture
def totp_code() -> TotpNow:
    return totp_now
