"""pushauth-pam through a real PAM stack: `pamtester` (Linux-PAM's conversation, as sudo
and su use) against a service file in /etc/pam.d/ that loads the module with
libpam-python, with the real broker, Redis and the real agent CLI answering.

The person's side: the number shows in the prompt "Type NN in your authenticator, then
press Enter"; they press Enter (here before the approval: the module then waits for
the answer) or type "code" for a verification code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent, agent_env, agent_ok, approve, only_pending, pending  # noqa: F401 - agent_env is a fixture
from host_cli import command, command_ok, rename_device, stored_devices
from pam_world import (
    NUMBER_PROMPT,
    PAM,
    Account,
    World,
    add_to_group,
    enroll_device,
    local_account,
    make_world,
    module_line,
    pam_service,
    remove_from_group,
)
from shared_broker import broker  # noqa: F401 - a fixture
from support import DEADLINE, BrokerProcess, ManagedProcess, assert_cli_error, free_port, run_cli, wait_until
from support.hostile_broker import Exchange, HostileBroker

from relying_party.host.store import UserStore
from relying_party.pam import cli as pam_cli
from relying_party.sdk import PushAuthClient
from relying_party.web import totp
from relying_party.web.credentials import SyncReport
from relying_party.web.db import Database


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    with local_account() as made:
        yield made


@pytest.fixture(scope="module")
def world(broker: BrokerProcess, account: Account, tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(broker, tmp_path_factory.mktemp("pam"), account)


@pytest.fixture(scope="module")
def service(world: World) -> Iterator[str]:
    with pam_service(module_line(world.config())) as name:
        yield name


RUNS = itertools.count(1)


def pamtester(world: World, service: str, user: str | None = None) -> ManagedProcess:
    """pamtester on `service`; a pipe on stdin for the person's lines. Its stdout (PAM's
    info messages) line-buffered by stdbuf, as on a terminal; logs of its own per run."""
    return ManagedProcess(
        ["stdbuf", "-oL", "pamtester", "-v", service, user or world.account.name, "authenticate"],
        log_dir=world.base / "logs",
        name=f"pamtester-{next(RUNS)}",
        stdin=True,
    ).start()


def number_of(proc: ManagedProcess) -> str:
    return proc.wait_for_output(NUMBER_PROMPT.pattern, stream="both").group(1)


def finish(proc: ManagedProcess) -> tuple[int, str]:
    code = proc.wait(timeout=DEADLINE)
    return code, proc.output()


def test_enroll_prints_a_qr_code_and_confirms_with_a_test_push(world: World) -> None:
    out = world.enroll_output
    assert "pushauth://enroll?" in out
    assert "█" in out or "▀" in out  # the QR code, drawn in the terminal
    assert f"{world.account.name} can now sign in with push approval or a verification code" in out


def test_the_right_number_signs_in(world: World, service: str) -> None:
    before = world.audit_count()
    (device,) = [
        d for d in stored_devices(world.store, f"{world.account.name}@test.example") if d.name == "phone"
    ]
    proc = pamtester(world, service)
    number = number_of(proc)
    assert re.fullmatch(r"\d\d", number)
    proc.send_line("")  # Enter first: the module waits for the device's answer
    request = approve(world.home, number)
    assert request["context"]["service"] == service  # the device sees which sign-in it is
    code, out = finish(proc)
    assert code == 0, out
    assert "Approved on your authenticator." in out
    assert "successfully authenticated" in out
    line = world.audit_line(r"decision=allow outcome=approved", before)
    assert (
        f"user={world.account.name} pushauth_user={world.account.name}@test.example service={service}" in line
    )
    # Which device approved: its credential id, as `pushauth-pam devices` lists it.
    assert re.search(
        rf"challenge=\S+ device={device.credential_id} ms=\d+ prompt_ms=\d+ approval_ms=\d+", line
    ), line
    # The approving device's "last used" (pushauth-pam devices) is now.
    (used,) = [
        d for d in stored_devices(world.store, f"{world.account.name}@test.example") if d.name == "phone"
    ]
    assert used.last_used_at is not None and used.last_used_at > (device.last_used_at or 0)


def test_a_wrong_number_is_refused(world: World, service: str) -> None:
    before = world.audit_count()
    proc = pamtester(world, service)
    number = number_of(proc)
    proc.send_line("")
    approve(world.home, "10" if number != "10" else "11")
    code, out = finish(proc)
    assert code != 0, out
    assert "Wrong number typed in your authenticator" in out
    world.audit_line(r"decision=deny outcome=number_mismatch user=\S+ .*challenge=\S+", before)


def test_deny_is_refused(world: World, service: str) -> None:
    before = world.audit_count()
    proc = pamtester(world, service)
    number_of(proc)
    proc.send_line("")
    agent_ok(world.home, "deny", only_pending(world.home)["id"])
    code, out = finish(proc)
    assert code != 0, out
    assert "Denied on your authenticator." in out
    world.audit_line(r"decision=deny outcome=denied", before)


def test_a_broker_replaying_an_earlier_approval_is_refused(world: World, broker: BrokerProcess) -> None:
    """A compromised broker answers a new sign-in with an earlier, really approved one of
    the same user and context: in the one-request stream (the old challenge with the
    SDK's new rp_nonce echoed, then its genuine signed approval while the person denies
    the real one), and as a plain body (the SDK then reads the old approval by long-poll).
    Both are refused and audited as verification failures, never allowed (the SDK's
    freshness check, through the module; docs/protocol.md section 20)."""
    with (
        HostileBroker(broker.http_url) as hostile,
        pam_service(module_line(world.config("hostile", broker_url=hostile.http_url))) as service,
    ):
        before = world.audit_count()
        proc = pamtester(world, service)  # honestly, through the proxy: allowed
        number = number_of(proc)
        proc.send_line("")
        approve(world.home, number)
        code, out = finish(proc)
        assert code == 0, out
        honest = hostile.last("POST", "/v1/challenges")
        old_challenge, old_result = honest.lines[0], honest.lines[-1]
        assert old_challenge["number"] == number and old_result["status"] == "approved"

        def replayed(exchange: Exchange, index: int, body: Any) -> Any:
            if index == 0:
                return {**old_challenge, "rp_nonce": exchange.request_json["rp_nonce"]}
            return old_result

        hostile.rewrite_stream("POST", "/v1/challenges", replayed)
        proc = pamtester(world, service)
        assert number_of(proc) == number  # the old challenge, as the broker claims
        proc.send_line("")
        agent_ok(world.home, "deny", only_pending(world.home)["id"])  # the real one: denied
        code, out = finish(proc)
        assert code != 0, out
        assert "successfully authenticated" not in out
        world.audit_line(
            r"decision=deny outcome=verification_failed .*challenge=" + old_challenge["id"], before
        )

        hostile.clear()  # the old challenge as one plain body: the SDK reads its result by long-poll
        hostile.replay(
            "POST",
            "/v1/challenges",
            honest,
            edit=lambda request, _body: {**old_challenge, "rp_nonce": request.request_json["rp_nonce"]},
        )
        after = world.audit_count()
        proc = pamtester(world, service)
        assert number_of(proc) == number
        proc.send_line("")
        code, out = finish(proc)
        assert code != 0, out
        world.audit_line(r"decision=deny outcome=verification_failed", after)
        served = hostile.last("GET", f"/v1/challenges/{old_challenge['id']}.*")
        assert served.forwarded and served.json["status"] == "approved"  # the real, old approval
    hostile.check()


def test_a_sign_in_whose_process_is_killed_at_the_prompt_withdraws_its_push(
    world: World, service: str
) -> None:
    """Killed outright (SIGKILL: nothing in the process runs), the push still ends on the
    device and the audit line says so: the watchdog process does both."""
    before = world.audit_count()
    proc = pamtester(world, service)
    number_of(proc)
    challenge = only_pending(world.home)["id"]
    proc.kill(signal.SIGKILL)
    line = world.audit_line(rf"decision=deny outcome=cancelled .*challenge={challenge} ", before)
    assert 'detail="the PAM process ended during the sign-in' in line
    wait_until(lambda: pending(world.home) == [], message="the push withdrawn from the device")


def test_a_sign_in_that_ends_as_usual_leaves_its_watchdog_quiet(world: World, service: str) -> None:
    before = world.audit_count()
    proc = pamtester(world, service)
    number = number_of(proc)
    proc.send_line("")
    approve(world.home, number)
    assert finish(proc)[0] == 0
    world.audit_line(r"decision=allow outcome=approved", before)
    # A later sign-in's line comes after: had the watchdog of the first one taken the end
    # of its process for a death, its "cancelled" line would be among them.
    proc = pamtester(world, service)
    number_of(proc)
    proc.send_line("")
    agent_ok(world.home, "deny", only_pending(world.home)["id"])
    finish(proc)
    world.audit_line(r"decision=deny outcome=denied", before)
    assert "outcome=cancelled" not in "".join(world.audit_lines(before))


def test_a_report_is_refused_and_mutes_push_until_lifted(world: World, service: str) -> None:
    before = world.audit_count()
    proc = pamtester(world, service)
    number_of(proc)
    proc.send_line("")
    agent_ok(world.home, "deny", "--fraud", only_pending(world.home)["id"])
    code, out = finish(proc)
    assert code != 0, out
    assert "You reported this sign-in as not yours" in out
    world.audit_line(r"decision=deny outcome=reported", before)
    # Push is muted now: the module says so and takes a verification code instead.
    muted = pamtester(world, service)
    muted.wait_for_output(r"Push sign-in is paused for your account", stream="both")
    muted.send_line("")
    code, out = finish(muted)
    assert code != 0, out
    world.audit_line(r"decision=deny outcome=push_blocked .*detail=push_blocked", before)
    asyncio.run(_lift(world))


def test_a_code_sign_in_lifts_the_push_block(world: World, service: str) -> None:
    before = world.audit_count()
    home = world.base / "agent-blocked"
    with local_account() as other:
        enroll_device(world, home, "phone", user=other.name)
        proc = pamtester(world, service, other.name)
        number_of(proc)
        proc.send_line("")
        agent_ok(home, "deny", "--fraud", only_pending(home)["id"])
        status, out = finish(proc)
        assert status != 0, out
        muted = pamtester(world, service, other.name)
        muted.wait_for_output(r"Push sign-in is paused for your account", stream="both")
        (code,) = [line["code"] for line in json.loads(agent_ok(home, "code", "--json"))]
        muted.send_line(code)
        status, out = finish(muted)
        assert status == 0, out
        line = world.audit_line(rf"decision=allow outcome=totp_ok user={other.name} ", before)
        assert "detail=push_blocked" in line and "not lifted" not in line, line
        # The code sign-in lifted the block: the next sign-in is a push again.
        again = pamtester(world, service, other.name)
        number = number_of(again)
        again.send_line("")
        approve(home, number)
        status, out = finish(again)
        assert status == 0, out
        world.audit_line(rf"decision=allow outcome=approved user={other.name} ", before)


async def _lift(world: World) -> None:
    db = Database(world.store)
    try:
        user = db.user_by_name(f"{world.account.name}@test.example")
    finally:
        db.close()
    assert user is not None
    async with PushAuthClient(world.broker.http_url, world.rp["api_key"]) as sdk:
        await sdk.lift_push_block(user.handle)


def test_code_at_the_prompt_takes_a_verification_code(world: World, service: str) -> None:
    before = world.audit_count()
    proc = pamtester(world, service)
    number_of(proc)
    proc.send_line("code")
    proc.wait_for_output(r"Verification code: ", stream="both")
    assert pending(world.home) == []  # the push was cancelled: the device drops it
    (code,) = [line["code"] for line in json.loads(agent_ok(world.home, "code", "--json"))]
    proc.send_line(code)
    status, out = finish(proc)
    assert status == 0, out
    assert "Verification code accepted." in out
    world.audit_line(r"decision=allow outcome=totp_ok .* device=cr_\S+ ms=", before)  # whose code it was
    # The same code again: refused (RFC 6238 codes are single-use here).
    again = pamtester(world, service)
    number_of(again)
    again.send_line(code)  # a code typed straight at the number prompt counts too
    status, out = finish(again)
    assert status != 0, out
    assert "used already" in out
    world.audit_line(r"decision=deny outcome=totp_replayed", before)
    # Text that is no code is a wrong code: it said "No verification code typed".
    typo = pamtester(world, service)
    number_of(typo)
    typo.send_line("code")
    typo.wait_for_output(r"Verification code: ", stream="both")
    typo.send_line("12345x")
    status, out = finish(typo)
    assert status != 0, out
    assert "Wrong verification code." in out and "No verification code" not in out, out


def test_a_push_not_answered_in_time_expires(world: World) -> None:
    before = world.audit_count()
    with pam_service(module_line(world.config("short", ttl=10))) as short:
        proc = pamtester(world, short)
        number_of(proc)
        proc.send_line("")
        status, out = finish(proc)
    assert status != 0, out
    assert "No answer in time: the request expired." in out
    world.audit_line(r"decision=deny outcome=expired", before)


@pytest.fixture(scope="module")
def nist_world(broker: BrokerProcess, account: Account, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The account at a second RP that the broker holds to the NIST SP 800-63B-4 profile
    (6 digits or more) with a 120 s lifetime; pushauth-pam's configuration names neither
    digits nor the push's lifetime, so the enroll's test push already takes the policy."""
    policy = ("--profile", "nist-800-63b-4", "--ttl", "120")
    return make_world(broker, tmp_path_factory.mktemp("pam-nist"), account, policy=policy)


