"""Verification-code accounts in the web authenticator from any service's QR code.

- The app's readers (js/otp.js, js/migration.js) against the agent's
  (device_agent/importers/otpauth.py, migration.py) in Chromium: a corpus of otpauth://
  URIs and Google Authenticator exports (real samples, the deviations real apps write,
  and each part of them altered: dropped, doubled, emptied, odd values, bad escapes,
  odd white space) gets the same verdict, the same account field by field, and the same
  reason for a refusal from both.
- Pasting an otpauth:// URI on the Add account screen adds a codes-only account whose
  codes are the service's (pyotp), counter-based (HOTP) ones too, each code once; a
  duplicate, a label the agent would refuse and a bad URI add nothing and say why; a
  Google Authenticator
  export made by `pushauth-agent export --format migration` adds its accounts, reports
  the others by name, and says which QR codes of a batch are still to scan.
- What is added backs up and restores with the agent.

Real broker (serving the app), Chromium (phone profile) and agent process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from e2e_helpers import TEST_PASSPHRASE, agent_env  # noqa: F401  (agent_env: autouse)
from e2e_helpers import agent_ok as ok
from webapp_world import Phone, enrolled

from device_agent.accounts_model import OtpAccount
from device_agent.importers import migration, otpauth
from device_agent.importers.report import ImportSourceError
from device_agent.store import AccountStore
from relying_party.sdk import PushAuthClient

pytestmark = pytest.mark.asyncio(loop_scope="module")
DATA = Path(__file__).parents[1] / "data"
SECRET = "4SJHB4GSD43FZBAI7C2HLRJGPQ"

# -- the corpus ---------------------------------------------------------------------------

BASES = [
    f"otpauth://totp/Deno:Mason?secret={SECRET}&issuer=Deno",
    f"otpauth://totp/Deno:Mason?secret={SECRET.lower()}&issuer=Deno",
    f"otpauth://totp/Deno:Mason?secret={SECRET}%3D%3D%3D%3D%3D%3D",
    "otpauth://totp/Mason?secret=4SJH%20B4GS%20D43F%20ZBAI%207C2H%20LRJG%20PQ",
    "otpauth://totp/Mason?secret=4sjh+b4gs+d43f+zbai+7c2h+lrjg+pq&issuer=Deno",
    "otpauth://totp/Mason?secret=4SJH-B4GS-D43F-ZBAI-7C2H-LRJG-PQ&issuer=Deno",
    f"otpauth://totp/Old%20Name:Mason?secret={SECRET}&issuer=Deno",
    f"otpauth://totp/Deno%3AMason?secret={SECRET}",
    f"otpauth://totp/Deno:%20%20Mason?secret={SECRET}",
    f"otpauth://totp/Caf%C3%A9%20%C3%9Cber:j%C3%B6rg?secret={SECRET}",
    f"otpauth://totp/Deno:a+b@x.org?secret={SECRET}",
    f"otpauth://totp/?secret={SECRET}&issuer=Air+Canada",
    f"otpauth://totp/Deno:Mason?secret={SECRET}&image=https%3A%2F%2Fx.org%2Fi.png&color=red",
    f"otpauth://totp/ACME%20Co:john@x.org?secret={SECRET}&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60",
    f"otpauth://totp/A:B:C?secret={SECRET}&issuer=A:B",
    "otpauth://hotp/Issuu:James?secret=YOOMIXWS5GN6RTBPUFFWKTW5M4&counter=42",
    "otpauth://hotp/James?secret=YOOMIXWS5GN6RTBPUFFWKTW5M4",
    f"OTPAUTH://TOTP/Deno:Mason?SECRET={SECRET}&Issuer=Deno",
    f"otpauth://steam/Boeing:Sophia?secret={SECRET}",
    "https://example.com/?secret=JRZCL47CMXVOQMNPZR2F7J4RGI",
]

ODD_VALUES = [
    "", " ", "0", "-1", "1.5", "007", "6 ", "\u0666", "99999999999999999999", "sha-256",
    "HmacSHA512", "md5", "%", "%zz", "%C3%28", "%ED%A0%80", "%F0%9F%98", "+", "a%20b",
    "\u00a0x\u00a0", "\ufeffx", "\x1cx", "x\x85", "%00", "'q\"", "\u202eevil", "%E2%80%AE",
    "=", "==", "A", "AB", "ABC", "ABCD====", "jbsw y3dp-ehpk", "\u017f", "7", "3600", "3601",
    str(2**63), str(2**63 - 1),
]  # fmt: skip


def _query_parts(uri: str) -> tuple[str, list[str]]:
    head, _, query = uri.partition("?")
    return head, query.split("&") if query else []


def otpauth_corpus() -> list[str]:
    out = list(BASES)
    base = BASES[13]
    head, parts = _query_parts(base)
    for i, part in enumerate(parts):
        key = part.partition("=")[0]
        others = parts[:i] + parts[i + 1 :]
        out.append(f"{head}?{'&'.join(others)}")  # dropped
        out.append(f"{head}?{'&'.join([*parts, part])}")  # doubled
        out.append(f"{head}?{'&'.join([*others, key])}")  # no "="
        for value in ODD_VALUES:
            out.append(f"{head}?{'&'.join([*others, f'{key}={value}'])}")
    for label in [*ODD_VALUES, ":", "a:", ":b", "%3A", "x" * 257, "i" * 256 + ":n", "/a/b", "a%2Fb"]:
        out.append(f"otpauth://totp/{label}?secret={SECRET}")
        out.append(f"otpauth://totp/{label}?secret={SECRET}&issuer={label}")
    for netloc in [
        "",
        "TOTP",
        "tOtP",
        "totp:80",
        "[::1]",
        "[v1.x]",
        "[1.2.3.4]",
        "[x]",
        "to[tp",
        "totp\u2100",
    ]:
        out.append(f"otpauth://{netloc}/x?secret={SECRET}")
    for prefix in ["\x00", " \x01", "\t", "\ufeff", "\u00a0", "x"]:
        out.append(f"{prefix}otpauth://totp/x?secret={SECRET}")
    out += [
        f"otpauth://totp/x?secret={SECRET}#frag&digits=8",
        f"otpauth://to\ttp/x?sec\nret={SECRET}",
        f"otpauth:totp/x?secret={SECRET}",
        f"otpauth:/totp/x?secret={SECRET}",
        f"otpauth://totp/x?&&secret={SECRET}&&",
        f"otpauth://totp/x?=1&secret={SECRET}",
        f"otpauth://totp/x?%20Secret%20={SECRET}",
        f"otpauth://totp/x?secret={SECRET}&%73ecret={SECRET}",
        "otpauth://totp/x?secret=" + "A" * 1638,  # 1023.75 bytes: 1023
        "otpauth://totp/x?secret=" + "A" * 1640,  # 1025 bytes
        "otpauth://totp/x?secret=" + "A" * 5000,
        "otpauth://totp/" + "é" * 4070 + "?secret=AA",  # 4096 code points, more UTF-16 units
    ]
    # Wrapped across lines (docs/protocol.md 11.1): breaks with the white space beside them.
    for wrap in ("\n", "\r\n", " \r\n ", "\n\t", " \n \n ", "\t", "\u00a0\n", "\r \r"):
        for cut in (5, 17, 24, 40, 60, len(BASES[13]) - 3):
            out.append(BASES[13][:cut] + wrap + BASES[13][cut:])
    return out


def _entry(**fields: int | bytes) -> bytes:
    numbers = {"secret": 1, "name": 2, "issuer": 3, "algorithm": 4, "digits": 5, "type": 6, "counter": 7}
    return b"".join(migration._field(numbers[k], v) for k, v in fields.items())


def _uri(payload: bytes, encode: bool = True) -> str:
    data = base64.b64encode(payload).decode()
    return f"{migration.PREFIX}data={data.replace('+', '%2B').replace('/', '%2F') if encode else data}"


def migration_corpus() -> list[str]:
    samples = [
        line
        for name in ("scito_example_export.txt", "scito_plus_problem_export.txt")
        for line in (DATA / name).read_text(encoding="utf-8").splitlines()
        if line.startswith("otpauth-migration://")
    ]
    good = _entry(secret=b"k" * 20, name=b"n", issuer=b"I", type=2)
    entries = [
        good,
        _entry(secret=b"k" * 20, name=b"I:n", issuer=b"I", type=2),
        _entry(secret=b"k" * 20, name=b" I : n ", issuer=b"I", type=2),
        _entry(secret=b"k" * 20, name=b"\xef\xbb\xbfn", type=2),
        _entry(secret=b"k" * 20, name=b"n", issuer=b"I", algorithm=3, digits=2, type=1, counter=7),
        _entry(secret=b"k" * 20, name=b"n", type=1, counter=-1),
        _entry(secret=b"k" * 20, name=b"n", type=0),
        _entry(secret=b"k" * 20, name=b"n", type=3),
        _entry(secret=b"k" * 20, name=b"n", type=2, algorithm=4),
        _entry(secret=b"k" * 20, name=b"n", type=2, digits=3),
        _entry(name=b"n", type=2),
        _entry(secret=b"k" * 1025, name=b"n", type=2),
        _entry(secret=b"k" * 20, type=2),
        _entry(secret=b"k" * 20, name=b"\xff", type=2),
        _entry(secret=b"k" * 20, name=b"\xed\xa0\x80", type=2),
        _entry(secret=b"k" * 20, name=b"x" * 257, type=2),
        _entry(secret=b"k" * 20, name=b"n", type=2) + migration._field(9, b"extra") + migration._field(10, 5),
        _entry(secret=b"k" * 20, name=b"n", type=2) + migration._field(2, b"last wins"),
    ]
    out = samples + [_uri(migration._field(1, e) + migration._field(2, 1)) for e in entries]
    out.append(_uri(b"".join(migration._field(1, e) for e in entries) + migration._field(2, 1)))
    header = migration._field(1, good)
    for fields in (
        {2: 2},
        {2: -1},
        {3: 3, 4: 1, 5: 77},
        {3: 3, 4: 3},
        {3: -1},
        {4: -1},
        {3: 2**31},
        {5: -(2**31)},
        {5: 2**40},
    ):
        out.append(_uri(header + b"".join(migration._field(n, v) for n, v in fields.items())))
    wire = [
        migration._varint(1 << 3 | 0) + migration._varint(5),  # accounts as a varint
        migration._varint(2 << 3 | 2) + migration._varint(1) + b"x",  # version as bytes
        migration._varint(0 << 3 | 0) + migration._varint(1),  # field 0
        migration._varint(9 << 3 | 3),  # group start: unsupported
        migration._varint(9 << 3 | 1) + b"\x01" * 8,  # fixed64, unknown field: skipped
        migration._varint(9 << 3 | 5) + b"\x01" * 3,  # truncated fixed32
        migration._varint(1 << 3 | 2) + migration._varint(50) + b"short",  # truncated bytes
        b"\xff" * 11,  # a varint too long
        b"\x80",  # truncated varint
        migration._field(1, migration._varint(2 << 3 | 2) + b"\x01n"),  # name as bytes: fine
        migration._field(1, migration._varint(4 << 3 | 2) + b"\x00"),  # algorithm as bytes
        migration._field(
            1, migration._varint(8 << 3 | 5) + b"\x00" * 4 + _entry(secret=b"k" * 10, name=b"n", type=2)
        ),
    ]
    out += [_uri(w) for w in wire]
    payload = header + migration._field(2, 1)
    data = base64.b64encode(payload).decode()
    out += [
        _uri(payload, encode=False),
        f"{migration.PREFIX}data={data.replace('+', '-').replace('/', '_').rstrip('=')}",
        f"{migration.PREFIX}data={data[:4]} {data[4:]}",
        f"{migration.PREFIX}data={data}&data={data}",
        f"{migration.PREFIX}data",
        f"{migration.PREFIX}data=",
        f"{migration.PREFIX}x=1",
        f"{migration.PREFIX}data={data}&x=1",
        f"{migration.PREFIX}data={data[:-1]}A",
        f"{migration.PREFIX}data={data}A",
        f"{migration.PREFIX}data=***",
        f"{migration.PREFIX}data=%C3%A9",
        f"{migration.PREFIX}data==",
        f"  {migration.PREFIX}data={data}  ",
        f"OTPAUTH-MIGRATION://offline?data={data}",
        f"otpauth-migration://online?data={data}",
        f"{migration.PREFIX}data=" + "A" * (64 * 1024),
    ]
    exported = migration.export_uris(
        [OtpAccount(bytes([i]) * 20, f"u{i}@x.org", "Ex", "totp", "SHA1") for i in range(23)], batch_id=7
    ).uris
    return out + exported


def agent_reads_otpauth(uri: str) -> Any:
    try:
        return account_json(otpauth.parse_uri(uri))
    except ImportSourceError as exc:
        return {"error": str(exc.code), "reason": exc.message}


def agent_reads_migration(uri: str) -> Any:
    try:
        batch = migration.parse_uri(uri)
    except ImportSourceError as exc:
        return {"error": str(exc.code), "reason": exc.message}
    return {
        "accounts": [account_json(a) for a in batch.parsed.accounts],
        "refused": [{"label": r.label, "reason": r.reason} for r in batch.parsed.refused],
        "batch": [batch.version, batch.batch_size, batch.batch_index, batch.batch_id],
    }


def account_json(a: OtpAccount) -> dict[str, Any]:
    return {
        "secret": a.secret.hex(),
        "name": a.name,
        "issuer": a.issuer,
        "kind": a.kind,
        "algorithm": a.algorithm,
        "digits": a.digits,
        "period": a.period,
        "counter": str(a.counter),
    }


APP_READS = """async ({ otpauth, exports }) => {
  const base = document.baseURI;
  const otp = await import(new URL('js/otp.js', base).href);
  const mig = await import(new URL('js/migration.js', base).href);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const json = (a) => ({ secret: hex(a.secret), name: a.name, issuer: a.issuer, kind: a.kind,
    algorithm: a.algorithm, digits: a.digits, period: a.period, counter: String(a.counter) });
  const refusal = (exc) => exc instanceof otp.OtpError
    ? { error: exc.code, reason: exc.message } : { crashed: `${exc.name}: ${exc.message}` };
  const one = (read) => { try { return read(); } catch (exc) { return refusal(exc); } };
  return {
    otpauth: otpauth.map((u) => one(() => json(otp.parseOtpauth(u)))),
    exports: exports.map((u) => one(() => {
      const b = mig.parseMigration(u);
      return { accounts: b.accounts.map(json), refused: b.refused,
               batch: [b.version, b.batchSize, b.batchIndex, b.batchId] };
    })),
  };
}"""


async def test_the_app_reads_every_uri_as_the_agent_does(phone: Phone) -> None:
    uris, exports = otpauth_corpus(), migration_corpus()
    app = await phone.page.evaluate(APP_READS, {"otpauth": uris, "exports": exports})
    differ = [
        (uri, want, got)
        for uri, want, got in [
            *zip(uris, map(agent_reads_otpauth, uris), app["otpauth"], strict=True),
            *zip(exports, map(agent_reads_migration, exports), app["exports"], strict=True),
        ]
        if want != got
    ]
    assert not differ, json.dumps(differ[:5], indent=1, ensure_ascii=False)
    taken = sum("error" not in r for r in app["otpauth"])
    # The corpus reaches both ways: many taken, many refused, with several reasons.
    assert 100 < taken < len(uris) - 100, (taken, len(uris))
    assert len({r["reason"] for r in app["otpauth"] if "error" in r}) > 15
    assert sum("error" in r for r in app["exports"]) > 20
    assert sum(bool(r.get("refused")) for r in app["exports"]) > 10


APP_WRITES = """async ({ accounts, batchId }) => {
  const base = document.baseURI;
  const otp = await import(new URL('js/otp.js', base).href);
  const mig = await import(new URL('js/migration.js', base).href);
  const bytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
  const held = accounts.map((a) =>
    otp.account({ ...a, secret: bytes(a.secret), counter: BigInt(a.counter) }));
  return { otpauth: held.map(otp.toOtpauth), migration: mig.exportMigration(held, batchId) };
}"""


async def test_the_app_writes_an_export_as_the_agent_does(phone: Phone) -> None:
    """Every account the corpus holds, written by both as otpauth:// URIs and as a Google
    Authenticator export: the same bytes, and the same refusals (7 digits, 60 s codes)."""
    accounts = [otpauth.parse_uri(u) for u in otpauth_corpus() if "error" not in agent_reads_otpauth(u)]
    accounts += [a for u in migration_corpus() if "error" not in agent_reads_migration(u)
                 for a in migration.parse_uri(u).parsed.accounts]  # fmt: skip
    assert {a.kind for a in accounts} == {"totp", "hotp"}
    app = await phone.page.evaluate(
        APP_WRITES, {"accounts": [account_json(a) for a in accounts], "batchId": 7}
    )
    want = migration.export_uris(accounts, batch_id=7)
    assert app["otpauth"] == [otpauth.to_uri(a) for a in accounts]
    assert app["migration"]["uris"] == want.uris and len(want.uris) > 10
    assert app["migration"]["refused"] == [{"label": r.label, "reason": r.reason} for r in want.refused]
    reasons = {r.reason for r in want.refused}
    assert {
        "Google Authenticator has no 7-digit codes",
        "Google Authenticator only has 30 s codes, not 60 s",
    } <= reasons


# -- adding them in the app ----------------------------------------------------------------

NAMES = "els => els.map(e => e.textContent)"


async def add_link(phone: Phone, uri: str) -> None:
    page = phone.page
    if await page.locator("#add[hidden]").count():
        await page.get_by_role("button", name="Add account").tap()
    await page.get_by_label("Setup link").fill(uri)
    await page.get_by_role("button", name="Add", exact=True).tap()


async def names(phone: Phone) -> list[str]:
    return await phone.page.locator("#accounts .acct-name").evaluate_all(NAMES)


async def shown_code(phone: Phone, name: str) -> str:
    """The code the app shows for the account named `name` (once it has ticked)."""
    li = phone.page.locator("#accounts li", has=phone.page.locator(".acct-name", has_text=name))
    button = li.locator("[data-role='code'][data-code]")
    await button.wait_for()
    code = await button.get_attribute("data-code")
    assert code
    return code


def service_codes(totp: pyotp.TOTP) -> set[str]:
    """The service's codes of this time step and the one before (the app ticks once a second)."""
    now = time.time()
    return {totp.at(now), totp.at(now - totp.interval)}


