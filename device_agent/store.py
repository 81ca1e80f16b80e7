"""The agent's accounts, in the encrypted vault (vault.py) in the agent's home.

Every read of a secret (credential seed, recovery key, TOTP secret) goes through
`AccountStore`. `Account` (a push account) and `Entry` (one line of the account
list) are safe to print: secrets stay in the store, or in `OtpAccount.secret`,
which is left out of its repr.

The vault's `records` hold one ordered list of entries: a push account (its key,
and its TOTP parameters when the RP gave some), or a TOTP/HOTP-only account. The
order is the user's (`move`), and backups keep it.

Several agent processes may use one home at once (a `listen` running while the
user runs `enroll` or `remove`), so every change re-reads the vault under an
exclusive lock and writes it back atomically: no process overwrites another's
change with a stale copy. The derived key is kept in memory, so only the first
open in a process pays for Argon2id.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import messages
from .accounts_model import InvalidAccount, OtpAccount, decode_base32_secret, name_problem
from .legacy_store import LEGACY_FILE, LegacyStoreError, read_legacy, unb64
from .passphrase import Passphrases, WrongPassphrase, kdf_from_env
from .vault import SealedErrorCode, SealedFileError, SealKey, Vault

if TYPE_CHECKING:  # the URI parser is needed only to move an old accounts.json: not on every start
    from protocol.uri import TotpParams

VAULT_FILE = "vault.pav"
LOCK_FILE = ".accounts.lock"
RECORDS_FORMAT = 1

ACTIVE = "active"
REVOKED = "revoked"
# Restored from a backup without a usable key: re-activate with a new enrollment URI.
ACTION_REQUIRED = "action_required"


class StoreError(Exception):
    """The vault cannot be read or does not hold what was asked for."""


class WrongVaultPassphrase(StoreError, WrongPassphrase):
    """The passphrase does not open the vault (on a terminal it is asked again)."""


class PassphraseChanged(StoreError):
    """The vault this process opened no longer opens with its passphrase: another
    command (`passwd`) changed it meanwhile. Never asked again in the middle of a
    command: `listen` and the screen read stdin and own the terminal, so a prompt
    there would hang them; they stop with this message instead."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: the vault's passphrase was changed by another command (pushauth-agent passwd)"
            " since this one started; start it again to type the new passphrase"
        )


