"""Protocol errors: one type, stable string codes, and the WebSocket close codes.

The codes are part of the wire protocol (docs/protocol.md lists them): the broker
sends them in `error` frames and close reasons, the HTTP API in problem bodies, and
the CLIs map them to messages. Never rename a code; add new ones.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    # Frame structure: the peer sent something that is not a valid frame.
    MALFORMED = "malformed"  # not msgpack, not a map, trailing bytes
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_FRAME = "unknown_frame"  # not fatal since version 2: a newer peer's frame
    INVALID_FIELD = "invalid_field"  # missing, extra, wrong type or out of range
    UNEXPECTED_FRAME = "unexpected_frame"  # valid frame, wrong state or direction
    # Authentication.
    # Reserved, never sent by the broker: `authenticate` is answered with `welcome`
    # listing each refused credential, and the connection stays (it may enroll).
    AUTH_FAILED = "auth_failed"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_TIMEOUT = "auth_timeout"
    # Semantic rejections: the frame was well formed but is refused.
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_REVOKED = "credential_revoked"
    UNKNOWN_CHALLENGE = "unknown_challenge"
    CHALLENGE_EXPIRED = "challenge_expired"
    ALREADY_ANSWERED = "already_answered"
    CONTEXT_MISMATCH = "context_mismatch"
    BAD_TOKEN = "bad_token"  # enrollment token unknown, used or expired
    # Added within version 2: the user has as many devices at the RP as its policy allows
    # (`max_credentials`); the token is not used up, so it works once one is removed.
    TOO_MANY_CREDENTIALS = "too_many_credentials"
    UNKNOWN_NOTICE = "unknown_notice"  # no such open recovery notice for this credential
    RATE_LIMITED = "rate_limited"  # a device sent frames faster than the broker allows
    # Optional extensions (docs/protocol.md, appendix A).
    PUSH_UNAVAILABLE = "push_unavailable"  # this broker sends no Web Push
    PUSH_SERVICE_REFUSED = "push_service_refused"  # the endpoint is not on the broker's list
    INTERNAL = "internal"
    # Enrollment URIs and other local parsing.
    INVALID_URI = "invalid_uri"


# WebSocket close codes (RFC 6455 reserves 4000-4999 for applications). The close
# reason carries the ErrorCode string so a client can tell the cases apart.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_CODES: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED: 4400,
    ErrorCode.INVALID_FIELD: 4400,
    ErrorCode.UNEXPECTED_FRAME: 4400,
    ErrorCode.UNSUPPORTED_VERSION: 4406,
    ErrorCode.FRAME_TOO_LARGE: 4413,
    ErrorCode.AUTH_FAILED: 4401,
    ErrorCode.NOT_AUTHENTICATED: 4401,
    ErrorCode.AUTH_TIMEOUT: 4408,
    ErrorCode.RATE_LIMITED: 4429,
    ErrorCode.INTERNAL: 1011,
}


class ProtocolError(Exception):
    """A rejected frame or value. `code` is stable; `message` is for people."""

    def __init__(self, code: ErrorCode, message: str, *, ref: str | int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref

    @property
    def close_code(self) -> int:
        """The WebSocket close code for this error when it ends the connection."""
        return CLOSE_CODES.get(self.code, 4400)

    @property
    def fatal(self) -> bool:
        """Whether the connection must be closed (the peer broke the protocol)."""
        return self.code in CLOSE_CODES
