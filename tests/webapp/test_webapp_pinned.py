"""The web authenticator on an origin of its own with its modules pinned by hash, as
deploy/webapp.md ("On its own origin", step 3) says: the import map printed by the real
`python -m broker.webapp_static --import-map`, put in a copy of index.html before the
app's script, and allowed by the policy by its own sha256. A page served so works end to
end; a copy with one module changed on the way (a mirror, a cache) is refused by the
browser before any of the app's code runs.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from e2e_helpers import TEST_PASSPHRASE
from playwright.async_api import Browser, ConsoleMessage
from support import BrokerProcess, serving
from test_webapp_signin import CONTEXT, result
from webapp_world import PHONE, WAIT_MS, Phone, enrolled

from broker.webapp_static import CSP, HEADERS, ROOT, load
from protocol.challenge import Status
from relying_party.sdk import PushAuthClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
APP_SCRIPT = '<script type="module" src="js/app.js"></script>'
# Imported by the app's modules, not by index.html: the pin covers the whole module graph.
TAMPERED = "js/protocol/signing.js"


def import_map() -> str:
    """The operator's step: the release's pins, from the command deploy/webapp.md names."""
    done = subprocess.run(
        [sys.executable, "-m", "broker.webapp_static", "--import-map"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def pinned_copy(site: Path, pins: str) -> str:
    """The release's files copied to `site`, index.html carrying the import map before
    the app's script; returns the Content-Security-Policy that allows that map alone."""
    shutil.copytree(ROOT, site)
    index = site / "index.html"
    html = index.read_text()
    assert html.count(APP_SCRIPT) == 1, "index.html no longer loads js/app.js as the tests expect"
    index.write_text(html.replace(APP_SCRIPT, f'<script type="importmap">{pins}</script>\n  {APP_SCRIPT}'))
    digest = base64.b64encode(hashlib.sha256(pins.encode()).digest()).decode()
    assert CSP.count("script-src 'self' ") == 1
    return CSP.replace("script-src 'self' ", f"script-src 'self' 'sha256-{digest}' ")


async def serve(site: Path, csp: str) -> AsyncIterator[str]:
    """`site` at /app/ on an origin of its own (not the broker's), with the headers the
    broker sends and `csp`, the way deploy/webapp.md's nginx block serves it."""
    files = load(site)

    async def one(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["path"] or "index.html")
        if found is None:
            raise web.HTTPNotFound()
        headers = {**HEADERS, "Content-Security-Policy": csp, "Content-Type": found.content_type}
        return web.Response(body=found.body, headers=headers)

    app = web.Application()
    app.router.add_get("/app/{path:.*}", one)
    async with serving(app) as url:
        yield url + "/app/"


@pytest_asyncio.fixture(loop_scope="module")
async def pins() -> str:
    return import_map()


@pytest_asyncio.fixture(loop_scope="module")
async def pinned(tmp_path: Path, pins: str) -> AsyncIterator[str]:
    csp = pinned_copy(tmp_path / "site", pins)
    async for url in serve(tmp_path / "site", csp):
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def tampered(tmp_path: Path, pins: str) -> AsyncIterator[str]:
    csp = pinned_copy(tmp_path / "site", pins)
    module = tmp_path / "site" / TAMPERED
    # One changed line, as a compromised mirror would make it: the module still parses
    # and would run, and only its bytes differ from the release's.
    module.write_text(module.read_text() + "\nglobalThis.tampered = true;\n")
    async for url in serve(tmp_path / "site", csp):
        yield url


def integrity_errors(messages: list[ConsoleMessage]) -> list[str]:
    return [m.text for m in messages if "integrity" in m.text.lower()]


async def test_pins_cover_every_module_the_app_loads(pins: str) -> None:
    """Every module under js/ and every vendored module it imports (the backup's Argon2id,
    XChaCha20-Poly1305 and passphrase rater, the export's QR codes) is pinned; what runs
    outside the module graph (the service worker, the QR scanner's classic worker and
    jsQR) cannot be, as deploy/webapp.md says."""
    files = load()
    modules = {name for name in files if name.startswith("js/")} - {"js/scan-worker.js"}
    vendored = {name for name in files if name.startswith("vendor/noble-") and name.endswith(".js")}
    vendored.add("vendor/zxcvbn.js")  # the passphrase rater, imported when a backup is saved
    vendored.add("vendor/uqr.js")  # the QR codes of an export to another app
    # noble-hashes/scrypt.js and what it imports: an encrypted Aegis vault being imported
    assert len(vendored) == 16 and vendored <= set(files), vendored
    assert f'"./{TAMPERED}"' in pins
    assert all(f'"./{name}"' in pins for name in modules | vendored), pins
    assert not any(f'"./{name}"' in pins for name in ("sw.js", "js/scan-worker.js", "vendor/jsQR.js"))


