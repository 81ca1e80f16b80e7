"""Recovery methods in a real browser (issue 12): one-time recovery codes, an
administrator's temporary access pass (TAP) that lets a user who lost the phone add a
new one, and a new device's test notification going to that device only.

The demo RP runs as `pushauth-rp serve` on a real broker; `pushauth-agent` is each
phone; `pushauth-rp user tap` issues passes as an administrator would. Every page
state is screenshotted (artifacts/screenshots/) and checked with axe-core.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from accessibility import assert_no_axe_violations
from playwright.sync_api import Browser, Page, expect
from support import console_script, run_cli

pytestmark = pytest.mark.timeout(240)
RP_CLI = console_script("pushauth-rp")


def _sign_in(request: dict[str, Any]) -> bool:
    """A pending request (`pending --json`) that is a sign-in: not the setup's test
    (docs/protocol.md 15.1), not the demo RP's "verify it's you" (its `action`)."""
    return not request["setup_test"] and "action" not in request["context"]


def _shot(stack: Any, page: Page, name: str) -> None:
    """Screenshot and axe: every state this file visits is both kept and checked."""
    stack.shot(page, name)
    assert_no_axe_violations(page, name)


def _to_code_page(stack: Any, page: Page) -> None:
    """Password, then from the push page to the code page (the way to the recovery links)."""
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.seen.add(stack.agent.wait_request(stack.seen)["id"])  # the push reached the phone
    page.get_by_role("button", name="Use a verification code instead").click()
    page.wait_for_url("**/signin/code")


def _recovery_sign_in(stack: Any, page: Page, code: str) -> None:
    _to_code_page(stack, page)
    page.get_by_role("link", name="Use a recovery code").click()
    page.wait_for_url("**/signin/recovery-code")
    page.get_by_label("Recovery code").fill(code)
    page.get_by_role("button", name="Sign in").click()


def test_recovery_codes_sign_in_once_each_and_a_new_set_replaces_the_old(stack: Any, page: Page) -> None:
    stack.enroll(page, "rcodes-setup")
    expect(page.locator("#recovery-left")).to_contain_text("Not set up")
    _shot(stack, page, "rcodes-01-security-no-codes")
    page.locator("#recovery-codes-link").click()
    page.wait_for_url("**/security/recovery-codes")
    _shot(stack, page, "rcodes-02-get-codes")
    page.locator("#generate-codes").click()
    codes = page.locator("#code-list li").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    assert all(re.fullmatch(r"[0-9a-z]{5}-[0-9a-z]{5}", c) for c in codes), codes
    _shot(stack, page, "rcodes-03-codes-shown-once")
    # Shown once: the page cannot be fetched again, only a new set can be made.
    page.goto(stack.url + "/security/recovery-codes")
    expect(page.locator("#code-list")).to_have_count(0)
    page.goto(stack.url + "/security")
    expect(page.locator("#recovery-left")).to_have_text("10 of 10 codes left")
    stack.sign_out(page)

    # A code signs in; the push that was sent meanwhile is withdrawn from the phone.
    _recovery_sign_in(stack, page, "zzzzz-zzzzz")
    expect(page.get_by_role("alert")).to_contain_text("not right")
    _shot(stack, page, "rcodes-04-wrong-code")
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/security")
    expect(page.locator(".flashes")).to_contain_text("9 recovery codes left")
    expect(page.locator("#recovery-left")).to_have_text("9 of 10 codes left")
    assert [r for r in stack.agent.pending() if _sign_in(r)] == []
    _shot(stack, page, "rcodes-05-signed-in-9-left")
    page.goto(stack.url + "/account")
    expect(page.locator("#signin-method")).to_have_text("Recovery code")
    stack.sign_out(page)

    # The same code again: refused, and the count stays; another one (typed in capitals
    # with a space for the dash) works once.
    _recovery_sign_in(stack, page, codes[0])
    expect(page.get_by_role("alert")).to_contain_text("used already")
    _shot(stack, page, "rcodes-06-code-used-already")
    page.get_by_label("Recovery code").fill(codes[1].upper().replace("-", " "))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/security")
    expect(page.locator("#recovery-left")).to_have_text("8 of 10 codes left")

    # A new set: the warning names what stops working; the old codes are refused after.
    page.locator("#recovery-codes-link").click()
    expect(page.get_by_role("note")).to_contain_text("8 unused codes stop working")
    _shot(stack, page, "rcodes-07-replace-set")
    page.locator("#generate-codes").click()
    fresh = page.locator("#code-list li").all_inner_texts()
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    page.get_by_role("link", name="I saved them").click()
    expect(page.locator("#recovery-left")).to_have_text("10 of 10 codes left")
    stack.sign_out(page)
    _recovery_sign_in(stack, page, codes[2])
    expect(page.get_by_role("alert")).to_contain_text("not right")
    page.goto(stack.url + "/account")
    page.wait_for_url("**/signin")


def _tap(db: Path, *args: str) -> str:
    out = run_cli([RP_CLI, "user", "tap", "alice", "--db", db, *args])
    assert out.returncode == 0, out.stderr
    found = re.search(r"temporary access pass for alice: ([0-9a-z-]+)$", out.stdout, re.M)
    assert found, out.stdout
    return found.group(1)


def _tap_sign_in(stack: Any, page: Page, secret: str) -> None:
    _to_code_page(stack, page)
    page.get_by_role("link", name="a temporary access pass").click()
    page.wait_for_url("**/signin/access-pass")
    page.get_by_label("Temporary access pass").fill(secret)
    page.get_by_role("button", name="Sign in").click()


