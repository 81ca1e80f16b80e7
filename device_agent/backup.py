"""Encrypted backups of the agent's accounts and settings.

A backup is the same sealed-file format as the vault (Argon2id + XChaCha20-Poly1305,
header bound as associated data, see vault.py) under its own magic bytes, holding a
versioned JSON document. The bytes API serves both targets of the design: a file
(e.g. in a synced folder) and the broker's encrypted-blob store, which only ever
sees these bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .accounts_model import OtpAccount
from .vault import (
    KdfParams,
    SealedErrorCode,
    SealedFileError,
    SealKey,
    accounts_from_json,
    load_json_object,
    read_sealed_file,
    seal,
    unseal,
    write_sealed_file,
)

BACKUP_MAGIC = b"PABACKUP"
BACKUP_FORMAT = "pushauth-backup/1"
_FIELDS = {"format", "created_at", "device_name", "accounts", "push_accounts", "settings"}


@dataclass(frozen=True, slots=True)
class Backup:
    """What a backup carries. `accounts` keeps the display order.

    `push_accounts` are the agent store's records of push accounts (JSON objects, one
    per account, in order); this module does not interpret them: the store decides
    which are recoverable and which come back as "action required".
    """

    accounts: list[OtpAccount] = field(default_factory=list)
    push_accounts: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    device_name: str = ""
    created_at: int = field(default_factory=lambda: int(time.time()))


def dump_backup(backup: Backup, passphrase: str, *, kdf: KdfParams | None = None) -> bytes:
    """The encrypted backup as bytes, under a fresh salt and nonce."""
    if not passphrase:
        raise SealedFileError(SealedErrorCode.EMPTY_PASSPHRASE, "the backup passphrase cannot be empty")
    doc = {
        "format": BACKUP_FORMAT,
        "created_at": backup.created_at,
        "device_name": backup.device_name,
        "accounts": [a.to_json() for a in backup.accounts],
        "push_accounts": backup.push_accounts,
        "settings": backup.settings,
    }
    try:
        payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, f"backup content is not JSON: {exc}") from None
    return seal(BACKUP_MAGIC, SealKey.new(passphrase, kdf or KdfParams()), payload.encode("utf-8"))


def load_backup(data: bytes, passphrase: str) -> Backup:
    """Decrypt and check a backup; any damage or a wrong passphrase is a SealedFileError."""
    payload, _ = unseal(BACKUP_MAGIC, "backup", data, passphrase)
    doc = load_json_object(payload, "backup", BACKUP_FORMAT)
    if set(doc) != _FIELDS:
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, "the backup content has unexpected fields")
    push_accounts = doc["push_accounts"]
    if not isinstance(push_accounts, list) or not all(isinstance(p, dict) for p in push_accounts):
        raise SealedFileError(
            SealedErrorCode.BAD_CONTENT, "the backup's push accounts are not a list of objects"
        )
    if not isinstance(doc["settings"], dict):
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, "the backup's settings are not an object")
    if type(doc["created_at"]) is not int or not isinstance(doc["device_name"], str):
        raise SealedFileError(
            SealedErrorCode.BAD_CONTENT, "the backup's created_at or device_name is invalid"
        )
    return Backup(
        accounts=accounts_from_json(doc["accounts"], "backup"),
        push_accounts=push_accounts,
        settings=doc["settings"],
        device_name=doc["device_name"],
        created_at=doc["created_at"],
    )


def write_backup_file(path: Path, backup: Backup, passphrase: str, *, kdf: KdfParams | None = None) -> None:
    """Write a backup file atomically (never a half-written backup over a good one)."""
    write_sealed_file(Path(path), dump_backup(backup, passphrase, kdf=kdf), "backup file")


def read_backup_file(path: Path, passphrase: str) -> Backup:
    return load_backup(read_sealed_file(Path(path), "backup file"), passphrase)
