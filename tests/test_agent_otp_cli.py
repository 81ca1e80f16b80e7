"""Verification codes from the CLI: `code`, `add`, `rename`, `move`, `import`, `export`.

pushauth-agent runs as a real subprocess; codes are checked against oathtool (an
independent implementation) at the time the agent printed them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from e2e_helpers import AGENT_ENV, add_push_account, agent_env, on_a_terminal  # noqa: F401  (autouse)
from support import AGENT, assert_cli_error, run_cli

from device_agent import otp_actions, totp
from device_agent.accounts_model import OtpAccount
from device_agent.importers.otpauth import parse_uri
from device_agent.passphrase import IMPORT_PASSWORD_ENV
from device_agent.store import AccountStore
from protocol.uri import TotpParams

DATA = Path(__file__).parent / "data"
SHA256_URI = (
    "otpauth://totp/ACME%20Co:alice@acme.example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA"
    "&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60"
)
HOTP_URI = "otpauth://hotp/Bank:bob?secret=JBSWY3DPEHPK3PXP&issuer=Bank&counter=5"


def agent(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli([AGENT, "--home", home, *args], env={**AGENT_ENV, **env})


def ok(home: Path, *args: str, **env: str) -> str:
    result = agent(home, *args, **env)
    assert result.returncode == 0, f"{args}: {result.stderr}{result.stdout}"
    return result.stdout


def oathtool(uri: str, at: float, counter: int | None = None) -> str:
    acc = parse_uri(uri)
    secret = acc.secret.hex()
    if acc.kind == "hotp":
        args = ["oathtool", "--hotp", "-c", str(counter if counter is not None else acc.counter)]
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        args = ["oathtool", f"--totp={acc.algorithm.lower()}", "-s", f"{acc.period}s", "--now", when]
    return run_cli([*args, "-d", str(acc.digits), secret]).stdout.strip()


def vault_bytes(home: Path) -> bytes:
    return (home / "vault.pav").read_bytes()


def test_add_then_code_matches_oathtool_with_seconds_left(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert 'Added "ACME Co: alice@acme.example"' in ok(home, "add", SHA256_URI)
    for _ in range(3):  # a step boundary between our two clocks is possible, not thrice
        before = time.time()
        (line,) = json.loads(ok(home, "code", "--json"))
        after = time.time()
        if totp.time_step(before, 60) == totp.time_step(after, 60):
            break
    assert line["name"] == "ACME Co: alice@acme.example"
    assert line["code"] == oathtool(SHA256_URI, before) and len(line["code"]) == 8
    assert 0 < line["seconds_left"] <= 60
    text = ok(home, "code", "ACME Co: alice@acme.example")
    assert re.fullmatch(r"ACME Co: alice@acme\.example: \d{8}  \(\d+ s left\)\n", text)


def test_hotp_codes_are_shown_and_used_up_only_when_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    listing = ok(home, "code")
    assert "Bank: bob: (HOTP" in listing and not re.search(r"\d{6}", listing)
    first = ok(home, "code", "Bank: bob").split(": ")[-1].strip()
    second = ok(home, "code", "Bank: bob").split(": ")[-1].strip()
    assert (first, second) == (oathtool(HOTP_URI, 0, 5), oathtool(HOTP_URI, 0, 6))


def test_push_accounts_with_totp_from_enrollment_show_codes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    totp = TotpParams("JBSWY3DPEHPK3PXPJBSWY3DP", "SHA512", 8, 30)
    add_push_account(home, "alice@example.com", "ws://127.0.0.1:1/v1/device", totp=totp)
    ok(home, "add", HOTP_URI)
    before = time.time()
    lines = json.loads(ok(home, "code", "--json"))
    after = time.time()  # the CLI took its time somewhere in between (seconds on a loaded machine)
    assert [c["name"] for c in lines] == ["alice@example.com", "Bank: bob"]
    uri = "otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DP&algorithm=SHA512&digits=8"
    assert lines[0]["code"] in {oathtool(uri, before), oathtool(uri, after)}


@pytest.mark.parametrize(
    ("uri", "contains"),
    [
        ("otpauth://totp/x?secret=!!!", "base32"),
        ("otpauth://totp/x", "no secret"),
        ("otpauth://steam/x?secret=JBSWY3DP", "token type"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=9", "digits"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&algorithm=MD5", "algorithm"),
        ("https://example.com", "otpauth"),
        # Escapes that are not UTF-8 text became "A: \ufffd\ufffd" without a word.
        (
            "otpauth://totp/A:%FF%FE?secret=JBSWY3DPEHPK3PXP",
            "the label 'A:%FF%FE' has %-escapes that are not UTF-8",
        ),
        ("otpauth://totp/bob?secret=JBSWY3DPEHPK3PXP&issuer=%C3%28", "the issuer '%C3%28' has %-escapes"),
    ],
)
def test_a_malformed_uri_is_one_line_and_changes_nothing(tmp_path: Path, uri: str, contains: str) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    before = vault_bytes(home)
    assert_cli_error(agent(home, "add", uri), contains=contains)
    assert vault_bytes(home) == before


ENROLL_LINK = "pushauth://enroll?v=2&broker=wss%3A%2F%2Fbroker.example%2Fv1%2Fdevice&token=t"


@pytest.mark.parametrize(
    ("command", "link", "right"),
    [
        ("add", ENROLL_LINK, "pushauth-agent enroll"),
        ("add", " PushAuth://enroll?v=2", "pushauth-agent enroll"),  # the scheme in any case
        ("add", "otpauth-migration://offline?data=CgA", "pushauth-agent import"),
        ("enroll", HOTP_URI, "pushauth-agent add"),
        ("enroll", "otpauth-migration://offline?data=CgA", "pushauth-agent import"),
        ("import", ENROLL_LINK, "pushauth-agent enroll"),
    ],
)
def test_a_link_given_to_the_wrong_command_names_the_right_one(
    tmp_path: Path, command: str, link: str, right: str
) -> None:
    """`add` took a sign-in QR code's link for a bad otpauth:// URI ("not an otpauth://
    URI"), and `enroll` an otpauth:// link for a bad enrollment link."""
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    before = vault_bytes(home)
    assert_cli_error(agent(home, command, link), contains=right)
    assert vault_bytes(home) == before


