"""`pushauth-agent listen`: stay connected, show sign-in requests, ask, answer.

One BrokerLink per broker URL keeps one connection with every credential of
that broker authenticated on it, and reconnects with exponential backoff and full
jitter. The Listener holds the requests waiting for the user, asks about them one
at a time (the newest first: it is the one whose number the sign-in page shows, and
a newer request usually replaced the older ones anyway, which are then dropped
with a message), then the open "was this you?" questions about recoveries of its
accounts (y/n), and prints what the brokers say. It also watches the
accounts file, so accounts enrolled or removed by other agent commands take effect
without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from protocol import numbers
from protocol.frames import (
    AnswerResult,
    Cancel,
    Challenge,
    Decision,
    Error,
    Frame,
    NoticeDecision,
    NoticeOutcome,
    RecoveryNotice,
    RecoveryResult,
    Revoked,
)
from protocol.purpose import purpose_of

from . import auto_backup_status, backup_actions, broker_clock, recovery_keys
from .actions import apply_welcome, misdirected
from .connection import Connection
from .display import (
    clock_time,
    notice_question,
    number_source,
    request_text,
    service_name,
    shown,
    shown_lines,
)
from .errors import AgentError, BrokerClosed, InsecureBroker
from .messages import (
    CONFIRM_REPORT,
    REVOKE_MESSAGES,
    cancel_message,
    error_message,
    notice_outcome_message,
    outcome_message,
    revoked_notice,
)
from .stdin_lines import StdinLines
from .store import Account, AccountStore, PassphraseChanged, StoreError

# docs/protocol.md, section 15: the n-th wait is drawn from [0, min(60 s, 1 s x 2^n)].
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
# The attempt number whose ceiling is the cap: where the backoff starts after a
# 4429 or 4408 close ("starting at its largest step").
BACKOFF_TOP_ATTEMPT = 6
# A connection that stayed up this long was healthy: the next drop starts the
# backoff from the beginning. Shorter ones (a broker that accepts then crashes)
# keep growing it, so thousands of devices do not hammer a failing broker.
HEALTHY_AFTER_S = 5.0
STORE_POLL_S = 1.0
# After stdin ends, wait this long for the results of answers already sent.
DRAIN_TIMEOUT_S = 5.0
NO_INPUT_HINT = (
    "To keep listening with no input to read answers from (in the background, or as a service),"
    " run: pushauth-agent listen --no-input (and answer with pushauth-agent approve or deny)"
)
# An answer not confirmed by then is said to be waiting (a stalled network, a lift): silence
# until keepalive gives up on the connection (up to 20 s) reads as a hang.
SLOW_ANSWER_S = 3.0


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter")."""
    return (rng or random).uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


@dataclass(slots=True)
class Request:
    challenge: Challenge
    link: BrokerLink


@dataclass(slots=True)
class Sent:
    """An answer sent, its result not yet seen: what is needed to send it again."""

    request: Request
    decision: Decision
    number: str
    sent: bool = True  # False: given while not connected, never sent yet


@dataclass(slots=True)
class Question:
    """ "Was this you?" after a new device restored one of this device's accounts."""

    notice: RecoveryNotice
    link: BrokerLink