async def test_an_otpauth_link_adds_an_account_with_the_services_codes(phone: Phone) -> None:
    secret = pyotp.random_base32()
    uri = f"otpauth://totp/GitHub:mona%40example.com?secret={secret}&issuer=GitHub&algorithm=SHA256&digits=8&period=60"
    await add_link(phone, uri)
    await phone.toast("Added GitHub: mona@example.com")
    assert await names(phone) == ["GitHub: mona@example.com"]
    # Codes need no server: the app does not claim to be connecting.
    await phone.page.locator("#conn", has_text="Codes only").wait_for()
    service = pyotp.TOTP(secret, digits=8, interval=60, digest="sha256")
    assert await shown_code(phone, "GitHub: mona@example.com") in service_codes(service)
    await phone.shot("31-codes-from-an-otpauth-link")
    page = phone.page
    await page.get_by_role("button", name="Manage GitHub: mona@example.com").tap()
    await page.locator("#account:not([hidden]) #account-details dd").first.wait_for()
    details = await page.locator("#account-details").inner_text()
    assert "GitHub" in details and "mona@example.com" in details
    assert "none: verification codes only" in details and "Recovery key" not in details
    await page.get_by_role("button", name="Back", exact=True).tap()

    # The same again (another spelling), damaged ones, a label the agent would not take, a
    # counter past what the app keeps exactly: each is refused with its reason, and
    # nothing is added.
    for refused, words in (
        (
            f"otpauth://totp/Other?secret={secret.lower()}&digits=8&period=60&algorithm=sha-256",
            'already as "GitHub: mona@example.com"',
        ),
        (f"otpauth://hotp/B:m?secret={secret}&counter={2**53 + 1}", "its counter is too large for this app"),
        (f"otpauth://totp/x?secret={secret}&digits=5", "unsupported number of digits 5 (6, 7 or 8)"),
        (f"otpauth://totp/x?secret={secret[:-1]}*", "the secret is not base32"),
        (f"otpauth://totp/A%07B?secret={secret}", "an account name must be 1 to 256 printable characters"),
        ("otpauth://totp/Ex:short?secret=MFRGGZA&issuer=Ex", "Ex: short: not added, secret is 32 bits"),
        (f"otpauth://totp/A:%FF%FE?secret={secret}", "the label 'A:%FF%FE' has %-escapes that are not UTF-8"),
        ("otpauth://steam/x?secret=AAAA", "unsupported token type 'steam'"),
    ):  # fmt: skip
        await add_link(phone, refused)
        await page.locator("#add-error", has_text=words).wait_for()
        await page.locator("#add-error", has_text="Nothing was added").wait_for()
        assert await page.locator("#accounts li").count() == 1
    await phone.axe_clean("the Add account screen with a refusal")


