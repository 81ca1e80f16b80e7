"""The web authenticator beyond one sign-in: verification codes equal to the Python
agent's, tap to copy, rename, remove (revoked at the broker), removal by the RP,
approving behind WebAuthn user verification (Chromium's virtual authenticator), the
installable app (manifest, icons, service worker offline, headers), dark at 320 px.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import TEST_PASSPHRASE
from PIL import Image
from playwright.async_api import CDPSession, WebSocket, async_playwright, expect
from support import BrokerProcess, until
from test_webapp_signin import CONTEXT, result
from webapp_world import PHONE, Phone, PhoneMaker, chromium_args, chromium_path, enrolled

from device_agent.accounts_model import decode_base32_secret
from device_agent.backup_keys import BackupCode
from device_agent.totp import totp as agent_totp
from protocol.challenge import Status
from protocol.uri import TotpParams
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

pytestmark = pytest.mark.asyncio(loop_scope="module")


def agent_codes(params: TotpParams, around: tuple[float, float]) -> set[str]:
    """The Python agent's codes for the secret at the instants a code was read between."""
    secret = decode_base32_secret(params.secret)
    kw: dict[str, Any] = {"algorithm": params.algorithm, "digits": params.digits, "period": params.period}
    return {agent_totp(secret, at, **kw) for at in around}


@pytest.mark.parametrize("params", [("SHA1", 6, 30), ("SHA256", 8, 60), ("SHA512", 6, 30)])
async def test_codes_equal_the_python_agents_and_copy_on_tap(
    rp: PushAuthClient, phone: Phone, params: tuple[str, int, int]
) -> None:
    totp = new_totp(*params)
    # Every code shown was computed after `before` and before `after`: it is the agent's
    # code at one of the two (the interval spans at most one time step).
    before = time.time()
    await enrolled(rp, phone, totp=totp)
    code = phone.page.locator("#accounts [data-role='code']")
    await code.wait_for()
    await phone.page.locator("#accounts [data-role='code'][data-code]").wait_for()
    shown, name = await code.evaluate("el => [el.dataset.code, el.getAttribute('aria-label')]")
    after = time.time()
    assert shown in agent_codes(totp, (before, after))
    # A screen reader hears the code too, not only whose it is (the label is the name).
    spoken = re.fullmatch(r"Verification code for alice@contoso\.example: ([0-9 ]+); tap to copy", name)
    assert spoken and spoken.group(1).replace(" ", "") == shown, name
    seconds = await phone.page.locator("#accounts [data-role='secs']").inner_text()
    assert seconds.endswith(" s left") and 1 <= int(seconds.split()[0]) <= totp.period
    await phone.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=phone.url)
    await code.tap()
    await phone.toast("Code copied")
    copied = await phone.page.evaluate("navigator.clipboard.readText()")
    assert copied in agent_codes(totp, (before, time.time()))


async def test_rename_and_remove_revokes_at_the_broker(rp: PushAuthClient, phone: Phone) -> None:
    account = await enrolled(rp, phone)
    page = phone.page
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    await phone.shot("10-manage-account")
    await phone.axe_clean("the manage account screen")
    # A name with a control, zero-width, bidi or blank character is refused, as in Add and Restore.
    for bad in ("Ctl\u0007name", "\u200b\u200b", "\u202eevil", "\u3164"):
        await page.get_by_label("Name shown in this app").fill(bad)
        await page.get_by_role("button", name="Rename").tap()
        await page.locator("#account-error", has_text="without control or invisible characters").wait_for()
    stored = await page.evaluate(
        """async () => {
             const db = await import(new URL('js/db.js', document.baseURI).href);
             return (await db.listAccounts()).map((a) => a.name);
           }"""
    )
    assert stored == ["alice@contoso.example"]
    await page.get_by_label("Name shown in this app").fill("Work")
    await page.get_by_role("button", name="Rename").tap()
    await page.locator("#accounts .acct-name", has_text="Work").wait_for()
    await phone.toast("Renamed")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Manage Work").tap()
    await page.get_by_role("button", name="Remove account").tap()
    await phone.toast("was removed from this phone")
    await page.locator("#accounts li").wait_for(state="detached")
    assert [c.id for c in await rp.list_credentials("alice")] == []
    assert account["cid"]
    await phone.shot("11-removed")


