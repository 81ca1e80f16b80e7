"""The load tester's HTTP pool against a real aiohttp server that closes idle
keep-alive connections (as the broker does after its keep-alive timeout), and that
streams JSON lines in chunks (as the broker's one-request sign-in does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from support import serving, wait_until

from loadtest import http
from loadtest.http import HttpPool


@contextlib.asynccontextmanager
async def pool_to(app: web.Application, **runner_args: Any) -> AsyncIterator[HttpPool]:
    """`app` served on a free loopback port, and a load-tester pool to it."""
    async with serving(app, **runner_args) as url:
        pool = HttpPool(url, {})
        try:
            yield pool
        finally:
            pool.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    async with pool_to(app, keepalive_timeout=0.2) as pool:
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        (idle,) = pool._idle
        # The server's keep-alive timeout ends the idle connection.
        await asyncio.to_thread(wait_until, lambda: not idle.reusable, message="the server closing it")
        # Before the fix this request was written to the closed connection and waited forever.
        assert await asyncio.wait_for(pool.request("GET", "/"), 30) == (200, b'{"ok": true}')
        assert idle not in pool._all


async def test_a_streamed_answer_comes_line_by_line_and_the_connection_is_reused() -> None:
    go_on = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=201, headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"n": 1}\n')
        await go_on.wait()  # the second line only once the client read the first
        await response.write(b'{"n":')  # a line split over chunks, and a blank line
        await response.write_eof(b" 2}\n\n")
        return response

    app = web.Application()
    app.router.add_post("/", stream)
    async with pool_to(app) as pool:
        for _ in range(2):
            go_on.clear()
            got = await pool.stream("POST", "/", b"{}", "application/x-ndjson")
            assert (got.status, got.streamed) == (201, True)
            assert await asyncio.wait_for(got.next_line(), 30) == b'{"n": 1}'
            go_on.set()
            assert await asyncio.wait_for(got.next_line(), 30) == b'{"n": 2}'
            assert await asyncio.wait_for(got.next_line(), 30) is None
            await got.close()
            assert len(pool._all) == 1  # the same connection, back in the pool


async def test_a_connection_idle_past_the_limit_is_closed_by_the_pool_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server has not closed it (its keep-alive timeout is long), but it might be
    closing it just as a request goes out: the pool closes it itself and opens another."""
    peers: list[object] = []

    async def hello(request: web.Request) -> web.Response:
        peers.append(request.transport)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    async with pool_to(app, keepalive_timeout=600) as pool:
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert peers[0] is peers[1]  # within the limit: the same connection
        (idle,) = pool._idle
        monkeypatch.setattr(http, "IDLE_LIMIT_S", 0.0)  # every idle connection is now too old
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert peers[2] is not peers[1] and idle not in pool._all and not idle.reusable


async def test_connections_opened_ahead_are_used_while_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prewarmed connections carry the first requests (they were all thrown away, as if
    idle since the loop's clock began); one left unused too long is not (the broker
    closes a connection that sends no request within its head timeout)."""

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    async with pool_to(app) as pool:
        await pool.prewarm(2)
        warm = list(pool._idle)
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert set(pool._all) == set(warm)  # no connection opened on demand
        await pool.prewarm(3)
        (fresh,) = set(pool._all) - set(warm)
        monkeypatch.setattr(http, "FRESH_LIMIT_S", 0.0)  # the unused one is now too old
        pool._idle.remove(fresh)
        pool._idle.append(fresh)  # next in line
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        assert fresh not in pool._all
        assert set(warm) <= set(pool._all)  # the one that carried requests took it: 15 s for those


async def test_a_204_without_content_length_is_read_and_the_connection_reused() -> None:
    """The broker answers DELETE /v1/credentials/{id} with 204 and no Content-Length."""

    async def delete(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_delete("/x", delete)
    async with pool_to(app) as pool:
        assert await pool.request("DELETE", "/x") == (204, b"")
        assert await pool.request("DELETE", "/x") == (204, b"")
        assert len(pool._all) == 1