async def test_an_otpauth_link_wrapped_across_lines_adds_the_account_as_named(phone: Phone) -> None:
    """Pasted from an e-mail or a terminal that wrapped it (docs/protocol.md 11.1): the
    line breaks and the spaces beside them are not kept in the names (before: "Exam  ple")."""
    secret = pyotp.random_base32()
    uri = f"otpauth://totp/Example%20Corp:alice.liddell%40example.com?secret={secret}&issuer=Example%20Corp"
    for after, wrap in (("totp/Exam", " \r\n  "), ("alice.lid", "\n\t"), ("issuer=Exam", " \r\n ")):
        at = uri.index(after) + len(after)
        uri = uri[:at] + wrap + uri[at:]
    await add_link(phone, uri)
    await phone.toast("Added Example Corp: alice.liddell@example.com")
    assert await names(phone) == ["Example Corp: alice.liddell@example.com"]
    service = pyotp.TOTP(secret)
    assert await shown_code(phone, "Example Corp: alice.liddell@example.com") in service_codes(service)


async def test_a_google_authenticator_export_adds_what_this_app_can_hold(
    phone: Phone, tmp_path: Path
) -> None:
    """`pushauth-agent export --format migration` writes Google Authenticator's export (two
    QR codes for eleven accounts and a counter-based one): each code adds its accounts
    and says which codes are still to scan; the same code again adds nothing and says
    why; a backup of the result restores with the agent, codes and counter alike."""
    home = tmp_path / "laptop"
    secrets = [pyotp.random_base32() for _ in range(11)]
    links = tmp_path / "links.txt"
    links.write_text(
        "".join(f"otpauth://totp/Ex:u{i}%40x.org?secret={s}&issuer=Ex\n" for i, s in enumerate(secrets))
        + f"otpauth://hotp/Bank:me?secret={secrets[0]}&counter=3\n"
    )
    await asyncio.to_thread(ok, home, "import", str(links))
    out = await asyncio.to_thread(ok, home, "export", "--format", "migration", "--no-qr")
    first, second = [line for line in out.splitlines() if line.startswith("otpauth-migration://")]
    page = phone.page
    status = page.locator("#add-status")

    await add_link(phone, first)
    await status.filter(has_text="10 of 10 accounts added. This was QR code 1 of 2").wait_for()
    await add_link(phone, second)
    await status.filter(has_text="2 of 2 accounts added. This was QR code 2 of 2").wait_for()
    report = await page.locator("#add-report li").all_inner_texts()
    assert report == ["added: Ex: u10@x.org", "added: Bank: me"]
    await phone.shot("32-google-authenticator-export")
    await phone.axe_clean("the Add account screen with an import report")
    await add_link(phone, first)
    await status.filter(has_text="0 of 10 accounts added.").wait_for()
    assert (await page.locator("#add-report li").all_inner_texts())[0] == (
        'Ex: u0@x.org: not added, it is here already as "Ex: u0@x.org"'
    )
    await page.get_by_role("button", name="Cancel").tap()
    wanted = [*(f"Ex: u{i}@x.org" for i in range(11)), "Bank: me"]
    assert await names(phone) == wanted
    assert await shown_code(phone, "Ex: u7@x.org") in service_codes(pyotp.TOTP(secrets[7]))
    await page.get_by_role("button", name="New verification code for Bank: me").tap()
    assert await shown_code(phone, "Bank: me") == pyotp.HOTP(secrets[0]).at(3)

    path = tmp_path / "phone.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    restored = tmp_path / "restored"
    await asyncio.to_thread(ok, restored, "restore", "--from", str(path))
    assert [e.name for e in AccountStore(restored).entries()] == wanted
    (line,) = json.loads(await asyncio.to_thread(ok, restored, "code", "Ex: u7@x.org", "--json"))
    assert line["code"] in service_codes(pyotp.TOTP(secrets[7]))
    (line,) = json.loads(await asyncio.to_thread(ok, restored, "code", "Bank: me", "--json"))
    assert line["code"] == pyotp.HOTP(secrets[0]).at(4)  # the app used 3


