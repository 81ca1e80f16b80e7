"""The keys of a broker backup: two secrets, so that a thief of the broker cannot guess.

A backup on the broker must stay safe from whoever holds the broker's whole Redis and
its logs. A key derived from the passphrase alone cannot be: every guess can be tested
offline against the stored blob (or against its id), for every user at once. So, as
1Password's two-secret key derivation does, the key also needs a **backup code**: 144
random bits the agent makes once, keeps in the vault (so automatic backups need not ask)
and shows to the user to write down. The code is never sent anywhere.

    salt   = BLAKE2b(code, broker origin, backup name)                  16 bytes
    argon  = Argon2id(passphrase, salt)                                  32 bytes
    master = BLAKE2b(key=code, argon)                                    32 bytes
    seed   = BLAKE2b(key=master, person "sign")  Ed25519 seed: the blob's id is its
             public key, and it signs every request for the blob
    wrap   = BLAKE2b(key=master, person "wrap")  XChaCha20-Poly1305 key of the wrapping

The broker stores `wrap(sealed backup)`; the sealed backup inside is the ordinary
passphrase-sealed file (backup.py), so an unwrapped blob is a normal backup file.
Without the code, neither the id nor the stored bytes let anyone test a passphrase
guess: both sit behind a 144-bit key. With the code but not the passphrase, each guess
costs an Argon2id run for that one blob. Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from protocol import b64, signing

from .errors import UsageError
from .vault import KdfParams, derive_key

CODE_PREFIX = "PAB1"  # names the scheme, so a code of a later scheme is told apart
_SECRET_BYTES = 18  # 144 bits
_CHECK_BYTES = 2  # a typo is caught here (1 in 65,536 slips through, then: not found)
_GROUP = 4
# Crockford's base32: no I, L, O or U, so that 1/I/L and 0/O cannot be confused.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RFC4648 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_RFC = str.maketrans(_CROCKFORD, _RFC4648)
_FROM_RFC = str.maketrans(_RFC4648, _CROCKFORD)
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_CHARS = (_SECRET_BYTES + _CHECK_BYTES) * 8 // 5  # 32

WRAP_MAGIC = b"PABWRAP1"
_DOMAIN_SALT = "pushauth/backup-salt/v1"


class BackupCodeError(UsageError):
    """A backup code that cannot be right as typed."""


def _digest(data: bytes, person: bytes, *, key: bytes = b"", size: int = 32) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key, person=person, encoder=nacl.encoding.RawEncoder)


def _check(secret: bytes) -> bytes:
    return _digest(secret, b"pushauth-bcchk", size=_CHECK_BYTES)


@dataclass(frozen=True, slots=True)
class BackupCode:
    secret: bytes = field(repr=False)

    @classmethod
    def new(cls) -> BackupCode:
        return cls(nacl.utils.random(_SECRET_BYTES))

    @property
    def text(self) -> str:
        """As the user writes it down: PAB1-XXXX-XXXX-... (8 groups of 4)."""
        raw = base64.b32encode(self.secret + _check(self.secret)).decode().translate(_FROM_RFC)
        groups = [raw[i : i + _GROUP] for i in range(0, len(raw), _GROUP)]
        return "-".join([CODE_PREFIX, *groups])

    @classmethod
    def parse(cls, typed: str) -> BackupCode:
        """A code as typed: any case, dashes and spaces anywhere, the prefix optional."""
        text = "".join(ch for ch in typed.upper() if ch not in "- \t\r\n").translate(_READ_AS)
        if text.startswith(CODE_PREFIX) and len(text) != _CHARS:  # (32 would be the code alone)
            text = text[len(CODE_PREFIX) :]
        hint = "compare it with what you wrote down (case, dashes and spaces do not matter)"
        if not text:
            raise BackupCodeError("no backup code was given")
        bad = sorted({ch for ch in text if ch not in _CROCKFORD})
        if bad:
            raise BackupCodeError(
                f"a backup code has only letters and digits, not {' '.join(repr(c) for c in bad)}: {hint}"
            )
        if len(text) != _CHARS:
            raise BackupCodeError(
                f"a backup code has {_CHARS} letters and digits after {CODE_PREFIX}, this one"
                f" {len(text)}: {hint}"
            )
        raw = base64.b32decode(text.translate(_TO_RFC))
        secret, check = raw[:_SECRET_BYTES], raw[_SECRET_BYTES:]
        if not hmac.compare_digest(check, _check(secret)):
            raise BackupCodeError(f"this backup code is mistyped (its check letters do not match): {hint}")
        return cls(secret)


@dataclass(frozen=True, slots=True)
class BlobKeys:
    """The keys of one broker backup: `seed` names and signs it, `wrap` encrypts it."""

    seed: bytes = field(repr=False)
    wrap: bytes = field(repr=False)

    @property
    def public_key(self) -> bytes:
        return signing.public_key(self.seed)

    @property
    def blob_id(self) -> str:
        return b64.encode(self.public_key)


def blob_keys(passphrase: str, code: BackupCode, origin: str, name: str, kdf: KdfParams) -> BlobKeys:
    """The keys of the backup `name` on the broker at `origin` (its HTTP origin).

    The Argon2id cost is fixed by the caller (not read from anything stored), since a
    new device must derive the same keys from what the user types.
    """
    salt = _digest(
        signing.canonical(_DOMAIN_SALT, code.secret, origin, name),
        b"pushauth-bsalt",
        size=argon2id.SALTBYTES,
    )
    master = _digest(derive_key(passphrase, salt, kdf), b"pushauth-bmastr", key=code.secret)
    return BlobKeys(
        seed=_digest(b"", b"pushauth-bsign", key=master), wrap=_digest(b"", b"pushauth-bwrap", key=master)
    )


def legacy_blob_seed(passphrase: str, origin: str, name: str, kdf: KdfParams) -> bytes:
    """The blob seed of agents before backup codes (passphrase alone): used only to
    delete such a blob, which a thief of the broker could attack offline."""
    salt = _digest(f"{origin}\0{name}".encode(), b"pushauth-blob", size=argon2id.SALTBYTES)
    return argon2id.kdf(32, passphrase.encode(), salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit)


def wrap(keys: BlobKeys, sealed: bytes, *, nonce: bytes | None = None) -> bytes:
    """What the broker stores: magic, nonce, XChaCha20-Poly1305 of the sealed backup
    (magic and blob id as associated data). `nonce` is for known-answer vectors only."""
    nonce = nacl.utils.random(nacl.secret.Aead.NONCE_SIZE) if nonce is None else nonce
    box = nacl.secret.Aead(keys.wrap).encrypt(sealed, WRAP_MAGIC + keys.public_key, nonce)
    return WRAP_MAGIC + nonce + box.ciphertext


def unwrap(keys: BlobKeys, stored: bytes) -> bytes:
    """The sealed backup inside a stored blob; any damage is a UsageError."""
    head = len(WRAP_MAGIC) + nacl.secret.Aead.NONCE_SIZE
    if len(stored) < head + nacl.secret.Aead.MACBYTES or not stored.startswith(WRAP_MAGIC):
        raise UsageError("the broker's copy of the backup is not a pushauth broker backup (altered?)")
    nonce = stored[len(WRAP_MAGIC) : head]
    try:
        return nacl.secret.Aead(keys.wrap).decrypt(stored[head:], WRAP_MAGIC + keys.public_key, nonce)
    except nacl.exceptions.CryptoError:
        raise UsageError("the broker's copy of the backup fails authentication: it was altered") from None