def test_digits_and_lifetime_left_out_of_the_config_follow_the_rps_policy(nist_world: World) -> None:
    world = nist_world
    assert re.search(r"Test push: type \d{6} in your authenticator", world.enroll_output)
    assert "digits the RP's policy at the broker; push valid: the RP's policy at the broker" in command_ok(
        PAM, world.config(), "check-config"
    )
    before = world.audit_count()
    with pam_service(module_line(world.config())) as svc:
        proc = pamtester(world, svc)
        number = number_of(proc)
        assert re.fullmatch(r"\d{6}", number)
        proc.send_line("")  # Enter first: the module waits for the answer, as long as the broker said
        request = approve(world.home, number)
        # The broker's lifetime (the policy's 120 s, not a number of pushauth-pam's own),
        # which the module's wait follows (the challenge's expires_at).
        assert (request["digits"], request["expires_at"] - request["created_at"]) == (6, 120_000)
        code, out = finish(proc)
    assert code == 0, out
    world.audit_line(r"decision=allow outcome=approved", before)


def test_digits_named_in_the_config_are_still_sent_and_the_policy_refuses_too_few(nist_world: World) -> None:
    world = nist_world
    config = world.config("two-digits", digits=2)
    assert "number: digits 2;" in command_ok(PAM, config, "check-config")
    before = world.audit_count()
    with pam_service(module_line(config)) as svc:
        code, out = finish(pamtester(world, svc))
    assert code != 0, out
    # Every sign-in would fail alike: a configuration to fix (PAM_SERVICE_ERR), not a
    # passing broker failure.
    assert "Push sign-in is misconfigured on this host" in out
    line = world.audit_line(r"decision=deny outcome=config_error", before)
    assert "'digits' 2 is below this service's policy minimum of 6" in line, line
    assert "challenge.digits/timeouts.push vs RP policy" in line, line
    assert pending(world.home) == []  # no push was sent


