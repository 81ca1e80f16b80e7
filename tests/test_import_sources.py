"""Recognizing import sources, and the report: added, duplicate, refused, never dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_import_otpauth import AEGIS_VECTORS

from device_agent.accounts_model import OtpAccount
from device_agent.importers import migration, otpauth
from device_agent.importers.report import ImportErrorCode, ImportSourceError, Parsed, merge
from device_agent.importers.sources import is_password_protected, parse_source

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "password", "accounts", "refused"),
    [
        ("aegis_plain.json", None, 6, 1),
        ("aegis_encrypted.json", "test", 6, 1),
        ("aegis_otpauth_vectors.txt", None, 6, 1),
        ("scito_example_export.txt", None, 6, 0),
        ("scito_plus_problem_export.txt", None, 4, 0),
        ("scito_export_wrong_data.txt", None, 0, 1),
    ],
)
def test_every_sample_is_recognized(name: str, password: str | None, accounts: int, refused: int) -> None:
    data = (DATA / name).read_bytes()
    assert is_password_protected(data) == (password is not None)
    parsed = parse_source(data, password=password)
    assert (len(parsed.accounts), len(parsed.refused)) == (accounts, refused)


def test_password_question_never_raises() -> None:
    assert not is_password_protected(b'{"version": 9, "header": {}, "db": "x"}')
    assert not is_password_protected(b"\xff")


def test_a_broken_migration_line_is_refused_by_line_with_the_reason() -> None:
    parsed = parse_source((DATA / "scito_export_wrong_data.txt").read_bytes())
    [refused] = parsed.refused
    assert refused.label == "line 1 (Google Authenticator export)"
    assert refused.reason.startswith("not a valid Google Authenticator export")


def test_mixed_text_keeps_order_and_names_every_bad_line() -> None:
    export = migration.export_uris(AEGIS_VECTORS[:2]).uris[0]
    text = "\n".join(
        [
            "\ufeff# exported by hand",
            otpauth.to_uri(AEGIS_VECTORS[3]),
            "hello there",
            export,
            "",
            "otpauth://totp/x?secret=!!",
        ]
    )
    parsed = parse_source(text.encode())
    # AEGIS_VECTORS[1] has 7 digits, which the migration export refuses: the code holds Deno: Mason.
    assert [a.label for a in parsed.accounts] == ["Issuu: James", "Deno: Mason"]
    assert [r.label for r in parsed.refused] == ["line 3", "line 6 (x)"]


@pytest.mark.parametrize("data", [b"", b"\n\n# nothing\n", b"just some text", b"\x00\xff\x10binary"])
def test_unrecognized_input_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(ImportSourceError) as info:
        parse_source(data)
    assert info.value.code == ImportErrorCode.UNRECOGNIZED


def test_a_google_export_with_duplicates_reports_each_one() -> None:
    # The scito sample holds the same TOTP secret five times under different labels,
    # and once as HOTP: two accounts, four duplicates, each named.
    report = merge([], parse_source((DATA / "scito_example_export.txt").read_bytes()))
    assert [a.label for a in report.added] == ["raspberrypi: pi@raspberrypi", "hotp demo"]
    assert [(d.account.label, d.existing.label) for d in report.duplicates] == [
        ("pi@raspberrypi", "raspberrypi: pi@raspberrypi"),
        ("pi@raspberrypi", "raspberrypi: pi@raspberrypi"),
        ("raspberrypi: pi@raspberrypi", "raspberrypi: pi@raspberrypi"),
        ("encoding: ¿äÄéÉ? (demo)", "raspberrypi: pi@raspberrypi"),
    ]
    assert report.lines()[-1] == "2 added, 4 duplicate, 0 refused"


def test_merge_against_accounts_already_held() -> None:
    held = AEGIS_VECTORS[:2]
    parsed = parse_source((DATA / "aegis_plain.json").read_bytes())
    parsed.notes.append("something to tell")
    report = merge(held, parsed)
    assert report.added == AEGIS_VECTORS[2:]
    assert [d.existing for d in report.duplicates] == held
    assert report.lines() == [
        "added: Airbnb: Elijah",
        "added: Issuu: James",
        "added: Air Canada: Benjamin",
        "added: WWE: Mason",
        "skipped, duplicate: Deno: Mason",
        "skipped, duplicate: SPDX: James",
        "refused: Boeing: Sophia: unsupported token type 'steam' (only totp and hotp)",
        "note: something to tell",
        "4 added, 2 duplicate, 1 refused",
    ]


def test_same_secret_with_other_parameters_is_not_a_duplicate() -> None:
    base = OtpAccount(b"s" * 20, "a")
    others = [
        OtpAccount(b"s" * 20, "a", digits=8),
        OtpAccount(b"s" * 20, "a", period=60),
        OtpAccount(b"s" * 20, "a", algorithm="SHA256"),
        OtpAccount(b"s" * 20, "a", kind="hotp"),
    ]
    report = merge([base], Parsed(accounts=others))
    assert report.added == others
    assert report.duplicates == []
