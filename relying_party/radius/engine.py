"""One Access-Request's steps: first factor, push, wait for the verified answer, or a code.

The I/O around the decisions of `core`: the RP SDK (every answer is verified end to
end there, with the keys in our store), Redis (`state`) and the user store.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, replace

from pyrad import packet as rp

from protocol.challenge import DEFAULT_TTL_S
from protocol.text import is_unsafe

from ..errors import (
    BrokerUnavailable,
    InvalidRequest,
    NoDevices,
    PushAuthError,
    PushBlocked,
    RateLimited,
    Unauthorized,
    VerificationFailed,
    VerificationReason,
)
from ..host.config import refused_challenge
from ..host.push_block import lift_after_signin
from ..host.store import UserStore
from ..models import Challenge, SignInResult, Status
from ..sdk import PushAuthClient
from ..web.db import User
from . import core, upstream
from .config import Config
from .core import Outcome
from .packets import AccessRequest
from .state import Pending, StateStore

log = logging.getLogger("pushauth.radius")
STATE_BYTES = 16
# How long a verification code stays claimed in Redis: its period with one step of
# skew either way (relying_party.totp.SKEW_STEPS), for the longest period we issue.
CODE_CLAIM_S = 3 * 30 + 30
# How long the State of a code-only Access-Challenge (push blocked) lasts when
# challenge.ttl is left to the RP's policy: there is no challenge whose expires_at could
# say, so the broker's default ttl (docs/radius.md, "Timeouts").
CODE_ONLY_S = DEFAULT_TTL_S


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer: code (Access-Accept/Reject/Challenge), Reply-Message, State."""

    code: int
    outcome: Outcome
    message: str
    user: str | None = None
    challenge_id: str | None = None
    state: bytes | None = None
    # The credential whose signed answer or verification code decided: which device
    # approved (or reported) is what an administrator asks first about a sign-in.
    device: str | None = None
    # The Calling-Station-Id for the audit line when the request has none: a follow-up's
    # is the first request's (kept with the State).
    station: str | None = None


