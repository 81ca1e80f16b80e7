"""The secrets of the recovery methods (recovery codes, temporary access passes): how
they are made, read back from what a person typed, and hashed for storage.

Both are random, high-entropy strings that the RP shows once and keeps only as a
hash. The hash is scrypt (memory-hard, in the standard library) rather than a keyed
hash: the demo RP has no secret of its own apart from this database (its broker API
key can be rotated, which must not void anyone's codes), so a key would sit beside
the hashes it protects. With at least 50 random bits per secret and ~16 MiB / tens of
ms per scrypt, a stolen database cannot be searched offline, while a sign-in costs
one hash: each set of codes (and each pass) has one salt, so what was typed is
hashed once and looked up by equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# Crockford's base32, lowercase: no i, l, o, u, so nothing reads as another symbol
# (what is typed as i, l or o is read as 1, 1 or 0).
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_READ_AS = str.maketrans({"i": "1", "l": "1", "o": "0"})
SALT_BYTES = 16
# scrypt's cost: 2^14 x 8 x 128 B = 16 MiB of memory per hash (OpenSSL's default
# limit is 32 MiB).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


def new_secret(groups: int, group_len: int) -> str:
    """groups x group_len random symbols (5 bits each), grouped with dashes for reading."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(group_len)) for _ in range(groups))


def normalize(text: str) -> str | None:
    """What a person typed as the bare symbols (case, spaces and dashes ignored), or
    None if it cannot be one of ours."""
    bare = "".join(text.split()).replace("-", "").lower().translate(_READ_AS)
    if not bare or any(ch not in ALPHABET for ch in bare):
        return None
    return bare


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def digest(secret: str, salt: bytes) -> bytes:
    """scrypt of the normalized secret; call it off the event loop (it takes a while)."""
    bare = normalize(secret)
    if bare is None:
        raise ValueError("not a recovery secret")
    return hashlib.scrypt(bare.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


async def digest_async(secret: str, salt: bytes) -> bytes:
    # asyncio imported here: `pushauth-rp`'s parser imports access_pass.py (and this
    # module) for its --minutes range, and a CLI run needs no event loop.
    import asyncio

    return await asyncio.to_thread(digest, secret, salt)


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