async def test_the_app_says_nothing_of_a_servers_push_before_it_has_one(
    rp: PushAuthClient, phone: Phone
) -> None:
    """No account, no server asked: no claim about push. With an account on this broker
    (no --push-key), the note says that it has none."""
    await phone.page.locator("body[data-ready='1']").wait_for()
    assert await phone.page.locator("#push-note").is_hidden()
    await enrolled(rp, phone)
    note = phone.page.locator("#push-note[data-state='unavailable']")
    await note.wait_for()
    assert "not set up on this server" in await note.inner_text()


async def test_removal_by_the_service_reaches_the_open_app(rp: PushAuthClient, phone: Phone) -> None:
    sockets: list[WebSocket] = []
    phone.page.on("websocket", lambda ws: sockets.append(ws))
    account = await enrolled(rp, phone)
    challenge = await rp.create_challenge("alice", CONTEXT)
    await phone.prompt(challenge.id)
    assert [ws.is_closed() for ws in sockets] == [False]
    await rp.revoke_credential(account["cid"])
    await phone.toast("was removed by the service")
    await phone.no_prompt()
    await phone.page.locator("#accounts li").wait_for(state="detached")

    # No account left at that server: its connection is closed, not kept (nor reopened).
    async def closed() -> bool:
        return all(ws.is_closed() for ws in sockets)

    await until(closed, message="the app's socket to the server closed")

    # A key the server does not know (the user erased there while the app was closed; a
    # restore of the server's data from a copy older than the setup does the same): the
    # account stays, waiting, and the app says how to get it back, in the person's terms.
    unknown = await enrolled(rp, phone)
    await phone.page.close()
    await rp.erase_user("alice")
    page = await phone.open()
    await phone.toast("add this phone again on Contoso Portal's security page and scan the new QR code")
    await page.locator(
        f"#accounts li[data-cid='{unknown['cid']}'] .acct-action", has_text="no longer knows this phone's key"
    ).wait_for()
    # The new QR code replaces it in place: one account, with a key, and the service has it.
    started = await rp.create_enrollment("alice", "alice@contoso.example", totp=new_totp())
    assert started.uri is not None
    await page.get_by_role("button", name="Add account").click()
    await page.get_by_label("Setup link").fill(started.uri)
    await page.get_by_role("button", name="Add", exact=True).click()
    await phone.toast("Added alice@contoso.example")
    done = await rp.wait_enrollment(started, timeout=10)
    assert done.completed and done.credential is not None
    item = page.locator("#accounts li")
    await page.locator(f"#accounts li[data-cid='{done.credential.id}']").wait_for()
    assert await item.count() == 1 and await item.locator(".acct-action").count() == 0


async def test_an_account_removed_by_the_service_while_its_screen_is_open_leaves_the_screen(
    rp: PushAuthClient, phone: Phone
) -> None:
    """Removed by the service while its Manage screen is open: the app goes home (the focus
    on its heading), not left on a screen whose Rename, Move and screen-lock buttons did
    nothing any more (Rename threw in the page: the account is gone from the database)."""
    account = await enrolled(rp, phone)
    page = phone.page
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    await page.locator("#account:not([hidden])").wait_for()
    await rp.revoke_credential(account["cid"])
    await phone.toast("was removed by the service")
    await page.locator("#account").wait_for(state="hidden")
    await page.locator("#home:not([hidden])").wait_for()
    assert await page.evaluate("document.activeElement.id") == "home-title"
    await page.locator("#accounts li").wait_for(state="detached")


async def test_approving_asks_for_the_screen_lock_when_set(
    rp: PushAuthClient, phones: PhoneMaker, app_broker: BrokerProcess
) -> None:
    # WebAuthn needs a domain (an IP address is no relying party id): the app at localhost.
    phone = await phones(f"http://localhost:{app_broker.port}/app/")
    await screen_lock_gate(rp, phone)


