"""Fixtures of the web authenticator's tests (the world is described in
tests/webapp_world.py, which holds the helpers these modules import): a real broker
serving the app, the RP SDK as the relying party, headless Chromium with a phone profile.

A failed test keeps each page of its phones (`phone`, those `phones` made, and any browser
or context given to `opened`) beside its logs in artifacts/failed/<test id>/: a
screenshot, the HTML and the console, as the demo RP's browser tests do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from shared_broker import new_rp
from support import BrokerProcess, RedisServer
from webapp_world import Opened, Phone, PhoneMaker, chromium_args, chromium_path, keep_pages, new_phone

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
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    things = Opened()
    yield things
    try:
        await keep_pages(request, things.contexts())
    finally:
        await things.close()


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Browser, app_broker: BrokerProcess, opened: Opened) -> Phone:
    p = await new_phone(browser, app_broker.http_url + "/app/")
    opened("phone", p.context)
    return p


@pytest_asyncio.fixture(loop_scope="module")
async def phones(browser: Browser, opened: Opened) -> PhoneMaker:
    """More phones for a test: `await phones(url, **context_options)`, closed at teardown
    after a failed test's pages are kept (see `Opened`)."""
    made = 1  # the `phone` fixture's is "phone"

    async def make(url: str, **options: Any) -> Phone:
        nonlocal made
        p = await new_phone(browser, url, **options)
        made += 1
        opened(f"phone{made}", p.context)
        return p

    return make
