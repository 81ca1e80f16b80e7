"""The encrypted vault: every account secret of the agent in one passphrase-sealed file.

Also the sealed-file format itself, which backups (backup.py) reuse with their own
magic bytes so that a backup can never be mistaken for a vault or the reverse.

File layout (all integers big-endian):

    magic       8 bytes   b"PAVAULT\\x00" (vault) or b"PABACKUP" (backup)
    version     u16       format version, 1
    kdf         u8        1 = Argon2id v1.3 (libsodium crypto_pwhash_argon2id)
    opslimit    u32       Argon2id passes
    memlimit    u64       Argon2id memory in bytes
    salt        16 bytes
    nonce       24 bytes  XChaCha20-Poly1305 nonce, fresh for every write
    check       16 bytes  BLAKE2b keyed with the derived key: tells a wrong passphrase
                          apart from a damaged file
    length      u64       length of the ciphertext that follows
    ciphertext            XChaCha20-Poly1305 of the JSON payload, with everything
                          above as associated data: a changed header fails to open

The Argon2id parameters live in the header so that they can be raised later: a file
written with old parameters still opens, and `change_passphrase` rewrites it with
the new ones.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hmac
import json
import os
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from .accounts_model import InvalidAccount, OtpAccount
from .files import atomic_write

VAULT_MAGIC = b"PAVAULT\x00"
FORMAT_VERSION = 1
KDF_ARGON2ID = 1
_HEADER = struct.Struct(">8sHBIQ16s24s16sQ")
HEADER_SIZE = _HEADER.size
NONCE_OFFSET = 8 + 2 + 1 + 4 + 8 + 16  # magic, version, kdf, opslimit, memlimit, salt
# A crafted file must not make us allocate terabytes or spin for hours.
MAX_MEMLIMIT = 4 * 1024**3
MAX_OPSLIMIT = 64
MAX_PAYLOAD = 64 * 1024**2


class SealedErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    NOT_SEALED_FILE = "not_sealed_file"  # wrong magic: not a vault / not a backup
    UNSUPPORTED_VERSION = "unsupported_version"
    TRUNCATED = "truncated"
    CORRUPTED = "corrupted"  # damaged or altered after it was written
    WRONG_PASSPHRASE = "wrong_passphrase"
    EMPTY_PASSPHRASE = "empty_passphrase"
    BAD_KDF_PARAMS = "bad_kdf_params"
    BAD_CONTENT = "bad_content"  # decrypts, but the payload is not what we wrote
    CONFLICT = "conflict"  # another program saved the vault since we opened it
    IO_ERROR = "io_error"  # the file system refused (permissions, disk full, ...)


class SealedFileError(Exception):
    """A vault or backup that cannot be created, opened or read. `message` is for people."""

    def __init__(self, code: SealedErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. The default takes about 0.15 s and 64 MiB here (OWASP's minimum is
    19 MiB and 2 passes); tests pass `KdfParams.cheapest()` to stay fast."""

    opslimit: int = 3
    memlimit: int = 64 * 1024**2

    def __post_init__(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= MAX_OPSLIMIT:
            raise SealedFileError(
                SealedErrorCode.BAD_KDF_PARAMS, f"Argon2id passes must be 1..{MAX_OPSLIMIT}"
            )
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT:
            raise SealedFileError(
                SealedErrorCode.BAD_KDF_PARAMS, f"Argon2id memory must be 8 KiB..{MAX_MEMLIMIT} bytes"
            )

    @classmethod
    def cheapest(cls) -> KdfParams:
        """The smallest cost libsodium allows: for tests only, never for real files."""
        return cls(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)


def _passphrase_bytes(passphrase: str) -> bytes:
    # NFC so that "é" typed as one code point or as e + accent derives the same key.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def derive_key(passphrase: str, salt: bytes, kdf: KdfParams) -> bytes:
    return argon2id.kdf(
        nacl.secret.Aead.KEY_SIZE,
        _passphrase_bytes(passphrase),
        salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit,
    )


def _key_check(key: bytes) -> bytes:
    return nacl.hash.blake2b(
        b"", digest_size=16, key=key, person=b"pushauth-keychk", encoder=nacl.encoding.RawEncoder
    )


@dataclass(frozen=True, slots=True)
class SealKey:
    """A derived key with the salt and cost it came from, kept so saves skip Argon2id."""

    key: bytes = field(repr=False)
    salt: bytes
    kdf: KdfParams

    @classmethod
    def new(cls, passphrase: str, kdf: KdfParams) -> SealKey:
        salt = nacl.utils.random(argon2id.SALTBYTES)
        return cls(derive_key(passphrase, salt, kdf), salt, kdf)


def seal(magic: bytes, key: SealKey, payload: bytes, *, nonce: bytes | None = None) -> bytes:
    """Encrypt `payload` into the sealed-file layout with a fresh nonce (`nonce` is for
    known-answer vectors only: a reused nonce under one key breaks the encryption)."""
    if len(payload) > MAX_PAYLOAD:
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, "too much data to seal (over 64 MiB)")
    nonce = nacl.utils.random(nacl.secret.Aead.NONCE_SIZE) if nonce is None else nonce
    length = len(payload) + nacl.secret.Aead.MACBYTES
    header = _HEADER.pack(
        magic,
        FORMAT_VERSION,
        KDF_ARGON2ID,
        key.kdf.opslimit,
        key.kdf.memlimit,
        key.salt,
        nonce,
        _key_check(key.key),
        length,
    )
    ciphertext = nacl.secret.Aead(key.key).encrypt(payload, header, nonce).ciphertext
    return header + ciphertext


