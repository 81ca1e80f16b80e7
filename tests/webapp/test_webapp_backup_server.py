"""Copies of the web authenticator's backup on the server (the broker's encrypted-blob
store), in the agent's format: the app's copy restores with `pushauth-agent restore --from
broker` and the agent's in the app; a mistyped code or a wrong passphrase restores
nothing; a new passphrase replaces the copy and the old one goes (also when its deletion
fails at first); after a "no" and after "Retire older backups" older backups recover
nothing; the automatic copy follows each change. (Backup files: test_webapp_backup.py.)

Real broker, Redis, Chromium (phone profile) and agent process; Argon2id at the real cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from secrets import token_bytes
from typing import Any

import pytest
import redis
from e2e_helpers import TEST_PASSPHRASE, agent, agent_env, enroll  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from playwright.async_api import expect
from test_webapp_backup import NEW_PASSPHRASE, PLAIN, SAFE, enroll_two, report, stored_of
from webapp_world import Phone, PhoneMaker, enrolled

from device_agent import broker_http
from device_agent.backup import load_backup
from device_agent.errors import Refused
from device_agent.legacy_store import unb64 as b64decode
from device_agent.passphrase import BACKUP_CODE_ENV, KDF_ENV, PASSPHRASE_ENV
from device_agent.store import AccountStore
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- copies on the server (the broker's encrypted-backup store) ---------------------------

CODE_RE = re.compile(r"PAB1(?:-[0-9A-Z]{4}){8}")
# The agent derives a server copy's keys at the real Argon2id cost here (its tests run
# at the cheapest): the app always uses the real one, and both must derive the same keys.
REAL_COST = {KDF_ENV: ""}


async def agent_restores_from_server(
    home: Path, broker: Any, code: str, *, succeeds: bool = True, passphrase: str = TEST_PASSPHRASE
) -> Any:
    """`pushauth-agent restore --from broker` of the broker's copy, as a laptop would."""
    args = ("restore", "--from", "broker", "--broker", broker.ws_url, "--device-name", "Laptop")
    env = {**REAL_COST, BACKUP_CODE_ENV: code, PASSPHRASE_ENV: passphrase}
    done = await asyncio.to_thread(agent, home, *args, **env)
    assert (done.returncode == 0) == succeeds, done.stderr + done.stdout
    return done


