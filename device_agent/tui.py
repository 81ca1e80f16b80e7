"""`pushauth-agent ui` (and `pushauth-agent` on a terminal): the authenticator screen.

Textual draws it: the account list with live codes and a countdown, like the phone
app; an incoming sign-in request opens a dialog with its context and a number
field; approve, deny or report from the keyboard. The broker connections are the
same Listener as `listen` (listen.py); only the asking and printing differ.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Log, Static

from protocol.frames import Decision

from . import otp_actions
from .display import request_text
from .errors import AgentError
from .listen import Listener, Request
from .store import ACTION_REQUIRED, REVOKED, AccountStore, StoreError

REFRESH_S = 1.0


class RequestScreen(ModalScreen[tuple[Decision, str] | None]):
    """One sign-in request: its details, the number field, approve / deny / report."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("ctrl+n", "deny", "Deny"),
        Binding("ctrl+r", "report", "Report: this wasn't me"),
        Binding("escape", "later", "Later"),
    ]
    DEFAULT_CSS = """
    RequestScreen { align: center middle; }
    #dialog { width: 72; height: auto; border: thick $accent; padding: 1 2; background: $surface; }
    #buttons { height: auto; margin-top: 1; }
    Button { margin-right: 1; }
    """

    def __init__(self, request: Request, details: str) -> None:
        super().__init__()
        self.request = request
        self.details = details

    def compose(self) -> ComposeResult:
        digits = self.request.challenge.digits
        with Vertical(id="dialog"):
            yield Static(self.details, id="details")
            yield Label(f"Type the {digits}-digit number shown on the sign-in screen, then Enter:")
            yield Input(placeholder="number", restrict=r"[0-9]*", max_length=digits, id="number")
            yield Label("", id="hint")
            with Horizontal(id="buttons"):
                yield Button("Approve", variant="success", id="approve")
                yield Button("Deny (Ctrl+N)", variant="warning", id="deny")
                yield Button("Not me (Ctrl+R)", variant="error", id="report")

    def on_mount(self) -> None:
        self.query_one("#number", Input).focus()

    def _approve(self) -> None:
        number = self.query_one("#number", Input).value
        digits = self.request.challenge.digits
        if len(number) != digits:
            self.query_one("#hint", Label).update(f"The number has {digits} digits.")
            return
        self.dismiss((Decision.APPROVE, number))

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._approve()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"approve": self._approve, "deny": self.action_deny, "report": self.action_report}[
            event.button.id or ""
        ]()

    def action_deny(self) -> None:
        self.dismiss((Decision.DENY, ""))

    def action_report(self) -> None:
        self.dismiss((Decision.FRAUD, ""))

    def action_later(self) -> None:
        self.dismiss(None)


class UiListener(Listener):
    """The Listener of `listen`, asking through the app instead of stdin."""

    def __init__(self, store: AccountStore, app: AgentApp) -> None:
        super().__init__(store, interactive=True)
        self.app = app

    def say(self, text: str) -> None:
        self.app.log_line(text)

    def _ask_next(self) -> None:
        if self.asking is not None or not self.requests:
            return
        ch, req = next(iter(self.requests.items()))
        self.asking = ch
        account = req.link.accounts.get(req.challenge.cid)
        self.app.ask(req, request_text(req.challenge, account, self._now(req.link)))

    def _drop(self, ch: str, why: str | None) -> None:
        if self.asking == ch and ch in self.requests:
            self.app.withdraw(ch)  # close its dialog before the next request is asked
        super()._drop(ch, why)

    async def answer(self, req: Request, decision: Decision, number: str) -> None:
        await self._answer(req, decision, number)

    def later(self, req: Request) -> None:
        """Put a request back at the end of the queue (asked again after the others)."""
        self.asking = None
        ch = req.challenge.ch
        if ch in self.requests:
            self.requests.move_to_end(ch)
        if len(self.requests) > 1:
            self._ask_next()


class AgentApp(App[int]):
    TITLE = "pushauth"
    SUB_TITLE = "sign-in requests and verification codes"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("q", "quit", "Quit"),
        Binding("a", "ask_again", "Show waiting request"),
    ]
    DEFAULT_CSS = """
    #accounts { height: 1fr; }
    #events { height: 8; border-top: solid $accent; }
    """

    def __init__(self, store: AccountStore) -> None:
        super().__init__()
        self.store = store
        self.listener = UiListener(store, self)
        self.dialog: RequestScreen | None = None
        self.answers: list[tuple[str, str]] = []  # (challenge id, decision) sent, for tests and people

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="accounts", cursor_type="row", zebra_stripes=True)
        yield Log(id="events")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one("#accounts", DataTable)
        table.add_columns("account", "code", "left", "status")
        self.refresh_accounts()
        self.set_interval(REFRESH_S, self.refresh_accounts)
        await self.listener.sync_links()
        if not self.listener.links:
            self.log_line("No push accounts yet: enroll one with pushauth-agent enroll URI.")
        self.run_worker(self.listener._watch_store(), exclusive=False, group="store")

    async def on_unmount(self) -> None:
        for link in list(self.listener.links.values()):
            await link.stop()

    # -- the account list ---------------------------------------------------------------

    def refresh_accounts(self) -> None:
        table = self.query_one("#accounts", DataTable)
        try:
            entries = self.store.entries()
        except StoreError as exc:
            self.log_line(str(exc))
            return
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        for entry in entries:
            code, left = "", ""
            if entry.otp is not None and entry.otp.kind == "totp":
                line = otp_actions.code_line(entry, entry.otp, now)
                code, left = line.code or "", f"{line.seconds_left} s"
            elif entry.otp is not None:
                code = "(HOTP)"
            status = "codes"
            if entry.account is not None:
                status = {
                    ACTION_REQUIRED: "ACTION REQUIRED: reactivate",
                    REVOKED: f"removed: {entry.account.status_reason or ''}",
                }.get(entry.account.status, "push")
            rows.append((entry.name, code, left, status))
        table.clear()
        for row in rows:
            table.add_row(*row)

    def log_line(self, text: str) -> None:
        self.query_one("#events", Log).write_line(text)

    # -- sign-in requests -----------------------------------------------------------------

    def ask(self, req: Request, details: str) -> None:
        self.dialog = RequestScreen(req, details)

        async def decided(choice: tuple[Decision, str] | None) -> None:
            self.dialog = None
            if choice is None:
                self.listener.later(req)
                return
            decision, number = choice
            self.answers.append((req.challenge.ch, str(decision)))
            try:
                await self.listener.answer(req, decision, number)
            except AgentError as exc:
                self.log_line(str(exc))

        self.push_screen(self.dialog, decided)

    def withdraw(self, ch: str) -> None:
        """The request being asked went away (answered elsewhere, expired, revoked)."""
        if self.dialog is not None and self.dialog.request.challenge.ch == ch:
            dialog, self.dialog = self.dialog, None
            if dialog.is_current:
                self.pop_screen()  # without its callback: there is nothing to answer

    def action_ask_again(self) -> None:
        if self.dialog is None:
            self.listener._ask_next()


def run_ui(store: AccountStore) -> int:
    store.load()  # a damaged vault or a wrong passphrase is reported before the screen opens
    return AgentApp(store).run() or 0