def test_adding_the_same_secret_twice_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    before = vault_bytes(home)
    result = agent(home, "add", HOTP_URI.replace("Bank:bob", "Other:name"))
    assert_cli_error(result, contains='already here as "Bank: bob"')
    assert vault_bytes(home) == before


def test_rename_and_move_keep_a_unique_ordered_list(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    ok(home, "add", SHA256_URI, "--name", "work")
    ok(home, "add", "otpauth://totp/Third?secret=GEZDGNBVGY3TQOJQ")
    assert ok(home, "move", "Third", "1").splitlines() == ["1. Third", "2. Bank: bob", "3. work"]
    ok(home, "rename", "Bank: bob", "bank")
    names = [e["name"] for e in json.loads(ok(home, "accounts", "--json"))]
    assert names == ["Third", "bank", "work"]
    before = vault_bytes(home)
    assert_cli_error(agent(home, "rename", "bank", "work"), contains="already an account named")
    assert_cli_error(agent(home, "rename", "nobody", "x"), contains='no account named "nobody"')
    assert_cli_error(agent(home, "rename", "bank", "bad\tname"), contains="printable")
    assert_cli_error(agent(home, "move", "bank", "4"), contains="1..3")
    assert_cli_error(agent(home, "move", "bank", "x"), contains="invalid int")
    assert vault_bytes(home) == before


def test_import_google_authenticator_export_reports_by_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = ok(home, "import", str(DATA / "scito_example_export.txt")).splitlines()
    assert out[-1] == "2 added, 4 duplicate, 0 refused"
    assert "added: raspberrypi: pi@raspberrypi" in out
    assert any(line.startswith("skipped, duplicate: ") for line in out)
    again = ok(home, "import", str(DATA / "scito_example_export.txt")).splitlines()
    assert again[-1] == "0 added, 6 duplicate, 0 refused"


def test_import_encrypted_aegis_with_the_password_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    before = vault_bytes(home)
    wrong = agent(home, "import", str(DATA / "aegis_encrypted.json"), **{IMPORT_PASSWORD_ENV: "nope"})
    assert_cli_error(wrong, contains="wrong password")
    assert vault_bytes(home) == before
    out = ok(home, "import", str(DATA / "aegis_encrypted.json"), **{IMPORT_PASSWORD_ENV: "test"})
    assert out.splitlines()[-1] == "6 added, 0 duplicate, 1 refused"
    assert "refused: " in out and "steam" in out.lower()
    plain = ok(home, "import", str(DATA / "aegis_plain.json"))
    assert plain.splitlines()[-1] == "0 added, 6 duplicate, 1 refused"


def test_import_of_unreadable_sources_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", HOTP_URI)
    before = vault_bytes(home)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert_cli_error(agent(home, "import", str(junk)), contains="no otpauth")
    assert_cli_error(agent(home, "import", str(tmp_path / "missing")), contains="cannot read")
    single = agent(home, "import", "otpauth://totp/x?secret=!!")
    assert single.returncode == 1 and "refused: line 1 (x): the secret is not base32" in single.stdout
    # A migration URI whose payload is damaged (a sample from extract_otp_secrets).
    wrong = agent(home, "import", str(DATA / "scito_export_wrong_data.txt"))
    assert wrong.returncode == 1
    assert wrong.stdout.splitlines()[-1] == "0 added, 0 duplicate, 1 refused"
    assert "refused: line 1 (Google Authenticator export): " in wrong.stdout
    # JSON nested past the parser's recursion limit: a RecursionError traceback before.
    for name, text in (
        ("deep.json", "[" * 5000 + "]" * 5000),
        ("deep-aegis.json", '{"a":' * 3000 + "1" + "}" * 3000),
    ):
        (tmp_path / name).write_text(text)
        assert_cli_error(agent(home, "import", str(tmp_path / name)), contains="not JSON")
    broken = "otpauth-migration://offline?data=" + base64.b64encode(b"\x0a\x05junk").decode()
    result = agent(home, "import", broken)
    assert result.returncode == 1 and "refused: line 1" in result.stdout
    assert vault_bytes(home) == before


def test_import_reports_a_label_that_is_not_utf8_by_name_and_adds_the_others(tmp_path: Path) -> None:
    home, uris = tmp_path / "home", tmp_path / "uris.txt"
    uris.write_text(
        "otpauth://totp/A:%FF%FE?secret=JBSWY3DPEHPK3PXP\n"
        "otpauth://totp/B:carol?secret=GEZDGNBVGY3TQOJQ\n"
        "otpauth://totp/dan?secret=GEZDGNBVGY3TQOJQGEZA&issuer=%C3%28\n"
    )
    result = agent(home, "import", str(uris))
    out = result.stdout.splitlines()
    assert (
        "refused: line 1 (A: \ufffd\ufffd): the label 'A:%FF%FE' has %-escapes that are not UTF-8 text" in out
    )
    assert "refused: line 3 (\ufffd(: dan): the issuer '%C3%28' has %-escapes that are not UTF-8 text" in out
    assert "added: B: carol" in out and out[-1] == "1 added, 0 duplicate, 2 refused"
    assert [e.name for e in AccountStore(home).entries()] == ["B: carol"]


def test_a_secret_under_80_bits_is_refused_by_name_and_the_others_are_imported(tmp_path: Path) -> None:
    # 1 to 9 bytes were taken: RFC 4226 asks for 128 bits; 80 (16 base32 characters) is
    # what many services hand out, and the least the enrollment link's secret may have.
    home, uris = tmp_path / "home", tmp_path / "uris.txt"
    uris.write_text(
        "otpauth://totp/S:one?secret=ME&issuer=S\n"  # 1 byte
        "otpauth://totp/S:eighty?secret=JBSWY3DPEHPK3PXP&issuer=S\n"  # 10 bytes
        "otpauth://hotp/S:nine?secret=JBSWY3DPEHPK3PX&issuer=S&counter=1\n"  # 9 bytes
    )
    result = agent(home, "import", str(uris))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "added: S: eighty",
        "refused: S: one: secret is 8 bits; at least 80 are needed",
        "refused: S: nine: secret is 72 bits; at least 80 are needed",
        "1 added, 0 duplicate, 2 refused",
    ]
    assert [e.name for e in AccountStore(home).entries()] == ["S: eighty"]
    before = vault_bytes(home)
    refused = agent(home, "add", "otpauth://totp/Ex:short?secret=MFRGGZA&issuer=Ex")  # 4 bytes
    assert_cli_error(refused, contains="Ex: short: secret is 32 bits; at least 80 are needed")
    assert refused.returncode == 2 and vault_bytes(home) == before


