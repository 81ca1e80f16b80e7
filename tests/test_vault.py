"""The encrypted vault: round trips, passphrases, and every way a file can be bad."""

from __future__ import annotations

import json
import stat
import struct
from pathlib import Path

import pytest

from device_agent.accounts_model import OtpAccount
from device_agent.backup import load_backup
from device_agent.vault import (
    HEADER_SIZE,
    VAULT_FORMAT,
    VAULT_MAGIC,
    KdfParams,
    SealedErrorCode,
    SealedFileError,
    SealKey,
    Vault,
    seal,
)

FAST = KdfParams.cheapest()
ALICE = OtpAccount(secret=b"\x01" * 20, name="alice@example.com", issuer="Example")
BOB = OtpAccount(secret=b"\x02" * 32, name="bob", kind="hotp", algorithm="SHA256", digits=8, counter=7)


def _error(path: Path, passphrase: str = "pw") -> SealedFileError:
    with pytest.raises(SealedFileError) as info:
        Vault.open(path, passphrase)
    return info.value


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    vault = Vault.create(tmp_path / "vault.bin", "pw", kdf=FAST)
    vault.accounts += [ALICE, BOB]
    vault.records["push"] = [{"cid": "c1", "seed": "AAAA"}]
    vault.save()
    return vault.path


def test_round_trip_keeps_accounts_in_order_and_records(vault_path: Path) -> None:
    vault = Vault.open(vault_path, "pw")
    assert vault.accounts == [ALICE, BOB]
    assert vault.records == {"push": [{"cid": "c1", "seed": "AAAA"}]}
    assert vault.kdf == FAST
    assert stat.S_IMODE(vault_path.stat().st_mode) == 0o600


def test_default_parameters_are_stored_in_the_header(tmp_path: Path) -> None:
    vault = Vault.create(tmp_path / "v", "correct horse")
    _, _, kdf_id, opslimit, memlimit = struct.unpack_from(">8sHBIQ", vault.path.read_bytes())
    assert (kdf_id, opslimit, memlimit) == (1, 3, 64 * 1024**2)
    assert Vault.open(vault.path, "correct horse").kdf == KdfParams()


def test_secrets_are_not_in_the_file_in_clear(vault_path: Path) -> None:
    data = vault_path.read_bytes()
    assert b"alice" not in data
    assert b"\x01" * 20 not in data
    assert b"AAAA" not in data


def test_each_save_uses_a_fresh_nonce(vault_path: Path) -> None:
    vault = Vault.open(vault_path, "pw")
    first = vault_path.read_bytes()
    vault.save()
    second = vault_path.read_bytes()
    assert first != second
    assert first[:39] == second[:39]  # same magic, version, kdf and salt; new nonce onwards
    assert Vault.open(vault_path, "pw").accounts == [ALICE, BOB]


def test_create_refuses_an_existing_file(vault_path: Path) -> None:
    before = vault_path.read_bytes()
    with pytest.raises(SealedFileError) as info:
        Vault.create(vault_path, "other", kdf=FAST)
    assert info.value.code == SealedErrorCode.EXISTS
    assert vault_path.read_bytes() == before


def test_missing_vault(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope")
    assert err.code == SealedErrorCode.NOT_FOUND
    assert "no vault" in err.message


def test_wrong_passphrase_is_a_clear_error_and_changes_nothing(vault_path: Path) -> None:
    before = vault_path.read_bytes()
    err = _error(vault_path, "PW")
    assert err.code == SealedErrorCode.WRONG_PASSPHRASE
    assert "wrong passphrase" in err.message
    assert vault_path.read_bytes() == before


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SealedFileError) as info:
        Vault.create(tmp_path / "v", "", kdf=FAST)
    assert info.value.code == SealedErrorCode.EMPTY_PASSPHRASE
    assert not (tmp_path / "v").exists()