async def test_showing_the_codes_secrets_asks_for_the_screen_lock_when_set(
    rp: PushAuthClient, phones: PhoneMaker, app_broker: BrokerProcess
) -> None:
    """Move to another app shows every code generator: behind the screen lock where an
    account asks for it before approving; a failed check shows nothing."""
    phone = await phones(f"http://localhost:{app_broker.port}/app/")
    cdp, authenticator, _account, _creds = await lock_an_account(rp, phone)
    page = phone.page
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False})
    await page.get_by_role("button", name="Back up or restore").tap()
    await page.get_by_role("button", name="Show the codes' secrets").tap()
    await page.locator("#export-error", has_text="did not confirm it was you; nothing is shown").wait_for()
    assert await page.locator("#export-out").is_hidden()
    assert await page.locator("#export-links").input_value() == ""
    assert await page.locator("#export-qr canvas").count() == 0
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": True})
    await page.get_by_role("button", name="Show the codes' secrets").tap()
    await page.locator(
        "#export-status", has_text="1 account with verification codes; 1 QR code for"
    ).wait_for()
    assert await page.locator("#export-error").is_hidden()
    assert (await page.locator("#export-links").input_value()).startswith("otpauth://totp/")


async def lock_an_account(
    rp: PushAuthClient, phone: Phone
) -> tuple[CDPSession, str, dict[str, Any], list[Any]]:
    """A virtual platform authenticator, and an enrolled account that asks for the screen
    lock before approving: (the CDP session, the authenticator, the account, its credentials)."""
    cdp = await phone.context.new_cdp_session(phone.page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    authenticator = added["authenticatorId"]
    account = await enrolled(rp, phone)
    page = phone.page
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    await page.get_by_label("Ask for this phone's screen lock").tap()
    await page.locator("#toast:has-text('now asks'), #account-error:visible").first.wait_for()
    assert await page.locator("#account-error").is_hidden(), await page.locator("#account-error").inner_text()
    assert await page.get_by_label("Ask for this phone's screen lock").is_checked()
    await phone.shot("12-screen-lock-on")
    await page.get_by_role("button", name="Back").tap()
    creds = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
    assert len(creds) == 1
    return cdp, authenticator, account, creds


async def screen_lock_gate(rp: PushAuthClient, phone: Phone) -> None:
    cdp, authenticator, account, creds = await lock_an_account(rp, phone)
    page = phone.page
    # The user fails the screen lock: nothing is sent, the request stays.
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False})
    challenge = await rp.create_challenge("alice", CONTEXT)
    await phone.prompt(challenge.id)
    await phone.type_number(challenge.number)
    await page.get_by_role("button", name="Approve").tap()
    await page.locator("#prompt-error", has_text="did not confirm").wait_for()
    await phone.shot("13-screen-lock-failed")
    await phone.axe_clean("the prompt after a failed screen lock")
    assert (await rp.get_result(challenge, {account["cid"]: account["key"]})).status is Status.PENDING

    # Verified: the approval goes through, after one more assertion by the authenticator.
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": True})
    await page.get_by_role("button", name="Approve").tap()
    assert await result(rp, challenge, account) is Status.APPROVED
    after = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
    assert after[0]["signCount"] > creds[0]["signCount"]


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


