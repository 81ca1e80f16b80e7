"""The web authenticator's own checks against a compromised broker (docs/protocol.md
section 18.2 and section 20, "Compromised broker"): the phone talks to a real broker
only through the hostile proxy (tests/support/hostile_broker.py), which relabels frames.

- A challenge that names another RP than the account's is neither shown nor answered:
  the phone never signs for an RP the user did not enroll with.
- So is a challenge whose `expires` has passed (an old request sent again).
- An enrollment the broker says it made for another RP than the link's is taken back
  (the key just registered is revoked) and nothing is kept.
- A recovery the broker answers for another RP or user does not move the account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_helpers import TEST_PASSPHRASE
from playwright.async_api import expect
from support import BrokerProcess, new_rp, until
from support.hostile_broker import DeviceLink, HostileBroker
from webapp_world import Phone, PhoneMaker, enrolled

from protocol.challenge import Status
from protocol.frames import Answer, Challenge, Enrolled, Frame
from relying_party.sdk import PushAuthClient

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONTEXT = {"app": "Payroll", "ip": "203.0.113.9"}


@pytest.fixture
def hostile(app_broker: BrokerProcess) -> Iterator[HostileBroker]:
    with HostileBroker(app_broker.http_url) as proxy:
        yield proxy
    proxy.check()


@pytest_asyncio.fixture(loop_scope="module")
async def via_proxy(app_broker: BrokerProcess, hostile: HostileBroker) -> AsyncIterator[PushAuthClient]:
    """The RP's SDK through the proxy: its links name the proxy, so the phone uses it too."""
    created = await new_rp(app_broker, "Contoso Portal")
    async with PushAuthClient(hostile.http_url, created["api_key"]) as client:
        yield client


def _for_another_rp(frame: Challenge) -> Challenge:
    return replace(frame, rp="another_rp")


def _ended_a_minute_ago(frame: Challenge) -> Challenge:
    return replace(frame, created=frame.created - 120_000, expires=frame.created - 60_000)


@pytest.mark.parametrize("tamper", [_for_another_rp, _ended_a_minute_ago], ids=["another rp", "expired"])
async def test_a_challenge_for_another_rp_or_expired_is_neither_shown_nor_answered(
    via_proxy: PushAuthClient, hostile: HostileBroker, phone: Phone, tamper: Callable[[Challenge], Challenge]
) -> None:
    """Section 18.2: a challenge that names another RP than the account's, or whose
    `expires` has passed by the broker's clock (an old request sent again), is neither
    shown nor answered: the phone never signs for an RP the user did not enroll with."""
    account = await enrolled(via_proxy, phone)
    tampered: list[str] = []

    def first_one(frame: Frame, _link: DeviceLink) -> Frame:
        if isinstance(frame, Challenge) and not tampered:
            tampered.append(frame.ch)
            return tamper(frame)
        return frame

    hostile.on_broker_frame(first_one)
    first = await via_proxy.create_challenge("alice", CONTEXT, supersede=False)

    async def on_its_way() -> bool:
        return tampered == [first.id]

    await until(on_its_way, message="the first challenge tampered with on its way")
    # A second, honest one (kept alongside): the only one the phone shows.
    second = await via_proxy.create_challenge("alice", CONTEXT, supersede=False)
    await phone.prompt(second.id)
    await expect(phone.page.locator("#prompt-more")).to_be_hidden()
    await phone.type_number(second.number)
    await phone.page.get_by_role("button", name="Approve").tap()
    keys = {account["cid"]: account["key"]}
    assert (await via_proxy.wait_result(second, keys, timeout=10)).status is Status.APPROVED
    await phone.no_prompt()
    assert [r.frame.ch for r in hostile.device_frames(Answer) if isinstance(r.frame, Answer)] == [second.id]
    assert (await via_proxy.get_result(first, keys)).status is Status.PENDING


async def test_an_enrollment_the_broker_made_for_another_rp_is_revoked(
    via_proxy: PushAuthClient, hostile: HostileBroker, phone: Phone
) -> None:
    def elsewhere(frame: Frame, _link: DeviceLink) -> Frame:
        return replace(frame, rp="another_rp") if isinstance(frame, Enrolled) else frame

    hostile.on_broker_frame(elsewhere)
    enrollment = await via_proxy.create_enrollment("alice", "alice@contoso.example")
    assert enrollment.uri is not None
    page = phone.page
    await page.get_by_role("button", name="Add account").click()
    await page.get_by_label("Setup link").fill(enrollment.uri)
    await page.get_by_label("Name of this phone").fill("Test phone")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.locator("#add-error", has_text="enrolled this phone at another service").wait_for()
    assert await page.locator("#accounts li").count() == 0  # nothing kept
    done = await via_proxy.wait_enrollment(enrollment, timeout=10)
    assert done.credential is not None  # the broker did register it...

    async def taken_back() -> bool:
        return await via_proxy.list_credentials("alice") == []

    await until(
        taken_back, message="the phone revoked the key it just registered"
    )  # ...and the phone took it back


@pytest.mark.parametrize(
    ("moved", "why"),
    [
        ({"rp": "another_rp"}, "the server recovered the account at another service"),
        ({"user": "mallory"}, "the server recovered the account for another user"),
    ],
    ids=["another rp", "another user"],
)
async def test_a_recovery_the_broker_answers_for_another_account_is_not_kept(
    via_proxy: PushAuthClient,
    hostile: HostileBroker,
    phone: Phone,
    phones: PhoneMaker,
    app_broker: BrokerProcess,
    tmp_path: Path,
    moved: dict[str, str],
    why: str,
) -> None:
    """A backup restored on a new phone recovers its account with the recovery key; a
    broker that answers the recovery for another service or user does not move the
    account there: it waits for a new QR code, under the service and user it had."""
    account = await enrolled(via_proxy, phone, recoverable=True)
    path = tmp_path / "app.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    hostile.rewrite("POST", r"/v1/recoveries", lambda _exchange, body: {**body, **moved})
    new = await phones(app_broker.http_url + "/app/")
    await new.restore(path, TEST_PASSPHRASE)
    await new.page.locator("#backup-status", has_text="Restored").wait_for()
    (line,) = await new.page.locator("#restore-report li").all_inner_texts()
    assert "action required" in line and why in line, line
    kept = await new.page.evaluate(
        """async (cid) => {
          const db = await import("./js/db.js");
          const a = await db.getAccount(cid);
          return a && { rp: a.rp, user: a.user, actionRequired: a.actionRequired };
        }""",
        account["cid"],
    )
    assert kept == {"rp": (await via_proxy.rp()).id, "user": "alice", "actionRequired": True}
