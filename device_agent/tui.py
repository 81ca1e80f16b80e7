"""`pushauth-agent ui` (and `pushauth-agent` on a terminal): the authenticator screen.

Textual draws it: the account list with live codes and a countdown, like the phone
app; an incoming sign-in request opens a dialog with its context and a number
field; approve, deny or report from the keyboard. A "was this you?" question after
a new device restored one of the accounts opens its own dialog (y / n). As on a
phone, accounts are added (+: a link, a screenshot of a QR code, an export), their
codes copied (c), renamed (r), removed (d), and a restored one re-activated (Enter). The broker connections
are the same Listener as `listen` (listen.py); only the asking and printing differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, RichLog, Static
from textual.widgets.data_table import ColumnKey

from protocol.frames import Decision, NoticeDecision

from . import actions, adding, links, otp_actions
from .display import local_time, number_source, request_text, shown, shown_lines
from .errors import AgentError
from .listen import Listener, Question, Request
from .messages import CONFIRM_REPORT, removal_loss
from .store import ACTION_REQUIRED, REVOKED, AccountStore, Entry, PassphraseChanged, StoreError

REFRESH_S = 1.0
W = TypeVar("W", bound=Widget)


class RequestScreen(ModalScreen[tuple[Decision, str] | None]):
    """One sign-in request: its details, the number field, approve / deny / report."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("ctrl+n", "deny", "Deny"),
        Binding("ctrl+r", "report", "Report: this wasn't me (asks first)"),
        Binding("escape", "later", "Later"),
    ]
    DEFAULT_CSS = """
    RequestScreen { align: center middle; }
    #dialog {
        width: 72; max-width: 100%; height: auto; border: thick $accent; padding: 1 2; background: $surface;
    }
    #details-box { height: auto; }
    #prompt { width: 100%; }
    #buttons { height: auto; margin-top: 1; }
    Button { margin-right: 1; }
    RequestScreen.-small #dialog { height: 100%; padding: 0 1; }
    RequestScreen.-small #details-box { height: 1fr; }
    RequestScreen.-small #buttons { margin-top: 0; }
    RequestScreen.-small Button { min-width: 0; width: auto; }
    """
    # Rows the dialog needs besides its details: borders, padding, the prompt, the
    # number field, the hint and the buttons at their full size.
    FRAME_ROWS = 14
    FULL_WIDTH = 74
    # Button labels, full and small (a 40-column terminal holds all three of these).
    LABELS: ClassVar[dict[str, tuple[str, str]]] = {
        "approve": ("Approve", "Approve"),
        "deny": ("Deny (Ctrl+N)", "Deny ^N"),
        "report": ("Not me (Ctrl+R)", "Not me ^R"),
    }

    def __init__(self, request: Request, details: Callable[[], str]) -> None:
        super().__init__()
        self.request = request
        self.details = details  # called again each second: "expires in" counts down

    def compose(self) -> ComposeResult:
        digits, source = self.request.challenge.digits, number_source(self.request.challenge)
        with Vertical(id="dialog"):
            # Plain text, never markup: the context is whatever the sign-in page was
            # told ("[/]" in a browser string crashed the screen, "[bold]" restyled it).
            # In its own scroll box: on a small terminal the details scroll, while the
            # number field and the buttons stay on screen (SMALL_SCREEN_CSS).
            with VerticalScroll(id="details-box"):
                yield Static(self.details(), id="details", markup=False)
            if self.request.challenge.number_matching:
                yield Label(f"Type the {digits}-digit number shown on {source}, then Enter:", id="prompt")
                yield Input(placeholder="number", restrict=r"[0-9]*", max_length=digits, id="number")
            else:
                # No number field at all: there is nothing to compare, so the only check
                # left is the person's own (docs/protocol.md section 15).
                yield Label(
                    "No number to compare for this request: approve only a sign-in you started just now.",
                    id="prompt",
                )
            yield Label("", id="hint")
            with Horizontal(id="buttons"):
                for key, variant in (("approve", "success"), ("deny", "warning"), ("report", "error")):
                    yield Button(self.LABELS[key][0], variant=variant, id=key)

    def on_mount(self) -> None:
        if self.request.challenge.number_matching:
            self.query_one("#number", Input).focus()
        else:  # its buttons are mounted after this screen: focus Approve once they are
            self.call_after_refresh(lambda: self.query_one("#approve", Button).focus())
        self.set_interval(1.0, self._tick)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """On a terminal too small for the whole dialog (40x12, a split pane) it fills the
        screen with compact fields and buttons, and only the details scroll: the number
        field and the buttons stay in view (a dialog 72 wide cut off its buttons, and one
        taller than the screen cut off the service and account at its top)."""
        rows = len(self.details().splitlines()) + self.FRAME_ROWS
        small = self.size.height < rows or self.size.width < self.FULL_WIDTH
        self.set_class(small, "-small")
        for field in self.query("#number").results(Input):
            field.compact = small
        for button in self.query(Button):
            button.compact = small
            button.label = self.LABELS[button.id or ""][small]

    def _tick(self) -> None:
        self.query_one("#details", Static).update(self.details())

    def _approve(self) -> None:
        if not self.request.challenge.number_matching:
            self.dismiss((Decision.APPROVE, ""))  # the empty number, signed (section 12)
            return
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
        # One keystroke must not report: it pauses push for the account at the service.
        def decided(sure: bool | None) -> None:
            if sure and self.is_current:
                self.dismiss((Decision.FRAUD, ""))

        self.app.push_screen(ReportScreen(), decided)

    def action_later(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A question that cannot be taken back, over whatever asked it: y does it, anything
    else goes back."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("y", "yes", "Yes"),
        Binding("n", "back", "No"),
        Binding("escape", "back", "No"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    #confirm-dialog {
        width: 64; max-width: 100%; height: auto; border: thick $error; padding: 1 2; background: $surface;
    }
    #confirm-buttons { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 1; }
    """

    def __init__(self, question: str, yes: str) -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(self.question, id="confirm-question", markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_back(self) -> None:
        self.dismiss(False)


class ReportScreen(ConfirmScreen):
    """ "Report this sign-in as not you?" over the request dialog."""

    def __init__(self) -> None:
        super().__init__(f"{CONFIRM_REPORT}.", "Yes, report it")


class NoticeScreen(ModalScreen[NoticeDecision | None]):
    """ "Was this you?": a new device restored one of this device's accounts."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("y", "confirm", "Yes, it was me"),
        Binding("n", "disown", "No, not me"),
        Binding("escape", "later", "Later"),
    ]
    DEFAULT_CSS = """
    NoticeScreen { align: center middle; }
    #notice-dialog {
        width: 72; max-width: 100%; height: auto; border: thick $error; padding: 1 2; background: $surface;
    }
    #notice-buttons { height: auto; margin-top: 1; }
    NoticeScreen Button { margin-right: 1; }
    """

    def __init__(self, question: Question, account: str, service: str) -> None:
        super().__init__()
        self.question = question
        notice = question.notice
        self.details = (
            f"A new device '{shown(notice.new_name)}' restored your account {account}{service} "
            f"at {local_time(notice.time)}.\n\nWas this you?\n\n"
            "If not, someone has your backup and its passphrase: No removes that device's key "
            "at once and pauses push sign-in until the service lifts it."
        )

    def compose(self) -> ComposeResult:
        with Vertical(id="notice-dialog"):
            yield Static(self.details, id="notice-details", markup=False)
            with Horizontal(id="notice-buttons"):
                yield Button("Yes, it was me (y)", variant="success", id="confirm")
                yield Button("No, not me (n)", variant="error", id="disown")
                yield Button("Later (Esc)", id="later")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"confirm": self.action_confirm, "disown": self.action_disown, "later": self.action_later}[
            event.button.id or ""
        ]()

    def action_confirm(self) -> None:
        self.dismiss(NoticeDecision.CONFIRM)

    def action_disown(self) -> None:
        self.dismiss(NoticeDecision.DISOWN)

    def action_later(self) -> None:
        self.dismiss(None)


