"""The demo RP's honest request states, fraud recovery, sign-in activity and
re-authentication, in real Chromium against the real broker and agent CLI.

Every page state is screenshotted to artifacts/screenshots/ and checked with axe-core
(no violation allowed).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from accessibility import assert_no_axe_violations
from playwright.sync_api import Browser, Page, expect
from support import set_policy, wait_until

pytestmark = pytest.mark.timeout(240)
NEW_PASSWORD = "a brand new passphrase"


def checked(stack: Any, page: Page, name: str) -> None:
    """Screenshot the state, then axe-core on it: no violation."""
    stack.shot(page, name)
    assert_no_axe_violations(page, name)


def age_reauth(page: Page, db: Path) -> None:
    """Make this browser's second factor older than the re-authentication window, as
    if the person had signed in long ago: its session row in the RP's database (the
    cookie's SHA-256 names it) gets verified_at 0."""
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "pushauth_rp")
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT data FROM sessions WHERE id_hash = ?", (hashlib.sha256(cookie.encode()).digest(),)
        ).fetchone()
        assert row is not None, "no session row for this browser"
        data = json.loads(row[0])
        data["verified_at"] = 0
        conn.execute(
            "UPDATE sessions SET data = ? WHERE id_hash = ?",
            (json.dumps(data), hashlib.sha256(cookie.encode()).digest()),
        )


def results(page: Page) -> list[str]:
    return page.locator("#activity tbody tr").evaluate_all("rows => rows.map(r => r.dataset.result)")


def test_fraud_report_to_password_change_and_push_resumed(
    stack: Any, page: Page, browser: Browser, totp_code: Any
) -> None:
    stack.enroll(page, "fraud")  # `page` stays signed in: the user's own browser
    # A sign-in from another browser, which the user reports on the phone as not theirs.
    other = browser.new_context(viewport={"width": 1100, "height": 800})
    other.set_default_timeout(20_000)
    try:
        elsewhere = other.new_page()
        # "This wasn't me": the code is now the primary, focused way on; no "Send again".
        stack.sign_in_password(elsewhere)
        elsewhere.wait_for_url("**/signin/push")
        # The sign-in's last request (MAX_SENDS = 5) is the one reported: the refusal below
        # then names the pause, not "That is enough requests ... or start again".
        for _ in range(4):
            elsewhere.get_by_role("button", name="Send again").click()
            stack.status(elsewhere, "pending")
        stack.answer("deny", "--fraud")
        stack.status(elsewhere, "reported")
        code_link = elsewhere.get_by_role("button", name="Use a verification code instead")
        expect(code_link).to_be_focused()
        expect(code_link).to_have_class(re.compile(r"\bprimary\b"))
        expect(elsewhere.locator("#send-again")).to_be_hidden()
        checked(stack, elsewhere, "fraud-01-reported-code-first")

        # The user, still signed in elsewhere, sees the pause and its end on Security info.
        page.goto(stack.url + "/security")
        pause = page.locator('#push-pause[data-kind="paused"]')
        # Until the password change, whatever the broker's mute says (the RP's own record
        # of the report pauses push: fraud.py).
        expect(pause).to_contain_text(re.compile(r"paused\s+until you change your password"))
        expect(pause.get_by_role("link", name="Change your password")).to_be_visible()
        checked(stack, page, "fraud-01b-security-info-paused")

        # Asking for a push anyway is refused, and the page says why and until when.
        code_link.click()
        elsewhere.wait_for_url("**/signin/code")
        elsewhere.get_by_role("button", name="Send a request to my app instead").click()
        elsewhere.wait_for_url("**/signin/code")
        refused = elsewhere.locator('#push-refused[data-reason="paused"]')
        expect(refused).to_contain_text("No request was sent")
        expect(refused).to_contain_text("paused until you change your password")
        expect(elsewhere.get_by_label("Verification code")).to_be_focused()
        checked(stack, elsewhere, "fraud-02-push-paused-refused")

        # The next sign-in (a code) shows what was reported and requires a new password.
        elsewhere.get_by_label("Verification code").fill(totp_code(stack.uri))
        elsewhere.get_by_role("button", name="Verify").click()
        elsewhere.wait_for_url("**/security/password")
        expect(elsewhere.locator("#fraud-notice")).to_contain_text("reported as not made by you")
        report = elsewhere.locator("#reports .report").first
        expect(report).to_contain_text("This computer (127.0.0.1)")
        expect(report).to_contain_text("Chrome (headless)")
        expect(elsewhere.locator('#pause-state[data-kind="paused"]')).to_contain_text("paused until")
        checked(stack, elsewhere, "fraud-03-password-change-required")
        elsewhere.goto(stack.url + "/account")
        elsewhere.wait_for_url("**/security/password")  # nothing else until it is changed

        elsewhere.get_by_label("Current password").fill(stack.password)
        elsewhere.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        elsewhere.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        elsewhere.get_by_role("button", name="Change password").click()
        elsewhere.wait_for_url("**/security")
        expect(elsewhere.get_by_role("status").filter(has_text="password was changed")).to_contain_text(
            "Push requests to your devices are on again"
        )
        expect(elsewhere.locator("#push-pause")).to_have_count(0)
        checked(stack, elsewhere, "fraud-04-password-changed-push-resumed")
        # Every other session ended with the password change.
        page.goto(stack.url + "/security")
        page.wait_for_url("**/signin")
        expect(page.get_by_role("status")).to_contain_text("You were signed out on this device")

        # The activity lists the report, the refused push and the code sign-in.
        elsewhere.get_by_role("link", name="Review sign-in activity").click()
        elsewhere.wait_for_url("**/security/activity")
        assert results(elsewhere)[:3] == ["code", "refused", "reported"]
        reported = elsewhere.locator('#activity tr[data-result="reported"]')
        expect(reported).to_contain_text("Reported as not you")
        expect(reported).to_contain_text("127.0.0.1")
        expect(reported).to_contain_text("Chrome (headless)")
        expect(elsewhere.locator('#activity tr[data-result="refused"]')).to_contain_text(
            "Push paused after a report"
        )
        checked(stack, elsewhere, "fraud-05-activity")
    finally:
        other.close()

    # Push works again, with the new password; the old one is refused.
    stack.sign_in_password(page)
    expect(page.locator("#signin-error")).to_contain_text("incorrect")
    stack.sign_in_password(page, password=NEW_PASSWORD)
    page.wait_for_url("**/signin/push")
    stack.answer("approve", "--number", stack.number(page))
    page.wait_for_url("**/account")
    page.goto(stack.url + "/security/activity")
    assert results(page)[0] == "approved"
    expect(page.locator("#activity tbody tr").first).to_contain_text("Test phone")


