"""The pure logic under the demo RP's fraud flow, sign-in activity and client address:
trusted-proxy parsing (and spoofing over real HTTP), the broker's push block in words,
activity results, and the database rows they use."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from protocol.challenge import Status
from relying_party.web import activity, push_pause
from relying_party.web.app import create_app
from relying_party.web.config import Settings
from relying_party.web.db import ACTIVITY_KEEP, Database, now_ms
from relying_party.web.keys import DB
from relying_party.web.passwords import hash_password
from relying_party.web.proxies import forwarded_client, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1", "2001:db8:1::/48"])


# -- client address behind proxies -------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # A peer that is not a trusted proxy is the client; its header is not believed.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        # One trusted proxy: the address it forwarded.
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        # Entries the client wrote itself sit left of the one the proxy added: ignored.
        ("10.1.2.3", ["1.1.1.1, 8.8.8.8, 198.51.100.1"], "198.51.100.1"),
        # A chain of trusted proxies is skipped from the right.
        ("127.0.0.1", ["198.51.100.1, 10.0.0.7, 10.9.9.9"], "198.51.100.1"),
        # Several headers are one list, in order.
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.0.0.2"], "198.51.100.1"),
        # Every hop trusted: the leftmost one is the best we know.
        ("10.1.2.3", ["10.0.0.9, 10.0.0.8"], "10.0.0.9"),
        # A malformed hop ends the walk at the last trusted one before it.
        ("10.1.2.3", ["198.51.100.1, <script>, 10.0.0.8"], "10.0.0.8"),
        ("10.1.2.3", ["unknown"], "10.1.2.3"),
        # No header from a trusted proxy: the proxy itself.
        ("10.1.2.3", [], "10.1.2.3"),
        # Ports and brackets as some proxies write them; IPv6 proxies.
        ("10.1.2.3", ["198.51.100.1:4711"], "198.51.100.1"),
        ("2001:db8:1::9", ["[2001:db8:ffff::1]:443"], "2001:db8:ffff::1"),
        # An IPv4 peer seen through a dual-stack socket.
        ("::ffff:10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("::ffff:203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
    ],
)
def test_forwarded_client(peer: str, headers: list[str], client: str) -> None:
    assert forwarded_client(peer, headers, PROXIES) == client


def test_no_trusted_proxy_means_the_header_is_never_read() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


@pytest.mark.parametrize("value", ["", "nope", "10.0.0.0/33", "1.2.3.4.5"])
def test_bad_trusted_proxy_is_named(value: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        parse_networks(["10.0.0.1", value])


def test_networks_are_parsed_loosely() -> None:
    assert parse_networks(["10.1.2.3/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.fixture
async def http_site(tmp_path: Path) -> AsyncIterator[tuple[str, Database, aiohttp.ClientSession]]:
    """The real app over real HTTP, trusting only 127.0.0.1 as a proxy; no broker is
    needed for the password step that fails (nothing reaches it)."""
    path = tmp_path / "rp.db"
    db = Database(path)
    db.add_user("alice", hash_password("correct horse battery"))
    db.close()
    settings = Settings(
        db_path=path, broker_url="http://127.0.0.1:9", api_key="unused", trusted_proxies=("127.0.0.1",)
    )
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield str(server.make_url("")), app[DB], http
    await server.close()


async def _wrong_password(url: str, http: aiohttp.ClientSession, xff: str | None) -> None:
    async with http.get(url + "/signin") as r:
        token = (await r.text()).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    form = {"csrf_token": token, "username": "alice", "password": "wrong password"}
    async with http.post(url + "/signin", data=form, headers=headers, allow_redirects=False) as r:
        assert r.status == 401


async def test_spoofed_forwarded_for_over_http(
    http_site: tuple[str, Database, aiohttp.ClientSession],
) -> None:
    url, db, http = http_site
    user = db.user_by_name("alice")
    assert user is not None
    # Through the trusted proxy (the test client is 127.0.0.1): the forwarded address.
    await _wrong_password(url, http, "9.9.9.9")
    # A client that prepends its own entries gets the address the proxy added, not theirs.
    await _wrong_password(url, http, "198.51.100.66, 9.9.9.10")
    rows = db.activity(user.id)
    assert [(r.ip, r.place, r.result) for r in rows] == [
        ("9.9.9.10", "Internet", "wrong_password"),
        ("9.9.9.9", "Internet", "wrong_password"),
    ]


async def test_forwarded_for_is_ignored_without_trusted_proxies(tmp_path: Path) -> None:
    path = tmp_path / "rp.db"
    db = Database(path)
    db.add_user("alice", hash_password("correct horse battery"))
    db.close()
    app = create_app(Settings(db_path=path, broker_url="http://127.0.0.1:9", api_key="unused"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await _wrong_password(str(server.make_url("")), http, "203.0.113.9")
        user = app[DB].user_by_name("alice")
        assert user is not None
        assert [(r.ip, r.place) for r in app[DB].activity(user.id)] == [("127.0.0.1", "This computer")]
    finally:
        await server.close()


# -- the push pause in words ---------------------------------------------------------------


def test_pause_of_the_brokers_push_block() -> None:
    now = now_ms()
    assert push_pause.pause_of(None, now) is None
    assert push_pause.pause_of({"muted_until": None, "blocked": False}, now) is None
    assert push_pause.pause_of({"muted_until": now + 60_000, "blocked": True}, now) == push_pause.PushPause(
        "paused", now + 60_000
    )
    assert push_pause.pause_of({"muted_until": -1, "blocked": True}, now) == push_pause.PushPause(
        "paused", None
    )
    # A mute that ended (the broker has not noticed yet) is no pause.
    assert push_pause.pause_of({"muted_until": now - 1, "blocked": False}, now) is None
    assert push_pause.pause_of({"muted_until": None, "blocked": True}, now) == push_pause.PushPause(
        "blocked", None
    )
    # A malformed field is not taken for a pause.
    assert push_pause.pause_of({"muted_until": True, "blocked": "yes"}, now) is None


def test_paused_message_says_until_when_and_why() -> None:
    assert "until 04 Dec 2026, 18:00 UTC" in push_pause.paused_message(1796407200000, reported_here=False)
    assert "until you change your password" in push_pause.paused_message(-1, reported_here=False)
    assert "verification code" in push_pause.paused_message(None, reported_here=True)
    # A report kept here was a sign-in request; the broker's mute alone may also come from
    # a "not me" answer to a restore on a new device (a disown), which it does not tell.
    assert "a sign-in request was reported" in push_pause.paused_message(None, reported_here=True)
    broker_only = push_pause.paused_message(None, reported_here=False)
    assert "a sign-in request was reported" not in broker_only
    assert "or to a restore of your account on a new device" in broker_only


# -- sign-in activity ----------------------------------------------------------------------


def test_every_final_status_has_an_activity_result() -> None:
    assert activity.result_of(Status.PENDING) is None
    for status in Status:
        if status is Status.PENDING:
            continue
        result = activity.result_of(status)
        assert result in activity.RESULTS, status
        assert activity.view(result).label
    assert activity.result_of(Status.NUMBER_MISMATCH) == "wrong_number"
    assert activity.result_of(Status.REPORTED) == "reported"
    assert activity.view("from a newer version") == activity.UNKNOWN


def test_refusal_reasons_have_labels() -> None:
    for reason in ("paused", "blocked", "rate_limited", "no_devices", "unavailable", "too_many", "failed"):
        assert activity.detail_label("refused", reason) != reason
    assert activity.detail_label("approved", "Phone") == "Phone"


def test_activity_rows_settle_once_and_stay_bounded() -> None:
    db = Database(":memory:")
    user = db.add_user("alice", "x")
    ctx = {"app": "Portal", "ip": "203.0.113.9", "location": "Internet", "browser": "Firefox"}
    db.add_activity(user.id, "push", "pending", ctx, challenge_id="ch-1", challenge="{}")
    assert [r.challenge_id for r in db.pending_activity(user.id)] == ["ch-1"]
    assert db.settle_activity("ch-1", "reported")
    assert not db.settle_activity("ch-1", "approved")  # a settled row never changes
    assert db.pending_activity(user.id) == []
    (report,) = db.unseen_reports(user.id)
    assert (report.ip, report.place, report.browser, report.challenge) == (
        "203.0.113.9",
        "Internet",
        "Firefox",
        None,
    )
    assert db.unresolved_report(user.id)
    # A report no password change answered outlives any flood of rows after it (it is
    # what pauses push here); once answered, it goes with the rest.
    for _ in range(ACTIVITY_KEEP + 5):
        db.add_activity(user.id, "code", "wrong_code", ctx)
    assert len(db.activity(user.id, limit=10_000)) == ACTIVITY_KEEP + 1
    assert db.unresolved_report(user.id)
    db.mark_reports_seen(user.id)
    assert db.unseen_reports(user.id) == [] and not db.unresolved_report(user.id)
    db.add_activity(user.id, "code", "wrong_code", ctx)
    assert len(db.activity(user.id, limit=10_000)) == ACTIVITY_KEEP


def test_password_change_clears_the_requirement_and_epochs_count_up() -> None:
    db = Database(":memory:")
    user = db.add_user("alice", "x")
    assert not db.unresolved_report(user.id)
    db.require_password_change(user.id)
    assert db.user_by_id(user.id).must_change_password  # type: ignore[union-attr]
    assert db.unresolved_report(user.id)
    db.set_password(user.id, "y")
    assert not db.unresolved_report(user.id)
    changed = db.user_by_id(user.id)
    assert changed is not None and not changed.must_change_password and changed.password_changed_at
    assert db.bump_session_epoch(user.id) == 1
    assert db.bump_session_epoch(user.id) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/security/password",
        "/security/signout-everywhere",
        "/reauth/push",
        "/reauth/code",
        "/reauth/password",
        "/reauth/cancel",
    ],
)
async def test_new_forms_need_the_csrf_token(
    http_site: tuple[str, Database, aiohttp.ClientSession], path: str
) -> None:
    url, _db, http = http_site
    async with http.get(url + "/signin"):
        pass  # a session exists, so only the token is missing
    async with http.post(url + path, data={"code": "123456"}, allow_redirects=False) as r:
        assert r.status == 403
        assert "Nothing was changed" in await r.text()