def test_a_label_the_list_cannot_show_is_refused_by_name_and_the_others_are_imported(tmp_path: Path) -> None:
    # A control character (an ANSI sequence in a label) or a 302-character label: the
    # list refuses it as a name; the import used to fail whole on it ("an account name
    # must be ..."), naming no account, and add said no more. Now that one is refused by
    # name, escaped, as the web app refuses it, and add says --name gives it one.
    home, uris = tmp_path / "home", tmp_path / "uris.txt"
    issuer, name = "L" * 200, "x" * 100  # each within the model's 256, "Issuer: name" not
    uris.write_text(
        "otpauth://totp/Good:zoe?secret=JBSWY3DPEHPK3PXQ\n"
        "otpauth://totp/%1B%5B31mEvil:x?secret=JBSWY3DPEHPK3PXP\n"
        f"otpauth://totp/{issuer}:{name}?secret=GEZDGNBVGY3TQOJQ\n"
    )
    result = agent(home, "import", str(uris))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "added: Good: zoe"
    assert out[1] == "refused: \\x1b[31mEvil: x: an account name must be 1 to 256 printable characters"
    too_long = "an account name must be 1 to 256 printable characters"
    assert out[2] == f"refused: {'L' * 40}... (302 characters): {too_long}"
    assert out[-1] == "1 added, 0 duplicate, 2 refused" and "\x1b" not in result.stdout
    assert [e.name for e in AccountStore(home).entries()] == ["Good: zoe"]
    evil = "otpauth://totp/%1B%5B31mEvil:x?secret=JBSWY3DPEHPK3PXP"
    refused = agent(home, "add", evil)
    assert_cli_error(refused, contains="its label \\x1b[31mEvil: x cannot name it (an account name must be")
    assert "give --name NAME" in refused.stderr and refused.returncode == 2
    assert ok(home, "add", evil, "--name", "Evil") == 'Added "Evil" (verification codes).\n'


