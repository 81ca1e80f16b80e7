"""The demo RP from the keyboard, as with a screen reader, and on a slow network: the
verification code typed in another script's digits, its errors tied to the field and
named in the title, the title following the push request's end, and one submission
per form while the network is slow (Chromium's own throttling, through CDP)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect

pytestmark = pytest.mark.timeout(240)

ARABIC_INDIC_ZERO = 0x0660


def _to_code_page(stack: Any, page: Page) -> None:
    stack.enroll(page, "keyboard")
    stack.sign_out(page)
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")


def test_code_in_other_digits_and_its_errors_tied_to_the_field(
    stack: Any, page: Page, totp_code: Any
) -> None:
    _to_code_page(stack, page)
    page.get_by_role("button", name="Use a verification code instead").click()
    page.wait_for_url("**/signin/code")
    code_field = page.get_by_label("Verification code")
    expect(code_field).to_be_focused()  # the page opens on the field

    # Letters: refused, saying what is wrong, tied to the field, and "Error:" in the title.
    page.keyboard.type("12ab56")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("only digits")
    expect(code_field).to_have_attribute("aria-invalid", "true")
    expect(code_field).to_have_attribute("aria-describedby", "code-error")
    expect(page).to_have_title(re.compile(r"^Error: Enter code · "))
    stack.shot(page, "keyboard-01-code-letters")

    # The code in Arabic-Indic digits, as an Arabic keyboard types it: the same number
    # (the web authenticator takes the number so too); before, it was refused with
    # "A verification code has 6 or 8 digits." though it had six.
    code = totp_code(stack.uri)
    code_field.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("".join(chr(ARABIC_INDIC_ZERO + int(d)) for d in code))
    page.keyboard.press("Enter")
    page.wait_for_url("**/account")
    expect(page.locator("#signin-method")).to_contain_text("Verification code (Test phone)")
    expect(page).to_have_title(re.compile(r"^Account · "))


def test_title_follows_the_request_and_a_slow_network_sends_the_code_once(
    stack: Any, page: Page, totp_code: Any
) -> None:
    _to_code_page(stack, page)
    expect(page).to_have_title(re.compile(r"^Approve sign-in request · "))
    # A short time left (15 s here) is said once to a screen reader (a polite live region),
    # not every second; the web authenticator says it in the same words.
    warning = page.locator("#countdown-warning")
    expect(warning).to_have_text(re.compile(r"^\d+ seconds left\.$"))
    said = warning.inner_text()
    shown = page.locator("#countdown-value").inner_text()
    expect(page.locator("#countdown-value")).not_to_have_text(shown)
    assert warning.inner_text() == said
    stack.answer("deny")
    stack.status(page, "denied")
    # The title says how it ended (a tab switched back to, a screen reader's "say title").
    expect(page).to_have_title(re.compile(r"^Denied · Approve sign-in request · "))
    page.reload()  # the page as the server draws an ended request: the same title
    expect(page).to_have_title(re.compile(r"^Denied · Approve sign-in request · "))

    page.get_by_role("button", name="Use a verification code instead").click()
    page.wait_for_url("**/signin/code")
    # A network too slow to answer for now: the code's POST is held until the test lets
    # it go (deterministic, where a throttled connection's delay is a race on this machine).
    posts: list[str] = []
    held: list[Route] = []
    released = False

    def hold(route: Route) -> None:
        if route.request.method == "POST" and not released:
            held.append(route)
        else:
            route.continue_()

    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.route("**/signin/code", hold)
    page.get_by_label("Verification code").fill(totp_code(stack.uri))
    # Verify, then nothing comes: the person stops the page (Esc). The form is not left
    # stuck as "on its way", where Verify would do nothing ever again.
    stopped = page.evaluate(
        """async () => {
            const verify = [...document.querySelectorAll("button")].find((b) => b.textContent === "Verify");
            verify.click();
            await new Promise((done) => setTimeout(done, 300));
            const sending = verify.getAttribute("aria-disabled");
            window.stop();
            await new Promise((done) => setTimeout(done, 300));
            return [sending, verify.getAttribute("aria-disabled"), verify.form.getAttribute("aria-busy")];
        }"""
    )
    assert stopped == ["true", None, None]
    for route in held:
        with contextlib.suppress(PlaywrightError):  # the stopped request
            route.continue_()
    held.clear()
    posts.clear()  # it never reached the server
    assert page.url.endswith("/signin/code")
    # Verify, and as nothing seems to happen, Verify again a moment later; all in the page
    # (Playwright waits for a pending navigation before anything else it asks the page).
    # What the button said in between: that it is working.
    said = page.evaluate(
        """async () => {
            const verify = [...document.querySelectorAll("button")].find((b) => b.textContent === "Verify");
            verify.click();
            await new Promise((done) => setTimeout(done, 300));
            const said = verify.getAttribute("aria-disabled");
            verify.click();
            await new Promise((done) => setTimeout(done, 300));
            return said;
        }"""
    )
    assert said == "true"
    released = True
    for route in held:
        with contextlib.suppress(PlaywrightError):  # its navigation was replaced by a second one
            route.continue_()
    # Before, the second went too: the first signed in (and renewed the form token), and
    # the page shown was the second's "This form was not accepted ...".
    page.wait_for_url("**/account")
    expect(page.locator("#signin-method")).to_contain_text("Verification code (Test phone)")
    assert posts == [stack.url + "/signin/code"], posts


# Every text the page's script writes into the push page's status box (a live region:
# each write is read out): recorded from the parsed page on, before the script's own
# DOMContentLoaded handler runs.
STATUS_WRITES = """
window.statusWrites = [];
const observer = new MutationObserver((records) => {
  for (const r of records)
    if (r.target.closest && r.target.closest("#push-status .status-label"))
      for (const node of r.addedNodes) window.statusWrites.push(node.textContent);
});
document.addEventListener("DOMContentLoaded", () =>
  observer.observe(document, { subtree: true, childList: true }));
"""


def test_the_status_is_read_out_when_it_changes_and_a_broken_stream_is_said(stack: Any, page: Page) -> None:
    stack.enroll(page, "live")
    stack.sign_out(page)
    page.context.add_init_script(STATUS_WRITES)
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.answer("deny")
    stack.status(page, "denied")
    # "Waiting" is in the page as it loads: the stream's opening "Waiting" (and its
    # "still waiting" every poll) was written again, and read out again.
    assert page.evaluate("window.statusWrites") == ["Denied"]

    # A flaky network: the page's event stream cannot connect. The page says so (it
    # said "Waiting" as if all were well), and the stream, back, says how things stand.
    broken = True

    def events(route: Route) -> None:
        if broken:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/push/events**", events)
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/push")
    stack.status(page, "unavailable")
    expect(page.locator("#push-status")).to_contain_text("lost its connection")
    broken = False  # the browser's next try (EventSource's own retry) gets through
    stack.status(page, "pending")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/account")
