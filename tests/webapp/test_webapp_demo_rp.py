"""The web authenticator with the demo RP, as a person uses them: set up on the demo
RP's Security info page (password, "Add sign-in method", the setup link pasted into the
phone app, the test notification approved with its number), then a sign-in approved on
the phone, then a second setup link for the same account, which the app asks about first.
The demo RP is a real `pushauth-rp serve` process; two browser contexts: a desktop for
the RP's pages and a phone for the app.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from browser.conftest import Stack, start_stack
from playwright.async_api import Browser, Page
from shared_broker import new_rp
from support import BrokerProcess
from webapp_world import WAIT_MS, Opened, PhoneMaker

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def number(page: Page) -> str:
    text = (await page.locator("#push-number .number-value").inner_text()).strip()
    assert re.fullmatch(r"[0-9]{2,8}", text), text
    return text


@pytest_asyncio.fixture(loop_scope="module")
async def demo(
    app_broker: BrokerProcess, browser: Browser, tmp_path: Path, opened: Opened
) -> AsyncIterator[tuple[Stack, Page, str]]:
    """The demo RP on the app broker (its setup page links the phone app), a desktop
    browser page for it, and the phone app's URL."""
    app_url = app_broker.http_url + "/app/"
    stack = start_stack(
        app_broker, await new_rp(app_broker, "Browser Test Portal"), tmp_path, app_url=app_url
    )
    desktop_context = opened("desktop", await browser.new_context(viewport={"width": 1100, "height": 800}))
    desktop_context.set_default_timeout(WAIT_MS)
    try:
        yield stack, await desktop_context.new_page(), app_url
    finally:
        stack.web.cleanup()


async def setup_link(desktop: Page, stack: Stack) -> str:
    """Sign in to the demo RP as its user and choose Add sign-in method: the setup link
    the setup page shows (the page stays open)."""
    await desktop.goto(stack.url + "/signin")
    await desktop.get_by_label("User name").fill(stack.user)
    await desktop.get_by_label("Password").fill(stack.password)
    await desktop.get_by_role("button", name="Sign in").click()
    await desktop.wait_for_url("**/security")
    await desktop.get_by_role("link", name="Add sign-in method").click()
    await desktop.get_by_role("button", name="Add").click()
    await desktop.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    return await desktop.get_by_role("textbox", name="Setup link").input_value()


async def age_reauth(page: Page, db: Path) -> None:
    """Make this browser's second factor older than the re-authentication window (as
    tests/browser/test_browser_fraud_activity.py does): its session row gets verified_at 0."""
    cookie = next(c["value"] for c in await page.context.cookies() if c["name"] == "pushauth_rp")
    with sqlite3.connect(db) as conn:
        key = hashlib.sha256(cookie.encode()).digest()
        (data,) = conn.execute("SELECT data FROM sessions WHERE id_hash = ?", (key,)).fetchone()
        conn.execute(
            "UPDATE sessions SET data = ? WHERE id_hash = ?",
            (json.dumps({**json.loads(data), "verified_at": 0}), key),
        )


async def test_set_up_on_the_demo_rp_and_sign_in_with_the_phone_app(
    demo: tuple[Stack, Page, str], phones: PhoneMaker, tmp_path: Path
) -> None:
    stack, desktop, app_url = demo
    link = await setup_link(desktop, stack)
    # The page names both ways: the phone app (where it is, linked: `--app-url`), its
    # Add account with the QR code or the pasted link, and the agent's command.
    steps = await desktop.locator(".steps").inner_text()
    for words in ("Add account", "Scan QR code", "paste it there", "pushauth-agent enroll"):
        assert words in steps, steps
    assert await desktop.get_by_role("link", name=app_url).get_attribute("href") == app_url

    phone = await phones(app_url)  # the app where the page said it is
    await phone.add_account(link, device_name="Alice's phone")
    # The RP saw the device register and sent its test notification.
    await desktop.wait_for_url("**/security/test-notification")
    test_number = await number(desktop)
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    # Asked as what it is, the setup's test (docs/protocol.md 15.1), with its marker
    # shown among the details (the answer signs it).
    assert await phone.page.locator("#prompt-title").inner_text() == "Finish adding this phone?"
    assert (
        await phone.page.locator("#number-label").inner_text() == "Enter the number shown on the setup page"
    )
    details = await phone.page.locator("#prompt-details").inner_text()
    assert "purpose" in details and "setup test" in details, details
    await phone.shot("20-demo-rp-test-notification")
    await phone.type_number(test_number)
    await phone.page.get_by_role("button", name="Approve").tap()
    await desktop.wait_for_url("**/security")
    assert "Alice's phone" in await desktop.locator("#devices").inner_text()

    # A sign-in: password, then the number approved on the phone.
    await desktop.get_by_role("button", name="Sign out", exact=True).click()
    await desktop.wait_for_url("**/signin")
    await desktop.get_by_label("User name").fill(stack.user)
    await desktop.get_by_label("Password").fill(stack.password)
    await desktop.get_by_role("button", name="Sign in").click()
    sign_in_number = await number(desktop)
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    details = await phone.page.locator("#prompt-details").inner_text()
    assert "Browser Test Portal" in details and "127.0.0.1" in details
    assert await phone.page.locator("#prompt-title").inner_text() == "Are you trying to sign in?"
    assert (
        await phone.page.locator("#number-label").inner_text()
        == "Enter the number shown on the sign-in screen"
    )
    await phone.shot("21-demo-rp-sign-in")
    await phone.type_number(sign_in_number)
    await phone.page.get_by_role("button", name="Approve").tap()
    await desktop.wait_for_url("**/account")
    await phone.toast("Approved")

    # "Verify it's you" before removing the phone, long after the sign-in: the request is
    # worded as a re-authentication (`purpose` = "verify", docs/protocol.md 15.1), not as
    # a sign-in, its number on the page asking to verify, the marker shown (it is signed).
    await age_reauth(desktop, tmp_path / "rp.db")  # start_stack's database
    await desktop.goto(stack.url + "/security")
    await desktop.get_by_role("link", name="Remove Alice's phone").click()
    await desktop.wait_for_url("**/reauth")
    await desktop.get_by_role("button", name="Send a request to my app").click()
    await desktop.wait_for_url("**/reauth/push")
    verify_number = await number(desktop)
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    assert await phone.page.locator("#prompt-title").inner_text() == "Is this you verifying your identity?"
    assert (
        await phone.page.locator("#number-label").inner_text()
        == "Enter the number shown on the page asking you to verify"
    )
    details = await phone.page.locator("#prompt-details").inner_text()
    assert "purpose" in details and "verify" in details, details
    await phone.shot("22-demo-rp-verify-its-you")
    await phone.type_number(verify_number)
    await phone.page.get_by_role("button", name="Approve").tap()
    await desktop.wait_for_url(re.compile(r".*/security/devices/[A-Za-z0-9_-]+/remove$"))
    await phone.toast("Approved. You can return to the page that asked you to verify.")
    await desktop.get_by_role("link", name="Cancel").click()  # the phone stays

    # A second setup link for the same account, on the same phone: the app says it
    # has that account already and asks first; Cancel adds nothing (the link stays
    # unused: "Add again" below enrolls with it), "Add again" a second device.
    await desktop.goto(stack.url + "/security")
    await desktop.get_by_role("link", name="Add sign-in method").click()
    await desktop.get_by_role("button", name="Add").click()
    await desktop.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    again = await desktop.get_by_role("textbox", name="Setup link").input_value()
    page = phone.page
    for answer in ("Cancel", "Add again"):
        await page.get_by_role("button", name="Add account").click()
        await page.get_by_label("Setup link").fill(again)
        await page.get_by_role("button", name="Add", exact=True).click()
        question = page.get_by_role("group", name="is on this phone already")
        # The question, or (what the app did before it asked) the account added again.
        await page.locator("#again:not([hidden]), #toast:has-text('Added')").first.wait_for()
        assert await question.is_visible(), await page.locator("#toast").inner_text()
        said = await question.inner_text()
        assert "This phone already has" in said and "Browser Test Portal" in said, said
        assert "second sign-in method" in said and "two devices" in said, said
        assert await page.evaluate("document.activeElement.id") == "again-title"
        if answer == "Cancel":
            await phone.shot("35-add-the-same-account-again")
            await phone.axe_clean("the question before adding an account again")
        await question.get_by_role("button", name=answer).click()
        if answer == "Cancel":
            await phone.toast("Nothing was added")
            assert await page.locator("#accounts li").count() == 1
            assert "Waiting for your device" in await desktop.locator("#setup-status").inner_text()
    await page.locator("#accounts li").nth(1).wait_for(state="attached")
    await desktop.wait_for_url("**/security/test-notification")
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    await phone.type_number(await number(desktop))
    await phone.page.get_by_role("button", name="Approve").tap()
    await desktop.wait_for_url("**/security")
    assert await desktop.locator("#devices .device").count() == 2


