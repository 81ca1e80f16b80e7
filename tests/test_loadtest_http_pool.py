"""The load tester's HTTP pool against a real aiohttp server that closes idle
keep-alive connections (as the broker does after its keep-alive timeout)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from support import free_port, wait_until

from loadtest.http import HttpPool


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, keepalive_timeout=0.2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pool = HttpPool(f"http://127.0.0.1:{port}", {})
    try:
        assert await pool.request("GET", "/") == (200, b'{"ok": true}')
        (idle,) = pool._idle
        # The server's keep-alive timeout ends the idle connection.
        await asyncio.to_thread(wait_until, lambda: not idle.reusable, message="the server closing it")
        # Before the fix this request was written to the closed connection and waited forever.
        assert await asyncio.wait_for(pool.request("GET", "/"), 30) == (200, b'{"ok": true}')
        assert idle not in pool._all
    finally:
        pool.close()
        await runner.cleanup()
