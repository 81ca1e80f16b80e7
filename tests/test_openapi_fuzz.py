"""The OpenAPI document says exactly what the API accepts (issue 11, finding 8).

Schemathesis, run against the served document of a real broker (real Redis, a real
RP key, a real enrolled device so that ids lead somewhere), in its coverage, fuzzing
and stateful phases with every check: schema-valid requests are never refused,
schema-invalid ones always are, every status and body is documented, 405s name the
allowed methods. No failure, no warning (a "schema validation mismatch" among them),
no traceback or error in the broker's log. Bounded examples and a fixed seed keep it
deterministic and within about 30 s.

The pattern of text fields is derived from protocol/text.py; the last test checks it
against that rule for every code point.
"""

from __future__ import annotations

import asyncio
import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from support import BrokerProcess, RedisServer, add_rp, console_script, set_policy
from test_broker_device_ws import CTX, online_device

from broker.openapi_rules import b64url, safe_text_pattern
from protocol import b64, text
from relying_party.sdk import PushAuthClient

SCHEMATHESIS = console_script("schemathesis")
SEED = 20261204
MAX_EXAMPLES = 25
ERASABLE = "erin"  # the user eraseUser is offered (it has a device and a pending sign-in)
# Backup and recovery requests are rate-limited per address: off here, so the fuzzer
# reaches the logic behind the limit (tests/test_broker_http_guard.py tests the limit).
NO_LIMITS = [
    *("--backup-requests-per-ip", "0", "--backup-requests", "0"),
    *("--recovery-requests-per-ip", "0", "--recovery-requests", "0"),
]


def config(user: str, credential: str, challenge: str, enrollment: str) -> str:
    """Real ids offered to the fuzzer half of the time (the rest it makes up), and
    warnings fail the run. Long-polls are not waited for (wait=0): a pending
    enrollment would hold each request for up to 60 s."""
    return f"""
[warnings]
fail-on = true

# A refusal is any of the usual 4xx, and 413 for a body over the size limit (a backup
# larger than its maxLength is refused before it is read).
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[parameters]
"query.wait" = 0

[dictionaries.users]
values = ["{user}"]
[dictionaries.credentials]
values = ["{credential}"]
[dictionaries.challenges]
values = ["{challenge}"]
[dictionaries.enrollments]
values = ["{enrollment}"]
[dictionaries.erasable]
values = ["{ERASABLE}"]

[[operations]]
include-operation-id = "createChallenge"
parameters = {{ "body.user" = {{ dictionary = "users", probability = 0.5 }} }}

[[operations]]
include-operation-id = ["listCredentials", "getPushBlock", "liftPushBlock", "exportUser"]
parameters = {{ "path.user" = {{ dictionary = "users", probability = 0.5 }} }}
checks.use_after_free.enabled = false  # lifted, the push block reads as not blocked

# Another real user: an erasure of "{user}" would leave the other operations nothing
# but 404s.
[[operations]]
include-operation-id = "eraseUser"
parameters = {{ "path.user" = {{ dictionary = "erasable", probability = 0.5 }} }}
checks.use_after_free.enabled = false  # an erased user reads as one with nothing
# Not the users other responses named ("{user}" among them): see above.
phases.fuzzing.extra-data-sources.responses = false
phases.examples.extra-data-sources.responses = false

[[operations]]
include-operation-id = ["revokeCredential", "confirmCredential", "setRecoveryKey"]
parameters = {{ "path.id" = {{ dictionary = "credentials", probability = 0.5 }} }}

[[operations]]
include-operation-id = ["getChallenge", "cancelChallenge"]
parameters = {{ "path.id" = {{ dictionary = "challenges", probability = 0.5 }} }}
checks.use_after_free.enabled = false  # a cancelled challenge reads as cancelled

[[operations]]
include-operation-id = "getEnrollment"
parameters = {{ "path.id" = {{ dictionary = "enrollments", probability = 0.5 }} }}
checks.use_after_free.enabled = false  # a withdrawn enrollment reads as expired

[[operations]]
include-operation-id = "cancelEnrollment"
parameters = {{ "path.id" = {{ dictionary = "enrollments", probability = 0.5 }} }}
checks.use_after_free.enabled = false

"""


# A fixed amount of work (about 35 s on CI, 2 min on a machine loaded by other jobs):
# the run's own bound (wait_for, 300 s) applies, not the suite's 120 s per test.
@pytest.mark.timeout(330)
async def test_schemathesis_finds_nothing(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = broker_factory(redis_url=redis_server.url, node="fuzzed", extra_args=NO_LIMITS)
    rp = add_rp("Fuzzed RP", redis_url=redis_server.url)
    # Caps out of the way: pushes to the real user should reach the broker's logic; and
    # "number_matching": false allowed, so that a schema-valid create is never refused.
    set_policy(
        rp["id"],
        *("--max-pushes", "100", "--max-pushes-per-minute", "10000", "--allow-numberless-push"),
        redis_url=redis_server.url,
    )
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        challenge = await client.create_challenge("alice", CTX)
        enrollment = await client.create_enrollment("alice", "second device")
        erasable = await online_device(client, broker.ws_url, user=ERASABLE)
        await client.create_challenge(ERASABLE, CTX)
        await dev.close()
        await erasable.close()
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(config("alice", dev.cid, challenge.id, enrollment.id))
    argv = [
        *(str(SCHEMATHESIS), "--config-file", str(settings), "run", f"{broker.http_url}/v1/openapi.json"),
        *("--url", broker.http_url, "-H", f"Authorization: Bearer {rp['api_key']}"),
        *("--phases", "coverage,fuzzing,stateful"),  # every check: the default (configured above)
        *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"),
        *("--report", "ndjson", "--report-dir", str(tmp_path / "report")),
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    report = out.decode(errors="replace")
    (tmp_path / "schemathesis.log").write_text(report)  # kept with a failed test's logs
    assert proc.returncode == 0, report
    assert "No issues found" in report, report
    assert "validation mismatch" not in report.lower(), report
    assert "WARNINGS" not in report and "FAILURES" not in report and "ERRORS" not in report, report
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", report), f"phase {phase} did not pass\n{report}"
    log = broker.stderr()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_the_text_pattern_is_the_text_rule() -> None:
    """The text pattern refuses exactly the characters protocol.text refuses (lone surrogates
    aside: no JSON or URL can carry them), for every code point."""
    allowed = re.compile(safe_text_pattern())
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        assert bool(allowed.fullmatch(ch)) is not text.is_unsafe(ch), f"U+{cp:04X} {unicodedata.category(ch)}"


def test_b64url_lengths_are_exact() -> None:
    for nbytes in (32, 64):
        pattern = re.compile(b64url(nbytes)["pattern"])
        assert pattern.fullmatch(b64.encode(bytes(nbytes)))
        assert not pattern.fullmatch(b64.encode(bytes(nbytes - 1)))
        assert not pattern.fullmatch(b64.encode(bytes(nbytes + 1)))


def test_b64url_pattern_is_the_decoders_rule() -> None:
    """A value the pattern allows decodes, and one it refuses does not (or is another
    length): the last character's unused bits are zero (canonical base64url)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for nbytes in (16, 32, 64, 65):
        pattern = re.compile(b64url(nbytes)["pattern"])
        stem = b64.encode(bytes(range(nbytes)))[:-1]
        for last in alphabet:
            value = stem + last
            try:
                decoded: bytes | None = b64.decode(value)
            except ValueError:
                decoded = None
            assert bool(pattern.fullmatch(value)) is (decoded is not None and len(decoded) == nbytes), value