async def test_installable_offline_and_served_with_a_strict_policy(
    phone: Phone, app_broker: BrokerProcess
) -> None:
    base = phone.url
    status, headers, _ = fetch(base)
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # Scripts from this origin, which may compile WebAssembly (the backups' Argon2id) but
    # not eval JavaScript ('wasm-unsafe-eval' allows the one and not the other).
    assert "script-src 'self' 'wasm-unsafe-eval';" in csp and "'unsafe-eval'" not in csp
    # No host named but loopback (local brokers); other brokers by scheme (wss:, https:).
    hosts = [source for source in csp.replace(";", " ").split() if "://" in source]
    assert hosts and all(h.split("://")[1].startswith(("127.0.0.1:", "localhost:")) for h in hosts), csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, raw = fetch(base + "manifest.webmanifest")
    manifest = json.loads(raw)
    assert manifest["display"] == "standalone" and manifest["start_url"] == "./"
    for icon in manifest["icons"]:
        _, icon_headers, body = fetch(base + icon["src"])
        if icon["type"] == "image/png":
            assert Image.open(io.BytesIO(body)).size == tuple(int(n) for n in icon["sizes"].split("x"))
        assert icon_headers["Content-Type"] == icon["type"]

    page = phone.page
    await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    # Everything the page asked for came from its own origin (no third-party host).
    origin = base.split("/app/")[0]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    await page.reload()
    await page.locator("body[data-ready='1']").wait_for()
    assert requests and all(u.startswith(origin + "/app/") for u in requests), requests
    # A policy the browser reads whole: no source it reports as invalid (an IPv6 literal
    # such as ws://[::1]:* has no CSP form) and ignores, on every load.
    refused = [m.text for m in await page.console_messages() if "Content Security Policy" in m.text]
    assert not refused, refused
    # Offline: the shell comes from the service worker's cache.
    await phone.context.set_offline(True)
    try:
        await page.reload()
        await page.locator("body[data-ready='1']").wait_for()
        await page.get_by_role("heading", name="Accounts").wait_for()
        await phone.shot("14-offline")
        await phone.axe_clean("the home screen offline")
        # The modules a backup loads only when used (with the vendored Argon2id,
        # XChaCha20-Poly1305 and zxcvbn) are in the cache too.
        lazy = """async () => {
            const b = await import('./js/backup.js');
            const k = await import('./js/blobkeys.js');
            const code = k.codeText(new Uint8Array(18));
            return [await b.passphraseProblem('correct horse battery staple'), code];
        }"""
        assert await page.evaluate(lazy) == [None, BackupCode(bytes(18)).text]
    finally:
        await phone.context.set_offline(False)
    cached = await page.evaluate(
        """async () => { const out = [];
             for (const name of await caches.keys())
               for (const req of await (await caches.open(name)).keys()) out.push(req.url);
             return out; }"""
    )
    assert cached and all(u.startswith(base) for u in cached)
    assert not any("/v1/" in u for u in cached)  # never an API answer


async def test_dark_and_320_px_wide(
    phones: PhoneMaker, rp: PushAuthClient, app_broker: BrokerProcess
) -> None:
    small = await phones(
        app_broker.http_url + "/app/", viewport={"width": 320, "height": 640}, color_scheme="dark"
    )
    await enrolled(rp, small)
    challenge = await rp.create_challenge("alice", CONTEXT)
    await small.prompt(challenge.id)
    assert await small.page.evaluate("document.documentElement.scrollWidth") <= 320
    await small.shot("15-dark-320-prompt")
    await small.axe_clean("the dark prompt at 320 px")
    await small.page.get_by_role("button", name="Deny").tap()
    await small.no_prompt()
    assert await small.page.evaluate("document.documentElement.scrollWidth") <= 320
    await small.shot("16-dark-320-accounts")
    await small.axe_clean("the dark account list at 320 px")


async def test_the_text_follows_the_phones_text_size(
    phones: PhoneMaker, rp: PushAuthClient, app_broker: BrokerProcess
) -> None:
    """A user who set larger text in the browser (its default font size, here twice the
    usual 16 px, as "very large") gets it in the app, and the prompt still fits 320 px.
    Before, the app's 16 px root size overrode the setting."""
    big = await phones(app_broker.http_url + "/app/", viewport={"width": 320, "height": 640})
    cdp = await big.context.new_cdp_session(big.page)
    await cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 32}})
    await big.page.reload()
    await big.page.locator("body[data-ready='1']").wait_for()
    await enrolled(rp, big)
    challenge = await rp.create_challenge("alice", CONTEXT)
    await big.prompt(challenge.id)
    sizes = await big.page.evaluate(
        """() => ['#prompt-details', '#approve', '#keypad button'].map(
             (s) => getComputedStyle(document.querySelector(s)).fontSize)"""
    )
    assert sizes == ["32px", "32px", "44.8px"], sizes
    assert await big.page.evaluate("document.documentElement.scrollWidth") <= 320
    await big.page.get_by_role("button", name="Deny").tap()
    await big.no_prompt()
    assert await big.page.evaluate("document.documentElement.scrollWidth") <= 320


