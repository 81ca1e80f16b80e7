"""HAProxy's own answers (deploy/haproxy.cfg, run by a real HAProxy) are RFC 9457
problem documents, as every broker error is, with a code that says the load balancer
answered: 503 when no node is up (with Retry-After), 504 when a node stays silent on
a request that may not be sent again, 408 for a request whose body does not come
in time. They are whole HTTP messages in deploy/haproxy-errors/ (`errorfile`); the
other statuses it may answer (400, 500, 501, 502) are checked in the files. A
malformed request *head* is refused by HAProxy's HTTP/1 layer before any proxy's
rules: HAProxy 3.3 and later send the errorfile then too, 2.6 its built-in HTML
whatever the config says; docs/operations.md says so.

One real broker node (a) behind the shipped config; the other server (b) points at
a port nothing listens on, so it is down throughout.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import DEADLINE, LOCALHOST, BrokerProcess, RedisServer, free_port, new_rp
from support.haproxy import (
    ERROR_FILES,
    PRIVILEGED,
    SHIPPED,
    HAProxyProcess,
    frontends,
    haproxy_version,
    identity,
    serving_identity,
)

FRONTEND = "pushauth"
# Status -> the code the shipped config answers it with.
CODES = {
    400: "lb_bad_request",
    408: "lb_request_timeout",
    500: "lb_internal_error",
    501: "lb_not_implemented",
    502: "lb_bad_gateway",
    503: "lb_no_node_available",
    504: "lb_gateway_timeout",
}


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[tuple[HAProxyProcess, BrokerProcess]]:
    config = SHIPPED.read_text()
    with RedisServer(tmp_path / "redis") as redis:
        node = BrokerProcess(
            log_dir=tmp_path, redis_url=redis.url, node="a", extra_args=["--trusted-proxy", LOCALHOST]
        ).start()
        haproxy = HAProxyProcess(
            log_dir=tmp_path,
            config=config,
            binds={name: free_port() for name in frontends(config)},
            servers={"a": f"{LOCALHOST}:{node.port}", "b": f"{LOCALHOST}:{free_port()}"},
        )
        try:
            haproxy.start()
            haproxy.wait_status("api", "a", "UP")
            haproxy.wait_status("api", "b", "DOWN")
            yield haproxy, node
        finally:
            if node.running:
                node.kill(signal.SIGCONT)
            haproxy.cleanup()
            node.cleanup()


def test_every_error_haproxy_answers_itself_is_a_problem_document() -> None:
    """The shipped file answers each status HAProxy may make itself with a shipped
    errorfile: a whole HTTP message of that status, its body JSON whose status is that
    status and whose code is the load balancer's."""
    found: dict[int, dict[str, Any]] = {}
    for line in SHIPPED.read_text().splitlines():
        match = re.match(r"\s*errorfile (\d+) (\S+)$", line)
        if match:
            raw = (ERROR_FILES / Path(match[2]).name).read_bytes()
            found[int(match[1])] = _assert_raw_problem(raw, int(match[1]))
    assert {status: body["code"] for status, body in found.items()} == CODES
    for body in found.values():
        assert body["type"] == "about:blank" and body["title"] and body["detail"], body
    assert sorted(p.name for p in ERROR_FILES.glob("*.http")) == [f"{s}.http" for s in sorted(CODES)]


async def test_haproxy_s_own_errors_are_problem_documents(lb: tuple[HAProxyProcess, BrokerProcess]) -> None:
    haproxy, node = lb
    if PRIVILEGED:
        # The shipped file's user, group and chroot (kept when the tests run as root, as
        # here and in CI): what serves is not root.
        assert identity(haproxy.pid) == serving_identity()
    url = haproxy.url(FRONTEND)
    rp = await new_rp(node)
    auth = {"Authorization": f"Bearer {rp['api_key']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as http:
        # A node that hangs, its checks off so that HAProxy keeps it: a DELETE with
        # ?wait gets a 2 s server timeout and may not be sent again: 504.
        haproxy.command("disable health api/a")
        node.kill(signal.SIGSTOP)
        assert await _problem(http, "DELETE", f"{url}/v1/challenges/x?wait=0", auth) == 504
        # The checks back on take the hung node out.
        haproxy.command("enable health api/a")
        haproxy.wait_status("api", "a", "DOWN")
        # No node up.
        async with http.get(f"{url}/v1/rp", headers=auth) as response:
            await _assert_problem(response, 503)
            assert response.headers["Retry-After"] == "1"
    # A request whose body is not complete within `timeout http-request` (10 s),
    # refused by HAProxy itself (it reads the whole request before choosing a node).
    partial = b"POST /v1/challenges HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"
    _assert_raw_problem(_raw(haproxy, partial), 408)
    # A malformed head (a header line without a colon): HAProxy's HTTP/1 layer refuses it
    # before any proxy's rules, with the errorfile from 3.3 on (haproxy/haproxy#3032);
    # 2.6 sends its built-in HTML whatever the config says (docs/operations.md).
    malformed = _raw(haproxy, b"GET /v1/rp HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    if haproxy_version() >= (3, 3):
        _assert_raw_problem(malformed, 400)
    else:
        assert malformed.startswith(b"HTTP/1.1 400 ") and b"text/html" in malformed, malformed


async def _problem(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]) -> int:
    """The status of a problem document answered with the load balancer's code for it."""
    async with http.request(method, url, headers=headers) as response:
        await _assert_problem(response, response.status)
        return response.status


async def _assert_problem(response: aiohttp.ClientResponse, status: int) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json", await response.text()
    body = await response.json(content_type=None)
    assert body["status"] == status and body["code"] == CODES[status], body


def _raw(haproxy: HAProxyProcess, request: bytes) -> bytes:
    """What HAProxy answers to raw bytes, until it closes the connection."""
    with socket.create_connection((LOCALHOST, haproxy.binds[FRONTEND]), timeout=DEADLINE) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _assert_raw_problem(raw: bytes, status: int) -> dict[str, Any]:
    """A whole HTTP/1.1 problem response of `status` with the load balancer's code; its body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/problem+json", raw
    assert int(headers["content-length"]) == len(body), raw
    parsed = json.loads(body)
    assert parsed["status"] == status and parsed["code"] == CODES[status], parsed
    return parsed