async def test_the_pinned_app_on_its_own_origin_signs_in(
    browser: Browser,
    rp: PushAuthClient,
    app_broker: BrokerProcess,
    pinned: str,
) -> None:
    assert not pinned.startswith(app_broker.http_url)  # its own origin, as deployed
    context = await browser.new_context(**PHONE)
    context.set_default_timeout(WAIT_MS)
    messages: list[ConsoleMessage] = []
    context.on("console", lambda m: messages.append(m))  # from the first load on
    phone = Phone(context, None, pinned)  # type: ignore[arg-type]
    try:
        await phone.open()
        account = await enrolled(rp, phone)
        challenge = await rp.create_challenge("alice", CONTEXT, credential_id=account["cid"])
        await phone.prompt(challenge.id)
        await phone.type_number(challenge.number)
        await phone.page.get_by_role("button", name="Approve").tap()
        assert await result(rp, challenge, account) is Status.APPROVED
        assert not integrity_errors(messages)
    finally:
        await phone.context.close()


async def test_the_pinned_app_backs_up_and_a_new_phone_recovers_across_origins(
    browser: Browser,
    rp: PushAuthClient,
    app_broker: BrokerProcess,
    pinned: str,
    tmp_path: Path,
) -> None:
    """The backup's modules (and the vendored Argon2id, WebAssembly and JavaScript, and
    XChaCha20-Poly1305 they import) load under the pins; the restored account recovers
    with POST /v1/recoveries from the app's own origin to the broker's (CORS,
    broker/cors.py)."""
    phones = []
    messages: list[ConsoleMessage] = []
    try:
        for _ in range(2):
            context = await browser.new_context(**PHONE)
            context.set_default_timeout(WAIT_MS)
            context.on("console", lambda m: messages.append(m))
            phones.append(Phone(context, None, pinned))  # type: ignore[arg-type]
            await phones[-1].open()
        old, new = phones
        started = await rp.create_enrollment("pat", "pat@contoso.example", recoverable=True)
        assert started.uri is not None
        cid = await old.add_account(started.uri, "Old phone")
        done = await rp.wait_enrollment(started, timeout=10)
        assert done.completed and done.credential is not None
        await old.save_backup(tmp_path / "pat.backup", TEST_PASSPHRASE)
        await new.restore(tmp_path / "pat.backup", TEST_PASSPHRASE)
        await new.page.locator("#backup-status", has_text="Restored").wait_for()
        (line,) = await new.page.locator("#restore-report li").all_inner_texts()
        assert line == "pat@contoso.example: recovered: sign-in requests reach this phone"
        sync = await rp.sync_credentials("pat", {cid: done.credential})
        (recovered,) = sync.added
        assert recovered.recovered_from == cid and not sync.refused
        assert not integrity_errors(messages)
        # Its keys came from the WebAssembly Argon2id: the policy, pins added, compiles it.
        chosen = "import('./js/sealedfile.js').then(async (sf) => (await sf.argon2()).name)"
        assert await new.page.evaluate(chosen) == "wasm"
    finally:
        for phone in phones:
            await phone.context.close()


async def test_a_tampered_module_is_refused_before_the_app_runs(
    browser: Browser,
    tampered: str,
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        fetched: list[str] = []
        page.on("requestfinished", lambda r: fetched.append(r.url))
        async with page.expect_console_message(
            lambda m: "integrity" in m.text.lower() and TAMPERED in m.text, timeout=WAIT_MS
        ) as refusal:
            await page.goto(tampered)
        assert "blocked" in (await refusal.value).text.lower()
        assert tampered + TAMPERED in fetched  # served, then refused by the browser
        # None of the app's code ran: the tampered line did not, and the app never
        # became ready (its entry module waits on the refused one).
        assert await page.evaluate("globalThis.tampered === undefined")
        assert await page.locator("body").get_attribute("data-ready") is None
    finally:
        await context.close()
