"""`pushauth-broker` as a person runs it: RP management, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

from support import BROKER, RedisServer, assert_cli_error, free_port, run_cli


def test_rp_add_list_remove(redis_server: RedisServer) -> None:
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


def test_unreachable_redis_is_an_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_cli_error(run_cli([BROKER, "rp", "list", "--redis-url", url]), contains="cannot reach Redis")
    assert_cli_error(
        run_cli([BROKER, "serve", "--port", "0", "--redis-url", url]), contains="cannot reach Redis"
    )


def test_bad_arguments_are_errors(redis_server: RedisServer) -> None:
    assert_cli_error(
        run_cli([BROKER, "serve", "--enrollment-ttl", "5", "--redis-url", redis_server.url]),
        contains="--enrollment-ttl",
    )
    assert_cli_error(run_cli([BROKER, "rp", "add", "   ", "--redis-url", redis_server.url]), contains="name")
    bad = run_cli([BROKER, "frobnicate"])
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_port_in_use_is_an_error(redis_server: RedisServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli([BROKER, "serve", "--port", str(port), "--redis-url", redis_server.url], timeout=30)
    assert_cli_error(result, contains="address")


def test_help_answers_real_questions() -> None:
    out = run_cli([BROKER, "--help"]).stdout
    for needle in ("--redis-url", "private redis-server", "rp add", "serve"):
        assert needle in out
    serve = run_cli([BROKER, "serve", "--help"]).stdout
    for needle in ("--public-url", "--data-dir", "--enrollment-ttl", "PUSHAUTH_REDIS_URL"):
        assert needle in serve