async def test_a_server_copy_saved_by_the_app_restores_with_the_agent(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    accounts = await enroll_two(rp, phone, "gwen")
    code = await phone.save_to_server(TEST_PASSPHRASE)
    await phone.page.locator("#backup-code", has_text="Write it down now").wait_for()
    # The focus goes to the code, so a screen reader reads it (before: lost on <body>).
    assert await phone.page.evaluate("document.activeElement.id") == "backup-code"
    # With the address a restore asks for, as the copy's keys are derived from it.
    await phone.page.locator(
        "#backup-code", has_text=f"address as written here: {app_broker.http_url}"
    ).wait_for()
    assert await phone.save_to_server(TEST_PASSPHRASE) == code  # one code per phone
    await phone.page.locator("#backup-code", has_text="The same as before").wait_for()
    home = tmp_path / "agent"
    out = (await agent_restores_from_server(home, app_broker, code.lower())).stdout
    assert f"recovered: {SAFE}" in out
    assert AccountStore(home).find(PLAIN).status == "action_required"
    sync = await rp.sync_credentials("gwen", stored_of(accounts))
    (new,) = sync.added
    assert new.recovered_from == accounts[SAFE]["cid"] and new.name == "Laptop"


async def test_a_server_copy_saved_by_the_agent_restores_in_the_app(
    rp: PushAuthClient, phones: PhoneMaker, app_broker: Any, tmp_path: Path
) -> None:
    home = tmp_path / "agent"
    credential = await enroll(rp, home, user="hana", account="hana@contoso.example")
    out = await asyncio.to_thread(ok, home, "backup", "--to", "broker", **REAL_COST)
    (code,) = CODE_RE.findall(out)
    new = await phones(app_broker.http_url + "/app/")
    await new.restore_from_server(app_broker.ws_url, code.replace("-", " "), TEST_PASSPHRASE)
    (line,) = await report(new)
    waiting = "action required: scan a new QR code from Contoso Portal; verification codes work"
    assert line == f"hana@contoso.example: {waiting}"
    cid = await new.page.locator("#accounts li").get_attribute("data-cid")
    assert cid == credential.id  # waiting under the old device's credential, for a new QR code
    # The phone keeps the code for its own server copies, as the agent does.
    assert await new.save_to_server(TEST_PASSPHRASE) == code


async def test_a_mistyped_code_or_a_wrong_passphrase_restores_nothing_from_the_server(
    rp: PushAuthClient, phone: Phone, app_broker: Any, phones: PhoneMaker
) -> None:
    await enroll_two(rp, phone, "ivan")
    code = await phone.save_to_server(TEST_PASSPHRASE)
    await phone.page.get_by_role("button", name="Back", exact=True).tap()
    empty = await phones(app_broker.http_url + "/app/")
    page = empty.page
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    for typed, passphrase, address, words in (
        (typo, TEST_PASSPHRASE, app_broker.ws_url, "this backup code is mistyped"),
        (
            code,
            TEST_PASSPHRASE + " again",
            app_broker.ws_url,
            "no backup on this server for this passphrase",
        ),
        (code, TEST_PASSPHRASE, "ws://push.example.com/v1/device", "not encrypted"),
        (code, TEST_PASSPHRASE, "push.example.com", "not a server address"),
    ):
        await empty.restore_from_server(address, typed, passphrase)
        await page.locator("#restore-error", has_text=words).wait_for()
        await page.locator("#restore-error", has_text="Nothing was changed").wait_for()
        assert await page.locator("#accounts li").count() == 0


async def test_a_new_passphrase_replaces_the_server_copy_and_the_old_one_goes(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    """The app keeps no passphrase: a new one is given by saving again. The copy under
    the old passphrase is deleted (whoever learnt it opens nothing), the code stays, and
    the automatic copy follows the new passphrase."""
    await enroll_two(rp, phone, "mona")
    code = await phone.save_to_server(TEST_PASSPHRASE)
    assert await phone.save_to_server(NEW_PASSPHRASE) == code
    status = phone.page.locator("#backup-status")
    await status.filter(has_text="The copy under the previous passphrase was deleted").wait_for()
    gone = await agent_restores_from_server(tmp_path / "old", app_broker, code, succeeds=False)
    assert "no backup at" in gone.stderr
    # Saving again under the same passphrase deletes nothing: that copy is the new one.
    await phone.save_to_server(NEW_PASSPHRASE)
    await status.filter(has_text="saved on").wait_for()
    assert "deleted" not in await status.inner_text()
    first = await phone.page.locator("#auto-note").get_attribute("data-digest")
    assert first

    # A change is written under the new passphrase, and that copy restores.
    await phone.page.get_by_role("button", name="Back", exact=True).tap()
    await phone.page.get_by_role("button", name=f"Manage {SAFE}").tap()
    await phone.page.get_by_label("Name shown in this app").fill("Contoso (new passphrase)")
    await phone.page.get_by_role("button", name="Rename").tap()
    await copy_written_after(phone, first)
    home = tmp_path / "new"
    out = (await agent_restores_from_server(home, app_broker, code, passphrase=NEW_PASSPHRASE)).stdout
    assert "recovered: Contoso (new passphrase)" in out


async def test_an_old_copy_that_cannot_be_deleted_now_is_deleted_at_the_next_save(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    await enrolled(rp, phone, "nora")  # not recoverable: the agent's restores ask the phone nothing
    code = await phone.save_to_server(TEST_PASSPHRASE)
    status = phone.page.locator("#backup-status")
    assert (await status.inner_text()).startswith("Backup of 1 account saved on")  # not "1 account(s)"

    # The network fails for the deletion only: the new copy is saved, the old one stays
    # listed, and the status says so.
    async def cut(route: Any) -> None:
        await (route.abort() if route.request.method == "DELETE" else route.continue_())

    await phone.context.route("**/v1/backups/**", cut)
    try:
        await phone.save_to_server(NEW_PASSPHRASE)
        await status.filter(has_text="could not be deleted").wait_for()
        await status.filter(has_text="tried again at the next save").wait_for()
    finally:
        await phone.context.unroute("**/v1/backups/**", cut)
    still = await agent_restores_from_server(tmp_path / "old", app_broker, code)
    assert "action required: nora@contoso.example" in still.stdout

    await phone.save_to_server(NEW_PASSPHRASE)
    await status.filter(has_text="The copy under the previous passphrase was deleted").wait_for()
    gone = await agent_restores_from_server(tmp_path / "again", app_broker, code, succeeds=False)
    assert "no backup at" in gone.stderr


# -- after "No, it wasn't me" ---------------------------------------------------------------


async def test_after_no_older_backups_recover_nothing_and_a_new_one_works(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    stored = {}
    for label in ("kim@contoso.example", "kim@fabrikam.example"):
        added = await enrolled(rp, phone, "kim", account=label, recoverable=True, device_name="Old phone")
        stored[added["cid"]] = added["credential"]
    first, second = stored
    old_file = tmp_path / "old.backup"
    await phone.save_backup(old_file, TEST_PASSPHRASE)
    code = await phone.save_to_server(TEST_PASSPHRASE)
    await phone.page.get_by_role("button", name="Back", exact=True).tap()

    # A thief with the file and its passphrase recovers the first account on a device of
    # its own; the phone is asked and says no.
    pushed = load_backup(old_file.read_bytes(), TEST_PASSPHRASE).push_accounts
    seeds = {p["cid"]: b64decode(p["recovery_seed"]) for p in pushed}
    rp_id = pushed[0]["rp"]

    def thief_recovers(cid: str) -> dict[str, Any]:
        return broker_http.recover(
            app_broker.ws_url, rp_id, cid, seeds[cid], token_bytes(32), token_bytes(32), "thief"
        )

    await asyncio.to_thread(thief_recovers, first)
    await phone.page.locator("#notice:not([hidden])").wait_for()
    await phone.page.get_by_role("button", name="No, it wasn't me").tap()
    await phone.toast("Older backups of this phone recover nothing now")
    said = await phone.page.locator("#toast").inner_text()
    assert "Not done" not in said
    # New recovery keys end nothing of the codes: the thief's copy of the secrets works.
    assert "Verification codes in older backups still work" in said, said

    # The other account's recovery key in the old backup was replaced: refused.
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(thief_recovers, second)
    assert refused.value.code == "recovery_key_used"
    # The server copy (which the thief may also open) is gone.
    gone = await agent_restores_from_server(tmp_path / "thief", app_broker, code, succeeds=False)
    assert "no backup at" in gone.stderr
    # The service accepts the renewed keys by its own check (signed by each credential).
    sync = await rp.sync_credentials("kim", stored)
    assert {c.id for c in sync.rotated} == {first, second} and not sync.refused
    # A new backup holds the new keys, and a new backup code.
    new_file = tmp_path / "new.backup"
    await phone.save_backup(new_file, TEST_PASSPHRASE)
    renewed = {
        p["cid"]: b64decode(p["recovery_seed"])
        for p in load_backup(new_file.read_bytes(), TEST_PASSPHRASE).push_accounts
    }
    assert renewed.keys() == seeds.keys() and all(renewed[c] != seeds[c] for c in seeds)
    assert await phone.save_to_server(TEST_PASSPHRASE) != code


async def test_retired_backups_recover_nothing_and_a_new_one_works(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    """A lost backup, or a passphrase that may be known: "Retire older backups" does what
    a "no" does, without a stranger's recovery to start it."""
    accounts = await enroll_two(rp, phone, "olga")
    safe = accounts[SAFE]["cid"]
    old_file = tmp_path / "old.backup"
    await phone.save_backup(old_file, TEST_PASSPHRASE)
    code = await phone.save_to_server(TEST_PASSPHRASE)
    (pushed,) = load_backup(old_file.read_bytes(), TEST_PASSPHRASE).push_accounts[:1]
    assert pushed["cid"] == safe

    page = phone.page
    page.once("dialog", lambda dialog: dialog.dismiss())
    await page.get_by_role("button", name="Retire older backups").tap()
    # Said no: nothing started (the status line is set before the first await).
    assert "Retiring" not in await page.locator("#backup-status").inner_text()
    await page.locator("#backup-auto-status:not([hidden])").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Retire older backups").tap()
    await page.locator(
        "#backup-status", has_text="Older backups of this phone recover nothing now"
    ).wait_for()
    said = await page.locator("#backup-status").inner_text()
    assert "Not done" not in said
    assert "Verification codes in older backups still work" in said, said
    await page.locator("#backup-auto-status[hidden]").wait_for(state="attached")

    # The old file's recovery key is refused, the server copy is gone, the service
    # accepts the renewed key by its own check.
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(
            broker_http.recover,
            app_broker.ws_url,
            pushed["rp"],
            safe,
            b64decode(pushed["recovery_seed"]),
            token_bytes(32),
            token_bytes(32),
            "thief",
        )
    assert refused.value.code == "recovery_key_used"
    gone = await agent_restores_from_server(tmp_path / "thief", app_broker, code, succeeds=False)
    assert "no backup at" in gone.stderr
    sync = await rp.sync_credentials("olga", stored_of(accounts))
    assert [c.id for c in sync.rotated] == [safe] and not sync.refused
    # A new backup holds the new key and recovers; the next server copy has a new code.
    new_file = tmp_path / "new.backup"
    await phone.save_backup(new_file, TEST_PASSPHRASE)
    (renewed,) = load_backup(new_file.read_bytes(), TEST_PASSPHRASE).push_accounts[:1]
    assert renewed["recovery_seed"] != pushed["recovery_seed"]
    assert await phone.save_to_server(TEST_PASSPHRASE) != code


async def copy_written_after(phone: Phone, before: str) -> str:
    """Wait until the phone has written a new automatic copy: the home screen's note
    names the copy's content (`data-digest`), which changes with each copy."""
    note = phone.page.locator(f"#auto-note[data-digest]:not([data-digest='{before}'])")
    await note.wait_for(state="attached")
    digest = await note.get_attribute("data-digest")
    assert digest
    return digest


def blob_keys(broker: Any) -> set[bytes]:
    with redis.Redis.from_url(broker.redis_url) as r:
        return set(r.scan_iter(match="pa:{blob}:blob:*"))


async def rewritten(phone: Phone, words: str) -> None:
    """The app opened again (a new run): its first connection compares the automatic copy
    with what it stored last and, as `words` say, writes it again."""
    await phone.page.reload()
    await phone.page.locator("body[data-ready='1']").wait_for()
    await phone.toast(words)
    await phone.toast("it was written again and has every change now")


async def test_the_server_copy_is_kept_up_to_date_after_each_change(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    await enroll_two(rp, phone, "lena")
    before = blob_keys(app_broker)
    code = await phone.save_to_server(TEST_PASSPHRASE)
    (key,) = blob_keys(app_broker) - before
    with redis.Redis.from_url(app_broker.redis_url) as r:
        saved = r.dump(key)  # the copy as a restore of the server's data would bring it back
    await phone.page.locator("#backup-auto-status", has_text="kept up to date after each change").wait_for()
    await phone.shot("30-saved-to-the-server")
    await phone.axe_clean("the backup screen after a save to the server, with its backup code")
    first = await phone.page.locator("#auto-note").get_attribute("data-digest")
    assert first
    await phone.page.get_by_role("button", name="Back", exact=True).tap()

    # A change: one more account, then a rename; each rewrites the copy on its own.
    started = await rp.create_enrollment("lena", "lena@tailspin.example", totp=new_totp())
    assert started.uri is not None
    await phone.add_account(started.uri)
    second = await copy_written_after(phone, first)
    await phone.page.get_by_role("button", name=f"Manage {SAFE}").tap()
    await phone.page.get_by_label("Name shown in this app").fill("Contoso (work)")
    await phone.page.get_by_role("button", name="Rename").tap()
    await copy_written_after(phone, second)

    # The server's data restored from an older copy: the first copy is back, then none.
    # Each is found when the app next reaches the server, and the copy written again.
    with redis.Redis.from_url(app_broker.redis_url) as r:
        r.restore(key, 0, saved, replace=True)
    await rewritten(phone, "is not the one this phone wrote last")
    with redis.Redis.from_url(app_broker.redis_url) as r:
        r.delete(key)
    await rewritten(phone, "is gone")

    home = tmp_path / "agent"
    out = (await agent_restores_from_server(home, app_broker, code)).stdout
    assert "recovered: Contoso (work)" in out
    names = [a["name"] for a in json.loads(await asyncio.to_thread(ok, home, "accounts", "--json"))]
    assert names == ["Contoso (work)", PLAIN, "lena@tailspin.example"]


async def test_a_save_the_server_never_answers_fails_in_time_and_can_be_tried_again(
    rp: PushAuthClient, phone: Phone
) -> None:
    """A flaky network where the upload's connection stalls: the PUT is held (Playwright's
    route) and never answered. Before, "Save to the server" waited for good, its button
    disabled; now the request gives up after its timeout (the page's clock, moved on by
    Playwright) with a message that says so, and the button works again."""
    await enrolled(rp, phone, "nora")
    page = phone.page
    held: list[Any] = []
    reached = asyncio.Event()

    async def stall(route: Any) -> None:
        if route.request.method == "PUT":
            held.append(route)
            reached.set()
        else:
            await route.continue_()

    await phone.context.route("**/v1/backups/**", stall)
    await page.clock.install()  # the page's timers from now on: moved on below, not waited for
    try:
        await phone._backup_view()
        await page.get_by_label("Passphrase (at least 12").fill(TEST_PASSPHRASE)
        await page.get_by_label("The same passphrase again").fill(TEST_PASSPHRASE)
        await page.get_by_role("button", name="Save to the server").tap()
        await asyncio.wait_for(reached.wait(), 60)
        await page.clock.fast_forward("00:31")
        await page.locator("#backup-error", has_text="did not answer in 30 s").wait_for()
        await expect(page.get_by_role("button", name="Save to the server")).to_be_enabled()
    finally:
        await phone.context.unroute("**/v1/backups/**", stall)
        for route in held:
            with contextlib.suppress(Exception):  # aborted by the page already
                await route.abort()
    # On a network that works again, the same button saves it.
    assert re.fullmatch(r"PAB1(-[0-9A-Z]{4}){8}", await phone.save_to_server(TEST_PASSPHRASE))
