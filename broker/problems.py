"""HTTP errors as RFC 9457 problem documents, and the middleware that ensures
every error leaves the broker as one (never an HTML page or a traceback)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from . import metrics
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


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    title = _title(status)
    metrics.rejected(status, code)
    return json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code},
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else err.headers
        return problem(err.status, err.code, err.detail, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES_BY_STATUS.get(exc.status, "http_error")
        # A 405 says which methods the resource has (RFC 9110: Allow is required).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, code, exc.reason or _title(exc.status), allow)
    except RedisError as exc:
        # The store is unreachable (Redis down or failing over): nothing was done, and
        # the RP may try again, on this node or another.
        metrics.REDIS_ERRORS_API.inc()
        log.warning("store unavailable in %s %s: %s", request.method, request.path, exc)
        return problem(
            503, "unavailable", "the broker's store is unavailable; try again shortly", {"Retry-After": "1"}
        )
    except (ConnectionError, RequestPayloadError) as exc:
        # The client went away mid-request (or sent a broken chunked body): its
        # behaviour, not our error. No traceback; the answer may not even arrive.
        log.debug("incomplete request %s %s from %s: %s", request.method, request.path, request.remote, exc)
        return problem(400, "incomplete_request", "the request body ended early or was malformed")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(500, "internal", "internal error; the broker logged it")
