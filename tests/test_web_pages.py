"""The demo RP over real HTTP: its own aiohttp server, a real broker on its own Redis.

Bad input of every kind gets a clear message on the page and changes nothing.
Devices are put in the RP's database directly where the test is about the RP's
own checks (the browser tests enroll real ones through the agent).
"""

from __future__ import annotations

import asyncio
import html as html_lib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from aiohttp.test_utils import TestServer
from e2e_helpers import agent as agent_cli
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from support import DEADLINE, BrokerProcess, set_policy, store_policy, until
from support.faketime import needs_faketime, skewed
from support.hostile_broker import HostileBroker
from test_broker_device_ws import Device

from protocol import signing
from relying_party import wire
from relying_party.sdk import PushAuthClient
from relying_party.web import recovery_codes
from relying_party.web.app import create_app
from relying_party.web.config import Settings
from relying_party.web.db import Database, Enrollment, User, now_ms
from relying_party.web.keys import CLIENT, DB
from relying_party.web.passwords import hash_password, verify_password

PASSWORD = "correct horse battery"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = pyotp.random_base32(32)


@dataclass
class Site:
    server: TestServer
    http: aiohttp.ClientSession
    db: Database

    @property
    def url(self) -> str:
        return str(self.server.make_url(""))

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.http.get(self.url + path, allow_redirects=kw.pop("follow", True), **kw) as r:
            return r.status, await r.text()

    async def token(self, path: str = "/signin") -> str:
        _, html = await self.get(path)
        match = TOKEN_RE.search(html)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    async def post(self, path: str, data: Any, *, follow: bool = False, **kw: Any) -> aiohttp.ClientResponse:
        r = await self.http.post(self.url + path, data=data, allow_redirects=follow, **kw)
        await r.read()
        return r

    async def sign_in(self, user: str = "alice", password: str = PASSWORD) -> aiohttp.ClientResponse:
        token = await self.token()
        return await self.post("/signin", {"csrf_token": token, "username": user, "password": password})

    async def signed_in(self) -> bool:
        async with self.http.get(self.url + "/account", allow_redirects=False) as r:
            return r.status == 200


async def _site(settings: Settings) -> AsyncIterator[Site]:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    # unsafe=True: keep cookies for an IP-address host (127.0.0.1), as browsers do.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Site(server, http, app[DB])
    await server.close()


@pytest.fixture
def settings(broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path) -> Settings:
    db = Database(tmp_path / "rp.db")
    for name in ("alice", "bob"):
        db.add_user(name, hash_password(PASSWORD))
    db.close()
    return Settings(
        db_path=tmp_path / "rp.db",
        broker_url=broker.http_url,
        api_key=rp["api_key"],
        app_name="Test Portal",
        lockout_after=3,
        ip_failures=50,
    )


@pytest.fixture
async def site(settings: Settings) -> AsyncIterator[Site]:
    async for s in _site(settings):
        yield s


def add_device(db: Database, user: User, cid: str = "cred-1", name: str = "Phone") -> None:
    """A device row as enrollment leaves it (the browser tests make real ones)."""
    enrollment = Enrollment(f"enr-{cid}", user.id, "pushauth://enroll", SECRET, "SHA1", 6, 30, now_ms(), None)
    db.add_enrollment(enrollment)
    db.add_device(enrollment, cid, name, bytes(32))
    db.confirm_device(cid)


def user(db: Database, name: str = "alice") -> User:
    found = db.user_by_name(name)
    assert found is not None
    return found


# -- pages, headers, cookies ---------------------------------------------------------


async def test_sign_in_page_headers_and_cookie(site: Site) -> None:
    async with site.http.get(site.url + "/signin") as r:
        html = await r.text()
        assert r.status == 200
        assert "<h1>Sign in</h1>" in html
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
        cookie = r.cookies["pushauth_rp"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
    # Everything the page loads is served here: no external origin anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        status, _ = await site.get(asset)
        assert status == 200, asset


async def test_secure_cookies_for_https_sites(settings: Settings) -> None:
    async for s in _site(replace(settings, secure_cookies=True)):
        async with s.http.get(s.url + "/signin") as r:
            header = r.headers["Set-Cookie"]
        # The __Host- prefix: Secure, Path=/ and no Domain, so no subdomain can set or read it.
        assert header.startswith("__Host-pushauth_rp=")
        assert "Secure" in header and "HttpOnly" in header and "Path=/" in header
        assert "Domain" not in header


async def test_unknown_page_is_a_page_not_a_traceback(site: Site) -> None:
    status, html = await site.get("/nope")
    assert status == 404 and "Page not found" in html and "Traceback" not in html


# -- password step ---------------------------------------------------------------------


async def test_wrong_password_and_unknown_user_read_the_same(site: Site) -> None:
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
        r = await site.sign_in(name, password)
        assert r.status == 401
        assert "The user name or password is incorrect." in await r.text()
    assert not await site.signed_in()


async def test_the_password_step_gives_a_new_cookie(site: Site) -> None:
    """Session fixation at the second step: the cookie from before the password (which
    someone else may have planted) reached the pending sign-in, its push page and number,
    and the approval's finish. It is replaced when the password is accepted."""
    add_device(site.db, user(site.db))

    def cookie() -> str:
        return site.http.cookie_jar.filter_cookies(site.server.make_url(""))["pushauth_rp"].value

    await site.get("/signin")
    planted = cookie()
    r = await site.sign_in()
    assert r.status == 303 and r.headers["Location"] in ("/signin/push", "/signin/code")
    assert cookie() != planted
    status, html = await site.get(r.headers["Location"])
    assert status == 200 and ("<h1>Enter code</h1>" in html or "<h1>Approve sign-in request</h1>" in html)
    async with (
        aiohttp.ClientSession() as other,
        other.get(site.url + "/signin/code", headers={"Cookie": f"pushauth_rp={planted}"}) as got,
    ):
        assert got.url.path == "/signin"  # the planted cookie is worth nothing


async def test_user_without_authenticator_signs_in_with_password(site: Site) -> None:
    await site.token()
    before = site.http.cookie_jar.filter_cookies(site.server.make_url("/"))["pushauth_rp"].value
    r = await site.sign_in()
    assert r.status == 303 and r.headers["Location"] == "/security"
    status, html = await site.get("/security")
    assert status == 200 and "protected by a password only" in html
    # A new session cookie on sign-in; the one from before is worth nothing now.
    after = site.http.cookie_jar.filter_cookies(site.server.make_url("/"))["pushauth_rp"].value
    assert after != before
    async with (
        aiohttp.ClientSession(cookies={"pushauth_rp": before}) as other,
        other.get(site.url + "/account", allow_redirects=False) as r2,
    ):
        assert r2.status == 303


async def test_sign_out_ends_the_session(site: Site) -> None:
    await site.sign_in()
    cookie = site.http.cookie_jar.filter_cookies(site.server.make_url("/"))["pushauth_rp"].value
    token = await site.token("/account")
    r = await site.post("/signout", {"csrf_token": token})
    assert r.status == 303 and r.headers["Location"] == "/signin"
    assert not await site.signed_in()
    async with (
        aiohttp.ClientSession(cookies={"pushauth_rp": cookie}) as other,
        other.get(site.url + "/account", allow_redirects=False) as r2,
    ):
        assert r2.status == 303


async def test_account_locks_after_failed_passwords(site: Site) -> None:
    for _ in range(3):
        assert (await site.sign_in("alice", "wrong password")).status == 401
    r = await site.sign_in()  # the right password, but locked now
    assert r.status == 429
    assert "locked" in await r.text()
    assert not await site.signed_in()
    assert user(site.db).locked_until > now_ms()
    # Other accounts are not affected.
    assert (await site.sign_in("bob")).status == 303


async def test_guesses_sent_at_once_lock_the_account_as_well(site: Site) -> None:
    # Each check awaits (Argon2, the broker before a code): without one attempt at a time
    # per account, all of a burst read "not locked" and were all checked, the right
    # password among them signing in.
    token = await site.token()
    guesses = [{"csrf_token": token, "username": "alice", "password": f"guess {i}"} for i in range(12)]
    guesses.append({"csrf_token": token, "username": "alice", "password": PASSWORD})
    answers = await asyncio.gather(*(site.post("/signin", guess) for guess in guesses))
    assert sorted(r.status for r in answers) == [401] * 3 + [429] * 10
    assert not await site.signed_in()


async def test_unknown_names_lock_the_same_way(site: Site) -> None:
    # Otherwise "locked" after a few tries would tell which user names exist.
    for _ in range(3):
        assert (await site.sign_in("nobody", "wrong password")).status == 401
    r = await site.sign_in("nobody", "wrong password")
    assert r.status == 429
    assert "This account is locked for 1 minute" in await r.text()


async def test_unknown_names_lock_as_long_and_as_often_as_users(site: Site) -> None:
    """Failures on names that do not exist were counted in a sliding window, a user's in a
    row with each lock doubling: a second round of guesses locked alice for 2 minutes and
    "nobody" for 1 (and failures spread over more than a minute never locked "nobody"),
    which told which names exist. Both are counted the same way now, in the database."""
    for _ in range(2):  # two rounds, each lock ended as time would end it
        site.db.conn.execute("UPDATE users SET locked_until = 0")
        site.db.conn.execute("UPDATE unknown_name_failures SET locked_until = 0")
        answers = []
        for name in ("alice", "nobody"):
            for _ in range(3):
                assert (await site.sign_in(name, "wrong password")).status == 401
            r = await site.sign_in(name, "wrong password")
            assert r.status == 429
            answers.append(re.search(r"locked for \d+ minutes?", await r.text()))
        assert answers[0] and answers[1] and answers[0].group() == answers[1].group(), answers
    assert answers[0].group() == "locked for 2 minutes"
    counts = "SELECT failed_attempts, lockouts FROM {} WHERE name = ?"
    alice = site.db.conn.execute(counts.format("users"), ("alice",)).fetchone()
    nobody = site.db.conn.execute(counts.format("unknown_name_failures"), ("NoBody",)).fetchone()
    assert tuple(alice) == tuple(nobody) == (0, 2)


async def test_address_limit_stops_spraying_many_names(settings: Settings) -> None:
    async for s in _site(replace(settings, ip_failures=3)):
        for name in ("carol", "dave", "erin"):
            assert (await s.sign_in(name, "guess one two")).status == 401
        r = await s.sign_in()
        assert r.status == 429
        assert "Too many failed attempts from your network" in await r.text()


async def test_address_limit_counts_an_ipv6_client_by_its_64(settings: Settings) -> None:
    # A client with a /64 may use a fresh address for each guess: counted one by one,
    # none of them ever reached the limit.
    async for s in _site(replace(settings, ip_failures=3, trusted_proxies=("127.0.0.1",))):
        token = await s.token()
        for i, name in enumerate(("carol", "dave", "erin")):
            form = {"csrf_token": token, "username": name, "password": "guess one two"}
            r = await s.post("/signin", form, headers={"X-Forwarded-For": f"2001:db8::{i + 1}"})
            assert r.status == 401
        form = {"csrf_token": token, "username": "alice", "password": PASSWORD}
        r = await s.post("/signin", form, headers={"X-Forwarded-For": "2001:db8::ff"})
        assert r.status == 429
        assert "Too many failed attempts from your network" in await r.text()
        r = await s.post("/signin", form, headers={"X-Forwarded-For": "2001:db8:0:1::1"})
        assert r.status == 303  # another /64 is another client


# -- CSRF --------------------------------------------------------------------------------


async def test_post_without_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    await site.token()
    for form in ({"username": "alice", "password": PASSWORD}, {"csrf_token": "é", "username": "alice"}):
        r = await site.post("/signin", form)
        assert r.status == 403
        assert "Nothing was changed" in await r.text()
    assert not await site.signed_in()

    assert (await site.sign_in()).status == 303
    add_device(site.db, user(site.db))
    # A token with a character beyond ASCII was a TypeError in compare_digest: a 500.
    forged = ({"name": "Renamed", "csrf_token": t} for t in ("forged", "forgé", "\u00e9" * 43))
    for data in ({"name": "Renamed"}, *forged):
        r = await site.post("/security/devices/cred-1/rename", data)
        assert r.status == 403
    r = await site.post("/signout", {})
    assert r.status == 403
    assert await site.signed_in()
    assert site.db.device(user(site.db).id, "cred-1").name == "Phone"  # type: ignore[union-attr]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_cross_origin_post_is_refused_even_with_a_token(site: Site, origin: str) -> None:
    token = await site.token()
    r = await site.post(
        "/signin",
        {"csrf_token": token, "username": "alice", "password": PASSWORD},
        headers={"Origin": origin},
    )
    assert r.status == 403
    assert not await site.signed_in()
    # The same post from the site's own origin is fine.
    r = await site.post(
        "/signin",
        {"csrf_token": token, "username": "alice", "password": PASSWORD},
        headers={"Origin": site.url.rstrip("/")},
    )
    assert r.status == 303


# -- malformed and oversized fields --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([("username", "al\x00ice"), ("password", PASSWORD)], "characters that are not allowed"),
        ([("username", "a" * 65), ("password", PASSWORD)], "too long"),
        ([("username", "al ice"), ("password", PASSWORD)], "A user name has"),
        ([("username", "alice"), ("username", "bob"), ("password", PASSWORD)], "missing"),
        ([("password", PASSWORD)], "The user name is missing"),
        ([("username", "alice"), ("password", "x" * 257)], "too long"),
        ([("username", "alice"), ("password", "")], "Enter your password"),
    ],
)
async def test_malformed_sign_in_fields(site: Site, fields: list[tuple[str, str]], message: str) -> None:
    token = await site.token()
    r = await site.post("/signin", [("csrf_token", token), *fields])
    assert r.status == 400
    html = await r.text()
    assert message in html and "Traceback" not in html
    assert not await site.signed_in()
    assert user(site.db).failed_attempts == 0  # malformed input is not a password guess


