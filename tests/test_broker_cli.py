"""`pushauth-broker` as a person runs it: RP management, and clear refusals."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from support import (
    BROKER,
    BrokerProcess,
    RedisServer,
    add_rp,
    assert_cli_error,
    free_port,
    run_cli,
    wait_until,
)

from broker import keys


def test_rp_add_list_remove(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.url
    added = run_cli([BROKER, "rp", "add", "Contoso Portal", "--redis-url", url])
    assert added.returncode == 0, added.stderr
    assert "API key: pak_" in added.stdout
    listed = json.loads(run_cli([BROKER, "rp", "list", "--json", "--redis-url", url]).stdout)
    [rp] = listed
    assert rp["name"] == "Contoso Portal"
    assert rp["id"] in added.stdout
    removed = run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", url])
    assert removed.returncode == 0
    assert json.loads(run_cli([BROKER, "rp", "list", "--json", "--redis-url", url]).stdout) == []
    # A --data-dir given with --redis-url is not where the state is: said, not ignored.
    both = run_cli([BROKER, "rp", "list", "--redis-url", url, f"--data-dir={tmp_path / 'unused'}"])
    assert both.returncode == 0 and "--data-dir is not used with --redis-url" in both.stderr
    assert not (tmp_path / "unused").exists()
    assert "--data-dir" not in run_cli([BROKER, "rp", "list", "--redis-url", url]).stderr
    # The key is stored only as a hash: it appears nowhere in Redis.
    key = added.stdout.split("API key: ")[1].split()[0]
    assert key.encode() not in b"".join(
        redis_server.client().dump(k) or b"" for k in redis_server.client().scan_iter()
    )


def test_rp_remove_unknown_is_an_error(redis_server: RedisServer) -> None:
    assert_cli_error(
        run_cli([BROKER, "rp", "remove", "nope", "--redis-url", redis_server.url]),
        contains="no relying party",
    )
    # An id that is not UTF-8 (bytes from the shell): the same words, not redis-py's
    # "'utf-8' codec can't encode character '\udcff'".
    for argv in (["remove", "rp_\udcff"], ["show", "rp_\udcff"], ["set", "rp_\udcff", "--ttl", "60"]):
        result = run_cli([BROKER, "rp", *argv, "--redis-url", redis_server.url])
        assert result.returncode == 2
        assert_cli_error(result, contains="no relying party with id 'rp_\\udcff'")


def test_unreachable_redis_is_an_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_cli_error(run_cli([BROKER, "rp", "list", "--redis-url", url]), contains="cannot reach Redis")
    assert_cli_error(
        run_cli([BROKER, "serve", "--port", "0", "--redis-url", url]), contains="cannot reach Redis"
    )


def test_a_refused_or_missing_redis_password_is_said_as_such(redis_server: RedisServer) -> None:
    """Both were "cannot reach Redis at ...", with redis-py's words about HELLO for a
    missing password: an operator looked for a network fault."""
    port = redis_server.port
    admin = redis.Redis(port=port)
    admin.config_set("requirepass", "s3cret")
    try:
        for command in (["rp", "list"], ["serve", "--port", "0"]):
            url = f"redis://:wrong@127.0.0.1:{port}/0"
            line = assert_cli_error(run_cli([BROKER, *command, "--redis-url", url]))
            assert line == (
                f"pushauth-broker: Redis at redis://:***@127.0.0.1:{port}/0 refused the user name or "
                "password given in --redis-url (invalid username-password pair or user is disabled.)"
            )
            url = f"redis://127.0.0.1:{port}/0"
            line = assert_cli_error(run_cli([BROKER, *command, "--redis-url", url]))
            assert line == (
                f"pushauth-broker: Redis at {url} needs a password: give it in --redis-url, as "
                "redis://:PASSWORD@HOST:PORT (or USER:PASSWORD@ with an ACL user)"
            )
        url = f"redis://:s3cret@127.0.0.1:{port}/0"
        assert run_cli([BROKER, "rp", "list", "--redis-url", url]).returncode == 0
    finally:
        redis.Redis(port=port, password="s3cret").config_set("requirepass", "")


def test_bad_arguments_are_errors(redis_server: RedisServer) -> None:
    assert_cli_error(
        run_cli([BROKER, "serve", "--enrollment-ttl", "5", "--redis-url", redis_server.url]),
        contains="--enrollment-ttl",
    )
    assert_cli_error(run_cli([BROKER, "rp", "add", "   ", "--redis-url", redis_server.url]), contains="name")
    bad = run_cli([BROKER, "frobnicate"])
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


# Bad input to `serve` and `rp`: each refused with one line naming the option and exit 2,
# never a traceback from inside a library, a broker serving on another port than asked,
# or links no device can use. (Three tests, not one: some 40 starts of the CLI took over
# pytest's 120 s on a loaded machine.)


def test_bad_redis_urls_are_refused_before_anything_starts() -> None:
    for url, why in (
        ("foo://x", "the scheme must be one of"),
        ("", "the scheme must be one of"),
        ("redis://[::1", "Invalid IPv6 URL"),
        ("redis://127.0.0.1:99999", "Port out of range"),
        ("redis://127.0.0.1:x/0", "Port could not be cast"),
        ("redis://127.0.0.1:1/abc", "the path must be a database number"),
        # Options redis-py takes from the query as they are: a traceback at the first
        # connection (an unknown name) or at the first reply (text instead of bytes).
        ("redis://127.0.0.1:1/0?foo=1", "unknown option 'foo' in the query"),
        ("unix:///run/redis.sock?db=1&sockettimeout=1", "unknown option 'sockettimeout'"),
        ("redis://127.0.0.1:1/0?decode_responses=yes", "the option 'decode_responses' is not supported"),
    ):
        for argv in (["rp", "list"], ["serve", "--port", "0"], ["serve", "--port", "0", "--workers", "2"]):
            result = run_cli([BROKER, *argv, "--redis-url", url])
            assert result.returncode == 2
            assert why in assert_cli_error(result, contains=f"bad --redis-url {url!r}")
        if url:  # PUSHAUTH_REDIS_URL set but empty means not set: the embedded Redis
            from_env = run_cli([BROKER, "rp", "list"], env={"PUSHAUTH_REDIS_URL": url})
            assert from_env.returncode == 2
            assert why in assert_cli_error(from_env, contains="bad --redis-url")


def test_bad_serve_values_are_refused_before_anything_starts(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    for flags, named in (
        (["--public-url", "notaurl"], "bad --public-url 'notaurl'"),
        (["--public-url", "ftp://push.example.com"], "bad --public-url"),
        # Links every device refuses (docs/protocol.md 2.1); loopback stays allowed.
        (["--public-url", "http://push.example.com"], "devices refuse a broker without TLS"),
        (["--public-url", "ws://10.0.0.5:8700"], "devices refuse a broker without TLS"),
        (["--public-url", "https://push.example.com/base?x=1#f"], "no user, ?query or #fragment"),
        (["--public-url", "https://[::1"], "bad --public-url"),
        (["--port", "70000"], "--port must be 0 to 65535"),
        (["--port", "-1"], "--port must be 0 to 65535"),
        (["--events-grace", "-5"], "--events-grace"),
        (["--events-grace", "nan"], "--events-grace"),
        (["--push-subject", "notamailto"], "bad --push-subject"),
        (["--push-service", "notorigin"], "bad --push-service"),
        (["--push-service", "https://fcm.googleapis.com/fcm/send"], "an https:// origin"),
        # Bytes that are not UTF-8 made every enrollment a 500; a space, links no device reads.
        (["--public-url", "https://push.\udcffexample.com"], "bad --public-url"),
        (["--public-url", "https://push example.com"], "(found U+0020 (SPACE))"),
        (["--push-subject", "mailto:ops\udcff@example.com"], "bad --push-subject"),
        (["--push-service", "http://[::1"], "bad --push-service 'http://[::1': not a URL"),
        (["--push-service", "https://fcm.googleapis.com:99999"], "not a URL"),
        # A name that is not UTF-8 (bytes from the shell) started a node that could write
        # nothing to Redis (/healthz 503 for good) and whose /metrics was a traceback.
        (["--node", "\udcff"], "--node '\\udcff' must not contain"),
        (["--node", "n 1"], "(found U+0020 (SPACE))"),
        (["--node", "n" * 129], "--node must be 1 to 128 characters"),
    ):
        result = run_cli([BROKER, "serve", *flags, *data])
        assert result.returncode == 2
        assert_cli_error(result, contains=named)
    # An infinite RATE was an OverflowError traceback (its default burst is 10 x RATE);
    # argparse's refusal: the usage, then the line that names the option.
    for flag, value in (
        ("--device-connects", "inf"),
        ("--device-connects-per-ip", "1e400"),
        ("--backup-requests", "1e308"),
    ):
        result = run_cli([BROKER, "serve", flag, value, *data])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"argument {flag}: expected RATE or RATE:BURST" in result.stderr.splitlines()[-1], (
            result.stderr
        )
    assert not (tmp_path / "data").exists(), "refused before the embedded Redis started"


def test_bad_addresses_files_and_folders_are_named(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    # A mistyped folder for the Web Push key is refused, not made, before anything starts.
    key = tmp_path / "no-such-folder" / "vapid.pem"
    assert_cli_error(
        run_cli([BROKER, "serve", "--port", "0", "--push-key", str(key), *data]),
        contains=f"the folder {key.parent} does not exist",
    )
    assert not key.parent.exists()
    assert not (tmp_path / "data").exists(), "refused before the embedded Redis started"
    # Not an address: said with the host, after the embedded Redis started (and stopped).
    assert_cli_error(
        run_cli([BROKER, "serve", "--host", "999.1.1.1", "--port", "0", *data]),
        contains="cannot listen on 999.1.1.1",
    )
    # Nor is a file that holds no P-256 key (a traceback from the VAPID library before).
    for name, content in (("junk.pem", b"not a pem\n"), ("rsa.pem", rsa_private_key_pem())):
        (tmp_path / name).write_bytes(content)
        line = assert_cli_error(
            run_cli([BROKER, "serve", "--port", "0", "--push-key", tmp_path / name, *data])
        )
        assert f"--push-key {tmp_path / name}: not a P-256 private key in PEM" in line
    assert_cli_error(
        run_cli(
            [BROKER, "serve", "--port", "0", "--metrics-port", "0", "--metrics-host", "bad..host", *data]
        ),
        contains="cannot listen on --metrics-host bad..host",
    )
    # A file given as the data directory: said so (it was mkdir's "File exists"), exit 2.
    (tmp_path / "a-file").write_text("")
    for argv in (["rp", "list"], ["serve", "--port", "0"]):
        result = run_cli([BROKER, *argv, "--data-dir", tmp_path / "a-file"])
        assert result.returncode == 2
        assert_cli_error(result, contains=f"--data-dir {tmp_path / 'a-file'} is not a directory")
    # A data directory that cannot be made: the message names it.
    for argv in (["rp", "list"], ["serve", "--port", "0"]):
        assert_cli_error(
            run_cli([BROKER, *argv, "--data-dir", "/proc/no-such-dir"]), contains="/proc/no-such-dir: "
        )


def rsa_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_a_redis_password_is_never_shown(redis_server: RedisServer) -> None:
    for url in (f"redis://:s3cret@127.0.0.1:{free_port()}/0", "redis+cluster://user:s3cret@127.0.0.1:1/x"):
        result = run_cli([BROKER, "rp", "list", "--redis-url", url])
        line = assert_cli_error(result)
        assert "s3cret" not in result.stderr + result.stdout and ":***@" in line, line


def test_a_store_of_an_unknown_layout_is_refused_and_left_alone(redis_server: RedisServer) -> None:
    """A newer broker's store (or something else's): never "migrated" over."""
    client = redis_server.client()
    for marker in (str(int(keys.LAYOUT_VERSION) + 1).encode(), b"garbage"):
        client.set("pa:layout", marker)
        for argv in (["rp", "list"], ["serve", "--port", "0"]):
            line = assert_cli_error(run_cli([BROKER, *argv, "--redis-url", redis_server.url]))
            assert "does not know" in line and "Nothing was changed" in line, line
        assert client.get("pa:layout") == marker


def test_a_redis_user_without_the_event_channels_is_refused(redis_server: RedisServer) -> None:
    """Redis 7 gives a new ACL user no channels: a node would start and answer /healthz,
    then 503 every challenge (its scripts publish). Refused before anything starts."""
    client = redis_server.client()
    client.acl_setuser("pushauth", enabled=True, passwords=["+s3cret"], keys=["pa:*"], commands=["+@all"])
    url = redis_server.url.replace("redis://", "redis://pushauth:s3cret@")
    for argv in (["rp", "list"], ["serve", "--port", "0"]):
        line = assert_cli_error(run_cli([BROKER, *argv, "--redis-url", url], timeout=30))
        assert "may not publish to the broker's event channels" in line and "&pa:*" in line, line
    client.execute_command("ACL", "SETUSER", "pushauth", "&pa:*")  # what the message says to give it
    assert run_cli([BROKER, "rp", "list", "--redis-url", url]).returncode == 0


def test_a_refused_event_subscription_is_one_line_at_once(redis_server: RedisServer) -> None:
    """A password for a Redis without one: redis-py takes it (the start check passes),
    the node's own subscription connection is refused. It said "pushauth-broker: " after
    10 s, exit 1; now the reason, at once, exit 2."""
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    result = run_cli([BROKER, "serve", "--port", "0", "--redis-url", url], timeout=30)
    assert result.returncode == 2, result
    line = assert_cli_error(result, contains="cannot subscribe to the event channel")
    assert "Redis refused AUTH" in line and "s3cret" not in line, line


def test_a_redis_that_evicts_keys_is_named_in_a_warning(redis_server: RedisServer) -> None:
    """A cache's maxmemory-policy drops credentials and API keys once Redis is full."""
    quiet = run_cli([BROKER, "rp", "list", "--redis-url", redis_server.url])
    assert quiet.returncode == 0 and "maxmemory-policy" not in quiet.stderr, quiet
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    warned = run_cli([BROKER, "rp", "list", "--redis-url", redis_server.url])
    assert warned.returncode == 0, warned
    assert "WARNING" in warned.stderr and "(maxmemory-policy allkeys-lru)" in warned.stderr, warned
    assert "set maxmemory-policy noeviction" in warned.stderr, warned


