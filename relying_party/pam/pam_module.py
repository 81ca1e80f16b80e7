"""The PAM module file that libpam-python (pam_python.so) loads:

    auth required pam_python.so /path/to/relying_party/pam/pam_module.py \
        site=/opt/pushauth/.venv/lib/python3.11/site-packages config=/etc/pushauth/pam.toml

pam_python runs the system Python (3.11 on Debian 12), not the virtual environment
pushauth is installed in; `site=` adds that environment's site-packages (and its .pth
files, so an editable install works too) before anything of pushauth is imported.
It must be the same Python minor version (the compiled wheels' ABI):
`pushauth-pam pam-line` prints the right line for this installation.

Only the standard library is imported at the top: this file is read by the system
Python before `site=` is applied.
"""

from __future__ import annotations

import site
import sys
import syslog
import time
from typing import Any


def _options(argv: list[str]) -> tuple[list[str], str | None]:
    sites: list[str] = []
    config: str | None = None
    for arg in argv[1:]:
        key, _, value = arg.partition("=")
        if key == "site" and value:
            sites.append(value)
        elif key == "config" and value:
            config = value
    return sites, config


class _PamConversation:
    """flow.Conversation over pam_python's handle."""

    interactive = True

    def __init__(self, pamh: Any) -> None:
        self.pamh = pamh

    def _send(self, style: int, text: str) -> str | None:
        try:
            response = self.pamh.conversation(self.pamh.Message(style, text))
        except self.pamh.exception:
            return None  # no conversation function, or the person went away
        return response.resp

    def prompt(self, text: str, *, echo: bool) -> str | None:
        return self._send(self.pamh.PAM_PROMPT_ECHO_ON if echo else self.pamh.PAM_PROMPT_ECHO_OFF, text)

    def info(self, text: str) -> None:
        self._send(self.pamh.PAM_TEXT_INFO, text)

    def error(self, text: str) -> None:
        self._send(self.pamh.PAM_ERROR_MSG, text)


def pam_sm_authenticate(pamh: Any, flags: int, argv: list[str]) -> int:
    started = time.monotonic()
    sites, config = _options(argv)
    for directory in sites:
        if directory not in sys.path:
            site.addsitedir(directory)
    try:
        from pathlib import Path

        from relying_party.pam import core, shell
        from relying_party.pam.flow import Request
    except Exception as exc:  # noqa: BLE001 - say why in the log, refuse, never crash sshd
        syslog.openlog("pushauth-pam", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        line = f'decision=deny outcome=config_error detail="cannot import pushauth ({exc}): check site="'
        syslog.syslog(syslog.LOG_ERR, line)
        print(f"pushauth-pam: {line}", file=sys.stderr, flush=True)
        return pamh.PAM_SERVICE_ERR
    try:
        user = pamh.get_user(None)
    except pamh.exception as exc:
        return exc.pam_result
    if not user:
        return pamh.PAM_USER_UNKNOWN
    request = Request(
        user=user, service=pamh.service or "-", rhost=pamh.rhost, tty=pamh.tty, ruser=pamh.ruser
    )
    decision = shell.decide(Path(config) if config else None, request, _PamConversation(pamh), started)
    return getattr(pamh, core.pam_result(decision.outcome))


def pam_sm_setcred(pamh: Any, flags: int, argv: list[str]) -> int:
    return pamh.PAM_SUCCESS
