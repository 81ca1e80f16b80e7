"""The one-request sign-in of the SDK (PushAuthClient.sign_in): the challenge and its
result in one streamed HTTP response, and the long-poll when that cannot be had.

The wire (docs/http-api.md, "One request"): `POST /v1/challenges` with `Accept:
application/x-ndjson` is answered 201 with Content-Type application/x-ndjson, one JSON
object per line: first the challenge (the body of an ordinary create), then its
result (the body of `GET /v1/challenges/{id}`). Blank lines are reserved (say, for
keep-alives) and skipped. Nothing here decides anything: the first line is checked by
the same code as create_challenge's answer, the second verified by the same code as
a long-poll's (PushAuthClient.verified -> relying_party.verify).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from .errors import BadBrokerResponse
from .models import Challenge, SignInResult
from .verify import check_public_keys

if TYPE_CHECKING:
    from .sdk import PushAuthClient

NDJSON = "application/x-ndjson"
# JSON too, at a lower quality: a broker that does not stream answers as always, and
# the SDK carries on with the long-poll, without a second challenge.
STREAM_ACCEPT = f"{NDJSON}, application/json;q=0.5"


class StreamLines:
    """The lines of a streamed response, each at most `limit` bytes (a broker that lies
    must not make the RP buffer without end)."""

    def __init__(self, response: aiohttp.ClientResponse, limit: int) -> None:
        self._response = response
        self._limit = limit
        self._buf = bytearray()

    async def next(self) -> bytes | None:
        """The next non-blank line, or None when the stream ends first (a partial last
        line counts as cut short: None)."""
        while True:
            at = self._buf.find(b"\n")
            if at >= 0:
                line = bytes(self._buf[:at])
                del self._buf[: at + 1]
                if line.strip():
                    return line
                continue
            if len(self._buf) > self._limit:
                raise BadBrokerResponse(f"the broker's stream has a line over {self._limit} bytes")
            chunk = await self._response.content.readany()
            if not chunk:
                return None
            self._buf += chunk

    def close(self) -> None:
        """Give the connection back to the pool when the stream was read to its end,
        else close it (the broker is not told anything: the challenge goes on)."""
        if self._response.content.is_eof() and not self._buf:
            self._response.release()
        else:
            self._response.close()


def parse_line(line: bytes, what: str) -> Any:
    try:
        return json.loads(line)
    # RecursionError: arrays or objects nested past the parser's recursion limit (a
    # few KB of "[[[["), which escaped the SDK's own errors.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadBrokerResponse(f"{what}: a line of the broker's stream is not JSON") from None


class PendingSignIn:
    """A sign-in whose number is known (`challenge.number`: show it now) and whose
    result comes with `result()`. Close it (or use `async with`) if you give up
    before reading the result: the challenge itself is unaffected (cancel_challenge
    ends it)."""

    def __init__(self, client: PushAuthClient, challenge: Challenge, lines: StreamLines | None) -> None:
        self.challenge = challenge
        self._client = client
        self._lines = lines

    @property
    def streamed(self) -> bool:
        """Whether the broker answered in one request (False: the result is read by long-poll)."""
        return self._lines is not None

    async def result(self, public_keys: Mapping[str, bytes], timeout: float | None = None) -> SignInResult:
        """The verified result, as PushAuthClient.wait_result gives it (same arguments, same
        verification, same PENDING on `timeout`, and the same bound on it for a broker
        that hangs: BrokerUnavailable at most `answer_timeout` later): from the stream's
        second line, or by long-poll when the stream gives none (a broker that does not
        stream, a stream cut short, the broker's wait over while the challenge is still
        pending)."""
        check_public_keys(public_keys)  # a wrong argument fails now, not after the wait
        started = time.monotonic()
        lines, self._lines = self._lines, None  # the stream is read once
        if lines is not None:
            line = None
            # As long as one long-poll is held: a node that hangs holding the stream is
            # left then, and the long-polls below ask through the balancer.
            held = self._client.held_answer_s if timeout is None else min(timeout, self._client.held_answer_s)
            try:
                async with asyncio.timeout(held):
                    line = await lines.next()
            except (TimeoutError, aiohttp.ClientError, OSError):
                # The time above ran out (then the long-poll says how it stands), or the
                # stream was cut short (a node going away, a proxy): the long-poll goes on.
                pass
            finally:
                lines.close()
            if line is not None:
                result = await self._client.verified(
                    self.challenge, parse_line(line, "challenge result"), public_keys
                )
                if result.final:
                    return result
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        return await self._client.wait_result(self.challenge, public_keys, timeout=remaining)

    def close(self) -> None:
        lines, self._lines = self._lines, None
        if lines is not None:
            lines.close()

    async def __aenter__(self) -> PendingSignIn:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