def test_a_user_without_a_device_is_refused_without_a_push(world: World, service: str) -> None:
    before = world.audit_count()
    with local_account() as other:
        proc = pamtester(world, service, other.name)
        status, out = finish(proc)
    assert status != 0, out
    assert "No authenticator is set up for you on this host" in out
    world.audit_line(rf"decision=deny outcome=not_enrolled user={other.name}", before)
    assert pending(world.home) == []


def test_the_audit_file_is_made_readable_by_its_owner_alone(world: World, tmp_path: Path) -> None:
    """Who signed in when and from where: made 0600 under the PAM process's usual umask
    (022 here, as sshd's), not 0644."""
    audit = tmp_path / "made-here.log"
    config = tmp_path / "made-here.toml"
    config.write_text(world.config("made-here-src").read_text().replace(str(world.audit), str(audit)))
    with local_account() as other, pam_service(module_line(config)) as svc:
        status, out = finish(pamtester(world, svc, other.name))
    assert status != 0 and "No authenticator is set up for you" in out, out
    assert f"outcome=not_enrolled user={other.name}" in audit.read_text()
    assert audit.stat().st_mode & 0o777 == 0o600


def test_a_device_removed_at_the_broker_is_no_device_and_leaves_the_store(world: World, service: str) -> None:
    before = world.audit_count()
    home = world.base / "agent-removed"
    with local_account() as other:
        enroll_device(world, home, "old phone", user=other.name)
        (account,) = json.loads(agent_ok(home, "accounts", "--json"))
        agent_ok(home, "remove", account["name"], "--yes")  # revoked at the broker
        status, out = finish(pamtester(world, service, other.name))
        assert status != 0, out
        assert "No authenticator is set up for you on this host" in out
        world.audit_line(rf"decision=deny outcome=no_devices user={other.name}", before)
        # The store followed the broker's list: the next attempt asks the broker nothing.
        status, out = finish(pamtester(world, service, other.name))
        assert status != 0, out
        world.audit_line(rf"decision=deny outcome=not_enrolled user={other.name}", before)


