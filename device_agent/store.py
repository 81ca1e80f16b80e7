"""The agent's accounts: one JSON file in the agent's home, behind one small class.

Every read of a secret (credential seed, TOTP secret) goes through `AccountStore`,
so that a later change can swap the plain file for an encrypted vault without
touching callers. `Account` itself holds no secrets and is safe to print.

Several agent processes may use one home at once (a `listen` running while the
user runs `enroll` or `remove`), so every change re-reads the file under an
exclusive lock and writes it back atomically: no process overwrites another's
change with a stale copy.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from protocol.uri import TotpParams

from .files import atomic_write

STORE_FILE = "accounts.json"
LOCK_FILE = ".accounts.lock"
FORMAT_VERSION = 1

ACTIVE = "active"
REVOKED = "revoked"


class StoreError(Exception):
    """The accounts file cannot be read or does not hold what was asked for."""


@dataclass(frozen=True, slots=True)
class Account:
    """One enrolled account, without its secrets."""

    name: str  # local, unique name chosen from the account label
    rp: str
    rp_name: str
    user: str
    label: str  # the account label the RP gave
    broker: str  # the broker's WebSocket URL
    cid: str  # credential id at the broker
    device_name: str
    added: int  # Unix ms
    status: str = ACTIVE
    status_reason: str | None = None  # why it was revoked, for people
    has_totp: bool = False

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(slots=True)
class _Record:
    """What the file holds per account: the public part and the secrets."""

    account: Account
    seed: bytes | None  # None once revoked: a useless key is deleted at once
    totp: TotpParams | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they were


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_json(rec: _Record) -> dict[str, Any]:
    out: dict[str, Any] = dict(rec.extra)
    out.update(asdict(rec.account))
    out["seed"] = _b64(rec.seed) if rec.seed is not None else None
    out["totp"] = asdict(rec.totp) if rec.totp is not None else None
    del out["has_totp"]  # derived from "totp"
    return out


_ACCOUNT_KEYS = {f for f in Account.__dataclass_fields__ if f != "has_totp"}


def _from_json(raw: Any) -> _Record:
    if not isinstance(raw, dict):
        raise ValueError("an account entry is not an object")
    missing = {k for k in _ACCOUNT_KEYS if k not in raw and k not in ("status", "status_reason")}
    if missing:
        raise ValueError(f"an account entry lacks {sorted(missing)}")
    seed = _unb64(raw["seed"]) if raw.get("seed") else None
    if seed is not None and len(seed) != 32:
        raise ValueError(f"account {raw['name']!r} has a key of the wrong size")
    totp = TotpParams(**raw["totp"]) if raw.get("totp") else None
    fields = {k: raw[k] for k in _ACCOUNT_KEYS if k in raw}
    account = Account(**fields, has_totp=totp is not None)
    extra = {k: v for k, v in raw.items() if k not in _ACCOUNT_KEYS and k not in ("seed", "totp")}
    return _Record(account, seed, totp, extra)


def unique_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted (2)`, `wanted (3)`... whichever is free."""
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted} ({n})" in taken:
        n += 1
    return f"{wanted} ({n})"


class AccountStore:
    """Accounts in `<home>/accounts.json` (mode 0600, home 0700)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / STORE_FILE

    # -- reading ----------------------------------------------------------------

    def _read(self) -> list[_Record]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} accounts file")
            if not isinstance(doc.get("accounts"), list):
                raise ValueError("no account list")
            return [_from_json(raw) for raw in doc["accounts"]]
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            # Never "repair" by overwriting: the file holds keys the user cannot get back.
            raise StoreError(f"{self.path} is damaged ({exc}); it was left untouched") from None

    def load(self) -> list[Account]:
        """All accounts, in the user's order."""
        return [rec.account for rec in self._read()]

    def active(self) -> list[Account]:
        return [a for a in self.load() if a.active]

    def by_broker(self) -> dict[str, list[Account]]:
        """Active accounts grouped by broker URL (one connection per broker)."""
        out: dict[str, list[Account]] = {}
        for account in self.active():
            out.setdefault(account.broker, []).append(account)
        return out

    def find(self, key: str) -> Account:
        """The account named `key`, or else the one with credential id `key`."""
        accounts = self.load()
        for account in accounts:
            if account.name == key:
                return account
        for account in accounts:
            if account.cid == key:
                return account
        raise StoreError(f'no account named "{key}" (see: pushauth-agent accounts)')

    def seed(self, cid: str) -> bytes:
        """The signing seed of an active credential."""
        for rec in self._read():
            if rec.account.cid == cid and rec.seed is not None and rec.account.active:
                return rec.seed
        raise StoreError(f"no active key for credential {cid}")

    def seeds(self, accounts: list[Account]) -> dict[str, bytes]:
        """cid -> seed for these active accounts (what `authenticate` signs with)."""
        wanted = {a.cid for a in accounts}
        return {
            rec.account.cid: rec.seed
            for rec in self._read()
            if rec.account.cid in wanted and rec.seed is not None and rec.account.active
        }

    def totp(self, name: str) -> TotpParams | None:
        for rec in self._read():
            if rec.account.name == name:
                return rec.totp
        raise StoreError(f'no account named "{name}"')

    def version(self) -> tuple[int, int, int] | None:
        """A cheap fingerprint of the file, to notice other processes' changes."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- writing ----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[_Record]]:
        """Read, let the caller change the records, write back; all under a lock."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.home.stat().st_mode & 0o077:
            # Keys live here: keep a home that was created looser private too.
            os.chmod(self.home, 0o700)
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._read()
            yield records
            self._write(records)
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, records: list[_Record]) -> None:
        doc = {"version": FORMAT_VERSION, "accounts": [_to_json(r) for r in records]}
        atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)

    def add(
        self,
        *,
        wanted_name: str,
        rp: str,
        rp_name: str,
        user: str,
        label: str,
        broker: str,
        cid: str,
        device_name: str,
        seed: bytes,
        totp: TotpParams | None = None,
    ) -> Account:
        """Store a new account under a unique local name and return it."""
        with self._locked() as records:
            name = unique_name(wanted_name, {r.account.name for r in records})
            account = Account(
                name=name,
                rp=rp,
                rp_name=rp_name,
                user=user,
                label=label,
                broker=broker,
                cid=cid,
                device_name=device_name,
                added=int(time.time() * 1000),
                has_totp=totp is not None,
            )
            records.append(_Record(account, seed, totp))
        return account

    def remove(self, name: str) -> Account:
        """Forget an account and its keys."""
        with self._locked() as records:
            for i, rec in enumerate(records):
                if rec.account.name == name:
                    del records[i]
                    return rec.account
            # Raised inside the block so that nothing is written.
            raise StoreError(f'no account named "{name}"')

    def mark_revoked(self, cid: str, reason: str) -> Account | None:
        """The broker no longer accepts `cid`: keep the entry, delete its key.

        The entry stays so that the user sees what happened (and which RP to ask
        for a new QR code); `remove` forgets it. Returns None if no such account.
        """
        with self._locked() as records:
            for rec in records:
                if rec.account.cid == cid:
                    rec.account = replace(rec.account, status=REVOKED, status_reason=reason)
                    rec.seed = None
                    return rec.account
        return None
