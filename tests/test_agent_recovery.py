"""The broker's encrypted-backup store and recoverable accounts, end to end: the real
agent CLI, a real broker on a real Redis, the RP SDK verifying every answer; and the
device HTTP routes refusing forged, stale, replayed and oversized requests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_helpers import AGENT_ENV, TEST_PASSPHRASE, agent, agent_env, enroll  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import AGENT, BrokerProcess, RedisServer, assert_cli_error, run_cli, store_policy

from broker import keys as redis_keys
from device_agent import broker_http, recovery_keys
from device_agent.backup_keys import BackupCode
from device_agent.errors import RotationTooEarly
from device_agent.passphrase import BACKUP_CODE_ENV, NEW_PASSPHRASE_ENV, PASSPHRASE_ENV
from device_agent.store import AccountStore
from protocol import b64, signing
from protocol.challenge import Status
from relying_party.errors import VerificationReason
from relying_party.models import Credential, CredentialSync
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

CONTEXT = {"app": "Webmail", "ip": "203.0.113.5"}
TOTP_URI = "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME"
NEW_PASSPHRASE = "quartz lantern orbit 7 pelican sundial"
# What a restore says for an account whose recovery the broker refused, and why.
REFUSED = "action required"
USED = "a recovery key works once"
REPLACED = "it was replaced"


def code_in(out: str) -> str:
    """The backup code that the first `backup --to broker` shows."""
    (code,) = re.findall(r"PAB1(?:-[0-9A-Z]{4}){8}", out)
    return code


async def enroll_recoverable(
    client: PushAuthClient, home: Path, name: str, account: str = "alice@example.com"
) -> Any:
    started = await client.create_enrollment("alice", account, totp=new_totp(), recoverable=True)
    assert started.uri is not None
    await asyncio.to_thread(ok, home, "enroll", started.uri, "--name", name)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    await client.confirm_credential(done.credential.id)
    return done.credential


async def approve(client: PushAuthClient, home: Path, keys: dict[str, bytes]) -> Any:
    ch = await client.create_challenge("alice", CONTEXT)
    await asyncio.to_thread(ok, home, "approve", ch.id, "--number", ch.number)
    result = await client.wait_result(ch, keys, timeout=10)
    assert result.status is Status.APPROVED and result.answer is not None
    return result.answer.credential_id


async def test_a_recoverable_account_recovers_by_itself_via_the_broker_backup(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ok(old, "add", TOTP_URI)
    old_cred = await enroll_recoverable(client, old, "old phone")
    plain = await enroll(client, old, account="alice@plain.example", name="old phone")  # not recoverable
    listed = {a.name: a for a in AccountStore(old).load()}
    assert listed["alice@example.com"].recoverable and not listed["alice@plain.example"].recoverable

    out = ok(old, "backup", "--to", "broker", "--backup-name", "phones")
    assert f"the broker {broker.ws_url}" in out
    code = {BACKUP_CODE_ENV: code_in(out)}
    # A new phone knows only the broker, the name, the passphrase and the backup code.
    out = ok(
        new, "restore", "--from", "broker", "--broker", broker.ws_url, "--backup-name", "phones",
        "--device-name", "new phone", **code,
    )  # fmt: skip
    assert "recovered: alice@example.com" in out
    assert "action required: alice@plain.example" in out
    assert out.splitlines()[-1] == "3 restored, 1 need action"

    # The same broker backup, passphrase and code a second time: the recovery key is used.
    out = ok(
        tmp_path / "second", "restore", "--from", "broker", "--broker", broker.ws_url,
        "--backup-name", "phones", **code,
    )  # fmt: skip
    assert f"{REFUSED}: alice@example.com: it could not recover by itself" in out and USED in out
    assert sum(c.recovered_from == old_cred.id for c in await client.list_credentials("alice")) == 1

    creds = {c.id: c for c in await client.list_credentials("alice")}
    (new_cred,) = [c for c in creds.values() if c.recovered_from == old_cred.id]
    assert new_cred.name == "new phone" and new_cred.account == "alice@example.com"
    assert creds[old_cred.id].recovered_from is None
    account = AccountStore(new).find("alice@example.com")
    assert account.active and account.cid == new_cred.id and account.recoverable
    assert signing.public_key(AccountStore(new).seed(new_cred.id)) == new_cred.public_key

    # Old and new device can both approve until the old one is removed.
    keys = {c.id: c.public_key for c in creds.values()}
    assert await approve(client, new, keys) == new_cred.id
    assert await approve(client, old, keys) in {old_cred.id, plain.id}  # both are the old phone's

    # Once the RP removed the old device, its recovery key is worthless: a restore of
    # the same backup then says "action required" for that account.
    await client.revoke_credential(old_cred.id)
    again = tmp_path / "again"
    out = ok(
        again, "restore", "--from", "broker", "--broker", broker.ws_url, "--backup-name", "phones", **code
    )
    assert "action required: alice@example.com: it could not recover by itself" in out
    assert "removed" in out


async def test_backup_auto_to_the_broker_and_bad_restores(broker: BrokerProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", TOTP_URI)
    where = ["--broker", broker.ws_url, "--backup-name", "auto"]
    code = {BACKUP_CODE_ENV: code_in(ok(home, "backup", "auto", "on", "--to", "broker", *where))}
    ok(home, "rename", "ACME: alice", "acme")  # rewrites the blob
    fresh = tmp_path / "fresh"
    ok(fresh, "restore", "--from", "broker", *where, **code)
    assert [e.name for e in AccountStore(fresh).entries()] == ["acme"]

    # Wrong passphrase, name or code: the blob is not even found, and nothing is made.
    for args, env in (
        (["--backup-name", "auto"], {**code, PASSPHRASE_ENV: "wrong"}),
        (["--backup-name", "other"], code),
        (["--backup-name", "auto"], {BACKUP_CODE_ENV: BackupCode.new().text}),
    ):
        empty = tmp_path / f"empty-{args[1]}-{len(env)}"
        result = agent(empty, "restore", "--from", "broker", "--broker", broker.ws_url, *args, **env)
        assert_cli_error(result, contains="no backup at")
        assert result.returncode == 1  # the broker was asked and has none (as backup delete)
        assert not (empty / "vault.pav").exists()
    result = agent(tmp_path / "x", "restore", "--from", "broker")
    assert_cli_error(result, contains="--broker URL")
    result = agent(tmp_path / "x", "restore", "--from", "broker", "--broker", "ftp://nope")
    assert_cli_error(result, contains="not a broker URL")


# -- a recovery key works once -------------------------------------------------------------

ACCOUNT = "alice@example.com"


def restore(home: Path, backup: Path, device: str, **env: str) -> str:
    return ok(home, "restore", "--from", str(backup), "--device-name", device, **env)


def recovered_line(out: str) -> bool:
    return f"recovered: {ACCOUNT}" in out


def refused_line(out: str) -> str:
    """The restore's line for the account whose recovery the broker refused."""
    (line,) = [x for x in out.splitlines() if x.startswith(f"{REFUSED}: {ACCOUNT}: it could not recover")]
    assert "get a new QR code from" in line and "pushauth-agent reactivate" in line
    return line


