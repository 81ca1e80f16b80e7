"""Backup and restore in the web authenticator, in the Python agent's format.

- The app's modules against docs/backup-vectors.json in Chromium: each sealed vector
  opens to its document and is reproduced byte for byte; each refused one is refused
  with its code (tests/test_backup_vectors.py holds the agent to the same file). The
  app derives keys with WebAssembly under the broker's policy, and noble's JavaScript
  fallback (a browser without WebAssembly) derives the agent's keys too.
- A backup the app saves (a real download) restores with `pushauth-agent restore` as a
  subprocess: the recoverable account recovers by itself and the app is asked "was this
  you?", the other comes back as "action required", codes are the same.
- The same file restored on a second phone: the recoverable account recovers with a
  key of the new phone (the RP accepts the recovery by its own check, and a sign-in on
  the new phone is approved and verified by the SDK); the other waits for a new QR
  code, which re-activates it in place; codes work at once.
- A backup the agent wrote restores in the app, its counter-based (HOTP) account too,
  at its counter.
- Bad input changes nothing: a wrong passphrase, a damaged file, a weak passphrase, a
  restore into an app that has accounts.

Real broker, Redis, Chromium (phone profile) and agent process.

Copies on the server, a new passphrase, retiring and the automatic copy:
tests/webapp/test_webapp_backup_server.py.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from e2e_helpers import TEST_PASSPHRASE, agent_env  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from shared_broker import new_rp
from webapp_world import Phone, PhoneMaker, enrolled

from device_agent import backup_vectors
from device_agent.backup import Backup, load_backup, write_backup_file
from device_agent.backup_vectors import DOCUMENT
from device_agent.passphrase import (
    PassphraseError,
    check_strength,
)
from device_agent.store import AccountStore
from device_agent.vault import KdfParams, derive_key
from protocol.challenge import Status
from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

pytestmark = pytest.mark.asyncio(loop_scope="module")
VECTORS = json.loads((Path(__file__).resolve().parents[2] / "docs" / "backup-vectors.json").read_text())
SAFE = "alice@contoso.example"  # recoverable
PLAIN = "alice@fabrikam.example"  # not recoverable
NEW_PASSPHRASE = "violet kettle drums at noon"

CHECK = r"""async (vectors) => {
  const base = document.baseURI;
  const backup = await import(new URL('js/backup.js', base).href);
  const sf = await import(new URL('js/sealedfile.js', base).href);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
  const failures = [];
  let opened = 0, resealed = 0, refused = 0;
  for (const v of vectors.sealed) {
    const got = await backup.openBackup(bytes(v.file), v.open_with);
    const want = backup.linesOf(v.document);
    if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(['open', v.name]); else opened++;
    const again = await backup.sealBackup(v.document, v.passphrase,
      { kdf: { opslimit: v.opslimit, memlimit: v.memlimit }, salt: bytes(v.salt), nonce: bytes(v.nonce) });
    if (hex(again) !== v.file) failures.push(['seal', v.name]); else resealed++;
  }
  for (const v of vectors.refused) {
    try {
      await backup.openBackup(bytes(v.file), v.passphrase);
      failures.push(['opened', v.name]);
    } catch (exc) {
      const right = exc instanceof sf.SealedFileError && exc.code === v.code;
      if (right) refused++;
      else failures.push([v.name, exc.code ?? exc.message]);
    }
  }
  const keys = await import(new URL('js/blobkeys.js', base).href);
  const ed = await import(new URL('js/keys.js', base).href);
  let codes = 0, blobs = 0;
  for (const v of vectors.codes.valid) {
    try {
      if (hex(keys.parseCode(v.typed)) === v.secret) codes++;
      else failures.push(['code', v.typed]);
    } catch (exc) { failures.push(['code', v.typed, exc.message]); }
  }
  for (const typed of vectors.codes.invalid) {
    try { keys.parseCode(typed); failures.push(['accepted', typed]); }
    catch (exc) {
      if (exc instanceof keys.BackupCodeError) codes++;
      else failures.push([typed, exc.message]);
    }
  }
  for (const v of vectors.blobs) {
    const code = keys.parseCode(v.code);
    if (keys.codeText(code) !== v.code) failures.push(['code text', v.code]);
    const kdf = { opslimit: v.opslimit, memlimit: v.memlimit };
    const k = await keys.blobKeys(v.passphrase, code, v.origin, v.name, { kdf });
    const pk = await ed.publicKeyOfSeed(k.seed);
    const id = btoa(String.fromCharCode(...pk)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const ok = hex(k.seed) === v.seed && hex(k.wrap) === v.wrap_key && id === v.blob_id
      && hex(keys.unwrap(k, pk, bytes(v.stored))) === v.sealed
      && hex(keys.wrap(k, pk, bytes(v.sealed), bytes(v.nonce))) === v.stored;
    if (ok) blobs++; else failures.push(['blob', v.blob_id]);
  }
  return { failures, opened, resealed, refused, codes, blobs };
}"""

CODE_OF = """async (cid) => {
  const li = document.querySelector(`li[data-cid="${CSS.escape(cid)}"] [data-role="code"]`);
  return li ? li.dataset.code : null;
}"""


# The app's Argon2id (the one it chose: WebAssembly where allowed) and the one a browser
# without WebAssembly chooses (WebAssembly hidden from the page for the call), each
# against the agent's derive_key.
BOTH_ARGON2 = r"""async (cases) => {
  const sf = await import(new URL('js/sealedfile.js', document.baseURI).href);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
  const saved = globalThis.WebAssembly;
  globalThis.WebAssembly = undefined;
  let fallback;
  try { fallback = await sf.chooseArgon2(); } finally { globalThis.WebAssembly = saved; }
  const keys = [];
  for (const [passphrase, salt, opslimit, memlimit] of cases) {
    const app = await sf.deriveKey(passphrase, bytes(salt), { opslimit, memlimit });
    const js = await fallback.argon2id(new TextEncoder().encode(passphrase.normalize('NFC')), bytes(salt),
      { t: opslimit, m: Math.floor(memlimit / 1024), dkLen: 32 });
    keys.push([hex(app), hex(js)]);
  }
  return { app: (await sf.argon2()).name, fallback: fallback.name, keys };
}"""


async def test_the_app_agrees_with_every_backup_vector(phone: Phone) -> None:
    result = await phone.page.evaluate(CHECK, VECTORS)
    assert result["failures"] == []
    assert result["opened"] == result["resealed"] == len(VECTORS["sealed"])
    assert result["refused"] == len(VECTORS["refused"])
    assert result["codes"] == len(VECTORS["codes"]["valid"]) + len(VECTORS["codes"]["invalid"])
    assert result["blobs"] == len(VECTORS["blobs"]) == 1
    # The vectors' costs, a memory not a multiple of 4 KiB (9 blocks: Argon2 uses 8 and
    # hashes 9) and an empty passphrase (which hash-wasm refuses and noble derives).
    cases = [(v["passphrase"], v["salt"], v["opslimit"], v["memlimit"]) for v in VECTORS["sealed"]]
    cases += [("odd memory", "00" * 16, 2, 9 * 1024 + 100), ("", "11" * 16, 1, 8192)]
    both = await phone.page.evaluate(BOTH_ARGON2, cases)
    assert (both["app"], both["fallback"]) == ("wasm", "js")  # the policy lets it compile
    for (passphrase, salt, opslimit, memlimit), keys in zip(cases, both["keys"], strict=True):
        want = derive_key(passphrase, bytes.fromhex(salt), KdfParams(opslimit, memlimit)).hex()
        assert keys == [want, want], passphrase


PASSPHRASES = [
    "correct horse battery staple",
    "password1234",
    "Password123!",
    "aaaaaaaaaaaaaaaa",
    "qwertyuiopasdf",
    "1234567890123",
    "Tr0ub4dor&3xyz",
    "pushauth passphrase",
    "zebra umbrella quantum velvet",
    "john smith 1985",
    "iloveyouiloveyou",
    "P@ssw0rdP@ssw0rd",
    "mañana corazón árbol",
]
RATE = """async (passphrases) => {
  const backup = await import(new URL('js/backup.js', document.baseURI).href);
  return Promise.all(passphrases.map((p) => backup.passphraseProblem(p)));
}"""


async def test_the_app_refuses_the_passphrases_the_agent_refuses(phone: Phone) -> None:
    problems = await phone.page.evaluate(RATE, PASSPHRASES)
    for passphrase, problem in zip(PASSPHRASES, problems, strict=True):
        try:
            check_strength(passphrase)
            agent_ok = True
        except PassphraseError:
            agent_ok = False
        assert (problem is None) == agent_ok, (passphrase, problem)
    assert sum(p is None for p in problems) >= 4  # not a rule that refuses everything


# -- helpers ---------------------------------------------------------------------------


def stored_of(accounts: dict[str, Any]) -> dict[str, Any]:
    """What the RP stored at enrollment, by credential id."""
    return {a["cid"]: a["credential"] for a in accounts.values()}


async def enroll_two(rp: PushAuthClient, phone: Phone, user: str) -> dict[str, Any]:
    """A recoverable account and a plain one, both with codes, added on `phone`."""
    out = {
        label: await enrolled(rp, phone, user, account=label, recoverable=safe, device_name="Old phone")
        for label, safe in ((SAFE, True), (PLAIN, False))
    }
    await phone.page.get_by_role("button", name="Back up or restore").tap()
    return out


async def report(phone: Phone) -> list[str]:
    await phone.page.locator("#backup-status", has_text="Restored").wait_for()
    return await phone.page.locator("#restore-report li").all_inner_texts()


def recent_codes(secret: str, digits: int, period: int, algorithm: str) -> set[str]:
    """The service's codes of this time step and the one before: a code read a moment
    ago may be of the step that just ended (the app ticks once a second)."""
    totp = pyotp.TOTP(secret, digits=digits, interval=period, digest=algorithm.lower())
    now = time.time()
    return {totp.at(now), totp.at(now - period)}


def codes_of(totp: Any) -> set[str]:
    return recent_codes(totp.secret, totp.digits, totp.period, totp.algorithm)


async def shows_code(phone: Phone, cid: str, totp: Any) -> None:
    """The app's code for `cid` is the service's (read first, then compared)."""
    shown = await phone.page.evaluate(CODE_OF, cid)
    assert shown in codes_of(totp), (shown, codes_of(totp))


# -- the app's backup, restored by the agent and by another phone -------------------------


async def test_a_backup_saved_by_the_app_restores_with_the_agent(
    rp: PushAuthClient, phone: Phone, tmp_path: Path
) -> None:
    accounts = await enroll_two(rp, phone, "carol")
    path = tmp_path / "app.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    home = tmp_path / "agent"
    out = await asyncio.to_thread(ok, home, "restore", "--from", str(path), "--device-name", "Laptop")
    assert f"recovered: {SAFE}" in out
    store = AccountStore(home)
    assert store.find(SAFE).active
    assert store.find(PLAIN).status == "action_required"
    # The recovery is the service's to check, with the recovery key it stored.
    sync = await rp.sync_credentials("carol", stored_of(accounts))
    (new,) = sync.added
    assert new.recovered_from == accounts[SAFE]["cid"] and new.name == "Laptop" and not sync.refused
    # The app is asked at once whether this was its user.
    await phone.page.locator("#notice:not([hidden])").wait_for()
    # Codes: the agent shows what the service expects for both accounts.
    for label in (SAFE, PLAIN):
        (shown,) = json.loads(await asyncio.to_thread(ok, home, "code", label, "--json"))
        assert shown["code"] in codes_of(accounts[label]["totp"])


async def test_a_backup_saved_by_the_app_restores_on_a_new_phone(
    rp: PushAuthClient, phone: Phone, phones: PhoneMaker, app_broker: Any, tmp_path: Path
) -> None:
    accounts = await enroll_two(rp, phone, "dave")
    path = tmp_path / "app.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    assert (await phone.page.locator("#backup-status").inner_text()).startswith("Backup of 2 accounts saved")
    new = await phones(app_broker.http_url + "/app/")
    await new.restore(path, TEST_PASSPHRASE)
    lines = await report(new)
    assert (await new.page.locator("#backup-status").inner_text()).startswith("Restored 2 accounts from")
    # The button keeps the keyboard focus through the restore (before: lost on <body>).
    assert await new.page.evaluate("document.activeElement.id") == "restore-submit"
    await new.shot("27-restored")
    await new.axe_clean("the backup screen after a restore")
    assert any(line.startswith(f"{SAFE}: recovered") for line in lines), lines
    assert any(line.startswith(f"{PLAIN}: action required: scan a new QR code") for line in lines), lines
    cids = await new.page.locator("#accounts li").evaluate_all("els => els.map(e => e.dataset.cid)")
    assert len(cids) == 2 and accounts[PLAIN]["cid"] in cids
    (recovered,) = [c for c in cids if c != accounts[PLAIN]["cid"]]
    assert recovered != accounts[SAFE]["cid"]
    await new.page.locator(f"li[data-cid='{accounts[PLAIN]['cid']}'] .acct-action").wait_for(state="attached")
    await shows_code(new, recovered, accounts[SAFE]["totp"])
    await shows_code(new, accounts[PLAIN]["cid"], accounts[PLAIN]["totp"])

    # The service accepts the recovered key by its own check, and a sign-in reaches the
    # new phone and is approved there (the SDK verifies the answer with the new key).
    sync = await rp.sync_credentials("dave", stored_of(accounts))
    (key,) = sync.added
    assert key.id == recovered and key.recovered_from == accounts[SAFE]["cid"] and key.name == "New phone"
    await phone.page.locator("#notice:not([hidden])").wait_for()  # the old phone is asked
    await new.page.get_by_role("button", name="Back", exact=True).tap()
    await new.shot("28-action-required")
    await new.axe_clean("the home screen with an account that needs a new QR code")
    challenge = await rp.create_challenge("dave", {"app": "Backup test"}, credential_id=recovered)
    await new.prompt(challenge.id)
    await new.type_number(challenge.number)
    await new.page.get_by_role("button", name="Approve").tap()
    verdict = await rp.wait_result(challenge, sync.public_keys(), timeout=10)
    assert verdict.status == Status.APPROVED

    # The plain account is re-activated by a new QR code, in place and under its name.
    started = await rp.create_enrollment("dave", PLAIN, totp=new_totp())
    assert started.uri is not None
    await new.page.get_by_role("button", name="Add account").tap()
    await new.page.get_by_label("Setup link").fill(started.uri)
    await new.page.get_by_role("button", name="Add", exact=True).tap()
    done = await rp.wait_enrollment(started, timeout=10)
    assert done.completed and done.credential is not None
    await new.page.locator(f"li[data-cid='{done.credential.id}']").wait_for(state="attached")
    names = await new.page.locator("#accounts .acct-name").all_inner_texts()
    assert names == [SAFE, PLAIN]
    assert await new.page.locator(".acct-action").count() == 0


SHARED = "shared@contoso.example"
NAMES = "els => els.map(e => e.textContent)"


async def test_two_accounts_with_one_label_get_two_names_and_their_backup_restores(
    rp: PushAuthClient, phone: Phone, app_broker: Any, tmp_path: Path
) -> None:
    """One e-mail address at two services is common; a backup names each account once
    (both readers refuse a name twice), so the app gives the second one "NAME (2)", as
    the agent does, and refuses a rename to a taken name. (At one service, the same
    label is the same account: the app asks before adding it again, test_webapp_demo_rp.py.)"""
    await enrolled(rp, phone, "pat", account=SHARED)
    created = await new_rp(app_broker, "Fabrikam Portal")
    async with PushAuthClient(app_broker.http_url, created["api_key"]) as other:
        await enrolled(other, phone, "pat", account=SHARED)
    page = phone.page
    assert await page.locator("#accounts .acct-name").evaluate_all(NAMES) == [SHARED, f"{SHARED} (2)"]
    await page.get_by_role("button", name=f"Manage {SHARED} (2)").tap()
    await page.get_by_label("Name shown in this app").fill(SHARED)
    await page.get_by_role("button", name="Rename").tap()
    await page.locator("#account-error", has_text=f'There is already an account named "{SHARED}"').wait_for()
    await page.get_by_role("button", name="Back", exact=True).tap()
    assert await page.locator("#accounts .acct-name").evaluate_all(NAMES) == [SHARED, f"{SHARED} (2)"]

    path = tmp_path / "app.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    home = tmp_path / "agent"
    await asyncio.to_thread(ok, home, "restore", "--from", str(path), "--device-name", "Laptop")
    assert [e.name for e in AccountStore(home).entries()] == [SHARED, f"{SHARED} (2)"]

    # An earlier version of the app gave both one name: the app renames the later one
    # when it starts, so that its backups restore.
    await page.evaluate(
        """async () => {
             const db = await import(new URL('js/db.js', document.baseURI).href);
             for (const a of await db.listAccounts()) await db.putAccount({ ...a, name: 'same' });
           }"""
    )
    await page.reload()
    await page.locator("body[data-ready='1']").wait_for()
    await page.locator("#accounts .acct-name", has_text="same (2)").wait_for()
    assert await page.locator("#accounts .acct-name").evaluate_all(NAMES) == ["same", "same (2)"]


async def test_a_backup_written_by_the_agent_restores_in_the_app(phone: Phone, tmp_path: Path) -> None:
    # The vectors' document, written by the agent's own writer (its push accounts are at
    # brokers that do not exist: they come back waiting, their recovery failing plainly).
    from device_agent.backup_actions import open_backup

    path = tmp_path / "agent.backup"
    vector = open_backup(bytes.fromhex(VECTORS["sealed"][0]["file"]), VECTORS["sealed"][0]["open_with"])
    write_backup_file(path, vector, TEST_PASSPHRASE, kdf=KdfParams.cheapest())
    await phone.restore(path, TEST_PASSPHRASE)
    lines = await report(phone)
    assert lines[1] == "GitHub: bob: verification codes work"
    assert lines[2] == "Fabrikam: vpn: verification codes work"
    assert lines[0].startswith(
        "alice@contoso.example: action required: scan a new QR code from Contoso (the recovery failed:"
    )
    assert lines[3] == "alice (Tailspin Toys): action required: scan a new QR code from Tailspin Toys"
    names = await phone.page.locator("#accounts .acct-name").all_inner_texts()
    assert names == ["alice@contoso.example", "GitHub: bob", "Fabrikam: vpn", "alice (Tailspin Toys)"]
    # The counter-based account goes on from the backup's counter.
    vpn = DOCUMENT["accounts"][2]
    await phone.page.get_by_role("button", name="Back", exact=True).tap()
    await phone.page.get_by_role("button", name="New verification code for Fabrikam: vpn").tap()
    shown = phone.page.locator("#accounts li", has_text="Fabrikam: vpn").locator("[data-code]")
    await shown.wait_for()
    assert await shown.get_attribute("data-code") == rfc4226(vpn["secret"], vpn["counter"])
    bob = DOCUMENT["accounts"][1]
    li = phone.page.locator("#accounts li", has_text="GitHub: bob")
    cid = await li.get_attribute("data-cid")
    shown = await phone.page.evaluate(CODE_OF, cid)
    assert shown in recent_codes(bob["secret"], bob["digits"], bob["period"], bob["algorithm"])


def rfc4226(secret: str, counter: int, digits: int = 6) -> str:
    """HOTP-SHA1 by RFC 4226 section 5.3, written out here (pyotp refuses the vector's
    80-bit secret, which RFC 4226 allows)."""
    mac = hmac.new(base64.b32decode(secret), counter.to_bytes(8, "big"), "sha1").digest()
    offset = mac[-1] & 0x0F
    return str((int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**digits).zfill(digits)


# -- bad input changes nothing ------------------------------------------------------------


async def test_bad_backups_and_passphrases_change_nothing(phone: Phone, tmp_path: Path) -> None:
    page = phone.page
    good = tmp_path / "good.backup"
    write_backup_file(good, Backup(), TEST_PASSPHRASE, kdf=KdfParams.cheapest())
    damaged = tmp_path / "damaged.backup"
    data = bytearray(good.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    other = tmp_path / "notes.txt"
    other.write_text("not a backup")
    for path, passphrase, words in (
        (good, "not the passphrase", "wrong passphrase for this backup"),
        (damaged, TEST_PASSPHRASE, "damaged or was altered"),
        (other, TEST_PASSPHRASE, "not a pushauth backup file"),
    ):
        await phone.restore(path, passphrase)
        await page.locator("#restore-error", has_text=words).wait_for()
        await page.locator("#restore-error", has_text="Nothing was changed").wait_for()
        assert await page.locator("#accounts li").count() == 0
    await phone.shot("29-restore-refused")
    await phone.axe_clean("the backup screen with a refused restore")

    # No backup of an empty app, and none under a weak or mistyped passphrase.
    await page.get_by_role("button", name="Save backup file").tap()
    await page.locator("#backup-error", has_text="no accounts to back up").wait_for()


async def test_a_weak_passphrase_saves_nothing_and_restore_needs_an_empty_app(
    rp: PushAuthClient, phone: Phone, tmp_path: Path
) -> None:
    await enroll_two(rp, phone, "erin")
    page = phone.page
    downloads: list[Any] = []
    page.on("download", lambda d: downloads.append(d))
    for first, second, words in (
        ("short", "short", "too short"),
        ("aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa", 'too easy to guess (Repeated characters like "aaa"'),
        ("password1234", "password1234", "too easy to guess (This is similar to a commonly used password)"),
        (TEST_PASSPHRASE, TEST_PASSPHRASE + "!", "The two passphrases differ"),
    ):
        await page.get_by_label("Passphrase (at least 12").fill(first)
        await page.get_by_label("The same passphrase again").fill(second)
        await page.get_by_role("button", name="Save backup file").tap()
        await page.locator("#backup-error", has_text=words).wait_for()
    path = tmp_path / "erin.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    assert len(downloads) == 1  # only the good one
    # The fields are emptied by a save: the next one (to the server, say) asks for the
    # passphrase again. It said "too short (0 characters, at least 12)" of what was typed.
    await page.get_by_role("button", name="Save to the server").tap()
    error = page.locator("#backup-error", has_text="Type the passphrase again")
    await error.wait_for()
    assert "too short" not in await error.inner_text()
    before = await page.locator("#accounts li").evaluate_all("els => els.map(e => e.dataset.cid)")
    await phone.restore(path, TEST_PASSPHRASE)
    await page.locator("#restore-error", has_text="Restore works in an app without accounts").wait_for()
    after = await page.locator("#accounts li").evaluate_all("els => els.map(e => e.dataset.cid)")
    assert after == before


# -- the two readers agree on what a backup may hold ----------------------------------------


def _mutations() -> list[tuple[str, Any]]:
    """The vectors' document with one thing wrong (or odd but valid) at a time: each field
    dropped, null, of another type; indexes out of range; names twice; bad secrets."""
    out: list[tuple[str, Any]] = [("as it is", DOCUMENT)]
    others: list[Any] = [None, True, -1, 1.5, "x", "", [], {}]

    def walk(path: tuple[Any, ...], value: Any) -> None:
        if isinstance(value, dict):
            for key in value:
                walk((*path, key), value[key])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk((*path, i), item)
        for other in others:
            if type(other) is not type(value) or other != value:
                out.append((f"{'.'.join(map(str, path))} = {other!r}", replaced(path, other)))
        if path and isinstance(path[-1], str):
            out.append((f"{'.'.join(map(str, path))} dropped", replaced(path, DROP)))

    walk((), DOCUMENT)
    layout = ("settings", "layout")
    out += [
        ("an index past the end", replaced((*layout, 0, "otp"), 3)),
        ("two lines with one name", replaced((*layout, 1, "name"), "alice@contoso.example")),
        ("a line with neither part", replaced((*layout, 1, "otp"), None)),
        ("a secret in lower case", replaced(("accounts", 0, "secret"), "jbswy3dpehpk3pxp")),
        ("a secret with spaces and padding", replaced(("accounts", 0, "secret"), "JBSW Y3DP EHPK 3PXP====")),
        ("a secret of a length no bytes have", replaced(("accounts", 0, "secret"), "JBSWY3D")),
        ("a secret that is not base32", replaced(("accounts", 0, "secret"), "JBSWY3DP1")),
        (
            "a recovery key of 31 bytes",
            replaced(("push_accounts", 0, "recovery_seed"), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg"),
        ),
        (
            "a recovery key that is not base64url",
            replaced(("push_accounts", 0, "recovery_seed"), "not base64!"),
        ),
        ("7 digits", replaced(("accounts", 0, "digits"), 7)),
        ("a period of an hour and a second", replaced(("accounts", 0, "period"), 3601)),
        ("an extra field in a push account (ignored)", replaced(("push_accounts", 0, "seed"), None)),
    ]
    return out


DROP = object()


def replaced(path: tuple[Any, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(DOCUMENT))
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def agent_takes(doc: Any) -> bool:
    """Whether the agent restores this document: its reader's checks and its restore's."""
    from device_agent.backup_actions import _layout, _push_record
    from device_agent.errors import UsageError
    from device_agent.vault import SealedFileError

    try:
        data = backup_vectors._sealed(backup_vectors._payload(doc))
        backup = load_backup(data, backup_vectors.PASSPHRASE)
        layout = _layout(backup)
        for line in layout:
            if line.get("push") is not None:
                _push_record(line["name"], backup.push_accounts[line["push"]], None)
        if len({line["name"] for line in layout}) != len(layout):
            raise UsageError("two accounts with one name")
    except (SealedFileError, UsageError):
        return False
    return True


APP_TAKES = """async (docs) => {
  const backup = await import(new URL('js/backup.js', document.baseURI).href);
  const sf = await import(new URL('js/sealedfile.js', document.baseURI).href);
  return docs.map((doc) => {
    try { backup.linesOf(doc); return true; }
    catch (exc) { return exc instanceof sf.SealedFileError ? false : `${exc.name}: ${exc.message}`; }
  });
}"""


async def test_the_app_and_the_agent_take_and_refuse_the_same_backups(phone: Phone) -> None:
    cases = _mutations()
    app = await phone.page.evaluate(APP_TAKES, [doc for _, doc in cases])
    differ = [
        (name, verdict)
        for (name, doc), verdict in zip(cases, app, strict=True)
        if verdict != agent_takes(doc)
    ]
    assert differ == []
    assert app[0] is True and app.count(False) > 50  # the document as it is, and many refusals
