"""The conformance runner (python -m protocol.conformance) against the real broker.

The runner is a second, independent client of the specification: an RP over HTTP and
devices over the WebSocket, with no code from broker/ or relying_party/. Here it runs
as a subprocess against a broker process on its own Redis, and every MUST of
docs/protocol.md it checks must pass. Its `--slow` checks (the broker's 30 s
authentication deadline) run against a broker started with a short `--auth-timeout`.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import BrokerProcess, RedisServer, allow_numberless_push, free_port, run_cli

LINE = re.compile(
    r"^(?P<id>[A-Z]+-\d+)\s+(?P<level>MUST|SHOULD)\s+(?P<status>pass|fail|skip)\s+(?P<text>.*)$"
)


def run_conformance(
    broker: BrokerProcess, api_key: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_cli(
        [
            sys.executable,
            "-m",
            "protocol.conformance",
            "--broker-url",
            broker.http_url,
            "--api-key",
            api_key,
            *extra,
        ],
        timeout=180,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = {}
    for line in result.stdout.splitlines():
        m = LINE.match(line)
        if m:
            lines[m["id"]] = m.groupdict()
    return result, lines


def test_every_must_passes_against_the_reference_broker(broker: BrokerProcess, rp: dict[str, Any]) -> None:
    asyncio.run(allow_numberless_push(broker, rp["id"]))  # so that CH-19 runs
    result, lines = run_conformance(broker, rp["api_key"])
    shown = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    failed = [line for line in lines.values() if line["status"] == "fail" and line["level"] == "MUST"]
    assert not failed, shown
    assert result.returncode == 0, shown
    # Every flow ran: versions, encoding, enrollment, sign-in, fraud, revocation, limits, expiry.
    for rid in (
        "VER-1",
        "VER-2",
        "ENC-3",
        "ENC-5",
        "ENC-6",
        "ENR-2",
        "ENR-3",
        "ENR-6",
        "CH-2",
        "CH-6",
        "CH-11",
        "CH-15",
        "CH-16",
        "CH-17",
        "CH-18",
        "CH-19",
        "PREC-1",
        "REV-3",
        "LIM-2",
        "LIM-4",
    ):
        assert lines.get(rid, {}).get("status") == "pass", f"{rid} did not pass\n{shown}"
    assert lines["LIM-3"]["status"] == "skip"  # needs --slow
    # RP API 1.11: the refused device's enrollment says so (`refused`).
    assert "its enrollment pending with refused" in lines["ENR-6"]["text"], shown


def test_the_authentication_deadline_with_slow(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = broker_factory(
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        node="slow",
        extra_args=["--auth-timeout", "2"],
    )
    result, lines = run_conformance(broker, broker.add_rp("Slow RP")["api_key"], "--slow")
    assert lines["LIM-3"]["status"] == "pass", f"{result.stdout}\n{result.stderr}"
    assert lines["CH-19"]["status"] == "skip"  # an RP whose policy does not allow numberless push


def test_a_wrong_api_key_is_a_clear_error(broker: BrokerProcess) -> None:
    result, lines = run_conformance(broker, "not-a-key")
    assert result.returncode == 2
    assert "API key" in result.stderr
    assert not lines
    for key in ("pak_one\nline", "two words", "pak_\u00e9"):
        result, lines = run_conformance(broker, key)
        assert result.returncode == 2 and not lines, result.stderr
        assert "--api-key must be one word of printable ASCII" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unreachable_broker_is_a_clear_error() -> None:
    result = run_cli(
        [
            sys.executable,
            "-m",
            "protocol.conformance",
            "--broker-url",
            f"http://127.0.0.1:{free_port()}",
            "--api-key",
            "k",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2
    assert "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr
