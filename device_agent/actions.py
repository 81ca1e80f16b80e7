"""One-shot agent operations: enroll, list pending requests, answer, remove.

Each connects, does its one job and closes. They return data and raise
AgentErrors; printing is the CLI's (or a terminal UI's) business.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from protocol import fields, numbers, signing, uri
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import Challenge, Decision, Enrolled, NoticeDecision, RecoveryNotice, Welcome
from protocol.uri import EnrollmentURI

from . import broker_clock
from .connection import Connection
from .device_names import device_name_for
from .display import number_source, shown, shown_clipped
from .errors import AgentError, BrokerClosed, InsecureBroker, Refused, Unreachable, UsageError
from .links import parse_uri
from .messages import REVOKE_MESSAGES, cancel_message, revoked_notice
from .store import ACTION_REQUIRED, Account, AccountStore, Registration, StoreError

NUMBER_RE = re.compile(rf"^[0-9]{{{numbers.MIN_DIGITS},{numbers.MAX_DIGITS}}}$")  # what an RP can show
# A broker's word that a credential is gone for good (welcome's `rejected` codes).
GONE_CODES = (ErrorCode.CREDENTIAL_REVOKED, ErrorCode.UNKNOWN_CREDENTIAL)


def apply_welcome(store: AccountStore, welcome: Welcome) -> list[str]:
    """Mark credentials the broker refused for good as revoked; say which."""
    notices = []
    for rej in welcome.rejected:
        if rej["code"] in GONE_CODES:
            account = store.mark_revoked(rej["cid"], REVOKE_MESSAGES[rej["code"]])
            if account is not None:
                notices.append(revoked_notice(account.name, account.rp_name, REVOKE_MESSAGES[rej["code"]]))
        else:
            notices.append(f"The broker refused credential {rej['cid']}: {rej['code']}.")
    return notices


# -- enroll -----------------------------------------------------------------------


def misdirected(ch: Challenge, account: Account | None, broker_now_ms: int) -> str | None:
    """Why a challenge must be neither shown nor answered, or None: its credential is
    not one of this device's, it names another RP than the one the account was
    enrolled at (the broker's word, not the RP's), or its `expires` has passed by the
    broker's clock (an old request sent again) (docs/protocol.md, section 18.2)."""
    if account is None:
        return f"Sign-in request {ch.ch} for an unknown credential was ignored"
    if ch.rp != account.rp:
        return (
            f"Sign-in request {ch.ch} was ignored: the broker sent it for "
            f'"{account.name}" ({account.rp_name}) but it names another service ({ch.rp})'
        )
    if broker_now_ms >= ch.expires:
        return f"Sign-in request {ch.ch} was ignored: it had expired when the broker sent it"
    return None


async def register(parsed: uri.EnrollmentURI, device_name: str) -> tuple[Enrolled, bytes, bytes | None]:
    """Make a key pair and register its public key with the URI's code.

    Returns the seed, and the recovery key's seed when the link says the RP enrolls
    the account as recoverable (the recovery public key goes with the registration,
    bound for the RP by the link's secret)."""
    seed = signing.new_seed()
    recovery_seed = signing.new_seed() if parsed.recoverable else None

    async def attempt(conn: Connection) -> Enrolled:
        async with conn:
            return await conn.enroll(
                token=parsed.token,
                seed=seed,
                name=device_name,
                rp=parsed.rp,
                binding_secret=parsed.binding_secret,
                recovery_pk=None if recovery_seed is None else signing.public_key(recovery_seed),
            )

    conn = await Connection.open(parsed.broker)  # unreachable: nothing sent, nothing to retry
    try:
        enrolled = await attempt(conn)
    except Unreachable as exc:
        if isinstance(exc, BrokerClosed) and exc.final:
            raise  # a 44xx close: the same frame would be refused again (section 15)
        # The reply was lost (the connection broke, or timed out): the broker may hold
        # the credential already. The same token with the same key, name and recovery
        # key on a new connection gets the same credential (docs/protocol.md, section 8).
        enrolled = await attempt(await Connection.open(parsed.broker))
    if enrolled.rp != parsed.rp:
        # The link the user scanned names the RP; the broker registered the key for
        # another one: that credential must not live (section 5, `enrolled`).
        undone = await _take_back(parsed.broker, enrolled.cid, seed, parsed.rp_name)
        raise Refused(
            f"the broker enrolled this device at service {enrolled.rp!r}, but the enrollment link is for "
            f"{parsed.rp!r} ({parsed.rp_name}): nothing was stored; {undone}",
            code="wrong_rp",
        )
    return enrolled, seed, recovery_seed


