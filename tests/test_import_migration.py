"""Google Authenticator's otpauth-migration:// export: real samples, batches, export."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from urllib.parse import unquote

import pytest

from device_agent.accounts_model import OtpAccount, encode_base32_secret
from device_agent.importers import migration
from device_agent.importers.report import ImportErrorCode, ImportSourceError

DATA = Path(__file__).parent / "data"


def _uris(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.startswith("otpauth-migration://")]


def test_scito_examples_match_that_projects_own_decoding() -> None:
    parsed = migration.parse_uris(_uris("scito_example_export.txt"))
    expected = json.loads((DATA / "scito_example_output.json").read_text(encoding="utf-8"))
    assert parsed.refused == []
    assert parsed.notes == []
    got = [
        {
            "name": a.name,
            "secret": encode_base32_secret(a.secret),
            "issuer": a.issuer,
            "type": a.kind,
            "counter": a.counter if a.kind == "hotp" else None,
        }
        for a in parsed.accounts
    ]
    assert got == [{k: e[k] for k in ("name", "secret", "issuer", "type", "counter")} for e in expected]
    assert all((a.algorithm, a.digits, a.period) == ("SHA1", 6, 30) for a in parsed.accounts)


def test_batch_fields_of_a_real_sample() -> None:
    batch = migration.parse_uri(_uris("scito_example_export.txt")[0])
    # The sample's batch_id is negative: an int32 sent as a ten-byte varint.
    assert (batch.version, batch.batch_size, batch.batch_index) == (1, 1, 0)
    assert batch.batch_id < 0


def test_base64_pasted_without_url_encoding() -> None:
    # Raw "+" and "/" in the query: "+" must stay a base64 character, not become a space.
    batch = migration.parse_uri((DATA / "scito_plus_problem_export.txt").read_text())
    names = [(a.issuer, a.name) for a in batch.parsed.accounts]
    # The app also wrote "SerenityLabs:" into each name; the issuer is shown once.
    assert names == [("SerenityLabs", f"test{i}@serenitylabs.co.uk") for i in range(1, 5)]
    assert len({a.secret for a in batch.parsed.accounts}) == 4


def test_wrong_data_is_a_clear_error() -> None:
    with pytest.raises(ImportSourceError) as info:
        migration.parse_uri((DATA / "scito_export_wrong_data.txt").read_text())
    assert info.value.code == ImportErrorCode.MALFORMED
    assert info.value.message.startswith("not a valid Google Authenticator export: ")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("otpauth-migration://offline?", "no data parameter"),
        ("otpauth-migration://offline?data=", "no data parameter"),
        ("otpauth-migration://offline?data=%%%", "not base64"),
        ("otpauth-migration://offline?data=CgA&data=CgA", "data is given twice"),
        ("otpauth-migration://online?data=CgA", "expected otpauth-migration://offline"),
        ("otpauth-migration://offline?data=" + base64.b64encode(b"\x0a\x05abc").decode(), "truncated data"),
        ("otpauth-migration://offline?data=" + base64.b64encode(b"\x0b").decode(), "wire type 3"),
        ("otpauth-migration://offline?data=" + base64.b64encode(b"\x08" + b"\xff" * 11).decode(), "too long"),
        ("otpauth-migration://offline?data=" + base64.b64encode(b"\x18\x02\x20\x05").decode(), "impossible"),
    ],
)
def test_damaged_payloads(uri: str, why: str) -> None:
    with pytest.raises(ImportSourceError) as info:
        migration.parse_uri(uri)
    assert why in info.value.message


def test_unknown_version_is_refused() -> None:
    payload = migration._field(2, 2)
    with pytest.raises(ImportSourceError) as info:
        migration.parse_uri(f"{migration.PREFIX}data={base64.b64encode(payload).decode()}")
    assert info.value.code == ImportErrorCode.UNSUPPORTED_VERSION


def _entry_uri(**fields: int | bytes) -> str:
    numbers = {"secret": 1, "name": 2, "issuer": 3, "algorithm": 4, "digits": 5, "type": 6, "counter": 7}
    entry = b"".join(migration._field(numbers[k], v) for k, v in fields.items())
    payload = migration._field(1, entry) + migration._field(2, 1)
    return f"{migration.PREFIX}data={base64.b64encode(payload).decode()}"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"secret": b"k" * 10, "name": b"n", "type": 0}, "unsupported token type (code 0)"),
        ({"secret": b"k" * 10, "name": b"n", "type": 2, "algorithm": 4}, "MD5"),
        ({"secret": b"k" * 10, "name": b"n", "type": 2, "digits": 3}, "digits (code 3)"),
        ({"name": b"n", "type": 2}, "the secret is empty"),
        ({"secret": b"k" * 10, "type": 2}, "neither a name nor an issuer"),
        ({"secret": b"k" * 10, "name": b"\xff", "type": 2}, "not UTF-8"),
    ],
)
def test_entries_refused_by_name_with_the_reason(fields: dict[str, int | bytes], reason: str) -> None:
    batch = migration.parse_uri(_entry_uri(**fields))
    assert batch.parsed.accounts == []
    [refused] = batch.parsed.refused
    assert reason in refused.reason
    assert refused.label in ("n", "entry 1")


def test_algorithms_digits_and_hotp_counter() -> None:
    uri = _entry_uri(secret=b"k" * 20, name=b"n", issuer=b"I", algorithm=3, digits=2, type=1, counter=7)
    [account] = migration.parse_uri(uri).parsed.accounts
    assert account == OtpAccount(b"k" * 20, "n", "I", "hotp", "SHA512", digits=8, counter=7)


def _accounts(n: int, seed: int = 1) -> list[OtpAccount]:
    rng = random.Random(seed)
    kinds = ["totp", "hotp"]
    return [
        OtpAccount(
            rng.randbytes(rng.choice((10, 20, 32))),
            f"user{i}@example.org",
            rng.choice(["", "Example", "Ünïcode Inc."]),
            kinds[i % 2],  # type: ignore[arg-type]
            rng.choice(["SHA1", "SHA256", "SHA512"]),  # type: ignore[arg-type]
            digits=rng.choice([6, 8]),
            counter=rng.randrange(0, 2**40) if i % 2 else 0,
        )
        for i in range(n)
    ]


def test_export_in_codes_of_at_most_ten_and_import_back() -> None:
    accounts = _accounts(23)
    result = migration.export_uris(accounts)
    assert result.refused == []
    assert len(result.uris) == 3
    batches = [migration.parse_uri(u) for u in result.uris]
    assert [len(b.parsed.accounts) for b in batches] == [10, 10, 3]
    assert [(b.batch_size, b.batch_index) for b in batches] == [(3, 0), (3, 1), (3, 2)]
    assert len({b.batch_id for b in batches}) == 1
    assert migration.parse_uris(result.uris).accounts == accounts
    assert migration.export_uris([]).uris == []


def test_a_missing_code_of_a_batch_is_reported() -> None:
    uris = migration.export_uris(_accounts(25)).uris
    parsed = migration.parse_uris([uris[0], uris[2]])
    assert len(parsed.accounts) == 15
    assert parsed.notes == [
        "Google Authenticator export: QR code 2 of 3 was not given,"
        " so its accounts were not imported; scan it too"
    ]


def test_export_refuses_what_the_format_cannot_hold() -> None:
    seven = OtpAccount(b"k" * 20, "seven", "X", digits=7)
    slow = OtpAccount(b"k" * 20, "slow", "X", period=60)
    fine = OtpAccount(b"k" * 20, "fine", "X", kind="hotp", digits=8)
    result = migration.export_uris([seven, slow, fine])
    assert [(r.label, r.reason) for r in result.refused] == [
        ("X: seven", "Google Authenticator has no 7-digit codes"),
        ("X: slow", "Google Authenticator only has 30 s codes, not 60 s"),
    ]
    assert migration.parse_uris(result.uris).accounts == [fine]


@pytest.mark.parametrize("index", range(5))
def test_our_encoding_is_byte_identical_to_the_real_samples(index: int) -> None:
    # Decode a sample, encode its accounts again with its batch id: same payload bytes.
    uri = _uris("scito_example_export.txt")[index]
    batch = migration.parse_uri(uri)
    [again] = migration.export_uris(batch.parsed.accounts, batch_id=batch.batch_id).uris
    original = base64.b64decode(unquote(uri.split("data=", 1)[1]))
    assert base64.b64decode(unquote(again.split("data=", 1)[1])) == original