async def test_oversized_form_is_refused(site: Site) -> None:
    token = await site.token()
    r = await site.post("/signin", {"csrf_token": token, "username": "alice", "password": "x" * 20_000})
    assert r.status == 413
    html = await r.text()
    assert "larger than this site accepts" in html and "Traceback" not in html
    assert not await site.signed_in()


async def test_file_upload_in_place_of_a_field_is_refused(site: Site) -> None:
    token = await site.token()
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("username", b"alice", filename="name.txt")
    form.add_field("password", PASSWORD)
    r = await site.post("/signin", form)
    assert r.status == 400
    assert not await site.signed_in()


# -- push step and verification codes ---------------------------------------------------------


async def test_push_unavailable_offers_verification_code(site: Site) -> None:
    # The RP has a device on file, but the broker has no active credential for the
    # user (e.g. the app removed the account itself): the page says so and offers codes.
    add_device(site.db, user(site.db))
    r = await site.sign_in()
    assert r.status == 303 and r.headers["Location"] == "/signin/code"
    status, html = await site.get("/signin/code")
    assert status == 200 and "None of your devices can receive requests" in html
    assert not await site.signed_in()


async def _code_page(site: Site) -> str:
    add_device(site.db, user(site.db))
    await site.sign_in()
    return await site.token("/signin/code")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "Enter the code"),
        ("12ab56", "6 or 8 digits"),
        ("12345", "6 or 8 digits"),
        ("1" * 40, "too long"),
        # Digits of other scripts (full-width, Arabic-Indic) are the code's digits, as the web
        # authenticator takes them for the number (test_web_units.py); look-alikes that are
        # not decimal digits are not.
        ("\u00b2\u00b3\u2074\u2075\u2076\u2077", "6 or 8 digits"),  # superscripts
    ],
)
async def test_malformed_codes(site: Site, code: str, message: str) -> None:
    token = await _code_page(site)
    r = await site.post("/signin/code", {"csrf_token": token, "code": code})
    assert r.status == 400
    assert message in await r.text()
    assert not await site.signed_in()


async def _real_code_page(site: Site, tmp_path: Path) -> tuple[str, pyotp.TOTP]:
    """alice's device made real (the agent enrolled it, the broker lists it: the code step
    follows the broker's list first), then the password: at the code page. Its CSRF
    token and the device's codes (the secret we provisioned for it)."""
    home = tmp_path / "phone"
    cid = await _signed_out_with_a_phone(site, home)
    device = site.db.device(user(site.db).id, cid)
    assert device is not None and (device.totp_algorithm, device.totp_digits, device.totp_period) == (
        "SHA1",
        6,
        30,
    )
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    return await site.token("/signin/code"), pyotp.TOTP(device.totp_secret)


async def test_code_signs_in_once_and_is_refused_when_replayed_and_a_report_kept_here_pauses_push(
    site: Site, tmp_path: Path
) -> None:
    token, totp = await _real_code_page(site, tmp_path)
    wrong = str((int(totp.now()) + 1) % 1_000_000).zfill(6)
    r = await site.post("/signin/code", {"csrf_token": token, "code": wrong})
    assert r.status == 401 and "not right" in await r.text()

    code = totp.now()
    r = await site.post("/signin/code", {"csrf_token": token, "code": code[:3] + " " + code[3:]})
    assert r.status == 303 and r.headers["Location"] == "/account"
    _, html = await site.get("/account")
    assert "Verification code (Agent)" in html

    # Sign out, sign in again, and try the same code: refused.
    await site.post("/signout", {"csrf_token": await site.token("/account")})
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    token = await site.token("/signin/code")
    r = await site.post("/signin/code", {"csrf_token": token, "code": code})
    assert r.status == 401 and "already used" in await r.text()
    assert not await site.signed_in()
    # The activity says so too (a right code typed again is not a typo).
    latest = next(a.result for a in site.db.activity(user(site.db).id) if a.method == "code")
    assert latest == "used_code"

    # That sign-in's request is reported on the phone as "not me"; the RP reads it (the
    # page asks the broker). Then the broker's data is restored from a copy older than the
    # report (docs/operations.md): its mute is gone, and it would send push again.
    home = tmp_path / "phone"
    reported = await phone(home, "deny", "--fraud", "--", (await _only_pending(home))["id"])
    assert reported.returncode == 0, reported.stderr
    _, html = await site.get("/signin/push")
    assert 'data-status="reported"' in html
    alice = user(site.db)
    await site.server.app[CLIENT].lift_push_block(alice.handle)  # what the restore does
    # Whoever knows the password: no push is sent while this RP's own record holds the
    # report, and the page says the same as when the broker pauses push.
    assert (await site.sign_in()).headers["Location"] == "/signin/code"
    status, html = await site.get("/signin/code")
    assert status == 200 and 'data-reason="paused"' in html
    assert "paused until you change your password" in html_lib.unescape(html)
    r = await site.post("/push/resend", {"csrf_token": await site.token("/signin/code"), "purpose": "signin"})
    assert r.headers["Location"] == "/signin/code"
    assert json.loads((await phone(home, "pending", "--json")).stdout) == []
    state = await site.server.app[CLIENT].push_block(alice.handle)
    assert state["pushes_since_sign_in"] == 0 and state["muted_until"] is None
    # The code signs in and asks for the new password; it ends the pause here.
    r = await site.post(
        "/signin/code", {"csrf_token": await site.token("/signin/code"), "code": totp.at(time.time() + 30)}
    )
    assert r.headers["Location"] == "/security/password"
    new = "a new and long password"
    form = {
        "csrf_token": await site.token("/security/password"),
        "current": PASSWORD,
        "new": new,
        "repeat": new,
    }
    r = await site.post("/security/password", form, follow=True)
    assert "Push requests to your devices are on again" in html_lib.unescape(await r.text())
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    assert (await site.sign_in(password=new)).headers["Location"] == "/signin/push"
    assert len(json.loads((await phone(home, "pending", "--json")).stdout)) == 1


async def _sign_in_page_left(site: Site, home: Path) -> tuple[str, str]:
    """Whoever knows alice's password (her device set up): the push page is loaded once,
    then left (that browser is gone). The id of its request, pending on the phone, and
    the page's number."""
    await _signed_out_with_a_phone(site, home)
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    status, html = await site.get("/signin/push")
    assert status == 200 and 'data-status="pending"' in html
    site.http.cookie_jar.clear()
    request = await _only_pending(home)
    (row,) = [a for a in site.db.activity(user(site.db).id) if a.challenge_id == request["id"]]
    # Still waiting: its request is kept, for whichever page reads its result later.
    assert (row.result, row.challenge is not None) == ("pending", True)
    return str(request["id"]), _number(html)


