"""pushauth-agent (real subprocesses) against a real broker: a "verify it's you" request
(context `purpose` = "verify", docs/protocol.md 15.1), as the demo RP sends before a
sensitive change, is worded as a re-authentication, not as a sign-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from e2e_helpers import agent, agent_env, agent_ok, enroll  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP a test)
from test_agent_e2e import Listen, listener  # noqa: F401  (listener: fixture)

from protocol.purpose import verify_context
from relying_party.sdk import PushAuthClient

ACTION = "Verify it's you before changing your security info"


async def test_listen_words_a_verify_request_as_such(
    client: PushAuthClient, tmp_path: Path, listener: Callable[..., Listen]
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home, name="Phone")
    listening = listener(home)
    ch = await client.create_challenge("alice", verify_context({"action": ACTION}), ttl=120)
    listening.wait_for(f"Verification request {ch.id}: is this you verifying your identity?")
    listening.wait_for("number shown on the page asking you to verify")
    listening.type(ch.number)
    listening.wait_for(f"Request {ch.id}: approved: it was you, the service can go on with the change")
    result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=20)
    assert result.approved, result


async def test_pending_and_approve_word_a_verify_request_as_such(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home, name="Phone")
    ch = await client.create_challenge("alice", verify_context({"action": ACTION}), ttl=120)
    (listed,) = json.loads(agent_ok(home, "pending", "--json"))
    assert listed["id"] == ch.id and listed["purpose"] == "verify" and listed["setup_test"] is False
    text = agent_ok(home, "pending")
    assert f"Verification request {ch.id}: is this you verifying your identity?" in text, text
    assert "Sign-in request" not in text, text
    # A wrong number: the words say what was denied (a verification, not a sign-in).
    wrong = str((int(ch.number) + 1) % 10 ** len(ch.number)).zfill(len(ch.number))
    done = await asyncio.to_thread(agent, home, "approve", ch.id, "--number", wrong)
    assert f"Request {ch.id}: number_mismatch: the number did not match, so the verification was denied" in (
        done.stdout
    ), done.stdout + done.stderr
    result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=20)
    assert not result.approved, result
