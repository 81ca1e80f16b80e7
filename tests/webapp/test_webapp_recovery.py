""" "Was this you?" on the web authenticator: the phone app holds a recoverable account
(the link said recoverable=1, so it registered a recovery key); the Python agent CLI, as
a subprocess, restores a backup holding that recovery key on a "new phone" and recovers
by itself; the open app asks at once. "Yes" keeps both devices (each one's answer
verified by the RP SDK, and a request approved by the Python agent leaves the app's
screen); "No" has the broker revoke the new key and pause push for the user as a fraud
report does, and renews the account's recovery key on a phone whose clock is a minute
behind the one that restored (the broker's 409 `newer_than`: signed again just after it,
never far ahead); a question with nothing left to answer (the RP removed the new device)
leaves the screen. Real broker, Redis, Chromium (phone profile) and agent process.

The backup the agent restores is the one the app saves on its Backup screen (its
format is tested on its own in test_webapp_backup.py); the test also reads the app's
stored recovery key through its modules, to check that it is kept sealed.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import TEST_PASSPHRASE, agent, agent_env  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from playwright.async_api import Route
from support import BrokerProcess
from test_webapp_signin import CONTEXT
from webapp_world import Phone

from device_agent.backup import load_backup
from device_agent.store import AccountStore
from protocol import signing
from protocol.challenge import Status
from relying_party.errors import PushBlocked
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

pytestmark = pytest.mark.asyncio(loop_scope="module")
ACCOUNT = "alice@contoso.example"

READ_ACCOUNT = """async (cid) => {
  const db = await import(new URL('js/db.js', document.baseURI).href);
  const sealed = await import(new URL('js/sealed.js', document.baseURI).href);
  const a = await db.getAccount(cid);
  const seed = await sealed.open(a.recovery.seed, 'recovery:' + cid);
  return {
    rp: a.rp, rp_name: a.rp_name, user: a.user, label: a.label, broker: a.broker,
    device_name: a.deviceName, added: a.added,
    recovery_pk: Array.from(a.recovery.publicKey), seed: Array.from(seed),
    stored: Array.from(a.recovery.seed.ct),
  };
}"""


async def recovery_key_shown(phone: Phone) -> str:
    """What Manage says of the account's recovery key."""
    await phone.page.get_by_role("button", name=f"Manage {ACCOUNT}").tap()
    row = phone.page.locator("#account:not([hidden]) #account-details dt:text-is('Recovery key') + dd")
    shown = await row.inner_text()
    await phone.page.get_by_role("button", name="Back").tap()
    return shown


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def recoverable_on_the_app(rp: PushAuthClient, phone: Phone) -> Any:
    started = await rp.create_enrollment("alice", ACCOUNT, totp=new_totp(), recoverable=True)
    assert started.uri is not None and "recoverable=1" in started.uri
    cid = await phone.add_account(started.uri, "Old phone")
    done = await rp.wait_enrollment(started, timeout=10)
    assert done.completed and done.credential is not None and done.credential.id == cid
    assert done.credential.recovery_key is not None  # the RP checked and stored it
    await rp.confirm_credential(cid)
    return done.credential


async def restore_with_the_python_agent(
    phone: Phone, old: Any, tmp_path: Path, *, app_closed: bool = False
) -> tuple[Path, Any]:
    """The app's own backup (saved on its Backup screen), restored by `pushauth-agent
    restore` on a new phone, which recovers the account with the recovery key by itself
    (with `app_closed`, while the app is closed: it is asked when it opens again)."""
    a = await phone.page.evaluate(READ_ACCOUNT, old.id)
    seed = bytes(a["seed"])
    assert signing.public_key(seed) == bytes(a["recovery_pk"]) == old.recovery_key.public_key
    assert seed not in bytes(a["stored"])  # kept sealed, not as plain bytes
    path = tmp_path / "pushauth.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    await phone.page.get_by_role("button", name="Back", exact=True).tap()
    assert load_backup(path.read_bytes(), TEST_PASSPHRASE).push_accounts[0]["recovery_seed"] == b64(seed)
    if app_closed:
        await phone.page.close()
    new_home = tmp_path / "new"
    out = await asyncio.to_thread(ok, new_home, "restore", "--from", str(path), "--device-name", "new phone")
    assert f"recovered: {ACCOUNT}" in out
    if app_closed:
        await phone.open()
    return new_home, AccountStore(new_home).find(ACCOUNT)