async def test_the_private_key_cannot_be_read_even_by_the_apps_own_code(
    rp: PushAuthClient, phone: Phone
) -> None:
    """Whoever serves the app's code can make it sign while it is open, but cannot copy a
    key off the phone: the stored key is a non-extractable WebCrypto key, and its public
    half is the one the RP checked the binding of."""
    account = await enrolled(rp, phone)
    stored = await phone.page.evaluate(
        """async (cid) => {
             const db = await import(new URL('js/db.js', document.baseURI).href);
             const a = await db.getAccount(cid);
             let exported = null;
             for (const format of ['pkcs8', 'jwk', 'raw'])
               try { await crypto.subtle.exportKey(format, a.privateKey); exported = format; } catch {}
             return {
               type: a.privateKey.constructor.name,
               extractable: a.privateKey.extractable,
               algorithm: a.privateKey.algorithm.name,
               exported,
               publicKey: Array.from(a.publicKey),
             };
           }""",
        account["cid"],
    )
    assert stored["type"] == "CryptoKey" and stored["algorithm"] == "Ed25519"
    assert stored["extractable"] is False and stored["exported"] is None
    assert bytes(stored["publicKey"]) == account["key"]


async def test_accounts_keep_the_order_the_user_gives_them(rp: PushAuthClient, phone: Phone) -> None:
    page = phone.page
    up = page.get_by_role("button", name="Move up")
    down = page.get_by_role("button", name="Move down")

    async def moves() -> tuple[bool, bool]:
        return await up.is_enabled(), await down.is_enabled()

    await enrolled(rp, phone, "alice")
    # Only the moves that do something are offered: none for the only account.
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    assert await moves() == (False, False)
    await page.get_by_role("button", name="Back").tap()
    await enrolled(rp, phone, "bob")
    names = page.locator("#accounts .acct-name")
    assert await names.all_inner_texts() == ["alice@contoso.example", "bob@contoso.example"]
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    assert await moves() == (False, True)  # the first: down only
    await page.get_by_role("button", name="Back").tap()
    await page.get_by_role("button", name="Manage bob@contoso.example").tap()
    assert await moves() == (True, False)  # the last: up only
    await up.tap()
    await phone.toast("Moved up")
    # Now the first: up does nothing, and the focus goes on to the move that does.
    assert await moves() == (False, True)
    assert await page.evaluate("document.activeElement.id") == "move-down"
    await page.get_by_role("button", name="Back").tap()
    assert await names.all_inner_texts() == ["bob@contoso.example", "alice@contoso.example"]
    await page.reload()
    await phone.page.locator("body[data-ready='1']").wait_for()
    await phone.page.locator("#accounts li").nth(1).wait_for()
    assert await names.all_inner_texts() == ["bob@contoso.example", "alice@contoso.example"]


async def test_verification_code_secrets_are_not_plain_text_in_the_profile_files(
    rp: PushAuthClient, app_broker: BrokerProcess, tmp_path: Path
) -> None:
    """Read the browser profile's IndexedDB files as someone with a copy of the disk
    would search them: the phone's name (stored as it is) is there, the TOTP secret and
    the backup code of a server copy are not, neither as text nor as bytes (sealed with
    a non-extractable AES-GCM key, js/sealed.js). A reader who parses the stored key objects gets further: see
    deploy/webapp.md, "Secrets at rest"."""
    profile = tmp_path / "profile"
    marker = "Phone-marker-7Q2ZKX"
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path(), args=chromium_args(), **PHONE
        )
        phone = Phone(context, None, app_broker.http_url + "/app/")  # type: ignore[arg-type]
        await phone.open()
        totp = new_totp()
        enrollment = await rp.create_enrollment("alice", "alice@contoso.example", totp=totp)
        assert enrollment.uri is not None
        cid = await phone.add_account(enrollment.uri, marker)
        await phone.page.locator("#accounts [data-role='code'][data-code]").wait_for()
        stored = await phone.page.evaluate(
            """async (cid) => {
                 const db = await import(new URL('js/db.js', document.baseURI).href);
                 const a = await db.getAccount(cid);
                 const key = await db.getSetting('sealKey');
                 return {fields: Object.keys(a.totp).sort(), extractable: key.extractable,
                         algorithm: key.algorithm.name};
               }""",
            cid,
        )
        assert stored == {
            "fields": ["algorithm", "digits", "period", "sealed"],
            "extractable": False,
            "algorithm": "AES-GCM",
        }
        code = await phone.save_to_server(TEST_PASSPHRASE)  # the backup code is kept, sealed
        await context.close()
    files = [f for f in (profile / "Default" / "IndexedDB").rglob("*") if f.is_file()]
    disk = b"".join(f.read_bytes() for f in files)
    # V8 writes a string as Latin-1 or UTF-16: both are looked for.
    plain = [lambda text: text.encode("latin-1"), lambda text: text.encode("utf-16-le")]
    assert any(enc(marker) in disk for enc in plain)  # what is stored as it is is found so
    secret = totp.secret.upper().rstrip("=")
    assert not any(enc(secret) in disk for enc in plain)
    assert decode_base32_secret(totp.secret) not in disk
    assert not any(enc(code) in disk or enc(code.replace("-", "")) in disk for enc in plain)
    assert BackupCode.parse(code).secret not in disk


