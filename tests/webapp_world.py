"""The web authenticator's test world: a real broker serving the app (`serve --webapp`)
on its own Redis, the RP SDK as the relying party, and headless Chromium with a phone
profile (390x844, touch, mobile) driven by Playwright's async API.

Everything runs on one event loop per test module (Playwright's sync API would mark the
loop as running and break the async tests after it). Screenshots of every screen go to
artifacts/screenshots/webapp-*.png. The fixtures (app_broker, browser, rp, phone, phones, opened) are in
tests/webapp/conftest.py, next to the tests; the helpers (Phone, new_phone, enrolled, ...) here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from browser.accessibility import assert_no_axe_violations_async
from playwright.async_api import Browser, BrowserContext, Page
from support import FAILED_DIR

from protocol.uri import TotpParams
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "docs" / "test-vectors.json").read_text())
SHOTS = ROOT / "artifacts" / "screenshots"
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
# One generous deadline for anything the page must show: a deadline, not a measure (each
# wait ends as soon as the page shows it). Generous because of Argon2id: 0.2 s per
# derivation in WebAssembly on an idle machine (0.8 s in JavaScript, which took up to 12 s
# for a save to the server while four test workers and their browsers shared two cores).
WAIT_MS = 60_000


def chromium_args() -> list[str]:
    from browser.conftest import CHROMIUM_ARGS  # the same flags as the demo RP's browser tests

    return list(CHROMIUM_ARGS)


def chromium_path(*, full: bool = False) -> str:
    from browser.conftest import chromium_path as find

    return find(full=full)


@dataclass
class Phone:
    """One phone: a browser context (its own IndexedDB) with the app open."""

    context: BrowserContext
    page: Page
    url: str

    async def open(self) -> Page:
        self.page = await self.context.new_page()
        await self.page.goto(self.url)
        await self.page.locator("body[data-ready='1']").wait_for(timeout=WAIT_MS)
        return self.page

    async def reopen_on_test_clock(self) -> Page:
        """The app opened again with the page's clock the test's (Playwright's installed
        clock: it runs on until the test moves or pauses it), once it is connected."""
        await self.context.clock.install()
        await self.page.close()
        page = await self.open()
        await page.locator("#conn[data-state='online']").wait_for()
        return page

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"webapp-{name}.png"), full_page=True)

    async def axe_clean(self, what: str) -> None:
        await assert_no_axe_violations_async(self.page, what)

    async def add_account(self, uri: str, device_name: str = "Test phone") -> str:
        """Paste the link on the Add account screen; returns the new account's cid."""
        page = self.page
        await page.get_by_role("button", name="Add account").click()
        await page.get_by_label("Setup link").fill(uri)
        await page.get_by_label("Name of this phone").fill(device_name)
        before = set(await page.locator("#accounts li").evaluate_all("els => els.map(e => e.dataset.cid)"))
        await page.get_by_role("button", name="Add", exact=True).click()
        # Attached, not visible: the RP's test request may already cover the list.
        await page.locator("#accounts li").nth(len(before)).wait_for(state="attached", timeout=WAIT_MS)
        after = await page.locator("#accounts li").evaluate_all("els => els.map(e => e.dataset.cid)")
        (cid,) = set(after) - before
        return cid

    async def prompt(self, challenge_id: str) -> None:
        await self.page.locator(f"#prompt:not([hidden])[data-ch='{challenge_id}']").wait_for(timeout=WAIT_MS)

    async def no_prompt(self) -> None:
        await self.page.locator("#prompt[hidden]").wait_for(state="attached", timeout=WAIT_MS)

    async def type_number(self, number: str) -> None:
        for digit in number:
            await self.page.locator(f"#keypad button[data-key='{digit}']").tap()

    async def toast(self, words: str) -> None:
        await self.page.locator("#toast", has_text=words).wait_for(timeout=WAIT_MS)

    async def _backup_view(self) -> None:
        if await self.page.locator("#backup[hidden]").count():
            await self.page.get_by_role("button", name="Back up or restore").tap()

    async def save_backup(self, path: Path, passphrase: str) -> None:
        """Back up to a file on the Backup screen; the download is saved at `path`."""
        page = self.page
        await self._backup_view()
        await page.get_by_label("Passphrase (at least 12").fill(passphrase)
        await page.get_by_label("The same passphrase again").fill(passphrase)
        async with page.expect_download() as info:
            await page.get_by_role("button", name="Save backup file").tap()
        download = await info.value
        assert re.fullmatch(r"pushauth-\d{4}-\d\d-\d\d\.backup", download.suggested_filename)
        await download.save_as(path)
        await page.locator("#backup-status", has_text="saved as a file").wait_for(timeout=WAIT_MS)

    async def save_to_server(self, passphrase: str) -> str:
        """Save a copy on the server; returns the backup code the app shows."""
        page = self.page
        await self._backup_view()
        await page.get_by_label("Passphrase (at least 12").fill(passphrase)
        await page.get_by_label("The same passphrase again").fill(passphrase)
        await page.get_by_role("button", name="Save to the server").tap()
        # The code, or the error that says why there is none (at once, not at the deadline).
        await page.locator("#backup-code:not([hidden]), #backup-error:not([hidden])").wait_for(
            timeout=WAIT_MS
        )
        error = page.locator("#backup-error:not([hidden])")
        assert not await error.count(), f"the save to the server failed: {await error.inner_text()}"
        shown = page.locator("#backup-code:not([hidden])")
        found = re.search(r"PAB1(-[0-9A-Z]{4}){8}", await shown.inner_text())
        assert found, await shown.inner_text()
        return found.group(0)

    async def restore(self, path: Path, passphrase: str, name: str = "New phone") -> None:
        """Start a restore from the file at `path` (the caller waits for what follows)."""
        await self._restore_fields(passphrase, name)
        await self.page.get_by_label("Backup file").set_input_files(str(path))
        await self.page.get_by_role("button", name="Restore from the file").tap()

    async def restore_from_server(
        self, address: str, code: str, passphrase: str, name: str = "New phone"
    ) -> None:
        """Start a restore of the server copy at `address` (the caller waits for what follows)."""
        await self._restore_fields(passphrase, name)
        await self.page.get_by_label("Server address").fill(address)
        await self.page.get_by_label("Backup code").fill(code)
        await self.page.get_by_role("button", name="Restore from the server").tap()

    async def _restore_fields(self, passphrase: str, name: str) -> None:
        await self._backup_view()
        await self.page.get_by_label("The backup's passphrase").fill(passphrase)
        await self.page.get_by_label("This phone's name").fill(name)