def test_an_rp_name_with_control_characters_is_refused(redis_server: RedisServer) -> None:
    for name, found in (
        ("Evil\x1b]0;pwned\x07Corp", "U+001B (ESC)"),
        ("Good\u202eliaP", "U+202E"),
        ("\u3164", "U+3164"),
    ):
        result = run_cli([BROKER, "rp", "add", name, "--redis-url", redis_server.url])
        assert result.returncode == 2
        assert found in assert_cli_error(
            result, contains="must not contain control, format or invisible characters"
        )
    assert json.loads(run_cli([BROKER, "rp", "list", "--json", "--redis-url", redis_server.url]).stdout) == []


def test_port_in_use_is_an_error(redis_server: RedisServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli([BROKER, "serve", "--port", str(port), "--redis-url", redis_server.url], timeout=30)
        metrics = run_cli(
            [BROKER, "serve", "--port", "0", "--metrics-port", str(port), "--redis-url", redis_server.url],
            timeout=30,
        )
    assert_cli_error(result, contains="address")
    # Which of the two listeners could not have its port: the port alone did not say.
    assert metrics.returncode == 1
    assert_cli_error(metrics, contains="metrics listener (--metrics-port): ")


def test_help_answers_real_questions() -> None:
    out = run_cli([BROKER, "--help"]).stdout
    for needle in ("--redis-url", "private redis-server", "rp add", "serve"):
        assert needle in out
    # An operator's "is it up?": where a node's state is, since no command shows it.
    for needle in ("/healthz", "--metrics-port", "docs/operations.md", "rotate their API"):
        assert needle in out
    serve = run_cli([BROKER, "serve", "--help"]).stdout
    for needle in ("--public-url", "--data-dir", "--enrollment-ttl", "PUSHAUTH_REDIS_URL"):
        assert needle in serve


def test_rotate_key_ends_the_old_key_now_or_after_keep_old(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    url = redis_server.url
    broker = broker_factory(redis_url=url)
    rp = add_rp("Rotating RP", redis_url=url)

    def works(key: str) -> int | None:
        request = urllib.request.Request(
            broker.http_url + "/v1/rp", headers={"Authorization": f"Bearer {key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def rotate(*flags: str) -> dict[str, Any]:
        result = run_cli([BROKER, "rp", "rotate-key", rp["id"], *flags, "--json", "--redis-url", url])
        assert result.returncode == 0, result.stderr
        new = json.loads(result.stdout)
        assert (new["id"], new["name"]) == (rp["id"], "Rotating RP") and new["api_key"] != rp["api_key"]
        return new

    assert works(rp["api_key"]) == 200
    # Routine: both keys work while the RP switches; the old one for --keep-old minutes.
    kept = rotate("--keep-old", "1")
    assert works(kept["api_key"]) == 200 and works(rp["api_key"]) == 200
    old_entry = f"pa:{{rp}}:rpkey:{hashlib.sha256(rp['api_key'].encode()).hexdigest()}"
    assert 0 < redis_server.client().pttl(old_entry) <= 60_000
    # `rp list` says that a previous key still works, and until when; `end-old-key` ends it.
    [listed] = json.loads(run_cli([BROKER, "rp", "list", "--json", "--redis-url", url]).stdout)
    ends = datetime.strptime(listed["previous_key_ends"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) < ends - datetime.now(UTC) <= timedelta(seconds=61)
    line = run_cli([BROKER, "rp", "list", "--redis-url", url]).stdout
    assert f"previous API key works until {listed['previous_key_ends']}" in line
    assert f"rp end-old-key {rp['id']}" in line
    ended = run_cli([BROKER, "rp", "end-old-key", rp["id"], "--redis-url", url])
    assert ended.returncode == 0 and "stops working" in ended.stdout, ended.stderr
    wait_until(lambda: works(rp["api_key"]) == 401, message="the ended key refused (after the 2 s cache)")
    assert works(kept["api_key"]) == 200  # the current key is not touched
    [listed] = json.loads(run_cli([BROKER, "rp", "list", "--json", "--redis-url", url]).stdout)
    assert listed["previous_key_ends"] is None
    again = run_cli([BROKER, "rp", "end-old-key", rp["id"], "--redis-url", url])
    assert again.returncode == 0 and "nothing to end" in again.stdout
    assert_cli_error(
        run_cli([BROKER, "rp", "end-old-key", "rp_nope", "--redis-url", url]), contains="no relying party"
    )
    # Leaked: the key it replaces ends at once, and so does one kept from before.
    now = rotate()
    wait_until(
        lambda: works(rp["api_key"]) == 401 and works(kept["api_key"]) == 401,
        message="the replaced keys refused on the node (after its 2 s cache)",
    )
    assert works(now["api_key"]) == 200
    # Removing the RP ends a key kept from a rotation too.
    last = rotate("--keep-old", "5")
    assert run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", url]).returncode == 0
    wait_until(lambda: works(now["api_key"]) == 401 and works(last["api_key"]) == 401, message="both refused")
    for argv, words in (
        (["rp_nope"], "no relying party"),
        ([rp["id"]], "no relying party"),
        (["rp_nope", "--keep-old", "-1"], "--keep-old must be 0 to 10080"),
    ):
        assert_cli_error(run_cli([BROKER, "rp", "rotate-key", *argv, "--redis-url", url]), contains=words)


def test_an_unreachable_sentinel_is_one_readable_line() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    line = assert_cli_error(
        run_cli([BROKER, "rp", "list", "--redis-url", url]), contains="cannot reach Redis"
    )
    assert "No master found for 'mymaster' (no Sentinel answered" in line
    assert len(line) < 200, line  # redis-py's message carries its client's whole repr