class InputScreen(ModalScreen[list[str] | None]):
    """One line of text for an action that may be refused: the refusal is shown in the
    dialog, which stays open to correct it; done, it closes with what to log."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    InputScreen { align: center middle; }
    #input-dialog {
        width: 76; max-width: 100%; height: auto; border: thick $accent; padding: 1 2; background: $surface;
    }
    #input-hint { margin-top: 1; }
    #input-buttons { height: auto; margin-top: 1; }
    InputScreen Button { margin-right: 1; }
    """
    PROMPT = ""
    PLACEHOLDER = ""
    BUTTON = "OK"

    def __init__(self, store: AccountStore, value: str = "") -> None:
        super().__init__()
        self.store = store
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="input-dialog"):
            yield Label(self.PROMPT, id="input-prompt", markup=False)
            yield Input(self.value, placeholder=self.PLACEHOLDER, id="input-text")
            yield Label("", id="input-hint", markup=False)
            with Horizontal(id="input-buttons"):
                yield Button(self.BUTTON, variant="primary", id="ok")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#input-text", Input).focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.action_cancel()

    def _submit(self) -> None:
        field = self.query_one("#input-text", Input)
        text = field.value.strip()
        if not text or field.disabled:
            return
        field.disabled = True  # one at a time: an enrollment takes a round trip
        self.hint("Working...")
        self.run_worker(self._applying(text), exclusive=True)

    async def _applying(self, text: str) -> None:
        field = self.query_one("#input-text", Input)
        try:
            lines = await self.apply(text)
        except (AgentError, StoreError) as exc:
            self.hint(str(exc))
        except Exception as exc:  # noqa: BLE001  (a worker's error would close the whole screen)
            self.hint(f"That did not work: {type(exc).__name__}: {exc}")
        else:
            self.dismiss(lines)
            return
        field.disabled = False
        field.focus()

    async def apply(self, text: str) -> list[str]:
        """Do it; raise AgentError or StoreError to refuse (the message is shown)."""
        raise NotImplementedError

    def hint(self, text: str) -> None:
        self.query_one("#input-hint", Label).update(Text(shown_lines(text)))

    def action_cancel(self) -> None:
        # Not while it works: an enrollment cut short would leave its key at the service.
        if not self.query_one("#input-text", Input).disabled:
            self.dismiss(None)