async def test_a_code_of_a_device_whose_setup_was_not_finished_says_so(site: Site, tmp_path: Path) -> None:
    """A tablet was added but its test notification never approved ("Setup not finished"):
    its code does not sign in, and the page says why instead of "not right" (which sent the
    person checking a code that is right). Shown after the password step only."""
    phone_home, tablet_home = tmp_path / "phone", tmp_path / "tablet"
    await site.sign_in()
    cid = await _enroll_with_agent(site, phone_home)
    await _finish_setup(site, phone_home, cid)
    setup = await _start_setup(site, tablet_home, name="Tablet")
    r = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)})
    assert r.headers["Location"] == "/security/test-notification"
    await site.post("/signout", {"csrf_token": await site.token("/security")})

    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    code = json.loads((await phone(tablet_home, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    shown = html_lib.unescape(await r.text())
    assert r.status == 401 and not await site.signed_in()
    assert "That code is from Tablet, whose setup was not finished, so it cannot sign you in." in shown
    assert "finish setting up Tablet under Security info" in shown and "not right" not in shown
    latest = next(a for a in site.db.activity(user(site.db).id) if a.method == "code")
    assert (latest.result, latest.detail) == ("wrong_code", "Tablet, setup not finished")
    # A code of the finished phone signs in as before.
    code = json.loads((await phone(phone_home, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    assert r.status == 303 and r.headers["Location"] == "/account"
    # "Verify it's you" says the same of it, and is not verified by it.
    code = json.loads((await phone(tablet_home, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/reauth/code", {"csrf_token": await site.token("/reauth"), "code": code})
    shown = html_lib.unescape(await r.text())
    assert r.status == 401 and "That code is from Tablet, whose setup was not finished" in shown
    assert "so it cannot verify it's you" in shown


async def test_a_report_made_after_the_push_page_was_left_is_kept_here(site: Site, tmp_path: Path) -> None:
    """The phone reports the request only after its page was left: the next sign-in (a
    code, push being paused) reads it, keeps the report and shows what was reported
    (before, loading the page had dropped the request kept for that, and the row stayed
    "pending" for good)."""
    home = tmp_path / "phone"
    ch, _ = await _sign_in_page_left(site, home)
    reported = await phone(home, "deny", "--fraud", "--", ch)
    assert reported.returncode == 0, reported.stderr

    assert (await site.sign_in()).headers["Location"] == "/signin/code"
    code = json.loads((await phone(home, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    assert r.headers["Location"] == "/security/password"
    (row,) = [a for a in site.db.activity(user(site.db).id) if a.challenge_id == ch]
    assert row.result == "reported"
    _, html = await site.get("/security/password")
    assert "What was reported" in html


async def test_a_wrong_number_is_listed_as_such_in_the_activity(site: Site, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    ch, number = await _sign_in_page_left(site, home)
    typed = str((int(number) + 1) % 10 ** len(number)).zfill(len(number))
    wrong = await phone(home, "approve", "--number", typed, "--", ch)
    assert wrong.returncode == 0 and "number_mismatch" in wrong.stdout, wrong.stderr
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    code = json.loads((await phone(home, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    assert r.headers["Location"] == "/account"
    _, html = await site.get("/security/activity")
    (row,) = [a for a in site.db.activity(user(site.db).id) if a.challenge_id == ch]
    assert row.result == "wrong_number" and "Wrong number entered" in html


async def test_an_answer_read_by_the_open_push_page_names_its_device_in_the_activity(
    site: Site, tmp_path: Path
) -> None:
    """Denied on the phone while the sign-in page is open: the page learns it and the
    activity row names the device that answered, as for an approval. The rows of denials,
    wrong numbers and reports read by the open page named none (only those read later did)."""
    home = tmp_path / "phone"
    await _signed_out_with_a_phone(site, home)
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    ch = (await _only_pending(home))["id"]
    assert (await phone(home, "deny", "--", ch)).returncode == 0
    status, html = await site.get("/signin/push")
    assert status == 200 and 'data-status="denied"' in html
    (row,) = [a for a in site.db.activity(user(site.db).id) if a.challenge_id == ch]
    assert (row.result, row.detail) == ("denied", "Agent")


async def test_code_with_one_step_of_clock_skew(site: Site, tmp_path: Path) -> None:
    token, totp = await _real_code_page(site, tmp_path)
    # Codes are picked by time step: keep clear of a step boundary while the request runs.
    if time.time() % 30 > 27:
        await asyncio.sleep(30 - time.time() % 30 + 0.1)
    two_back = totp.at(time.time() - 60)
    r = await site.post("/signin/code", {"csrf_token": token, "code": two_back})
    assert r.status == 401  # two steps away: too far
    r = await site.post("/signin/code", {"csrf_token": token, "code": totp.at(time.time() - 30)})
    assert r.status == 303


async def test_codes_lock_the_account_too(site: Site, tmp_path: Path) -> None:
    token, totp = await _real_code_page(site, tmp_path)
    wrong = str((int(totp.now()) + 1) % 1_000_000).zfill(6)
    for _ in range(3):
        r = await site.post("/signin/code", {"csrf_token": token, "code": wrong})
        assert r.status == 401 and "not right" in await r.text()
    r = await site.post("/signin/code", {"csrf_token": token, "code": totp.now()})
    assert r.status == 429 and "locked" in await r.text()
    assert not await site.signed_in()


async def test_codes_sent_at_once_lock_the_account_as_well(site: Site, tmp_path: Path) -> None:
    # The code step awaits the broker's list before it checks: a burst all read "not locked".
    token, totp = await _real_code_page(site, tmp_path)
    wrong = [str((int(totp.now()) + i) % 1_000_000).zfill(6) for i in range(1, 13)]
    codes = [{"csrf_token": token, "code": code} for code in [*wrong, totp.now()]]
    answers = await asyncio.gather(*(site.post("/signin/code", code) for code in codes))
    assert sorted(r.status for r in answers) == [401] * 3 + [429] * 10
    assert not await site.signed_in()


async def test_code_page_needs_the_password_first(site: Site) -> None:
    token = await site.token()
    r = await site.post("/signin/code", {"csrf_token": token, "code": "123456"})
    assert r.status == 303 and r.headers["Location"] == "/signin"
    assert not await site.signed_in()


# -- Security info: foreign and expired setups, removed devices, renames ------------------------


async def test_foreign_enrollment_is_not_found(site: Site, settings: Settings) -> None:
    await site.sign_in("alice")
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    assert r.status == 303
    alice_setup = r.headers["Location"]
    status, html = await site.get(alice_setup)
    assert status == 200 and "pushauth://enroll?" in html and "<svg" in html

    async for bob in _site(settings):
        await bob.sign_in("bob")
        for path in (alice_setup, "/security/setup/..%2F..", "/security/setup/" + "x" * 100):
            status, html = await bob.get(path)
            assert status == 404, path
            assert "not found" in html and "pushauth://" not in html
        token = await bob.token("/security")
        r = await bob.post(alice_setup + "/continue", {"csrf_token": token})
        assert r.status == 404


async def test_continue_before_the_device_registered(site: Site) -> None:
    await site.sign_in()
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    setup = r.headers["Location"]
    r = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)}, follow=True)
    assert "has not connected yet" in await r.text()
    assert site.db.devices(user(site.db).id) == []


async def test_expired_enrollment(site: Site) -> None:
    await site.sign_in()
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    setup = r.headers["Location"]
    site.db.conn.execute("UPDATE enrollments SET expires_at = 1")
    status, html = await site.get(setup)
    assert status == 200 and "expired" in html and "pushauth://enroll?" not in html
    r = await site.post(setup + "/continue", {"csrf_token": await site.token("/security")}, follow=True)
    assert "This setup expired" in await r.text()
    assert site.db.devices(user(site.db).id) == []


async def test_unknown_method_is_refused(site: Site) -> None:
    await site.sign_in()
    r = await site.post("/security/add", {"csrf_token": await site.token("/security/add"), "method": "sms"})
    assert r.status == 400 and "Choose a method" in await r.text()


async def test_a_user_at_the_devices_cap_is_told_before_any_qr_code(
    site: Site, broker: BrokerProcess, rp: dict[str, Any]
) -> None:
    """The broker's max_credentials (here 1) refuses a new setup for a user who has that
    many devices: the page says so and what to do, and starts nothing."""
    await store_policy(broker, rp["id"], max_credentials=1)
    handle = user(site.db).handle
    async with PushAuthClient(broker.http_url, rp["api_key"]) as sdk:
        started = await sdk.create_enrollment(handle, "alice")
        phone = await Device.connect(broker.ws_url)
        await phone.enroll(started.uri or "")
        await phone.close()
    await site.sign_in()
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    page = await r.text()
    assert r.status == 409 and "You have as many authenticators as this site allows (1)" in page
    assert "Remove one you no longer use" in page and "pushauth://" not in page
    assert site.db.open_enrollments(user(site.db).id) == []


async def _sse_events(stream: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The setup page's server-sent events, one `data:` object at a time, but "pending"
    (said again at each of the page's long-polls that timed out, on a slow machine)."""
    while line := await stream.readline():
        if line.startswith(b"data: ") and (event := json.loads(line[len(b"data: ") :])) != {
            "status": "pending"
        }:
            yield event


async def test_a_device_refused_at_the_devices_cap_is_said_on_the_setup_page_and_the_code_still_works(
    site: Site, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    """The setup started while alice had room (max_credentials 1); another device took the
    place before her phone scanned the code: the broker refuses the phone, and the page,
    still showing the QR code, says why and what to do (RP API 1.11). Once that other
    device is removed, the same code adds the phone and the page moves on."""
    await store_policy(broker, rp["id"], max_credentials=1)
    await site.sign_in()
    setup, link = await _setup_link(site)
    async with (
        PushAuthClient(broker.http_url, rp["api_key"]) as sdk,
        site.http.get(site.url + setup + "/events") as r,
    ):
        other = await sdk.create_enrollment(user(site.db).handle, "alice")
        tablet = await Device.connect(broker.ws_url)
        await tablet.enroll(other.uri or "")
        await tablet.close()
        events = _sse_events(r.content)
        refused = await phone(tmp_path / "phone", "enroll", "--name", "Phone", link)
        assert refused.returncode == 1, refused
        said = await asyncio.wait_for(anext(events), DEADLINE)
        assert said == {
            "status": "at_device_cap",
            "message": "This account already has the most devices allowed (1). Remove one under "
            "Security info, then scan this code again.",
        }
        # The page, shown again, keeps the code; "Next" says the same.
        _, html = await site.get(setup)
        assert 'id="enroll-uri"' in html and html_lib.unescape(link) in html_lib.unescape(html)
        r2 = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)}, follow=True)
        shown = html_lib.unescape(await r2.text())
        assert "already has the most devices allowed (1)" in shown and 'id="enroll-uri"' in shown
        assert site.db.devices(user(site.db).id) == []

        await sdk.revoke_credential(tablet.cid)
        enrolled = await phone(tmp_path / "phone", "enroll", "--name", "Phone", link)
        assert enrolled.returncode == 0, enrolled.stderr
        assert await asyncio.wait_for(anext(events), DEADLINE) == {"status": "completed"}
    assert [d.name for d in site.db.devices(user(site.db).id)] == ["Phone"]


async def test_rename_checks_the_name(site: Site, tmp_path: Path) -> None:
    # A real device: Security info keeps only what the broker still lists.
    await site.sign_in()
    cid = await _enroll_with_agent(site, tmp_path / "phone")
    for bad, message in (
        ("   ", "Enter a name"),
        ("x" * 65, "at most 64"),
        ("x" * 300, "at most 64"),  # past what the form reads: the same limit said
        ("a\x07b", "not allowed"),
        # Invisible or reordering: one device's name could pass for another's.
        ("\u200b\u200b", "U+200B"),
        ("Phone\u202eA gnp.exe", "U+202E"),
    ):
        token = await site.token("/security")
        r = await site.post(
            f"/security/devices/{cid}/rename", {"csrf_token": token, "name": bad}, follow=True
        )
        assert message in await r.text()
        assert site.db.device(user(site.db).id, cid).name == "Agent"  # type: ignore[union-attr]
    token = await site.token("/security")
    r = await site.post(
        f"/security/devices/{cid}/rename", {"csrf_token": token, "name": " Work   phone "}, follow=True
    )
    assert "Renamed to Work phone." in await r.text()
    assert site.db.device(user(site.db).id, cid).name == "Work phone"  # type: ignore[union-attr]


async def test_two_devices_of_one_name_are_told_apart(site: Site, tmp_path: Path) -> None:
    """The same phone added again, or two phones that report the same default name: before,
    Security info listed two "Agent"s, and the person could not tell which one to remove.
    This site names the second one "Agent (2)" (the device keeps its own name), and a rename
    to a name another device has is refused."""
    await site.sign_in()
    for home in ("phone", "other-phone"):
        setup = await _start_setup(site, tmp_path / home, name="Agent")
        r = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)})
        assert r.headers["Location"] == "/security/test-notification"
    first, second = site.db.devices(user(site.db).id)
    assert (first.name, second.name) == ("Agent", "Agent (2)")
    _, html = await site.get("/security")
    assert re.findall(r'class="device-name">([^<]*)<', html) == ["Agent", "Agent (2)"]
    _, html = await site.get(f"/security/devices/{second.credential_id}/remove")
    assert "Agent (2)" in html
    # A rename does not make them alike again, whatever the case or spacing.
    token = await site.token("/security")
    r = await site.post(
        f"/security/devices/{second.credential_id}/rename",
        {"csrf_token": token, "name": " agent "},
        follow=True,
    )
    assert "Another of your devices is already called Agent. Choose a different name." in await r.text()
    assert site.db.device(user(site.db).id, second.credential_id).name == "Agent (2)"  # type: ignore[union-attr]
    # Its own name again is no clash; nor is a third that finds both taken.
    r = await site.post(
        f"/security/devices/{second.credential_id}/rename",
        {"csrf_token": await site.token("/security"), "name": "agent (2)"},
        follow=True,
    )
    assert "Renamed to agent (2)." in await r.text()
    assert site.db.unique_device_name(user(site.db).id, "AGENT") == "AGENT (3)"
    assert site.db.unique_device_name(user(site.db).id, "x" * 64) == "x" * 64
    add_device(site.db, user(site.db), cid="cred-long", name="x" * 64)
    assert site.db.unique_device_name(user(site.db).id, "x" * 64) == "x" * 60 + " (2)"


async def test_the_remove_page_names_a_device_that_keeps_the_same_codes(site: Site) -> None:
    """A phone restored from another's backup shows that one's codes: removing the other
    does not stop them there, and the page says so instead of promising it."""
    await site.sign_in()
    add_device(site.db, user(site.db), cid="cred-a", name="Phone A")
    _, html = await site.get("/security/devices/cred-a/remove")
    assert "its verification codes will no longer work." in html and "except on" not in html
    add_device(site.db, user(site.db), cid="cred-b", name="Phone B")  # the same TOTP secret
    _, html = await site.get("/security/devices/cred-a/remove")
    shared = "it shows the same codes (one was restored from a backup of the other) and keeps them"
    assert f"will no longer work, except on Phone B: {shared}" in html
    # Either way round: the restored one removed, the page does not say the other came from it.
    _, html = await site.get("/security/devices/cred-b/remove")
    assert f"will no longer work, except on Phone A: {shared}" in html
    assert "restored from its backup" not in html


async def test_removing_someone_elses_or_a_removed_device(
    site: Site, settings: Settings, tmp_path: Path
) -> None:
    add_device(site.db, user(site.db, "bob"), cid="bobs-phone")
    await site.sign_in("alice")
    cid = await _enroll_with_agent(site, tmp_path / "phone")
    token = await site.token("/security")
    # Another user's device: refused as unknown, and still there.
    r = await site.post("/security/devices/bobs-phone/remove", {"csrf_token": token}, follow=True)
    assert "not on your account" in await r.text()
    assert site.db.device(user(site.db, "bob").id, "bobs-phone") is not None
    _, html = await site.get("/security/devices/bobs-phone/remove")
    assert "not on your account" in html
    # Its own device: revoked at the broker and removed, and a second removal says so.
    r = await site.post(f"/security/devices/{cid}/remove", {"csrf_token": token}, follow=True)
    assert "Agent was removed" in await r.text()
    r = await site.post(f"/security/devices/{cid}/remove", {"csrf_token": token}, follow=True)
    assert "may have been removed already" in await r.text()
    assert site.db.devices(user(site.db).id) == []
    # A device the broker no longer knows (here made up; in life revoked behind our back)
    # is removed too, with "already revoked" taken as done.
    add_device(site.db, user(site.db), cid="cred-1")
    r = await site.post("/security/devices/cred-1/remove", {"csrf_token": token}, follow=True)
    assert "Phone was removed" in await r.text()


async def test_a_signed_in_user_on_a_second_step_page_goes_to_the_account(site: Site) -> None:
    """Back to the push page after signing in, or a second tab: no "sign in" banner over
    the account page of someone signed in."""
    await site.sign_in()  # alice has no authenticator: the password signs her in
    assert await site.signed_in()
    for path in ("/signin/push", "/signin/code", "/signin/recovery-code", "/signin/access-pass"):
        async with site.http.get(site.url + path, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/account"), path
    _, html = await site.get("/account")
    assert "Enter your user name and password" not in html


async def test_a_password_of_blanks_is_refused_and_a_change_speaks_of_push_only_after_a_pause(
    site: Site,
) -> None:
    await site.sign_in()
    before = user(site.db)
    for blank in (" " * 10, "\u200b" * 10, "\u3000" * 10):
        token = await site.token("/security/password")
        form = {"csrf_token": token, "current": PASSWORD, "new": blank, "repeat": blank}
        r = await site.post("/security/password", form, follow=True)
        assert r.status == 400 and "characters you can see" in html_lib.unescape(await r.text())
    assert user(site.db) == before  # nothing changed
    token = await site.token("/security/password")
    new = "a new and long password"
    r = await site.post(
        "/security/password", {"csrf_token": token, "current": PASSWORD, "new": new, "repeat": new}
    )
    assert r.status == 303
    _, html = await site.get("/security")
    assert "Your password was changed and you were signed out everywhere else." in html
    assert "Push requests" not in html  # push was never paused


async def test_wrong_current_passwords_lock_the_account_as_wrong_sign_ins_do(site: Site) -> None:
    # A session with a fresh second factor (a stolen cookie) could guess without end here.
    await site.sign_in()
    token = await site.token("/security/password")
    new = "a new and long password"
    for i in range(3):
        form = {"csrf_token": token, "current": f"guess number {i}", "new": new, "repeat": new}
        assert (await site.post("/security/password", form)).status == 401
    form = {"csrf_token": token, "current": PASSWORD, "new": new, "repeat": new}
    r = await site.post("/security/password", form)
    assert r.status == 429 and "locked" in await r.text()
    assert user(site.db).locked_until > now_ms()
    assert verify_password(user(site.db).password_hash, PASSWORD)  # not changed


async def test_the_first_recovery_codes_do_not_speak_of_earlier_ones(site: Site) -> None:
    await site.sign_in()
    for earlier in (False, True):
        r = await site.post(
            "/security/recovery-codes", {"csrf_token": await site.token("/security/recovery-codes")}
        )
        text = await r.text()
        assert r.status == 200 and "Save these codes now" in text
        assert ("Your earlier codes no longer work." in text) is earlier


async def test_pages_need_sign_in(site: Site) -> None:
    for path in ("/account", "/security", "/security/add", "/security/test-notification", "/signin/push"):
        async with site.http.get(site.url + path, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/signin", path


# -- with a real device (the agent CLI enrolls and answers) ----------------------------------


async def phone(home: Path, *args: str) -> Any:
    """`pushauth-agent --home HOME ARGS`, the real agent as the phone (off the event loop)."""
    return await asyncio.to_thread(agent_cli, home, *args)


async def _start_setup(site: Site, home: Path, name: str = "Agent") -> str:
    """Security info -> Add -> the setup page; the agent enrolls with its link. The page's URL."""
    setup, link = await _setup_link(site)
    assert link.startswith("pushauth://enroll?v=2&") and "&es=" in link and "&recoverable=1" in link
    enrolled = await phone(home, "enroll", "--name", name, link)
    assert enrolled.returncode == 0, enrolled.stderr
    return setup


async def _enroll_with_agent(site: Site, home: Path) -> str:
    """Add a device the way a person does, over HTTP, with `pushauth-agent` as the phone."""
    setup = await _start_setup(site, home)
    r = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)})
    assert r.headers["Location"] == "/security/test-notification"
    devices = site.db.devices(user(site.db).id)
    assert [d.confirmed for d in devices] == [False]
    # Enrolled as recoverable: the recovery key the app named is kept with the device.
    assert devices[0].recovery_public_key is not None and devices[0].recovery_key_ts is None
    return devices[0].credential_id


def _number(html: str) -> str:
    number = re.search(r'class="number-value">(\d+)<', html)
    assert number, "no number on the page"
    return number.group(1)


async def _approve(home: Path, number: str, *, setup: bool) -> None:
    """Approve the one pending request of its kind (setup test push or sign-in) on the phone."""
    pending = json.loads((await phone(home, "pending", "--json")).stdout)
    (request,) = [p for p in pending if p["setup_test"] is setup]
    approved = await phone(home, "approve", "--number", number, "--", request["id"])
    assert approved.returncode == 0, approved.stderr


async def _push_sign_in(site: Site, home: Path) -> None:
    """Sign in with the password, approve the push on the phone and finish: to /account."""
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    _, html = await site.get("/signin/push")
    await _approve(home, _number(html), setup=False)
    r = await site.post(
        "/push/complete", {"csrf_token": await site.token("/signin/push"), "purpose": "signin"}
    )
    assert r.status == 303 and r.headers["Location"] == "/account"


async def _finish_setup(site: Site, home: Path, cid: str) -> None:
    """Approve the test notification on the phone and finish, as a person does."""
    _, html = await site.get("/security/test-notification")
    await _approve(home, _number(html), setup=True)
    token = await site.token("/security/test-notification")
    r = await site.post("/push/complete", {"csrf_token": token, "purpose": "setup"})
    assert r.status == 303 and r.headers["Location"] == "/security"
    assert site.db.device(user(site.db).id, cid).confirmed  # type: ignore[union-attr]


async def _signed_out_with_a_phone(site: Site, home: Path) -> str:
    """Sign in, set up the phone at `home` (its test notification approved), sign out:
    the phone's credential id, for a test of the sign-in that follows."""
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    return cid


async def _signed_in_with_a_backed_up_phone(site: Site, home: Path) -> tuple[str, Path]:
    """Sign in, set up the phone at `home` (its test notification approved) and back it up
    to a file beside it: its credential id and the backup file."""
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    backup = home.parent / "phone.backup"
    assert (await phone(home, "backup", "--to", str(backup))).returncode == 0
    return cid, backup


async def _restore_as_new_phone(home: Path, backup: Path) -> Any:
    return await phone(home, "restore", "--from", str(backup), "--device-name", "New phone")


async def _only_pending(home: Path) -> dict[str, Any]:
    (request,) = json.loads((await phone(home, "pending", "--json")).stdout)
    return request


async def test_digits_and_lifetimes_not_named_follow_the_rps_policy(
    broker: BrokerProcess, rp: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    """Started without --digits and --ttl, the demo sends neither: under the NIST profile
    at the broker (with a 120 s ttl and a max_ttl of 150 s) the setup's test push has 6
    digits and lives the policy's max_ttl (its own 180 s would be refused), and a sign-in
    has 6 digits and lives the policy's 120 s."""
    assert broker.redis_url is not None and (settings.push_digits, settings.push_ttl) == (None, None)
    policy = ("--profile", "nist-800-63b-4", "--ttl", "120", "--max-ttl", "150")
    await asyncio.to_thread(set_policy, rp["id"], *policy, redis_url=broker.redis_url)
    home = tmp_path / "phone"
    async for site in _site(settings):
        await site.sign_in()
        cid = await _enroll_with_agent(site, home)
        _, html = await site.get("/security/test-notification")
        test = await _only_pending(home)
        # Marked as the setup's test (docs/protocol.md 15.1): the agent words it so.
        assert test["setup_test"] is True and test["context"]["purpose"] == "setup test"
        assert (len(_number(html)), test["digits"], test["expires_at"] - test["created_at"]) == (
            6,
            6,
            150_000,
        )
        await _finish_setup(site, home, cid)
        await site.post("/signout", {"csrf_token": await site.token("/security")})

        assert (await site.sign_in()).headers["Location"] == "/signin/push"
        _, html = await site.get("/signin/push")
        request = await _only_pending(home)
        assert request["setup_test"] is False and "purpose" not in request["context"]
        assert (len(_number(html)), request["digits"]) == (6, 6)
        assert request["expires_at"] - request["created_at"] == 120_000
        await _approve(home, _number(html), setup=False)
        r = await site.post(
            "/push/complete", {"csrf_token": await site.token("/signin/push"), "purpose": "signin"}
        )
        assert r.status == 303 and r.headers["Location"] == "/account"


async def test_setup_left_unfinished_can_be_finished_later(site: Site, tmp_path: Path) -> None:
    await site.sign_in()
    cid = await _enroll_with_agent(site, tmp_path / "phone")
    # Leave before the test notification is approved: the device is listed as unfinished.
    _, html = await site.get("/security")
    assert "Setup not finished" in html
    # An unfinished device does not count as an authenticator for sign-in.
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    assert (await site.sign_in()).headers["Location"] == "/security"
    r = await site.post(f"/security/devices/{cid}/test", {"csrf_token": await site.token("/security")})
    assert r.headers["Location"] == "/security/test-notification"
    status, html = await site.get("/security/test-notification")
    assert status == 200 and "Approve the test notification" in html


@pytest.mark.parametrize("answer", [["deny"], ["deny", "--fraud"]])
async def test_a_test_notification_denied_or_reported_says_the_device_was_not_added(
    site: Site, tmp_path: Path, answer: list[str]
) -> None:
    """The setup page speaks of the device, not of a sign-in (before: "Nothing was signed
    in", and after a report "sign in with a verification code", to a signed-in person)."""
    home = tmp_path / "phone"
    await site.sign_in()
    await _enroll_with_agent(site, home)
    _, html = await site.get("/security/test-notification")
    assert 'data-status="pending"' in html
    request = await _only_pending(home)
    assert request["setup_test"] is True
    answered = await phone(home, *answer, "--", request["id"])
    assert answered.returncode == 0, answered.stderr
    _, html = await site.get("/security/test-notification")
    shown = html_lib.unescape(html)
    assert "so the device was not added" in shown
    assert "Nothing was signed in" not in shown and "sign in with a verification code" not in shown


async def test_one_sign_in_sends_a_limited_number_of_requests(site: Site, tmp_path: Path) -> None:
    await site.sign_in()
    cid = await _enroll_with_agent(site, tmp_path / "phone")
    await _finish_setup(site, tmp_path / "phone", cid)
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    r = await site.sign_in()
    assert r.headers["Location"] == "/signin/push"
    token = await site.token("/signin/push")
    for _ in range(4):
        r = await site.post("/push/resend", {"csrf_token": token, "purpose": "signin"})
        assert r.status == 303 and r.headers["Location"] == "/signin/push"
    r = await site.post("/push/resend", {"csrf_token": token, "purpose": "signin"})
    # The earlier request was cancelled, none was sent: the code page says why.
    assert r.status == 303 and r.headers["Location"] == "/signin/code"
    _, html = await site.get("/signin/code")
    assert 'data-reason="too_many"' in html and "enough requests for one sign-in" in html
    # Finishing with nothing live signs nobody in.
    r = await site.post("/push/complete", {"csrf_token": token, "purpose": "signin"})
    assert r.status == 303 and r.headers["Location"] == "/signin/code"
    assert not await site.signed_in()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"csrf_token=T&username=%ff%fe&password=x", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice',
            "multipart/form-data; boundary=b",
        ),
        (b"\x00\x01\x02", "application/octet-stream"),
        # A charset Python does not know was a LookupError: a 500 and a traceback.
        (b"csrf_token=T&username=alice&password=x", "application/x-www-form-urlencoded; charset=bogus"),
        (
            b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n'
            b"Content-Type: text/plain; charset=bogus\r\n\r\nT\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
    ],
)
async def test_broken_request_bodies(site: Site, body: bytes, content_type: str) -> None:
    token = await site.token()
    body = body.replace(b"csrf_token=T", b"csrf_token=" + token.encode())
    r = await site.post("/signin", body, headers={"Content-Type": content_type})
    assert 400 <= r.status < 500
    assert "Traceback" not in await r.text()
    assert not await site.signed_in()


async def test_a_form_whose_compression_does_not_inflate_is_refused(site: Site) -> None:
    """Content-Encoding: gzip on a form that is not gzip: aiohttp's RequestPayloadError
    in the form's parsing was a 500 page and a traceback."""
    token = await site.token()
    form = f"csrf_token={token}&username=alice&password={PASSWORD}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
    r = await site.post("/signin", form, headers=headers)
    assert r.status == 400
    assert "could not be read" in await r.text()
    assert not await site.signed_in()


async def test_an_answer_that_does_not_verify_signs_nobody_in(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The RP checks every answer with the key it stored at enrollment, not the broker's word:
    here its stored key is another one, so even a right approval is refused, and logged as a
    security event (an answer refused for a clock is not: tests/browser)."""
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    site.db.conn.execute("UPDATE devices SET public_key = ? WHERE credential_id = ?", (bytes(range(32)), cid))
    await site.post("/signout", {"csrf_token": await site.token("/account")})
    r = await site.sign_in()
    assert r.headers["Location"] == "/signin/push"
    _, html = await site.get("/signin/push")
    await _approve(home, _number(html), setup=False)
    token = await site.token("/signin/push")
    r = await site.post("/push/complete", {"csrf_token": token, "purpose": "signin"})
    assert r.status == 409
    assert "could not be verified with the keys of your devices" in await r.text()
    assert not await site.signed_in()
    events = [r for r in caplog.records if r.name == "relying_party.web.security_events"]
    assert events and all(
        "SECURITY EVENT" in r.getMessage() and "bad_signature" in r.getMessage() for r in events
    )


# -- protocol v2: the SDK's checks of what the broker says, as the pages show them ----------


@pytest.fixture
def hostile(broker: BrokerProcess) -> Any:
    """A compromised broker: the real one behind a proxy that rewrites what the RP reads."""
    with HostileBroker(broker.http_url) as proxy:
        yield proxy
        proxy.check()


async def test_a_key_the_device_did_not_bind_to_the_setup_is_refused(
    settings: Settings, hostile: HostileBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker reports another key than the one the device registered: the SDK finds
    it not bound to our link's secret (BAD_BINDING); nothing is stored, the page says
    so, and it is logged as a security event."""
    planted = wire.b64encode(signing.public_key(signing.new_seed()))
    hostile.edit_enrolled_credential(lambda cred: {**cred, "public_key": planted})
    async for s in _site(replace(settings, broker_url=hostile.http_url)):
        await s.sign_in()
        setup = await _start_setup(s, tmp_path / "phone")
        async with s.http.get(s.url + setup + "/events") as r:
            assert 'data: {"status": "unverified"}' in await r.text()
        r = await s.post(setup + "/continue", {"csrf_token": await s.token(setup)}, follow=True)
        html = await r.text()
        assert "This setup could not be verified, so the device was not added" in html
        assert "pushauth://enroll?" not in html and "Start again" in html
        assert s.db.devices(user(s.db).id) == []
        # The setup stays refused: it never becomes a device, however often it is asked.
        hostile.clear()
        r = await s.post(setup + "/continue", {"csrf_token": await s.token(setup)}, follow=True)
        assert "could not be verified" in await r.text()
        assert s.db.devices(user(s.db).id) == []
    events = [r for r in caplog.records if r.name == "relying_party.web.security_events"]
    assert events and all("bad_binding" in r.getMessage() for r in events)


async def test_a_replayed_approval_of_an_earlier_sign_in_does_not_sign_in(
    settings: Settings, hostile: HostileBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A compromised broker answers a new sign-in with an earlier, really approved one of
    the same user (its id and number, with the SDK's new rp_nonce echoed) and serves its
    genuine signed approval: the page says it was not accepted, nobody is signed in, and
    it is logged as a security event (docs/protocol.md section 20)."""
    home = tmp_path / "phone"
    async for s in _site(replace(settings, broker_url=hostile.http_url)):
        await s.sign_in()
        cid = await _enroll_with_agent(s, home)
        await _finish_setup(s, home, cid)
        await s.post("/signout", {"csrf_token": await s.token("/security")})
        await _push_sign_in(s, home)  # honestly, through the proxy
        created = hostile.last("POST", "/v1/challenges")
        assert hostile.last("GET", rf"/v1/challenges/{created.json['id']}.*").json["status"] == "approved"
        await s.post("/signout", {"csrf_token": await s.token("/account")})

        hostile.replay(
            "POST",
            "/v1/challenges",
            created,
            edit=lambda request, body: {**body, "rp_nonce": request.request_json["rp_nonce"]},
        )
        assert (await s.sign_in()).headers["Location"] == "/signin/push"
        _, html = await s.get("/signin/push")
        assert _number(html) == created.json["number"]  # the old challenge, as the broker claims
        async with s.http.get(s.url + "/push/events?purpose=signin") as r:
            assert '"status": "unverified"' in await r.text()
        r = await s.post("/push/complete", {"csrf_token": await s.token("/signin/push"), "purpose": "signin"})
        assert r.headers.get("Location") != "/account"
        assert not await s.signed_in()
        served = hostile.last("GET", rf"/v1/challenges/{created.json['id']}.*")
        assert served.forwarded and served.json["status"] == "approved"  # the real, old approval
    events = [r for r in caplog.records if r.name == "relying_party.web.security_events"]
    assert events and all("failed end-to-end verification" in r.getMessage() for r in events)


async def test_a_restored_phone_is_added_from_the_broker_list_and_signs_in(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A backup restored on a new phone recovers the account with the recovery key
    (no new QR code); Security info accepts the new device only because our stored
    recovery key signed that recovery, and that key is then spent."""
    old, new = tmp_path / "old", tmp_path / "new"
    old_cid, backup = await _signed_in_with_a_backed_up_phone(site, old)
    restored = await _restore_as_new_phone(new, backup)
    assert restored.returncode == 0 and "recovered: alice" in restored.stdout, restored.stderr

    status, html = await site.get("/security")
    assert status == 200
    assert "New phone was restored from Agent." in html
    assert "Restored from Agent" in html
    uid = user(site.db).id
    (added,) = [d for d in site.db.devices(uid) if d.credential_id != old_cid]
    assert added.name == "New phone" and added.recovered_from == old_cid and added.confirmed
    assert added.recovery_public_key is not None and added.recovery_proof is not None
    assert site.db.device(uid, old_cid).recovery_public_key is None  # type: ignore[union-attr]  # spent
    # Seen once: the next visit lists it without announcing it again.
    _, html = await site.get("/security")
    assert "was restored from" not in html and "Restored from Agent" in html
    assert not [r for r in caplog.records if r.name == "relying_party.web.security_events"]

    # The new phone signs in; its answer is verified with the key we accepted.
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    await _push_sign_in(site, new)
    _, html = await site.get("/account")
    assert "Push notification (New phone)" in html

    # The user removes the new phone here, and later the old phone names a new recovery
    # key (`backup retire`; a passphrase change does the same), signed after the restore.
    # Taken although the restored device, whose proof dated the spend, is gone: the
    # spend's time is kept with the old one (not a security event on every visit).
    token = await site.token("/security")
    r = await site.post(f"/security/devices/{added.credential_id}/remove", {"csrf_token": token}, follow=True)
    assert "New phone was removed" in await r.text()
    assert (await phone(old, "backup", "retire")).returncode == 0
    await site.get("/security")
    assert [d.credential_id for d in site.db.devices(uid)] == [old_cid]
    assert site.db.device(uid, old_cid).recovery_public_key is not None  # type: ignore[union-attr]
    assert not [r for r in caplog.records if r.name == "relying_party.web.security_events"]


@needs_faketime
async def test_a_restored_phone_is_listed_as_added_when_it_was_restored(site: Site, tmp_path: Path) -> None:
    """Security info lists a restored device as added when the restore was made (the
    time its recovery proof signs), not when the page first saw it: hours later, often.
    The new phone restores with its clock 3 minutes behind (the broker takes up to 5), so
    the two differ by that much."""
    old, new = tmp_path / "old", tmp_path / "new"
    old_cid, backup = await _signed_in_with_a_backed_up_phone(site, old)
    before = now_ms()
    restored = await asyncio.to_thread(
        agent_cli, new, "restore", "--from", str(backup), "--device-name", "New phone", **skewed(-180)
    )
    assert restored.returncode == 0 and "recovered: alice" in restored.stdout, restored.stderr
    after = now_ms()
    status, _ = await site.get("/security")
    assert status == 200
    (added,) = [d for d in site.db.devices(user(site.db).id) if d.credential_id != old_cid]
    # Signed between `before` and `after` by a clock 180 s behind (a second either way).
    assert before - 181_000 <= added.created_at <= after - 179_000, (before, after, added.created_at)


async def test_a_not_me_to_a_restore_is_not_called_a_reported_sign_in(site: Site, tmp_path: Path) -> None:
    """The old phone answers "not me" to a restore of its backup (a disown): the broker
    mutes push as after a report, which this RP did not see. The pages say push is paused
    after a "not me" without claiming a sign-in request was reported (none was)."""
    old, new = tmp_path / "old", tmp_path / "new"
    _old_cid, backup = await _signed_in_with_a_backed_up_phone(site, old)
    restored = await _restore_as_new_phone(new, backup)
    assert restored.returncode == 0 and "recovered: alice" in restored.stdout, restored.stderr
    (question,) = json.loads((await phone(old, "pending", "--json")).stdout)
    assert question["type"] == "recovery_notice"
    disowned = await phone(old, "recovery", "disown", question["id"])
    assert disowned.returncode in (0, 3) and "disowned" in disowned.stdout, disowned.stderr

    _, html = await site.get("/security")
    assert 'id="push-pause"' in html
    shown = html_lib.unescape(html)
    assert "reported as not made by you" not in shown and "to a restore of your account" in shown
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    assert (await site.sign_in()).headers["Location"] == "/signin/code"
    _, html = await site.get("/signin/code")
    shown = html_lib.unescape(html)
    assert 'data-reason="paused"' in html and "reported as not made by you" not in shown
    assert "to a restore of your account on a new device" in shown
    code = json.loads((await phone(old, "code", "--json")).stdout)[0]["code"]
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    assert r.headers["Location"] == "/security/password"
    _, html = await site.get("/security/password")
    shown = html_lib.unescape(html)
    assert "reported as not made by you" not in shown and "answered \u201cnot me\u201d" in shown


async def test_a_setup_test_kept_back_by_a_pause_says_what_to_do_to_the_signed_in_person(
    site: Site, tmp_path: Path
) -> None:
    """Push paused (here by a "not me" to a restore) while a device is being added: the test
    notification is not sent, and Security info says so in the words of someone signed in.
    It said "Sign in with a verification code from the app; you will then be asked to
    change your password", the sign-in page's words, to a person signed in already."""
    old, new, third = tmp_path / "old", tmp_path / "new", tmp_path / "third"
    _old_cid, backup = await _signed_in_with_a_backed_up_phone(site, old)
    assert (await _restore_as_new_phone(new, backup)).returncode == 0
    (question,) = json.loads((await phone(old, "pending", "--json")).stdout)
    assert (await phone(old, "recovery", "disown", question["id"])).returncode in (0, 3)

    setup = await _start_setup(site, third, "Third")
    r = await site.post(setup + "/continue", {"csrf_token": await site.token(setup)}, follow=True)
    shown = html_lib.unescape(await r.text())
    assert "The test notification to Third was not sent" in shown
    assert "Change your password to resume them, then choose Finish setup" in shown
    assert "you will then be asked" not in shown
    (added,) = [d for d in site.db.devices(user(site.db).id) if d.name == "Third"]
    assert not added.confirmed
    # Its Finish setup, while push is still paused, says the same.
    token = await site.token("/security")
    r = await site.post(f"/security/devices/{added.credential_id}/test", {"csrf_token": token}, follow=True)
    shown = html_lib.unescape(await r.text())
    assert "The test notification to Third was not sent" in shown and "you will then be asked" not in shown


async def test_send_again_of_a_setup_test_reported_as_not_me_says_why_none_was_sent(
    site: Site, tmp_path: Path
) -> None:
    """The new phone answers its own test notification "not me" (push is paused), and the
    person presses Send again on the setup page: Security info says the test was not sent,
    in the words of someone signed in (the same words as Finish setup's)."""
    await site.sign_in()
    home = tmp_path / "phone"
    await _enroll_with_agent(site, home)
    reported = await phone(home, "deny", "--fraud", "--", (await _only_pending(home))["id"])
    assert reported.returncode == 0, reported.stderr
    token = await site.token("/security/test-notification")
    r = await site.post("/push/resend", {"csrf_token": token, "purpose": "setup"}, follow=True)
    shown = html_lib.unescape(await r.text())
    assert "The test notification to Agent was not sent" in shown
    assert "you will then be asked" not in shown


@pytest.mark.parametrize("seen_on", ["test page", "security info"])
async def test_a_device_that_reported_its_own_setup_is_shown_so(
    site: Site, tmp_path: Path, seen_on: str
) -> None:
    """The phone being added answers its own test notification "not me": Security info
    listed it as "Setup not finished" with no word of the report, and the push pause the
    report set was put down to "a sign-in request or a restore". Now the device says it
    reported its setup, and the pause names it as the cause. Whether the report was read
    on the setup's page or first by Security info (the page was left)."""
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    reported = await phone(home, "deny", "--fraud", "--", (await _only_pending(home))["id"])
    assert reported.returncode == 0, reported.stderr
    if seen_on == "test page":
        _, html = await site.get("/security/test-notification")
        assert "so the device was not added" in html_lib.unescape(html)
    _, html = await site.get("/security")
    shown = " ".join(html_lib.unescape(html).split())
    assert "Setup not finished" in shown
    assert "Reported by this device during setup: its test notification was answered “not me” on" in shown
    assert "If you did not add this device, remove it and change your password." in shown
    assert 'id="push-pause"' in html and "Push requests to your devices are paused" in shown
    assert "because Agent, while it was being added, answered “not me” to its own test notification" in shown
    assert "to a sign-in request" not in shown
    device = site.db.device(user(site.db).id, cid)
    assert device is not None and not device.confirmed and device.setup_reported_at is not None


async def test_a_restored_phone_can_sign_in_before_security_info_was_seen(site: Site, tmp_path: Path) -> None:
    """An answer from a credential we do not hold yet makes the RP check the broker's
    list (the restored device is accepted with its proof) and verify again."""
    old, new = tmp_path / "old", tmp_path / "new"
    _old_cid, backup = await _signed_in_with_a_backed_up_phone(site, old)
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    assert (await _restore_as_new_phone(new, backup)).returncode == 0

    await _push_sign_in(site, new)
    assert [d.name for d in site.db.devices(user(site.db).id)] == ["Agent", "New phone"]


async def test_forged_devices_in_the_broker_list_are_refused_and_logged(
    settings: Settings, hostile: HostileBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker lists a device of its own making (a "recovery" with made-up proofs)
    and swaps the key of ours: neither is stored, our key stays, the page warns."""
    async for s in _site(replace(settings, broker_url=hostile.http_url)):
        await s.sign_in()
        cid = await _enroll_with_agent(s, tmp_path / "phone")
        mine = s.db.device(user(s.db).id, cid)
        assert mine is not None
        planted = wire.b64encode(signing.public_key(signing.new_seed()))

        def forge(
            _user: str, listed: list[dict[str, Any]], cid: str = cid, planted: str = planted
        ) -> list[dict[str, Any]]:
            fake = dict(listed[0])
            fake.update(
                id="cr_planted",
                name="Attacker",
                public_key=planted,
                recovered_from=cid,
                binding=None,
                recovery_key={
                    "public_key": planted,
                    "ts": None,
                    "signature": None,
                },
                recovery={
                    "from": cid,
                    "ts": now_ms(),
                    "recovery_signature": wire.b64encode(bytes(64)),
                    "signature": wire.b64encode(bytes(64)),
                },
            )
            swapped = {**listed[0], "public_key": wire.b64encode(signing.public_key(signing.new_seed()))}
            return [swapped, fake]

        hostile.edit_credential_list(forge)
        status, html = await s.get("/security")
        assert status == 200
        assert "listed a device for your account that could not be verified" in html
        assert "Attacker" not in html
        assert [d.credential_id for d in s.db.devices(user(s.db).id)] == [cid]
        assert s.db.device(user(s.db).id, cid) == mine  # key and recovery key unchanged
    reasons = " ".join(
        r.getMessage() for r in caplog.records if r.name == "relying_party.web.security_events"
    )
    assert "key_mismatch" in reasons and "bad_recovery" in reasons


async def test_a_device_removed_in_the_app_is_dropped_here(site: Site, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    removed = await phone(home, "remove", "alice", "--yes")
    assert removed.returncode == 0, removed.stderr
    _, html = await site.get("/security")
    assert "Agent is no longer registered with the sign-in service" in html
    assert site.db.devices(user(site.db).id) == []


async def test_a_device_removed_here_stays_removed_when_the_broker_will_not_revoke_it(
    settings: Settings,
    hostile: HostileBroker,
    broker: BrokerProcess,
    rp: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stolen phone, and a compromised broker that refuses to revoke it (or one that
    cannot be reached): the user's removal on Security info still ends the phone's trust
    here, and the page says the sign-in service was not told. The removal is pending: it
    is asked again on each visit and before each push, the broker still listing the phone
    is said once to be that (no forged device), and the user's requests go to the two
    devices left alone (the RP API's credential_ids): the stolen phone is not asked, nor
    shown the sign-in's context. A broker that sends the phone a request all the same
    gets an approval that signs nobody in. Once the broker lets the revocation through,
    the record ends and the broker no longer has the credential."""
    caplog.set_level(logging.INFO, logger="relying_party.web.credentials")
    stolen, kept, kept2 = tmp_path / "stolen", tmp_path / "kept", tmp_path / "kept2"
    async for s in _site(replace(settings, broker_url=hostile.http_url)):
        await s.sign_in()
        uid = user(s.db).id
        stolen_cid = await _enroll_with_agent(s, stolen)
        await _finish_setup(s, stolen, stolen_cid)
        setup = await _start_setup(s, kept, name="Kept")
        r = await s.post(setup + "/continue", {"csrf_token": await s.token(setup)})
        assert r.headers["Location"] == "/security/test-notification"
        (kept_cid,) = [d.credential_id for d in s.db.devices(uid) if d.credential_id != stolen_cid]
        await _finish_setup(s, kept, kept_cid)
        setup = await _start_setup(s, kept2, name="Kept 2")
        r = await s.post(setup + "/continue", {"csrf_token": await s.token(setup)})
        (kept2_cid,) = [
            d.credential_id for d in s.db.devices(uid) if d.credential_id not in (stolen_cid, kept_cid)
        ]
        await _finish_setup(s, kept2, kept2_cid)
        left = [kept_cid, kept2_cid]

        refusal = {"type": "about:blank", "title": "Unavailable", "status": 503, "code": "unavailable"}

        def refuse_revocations(refusal: dict[str, Any] = refusal) -> None:
            hostile.answer("DELETE", r"/v1/credentials/.*", lambda _exchange: (503, refusal))

        def revocations_asked(cid: str = stolen_cid) -> int:
            return len(hostile.recorded("DELETE", rf"/v1/credentials/{cid}"))

        refuse_revocations()
        token = await s.token(f"/security/devices/{stolen_cid}/remove")
        r = await s.post(f"/security/devices/{stolen_cid}/remove", {"csrf_token": token}, follow=True)
        html = await r.text()
        assert "Agent was removed here and can no longer approve sign-ins" in html
        assert "The sign-in service could not be told" in html
        assert "Agent was removed, but the sign-in service has not confirmed it yet" in html
        assert f'data-credential="{stolen_cid}"' not in html  # not shown as a device
        assert [d.credential_id for d in s.db.devices(uid)] == left
        assert [p.credential_id for p in s.db.pending_revocations(uid)] == [stolen_cid]
        assert user(s.db).second_factor  # not the last device: the second step stays
        assert revocations_asked() == 2  # at the removal, and again by the page it leads to
        _, html = await s.get("/security")  # the broker lists it still: pending, said once
        assert revocations_asked() == 3 and "has not confirmed it yet" in html
        assert "could not be verified" not in html
        still_listed = [r for r in caplog.records if "pending removal" in r.getMessage()]
        assert len(still_listed) == 1 and stolen_cid in still_listed[0].getMessage()

        # The broker also sends the request to every device, though it was asked for two.
        hostile.rewrite_request(
            "POST", "/v1/challenges", lambda _exchange, body: {**body, "credential_ids": None}
        )
        hostile.rewrite(
            "POST",
            "/v1/challenges",
            lambda exchange, body: {**body, "credential_ids": exchange.request_json.get("credential_ids")},
        )
        await s.post("/signout", {"csrf_token": await s.token("/security")})
        asked = revocations_asked()
        assert (await s.sign_in()).headers["Location"] == "/signin/push"
        assert revocations_asked() == asked + 1  # asked again before the push
        assert hostile.last("POST", "/v1/challenges").request_json["credential_ids"] == left
        _, html = await s.get("/signin/push")
        assert "Sent to 2 devices." in html  # the removed phone is not counted, whatever the broker says
        await _approve(stolen, _number(html), setup=False)
        await s.post("/push/complete", {"csrf_token": await s.token("/signin/push"), "purpose": "signin"})
        assert not await s.signed_in()
        assert [d.credential_id for d in s.db.devices(uid)] == left  # not added back

        # An honest broker that still cannot revoke: the new request reaches the kept phones only.
        hostile.clear()
        refuse_revocations()
        r = await s.post("/push/resend", {"csrf_token": await s.token("/signin/push"), "purpose": "signin"})
        assert r.headers["Location"] == "/signin/push"
        assert json.loads((await phone(stolen, "pending", "--json")).stdout) == []
        _, html = await s.get("/signin/push")
        assert "Sent to 2 devices." in html
        await _approve(kept2, _number(html), setup=False)
        r = await s.post("/push/complete", {"csrf_token": await s.token("/signin/push"), "purpose": "signin"})
        assert r.headers["Location"] == "/account"

        hostile.clear()  # the broker revokes again
        _, html = await s.get("/security")
        assert "The sign-in service has now removed Agent too" in html
        assert s.db.pending_revocations(uid) == []
        handle = user(s.db).handle
    async with PushAuthClient(broker.http_url, rp["api_key"]) as honest:
        assert sorted(c.id for c in await honest.list_credentials(handle)) == sorted(left)
    events = " ".join(r.getMessage() for r in caplog.records if r.name == "relying_party.web.security_events")
    assert "an answer from Agent, a device removed here whose revocation" in events
    assert "unknown_credential" in events
    assert "listed a credential that did not verify" not in events


async def test_pending_revocations_are_asked_again_in_the_background(settings: Settings) -> None:
    """Without the user coming back, the app asks the broker again for the removals it has
    not confirmed whose time has come: one the broker has no more (revoked before, or
    removed on the phone) ends the record; one not due yet waits for its turn."""
    db = Database(settings.db_path)
    alice = user(db)
    for cid, due in (("cr_gone_at_the_broker", now_ms()), ("cr_not_due_yet", now_ms() + 3_600_000)):
        add_device(db, alice, cid)
        assert db.remove_device_revocation_pending(alice.id, cid, error="503", next_attempt_at=due)
    db.close()
    async for s in _site(replace(settings, revocation_retry=0.05)):

        async def left(db: Database = s.db) -> bool:
            return [p.credential_id for p in db.pending_revocations(alice.id)] == ["cr_not_due_yet"]

        await until(left, message="the due record asked again and ended")
        assert s.db.devices(alice.id) == []


async def test_no_request_is_sent_when_only_a_removed_device_could_get_it(
    settings: Settings, hostile: HostileBroker
) -> None:
    """alice removed her only device while the broker refused (and still refuses): she
    still owes a second step, and a push request (here one asked for with a form the
    page does not offer) could reach only that phone, so none is sent. Nor when the one
    device left here is one the broker no longer has (removed on the phone): the request
    aimed at it is refused (404), and none goes to every device instead."""
    db = Database(settings.db_path)
    alice = user(db)
    add_device(db, alice, "cr_removed_here")
    later = now_ms() + 3_600_000
    assert db.remove_device_revocation_pending(
        alice.id, "cr_removed_here", error="503", next_attempt_at=later
    )
    db.close()
    refusal = {"type": "about:blank", "title": "Unavailable", "status": 503, "code": "unavailable"}
    hostile.answer("DELETE", r"/v1/credentials/.*", lambda _exchange: (503, refusal))
    async for s in _site(replace(settings, broker_url=hostile.http_url)):
        assert (await s.sign_in()).headers["Location"] == "/signin/code"
        token = await s.token("/signin/code")
        r = await s.post("/push/resend", {"csrf_token": token, "purpose": "signin"}, follow=True)
        assert r.url.path == "/signin/code" and "No authenticator app left" in await r.text()
        assert len(hostile.recorded("DELETE", "/v1/credentials/cr_removed_here")) == 1  # asked again
        assert hostile.recorded("POST", "/v1/challenges") == []

        add_device(s.db, alice, "cr_gone_at_the_broker")
        r = await s.post("/push/resend", {"csrf_token": token, "purpose": "signin"}, follow=True)
        assert "None of your devices can receive requests right now" in await r.text()
        [create] = hostile.recorded("POST", "/v1/challenges")
        assert create.request_json["credential_id"] == "cr_gone_at_the_broker"


# -- the broker's word drops devices, never the second step (docs/protocol.md section 20) -----


async def _set_up_device(site: Site, home: Path) -> str:
    """alice (password only so far) adds a device with the agent and finishes its setup."""
    assert (await site.sign_in()).headers["Location"] == "/security"
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    return cid


async def _to_recovery_code(site: Site, code: str) -> aiohttp.ClientResponse:
    return await site.post(
        "/signin/recovery-code", {"csrf_token": await site.token("/signin/recovery-code"), "code": code}
    )


async def test_a_broker_that_drops_every_device_cannot_downgrade_to_the_password(
    site: Site, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    """A compromised broker revokes alice's only device (here through the RP API with
    another client of the same RP, as a broker's own code could); Security info drops it
    on the broker's word. With alice's stolen password that must not be a sign-in: the
    second step is still owed, the page says no app is left and what to do, and a
    recovery code still gets her in."""
    cid = await _set_up_device(site, tmp_path / "phone")
    codes = await recovery_codes.replace_set(site.db, user(site.db).id)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as other:
        await other.revoke_credential(cid)
    _, html = await site.get("/security")
    assert "Agent is no longer registered with the sign-in service" in html
    assert site.db.devices(user(site.db).id) == []
    await site.post("/signout", {"csrf_token": await site.token("/security")})

    r = await site.sign_in()
    assert r.status == 303 and r.headers["Location"] == "/signin/code"  # not signed in by the password
    assert not await site.signed_in()
    status, html = await site.get("/signin/code")
    assert status == 200
    assert "No authenticator app of yours is registered with this account any more" in html
    assert 'href="/signin/recovery-code"' in html and 'href="/signin/access-pass"' in html
    assert "ask your administrator" in html
    assert 'action="/signin/code"' not in html  # no code can be right: none is asked for
    # A code typed anyway (posted to the form's address) signs nobody in either.
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": "123456"})
    assert r.status == 401 and "No authenticator app of yours" in await r.text()
    assert not await site.signed_in()

    r = await _to_recovery_code(site, codes[0])
    assert r.status == 303 and r.headers["Location"] == "/security"
    assert await site.signed_in()
    _, html = await site.get("/account")
    assert "Recovery code" in html and 'id="no-device-left"' in html
    _, html = await site.get("/security")
    assert 'id="no-device-left"' in html and "protected by a password only" not in html


async def test_removing_the_last_device_yourself_makes_the_password_enough_again(
    site: Site, tmp_path: Path
) -> None:
    """The one way back to password-only sign-in: the user removes the last device on
    Security info (after a fresh second factor; the page warns). Here after the first
    device was removed on the phone and dropped, a recovery-code sign-in and a new one."""
    old = await _set_up_device(site, tmp_path / "old")
    codes = await recovery_codes.replace_set(site.db, user(site.db).id)
    removed = await phone(tmp_path / "old", "remove", "alice", "--yes")
    assert removed.returncode == 0, removed.stderr
    _, html = await site.get("/security")
    assert "Agent is no longer registered" in html and site.db.device(user(site.db).id, old) is None
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    assert (await site.sign_in()).headers["Location"] == "/signin/code"
    assert (await _to_recovery_code(site, codes[0])).headers["Location"] == "/security"

    # A new phone (the recovery sign-in is fresh enough to add it), then its removal.
    new = await _enroll_with_agent(site, tmp_path / "new")
    # An unfinished setup's removal ends nothing: the second step stays owed.
    status, html = await site.get(f"/security/devices/{new}/remove")
    assert status == 200 and "protected by your password only" not in html
    await _finish_setup(site, tmp_path / "new", new)
    status, html = await site.get(f"/security/devices/{new}/remove")
    assert status == 200 and "Without it, your account is protected by your password only." in html
    token = await site.token(f"/security/devices/{new}/remove")
    r = await site.post(f"/security/devices/{new}/remove", {"csrf_token": token})
    assert r.status == 303 and r.headers["Location"] == "/security"
    assert site.db.devices(user(site.db).id) == [] and not user(site.db).second_factor
    await site.post("/signout", {"csrf_token": await site.token("/security")})

    r = await site.sign_in()
    assert r.status == 303 and r.headers["Location"] == "/security"
    _, html = await site.get("/security")
    assert "protected by a password only" in html
    assert await site.signed_in()


async def test_a_code_of_a_device_removed_on_the_phone_no_longer_signs_in(site: Site, tmp_path: Path) -> None:
    """The code step follows the broker's list first (credentials.follow): a device the
    person removed on the phone itself is dropped before its code is checked, even when
    its secret's codes are still known (here from our own record)."""
    home = tmp_path / "phone"
    cid = await _set_up_device(site, home)
    secret = site.db.device(user(site.db).id, cid).totp_secret  # type: ignore[union-attr]
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    removed = await phone(home, "remove", "alice", "--yes")
    assert removed.returncode == 0, removed.stderr

    r = await site.sign_in()
    assert r.headers["Location"] == "/signin/code"  # the broker has no device to ask
    assert site.db.device(user(site.db).id, cid) is not None  # not synced yet
    token = await site.token("/signin/code")
    r = await site.post("/signin/code", {"csrf_token": token, "code": pyotp.TOTP(secret).now()})
    assert r.status == 401
    assert "No authenticator app of yours is registered with this account any more" in await r.text()
    assert site.db.devices(user(site.db).id) == []
    assert not await site.signed_in()


async def test_a_code_of_a_device_removed_on_the_phone_does_not_verify_it_is_you(
    site: Site, settings: Settings, tmp_path: Path
) -> None:
    """The same at "Verify it's you" (re-authentication): the code is refused, and with
    no device left the password is not offered in its place."""
    home = tmp_path / "phone"
    cid = await _set_up_device(site, home)
    secret = site.db.device(user(site.db).id, cid).totp_secret  # type: ignore[union-attr]
    async for s in _site(replace(settings, reauth_window=0)):
        await _push_sign_in(s, home)
        removed = await phone(home, "remove", "alice", "--yes")
        assert removed.returncode == 0, removed.stderr
        async with s.http.get(s.url + "/security/add", allow_redirects=False) as r:
            assert r.headers["Location"] == "/reauth"
        token = await s.token("/reauth")
        r = await s.post("/reauth/code", {"csrf_token": token, "code": pyotp.TOTP(secret).now()})
        assert r.status == 401
        html = html_lib.unescape(await r.text())
        assert "none can verify it's you" in html and 'action="/reauth/password"' not in html
        assert s.db.devices(user(s.db).id) == []
        r = await s.post("/reauth/password", {"csrf_token": token, "password": PASSWORD})
        assert r.status == 303 and r.headers["Location"] == "/reauth"
        async with s.http.get(s.url + "/security/add", allow_redirects=False) as r:
            assert r.headers["Location"] == "/reauth"  # still not verified


async def test_a_push_request_kept_by_an_older_demo_starts_over(site: Site, tmp_path: Path) -> None:
    """A session from before the upgrade holds a challenge without the SDK's rp_nonce: it
    cannot be verified, so the step starts over instead of failing."""
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    row = site.db.conn.execute("SELECT id_hash, data FROM sessions").fetchall()
    for id_hash, data in row:
        kept = json.loads(data)
        if "push" in kept:
            del kept["push"]["challenge"]["rp_nonce"]
            site.db.conn.execute(
                "UPDATE sessions SET data = ? WHERE id_hash = ?", (json.dumps(kept), id_hash)
            )
    async with site.http.get(site.url + "/security/test-notification", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/security"
    r = await site.post(f"/security/devices/{cid}/test", {"csrf_token": await site.token("/security")})
    assert r.headers["Location"] == "/security/test-notification"
    await _finish_setup(site, home, cid)


async def _sign_ins_on_the_phone(home: Path) -> list[dict[str, Any]]:
    pending = json.loads((await phone(home, "pending", "--json")).stdout)
    # Neither the setup's test (docs/protocol.md 15.1) nor a "verify it's you" (`action`).
    return [p for p in pending if not p["setup_test"] and "action" not in p["context"]]


async def test_send_again_cancel_and_a_code_end_the_earlier_requests(site: Site, tmp_path: Path) -> None:
    """Issue 11: the phone never keeps a request the page no longer shows. "Send again"
    replaces it (superseded), Cancel, signing in with a code and choosing the code end it
    at the broker."""
    home = tmp_path / "phone"
    await _signed_out_with_a_phone(site, home)

    # Send again, twice: one live request on the phone, the one with the page's number.
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    token = await site.token("/signin/push")
    for _ in range(2):
        r = await site.post("/push/resend", {"csrf_token": token, "purpose": "signin"})
        assert r.status == 303
    _, html = await site.get("/signin/push")
    (live,) = await _sign_ins_on_the_phone(home)
    # Cancel: the request ends at the broker, the phone has nothing left to answer.
    r = await site.post("/signin/cancel", {"csrf_token": await site.token("/signin/push")})
    assert r.status == 303 and r.headers["Location"] == "/signin"
    assert await _sign_ins_on_the_phone(home) == []
    late = await phone(home, "approve", "--number", _number(html), "--", live["id"])
    assert late.returncode == 1 and "cancel" in (late.stdout + late.stderr).lower()

    # A verification code instead of the push: the push request ends too.
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    assert len(await _sign_ins_on_the_phone(home)) == 1
    codes = json.loads((await phone(home, "code", "--json")).stdout)
    code = next(c["code"] for c in codes if c.get("code"))
    r = await site.post("/signin/code", {"csrf_token": await site.token("/signin/code"), "code": code})
    assert r.status == 303 and r.headers["Location"] == "/account"
    assert await _sign_ins_on_the_phone(home) == []
    await site.post("/signout", {"csrf_token": await site.token("/account")})

    # Choosing the code on the push page ends the request at once: it would cover the
    # phone's codes until it expired. The code page can send a new one.
    assert (await site.sign_in()).headers["Location"] == "/signin/push"
    assert len(await _sign_ins_on_the_phone(home)) == 1
    token = await site.token("/signin/push")
    r = await site.post("/push/use-code", {"csrf_token": token, "purpose": "signin"})
    assert r.status == 303 and r.headers["Location"] == "/signin/code"
    assert await _sign_ins_on_the_phone(home) == []
    r = await site.post("/push/resend", {"csrf_token": await site.token("/signin/code"), "purpose": "signin"})
    assert r.status == 303 and r.headers["Location"] == "/signin/push"
    assert len(await _sign_ins_on_the_phone(home)) == 1


# -- cancelling a setup, and a newer setup: the earlier link stops working ------------------


async def _setup_link(site: Site) -> tuple[str, str]:
    """Security info -> Add -> the setup page: its URL and the setup link it shows."""
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    setup = r.headers["Location"]
    _, html = await site.get(setup)
    uri = re.search(r'id="enroll-uri"[^>]*value="([^"]+)"', html)
    assert uri, "no setup link on the page"
    assert f'formaction="{setup}/cancel"' in html  # Cancel posts, with the form's CSRF token
    return setup, html_lib.unescape(uri.group(1))


async def _refused(home: Path, link: str) -> None:
    """The phone tries the link: the broker refuses it as used or expired."""
    enrolled = await phone(home, "enroll", "--name", "Late", link)
    assert enrolled.returncode != 0
    assert "withdrawn by the service" in enrolled.stdout + enrolled.stderr


async def test_cancel_withdraws_the_setup_link(site: Site, tmp_path: Path) -> None:
    await site.sign_in()
    setup, link = await _setup_link(site)
    # Without the CSRF token nothing changes.
    r = await site.post(setup + "/cancel", {})
    assert r.status == 403
    r = await site.post(setup + "/cancel", {"csrf_token": await site.token(setup)}, follow=True)
    assert str(r.url).endswith("/security")
    assert "The setup was cancelled: its link no longer works." in await r.text()
    await _refused(tmp_path / "phone", link)
    _, html = await site.get("/security")
    assert "Setup not finished" not in html and "Late" not in html
    assert site.db.devices(user(site.db).id) == []
    status, html = await site.get(setup)
    assert status == 404 and "pushauth://" not in html


async def test_cancel_after_the_device_registered_removes_it(site: Site, tmp_path: Path) -> None:
    """The device registered while the page was open, before the click: Cancel undoes it."""
    home = tmp_path / "phone"
    await site.sign_in()
    setup = await _start_setup(site, home)
    r = await site.post(setup + "/cancel", {"csrf_token": await site.token("/security")}, follow=True)
    assert "The setup was cancelled" in await r.text()
    assert site.db.devices(user(site.db).id) == []
    # Revoked at the broker too: nothing is left to show as "Setup not finished", nor to sync.
    assert await site.server.app[CLIENT].list_credentials(user(site.db).handle) == []
    _, html = await site.get("/security")
    assert "Agent" not in html and "could not be verified" not in html


async def test_a_new_setup_withdraws_the_earlier_link(site: Site, tmp_path: Path) -> None:
    """Add twice: only the newest link works ("The link works once" stays true)."""
    await site.sign_in()
    first_page, first = await _setup_link(site)
    second_page, second = await _setup_link(site)
    assert first != second
    await _refused(tmp_path / "old-phone", first)
    status, _ = await site.get(first_page)
    assert status == 404
    enrolled = await phone(tmp_path / "phone", "enroll", "--name", "Agent", second)
    assert enrolled.returncode == 0, enrolled.stderr
    r = await site.post(second_page + "/continue", {"csrf_token": await site.token(second_page)})
    assert r.headers["Location"] == "/security/test-notification"
    assert [d.name for d in site.db.devices(user(site.db).id)] == ["Agent"]


async def test_a_setup_over_the_sites_enrollment_quota_says_when_and_keeps_the_earlier_one(
    site: Site, broker: BrokerProcess, rp: dict[str, Any], tmp_path: Path
) -> None:
    """The broker's enrollment quota is the whole site's (here one a minute): a start
    over it is 429 saying when to try again, not "cannot be reached", and it changes
    nothing: the person's setup started before is not withdrawn, its link still works."""
    await store_policy(broker, rp["id"], enrollments_per_minute=1)
    await site.sign_in()
    first_page, first = await _setup_link(site)
    r = await site.post(
        "/security/add", {"csrf_token": await site.token("/security/add"), "method": "authenticator"}
    )
    page = await r.text()
    assert r.status == 429, page
    assert "Too many authenticator setups were started on this site just now. Try again in 1 minute." in page
    assert "pushauth://" not in page
    enrolled = await phone(tmp_path / "phone", "enroll", "--name", "Agent", first)
    assert enrolled.returncode == 0, enrolled.stderr
    r = await site.post(first_page + "/continue", {"csrf_token": await site.token(first_page)})
    assert r.headers["Location"] == "/security/test-notification"


# -- a test notification approved after its page was closed -----------------------------------


@pytest.mark.parametrize("where", ["security info", "finish setup"])
async def test_a_test_approved_after_the_page_closed_finishes_the_setup(
    site: Site, tmp_path: Path, where: str
) -> None:
    """Add the app, close the tab, approve the test on the phone ("Approved"): signed in
    again, the RP finds that verified approval and finishes the setup, without a second test."""
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    _, html = await site.get("/security/test-notification")
    await _approve(home, _number(html), setup=True)
    site.http.cookie_jar.clear()  # the tab (and its session) is gone; a new sign-in
    assert (await site.sign_in()).headers["Location"] == "/security"
    if where == "security info":
        _, html = await site.get("/security")
        assert "Agent is set up: it can now approve sign-ins." in html
    else:
        r = await site.post(f"/security/devices/{cid}/test", {"csrf_token": await site.token("/account")})
        assert r.headers["Location"] == "/security"
        _, html = await site.get("/security")
        assert "Agent is set up: it can now approve sign-ins." in html
    assert "Setup not finished" not in html
    assert site.db.device(user(site.db).id, cid).confirmed  # type: ignore[union-attr]
    pending = json.loads((await phone(home, "pending", "--json")).stdout)
    assert pending == []  # no second test notification
    # Confirmed at the broker too: the device now gets ordinary sign-ins.
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    await _push_sign_in(site, home)


async def test_a_denied_test_is_not_taken_for_an_approval(site: Site, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    pending = json.loads((await phone(home, "pending", "--json")).stdout)
    (request,) = pending
    denied = await phone(home, "deny", "--", request["id"])
    assert denied.returncode == 0, denied.stderr
    site.http.cookie_jar.clear()
    await site.sign_in()
    _, html = await site.get("/security")
    assert "Setup not finished" in html and "is set up" not in html
    assert not site.db.device(user(site.db).id, cid).confirmed  # type: ignore[union-attr]
    # "Finish setup" sends a new test notification, as before.
    r = await site.post(f"/security/devices/{cid}/test", {"csrf_token": await site.token("/security")})
    assert r.headers["Location"] == "/security/test-notification"


# -- Security info: when the password was set ------------------------------------------------


async def test_security_info_says_when_the_password_was_last_set(site: Site) -> None:
    await site.sign_in()
    _, html = await site.get("/security")
    assert "Set when your account was created, <time" in html and "Last changed" not in html
    new = "another horse battery staple"
    r = await site.post(
        "/security/password",
        {
            "csrf_token": await site.token("/security/password"),
            "current": PASSWORD,
            "new": new,
            "repeat": new,
        },
        follow=True,
    )
    assert r.status == 200
    if not await site.signed_in():  # a password change may sign the other sessions out
        await site.sign_in(password=new)
    alice = user(site.db)
    assert alice.password_changed_at is not None and alice.password_changed_at > alice.created_at
    _, html = await site.get("/security")
    assert "Set when your account was created" not in html
    changed = re.search(r'Last changed <time datetime="([^"]+)">', html)
    assert changed, html
    # An account from a demo that did not keep the time: no date claim at all.
    site.db.conn.execute("UPDATE users SET password_changed_at = NULL")
    _, html = await site.get("/security")
    assert "Used with your user name to sign in" in html
    assert "Set when" not in html and "Last changed" not in html
