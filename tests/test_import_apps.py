"""Other authenticators' exports: 2FAS, andOTP, Bitwarden, FreeOTP+ and Proton
Authenticator, from the Aegis project's own test resources (tests/data/README.md),
each compared with the entries those files hold (Aegis' test vectors): every account
equal to its vector, the Steam entry refused by name, a wrong password said as such."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import AGENT_ENV
from support import AGENT, assert_cli_error, run_cli
from test_import_otpauth import AEGIS_VECTORS, STEAM_REFUSAL

from device_agent import totp
from device_agent.accounts_model import OtpAccount
from device_agent.importers.report import ImportErrorCode, ImportSourceError
from device_agent.importers.sources import is_password_protected, parse_source
from device_agent.passphrase import IMPORT_PASSWORD_ENV

DATA = Path(__file__).parent / "data"
PASSWORD = "test"  # named in Aegis' DatabaseImporterTest for each encrypted sample
VECTORS = {(a.issuer, a.name): a for a in AEGIS_VECTORS}
DENO, SPDX, AIRBNB, ISSUU, AIR_CANADA, WWE = AEGIS_VECTORS
STEAM = "Boeing: Sophia"


def totp_only(account: OtpAccount) -> OtpAccount:
    """2FAS schema 2 has no token type: every entry is TOTP (30 s where it had none)."""
    period = account.period if account.kind == "totp" else 30
    return OtpAccount(
        account.secret, account.name, account.issuer, "totp", account.algorithm, account.digits, period
    )


@pytest.mark.parametrize(
    ("name", "accounts", "refused"),
    [
        ("2fas_plain_v2.2fas", [totp_only(a) for a in (DENO, AIRBNB, ISSUU, WWE)], []),
        ("2fas_encrypted_v2.2fas", [totp_only(a) for a in (DENO, AIRBNB, ISSUU, WWE)], []),
        ("2fas_plain_v3.2fas", AEGIS_VECTORS, []),
        ("2fas_encrypted_v3.2fas", AEGIS_VECTORS, []),
        ("2fas_plain_v4.2fas", [DENO, ISSUU, AIR_CANADA, WWE], [STEAM]),
        ("2fas_encrypted_v4.2fas", [DENO, ISSUU, AIR_CANADA, WWE], [STEAM]),
        ("andotp_plain.json", AEGIS_VECTORS, [STEAM]),
        ("andotp_encrypted.bin", AEGIS_VECTORS, [STEAM]),
        ("bitwarden.json", [DENO, SPDX, AIRBNB], ["Test Steam"]),
        ("bitwarden.csv", [DENO, SPDX, AIRBNB], ["Test 4"]),
        ("freeotp_plus.json", [WWE, AIR_CANADA, ISSUU, AIRBNB, SPDX, DENO], []),
        ("proton_authenticator.json", [DENO, SPDX, AIRBNB], []),
    ],
)
def test_each_apps_sample_gives_its_entries_in_the_apps_order(
    name: str, accounts: list[OtpAccount], refused: list[str]
) -> None:
    data = (DATA / name).read_bytes()
    encrypted = "encrypted" in name
    assert is_password_protected(data) == encrypted
    parsed = parse_source(data, password=PASSWORD if encrypted else None)
    assert parsed.accounts == accounts
    assert [r.label for r in parsed.refused] == refused
    assert all(STEAM_REFUSAL in r.reason for r in parsed.refused)


@pytest.mark.parametrize("name", ["2fas_encrypted_v4.2fas", "andotp_encrypted.bin"])
def test_an_encrypted_backup_needs_its_password(name: str) -> None:
    data = (DATA / name).read_bytes()
    for password, code in (
        (None, ImportErrorCode.PASSWORD_REQUIRED),
        ("tset", ImportErrorCode.WRONG_PASSWORD),
    ):
        with pytest.raises(ImportSourceError) as info:
            parse_source(data, password=password)
        assert info.value.code == code, info.value.message


def _edited(name: str, edit: Any) -> bytes:
    doc = json.loads((DATA / name).read_bytes())
    edit(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (
            _edited("2fas_encrypted_v4.2fas", lambda d: d.update(servicesEncrypted="not:base64!:x")),
            ImportErrorCode.MALFORMED,
            "servicesEncrypted is not three base64 parts",
        ),
        (
            _edited("bitwarden.json", lambda d: d.update(encrypted=True)),
            ImportErrorCode.MALFORMED,
            "export it from Bitwarden as .json or .csv, unencrypted",
        ),
        (b'{"some": "json"}', ImportErrorCode.UNRECOGNIZED, "a JSON file of no export this reads"),
        (b"[1, 2, 3]", ImportErrorCode.UNRECOGNIZED, "a JSON file of no export this reads"),
        # A tampered encrypted andOTP file fails as a wrong password would: GCM cannot tell.
        (
            (DATA / "andotp_encrypted.bin").read_bytes()[:-1] + b"\x00",
            ImportErrorCode.WRONG_PASSWORD,
            "wrong password for this andOTP backup",
        ),
    ],
)
def test_damaged_or_foreign_files_are_one_clear_error(data: bytes, code: ImportErrorCode, words: str) -> None:
    with pytest.raises(ImportSourceError) as info:
        parse_source(data, password=PASSWORD)
    assert info.value.code == code and words in info.value.message


def test_bad_entries_are_refused_one_by_one() -> None:
    doc = json.loads((DATA / "2fas_plain_v3.2fas").read_bytes())
    doc["services"][1]["secret"] = "not base32!"
    doc["services"][2]["otp"]["digits"] = 9
    doc["services"].append("not an object")
    parsed = parse_source(json.dumps(doc).encode())
    assert [a.label for a in parsed.accounts] == [
        "Deno: Mason",
        "Issuu: James",
        "Air Canada: Benjamin",
        "WWE: Mason",
    ]
    assert [(r.label, r.reason.split(" (")[0]) for r in parsed.refused] == [
        ("SPDX: James", "the secret is not base32"),
        ("Airbnb: Elijah", "unsupported number of digits 9"),
        ("service 7", "not a JSON object"),
    ]


def test_the_cli_imports_an_encrypted_backup_and_several_apps_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"

    def agent(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli([AGENT, "--home", str(home), *args], env={**AGENT_ENV, **env})

    wrong = agent("import", str(DATA / "2fas_encrypted_v3.2fas"), **{IMPORT_PASSWORD_ENV: "nope"})
    assert_cli_error(wrong, contains="wrong password for this 2FAS backup")
    assert wrong.returncode == 2
    both = agent(
        "import",
        str(DATA / "2fas_encrypted_v3.2fas"),
        str(DATA / "bitwarden.csv"),
        **{IMPORT_PASSWORD_ENV: PASSWORD},
    )
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    assert lines[:6] == [f"added: {a.label}" for a in AEGIS_VECTORS]
    assert "skipped, duplicate: Deno: Mason" in lines
    assert f"refused: Test 4: {STEAM_REFUSAL} (only totp and hotp)" in lines
    assert lines[-1] == "6 added, 3 duplicate, 1 refused"
    codes = {c["name"]: c["code"] for c in json.loads(agent("code", "--json").stdout)}
    assert list(codes) == [a.label for a in AEGIS_VECTORS]
    now = time.time()  # each TOTP code is the vector's, of this step or the one before
    for vector in AEGIS_VECTORS:
        if vector.kind == "totp":
            assert codes[vector.label] in {totp.code(vector, now), totp.code(vector, now - vector.period)}
