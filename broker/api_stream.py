"""The one-request sign-in: `POST /v1/challenges` answered as a stream (docs/http-api.md,
"One request: the streamed create").

An RP that sends `Accept: application/x-ndjson` gets, in one HTTP exchange, the
challenge (its number, at once) and then its result when it ends: two JSON lines of
a chunked 201 response. The lines are exactly the bodies of the two requests it
replaces, made by the same code (api.start_challenge, api.challenge_result), so
there is one place for validation, creation and the wait, and the SDK verifies the
second line as it verifies a long-poll's answer.

Why content negotiation on the existing path, not a new path or a query flag: a
broker that does not stream ignores the Accept header and answers the ordinary
201 JSON body, so the SDK falls back to the long-poll without creating a second
challenge, and tells the two apart by the response's Content-Type, never by a
guess. A new path would cost an older broker's RP a 404 and a second create.

What a stream cannot do is turn into an error once its first line is out: every
refusal (auth, body, policy, no devices) is an ordinary problem document, before the
201. After it, the challenge exists whatever happens to this response: a client that
goes away does not cancel it (it stays answerable and readable by long-poll), and a
result this node cannot read (Redis failing) ends the stream after the first line,
which tells the RP to read the result by long-poll.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from . import api, redis_refusals
from .context import ApiRequest
from .jsonio import json_response
from .models import RelyingParty
from .problems import ApiError

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def wants_stream(request: ApiRequest) -> bool:
    """True when the Accept header lists application/x-ndjson with a quality above 0.

    An RP that streams lists application/json too (at a lower quality), so an older
    broker, which looks at no Accept header, still answers it in JSON."""
    for item in request.headers.getall("Accept", ()):
        for media_range in item.split(","):
            kind, *params = media_range.split(";")
            if kind.strip().lower() != NDJSON:
                continue
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        return float(value) > 0
                    except ValueError:
                        return False
            return True
    return False


# The streamed response's headers. nginx buffers a proxied response unless told not
# to: the number must not wait.
STREAM_HEADERS = {"Content-Type": NDJSON, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class Lines(Protocol):
    """Where a streamed create's two lines go: an aiohttp response, or the RP lane's
    connection (broker/rp_lane.py). Both raise ConnectionError once the RP is gone."""

    async def first(self, line: bytes) -> None:
        """The 201's head and the first line (the number), sent now."""

    async def last(self, line: bytes) -> None:
        """The last line (may be empty) and the end of the stream, in one write."""


@dataclass(frozen=True, slots=True)
class Created:
    rp: RelyingParty
    body: dict[str, Any]  # the 201 body, and the stream's first line
    wait: float  # how long the result line may take
    streamed: bool  # whether the RP asked for the stream


async def created(request: ApiRequest) -> Created:
    """POST /v1/challenges up to its 201: authenticated, validated, created, pushed.
    Every refusal is an ApiError (a 4xx problem), raised before anything is sent."""
    rp = await api.authenticate(request)
    # How long the result line may take: the long-poll's `wait`, here defaulting to its
    # longest; the challenge's expiry bounds it too. Checked in both forms (the plain one
    # does not wait), so what the OpenAPI document refuses is refused.
    wait = api.wait_param(request, default=api.MAX_WAIT_S)
    body = await api.start_challenge(request, rp)
    return Created(rp, body, wait, wants_stream(request))


async def stream(request: ApiRequest, made: Created, lines: Lines) -> None:
    """The streamed form after the 201 is decided: the number now, the result when the
    challenge ends (or no second line, which sends the RP to the long-poll)."""
    ch = made.body["id"]
    try:
        await lines.first(_line(made.body))  # sent now: the page shows the number
    except ConnectionError:
        log.debug("stream of %s: the RP went away before the number", ch)
        return
    try:
        # Registered, read, awaited and expired exactly as a long-poll (hub.release_waiters
        # at shutdown ends it with the current state, as it does a long-poll).
        result = await api.challenge_result(request, made.rp, ch, made.wait)
    except (ApiError, RedisError, OSError) as exc:
        # The challenge stands; the RP reads its result by long-poll (no second line).
        if not redis_refusals.reported(exc, f"stream of {ch}"):
            log.warning("stream of %s ends without a result: %s", ch, exc)
        result = None
    try:
        await lines.last(_line(result) if result is not None else b"")
    except ConnectionError:
        # The RP gave up (its own timeout, a closed page): the challenge is unaffected.
        log.debug("stream of %s: the RP went away before the result", ch)


async def create_challenge(request: web.Request) -> web.StreamResponse:
    """POST /v1/challenges through aiohttp: one JSON body, or streamed, by the Accept header."""
    made = await created(request)
    if not made.streamed:
        return json_response(made.body, status=201)
    response = web.StreamResponse(status=201, headers=STREAM_HEADERS)
    response.enable_chunked_encoding()
    await stream(request, made, _ResponseLines(request, response))
    return response


class _ResponseLines:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request, self.response = request, response

    async def first(self, line: bytes) -> None:
        await self.response.prepare(self.request)
        await self.response.write(line)

    async def last(self, line: bytes) -> None:
        # The last line and the end of the stream in one write (one send, one read).
        await self.response.write_eof(line)


def _line(body: dict[str, object]) -> bytes:
    return orjson.dumps(body) + b"\n"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/challenges", create_challenge)