async def _saving_failed(
    exc: Exception, store: AccountStore, parsed: EnrollmentURI, enrolled: Enrolled, seed: bytes
) -> AgentError:
    """The broker holds the new credential, but this device could not save its key (a
    vault it cannot write): the key would be lost with this process, and the service
    would list a device that can never answer nor be removed from here. Take it back
    while the key is still in memory."""
    with contextlib.suppress(StoreError, OSError):
        if any(a.cid == enrolled.cid for a in store.load()):  # written after all (a late error)
            return AgentError(f"saving the account reported an error ({exc}), but it was saved")
    undone = await _take_back(parsed.broker, enrolled.cid, seed, parsed.rp_name)
    why = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
    return UsageError(
        f"the account could not be saved on this device ({why}): nothing was kept here; {undone};"
        f" fix that, then ask {parsed.rp_name} for a new QR code"
    )


def twin_of(store: AccountStore, parsed: EnrollmentURI) -> Account | None:
    """An active account here for the link's service and account label (as the web app
    matches it): adding the link makes a second sign-in method of the same person on
    this one device, which is seldom meant (a second QR code scanned by mistake)."""
    if not store.path.exists() and not store.legacy_path.exists():
        return None
    store.unlock()
    return next(
        (
            a
            for a in store.active()
            if (a.broker, a.rp, a.label) == (parsed.broker, parsed.rp, parsed.account)
        ),
        None,
    )


async def enroll(
    store: AccountStore, text: str, device_name: str | None = None
) -> tuple[Account, Account | None]:
    """The new account, and the revoked one it replaced (store.add), if any."""
    parsed = parse_uri(text)
    name = device_name_for(device_name, store.settings() if store.path.exists() else {})
    # Fail on a damaged vault or a missing passphrase before the broker spends the token.
    store.unlock()
    store.load()
    enrolled, seed, recovery_seed = await register(parsed, name)
    reg = _registration(parsed, enrolled, name, seed, recovery_seed)
    try:
        replaced = store.revoked_predecessor(reg)
        return store.add(parsed.account, reg), replaced
    except (StoreError, OSError) as exc:
        raise await _saving_failed(exc, store, parsed, enrolled, seed) from None


def _registration(
    parsed: EnrollmentURI, enrolled: Enrolled, device_name: str, seed: bytes, recovery_seed: bytes | None
) -> Registration:
    # The RP's name and the account label come from the link the user scanned on the
    # RP's own page, never from the broker (docs/protocol.md, section 18.3); `register`
    # checked that the broker enrolled at the link's RP.
    return Registration(
        rp=parsed.rp,
        rp_name=parsed.rp_name,
        user=enrolled.user,
        label=parsed.account,
        broker=parsed.broker,
        cid=enrolled.cid,
        device_name=device_name,
        seed=seed,
        totp=parsed.totp,
        recovery_seed=recovery_seed,
    )


async def reactivate(store: AccountStore, account_name: str, text: str, device_name: str | None) -> Account:
    """Give a restored (or revoked) push account a fresh credential from a new enrollment URI."""
    parsed = parse_uri(text)
    name = device_name_for(device_name, store.settings() if store.path.exists() else {})
    account = store.find(account_name)
    if account.active:
        raise UsageError(f'"{account.name}" is active already; nothing to re-activate')
    if parsed.rp != account.rp:
        raise UsageError(
            f'this enrollment URI is for {parsed.rp_name}, but "{account.name}" is an account at '
            f"{account.rp_name}; nothing was sent"
        )
    enrolled, seed, recovery_seed = await register(parsed, name)
    if (enrolled.rp, enrolled.user) != (account.rp, account.user):
        # The link was for another user (or the broker answered for another RP): this
        # account must not become that user's credential. Take the new key back.
        undone = await _take_back(parsed.broker, enrolled.cid, seed, enrolled.rp_name)
        raise Refused(
            f'this enrollment link is for user {enrolled.user!r} at {enrolled.rp_name}, but "{account.name}"'
            f" is user {account.user!r} at {account.rp_name}: nothing was changed here; {undone}",
            code="wrong_account",
        )
    try:
        return store.reactivate(account.name, _registration(parsed, enrolled, name, seed, recovery_seed))
    except (StoreError, OSError) as exc:
        raise await _saving_failed(exc, store, parsed, enrolled, seed) from None