def _otps(home: Path) -> dict[str, OtpAccount]:
    return {e.name: e.otp for e in AccountStore(home).entries() if e.otp is not None}


@pytest.mark.parametrize("fmt", ["otpauth", "migration"])
def test_export_then_import_elsewhere_gives_the_same_codes(tmp_path: Path, fmt: str) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    uris = [f"otpauth://totp/Svc{i}:user{i}?secret={base64_secret(i)}&issuer=Svc{i}" for i in range(12)]
    # Twelve: two migration QR codes, at most 10 accounts each. The first made by `add`
    # itself (it makes the home), the others by what `add` runs (otp_actions.add_uri), in
    # this process: a subprocess each cost 0.3 s of CPU and proved nothing more here.
    ok(home, "add", uris[0])
    store = AccountStore(home)
    for uri in uris[1:]:
        otp_actions.add_uri(store, uri)
    ok(home, "add", SHA256_URI)  # 60 s period: Google Authenticator cannot hold it
    result = agent(home, "export", "--format", fmt)
    assert result.returncode == 0, result.stderr
    uris = [line for line in result.stdout.splitlines() if line.startswith("otpauth")]
    if fmt == "migration":
        assert len(uris) == 2
        assert result.stdout.count("QR code ") == 2 and "█" in result.stdout
        assert "not exported: ACME Co: alice@acme.example: Google Authenticator only has 30 s codes" in (
            result.stderr
        )
    else:
        assert len(uris) == 13 and result.stderr == ""
    source = tmp_path / "export.txt"
    source.write_text("\n".join(uris) + "\n")
    report = ok(other, "import", str(source)).splitlines()
    expected = 12 if fmt == "migration" else 13
    assert report[-1] == f"{expected} added, 0 duplicate, 0 refused"
    mine, theirs = _otps(home), _otps(other)
    assert list(theirs) == list(mine)[:expected]  # names and order kept
    for name, otp in theirs.items():
        assert totp.code(otp, at=1_700_000_000) == totp.code(mine[name], at=1_700_000_000)


