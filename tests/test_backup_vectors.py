"""The Python agent against docs/backup-vectors.json, the backup file's known answers
(the web authenticator is checked against the same file in Chromium:
tests/webapp/test_webapp_backup.py). When the format changes on purpose, regenerate it:

    .venv/bin/python -m device_agent.backup_vectors > docs/backup-vectors.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from device_agent import backup_vectors
from device_agent.backup import BACKUP_MAGIC, dump_backup, load_backup
from device_agent.backup_keys import BackupCode, BackupCodeError, blob_keys, unwrap, wrap
from device_agent.vault import KdfParams, SealedFileError

PATH = Path(__file__).resolve().parent.parent / "docs" / "backup-vectors.json"
VECTORS: dict[str, Any] = json.loads(PATH.read_text())


def test_the_file_is_the_generators_output() -> None:
    assert PATH.read_text() == backup_vectors.render(backup_vectors.build()), (
        "docs/backup-vectors.json differs from `python -m device_agent.backup_vectors`"
    )


@pytest.mark.parametrize("vector", VECTORS["sealed"], ids=lambda v: v["name"])
def test_each_sealed_vector_opens_to_its_document(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["file"])
    assert data.startswith(BACKUP_MAGIC)
    opened = load_backup(data, vector["open_with"])
    doc = vector["document"]
    assert [a.to_json() for a in opened.accounts] == doc["accounts"]
    assert opened.push_accounts == doc["push_accounts"]
    assert opened.settings == doc["settings"]
    assert (opened.device_name, opened.created_at) == (doc["device_name"], doc["created_at"])
    # And what the agent writes from the same content opens to the same again (fresh
    # salt and nonce: other bytes, the same backup).
    again = load_backup(
        dump_backup(opened, vector["open_with"], kdf=KdfParams.cheapest()), vector["open_with"]
    )
    assert again == opened


@pytest.mark.parametrize("vector", VECTORS["refused"], ids=lambda v: v["name"])
def test_each_refused_vector_is_refused_with_its_code(vector: dict[str, Any]) -> None:
    with pytest.raises(SealedFileError) as caught:
        load_backup(bytes.fromhex(vector["file"]), vector["passphrase"])
    assert caught.value.code == vector["code"]


def test_the_vectors_cover_every_refusal_before_and_after_the_key() -> None:
    codes = {v["code"] for v in VECTORS["refused"]}
    assert codes == {
        "wrong_passphrase",
        "not_sealed_file",
        "truncated",
        "corrupted",
        "unsupported_version",
        "bad_content",
    }


@pytest.mark.parametrize("vector", VECTORS["codes"]["valid"], ids=lambda v: v["typed"])
def test_each_typed_backup_code_reads_as_its_secret(vector: dict[str, Any]) -> None:
    assert BackupCode.parse(vector["typed"]).secret.hex() == vector["secret"]


@pytest.mark.parametrize("typed", VECTORS["codes"]["invalid"])
def test_each_mistyped_backup_code_is_refused(typed: str) -> None:
    with pytest.raises(BackupCodeError):
        BackupCode.parse(typed)


@pytest.mark.parametrize("vector", VECTORS["blobs"], ids=lambda v: v["blob_id"])
def test_each_broker_copy_has_its_keys_and_unwraps_to_its_file(vector: dict[str, Any]) -> None:
    kdf = KdfParams(vector["opslimit"], vector["memlimit"])
    keys = blob_keys(
        vector["passphrase"], BackupCode.parse(vector["code"]), vector["origin"], vector["name"], kdf
    )
    assert (keys.seed.hex(), keys.blob_id, keys.wrap.hex()) == (
        vector["seed"],
        vector["blob_id"],
        vector["wrap_key"],
    )
    stored = bytes.fromhex(vector["stored"])
    assert unwrap(keys, stored).hex() == vector["sealed"]
    assert wrap(keys, bytes.fromhex(vector["sealed"]), nonce=bytes.fromhex(vector["nonce"])) == stored