class Engine:
    def __init__(self, config: Config, sdk: PushAuthClient, states: StateStore, store: UserStore) -> None:
        self.config = config
        self.sdk = sdk
        self.states = states
        self.store = store

    async def handle(self, request: AccessRequest) -> Verdict:
        if request.state is not None:
            return await self._answer(request)
        return await self._start(request)

    def _final(
        self,
        outcome: Outcome,
        user: str | None = None,
        challenge_id: str | None = None,
        *,
        push_only: bool = False,
        device: str | None = None,
    ) -> Verdict:
        code = rp.AccessAccept if outcome in core.ACCEPTED else rp.AccessReject
        message = core.message(outcome, push_only=push_only)
        return Verdict(code, outcome, message, user, challenge_id, device=device)

    # -- the first Access-Request: user name and password -------------------------

    async def _start(self, request: AccessRequest) -> Verdict:
        cfg = self.config
        if not request.user_name or request.password is None:
            return self._final(Outcome.BAD_REQUEST, request.user_name)
        name = core.map_user(request.user_name, strip_realm=cfg.strip_realm, lowercase=cfg.lowercase)
        if name is None:
            return self._final(Outcome.FIRST_FACTOR_FAILED, request.user_name)
        if not await self.states.allow(name, cfg.user_rate, cfg.rate_window):
            return self._final(Outcome.RATE_LIMITED, name)
        if cfg.upstream is not None:
            try:
                ok = await upstream.check_password(
                    cfg.upstream, request.user_name, request.password, nas_id="pushauth-radius"
                )
            except upstream.UpstreamUnavailable as exc:
                log.warning("%s", exc)
                return self._final(Outcome.UPSTREAM_UNAVAILABLE, name)
            if not ok:
                return self._final(Outcome.FIRST_FACTOR_FAILED, name)
        user = self.store.user(name)
        if user is None or not self.store.devices(user, confirmed_only=True):
            # No confirmed device here (never enrolled, or every device removed: the user's
            # row stays): no push, and above all no fail open with the broker unreachable,
            # which let a user whose devices were all removed in on the password alone.
            return self._final(Outcome.NOT_ENROLLED, name)
        context = {"app": cfg.app_name, "client": request.client.name}
        if request.calling_station:
            # Shown on the device as plain text: printable and visible characters only (the
            # broker refuses the rest, docs/protocol.md 18.4), and short.
            station = (c for c in request.calling_station if c.isprintable() and not is_unsafe(c))
            context["from"] = "".join(station)[:64] or "?"
        push_only = request.client.push_only
        try:
            # No screen to show a number on: a push without number matching, a plain
            # approve / deny on the device (docs/radius.md, "Push-only clients": why that
            # is weaker, and the broker policy it needs). Digits mean nothing then.
            challenge = await self.sdk.create_challenge(
                user.handle,
                context,
                ttl=cfg.ttl,
                digits=None if push_only else cfg.digits,
                number_matching=not push_only,
            )
        except NoDevices:
            return self._final(Outcome.NO_DEVICES, name)
        except (PushBlocked, RateLimited):
            if request.client.push_only:
                return self._final(Outcome.BLOCKED, name)
            # No push, but a verification code still signs in: ask for one, for as long as
            # a push would have lasted (no challenge says so here: challenge.ttl, else
            # CODE_ONLY_S).
            ttl_s = CODE_ONLY_S if cfg.ttl is None else cfg.ttl
            pending = Pending(None, name, request.client.name, request.calling_station)
            return await self._challenge(request, pending, ttl_s * 1000)
        except Unauthorized as exc:
            # Answered, so not "unreachable" (broker_down = "accept" must not let it in):
            # this server's key is wrong or revoked, and every sign-in fails alike.
            log.error("broker.api_key_file: the broker refused the API key (%s)", exc)
            return self._final(Outcome.CONFIG_ERROR, name)
        except InvalidRequest as exc:
            if push_only and "number_matching" in (exc.detail or ""):
                log.error(
                    "client %s is push_only, and the broker refuses a push without number matching "
                    "for this server's RP (%s): allow it with `pushauth-broker rp set RP_ID "
                    '--allow-numberless-push` (docs/radius.md, "Push-only clients")',
                    request.client.name,
                    exc,
                )
            else:
                log.error(
                    "%s", refused_challenge(exc, digits_key="challenge.digits", ttl_key="challenge.ttl")
                )
            return self._final(Outcome.CONFIG_ERROR, name)
        except BrokerUnavailable as exc:
            log.warning("%s", exc)
            return self._final(
                Outcome.FAIL_OPEN if cfg.broker_down == "accept" else Outcome.BROKER_UNAVAILABLE, name
            )
        except PushAuthError as exc:
            log.error("creating the challenge failed: %s", exc)
            return self._final(Outcome.BROKER_UNAVAILABLE, name)
        if request.client.push_only:
            return await self._push_only(challenge, user, name)
        pending = Pending(challenge, name, request.client.name, request.calling_station)
        return await self._challenge(request, pending, challenge.expires_at - _now_ms())

    async def _challenge(self, request: AccessRequest, pending: Pending, ttl_ms: int) -> Verdict:
        """An Access-Challenge, its State record in Redis for `ttl_ms`."""
        state = secrets.token_bytes(STATE_BYTES)
        await self.states.put(state, pending, ttl_ms)
        if pending.challenge is None:
            return Verdict(
                rp.AccessChallenge, Outcome.CODE_ONLY, core.CODE_ONLY_MESSAGE, pending.user, None, state
            )
        return Verdict(
            rp.AccessChallenge,
            Outcome.CHALLENGED,
            core.challenge_message(pending.challenge.number),
            pending.user,
            pending.challenge.id,
            state,
        )

    async def _push_only(self, challenge: Challenge, user: User, name: str) -> Verdict:
        result = await self._wait(challenge, user, until_expiry=True)
        if isinstance(result, Verdict):
            return result
        # The challenge has no number matching, so the SDK itself calls any verified
        # approval (a stored key's, over this very challenge) APPROVED, as the broker does.
        if result.approved:
            return self._final(Outcome.APPROVED, name, challenge.id, device=_device(result))
        return self._final(
            core.outcome_of(result.status), name, challenge.id, push_only=True, device=_device(result)
        )

    # -- the follow-up Access-Request: State and the typed answer -----------------

    async def _answer(self, request: AccessRequest) -> Verdict:
        assert request.state is not None
        pending = await self.states.take(request.state)
        if pending is None:
            return self._final(Outcome.UNKNOWN_STATE, request.user_name)
        name, challenge = pending.user, pending.challenge
        challenge_id = None if challenge is None else challenge.id
        cfg = self.config
        mapped = core.map_user(request.user_name or "", strip_realm=cfg.strip_realm, lowercase=cfg.lowercase)
        if pending.client != request.client.name or mapped != name:
            # Another gateway or another user than the one challenged: not an answer to it.
            await self._cancel(challenge)
            return self._final(Outcome.UNKNOWN_STATE, request.user_name, challenge_id)
        return replace(await self._decide(request, pending), station=pending.station)

    async def _decide(self, request: AccessRequest, pending: Pending) -> Verdict:
        """The answer to `pending`, from its own client and user."""
        name, challenge = pending.user, pending.challenge
        challenge_id = None if challenge is None else challenge.id
        user = self.store.user(name)
        if user is None:
            return self._final(Outcome.NOT_ENROLLED, name, challenge_id)
        answer = core.read_answer(request.password or "", None if challenge is None else challenge.number)
        if isinstance(answer, core.Totp):
            return await self._code(user, name, challenge, answer.code)
        if challenge is None:
            return self._final(Outcome.TOTP_BAD, name)
        result = await self._wait(challenge, user, until_expiry=False)
        if isinstance(result, Verdict):
            return result
        if result.status is Status.PENDING or not result.final:
            await self._cancel(challenge)
        return self._final(core.outcome_of(result.status), name, challenge.id, device=_device(result))

    async def _code(self, user: User, name: str, challenge: Challenge | None, code: str) -> Verdict:
        challenge_id = None if challenge is None else challenge.id
        if not await self.states.allow(name, self.config.user_rate, self.config.rate_window):
            await self._cancel(challenge)
            return self._final(Outcome.RATE_LIMITED, name, challenge_id)
        if challenge is not None:  # the broker answered: a device removed on the phone counts no more
            await self.store.follow(self.sdk, user)
        check = self.store.check_code(user, code)
        if check.device is not None and not await self.states.code_unused(name, code, CODE_CLAIM_S):
            check = type(check)(None, replayed=True)  # used at another instance
        await self._cancel(challenge)  # signed in another way (or not): the push is over
        if check.device is not None:
            # Signed in another way: a push block (a report, too many pushes) ends, or push
            # would stay blocked for good (docs/http-api.md). Best effort: the code stands.
            await lift_after_signin(self.sdk, user.handle)
            return self._final(Outcome.TOTP_OK, name, challenge_id, device=check.device.credential_id)
        return self._final(Outcome.TOTP_REPLAYED if check.replayed else Outcome.TOTP_BAD, name, challenge_id)

    async def _wait(self, challenge: Challenge, user: User, *, until_expiry: bool) -> SignInResult | Verdict:
        """The SDK's verified result, or the Verdict when there is none to be had."""
        remaining = (challenge.expires_at - _now_ms()) / 1000
        timeout = remaining if until_expiry else min(remaining, self.config.answer_wait)
        try:
            try:
                result = await self.sdk.wait_result(
                    challenge, self.store.public_keys(user), timeout=max(0.0, timeout)
                )
            except VerificationFailed as exc:
                if exc.reason is not VerificationReason.UNKNOWN_CREDENTIAL:
                    raise
                # Perhaps a device restored since we last looked: follow the broker's
                # list (the SDK adds it only with a valid recovery proof), then again.
                await self.store.sync(self.sdk, user)
                result = await self.sdk.wait_result(challenge, self.store.public_keys(user), timeout=0)
            self.store.answered(result)
            return result
        except VerificationFailed as exc:
            log.error("SECURITY EVENT: the broker's result for %s did not verify: %s", user.name, exc)
            return self._final(Outcome.VERIFICATION_FAILED, user.name, challenge.id)
        except BrokerUnavailable as exc:
            log.warning("%s", exc)
            return self._final(Outcome.BROKER_UNAVAILABLE, user.name, challenge.id)
        except PushAuthError as exc:
            log.error("reading the result of %s failed: %s", challenge.id, exc)
            return self._final(Outcome.BROKER_UNAVAILABLE, user.name, challenge.id)

    async def _cancel(self, challenge: Challenge | None) -> None:
        if challenge is None:
            return
        try:
            await self.sdk.cancel_challenge(challenge)
        except PushAuthError as exc:
            log.warning("could not cancel %s: %s", challenge.id, exc)


def _device(result: SignInResult) -> str | None:
    """The credential that signed the answer (approve, deny, report, a wrong number)."""
    return None if result.answer is None else result.answer.credential_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
