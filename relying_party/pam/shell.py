"""What both PAM shells (pam_module for libpam-python, `pushauth-pam exec` for pam_exec)
do around flow.authenticate: read the configuration, run the flow, write the audit
line, tell the person the outcome."""

from __future__ import annotations

import asyncio
import sys
import syslog
from pathlib import Path

from . import audit, flow
from .config import DEFAULT_PATH, ConfigError, load
from .core import Outcome


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
    try:
        decision = asyncio.run(flow.authenticate(config, request, conv, started))
    except Exception as exc:  # noqa: BLE001 - a PAM module must answer, never crash its host
        decision = flow.Decision(Outcome.CONFIG_ERROR, detail=f"{type(exc).__name__}: {exc}", started=started)
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
    _tell(conv, decision)
    return decision


def _tell(conv: flow.Conversation, decision: flow.Decision) -> None:
    if not decision.message:
        return
    if decision.allowed:
        conv.info(decision.message)
    else:
        conv.error(decision.message)
