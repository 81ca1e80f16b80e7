"""What both PAM shells (pam_module for libpam-python, `pushauth-pam exec` for pam_exec)
do around flow.authenticate: read the configuration, run the flow, write the audit
line, tell the person the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import syslog
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from . import audit, flow
from .config import DEFAULT_PATH, Config, ConfigError, load
from .core import Outcome
from .watchdog import Watchdog

T = TypeVar("T")


def decide(
    config_path: Path | None, request: flow.Request, conv: flow.Conversation, started: float
) -> flow.Decision:
    """Never raises: whatever goes wrong is a refusal with an audit line saying why."""
    path = config_path or DEFAULT_PATH
    try:
        config = load(path)
    except ConfigError as exc:
        decision = flow.Decision(Outcome.CONFIG_ERROR, detail=str(exc), started=started)
        # The whole reason on a line of its own (the audit line's values are cut short),
        # and both also on stderr: where sshd -e, pamtester and pam_exec's log put them
        # when no syslog daemon listens.
        for text in (
            f"configuration error: {exc}",
            audit.decision_line(decision.outcome, **decision.fields(request)),
        ):
            print(f"{audit.TAG}: {text}", file=sys.stderr, flush=True)
            audit.record(text, to_syslog=True, audit_file=None, priority=syslog.LOG_ERR)
        _tell(conv, decision)
        return decision
    watchdogs: list[Watchdog] = []

    def orphaned(underway: flow.Underway) -> None:
        # In the watchdog, after this process died mid-sign-in (sshd: the client went
        # away at a prompt): nobody will read an answer, so the push is withdrawn from the
        # devices, then the line is written.
        assert underway.challenge is not None
        problem = _in_new_thread(lambda: asyncio.run(flow.withdraw(config, underway.challenge)))
        ended = "the PAM process ended during the sign-in (the client went away)"
        decision = flow.Decision(
            Outcome.CANCELLED,
            underway.pushauth_user,
            underway.challenge.id,
            detail="; ".join(filter(None, (ended, problem))),
            started=started,
        )
        _record(config, request, decision)

    def watch(underway: flow.Underway) -> None:
        try:
            watchdogs.append(
                Watchdog.start(lambda: orphaned(underway), deadline=2 * config.request_timeout + 5)
            )
        except OSError as exc:  # no process to spare: the sign-in goes on unwatched
            audit.record(f"error: no watchdog for the push: {exc}", to_syslog=config.syslog, audit_file=None)

    underway = flow.Underway(on_push=watch)
    with _logs_to_audit(config):
        try:
            decision = asyncio.run(flow.authenticate(config, request, conv, started, underway))
        except Exception as exc:  # noqa: BLE001 - a PAM module must answer, never crash its host
            decision = flow.Decision(
                Outcome.CONFIG_ERROR, detail=f"{type(exc).__name__}: {exc}", started=started
            )
    for watchdog in watchdogs:
        watchdog.dismiss()
    _record(config, request, decision)
    _tell(conv, decision)
    return decision


class _AuditHandler(logging.Handler):
    """Log records of the sign-in (a SECURITY EVENT, a push that could not be cancelled
    or unblocked) as lines of their own where the audit lines go."""

    def __init__(self, config: Config) -> None:
        super().__init__(logging.WARNING)
        self.config = config

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = "".join(c if c.isprintable() else "?" for c in record.getMessage())
        except Exception:  # noqa: BLE001 - a bad log call must not decide a sign-in
            self.handleError(record)
            return
        audit.record(
            f"{record.levelname.lower()}: {text}",
            to_syslog=self.config.syslog,
            audit_file=self.config.audit_file,
            priority=syslog.LOG_ERR if record.levelno >= logging.ERROR else syslog.LOG_WARNING,
        )


@contextlib.contextmanager
def _logs_to_audit(config: Config) -> Iterator[None]:
    """Without a handler of ours, Python writes the records on the PAM process's stderr:
    the person's terminal under sudo or pamtester (an internal error, the user's handle,
    the broker's URL), and nowhere an administrator reads under a daemon sshd, whose PAM
    child's stderr is /dev/null. The watchdog, forked meanwhile, keeps the handler."""
    root = logging.getLogger()
    handler = _AuditHandler(config)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def _in_new_thread(work: Callable[[], T]) -> T:
    """Run `work` in a thread of its own: the watchdog is a fork taken inside this
    process's event loop, whose stale copy would refuse a new asyncio.run."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def _record(config: Config, request: flow.Request, decision: flow.Decision) -> None:
    text = audit.decision_line(decision.outcome, **decision.fields(request))
    if decision.outcome is Outcome.CONFIG_ERROR:
        # What the operator must fix, in full and where it is seen without syslog too.
        print(f"{audit.TAG}: error: {decision.detail}", file=sys.stderr, flush=True)
        audit.record(f"error: {decision.detail}", to_syslog=config.syslog, audit_file=config.audit_file)
    audit.record(
        text,
        to_syslog=config.syslog,
        audit_file=config.audit_file,
        priority=syslog.LOG_INFO if decision.allowed else syslog.LOG_NOTICE,
    )


def _tell(conv: flow.Conversation, decision: flow.Decision) -> None:
    if not decision.message:
        return
    if decision.allowed:
        conv.info(decision.message)
    else:
        conv.error(decision.message)
