"""Names from a hostile RP link or broker reach the terminal only as visible escapes.

docs/protocol.md, section 18.4: a device MUST make control characters in the text it
shows visible. The RP's name comes from the enrollment link; here a hostile broker
(the real one behind tests/support/hostile_broker.py's proxy) writes ESC, BEL and a
blank Hangul filler into it, since `pushauth-broker rp add` refuses such names. The real agent then enrolls,
is revoked by the RP, and removes accounts: nothing it prints carries a raw ESC/BEL.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from e2e_helpers import agent, agent_env, agent_ok  # noqa: F401  (agent_env: autouse, the vault passphrase)
from hostile_fixtures import client, hostile  # noqa: F401  (fixtures: the SDK through the hostile proxy)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker per module, an RP per test)
from support.hostile_broker import Exchange, HostileBroker

from device_agent.store import AccountStore
from protocol import uri
from relying_party import PushAuthClient
from relying_party.totp import new_totp

# Ends in a HANGUL FILLER: blank, so "Corp" could pass for a name that ends there.
EVIL = "Evil\x1b]0;pwned\x07Corp\x1b[2J\u3164"
SHOWN = "Evil\\x1b]0;pwned\\x07Corp\\x1b[2J\\u3164"  # what the terminal must get instead


def raw_controls(text: str) -> list[str]:
    return [c for c in text if c in "\x1b\x07\x9b\r"]


async def test_an_rp_name_with_escape_sequences_is_shown_escaped(
    client: PushAuthClient, hostile: HostileBroker, tmp_path: Path
) -> None:
    def evil_name(_exchange: Exchange, body: Any) -> Any:
        body["uri"] = replace(uri.parse(body["uri"]), rp_name=EVIL).build()
        return body

    hostile.rewrite("POST", "/v1/enrollments", evil_name)
    phone = tmp_path / "phone"
    creds = {}
    for user in ("mal", "eve"):
        started = await client.create_enrollment(user, f"{user}@x", totp=new_totp())
        assert (started.uri is not None and EVIL in started.uri) or "%1B" in started.uri
        out = agent_ok(phone, "enroll", started.uri, "--name", "phone")
        assert not raw_controls(out), out
        assert f'Added "{user}@x" for {SHOWN} (user {user}).' in out
        done = await client.wait_enrollment(started, timeout=10)
        assert done.credential is not None
        creds[user] = done.credential.id
    assert [a.rp_name for a in AccountStore(phone).load()] == [EVIL, EVIL]  # kept as the link said

    # The RP removes mal's device: `pending` tells of it, escaped.
    await client.revoke_credential(creds["mal"])
    result = agent(phone, "pending")
    assert result.returncode == 0, result.stderr
    assert not raw_controls(result.stdout + result.stderr), result
    assert f'Account "mal@x" ({SHOWN}) was removed' in result.stderr

    for user, said in (("mal", 'Forgot "mal@x"'), ("eve", f'Removed "eve@x": {SHOWN} sends no more')):
        out = agent_ok(phone, "remove", f"{user}@x", "--yes")
        assert not raw_controls(out), out
        assert said in out
    assert AccountStore(phone).load() == []
