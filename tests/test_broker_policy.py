"""Policy per RP (issue 11, finding 7), on real brokers, Redis and the real CLI.

The push caps, rate, fraud mute, digits and TTL bounds are settings of the RP, kept
in Redis: two nodes started with different (deprecated) serve flags enforce the RP's
one policy. The NIST SP 800-63B-4 profile: at least 6 digits, TTL at most 10
minutes, 100 consecutive wrong numbers across challenges lock push until the RP lifts
it. `rp remove` leaves nothing of the RP that still works."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import aiohttp
import pytest
import redis
from shared_broker import broker_on_own_redis
from support import (
    BROKER,
    BrokerProcess,
    RedisServer,
    add_rp,
    assert_cli_error,
    new_rp,
    run_cli,
    set_policy,
    until,
)
from test_broker_device_ws import CTX, Device, online_device

from broker import keys
from protocol import signing
from protocol.frames import AnswerResult, Cancel, Challenge, Error, Revoked
from relying_party.errors import InvalidRequest, PushBlocked
from relying_party.models import Policy
from relying_party.sdk import PushAuthClient


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker with the default settings, on its own Redis, for the tests that need no
    flags of their own: each adds its own RPs, whose policies and counts never meet (a
    broker start per test cost about a second of CPU)."""
    yield from broker_on_own_redis(tmp_path_factory, "policy")


@pytest.fixture
def redis_url(node: BrokerProcess) -> str:
    assert node.redis_url is not None
    return node.redis_url


def rp_cli(*argv: str, redis_url: str) -> tuple[int, str, str]:
    result = run_cli([BROKER, "rp", *argv, "--redis-url", redis_url])
    return result.returncode, result.stdout, result.stderr


async def policy_at(node: BrokerProcess, api_key: str) -> Policy:
    async with PushAuthClient(node.http_url, api_key) as client:
        return await client.policy()


async def test_two_nodes_with_different_old_flags_enforce_the_rps_one_policy(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    a = broker_factory(redis_url=redis_server.url, node="a", extra_args=["--max-pushes", "2"])
    b = broker_factory(
        redis_url=redis_server.url,
        node="b",
        extra_args=["--max-pushes", "50", "--max-pushes-per-minute", "100", "--fraud-mute", "0"],
    )
    # The deprecated flags are accepted and say what replaced them.
    assert "--max-pushes 2 has no effect and is deprecated" in a.stderr()
    assert "`pushauth-broker rp set RP_ID --fraud-mute 0`" in b.stderr()
    rp = add_rp("Policy RP", redis_url=redis_server.url)
    shown = set_policy(
        rp["id"], "--max-pushes", "3", "--max-pushes-per-minute", "100", redis_url=redis_server.url
    )
    assert (shown["max_pushes"], shown["max_pushes_per_minute"], shown["fraud_mute"]) == (3, 100, 86400)
    assert (
        await policy_at(a, rp["api_key"])
        == await policy_at(b, rp["api_key"])
        == {k: v for k, v in shown.items() if k != "rp"}
    )
    # The SDK's type names exactly the broker's fields.
    assert set(await policy_at(a, rp["api_key"])) == Policy.__required_keys__ | Policy.__optional_keys__
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as on_a,
        PushAuthClient(b.http_url, rp["api_key"]) as on_b,
    ):
        dev = await online_device(on_a, b.ws_url)
        for node in (on_a, on_b, on_a):  # a alone would stop at 2, b alone at 50
            await node.create_challenge("alice", CTX)
            await next_challenge(dev)
        for node in (on_b, on_a):
            with pytest.raises(PushBlocked) as refused:
                await node.create_challenge("alice", CTX)
            assert "the limit is 3" in refused.value.detail
        state = await on_b.push_block("alice")
        assert (state["pushes_since_sign_in"], state["max_pushes_since_sign_in"], state["blocked"]) == (
            3,
            3,
            True,
        )
        # A change reaches every node (within the policy cache's 2 s).
        set_policy(rp["id"], "--max-pushes", "4", redis_url=redis_server.url)
        for node in (a, b):
            await wait_for_policy(node, rp["api_key"], "max_pushes", 4)
        await on_b.create_challenge("alice", CTX)
        with pytest.raises(PushBlocked):
            await on_a.create_challenge("alice", CTX)
        await dev.close()


