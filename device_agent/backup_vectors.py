# ruff: noqa: E501  (tables of test data read best one case a line)
"""Known-answer vectors of the backup file format, for docs/backup-vectors.json.

    python -m device_agent.backup_vectors > docs/backup-vectors.json

A second implementation of backups (the web authenticator's js/sealedfile.js and
js/backup.js) checks itself against that file: each `sealed` vector is a backup sealed
from `document` with the given passphrase, Argon2id cost, salt and nonce, which it must
open to exactly that document, and reproduce byte for byte when it seals the same
document with the same salt and nonce; each `refused` vector is a file it must refuse
with the error code given (device_agent/vault.py SealedErrorCode), before or after the
key derivation as the format says. Fixed inputs, so the output is the same on every
run; tests/test_backup_vectors.py checks the file is exactly this output and that the
agent agrees with every vector. `codes` are backup codes as people type them (the secret each
reads as; typed codes to refuse) and `blobs` a broker copy: the keys derived from
passphrase, backup code, broker origin and backup name, and the stored (wrapped) blob
of the first sealed file. Binary values are hex strings.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

from .backup import BACKUP_FORMAT, BACKUP_MAGIC
from .backup_keys import CODE_PREFIX, BackupCode, blob_keys, wrap
from .vault import HEADER_SIZE, NONCE_OFFSET, VAULT_MAGIC, KdfParams, SealKey, derive_key, seal

PASSPHRASE = "correct horse battery staple"
# "é" as e + combining acute: it must derive the same key as the composed form (NFC).
DECOMPOSED = "cafe\u0301 au lait, s'il vous plait"
COMPOSED = "caf\u00e9 au lait, s'il vous plait"
SALT = bytes(range(16))
NONCE = bytes(range(100, 124))
CHEAP = KdfParams.cheapest()

DOCUMENT: dict[str, Any] = {
    "format": BACKUP_FORMAT,
    "created_at": 1764979200,
    "device_name": "Old phone",
    "accounts": [
        {
            "kind": "totp",
            "name": "alice@contoso.example",
            "issuer": "Contoso",
            "secret": "JBSWY3DPEHPK3PXP",
            "algorithm": "SHA1",
            "digits": 6,
            "period": 30,
        },
        {
            "kind": "totp",
            "name": "bob",
            "issuer": "GitHub",
            "secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            "algorithm": "SHA256",
            "digits": 8,
            "period": 60,
        },
        {
            "kind": "hotp",
            "name": "vpn",
            "issuer": "Fabrikam",
            "secret": "MFRGGZDFMZTWQ2LK",
            "algorithm": "SHA1",
            "digits": 6,
            "counter": 7,
        },
    ],
    "push_accounts": [
        {
            "rp": "contoso",
            "rp_name": "Contoso",
            "user": "alice",
            "label": "alice@contoso.example",
            "broker": "wss://push.contoso.example/v1/device",
            "cid": "cred_A1",
            "device_name": "Old phone",
            "added": 1764979100000,
            "recovery_seed": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        },
        {
            "rp": "tailspin",
            "rp_name": "Tailspin Toys",
            "user": "u-42",
            "label": "alice",
            "broker": "wss://push.tailspin.example/v1/device",
            "cid": "cred_B1",
            "device_name": "Old phone",
            "added": 1764979150000,
            "recovery_seed": None,
        },
    ],
    "settings": {
        "layout": [
            {"name": "alice@contoso.example", "otp": 0, "push": 0},
            {"name": "GitHub: bob", "otp": 1, "push": None},
            {"name": "Fabrikam: vpn", "otp": 2, "push": None},
            {"name": "alice (Tailspin Toys)", "otp": None, "push": 1},
        ],
        "agent": {},
    },
}


def _payload(doc: Any) -> bytes:
    # As backup.dump_backup writes it.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _sealed(
    payload: bytes, passphrase: str = PASSPHRASE, kdf: KdfParams = CHEAP, magic: bytes = BACKUP_MAGIC
) -> bytes:
    key = SealKey(derive_key(passphrase, SALT, kdf), SALT, kdf)
    return seal(magic, key, payload, nonce=NONCE)


def _with(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def sealed_vectors() -> list[dict[str, Any]]:
    cases = [
        ("the cheapest Argon2id cost", PASSPHRASE, PASSPHRASE, CHEAP),
        ("two passes over 1 MiB", PASSPHRASE, PASSPHRASE, KdfParams(opslimit=2, memlimit=1024 * 1024)),
        ("a passphrase typed decomposed opens as composed (NFC)", DECOMPOSED, COMPOSED, CHEAP),
    ]
    return [
        {
            "name": name,
            "passphrase": sealed_with,
            "open_with": open_with,
            "opslimit": kdf.opslimit,
            "memlimit": kdf.memlimit,
            "salt": SALT.hex(),
            "nonce": NONCE.hex(),
            "document": DOCUMENT,
            "file": _sealed(_payload(DOCUMENT), sealed_with, kdf).hex(),
        }
        for name, sealed_with, open_with, kdf in cases
    ]


def refused_vectors() -> list[dict[str, Any]]:
    good = _sealed(_payload(DOCUMENT))
    ct = HEADER_SIZE  # first ciphertext byte
    cases: list[tuple[str, bytes, str, str]] = [
        ("a wrong passphrase", good, "Tr0ub4dor&3 is not it", "wrong_passphrase"),
        ("a vault, not a backup", _sealed(b"{}", magic=VAULT_MAGIC), PASSPHRASE, "not_sealed_file"),
        (
            "not a sealed file at all",
            b"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP",
            PASSPHRASE,
            "not_sealed_file",
        ),
        ("the header cut short", good[: HEADER_SIZE - 1], PASSPHRASE, "truncated"),
        ("the ciphertext cut short", good[:-1], PASSPHRASE, "truncated"),
        ("a byte after the ciphertext", good + b"\x00", PASSPHRASE, "corrupted"),
        ("format version 2", _with(good, 8, ">H", 2), PASSPHRASE, "unsupported_version"),
        ("an unknown key derivation", _with(good, 10, ">B", 2), PASSPHRASE, "corrupted"),
        ("opslimit 0", _with(good, 11, ">I", 0), PASSPHRASE, "corrupted"),
        ("opslimit 65", _with(good, 11, ">I", 65), PASSPHRASE, "corrupted"),
        ("memlimit under 8 KiB", _with(good, 15, ">Q", 8191), PASSPHRASE, "corrupted"),
        ("memlimit over 4 GiB", _with(good, 15, ">Q", 4 * 1024**3 + 1), PASSPHRASE, "corrupted"),
        (
            "a changed salt (another key: it reads as a wrong passphrase)",
            _flip(good, 23),
            PASSPHRASE,
            "wrong_passphrase",
        ),
        ("a changed nonce (the header is authenticated)", _flip(good, NONCE_OFFSET), PASSPHRASE, "corrupted"),
        ("a changed ciphertext byte", _flip(good, ct), PASSPHRASE, "corrupted"),
        ("a changed tag byte", _flip(good, len(good) - 1), PASSPHRASE, "corrupted"),
        ("content that is not JSON", _sealed(b"\xff{"), PASSPHRASE, "bad_content"),
        (
            "content of another format",
            _sealed(_payload({**DOCUMENT, "format": "pushauth-backup/2"})),
            PASSPHRASE,
            "unsupported_version",
        ),
        (
            "content with an unexpected field",
            _sealed(_payload({**DOCUMENT, "extra": 1})),
            PASSPHRASE,
            "bad_content",
        ),
        (
            "push accounts not a list",
            _sealed(_payload({**DOCUMENT, "push_accounts": {}})),
            PASSPHRASE,
            "bad_content",
        ),
        (
            "an account with an unknown algorithm",
            _sealed(_payload({**DOCUMENT, "accounts": [{**DOCUMENT["accounts"][0], "algorithm": "MD5"}]})),
            PASSPHRASE,
            "bad_content",
        ),
        (
            "created_at not an integer",
            _sealed(_payload({**DOCUMENT, "created_at": "yesterday"})),
            PASSPHRASE,
            "bad_content",
        ),
    ]
    return [
        {"name": name, "file": data.hex(), "passphrase": passphrase, "code": code}
        for name, data, passphrase, code in cases
    ]


CODE = BackupCode(bytes(range(200, 218)))
ORIGIN = "https://push.contoso.example"
BLOB_NAME = "default"
WRAP_NONCE = bytes(range(50, 74))


def code_vectors() -> dict[str, Any]:
    """Backup codes as people type them (backup_keys.BackupCode.parse) and the secret each
    reads as, and typed codes that must be refused."""
    text = CODE.text
    bare = text.removeprefix(CODE_PREFIX + "-")
    typo = text[:-1] + ("0" if text[-1] != "0" else "1")
    return {
        "valid": [
            {"typed": typed, "secret": CODE.secret.hex()}
            for typed in (
                text,
                text.lower(),
                bare,
                bare.replace("-", ""),
                " " + text.replace("-", " ") + " ",
                text.replace("0", "O").replace("1", "I"),
                text.replace("1", "l"),
            )
        ],
        "invalid": [typo, text[:-4], text + "A", text.replace(text[5], "U", 1), "", "PAB1-"],
    }


def blob_vectors() -> list[dict[str, Any]]:
    """The keys of a broker copy (backup_keys.blob_keys) and the stored blob (wrap) of the
    first sealed vector's file."""
    keys = blob_keys(PASSPHRASE, CODE, ORIGIN, BLOB_NAME, CHEAP)
    sealed = bytes.fromhex(sealed_vectors()[0]["file"])
    return [
        {
            "code": CODE.text,
            "passphrase": PASSPHRASE,
            "origin": ORIGIN,
            "name": BLOB_NAME,
            "opslimit": CHEAP.opslimit,
            "memlimit": CHEAP.memlimit,
            "seed": keys.seed.hex(),
            "blob_id": keys.blob_id,
            "wrap_key": keys.wrap.hex(),
            "nonce": WRAP_NONCE.hex(),
            "sealed": sealed.hex(),
            "stored": wrap(keys, sealed, nonce=WRAP_NONCE).hex(),
        }
    ]


def build() -> dict[str, Any]:
    return {
        "description": "Known-answer vectors of the pushauth backup file (docs/backup-format.md), from `python -m device_agent.backup_vectors`.",
        "format": BACKUP_FORMAT,
        "magic": BACKUP_MAGIC.hex(),
        "sealed": sealed_vectors(),
        "refused": refused_vectors(),
        "codes": code_vectors(),
        "blobs": blob_vectors(),
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(build()))