def _add_device(stack: Any, page: Page, phone: Any, name: str) -> None:
    """Security info -> add -> the new phone enrolls; the page is at the test notification."""
    page.get_by_role("link", name="Add sign-in method").click()
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/security/setup/[A-Za-z0-9_-]+$"))
    phone.ok("enroll", "--name", name, page.get_by_role("textbox", name="Setup link").input_value())
    page.wait_for_url("**/security/test-notification")


def test_temporary_access_pass_signs_in_once_and_adds_a_new_device(
    stack: Any, page: Page, tmp_path: Path
) -> None:
    db = tmp_path / "rp.db"  # the stack's database (tests/browser/conftest.py: start_stack)
    stack.enroll(page, "tap-setup")
    stack.sign_out(page)

    # Expired: refused. (Made to expire in the database: the shortest pass lasts 10 minutes.)
    expired = _tap(db, "--minutes", "10")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE access_passes SET expires_at = 1")
    _tap_sign_in(stack, page, expired)
    expect(page.get_by_role("alert")).to_contain_text("has expired")
    _shot(stack, page, "tap-01-expired")
    page.get_by_role("button", name="Cancel sign-in").click()

    # A fresh pass: signed in, sent to Security info to add the new phone.
    secret = _tap(db)
    _tap_sign_in(stack, page, secret)
    page.wait_for_url("**/security")
    expect(page.locator(".flashes")).to_contain_text("signed in with a temporary access pass")
    expect(page.locator("#access-pass-state")).to_contain_text("Used")
    expect(page.locator("#access-pass-state")).to_contain_text("127.0.0.1")
    _shot(stack, page, "tap-02-signed-in")

    new_phone = type(stack.agent)(tmp_path / "new-phone")
    _add_device(stack, page, new_phone, "New phone")
    expect(page.locator("#push")).to_contain_text("Sent to 1 device.")
    _shot(stack, page, "tap-03-test-notification")
    request = new_phone.wait_request()
    new_phone.ok("approve", "--number", stack.number(page), "--", request["id"])
    page.wait_for_url("**/security")
    expect(page.locator("#devices")).to_contain_text("New phone")
    page.goto(stack.url + "/account")
    expect(page.locator("#signin-method")).to_have_text("Temporary access pass")
    stack.sign_out(page)

    # The same pass again: refused.
    _tap_sign_in(stack, page, secret)
    expect(page.get_by_role("alert")).to_contain_text("used already")
    _shot(stack, page, "tap-04-used-already")
    page.get_by_role("button", name="Cancel sign-in").click()

    # Sign-in activity shows the pass's uses, the refused ones with why.
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/account")
    page.goto(stack.url + "/security/activity")
    rows = page.locator('.activity-row[data-method="access_pass"]')
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("used already")  # newest first
    expect(rows.nth(1)).to_have_attribute("data-result", "code")  # the sign-in itself
    expect(rows.nth(2)).to_contain_text("expired")
    _shot(stack, page, "tap-05-activity")
    stack.sign_out(page)
    page.goto(stack.url + "/account")
    page.wait_for_url("**/signin")


def test_test_notification_goes_to_the_new_device_only(
    stack: Any, page: Page, browser: Browser, tmp_path: Path
) -> None:
    """Finding 3: the test push is the new device's alone ("Sent to 1 device"); until it
    is approved the device gets no sign-in and the Account page does not count it."""
    stack.enroll(page, "second-setup")
    new_phone = type(stack.agent)(tmp_path / "new-phone")
    _add_device(stack, page, new_phone, "New phone")
    expect(page.locator("#push")).to_contain_text("Sent to 1 device.")
    _shot(stack, page, "second-01-test-notification")
    test_push = new_phone.wait_request()
    assert test_push["setup_test"] is True
    # Time for a person to start `listen` after enrolling (the sign-in TTL here is 15 s).
    assert test_push["seconds_left"] > 150, test_push
    expect(page.locator("#countdown-value")).to_have_text(re.compile(r"^[23]:[0-5][0-9]$"))
    assert stack.agent.pending() == []  # the old phone got nothing

    # A sign-in meanwhile (another browser): only the set-up phone is asked.
    other = browser.new_context()
    try:
        other_page = other.new_page()
        stack.sign_in_password(other_page)
        other_page.wait_for_url("**/signin/push")
        expect(other_page.locator("#push")).to_contain_text("Sent to 1 device.")
        stack.seen.add(stack.agent.wait_request(stack.seen)["id"])
        # One live prompt per user: the sign-in replaced the test push (superseded), and
        # none reached the unfinished device.
        assert [r for r in new_phone.pending() if _sign_in(r)] == []
        other_page.get_by_role("button", name="Cancel").click()
        other_page.wait_for_url("**/signin")
    finally:
        other.close()
    page.goto(stack.url + "/account")
    expect(page.get_by_text("1 authenticator app can approve your sign-ins.")).to_be_visible()

    # A new test push (to the new phone only again), approved: now it is a device like the other.
    page.goto(stack.url + "/security/test-notification")
    stack.status(page, "superseded")
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/security/test-notification")
    expect(page.locator("#push")).to_contain_text("Sent to 1 device.")
    retest = new_phone.wait_request({test_push["id"]})
    assert retest["setup_test"] is True and stack.agent.pending() == []
    new_phone.ok("approve", "--number", stack.number(page), "--", retest["id"])
    page.wait_for_url("**/security")
    expect(page.locator("#devices .badge-warn")).to_have_count(0)
    page.goto(stack.url + "/account")
    expect(page.get_by_text("2 authenticator apps can approve your sign-ins.")).to_be_visible()
    _shot(stack, page, "second-02-account-two-apps")
