"""HTTP errors as RFC 9457 problem documents, and the middleware that ensures
every error leaves the broker as one (never an HTML page or a traceback)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from . import metrics, redis_refusals
from .api_error import ApiError
from .jsonio import json_response

log = logging.getLogger(__name__)

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "header_too_large",
    503: "unavailable",
}


PROBLEM_JSON = "application/problem+json"


def problem_document(
    status: int, code: str, detail: str, *, counted: bool = True, extra: dict[str, object] | None = None
) -> dict[str, object]:
    """The problem document of one refusal, counted in the metrics (the one place both
    aiohttp's responses and the RP lane's take it from) unless `counted` is False.
    `extra`: RFC 9457 extension members, for a client that acts on them."""
    if counted:
        metrics.rejected(status, code)
    doc: dict[str, object] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": code,
    }
    return {**(extra or {}), **doc}


def problem(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    counted: bool = True,
    extra: dict[str, object] | None = None,
) -> web.Response:
    return json_response(
        problem_document(status, code, detail, counted=counted, extra=extra),
        status=status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# status, code, detail, headers, extension members
Problem = tuple[int, str, str, dict[str, str] | None, dict[str, object] | None]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        parts = problem_for(exc, request.method, request.path, request.remote)
        if parts is None:
            raise
        status, code, detail, headers, extra = parts
        return problem(status, code, detail, headers, extra=extra)


def problem_for(exc: Exception, method: str, path: str, remote: str | None) -> Problem | None:
    """The problem response an exception out of a handler becomes (None: let it pass,
    a redirect). Logged here: client mistakes at debug level, bugs with a traceback."""
    if isinstance(exc, ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return exc.status, exc.code, exc.detail, headers, exc.extra
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = _CODES_BY_STATUS.get(exc.status, "http_error")
        # A 405 says which methods the resource has (RFC 9110: Allow is required).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return exc.status, code, exc.reason or _title(exc.status), allow, None
    if isinstance(exc, RedisError):
        # The store is unreachable (Redis down or failing over): nothing was done, and
        # the RP may try again, on this node or another.
        metrics.REDIS_ERRORS_API.inc()
        if not redis_refusals.reported(exc, f"{method} {path}"):
            log.warning("store unavailable in %s %s: %s", method, path, exc)
        detail = "the broker's store is unavailable; try again shortly"
        return 503, "unavailable", detail, {"Retry-After": "1"}, None
    if isinstance(exc, ConnectionError | RequestPayloadError):
        # The client went away mid-request (or sent a broken chunked body): its
        # behaviour, not our error. No traceback; the answer may not even arrive.
        log.debug("incomplete request %s %s from %s: %s", method, path, remote, exc)
        return 400, "incomplete_request", "the request body ended early or was malformed", None, None
    log.error("unhandled error in %s %s", method, path, exc_info=exc)
    return 500, "internal", "internal error; the broker logged it", None, None