async def the_question(phone: Phone, rp: PushAuthClient, old: Any) -> Any:
    (new,) = [c for c in await rp.list_credentials("alice") if c.recovered_from == old.id]
    question = phone.page.locator("#notice:not([hidden])")
    await question.wait_for()
    text = await phone.page.locator("#notice-text").inner_text()
    assert text.startswith(f"A new device ('new phone') was added to {ACCOUNT} by recovery on ")
    assert text.endswith("Was this you?")
    details = await phone.page.locator("#notice-details").inner_text()
    assert "Contoso Portal" in details and "new phone" in details
    return new


async def test_yes_keeps_both_devices(
    rp: PushAuthClient, phone: Phone, app_broker: BrokerProcess, tmp_path: Path
) -> None:
    old = await recoverable_on_the_app(rp, phone)
    await phone.no_prompt()
    assert await recovery_key_shown(phone) == "kept on this phone and in its backups"
    new_home, restored = await restore_with_the_python_agent(phone, old, tmp_path)
    new = await the_question(phone, rp, old)
    assert restored.cid == new.id
    await phone.shot("23-recovery-question")
    await phone.axe_clean("the recovery question")
    await phone.page.get_by_role("button", name="Yes, it was me").tap()
    await phone.toast("Both devices keep working")
    await phone.page.locator("#notice[hidden]").wait_for(state="attached")
    await phone.shot("24-recovery-confirmed")
    # The recovery used the key up; the phone renewed it (its backups recover it again),
    # and the service accepts the new one by its own check (signed by the account's key).
    assert await recovery_key_shown(phone) == "kept on this phone and in its backups"
    sync = await rp.sync_credentials("alice", {old.id: old})
    assert [c.id for c in sync.rotated] == [old.id] and not sync.refused

    # Both credentials are valid; nothing is muted.
    keys = {c.id: c.public_key for c in await rp.list_credentials("alice")}
    assert set(keys) == {old.id, new.id}
    assert (await rp.push_block("alice"))["muted_until"] is None

    # A request approved on the new phone (the Python agent) leaves the app's screen at once.
    challenge = await rp.create_challenge("alice", CONTEXT)
    await phone.prompt(challenge.id)
    await asyncio.to_thread(ok, new_home, "approve", challenge.id, "--number", challenge.number)
    await phone.no_prompt()
    await phone.toast("answered on another device")
    verdict = await rp.wait_result(challenge, keys, timeout=10)
    assert verdict.status is Status.APPROVED and verdict.answer is not None
    assert verdict.answer.credential_id == new.id

    # ... and the app still approves with its own key.
    challenge = await rp.create_challenge("alice", CONTEXT)
    await phone.prompt(challenge.id)
    await phone.type_number(challenge.number)
    await phone.page.get_by_role("button", name="Approve").tap()
    verdict = await rp.wait_result(challenge, keys, timeout=10)
    assert verdict.status is Status.APPROVED and verdict.answer is not None
    assert verdict.answer.credential_id == old.id