def test_a_code_of_a_device_removed_on_the_phone_is_refused_while_another_gets_the_push(
    world: World, service: str
) -> None:
    """The user removed one of two devices on the phone itself: the push still goes (to the
    other), and that device's code typed at the prompt no longer signs in (the store
    follows the broker's list before a code is checked)."""
    before = world.audit_count()
    home = world.base / "agent-removed-on-phone"
    enroll_device(world, home, "spare phone")
    (account,) = json.loads(agent_ok(home, "accounts", "--json"))
    (code,) = [line["code"] for line in json.loads(agent_ok(home, "code", "--json"))]
    agent_ok(home, "remove", account["name"], "--yes")  # revoked at the broker, not yet known here
    proc = pamtester(world, service)
    number_of(proc)  # the push reached the other device
    proc.send_line(code)
    status, out = finish(proc)
    assert status != 0, out
    world.audit_line(r"decision=deny outcome=totp_bad", before)
    listed = run_cli([PAM, "--config", world.config(), "devices", world.account.name])
    assert listed.returncode == 0 and "spare phone" not in listed.stdout, listed


def test_broker_unreachable_fail_closed_refuses_but_takes_a_code(world: World) -> None:
    before = world.audit_count()
    down = f"http://127.0.0.1:{free_port()}"
    with pam_service(module_line(world.config("closed", broker_url=down))) as closed:
        proc = pamtester(world, closed)
        proc.wait_for_output(r"The approval service is unreachable\. Verification code", stream="both")
        proc.send_line("")
        status, out = finish(proc)
        assert status != 0, out
        assert "sign-in refused" in out
        world.audit_line(r"decision=deny outcome=broker_unavailable .*detail=\"cannot reach", before)
        assert "code from your authenticator still works" not in out  # it was just asked for
        # The codes are checked against the host's own store: they still work. (A second
        # device's code: the first device's current one may be spent by another test.)
        second = world.base / "agent-2"
        enroll_device(world, second, "tablet")
        (code,) = [line["code"] for line in json.loads(agent_ok(second, "code", "--json"))]
        proc = pamtester(world, closed)
        proc.wait_for_output(r"Verification code", stream="both")
        proc.send_line(code)
        status, out = finish(proc)
    assert status == 0, out
    assert "Verification code accepted." in out
    # Best effort: still signed in, the lift not done said in the detail. The broker was
    # just found unreachable, so it is not asked again (which kept the person waiting
    # another request timeout, and logged that it could not be reached).
    world.audit_line(
        r"outcome=totp_ok .*detail=\"push block not lifted \(BrokerUnavailable\); cannot reach",
        before,
    )
    assert not [line for line in world.audit_lines(before) if "cannot lift the push block" in line]