class AddScreen(InputScreen):
    """Add an account from what the service shows: its setup link, a verification-code
    link, an export, or the path of a screenshot of its QR code (adding.add_anything)."""

    PROMPT = (
        "Paste the service's setup link (pushauth://enroll...) or verification-code link "
        "(otpauth://...), or type the path of a screenshot of its QR code or of an export:"
    )
    PLACEHOLDER = "link or file"
    BUTTON = "Add"

    def __init__(self, store: AccountStore) -> None:
        super().__init__(store)
        self.again_for: str | None = None  # the text whose account is here already, once said

    async def apply(self, text: str) -> list[str]:
        try:
            return await adding.add_anything(self.store, text, again=text == self.again_for)
        except adding.AlreadyHere as exc:
            self.again_for = text
            raise adding.AlreadyHere(
                exc.twin, f"{exc.message}. Press Enter again to add it anyway."
            ) from None


class RenameScreen(InputScreen):
    """A new name for the selected account (on this device only)."""

    PROMPT = "New name (on this device only; the service is not told):"
    BUTTON = "Rename"

    def __init__(self, store: AccountStore, name: str) -> None:
        super().__init__(store, name)
        self.name_now = name
        self.renamed_to: str | None = None

    async def apply(self, text: str) -> list[str]:
        entry = self.store.rename(self.name_now, text)
        self.renamed_to = entry.name
        return [f'Renamed "{shown(self.name_now)}" to "{shown(entry.name)}".']


