"""Backup -> restore into a fresh home -> re-activation, with the real agent CLI, a real
broker and the RP SDK verifying the answers; and every bad backup refused cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import AGENT_ENV, agent, agent_env, enroll, on_a_terminal  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import BrokerProcess, assert_cli_error

from device_agent import totp
from device_agent.backup import Backup, dump_backup
from device_agent.passphrase import PASSPHRASE_ENV, Passphrases
from device_agent.store import AccountStore
from device_agent.vault import KdfParams
from protocol.challenge import Status
from relying_party.sdk import PushAuthClient

TOTP_URIS = [
    "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME",
    "otpauth://totp/Big:bob?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Big&algorithm=SHA512&digits=8&period=45",
    "otpauth://hotp/Bank:carol?secret=JBSWY3DPEHPK3PXP&issuer=Bank&counter=7",
]
CONTEXT = {"app": "Webmail", "ip": "203.0.113.5"}


def codes_at(home: Path, at: float) -> dict[str, str]:
    return {e.name: totp.code(e.otp, at) for e in AccountStore(home).entries() if e.otp is not None}


async def approve(client: PushAuthClient, home: Path, keys: dict[str, bytes]) -> Any:
    ch = await client.create_challenge("alice", CONTEXT)
    out = await asyncio.to_thread(ok, home, "approve", ch.id, "--number", ch.number)
    assert "approved" in out
    return await client.wait_result(ch, keys, timeout=10)


async def test_backup_restore_and_reactivate(client: PushAuthClient, tmp_path: Path) -> None:
    old, new = tmp_path / "old-phone", tmp_path / "new-phone"
    for uri in TOTP_URIS:
        ok(old, "add", uri)
    cred = await enroll(client, old, name="old phone")
    ok(old, "move", "alice@example.com", "2")
    ok(old, "rename", "ACME: alice", "acme")
    order = [e["name"] for e in json.loads(ok(old, "accounts", "--json"))]
    assert order == ["acme", "alice@example.com", "Big: bob", "Bank: carol"]

    backup = tmp_path / "sync" / "pushauth.backup"
    backup.parent.mkdir()
    assert "Backup written" in ok(old, "backup", "--to", str(backup))
    raw = backup.read_bytes()
    assert b"GEZDGNBVGY3TQOJQ" not in raw and b"alice" not in raw  # ciphertext only

    out = ok(new, "restore", "--from", str(backup), "--device-name", "new phone")
    assert "action required: alice@example.com: get a new QR code from Test RP" in out
    assert out.splitlines()[-1] == "4 restored, 1 need action"
    # One line per account, in the backup's order (a push account with codes was listed
    # twice, "ready" then "action required", after all the others).
    said = out.splitlines()[:-1]
    assert [line.split(": ")[1] for line in said[:1] + said[2:]] == ["acme", "Big", "Bank"], said
    assert said[1].startswith("action required: alice@example.com: "), said
    assert len(said) == 4, said
    listed = json.loads(ok(new, "accounts", "--json"))
    assert [e["name"] for e in listed] == order
    push = listed[1]
    assert (push["type"], push["status"]) == ("push", "action_required")
    assert "action required" in ok(new, "accounts")
    at = time.time()
    assert codes_at(new, at) == codes_at(old, at)  # every TOTP and HOTP account works at once
    assert ok(new, "code", "Bank: carol") == ok(old, "code", "Bank: carol")  # same HOTP counter

    # A push account in "action required" has no key: the new phone gets no requests.
    assert AccountStore(new).by_broker() == {}
    started = await client.create_enrollment("alice", "alice@example.com")
    assert started.uri is not None
    # No --name: the name restore gave this device, under which the service lists it.
    out = ok(new, "reactivate", "alice@example.com", started.uri)
    assert 'Re-activated "alice@example.com" for Test RP with a new key (user alice).' in out
    assert "this device is listed as: new phone" in out
    # Unconfirmed until the service's test notification is approved: it says so, and an
    # ordinary sign-in request does not reach the new key yet.
    assert "once Test RP has confirmed the new key with a test notification" in out
    assert "test notification: pushauth-agent listen" in out
    assert "gets its sign-in requests." not in out
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None and done.credential.name == "new phone"
    await client.create_challenge("alice", CONTEXT)
    assert json.loads(ok(new, "pending", "--json")) == []
    await client.confirm_credential(done.credential.id)  # as after its test push
    (entry,) = [e for e in json.loads(ok(new, "accounts", "--json")) if e["name"] == "alice@example.com"]
    assert entry["status"] == "active" and entry["credential_id"] == done.credential.id
    assert [e["name"] for e in json.loads(ok(new, "accounts", "--json"))] == order  # place kept

    # Both phones are valid until the old one is removed; each answer verifies end to end.
    keys = {cred.id: cred.public_key, done.credential.id: done.credential.public_key}
    for home, cid in ((new, done.credential.id), (old, cred.id)):
        result = await approve(client, home, keys)
        assert result.status is Status.APPROVED and result.answer is not None
        assert result.answer.credential_id == cid


@pytest.mark.parametrize("auto", [False, True])
def test_a_backup_into_a_folder_that_does_not_exist_is_refused(tmp_path: Path, auto: bool) -> None:
    home = tmp_path / "phone"
    ok(home, "add", TOTP_URIS[0])
    missing = tmp_path / "nonexistent" / "deeper"
    result = agent(home, "backup", *(["auto", "on"] if auto else []), "--to", str(missing / "x.backup"))
    assert_cli_error(result, contains=f"the folder {missing} does not exist")
    assert result.returncode == 2
    assert "Backup written" not in result.stdout
    assert not (tmp_path / "nonexistent").exists()
    assert "automatic backups: on" not in ok(home, "accounts")
    ok(home, "add", TOTP_URIS[1])  # no automatic backup was turned on: nothing is made
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("--backup-name", "--backup-name names a backup at the service"),
        ("--broker", "--broker says which service"),
    ],
)
def test_a_file_backup_with_an_option_of_the_broker_store_is_a_usage_error(
    tmp_path: Path, auto: bool, option: str, said: str
) -> None:
    # --backup-name X with --to FILE was ignored in silence: the backup was written, and
    # whoever named it then looked for X in vain.
    home, target = tmp_path / "phone", tmp_path / "x.backup"
    ok(home, "add", TOTP_URIS[0])
    value = "ws://127.0.0.1:9/v1/device" if option == "--broker" else "X"
    result = agent(home, "backup", *(["auto", "on"] if auto else []), "--to", str(target), option, value)
    line = assert_cli_error(result, contains=said)
    assert result.returncode == 2 and ("not a file" in line or "not where a file is" in line), line
    assert result.stdout == "" and not target.exists()
    assert "automatic backups: on" not in ok(home, "accounts")
    ok(home, "backup", "--to", str(target))
    restored = agent(tmp_path / "new", "restore", "--from", str(target), option, value)
    assert_cli_error(restored, contains=said)
    assert restored.returncode == 2 and "--from broker" in restored.stderr
    assert not (tmp_path / "new" / "vault.pav").exists()


def test_an_automatic_backup_whose_folder_went_is_not_made_again(tmp_path: Path) -> None:
    home, sync = tmp_path / "phone", tmp_path / "sync"
    sync.mkdir()
    ok(home, "add", TOTP_URIS[0])
    ok(home, "backup", "auto", "on", "--to", str(sync / "auto.backup"))
    shutil.rmtree(sync)  # a sync folder unmounted, say
    result = agent(home, "add", TOTP_URIS[1])
    assert result.returncode == 0, result.stderr  # the change itself is saved
    assert f"the automatic backup failed: the folder {sync} does not exist" in result.stderr
    assert not sync.exists()


def test_backup_delete_alone_deletes_the_automatic_file_backup_and_stops_it(tmp_path: Path) -> None:
    home, sync = tmp_path / "phone", tmp_path / "sync"
    ok(home, "add", TOTP_URIS[0])
    assert_cli_error(agent(home, "backup", "delete"), contains="there is no automatic backup")
    sync.mkdir()
    auto = sync / "auto.backup"
    ok(home, "backup", "auto", "on", "--to", str(auto))
    assert auto.exists()
    out = ok(home, "backup", "delete")
    assert f"Deleted the backup {auto}." in out
    assert "automatic backups are off now" in out
    assert not auto.exists()
    ok(home, "add", TOTP_URIS[1])  # a change: the automatic backup is not written again
    assert not auto.exists()
    assert_cli_error(agent(home, "backup", "delete"), contains="there is no automatic backup")


async def test_reactivate_refuses_a_uri_of_another_service_and_active_accounts(
    client: PushAuthClient, tmp_path: Path, broker: BrokerProcess
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)
    started = await client.create_enrollment("alice", "alice@example.com")
    assert started.uri is not None
    assert_cli_error(agent(home, "reactivate", "alice@example.com", started.uri), contains="active already")
    assert_cli_error(agent(home, "reactivate", "nobody", started.uri), contains='no account named "nobody"')
    assert_cli_error(
        agent(home, "reactivate", "alice@example.com", "pushauth://x"), contains="enrollment URI"
    )
    # The code was not spent by the refusals: it still enrolls.
    assert (await client.get_enrollment(started)).status == "pending"


def test_restore_refuses_a_home_with_accounts(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    ok(home, "add", TOTP_URIS[0])
    ok(home, "backup", "--to", str(tmp_path / "b"))
    ok(other, "add", TOTP_URIS[1])
    before = (other / "vault.pav").read_bytes()
    assert_cli_error(agent(other, "restore", "--from", str(tmp_path / "b")), contains="has accounts already")
    assert (other / "vault.pav").read_bytes() == before


def test_a_restore_into_an_empty_vault_says_which_passphrase_opens_it(tmp_path: Path) -> None:
    """A new device whose vault was made first (`listen`, as the demo's banner says, asks
    for a new passphrase) and is empty: restore asks for the vault's passphrase, then the
    backup's, and the vault keeps its own. Said so, since the help and README say the
    backup's becomes the vault's (seen in a trial: the backup's was then refused)."""
    home, other = tmp_path / "home", tmp_path / "other"
    ok(home, "add", TOTP_URIS[0])
    backup = tmp_path / "b"
    ok(home, "backup", "--to", str(backup))
    own = "plum orbit canyon velvet ostrich"
    ok(other, "add", TOTP_URIS[1], **{PASSPHRASE_ENV: own})
    ok(other, "remove", "Big: bob", "--yes", **{PASSPHRASE_ENV: own})
    typing = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    answers = [
        ("Passphrase of the pushauth vault", own),
        ("Passphrase of the backup", AGENT_ENV[PASSPHRASE_ENV]),
    ]
    status, said = on_a_terminal(other, ["restore", "--from", str(backup)], answers, env=typing)
    assert status == 0 and "1 restored" in said, said
    assert "keeps its own passphrase, not the backup's" in said, said
    assert "ACME: alice" in ok(other, "accounts", **{PASSPHRASE_ENV: own})
    # A new home takes the backup's, and says nothing of it.
    fresh = ok(tmp_path / "fresh", "restore", "--from", str(backup))
    assert "keeps its own passphrase" not in fresh


def _variants(good: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(good)
    flipped[-3] ^= 0x40
    header = bytearray(good)
    header[30] ^= 1  # inside the salt: the key (and the check) differ
    version = bytearray(good)
    version[9] = 9
    return {
        "truncated": (good[: len(good) - 10], "truncated"),
        "tampered": (bytes(flipped), "fails authentication"),
        "header": (bytes(header), "wrong passphrase"),
        "version": (bytes(version), "version 9"),
        "foreign": (b"PAVAULT\x00" + good[8:], "not a pushauth backup"),
        "empty": (b"", "not a pushauth backup"),
    }


@pytest.mark.parametrize("case", ["truncated", "tampered", "header", "version", "foreign", "empty"])
def test_a_damaged_backup_is_one_line_and_the_home_stays_empty(tmp_path: Path, case: str) -> None:
    home = tmp_path / "home"
    ok(home, "add", TOTP_URIS[0])
    good_path = tmp_path / "good"
    ok(home, "backup", "--to", str(good_path))
    data, message = _variants(good_path.read_bytes())[case]
    bad = tmp_path / "bad"
    bad.write_bytes(data)
    new = tmp_path / "new"
    assert_cli_error(agent(new, "restore", "--from", str(bad)), contains=message)
    assert not (new / "vault.pav").exists()


def test_a_wrong_backup_passphrase_changes_nothing(tmp_path: Path) -> None:
    home, new = tmp_path / "home", tmp_path / "new"
    ok(home, "add", TOTP_URIS[0])
    ok(home, "backup", "--to", str(tmp_path / "b"))
    result = agent(new, "restore", "--from", str(tmp_path / "b"), **{PASSPHRASE_ENV: "wrong"})
    assert_cli_error(result, contains="wrong passphrase")
    assert not (new / "vault.pav").exists()
    assert_cli_error(agent(new, "restore", "--from", str(tmp_path / "missing")), contains="no backup file")


def test_a_backup_with_a_damaged_account_list_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    content = Backup(settings={"layout": [{"name": "x", "otp": 3, "push": None}]})
    bad.write_bytes(dump_backup(content, AGENT_ENV[PASSPHRASE_ENV], kdf=KdfParams.cheapest()))
    assert_cli_error(agent(tmp_path / "new", "restore", "--from", str(bad)), contains="damaged")
    assert not (tmp_path / "new" / "vault.pav").exists()


def test_a_backup_with_a_push_account_of_the_wrong_types_is_refused(tmp_path: Path) -> None:
    """A push account's fields are checked, not stored as they come (the web
    authenticator's reader refuses the same: test_webapp_backup.py)."""
    push = {
        "rp": None,
        "rp_name": "Contoso",
        "user": "alice",
        "label": "alice",
        "broker": "wss://push.contoso.example/v1/device",
        "cid": "cred_A1",
        "device_name": "Old phone",
        "added": 1,
        "recovery_seed": None,
    }
    content = Backup(push_accounts=[push], settings={"layout": [{"name": "x", "otp": None, "push": 0}]})
    bad = tmp_path / "bad"
    bad.write_bytes(dump_backup(content, AGENT_ENV[PASSPHRASE_ENV], kdf=KdfParams.cheapest()))
    result = agent(tmp_path / "new", "restore", "--from", str(bad))
    assert_cli_error(result, contains="the backup's push account 'x' is damaged (rp is missing or invalid)")
    assert not (tmp_path / "new" / "vault.pav").exists()


def test_auto_backup_follows_every_change_until_turned_off(tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "sync" / "auto.backup"
    target.parent.mkdir()
    ok(home, "add", TOTP_URIS[0])
    assert_cli_error(agent(home, "backup", "auto", "on"), contains="--to")
    assert_cli_error(agent(home, "backup", "auto", "maybe", "--to", str(target)), contains="expected")
    ok(home, "backup", "auto", "on", "--to", str(target))

    def restored_names() -> list[str]:
        fresh = tmp_path / f"check-{time.monotonic_ns()}"
        ok(fresh, "restore", "--from", str(target))
        return [e.name for e in AccountStore(fresh).entries()]

    assert restored_names() == ["ACME: alice"]
    ok(home, "add", TOTP_URIS[1])
    ok(home, "rename", "ACME: alice", "acme")
    assert restored_names() == ["acme", "Big: bob"]
    ok(home, "backup", "auto", "off")
    ok(home, "add", TOTP_URIS[2])
    assert restored_names() == ["acme", "Big: bob"]


def test_a_failing_auto_backup_warns_but_the_change_is_kept(tmp_path: Path) -> None:
    home, target_dir = tmp_path / "home", tmp_path / "sync"
    target_dir.mkdir()
    ok(home, "add", TOTP_URIS[0])
    ok(home, "backup", "auto", "on", "--to", str(target_dir / "b"))
    shutil.rmtree(target_dir)
    target_dir.write_text("a file where the folder was: the backup cannot be written")
    result = agent(home, "add", TOTP_URIS[1])
    assert result.returncode == 0
    assert "automatic backup failed" in result.stderr
    assert [e.name for e in AccountStore(home).entries()] == ["ACME: alice", "Big: bob"]
    # It says that the backup misses the change, and how to write it (the file exists).
    assert "The change is saved on this device, but the backup does not have it yet" in result.stderr
    command = result.stderr.strip().split("or write it now with: ", 1)[1]
    assert command == f"pushauth-agent backup --to {target_dir / 'b'} --force"
    target_dir.unlink()
    target_dir.mkdir()
    ok(home, *command.split()[1:])
    ok(tmp_path / "new", "restore", "--from", str(target_dir / "b"))
    assert [e.name for e in AccountStore(tmp_path / "new").entries()] == ["ACME: alice", "Big: bob"]


def test_passwd_rewrites_the_automatic_backup_with_the_new_passphrase(tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "auto.backup"
    ok(home, "add", TOTP_URIS[0])
    ok(home, "backup", "auto", "on", "--to", str(target))
    ok(home, "passwd", PUSHAUTH_AGENT_NEW_PASSPHRASE="violet kettle marches upstream")
    old = agent(tmp_path / "a", "restore", "--from", str(target))
    assert_cli_error(old, contains="wrong passphrase")
    ok(
        tmp_path / "b",
        "restore",
        "--from",
        str(target),
        PUSHAUTH_AGENT_PASSPHRASE="violet kettle marches upstream",
    )
    assert [
        e.name
        for e in AccountStore(
            tmp_path / "b", Passphrases(env={PASSPHRASE_ENV: "violet kettle marches upstream"})
        ).entries()
    ] == ["ACME: alice"]