async def wait_for_policy(node: BrokerProcess, api_key: str, name: str, value: object) -> None:
    async def shown() -> bool:
        return (await policy_at(node, api_key))[name] == value

    # A node's cached view (policy, API key) takes a change within 2 s.
    await until(shown, message=f"{node.name} shows {name}={value}")


def test_rp_set_and_show_through_the_cli(redis_server: RedisServer) -> None:
    url = redis_server.url
    rp = add_rp("CLI RP", redis_url=url)
    code, out, _ = rp_cli("show", rp["id"], "--json", redis_url=url)
    assert code == 0
    assert json.loads(out) == {
        "rp": rp["id"],
        "profile": "default",
        "max_pushes": 20,
        "max_pushes_per_minute": 10,
        "fraud_mute": 86400,
        "digits": 2,
        "min_digits": 2,
        "ttl": 60,
        "max_ttl": 600,
        "failure_limit": None,
        "max_pending_enrollments": 10000,
        "enrollments_per_minute": 600,
        "max_credentials": 10,
        "allow_numberless_push": False,
    }
    # Push without number matching: off by default, and the NIST profile refuses it, both
    # when it is asked for under the profile and when the profile is asked for with it on.
    assert set_policy(rp["id"], "--allow-numberless-push", redis_url=url)["allow_numberless_push"] is True
    result = run_cli([BROKER, "rp", "set", rp["id"], "--profile", "nist-800-63b-4", "--redis-url", url])
    line = assert_cli_error(result, contains="needs number matching")
    assert "give --no-allow-numberless-push too" in line and "nothing was changed" in line
    assert set_policy(rp["id"], "--no-allow-numberless-push", redis_url=url)["allow_numberless_push"] is False
    nist = set_policy(rp["id"], "--profile", "nist-800-63b-4", "--max-ttl", "300", redis_url=url)
    assert (nist["digits"], nist["min_digits"], nist["max_ttl"], nist["failure_limit"]) == (6, 6, 300, 100)
    code, out, _ = rp_cli("show", rp["id"], "--json", redis_url=url)
    assert json.loads(out) == {"rp": rp["id"], **{k: v for k, v in nist.items() if k != "rp"}}
    # The text form marks what the profile decides; --reset forgets every setting.
    code, out, _ = rp_cli("show", rp["id"], redis_url=url)
    assert code == 0 and "profile nist-800-63b-4" in out
    assert "max-ttl                 300\n" in out and "digits                  6  (profile default)" in out
    assert set_policy(rp["id"], "--reset", redis_url=url)["profile"] == "default"