class ReactivateScreen(InputScreen):
    """A new key for a restored push account ("action required"), from a new setup link
    of its service: as `pushauth-agent reactivate ACCOUNT LINK`."""

    PLACEHOLDER = "setup link or file"
    BUTTON = "Re-activate"

    def __init__(self, store: AccountStore, name: str, service: str) -> None:
        super().__init__(store)
        self.name_now = name
        self.PROMPT = (
            f'"{shown(name)}" needs a new key. On {shown(service)}\'s security page, add this device '
            "again; paste its new setup link here, or the path of a screenshot of its QR code:"
        )

    async def apply(self, text: str) -> list[str]:
        link = links.link_argument(text, "reactivate")
        account = await actions.reactivate(self.store, self.name_now, link, None)
        return [
            f'Re-activated "{shown(account.name)}" for {shown(account.rp_name)} with a new key.',
            "Its sign-in requests come once the service has confirmed it with a test notification.",
        ]


class UiListener(Listener):
    """The Listener of `listen`, asking through the app instead of stdin."""

    def __init__(self, store: AccountStore, app: AgentApp) -> None:
        super().__init__(store, interactive=True)
        self.app = app

    def say(self, text: str) -> None:
        self.app.log_line(text)

    def alert(self) -> None:
        self.app.bell()  # the terminal's bell, as `listen` rings it

    def vault_lost(self, exc: PassphraseChanged) -> None:
        self.app.vault_lost(exc)

    def _ask_next(self) -> None:
        if self.asking is not None:
            return
        if self.requests:
            ch, req = self._newest()
            self.asking = ch
            account = req.link.accounts.get(req.challenge.cid)
            self.app.ask(req, lambda: request_text(req.challenge, account, self._now(req.link)))
        elif self.questions:
            nid, question = next(iter(self.questions.items()))
            self.asking = nid
            self.app.ask_question(question)

    def _drop_question(self, nid: str, why: str | None) -> None:
        if self.asking == nid and nid in self.questions:
            self.app.withdraw_question(nid)
        super()._drop_question(nid, why)

    async def answer_question(self, question: Question, decision: NoticeDecision) -> None:
        await self._answer_question(question, decision)

    def question_later(self, question: Question) -> None:
        self.asking = None
        nid = question.notice.notice
        if nid in self.questions:
            self.questions.move_to_end(nid)
        if self.requests or len(self.questions) > 1:
            self._ask_next()

    def _drop(self, ch: str, why: str | None) -> None:
        if self.asking == ch and ch in self.requests:
            self.app.withdraw(ch)  # close its dialog before the next request is asked
        super()._drop(ch, why)

    async def answer(self, req: Request, decision: Decision, number: str) -> None:
        await self._answer(req, decision, number)

    def later(self, req: Request) -> None:
        """Put a request back in the queue, to be asked again after the others (the
        newest is asked first, so it goes to the front: the oldest place)."""
        self.asking = None
        ch = req.challenge.ch
        if ch in self.requests:
            self.requests.move_to_end(ch, last=False)
        if len(self.requests) > 1:
            self._ask_next()


