""" "Was this you?" after a recovery, end to end with the real agent CLI, a real broker
on a real Redis and the RP SDK verifying every answer: a recoverable account is
restored on a new device, which recovers by itself; the old device is asked (while
`listen` runs, and on a later connect); "no" removes the new device's key and mutes
push; "yes" changes nothing but the question."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent, agent_env  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import assert_cli_error, wait_until
from test_agent_e2e import Listen, listener  # noqa: F401  (listener: fixture)
from test_agent_recovery import approve, enroll_recoverable

from device_agent.store import AccountStore
from protocol.challenge import Status
from relying_party.errors import PushBlocked
from relying_party.sdk import PushAuthClient

CONTEXT = {"app": "Webmail", "ip": "203.0.113.5"}
QUESTION = "A new device 'new phone' restored your account alice@example.com at "


async def restore_on_new_phone(client: PushAuthClient, tmp_path: Path) -> tuple[Path, Path, Any, Any]:
    """Old phone enrolled as recoverable, backed up, restored on a new phone."""
    old, new = tmp_path / "old", tmp_path / "new"
    old_cred = await enroll_recoverable(client, old, "old phone")
    backup = tmp_path / "pushauth.backup"
    await asyncio.to_thread(ok, old, "backup", "--to", str(backup))
    out = await asyncio.to_thread(ok, new, "restore", "--from", str(backup), "--device-name", "new phone")
    assert "recovered: alice@example.com" in out
    (new_cred,) = [c for c in await client.list_credentials("alice") if c.recovered_from == old_cred.id]
    assert AccountStore(new).find("alice@example.com").cid == new_cred.id
    return old, new, old_cred, new_cred


def notices_of(home: Path) -> list[dict[str, Any]]:
    return [r for r in json.loads(ok(home, "pending", "--json")) if r["type"] == "recovery_notice"]


async def test_no_while_listening_removes_the_new_device_and_mutes_push(
    client: PushAuthClient, tmp_path: Path, listener: Callable[[Path], Listen]
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old_cred = await enroll_recoverable(client, old, "old phone")
    backup = tmp_path / "pushauth.backup"
    ok(old, "backup", "--to", str(backup))
    watching = listener(old)
    watching.wait_for("Connected to")

    ok(new, "restore", "--from", str(backup), "--device-name", "new phone")
    (new_cred,) = [c for c in await client.list_credentials("alice") if c.recovered_from == old_cred.id]
    # Asked at once, while connected.
    watching.wait_for("Recovery question rn_")
    watching.wait_for(QUESTION)
    watching.wait_for("Was this you? [y/n]")
    watching.type("maybe")
    watching.wait_for('Type "y"')
    watching.type("n")
    watching.wait_for("disowned: the new device's key was removed")
    # The restored backup holds this account's recovery key: it gets a new one at once.
    watching.wait_for("New recovery keys for alice@example.com")

    # The RP sees it: the new credential is gone and push is muted.
    assert [c.id for c in await client.list_credentials("alice")] == [old_cred.id]
    block = await client.push_block("alice")
    assert block["muted_until"] is not None
    with pytest.raises(PushBlocked):
        await client.create_challenge("alice", CONTEXT)

    # Once the RP lifts the mute, the new device cannot approve, the old one can.
    await client.lift_push_block("alice")
    ch = await client.create_challenge("alice", CONTEXT)
    refused = await asyncio.to_thread(agent, new, "approve", ch.id, "--number", ch.number)
    assert_cli_error(refused, contains="no pending sign-in request")
    assert refused.returncode == 1
    assert AccountStore(new).find("alice@example.com").status == "revoked"  # the broker refused its key
    watching.wait_for(f"Sign-in request {ch.id}")
    watching.type(ch.number)
    result = await client.wait_result(ch, {old_cred.id: old_cred.public_key}, timeout=10)
    assert result.status is Status.APPROVED and result.answer is not None
    assert result.answer.credential_id == old_cred.id
    assert new_cred.id not in {c.id for c in await client.list_credentials("alice")}
    assert "Traceback" not in watching.errors()


async def test_yes_on_a_later_connect_keeps_both_devices(
    client: PushAuthClient, tmp_path: Path, listener: Callable[[Path], Listen]
) -> None:
    old, new, old_cred, new_cred = await restore_on_new_phone(client, tmp_path)  # old phone offline

    # On its next connect the old phone is asked: `pending` shows it, text and JSON.
    text = await asyncio.to_thread(ok, old, "pending")
    assert QUESTION in text and "recovery confirm" in text
    assert "[y/n]" not in text  # nothing here reads an answer: the last line says what does
    (notice,) = await asyncio.to_thread(notices_of, old)
    assert notice["new_device_name"] == "new phone" and notice["credential_id"] == old_cred.id
    assert notice["new_credential_id"] == new_cred.id and notice["account"] == "alice@example.com"

    # ... and `listen` asks it; "y" answers.
    watching = listener(old)
    watching.wait_for(f"Recovery question {notice['id']}")
    watching.wait_for(QUESTION)
    watching.type("y")
    watching.wait_for(f"Recovery question {notice['id']}: confirmed")
    # The restore used the recovery key the old phone's backups hold: it gets a new one.
    watching.wait_for("New recovery keys for alice@example.com")
    assert await asyncio.to_thread(notices_of, old) == []

    # Both devices keep approving; nothing is muted.
    keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
    assert set(keys) == {old_cred.id, new_cred.id}
    assert (await client.push_block("alice"))["muted_until"] is None
    watching.proc.kill()  # let the one-shot `approve` answer for the old phone
    assert await approve(client, new, keys) == new_cred.id
    assert await approve(client, old, keys) == old_cred.id

    # The question is gone: answering it again is a clean refusal.
    again = await asyncio.to_thread(agent, old, "recovery", "confirm", notice["id"])
    assert_cli_error(again, contains="no open recovery question")
    assert again.returncode == 1


async def test_yes_renews_the_used_recovery_key_so_the_old_devices_backups_recover_again(
    client: PushAuthClient, tmp_path: Path
) -> None:
    old, new, third = tmp_path / "old", tmp_path / "new", tmp_path / "third"
    old_cred = await enroll_recoverable(client, old, "old phone")
    auto = tmp_path / "auto.backup"
    await asyncio.to_thread(ok, old, "backup", "auto", "on", "--to", str(auto))
    out = await asyncio.to_thread(ok, new, "restore", "--from", str(auto), "--device-name", "new phone")
    assert "recovered: alice@example.com" in out
    used = AccountStore(old).recovery_seed("alice@example.com")

    (notice,) = await asyncio.to_thread(notices_of, old)
    out = await asyncio.to_thread(ok, old, "recovery", "confirm", notice["id"])
    assert f"Recovery question {notice['id']}: confirmed" in out
    assert "New recovery keys for alice@example.com" in out
    assert f"The automatic backup {auto} was rewritten." in out
    assert AccountStore(old).recovery_seed("alice@example.com") not in (None, used)
    (listed,) = json.loads(await asyncio.to_thread(ok, old, "accounts", "--json"))
    assert listed["recoverable"] is True

    # The automatic backup, rewritten with the new key, recovers the account on a third home.
    out = await asyncio.to_thread(ok, third, "restore", "--from", str(auto), "--device-name", "third")
    assert "recovered: alice@example.com" in out and "action required" not in out
    recovered = {c.name: c.recovered_from for c in await client.list_credentials("alice")}
    assert recovered == {"old phone": None, "new phone": old_cred.id, "third": old_cred.id}


async def test_one_shot_disown_and_the_new_device_is_told_while_listening(
    client: PushAuthClient, tmp_path: Path, listener: Callable[[Path], Listen]
) -> None:
    old, new, old_cred, _ = await restore_on_new_phone(client, tmp_path)
    new_listening = listener(new)
    new_listening.wait_for("Connected to")
    (notice,) = await asyncio.to_thread(notices_of, old)

    out = await asyncio.to_thread(ok, old, "recovery", "disown", notice["id"][:10])  # a unique prefix
    assert f"Recovery question {notice['id']}: disowned" in out
    new_listening.wait_for('said this restore was "not me"')
    assert [c.id for c in await client.list_credentials("alice")] == [old_cred.id]
    assert (await client.push_block("alice"))["muted_until"] is not None
    wait_until(
        lambda: AccountStore(new).find("alice@example.com").status == "revoked",
        message="the new device to mark its account removed",
    )


def test_recovery_command_usage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = agent(home, "recovery", "maybe", "rn_x")
    assert_cli_error(result, contains="invalid choice")
    assert result.returncode == 2
    help_text = agent(home, "recovery", "--help")
    assert help_text.returncode == 0
    for shown in ("recovery confirm ID", "recovery disown ID", "pending"):
        assert shown in help_text.stdout
    no_accounts = agent(home, "recovery", "confirm", "rn_x")
    assert_cli_error(no_accounts, contains="no active accounts")
