"""The verification-code fallback through the SDK: the TOTP parameters an RP provisions
at enrollment survive its own persistence of the pending enrollment (to_json /
from_stored, as the README shows), come back on the completed enrollment, and check the
codes the real device agent shows (relying_party.totp.check_code), once each.

Real broker (one per module, tests/shared_broker.py), real Redis, real pushauth-agent.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from e2e_helpers import agent_env, agent_ok  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)

from protocol import uri as enrollment_uri
from relying_party import Enrollment, EnrollmentStatus, PushAuthClient, TotpCheck, check_code, new_totp


async def test_the_provisioned_totp_survives_the_stored_enrollment_and_checks_the_devices_codes(
    client: PushAuthClient, tmp_path: Path
) -> None:
    params = new_totp("SHA256", 8, 30)
    started = await client.create_enrollment("alice", "alice@example.com", totp=params)
    assert started.uri is not None and started.totp == params
    assert enrollment_uri.parse(started.uri).totp == params  # what the device gets
    # The RP keeps the pending setup between requests as JSON, server-side.
    kept = json.dumps(started.to_json())
    assert json.loads(kept)["totp"] == {
        "secret": params.secret,
        "algorithm": "SHA256",
        "digits": 8,
        "period": 30,
    }

    home = tmp_path / "phone"
    agent_ok(home, "enroll", started.uri, "--name", "phone")
    done = await client.wait_enrollment(Enrollment.from_stored(json.loads(kept)), timeout=10)
    assert done.completed and done.credential is not None
    assert done.totp == params  # to store with done.credential: this device's codes

    (shown,) = json.loads(agent_ok(home, "code", "--json"))
    code = shown["code"]
    # As a person types it: grouped as the web authenticator shows it ("1234 5678"), a
    # pasted no-break space, a keyboard's own digits (Arabic-Indic). An outsider's RP,
    # passing the form's text to check_code as the README shows, refused each of these.
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in code)
    for typed in (f"{code[:4]} {code[4:]}", f" {code[:4]}\u00a0{code[4:]} ", arabic_indic):
        assert check_code(done.totp, typed, last_used_step=None) == check_code(
            done.totp, code, last_used_step=None
        ), typed
    assert not check_code(done.totp, f"{code[:4]}-{code[4:]}", last_used_step=None).ok
    first = check_code(done.totp, code, last_used_step=None)
    assert first.ok and first.step is not None
    # Stored as the credential's last used step: the same code is refused from then on.
    assert check_code(done.totp, code, last_used_step=first.step) == TotpCheck(None, replayed=True)
    # Another device's secret does not take this device's code.
    assert not check_code(new_totp("SHA256", 8, 30), code, last_used_step=None).ok


def test_stored_totp_parameters_are_checked_when_read_back() -> None:
    params = new_totp()
    pending = Enrollment(
        id="en_1",
        user="alice",
        account="alice@example.com",
        status=EnrollmentStatus.PENDING,
        expires_at=1,
        token="tok_1",
        binding_secret=b"s" * 32,
        totp=params,
    )
    assert Enrollment.from_stored(json.loads(json.dumps(pending.to_json()))) == pending
    assert Enrollment.from_stored({**pending.to_json(), "totp": None}) == replace(pending, totp=None)
    stored = pending.to_json()
    for bad in (
        {"secret": "not base32!", "algorithm": "SHA1", "digits": 6, "period": 30},
        {"secret": params.secret, "algorithm": "MD5", "digits": 6, "period": 30},
        {"secret": params.secret, "algorithm": "SHA1", "digits": 7, "period": 30},
        {"secret": params.secret, "algorithm": "SHA1", "digits": 6, "period": 0},
        {"secret": params.secret, "algorithm": "SHA1", "digits": "6", "period": 30},
        {"secret": params.secret},
        "JBSWY3DPEHPK3PXP",
    ):
        with pytest.raises(ValueError, match="stored TOTP parameters"):
            Enrollment.from_stored({**stored, "totp": bad})