async def test_a_counter_based_account_shows_each_code_once(phone: Phone, tmp_path: Path) -> None:
    """A code is made when asked for, with the next counter, which is stored before the
    code is shown: the service's codes in order, across a reload and a restore."""
    secret = pyotp.random_base32()
    service = pyotp.HOTP(secret)
    await add_link(phone, f"otpauth://hotp/Bank:me?secret={secret}&counter=5")
    await phone.toast("Added Bank: me")
    page = phone.page
    await page.locator("#accounts [data-role='code']:disabled", has_text="No code yet").wait_for()
    new = page.get_by_role("button", name="New verification code for Bank: me")
    shown = []
    for _ in range(2):
        before = await page.locator("#accounts [data-role='code']").get_attribute("data-code")
        await new.tap()
        code = page.locator(f"#accounts [data-role='code'][data-code]:not([data-code='{before}'])")
        await code.wait_for()
        shown.append(await code.get_attribute("data-code"))
    assert shown == [service.at(5), service.at(6)]
    await phone.shot("33-a-counter-based-code")
    await phone.axe_clean("a counter-based account with its code")
    await page.reload()
    await page.locator("#accounts [data-role='code']:disabled").wait_for()
    await new.tap()
    assert await shown_code(phone, "Bank: me") == service.at(7)

    path = tmp_path / "phone.backup"
    await phone.save_backup(path, TEST_PASSPHRASE)
    restored = tmp_path / "restored"
    await asyncio.to_thread(ok, restored, "restore", "--from", str(path))
    (line,) = json.loads(await asyncio.to_thread(ok, restored, "code", "Bank: me", "--json"))
    assert line["code"] == service.at(8)