async def _take_back(broker: str, cid: str, seed: bytes, rp_name: str) -> str:
    """Revoke a credential this device just registered by mistake; says what happened."""
    try:
        async with await Connection.open(broker) as conn:
            await conn.authenticate({cid: seed})
            await conn.revoke(cid)
    except AgentError as exc:
        return f"the key just registered could not be revoked ({exc}): remove it on {rp_name}'s security page"
    return "the key just registered was revoked at once"


# -- pending requests ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingRequest:
    challenge: Challenge
    account: Account | None
    broker_now_ms: int  # the broker's clock when it was fetched
    conn: Connection  # where to answer it (open only inside `_fetch_all`)


@dataclass(frozen=True, slots=True)
class PendingNotice:
    """An open "was this you?" question about a recovery of one of this device's accounts."""

    notice: RecoveryNotice
    account: Account | None
    conn: Connection  # where to answer it (open only inside `_fetch_all`)


@dataclass(slots=True)
class PendingReport:
    requests: list[PendingRequest]  # newest first (the one whose number the sign-in page shows)
    notices: list[str]  # accounts found revoked
    failures: list[str]  # why each broker that could not be asked was not (one line each)
    recoveries: list[PendingNotice] = field(default_factory=list)  # oldest first
    unreachable: list[str] = field(default_factory=list)  # the URLs of those brokers
    asked: int = 0  # how many brokers were asked


def _dedupe(challenges: list[Challenge]) -> list[Challenge]:
    # Two accounts of one user on this device get one frame each for one request.
    seen: dict[str, Challenge] = {}
    for ch in challenges:
        seen.setdefault(ch.ch, ch)
    return list(seen.values())


def _accounts_or_fail(store: AccountStore) -> dict[str, list[Account]]:
    brokers = store.by_broker()
    if not brokers:
        raise UsageError("no active accounts on this device (add one with: pushauth-agent enroll URI)")
    return brokers


async def _authenticated(
    store: AccountStore, broker: str, accounts: list[Account]
) -> tuple[Connection, Welcome, list[Challenge]]:
    conn = await Connection.open(broker)
    broker_clock.record(store.home, broker, conn.clock_offset_ms)  # for `code`, offline later
    try:
        welcome, challenges = await conn.authenticate(store.seeds(accounts))
    except asyncio.CancelledError:
        conn.abort()  # no longer needed: a closing handshake would wait for a hung broker
        raise
    except BaseException:
        await conn.close()
        raise
    return conn, welcome, challenges


@contextlib.asynccontextmanager
async def _fetch_all(
    store: AccountStore,
    enough: Callable[[PendingReport], bool] | None = None,
    each: Callable[[list[PendingRequest]], None] | None = None,
) -> AsyncIterator[PendingReport]:
    """Ask every broker at once (a slow one does not delay the others); close all after.

    `enough`: once the brokers that answered so far satisfy it (the request to answer
    was found), the others are not waited for: a hung broker must not hold up a sign-in
    at another one for the whole connect timeout. Their connections are dropped.
    `each`: given each broker's requests (newest first) as soon as it answered, so that
    `pending` shows them while a hung broker is still waited for."""
    brokers = _accounts_or_fail(store)
    report = PendingReport([], [], [], asked=len(brokers))
    async with contextlib.AsyncExitStack() as stack:

        async def one(broker: str, accounts: list[Account]) -> None:
            try:
                conn, welcome, challenges = await _authenticated(store, broker, accounts)
            except AgentError as exc:
                report.failures.append(str(exc))
                report.unreachable.append(broker)
                return
            stack.push_async_callback(conn.close)
            report.notices.extend(apply_welcome(store, welcome))
            if (skew := conn.clock_warning()) is not None:
                report.notices.append(skew)
            by_cid = {a.cid: a for a in accounts}
            now = conn.broker_now_ms()
            shown = []
            for ch in challenges:
                if (why := misdirected(ch, by_cid.get(ch.cid), now)) is not None:
                    report.notices.append(f"{why}.")
                else:
                    shown.append(ch)
            found = []
            for ch in _dedupe(shown):
                cancel = conn.cancelled(ch.ch)
                if cancel is not None:  # ended while we connected: never offered
                    report.notices.append(f"Request {ch.ch} {cancel_message(cancel, by_cid)}.")
                    continue
                found.append(PendingRequest(ch, by_cid[ch.cid], now, conn))
            report.requests.extend(found)
            if each is not None and found:
                each(sorted(found, key=lambda r: r.challenge.created, reverse=True))
            report.recoveries.extend(PendingNotice(n, by_cid.get(n.cid), conn) for n in conn.notices)

        waiting = {asyncio.create_task(one(b, accs), name=f"ask {b}") for b, accs in brokers.items()}
        try:
            while waiting:
                _done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if enough is not None and enough(report):
                    break
        finally:
            for task in waiting:  # not needed any more (or we are cancelled ourselves)
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        report.requests.sort(key=lambda r: r.challenge.created, reverse=True)
        report.recoveries.sort(key=lambda r: (r.notice.time, r.notice.notice))
        yield report