def test_refused_push_says_why_and_the_earlier_request_is_cancelled(
    stack: Any, page: Page, rp: dict[str, Any], totp_code: Any
) -> None:
    # Two pushes a minute (the approved test push of the setup resets the count): the
    # sign-in's first request and one "Send again"; the next is refused.
    set_policy(rp["id"], "--max-pushes-per-minute", "2", redis_url=str(stack.broker.redis_url))
    stack.enroll(page, "push-refused")
    stack.sign_out(page)

    stack.sign_in_password(page)
    page.wait_for_url("**/signin/push")
    stack.seen.add(stack.agent.wait_request(stack.seen)["id"])
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/push")
    stack.status(page, "pending")
    stack.seen.add(stack.agent.wait_request(stack.seen)["id"])
    checked(stack, page, "push-refused-01-waiting")
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url("**/signin/code")
    refused = page.locator('#push-refused[data-reason="rate_limited"]')
    expect(refused).to_contain_text(re.compile(r"Wait \d+ seconds? before sending another"))
    checked(stack, page, "push-refused-02-rate-limited")
    # Nothing is live: the earlier request was cancelled, the phone no longer has it.
    wait_until(lambda: not stack.agent.pending(), timeout=20, interval=0.3, message="the prompt withdrawn")
    page.goto(stack.url + "/signin/push")
    page.wait_for_url("**/signin/code")  # no request to show as live
    # The activity (after the code sign-in) tells the whole story.
    page.get_by_label("Verification code").fill(totp_code(stack.uri))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/account")
    page.goto(stack.url + "/security/activity")
    assert results(page)[:4] == ["code", "refused", "replaced", "replaced"]
    expect(page.locator('#activity tr[data-result="refused"]')).to_contain_text(
        "Too many requests in a minute"
    )
    # At phone width the table scrolls in its box, which the keyboard can reach and scroll
    # (before: axe's scrollable-region-focusable, the last columns out of the keyboard's reach).
    page.set_viewport_size({"width": 360, "height": 640})
    checked(stack, page, "activity-phone-width")


