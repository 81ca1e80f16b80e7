"""Other authenticator apps' export files imported by the web authenticator.

- The app's readers (js/importers/) against the agent's (device_agent/importers/) in
  Chromium: every sample file of tests/data (made by the apps themselves: Aegis plain and
  encrypted, 2FAS v2-v4 plain and encrypted, andOTP plain and encrypted, Bitwarden JSON
  and CSV, FreeOTP+, Proton Authenticator), without a password, with the right one and a
  wrong one, and files that are damaged or no export at all: the same accounts field by
  field, the same refusals by name and reason, the same whole-file errors.
- The Add account screen's "Import from a file": the accounts added in the file's order
  with the codes the apps make, the Steam entry refused by name, a password asked for an
  encrypted file (a wrong one said as such, nothing added), duplicates reported, a file
  that is no export said so and nothing added; axe on the password question.

Real broker (serving the app) and Chromium (phone profile).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_webapp_codes import account_json, names, shown_code
from webapp_world import Phone

from device_agent import totp
from device_agent.importers.report import ImportSourceError
from device_agent.importers.sources import parse_source

pytestmark = pytest.mark.asyncio(loop_scope="module")
DATA = Path(__file__).parents[1] / "data"
PASSWORD = "test"
PLAIN = [
    "aegis_plain.json",
    "2fas_plain_v2.2fas",
    "2fas_plain_v3.2fas",
    "2fas_plain_v4.2fas",
    "andotp_plain.json",
    "bitwarden.json",
    "bitwarden.csv",
    "freeotp_plus.json",
    "proton_authenticator.json",
    "aegis_otpauth_vectors.txt",
    "scito_example_export.txt",
    "scito_export_wrong_data.txt",
]
ENCRYPTED = [
    "aegis_encrypted.json",
    "2fas_encrypted_v2.2fas",
    "2fas_encrypted_v3.2fas",
    "2fas_encrypted_v4.2fas",
    "andotp_encrypted.bin",
]


def odd_sources() -> list[tuple[str, bytes]]:
    """Files that are damaged, odd or no export, each whole-file error and odd entry."""
    aegis = json.loads((DATA / "aegis_plain.json").read_text())
    entries = aegis["db"]["entries"]
    odd = [
        {**entries[0], "info": {**entries[0]["info"], "digits": "6"}},
        {**entries[0], "info": {**entries[0]["info"], "period": None}},
        {**entries[0], "info": {**entries[0]["info"], "algo": "MD5"}},
        {**entries[0], "info": {**entries[0]["info"], "secret": "not*base32"}},
        {**entries[0], "type": None},
        {**entries[0], "info": {}},
        "an entry",
        {**entries[0], "name": "", "issuer": ""},
    ]
    bitwarden = json.loads((DATA / "bitwarden.json").read_text())
    twofas = json.loads((DATA / "2fas_encrypted_v3.2fas").read_text())
    sealed = twofas["servicesEncrypted"].split(":")
    damaged = ":".join([sealed[0], "%%", sealed[2]])
    bare = [{"name": "Bare", "login": {"totp": "JBSWY3DPEHPK3PXP"}}]
    lines = b"# links\n\nhello\notpauth://totp/A:b?secret=JBSWY3DPEHPK3PXP\notpauth://totp/Bad:x?secret=1\n"
    return [
        ("aegis odd entries", json.dumps({**aegis, "db": {**aegis["db"], "entries": odd}}).encode()),
        ("aegis version 2", json.dumps({**aegis, "version": 2}).encode()),
        ("aegis db version 9", json.dumps({**aegis, "db": {**aegis["db"], "version": 9}}).encode()),
        ("broken json", b'{"version": 1, "header": '),
        ("json of no export", b'{"hello": "world"}'),
        ("a json list", b"[1, 2, 3]"),
        ("bitwarden encrypted", json.dumps({**bitwarden, "encrypted": True}).encode()),
        ("bitwarden bare secret", json.dumps({**bitwarden, "items": bare}).encode()),
        ("2fas damaged", json.dumps({**twofas, "servicesEncrypted": damaged}).encode()),
        ("2fas services no list", b'{"schemaVersion": 4, "services": 5}'),
        ("text of lines", lines),
        ("text of no links", b"hello\nworld\n"),
        ("binary", bytes(range(256)) * 4),
        ("csv quoted", b'folder,name,login_totp\n"a,b","Quoted, name","otpauth://totp/Q:n?secret=JBSWY3DPEHPK3PXP"\n\nx,Bad,"steam://AAAA"\n'),
    ]  # fmt: skip


def agent_reads(data: bytes, password: str | None) -> Any:
    try:
        parsed = parse_source(data, password=password)
    except ImportSourceError as exc:
        return {"error": str(exc.code), "reason": exc.message}
    return {
        "accounts": [account_json(a) for a in parsed.accounts],
        "refused": [{"label": r.label, "reason": r.reason} for r in parsed.refused],
        "notes": parsed.notes,
    }


APP_READS = """async (sources) => {
  const base = document.baseURI;
  const otp = await import(new URL('js/otp.js', base).href);
  const { parseFile } = await import(new URL('js/importers/sources.js', base).href);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const json = (a) => ({ secret: hex(a.secret), name: a.name, issuer: a.issuer, kind: a.kind,
    algorithm: a.algorithm, digits: a.digits, period: a.period, counter: String(a.counter) });
  const out = [];
  for (const [b64, password] of sources) {
    const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    try {
      const p = await parseFile(data, password);
      out.push({ accounts: p.accounts.map(json), refused: p.refused, notes: p.notes });
    } catch (exc) {
      out.push(exc instanceof otp.OtpError ? { error: exc.code, reason: exc.message }
        : { crashed: `${exc.name}: ${exc.message}` });
    }
  }
  return out;
}"""


def same(want: Any, got: Any) -> bool:
    # The list of what is supported differs by design (the agent also reads images).
    if want.get("error") == "unrecognized" and got.get("error") == "unrecognized":
        return bool(want["reason"].partition(" (")[0] == got["reason"].partition(" (")[0])
    return bool(want == got)


async def test_the_app_reads_every_export_file_as_the_agent_does(phone: Phone) -> None:
    cases: list[tuple[str, bytes, str | None]] = [(n, (DATA / n).read_bytes(), None) for n in PLAIN]
    for name in ENCRYPTED:
        data = (DATA / name).read_bytes()
        cases += [(name, data, None), (name, data, PASSWORD), (name, data, "wrong")]
    cases += [(name, data, None) for name, data in odd_sources()]
    app = await phone.page.evaluate(
        APP_READS, [[base64.b64encode(data).decode(), password] for _, data, password in cases]
    )
    differ = [
        (name, password, want, got)
        for (name, data, password), got in zip(cases, app, strict=True)
        if not same(want := agent_reads(data, password), got)
    ]
    assert not differ, json.dumps(differ[:3], indent=1, ensure_ascii=False)
    by_case = {(name, password): got for (name, _, password), got in zip(cases, app, strict=True)}
    # Every encrypted sample opens with its password, says a wrong one, and asks for one.
    for name in ENCRYPTED:
        assert by_case[name, PASSWORD]["accounts"], name
        assert by_case[name, "wrong"]["error"] == "wrong_password", name
        assert by_case[name, None]["error"] == "password_required", name
    refusals = {r["reason"] for got in app for r in got.get("refused", [])}
    assert "unsupported token type 'steam' (only totp and hotp)" in refusals
    assert "unsupported number of digits '6' (6, 7 or 8)" in refusals
    assert {got.get("error") for got in app} >= {"unrecognized", "malformed", "unsupported_version"}


async def choose(phone: Phone, path: Path) -> None:
    page = phone.page
    if await page.locator("#add[hidden]").count():
        await page.get_by_role("button", name="Add account").tap()
    await page.get_by_label("Import from a file").set_input_files(path)


def codes_of(account: Any) -> set[str]:
    """The account's codes of this time step and the one before (the app ticks each second)."""
    now = time.time()
    return {totp.code(account, now), totp.code(account, now - account.period)}