def test_export_refuses_no_qr_without_the_migration_format(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", "otpauth://totp/GitHub:carol?secret=JBSWY3DPEHPK3PXP&issuer=GitHub")
    for args in (["--no-qr"], ["--no-qr", "--format", "otpauth"]):
        result = agent(home, "export", *args)
        assert_cli_error(result, contains="--no-qr goes with --format migration")
        assert result.returncode == 2 and result.stdout == ""
    out = ok(home, "export", "--format", "migration", "--no-qr")
    assert out.startswith("otpauth-migration://") and "QR code" not in out


def test_export_names_a_push_account_without_codes(tmp_path: Path) -> None:
    """A push-only account cannot move to another app: named with the reason, not left
    out in silence; the accounts with codes are exported."""
    home = tmp_path / "home"
    ok(home, "add", SHA256_URI)
    add_push_account(home, "alice", "wss://push.example.com/v1/device")
    result = agent(home, "export")
    assert result.returncode == 0, result.stderr
    (uri,) = result.stdout.splitlines()
    assert parse_uri(uri).same_codes_as(parse_uri(SHA256_URI))
    assert result.stderr == (
        "not exported: alice: it has no verification codes (sign-in requests stay with this "
        "device: on a new device, restore a backup or add the account again at the service)\n"
    )


def base64_secret(i: int) -> str:
    return base64.b32encode(bytes([i + 1]) * 10).decode().rstrip("=")


def test_export_with_nothing_to_export(tmp_path: Path) -> None:
    assert_cli_error(agent(tmp_path / "home", "export"), contains="no verification-code accounts")


def test_remove_asks_on_a_terminal_and_needs_yes_elsewhere(tmp_path: Path) -> None:
    home, auto = tmp_path / "home", tmp_path / "auto.backup"
    ok(home, "add", "otpauth://totp/GitHub:carol?secret=JBSWY3DPEHPK3PXP&issuer=GitHub")
    ok(home, "backup", "auto", "on", "--to", str(auto))
    written = auto.read_bytes()

    # A script: refused, nothing removed, the automatic backup untouched.
    refused = agent(home, "remove", "GitHub: carol")
    line = assert_cli_error(refused, contains='removing "GitHub: carol" cannot be undone')
    assert "verification-code secret" in line and "--yes" in line
    assert refused.returncode == 2
    assert [e.name for e in AccountStore(home).entries()] == ["GitHub: carol"]
    assert auto.read_bytes() == written

    # A terminal: asked, naming what is lost; anything but y keeps it.
    code, said = on_a_terminal(home, ["remove", "GitHub: carol"], [("[y/N]", "n")])
    assert code == 0, said
    assert 'Remove "GitHub: carol"? Its verification-code secret is deleted here' in said
    assert "Nothing was removed." in said
    assert [e.name for e in AccountStore(home).entries()] == ["GitHub: carol"]
    code, said = on_a_terminal(home, ["remove", "GitHub: carol"], [("[y/N]", "y")])
    assert code == 0 and 'Removed "GitHub: carol"' in said, said
    assert AccountStore(home).entries() == []

    # --yes: no question (a push account too: see the remove tests of test_agent_cli).
    ok(home, "add", "otpauth://totp/GitHub:carol?secret=JBSWY3DPEHPK3PXP&issuer=GitHub")
    assert 'Removed "GitHub: carol"' in ok(home, "remove", "GitHub: carol", "--yes")
    assert "--yes" in ok(home, "remove", "--help")


@pytest.mark.parametrize("args", [["export", "--format", "migration"], ["export"], ["accounts"]])
def test_a_reader_that_goes_away_ends_it_quietly(tmp_path: Path, args: list[str]) -> None:
    # `pushauth-agent export --format migration | head -5`, with head gone before the
    # first line is written (so that the write fails whatever the pipe's buffer holds).
    home = tmp_path / "home"
    ok(home, "add", "otpauth://totp/GitHub:carol?secret=JBSWY3DPEHPK3PXP&issuer=GitHub")
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [AGENT, "--home", str(home), *args], stdout=writer, stderr=subprocess.PIPE,
            env={**os.environ, **AGENT_ENV}, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert result.stderr == b""
    assert result.returncode == 141  # as a program that SIGPIPE ended
