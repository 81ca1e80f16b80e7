"""Encrypted backups: round trip, and a clear error for every kind of bad backup."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from device_agent.accounts_model import OtpAccount
from device_agent.backup import (
    BACKUP_FORMAT,
    BACKUP_MAGIC,
    Backup,
    dump_backup,
    load_backup,
    read_backup_file,
    write_backup_file,
)
from device_agent.vault import HEADER_SIZE, KdfParams, SealedErrorCode, SealedFileError, SealKey, Vault, seal

FAST = KdfParams.cheapest()
ACCOUNTS = [
    OtpAccount(secret=bytes(range(20)), name="z-last-alphabetically", issuer="Zeta"),
    OtpAccount(secret=bytes(range(32)), name="alice", issuer="Acme", algorithm="SHA256", digits=8, period=60),
    OtpAccount(
        secret=bytes(range(64)), name="counter", kind="hotp", algorithm="SHA512", digits=7, counter=10300
    ),
]
BACKUP = Backup(
    accounts=ACCOUNTS,
    push_accounts=[{"rp": "acme", "account": "alice", "recoverable": True, "recovery_key": "k" * 43}],
    settings={"theme": "dark", "order": ["push:acme", "otp:0"]},
    device_name="laptop",
    created_at=1_700_000_000,
)


def _load_error(data: bytes, passphrase: str = "backup pass") -> SealedFileError:
    with pytest.raises(SealedFileError) as info:
        load_backup(data, passphrase)
    return info.value


@pytest.fixture(scope="module")
def blob() -> bytes:
    return dump_backup(BACKUP, "backup pass", kdf=FAST)


def test_round_trip_keeps_everything_in_order(blob: bytes) -> None:
    restored = load_backup(blob, "backup pass")
    assert restored == BACKUP
    assert [a.name for a in restored.accounts] == [a.name for a in ACCOUNTS]


def test_backup_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sync" / "pushauth.backup"
    write_backup_file(path, BACKUP, "backup pass", kdf=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_backup_file(path, "backup pass") == BACKUP


def test_each_backup_has_fresh_salt_and_nonce(blob: bytes) -> None:
    again = dump_backup(BACKUP, "backup pass", kdf=FAST)
    assert again[23:63] != blob[23:63]
    assert load_backup(again, "backup pass") == BACKUP


def test_nothing_secret_in_clear(blob: bytes) -> None:
    for clear in (b"alice", b"Acme", bytes(range(20)), b"recovery_key", b"laptop"):
        assert clear not in blob


def test_default_cost_backup_opens(tmp_path: Path) -> None:
    data = dump_backup(Backup(accounts=ACCOUNTS[:1]), "p")
    assert load_backup(data, "p").accounts == ACCOUNTS[:1]


def test_wrong_passphrase(blob: bytes) -> None:
    err = _load_error(blob, "Backup pass")
    assert err.code == SealedErrorCode.WRONG_PASSPHRASE
    assert "wrong passphrase for this backup" in err.message


@pytest.mark.parametrize("size", [0, 7, 8, 30, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10, -1])
def test_truncated(blob: bytes, size: int) -> None:
    err = _load_error(blob[:size])
    if size < 8 and size >= 0:
        assert err.code == SealedErrorCode.NOT_SEALED_FILE
    else:
        assert err.code == SealedErrorCode.TRUNCATED
        assert "truncated" in err.message


def test_every_byte_tampered_is_detected(blob: bytes) -> None:
    for i in range(0, len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01  # small enough that a changed memlimit stays cheap to try
        with pytest.raises(SealedFileError):
            load_backup(bytes(bad), "backup pass")


def test_corrupted_ciphertext_says_so(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[-5] ^= 0xFF
    err = _load_error(bytes(bad))
    assert err.code == SealedErrorCode.CORRUPTED
    assert "damaged or was altered" in err.message


def test_unknown_format_version(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[8:10] = (7).to_bytes(2, "big")
    err = _load_error(bytes(bad))
    assert err.code == SealedErrorCode.UNSUPPORTED_VERSION
    assert "version 7" in err.message


def test_not_a_backup() -> None:
    assert _load_error(b"hello world, this is not a backup at all").code == SealedErrorCode.NOT_SEALED_FILE
    assert _load_error(json.dumps({"accounts": []}).encode()).code == SealedErrorCode.NOT_SEALED_FILE


def test_a_vault_is_not_a_backup(tmp_path: Path) -> None:
    vault = Vault.create(tmp_path / "v", "backup pass", kdf=FAST)
    err = _load_error(vault.path.read_bytes())
    assert err.code == SealedErrorCode.NOT_SEALED_FILE


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SealedFileError) as info:
        read_backup_file(tmp_path / "none", "p")
    assert info.value.code == SealedErrorCode.NOT_FOUND
    with pytest.raises(SealedFileError) as info:
        read_backup_file(tmp_path, "p")
    assert info.value.code == SealedErrorCode.IO_ERROR
    (tmp_path / "file").write_text("x")
    with pytest.raises(SealedFileError) as info:
        write_backup_file(tmp_path / "file" / "b", BACKUP, "p", kdf=FAST)
    assert info.value.code == SealedErrorCode.IO_ERROR


def test_empty_passphrase_refused() -> None:
    with pytest.raises(SealedFileError) as info:
        dump_backup(BACKUP, "", kdf=FAST)
    assert info.value.code == SealedErrorCode.EMPTY_PASSPHRASE


def _sealed(doc: Any) -> bytes:
    return seal(BACKUP_MAGIC, SealKey.new("backup pass", FAST), json.dumps(doc).encode())


GOOD_DOC = {
    "format": BACKUP_FORMAT,
    "created_at": 1,
    "device_name": "d",
    "accounts": [],
    "push_accounts": [],
    "settings": {},
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"format": "pushauth-backup/2"}, SealedErrorCode.UNSUPPORTED_VERSION),
        ({"extra": 1}, SealedErrorCode.BAD_CONTENT),
        ({"push_accounts": ["not an object"]}, SealedErrorCode.BAD_CONTENT),
        ({"settings": []}, SealedErrorCode.BAD_CONTENT),
        ({"created_at": "yesterday"}, SealedErrorCode.BAD_CONTENT),
        ({"accounts": [{"kind": "totp", "secret": "!!"}]}, SealedErrorCode.BAD_CONTENT),
        (
            {
                "accounts": [
                    {
                        "kind": "totp",
                        "name": "n",
                        "issuer": "",
                        "secret": "JBSWY3DPEHPK3PXP",
                        "algorithm": "MD5",
                        "digits": 6,
                        "period": 30,
                    }
                ]
            },
            SealedErrorCode.BAD_CONTENT,
        ),
    ],
)
def test_content_checked_after_decryption(change: dict[str, Any], code: SealedErrorCode) -> None:
    assert load_backup(_sealed(GOOD_DOC), "backup pass") == Backup(device_name="d", created_at=1)
    err = _load_error(_sealed({**GOOD_DOC, **change}))
    assert err.code == code
