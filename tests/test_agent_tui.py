"""The terminal UI driven headless by Textual's pilot against a real broker: a push
arrives, the number is typed, the broker records approved (and the RP SDK verifies
it); deny and report from the keyboard; live codes and "action required" marks; the
"was this you?" dialog after a recovery."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import segno
from e2e_helpers import AGENT_ENV, add_push_account, agent_env, enroll, on_a_terminal  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import AGENT, BrokerProcess, allow_numberless_push, assert_cli_error, free_port, run_cli
from test_agent_recovery import enroll_recoverable
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, RichLog, Static

from device_agent import totp
from device_agent.passphrase import NEW_PASSPHRASE_ENV, PASSPHRASE_ENV, Passphrases
from device_agent.store import AccountStore
from device_agent.tui import (
    AddScreen,
    AgentApp,
    ConfirmScreen,
    NoticeScreen,
    ReactivateScreen,
    RenameScreen,
    ReportScreen,
    RequestScreen,
)
from protocol.challenge import Status
from relying_party.models import Challenge
from relying_party.sdk import PushAuthClient

CONTEXT = {"app": "Webmail", "ip": "203.0.113.5", "location": "Lyon, FR"}
TOTP_URI = "otpauth://totp/ACME:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME"
NEW_PASSPHRASE = "violet kettle marches upstream"


async def until(pilot: Pilot[Any], check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def connected(app: AgentApp) -> bool:
    return any(link.conn is not None for link in app.listener.links.values())


def dialog(app: AgentApp) -> RequestScreen | None:
    return app.screen if isinstance(app.screen, RequestScreen) else None


def logged(app: AgentApp) -> str:
    """The event log's text, its lines wrapped at the widget's width joined again."""
    return " ".join(line.text.rstrip() for line in app.query_one("#events", RichLog).lines)


def expires_in(screen: RequestScreen) -> int:
    """The seconds the dialog shows as left."""
    shown = str(screen.query_one("#details", Static).content)
    found = re.search(r"expires in:\s+(\d+) s", shown)
    assert found is not None, shown
    return int(found.group(1))


async def request_shown(pilot: Pilot[Any], app: AgentApp, client: PushAuthClient) -> Challenge:
    """Once the screen is connected, a sign-in request for alice, shown as its dialog."""
    await until(pilot, lambda: connected(app), "the broker connection")
    ch = await client.create_challenge("alice", CONTEXT, ttl=60)
    await until(pilot, lambda: dialog(app) is not None, "the request dialog")
    return ch


def rows(app: AgentApp) -> list[list[str]]:
    table = app.query_one("#accounts", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_a_push_arrives_the_number_is_typed_and_the_broker_records_approved(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    # An account at a second broker that is down: its row says so; the first works meanwhile.
    add_push_account(home, "bob@forum", f"ws://127.0.0.1:{free_port()}/v1/device", rp="rp2", rp_name="Forum")
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(120, 32)) as pilot:
        # Both statuses, in whichever order they come (a loaded machine may still be
        # connecting to the live broker when the dead one's first attempt fails).
        await until(
            pilot,
            lambda: rows(app)[0][3] == "push" and "not reachable since" in rows(app)[-1][3],
            "both brokers' statuses",
        )
        alice, forum = rows(app)
        assert alice[3] == "push" and re.fullmatch(
            r"push: not reachable since \d\d:\d\d:\d\d, retrying", forum[3]
        )
        ch = await request_shown(pilot, app, client)
        screen = dialog(app)
        assert screen is not None and screen.request.challenge.ch == ch.id
        for text in ("Test RP", "alice@example.com", "Webmail", "203.0.113.5", "Lyon, FR"):
            assert text in screen.details()
        # "expires in" counts down while the dialog is open (it stayed at its first value).
        await until(pilot, lambda: bool(screen.query("#details")), "the dialog's details")
        first = expires_in(screen)
        await until(pilot, lambda: expires_in(screen) < first, "the countdown")
        await pilot.press(*ch.number, "enter")
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
        assert result.status is Status.APPROVED
        assert result.answer is not None and result.answer.number == ch.number
        await until(pilot, lambda: dialog(app) is None, "the dialog to close")
        assert app.answers == [(ch.id, "approve")]


async def test_a_request_without_a_number_has_no_number_field_and_approve_signs_none(
    client: PushAuthClient, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    await allow_numberless_push(broker, rp["id"])  # before the broker reads the RP's policy
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: connected(app), "the broker connection")
        ch = await client.create_challenge("alice", CONTEXT, number_matching=False)
        await until(pilot, lambda: dialog(app) is not None, "the request dialog")
        screen = dialog(app)
        assert screen is not None
        await until(
            pilot, lambda: screen.focused is not None and screen.focused.id == "approve", "Approve focused"
        )
        assert not screen.query("#number")  # no number field at all
        prompt = str(screen.query_one("#prompt", Label).content)
        assert "No number to compare" in prompt and "started just now" in prompt
        assert "none to compare" in screen.details()
        await pilot.press("enter")
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
        assert result.status is Status.APPROVED
        assert result.answer is not None and result.answer.number == ""


@pytest.mark.parametrize(
    ("keys", "status"), [(["ctrl+n"], Status.DENIED), (["ctrl+r", "y"], Status.REPORTED)]
)
async def test_deny_and_report_from_the_keyboard(
    client: PushAuthClient, tmp_path: Path, keys: list[str], status: Status
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        ch = await request_shown(pilot, app, client)
        await pilot.press("9")  # a half-typed number does not matter for a denial
        await pilot.press(*keys)
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
        assert result.status is status


async def test_report_asks_first_and_no_goes_back_to_the_request(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        ch = await request_shown(pilot, app, client)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, ReportScreen), "the report question")
        question = str(app.screen.query_one("#confirm-question", Static).render())
        assert "Report this sign-in as not you? This denies it and pauses push requests" in question
        await pilot.press("n")
        await until(pilot, lambda: dialog(app) is not None, "the request dialog again")
        assert app.answers == []
        assert (await client.get_result(ch, {cred.id: cred.public_key})).status is Status.PENDING
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, ReportScreen), "the report question")
        await pilot.press("y")
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
        assert result.status is Status.REPORTED
        assert app.answers == [(ch.id, "fraud")]


async def test_a_short_number_is_not_sent_and_a_request_answered_elsewhere_closes_the_dialog(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home, other = tmp_path / "phone", tmp_path / "laptop"
    cred = await enroll(client, home)
    laptop = await enroll(client, other, name="laptop")
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: connected(app), "the broker connection")
        ch = await client.create_challenge("alice", CONTEXT, ttl=60, digits=3)
        await until(pilot, lambda: dialog(app) is not None, "the request dialog")
        await pilot.press(ch.number[0], "enter")
        await pilot.pause(0.3)
        assert dialog(app) is not None and app.answers == []  # 1 of 3 digits: not sent
        # The other device answers: this dialog goes away by itself.
        done = await asyncio.to_thread(run_cli, [AGENT, "--home", other, "deny", ch.id], env=AGENT_ENV)
        assert done.returncode == 0, done.stderr
        await until(pilot, lambda: dialog(app) is None, "the dialog to close")
        result = await client.get_result(ch, {cred.id: cred.public_key, laptop.id: laptop.public_key})
        assert result.status is Status.DENIED and app.answers == []
        await until(
            pilot, lambda: f"Request {ch.id} was answered on another device." in logged(app), "the log line"
        )


async def test_a_request_answered_by_a_command_of_this_device_says_so(
    client: PushAuthClient, tmp_path: Path
) -> None:
    """`deny` run with the same home (another connection of the same credential): the
    broker's `cancel.by` names this device's own credential, so the UI does not say
    "another device"."""
    home = tmp_path / "phone"
    await enroll(client, home)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        ch = await request_shown(pilot, app, client)
        done = await asyncio.to_thread(run_cli, [AGENT, "--home", home, "deny", ch.id], env=AGENT_ENV)
        assert done.returncode == 0, done.stderr
        await until(pilot, lambda: dialog(app) is None, "the dialog to close")
        await until(
            pilot, lambda: f"Request {ch.id} was answered on this device" in logged(app), "the log line"
        )
        assert "another device" not in logged(app)


async def test_the_list_shows_live_codes_and_marks_accounts_needing_action(tmp_path: Path) -> None:
    home, new = tmp_path / "home", tmp_path / "new"
    run = lambda h, *a: run_cli([AGENT, "--home", h, *a], env=AGENT_ENV)  # noqa: E731
    assert run(home, "add", TOTP_URI).returncode == 0
    add_push_account(home, "bob@example.com", "ws://127.0.0.1:1/v1/device", user="bob")
    assert run(home, "backup", "--to", str(tmp_path / "b")).returncode == 0
    assert run(new, "restore", "--from", str(tmp_path / "b")).returncode == 0
    app = AgentApp(AccountStore(new))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 2, "the account rows")
        acme, bob = rows(app)
        otp = AccountStore(new).totp("ACME: alice")
        assert otp is not None
        now = time.time()
        # The row was drawn a moment ago (seconds on a loaded machine): this step's code or the last one's.
        assert acme[0] == "ACME: alice" and acme[1] in {totp.code(otp, now), totp.code(otp, now - otp.period)}
        assert acme[2].endswith(" s")
        assert bob[0] == "bob@example.com" and "ACTION REQUIRED" in bob[3]
        first = acme[2]
        await until(pilot, lambda: rows(app)[0][2] != first, "the countdown to move")
        await pilot.press("q")


async def test_a_passphrase_changed_by_passwd_meanwhile_closes_the_screen_without_asking_again(
    client: PushAuthClient, tmp_path: Path
) -> None:
    # It used to ask for the passphrase again from the refresh tick: on a terminal that
    # prompt froze the screen for good; with the passphrase in the environment it logged
    # "wrong passphrase ... (or its header was altered)" every second and signed nothing.
    home = tmp_path / "phone"
    await enroll(client, home)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return AGENT_ENV[PASSPHRASE_ENV]

    app = AgentApp(AccountStore(home, Passphrases(env={}, ask=ask, interactive=True)))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: connected(app), "the broker connection")
        changed = await asyncio.to_thread(
            run_cli, [AGENT, "--home", home, "passwd"], env={**AGENT_ENV, NEW_PASSPHRASE_ENV: NEW_PASSPHRASE}
        )
        assert changed.returncode == 0, changed.stderr
        await until(pilot, lambda: app.failure is not None, "the screen to close")
    assert "the vault's passphrase was changed by another command" in str(app.failure)
    assert len(asked) == 1  # at the start only


def test_no_command_without_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli([AGENT, "--home", tmp_path / "home"], env=AGENT_ENV)
    assert_cli_error(result, contains="command is required")
    assert result.returncode == 2


def question(app: AgentApp) -> NoticeScreen | None:
    return app.screen if isinstance(app.screen, NoticeScreen) else None


async def test_was_this_you_dialog_later_then_no_revokes_the_new_device(
    client: PushAuthClient, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    run = lambda h, *a: run_cli([AGENT, "--home", h, *a], env=AGENT_ENV)  # noqa: E731
    old_cred = await enroll_recoverable(client, old, "old phone")
    assert (await asyncio.to_thread(run, old, "backup", "--to", str(tmp_path / "b"))).returncode == 0
    app = AgentApp(AccountStore(old))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: connected(app), "the broker connection")
        restored = await asyncio.to_thread(
            run, new, "restore", "--from", str(tmp_path / "b"), "--device-name", "new phone"
        )
        assert restored.returncode == 0, restored.stderr
        await until(pilot, lambda: question(app) is not None, "the recovery dialog")
        screen = question(app)
        assert screen is not None
        for text in ("'new phone'", "alice@example.com", "Test RP", "Was this you?"):
            assert text in screen.details
        await pilot.press("escape")  # later: the dialog closes, the question stays
        await until(pilot, lambda: question(app) is None, "the dialog to close")
        assert app.answers == []
        await pilot.press("a")  # show it again
        await until(pilot, lambda: question(app) is not None, "the recovery dialog again")
        await pilot.press("n")
        await until(pilot, lambda: question(app) is None, "the dialog to close")
        assert [d for _, d in app.answers] == ["disown"]

        async def only_old() -> bool:
            return [c.id for c in await client.list_credentials("alice")] == [old_cred.id]

        deadline = time.monotonic() + 10
        while not await only_old():
            assert time.monotonic() < deadline, "the new credential to be revoked"
            await pilot.pause(0.1)
        assert (await client.push_block("alice"))["muted_until"] is not None


async def test_the_refresh_tick_and_a_last_link_event_after_the_app_closed_do_not_crash_it(
    tmp_path: Path,
) -> None:
    """Textual removes the main screen's widgets while the app closes; the account
    refresh timer can still tick, and a closing link still report, after that. Both
    then do nothing (they raised NoMatches, which ended the app with a traceback)."""
    app = AgentApp(AccountStore(tmp_path / "phone"))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: bool(app.query("#accounts")), "the account list")
    assert not app.query("#accounts")  # closed: its widgets are gone
    app.refresh_accounts()
    app.log_line("disconnected")


async def test_a_long_event_line_is_wrapped_at_the_edge_not_cut(tmp_path: Path) -> None:
    app = AgentApp(AccountStore(tmp_path / "home"))
    async with app.run_test(size=(40, 20)) as pilot:
        # Longer than the terminal is wide: all of it is there, on lines that fit.
        whole = "No push accounts yet: press + to add one (or pushauth-agent enroll URI)."
        await until(pilot, lambda: whole in logged(app), "the whole line")
        events = app.query_one("#events", RichLog)
        assert len(events.lines) > 1
        assert all(line.cell_length <= events.size.width for line in events.lines)
        await pilot.press("q")


async def test_on_a_40x12_terminal_the_request_dialog_fits_and_shows_who_asks(
    client: PushAuthClient, tmp_path: Path
) -> None:
    # The dialog was 72 columns wide and as tall as its details: on 40x12 its top (the
    # service and account) was above the screen and its "Not me" button past the edge.
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(40, 12)) as pilot:
        ch = await request_shown(pilot, app, client)
        screen = dialog(app)
        assert screen is not None
        await pilot.pause()
        whole = app.screen.region
        for widget in ("#dialog", "#number", "#approve", "#deny", "#report", "#details-box", "#prompt"):
            region = screen.query_one(widget).region
            assert region.area and whole.contains_region(region), (widget, region, whole)
        # The details box starts with the heading, then the service and the account.
        lines = screen.details().splitlines()
        assert "service:" in lines[1] and "account:" in lines[2], lines
        box = screen.query_one("#details-box").region
        # In view unscrolled: at 36 columns the heading and the service take two rows each.
        assert box.height >= 5, box
        await pilot.press(*ch.number, "enter")
        result = await client.wait_result(ch, {cred.id: cred.public_key}, timeout=10)
        assert result.status is Status.APPROVED


# -- the list: a selected row, its code copied; Add ---------------------------------------


def code_uri(i: int) -> str:
    return f"otpauth://totp/Svc{i}:user{i}?secret={'GEZDGNBVGY3TQOJQ'[: 8 + i]}{'A' * (8 - i)}&issuer=Svc{i}"


async def test_the_selected_row_stays_across_refreshes_and_c_copies_its_current_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for i in range(3):
        assert run_cli([AGENT, "--home", home, "add", code_uri(i)], env=AGENT_ENV).returncode == 0
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3, "the account rows")
        table = app.query_one("#accounts", DataTable)
        table.focus()
        await pilot.press("down", "down")
        assert app.selected_account() == "Svc2: user2"
        app.refresh_accounts()  # the list's tick, run now rather than waited for
        await pilot.pause()
        assert table.cursor_row == 2 and app.selected_account() == "Svc2: user2"
        await pilot.press("up")
        otp = AccountStore(home).totp("Svc1: user1")
        assert otp is not None
        before = totp.code(otp, time.time())
        await pilot.press("c")
        after = totp.code(otp, time.time())
        assert app.clipboard in {before, after}  # the code of the step it was copied in
        await until(
            pilot,
            lambda: 'Copied the code of "Svc1: user1" to the clipboard, valid' in logged(app),
            "the log",
        )
        await pilot.press("q")


def add_dialog(app: AgentApp) -> AddScreen | None:
    return app.screen if isinstance(app.screen, AddScreen) else None


async def typed_into_add(pilot: Pilot[Any], app: AgentApp, text: str) -> AddScreen:
    if add_dialog(app) is None:
        await pilot.press("+")
        await until(pilot, lambda: add_dialog(app) is not None, "the Add dialog")
    screen = add_dialog(app)
    assert screen is not None
    field = screen.query_one("#input-text", Input)
    field.value = text  # as pasted
    await pilot.press("enter")
    return screen


def hint(screen: Any) -> str:
    return str(screen.query_one("#input-hint", Label).content)


async def test_add_enrolls_a_setup_link_and_the_services_test_push_is_asked_at_once(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    app = AgentApp(AccountStore(home))
    started = await client.create_enrollment("alice", "alice@example.com")
    assert started.uri is not None
    async with app.run_test(size=(120, 32)) as pilot:
        await typed_into_add(pilot, app, started.uri)
        await until(pilot, lambda: add_dialog(app) is None, "the Add dialog to close", timeout=30)
        assert 'Added "alice@example.com" for Test RP (user alice).' in logged(app)
        done = await client.wait_enrollment(started, timeout=10)
        assert done.completed and done.credential is not None
        assert [r[0] for r in rows(app)] == ["alice@example.com"]
        # The service's test notification reaches the screen that enrolled: the new
        # account's broker was connected without a restart.
        test = await client.create_challenge(
            "alice", {"app": "Test RP", "purpose": "setup test"}, ttl=60, credential_ids=[done.credential.id]
        )
        await until(pilot, lambda: dialog(app) is not None, "the test notification", timeout=30)
        await until(pilot, lambda: getattr(app.focused, "id", None) == "number", "the number field")
        await pilot.press(*test.number, "enter")
        result = await client.wait_result(test, {done.credential.id: done.credential.public_key}, timeout=10)
        assert result.status is Status.APPROVED
        await pilot.press("q")


async def test_add_says_what_is_wrong_in_the_dialog_and_asks_before_adding_an_account_twice(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)  # alice, through the CLI
    segno.make(TOTP_URI, error="m").save(str(tmp_path / "code.png"), scale=6)
    again = await client.create_enrollment("alice", "alice@example.com")
    assert again.uri is not None
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(120, 32)) as pilot:
        screen = await typed_into_add(pilot, app, "hello")
        await until(pilot, lambda: "give a link" in hint(screen), "the refusal")
        assert add_dialog(app) is screen  # open, to correct it
        await typed_into_add(pilot, app, str(tmp_path / "missing.png"))
        await until(pilot, lambda: "cannot read" in hint(screen), "the missing file")
        await typed_into_add(pilot, app, again.uri)
        await until(pilot, lambda: "is here already for Test RP" in hint(screen), "the question")
        assert len(AccountStore(home).load()) == 1  # nothing done yet
        await pilot.press("enter")  # again: a second sign-in method, as asked
        await until(pilot, lambda: add_dialog(app) is None, "the Add dialog to close", timeout=30)
        assert len(AccountStore(home).load()) == 2
        # A screenshot of a verification-code QR code.
        await typed_into_add(pilot, app, str(tmp_path / "code.png"))
        await until(pilot, lambda: add_dialog(app) is None, "the Add dialog to close")
        assert 'Added "ACME: alice" (verification codes).' in logged(app)
        await until(pilot, lambda: any(r[0] == "ACME: alice" for r in rows(app)), "its row")
        await pilot.press("q")


def test_on_a_new_home_the_screen_asks_for_the_new_passphrase_before_it_opens(tmp_path: Path) -> None:
    """Add makes the vault with the first account: asked for under the running screen,
    the passphrase prompt would be drawn over (and typed into) the screen. The vault is
    made first, as `listen` makes it."""
    home = tmp_path / "new"
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, NEW_PASSPHRASE_ENV)}
    env["PUSHAUTH_AGENT_KDF"] = AGENT_ENV["PUSHAUTH_AGENT_KDF"]
    code, said = on_a_terminal(
        home,
        [],
        [("New passphrase for the pushauth vault", NEW_PASSPHRASE), ("Type it again: ", NEW_PASSPHRASE),
         ("Add account", "q")],
        env=env,
    )  # fmt: skip
    assert code == 0, said
    assert (home / "vault.pav").exists()
    assert AccountStore(home, Passphrases(env={PASSPHRASE_ENV: NEW_PASSPHRASE})).load() == []  # it opens


async def test_rename_and_remove_the_selected_account_from_the_screen(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    cred = await enroll(client, home)
    assert run_cli([AGENT, "--home", home, "add", TOTP_URI], env=AGENT_ENV).returncode == 0
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(120, 32)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 2, "the account rows")
        app.query_one("#accounts", DataTable).focus()
        await pilot.press("down")  # ACME: alice
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RenameScreen), "the rename dialog")
        field = app.screen.query_one("#input-text", Input)
        assert field.value == "ACME: alice"
        field.value = "alice@example.com"  # taken: said in the dialog, which stays
        await pilot.press("enter")
        await until(pilot, lambda: "already an account named" in hint(app.screen), "the refusal")
        field.value = "Work codes"
        await pilot.press("enter")
        await until(
            pilot, lambda: [r[0] for r in rows(app)] == ["alice@example.com", "Work codes"], "the new name"
        )
        assert app.selected_account() == "Work codes"  # the cursor stayed on it
        # Remove the push account: asked first, naming what is lost; n keeps it.
        await pilot.press("up", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        question = str(app.screen.query_one("#confirm-question", Static).render())
        assert 'Remove "alice@example.com"? Its key is revoked at Test RP' in question
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the question to close")
        assert [c.id for c in await client.list_credentials("alice")] == [cred.id]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: [r[0] for r in rows(app)] == ["Work codes"], "the row to go", timeout=30)
        assert await client.list_credentials("alice") == []  # revoked at the broker, not only forgotten
        await pilot.press("q")


class BellCounting(AgentApp):
    """The screen, with Textual's bell (a BEL on the terminal; nothing when headless)
    counted instead of written."""

    rung = 0

    def bell(self) -> None:
        self.rung += 1


async def test_a_new_request_rings_the_terminals_bell_once(client: PushAuthClient, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)
    app = BellCounting(AccountStore(home))
    async with app.run_test(size=(120, 32)) as pilot:
        ch = await request_shown(pilot, app, client)
        assert app.rung == 1
        await until(pilot, lambda: getattr(app.focused, "id", None) == "number", "the number field")
        await pilot.press(*ch.number, "enter")
        await until(pilot, lambda: dialog(app) is None, "the dialog to close")
        assert app.rung == 1  # once per request, not per line said about it
        await pilot.press("q")


async def test_enter_on_a_restored_account_reactivates_it_with_a_new_setup_link(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home, new = tmp_path / "phone", tmp_path / "new"
    old = await enroll(client, home)
    run = lambda h, *a: run_cli([AGENT, "--home", h, *a], env=AGENT_ENV)  # noqa: E731
    assert run(home, "backup", "--to", str(tmp_path / "b")).returncode == 0
    assert run(new, "restore", "--from", str(tmp_path / "b")).returncode == 0
    app = AgentApp(AccountStore(new))
    async with app.run_test(size=(120, 32)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 1, "the account row")
        assert rows(app)[0][3] == "ACTION REQUIRED: Enter to re-activate"
        app.query_one("#accounts", DataTable).focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReactivateScreen), "the re-activate dialog")
        field = app.screen.query_one("#input-text", Input)
        field.value = "otpauth://totp/X:y?secret=JBSWY3DPEHPK3PXP"  # not a setup link: said, nothing sent
        await pilot.press("enter")
        await until(pilot, lambda: "use pushauth-agent add" in hint(app.screen), "the refusal")
        started = await client.create_enrollment("alice", "alice@example.com")
        assert started.uri is not None
        field.value = started.uri
        await pilot.press("enter")
        await until(
            pilot, lambda: not isinstance(app.screen, ReactivateScreen), "the dialog to close", timeout=30
        )
        assert 'Re-activated "alice@example.com" for Test RP with a new key.' in logged(app)
        done = await client.wait_enrollment(started, timeout=10)
        assert done.completed and done.credential is not None and done.credential.id != old.id
        await until(pilot, lambda: rows(app)[0][3] == "push", "the account active again")
        await pilot.press("q")
