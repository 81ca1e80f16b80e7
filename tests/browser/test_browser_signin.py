"""End to end in a real browser: the demo RP, the broker and the agent as processes.

Each test saves a screenshot of every page it visits in artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from support.faketime import needs_faketime, stepped

from protocol import signing
from relying_party import wire

pytestmark = pytest.mark.timeout(240)


def test_enroll_then_sign_in_with_push(stack: Any, page: Page) -> None:
    stack.enroll(page, "journey")
    stack.sign_out(page)
    stack.shot(page, "journey-06-signed-out")

    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    expect(page.locator("#push-status")).to_have_attribute("data-status", "pending")
    expect(page.get_by_role("button", name="Send again")).to_be_visible()
    expect(page.get_by_role("button", name="Use a verification code instead")).to_be_visible()
    stack.shot(page, "journey-07-push-number")
    number = stack.number(page)
    request = stack.answer("approve", "--number", number)
    # What the phone was shown: the application and the place, never the number.
    assert request["context"]["app"] == "Browser Test Portal"
    assert request["context"]["location"] == "This computer"
    assert "number" not in request
    assert number not in request["context"].values()
    page.wait_for_url("**/account")
    expect(page.locator("#signin-method")).to_contain_text("Push notification (Test phone)")
    stack.shot(page, "journey-08-account")


def test_setup_from_a_screenshot_of_the_qr_code_then_sign_in(stack: Any, page: Page) -> None:
    """A desktop authenticator has no camera facing its own screen: the agent reads the
    QR code from a screenshot of the setup page, and that key signs in."""
    stack.enroll(page, "screenshot", from_screenshot=True)
    assert len(stack.agent.accounts()) == 1
    stack.sign_out(page)
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/account")
    expect(page.locator("#signin-method")).to_contain_text("Push notification (Test phone)")


def test_deny_wrong_number_and_report_are_refused(stack: Any, page: Page) -> None:
    stack.enroll(page, "deny")
    stack.sign_out(page)

    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.answer("deny")
    stack.status(page, "denied")
    expect(page.locator("#push-status")).to_contain_text("denied")
    # A screen reader hears the number is void (it is struck through), not "Number to
    # enter in the app", and no "15 seconds left." after the end; the same on a reload.
    expect(page.locator("#push-number")).to_contain_text("Number of the ended request, no longer valid:")
    expect(page.locator("#countdown-warning")).to_have_text("")
    page.reload()
    expect(page.locator("#push-number")).to_contain_text("Number of the ended request, no longer valid:")
    stack.shot(page, "deny-01-denied")

    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/push")
    stack.status(page, "pending")
    number = stack.number(page)
    lowest = str(10 ** (len(number) - 1))  # numbers have no leading zero
    wrong = lowest if number != lowest else str(int(lowest) + 1)
    stack.answer("approve", "--number", wrong)
    stack.status(page, "number_mismatch")
    expect(page.locator("#push-status")).to_contain_text("Wrong number")
    stack.shot(page, "deny-02-wrong-number")

    # "This wasn't me": reported as fraud.
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/push")
    stack.status(page, "pending")
    stack.answer("deny", "--fraud")
    stack.status(page, "reported")
    expect(page.locator("#push-status")).to_contain_text("reported as not made by you")
    stack.shot(page, "deny-03-reported")

    # Neither answer signed anyone in.
    page.goto(stack.url + "/account")
    page.wait_for_url("**/signin")


def test_no_answer_expires_and_send_again_works(stack: Any, page: Page) -> None:
    stack.enroll(page, "expiry")
    stack.sign_out(page)

    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    expect(page.locator("#countdown")).to_be_visible()
    stack.seen.add(stack.agent.wait_request(stack.seen)["id"])  # it reached the phone; nobody answers
    page.locator('#push-status[data-status="expired"]').wait_for(timeout=40_000)
    expect(page.locator("#push-status")).to_contain_text("Expired")
    expect(page.get_by_role("button", name="Send again")).to_be_focused()
    stack.shot(page, "expiry-01-expired")

    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/push")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/account")


def test_verification_code_fallback(stack: Any, page: Page, totp_code: Any) -> None:
    stack.enroll(page, "code")
    stack.sign_out(page)

    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    page.get_by_role("button", name="Use a verification code instead").click()
    page.wait_for_url("**/signin/code")
    stack.shot(page, "code-01-enter-code")
    page.get_by_label("Verification code").fill("000000" if totp_code(stack.uri) != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    code = totp_code(stack.uri)
    page.get_by_label("Verification code").fill(code)
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/account")
    expect(page.locator("#signin-method")).to_contain_text("Verification code (Test phone)")
    stack.shot(page, "code-02-account")

    # The same code a second time is refused, even on a fresh sign-in.
    stack.sign_out(page)
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    page.get_by_role("button", name="Use a verification code instead").click()
    page.get_by_label("Verification code").fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("already used")
    stack.shot(page, "code-03-replayed")
    page.goto(stack.url + "/account")
    page.wait_for_url("**/signin")


def test_removing_the_device_stops_pushes(stack: Any, page: Page) -> None:
    stack.enroll(page, "remove")
    # Rename first, from the keyboard-friendly disclosure on the device row.
    page.get_by_text("Rename").click()
    page.get_by_label("New name for Test phone").fill("Old phone")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_contain_text("Renamed to Old phone.")
    page.get_by_role("link", name="Remove Old phone").click()
    page.wait_for_url("**/remove")
    expect(page.get_by_role("heading", name="Remove Old phone?")).to_be_visible()
    stack.shot(page, "remove-01-confirm")
    page.get_by_role("button", name="Remove device").click()
    page.wait_for_url("**/security")
    expect(page.get_by_role("status").first).to_contain_text("was removed")
    assert "Old phone" not in page.locator("#devices").inner_text()
    stack.shot(page, "remove-02-removed")

    # The broker revoked the credential: the phone learns it and gets nothing more.
    def no_requests() -> None:
        result = stack.agent.run("pending", "--json")
        if result.returncode == 0:
            assert json.loads(result.stdout) == []
        else:
            assert "no active accounts" in result.stderr, result.stderr

    no_requests()
    assert [a["status"] for a in stack.agent.accounts()] == ["revoked"]
    stack.sign_out(page)
    stack.sign_in_password(page)
    page.wait_for_url("**/security")  # password only: no device is left to push to
    no_requests()


def test_phone_width_setup_and_sign_in(stack: Any, phone_page: Page) -> None:
    stack.enroll(phone_page, "phone-setup")
    stack.sign_out(phone_page)
    stack.sign_in_password(phone_page)
    phone_page.wait_for_url("**/signin/push")
    # Nothing wider than the screen: no sideways scrolling at phone width.
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    stack.shot(phone_page, "phone-01-push-number")
    stack.answer("approve", "--number", stack.number(phone_page))
    phone_page.wait_for_url("**/account")
    stack.shot(phone_page, "phone-02-account")


def test_bad_input_messages_and_keyboard_only(stack: Any, page: Page) -> None:
    # Keyboard only: the user name field has focus, Tab moves on, Enter submits.
    page.goto(stack.url + "/signin")
    expect(page.get_by_label("User name")).to_be_focused()
    page.keyboard.type(stack.user)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("The user name or password is incorrect.")
    # The error is tied to the fields, so a screen reader reads it with them.
    expect(page.get_by_label("Password")).to_have_attribute("aria-describedby", "signin-error")
    expect(page.get_by_label("Password")).to_be_focused()
    stack.shot(page, "bad-01-wrong-password")

    page.get_by_label("User name").fill("nobody")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The user name or password is incorrect.")

    # A form kept open after its session is gone (cookies cleared): refused, nothing changed.
    page.goto(stack.url + "/signin")
    page.context.clear_cookies()
    page.get_by_label("User name").fill(stack.user)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="That did not work")).to_be_visible()
    expect(page.locator("#error-detail")).to_contain_text("Nothing was changed")
    stack.shot(page, "bad-02-csrf")

    page.goto(stack.url + "/no/such/page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    stack.shot(page, "bad-03-not-found")

    page.goto(stack.url + "/account")
    page.wait_for_url("**/signin")


def test_a_setup_whose_key_the_broker_swapped_is_refused_live(hostile_stack: Any, page: Page) -> None:
    """A compromised broker reports another key than the phone registered: the setup page,
    waiting live, says the setup could not be verified and offers a new start; nothing
    is added (protocol v2 enrollment binding)."""
    stack, hostile = hostile_stack
    planted = wire.b64encode(signing.public_key(signing.new_seed()))
    hostile.edit_enrolled_credential(lambda cred: {**cred, "public_key": planted})
    stack.sign_in_password(page)
    page.wait_for_url("**/security")
    page.get_by_role("link", name="Add sign-in method").click()
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    setup_url = page.url
    stack.agent.ok(
        "enroll", "--name", "Test phone", page.get_by_role("textbox", name="Setup link").input_value()
    )
    expect(page.locator("#setup-refused")).to_contain_text("This setup could not be verified")
    assert page.url == setup_url
    expect(page.get_by_role("link", name="Start again")).to_be_visible()
    expect(page.locator(".qr-frame")).to_have_count(0)
    stack.shot(page, "refused-01-setup-not-verified")
    # An ended setup has no event stream to follow (so the page does not reload again).
    assert page.locator("#setup").get_attribute("data-events") is None
    page.goto(stack.url + "/security")
    assert "Test phone" not in page.locator("#devices").inner_text()


def test_cancel_on_the_setup_page_withdraws_its_link(stack: Any, page: Page) -> None:
    """Cancel is a POST that withdraws the link at the broker: the app cannot use it after."""
    stack.sign_in_password(page)
    page.wait_for_url("**/security")
    page.get_by_role("link", name="Add sign-in method").click()
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    link = page.get_by_role("textbox", name="Setup link").input_value()
    # "Copy" says it copied in a status, which a screen reader reads (its new words are not).
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status").filter(has_text="Copied.")).to_be_attached()
    assert page.evaluate("navigator.clipboard.readText()") == link
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_url("**/security")
    expect(page.get_by_role("status").filter(has_text="The setup was cancelled")).to_be_visible()
    stack.shot(page, "setup-cancelled")
    late = stack.agent.run("enroll", "--name", "Test phone", link)
    assert (
        late.returncode != 0
        and "already used, withdrawn by the service or expired" in late.stdout + late.stderr
    )
    page.reload()
    expect(page.locator("#devices")).not_to_contain_text("Test phone")
    expect(page.locator("#devices")).not_to_contain_text("Setup not finished")


@needs_faketime
def test_an_answer_refused_because_a_clock_is_off_says_so(new_stack: Any, tmp_path: Path, page: Page) -> None:
    """This service's clock is 5 minutes ahead (the demo RP under libfaketime): the SDK
    refuses every push answer as signed outside the request's lifetime (stale_answer), as
    it must. The page said "could not be verified with the keys of your devices" and the
    log a SECURITY EVENT, as if the answer were forged, for the setup's test notification
    too. Now the page says a clock is off and what to do, and the log is a warning naming
    this server's clock."""
    stamp = tmp_path / "faketime"
    stack = new_stack(env=stepped(stamp, "+300"))
    stack.sign_in_password(page)
    page.wait_for_url("**/security")
    page.get_by_role("link", name="Add sign-in method", exact=True).click()
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    stack.agent.ok(
        "enroll", "--name", "Test phone", page.get_by_role("textbox", name="Setup link").input_value()
    )
    page.wait_for_url("**/security/test-notification")
    stack.answer("approve", "--number", stack.number(page))
    stack.status(page, "clock_off")
    said = page.locator("#push-status").inner_text()
    assert "could not be confirmed because a clock is off, on this service or on your device" in said, said
    assert "Check that your phone's date and time are right" in said and "verification code" not in said, said
    stack.shot(page, "clock-01-setup-test-refused")

    stamp.write_text("+0")  # this server's clock set right: the next one is approved
    page.get_by_role("button", name="Send again").click()
    stack.status(page, "pending")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/security")
    stack.sign_out(page)

    stamp.write_text("+300")
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.answer("approve", "--number", stack.number(page))
    stack.status(page, "clock_off")
    expect(page.locator("#push-status")).to_contain_text(
        "then send a new request or use a verification code instead"
    )
    page.reload()  # asked again: the same
    stack.status(page, "clock_off")
    expect(page.get_by_role("button", name="Use a verification code instead")).to_be_visible()
    stack.shot(page, "clock-02-sign-in-refused")
    log = stack.web.stderr()
    refusals = [line for line in log.splitlines() if "was refused as signed at the wrong time" in line]
    assert len(refusals) >= 2, log  # the test notification's and the sign-in's
    for line in refusals:
        assert " WARNING relying_party.web.credentials: " in line, line
        # At least the offset (relying_party/clocks.py): 5 min less the request's time.
        assert re.search(r"this server's clock is (5 min 0|4 min 5\d) s ahead of the broker's", line), line
        assert "set this server's clock right (NTP)" in line, line
    assert "SECURITY EVENT" not in log, log
