"""The demo RP's recovery methods over real HTTP (its own aiohttp server, a real broker
on its own Redis): bad input, lockout, racing uses of one code, and the rule that only
a device whose setup was approved can answer a sign-in. The browser journeys are in
tests/browser/test_browser_recovery.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from test_web_pages import (
    Site,
    _approve,
    _enroll_with_agent,
    _finish_setup,
    _number,
    _site,
    add_device,
    settings,  # noqa: F401  (fixture)
    site,  # noqa: F401  (fixture)
    user,
)

from relying_party.web import access_pass, recovery_codes
from relying_party.web.config import Settings


async def _at_second_step(site: Site, path: str) -> str:
    """Password accepted (alice has a device on file), at `path`; its CSRF token."""
    if not site.db.devices(user(site.db).id):
        add_device(site.db, user(site.db))
    await site.sign_in()
    return await site.token(path)


@pytest.mark.parametrize(
    ("path", "typed", "status", "message"),
    [
        ("/signin/recovery-code", "", 400, "Enter your recovery code"),
        ("/signin/recovery-code", "x" * 65, 400, "too long"),
        ("/signin/recovery-code", "abc\x00de", 400, "not allowed"),
        ("/signin/recovery-code", "!!!!!-?????", 401, "not right"),
        ("/signin/access-pass", "   ", 400, "Enter your temporary access pass"),
        ("/signin/access-pass", "aaaa-bbbb-cccc-dddd", 401, "not right"),
    ],
)
async def test_bad_recovery_input_signs_nobody_in(
    site: Site, path: str, typed: str, status: int, message: str
) -> None:
    token = await _at_second_step(site, path)
    r = await site.post(path, {"csrf_token": token, "code": typed})
    assert r.status == status
    html = await r.text()
    assert message in html and "Traceback" not in html
    assert not await site.signed_in()


async def test_recovery_pages_need_the_password_first(site: Site) -> None:
    token = await site.token()
    for path in ("/signin/recovery-code", "/signin/access-pass"):
        async with site.http.get(site.url + path, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/signin"
        r = await site.post(path, {"csrf_token": token, "code": "aaaaa-bbbbb"})
        assert r.status == 303 and r.headers["Location"] == "/signin"
    async with site.http.get(site.url + "/security/recovery-codes", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/signin"


async def test_wrong_recovery_codes_lock_the_account(site: Site) -> None:
    codes = await recovery_codes.replace_set(site.db, user(site.db).id)
    token = await _at_second_step(site, "/signin/recovery-code")
    for _ in range(3):  # lockout_after=3 in these settings
        r = await site.post("/signin/recovery-code", {"csrf_token": token, "code": "aaaaa-bbbbb"})
        assert r.status == 401
    r = await site.post("/signin/recovery-code", {"csrf_token": token, "code": codes[0]})
    assert r.status == 429 and "locked" in await r.text()
    assert not await site.signed_in()
    summary = recovery_codes.summary(site.db, user(site.db).id)
    assert summary is not None and summary.left == 10  # refused while locked: not spent


async def test_one_code_used_by_two_racing_sign_ins_works_once(site: Site, settings: Settings) -> None:
    codes = await recovery_codes.replace_set(site.db, user(site.db).id)
    token_a = await _at_second_step(site, "/signin/recovery-code")
    async for other in _site(settings):
        token_b = await _at_second_step(other, "/signin/recovery-code")
        ra, rb = await asyncio.gather(
            site.post("/signin/recovery-code", {"csrf_token": token_a, "code": codes[3]}),
            other.post("/signin/recovery-code", {"csrf_token": token_b, "code": codes[3]}),
        )
        assert sorted([ra.status, rb.status]) == [303, 401]
        loser = rb if ra.status == 303 else ra
        assert "used already" in await loser.text()
        assert [await site.signed_in(), await other.signed_in()].count(True) == 1
    summary = recovery_codes.summary(site.db, user(site.db).id)
    assert summary is not None and summary.left == 9


async def test_one_access_pass_used_by_two_racing_sign_ins_works_once(
    site: Site,
    settings: Settings,
) -> None:
    secret, _ = access_pass.issue(site.db, user(site.db).id, 10)
    token_a = await _at_second_step(site, "/signin/access-pass")
    async for other in _site(settings):
        token_b = await _at_second_step(other, "/signin/access-pass")
        ra, rb = await asyncio.gather(
            site.post("/signin/access-pass", {"csrf_token": token_a, "code": secret}),
            other.post("/signin/access-pass", {"csrf_token": token_b, "code": secret}),
        )
        assert sorted([ra.status, rb.status]) == [303, 401]
    latest = access_pass.latest(site.db, user(site.db).id)
    assert latest is not None and latest.state == "used" and latest.used_ip == "127.0.0.1"


async def test_new_codes_need_a_fresh_second_factor(settings: Settings) -> None:
    """Past the re-authentication window (here 0 s) a new set is made only after
    "Verify it's you" (reauth.py): a stolen session cookie cannot void the owner's codes."""
    async for s in _site(replace(settings, reauth_window=0)):
        old = await recovery_codes.replace_set(s.db, user(s.db).id)
        await s.sign_in()  # password only: alice has no device here
        async with s.http.get(s.url + "/security/recovery-codes", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/reauth"
        r = await s.post("/security/recovery-codes", {"csrf_token": await s.token("/security")})
        assert r.status == 303 and r.headers["Location"] == "/reauth"
        assert await recovery_codes.use(s.db, user(s.db).id, old[0]) is recovery_codes.Use.ACCEPTED


async def test_only_a_device_whose_setup_was_approved_answers_sign_ins(site: Site, tmp_path: Path) -> None:
    """Defence in depth for "the device becomes active for sign-ins once it is
    approved": the broker routes sign-ins to confirmed credentials only, and the RP
    accepts a sign-in answer only from a device whose setup it finished. Here the
    broker has the device as confirmed but the RP does not (its row reset): the
    device's approval is refused and nobody is signed in."""
    home = tmp_path / "phone"
    await site.sign_in()
    cid = await _enroll_with_agent(site, home)
    await _finish_setup(site, home, cid)
    await site.post("/signout", {"csrf_token": await site.token("/security")})
    r = await site.sign_in()
    assert r.headers["Location"] == "/signin/push"
    _, html = await site.get("/signin/push")
    site.db.conn.execute("UPDATE devices SET confirmed = 0 WHERE credential_id = ?", (cid,))
    await _approve(home, _number(html), setup=False)
    r = await site.post(
        "/push/complete", {"csrf_token": await site.token("/signin/push"), "purpose": "signin"}
    )
    assert r.status == 409 and "could not be verified" in await r.text()
    assert not await site.signed_in()


async def test_few_codes_left_is_said_at_sign_in_and_on_security_info(site: Site) -> None:
    codes = await recovery_codes.replace_set(site.db, user(site.db).id)
    for code in codes[:7]:
        assert await recovery_codes.use(site.db, user(site.db).id, code) is recovery_codes.Use.ACCEPTED
    token = await _at_second_step(site, "/signin/recovery-code")
    r = await site.post("/signin/recovery-code", {"csrf_token": token, "code": codes[7]}, follow=True)
    html = await r.text()
    assert "You signed in with a recovery code. 2 recovery codes left. Get a new set below." in html
    assert 'class="alert alert-warn"' in html
    assert '<p id="recovery-left" class="warn-text">2 of 10 codes left</p>' in html
