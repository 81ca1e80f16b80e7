"""Backups of the vault's accounts, restore into a new home, automatic backups.

What a backup holds (backup.py seals it with the vault passphrase):

- `accounts`: every code generator (TOTP-only accounts and the TOTP of push
  accounts), in list order;
- `push_accounts`: the public part of each push account and, for accounts the RP
  enrolled as recoverable, the recovery key. Never the credential key: it is bound
  to this device, so a restored push account comes back as "action required" (or
  recovers by itself with its recovery key, see recovery.py);
- `settings`: the agent's settings, and `layout`: the list in order, each line
  naming its entry in `accounts` and/or `push_accounts`, with its local name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocol import signing

from . import broker_http
from .accounts_model import OtpAccount
from .backup import Backup, dump_backup, load_backup
from .errors import AgentError, UsageError
from .legacy_store import unb64
from .passphrase import kdf_from_env
from .store import ACTION_REQUIRED, Account, AccountStore, Record, Registration, State, b64
from .vault import SealedFileError, read_sealed_file, write_sealed_file

AUTO_BACKUP = "auto_backup"  # settings key: {"to": "<absolute path>" or "broker", "name": ...}
ACTION_REASON = "restored from a backup: scan a new QR code from {rp_name} (pushauth-agent reactivate)"
_PUSH_FIELDS = ("rp", "rp_name", "user", "label", "broker", "cid", "device_name", "added")


def backup_of(state: State, device_name: str = "") -> Backup:
    accounts: list[OtpAccount] = []
    push: list[dict[str, Any]] = []
    layout: list[dict[str, Any]] = []
    for rec in state.records:
        line: dict[str, Any] = {"name": rec.name, "otp": None, "push": None}
        if rec.otp is not None:
            line["otp"] = len(accounts)
            accounts.append(rec.otp)
        if rec.account is not None:
            line["push"] = len(push)
            fields = {k: v for k, v in asdict(rec.account).items() if k in _PUSH_FIELDS}
            fields["recovery_seed"] = b64(rec.recovery_seed) if rec.recovery_seed is not None else None
            push.append(fields)
        layout.append(line)
    settings = {k: v for k, v in state.settings.items() if k != AUTO_BACKUP}
    return Backup(accounts, push, {"layout": layout, "agent": settings}, device_name)


def backup_bytes(store: AccountStore, state: State | None = None) -> bytes:
    """The sealed backup of the vault, under the vault's passphrase."""
    state = state if state is not None else store.state()
    try:
        return dump_backup(backup_of(state), store.passphrase(), kdf=kdf_from_env())
    except SealedFileError as exc:
        raise UsageError(exc.message) from None


def write_file(path: Path, data: bytes) -> None:
    try:
        write_sealed_file(path, data, "backup file")
    except SealedFileError as exc:
        raise UsageError(exc.message) from None


@dataclass(slots=True)
class Restored:
    """What `restore` did, line by line, for people."""

    ready: list[str] = field(default_factory=list)  # work at once (codes)
    action_required: list[tuple[str, str]] = field(default_factory=list)  # (name, rp_name)
    recoverable: list[str] = field(default_factory=list)  # have a recovery key
    notes: list[str] = field(default_factory=list)


def open_backup(data: bytes, passphrase: str) -> Backup:
    try:
        return load_backup(data, passphrase)
    except SealedFileError as exc:
        raise UsageError(exc.message) from None


def _layout(backup: Backup) -> list[dict[str, Any]]:
    layout = backup.settings.get("layout")
    bad = UsageError("the backup's account list is damaged (a newer or foreign pushauth wrote it?)")
    if not isinstance(layout, list):
        raise bad
    for line in layout:
        if not isinstance(line, dict) or not isinstance(line.get("name"), str):
            raise bad
        for key, items in (("otp", backup.accounts), ("push", backup.push_accounts)):
            i = line.get(key)
            if i is not None and (type(i) is not int or not 0 <= i < len(items)):
                raise bad
        if line.get("otp") is None and line.get("push") is None:
            raise bad
    return layout