async def test_a_file_from_another_app_adds_its_accounts(phone: Phone, tmp_path: Path) -> None:
    page = phone.page
    status = page.locator("#add-status")
    report = page.locator("#add-report li")
    count = page.locator("#accounts li")

    # A file that is no export: said so, nothing added.
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\nmilk\n")
    await choose(phone, notes)
    await page.locator(
        "#import-error", has_text="Could not import notes.txt: no otpauth:// or otpauth-migration:// URI"
    ).wait_for()
    await page.locator("#import-error", has_text="Nothing was added").wait_for()
    assert await count.count() == 0

    # Aegis: every entry but Steam, in the file's order, with the codes Aegis makes.
    aegis = parse_source((DATA / "aegis_plain.json").read_bytes())
    await choose(phone, DATA / "aegis_plain.json")
    await status.filter(has_text="6 of 7 accounts added from aegis_plain.json.").wait_for()
    lines = await report.all_inner_texts()
    assert lines == [
        *(f"added: {a.label}" for a in aegis.accounts),
        "Boeing: Sophia: not added, unsupported token type 'steam' (only totp and hotp)",
    ]
    await page.get_by_role("button", name="Cancel").tap()
    assert await names(phone) == [a.label for a in aegis.accounts]
    for account in aegis.accounts:
        if account.kind == "totp":
            assert await shown_code(phone, account.label) in codes_of(account), account.label

    # An encrypted 2FAS backup: its password is asked; a wrong one adds nothing.
    await choose(phone, DATA / "2fas_encrypted_v4.2fas")
    await status.filter(has_text="this 2FAS backup is encrypted: give its password").wait_for()
    password = page.get_by_label("Password of the file")
    await password.wait_for()
    assert await page.evaluate("document.activeElement.id") == "import-password"
    await phone.axe_clean("the Add account screen asking for a file's password")
    await password.fill("wrong")
    await page.get_by_role("button", name="Open the file").tap()
    await page.locator(
        "#import-error", has_text="wrong password for this 2FAS backup. Nothing was added."
    ).wait_for()
    assert await count.count() == 6
    await phone.axe_clean("the Add account screen after a wrong password")
    # The right one: its accounts are all here already, and Steam is refused again.
    await password.fill(PASSWORD)
    await page.get_by_role("button", name="Open the file").tap()
    await status.filter(has_text="0 of 5 accounts added from 2fas_encrypted_v4.2fas.").wait_for()
    lines = await report.all_inner_texts()
    assert 'Deno: Mason: not added, it is here already as "Deno: Mason"' in lines
    assert "Boeing: Sophia: not added, unsupported token type 'steam' (only totp and hotp)" in lines
    assert await page.locator("#import-password-form").is_hidden()
    assert await count.count() == 6

    # FreeOTP+ keeps an HOTP token's last used counter: its next code is the one after.
    plus = tmp_path / "freeotp-backup.json"
    doc = json.loads((DATA / "freeotp_plus.json").read_text())
    doc["tokens"] = [
        dict(t, secret=[(b + 1) % 128 for b in t["secret"]]) for t in doc["tokens"] if t["type"] == "HOTP"
    ]
    plus.write_text(json.dumps(doc))
    (first, *_) = parse_source(plus.read_bytes()).accounts
    await choose(phone, plus)
    await status.filter(has_text=f"{len(doc['tokens'])} of {len(doc['tokens'])} accounts added").wait_for()
    await page.get_by_role("button", name="Cancel").tap()
    await page.get_by_role("button", name=f"New verification code for {first.label} (2)").tap()
    want = totp.hotp(first.secret, first.counter, algorithm=first.algorithm, digits=first.digits)
    assert first.counter == doc["tokens"][0]["counter"] + 1
    assert await shown_code(phone, f"{first.label} (2)") == want
