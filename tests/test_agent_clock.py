"""A phone whose clock is wrong: the real agent run under libfaketime (a real skewed
clock for the whole process, not a patched function), a real broker, the RP SDK.

README, "If your phone's clock is wrong", says what the user gets; device_agent/
broker_clock.py says what the broker's clock may and may not be used for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from e2e_helpers import agent, agent_env, agent_ok  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import BrokerProcess
from support.faketime import needs_faketime, skewed

from protocol.uri import TotpParams
from relying_party.sdk import PushAuthClient
from relying_party.totp import check_code, new_totp

pytestmark = needs_faketime


async def enrolled_with_codes(client: PushAuthClient, home: Path) -> TotpParams:
    """An account enrolled (on a right clock) with the RP's TOTP secret for this device."""
    totp = new_totp()
    started = await client.create_enrollment("alice", "alice@example.com", totp=totp)
    assert started.uri is not None
    agent_ok(home, "enroll", started.uri, "--name", "phone")
    assert (await client.wait_enrollment(started, timeout=10)).completed
    return totp


def accepted(totp: TotpParams, home: Path, **env: str) -> tuple[bool, str]:
    """Whether the RP (on the right clock) takes the code the agent shows; its stderr."""
    result = agent(home, "code", "--json", **env)
    assert result.returncode == 0, result.stderr
    (line,) = json.loads(result.stdout)
    return check_code(totp, line["code"], last_used_step=None).ok, result.stderr


async def test_codes_follow_the_brokers_clock_while_this_clock_is_minutes_off(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    """3 minutes behind: the RP (one 30 s step of skew) refused every code shown before.
    Once a connection measured the broker's clock, the account's codes follow it, and the
    user is told which clock is wrong; once the clock is set right, the old measurement
    no longer counts (it would be wrong the other way)."""
    home = tmp_path / "phone"
    totp = await enrolled_with_codes(client, home)
    behind = skewed(-180)
    assert agent(home, "pending", **behind).returncode == 0  # connects: measures the broker's clock
    ok, err = accepted(totp, home, **behind)
    assert ok, err
    # Measured to within half a round trip, rounded to the second (a loaded host's round
    # trip can take more than one).
    assert re.search(r"this device's clock is (2 min 59|3 min [01]) s behind the broker's", err), err
    assert "set this device's clock right" in err and "shown on the broker's clock" in err
    # The user set the clock right: codes by this clock, no warning from the old measurement.
    ok, err = accepted(totp, home)
    assert ok and "clock" not in err, err


async def test_a_clock_off_by_a_day_is_named_and_codes_are_not_moved_that_far(
    client: PushAuthClient, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Beyond 10 minutes the broker's word does not move the codes (a broker lying about
    its time would make the device show codes of another time, for a phishing page to
    collect and use later): the codes are this clock's, and the warning says so."""
    home = tmp_path / "phone"
    totp = await enrolled_with_codes(client, home)
    ahead = skewed(86400)
    agent_ok(home, "pending", **ahead)
    ok, err = accepted(totp, home, **ahead)
    assert not ok
    assert "this device's clock is 1 d 0 h ahead of the broker's" in err, err
    assert "services will refuse the codes shown here" in err


async def test_a_recovery_refused_for_the_clock_says_so_and_keeps_the_recovery_key(
    client: PushAuthClient, tmp_path: Path
) -> None:
    """20 minutes behind, a restore's recovery is refused as stale (the broker allows 5):
    before, the agent sent the user to the service for a new QR code, though nothing was
    used up. Now it names the clock and keeps the key: with the clock right, `reactivate
    NAME` recovers without a QR code."""
    old, new = tmp_path / "old", tmp_path / "new"
    started = await client.create_enrollment("alice", "alice@example.com", totp=new_totp(), recoverable=True)
    assert started.uri is not None
    agent_ok(old, "enroll", started.uri, "--name", "old phone")
    backup = tmp_path / "phone.backup"
    agent_ok(old, "backup", "--to", str(backup))
    out = agent_ok(new, "restore", "--from", str(backup), "--device-name", "new phone", **skewed(-1200))
    assert "this device's clock is 20 min behind the broker's" in out, out
    assert (
        "once this device's clock is right, run: pushauth-agent reactivate alice@example.com (no new" in out
    )
    assert "get a new QR code" not in out
    out = agent_ok(new, "reactivate", "alice@example.com")  # the clock set right
    assert "recovered: alice@example.com" in out, out


async def test_an_old_phone_behind_the_new_one_renews_its_recovery_key_after_the_restore(
    client: PushAuthClient, tmp_path: Path
) -> None:
    """The old phone 90 s behind the new one: "yes, it was me" renews the account's
    recovery key (the restore used it up). The RP takes a rotation only if it is newer
    than the recovery (docs/protocol.md section 16); signed by this clock it was not, so
    the RP refused it (bad_rotation) and the rewritten backup, "recovered" on the next
    device, was refused too (recovery_key_used). Now the phone signs it just after the
    restore's ts (from the notice), and the rewritten backup recovers."""
    old, behind = tmp_path / "old", skewed(-90)
    started = await client.create_enrollment("alice", "alice@example.com", totp=new_totp(), recoverable=True)
    assert started.uri is not None
    agent_ok(old, "enroll", started.uri, "--name", "old phone", **behind)
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None
    stored = {done.credential.id: done.credential}
    backup = tmp_path / "phone.backup"
    agent_ok(old, "backup", "--to", str(backup), **behind)
    out = agent_ok(tmp_path / "new", "restore", "--from", str(backup), "--device-name", "new phone")
    assert "recovered: alice@example.com" in out, out
    (await client.sync_credentials("alice", stored)).apply_to(stored)
    (notice,) = json.loads(agent_ok(old, "pending", "--json", **behind))
    out = agent_ok(old, "recovery", "confirm", notice["id"], **behind)
    assert "New recovery keys for alice@example.com" in out, out
    sync = await client.sync_credentials("alice", stored)
    assert [c.id for c in sync.rotated] == [done.credential.id] and not sync.refused, sync.refused
    sync.apply_to(stored)
    agent_ok(old, "backup", "--to", str(backup), "--force", **behind)
    out = agent_ok(tmp_path / "third", "restore", "--from", str(backup), "--device-name", "third phone")
    assert "recovered: alice@example.com" in out, out
    sync = await client.sync_credentials("alice", stored)
    assert [c.name for c in sync.added] == ["third phone"] and not sync.refused, sync.refused