def test_passphrase_is_unicode_normalized(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    Vault.create(tmp_path / "v", composed, kdf=FAST)
    assert Vault.open(tmp_path / "v", decomposed).accounts == []


def test_change_passphrase_and_raise_the_cost(vault_path: Path) -> None:
    vault = Vault.open(vault_path, "pw")
    stronger = KdfParams(opslimit=2, memlimit=1024**2)
    vault.change_passphrase("new pass", kdf=stronger)
    assert _error(vault_path, "pw").code == SealedErrorCode.WRONG_PASSPHRASE
    reopened = Vault.open(vault_path, "new pass")
    assert reopened.accounts == [ALICE, BOB]
    assert reopened.kdf == stronger
    with pytest.raises(SealedFileError):
        reopened.change_passphrase("")
    assert Vault.open(vault_path, "new pass").kdf == stronger


def test_every_single_byte_change_is_detected(vault_path: Path) -> None:
    good = vault_path.read_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        vault_path.write_bytes(bytes(bad))
        with pytest.raises(SealedFileError):
            Vault.open(vault_path, "pw")
    vault_path.write_bytes(good)
    assert Vault.open(vault_path, "pw").accounts == [ALICE, BOB]


@pytest.mark.parametrize(
    ("offset", "flip", "code"),
    [
        (0, 0x01, SealedErrorCode.NOT_SEALED_FILE),  # magic
        (9, 0x01, SealedErrorCode.UNSUPPORTED_VERSION),  # version
        (10, 0x01, SealedErrorCode.CORRUPTED),  # kdf id
        (14, 0x02, SealedErrorCode.WRONG_PASSPHRASE),  # opslimit 1 -> 3: header is bound, key differs
        (14, 0x01, SealedErrorCode.CORRUPTED),  # opslimit 1 -> 0: out of range
        (20, 0x01, SealedErrorCode.WRONG_PASSPHRASE),  # memlimit
        (23, 0x01, SealedErrorCode.WRONG_PASSPHRASE),  # salt
        (39, 0x01, SealedErrorCode.CORRUPTED),  # nonce
        (63, 0x01, SealedErrorCode.WRONG_PASSPHRASE),  # key check
        (80, 0x01, SealedErrorCode.TRUNCATED),  # length claims far more than is there
        (HEADER_SIZE + 3, 0x01, SealedErrorCode.CORRUPTED),  # ciphertext
    ],
)
def test_tampering_names_what_is_wrong(
    vault_path: Path, offset: int, flip: int, code: SealedErrorCode
) -> None:
    bad = bytearray(vault_path.read_bytes())
    bad[offset] ^= flip
    vault_path.write_bytes(bytes(bad))
    assert _error(vault_path).code == code


def test_unknown_version_is_a_clear_error(vault_path: Path) -> None:
    data = bytearray(vault_path.read_bytes())
    data[8:10] = (2).to_bytes(2, "big")
    vault_path.write_bytes(bytes(data))
    err = _error(vault_path)
    assert err.code == SealedErrorCode.UNSUPPORTED_VERSION
    assert "version 2" in err.message


def test_truncated_files(vault_path: Path) -> None:
    good = vault_path.read_bytes()
    for size in (0, 4, 8, 20, HEADER_SIZE - 1, HEADER_SIZE, len(good) - 1):
        vault_path.write_bytes(good[:size])
        err = _error(vault_path)
        expected = SealedErrorCode.NOT_SEALED_FILE if size < 8 else SealedErrorCode.TRUNCATED
        assert err.code == expected, size
    vault_path.write_bytes(good + b"\0")
    assert _error(vault_path).code == SealedErrorCode.CORRUPTED


def test_absurd_kdf_parameters_are_refused_before_deriving(vault_path: Path) -> None:
    data = bytearray(vault_path.read_bytes())
    struct.pack_into(">Q", data, 15, 2**50)  # memlimit: a petabyte
    vault_path.write_bytes(bytes(data))
    assert _error(vault_path).code == SealedErrorCode.CORRUPTED
    with pytest.raises(SealedFileError) as info:
        KdfParams(opslimit=0)
    assert info.value.code == SealedErrorCode.BAD_KDF_PARAMS


def test_a_backup_is_not_a_vault_and_the_reverse(vault_path: Path) -> None:
    with pytest.raises(SealedFileError) as info:
        load_backup(vault_path.read_bytes(), "pw")
    assert info.value.code == SealedErrorCode.NOT_SEALED_FILE
    assert "not a pushauth backup" in info.value.message


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe", SealedErrorCode.BAD_CONTENT),
        (b"[]", SealedErrorCode.UNSUPPORTED_VERSION),
        (json.dumps({"format": "pushauth-vault/9"}).encode(), SealedErrorCode.UNSUPPORTED_VERSION),
        (json.dumps({"format": VAULT_FORMAT, "accounts": []}).encode(), SealedErrorCode.BAD_CONTENT),
        (
            json.dumps({"format": VAULT_FORMAT, "accounts": [{"kind": "totp"}], "records": {}}).encode(),
            SealedErrorCode.BAD_CONTENT,
        ),
    ],
)
def test_content_that_is_not_a_vault_document(tmp_path: Path, payload: bytes, code: SealedErrorCode) -> None:
    # Correctly sealed with the right passphrase, but not what a vault holds.
    path = tmp_path / "v"
    path.write_bytes(seal(VAULT_MAGIC, SealKey.new("pw", FAST), payload))
    assert _error(path).code == code


def test_records_that_are_not_json_are_refused_and_the_file_kept(vault_path: Path) -> None:
    before = vault_path.read_bytes()
    vault = Vault.open(vault_path, "pw")
    vault.records["bad"] = b"bytes are not JSON"
    with pytest.raises(SealedFileError) as info:
        vault.save()
    assert info.value.code == SealedErrorCode.BAD_CONTENT
    assert vault_path.read_bytes() == before
    assert sorted(p.name for p in vault_path.parent.iterdir()) == [".vault.bin.lock", "vault.bin"]


def test_a_save_never_undoes_another_programs_save(vault_path: Path) -> None:
    first = Vault.open(vault_path, "pw")
    second = Vault.open(vault_path, "pw")
    first.accounts.append(OtpAccount(secret=b"\x03" * 20, name="carol"))
    first.save()
    second.accounts.clear()
    with pytest.raises(SealedFileError) as info:
        second.save()
    assert info.value.code == SealedErrorCode.CONFLICT
    assert [a.name for a in Vault.open(vault_path, "pw").accounts] == ["alice@example.com", "bob", "carol"]
    first.accounts.pop()
    first.save()  # the program that saved last can go on saving
    with pytest.raises(SealedFileError) as info:
        second.change_passphrase("other")
    assert info.value.code == SealedErrorCode.CONFLICT
    assert len(Vault.open(vault_path, "pw").accounts) == 2


def test_file_system_errors_are_sealed_file_errors(tmp_path: Path) -> None:
    assert _error(tmp_path).code == SealedErrorCode.IO_ERROR  # a directory
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    # Fails for root too (permissions would not): the parent is a file.
    with pytest.raises(SealedFileError) as info:
        Vault.create(not_a_dir / "v", "pw", kdf=FAST)
    assert info.value.code == SealedErrorCode.IO_ERROR
    assert info.value.message.startswith("cannot")