def test_reauthentication_sign_out_everywhere_and_no_device(
    stack: Any, page: Page, browser: Browser, totp_code: Any, tmp_path: Path
) -> None:
    stack.enroll(page, "reauth")  # just signed in with the password: fresh enough to add the app
    db = tmp_path / "rp.db"  # start_stack's

    # A second browser signed in too (push).
    other = browser.new_context(viewport={"width": 1100, "height": 800})
    other.set_default_timeout(20_000)
    try:
        second = other.new_page()
        stack.sign_in_password(second)
        second.wait_for_url("**/signin/push")
        stack.answer("approve", "--number", stack.number(second))
        second.wait_for_url("**/account")

        # An old second factor: changing the password asks to verify first (push).
        age_reauth(page, db)
        page.goto(stack.url + "/security")
        page.get_by_role("link", name="Change password").click()
        page.wait_for_url("**/reauth")
        expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
        checked(stack, page, "reauth-01-verify")
        page.get_by_role("button", name="Send a request to my app").click()
        page.wait_for_url("**/reauth/push")
        request = stack.answer("approve", "--number", stack.number(page))
        assert "Verify it's you" in request["context"]["action"]
        page.wait_for_url("**/security/password")
        checked(stack, page, "reauth-02-change-password")

        # Removing a device asks again once it is old; a code does it too.
        age_reauth(page, db)
        page.goto(stack.url + "/security")
        page.get_by_role("link", name="Remove Test phone").click()
        page.wait_for_url("**/reauth")
        page.get_by_label("Verification code").fill(totp_code(stack.uri))
        page.get_by_role("button", name="Verify").click()
        page.wait_for_url(re.compile(r".*/security/devices/[A-Za-z0-9_-]+/remove$"))
        expect(page.get_by_role("button", name="Remove device")).to_be_visible()
        page.get_by_role("link", name="Cancel").click()

        # Sign out everywhere: this browser and the other one.
        page.get_by_role("button", name="Sign out everywhere").click()
        page.wait_for_url("**/signin")
        expect(page.get_by_role("status")).to_contain_text("signed out everywhere")
        checked(stack, page, "reauth-03-signed-out-everywhere")
        second.goto(stack.url + "/account")
        second.wait_for_url("**/signin")
        expect(second.get_by_role("status")).to_contain_text("You were signed out on this device")
        checked(stack, second, "reauth-04-other-browser-signed-out")
    finally:
        other.close()

    # Without JavaScript the page is rendered from the broker's state: a reload after
    # "this wasn't me" shows it reported, with the code as the primary action.
    plain = browser.new_context(viewport={"width": 1100, "height": 800}, java_script_enabled=False)
    plain.set_default_timeout(20_000)
    try:
        nojs = plain.new_page()
        stack.sign_in_password(nojs)
        nojs.wait_for_url("**/signin/push")
        expect(nojs.locator("#push-status")).to_have_attribute("data-status", "pending")
        stack.answer("deny", "--fraud")
        wait_until(lambda: not stack.agent.pending(), timeout=20, interval=0.3, message="the report recorded")
        nojs.reload()
        expect(nojs.locator("#push-status")).to_have_attribute("data-status", "reported")
        expect(nojs.get_by_role("button", name="Use a verification code instead")).to_have_class(
            re.compile(r"\bprimary\b")
        )
        expect(nojs.locator("#send-again")).to_be_hidden()
        # (axe-core itself needs JavaScript: the same markup is checked with it above.)
        stack.shot(nojs, "reauth-05-no-js-reported")
    finally:
        plain.close()

    # The app removed its account itself: the RP still lists it, the broker has none.
    # (The report above is taken as answered, as a password change does: while the RP's
    # own record holds it, no push is tried and the page says push is paused.)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE signin_activity SET seen = 1 WHERE result = 'reported'")
    name = stack.agent.accounts()[0]["name"]
    stack.agent.ok("remove", name, "--yes")
    stack.sign_in_password(page)
    page.wait_for_url("**/signin/code")
    expect(page.locator('#push-refused[data-reason="no_devices"]')).to_contain_text(
        "None of your devices can receive requests"
    )
    checked(stack, page, "reauth-06-no-device")
