"""otpauth:// URIs: Aegis' test vectors, the deviations real apps write, refusals, export."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from device_agent.accounts_model import OtpAccount
from device_agent.importers import otpauth
from device_agent.importers.report import ImportErrorCode, ImportSourceError
from device_agent.importers.sources import parse_source

DATA = Path(__file__).parent / "data"


def _b32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


# The vectors of Aegis' DatabaseImporterTest (tests/data/README.md): every Aegis
# sample file holds these entries, plus a Steam one we refuse.
AEGIS_VECTORS = [
    OtpAccount(_b32("4SJHB4GSD43FZBAI7C2HLRJGPQ"), "Mason", "Deno"),
    OtpAccount(_b32("5OM4WOOGPLQEF6UGN3CPEOOLWU"), "James", "SPDX", algorithm="SHA256", digits=7, period=20),
    OtpAccount(
        _b32("7ELGJSGXNCCTV3O6LKJWYFV2RA"), "Elijah", "Airbnb", algorithm="SHA512", digits=8, period=50
    ),
    OtpAccount(_b32("YOOMIXWS5GN6RTBPUFFWKTW5M4"), "James", "Issuu", kind="hotp", counter=1),
    OtpAccount(
        _b32("KUVJJOM753IHTNDSZVCNKL7GII"), "Benjamin", "Air Canada", "hotp", "SHA256", digits=7, counter=50
    ),
    OtpAccount(_b32("5VAML3X35THCEBVRLV24CGBKOY"), "Mason", "WWE", "hotp", "SHA512", digits=8, counter=10300),
]
STEAM_REFUSAL = "unsupported token type 'steam'"


def test_aegis_otpauth_vectors() -> None:
    parsed = parse_source((DATA / "aegis_otpauth_vectors.txt").read_bytes())
    assert parsed.accounts == AEGIS_VECTORS
    assert len(parsed.refused) == 1
    assert parsed.refused[0].label == "line 7 (Boeing: Sophia)"
    assert STEAM_REFUSAL in parsed.refused[0].reason


SECRET = _b32("4SJHB4GSD43FZBAI7C2HLRJGPQ")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        # Secret written in lower case, with padding, with spaces (%20 or +) or dashes.
        ("otpauth://totp/Deno:Mason?secret=4sjhb4gsd43fzbai7c2hlrjgpq&issuer=Deno", ("Mason", "Deno")),
        ("otpauth://totp/Deno:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ%3D%3D%3D%3D%3D%3D", ("Mason", "Deno")),
        ("otpauth://totp/Deno:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ======", ("Mason", "Deno")),
        ("otpauth://totp/Mason?secret=4SJH%20B4GS%20D43F%20ZBAI%207C2H%20LRJG%20PQ", ("Mason", "")),
        ("otpauth://totp/Mason?secret=4sjh+b4gs+d43f+zbai+7c2h+lrjg+pq&issuer=Deno", ("Mason", "Deno")),
        ("otpauth://totp/Mason?secret=4SJH-B4GS-D43F-ZBAI-7C2H-LRJG-PQ&issuer=Deno", ("Mason", "Deno")),
        # Issuer only as a parameter, only as a label prefix, or both but different (parameter wins).
        ("otpauth://totp/Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ&issuer=Deno", ("Mason", "Deno")),
        ("otpauth://totp/Deno:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ", ("Mason", "Deno")),
        ("otpauth://totp/Old%20Name:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ&issuer=Deno", ("Mason", "Deno")),
        # URL-encoded label: encoded colon, spaces after the colon, UTF-8, '+' kept in the path.
        ("otpauth://totp/Deno%3AMason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ", ("Mason", "Deno")),
        ("otpauth://totp/Deno:%20%20Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ", ("Mason", "Deno")),
        (
            "otpauth://totp/Caf%C3%A9%20%C3%9Cber:j%C3%B6rg?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ",
            ("jörg", "Café Über"),
        ),
        ("otpauth://totp/Deno:a+b@x.org?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ", ("a+b@x.org", "Deno")),
        ("otpauth://totp/?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ&issuer=Air+Canada", ("", "Air Canada")),
        # Upper-case scheme, type and parameter names; unknown parameters ignored.
        ("OTPAUTH://TOTP/Deno:Mason?SECRET=4SJHB4GSD43FZBAI7C2HLRJGPQ&Issuer=Deno", ("Mason", "Deno")),
        (
            "otpauth://totp/Deno:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ&image=https%3A%2F%2Fx.org%2Fi.png&color=red",
            ("Mason", "Deno"),
        ),
    ],
)
def test_deviations_of_real_apps_are_read(uri: str, expected: tuple[str, str]) -> None:
    account = otpauth.parse_uri(uri)
    assert (account.name, account.issuer) == expected
    assert account.secret == SECRET
    assert (account.kind, account.algorithm, account.digits, account.period) == ("totp", "SHA1", 6, 30)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("algorithm=sha1", {"algorithm": "SHA1"}),
        ("algorithm=sha256&digits=8", {"algorithm": "SHA256", "digits": 8}),
        ("algorithm=SHA-512&period=60", {"algorithm": "SHA512", "period": 60}),
        ("algorithm=HmacSHA256&digits=7&period=15", {"algorithm": "SHA256", "digits": 7, "period": 15}),
        ("algorithm=&digits=&period=", {}),  # empty values mean the defaults
    ],
)
def test_parameters(query: str, fields: dict[str, object]) -> None:
    account = otpauth.parse_uri(f"otpauth://totp/x?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ&{query}")
    expected = {"algorithm": "SHA1", "digits": 6, "period": 30, **fields}
    assert {k: getattr(account, k) for k in expected} == expected


def test_hotp_with_and_without_counter() -> None:
    account = otpauth.parse_uri("otpauth://hotp/Issuu:James?secret=YOOMIXWS5GN6RTBPUFFWKTW5M4&counter=42")
    assert (account.kind, account.counter) == ("hotp", 42)
    # Some exporters leave out counter=0, which the spec requires.
    assert otpauth.parse_uri("otpauth://hotp/James?secret=YOOMIXWS5GN6RTBPUFFWKTW5M4").counter == 0


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("otpauth://totp/Deno:Mason?issuer=Deno", "no secret"),
        ("otpauth://totp/Deno:Mason?secret=", "secret is empty"),
        ("otpauth://totp/Deno:Mason?secret=not*base32", "not base32"),
        ("otpauth://totp/Deno:Mason?secret=ABC", "impossible base32 length"),
        ("otpauth://steam/Boeing:Sophia?secret=JRZCL47CMXVOQMNPZR2F7J4RGI", STEAM_REFUSAL),
        ("otpauth://motp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI", "unsupported token type 'motp'"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&digits=5", "digits 5"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&digits=six", "digits must be a whole number"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&digits=\u0666", "digits must be a whole number"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&period=0", "period must be 1..3600"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&period=-30", "period must be a whole number"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&algorithm=MD5", "unsupported algorithm 'MD5'"),
        ("otpauth://hotp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&counter=1.5", "counter must be a whole number"),
        ("otpauth://totp/x?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&secret=AAAA", "'secret' is given twice"),
        ("otpauth://totp/?secret=JRZCL47CMXVOQMNPZR2F7J4RGI", "neither a name nor an issuer"),
        ("https://example.com/?secret=JRZCL47CMXVOQMNPZR2F7J4RGI", "not an otpauth:// URI"),
        ("otpauth://totp/x?secret=" + "A" * 5000, "longer than 4096"),
    ],
)
def test_refused_with_the_reason(uri: str, reason: str) -> None:
    with pytest.raises(ImportSourceError) as info:
        otpauth.parse_uri(uri)
    assert info.value.code == ImportErrorCode.INVALID_ACCOUNT
    assert reason in info.value.message


def test_lines_with_comments_and_bad_lines() -> None:
    text = [
        "# my accounts",
        "",
        "otpauth://totp/Deno:Mason?secret=4SJHB4GSD43FZBAI7C2HLRJGPQ",
        "otpauth://totp/Bad:Entry?secret=1111",
        "   otpauth://hotp/Issuu:James?secret=YOOMIXWS5GN6RTBPUFFWKTW5M4&counter=1   ",
    ]
    parsed = parse_source("\n".join(text).encode())
    assert [a.label for a in parsed.accounts] == ["Deno: Mason", "Issuu: James"]
    assert [(r.label, r.reason) for r in parsed.refused] == [
        ("line 4 (Bad: Entry)", "the secret is not base32 (letters A-Z and digits 2-7)")
    ]


def test_export_spells_out_every_parameter() -> None:
    account = OtpAccount(
        b"Hello!\xde\xad\xbe\xef", "john.doe@email.com", "ACME Co", algorithm="SHA256", period=60
    )
    assert otpauth.to_uri(account) == (
        "otpauth://totp/ACME%20Co:john.doe@email.com?secret=JBSWY3DPEHPK3PXP&issuer=ACME%20Co"
        "&algorithm=SHA256&digits=6&period=60"
    )
    hotp = OtpAccount(b"Hello!\xde\xad\xbe\xef", "n", kind="hotp", digits=8, counter=9)
    assert (
        otpauth.to_uri(hotp) == "otpauth://hotp/n?secret=JBSWY3DPEHPK3PXP&algorithm=SHA1&digits=8&counter=9"
    )


@pytest.mark.parametrize(
    "account",
    [
        *AEGIS_VECTORS,
        OtpAccount(b"\x00" * 10, "jörg+tag@example.org", "Café & Co: 100% sûr?"),
        OtpAccount(b"\xff" * 64, "a/b#c?d=e&f", "", algorithm="SHA512", digits=8, period=3600),
        OtpAccount(b"\x01" * 20, "", "Only Issuer", kind="hotp", counter=2**40),
        OtpAccount(b"\x02" * 20, "encoding: ¿äÄéÉ? (demo)", ""),
    ],
)
def test_export_then_import_gives_the_same_account(account: OtpAccount) -> None:
    assert otpauth.parse_uri(otpauth.to_uri(account)) == account
    assert otpauth.export_uris([account]).uris == [otpauth.to_uri(account)]
