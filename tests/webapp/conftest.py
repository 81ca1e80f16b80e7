"""Fixtures of the web authenticator's tests (the world is described in
tests/webapp_world.py, which holds the helpers these modules import): a real broker
serving the app, the RP SDK as the relying party, headless Chromium with a phone profile.

A failed test keeps each open page (screenshot, HTML, console) beside its logs in
artifacts/failed/<test id>/, as the demo RP's browser tests do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from shared_broker import new_rp
from support import FAILED_DIR, BrokerProcess, RedisServer
from webapp_world import Phone, chromium_args, chromium_path, new_phone

from relying_party.sdk import PushAuthClient


@pytest.fixture(scope="module")
def app_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("webapp")
    with RedisServer(base / "redis") as redis_server:
        node = BrokerProcess(
            log_dir=base / "logs", redis_url=redis_server.url, node="webapp", extra_args=["--webapp"]
        ).start()
        yield node
        node.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    # A module that needs what only the full browser has says FULL_CHROMIUM = True.
    full = getattr(request.module, "FULL_CHROMIUM", False)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path(full=full), args=chromium_args())
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def rp(app_broker: BrokerProcess) -> AsyncIterator[PushAuthClient]:
    created = await new_rp(app_broker, "Contoso Portal")
    async with PushAuthClient(app_broker.http_url, created["api_key"]) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def phone(
    browser: Browser, app_broker: BrokerProcess, request: pytest.FixtureRequest
) -> AsyncIterator[Phone]:
    p = await new_phone(browser, app_broker.http_url + "/app/")
    yield p
    await keep_pages(request, browser)  # before its pages close
    await p.context.close()


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def _pages_of_a_failed_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """For a test that opens its own phones (new_phone) rather than taking `phone`: the
    pages still open at teardown (a test that closes its phones in `finally` keeps none)."""
    yield
    if "browser" in request.fixturenames and "phone" not in request.fixturenames:
        await keep_pages(request, request.getfixturevalue("browser"))


async def keep_pages(request: pytest.FixtureRequest, browser: Browser) -> None:
    """If the test failed: every page open in the browser, as tests/conftest.py keeps the
    sync Playwright pages (that hook cannot run async Playwright calls)."""
    dest: Path | None = request.node.stash.get(FAILED_DIR, None)
    if dest is None:
        return
    for c, context in enumerate(browser.contexts, 1):
        for n, page in enumerate(context.pages, 1):
            name = f"phone{c}-page{n}"
            try:
                await page.screenshot(path=str(dest / f"{name}.png"), full_page=True, timeout=10_000)
                (dest / f"{name}.html").write_text(f"<!-- {page.url} -->\n{await page.content()}")
                messages = await page.console_messages()
                (dest / f"{name}.console.txt").write_text(
                    "".join(f"{m.type}: {m.text}\n" for m in messages) or "(no console messages)\n"
                )
            except Exception as exc:  # noqa: BLE001 - a closed or crashed page must not hide the failure
                (dest / f"{name}.error.txt").write_text(f"could not keep the page: {exc!r}\n")