def _push_record(name: str, raw: dict[str, Any], otp: OtpAccount | None) -> Record:
    try:
        fields = {k: raw[k] for k in _PUSH_FIELDS}
        recovery = unb64(raw["recovery_seed"]) if raw.get("recovery_seed") else None
        if recovery is not None and len(recovery) != 32:
            raise ValueError("a recovery key of the wrong size")
        account = Account(
            name=name,
            **fields,
            status=ACTION_REQUIRED,
            status_reason=ACTION_REASON.format(rp_name=fields["rp_name"]),
            has_totp=otp is not None,
            recoverable=recovery is not None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the backup's push account {name!r} is damaged ({exc})") from None
    return Record(name, account, None, otp, recovery)


def restore(store: AccountStore, backup: Backup) -> Restored:
    """Fill an empty home with a backup's accounts, in their order, with their names."""
    layout = _layout(backup)
    records = []
    report = Restored()
    for line in layout:
        otp = backup.accounts[line["otp"]] if line.get("otp") is not None else None
        if line.get("push") is None:
            records.append(Record(line["name"], None, otp=otp))
            report.ready.append(line["name"])
            continue
        rec = _push_record(line["name"], backup.push_accounts[line["push"]], otp)
        assert rec.account is not None
        records.append(rec)
        if rec.recovery_seed is not None:
            report.recoverable.append(rec.name)
        else:
            report.action_required.append((rec.name, rec.account.rp_name))
        if otp is not None:
            report.ready.append(rec.name)
    if len({r.name for r in records}) != len(records):
        raise UsageError("the backup's account list is damaged (two accounts with one name)")
    with store.change() as state:
        if state.records:
            raise UsageError(
                "this home has accounts already; restore into a new home (--home DIR), "
                "or add accounts with import"
            )
        state.records.extend(records)
        agent_settings = backup.settings.get("agent")
        if isinstance(agent_settings, dict):
            state.settings.update(agent_settings)
    return report


# -- automatic backups -------------------------------------------------------------


def auto_target(settings: dict[str, Any]) -> dict[str, Any] | None:
    target = settings.get(AUTO_BACKUP)
    return target if isinstance(target, dict) else None


def auto_backup_hook(
    upload: Callable[[AccountStore, dict[str, Any], bytes], None], warn: Callable[[str], None]
) -> Callable[[AccountStore, State], None]:
    """The store's `on_change`: after every change, write the backup where it goes.

    A failed automatic backup never fails the change itself (the vault is saved
    already); the user is told, and the next change tries again.
    """

    def hook(store: AccountStore, state: State) -> None:
        target = auto_target(state.settings)
        if target is None:
            return
        try:
            upload(store, target, backup_bytes(store, state))
        except Exception as exc:  # noqa: BLE001  (any failure is reported, none is fatal)
            warn(f"pushauth-agent: the automatic backup failed: {exc}")

    return hook


BROKER = "broker"


def upload(store: AccountStore, target: dict[str, Any], data: bytes) -> None:
    """Put a sealed backup where `target` says: a file, or the broker's blob store."""
    if target["to"] == BROKER:
        seed = broker_http.blob_seed(store.passphrase(), target["broker"], target["name"])
        broker_http.put_backup(target["broker"], seed, data)
    else:
        write_file(Path(target["to"]), data)


def download(target: dict[str, Any], passphrase: str) -> bytes:
    if target["to"] == BROKER:
        seed = broker_http.blob_seed(passphrase, target["broker"], target["name"])
        return broker_http.get_backup(target["broker"], seed)
    return read_file(Path(target["to"]))


def recover_accounts(store: AccountStore, names: list[str], device_name: str) -> list[str]:
    """Register a new credential for each recoverable account with its recovery key.

    Returns one line per account. An account that cannot recover (the broker is
    down, the RP removed the old device meanwhile) stays "action required".
    """
    lines = []
    for name in names:
        account = store.find(name)
        recovery_seed = store.recovery_seed(name)
        assert recovery_seed is not None
        seed, new_recovery_seed = signing.new_seed(), signing.new_seed()
        try:
            got = broker_http.recover(
                account.broker, account.cid, recovery_seed, seed, new_recovery_seed, device_name
            )
        except AgentError as exc:
            lines.append(f"action required: {name}: it could not recover by itself ({exc})")
            continue
        if (got["rp"], got["user"]) != (account.rp, account.user):
            # A broker must not move an account to another service or user.
            lines.append(f"action required: {name}: the broker answered for another account")
            continue
        store.reactivate(
            name,
            Registration(
                rp=got["rp"],
                rp_name=got["rp_name"],
                user=got["user"],
                label=got["account"],
                broker=account.broker,
                cid=got["id"],
                device_name=device_name,
                seed=seed,
                recovery_seed=new_recovery_seed,
            ),
        )
        lines.append(f"recovered: {name}: this device has its own new key ({account.rp_name} was told)")
    return lines


def read_file(path: Path) -> bytes:
    try:
        return read_sealed_file(path, "backup file")
    except SealedFileError as exc:
        raise UsageError(exc.message) from None