# The refusals of `rp set` and `rp show` (split from the test above: some 25 command
# runs in one test came near its timeout on a loaded host).
def test_rp_set_refusals_through_the_cli_change_nothing(redis_server: RedisServer) -> None:
    url = redis_server.url
    rp = add_rp("CLI RP", redis_url=url)
    nist = set_policy(rp["id"], "--profile", "nist-800-63b-4", "--max-ttl", "300", redis_url=url)
    # Refusals: one line, exit non-zero, nothing changed.
    for flags, named in (
        (["--min-digits", "4"], "--min-digits"),
        (["--digits", "9"], "--digits"),
        (["--ttl", "400"], "--ttl"),  # above this RP's max_ttl
        (["--max-ttl", "601"], "--max-ttl"),
        (["--max-pushes", "101"], "--max-pushes"),
        (["--max-pushes-per-minute", "0"], "--max-pushes-per-minute"),
        (["--fraud-mute", "-1"], "--fraud-mute"),
        (["--max-pending-enrollments", "0"], "max_pending_enrollments must be 1 to 1000000"),
        (["--enrollments-per-minute", "100001"], "--enrollments-per-minute"),
        (["--max-credentials", "0"], "max_credentials must be 1 to 1000"),
        (
            ["--allow-numberless-push"],
            "--allow-numberless-push: the nist-800-63b-4 profile needs number matching",
        ),
    ):
        result = run_cli([BROKER, "rp", "set", rp["id"], *flags, "--redis-url", url])
        assert_cli_error(result, contains=named)
        assert "nothing was changed" in result.stderr
    # A new bound that the setting in force (not on this command line) no longer fits:
    # the message names that setting and its value, and what to give with the new bound.
    before = set_policy(rp["id"], redis_url=url)
    result = run_cli([BROKER, "rp", "set", rp["id"], "--max-ttl", "30", "--redis-url", url])
    line = assert_cli_error(result, contains=f"the ttl in force ({before['ttl']}) does not fit")
    assert "give --ttl too" in line and "nothing was changed" in line
    assert set_policy(rp["id"], redis_url=url) == before
    bad = run_cli([BROKER, "rp", "set", rp["id"], "--profile", "strict", "--redis-url", url])
    assert bad.returncode == 2 and "invalid choice: 'strict'" in bad.stderr
    assert_cli_error(
        run_cli([BROKER, "rp", "set", "rp_nope", "--max-pushes", "3", "--redis-url", url]),
        contains="no relying party",
    )
    assert_cli_error(
        run_cli([BROKER, "rp", "show", "rp_nope", "--redis-url", url]), contains="no relying party"
    )
    code, out, _ = rp_cli("show", rp["id"], "--json", redis_url=url)
    assert code == 0 and json.loads(out) == {"rp": rp["id"], **{k: v for k, v in nist.items() if k != "rp"}}


async def test_a_policy_broken_by_hand_in_redis_is_the_default_policy(
    node: BrokerProcess, redis_url: str
) -> None:
    """Only `rp set` writes a policy, validated; one edited by hand with bytes that are not
    UTF-8 is read as the defaults (and logged), not a 500 for every request of the RP."""
    rp = await new_rp(node, "Hand-edited")
    with redis.Redis.from_url(redis_url) as r:
        r.hset(keys.rp_policy(rp["id"]), mapping={b"max_pushes": b"\xff\xfe", b"\xc3": b"1"})
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        assert (await client.policy())["max_pushes"] == 20
        assert (await client.create_enrollment("alice", "alice@example.com")).uri


async def test_nist_profile_bounds_digits_and_ttl(node: BrokerProcess, redis_url: str) -> None:
    rp = add_rp("NIST RP", redis_url=redis_url)
    set_policy(rp["id"], "--profile", "nist-800-63b-4", "--max-ttl", "300", redis_url=redis_url)
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online_device(client, node.ws_url)
        # A request naming no digits gets the policy's (the SDK always names them: it
        # checks the broker made as many as it asked for).
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {rp['api_key']}"}
            body = {"user": "alice", "context": CTX}
            async with http.post(node.http_url + "/v1/challenges", json=body, headers=headers) as r:
                assert r.status == 201
                made = await r.json()
        assert (made["digits"], len(made["number"]), made["expires_at"] - made["created_at"]) == (
            6,
            6,
            60_000,
        )
        for kwargs, field in (
            ({"digits": 4}, "'digits' 4"),
            ({"digits": 6, "ttl": 301}, "'ttl' 301"),
            ({"number_matching": False}, "'number_matching' false"),  # never under this profile
        ):
            with pytest.raises(InvalidRequest) as refused:
                await client.create_challenge("alice", CTX, **kwargs)  # type: ignore[arg-type]
            assert refused.value.status == 400
            assert field in refused.value.detail and "profile nist-800-63b-4" in refused.value.detail
        # Refused before anything was stored or sent: the first one is still the live one.
        assert (await dev.frame()).ch == made["id"]  # type: ignore[attr-defined]
        ch = await client.create_challenge("alice", CTX, digits=8, ttl=300)  # within the policy
        assert len(ch.number) == 8
        assert (await client.push_block("alice"))["pushes_since_sign_in"] == 2
        await dev.close()


