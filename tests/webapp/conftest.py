"""Fixtures of the web authenticator's tests (the world is described in
tests/webapp_world.py, which holds the helpers these modules import): a real broker
serving the app, the RP SDK as the relying party, headless Chromium with a phone profile.

A failed test keeps each page of its phones (`phone`, and those `phones` made) beside its
logs in artifacts/failed/<test id>/: a screenshot, the HTML and the console, as the demo
RP's browser tests do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from shared_broker import new_rp
from support import FAILED_DIR, BrokerProcess, RedisServer
from webapp_world import Phone, PhoneMaker, chromium_args, chromium_path, new_phone

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
    await keep_pages(request, {"phone": p})  # before its pages close
    await p.context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def phones(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[PhoneMaker]:
    """More phones for a test: `await phones(url, **context_options)`. They are closed
    at teardown, after a failed test's pages are kept (a test that closed them itself, in
    a `finally`, would leave nothing to look at)."""
    made: list[Phone] = []

    async def make(url: str, **options: Any) -> Phone:
        p = await new_phone(browser, url, **options)
        made.append(p)
        return p

    yield make
    await keep_pages(request, {f"phone{n}": p for n, p in enumerate(made, 2)})
    for p in made:
        await p.context.close()


async def keep_pages(request: pytest.FixtureRequest, phones: dict[str, Phone]) -> None:
    """If the test failed: each page of each phone, as tests/conftest.py keeps the sync
    Playwright pages (that hook cannot run async Playwright calls)."""
    dest: Path | None = request.node.stash.get(FAILED_DIR, None)
    if dest is None:
        return
    for label, p in phones.items():
        for n, page in enumerate(p.context.pages, 1):
            name = f"{label}-page{n}"
            try:
                await page.screenshot(path=str(dest / f"{name}.png"), full_page=True, timeout=10_000)
                (dest / f"{name}.html").write_text(f"<!-- {page.url} -->\n{await page.content()}")
                messages = await page.console_messages()
                (dest / f"{name}.console.txt").write_text(
                    "".join(f"{m.type}: {m.text}\n" for m in messages) or "(no console messages)\n"
                )
            except Exception as exc:  # noqa: BLE001 - a closed or crashed page must not hide the failure
                (dest / f"{name}.error.txt").write_text(f"could not keep the page: {exc!r}\n")