# The `phones` fixture (tests/webapp/conftest.py): `await phones(url, **context_options)`.
PhoneMaker = Callable[..., Awaitable["Phone"]]


async def new_phone(browser: Browser, url: str, **options: Any) -> Phone:
    """A fresh phone (its own browser context and storage) with the app open at `url`."""
    context = await browser.new_context(**{**PHONE, **options})
    context.set_default_timeout(WAIT_MS)
    p = Phone(context, None, url)  # type: ignore[arg-type]
    await p.open()
    return p


async def enrolled(
    rp: PushAuthClient,
    phone: Phone,
    user: str = "alice",
    *,
    confirm: bool = True,
    totp: TotpParams | None = None,
    account: str | None = None,
    recoverable: bool = False,
    device_name: str = "Test phone",
) -> dict[str, Any]:
    """An account added by pasting the RP's link (with its `es` and a TOTP secret); the
    RP checks the binding and stores the key (`credential`), and confirms it."""
    totp = totp or new_totp()
    label = account or f"{user}@contoso.example"
    enrollment = await rp.create_enrollment(user, label, totp=totp, recoverable=recoverable)
    assert enrollment.uri is not None
    cid = await phone.add_account(enrollment.uri, device_name)
    done = await rp.wait_enrollment(enrollment, timeout=10)
    assert done.completed and done.credential is not None and done.credential.id == cid
    if confirm:
        await rp.confirm_credential(cid)
    return {
        "cid": cid,
        "key": done.credential.public_key,
        "credential": done.credential,
        "totp": totp,
        "uri": enrollment.uri,
        "user": user,
    }


def now_ms() -> int:
    return int(time.time() * 1000)


T = TypeVar("T", BrowserContext, Browser)


class Opened:
    """Browser contexts and browsers a test opens: closed at teardown, after a failed
    test's pages are kept (closed by the test itself, in a `finally`, they would be gone
    before anything could be kept). `opened(label, thing)` returns `thing`; the pages of
    a browser's contexts are kept as "<label>", "<label>2", ..."""

    def __init__(self) -> None:
        self.things: list[tuple[str, BrowserContext | Browser]] = []

    def __call__(self, label: str, thing: T) -> T:
        self.things.append((label, thing))
        return thing

    def contexts(self) -> dict[str, BrowserContext]:
        found: dict[str, BrowserContext] = {}
        for label, thing in self.things:
            contexts = thing.contexts if isinstance(thing, Browser) else [thing]
            for n, context in enumerate(contexts, 1):
                found[label if n == 1 else f"{label}{n}"] = context
        return found

    async def close(self) -> None:
        for _, thing in reversed(self.things):
            await thing.close()


async def keep_pages(request: pytest.FixtureRequest, contexts: dict[str, BrowserContext]) -> None:
    """If the test failed: each page of each browser context, as tests/conftest.py keeps
    the sync Playwright pages (that hook cannot run async Playwright calls)."""
    dest: Path | None = request.node.stash.get(FAILED_DIR, None)
    if dest is None:
        return
    for label, context in contexts.items():
        for n, page in enumerate(context.pages, 1):
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
