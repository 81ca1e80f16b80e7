"""Async client of the broker's RP API (docs/http-api.md), on aiohttp.

    async with PushAuthClient("https://broker.example", api_key) as client:
        challenge = await client.create_challenge("alice", {"app": "Payroll", "ip": ip})
        show(challenge.number)
        # The keys that may answer it, from the RP's own store (relying_party.keys_for):
        result = await client.wait_result(challenge, keys_for(challenge, stored_credentials("alice")))
        if result.approved: ...

`wait_result` verifies the device's signed answer end to end (relying_party.verify):
the broker's word alone never approves a sign-in.

The same in one HTTP request, where the broker streams (docs/http-api.md, "One request";
the long-poll above when it does not):

    async with await client.sign_in("alice", {"app": "Payroll", "ip": ip}) as pending:
        show(pending.challenge.number)
        result = await pending.result(keys_for(pending.challenge, stored_credentials("alice")))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypeVar, cast, overload
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from protocol import uri as enrollment_uri
from protocol.challenge import MAX_TTL_S, MIN_TTL_S, Status
from protocol.errors import ProtocolError
from protocol.numbers import MAX_DIGITS, MIN_DIGITS
from protocol.uri import BINDING_SECRET_BYTES, TotpParams

from . import verify, wire
from .clocks import ClockWatch
from .errors import (
    BadBrokerResponse,
    BrokerError,
    BrokerUnavailable,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    broker_error,
)
from .models import (
    Challenge,
    Credential,
    CredentialSync,
    Enrollment,
    EnrollmentStatus,
    Health,
    Policy,
    PushBlock,
    RelyingParty,
    SignInResult,
)
from .one_request import NDJSON, STREAM_ACCEPT, PendingSignIn, StreamLines
from .one_request import parse_line as _parse_line

MAX_WAIT_S = 60  # the broker holds a long-poll at most this long (docs/http-api.md)
MAX_RESPONSE = 1 << 20  # a compromised broker must not make the RP buffer without end
# A pending result that came back before its wait was up means a broker that does not
# hold long-polls; pause this long before asking again instead of spinning.
EARLY_RETURN_PAUSE_S = 0.25
# A long-poll that failed (503, a broken connection) is asked again after the 503's
# Retry-After (else 1 s), at most this.
UNAVAILABLE_PAUSE_MAX_S = 5.0
# A live broker answers a create, or a long-poll once its wait is up, in milliseconds;
# a node that hangs (SIGSTOP, a stalled host) holding the request never does. After this
# long without an answer a create is sent again (with the same Idempotency-Key: a broker
# that got the first answers with the challenge it made), and a long-poll is asked again.
ANSWER_TIMEOUT_S = 3.0
# One long-poll (or the wait for a stream's result line) holds at most this long, so that
# a node that hangs holding it is noticed after LONG_POLL_S + answer_timeout and the SDK
# asks again, through the balancer; a sign-in pending longer costs a read every 10 s.
LONG_POLL_S = 10
# A create that failed fast (connection refused or reset) is sent again after this,
# doubling up to 1 s, while the request timeout lasts.
RESEND_PAUSE_S = 0.25
# The RP API version from which a broker answers a create sent again with the same
# Idempotency-Key with the challenge the first made (docs/http-api.md): from it on, a
# create with supersede=False can be sent again without leaving two prompts.
KEYED_CREATES_SINCE = (1, 2)
_API_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.\d{1,4})?")

T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _segment(value: str) -> str:
    """One URL path segment, percent-encoded; '.' and '..' too, so they cannot climb the path."""
    text = quote(value, safe="")
    return text.replace(".", "%2E") if set(value) == {"."} else text


def _user_segment(user: str) -> str:
    """A user id as a path segment. An empty one is refused here as the broker refuses
    it in a body (400 invalid_request): in a path the broker could only answer 404, no
    such route, which reads as "no such user" (docs/http-api.md: 1..128 characters)."""
    if not user:
        raise InvalidRequest(400, "invalid_request", "'user' must be a string of 1 to 128 characters")
    return _segment(user)


class PushAuthClient:
    """Client of one broker for one RP (one API key)."""

    def __init__(
        self,
        broker_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 10.0,
        answer_timeout: float = ANSWER_TIMEOUT_S,
    ) -> None:
        """`request_timeout`: how long a request may take in all (beyond a long-poll's
        wait), a create with the times it is sent again. `answer_timeout`: how long one
        create, or one long-poll past its wait, may go unanswered before it is sent
        again (a node that hangs holding it; see create_challenge); at most
        `request_timeout`."""
        if not answer_timeout > 0:  # also refuses nan
            raise ValueError("answer_timeout must be more than 0 seconds")
        parts = urlsplit(broker_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"broker URL must be http:// or https://, got {broker_url!r}")
        if not api_key or any(c.isspace() for c in api_key):
            raise ValueError("the API key is empty or contains whitespace")
        self.broker_url = broker_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._session = session
        self._owns_session = session is None
        self._session_loop: asyncio.AbstractEventLoop | None = None  # where an owned session was opened
        self._request_timeout = request_timeout
        self._answer_timeout = min(answer_timeout, request_timeout)
        self._rp: RelyingParty | None = None
        self.creates_sent_again = 0  # creates sent again after no answer (see create_challenge)
        # Whether the broker's creates are keyed (KEYED_CREATES_SINCE): read from its
        # OpenAPI document before the first create that does not supersede.
        self._keyed_creates: bool | None = None
        # How long one held request (a long-poll past its wait, a stream's result line)
        # may go unanswered before the SDK asks again (relying_party/one_request.py).
        self.held_answer_s = LONG_POLL_S + self._answer_timeout
        # This server's clock against the broker's, measured on each create and logged
        # (logger "pushauth.sdk") when seconds apart: `clock.offset_ms`, the broker's
        # minus this one's, None before the first create (relying_party/clocks.py).
        self.clock = ClockWatch(self.broker_url, verify.MAX_CLOCK_SKEW_MS)

    async def __aenter__(self) -> PushAuthClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it (never one passed in)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the RP API ------------------------------------------------------------

    async def rp(self) -> RelyingParty:
        """This RP's id and name (cached: the id is part of every signed answer)."""
        if self._rp is None:
            self._rp = RelyingParty.from_json(wire.obj(await self._call("GET", "/v1/rp"), "rp"))
        return self._rp

    async def health(self) -> Health:
        """The broker's health (see Health); `ok` is False when it answers 503 (e.g. Redis
        unreachable). BrokerUnavailable when it cannot be reached at all."""
        status, body = await self._request("GET", "/healthz", expect=(200, 503))
        fields = wire.obj(body, "health")
        if status == 503:
            # A problem body: its code says what is down, its detail why.
            code, detail = fields.get("code"), fields.get("detail")
            return Health(
                ok=False,
                status=code if isinstance(code, str) else "unavailable",
                node=None,
                redis=detail if isinstance(detail, str) else None,
            )
        return Health(
            ok=True,
            status=wire.get(fields, "status", str, "health"),
            node=wire.get_optional(fields, "node", str, "health"),
            redis=wire.get_optional(fields, "redis", str, "health"),
        )

    async def create_enrollment(
        self,
        user: str,
        account: str,
        *,
        totp: TotpParams | None = None,
        recoverable: bool = False,
    ) -> Enrollment:
        """Start an enrollment; `uri` is the full pushauth://enroll URI for the QR code.

        `totp` (see relying_party.totp.new_totp) is added to the URI here, by the RP:
        the broker never sees TOTP secrets. So is a fresh link secret (`es`), with which
        `wait_enrollment` checks that the key the broker reports is the device's own:
        keep the returned Enrollment (`to_json()`, server-side: it holds both secrets)
        until then. The enrollment wait_enrollment returns carries the same `totp`:
        store it with that credential once completed (that device's verification
        codes; relying_party.totp.check_code checks one).

        Raises TooManyCredentials when the user has as many devices as the RP's policy
        allows (nothing is made: one must be removed first), RateLimited over the RP's
        enrollment quota.
        """
        body = await self._call(
            "POST",
            "/v1/enrollments",
            body={"user": user, "account": account, "recoverable": recoverable},
            expect=(201,),
        )
        enrollment = Enrollment.from_json(wire.obj(body, "enrollment"))
        if enrollment.uri is None:
            raise BadBrokerResponse("enrollment: the broker returned no enrollment URI")
        try:
            parsed = enrollment_uri.parse(enrollment.uri)
        except ProtocolError as exc:
            raise BadBrokerResponse(f"enrollment: {exc.message}") from None
        rp = await self.rp()
        if parsed.rp != rp.id or parsed.token != enrollment.token:
            raise BadBrokerResponse("enrollment: the link names another RP or token than the broker's answer")
        secret = secrets.token_bytes(BINDING_SECRET_BYTES)
        # What the link says beyond the broker's address and token is the RP's to say:
        # its own recoverable choice and TOTP (or none), whatever the broker wrote.
        parsed = replace(parsed, recoverable=recoverable, totp=totp, binding_secret=secret)
        return replace(
            enrollment, uri=parsed.build(), totp=totp, binding_secret=secret, recoverable=recoverable
        )

    async def get_enrollment(self, enrollment: Enrollment, *, wait: int = 0) -> Enrollment:
        """One read of an enrollment, held up to `wait` seconds while it is pending.

        `enrollment` is what create_enrollment returned (or Enrollment.from_stored of
        it): a completed enrollment's credential is returned only once its binding to
        that link verified; otherwise VerificationFailed (BAD_BINDING) is raised.
        """
        if not isinstance(enrollment, Enrollment):
            raise TypeError(
                "pass the Enrollment that create_enrollment returned (it holds the link's secret)"
            )
        path = f"/v1/enrollments/{_segment(enrollment.id)}"
        got = Enrollment.from_json(wire.obj(await self._call("GET", path, wait=wait), "enrollment"))
        if got.id != enrollment.id or got.user != enrollment.user:
            raise BadBrokerResponse("enrollment: the broker answered about another enrollment or user")
        # The RP's own values (its link secret, token and policy), never the broker's.
        got = replace(
            got,
            binding_secret=enrollment.binding_secret,
            token=enrollment.token,
            uri=enrollment.uri,
            recoverable=enrollment.recoverable,
            totp=enrollment.totp,
        )
        if got.credential is not None:
            if got.credential.user != enrollment.user:
                raise BadBrokerResponse("enrollment: the credential belongs to another user")
            verify.verify_binding(got, got.credential, rp_id=(await self.rp()).id)
        return got

    async def wait_enrollment(self, enrollment: Enrollment, timeout: float) -> Enrollment:
        """Long-poll until the enrollment is completed or expired, a device that used its
        link is refused, or `timeout` seconds pass.

        Returns the enrollment in whatever state it reached: check `.completed` (then
        store `.credential`, whose key and recovery key were checked against the
        link's secret, and with it `.totp`, the TOTP parameters the RP provisioned in
        create_enrollment, or None), or `.status` for EXPIRED / PENDING. A PENDING one
        with `.refused` set returns as soon as the broker reports a refusal other than
        the one `enrollment` carries (RP API 1.11): a device was refused because the
        user has `.refused.max_credentials` devices; tell the person to remove one, and
        keep the link shown (it still works). To go on waiting, pass the returned
        enrollment, so the same refusal does not return again. PENDING without a new
        refusal: timed out.
        Raises VerificationFailed (BAD_BINDING) for a key the device did not bind to the
        link.
        """
        known = enrollment.refused if isinstance(enrollment, Enrollment) else None  # else TypeError below
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            wait = min(MAX_WAIT_S, math.floor(max(0.0, deadline - time.monotonic())))
            started = time.monotonic()
            enrollment = await self.get_enrollment(enrollment, wait=wait)
            if enrollment.status is not EnrollmentStatus.PENDING:
                return enrollment
            if enrollment.refused is not None and enrollment.refused != known:
                return enrollment
            if _now_ms() >= enrollment.expires_at:
                return replace(enrollment, status=EnrollmentStatus.EXPIRED)
            if time.monotonic() >= deadline:
                return enrollment
            await self._pause_if_early(started, wait, deadline)

    async def cancel_enrollment(self, enrollment: Enrollment | str) -> None:
        """Withdraw a pending enrollment: a device that uses its link afterwards is
        refused by the broker ("already used or has expired"), and the enrollment reads
        as EXPIRED. For "cancel" on the setup page, and before a user's newer setup: the
        broker withdraws nothing by itself, so an older link works until it expires
        unless the RP calls this for it.

        Harmless when it had ended before (completed, expired, withdrawn); a completed
        one keeps its credential: read it with get_enrollment, and revoke_credential it
        if the setup is to be undone. NotFound for an id the broker does not know (or
        another RP's); a broker older than RP API 1.3 has no such call (PushAuthError)."""
        eid = enrollment.id if isinstance(enrollment, Enrollment) else enrollment
        await self._call("DELETE", f"/v1/enrollments/{_segment(eid)}", expect=(204,))

    async def create_challenge(
        self,
        user: str,
        context: Mapping[str, str] | None = None,
        ttl: int | None = None,
        digits: int | None = None,
        *,
        supersede: bool = True,
        credential_id: str | None = None,
        credential_ids: Sequence[str] | None = None,
        number_matching: bool = True,
    ) -> Challenge:
        """Push a sign-in challenge to the user's devices; show `.number` to the user.

        Raises NoDevices when the user has no confirmed credential (NotFound for a
        `credential_id` or any of `credential_ids` that is not an active credential of
        the user: its `credential_ids` names them, and nothing was sent).

        One live prompt per user: the broker ends the user's older pending challenges
        (they become SUPERSEDED, and the devices drop them), which is what "send
        again" needs. `supersede=False` keeps them (parallel sign-ins on purpose).
        `credential_id` sends it to that credential only, confirmed or not: the test
        push of a device being set up (then `confirm_credential`). `credential_ids`
        (RP API 1.8; a list of 1 to 32 ids, each once, not with `credential_id`) sends it
        to those credentials only, confirmed or not: e.g. the user's confirmed ones but
        a device whose removal the broker has not confirmed, which then is not asked.
        Only the credentials it was aimed at can answer it: wait_result refuses an
        answer from any other as UNKNOWN_CREDENTIAL, whatever keys it is given (a
        broker that delivered it elsewhere all the same). An empty list is refused
        (InvalidRequest), never taken for "every device"; an older broker refuses the
        field (InvalidRequest: unknown fields).

        `ttl` (seconds, 10..600) and `digits` (2..8) default to None: not sent, so the
        RP's policy at the broker decides (its `ttl` and `digits`, set by the broker's
        operator with `pushauth-broker rp set`; see `policy`). A value named here is
        sent, and refused by the broker outside the policy's bounds (InvalidRequest:
        fewer digits than its min_digits, a ttl above its max_ttl).

        The SDK makes the challenge's `rp_nonce` and sets its lifetime by its own clock:
        the returned `created_at` is the RP's clock when the create was built, and
        `expires_at` that plus the `ttl` named here or, when none was named, plus the
        lifetime the broker answered (its `expires_at - created_at`), which must be
        10..600 s (BadBrokerResponse otherwise; docs/protocol.md section 13).
        wait_result accepts only an answer signed over that `rp_nonce` within that
        window. The broker's `digits` must be the number named here, or 2..8 when none
        was (BadBrokerResponse otherwise): name `digits` to pin a minimum yourself, so
        that not even the broker's word on the policy can weaken number matching.

        A create that gets no answer within `answer_timeout`, or whose connection breaks
        before an answer (a node that hangs or dies holding it), is sent again while
        `request_timeout` lasts: through a load balancer it reaches a live node. That is
        safe: every attempt carries one Idempotency-Key, so a broker that got an earlier
        one answers with the challenge that one made (RP API 1.2); an older broker makes
        a second, which supersedes the first (the RP never saw its number) and counts
        one more push against the user's limits. With `supersede=False` an older
        broker would leave two prompts: before the first such create the SDK reads the
        broker's API version (GET /v1/openapi.json, once per client) and sends a create
        with `supersede=False` again only to a broker of RP API 1.2 or later; to an
        older one (or when the version cannot be read) it is sent once, with all of
        `request_timeout`.

        `number_matching=False` (RP API 1.9) makes a challenge with no number, for a client
        that has no screen to show one on (a RADIUS push-only gateway): `.number` is "",
        the device asks approve / deny / report only, and any approval signed over this
        challenge approves. It proves less (docs/protocol.md section 18.7), so the broker
        allows it only where the RP's policy says `allow_numberless_push` (InvalidRequest
        otherwise; never under the NIST profile). The broker's answer must say the
        number matching asked for, either way (BadBrokerResponse otherwise): a broker
        cannot turn it off for a challenge made with it.
        """
        asked = _Asked.new(
            user,
            context,
            ttl,
            digits,
            supersede=supersede,
            targets=_targets(credential_id, credential_ids),
            number_matching=number_matching,
        )

        async def attempt(seconds: float) -> Challenge:
            body = await self._call(
                "POST",
                "/v1/challenges",
                body=asked.request,
                expect=(201,),
                timeout=seconds,
                headers=asked.headers,
            )
            return asked.check(body, self.clock)

        deadline = time.monotonic() + self._request_timeout
        return await self._sent_until_answered(attempt, deadline, resend=await self._may_resend(supersede))

    async def sign_in(
        self,
        user: str,
        context: Mapping[str, str] | None = None,
        ttl: int | None = None,
        digits: int | None = None,
        *,
        supersede: bool = True,
        credential_id: str | None = None,
        credential_ids: Sequence[str] | None = None,
        number_matching: bool = True,
    ) -> PendingSignIn:
        """create_challenge and wait_result in one HTTP request, where the broker streams.

            async with await client.sign_in("alice", {"app": "Payroll"}) as pending:
                show(pending.challenge.number)          # at once
                result = await pending.result(keys_for(pending.challenge, stored_credentials("alice")))

        The broker answers `Accept: application/x-ndjson` with the challenge (the
        number) at once and its result when it ends, in one response (docs/http-api.md,
        "One request"). `pending.result` verifies that result exactly as wait_result
        does, and reads it by long-poll instead whenever the one request cannot give
        it: a broker that does not stream (it answers plain JSON: told by the
        Content-Type), a stream cut short, or a wait that ran out. Arguments (`ttl` and
        `digits` None: the RP's policy at the broker), checks and errors are
        create_challenge's (`credential_id`, `credential_ids` too). `pending.result`
        takes the keys wait_result takes: for an ordinary sign-in those of the user's
        confirmed credentials (the RP's own record), for a setup test push
        (`credential_id`) that new credential's key alone, for one aimed at
        `credential_ids` theirs (`keys_for` picks them).
        """
        asked = _Asked.new(
            user,
            context,
            ttl,
            digits,
            supersede=supersede,
            targets=_targets(credential_id, credential_ids),
            number_matching=number_matching,
        )
        # The broker holds the result at most this long (the challenge's expiry bounds it too,
        # which is all that bounds it when the policy's ttl applies).
        wait = MAX_WAIT_S if ttl is None else min(MAX_WAIT_S, ttl)
        url = URL(f"{self.broker_url}/v1/challenges?wait={wait}", encoded=True)
        headers = {**self._headers, **asked.headers, "Accept": STREAM_ACCEPT}
        timeout = aiohttp.ClientTimeout(total=self._request_timeout + wait)

        async def attempt(seconds: float) -> PendingSignIn:
            return await self._sign_in_once(asked, url, headers, timeout, seconds)

        # Sent again as create_challenge is, up to the number (never after it).
        deadline = time.monotonic() + self._request_timeout
        return await self._sent_until_answered(attempt, deadline, resend=await self._may_resend(supersede))

    async def _sign_in_once(
        self, asked: _Asked, url: URL, headers: dict[str, str], timeout: aiohttp.ClientTimeout, seconds: float
    ) -> PendingSignIn:
        """One streamed create: the number within `seconds`; `timeout` (with the wait)
        bounds the whole response."""
        session = self._http()
        response: aiohttp.ClientResponse | None = None
        lines: StreamLines | None = None
        try:
            with self._network_errors(seconds):
                async with asyncio.timeout(seconds):
                    response = await session.post(url, json=asked.request, headers=headers, timeout=timeout)
                    if response.status == 201 and response.content_type == NDJSON:
                        lines = StreamLines(response, MAX_RESPONSE)
                        first = await lines.next()
                    else:
                        status, retry_after = response.status, response.headers.get("Retry-After")
                        raw = await _read_capped(response)
                if lines is None:
                    # An error, or a broker that does not stream: an ordinary body.
                    assert response is not None
                    response.release()
                    body = _decoded("POST", "/v1/challenges", status, raw, retry_after, (201,))
                    return PendingSignIn(self, asked.check(body, self.clock), None)
            if first is None:
                raise BadBrokerResponse("challenge: the stream ended before the challenge")
            challenge = asked.check(_parse_line(first, "challenge"), self.clock)
        except BaseException:
            if response is not None:
                response.close()
            raise
        return PendingSignIn(self, challenge, lines)

    async def get_result(
        self,
        challenge: Challenge,
        public_keys: Mapping[str, bytes],
        *,
        wait: int = 0,
    ) -> SignInResult:
        """One verified read of a challenge's result, held up to `wait` seconds while pending."""
        return await self._read_result(challenge, public_keys, wait=wait, timeout=None)

    async def _read_result(
        self, challenge: Challenge, public_keys: Mapping[str, bytes], *, wait: int, timeout: float | None
    ) -> SignInResult:
        """get_result, with `timeout` seconds beyond the wait (None: _request's default)."""
        path = f"/v1/challenges/{_segment(challenge.id)}"
        body = await self._call("GET", path, wait=wait, timeout=timeout)
        return await self.verified(challenge, body, public_keys)

    async def verified(
        self, challenge: Challenge, body: Any, public_keys: Mapping[str, bytes]
    ) -> SignInResult:
        """The SDK's verdict on one result body of the broker (a long-poll's answer or the
        one request's second line): relying_party.verify, the one place it is decided."""
        rp = await self.rp()
        return verify.evaluate(
            challenge,
            wire.obj(body, "challenge result"),
            rp_id=rp.id,
            public_keys=public_keys,
            now_ms=_now_ms(),
        )

    async def wait_result(
        self,
        challenge: Challenge,
        public_keys: Mapping[str, bytes],
        timeout: float | None = None,
    ) -> SignInResult:
        """Long-poll until the challenge ends, and verify the answer end to end.

        `public_keys` maps credential id -> public key, from the RP's own store, and
        only this user's credentials: a key of another user in it would let that
        user's device approve this sign-in if a compromised broker routed it there.
        Which of them (`relying_party.keys_for(challenge, stored)` picks them from the
        RP's stored Credentials):

        - an ordinary sign-in: the keys of the user's **confirmed** credentials (the
          RP's own `confirmed`: an approved test push, then confirm_credential; or a
          recovery sync_credentials accepted), e.g. `{c.id: c.public_key for c in
          stored if c.confirmed}`. A device whose setup is unfinished approves nothing.
        - a device's setup test push (create_challenge with `credential_id`): that new
          credential's key alone, `{cred.id: cred.public_key}`, so that only the device
          being set up can pass it (an answer from any other credential is refused as
          UNKNOWN_CREDENTIAL whatever keys are passed: the challenge's `credential_id`
          names the one that may answer it).
        - a sign-in aimed at `credential_ids`: their keys (an answer from a credential
          outside them is refused as UNKNOWN_CREDENTIAL, whatever keys are passed).

        The result is APPROVED only if a stored key signed an approval of this very
        challenge (RP id, challenge id, nonce, context) with the number the RP
        showed; a broker claiming anything else raises VerificationFailed. With a
        `timeout`, a still-pending challenge comes back as PENDING; without one, the
        wait ends at the challenge's expiry at the latest (status EXPIRED). A 503 (the
        broker cannot read the state now), a broken connection or a request that timed
        out is asked again (after the 503's Retry-After, else 1 s) while the wait may
        go on, and raised (BrokerUnavailable) after that. A broker that hangs (accepts
        the connection, never answers) is told from a slow one only by time: each read
        waits `answer_timeout` (3 s) beyond its long-poll, so BrokerUnavailable may come
        up to that long after `timeout` (or the expiry). A page that must answer within
        N s passes `timeout=N - answer_timeout`.
        """
        verify.check_public_keys(public_keys)  # a wrong argument fails now, not after the wait
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            until_expiry = max(0, math.ceil((challenge.expires_at - _now_ms()) / 1000))
            wait = min(LONG_POLL_S, until_expiry)
            if deadline is not None:
                wait = min(wait, math.floor(max(0.0, deadline - time.monotonic())))
            started = time.monotonic()
            try:
                # Every read gets the answer timeout beyond its wait, a read with no wait
                # (the last moment of `timeout`, a challenge at its expiry) too: a live
                # broker answers it in milliseconds, and with the request timeout (10 s by
                # default) a hung one held the page that long past its `timeout`.
                result = await self._read_result(
                    challenge, public_keys, wait=wait, timeout=self._answer_timeout
                )
            except BrokerUnavailable as exc:
                # The broker (or the node the balancer chose) cannot read the state now
                # (503: its Redis gone, its event channel lost), or the connection broke
                # or timed out (a node that died or hung holding the long-poll). Reading
                # is safe to repeat: ask again, there or on another node, while the wait
                # may go on.
                # Both bounds read now: the failed request may have taken its whole wait.
                left = (challenge.expires_at - _now_ms()) / 1000
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                if left <= 0:
                    raise
                pause = exc.retry_after if isinstance(exc, ServiceUnavailable) else None
                await asyncio.sleep(min(pause or 1, UNAVAILABLE_PAUSE_MAX_S, left))
                continue
            if result.final or (deadline is not None and time.monotonic() >= deadline):
                return result
            await self._pause_if_early(started, wait, deadline)

    async def cancel_challenge(self, challenge: Challenge) -> bool:
        """End a pending challenge: its devices drop the prompt at once and it can no
        longer be answered (its result becomes CANCELLED). For "cancel" on the sign-in
        page, and when the user signs in another way (a verification code).

        Returns True if the challenge is cancelled, by this call or by an earlier one
        (a second call, or a retry, returns True again and changes nothing); False if
        it had ended another way before (answered, expired, superseded, withdrawn):
        then get_result says how, verified as always."""
        body = await self._call("DELETE", f"/v1/challenges/{_segment(challenge.id)}")
        fields = wire.obj(body, "challenge result")
        if wire.get(fields, "id", str, "challenge result") != challenge.id:
            raise BadBrokerResponse("cancel: the broker answered about another challenge")
        return wire.get(fields, "status", str, "challenge result") == Status.CANCELLED.value

    @overload
    async def confirm_credential(self, credential: Credential) -> Credential: ...
    @overload
    async def confirm_credential(self, credential: str) -> None: ...
    async def confirm_credential(self, credential: Credential | str) -> Credential | None:
        """Finish a device's setup: from now on the credential gets the user's ordinary
        sign-in requests. Call it after its test push (create_challenge with
        `credential_id`) came back approved from wait_result, verified with that
        credential's key alone. Until then it gets only challenges aimed at it, so a
        setup left unfinished cannot approve sign-ins. Confirming twice is harmless.

        Given the Credential (as wait_enrollment returned it, `confirmed` False), it
        returns the copy to store, with `confirmed` True: that flag in the RP's store is
        the RP's own record (sync_credentials never changes it), and its keys are the
        ones ordinary sign-ins verify with (see wait_result). Given an id, None.

        NotFound for an id the broker does not know (or another RP's); Conflict with
        `code` "credential_revoked" for a credential revoked meanwhile (by the device,
        or the RP): then the setup is over, start a new one."""
        cid = credential.id if isinstance(credential, Credential) else credential
        await self._call("POST", f"/v1/credentials/{_segment(cid)}/confirm", expect=(204,))
        return replace(credential, confirmed=True) if isinstance(credential, Credential) else None

    async def list_credentials(self, user: str) -> list[Credential]:
        """The broker's list of `user`'s active credentials, unchecked: its word on keys,
        `confirmed` and `last_used_at`. Check it with sync_credentials before storing."""
        body = wire.obj(
            await self._call("GET", f"/v1/users/{_user_segment(user)}/credentials"), "credentials"
        )
        items = body.get("credentials")
        if not isinstance(items, list):
            raise BadBrokerResponse("credentials: field 'credentials' missing or not a list")
        return [Credential.from_json(wire.obj(item, "credential")) for item in items]

    async def sync_credentials(self, user: str, stored: Mapping[str, Credential]) -> CredentialSync:
        """Check the broker's list of `user`'s credentials against the RP's own store.

        `stored` maps credential id -> the Credential the RP keeps for this user (from
        wait_enrollment, or `current` of an earlier sync). The result's `current` is
        what to store now (`apply_to`, or write `to_json()`), and `keys_for(challenge)`
        what to verify a result with (get_result, wait_result): recovered credentials
        only when their recovery proof verifies with the recovery key in `stored`
        (which is then spent: a recovery key works once), new recovery keys only when
        signed by the stored credential.
        Refusals are in `refused` (VerificationFailed, never raised: the rest of the
        list still counts); show them as a security event. Call it when an answer
        comes from a credential the RP does not hold and when showing the user's
        devices, so that a recovery and rotations are seen promptly.

        For the credentials it keeps, `current` takes the broker's later `last_used_at`
        (`last_used`; for display). Their `confirmed` stays what the RP stored, its own
        record of an approved test push (confirm_credential returns the copy to
        store): the broker's word must not make an unfinished setup's key count.
        `unconfirmed_at_broker` names those the RP holds as confirmed and the broker
        does not (they get no ordinary sign-ins: confirm them again). Recoveries in
        `added` are confirmed by their proof; copy the TOTP secret and last used step
        of the device each came from (`recovered_from`) to it: the restored app shows
        that device's codes.
        """
        listed = await self.list_credentials(user)
        if any(cred.user != user for cred in listed):
            raise BadBrokerResponse("credentials: the broker listed a credential of another user")
        return verify.reconcile(listed, stored, (await self.rp()).id)

    async def revoke_credential(self, credential_id: str) -> None:
        """Revoke a credential at once (the device, if online, is told immediately).

        Delete it from the RP's own store too: a recovery from a credential the RP no
        longer holds is refused by sync_credentials.

        NotFound when the broker holds no active credential of this RP with that id:
        revoked before (an earlier call, also one retried after its answer was lost;
        the device itself; a "No, not me"), or unknown. It is gone either way: delete
        it from the store all the same (the demo RP: relying_party.web.credentials.revoke).
        BrokerUnavailable when the broker cannot be asked (nothing changed: try again)."""
        await self._call("DELETE", f"/v1/credentials/{_segment(credential_id)}", expect=(204,))

    async def push_block(self, user: str) -> PushBlock:
        """The user's push fatigue state (see PushBlock and docs/http-api.md, "Push fatigue
        protection"): e.g. `muted_until` for "push is paused until ..." after PushBlocked.
        The broker's JSON object as it sent it (not checked field by field: it decides
        nothing here)."""
        body = wire.obj(await self._call("GET", f"/v1/users/{_user_segment(user)}/push-block"), "push block")
        return cast(PushBlock, body)

    async def policy(self) -> Policy:
        """This RP's push policy as the broker enforces it (see Policy and
        docs/http-api.md, "Policy"): set by the broker's operator, read-only here. As the
        broker sent it, like push_block."""
        return cast(Policy, wire.obj(await self._call("GET", "/v1/rp/policy"), "policy"))

    async def lift_push_block(self, user: str) -> None:
        """Lift a fraud mute and reset the count of pushes since the last sign-in and
        the pushes of the last minute (RateLimited ends too); a lock after too many
        wrong numbers is lifted, a count below the limit stays (docs/http-api.md,
        "Push fatigue protection")."""
        await self._call("DELETE", f"/v1/users/{_user_segment(user)}/push-block", expect=(204,))

    async def user_data(self, user: str) -> Mapping[str, Any]:
        """Everything the broker holds about `user` at this RP, for the right of access
        (docs/http-api.md, "A user's data"): active and revoked credentials, enrollments,
        challenges (context and answers), recovery notices, Web Push endpoints and the
        push fatigue state. The broker's JSON object as it sent it (shown, not trusted)."""
        return wire.obj(await self._call("GET", f"/v1/users/{_user_segment(user)}/data"), "user data")

    async def erase_user(self, user: str) -> None:
        """Erase everything the broker holds about `user` at this RP (the right to
        erasure; docs/http-api.md): pending setups are withdrawn, every credential is
        revoked (an online device is told at once), pending sign-ins end withdrawn, then
        the user's credentials, challenges, enrollments, recovery notices, push fatigue
        state and Web Push subscriptions are deleted. Idempotent: call it again after
        BrokerUnavailable (an interrupted erasure is finished by the next call). Erase
        the RP's own records of the user (stored credentials, TOTP secrets) too."""
        await self._call("DELETE", f"/v1/users/{_user_segment(user)}", expect=(204,))

    # -- HTTP ------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        """The HTTP session, opened on first use in the running event loop, where alone it
        works (until close(): the next call opens a new one in its own loop). A call from
        another loop is a programming error, said as such here rather than as aiohttp's
        "Event loop is closed", or a hang (README, "The SDK is asyncio")."""
        loop = asyncio.get_running_loop()
        if self._session is not None and self._owns_session and self._session_loop is not loop:
            raise RuntimeError(
                "this PushAuthClient's HTTP session was opened in another event loop"
                + (
                    " (closed now)"
                    if self._session_loop is not None and self._session_loop.is_closed()
                    else ""
                )
                + ": hand every call to that one loop (asyncio.run_coroutine_threadsafe), "
                "or close the client (await client.close()) before the loop ends"
            )
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._session_loop = loop
        return self._session

    async def _pause_if_early(self, started: float, wait: int, deadline: float | None) -> None:
        now = time.monotonic()
        if now - started < wait or wait == 0:
            pause = EARLY_RETURN_PAUSE_S if deadline is None else min(EARLY_RETURN_PAUSE_S, deadline - now)
            await asyncio.sleep(max(0.0, pause))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        wait: int | None = None,
        expect: tuple[int, ...] = (200,),
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent = await self._request(
            method, path, body=body, wait=wait, expect=expect, timeout=timeout, headers=headers
        )
        return sent[1]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        wait: int | None = None,
        expect: tuple[int, ...] = (200,),
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON or None) or raise a typed error.
        `timeout`: seconds beyond the wait (default: the request timeout; a long-poll's
        is the answer timeout, since a live broker answers it when its wait is up)."""
        session = self._http()
        query = f"?wait={wait}" if wait else ""
        # encoded=True: the path segments are already quoted, and must stay so.
        url = URL(f"{self.broker_url}{path}{query}", encoded=True)
        if timeout is None:
            timeout = self._answer_timeout if wait else self._request_timeout
        limit = aiohttp.ClientTimeout(total=timeout + (wait or 0))
        with self._network_errors(limit.total):
            async with session.request(
                method, url, json=body, headers={**self._headers, **(headers or {})}, timeout=limit
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await _read_capped(response)
        return status, _decoded(method, path, status, raw, retry_after, expect)

    async def _may_resend(self, supersede: bool) -> bool:
        """Whether a create may be sent again (see create_challenge): always when it
        supersedes; else only to a broker whose creates are keyed (KEYED_CREATES_SINCE),
        which the SDK reads from its OpenAPI document once, with the answer timeout (so
        a node that hangs holding the read costs the first such create that much)."""
        if supersede:
            return True
        if self._keyed_creates is None:
            try:
                document = await self._call("GET", "/v1/openapi.json", timeout=self._answer_timeout)
            except (NotFound, BadBrokerResponse):
                document = None  # a broker without the document predates keyed creates
            except (BrokerUnavailable, BrokerError):
                # No answer, or one about this moment (429, 503, ...): not learned. This
                # create is sent once; the next one asks again.
                return False
            self._keyed_creates = (_api_version(document) or (0, 0)) >= KEYED_CREATES_SINCE
        return self._keyed_creates

    async def _sent_until_answered(
        self, attempt: Callable[[float], Awaitable[T]], deadline: float, *, resend: bool
    ) -> T:
        """`attempt(seconds)` (a create), sent again after no answer or a broken
        connection (BrokerUnavailable, not a 503: that node answered, having done
        nothing, and a balancer sends that on itself) until `deadline`."""
        if not resend:
            # At least one answer timeout, should reading the API version have taken it all.
            return await attempt(max(self._answer_timeout, deadline - time.monotonic()))
        pause = RESEND_PAUSE_S
        tries = 0
        while True:
            began = time.monotonic()
            tries += 1
            try:
                return await attempt(min(self._answer_timeout, max(0.0, deadline - began)))
            except ServiceUnavailable:
                raise
            except BrokerUnavailable as exc:
                now = time.monotonic()
                if now - began < self._answer_timeout and now < deadline:  # refused at once: not so fast
                    await asyncio.sleep(min(pause, deadline - now))
                    pause = min(pause * 2, 1.0)
                if time.monotonic() >= deadline:
                    # The last try's words alone ("no answer within 2 s" of a 5 s request
                    # timeout; a refusal that took 5 s) misread the wait: say it was tried
                    # again until the request timeout (the deadline).
                    within = f"the {self._request_timeout:g} s request timeout"
                    raise BrokerUnavailable(f"{exc} (the last of {tries} tries in {within})") from None
                self.creates_sent_again += 1

    @contextlib.contextmanager
    def _network_errors(self, seconds: float | None) -> Iterator[None]:
        """Timeouts and broken connections as BrokerUnavailable."""
        try:
            yield
        except TimeoutError:
            raise BrokerUnavailable(
                f"cannot reach the pushauth broker at {self.broker_url}: no answer within {seconds:.3g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise BrokerUnavailable(f"cannot reach the pushauth broker at {self.broker_url}: {why}") from None


def _api_version(document: Any) -> tuple[int, int] | None:
    """(major, minor) of an OpenAPI document's info.version, if it has one."""
    info = document.get("info") if isinstance(document, dict) else None
    version = info.get("version") if isinstance(info, dict) else None
    match = _API_VERSION.fullmatch(version) if isinstance(version, str) else None
    return (int(match[1]), int(match[2])) if match else None


def _decoded(
    method: str, path: str, status: int, raw: bytes, retry_after: str | None, expect: tuple[int, ...]
) -> Any:
    """A response's JSON body, or the typed error its status and problem body mean."""
    parsed = _parse_json(raw) if raw else None
    if status not in expect:
        if 400 <= status < 600:
            raise broker_error(status, parsed, retry_after)
        raise BadBrokerResponse(f"{method} {path}: unexpected HTTP status {status}")
    if raw and parsed is None:
        raise BadBrokerResponse(f"{method} {path}: the response is not JSON")
    return parsed


def _targets(credential_id: str | None, credential_ids: Sequence[str] | None) -> tuple[str, ...] | None:
    """The credentials a create aims at (None: the user's confirmed ones). A caller's
    mistake of type is raised here: a string passed as `credential_ids` would read as
    its characters. Values (an empty list, an id twice, too many) are the broker's to
    refuse (InvalidRequest); an empty list is sent as one, never dropped into "all"."""
    if credential_ids is None:
        return None if credential_id is None else (credential_id,)
    if credential_id is not None:
        raise ValueError("name credential_id or credential_ids, not both")
    if isinstance(credential_ids, str | bytes) or not all(isinstance(c, str) for c in credential_ids):
        raise TypeError(
            "credential_ids must be a list of credential ids (str), e.g. [cred.id for cred in ...]"
        )
    return tuple(credential_ids)


@dataclass(frozen=True, slots=True)
class _Asked:
    """What the RP asks for in POST /v1/challenges, and the check of what the broker made."""

    request: dict[str, Any]
    user: str
    context: dict[str, str]
    ttl: int | None  # None: not sent, the RP's policy at the broker decides
    digits: int | None
    rp_nonce: bytes
    # The credentials it is aimed at (credential_id's one, or credential_ids), None: all.
    targets: tuple[str, ...] | None
    issued: int
    # Sent with every attempt of this create: a broker that got an earlier one answers
    # with the challenge that one made (docs/http-api.md, Idempotency-Key).
    headers: dict[str, str]
    number_matching: bool = True  # False: sent as "number_matching": false (RP API 1.9)

    @classmethod
    def new(
        cls,
        user: str,
        context: Mapping[str, str] | None,
        ttl: int | None,
        digits: int | None,
        *,
        supersede: bool,
        targets: tuple[str, ...] | None,
        number_matching: bool = True,
    ) -> _Asked:
        ctx = dict(context or {})
        rp_nonce = secrets.token_bytes(32)
        request: dict[str, Any] = {"user": user, "context": ctx, "rp_nonce": wire.b64encode(rp_nonce)}
        # Named only when the RP names them: else the RP's policy at the broker decides.
        if ttl is not None:
            request["ttl"] = ttl
        if digits is not None:
            request["digits"] = digits
        # Sent only when not the default, so plain calls work with older brokers too.
        if not supersede:
            request["supersede"] = False
        # One target goes as credential_id, which every broker knows; several need 1.8.
        if targets is not None and len(targets) == 1:
            request["credential_id"] = targets[0]
        elif targets is not None:
            request["credential_ids"] = list(targets)
        if not number_matching:
            request["number_matching"] = False
        headers = {"Idempotency-Key": secrets.token_urlsafe(16)}
        return cls(request, user, ctx, ttl, digits, rp_nonce, targets, _now_ms(), headers, number_matching)

    def check(self, body: Any, clock: ClockWatch | None = None) -> Challenge:
        """The challenge the broker made, checked, with its lifetime by the RP's clock;
        `clock` (the client's) measures the broker's creation time against this one."""
        challenge = Challenge.from_json(wire.obj(body, "challenge"), context=self.context)
        if clock is not None:
            clock.measured(self.issued, challenge.created_at, _now_ms())
        if self.digits is not None and challenge.digits != self.digits:
            raise BadBrokerResponse(f"challenge: asked for {self.digits} digits, got {challenge.digits}")
        if not MIN_DIGITS <= challenge.digits <= MAX_DIGITS:
            raise BadBrokerResponse(
                f"challenge: {challenge.digits} digits, outside {MIN_DIGITS}..{MAX_DIGITS}"
            )
        if challenge.rp_nonce != self.rp_nonce or challenge.user != self.user:
            raise BadBrokerResponse("challenge: the broker changed the RP's nonce or the user")
        # The set the RP named, and credential_id only when it is one (RP API 1.8; a
        # broker before it names one target in credential_id alone, read as the set).
        one = self.targets[0] if self.targets is not None and len(self.targets) == 1 else None
        aimed = None if challenge.credential_ids is None else sorted(challenge.credential_ids)
        if challenge.credential_id != one or aimed != (
            None if self.targets is None else sorted(self.targets)
        ):
            raise BadBrokerResponse("challenge: the broker aimed it at other credentials than asked")
        if challenge.number_matching != self.number_matching:
            # Either way a broker must not choose it: off, an approval needs no number
            # (a weaker sign-in the RP did not ask for); on, the RP shows nothing to type.
            raise BadBrokerResponse(
                f"challenge: asked for number_matching {str(self.number_matching).lower()}, "
                f"the broker made one with {str(challenge.number_matching).lower()}"
            )
        return replace(
            challenge, created_at=self.issued, expires_at=self.issued + self.lifetime_ms(challenge)
        )

    def lifetime_ms(self, challenge: Challenge) -> int:
        """How long the challenge lives, counted from `issued` by the RP's clock (its
        freshness window, docs/protocol.md section 13): the ttl the RP named, else the
        one the broker applied (its policy's), read off its answer and held to the
        protocol's bounds, so a broker cannot stretch the window past 600 s."""
        if self.ttl is not None:
            return self.ttl * 1000
        lifetime = challenge.expires_at - challenge.created_at
        if not MIN_TTL_S * 1000 <= lifetime <= MAX_TTL_S * 1000:
            raise BadBrokerResponse(
                f"challenge: a lifetime of {lifetime} ms (expires_at - created_at), "
                f"outside {MIN_TTL_S}..{MAX_TTL_S} s"
            )
        return lifetime


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > MAX_RESPONSE:
            raise BadBrokerResponse(f"the broker's response exceeds {MAX_RESPONSE} bytes")
    return bytes(data)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    # RecursionError: arrays or objects nested past the parser's recursion limit (a
    # few KB of "[[[["), which escaped the SDK's own errors.
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