async def pending(
    store: AccountStore, each: Callable[[list[PendingRequest]], None] | None = None
) -> PendingReport:
    """Every broker's pending requests; `each` gets each broker's as it answers."""
    async with _fetch_all(store, each=each) as report:
        return report


# -- answer ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerReport:
    request: PendingRequest
    outcome: str
    notices: list[str]


_T = TypeVar("_T")


MIN_PREFIX = 4  # characters of an id that pick an item by prefix


def _pick(items: list[_T], wanted: str, ident: Callable[[_T], str], what: str) -> _T | None:
    """The item `wanted` names exactly, or by a unique prefix (as git does) of at least
    MIN_PREFIX characters (a shorter one that names nothing: _missing)."""
    for item in items:
        if ident(item) == wanted:
            return item
    matches = [i for i in items if len(wanted) >= MIN_PREFIX and ident(i).startswith(wanted)]
    if len(matches) > 1:
        raise UsageError(f"{wanted!r} names several {what}: {', '.join(ident(m) for m in matches)}")
    return matches[0] if matches else None


def _check_id(wanted: str, what: str) -> None:
    """An id (or a prefix of one) must have the protocol's form (fields.IDENT) before any
    broker is asked: an empty or garbled one is a typing error, not a missing request."""
    try:
        fields.IDENT("id", wanted)
    except ProtocolError:
        shown_id = f"'{shown_clipped(wanted)}'" if wanted else "an empty id"
        raise UsageError(
            f"{shown_id} is not a {what} id (1 to 64 letters, digits, _ and -, as pending shows it); "
            "nothing was sent"
        ) from None


def _missing(report: PendingReport, wanted: str, why: str, what: str, code: ErrorCode) -> Exception:
    """Nothing by that id: refused, unless a broker could not be asked (it may be there).
    A prefix too short to pick by (`approve ch_`) is said to be so, not taken for an id
    that does not exist (exit 1 "never existed" while the request waited, seen in a trial).

    `why` says it does not exist, which only every broker answering can tell; `what`
    ("sign-in request ch_...") names it for when one could not be asked: then saying it
    was answered or never existed would send the user looking for a mistake they did not
    make, when the broker is simply down.
    """
    if not report.failures:
        if len(wanted) < MIN_PREFIX:
            return UsageError(
                f"{wanted!r} is too short to pick one by: give at least {MIN_PREFIX} characters of "
                "its id (as pending shows it); nothing was sent"
            )
        return Refused(why, code=code)
    unreachable = "; ".join(report.failures)
    if len(report.unreachable) >= report.asked:
        return Unreachable(f"{unreachable}: {what} could not be looked up; nothing was sent")
    return Unreachable(
        f"{what} is not at the brokers that answered, and {unreachable}: it may be waiting there;"
        " nothing was sent"
    )