def test_broker_unreachable_fail_open_lets_in_and_says_so(world: World) -> None:
    before = world.audit_count()
    down = f"http://127.0.0.1:{free_port()}"
    with pam_service(module_line(world.config("open", broker_url=down, when_unreachable="allow"))) as opened:
        proc = pamtester(world, opened)
        status, out = finish(proc)
    assert status == 0, out
    assert "signed in without push approval" in out
    # The whole reason, its cause included (the detail was cut at 128 characters), and how
    # long it was tried: a refused connection is tried again until timeouts.request.
    world.audit_line(
        r"decision=allow outcome=fail_open .*detail=\"cannot reach .*\[Connect call failed .*\)\] "
        r"\(the last of \d+ tries in the 2 s request timeout\)\"$",
        before,
    )


# A stack that routes "unreachable" to fail open itself (docs/pam.md, "PAM lines"):
# only PAM_AUTHINFO_UNAVAIL gets past the module to pam_permit.
def fail_open_stack(config: Path) -> str:
    return (
        module_line(config, "[success=done authinfo_unavail=ignore default=die]")
        + "auth required pam_permit.so\n"
    )


def test_broker_unreachable_without_a_code_prompt_promises_no_code(world: World) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    config = world.config("down-exec", broker_url=down)
    line = f"auth required pam_exec.so stdout quiet {PAM} --config {config} exec\n"
    with pam_service(line) as svc:
        status, out = finish(pamtester(world, svc))
    assert status != 0, out
    assert "The approval service is unreachable: sign-in refused." in out
    assert "verification code" not in out.lower(), out  # pam_exec cannot ask for one