async def test_on_the_phone_itself_the_setup_page_opens_the_app_with_its_link(
    demo: tuple[Stack, Page, str], phones: PhoneMaker
) -> None:
    """A phone cannot scan its own screen: the setup page, seen on the phone, links to
    the app with the setup link in the address's fragment. The app fills its Add form
    with it, says whose it is, takes it out of the address, and adds nothing until Add
    is tapped; then the setup goes on as with a scanned code."""
    stack, _, app_url = demo
    phone = await phones(app_url)  # the app, installed on this phone already
    rp_page = await phone.page.context.new_page()  # the service's page on the same phone
    link = await setup_link(rp_page, stack)
    opener = rp_page.get_by_role("link", name="open the app with this setup link")
    assert await opener.get_attribute("href") == f"{app_url}#enroll={quote(link, safe='')}"
    async with phone.page.context.expect_page() as opened_app:
        await opener.click()
    app = await opened_app.value
    await app.locator("#add:not([hidden])").wait_for()
    assert await app.get_by_label("Setup link").input_value() == link
    status = await app.locator("#add-status").inner_text()
    assert "setup link from Browser Test Portal for" in status and "Tap Add" in status, status
    assert "#" not in app.url  # the link is not left in the address (history, bookmarks)
    assert await app.locator("#accounts li").count() == 0  # nothing added before the tap
    await app.get_by_role("button", name="Add", exact=True).click()
    await rp_page.wait_for_url("**/security/test-notification")
    await app.locator("#prompt:not([hidden])").wait_for()
    test_number = await number(rp_page)
    for digit in test_number:
        await app.locator(f"#keypad button[data-key='{digit}']").tap()
    await app.get_by_role("button", name="Approve").tap()
    await rp_page.wait_for_url("**/security")
    assert await rp_page.locator("#devices .device").count() == 1

    # The app open already (an installed app's window): the link arrives as a new fragment.
    await app.evaluate(
        "link => { location.hash = 'enroll=' + encodeURIComponent(link); }", "pushauth://enroll?x"
    )
    await app.locator("#add:not([hidden])").wait_for()
    assert await app.get_by_label("Setup link").input_value() == "pushauth://enroll?x"
    assert "#" not in app.url


async def test_finish_later_takes_the_test_notification_off_the_phone(
    demo: tuple[Stack, Page, str], phones: PhoneMaker
) -> None:
    """ "Finish later" on the demo RP's test-notification page leaves the page that shows
    the number, so the phone's "Finish adding this phone?" can no longer be answered: it
    leaves the phone at once (before, it stayed on the phone's screen, over the codes,
    for its three minutes). "Finish setup" on Security info sends a new one."""
    stack, desktop, app_url = demo
    link = await setup_link(desktop, stack)
    phone = await phones(app_url)
    await phone.add_account(link, device_name="Alice's phone")
    await desktop.wait_for_url("**/security/test-notification")
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    await desktop.get_by_text("Finish later", exact=True).click()
    await desktop.wait_for_url("**/security")
    await phone.no_prompt()
    await phone.toast("cancelled")
    # Finished later: a new test notification, approved with its number.
    await desktop.get_by_role("button", name="Finish setup").click()
    await desktop.wait_for_url("**/security/test-notification")
    await phone.page.locator("#prompt:not([hidden])").wait_for()
    await phone.type_number(await number(desktop))
    await phone.page.get_by_role("button", name="Approve").tap()
    await desktop.wait_for_url("**/security")
    assert "Setup not finished" not in await desktop.locator("#devices").inner_text()