async def next_challenge(dev: Device) -> Challenge:
    pushed = await dev.frame()
    while isinstance(pushed, Cancel):  # the one before, superseded
        pushed = await dev.frame()
    assert isinstance(pushed, Challenge), pushed
    return pushed


async def answer(dev: Device, decision: str, number: str = "") -> str:
    pushed = await next_challenge(dev)
    await dev.send(dev.answer(pushed, decision=decision, number=number))
    result = await dev.frame()
    assert isinstance(result, AnswerResult), result
    return result.outcome


def wrong(number: str) -> str:
    return ("1" if number[0] != "1" else "2") + number[1:]


async def test_nist_profile_locks_push_after_100_consecutive_wrong_numbers(
    node: BrokerProcess, redis_url: str
) -> None:
    rp = add_rp("Lock RP", redis_url=redis_url)
    # The profile keeps the push cap of 20 since the last sign-in; the rate is out of the way.
    nist = ("--profile", "nist-800-63b-4", "--max-pushes-per-minute", "10000")
    assert set_policy(rp["id"], *nist, redis_url=redis_url)["max_pushes"] == 20
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online_device(client, node.ws_url)
        # A successful sign-in resets the count; a deny is no failed attempt (no number typed).
        for _ in range(2):
            ch = await client.create_challenge("alice", CTX, digits=6)
            assert await answer(dev, "approve", wrong(ch.number)) == "number_mismatch"
        assert (await client.push_block("alice"))["consecutive_failures"] == 2
        ch = await client.create_challenge("alice", CTX, digits=6)
        assert await answer(dev, "approve", ch.number) == "approved"
        await client.create_challenge("alice", CTX, digits=6)
        assert await answer(dev, "deny") == "denied"
        state = await client.push_block("alice")
        assert (state["consecutive_failures"], state["failure_limit"], state["blocked"]) == (0, 100, False)
        # 100 wrong numbers in a row, each in a new challenge. The push cap blocks every 20
        # and the RP lifts it (the user signed in another way): neither a new challenge nor
        # that lift resets the count of consecutive wrong numbers.
        failures = 0
        while failures < 100:
            if (await client.push_block("alice"))["pushes_since_sign_in"] == 20:
                with pytest.raises(PushBlocked, match="since the last successful sign-in"):
                    await client.create_challenge("alice", CTX, digits=6)
                await client.lift_push_block("alice")
                assert (await client.push_block("alice"))["consecutive_failures"] == failures
            ch = await client.create_challenge("alice", CTX, digits=6)
            assert await answer(dev, "approve", wrong(ch.number)) == "number_mismatch"
            failures += 1
        state = await client.push_block("alice")
        assert (state["consecutive_failures"], state["blocked"]) == (100, True)
        with pytest.raises(PushBlocked) as refused:
            await client.create_challenge("alice", CTX, digits=6)
        assert "100 consecutive" in refused.value.detail and "wrong number" in refused.value.detail
        # Until the RP lifts it.
        await client.lift_push_block("alice")
        assert (await client.push_block("alice"))["consecutive_failures"] == 0
        ch = await client.create_challenge("alice", CTX, digits=6)
        assert await answer(dev, "approve", ch.number) == "approved"
        await dev.close()