async def test_a_secret_stored_in_plain_text_by_an_earlier_version_is_sealed_on_start(
    rp: PushAuthClient, phone: Phone
) -> None:
    """Accounts an earlier version of the app stored kept the TOTP secret in plain text:
    the app seals it when it starts, and the codes stay the Python agent's."""
    totp = new_totp()
    account = await enrolled(rp, phone, totp=totp)
    modules = """const db = await import(new URL('js/db.js', document.baseURI).href);
                 const sealed = await import(new URL('js/sealed.js', document.baseURI).href);"""
    await phone.page.evaluate(
        f"""async (cid) => {{ {modules}
             const a = await db.getAccount(cid);
             const {{ sealed: box, ...rest }} = a.totp;
             const secret = new TextDecoder().decode(await sealed.open(box, 'totp:' + cid));
             await db.putAccount({{ ...a, totp: {{ ...rest, secret }} }});
           }}""",
        account["cid"],
    )
    before = time.time()
    await phone.page.reload()
    await phone.page.locator("#accounts [data-role='code'][data-code]").wait_for()
    shown = await phone.page.locator("#accounts [data-role='code']").get_attribute("data-code")
    assert shown in agent_codes(totp, (before, time.time()))
    fields = await phone.page.evaluate(
        f"""async (cid) => {{ {modules}
             return Object.keys((await db.getAccount(cid)).totp).sort(); }}""",
        account["cid"],
    )
    assert fields == ["algorithm", "digits", "period", "sealed"]


async def test_the_screen_a_keyboard_user_opens_takes_the_focus(rp: PushAuthClient, phone: Phone) -> None:
    """With a keyboard (or a screen reader), Manage, Add account, Back up or restore and
    each screen's Back or Cancel put the focus on the heading of the screen they open, so
    that it is announced and Tab goes on from there. Before, the focus fell to the page's
    body with the button that was hidden, and nothing was announced."""
    await enrolled(rp, phone)
    page = phone.page
    steps = [
        ("Manage alice@contoso.example", "Account"),
        ("Back", "Accounts"),
        ("Add account", "Add account"),
        ("Cancel", "Accounts"),
        ("Back up or restore", "Back up or restore"),
        ("Back", "Accounts"),
    ]
    for button, heading in steps:
        await page.get_by_role("button", name=button, exact=True).focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_focused()


async def test_a_phone_left_unnamed_is_called_by_its_browser_and_system(
    rp: PushAuthClient, phone: Phone
) -> None:
    # "Web authenticator" for every unnamed phone made two of them read the same in the
    # service's device list, where the user picks the one to remove.
    await phone.page.get_by_role("button", name="Add account").click()
    shown = await phone.page.get_by_label("Name of this phone").get_attribute("placeholder")
    assert shown and shown != "Web authenticator", shown
    await phone.page.get_by_role("button", name="Cancel").click()
    added = await enrolled(rp, phone, device_name="")
    assert added["credential"].name == shown
    agents = [
        "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Mobile Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.0 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
        "curl/8.0",
    ]
    named = await phone.page.evaluate(
        """async (agents) => {
             const { defaultDeviceName } = await import('./js/devicename.js');
             return agents.map((ua) => defaultDeviceName(ua));
           }""",
        agents,
    )
    assert named == ["Chrome on Android", "Safari on iPhone", "Firefox on Android", "Web authenticator"]