@dataclass(frozen=True, slots=True)
class Account:
    """One push account, without its secrets."""

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
    recoverable: bool = False  # a recovery key is kept (and backed up) for it

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True, slots=True)
class Registration:
    """A credential the broker just registered for this device (enrollment,
    re-activation or recovery): what the store keeps of it."""

    rp: str
    rp_name: str
    user: str
    label: str
    broker: str
    cid: str
    device_name: str
    seed: bytes
    totp: TotpParams | None = None
    recovery_seed: bytes | None = None

    def account(self, name: str, *, has_totp: bool, recoverable: bool) -> Account:
        return Account(
            name=name,
            rp=self.rp,
            rp_name=self.rp_name,
            user=self.user,
            label=self.label,
            broker=self.broker,
            cid=self.cid,
            device_name=self.device_name,
            added=int(time.time() * 1000),
            has_totp=has_totp,
            recoverable=recoverable,
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One account as the list shows it: push (maybe with TOTP), or TOTP/HOTP only."""

    name: str
    account: Account | None
    otp: OtpAccount | None

    @property
    def needs_action(self) -> bool:
        return self.account is not None and self.account.status == ACTION_REQUIRED

    @property
    def revoked(self) -> bool:
        """The service removed its push credential: its codes no longer work there either."""
        return self.account is not None and self.account.status == REVOKED


@dataclass(slots=True)
class Record:
    """What the vault holds per entry: the public part and the secrets."""

    name: str
    account: Account | None
    seed: bytes | None = None  # None once revoked: a useless key is deleted at once
    otp: OtpAccount | None = None
    recovery_seed: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they were

    @property
    def entry(self) -> Entry:
        return Entry(self.name, self.account, self.otp)


@dataclass(slots=True)
class State:
    """The vault's content while a change is being made (see `AccountStore.change`)."""

    records: list[Record]
    settings: dict[str, Any]

    def names(self) -> set[str]:
        return {r.name for r in self.records}

    def index(self, name: str) -> int:
        for i, rec in enumerate(self.records):
            if rec.name == name:
                return i
        raise StoreError(f'no account named "{name}" (see: pushauth-agent accounts)')


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


_PUSH_KEYS = {f for f in Account.__dataclass_fields__ if f not in ("name", "has_totp", "recoverable")}


def _record_to_json(rec: Record) -> dict[str, Any]:
    out: dict[str, Any] = dict(rec.extra)
    out["name"] = rec.name
    out["otp"] = rec.otp.to_json() if rec.otp is not None else None
    push: dict[str, Any] | None = None
    if rec.account is not None:
        push = {k: v for k, v in asdict(rec.account).items() if k in _PUSH_KEYS}
        push["seed"] = b64(rec.seed) if rec.seed is not None else None
        push["recovery_seed"] = b64(rec.recovery_seed) if rec.recovery_seed is not None else None
    out["push"] = push
    return out


def _key(raw: Any, what: str) -> bytes | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(key := unb64(raw)) != 32:
        raise ValueError(f"{what} has the wrong size")
    return key


def _record_from_json(raw: Any) -> Record:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError("an account entry is not an object with a name")
    name = raw["name"]
    otp = OtpAccount.from_json(raw["otp"]) if raw.get("otp") is not None else None
    account, seed, recovery = None, None, None
    push = raw.get("push")
    if push is not None:
        if not isinstance(push, dict) or not _PUSH_KEYS - {"status", "status_reason"} <= push.keys():
            raise ValueError(f"account {name!r} has incomplete push fields")
        seed = _key(push.get("seed"), f"the key of {name!r}")
        recovery = _key(push.get("recovery_seed"), f"the recovery key of {name!r}")
        fields = {k: push[k] for k in _PUSH_KEYS if k in push}
        account = Account(name=name, **fields, has_totp=otp is not None, recoverable=recovery is not None)
    if account is None and otp is None:
        raise ValueError(f"account {name!r} has neither a push key nor a code generator")
    extra = {k: v for k, v in raw.items() if k not in ("name", "otp", "push")}
    return Record(name, account, seed, otp, recovery, extra)


def otp_from_totp(params: TotpParams, account: str, issuer: str) -> OtpAccount:
    """The code generator for TOTP parameters an enrollment URI carried."""
    return OtpAccount(
        decode_base32_secret(params.secret),
        account,
        issuer,
        "totp",
        params.algorithm,  # type: ignore[arg-type]  # uri.parse allows only SHA1/256/512
        params.digits,
        params.period,
    )


def unique_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted (2)`, `wanted (3)`... whichever is free."""
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted} ({n})" in taken:
        n += 1
    return f"{wanted} ({n})"


def check_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise StoreError(problem)
    return name.strip()


def _revoked_predecessor(state: State, reg: Registration) -> Record | None:
    for rec in state.records:
        a = rec.account
        if (
            a is not None
            and a.status == REVOKED
            and (a.rp, a.user, a.broker) == (reg.rp, reg.user, reg.broker)
        ):
            return rec
    return None


class AccountStore:
    """Accounts in `<home>/vault.pav` (encrypted, mode 0600, home 0700)."""

    def __init__(self, home: Path, passphrases: Passphrases | None = None) -> None:
        self.home = home
        self.path = home / VAULT_FILE
        self.legacy_path = home / LEGACY_FILE
        self.passphrases = passphrases or Passphrases()
        self._passphrase: str | None = None
        self._key: SealKey | None = None
        # Called after every saved change with the new state (automatic backups).
        self.on_change: Callable[[AccountStore, State], None] | None = None

    # -- the vault ------------------------------------------------------------------

    @property
    def what(self) -> str:
        return f"the pushauth vault {self.path}"

    def passphrase(self) -> str:
        """The vault's passphrase (asked once per process, and checked: it opens the vault)."""
        if self._passphrase is None and self.path.exists():
            self._open()
        if self._passphrase is None:
            self._passphrase = self.passphrases.current(self.what)
        return self._passphrase

    def adopt_passphrase(self, passphrase: str) -> None:
        """Use `passphrase` for a vault made next (restore: the backup's passphrase)."""
        if not self.path.exists():
            self._passphrase = passphrase

    def unlock(self) -> None:
        """Get the passphrase now (a new one, typed twice, if there is no vault yet),
        so that a prompt never comes after something irreversible, like using up an
        enrollment code at the broker."""
        if self.path.exists():
            self._open()
        elif self._passphrase is None:
            self._passphrase = self.passphrases.new(self.what)

    def _open(self) -> Vault | None:
        if not self.path.exists():
            return None
        if self._passphrase is None:  # typed on a terminal: asked again if wrong
            self._passphrase, vault = self.passphrases.opened(self.what, self._open_with)
        else:
            vault = self._open_with(self._passphrase)
        self._key = vault.seal_key
        return vault

    def _open_with(self, passphrase: str) -> Vault:
        try:
            return Vault.open(self.path, passphrase, known=self._key)
        except SealedFileError as exc:
            if exc.code == SealedErrorCode.WRONG_PASSPHRASE:
                if self._key is not None:  # it opened before, with this passphrase
                    raise PassphraseChanged(self.path) from None
                self._passphrase = None  # a later prompt may get it right
                raise WrongVaultPassphrase(f"{self.path}: {exc.message}") from None
            way_back = (
                "" if exc.code == SealedErrorCode.UNSUPPORTED_VERSION else messages.DAMAGED_VAULT_WAY_BACK
            )
            raise StoreError(f"{self.path}: {exc.message}{way_back}") from None

    @staticmethod
    def _parse(vault: Vault) -> State:
        doc = vault.records
        if not doc:  # a vault just made by Vault.create
            return State([], {})
        try:
            if doc.get("format") != RECORDS_FORMAT or not isinstance(doc.get("entries"), list):
                raise ValueError(f"not format {RECORDS_FORMAT}")
            settings = doc.get("settings", {})
            if not isinstance(settings, dict):
                raise ValueError("settings are not an object")
            return State([_record_from_json(r) for r in doc["entries"]], settings)
        except (ValueError, TypeError, KeyError, InvalidAccount) as exc:
            raise StoreError(f"{vault.path} is damaged ({exc}); it was left untouched") from None

    def _read(self) -> State:
        vault = self._open()
        if vault is None and self.legacy_path.exists():
            with self.change() as state:  # moves the old plain file into a new vault
                return state
        return State([], {}) if vault is None else self._parse(vault)

    def _migrate(self) -> Vault | None:
        """Move an old plain accounts.json into a new vault, then delete it."""
        try:
            old = read_legacy(self.legacy_path)
        except LegacyStoreError as exc:
            raise StoreError(str(exc)) from None
        if old is None:
            return None
        from protocol.uri import TotpParams

        records = []
        for raw in old:
            totp = raw.get("totp")
            otp = otp_from_totp(TotpParams(**totp), raw["label"], raw["rp_name"]) if totp else None
            push = {k: raw[k] for k in _PUSH_KEYS if k in raw}
            push["seed"], push["recovery_seed"] = raw.get("seed"), None
            records.append(
                _record_from_json({"name": raw["name"], "otp": otp and otp.to_json(), "push": push})
            )
        vault = self._create()
        self._write(vault, State(records, {}))
        self.legacy_path.unlink()
        return vault

    def _create(self) -> Vault:
        if self._passphrase is None:
            self._passphrase = self.passphrases.new(self.what)
        try:
            vault = Vault.create(self.path, self._passphrase, kdf=kdf_from_env())
        except SealedFileError as exc:
            raise StoreError(f"{self.path}: {exc.message}") from None
        self._key = vault.seal_key
        return vault

    def _write(self, vault: Vault, state: State) -> None:
        vault.records = {
            "format": RECORDS_FORMAT,
            "entries": [_record_to_json(r) for r in state.records],
            "settings": state.settings,
        }
        # vault.accounts stays empty: entries mix push and OTP parts in one order.
        try:
            vault.save()
        except SealedFileError as exc:
            raise StoreError(f"{self.path}: {exc.message}") from None

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.home.stat().st_mode & 0o077:
            # Keys live here: keep a home that was created looser private too.
            os.chmod(self.home, 0o700)

    def _open_lock(self) -> int:
        """The home made private and its lock file opened and locked, before every write:
        a home that cannot be written fails here, saying what (not only the OS's words).

        A failed first command removes the lock file again (`_locked`); a process that
        was waiting for it then holds a lock on a file no longer there, so it locks the
        one at the path anew."""
        lock = self.home / LOCK_FILE
        try:
            for _ in range(100):
                self._prepare_home()
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
                except FileNotFoundError:  # the home was removed in between: make it again
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.path.samestat(os.fstat(fd), os.stat(lock)):
                        return fd
                except FileNotFoundError:
                    pass
                os.close(fd)
            raise OSError(f"{lock} keeps being removed")
        except OSError as exc:
            raise StoreError(f"cannot write the vault in {self.home}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The home's lock, held. A home left without a vault (a refused first change, a
        passphrase not given) is put back as it was: its lock file removed, and the home
        too if this made it, so a failed first command leaves nothing behind."""
        made_home = not self.home.exists()
        fd = self._open_lock()
        try:
            yield
        finally:
            try:
                if not self.path.exists() and not self.legacy_path.exists():
                    with contextlib.suppress(OSError):
                        (self.home / LOCK_FILE).unlink()
                        if made_home:
                            self.home.rmdir()  # only if empty: nothing of anyone else's goes
            finally:
                os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def change(self) -> Iterator[State]:
        """Read, let the caller change the state, write back; all under a lock.

        An exception inside the block writes nothing, and in a home without a vault
        yet makes none (the new passphrase is asked only once there is something to keep).
        """
        with self._locked():
            vault = self._open() or self._migrate()
            state = State([], {}) if vault is None else self._parse(vault)
            yield state
            self._write(vault or self._create(), state)
            if self.on_change is not None:
                # Still under the lock: automatic backups are written in the order of
                # the changes, so an older state never overwrites a newer backup.
                self.on_change(self, state)

    def ensure_vault(self) -> None:
        """Make the (empty) vault now if there is none: a new passphrase is asked here."""
        if not self.path.exists() and not self.legacy_path.exists():
            with self.change():
                pass

    def change_passphrase(self, new: str) -> None:
        """Re-encrypt the vault under `new` (a fresh salt, the current cost)."""
        with self._locked():
            vault = self._open() or self._migrate()
            if vault is None:
                raise StoreError("there is no vault yet (it is made with the first account)")
            try:
                vault.change_passphrase(new)
            except SealedFileError as exc:
                raise StoreError(f"{self.path}: {exc.message}") from None
            self._passphrase, self._key = new, vault.seal_key

    # -- reading ----------------------------------------------------------------

    def state(self) -> State:
        """Everything, read once (for backups)."""
        return self._read()

    def entries(self) -> list[Entry]:
        """Every account, push and TOTP-only, in the user's order."""
        return [rec.entry for rec in self._read().records]

    def settings(self) -> dict[str, Any]:
        return self._read().settings

    def load(self) -> list[Account]:
        """The push accounts, in the user's order."""
        return [rec.account for rec in self._read().records if rec.account is not None]

    def active(self) -> list[Account]:
        return [a for a in self.load() if a.active]

    def by_broker(self) -> dict[str, list[Account]]:
        """Active accounts grouped by broker URL (one connection per broker)."""
        out: dict[str, list[Account]] = {}
        for account in self.active():
            out.setdefault(account.broker, []).append(account)
        return out

    def find_entry(self, key: str) -> Entry:
        """The entry named `key`, or else the push account with credential id `key`."""
        entries = self.entries()
        for entry in entries:
            if entry.name == key:
                return entry
        for entry in entries:
            if entry.account is not None and entry.account.cid == key:
                return entry
        raise StoreError(f'no account named "{key}" (see: pushauth-agent accounts)')

    def find(self, key: str) -> Account:
        """The push account named `key`, or else the one with credential id `key`."""
        entry = self.find_entry(key)
        if entry.account is None:
            raise StoreError(f'"{entry.name}" is a verification-code account, not a push account')
        return entry.account

    def seed(self, cid: str) -> bytes:
        """The signing seed of an active credential."""
        for rec in self._read().records:
            if rec.account and rec.account.cid == cid and rec.seed is not None and rec.account.active:
                return rec.seed
        raise StoreError(f"no active key for credential {cid}")

    def seeds(self, accounts: list[Account]) -> dict[str, bytes]:
        """cid -> seed for these active accounts (what `authenticate` signs with)."""
        wanted = {a.cid for a in accounts}
        return {
            rec.account.cid: rec.seed
            for rec in self._read().records
            if rec.account and rec.account.cid in wanted and rec.seed is not None and rec.account.active
        }

    def recovery_seed(self, name: str) -> bytes | None:
        state = self._read()
        return state.records[state.index(name)].recovery_seed

    def totp(self, name: str) -> OtpAccount | None:
        """The code generator of an account, if it has one."""
        state = self._read()
        return state.records[state.index(name)].otp

    def version(self) -> tuple[int, int, int] | None:
        """A cheap fingerprint of the vault, to notice other processes' changes."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- writing ----------------------------------------------------------------

    def add(self, wanted_name: str, reg: Registration) -> Account:
        """Store a new push account under a unique local name and return it.

        A revoked account for the same user at the same service (and broker) is
        replaced in place, keeping its name and position: enrolling again after the
        service removed this device gives "demo" back, not "demo (2)" beside a dead
        "demo" whose codes no longer work."""
        otp = otp_from_totp(reg.totp, reg.label, reg.rp_name) if reg.totp is not None else None
        recoverable = reg.recovery_seed is not None
        with self.change() as state:
            old = _revoked_predecessor(state, reg)
            if old is not None:
                old.account = reg.account(old.name, has_totp=otp is not None, recoverable=recoverable)
                old.seed, old.otp, old.recovery_seed = reg.seed, otp, reg.recovery_seed
                return old.account
            name = unique_name(wanted_name, state.names())
            account = reg.account(name, has_totp=otp is not None, recoverable=recoverable)
            state.records.append(Record(name, account, reg.seed, otp, reg.recovery_seed))
        return account

    def revoked_predecessor(self, reg: Registration) -> Account | None:
        """The revoked account that `add(reg)` would replace, if any."""
        rec = _revoked_predecessor(self._read(), reg)
        return rec.account if rec is not None else None

    def add_otp(self, otp: OtpAccount, wanted_name: str | None = None) -> Entry:
        """Store a TOTP/HOTP-only account under a unique local name."""
        with self.change() as state:
            name = unique_name(check_name(wanted_name or otp.label), state.names())
            rec = Record(name, None, otp=otp)
            state.records.append(rec)
        return rec.entry

    def add_many_otp(self, otps: list[OtpAccount]) -> list[Entry]:
        """Store several TOTP/HOTP-only accounts at once (one write, as imports do)."""
        with self.change() as state:
            out = []
            for otp in otps:
                rec = Record(unique_name(check_name(otp.label), state.names()), None, otp=otp)
                state.records.append(rec)
                out.append(rec.entry)
        return out

    def replace_otp(self, name: str, otp: OtpAccount) -> None:
        """Store a changed code generator (a HOTP counter moved on)."""
        with self.change() as state:
            state.records[state.index(name)].otp = otp

    def remove(self, name: str) -> Account | Entry:
        """Forget an account and its keys."""
        with self.change() as state:
            # Raised inside the block so that nothing is written.
            rec = state.records.pop(state.index(name))
        return rec.account if rec.account is not None else rec.entry

    def rename(self, name: str, new_name: str) -> Entry:
        new_name = check_name(new_name)
        with self.change() as state:
            rec = state.records[state.index(name)]
            if new_name != name and new_name in state.names():
                raise StoreError(f'there is already an account named "{new_name}"')
            rec.name = new_name
            if rec.account is not None:
                rec.account = replace(rec.account, name=new_name)
        return rec.entry

    def move(self, name: str, position: int) -> list[Entry]:
        """Put an account at `position` (1 = first) in the list; returns the new order."""
        with self.change() as state:
            if not 1 <= position <= len(state.records):
                raise StoreError(f"the position must be 1..{len(state.records)}")
            rec = state.records.pop(state.index(name))
            state.records.insert(position - 1, rec)
        return [r.entry for r in state.records]

    def set_setting(self, key: str, value: Any) -> None:
        with self.change() as state:
            if value is None:
                state.settings.pop(key, None)
            else:
                state.settings[key] = value

    def mark_revoked(self, cid: str, reason: str) -> Account | None:
        """The broker no longer accepts `cid`: keep the entry, delete its key.

        The entry stays so that the user sees what happened (and which RP to ask
        for a new QR code); `remove` forgets it. Returns None if no such account.
        """
        if not any(a.cid == cid for a in self.load()):
            return None  # nothing to write (and no vault to create)
        with self.change() as state:
            for rec in state.records:
                if rec.account is not None and rec.account.cid == cid:
                    rec.account = replace(rec.account, status=REVOKED, status_reason=reason)
                    rec.seed = None
                    return rec.account
        return None

    def reactivate(self, name: str, reg: Registration, *, keep_recovery: bool = False) -> Account:
        """Give an account a new credential, keeping its name and place in the list."""
        with self.change() as state:
            rec = state.records[state.index(name)]
            if reg.totp is not None:
                rec.otp = otp_from_totp(reg.totp, reg.label, reg.rp_name)
            if not keep_recovery:
                rec.recovery_seed = reg.recovery_seed
            rec.seed = reg.seed
            rec.account = reg.account(
                name, has_totp=rec.otp is not None, recoverable=rec.recovery_seed is not None
            )
            return rec.account