async def test_the_wrong_number_that_reaches_the_limit_withdraws_the_other_prompts(
    node: BrokerProcess, redis_url: str
) -> None:
    rp = add_rp("Lock RP", redis_url=redis_url)
    set_policy(
        rp["id"],
        *("--profile", "nist-800-63b-4", "--max-pushes", "100", "--max-pushes-per-minute", "10000"),
        redis_url=redis_url,
    )
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online_device(client, node.ws_url)
        for _ in range(99):
            ch = await client.create_challenge("alice", CTX, digits=6)
            assert await answer(dev, "approve", wrong(ch.number)) == "number_mismatch"
        await client.lift_push_block("alice")  # the cap: 99 pushes; 99 failures stay
        assert (await client.push_block("alice"))["consecutive_failures"] == 99
        other = await client.create_challenge("alice", CTX, digits=6)
        last = await client.create_challenge("alice", CTX, digits=6, supersede=False)
        first, second = await dev.frame(), await dev.frame()
        assert isinstance(first, Challenge) and isinstance(second, Challenge)
        await dev.send(dev.answer(second, number=wrong(last.number)))
        got = {await dev.frame(), await dev.frame()}
        assert got == {
            Cancel(ch=other.id, reason="withdrawn"),
            AnswerResult(ch=last.id, outcome="number_mismatch"),
        }
        await dev.send(dev.answer(first, number=other.number))  # too late: no 101st attempt
        refused = await dev.frame()
        assert isinstance(refused, Error), refused
        assert (await client.get_result(other, {})).status.value == "withdrawn"
        await dev.close()


