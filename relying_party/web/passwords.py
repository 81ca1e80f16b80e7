"""Password hashing with Argon2id (PyNaCl's libsodium binding, already a dependency)."""

from __future__ import annotations

import asyncio
import threading
import unicodedata

import nacl.exceptions
import nacl.pwhash

MIN_LENGTH = 8  # NIST SP 800-63B: at least 8 characters for a user-chosen password
MAX_LENGTH = 256  # long enough for any passphrase, short enough to refuse junk early

# Argon2id costs 64 MiB per hash: allow only two at once so a burst of sign-ins
# cannot exhaust memory (the other requests wait their turn, in their worker thread).
_slots = threading.BoundedSemaphore(2)


def hash_password(password: str, *, opslimit: int | None = None, memlimit: int | None = None) -> str:
    return nacl.pwhash.argon2id.str(
        password.encode(),
        opslimit=opslimit or nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=memlimit or nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ).decode()


def verify_password(stored: str, password: str) -> bool:
    try:
        with _slots:
            return nacl.pwhash.verify(stored.encode(), password.encode())
    except (nacl.exceptions.CryptoError, ValueError):  # wrong password, or a malformed hash
        return False


# Checked when the user name is unknown, so that the answer takes as long as for
# a known name and does not tell which names exist. A hash made once with
# hash_password's parameters (a test checks they still match), not at import:
# hashing took 0.1 s of every process that imported this module.
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=2,p=1$0CaidZfyA8E6F3rMWTIR7w$/Hw7swSWgZn6qdobTTHUsPM9QIrVCvhsM8wft9HtyY0"
)


async def check(stored: str | None, password: str) -> bool:
    if stored is None:
        await asyncio.to_thread(verify_password, DUMMY_HASH, password)
        return False
    return await asyncio.to_thread(verify_password, stored, password)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"The password must have at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"The password must have at most {MAX_LENGTH} characters."
    if all(unicodedata.category(c)[0] in "CZ" for c in password):  # spaces, zero-width, controls
        return "The password must have characters you can see, not only spaces or invisible ones."
    return None