def test_a_refused_api_key_is_a_configuration_error_never_unreachable(world: World, tmp_path: Path) -> None:
    before = world.audit_count()
    wrong = tmp_path / "wrong-key"
    wrong.write_text("pak_" + "x" * 40 + "\n")
    wrong.chmod(0o600)
    config = tmp_path / "wrong.toml"
    config.write_text(world.config("wrong-src").read_text().replace(str(world.key_file), str(wrong)))
    with pam_service(fail_open_stack(config)) as svc:
        status, out = finish(pamtester(world, svc))
    assert status != 0, out  # PAM_SERVICE_ERR: the fail-open route does not take it
    assert "Push sign-in is misconfigured on this host" in out
    assert "Verification code" not in out and "unreachable" not in out, out
    line = world.audit_line(r"decision=deny outcome=config_error ", before)
    assert "broker.api_key_file: the broker refused the API key" in line and "401" in line, line
    assert pending(world.home) == []


def test_a_broker_failing_after_the_push_refuses_even_where_unreachable_fails_open(
    own_broker: BrokerProcess, account: Account, tmp_path: Path
) -> None:
    world = make_world(own_broker, tmp_path, account)
    with pam_service(fail_open_stack(world.config("after-push", ttl=10))) as svc:
        proc = pamtester(world, svc)
        number_of(proc)
        proc.send_line("")  # waiting for the device's answer
        own_broker.kill()
        status, out = finish(proc)
    assert status != 0, out  # PAM_AUTH_ERR: the person may have denied it
    assert "The approval service failed: sign-in refused." in out
    assert "Verification code" not in out, out
    world.audit_line(r"decision=deny outcome=broker_error .*challenge=\S+")


def test_a_member_of_a_bypass_group_needs_no_push(world: World) -> None:
    before = world.audit_count()
    account = world.account
    with pam_service(module_line(world.config("bypass", bypass=True))) as bypass:
        add_to_group(account.name, account.bypass_group)
        try:
            status, out = finish(pamtester(world, bypass))
        finally:
            remove_from_group(account.name, account.bypass_group)
        assert status == 0, out
        line = world.audit_line(r"decision=allow outcome=bypass", before)
        assert f'detail="group {account.bypass_group}"' in line
        assert pending(world.home) == []  # no push was sent


