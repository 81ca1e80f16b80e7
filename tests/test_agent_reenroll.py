"""pushauth-agent (real subprocesses) against a real broker: an account the service
removed is marked "revoked" wherever its codes are shown, and enrolling again at the
same service for the same user replaces it instead of adding "name (2)" (issue 12)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from e2e_helpers import agent, agent_env, agent_ok, enroll  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP a test)
from test_agent_e2e import Listen, listener  # noqa: F401  (listener: fixture)
from textual.widgets import DataTable

from device_agent.store import AccountStore
from device_agent.tui import AgentApp
from protocol.purpose import setup_test_context
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

LABEL = "alice@example.com"


def _codes(home: Path) -> list[dict[str, object]]:
    return json.loads(agent_ok(home, "code", "--json"))


async def test_revoked_account_is_marked_where_codes_are_shown_and_re_enroll_replaces_it(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    first = await enroll(client, home, name="Phone")
    (line,) = _codes(home)
    assert line["name"] == LABEL and line["revoked"] is False
    assert "revoked" not in agent_ok(home, "code")

    # The service removes the device; the agent learns it on its next connection.
    await client.revoke_credential(first.id)
    await asyncio.to_thread(agent, home, "pending", "--json")
    (line,) = _codes(home)
    assert line["name"] == LABEL and line["revoked"] is True
    text = agent_ok(home, "code")
    assert re.search(
        rf"^{re.escape(LABEL)}: \d{{6}} .*\[revoked: the service removed this account", text, re.M
    ), text
    (listed,) = json.loads(agent_ok(home, "accounts", "--json"))
    assert listed["status"] == "revoked"
    assert "[revoked:" in agent_ok(home, "accounts")

    # Enrolled again at the same service for the same user: the revoked entry is
    # replaced in place (same name, a new key, new codes), not joined by "(2)".
    started = await client.create_enrollment("alice", LABEL, totp=new_totp())
    assert started.uri is not None
    out = agent_ok(home, "enroll", "--name", "Phone", started.uri)
    assert f'Replaced the revoked account "{LABEL}"' in out, out
    assert "pushauth-agent listen" in out  # where the test notification is answered
    (listed,) = json.loads(agent_ok(home, "accounts", "--json"))
    assert listed["name"] == LABEL and listed["status"] == "active" and listed["totp"]
    (line,) = _codes(home)
    assert line["revoked"] is False and "revoked" not in agent_ok(home, "code")
    assert listed["credential_id"] != first.id
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None and done.credential.id == listed["credential_id"]

    # An active account is never replaced: a second enrollment of the same user here
    # is a second entry.
    again = await client.create_enrollment("alice", LABEL)
    assert again.uri is not None
    out = agent_ok(home, "enroll", "--name", "Phone", "--again", again.uri)
    assert f'Added "{LABEL} (2)"' in out, out
    assert [a["name"] for a in json.loads(agent_ok(home, "accounts", "--json"))] == [LABEL, f"{LABEL} (2)"]

    # A key the broker has no record of (the user erased there; after a restore of the
    # broker's Redis from a copy older than the enrollment, the same): the device says so,
    # and how to get the account back, instead of only "no more sign-in requests".
    await client.erase_user("alice")
    told = (await asyncio.to_thread(agent, home, "pending")).stderr
    assert told.count("was unknown to the broker") == 2, told
    assert "restored from an older copy" in told and "pushauth-agent enroll URI" in told, told
    back = await client.create_enrollment("alice", LABEL, totp=new_totp())
    assert back.uri is not None
    out = agent_ok(home, "enroll", "--name", "Phone", back.uri)
    assert f'Replaced the revoked account "{LABEL}"' in out, out


async def test_default_device_name_says_which_app(client: PushAuthClient, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    started = await client.create_enrollment("alice", LABEL)
    assert started.uri is not None
    out = agent_ok(home, "enroll", started.uri)
    assert "this device is listed as: pushauth-agent on " in out, out
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None and done.credential.name.startswith("pushauth-agent on ")


async def test_listen_started_before_the_first_enroll_answers_the_test_notification(
    client: PushAuthClient, tmp_path: Path, listener: Callable[..., Listen]
) -> None:
    """The walkthrough's order: `listen` first (it makes the vault, so it never asks for
    the passphrase mid-way), then `enroll` in another terminal; the service's test
    notification, sent to the new device only, shows up in `listen` and is approved."""
    home = tmp_path / "phone"
    listening = listener(home)
    listening.wait_for("No active accounts yet; waiting for one")
    assert (home / "vault.pav").exists()
    started = await client.create_enrollment("alice", LABEL, totp=new_totp())
    assert started.uri is not None
    agent_ok(home, "enroll", "--name", "Phone", started.uri)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    test_push = await client.create_challenge(
        "alice", setup_test_context({}), ttl=180, credential_id=done.credential.id
    )
    assert test_push.devices == 1
    # Worded as the setup's test (docs/protocol.md 15.1), its number on the setup page.
    listening.wait_for(f"Test notification {test_push.id}: finish adding this device?")
    listening.wait_for("number shown on the setup page")
    listening.type(test_push.number)
    listening.wait_for(f"Request {test_push.id}: approved: the service can now finish adding this device")
    result = await client.wait_result(test_push, {done.credential.id: done.credential.public_key}, timeout=20)
    assert result.approved, result


async def test_the_terminal_ui_marks_a_revoked_account(client: PushAuthClient, tmp_path: Path) -> None:
    """The TUI (Textual's pilot, headless) learns from the broker that the service
    removed the account and shows its row, codes and all, as revoked."""
    home = tmp_path / "phone"
    cred = await enroll(client, home, name="Phone")
    await client.revoke_credential(cred.id)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:

        def row() -> list[str]:
            table = app.query_one("#accounts", DataTable)
            return [str(cell) for cell in table.get_row_at(0)] if table.row_count else []

        deadline = time.monotonic() + 20
        while "revoked" not in " ".join(row()):
            assert time.monotonic() < deadline, f"no revoked mark in {row()}"
            await pilot.pause(0.05)
        name, code, _left, status = row()
        assert name == LABEL and re.fullmatch(r"\d{6}", code) and status.startswith("revoked: ")
        await pilot.press("q")
