"""One PAM authentication: push with number matching, or a verification code.

The I/O around core's decisions: the RP SDK (every answer is verified end to end
there, with the keys in our store), the user store and the PAM conversation, which
is whatever shell runs us (libpam-python's pamh, pam_exec's stdout) behind the
Conversation protocol.

The SDK (and with it aiohttp, PyNaCl and the frame types: most of a sign-in's imports)
is imported once a push is to be sent: a member of a bypass group, an unmapped user
or one with no device here is answered without it (docs/performance.md, "Command
start-up").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from protocol.text import printable

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
from ..host import push_block
from ..host.config import CONTEXT_VALUE_MAX, refused_challenge
from ..host.store import StoreError, UserStore
from . import core, mapping
from .config import Config
from .core import Outcome

if TYPE_CHECKING:
    from ..models import Challenge
    from ..one_request import PendingSignIn
    from ..sdk import PushAuthClient
    from ..web.db import User

log = logging.getLogger("pushauth.pam")


class Conversation(Protocol):
    # False for pam_exec: it can show lines but not ask (the push is then the only way).
    interactive: bool

    def prompt(self, text: str, *, echo: bool) -> str | None:
        """Ask the person; None when there is no one to ask (pam_exec)."""

    def info(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Request:
    user: str  # the local account (PAM_USER)
    service: str  # PAM_SERVICE: sshd, sudo, ...
    rhost: str | None = None
    tty: str | None = None
    ruser: str | None = None


@dataclass(slots=True)
class Decision:
    outcome: Outcome
    pushauth_user: str | None = None
    challenge_id: str | None = None
    # The credential whose signed answer or verification code decided: which device
    # approved (or reported) is what an administrator asks first about a sign-in.
    device: str | None = None
    detail: str | None = None  # for the log only (a group name, an error)
    started: float = field(default_factory=time.monotonic)
    prompt_ms: int | None = None  # start -> the number prompt shown
    broker_unreachable: bool = False  # creating the push found the broker unreachable
    approval_ms: int | None = None  # the device signed its answer -> our decision

    @property
    def allowed(self) -> bool:
        return self.outcome in core.ALLOWED

    @property
    def message(self) -> str:
        return core.MESSAGES[self.outcome]

    def fields(self, request: Request) -> dict[str, object]:
        out: dict[str, object] = {
            "user": request.user,
            "pushauth_user": self.pushauth_user,
            "service": request.service,
            "rhost": request.rhost,
            "tty": request.tty,
            "challenge": self.challenge_id,
            **({"device": self.device} if self.device else {}),
            "ms": int((time.monotonic() - self.started) * 1000),
        }
        if self.prompt_ms is not None:
            out["prompt_ms"] = self.prompt_ms
        if self.approval_ms is not None:
            out["approval_ms"] = self.approval_ms
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class Underway:
    """What a sign-in under way has started, for whoever must end it if this process dies
    first (the shell's watchdog): `on_push` is called once the push is out."""

    pushauth_user: str | None = None
    challenge: Challenge | None = None
    on_push: Callable[[Underway], None] | None = None

    def pushed(self, challenge: Challenge) -> None:
        self.challenge = challenge
        if self.on_push is not None:
            self.on_push(self)


async def authenticate(
    config: Config, request: Request, conv: Conversation, started: float, underway: Underway | None = None
) -> Decision:
    """Decide one sign-in of `request.user`, talking to the person through `conv`;
    `underway` follows what it has started."""
    underway = underway if underway is not None else Underway()
    group = mapping.in_bypass_group(config, request.user)
    if group is not None:
        return Decision(Outcome.BYPASS, detail=f"group {group}", started=started)
    name = mapping.pushauth_user(config, request.user)
    if name is None:
        return Decision(Outcome.UNMAPPED, started=started)
    underway.pushauth_user = name
    try:
        store = UserStore(config.store)
    except StoreError as exc:
        return Decision(Outcome.CONFIG_ERROR, name, detail=str(exc), started=started)
    try:
        user = store.user(name)
        if user is None or not store.devices(user, confirmed_only=True):
            return Decision(Outcome.NOT_ENROLLED, name, started=started)
        from ..sdk import PushAuthClient

        async with PushAuthClient(
            config.broker_url, config.api_key, request_timeout=config.request_timeout
        ) as sdk:
            decision = await _push(
                config,
                request,
                conv,
                sdk,
                store,
                user,
                Decision(Outcome.ENDED, name, started=started),
                underway,
            )
            if decision.outcome is Outcome.TOTP_OK:
                # Signed in another way: the broker's push block (after a report, or too
                # many pushes) ends now, or push would stay blocked for good. Not when the
                # broker was just found unreachable: asking again would keep the person
                # waiting another timeouts.request for nothing; the next code sign-in lifts it.
                if decision.broker_unreachable:
                    problem: str | None = push_block.not_lifted(BrokerUnavailable.__name__)
                else:
                    problem = await push_block.lift_after_signin(sdk, user.handle)
                if problem is not None:
                    # First: the audit line cuts long values short.
                    decision.detail = "; ".join(filter(None, (problem, decision.detail)))
            return decision
    finally:
        store.close()


def _shown(value: str) -> str:
    """`value` for a push's context: unsafe characters escaped (\\x1b), 1 to 256 characters."""
    return printable(value)[:CONTEXT_VALUE_MAX] or "-"


async def _push(
    config: Config,
    request: Request,
    conv: Conversation,
    sdk: PushAuthClient,
    store: UserStore,
    user: User,
    decision: Decision,
    underway: Underway,
) -> Decision:
    # What the PAM application handed us (PAM_RHOST, PAM_SERVICE, the user name), as plain
    # text the broker takes: a control character or bytes that are not UTF-8 there made
    # the broker refuse the push (400), and the sign-in end as config_error.
    context = {"app": config.app_name, "service": _shown(request.service), "user": _shown(request.user)}
    if request.rhost:
        context["from"] = _shown(request.rhost)
    try:
        # The one-request sign-in (the number now, the result on the same HTTP exchange;
        # the long-poll with a broker that does not stream): PushAuthClient.sign_in.
        pending = await sdk.sign_in(user.handle, context, ttl=config.push_ttl, digits=config.digits)
    except NoDevices:
        # Removed on the device (or by another RP tool) since it was enrolled here: follow
        # the broker's list, so the store says so too (the SDK drops only what it no
        # longer lists; it adds nothing without proof).
        await store.follow(sdk, user)
        decision.outcome = Outcome.NO_DEVICES
        return decision
    except (PushBlocked, RateLimited) as exc:
        decision.detail = exc.code
        return await _code(
            config, conv, store, user, decision, core.BLOCKED_CODE_PROMPT, Outcome.BLOCKED, sdk
        )
    except Unauthorized as exc:
        return _refused_key(decision, exc)
    except InvalidRequest as exc:
        return _refused_request(decision, exc)
    except BrokerUnavailable as exc:
        decision.detail, decision.broker_unreachable = str(exc), True
        if config.fail_open:
            decision.outcome = Outcome.FAIL_OPEN
            return decision
        # The codes are checked here, against our own store: they work without the broker.
        return await _code(
            config, conv, store, user, decision, core.UNREACHABLE_CODE_PROMPT, Outcome.BROKER_UNAVAILABLE
        )
    except PushAuthError as exc:
        # The broker answered, but not with a push: not "unreachable" (which a stack may
        # route to fail open), a refusal.
        decision.outcome, decision.detail = Outcome.BROKER_ERROR, str(exc)
        return decision
    with contextlib.closing(pending):  # a stream left unread is closed; the challenge goes on
        return await _after_push(config, conv, sdk, store, user, pending, decision, underway)


async def _after_push(
    config: Config,
    conv: Conversation,
    sdk: PushAuthClient,
    store: UserStore,
    user: User,
    pending: PendingSignIn,
    decision: Decision,
    underway: Underway,
) -> Decision:
    challenge = pending.challenge
    decision.challenge_id = challenge.id
    underway.pushed(challenge)
    decision.prompt_ms = int((time.monotonic() - decision.started) * 1000)
    if conv.interactive:
        text = core.number_prompt(challenge.number, code_fallback=config.code_fallback)
        typed = conv.prompt(text, echo=True)
        if typed is None:
            # The conversation failed (the SSH client went away): nobody is waiting for
            # this sign-in any more, so the device should not be asked about it either.
            await _cancel(sdk, challenge)
            decision.outcome, decision.detail = Outcome.CANCELLED, "the conversation ended"
            return decision
    else:
        conv.info(core.number_info(challenge.number))
        typed = None
    answer = core.read_answer(typed, challenge.number) if config.code_fallback else core.WaitForPush()
    if not isinstance(answer, core.WaitForPush):
        await _cancel(sdk, challenge)  # signing in another way: the push is over
        if isinstance(answer, core.Totp):
            return await _check(store, user, decision, answer.code, sdk)
        return await _code(config, conv, store, user, decision, core.CODE_PROMPT, Outcome.NO_CODE, sdk)
    return await _wait(sdk, store, user, pending, decision)


async def _wait(
    sdk: PushAuthClient, store: UserStore, user: User, pending: PendingSignIn, decision: Decision
) -> Decision:
    challenge = pending.challenge
    try:
        try:
            result = await pending.result(store.public_keys(user))
        except VerificationFailed as exc:
            if exc.reason is not VerificationReason.UNKNOWN_CREDENTIAL:
                raise
            # Perhaps a device restored since we last looked: follow the broker's list
            # (the SDK adds it only with a valid recovery proof), then read again.
            await store.sync(sdk, user)
            result = await sdk.wait_result(challenge, store.public_keys(user), timeout=0)
    except VerificationFailed as exc:
        log.error("SECURITY EVENT: the broker's result for %s did not verify: %s", user.name, exc)
        decision.outcome, decision.detail = Outcome.VERIFICATION_FAILED, str(exc.reason)
        return decision
    except Unauthorized as exc:
        return _refused_key(decision, exc)
    except PushAuthError as exc:
        # The push went out: whatever fails now (the broker gone included) refuses, since
        # the person may have denied or reported it (docs/pam.md, "Fail open or fail closed").
        decision.outcome, decision.detail = Outcome.BROKER_ERROR, str(exc)
        return decision
    if not result.final:
        await _cancel(sdk, challenge)
    store.answered(result)
    decision.outcome = core.outcome_of(result.status)
    if result.answer is not None:
        decision.device = result.answer.credential_id
        decision.approval_ms = max(0, time.time_ns() // 1_000_000 - result.answer.ts)
    return decision


def _refused_key(decision: Decision, exc: Unauthorized) -> Decision:
    """The broker refused our API key (wrong or revoked): a configuration error to fix,
    never "unreachable" (which a stack may route to fail open)."""
    decision.outcome = Outcome.CONFIG_ERROR
    decision.detail = f"broker.api_key_file: the broker refused the API key ({exc})"
    return decision


def _refused_request(decision: Decision, exc: InvalidRequest) -> Decision:
    """The broker refused the challenge this host asked for (400): what it holds comes from
    this host's configuration (digits and lifetime against the RP's policy, the app name)
    and its store, so every sign-in would fail alike: a configuration error to fix, never
    "unreachable" (which a stack may route to fail open) nor a passing failure."""
    decision.outcome = Outcome.CONFIG_ERROR
    decision.detail = refused_challenge(exc, digits_key="challenge.digits", ttl_key="timeouts.push")
    return decision


async def _code(
    config: Config,
    conv: Conversation,
    store: UserStore,
    user: User,
    decision: Decision,
    prompt: str,
    otherwise: Outcome,
    sdk: PushAuthClient | None = None,
) -> Decision:
    """Ask for a verification code (when allowed and someone can type one); `sdk` when
    the broker answered, to follow its list of devices first."""
    typed = conv.prompt(prompt, echo=False) if config.code_fallback and conv.interactive else None
    code = core.clean_code(typed)
    if code is None:
        # Something typed that is no code ("abc", five digits) is a wrong code, not "none
        # typed" (which told the person they had typed nothing).
        decision.outcome = otherwise if not (typed or "").strip() else Outcome.TOTP_BAD
        return decision
    return await _check(store, user, decision, code, sdk)


async def _check(
    store: UserStore, user: User, decision: Decision, code: str, sdk: PushAuthClient | None
) -> Decision:
    if sdk is not None:
        await store.follow(sdk, user)  # a device removed on the phone counts no more
    check = store.check_code(user, code)
    if check.device is not None:
        decision.outcome = Outcome.TOTP_OK
        decision.device = check.device.credential_id
    else:
        decision.outcome = Outcome.TOTP_REPLAYED if check.replayed else Outcome.TOTP_BAD
    return decision


async def withdraw(config: Config, challenge: Challenge) -> str | None:
    """End a push with a client of its own (the shell's watchdog), within the configured
    request timeout. Returns why it could not, or None."""
    from ..sdk import PushAuthClient

    try:
        async with PushAuthClient(
            config.broker_url, config.api_key, request_timeout=config.request_timeout
        ) as sdk:
            await asyncio.wait_for(sdk.cancel_challenge(challenge), config.request_timeout)
    except PushAuthError as exc:
        return f"could not cancel the push: {exc}"
    except TimeoutError:
        return f"could not cancel the push: no answer within {config.request_timeout:g} s"
    return None


async def _cancel(sdk: PushAuthClient, challenge: Challenge) -> None:
    try:
        await sdk.cancel_challenge(challenge)
    except PushAuthError as exc:
        log.warning("could not cancel %s: %s", challenge.id, exc)