class BrokerLink:
    """The connection to one broker, kept up until stopped."""

    def __init__(self, listener: Listener, url: str, accounts: list[Account]) -> None:
        self.listener = listener
        self.url = url
        self.accounts = {a.cid: a for a in accounts}
        self.conn: Connection | None = None
        # Why it stopped for good (a 44xx close, an unencrypted URL): it is not
        # restarted until its accounts change (docs/protocol.md, section 15).
        self.halted: str | None = None
        # When it was found not answering, with no healthy connection since (time.time()):
        # "not reachable since 10:32" tells a short blip from a broker down for hours.
        self.down_since: float | None = None
        self.task = asyncio.create_task(self._run(), name=f"link {url}")

    @property
    def cids(self) -> frozenset[str]:
        return frozenset(self.accounts)

    @property
    def services(self) -> str:
        """The services whose accounts this broker serves, as the user knows them."""
        return ", ".join(sorted({shown(a.rp_name) for a in self.accounts.values()})) or self.url

    def status(self) -> str | None:
        """This broker's state in a few words, or None while it is connected."""
        if self.conn is not None:
            return None
        if self.halted is not None:
            return "not connected: see the messages below"
        if self.down_since is not None:
            return f"not reachable since {clock_time(self.down_since)}, retrying"
        return "connecting"

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        say = self.listener.say
        attempt = 0
        while self.accounts:
            up_since: float | None = None
            try:
                conn = await Connection.open(self.url)
                broker_clock.record(self.listener.store.home, self.url, conn.clock_offset_ms)
                try:
                    seeds = self.listener.store.seeds(list(self.accounts.values()))
                    welcome, challenges = await conn.authenticate(seeds)
                    for notice in apply_welcome(self.listener.store, welcome):
                        say(notice)
                    for rej in welcome.rejected:
                        self.accounts.pop(rej["cid"], None)
                    if not welcome.accepted:
                        await self._leave(conn)
                        return
                    self.conn, up_since = conn, time.monotonic()
                    back = (
                        ""
                        if self.down_since is None
                        else f"; not reachable since {clock_time(self.down_since)}"
                    )
                    # down_since stays until the connection proves healthy (below): a broker
                    # that drops every connection at once has been unusable since then.
                    accounts = len(welcome.accepted)
                    say(f"Connected to {self.url} ({accounts} account{'' if accounts == 1 else 's'}{back}).")
                    self.listener.reached_broker()
                    if (skew := conn.clock_warning()) is not None:
                        say(f"Warning: {skew}.")
                    # Answers a broken connection left unconfirmed first: their results come
                    # before anything the new prompts ask.
                    await self.listener.resend(self)
                    self.listener.reconcile(self, challenges)
                    self.listener.reconcile_questions(self, conn.notices)
                    while self.accounts:
                        self.listener.on_frame(self, await conn.recv())
                    await self._leave(conn)  # every account here was revoked
                    return
                finally:
                    self.conn = None
                    self.listener.link_down(self)
                    await conn.close()
            except (AgentError, StoreError) as exc:
                if isinstance(exc, PassphraseChanged):
                    self.listener.vault_lost(exc)
                    return
                say(f"{exc}")
                if (why := _halts(exc)) is not None:
                    self.halted = why
                    say(f"Not reconnecting to {self.url}: {why}.")
                    self.listener._forget_link(self)  # its requests cannot be answered here
                    return
                if isinstance(exc, BrokerClosed) and exc.close_code in (4429, 4408):
                    attempt = max(attempt, BACKOFF_TOP_ATTEMPT)
            except Exception as exc:  # noqa: BLE001
                # A bug must not silently end the link to this broker (the others
                # live on); report it, and retry as after any failure.
                print(f"pushauth-agent: internal error on {self.url}: {exc!r}", file=sys.stderr, flush=True)
            if up_since is not None and time.monotonic() - up_since >= HEALTHY_AFTER_S:
                attempt = 0
                self.down_since = None
            delay = backoff_delay(attempt)
            attempt += 1
            if self.down_since is None:
                self.down_since = time.time()
            # Each broker on its own: the others' accounts work meanwhile.
            say(
                f"Reconnecting to {self.url} in {delay:.1f} s ({self.services}: not reachable since "
                f"{clock_time(self.down_since)})."
            )
            await asyncio.sleep(delay)

    async def _leave(self, conn: Connection) -> None:
        """No active account is left at this broker (removed, revoked or erased there):
        the connection is closed normally (1000), and not reopened until an account is
        added there (Listener.sync_links starts a new link then). The broker would keep
        it open, counted under its connection limits, for nothing (docs/protocol.md 15)."""
        await conn.close()
        self.listener.say(_left(self.url))


def _left(url: str) -> str:
    return f"No accounts left at {url}: disconnected."