class AgentApp(App[int]):
    TITLE = "pushauth"
    SUB_TITLE = "sign-in requests and verification codes"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("q", "quit", "Quit"),
        Binding("plus,n", "add", "Add account"),
        Binding("c", "copy_code", "Copy code"),
        Binding("r", "rename", "Rename"),
        Binding("delete,d", "remove", "Remove"),
        Binding("a", "ask_again", "Show waiting request"),
    ]
    DEFAULT_CSS = """
    #accounts { height: 1fr; }
    #events { height: 8; max-height: 40%; border-top: solid $accent; }
    """

    def __init__(self, store: AccountStore) -> None:
        super().__init__()
        self.store = store
        self.listener = UiListener(store, self)
        self.dialog: RequestScreen | None = None
        self.question_dialog: NoticeScreen | None = None
        self.answers: list[
            tuple[str, str]
        ] = []  # (challenge or notice id, decision) sent, for tests and people
        self.failure: PassphraseChanged | None = None  # why the screen closed by itself
        self.columns: list[ColumnKey] = []
        self.shown_rows: list[str] = []  # the accounts' names, in the table's order
        self.keep_selected: str | None = None  # the row to select once the list is drawn again

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="accounts", cursor_type="row", zebra_stripes=True)
        # Wrapped: a line about a request names its account, service and outcome, and
        # Textual's Log cut it at the terminal's edge (a sideways scroll nobody finds).
        # Markup off: the text shown is data (names from RPs), never instructions.
        yield RichLog(id="events", wrap=True, min_width=20, markup=False, highlight=False)
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one("#accounts", DataTable)
        self.columns = table.add_columns("account", "code", "left", "status")
        self.refresh_accounts()
        self.set_interval(REFRESH_S, self.refresh_accounts)
        await self.listener.sync_links()
        if not self.listener.links:
            self.log_line("No push accounts yet: press + to add one (or pushauth-agent enroll URI).")
        self.run_worker(self.listener._watch_store(), exclusive=False, group="store")

    async def on_unmount(self) -> None:
        for link in list(self.listener.links.values()):
            await link.stop()

    # -- the account list ---------------------------------------------------------------

    def _main_widget(self, selector: str, kind: type[W]) -> W | None:
        """A widget of the main screen, or None once the app is closing: Textual removes
        the widgets before the refresh timer's last tick or a link's last event (as its
        WebSocket closes) is done with, and neither may crash the exit."""
        try:
            return self.query_one(selector, kind)
        except NoMatches:
            return None

    def refresh_accounts(self) -> None:
        table = self._main_widget("#accounts", DataTable)
        if table is None:
            return
        try:
            entries = self.store.entries()
        except PassphraseChanged as exc:
            self.vault_lost(exc)
            return
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
                    ACTION_REQUIRED: "ACTION REQUIRED: Enter to re-activate",
                    REVOKED: f"revoked: {entry.account.status_reason or 'removed at the service'}",
                }.get(entry.account.status, "push")
                link = self.listener.links.get(entry.account.broker)
                if status == "push" and link is not None and (state := link.status()) is not None:
                    status = f"push: {state}"  # its broker is down; the other accounts work
            rows.append((entry.name, code, left, status))
        names = [entry.name for entry in entries]
        if names == self.shown_rows:
            # The same accounts: cells updated in place, so the row the person has
            # selected (to copy its code) and the scroll stay where they are; a clear()
            # each second put the cursor back on the first row.
            for name, row in zip(names, rows, strict=True):
                for column, cell in zip(self.columns, row, strict=True):
                    table.update_cell(name, column, Text(shown(cell)))
            return
        selected, self.keep_selected = self.keep_selected or self.selected_account(), None
        table.clear()
        for name, row in zip(names, rows, strict=True):  # rich Text: a str cell would be read as markup
            table.add_row(*(Text(shown(cell)) for cell in row), key=name)
        self.shown_rows = names
        if selected in names:
            table.move_cursor(row=names.index(selected))

    def selected_account(self) -> str | None:
        """The name of the account on the list's cursor row, if any."""
        table = self._main_widget("#accounts", DataTable)
        if table is None or not 0 <= table.cursor_row < len(self.shown_rows):
            return None
        return self.shown_rows[table.cursor_row]

    def action_copy_code(self) -> None:
        """The selected account's code to the clipboard, as a phone app's tap on it does
        (through the terminal: OSC 52, which most terminals and tmux pass on)."""
        name = self.selected_account()
        if name is None:
            return
        try:
            # Computed now, not the one on screen: it may have just rolled over. An HOTP
            # code is used up by this, as by `code NAME` (the counter moves on).
            (line,) = otp_actions.codes(self.store, name)
        except AgentError as exc:
            self.log_line(str(exc))
            return
        if line.code is None:
            return
        self.copy_to_clipboard(line.code)
        left = f", valid {line.seconds_left} s more" if line.seconds_left is not None else " (used up)"
        self.log_line(f'Copied the code of "{name}" to the clipboard{left}.')
        self.refresh_accounts()

    def _logged_then_refreshed(self, lines: list[str] | None) -> None:
        for line in lines or []:
            self.log_line(line)
        self.refresh_accounts()

    def action_add(self) -> None:
        self.push_screen(AddScreen(self.store), self._logged_then_refreshed)

    def _selected_entry(self) -> Entry | None:
        """The account on the cursor row, read from the vault (a failure is logged)."""
        name = self.selected_account()
        if name is None:
            return None
        try:
            return self.store.find_entry(name)
        except (AgentError, StoreError) as exc:
            self.log_line(str(exc))
            return None

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        """Enter on a restored push account that needs a new key: its setup link asked."""
        entry = self._selected_entry()
        if entry is None or entry.account is None or entry.account.active:
            return
        self.push_screen(
            ReactivateScreen(self.store, entry.name, entry.account.rp_name), self._logged_then_refreshed
        )

    def action_rename(self) -> None:
        name = self.selected_account()
        if name is None:
            return
        screen = RenameScreen(self.store, name)

        def renamed(lines: list[str] | None) -> None:
            self.keep_selected = screen.renamed_to  # the cursor follows the account
            self._logged_then_refreshed(lines)

        self.push_screen(screen, renamed)

    def action_remove(self) -> None:
        """Remove the selected account, as `remove` does (its key revoked at the service
        first), after the same question: it cannot be undone."""
        entry = self._selected_entry()
        if entry is None:
            return
        name, account = entry.name, entry.account
        loss = removal_loss(
            account.rp_name if account else None,
            active_key=account is not None and account.active,
            codes=entry.otp is not None,
        )
        question = f'Remove "{shown(name)}"? {loss[0].upper()}{loss[1:]}.'

        async def removing() -> None:
            try:
                self.log_line(await actions.remove(self.store, name))
            except (AgentError, StoreError) as exc:
                self.log_line(str(exc))
            except Exception as exc:  # noqa: BLE001  (a worker's error would close the whole screen)
                self.log_line(f'Removing "{shown(name)}" did not work: {type(exc).__name__}: {exc}')
            self.refresh_accounts()

        def decided(sure: bool | None) -> None:
            if sure:  # in a worker: the revocation is a round trip to the broker
                self.log_line(f'Removing "{shown(name)}"...')
                self.run_worker(removing(), group="remove")

        self.push_screen(ConfirmScreen(question, "Remove it"), decided)

    def vault_lost(self, exc: PassphraseChanged) -> None:
        """No key can be read any more (listen.Listener.vault_lost): close the screen;
        the command then fails with `exc`, printed once the terminal is back."""
        if self.failure is None:
            self.failure = exc
            self.exit()

    def log_line(self, text: str) -> None:
        events = self._main_widget("#events", RichLog)
        if events is not None:
            events.write(Text(shown_lines(text)))

    # -- sign-in requests -----------------------------------------------------------------

    def ask(self, req: Request, details: Callable[[], str]) -> None:
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
            if isinstance(self.screen, ReportScreen) and self.screen_stack[-2] is dialog:
                self.pop_screen()  # "report it?" about that request: nothing to report now
            if dialog.is_current:
                self.pop_screen()  # without its callback: there is nothing to answer

    def action_ask_again(self) -> None:
        if self.dialog is None and self.question_dialog is None:
            self.listener._ask_next()

    # -- "was this you?" after a recovery -------------------------------------------------

    def ask_question(self, question: Question) -> None:
        account = question.link.accounts.get(question.notice.cid)
        name = shown(account.name if account else question.notice.cid)
        service = f" at {shown(account.rp_name)}" if account else ""
        self.question_dialog = NoticeScreen(question, name, service)

        async def decided(decision: NoticeDecision | None) -> None:
            self.question_dialog = None
            if decision is None:
                self.listener.question_later(question)
                return
            self.answers.append((question.notice.notice, str(decision)))
            try:
                await self.listener.answer_question(question, decision)
            except AgentError as exc:
                self.log_line(str(exc))

        self.push_screen(self.question_dialog, decided)

    def withdraw_question(self, nid: str) -> None:
        """The question being asked was closed elsewhere (answered, withdrawn)."""
        if self.question_dialog is not None and self.question_dialog.question.notice.notice == nid:
            dialog, self.question_dialog = self.question_dialog, None
            if dialog.is_current:
                self.pop_screen()


def run_ui(store: AccountStore) -> int:
    # The vault made (its new passphrase asked) before the screen opens, as `listen`
    # does: Add would otherwise ask for it under the screen.
    store.ensure_vault()
    store.load()  # a damaged vault or a wrong passphrase is reported before the screen opens
    app = AgentApp(store)
    code = app.run() or 0
    if app.failure is not None:
        raise app.failure
    return code
