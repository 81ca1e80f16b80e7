"""Server-sent events: how the pages follow a push request or a setup live."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a buffering proxy would hold the events back
        }
    )
    await response.prepare(request)
    return response


def event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


async def send(response: web.StreamResponse, name: str, payload: dict[str, Any]) -> bool:
    """Write one event; False when the page is gone (closed or navigated away)."""
    try:
        await response.write(event(name, payload))
    except (ConnectionResetError, RuntimeError):
        return False
    return True