def unseal(
    magic: bytes, what: str, data: bytes, passphrase: str, *, known: SealKey | None = None
) -> tuple[bytes, SealKey]:
    """Check and decrypt a sealed file; `what` ("vault", "backup") names it in errors.

    Structure is checked before the (slow) key derivation, so a truncated or foreign
    file is reported as such whatever passphrase was typed. `known` is a key this
    process derived earlier from the same passphrase: when the file still has its
    salt and cost, it is used instead of running Argon2id again.
    """
    if len(data) < len(magic) or data[: len(magic)] != magic:
        raise SealedFileError(SealedErrorCode.NOT_SEALED_FILE, f"this is not a pushauth {what} file")
    if len(data) < HEADER_SIZE:
        raise SealedFileError(SealedErrorCode.TRUNCATED, f"the {what} file is truncated (header incomplete)")
    _, version, kdf_id, opslimit, memlimit, salt, nonce, check, length = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise SealedFileError(
            SealedErrorCode.UNSUPPORTED_VERSION,
            f"the {what} file has format version {version}; this pushauth reads version {FORMAT_VERSION}"
            " (a newer pushauth wrote it?)",
        )
    if kdf_id != KDF_ARGON2ID:
        raise SealedFileError(SealedErrorCode.CORRUPTED, f"the {what} file names an unknown key derivation")
    try:
        kdf = KdfParams(opslimit, memlimit)
    except SealedFileError:
        raise SealedFileError(
            SealedErrorCode.CORRUPTED, f"the {what} file has out-of-range key derivation parameters"
        ) from None
    body = data[HEADER_SIZE:]
    if len(body) < length:
        raise SealedFileError(
            SealedErrorCode.TRUNCATED,
            f"the {what} file is truncated ({len(body)} of {length} encrypted bytes present)",
        )
    if len(body) > length:
        raise SealedFileError(SealedErrorCode.CORRUPTED, f"the {what} file has unexpected trailing data")
    if known is not None and known.salt == salt and known.kdf == kdf:
        key = known.key
    else:
        key = derive_key(passphrase, salt, kdf)
    if not hmac.compare_digest(_key_check(key), check):
        raise SealedFileError(
            SealedErrorCode.WRONG_PASSPHRASE, f"wrong passphrase for this {what} (or its header was altered)"
        )
    try:
        payload = nacl.secret.Aead(key).decrypt(body, data[:HEADER_SIZE], nonce)
    except nacl.exceptions.CryptoError:
        raise SealedFileError(
            SealedErrorCode.CORRUPTED, f"the {what} file is damaged or was altered: it fails authentication"
        ) from None
    return payload, SealKey(key, salt, kdf)


def load_json_object(payload: bytes, what: str, fmt: str) -> dict[str, Any]:
    """Parse a decrypted payload: a JSON object whose "format" is `fmt` (e.g. "vault/1")."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, f"the {what} content is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise SealedFileError(
            SealedErrorCode.UNSUPPORTED_VERSION, f"the {what} content has format {found!r}, expected {fmt!r}"
        )
    return doc


def accounts_from_json(items: Any, what: str) -> list[OtpAccount]:
    if not isinstance(items, list):
        raise SealedFileError(SealedErrorCode.BAD_CONTENT, f"the {what} accounts are not a list")
    try:
        return [OtpAccount.from_json(item) for item in items]
    except InvalidAccount as exc:
        raise SealedFileError(
            SealedErrorCode.BAD_CONTENT, f"the {what} holds an invalid account: {exc}"
        ) from None


def read_sealed_file(path: Path, what: str) -> bytes:
    """The bytes of a vault or backup file, with file system errors as SealedFileError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SealedFileError(SealedErrorCode.NOT_FOUND, f"no {what} at {path}") from None
    except OSError as exc:
        raise SealedFileError(
            SealedErrorCode.IO_ERROR, f"cannot read the {what} {path}: {exc.strerror}"
        ) from None


def write_sealed_file(path: Path, data: bytes, what: str, *, make_parents: bool = True) -> None:
    try:
        atomic_write(path, data, make_parents=make_parents)
    except OSError as exc:
        raise SealedFileError(
            SealedErrorCode.IO_ERROR, f"cannot write the {what} {path}: {exc.strerror}"
        ) from None


