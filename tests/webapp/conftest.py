"""Fixtures of the web authenticator's tests (the world is described in
tests/webapp_world.py, which holds the helpers these modules import): a real broker
serving the app, the RP SDK as the relying party, headless Chromium with a phone profile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from shared_broker import new_rp
from support import BrokerProcess, RedisServer
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
async def phone(browser: Browser, app_broker: BrokerProcess) -> AsyncIterator[Phone]:
    p = await new_phone(browser, app_broker.http_url + "/app/")
    yield p
    await p.context.close()