def _halts(exc: AgentError | StoreError) -> str | None:
    """Why a failure ends a broker link instead of a reconnect, or None: after a 44xx
    close other than 4429/4408 a device must not resend the same frames by itself
    (docs/protocol.md, section 15); an unencrypted URL stays unencrypted."""
    if isinstance(exc, InsecureBroker):
        return "its URL is not encrypted (wss://); re-enroll the accounts there with a wss:// link"
    if exc.code == "unsupported_version" or (isinstance(exc, BrokerClosed) and exc.close_code == 4406):
        return "it speaks another protocol version: the broker or this agent must be upgraded"
    if isinstance(exc, BrokerClosed) and exc.final:
        return (
            f"it closed the connection with code {exc.close_code}; fix the cause, then restart listen "
            "(the other brokers stay connected)"
        )
    return None


class Listener:
    def __init__(
        self, store: AccountStore, *, interactive: bool, out: TextIO = sys.stdout, bell: bool = False
    ) -> None:
        self.store = store
        self.interactive = interactive
        self.out = out
        self.bell = bell  # ring the terminal's bell for each new request or question
        self.links: dict[str, BrokerLink] = {}
        self.requests: collections.OrderedDict[str, Request] = collections.OrderedDict()
        self.questions: collections.OrderedDict[str, Question] = collections.OrderedDict()
        self.asking: str | None = None  # a request's id, or a question's
        self.reporting: str | None = None  # the request whose "r" waits for its "y"
        self.in_flight: dict[str, BrokerLink] = {}  # answers sent, result not yet seen
        # The sign-in answers among them, kept across a dropped connection: they are sent
        # again once it is back (docs/protocol.md, section 8), not asked again.
        self.sent: dict[str, Sent] = {}
        # Those of them with an agreed purpose (a setup's test notification, a "verify it's
        # you", docs/protocol.md 15.1) -> that purpose: their result is worded so.
        self.purposes: dict[str, str] = {}
        # (broker URL, rid) of each recovery answer sent -> its notice id
        self.question_rids: dict[tuple[str, int], RecoveryNotice] = {}
        self.stopping = asyncio.Event()
        self.drained = asyncio.Event()
        self._store_version: tuple[int, int, int] | None = None
        self.chores: set[asyncio.Task[None]] = set()  # work a stop waits for (after_disown)
        self.retrying_backup = False  # an automatic backup is being written again
        self.checked_backup = False  # its copy was compared with what was last stored
        self.failure: PassphraseChanged | None = None  # why listening stopped by itself

    def say(self, text: str) -> None:
        print(shown_lines(text), file=self.out, flush=True)

    def vault_lost(self, exc: PassphraseChanged) -> None:
        """The vault's passphrase changed under us: no key can be read any more, so no
        answer could be signed. Stop (the command then fails with `exc`) rather than
        show requests nobody can answer here."""
        self.failure = exc
        self.stopping.set()

    # -- accounts -> links -----------------------------------------------------

    async def sync_links(self) -> None:
        """Start, restart or stop links so they match the active accounts."""
        self._store_version = self.store.version()
        wanted = self.store.by_broker()
        for url, link in list(self.links.items()):
            halted_as_is = link.halted is not None and link.cids == {a.cid for a in wanted.get(url, [])}
            if halted_as_is:
                continue  # stopped for good: only a change of its accounts restarts it
            if link.task.done() or url not in wanted or link.cids != {a.cid for a in wanted[url]}:
                running = not link.task.done()  # else it ended, and said why
                await link.stop()
                del self.links[url]
                self._forget_link(link, restarted=url in wanted)
                if running and url not in wanted:  # removed here before the broker told the link
                    self.say(_left(url))
        for url, accounts in wanted.items():
            if url not in self.links:
                self.links[url] = BrokerLink(self, url, accounts)

    async def _watch_store(self) -> None:
        while True:
            await asyncio.sleep(STORE_POLL_S)
            if self.store.version() != self._store_version:
                try:
                    await self.sync_links()
                except PassphraseChanged as exc:
                    self.vault_lost(exc)
                except StoreError as exc:
                    self.say(f"{exc}")
            self._expire()

    def link_down(self, link: BrokerLink) -> None:
        """Answers sent on a broken connection may or may not have been recorded: a
        sign-in answer is sent again after reconnecting (an answer the broker already
        recorded then gets its outcome, docs/protocol.md section 8), unless listening
        stops; a recovery answer's outcome comes as a `recovery_result` on connect."""
        for key in [k for k in self.question_rids if k[0] == link.url]:
            del self.question_rids[key]
        for ch in [ch for ch, sent_on in self.in_flight.items() if sent_on is link]:
            if self.stopping.is_set():
                self._unsent(ch, "listening stopped")
            elif ch in self.sent:
                self.say(
                    f"Request {ch}: the connection broke before the broker confirmed the answer; "
                    "it will be sent again once reconnected."
                )
            else:
                self._unsent(ch, "the connection broke")
        self._check_drained()

    def _forget_answer(self, ch: str) -> Sent | None:
        self.in_flight.pop(ch, None)
        self.purposes.pop(ch, None)
        return self.sent.pop(ch, None)

    def _unsent(self, ch: str, why: str) -> None:
        """Give up on the answer to `ch` (`why`: what happened): say what is known of it."""
        sent = self._forget_answer(ch)
        if sent is None:  # a recovery answer: its outcome comes as a recovery_result
            self.say(
                f"Request {ch}: {why} before the broker confirmed the answer; if it is still pending "
                "it will be asked again."
            )
        elif sent.sent:
            self.say(
                f"Request {ch}: {why} before the broker confirmed the answer; whether it was recorded "
                "is unknown (the sign-in page shows it)."
            )
        else:
            self.say(f"Request {ch}: {why} before the answer could be sent; nothing was recorded.")

    async def resend(self, link: BrokerLink) -> None:
        """After (re)connecting: send again the answers whose result a broken connection
        lost (signed again, same decision and number: an idempotent retry), promptly, as
        the challenge may expire (a retry after expiry gets `challenge_expired` even when
        the first answer was recorded, so an expired one is not sent: its fate is unknown)."""
        conn = link.conn
        for ch, sent in list(self.sent.items()):
            if sent.request.link.url != link.url or conn is None:
                continue
            sent.request.link = link
            self.in_flight[ch] = link
            if conn.broker_now_ms() >= sent.request.challenge.expires:
                self._unsent(ch, "it expired")
                continue
            try:
                seed = self.store.seed(sent.request.challenge.cid)
                frame = conn.answer_frame(
                    sent.request.challenge, seed=seed, decision=sent.decision, number=sent.number
                )
            except (AgentError, StoreError) as exc:
                self._unsent(ch, f"it could not be signed ({exc})")
                if isinstance(exc, PassphraseChanged):
                    self.vault_lost(exc)
                    return
                continue
            try:
                await conn.send(frame)
            except AgentError:
                return  # broken again: link_down keeps it for the next connection
            self.say(f"Request {ch}: answer sent{' again' if sent.sent else ''} ({sent.decision}).")
            sent.sent = True
        self._check_drained()

    def _forget_link(self, link: BrokerLink, *, restarted: bool = False) -> None:
        """`restarted`: a new link to the same broker replaces it (its accounts changed),
        which sends again the answers this one could not confirm."""
        for ch in [ch for ch, req in self.requests.items() if req.link is link]:
            self._drop(ch, None)
        if not restarted:
            for ch in [ch for ch, sent in self.sent.items() if sent.request.link is link]:
                self._unsent(ch, f"no connection to {link.url} any more")
        for nid in [nid for nid, q in self.questions.items() if q.link is link]:
            self._drop_question(nid, None)

    # -- requests ------------------------------------------------------------------

    def _now(self, link: BrokerLink) -> int:
        return link.conn.broker_now_ms() if link.conn else int(time.time() * 1000)

    def reconcile(self, link: BrokerLink, challenges: list[Challenge]) -> None:
        """After (re)connecting, the broker's pending list is the truth for this link."""
        fresh = {ch.ch for ch in challenges}
        for ch, req in list(self.requests.items()):
            if req.link is link and ch not in fresh:
                self._drop(ch, "is no longer pending")
        for challenge in challenges:  # all of them first: the newest is asked first
            self._add(link, challenge, ask=False)
        self._ask_next()

    def _add(self, link: BrokerLink, challenge: Challenge, *, ask: bool = True) -> None:
        # One request reaches each credential of the user: show it once.
        if challenge.ch in self.requests or challenge.ch in self.in_flight:
            return
        if (why := misdirected(challenge, link.accounts.get(challenge.cid), self._now(link))) is not None:
            self.say(f"{why}.")  # never shown nor answered (docs/protocol.md, section 18.2)
            return
        self.requests[challenge.ch] = Request(challenge, link)
        self.alert()
        if not self.interactive:
            # Output-only: show it at once; another command answers it.
            self._show(self.requests[challenge.ch])
            how = "--number N" if challenge.number_matching else "(no number to type)"
            self.say(f"Answer with: pushauth-agent approve {challenge.ch} {how}  (or: deny {challenge.ch})")
        elif self.asking is not None:
            service = service_name(challenge, link.accounts.get(challenge.cid))
            self.say(f"Another sign-in request ({service}) is waiting; it comes next.")
        if ask:
            self._ask_next()

    def alert(self) -> None:
        """Something new to answer: the terminal's bell (BEL), which terminals turn into
        a sound, a flash, a mark on the tab or an urgent window, so that a person in
        their browser hears of the request the sign-in page waits on."""
        if self.bell:
            self.out.write("\a")
            self.out.flush()

    def _drop(self, ch: str, why: str | None) -> None:
        if self.requests.pop(ch, None) is None:
            return
        if why is not None:
            self.say(f"Request {ch} {why}.")
        if self.asking == ch:
            self.asking = self.reporting = None
            if why is not None:
                self.say("No answer is needed for it any more.")
            self._ask_next()

    def _expire(self) -> None:
        for ch, req in list(self.requests.items()):
            if self._now(req.link) >= req.challenge.expires:
                self._drop(ch, "expired")

    def _show(self, req: Request) -> None:
        account = req.link.accounts.get(req.challenge.cid)
        self.say("")
        self.say(request_text(req.challenge, account, self._now(req.link)))

    def _ask_next(self) -> None:
        if not self.interactive or self.asking is not None:
            return
        if self.requests:  # sign-in requests expire within minutes: they go first
            ch, req = self._newest()
            self._show(req)
            self.asking = ch
            self._prompt(req.challenge)
        elif self.questions:
            nid, question = next(iter(self.questions.items()))
            self.asking = nid
            self._show_question(question)

    def _newest(self) -> tuple[str, Request]:
        """The request to ask about next: the one made last (by its creation time; the
        broker re-sends pending ones after a reconnect in no promised order), of equal
        ones the last that came."""
        items = list(self.requests.items())
        return max(reversed(items), key=lambda item: item[1].challenge.created)

    # -- "was this you?" after a recovery ------------------------------------------

    def reconcile_questions(self, link: BrokerLink, notices: list[RecoveryNotice]) -> None:
        """After (re)connecting, the broker's open notices are the truth for this link."""
        fresh = {n.notice for n in notices}
        for nid, question in list(self.questions.items()):
            if question.link is link and nid not in fresh:
                self._drop_question(nid, "is no longer open")
        for notice in notices:
            self._add_question(link, notice)

    def _add_question(self, link: BrokerLink, notice: RecoveryNotice) -> None:
        if notice.notice in self.questions or notice.notice in self.in_flight:
            return
        self.questions[notice.notice] = Question(notice, link)
        self.alert()
        if not self.interactive:
            self._show_question(self.questions[notice.notice])
            self.say(
                f"Answer with: pushauth-agent recovery confirm {notice.notice}  "
                f"(or, if it was not you: recovery disown {notice.notice})"
            )
        elif self.asking is not None:
            self.say("A recovery question is waiting too; it comes next.")
        self._ask_next()

    def _show_question(self, question: Question) -> None:
        account = question.link.accounts.get(question.notice.cid)
        service = f" ({account.rp_name})" if account else ""
        self.say("")
        self.say(f"Recovery question {question.notice.notice}{service}")
        self.say(notice_question(question.notice, account))

    def _drop_question(self, nid: str, why: str | None) -> None:
        if self.questions.pop(nid, None) is None:
            return
        if why is not None:
            self.say(f"Recovery question {nid} {why}.")
        if self.asking == nid:
            self.asking = None
            self._ask_next()

    async def _answer_question(self, question: Question, decision: NoticeDecision) -> None:
        nid = question.notice.notice
        self.questions.pop(nid, None)
        self.asking = None
        conn = question.link.conn
        try:
            if conn is None:
                raise AgentError(
                    f"not connected to {question.link.url}; it will be asked again after reconnecting"
                )
            seed = self.store.seed(question.notice.cid)
            frame = conn.recovery_answer_frame(question.notice, seed=seed, decision=decision)
            self.in_flight[nid] = question.link
            self.question_rids[(question.link.url, frame.rid)] = question.notice
            await conn.send(frame)
            self.say(f"Recovery question {nid}: answer sent ({decision}).")
        except (AgentError, StoreError) as exc:
            self.in_flight.pop(nid, None)
            self.say(f"Recovery question {nid}: the answer was not sent: {exc}.")
            if isinstance(exc, PassphraseChanged):
                self.vault_lost(exc)
                return
        self._ask_next()

    def _question_result(self, link: BrokerLink, frame: RecoveryResult) -> None:
        notice = None if frame.rid is None else self.question_rids.pop((link.url, frame.rid), None)
        if notice is not None:
            self.in_flight.pop(frame.notice, None)
            self.say(f"Recovery question {frame.notice}: {notice_outcome_message(frame.outcome)}.")
            if frame.outcome == NoticeOutcome.DISOWNED:
                self._after_disown()
            elif frame.outcome == NoticeOutcome.CONFIRMED:
                self._after_confirm(notice)
            self._check_drained()
        else:  # answered by another command or device, or withdrawn
            self._drop_question(frame.notice, f"was closed: {notice_outcome_message(frame.outcome)}")

    def _after_disown(self) -> None:
        """Someone else restored our backup: new recovery keys (recovery_keys), a new
        backup code, and the broker's old copy deleted (backup_actions.after_secret_change;
        blocking HTTP, so in a thread)."""

        def work(lines: list[str]) -> None:
            rotation = recovery_keys.rotate_recovery_keys(self.store)
            lines += [*rotation.lines(), *rotation.failures]
            report = backup_actions.after_secret_change(self.store, backup_actions.DISOWN)
            lines += [*report.text(), *report.failures]

        self._chore("after disown", work, "The backups were not renewed after the disowned recovery")

    def _after_confirm(self, notice: RecoveryNotice) -> None:
        """ "Yes, it was me": the restore used this account's recovery key, so it gets a
        new one and the backups are rewritten with it (recovery_keys.after_confirm;
        blocking HTTP, so in a thread)."""

        def work(lines: list[str]) -> None:
            rotation, rewritten = recovery_keys.after_confirm(self.store, notice)
            lines += [*rotation.lines(), *rotation.failures]
            if rewritten is not None:
                lines += [*rewritten.text(), *rewritten.failures]

        self._chore("after confirm", work, "The recovery key was not renewed after the confirmed recovery")

    def reached_broker(self) -> None:
        """A broker answered: an automatic backup that failed (the broker was down) is
        written now, not at the next change (backup_actions.retry_auto_backup). Once per
        run, one that did not fail is compared with its copy, which a broker restored from
        an older copy of its data lost in silence (backup_actions.repair_auto_backup)."""
        behind = auto_backup_status.read(self.store.home).behind
        if self.retrying_backup or (not behind and self.checked_backup):
            return
        self.retrying_backup = True
        self.checked_backup = True

        def work(lines: list[str]) -> None:
            try:
                line = backup_actions.retry_auto_backup(self.store) or backup_actions.repair_auto_backup(
                    self.store
                )
                if line is not None:
                    lines.append(line)
            finally:
                self.retrying_backup = False

        self._chore("auto backup", work, "The automatic backup was not written again")

    def _chore(self, name: str, work: Callable[[list[str]], None], failure: str) -> None:
        """Blocking work (HTTP, Argon2id) in a thread; the lines it adds are said when it
        ends (on this loop: the screen's log is not thread-safe), and a stop waits for it."""

        async def run() -> None:
            lines: list[str] = []
            try:
                await asyncio.to_thread(work, lines)
            except (AgentError, StoreError) as exc:
                lines.append(f"{failure}: {exc}")
            finally:
                for line in lines:
                    self.say(line)
                self.chores.discard(task)
                self._check_drained()

        task = asyncio.create_task(run(), name=name)
        self.chores.add(task)

    def _prompt(self, challenge: Challenge) -> None:
        if not challenge.number_matching:
            self.say(
                "This request has no number to compare: approve only a sign-in you started just now. "
                'Type "a" to approve, "n" to deny, or "r" to report "this wasn\'t me":'
            )
            return
        self.say(
            f"Type the {challenge.digits}-digit number shown on {number_source(challenge)}, "
            '"n" to deny, or "r" to report "this wasn\'t me":'
        )

    # -- frames from brokers -------------------------------------------------------

    def on_frame(self, link: BrokerLink, frame: Frame) -> None:
        if isinstance(frame, Challenge):
            self._add(link, frame)
        elif isinstance(frame, Cancel):
            self._drop(frame.ch, cancel_message(frame, link.accounts))
        elif isinstance(frame, AnswerResult):
            self.in_flight.pop(frame.ch, None)
            self.sent.pop(frame.ch, None)
            purpose = self.purposes.pop(frame.ch, None)
            self.say(f"Request {frame.ch}: {outcome_message(frame.outcome, purpose=purpose)}.")
            self._check_drained()
        elif isinstance(frame, RecoveryNotice):
            self._add_question(link, frame)
        elif isinstance(frame, RecoveryResult):
            self._question_result(link, frame)
        elif isinstance(frame, Error):
            sent = (
                self.question_rids.pop((link.url, int(frame.ref)), None)
                if (frame.ref or "").isdigit()
                else None
            )
            if sent is not None:
                nid = sent.notice
                self.in_flight.pop(nid, None)
                self.say(
                    f"Recovery question {nid}: the answer was not recorded: {error_message(frame.code)}."
                )
                self._check_drained()
            elif frame.ref is not None and self.in_flight.pop(frame.ref, None) is not None:
                self.sent.pop(frame.ref, None)
                self.say(f"Request {frame.ref}: the answer was not recorded: {error_message(frame.code)}.")
                self._check_drained()
            else:
                self.say(f"{link.url}: {error_message(frame.code, frame.message)}")
        elif isinstance(frame, Revoked):
            self._revoked(link, frame)

    def _revoked(self, link: BrokerLink, frame: Revoked) -> None:
        known = link.accounts.pop(frame.cid, None)
        reason = REVOKE_MESSAGES.get(frame.reason, frame.reason)
        # None when `remove` in another process already forgot it.
        account = self.store.mark_revoked(frame.cid, reason) or known
        if account is not None:
            self.say(revoked_notice(account.name, account.rp_name, reason))
        else:
            self.say(revoked_notice(frame.cid, None, reason))
        for ch, req in list(self.requests.items()):
            if req.challenge.cid == frame.cid:
                self._drop(ch, "was withdrawn: its account was removed")
        for nid, question in list(self.questions.items()):
            if question.notice.cid == frame.cid:
                self._drop_question(nid, "was withdrawn: its account was removed")

    # -- answers from the user -----------------------------------------------------

    async def on_line(self, line: str) -> None:
        text = line.strip().lower()
        if self.asking is None:
            if text:
                self.say("No sign-in request is waiting for an answer; input ignored.")
            return
        question = self.questions.get(self.asking)
        if question is not None:
            if text in ("y", "yes"):
                await self._answer_question(question, NoticeDecision.CONFIRM)
            elif text in ("n", "no"):
                await self._answer_question(question, NoticeDecision.DISOWN)
            else:
                self.say('Type "y" if you restored this account on a new device, or "n" if not.')
            return
        req = self.requests[self.asking]
        if self.reporting is not None:
            confirmed, self.reporting = self.reporting == self.asking and text in ("y", "yes"), None
            if confirmed:
                await self._answer(req, Decision.FRAUD, "")
            else:
                self.say("Not reported.")
                self._prompt(req.challenge)
            return
        if text in ("n", "no", "deny"):
            await self._answer(req, Decision.DENY, "")
        elif text in ("r", "report"):
            self.reporting = req.challenge.ch  # one keystroke must not report: ask first
            self.say(f"{CONFIRM_REPORT} [y/N]")
        elif not req.challenge.number_matching:
            # No number to type: an explicit word approves, anything else asks again.
            if text in ("a", "approve"):
                await self._answer(req, Decision.APPROVE, "")
            else:
                if text:
                    self.say("That is not a, n or r.")
                self._prompt(req.challenge)
        elif (
            (typed := numbers.as_typed(text)).isdigit()
            and typed.isascii()
            and len(typed) == req.challenge.digits
        ):
            await self._answer(req, Decision.APPROVE, typed)  # "85 68", or full-width digits, as 8568
        else:
            if text:
                self.say(f"That is not a {req.challenge.digits}-digit number, n or r.")
            self._prompt(req.challenge)

    async def _answer(self, req: Request, decision: Decision, number: str) -> None:
        ch = req.challenge.ch
        self.requests.pop(ch, None)
        self.asking = None
        conn = req.link.conn
        if conn is None:
            # Between connections (a lift, a train): the answer waits for the next one,
            # sent then (resend), rather than be refused and asked again after it.
            self.in_flight[ch] = req.link
            self.sent[ch] = Sent(req, decision, number, sent=False)
            if (purpose := purpose_of(req.challenge.ctx)) is not None:
                self.purposes[ch] = purpose
            self.say(
                f"Request {ch}: not connected to {req.link.url} now; the answer ({decision}) is sent "
                "once reconnected."
            )
            self._ask_next()
            return
        try:
            seed = self.store.seed(req.challenge.cid)
            frame = conn.answer_frame(req.challenge, seed=seed, decision=decision, number=number)
            self.in_flight[ch] = req.link
            self.sent[ch] = sent = Sent(req, decision, number)
            if (purpose := purpose_of(req.challenge.ctx)) is not None:
                self.purposes[ch] = purpose
            await conn.send(frame)
            self.say(f"Request {ch}: answer sent ({decision}).")
            asyncio.get_running_loop().call_later(SLOW_ANSWER_S, self._still_waiting, ch, sent)
        except (AgentError, StoreError) as exc:
            self.in_flight.pop(ch, None)
            self.sent.pop(ch, None)
            self.say(f"Request {ch}: the answer was not sent: {exc}.")
            if isinstance(exc, PassphraseChanged):
                self.vault_lost(exc)
                return
        self._ask_next()

    def _still_waiting(self, ch: str, sent: Sent) -> None:
        if self.sent.get(ch) is sent and sent.request.link.conn is not None:
            self.say(
                f"Request {ch}: the broker has not confirmed the answer yet (a slow or interrupted "
                "connection); if the connection breaks, it is sent again once reconnected."
            )

    def _check_drained(self) -> None:
        if not self.in_flight and not self.chores:
            self.drained.set()

    # -- main loop -----------------------------------------------------------------

    async def _read_input(self) -> None:
        lines = StdinLines()
        read = 0
        while (line := await lines.get()) is not None:
            read += 1
            await self.on_line(line)
        # Stdin ended: nobody can answer any more. Wait briefly for results of
        # answers already sent (a script pipes "42" and closes), then stop.
        if self.in_flight:
            self.drained.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await self.drained.wait()
        self.say("Input ended; stopping.")
        if not read:
            # Started with no input at all (`&`, nohup, a service with stdin closed):
            # it stopped at once, which is not what anyone starting it that way wants.
            self.say(NO_INPUT_HINT)
        self.stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.sync_links()
        if not self.links:
            self.say("No active accounts yet; waiting for one (add one with: pushauth-agent enroll URI).")
        tasks = [asyncio.create_task(self._watch_store())]
        if self.interactive:
            tasks.append(asyncio.create_task(self._read_input()))
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            for link in self.links.values():
                await link.stop()
            self.say("Stopped.")
        if self.failure is not None:
            raise self.failure  # the command fails with it (exit 2)
        return 0


async def listen(store: AccountStore, *, interactive: bool, bell: bool = False) -> int:
    return await Listener(store, interactive=interactive, bell=bell).run()