async def test_a_damaged_export_adds_nothing(phone: Phone) -> None:
    good = migration.export_uris([OtpAccount(b"k" * 20, "n", "I")]).uris[0]
    for uri, words in (
        (f"{migration.PREFIX}data=CgUK", "not a valid Google Authenticator export: truncated data"),
        (good.replace("offline", "online"), "expected otpauth-migration://offline?data="),
        (f"{good}&data=AAAA", "data is given twice"),
    ):
        await add_link(phone, uri)
        await phone.page.locator("#add-error", has_text=words).wait_for()
        await phone.page.locator("#add-error", has_text="Nothing was added").wait_for()
    assert await phone.page.locator("#accounts li").count() == 0


# -- moving them to another app --------------------------------------------------------------

READ_QR_CODES = """async () => {
  // The app's own QR reader (vendor/jsQR.js) on each drawn code's pixels.
  return [...document.querySelectorAll('#export-qr canvas')].map((canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    return { text: jsQR(data, canvas.width, canvas.height)?.data ?? null, uri: canvas.dataset.uri };
  });
}"""


async def test_the_codes_move_to_another_app_by_qr_code_or_link(
    phone: Phone, rp: PushAuthClient, tmp_path: Path
) -> None:
    """Move to another app: Google Authenticator QR codes (read back with the app's own
    QR reader) and otpauth:// links, which the agent imports with the same codes, counter
    and all; a push account's codes move too, a push-only account is named with the
    reason, as is a 60 s account that the QR format cannot hold (its link still moves)."""
    secrets = [pyotp.random_base32() for _ in range(12)]
    links = tmp_path / "links.txt"
    links.write_text(
        "".join(f"otpauth://totp/Ex:u{i}%40x.org?secret={s}&issuer=Ex\n" for i, s in enumerate(secrets[:11]))
        + f"otpauth://hotp/Bank:me?secret={secrets[11]}&counter=3\n"
    )
    laptop = tmp_path / "laptop"
    await asyncio.to_thread(ok, laptop, "import", str(links))
    out = await asyncio.to_thread(ok, laptop, "export", "--format", "migration", "--no-qr")
    first, second = [line for line in out.splitlines() if line.startswith("otpauth-migration://")]
    status = phone.page.locator("#add-status")
    await add_link(phone, first)
    await status.filter(has_text="10 of 10 accounts added. This was QR code 1 of 2").wait_for()
    await add_link(phone, second)
    await status.filter(has_text="2 of 2 accounts added. This was QR code 2 of 2").wait_for()
    slow = pyotp.random_base32()
    await add_link(phone, f"otpauth://totp/Slow:s?secret={slow}&issuer=Slow&digits=8&period=60")
    await phone.toast("Added Slow: s")  # one account: back on the list
    pushed = await enrolled(rp, phone, "gwen")  # a push account with its own codes
    only_push = await rp.create_enrollment("hal", "hal@contoso.example")  # and one without
    assert only_push.uri is not None
    await phone.add_account(only_push.uri)
    assert (await rp.wait_enrollment(only_push, timeout=10)).completed

    page = phone.page
    await page.get_by_role("button", name="Back up or restore").tap()
    await page.get_by_role("button", name="Show the codes' secrets").tap()
    await page.locator(
        "#export-status", has_text="14 accounts with verification codes; 2 QR codes for"
    ).wait_for()
    assert await page.locator("#export-report li").all_inner_texts() == [
        "not exported: hal@contoso.example: it has no verification codes (sign-in requests stay with this "
        "phone: on a new phone, restore a backup or add the account again at the service)",
        "not in the QR codes: Slow: s: Google Authenticator only has 30 s codes, not 60 s "
        "(its link is above)",
    ]
    await phone.shot("34-move-to-another-app")
    await phone.axe_clean("the export to another app")

    await page.add_script_tag(url=f"{phone.url}vendor/jsQR.js")
    read = await page.evaluate(READ_QR_CODES)
    assert [r["text"] for r in read] == [r["uri"] for r in read] and len(read) == 2
    scanned = tmp_path / "scanned"
    (tmp_path / "scanned.txt").write_text("".join(f"{r['text']}\n" for r in read))
    await asyncio.to_thread(ok, scanned, "import", str(tmp_path / "scanned.txt"))
    gwen = pushed["totp"]
    want = {
        **{f"Ex: u{i}@x.org": pyotp.TOTP(s) for i, s in enumerate(secrets[:11])},
        "Contoso Portal: gwen@contoso.example": pyotp.TOTP(gwen.secret, digits=gwen.digits),
    }
    for name, service in want.items():
        (line,) = json.loads(await asyncio.to_thread(ok, scanned, "code", name, "--json"))
        assert line["code"] in service_codes(service), name
    (line,) = json.loads(await asyncio.to_thread(ok, scanned, "code", "Bank: me", "--json"))
    assert line["code"] == pyotp.HOTP(secrets[11]).at(3)  # the app had not used a code yet

    typed = (await page.get_by_label("otpauth:// links, one per line").input_value()).splitlines()
    assert len(typed) == 14 and all(link.startswith("otpauth://") for link in typed)
    linked = tmp_path / "linked"
    (tmp_path / "typed.txt").write_text("\n".join(typed))
    await asyncio.to_thread(ok, linked, "import", str(tmp_path / "typed.txt"))
    (line,) = json.loads(await asyncio.to_thread(ok, linked, "code", "Slow: s", "--json"))
    assert line["code"] in service_codes(pyotp.TOTP(slow, digits=8, interval=60))

    await page.get_by_role("button", name="Hide the secrets").tap()
    assert await page.locator("#export-qr canvas").count() == 0
    assert await page.locator("#export-links").input_value() == ""
    await page.get_by_role("button", name="Show the codes' secrets").wait_for()