def test_a_group_readable_api_key_file_is_refused_with_a_log_line(world: World, tmp_path: Path) -> None:
    loose = tmp_path / "loose-key"
    loose.write_text(world.rp["api_key"])
    loose.chmod(0o640)
    config = tmp_path / "loose.toml"
    config.write_text(world.config("loose-src").read_text().replace(str(world.key_file), str(loose)))
    with pam_service(module_line(config)) as svc:
        status, out = finish(pamtester(world, svc))
    assert status != 0, out
    assert "Push sign-in is misconfigured on this host" in out
    assert re.search(
        r"configuration error: broker\.api_key_file: .* is readable or writable by group or others", out
    )
    assert re.search(r"decision=deny outcome=config_error user=\S+ pushauth_user=- service=\S+", out)
    assert pending(world.home) == []
    result = run_cli([PAM, "--config", config, "check-config"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "chmod 600" in result.stderr, result.stderr


def test_pam_exec_mode_pushes_with_the_number_printed(world: World) -> None:
    before = world.audit_count()
    line = f"auth required pam_exec.so stdout quiet {PAM} --config {world.config()} exec\n"
    with pam_service(line) as svc:
        proc = pamtester(world, svc)
        number = proc.wait_for_output(r"Type (\d+) in your authenticator$", stream="both").group(1)
        approve(world.home, number)
        status, out = finish(proc)
    assert status == 0, out
    world.audit_line(
        rf"decision=allow outcome=approved user={world.account.name} pushauth_user=\S+ service={svc}", before
    )


def test_a_remote_host_with_control_characters_is_shown_escaped_and_still_pushes(world: World) -> None:
    """PAM_RHOST (a reverse-DNS name sshd looked up, pam_exec's environment) goes into the
    push's context: with an escape sequence there the broker refused the push (400) and
    the sign-in ended as config_error. Now the device shows it escaped."""
    before = world.audit_count()
    line = f"auth required pam_exec.so stdout quiet {PAM} --config {world.config()} exec\n"
    with pam_service(line) as svc:
        proc = ManagedProcess(
            [
                "stdbuf",
                "-oL",
                "pamtester",
                "-v",
                "-I",
                "rhost=203.0.113.9\x1b[2J\u202e",
                svc,
                world.account.name,
                "authenticate",
            ],
            log_dir=world.base / "logs",
            name=f"pamtester-{next(RUNS)}",
            stdin=True,
        ).start()
        number = proc.wait_for_output(r"Type (\d+) in your authenticator$", stream="both").group(1)
        request = approve(world.home, number)
        status, out = finish(proc)
    assert status == 0, out
    assert request["context"]["from"] == "203.0.113.9\\x1b[2J\\u202e"
    world.audit_line(rf"decision=allow outcome=approved user={world.account.name} ", before)


# -- devices and remove ----------------------------------------------------------------


async def _sync(world: World, name: str) -> SyncReport:
    store = UserStore(world.store)
    try:
        user = store.user(name)
        assert user is not None
        async with PushAuthClient(world.broker.http_url, world.rp["api_key"]) as sdk:
            return await store.sync(sdk, user)
    finally:
        store.close()


def test_remove_revokes_a_device_at_the_broker_and_here_or_here_only_when_it_is_down(
    world: World, service: str
) -> None:
    before = world.audit_count()
    lost_home, kept_home = world.base / "agent-lost", world.base / "agent-kept"
    with local_account() as other:
        user, name = other.name, f"{other.name}@test.example"
        enroll_device(world, lost_home, "phone", user=user)
        enroll_device(world, kept_home, "phone", user=user)
        listed = json.loads(command_ok(PAM, world.config(), "devices", user, "--json"))
        # Two devices of one name are told apart (the second "phone (2)"), as on the demo RP.
        assert [(d["name"], d["confirmed"], d["restored_from"]) for d in listed] == [
            ("phone", True, None),
            ("phone (2)", True, None),
        ]
        assert all(d["added"] and d["last_used"] for d in listed), listed  # the setup's approval
        lost, kept = (str(d["credential_id"]) for d in listed)

        # Two devices named "phone" (a store from before a second one was kept as "phone (2)"):
        # refused with both ids, nothing changed.
        rename_device(world.store, kept, "phone")
        stored = stored_devices(world.store, name)
        ambiguous = command(PAM, world.config(), "remove", user, "phone")
        line = assert_cli_error(ambiguous, contains='2 devices named "phone"')
        assert ambiguous.returncode == 1 and lost in line and kept in line
        assert stored_devices(world.store, name) == stored

        (device,) = [d for d in stored if d.credential_id == lost]
        code = totp.code_at(device, int(time.time() // device.totp_period))  # the lost phone's code now
        out = command_ok(PAM, world.config(), "remove", user, lost)
        assert f'removed "phone" ({lost}) of {user}' in out and "revoked at the broker" in out, out
        assert [d.credential_id for d in stored_devices(world.store, name)] == [kept]

        # The next sign-in pushes to the kept phone alone, and the lost phone's code is refused.
        proc = pamtester(world, service, user)
        number_of(proc)
        only_pending(kept_home)
        told = agent(lost_home, "pending", "--json")  # the lost phone's agent is told, and gets no push
        assert told.returncode == 0 and json.loads(told.stdout) == [], told
        assert "no more sign-in requests" in told.stderr, told.stderr
        proc.send_line(code)
        status, out = finish(proc)
        assert status != 0 and "Wrong verification code." in out, out
        world.audit_line(rf"decision=deny outcome=totp_bad user={user} ", before)

        # The broker unreachable: `devices` needs it not; `remove` refuses, nothing changed.
        # A name from the store is shown escaped (here one with an ESC, as an older broker
        # might have let through).
        db = Database(world.store)
        db.rename_device(device.user_id, kept, "kept\x1b[2J phone")
        db.close()
        stored = stored_devices(world.store, name)
        down = world.config("devices-down", broker_url=f"http://127.0.0.1:{free_port()}")
        text = command_ok(PAM, down, "devices", user)
        assert "\x1b" not in text, text
        assert re.search(
            rf"^kept\\x1b\[2J phone +{kept} +(\d{{4}}-\d\d-\d\d \d\d:\d\d UTC +){{2}}confirmed$", text, re.M
        ), text
        refused = command(PAM, down, "remove", user, kept)
        line = assert_cli_error(refused, contains="nothing was removed: the broker cannot be reached")
        assert refused.returncode == 1 and "--here-only" in line
        assert stored_devices(world.store, name) == stored

        # --here-only: gone from this host at once; the output says the broker still lists it.
        out = command_ok(PAM, down, "remove", user, kept, "--here-only")
        assert "\x1b" not in out and '"kept\\x1b[2J phone"' in out, out
        assert "the broker still lists it" in out, out
        assert f"pushauth-pam --config {down} remove {user} {kept}" in out, out
        assert stored_devices(world.store, name) == []
        # Meanwhile the broker's list does not bring it back: the SDK takes no credential
        # the store does not hold (logged as a security event), unless proven a recovery.
        report = asyncio.run(_sync(world, name))
        assert (report.refused, report.restored, report.dropped) == (1, [], [])
        assert stored_devices(world.store, name) == []

        # The broker back: its credential id revokes it there, and the device is told.
        out = command_ok(PAM, world.config(), "remove", user, kept)
        assert f"{kept} was not in this host's store; now revoked at the broker" in out, out
        told = agent(kept_home, "pending", "--json")
        assert "no more sign-in requests" in told.stderr, told.stderr
        assert_cli_error(
            command(PAM, world.config(), "remove", user, kept), contains="on this host or at the broker"
        )


def test_a_security_event_goes_to_the_audit_log_not_to_the_persons_terminal(
    world: World, service: str
) -> None:
    """The module's own log records (here the SECURITY EVENT of an approval that does not
    verify) go where the audit lines go. Python's default put them on the PAM process's
    stderr: the person's terminal (pamtester, sudo), or /dev/null under a daemon sshd."""
    before = world.audit_count()
    removed_home, kept_home = world.base / "agent-sec-removed", world.base / "agent-sec-kept"
    with local_account() as other:
        user = other.name
        enroll_device(world, removed_home, "removed", user=user)
        enroll_device(world, kept_home, "kept", user=user)
        down = world.config("security-down", broker_url=f"http://127.0.0.1:{free_port()}")
        command_ok(PAM, down, "remove", user, "removed", "--here-only")  # the broker still lists it
        proc = pamtester(world, service, user)
        number = number_of(proc)
        proc.send_line("")
        approve(removed_home, number)
        status, out = finish(proc)
        assert status != 0 and "The answer could not be verified" in out, out
        world.audit_line(rf"decision=deny outcome=verification_failed user={user} ", before)
        world.audit_line(
            rf"error: SECURITY EVENT: the broker's result for {user}@test.example did not verify", before
        )
        assert "SECURITY EVENT" not in out and "did not verify" not in out, out


def test_devices_and_remove_name_an_unknown_user_or_device(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config = world.config()
    result = command(PAM, config, "devices", "nosuchuser")
    assert result.returncode == 1
    assert_cli_error(
        result, contains="no local user 'nosuchuser' on this host, and nosuchuser is not enrolled here"
    )
    stored = stored_devices(world.store, f"{world.account.name}@test.example")
    result = command(PAM, config, "remove", world.account.name, "no such phone")
    assert result.returncode == 1
    assert_cli_error(result, contains=f'{world.account.name} has no device "no such phone"')
    assert stored_devices(world.store, f"{world.account.name}@test.example") == stored
    with pytest.raises(SystemExit) as exited:
        pam_cli.main(["--config", str(config), "remove", world.account.name])
    assert exited.value.code == 2
    assert "the following arguments are required: DEVICE" in capsys.readouterr().err
