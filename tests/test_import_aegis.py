"""Aegis vault exports, plain and encrypted, from the Aegis project's own test resources."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_import_otpauth import AEGIS_VECTORS, STEAM_REFUSAL

from device_agent.importers import aegis
from device_agent.importers.report import ImportErrorCode, ImportSourceError
from device_agent.totp import code

DATA = Path(__file__).parent / "data"
PLAIN = (DATA / "aegis_plain.json").read_bytes()
ENCRYPTED = (DATA / "aegis_encrypted.json").read_bytes()
PASSWORD = "test"  # named in Aegis' DatabaseImporterTest.testImportAegisEncrypted


def _error(data: bytes, password: str | None = PASSWORD) -> ImportSourceError:
    with pytest.raises(ImportSourceError) as info:
        aegis.parse(data, password)
    return info.value


def _check(parsed: Any) -> None:
    assert parsed.accounts == AEGIS_VECTORS
    assert [r.label for r in parsed.refused] == ["Boeing: Sophia"]
    assert STEAM_REFUSAL in parsed.refused[0].reason


def test_plain_export() -> None:
    assert not aegis.is_encrypted(PLAIN)
    _check(aegis.parse(PLAIN))


def test_encrypted_export() -> None:
    assert aegis.is_encrypted(ENCRYPTED)
    _check(aegis.parse(ENCRYPTED, PASSWORD))


def test_encrypted_needs_the_right_password() -> None:
    assert _error(ENCRYPTED, None).code == ImportErrorCode.PASSWORD_REQUIRED
    assert _error(ENCRYPTED, "").code == ImportErrorCode.PASSWORD_REQUIRED
    err = _error(ENCRYPTED, "Test")
    assert err.code == ImportErrorCode.WRONG_PASSWORD
    assert err.message == "wrong password for this Aegis vault"


def _edited(data: bytes, edit: Any) -> bytes:
    doc = json.loads(data)
    edit(doc)
    return json.dumps(doc).encode()


def _flip_db(doc: dict[str, Any]) -> None:
    db = doc["db"]
    doc["db"] = ("A" if db[10] != "A" else "B").join((db[:10], db[11:]))


def _set(path: list[str | int], value: Any) -> Any:
    def edit(doc: Any) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "code", "words"),
    [
        (_flip_db, ImportErrorCode.MALFORMED, "fails authentication"),
        (_set(["header", "params", "tag"], "00" * 16), ImportErrorCode.MALFORMED, "fails authentication"),
        (_set(["header", "params", "nonce"], "zz"), ImportErrorCode.MALFORMED, "nonce is not 12 bytes"),
        (_set(["header", "slots", 0, "key"], "00" * 32), ImportErrorCode.WRONG_PASSWORD, "wrong password"),
        (_set(["header", "slots", 0, "n"], 3), ImportErrorCode.MALFORMED, "scrypt parameters"),
        (_set(["header", "slots", 0, "n"], 2**30), ImportErrorCode.MALFORMED, "scrypt parameters"),
        (_set(["header", "slots", 0, "type"], 2), ImportErrorCode.UNSUPPORTED_VERSION, "no password slot"),
        (_set(["header", "slots"], None), ImportErrorCode.MALFORMED, "without key slots"),
        (_set(["db"], "not base64!"), ImportErrorCode.MALFORMED, "not base64"),
        (_set(["version"], 2), ImportErrorCode.UNSUPPORTED_VERSION, "version 2"),
    ],
)
def test_damaged_encrypted_files(edit: Any, code: ImportErrorCode, words: str) -> None:
    err = _error(_edited(ENCRYPTED, edit))
    assert err.code == code
    assert words in err.message


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", ImportErrorCode.MALFORMED, "not JSON"),
        (PLAIN[:-20], ImportErrorCode.MALFORMED, "not JSON"),  # truncated
        (ENCRYPTED[: len(ENCRYPTED) // 2], ImportErrorCode.MALFORMED, "not JSON"),
        (b"\xff\xfe{}", ImportErrorCode.MALFORMED, "not JSON"),
        (b'{"entries": []}', ImportErrorCode.MALFORMED, "no version / header / db"),
        (_edited(PLAIN, _set(["db", "version"], 99)), ImportErrorCode.UNSUPPORTED_VERSION, "db version 99"),
        (_edited(PLAIN, _set(["db", "entries"], {})), ImportErrorCode.MALFORMED, "no entries list"),
        (_edited(PLAIN, _set(["header"], [])), ImportErrorCode.MALFORMED, "header is not an object"),
    ],
)
def test_bad_files(data: bytes, code: ImportErrorCode, words: str) -> None:
    err = _error(data)
    assert err.code == code
    assert words in err.message


def test_bad_entries_are_refused_one_by_one() -> None:
    def edit(doc: dict[str, Any]) -> None:
        entries = doc["db"]["entries"]
        entries[0]["info"]["secret"] = "1234"
        entries[1]["info"]["digits"] = 12
        entries[2]["info"]["algo"] = "MD5"
        del entries[3]["info"]["secret"]
        entries.append("not an object")

    parsed = aegis.parse(_edited(PLAIN, edit))
    assert parsed.accounts == AEGIS_VECTORS[4:]
    assert [(r.label, r.reason.split(" (")[0]) for r in parsed.refused] == [
        ("Deno: Mason", "the secret is not base32"),
        ("SPDX: James", "unsupported number of digits 12"),
        ("Airbnb: Elijah", "unsupported algorithm 'MD5'"),
        ("Issuu: James", "no secret"),
        ("Boeing: Sophia", "unsupported token type 'steam'"),
        ("entry 8", "not a JSON object"),
    ]


@pytest.mark.skipif(
    shutil.which("oathtool") is None, reason="oathtool missing: run scripts/ensure-tools test"
)
def test_imported_accounts_show_the_codes_oathtool_computes() -> None:
    at = 1_700_000_000
    for account in aegis.parse(ENCRYPTED, PASSWORD).accounts:
        if account.kind == "totp":
            mode = [f"--totp={account.algorithm}", "-s", f"{account.period}s", "-N", f"@{at}"]
        elif account.algorithm == "SHA1":
            mode = ["--hotp", "-c", str(account.counter)]
        else:  # oathtool's HOTP is SHA1 only: TOTP with a 1 s step at time C is HOTP at C
            mode = [f"--totp={account.algorithm}", "-s", "1s", "-N", f"@{account.counter}"]
        args = ["oathtool", *mode, "-d", str(account.digits), account.secret.hex()]
        expected = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        assert code(account, at) == expected, account.label