async def test_rp_remove_revokes_its_devices_and_ends_its_challenges(
    node: BrokerProcess, redis_url: str
) -> None:
    rp = add_rp("Leaving RP", redis_url=redis_url)
    stays = add_rp("Staying RP", redis_url=redis_url)
    store = redis.Redis.from_url(redis_url)
    async with (
        PushAuthClient(node.http_url, rp["api_key"]) as client,
        PushAuthClient(node.http_url, stays["api_key"]) as other,
    ):
        dev = await online_device(client, node.ws_url)
        bystander = await online_device(other, node.ws_url)
        ch = await client.create_challenge("alice", CTX)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge)
        fatigue = [keys.push_guard(rp["id"], "alice"), keys.recent_pushes(rp["id"], "alice")]
        kept = [keys.push_guard(stays["id"], "alice")]
        assert store.exists(*fatigue) == 2
        code, out, err = rp_cli("remove", rp["id"], redis_url=redis_url)
        assert code == 0, err
        assert out.strip() == f"removed {rp['id']}: 1 credential(s) revoked, 1 pending challenge(s) withdrawn"
        # Its users' push counts and rate window go with it (no expiry: they would stay).
        assert store.exists(*fatigue) == 0
        # The device is told at once, and the pending request is gone from it.
        assert await dev.frame() == Revoked(cid=dev.cid, reason="rp_removed", rid=None)
        assert await dev.frame() == Cancel(ch=ch.id, reason="revoked")
        # It cannot approve the pending challenge (the number is right) ...
        await dev.send(dev.answer(pushed, number=ch.number))
        refused = await dev.frame()
        assert isinstance(refused, Error) and refused.code == "credential_revoked"
        # ... nor authenticate again.
        again = await Device.connect(node.ws_url, seed=dev.seed)
        again.cid = dev.cid
        welcome, _ = await again.authenticate()
        assert welcome.rejected == ({"cid": dev.cid, "code": "credential_revoked"},)
        # Its API key stops working (within the key cache's 2 s); the other RP is untouched.
        async with aiohttp.ClientSession() as http:

            async def key_refused() -> bool:
                headers = {"Authorization": f"Bearer {rp['api_key']}"}
                async with http.get(node.http_url + "/v1/rp", headers=headers) as r:
                    return r.status == 401

            await until(key_refused, message="the removed RP's API key is refused")
        ch2 = await other.create_challenge("alice", CTX)
        assert isinstance(await bystander.frame(), Challenge)
        assert ch2.devices == 1
        assert store.exists(*kept) == 1  # the other RP's counts stay
        assert_cli_error(run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", redis_url]))
        for d in (dev, again, bystander):
            await d.close()
    store.close()


async def test_push_without_number_matching_needs_the_policy_and_any_signed_approval_approves(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """RP API 1.9: `"number_matching": false` (a RADIUS push-only gateway has no screen
    for a number) is refused unless the RP's policy allows it, and then the device is
    told `nm: false`, the RP gets no number, and any approval signed over the challenge
    is `approved`: the empty number a new device signs and whatever an older device's
    user typed (never "the number did not match", never a failed attempt). A challenge
    with number matching still refuses an approval without a number, and a wrong one."""
    node = broker_factory(redis_url=redis_server.url)
    rp = add_rp("Push-only RP", redis_url=redis_server.url)
    headers = {"Authorization": f"Bearer {rp['api_key']}"}

    async def create(http: aiohttp.ClientSession, **body: object) -> tuple[int, dict[str, object]]:
        async with http.post(
            node.http_url + "/v1/challenges", json={"user": "alice", "context": CTX, **body}, headers=headers
        ) as r:
            return r.status, await r.json(content_type=None)

    async with PushAuthClient(node.http_url, rp["api_key"]) as client, aiohttp.ClientSession() as http:
        dev = await online_device(client, node.ws_url)
        # Not allowed by the policy (the default), or not a boolean: a problem body, nothing stored.
        with pytest.raises(InvalidRequest) as refused:
            await client.create_challenge("alice", CTX, number_matching=False)
        assert refused.value.status == 400 and "'number_matching' false" in refused.value.detail
        assert "--allow-numberless-push" in refused.value.detail
        for bad in ("no", 0, None):
            status, problem = await create(http, number_matching=bad)
            assert (status, problem["code"]) == (400, "invalid_request"), problem
            assert "number_matching" in str(problem["detail"])
        assert (await client.push_block("alice"))["pushes_since_sign_in"] == 0

        assert set_policy(rp["id"], "--allow-numberless-push", redis_url=redis_server.url)[
            "allow_numberless_push"
        ]

        async def allowed() -> bool:  # each node applies a changed policy within 2 s
            return (await client.policy())["allow_numberless_push"] is True

        await until(allowed, message="the node applies allow_numberless_push")
        status, made = await create(http, number_matching=False)
        assert status == 201 and (made["number"], made["number_matching"]) == (None, False)
        pushed = await next_challenge(dev)  # the refused ones never reached it
        assert (pushed.ch, pushed.nm, pushed.number_matching) == (made["id"], False, False)
        # The empty number: approved, at the broker and by the SDK's own check.
        ch = await client.create_challenge("alice", CTX, number_matching=False)
        assert (ch.number, ch.number_matching) == ("", False)
        assert await answer(dev, "approve", "") == "approved"
        verified = await client.wait_result(ch, {dev.cid: signing.public_key(dev.seed)}, timeout=5)
        assert verified.approved
        # A device that ignores `nm` asks for a number: whatever was typed approves.
        ch = await client.create_challenge("alice", CTX, number_matching=False)
        assert await answer(dev, "approve", "17") == "approved"
        assert (await client.wait_result(ch, {dev.cid: signing.public_key(dev.seed)}, timeout=5)).approved
        state = await client.push_block("alice")
        assert (state["consecutive_failures"], state["pushes_since_sign_in"]) == (0, 0)
        # With number matching (the default, under the same policy): a wrong number is
        # still number_mismatch, and an approval without a number closes 4400.
        ch = await client.create_challenge("alice", CTX)
        assert ch.number_matching and len(ch.number) == 2
        assert await answer(dev, "approve", wrong(ch.number)) == "number_mismatch"
        assert (await client.push_block("alice"))["consecutive_failures"] == 1
        await client.create_challenge("alice", CTX)
        pushed = await next_challenge(dev)
        assert pushed.nm is None
        await dev.send(dev.answer(pushed, decision="approve", number=""))
        assert await dev.closed() == (4400, "invalid_field")