async def answer(
    store: AccountStore, wanted: str, decision: Decision, number: str | None = None
) -> AnswerReport:
    """Find request `wanted` at the brokers and answer it. `number` None: none given
    (a deny or report, or the approval of a request without number matching, checked
    once the request is found); any number given must look like one an RP shows."""
    _check_id(wanted, "request")
    if number is not None:
        number = numbers.as_typed(number)  # as shown on the page: "856 825" is 856825
    if decision is Decision.APPROVE and number is not None and not NUMBER_RE.match(number):
        raise UsageError(
            f"the number must be the {numbers.MIN_DIGITS} to {numbers.MAX_DIGITS} digits "
            "shown on the sign-in screen"
        )

    # Found by its whole id at one broker: the others need not be waited for (a prefix
    # waits for all of them, as it might name a request at another one as well).
    def found(report: PendingReport) -> bool:
        return any(r.challenge.ch == wanted for r in report.requests)

    async with _fetch_all(store, found) as report:
        req = _pick(report.requests, wanted, lambda r: r.challenge.ch, "requests")
        if req is None:
            why = (
                f"no pending sign-in request {wanted} (it was answered, cancelled, replaced by a newer "
                "one, or has expired, or never existed)"
            )
            raise _missing(report, wanted, why, f"sign-in request {wanted}", ErrorCode.UNKNOWN_CHALLENGE)
        ch = req.challenge
        if decision is Decision.APPROVE and not ch.number_matching and number is not None:
            raise UsageError(
                f"request {ch.ch} has no number to type (the service shows none): approve it without "
                "--number, and only if you started that sign-in just now; nothing was sent"
            )
        if decision is Decision.APPROVE and ch.number_matching and len(number or "") != ch.digits:
            raise UsageError(f"request {ch.ch} expects the {ch.digits}-digit number on {number_source(ch)}")
        seed = store.seed(ch.cid)
        try:
            result = await req.conn.answer(ch, seed=seed, decision=decision, number=number or "")
        except Refused as exc:
            cancel = req.conn.cancelled(ch.ch)  # ended just before: say how
            if cancel is None:
                raise
            own = req.conn.session.credentials
            raise Refused(f"request {ch.ch} {cancel_message(cancel, own)}", code=exc.code) from None
        return AnswerReport(req, result.outcome, report.notices)


# -- "was this you?" after a recovery ----------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeReport:
    question: PendingNotice
    outcome: str
    notices: list[str]


async def answer_notice(store: AccountStore, wanted: str, decision: NoticeDecision) -> NoticeReport:
    """Find recovery notice `wanted` at the brokers and answer it: CONFIRM ("it was me")
    or DISOWN ("it was not": the new device's key is revoked and push is paused)."""
    _check_id(wanted, "recovery question")

    def found(report: PendingReport) -> bool:
        return any(q.notice.notice == wanted for q in report.recoveries)

    async with _fetch_all(store, found) as report:
        question = _pick(report.recoveries, wanted, lambda q: q.notice.notice, "recovery questions")
        if question is None:
            why = f"no open recovery question {wanted} (it was answered, withdrawn, or never existed)"
            raise _missing(report, wanted, why, f"recovery question {wanted}", ErrorCode.UNKNOWN_NOTICE)
        seed = store.seed(question.notice.cid)
        result = await question.conn.answer_notice(question.notice, seed=seed, decision=decision)
        return NoticeReport(question, result.outcome, report.notices)


# -- remove ------------------------------------------------------------------------


async def remove(store: AccountStore, name: str, *, local_only: bool = False) -> str:
    """Revoke an account at its broker, then forget its keys. Returns what happened."""
    entry = store.find_entry(name)
    if entry.account is None:
        store.remove(entry.name)
        return f'Removed "{shown(entry.name)}" (a verification-code account: nothing to revoke).'
    account = entry.account
    name, rp_name = shown(account.name), shown(account.rp_name)
    # Nothing to revoke below, but its verification-code secret (and a restored account's
    # unused recovery key) go too: said, since --yes skipped the question that says so.
    codes = "; its verification codes are gone from this device too" if entry.otp is not None else ""
    if account.status == ACTION_REQUIRED:  # restored, never re-activated: it has no key
        store.remove(account.name)
        never = "a restored push account that was never re-activated: nothing to revoke"
        return f'Forgot "{name}" ({never}{codes}).'
    if not account.active:
        store.remove(account.name)
        return f'Forgot "{name}" (it was already {shown(account.status_reason or account.status)}{codes}).'
    try:
        conn, _, _ = await _authenticated(store, account.broker, [account])
    except (Unreachable, InsecureBroker) as exc:  # an unencrypted URL: only --local-only helps
        if not local_only:
            raise Unreachable(
                f"{exc}; the account was NOT removed (it stays valid at {rp_name}). "
                "Retry later, or use --local-only to forget it here anyway."
            ) from None
        store.remove(account.name)
        return (
            f'Forgot "{name}" on this device only; the broker could not be reached, so '
            f"remove this device in {rp_name}'s security settings too."
        )
    async with conn:
        try:
            if account.cid in conn.session.credentials:
                await conn.revoke(account.cid)
                store.remove(account.name)
                return f'Removed "{name}": {rp_name} sends no more requests to this device.'
        except Refused as exc:
            if exc.code not in GONE_CODES:
                raise
    # The broker had already dropped it (refused at welcome, or revoked meanwhile).
    store.remove(account.name)
    return f'Forgot "{name}": the broker no longer knew it.'
