"""Errors the RP SDK raises: one base type, stable codes, nothing untyped.

Every error has a stable `code` (str): a BrokerError the broker's problem code
(`no_devices`, `push_blocked`, `rate_limited`, `unavailable`, ... or `http_<status>`
when the broker sent none), and for the others the type's own: `broker_unavailable`,
`bad_broker_response`, `verification_failed` (whose `reason` says which check failed).
So `except PushAuthError as exc: log(exc.code)` works for all of them.

`BrokerError` is the broker saying no (a problem+json body, docs/http-api.md);
`BrokerUnavailable` is the network failing or the broker unable to serve now (503,
`ServiceUnavailable`, which is both); `BadBrokerResponse` is a broker that
answered something the API does not allow; `VerificationFailed` is a result whose
signed answer does not hold up under the SDK's own end-to-end check. The last one
is the security signal: an RP should log it loudly, since an honest broker never
causes it.
"""

from __future__ import annotations

import enum
from typing import Any


class PushAuthError(Exception):
    """Base of every error the SDK raises; `code` is stable (see the module's doc)."""

    code: str = "pushauth_error"


class BrokerUnavailable(PushAuthError):
    """The broker could not be reached, did not answer in time, or answered 503 (it
    cannot reach its store): nothing was done; try again shortly."""

    code = "broker_unavailable"


class BadBrokerResponse(PushAuthError):
    """The broker answered, but not in the form docs/http-api.md describes."""

    code = "bad_broker_response"


class BrokerError(PushAuthError):
    """A refusal from the broker, carrying its problem+json body."""

    def __init__(
        self, status: int, code: str, detail: str, title: str = "", retry_after: int | None = None
    ) -> None:
        super().__init__(f"broker refused the request ({status} {code}): {detail or title}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        # Seconds from the Retry-After header (429, 503), when the broker sent a valid one:
        # "try again in N s" for the person, without parsing `detail`.
        self.retry_after = retry_after


class ServiceUnavailable(BrokerError, BrokerUnavailable):
    """503: the broker is up but cannot serve now (e.g. it cannot reach its Redis).
    Nothing was done; try again shortly. Caught by `except BrokerUnavailable` too."""


class InvalidRequest(BrokerError):
    """400/422: a field was missing, malformed or out of range."""


class Unauthorized(BrokerError):
    """401/403: the API key is missing, wrong or revoked."""


class NotFound(BrokerError):
    """404: no such object for this RP (other RPs' objects look the same).

    `credential_ids`: from a create aimed at credentials, those the broker says are not
    active credentials of the user (its problem's member of that name; empty when it
    named none)."""

    credential_ids: tuple[str, ...] = ()


class Conflict(BrokerError):
    """409: the request is valid but the state does not allow it."""


class NoDevices(Conflict):
    """409 no_devices: the user has no confirmed credential to push to (none at all, or
    only devices whose setup is unfinished: the detail says how many await
    confirm_credential)."""


class TooManyCredentials(Conflict):
    """409 too_many_credentials: the user has as many devices as the RP's policy allows
    (`max_credentials`, when the broker said it; GET /v1/rp/policy has it too). Nothing
    was made: the person removes a device (remove_credential) before adding another."""

    max_credentials: int | None = None


class RateLimited(BrokerError):
    """429: too many requests (or pushes for this user, or enrollments for this RP:
    `code` "too_many_enrollments" when its pending ones are at the policy's cap); try
    again after `retry_after` seconds."""


class PushBlocked(Conflict):
    """409 push_blocked: push is muted after a fraud report, or too many pushes were
    sent since the user's last successful sign-in (lift with `lift_push_block`)."""


_BY_CODE: dict[str, type[BrokerError]] = {
    "no_devices": NoDevices,
    "push_blocked": PushBlocked,
    "not_found": NotFound,
    "too_many_credentials": TooManyCredentials,
}
_BY_STATUS: dict[int, type[BrokerError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def broker_error(status: int, problem: Any, retry_after: str | None = None) -> BrokerError:
    """The typed error for an HTTP error status and its (possibly malformed) problem body
    (and its Retry-After header: delay-seconds only, anything else is ignored)."""
    body = problem if isinstance(problem, dict) else {}
    code = body.get("code")
    code = code if isinstance(code, str) and code else f"http_{status}"
    detail = body.get("detail")
    title = body.get("title")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, BrokerError)
    error = cls(
        status,
        code,
        detail if isinstance(detail, str) else "",
        title if isinstance(title, str) else "",
        _retry_after_s(retry_after),
    )
    named = body.get("credential_ids")
    if isinstance(error, NotFound) and isinstance(named, list) and all(isinstance(c, str) for c in named):
        error.credential_ids = tuple(named)
    limit = body.get("max_credentials")
    if isinstance(error, TooManyCredentials) and type(limit) is int and limit > 0:
        error.max_credentials = limit
    return error


def _retry_after_s(value: str | None) -> int | None:
    # An HTTP date form is allowed by RFC 9110, but the broker sends seconds; a bound
    # keeps a hostile header from telling a person to wait for years.
    if value is None or not value.strip().isascii() or not value.strip().isdigit():
        return None
    return min(int(value.strip()), 86_400)


class VerificationReason(enum.StrEnum):
    """Why a broker's result failed the SDK's end-to-end check."""

    WRONG_CHALLENGE = "wrong_challenge"  # the result is about another challenge
    MISSING_ANSWER = "missing_answer"  # a final answered status without a signed answer
    MALFORMED_ANSWER = "malformed_answer"  # fields missing, of the wrong type or shape
    UNKNOWN_CREDENTIAL = "unknown_credential"  # not one of the RP's stored keys for the user
    CONTEXT_MISMATCH = "context_mismatch"  # signed over another context than the RP sent
    BAD_SIGNATURE = "bad_signature"  # does not verify over the RP's own challenge values
    STATUS_MISMATCH = "status_mismatch"  # the signed answer leads to another outcome
    STALE_ANSWER = "stale_answer"  # signed outside the challenge's lifetime by the RP's clock
    BAD_BINDING = "bad_binding"  # an enrolled key the device did not bind to the RP's link
    KEY_MISMATCH = "key_mismatch"  # the broker lists another key than the RP stored
    BAD_RECOVERY = "bad_recovery"  # a recovered credential without valid proof from a stored recovery key
    RECOVERY_KEY_USED = "recovery_key_used"  # the recovery key was used already (it works once)
    BAD_ROTATION = "bad_rotation"  # a new recovery key not signed by the credential, or not newer


class VerificationFailed(PushAuthError):
    """The broker's result does not match a valid device signature: never an approval.
    `code` is "verification_failed"; `reason` (VerificationReason) says which check."""

    code = "verification_failed"

    def __init__(
        self,
        reason: VerificationReason,
        message: str,
        *,
        challenge_id: str = "",
        credential_id: str | None = None,
        broker_status: str | None = None,
    ) -> None:
        about = f"challenge {challenge_id}" if challenge_id else f"credential {credential_id}"
        super().__init__(f"{about}: {reason}: {message}")
        self.reason = reason
        self.challenge_id = challenge_id
        self.credential_id = credential_id
        self.broker_status = broker_status