async def test_no_asked_on_opening_removes_the_new_device_and_the_service_is_told(
    rp: PushAuthClient, phone: Phone, app_broker: BrokerProcess, tmp_path: Path
) -> None:
    # This phone's clock runs a minute behind the new phone's (its timers as they run):
    # the restore is dated after this phone's clock.
    await phone.context.clock.install(time=time.time() - 60)
    old = await recoverable_on_the_app(rp, phone)
    new_home, _ = await restore_with_the_python_agent(phone, old, tmp_path, app_closed=True)
    new = await the_question(phone, rp, old)
    assert new.recovery is not None
    await phone.page.get_by_role("button", name="No, it wasn't me").tap()
    said = await phone.page.locator("#toast", has_text="The new device was removed").inner_text()
    await phone.page.locator("#notice[hidden]").wait_for(state="attached")
    await phone.shot("25-recovery-disowned")
    await phone.axe_clean("the home screen after a disowned recovery")
    # The account got a new recovery key (older backups recover nothing now): dated by
    # this phone's clock, the broker refused it as not newer than the restore (409
    # conflict, with newer_than); the app signed it again just after the restore.
    assert "Older backups of this phone recover nothing now" in said and "Not done" not in said, said
    assert await recovery_key_shown(phone) == "kept on this phone and in its backups"

    # The new credential is revoked, and the RP sees the fraud: push is muted for alice.
    assert [c.id for c in await rp.list_credentials("alice")] == [old.id]
    sync = await rp.sync_credentials("alice", {old.id: old, new.id: new})
    assert sync.removed == [new.id]
    assert [c.id for c in sync.rotated] == [old.id] and not sync.refused
    (listed,) = await rp.list_credentials("alice")
    assert listed.recovery_key is not None and listed.recovery_key.ts == new.recovery.ts + 1
    assert (await rp.push_block("alice"))["muted_until"] is not None
    with pytest.raises(PushBlocked):
        await rp.create_challenge("alice", CONTEXT)
    # The new phone's key is refused by the broker.
    refused = await asyncio.to_thread(agent, new_home, "pending")
    assert "Traceback" not in refused.stderr
    assert AccountStore(new_home).find(ACCOUNT).status == "revoked"

    # Once the RP lifts the mute, the app's own key still signs in.
    await rp.lift_push_block("alice")
    challenge = await rp.create_challenge("alice", CONTEXT)
    await phone.prompt(challenge.id)
    await phone.type_number(challenge.number)
    await phone.page.get_by_role("button", name="Approve").tap()
    verdict = await rp.wait_result(challenge, {old.id: old.public_key}, timeout=10)
    assert verdict.status is Status.APPROVED

    # "Retire older backups", dated by this phone's clock, is again not newer than what the
    # broker holds (the key just named): a broker that says the next key must be dated an
    # hour ahead gets no such key (the service would refuse the person's later keys), and
    # the app names the clock to check.
    statuses: list[int] = []

    async def an_hour_ahead(route: Route) -> None:
        answer = await route.fetch()
        statuses.append(answer.status)
        if answer.status != 409:
            return await route.fulfill(response=answer)
        body = await answer.json()
        await route.fulfill(response=answer, json={**body, "newer_than": body["newer_than"] + 3_600_000})

    await phone.page.route("**/recovery-key", an_hour_ahead)
    await phone._backup_view()
    phone.page.once("dialog", lambda dialog: dialog.accept())
    await phone.page.get_by_role("button", name="Retire older backups").tap()
    said = await phone.page.locator("#backup-status", has_text="Not done").inner_text()
    assert f"{ACCOUNT}'s recovery key was not renewed: the server takes a new one only if dated after" in said
    assert "the device that restored this account had a clock ahead: wait until" in said, said
    assert statuses == [409]  # signed once, not an hour ahead
    (listed,) = await rp.list_credentials("alice")
    assert listed.recovery_key is not None and listed.recovery_key.ts == new.recovery.ts + 1


async def test_the_question_goes_when_the_service_removes_the_new_device(
    rp: PushAuthClient, phone: Phone, tmp_path: Path
) -> None:
    """Nothing left to answer: the broker withdraws the question and the app drops it."""
    old = await recoverable_on_the_app(rp, phone)
    await restore_with_the_python_agent(phone, old, tmp_path)
    new = await the_question(phone, rp, old)
    await rp.revoke_credential(new.id)
    await phone.page.locator("#notice[hidden]").wait_for(state="attached")
    await phone.toast("The recovery question was closed")
    assert [c.id for c in await rp.list_credentials("alice")] == [old.id]
    assert (await rp.push_block("alice"))["muted_until"] is None