@contextlib.contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on a side file, held while a save checks and replaces the vault
    (the vault itself is replaced by rename, so it cannot carry the lock)."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SealedFileError(SealedErrorCode.IO_ERROR, f"cannot lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _nonce_on_disk(path: Path) -> bytes | None:
    try:
        with path.open("rb") as fh:
            return fh.read(HEADER_SIZE)[NONCE_OFFSET : NONCE_OFFSET + nacl.secret.Aead.NONCE_SIZE]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SealedFileError(
            SealedErrorCode.IO_ERROR, f"cannot read the vault {path}: {exc.strerror}"
        ) from None


VAULT_FORMAT = "pushauth-vault/1"


class Vault:
    """The open vault: edit `accounts` (in display order) and `records`, then `save()`.

    `records` holds the agent's other secrets as JSON values under names of its
    choosing (e.g. push credential seeds), so they share the vault's encryption.
    The derived key stays in memory while the vault is open, so `save()` costs no
    Argon2id run; each save uses a fresh nonce. A save refuses (CONFLICT) when another
    program saved the vault since this one was opened, instead of undoing its change.
    """

    def __init__(
        self,
        path: Path,
        key: SealKey,
        accounts: list[OtpAccount],
        records: dict[str, Any],
        nonce_on_disk: bytes | None,
    ) -> None:
        self.path = path
        self.accounts = accounts
        self.records = records
        self._key = key
        self._nonce_on_disk = nonce_on_disk  # which version of the file we hold

    @property
    def kdf(self) -> KdfParams:
        return self._key.kdf

    @classmethod
    def create(cls, path: Path, passphrase: str, *, kdf: KdfParams | None = None) -> Vault:
        """Create an empty vault at `path`; refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise SealedFileError(SealedErrorCode.EXISTS, f"{path} already exists; not overwriting it")
        _check_passphrase(passphrase)
        vault = cls(path, SealKey.new(passphrase, kdf or KdfParams()), [], {}, None)
        try:
            vault.save()
        except SealedFileError as exc:
            if exc.code == SealedErrorCode.CONFLICT:  # created by someone else meanwhile
                raise SealedFileError(
                    SealedErrorCode.EXISTS, f"{path} already exists; not overwriting it"
                ) from None
            raise
        return vault

    @property
    def seal_key(self) -> SealKey:
        """The derived key, for `open(..., known=)` to skip Argon2id on the next open."""
        return self._key

    @classmethod
    def open(cls, path: Path, passphrase: str, *, known: SealKey | None = None) -> Vault:
        path = Path(path)
        data = read_sealed_file(path, "vault")
        payload, key = unseal(VAULT_MAGIC, "vault", data, passphrase, known=known)
        doc = load_json_object(payload, "vault", VAULT_FORMAT)
        if set(doc) != {"format", "accounts", "records"} or not isinstance(doc["records"], dict):
            raise SealedFileError(SealedErrorCode.BAD_CONTENT, "the vault content has unexpected fields")
        nonce = data[NONCE_OFFSET : NONCE_OFFSET + nacl.secret.Aead.NONCE_SIZE]
        return cls(path, key, accounts_from_json(doc["accounts"], "vault"), doc["records"], nonce)

    def save(self) -> None:
        """Write the vault atomically: a crash leaves the previous or the new file, whole."""
        doc = {
            "format": VAULT_FORMAT,
            "accounts": [a.to_json() for a in self.accounts],
            "records": self.records,
        }
        try:
            payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SealedFileError(SealedErrorCode.BAD_CONTENT, f"vault records are not JSON: {exc}") from None
        blob = seal(VAULT_MAGIC, self._key, payload.encode("utf-8"))
        with _write_lock(self.path):
            if _nonce_on_disk(self.path) != self._nonce_on_disk:
                raise SealedFileError(
                    SealedErrorCode.CONFLICT,
                    "the vault was changed by another program since it was opened; nothing was saved:"
                    " open it again and repeat the change",
                )
            write_sealed_file(self.path, blob, "vault")
        self._nonce_on_disk = blob[NONCE_OFFSET : NONCE_OFFSET + nacl.secret.Aead.NONCE_SIZE]

    def change_passphrase(self, new_passphrase: str, *, kdf: KdfParams | None = None) -> None:
        """Re-key with a new passphrase (and new salt, optionally new cost) and save."""
        _check_passphrase(new_passphrase)
        old_key = self._key
        self._key = SealKey.new(new_passphrase, kdf or self._key.kdf)
        try:
            self.save()
        except SealedFileError:
            self._key = old_key  # the file still has the old passphrase
            raise


def _check_passphrase(passphrase: str) -> None:
    if not passphrase:
        raise SealedFileError(SealedErrorCode.EMPTY_PASSPHRASE, "the passphrase cannot be empty")
