"""Context is data, shown as plain text (DESIGN invariant 12).

The broker refuses control, format, line-separator and invisible characters in the
context an RP sends (a 400 problem naming the field; nothing is pushed); whatever reaches a
device anyway (another broker, an old challenge) is shown with those characters as
visible escapes; and text that looks like markup ("[/]", "[bold]") is shown as it is
by `pending`, `listen` and the terminal UI, which never read it as markup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from e2e_helpers import AGENT_ENV, agent_env, agent_ok, enroll, pending  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures)
from support import BrokerProcess
from test_agent_e2e import Listen
from test_agent_tui import connected, dialog, rows, until

from device_agent.display import request_text, shown
from device_agent.store import AccountStore
from device_agent.tui import AgentApp
from protocol.frames import Challenge
from protocol.text import first_unsafe
from relying_party.sdk import PushAuthClient

MARKUP_CONTEXT = {"app": "Webmail", "browser": "[/] Firefox [bold]128", "location": "[red]Lyon[/red]"}
ANSI = "Firefox\x1b[1A\x1b[2K\r  IP address: 10.0.0.1"


async def post_challenge(broker: BrokerProcess, rp: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            broker.http_url + "/v1/challenges",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {rp['api_key']}", "Content-Type": "application/json"},
        ) as resp,
    ):
        if resp.status >= 400:
            assert resp.headers["Content-Type"].startswith("application/problem+json")
        return resp.status, await resp.json(content_type=None)


# Each with the field and the character the problem names.
REFUSED_CONTEXTS: list[tuple[dict[str, str], str, str]] = [
    ({"browser": ANSI}, "context.browser", "U+001B"),
    ({"location": "Lyon\rParis"}, "context.location", "U+000D"),
    ({"location": "Lyon\nIP address: 10.0.0.1"}, "context.location", "U+000A"),
    ({"app": "moc.\u202elive"}, "context.app", "U+202E"),  # RIGHT-TO-LEFT OVERRIDE
    ({"app": "Pay\u2066roll"}, "context.app", "U+2066"),  # LEFT-TO-RIGHT ISOLATE
    ({"app": "Web\u200bmail"}, "context.app", "U+200B"),  # ZERO WIDTH SPACE (Cf)
    ({"ip": "203.0.113.5\u2028IP: 10.0.0.1"}, "context.ip", "U+2028"),  # LINE SEPARATOR
    ({"app": "Webmail\x85"}, "context.app", "U+0085"),  # NEXT LINE (C1)
    ({"br\x1bowser": "x"}, "context key", "U+001B"),
    # Blank, not control: Default_Ignorable_Code_Point (a letter, a mark) and the Braille blank.
    ({"app": "Webmail\u3164"}, "context.app", "U+3164 (HANGUL FILLER)"),
    ({"location": "\u2800"}, "context.location", "U+2800"),
    ({"app": "Bank\ufe0f"}, "context.app", "U+FE0F"),  # VARIATION SELECTOR-16
]


async def test_the_api_refuses_control_characters_in_context(
    client: PushAuthClient, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)  # once: each case would be pushed to this device
    for context, field, char in REFUSED_CONTEXTS:
        status, problem = await post_challenge(broker, rp, {"user": "alice", "context": context})
        assert status == 400, problem
        assert problem["code"] == "invalid_request"
        assert field in problem["detail"] and char in problem["detail"], problem
    assert pending(home) == []  # nothing was pushed


async def test_the_api_refuses_them_in_the_user_too(
    broker: BrokerProcess,
    rp: dict[str, Any],
) -> None:
    status, problem = await post_challenge(broker, rp, {"user": "ali\u202ece", "context": {}})
    assert status == 400 and "'user'" in problem["detail"] and "U+202E" in problem["detail"]


async def test_markup_like_context_is_shown_as_it_is_by_pending_and_listen(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home)
    ch = await client.create_challenge("alice", MARKUP_CONTEXT, ttl=60)
    text = agent_ok(home, "pending")
    assert f"Sign-in request {ch.id}" in text
    assert "[/] Firefox [bold]128" in text and "[red]Lyon[/red]" in text
    (listed,) = pending(home)
    assert listed["context"] == MARKUP_CONTEXT  # JSON: the data itself
    listen = Listen(home, tmp_path / "listen", "--no-input")
    try:
        listen.wait_for(f"Sign-in request {ch.id}")
        listen.wait_for("[/] Firefox [bold]128")
    finally:
        listen.close()


def test_a_device_shows_anything_unsafe_that_reaches_it_as_visible_escapes() -> None:
    """What a broker that does not check (or a hostile one) could still send."""
    ch = Challenge(
        ch="ch_1",
        cid="cr_1",
        rp="rp_1",
        rp_name="Bank\x1b]0;owned\x07",
        account="alice\u2028service: Bank",
        nonce=bytes(32),
        rp_nonce=bytes(32),
        ctx={
            "browser": ANSI,
            "app": "moc.\u202elive",
            "loc\rx": "a\u0085b",
            "ip": "\u3164",
            "location": "Lyon\u3000\u3000X",
        },
        created=1_767_225_600_000,
        expires=1_767_225_660_000,
        digits=2,
    )
    text = request_text(ch, None, 1_767_225_600_000)
    lines = text.split("\n")
    assert len(lines) == 1 + 2 + 5 + 2  # title, service, account, 5 context rows, time, expires
    assert all(first_unsafe(line) is None for line in lines), text
    assert "Firefox\\x1b[1A\\x1b[2K\\x0d  IP address: 10.0.0.1" in text
    assert "moc.\\u202elive" in text and "Bank\\x1b]0;owned\\x07" in text and "alice\\u2028service" in text
    assert "\\u3164" in text  # a Hangul filler: an IP address that looks empty
    assert "Lyon  X" in text  # ideographic spaces shown as ordinary ones
    assert shown("[/]") == "[/]" and shown("plain") == "plain"


async def test_the_terminal_ui_shows_markup_like_context_and_names_as_plain_text(
    client: PushAuthClient, tmp_path: Path
) -> None:
    home = tmp_path / "phone"
    await enroll(client, home, account="[b]alice[/]")
    app = AgentApp(AccountStore(home))
    async with app.run_test(size=(110, 34)) as pilot:
        await until(pilot, lambda: connected(app), "the broker connection")
        assert rows(app)[0][0] == "[b]alice[/]"
        ch = await client.create_challenge("alice", MARKUP_CONTEXT, ttl=60)
        await until(pilot, lambda: dialog(app) is not None, "the request dialog")
        await pilot.pause(0.2)  # drawn: "[/]" as markup raised MarkupError here
        screen = dialog(app)
        assert screen is not None and screen.request.challenge.ch == ch.id
        drawn = app.export_screenshot()
        for literal in ("[/] Firefox [bold]128", "[red]Lyon[/red]", "[b]alice[/]"):
            assert literal in drawn.replace("&#160;", " "), literal
        await pilot.press("ctrl+n")
        await until(pilot, lambda: dialog(app) is None, "the dialog to close")
        assert app.answers == [(ch.id, "deny")]
    assert AGENT_ENV  # the vault passphrase came from the environment