def reasons(sync: CredentialSync) -> dict[str | None, VerificationReason]:
    return {f.credential_id: f.reason for f in sync.refused}


async def test_a_backup_recovers_once_and_the_rp_checks_the_recovery(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old_cred = await enroll_recoverable(client, old, "old phone")
    stored: dict[str, Credential] = {old_cred.id: old_cred}  # what the RP keeps
    backup = tmp_path / "pushauth.backup"
    ok(old, "backup", "--to", str(backup))

    out = restore(tmp_path / "new", backup, "new phone")
    assert recovered_line(out) and out.splitlines()[-1] == "1 restored, 0 need action"
    # The same file and passphrase again, into a third home: refused, and said why.
    out = restore(tmp_path / "third", backup, "third phone")
    assert USED in refused_line(out) and out.splitlines()[-1] == "1 restored, 1 need action"
    listed = await client.list_credentials("alice")
    assert sorted(c.name for c in listed) == ["new phone", "old phone"]

    # The RP checks the recovery itself, against the recovery key it stored.
    sync = await client.sync_credentials("alice", stored)
    (new_cred,) = sync.added
    assert new_cred.name == "new phone" and new_cred.recovered_from == old_cred.id
    assert sync.spent == [old_cred.id] and not sync.refused and not sync.removed
    assert sync.current[old_cred.id].recovery_key is None
    sync.apply_to(stored)
    assert await approve(client, tmp_path / "new", sync.public_keys()) == new_cred.id
    again = await client.sync_credentials("alice", stored)
    # Nothing changed but the broker's record of that sign-in (last_used_at, for display).
    assert again.last_used == [new_cred.id] and not again.refused
    used_at = again.current[new_cred.id].last_used_at
    assert used_at is not None and again.current == {
        **stored,
        new_cred.id: replace(new_cred, last_used_at=used_at),
    }
    again.apply_to(stored)
    assert not (await client.sync_credentials("alice", stored)).changed

    # A compromised broker (here: a hand-written Redis hash) plants a second recovered
    # credential, signed with the old backup's (used) recovery key, and one from the new
    # credential signed with a key of its own: the RP refuses both.
    old_recovery = AccountStore(old).recovery_seed(ACCOUNT)
    assert old_recovery is not None
    rp_id = (await client.rp()).id
    planted = {
        "cr_planted_used": (old_cred.id, old_recovery),
        "cr_planted_forged": (new_cred.id, signing.new_seed()),
    }
    assert broker.redis_url is not None
    redis = aioredis.Redis.from_url(broker.redis_url)
    try:
        for cid, (from_id, recovery_seed) in planted.items():
            seed, new_recovery = signing.new_seed(), signing.new_seed()
            pk, ts = signing.public_key(seed), broker_http.now_ms()
            message = signing.recover_bytes(rp_id, from_id, pk, "thief", signing.public_key(new_recovery), ts)
            fields = {
                "rp": rp_id, "user": "alice", "account": ACCOUNT, "name": "thief", "pk": pk,
                "created": ts, "status": "active", "recoverable": "1",
                "recovery_pk": signing.public_key(new_recovery), "recovered_from": from_id,
                "rec_ts": ts, "rec_sig": signing.sign(recovery_seed, message),
                "rec_pop": signing.sign(seed, message),
            }  # fmt: skip
            await redis.hset(redis_keys.credential(cid), mapping=fields)  # type: ignore[arg-type]
            await redis.hset(redis_keys.user_credentials(rp_id, "alice"), cid, ACCOUNT)
    finally:
        await redis.aclose()
    assert len(await client.list_credentials("alice")) == 4  # the broker lists them
    sync = await client.sync_credentials("alice", stored)
    assert reasons(sync) == {
        "cr_planted_used": VerificationReason.RECOVERY_KEY_USED,
        "cr_planted_forged": VerificationReason.BAD_RECOVERY,
    }
    assert set(sync.current) == {old_cred.id, new_cred.id} and not sync.changed
    assert set(sync.public_keys()) == {old_cred.id, new_cred.id}


async def test_after_no_not_me_the_old_backup_is_refused_and_a_new_one_works(
    client: PushAuthClient, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old_cred = await enroll_recoverable(client, old, "old phone")
    stored: dict[str, Credential] = {old_cred.id: old_cred}
    backup = tmp_path / "stolen.backup"
    ok(old, "backup", "--to", str(backup))
    # A thief with the backup and its passphrase restores it; the RP sees it first.
    assert recovered_line(restore(tmp_path / "thief", backup, "thief phone"))
    first = await client.sync_credentials("alice", stored)
    (thief_cred,) = first.added
    first.apply_to(stored)

    # The old phone says "No, not me": the thief's key goes, and the old phone renews
    # its recovery keys (the thief's backup holds the old ones).
    (notice,) = [r for r in json.loads(ok(old, "pending", "--json")) if r["type"] == "recovery_notice"]
    stolen_key = AccountStore(old).recovery_seed(ACCOUNT)
    out = ok(old, "recovery", "disown", notice["id"])
    assert f"New recovery keys for {ACCOUNT}" in out
    assert "change it now (pushauth-agent passwd)" in out
    # The thief keeps the backup's verification-code secrets: the user must hear that
    # only the service can end those.
    assert "Verification codes in older backups still work, for whoever has one" in out
    assert AccountStore(old).recovery_seed(ACCOUNT) not in (None, stolen_key)

    # The stolen backup recovers nothing any more.
    assert REPLACED in refused_line(restore(tmp_path / "again", backup, "thief phone 2"))
    assert {c.id for c in await client.list_credentials("alice")} == {old_cred.id}

    # The RP: the thief's credential is gone, the old one has its new recovery key
    # (signed by the old phone's key, newer than the recovery that used the last one).
    second = await client.sync_credentials("alice", stored)
    assert second.removed == [thief_cred.id] and [c.id for c in second.rotated] == [old_cred.id]
    assert not second.refused
    second.apply_to(stored)

    # A backup made now recovers, once, and the RP accepts it with the new key.
    await client.lift_push_block("alice")
    fresh = tmp_path / "fresh.backup"
    ok(old, "backup", "--to", str(fresh))
    assert recovered_line(restore(tmp_path / "new", fresh, "new phone"))
    third = await client.sync_credentials("alice", stored)
    assert [c.name for c in third.added] == ["new phone"] and third.spent == [old_cred.id]
    assert not third.refused


async def test_after_passwd_an_older_backup_is_refused(client: PushAuthClient, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old_cred = await enroll_recoverable(client, old, "old phone")
    plain = await enroll(client, old, account="alice@plain.example", name="old phone")  # not recoverable
    stored: dict[str, Credential] = {old_cred.id: old_cred, plain.id: plain}
    before = tmp_path / "before.backup"
    ok(old, "backup", "--to", str(before))

    out = ok(old, "passwd", **{NEW_PASSPHRASE_ENV: NEW_PASSPHRASE})
    assert f"New recovery keys for {ACCOUNT}:" in out and "plain" not in out.split("New recovery keys")[1]
    # The backup file made by hand is not rewritten: said so, with the way to.
    assert "no longer recover it. Automatic and broker backups get the new ones" in out
    assert "write any other backup again (pushauth-agent backup --to FILE --force)" in out
    # The backup made before the change (with the old passphrase) recovers nothing.
    out = restore(tmp_path / "new", before, "new phone")
    assert REPLACED in refused_line(out)
    assert all(c.recovered_from is None for c in await client.list_credentials("alice"))

    # The RP takes the rotation (signed by the old phone's key) ...
    sync = await client.sync_credentials("alice", stored)
    assert [c.id for c in sync.rotated] == [old_cred.id] and not sync.refused
    sync.apply_to(stored)
    # ... and a backup made after the change recovers with the new key.
    after = tmp_path / "after.backup"
    ok(old, "backup", "--to", str(after), **{PASSPHRASE_ENV: NEW_PASSPHRASE})
    assert recovered_line(
        restore(tmp_path / "newer", after, "newer phone", **{PASSPHRASE_ENV: NEW_PASSPHRASE})
    )
    sync = await client.sync_credentials("alice", stored)
    assert [c.name for c in sync.added] == ["newer phone"] and not sync.refused


async def test_after_the_old_device_was_removed_its_backup_is_refused(
    client: PushAuthClient, tmp_path: Path
) -> None:
    # Removed by the RP (Security info) ...
    old = tmp_path / "old"
    old_cred = await enroll_recoverable(client, old, "old phone")
    backup = tmp_path / "old.backup"
    ok(old, "backup", "--to", str(backup))
    await client.revoke_credential(old_cred.id)
    assert "removed" in refused_line(restore(tmp_path / "new", backup, "new phone"))
    # ... or by the device itself (pushauth-agent remove revokes it at the broker).
    other = tmp_path / "other"
    await enroll_recoverable(client, other, "other phone")
    other_backup = tmp_path / "other.backup"
    ok(other, "backup", "--to", str(other_backup))
    ok(other, "remove", ACCOUNT, "--yes")
    assert "removed" in refused_line(restore(tmp_path / "newer", other_backup, "newer phone"))
    assert await client.list_credentials("alice") == []


async def test_a_recovery_past_the_rps_device_cap_keeps_its_key_for_after_a_removal(
    client: PushAuthClient, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    """The RP's max_credentials, here 1. The device a recovery comes from does not count
    (the recovery replaces it, and removing it first would revoke the recovering key),
    so a user at the cap still recovers. With as many other devices as the cap, the
    recovery is refused (409 too_many_credentials) before its key is used; the account
    says what to remove (not the backup's own device), and after that removal
    `reactivate NAME` recovers with the same key."""
    await store_policy(broker, rp["id"], max_credentials=1)
    old = tmp_path / "old"
    old_cred = await enroll_recoverable(client, old, "old phone")
    ok(old, "backup", "--to", str(tmp_path / "old.backup"))
    new = tmp_path / "new"
    assert recovered_line(restore(new, tmp_path / "old.backup", "new phone"))
    assert sorted(c.name for c in await client.list_credentials("alice")) == ["new phone", "old phone"]

    # The new phone's backup, restored on a third: the old phone is one other device.
    ok(new, "backup", "--to", str(tmp_path / "new.backup"))
    third = tmp_path / "third"
    out = restore(third, tmp_path / "new.backup", "third phone")
    (line,) = [x for x in out.splitlines() if x.startswith(f"{REFUSED}: {ACCOUNT}")]
    assert f"{rp['name']} allows no more devices for this account; its recovery key is kept here" in line
    assert 'but not "new phone" (its key is what recovers this account)' in line
    assert f"then run: pushauth-agent reactivate {ACCOUNT}" in line
    assert out.splitlines()[-1] == "1 restored, 1 need action"
    (listed,) = json.loads(ok(third, "accounts", "--json"))
    assert listed["status"] == "action_required"
    assert "allows no more devices" in listed["status_reason"] and '"new phone"' in listed["status_reason"]
    assert len(await client.list_credentials("alice")) == 2

    await client.revoke_credential(old_cred.id)
    assert f"recovered: {ACCOUNT}: this device has its own new key" in ok(third, "reactivate", ACCOUNT)
    new_cid = AccountStore(new).find(ACCOUNT).cid
    (recovered,) = [c for c in await client.list_credentials("alice") if c.recovered_from == new_cid]
    assert recovered.name == "third phone" and recovered.id == AccountStore(third).find(ACCOUNT).cid


async def test_passwd_with_the_broker_down_says_the_old_recovery_key_still_works(
    redis_factory: Any, broker_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: RedisServer = redis_factory()
    own = broker_factory(redis_url=server.url, node="own")
    rp = own.add_rp("Down RP")
    async with PushAuthClient(own.http_url, rp["api_key"]) as sdk:
        old = tmp_path / "old"
        await enroll_recoverable(sdk, old, "old phone")
        before = tmp_path / "before.backup"
        ok(old, "backup", "--to", str(before))
        key = AccountStore(old).recovery_seed(ACCOUNT)
        own.stop()
        result = agent(old, "passwd", **{NEW_PASSPHRASE_ENV: NEW_PASSPHRASE})
        assert result.returncode == 3, result.stderr
        assert "The vault passphrase was changed." in result.stdout
        # In the words and with the broker URL of every WebSocket command (not its
        # http:// origin and an "[Errno 111]").
        unreachable = f"cannot reach the broker at {own.ws_url}: connection refused (is it running?)"
        assert f"the recovery key of {ACCOUNT} was NOT renewed ({unreachable}" in result.stderr
        assert "the old recovery key in your backups still works for it once" in result.stderr
        assert "pushauth-agent backup retire when the broker can be reached" in result.stderr
        monkeypatch.setenv(PASSPHRASE_ENV, NEW_PASSPHRASE)
        assert AccountStore(old).recovery_seed(ACCOUNT) == key
        # As it said: the old backup still recovers (once) until the key is renewed.
        own.restart()
        assert recovered_line(restore(tmp_path / "new", before, "new phone"))
        # And what it said to run renews it once the broker is back.
        out = ok(old, "backup", "retire", **{PASSPHRASE_ENV: NEW_PASSPHRASE})
        assert f"New recovery keys for {ACCOUNT}" in out
        assert AccountStore(old).recovery_seed(ACCOUNT) not in (None, key)


async def test_a_restore_with_the_broker_down_keeps_the_recovery_key_and_reactivate_recovers_later(
    redis_factory: Any, broker_factory: Any, tmp_path: Path
) -> None:
    # Restoring on a new phone while the broker is down (or the phone offline) must not
    # throw the unused recovery key away and send the user to the service for a new QR
    # code: the restore says so (exit 3), and `reactivate NAME` recovers it later.
    server: RedisServer = redis_factory()
    own = broker_factory(redis_url=server.url, node="own")
    rp = own.add_rp("Down RP")
    async with PushAuthClient(own.http_url, rp["api_key"]) as sdk:
        old, new = tmp_path / "old", tmp_path / "new"
        old_cred = await enroll_recoverable(sdk, old, "old phone")
        backup = tmp_path / "old.backup"
        ok(old, "backup", "--to", str(backup))
        own.stop()

        result = agent(new, "restore", "--from", str(backup), "--device-name", "new phone")
        assert result.returncode == 3, result.stderr + result.stdout
        (line,) = [x for x in result.stdout.splitlines() if x.startswith(f"action required: {ACCOUNT}")]
        assert "not recovered yet (cannot reach the broker" in line
        assert f"run: pushauth-agent reactivate {ACCOUNT} (or get a new QR code" in line
        assert "1 restored, 1 need action" in result.stdout
        listed = json.loads(ok(new, "accounts", "--json"))
        assert [a["status"] for a in listed] == ["action_required"]
        assert (
            "pushauth-agent reactivate alice@example.com tries its recovery key" in listed[0]["status_reason"]
        )
        # Still down: said so again, and nothing is lost.
        result = agent(new, "reactivate", ACCOUNT)
        assert result.returncode == 3 and "not recovered yet" in result.stdout, result.stderr

        own.restart()
        out = ok(new, "reactivate", ACCOUNT)
        assert f"recovered: {ACCOUNT}: this device has its own new key" in out
        account = AccountStore(new).find(ACCOUNT)
        assert account.active and account.device_name == "new phone"
        (new_cred,) = [c for c in await sdk.list_credentials("alice") if c.recovered_from == old_cred.id]
        assert new_cred.id == account.cid and new_cred.name == "new phone"
        # Once recovered there is nothing left to try; an account without a recovery key
        # needs a link.
        result = agent(new, "reactivate", ACCOUNT)
        assert result.returncode == 2 and "is active already" in assert_cli_error(result)
        ok(new, "add", TOTP_URI)
        result = agent(new, "reactivate", "ACME: alice")
        assert result.returncode == 2 and "not a push account" in assert_cli_error(result)


async def test_enroll_and_accounts_say_which_accounts_are_recoverable(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    started = await client.create_enrollment("alice", ACCOUNT, totp=new_totp(), recoverable=True)
    assert started.uri is not None
    out = ok(home, "enroll", started.uri, "--name", "phone")
    assert "  recoverable: a backup brings it back by itself" in out
    await enroll(client, home, account="alice@plain.example", name="phone")  # not recoverable
    lines = ok(home, "accounts").splitlines()
    (recoverable,) = [line for line in lines if line.startswith(ACCOUNT)]
    (plain,) = [line for line in lines if line.startswith("alice@plain.example")]
    assert "recoverable: a backup brings it back by itself" in recoverable
    assert "recoverable" not in plain


def test_restore_help_tells_recovered_accounts_from_those_that_need_action() -> None:
    # What restore prints ("recovered: ...", "action required: ...", as the tests above
    # read it), explained in its --help.
    help_text = " ".join(run_cli([AGENT, "restore", "--help"]).stdout.split())
    assert '"recovered:" a push account the service enrolled as recoverable' in help_text
    assert "it works at once" in help_text
    assert '"action required:" any other push account' in help_text
    assert "Push accounts are listed as" not in help_text


def test_the_readme_gives_the_advice_the_agent_gives_when_a_key_was_not_renewed() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    at = readme.index("the recovery key of NAME was NOT renewed")
    paragraph = readme[at : readme.index("\n\n", at)]
    assert "pushauth-agent backup retire" in recovery_keys.RETRY
    assert "`pushauth-agent backup retire` when the broker is back" in paragraph
    assert "passwd` again" not in paragraph


# -- the device HTTP routes, by hand ----------------------------------------------------------


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signed_blob(broker: BrokerProcess, seed: bytes, op: str, body: bytes, ts: int, **over: str) -> Any:
    blob_id = over.pop("blob_id", b64.encode(signing.public_key(seed)))
    sig = signing.sign(seed, signing.backup_bytes(op, blob_id, ts, hashlib.sha256(body).digest()))
    headers = {"X-Pushauth-Time": str(ts), "X-Pushauth-Signature": b64.encode(sig), **over}
    if op == "put":  # as the agent and the web app send a backup (urllib's default is a form)
        headers.setdefault("Content-Type", "application/octet-stream")
    return call(op.upper(), f"{broker.http_url}/v1/backups/{blob_id}", body if op == "put" else None, headers)


def code_of(reply: Any) -> str:
    return json.loads(reply[1])["code"]


def test_the_blob_store_refuses_forged_stale_replayed_and_oversized_requests(
    broker: BrokerProcess,
) -> None:
    seed, other = signing.new_seed(), signing.new_seed()
    now = broker_http.now_ms()
    assert signed_blob(broker, seed, "put", b"ciphertext-1", now)[0] == 204
    assert signed_blob(broker, seed, "get", b"", now + 1) == (200, b"ciphertext-1")
    # Replayed: the same signed request twice.
    assert code_of(signed_blob(broker, seed, "get", b"", now + 1)) == "replayed"
    # Stale or from the future.
    assert code_of(signed_blob(broker, seed, "get", b"", now - 10 * 60_000)) == "stale_request"
    assert code_of(signed_blob(broker, seed, "put", b"x", now + 10 * 60_000)) == "stale_request"
    # Another key cannot read or overwrite it.
    blob_id = b64.encode(signing.public_key(seed))
    assert code_of(signed_blob(broker, other, "get", b"", now + 2, blob_id=blob_id)) == "bad_signature"
    assert code_of(signed_blob(broker, other, "put", b"evil", now + 3, blob_id=blob_id)) == "bad_signature"
    assert signed_blob(broker, seed, "get", b"", now + 4) == (200, b"ciphertext-1")
    # A signature over another body does not write this one.
    sig = signing.sign(seed, signing.backup_bytes("put", blob_id, now + 5, hashlib.sha256(b"a").digest()))
    headers = {
        "X-Pushauth-Time": str(now + 5),
        "X-Pushauth-Signature": b64.encode(sig),
        "Content-Type": "application/octet-stream",
    }
    assert code_of(call("PUT", f"{broker.http_url}/v1/backups/{blob_id}", b"b", headers)) == "bad_signature"
    # Size limit, malformed ids, headers and bodies: 4xx problems, nothing stored.
    big = b"x" * (256 * 1024 + 1)
    assert signed_blob(broker, seed, "put", big, now + 6)[0] == 413
    assert call("GET", f"{broker.http_url}/v1/backups/short")[0] == 400
    assert signed_blob(broker, seed, "get", b"", now + 7, **{"X-Pushauth-Time": "soon"})[0] == 400
    assert signed_blob(broker, seed, "get", b"", now + 8, **{"X-Pushauth-Signature": "AAAA"})[0] == 400
    assert signed_blob(broker, seed, "put", b"", now + 9)[0] == 400
    assert signed_blob(broker, other, "get", b"", now + 10)[0] == 404
    assert signed_blob(broker, seed, "get", b"", now + 11) == (200, b"ciphertext-1")
    # Delete: only its own key, with a signature for "delete" (not one for a read).
    assert code_of(signed_blob(broker, other, "delete", b"", now + 12, blob_id=blob_id)) == "bad_signature"
    read_sig = signing.sign(seed, signing.backup_bytes("get", blob_id, now + 13, hashlib.sha256().digest()))
    headers = {"X-Pushauth-Time": str(now + 13), "X-Pushauth-Signature": b64.encode(read_sig)}
    assert (
        code_of(call("DELETE", f"{broker.http_url}/v1/backups/{blob_id}", None, headers)) == "bad_signature"
    )
    assert signed_blob(broker, seed, "delete", b"", now + 14) == (204, b"")
    gone = signed_blob(broker, seed, "get", b"", now + 15)
    assert gone[0] == 404 and blob_id not in json.loads(gone[1])["detail"]
    assert code_of(signed_blob(broker, seed, "delete", b"", now + 16)) == "not_found"


async def test_recovery_routes_refuse_bad_requests(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll_recoverable(client, home, "phone")
    store = AccountStore(home)
    seed, recovery_seed = store.seed(cred.id), store.recovery_seed("alice@example.com")
    assert recovery_seed is not None
    url, rp_id = broker.http_url, (await client.rp()).id
    # A rotation: a new recovery key signed by the credential key, newer than the last.
    now = broker_http.now_ms()
    rotated = signing.new_seed()
    assert broker_http.set_recovery_key(broker.ws_url, cred.id, seed, rotated, ts=now)
    for ts, signer, why in (
        (now, seed, "a newer recovery key is named already"),  # not newer (and replayed)
        (now - 1, seed, "a newer recovery key is named already"),  # an older one brought back
        (now + 1, signing.new_seed(), "the signature does not verify"),  # not the credential's key
    ):
        with pytest.raises(broker_http.Refused, match=why):
            broker_http.set_recovery_key(broker.ws_url, cred.id, signer, signing.new_seed(), ts=ts)
    (listed,) = await client.list_credentials("alice")
    assert listed.recovery_key is not None and listed.recovery_key.ts == now
    assert listed.recovery_key.public_key == signing.public_key(rotated)
    # A non-recoverable credential takes none.
    plain = await enroll(client, tmp_path / "plain", account="plain", name="p")
    plain_seed = AccountStore(tmp_path / "plain").seed(plain.id)
    assert broker_http.set_recovery_key(broker.ws_url, plain.id, plain_seed, signing.new_seed()) is False

    def recover(**over: Any) -> tuple[int, Any]:
        new_seed, new_recovery = signing.new_seed(), signing.new_seed()
        ts = over.pop("ts", broker_http.now_ms())
        pk = signing.public_key(new_seed)
        message = signing.recover_bytes(
            over.pop("rp", rp_id), cred.id, pk, "thief", signing.public_key(new_recovery), ts
        )
        body = {
            "cid": cred.id,
            "pk": b64.encode(pk),
            "name": "thief",
            "recovery_pk": b64.encode(signing.public_key(new_recovery)),
            "ts": ts,
            "recovery_sig": b64.encode(signing.sign(over.pop("recovery_key", rotated), message)),
            "sig": b64.encode(signing.sign(over.pop("new_key", new_seed), message)),
        }
        body.update(over)
        status, data = call(
            "POST", f"{url}/v1/recoveries", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        return status, json.loads(data)

    # Proving no key of the credential tells nothing about it (no state oracle).
    assert recover(recovery_key=signing.new_seed())[1]["code"] == "recovery_refused"  # not the recovery key
    assert REPLACED in recover(recovery_key=recovery_seed)[1]["detail"]  # the one replaced by the rotation
    assert recover(rp="rp_other")[1]["code"] == "recovery_refused"  # signed for another RP
    assert recover(new_key=signing.new_seed())[1]["code"] == "bad_signature"  # no proof of possession
    assert recover(ts=broker_http.now_ms() - 3_600_000)[1]["code"] == "stale_request"
    assert recover(cid="nope")[1] == recover(recovery_key=signing.new_seed())[1]
    assert recover(name="x" * 65)[0] == 400
    assert recover(pk="AAAA")[0] == 400
    assert recover(extra=1)[0] == 400
    assert recover(cid=plain.id)[1]["code"] == "recovery_refused"
    # None of these made a credential.
    assert {c.id for c in await client.list_credentials("alice")} == {cred.id, plain.id}
    # Once: the first good recovery registers a credential, the next one is refused.
    recovered_at = broker_http.now_ms() + 60_000  # the new device's clock a minute ahead
    assert recover(ts=recovered_at)[0] == 201
    assert recover()[1]["code"] == "recovery_key_used"
    assert len(await client.list_credentials("alice")) == 3
    # A rotation must be newer than that recovery too, or the RP refuses it (bad_rotation,
    # docs/protocol.md section 16): the broker says so at once (409 conflict).
    for ts in (now + 1, recovered_at):
        with pytest.raises(RotationTooEarly, match="not newer than the recovery") as refused:
            broker_http.set_recovery_key(broker.ws_url, cred.id, seed, signing.new_seed(), ts=ts)
        assert refused.value.code == "conflict" and refused.value.newer_than == recovered_at
    # The agent's own later rotations sign again just after it, as after a recovery
    # notice (they failed with the 409): this device's clock is behind the new device's.
    changed = agent(home, "passwd", **{NEW_PASSPHRASE_ENV: "violet kettle marches upstream"})
    assert changed.returncode == 0 and "New recovery keys for alice@example.com" in changed.stdout, changed
    (listed,) = [c for c in await client.list_credentials("alice") if c.id == cred.id]
    assert listed.recovery_key is not None and listed.recovery_key.ts == recovered_at + 1
    # Then a rotation by this clock is not newer than that one: again just after it.
    retired = agent(home, "backup", "retire", PUSHAUTH_AGENT_PASSPHRASE="violet kettle marches upstream")
    assert retired.returncode == 0 and "New recovery keys for alice@example.com" in retired.stdout, retired
    (listed,) = [c for c in await client.list_credentials("alice") if c.id == cred.id]
    assert listed.recovery_key is not None and listed.recovery_key.ts == recovered_at + 2
    await client.revoke_credential(cred.id)
    assert recover()[1]["code"] == "credential_revoked"
