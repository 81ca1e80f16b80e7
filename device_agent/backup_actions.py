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

import contextlib
import hashlib
import shlex
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from protocol import signing
from protocol.b64 import decode as b64decode
from protocol.errors import ErrorCode

from . import auto_backup_status, backup_keys, broker_http, device_names
from .accounts_model import OtpAccount
from .backup import Backup, dump_backup, load_backup
from .backup_keys import BackupCode, BlobKeys
from .display import local_time, shown
from .errors import AgentError, Refused, Unreachable, UsageError, WrongClock
from .legacy_store import unb64
from .passphrase import PassphraseError, WrongPassphrase, check_strength, kdf_from_env
from .store import ACTION_REQUIRED, Account, AccountStore, Record, Registration, State, b64
from .vault import SealedErrorCode, SealedFileError, read_sealed_file, write_sealed_file

AUTO_BACKUP = "auto_backup"  # settings key: {"to": "<absolute path>" or "broker", "name": ...}
# The backup code (backup_keys.py) as the user wrote it down: kept in the vault so that
# later backups need not ask; never put in a backup (it is the second secret of one).
BACKUP_CODE = "backup_code"
# The broker backups this device wrote ([{"broker", "name"}]): what a passphrase change
# or a "not me" rewrites and whose old copies it deletes.
BROKER_BACKUPS = "broker_backups"
# Old copies not deleted yet (the broker was down): [{"broker", "seed"}], retried at the
# next backup to the broker. The seed opens nothing by itself (the blob also needs the
# old passphrase), and it lives in the encrypted vault.
STALE_BLOBS = "stale_broker_backups"
_LOCAL_SETTINGS = {AUTO_BACKUP, BACKUP_CODE, BROKER_BACKUPS, STALE_BLOBS, device_names.SETTING}
ACTION_REASON = "restored from a backup: scan a new QR code from {rp_name} (pushauth-agent reactivate)"
# A recoverable account whose recovery could not reach the broker: its recovery key is
# still unused and kept in the vault, so it can recover later without a new QR code.
NOT_RECOVERED_YET = (
    "not recovered yet, the broker could not be reached: once it can, pushauth-agent reactivate {name}"
    " tries its recovery key again (or scan a new QR code from {rp_name}: pushauth-agent reactivate"
    " {name} URI)"
)
# A recoverable account whose recovery the broker refused as made at the wrong time:
# its recovery key is unused too.
WRONG_CLOCK = (
    "not recovered yet, this device's clock was wrong: once it is right, pushauth-agent reactivate"
    " {name} tries its recovery key again"
)
# A recoverable account whose recovery the broker refused because the user has as many
# devices at the service as it allows: its recovery key is unused too.
TOO_MANY_DEVICES = (
    "not recovered yet, {rp_name} allows no more devices for this account: remove one you no longer"
    " use on its Security info page, but not {old} (its key is what recovers this account), then"
    " pushauth-agent reactivate {name} tries its recovery key again"
)
# New recovery keys and a new backup code end what an older backup can do with push
# accounts, but a verification-code secret is the service's: only it can make a new one.
OLD_CODES_STILL_WORK = (
    "Verification codes in older backups still work, for whoever has one: to end those, remove each"
    " account with codes at its service and add it again."
)
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
    settings = {k: v for k, v in state.settings.items() if k not in _LOCAL_SETTINGS}
    return Backup(accounts, push, {"layout": layout, "agent": settings}, device_name)


def backup_bytes(store: AccountStore, state: State | None = None, passphrase: str | None = None) -> bytes:
    """The sealed backup of the vault, under the vault's passphrase (which must be strong:
    a vault made before passphrases were checked may have a weak one)."""
    state = state if state is not None else store.state()
    passphrase = passphrase if passphrase is not None else store.passphrase()
    try:
        check_strength(passphrase, "the vault passphrase")
    except PassphraseError as exc:
        raise UsageError(
            f"{exc}; a backup is encrypted with it, so change it first: pushauth-agent passwd"
        ) from None
    try:
        return dump_backup(backup_of(state), passphrase, kdf=kdf_from_env())
    except SealedFileError as exc:
        raise UsageError(exc.message) from None


def check_file_target(store: AccountStore, path: Path, *, force: bool) -> None:
    """Refuse a backup file that would destroy something: any existing file unless
    `force`, and never (even with `force`) the vault or another file of the agent's home,
    where a backup would also be lost with the device."""
    home = store.home.resolve()
    target = path.resolve()  # through symbolic links
    own = [store.path, store.legacy_path, *store.home.glob(".*")]
    if target == home or target.parent == home or any(_same_file(target, f) for f in own):
        what = "the agent's vault" if _same_file(target, store.path) else "in the agent's home"
        raise UsageError(
            f"{path} is {what} ({store.home}): a backup never goes there, even with --force;"
            " write it somewhere else (a synced folder, another disk)"
        )
    if path.is_dir():
        raise UsageError(
            f"{path} is a folder; nothing was written: name a file in it, e.g. {path / 'pushauth.backup'}"
        )
    check_regular(path)
    if not force and (path.exists() or path.is_symlink()):
        raise UsageError(f"{path} exists already; nothing was written (--force replaces it)")
    check_folder(path)


def check_regular(path: Path) -> None:
    """Only a regular file (or nothing) is ever replaced by a backup, even with --force:
    the write renames a new file over the path, which would put a plain file in place
    of a device (/dev/null), a named pipe or a socket, and break whatever uses it."""
    try:
        mode = path.stat().st_mode  # through a symbolic link: what it points to
    except FileNotFoundError:
        return  # nothing there (or a dangling link): a new file is made
    except OSError as exc:
        raise UsageError(f"cannot check {path}: {exc.strerror}; nothing was written") from None
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{path} is not a regular file (a device, a pipe or a socket): a backup never replaces it,"
            " even with --force; nothing was written"
        )


def check_folder(path: Path) -> None:
    """A backup goes into a folder that exists: a mistyped one is refused, never made
    (a backup in a folder no sync client watches is a backup nobody has)."""
    if not path.parent.is_dir():
        raise UsageError(
            f"the folder {path.parent} does not exist; nothing was written (make it first, or check the path)"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)  # a hard link to the vault too
    except OSError:
        return False


def write_file(path: Path, data: bytes) -> None:
    check_folder(path)  # an automatic backup's folder may have gone since (a sync folder unmounted)
    check_regular(path)  # or its file been replaced by something that is not a file
    try:
        write_sealed_file(path, data, "backup file", make_parents=False)
    except SealedFileError as exc:
        raise UsageError(exc.message) from None


@dataclass(slots=True)
class Restored:
    """What `restore` did, line by line, for people."""

    ready: list[str] = field(default_factory=list)  # work at once (codes)
    action_required: list[tuple[str, str]] = field(default_factory=list)  # (name, rp_name)
    recoverable: list[str] = field(default_factory=list)  # have a recovery key
    notes: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # every account, in the backup's order

    def lines(self, recovered: dict[str, str]) -> list[str]:
        """One line per account, in the backup's order: its push part's state (with
        `recovered`, what recover_accounts said) and whether its codes work at once."""
        needs = dict(self.action_required)
        out = []
        for name in self.order:
            codes = name in self.ready
            if name in recovered:
                line = recovered[name]
            elif name in needs:
                line = (
                    f"action required: {shown(name)}: get a new QR code from {shown(needs[name])}, "
                    f"then: pushauth-agent reactivate {shlex.quote(shown(name))} URI"
                )
            else:
                out.append(f"ready: {shown(name)}")
                continue
            out.append(line + ("; its verification codes work at once" if codes else ""))
        return out


class WrongBackupPassphrase(UsageError, WrongPassphrase):
    """The passphrase does not open the backup (on a terminal it is asked again)."""


def open_backup(data: bytes, passphrase: str) -> Backup:
    try:
        return load_backup(data, passphrase)
    except SealedFileError as exc:
        if exc.code == SealedErrorCode.WRONG_PASSPHRASE:
            raise WrongBackupPassphrase(exc.message) from None
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
        # Checked here, not trusted: the store keeps these as they are, and the web
        # authenticator's reader (js/backup.js) refuses the same (test_webapp_backup.py).
        for key, value in fields.items():
            if (type(value) is not int) if key == "added" else not isinstance(value, str):
                raise TypeError(f"{key} is missing or invalid")
        seed_text = raw.get("recovery_seed")
        if seed_text is not None and not isinstance(seed_text, str):
            raise TypeError("its recovery key is not text")
        recovery = b64decode(seed_text) if seed_text else None
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


def restore(store: AccountStore, backup: Backup, code: BackupCode | None = None) -> Restored:
    """Fill an empty home with a backup's accounts, in their order, with their names;
    `code`, the backup code it was restored with, is kept for this device's backups."""
    layout = _layout(backup)
    records = []
    report = Restored()
    for line in layout:
        report.order.append(line["name"])
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
            state.settings.update({k: v for k, v in agent_settings.items() if k not in _LOCAL_SETTINGS})
        if code is not None:
            state.settings[BACKUP_CODE] = code.text
    return report


# -- automatic backups -------------------------------------------------------------


def auto_target(settings: dict[str, Any]) -> dict[str, Any] | None:
    target = settings.get(AUTO_BACKUP)
    return target if isinstance(target, dict) else None


def auto_backup_hook(
    upload: Callable[[AccountStore, dict[str, Any], bytes, dict[str, Any]], None], warn: Callable[[str], None]
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
            upload(store, target, backup_bytes(store, state), state.settings)
        except Exception as exc:  # noqa: BLE001  (any failure is reported, none is fatal)
            auto_backup_status.failed(store.home, str(exc))
            # Say what it means: a device lost now would come back without this change.
            warn(
                f"pushauth-agent: the automatic backup failed: {exc}. The change is saved on this device,"
                " but the backup does not have it yet: the next change tries again (and listen, once it"
                f" reaches the broker), or write it now with: {_backup_again(target)}"
            )
        else:
            auto_backup_status.written(store.home)

    return hook


def retry_auto_backup(store: AccountStore) -> str | None:
    """Write the automatic backup again if its last attempt failed (listen calls this
    when it reaches a broker): a line saying it did, or None (nothing to do, or it
    failed again: the status keeps the error, and a later try may do better)."""
    target = auto_target(store.settings())
    if target is None or not auto_backup_status.read(store.home).behind:
        return None
    try:
        upload(store, target, backup_bytes(store), store.settings())
    except Exception as exc:  # noqa: BLE001  (as in the hook: none is fatal)
        auto_backup_status.failed(store.home, str(exc))
        return None
    auto_backup_status.written(store.home)
    return f"The automatic backup ({where_to(target)}) was written again: it has every change now."


def auto_lines(store: AccountStore) -> list[str]:
    """What `backup auto` says: where automatic backups go, and whether they are current."""
    target = auto_target(store.settings())
    if target is None:
        return ["Automatic backups are off (backup auto on --to WHERE turns them on)."]
    lines = [f"Automatic backups are on: {where_to(target)}."]
    if (repaired := repair_auto_backup(store)) is not None:
        lines.append(repaired)
    status = auto_backup_status.read(store.home)
    if status.behind and status.behind_since_ms is not None:
        lines.append(
            f"The backup does not have the changes made since {local_time(status.behind_since_ms)}: the last"
            f" attempt failed ({status.error or 'no reason kept'}). listen writes it again once it reaches"
            f" the broker, the next change tries again, or write it now with: {_backup_again(target)}"
        )
    elif status.written_ms is not None:
        lines.append(f"Last written {local_time(status.written_ms)}: it has every change.")
    return lines


def where_to(target: dict[str, Any]) -> str:
    if target.get("to") == BROKER:
        return f"to the broker {target.get('broker')} (backup name {target.get('name')!r})"
    return f"to the file {target.get('to')}"


def _backup_again(target: dict[str, Any]) -> str:
    """The command that writes the automatic backup by hand (the file exists: --force)."""
    if target.get("to") == BROKER:
        return (
            f"pushauth-agent backup --to broker --broker {shlex.quote(str(target.get('broker')))}"
            f" --backup-name {shlex.quote(str(target.get('name')))}"
        )
    return f"pushauth-agent backup --to {shlex.quote(str(target.get('to')))} --force"


BROKER = "broker"


def code_of(settings: dict[str, Any]) -> BackupCode | None:
    """This device's backup code, if it made (or restored with) one."""
    text = settings.get(BACKUP_CODE)
    return BackupCode.parse(text) if isinstance(text, str) else None


def blob_keys(passphrase: str, code: BackupCode, target: dict[str, Any]) -> BlobKeys:
    origin = broker_http.http_base(target["broker"])
    return backup_keys.blob_keys(passphrase, code, origin, target["name"], kdf_from_env())


def _where(target: dict[str, Any]) -> str:
    return f"{broker_http.http_base(target['broker'])} (backup name {target['name']!r})"


@contextlib.contextmanager
def _quietly(store: AccountStore) -> Iterator[None]:
    """Change settings without the automatic backup that follows every change (the
    caller writes the backups itself, in the order it needs)."""
    hook, store.on_change = store.on_change, None
    try:
        yield
    finally:
        store.on_change = hook


def upload(
    store: AccountStore, target: dict[str, Any], data: bytes, settings: dict[str, Any] | None = None
) -> None:
    """Put a sealed backup where `target` says: a file, or the broker's blob store
    (wrapped under the keys of passphrase and backup code, backup_keys.py)."""
    settings = settings if settings is not None else store.settings()
    if target["to"] == BROKER:
        code = code_of(settings)
        if code is None:
            raise UsageError("this device has no backup code yet: run pushauth-agent backup --to broker")
        keys = blob_keys(store.passphrase(), code, target)
        data = backup_keys.wrap(keys, data)
        broker_http.put_backup(target["broker"], keys.seed, data)
    else:
        write_file(Path(target["to"]), data)
    if target == auto_target(settings):  # what repair_auto_backup compares the copy with
        auto_backup_status.stored(store.home, _digest(data))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_copy(store: AccountStore, target: dict[str, Any]) -> bytes | None:
    """The bytes at the automatic backup's target as they are now (None: none there)."""
    if target["to"] == BROKER:
        code = code_of(store.settings())
        if code is None:
            return None
        try:
            return broker_http.get_backup(target["broker"], blob_keys(store.passphrase(), code, target).seed)
        except Refused as exc:
            if exc.code != "not_found":
                raise
            return None
    try:
        return Path(target["to"]).read_bytes()
    except FileNotFoundError:
        return None


def repair_auto_backup(store: AccountStore) -> str | None:
    """Compare the automatic backup's copy with what this device stored there last, and
    write it again if it is gone or another (the broker's Redis restored from an older
    copy keeps an older blob, or none, and says nothing; a synced folder can do the same).
    A line saying what was found and done, or None (the copy is the last one written, or
    nothing to compare: no automatic backup, one that is behind, or no digest kept yet)."""
    target = auto_target(store.settings())
    status = auto_backup_status.read(store.home)
    if target is None or status.behind or status.digest is None:
        return None
    try:
        copy = _stored_copy(store, target)
    except (AgentError, OSError) as exc:
        return f"The automatic backup ({where_to(target)}) could not be checked: {exc}."
    if copy is not None and _digest(copy) == status.digest:
        return None
    what = "is gone" if copy is None else "is not the one this device wrote last (an older one?)"
    lead = f"The automatic backup ({where_to(target)}) {what}"
    cause = (
        "the broker's data may have been restored from an older copy"
        if target["to"] == BROKER
        else "the file was replaced or deleted"
    )
    try:
        upload(store, target, backup_bytes(store), store.settings())
    except Exception as exc:  # noqa: BLE001  (as in the hook: none is fatal)
        auto_backup_status.failed(store.home, str(exc))
        return f"{lead} ({cause}), and could not be written again: {exc}."
    auto_backup_status.written(store.home)
    return f"{lead} ({cause}): it was written again and has every change now."


class NoBrokerBackup(Refused, WrongPassphrase):
    """The broker has no backup where this passphrase (with the code and name) points. A
    mistyped passphrase looks exactly so (the broker cannot tell: it never sees one), so
    on a terminal it is asked again, as a wrong one is for a file."""

    retry_words = "no backup on the broker for this passphrase and backup code"


def download(target: dict[str, Any], passphrase: str, code: BackupCode | None = None) -> bytes:
    """The sealed backup at `target`; one on the broker needs the backup code too."""
    if target["to"] == BROKER:
        if code is None:
            raise UsageError("a backup on the broker opens only with its backup code")
        keys = blob_keys(passphrase, code, target)
        try:
            blob = broker_http.get_backup(target["broker"], keys.seed)
        except Refused as exc:
            if exc.code != "not_found":
                raise
            raise NoBrokerBackup(str(exc), code=exc.code) from None
        return backup_keys.unwrap(keys, blob)
    return read_file(Path(target["to"]))


def ensure_code(store: AccountStore) -> tuple[BackupCode, bool]:
    """This device's backup code, made now if it has none; True if it was just made."""
    code = code_of(store.settings())
    if code is not None:
        return code, False
    code = BackupCode.new()
    with _quietly(store):
        store.set_setting(BACKUP_CODE, code.text)
    return code, True


def broker_targets(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The broker backups this device keeps: those it wrote, and the automatic one."""
    out: list[dict[str, Any]] = []
    listed = settings.get(BROKER_BACKUPS)
    for item in [*(listed if isinstance(listed, list) else []), auto_target(settings)]:
        if (
            isinstance(item, dict)
            and item.get("to", BROKER) == BROKER
            and "broker" in item
            and "name" in item
        ):
            target = {"to": BROKER, "broker": item["broker"], "name": item["name"]}
            if target not in out:
                out.append(target)
    return out


def _remember(store: AccountStore, target: dict[str, Any], keep: bool) -> None:
    entry = {"broker": target["broker"], "name": target["name"]}
    with _quietly(store), store.change() as state:
        listed = [e for e in state.settings.get(BROKER_BACKUPS) or [] if e != entry]
        state.settings[BROKER_BACKUPS] = [*listed, entry] if keep else listed
        if not keep and auto_target(state.settings) == target:
            state.settings.pop(AUTO_BACKUP, None)  # or the next change would write it again


def retry_stale(store: AccountStore) -> list[str]:
    """Delete old copies that a passphrase change or a "not me" could not delete."""
    stale = store.settings().get(STALE_BLOBS)
    if not isinstance(stale, list) or not stale:
        return []
    left, lines = [], []
    for item in stale:
        try:
            broker_http.delete_backup(item["broker"], unb64(item["seed"]))
            lines.append(f"An old copy of the backup at {broker_http.http_base(item['broker'])} was deleted.")
        except AgentError:
            left.append(item)
    with _quietly(store), store.change() as state:
        state.settings[STALE_BLOBS] = left
    return lines


def backup_to_broker(
    store: AccountStore, target: dict[str, Any], data: bytes, *, first_code: bool
) -> list[str]:
    """`backup --to broker`: write the backup, remember the target, finish old deletions.

    `first_code`: the backup code was just made, so a copy an older agent wrote under
    the passphrase alone (which a thief of the broker could attack) is deleted now.
    """
    upload(store, target, data)
    lines = retry_stale(store)
    if target not in broker_targets(store.settings()):
        _remember(store, target, keep=True)
    if first_code:
        origin = broker_http.http_base(target["broker"])
        seed = backup_keys.legacy_blob_seed(store.passphrase(), origin, target["name"], kdf_from_env())
        with contextlib.suppress(AgentError):
            if broker_http.delete_backup(target["broker"], seed):
                lines.append(
                    f"The backup an older pushauth-agent kept at {_where(target)} under the passphrase"
                    " alone was deleted."
                )
    return lines


def delete_from_broker(store: AccountStore, target: dict[str, Any]) -> list[str]:
    """`backup delete`: delete the broker backup `target` (this device's code, else asked)."""
    code = code_of(store.settings()) or BackupCode.parse(store.passphrases.backup_code())
    keys = blob_keys(store.passphrase(), code, target)
    if not broker_http.delete_backup(target["broker"], keys.seed):
        raise Refused(
            f"no backup at {_where(target)} for this passphrase and backup code (deleted already?)",
            code="not_found",
        )
    lines = [f"Deleted the backup at {_where(target)}."]
    if store.path.exists():
        automatic = auto_target(store.settings()) == target
        _remember(store, target, keep=False)
        if automatic:
            lines.append("It was the automatic backup: automatic backups are off now.")
    return lines


def delete_auto_file(store: AccountStore, target: dict[str, Any]) -> list[str]:
    """`backup delete` alone, when the automatic backup goes to a file: stop the
    automatic backups first (so no change writes it again), then delete the file."""
    store.set_setting(AUTO_BACKUP, None)
    path = Path(target["to"])
    try:
        path.unlink()
    except FileNotFoundError:
        return [
            f"The automatic backup {path} was not there (deleted already?); automatic backups are off now."
        ]
    return [f"Deleted the backup {path}.", "It was the automatic backup: automatic backups are off now."]


def code_lines(code: BackupCode, *, new: bool) -> list[str]:
    what = "Your new backup code" if new else "Your backup code"
    return [
        f"{what}: {code.text}",
        "  Write it down and keep it apart from your passphrase (on paper, or in a password",
        "  manager): restoring from the broker needs both; without it the backup cannot be",
        "  opened. pushauth-agent backup code shows it again.",
    ]


# -- after a secret changed ---------------------------------------------------------------

PASSWD = "passwd"  # the vault passphrase was changed
DISOWN = "disown"  # "not me": someone restored a backup of ours with our passphrase
RETIRE = "retire"  # `backup retire`: a backup was lost, or its passphrase may be known
CONFIRM = "confirm"  # "yes, it was me": a restore used a recovery key the backups hold


@dataclass(slots=True)
class SecretChange:
    """What `after_secret_change` did, for people; `failures` make the command fail."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    new_code: BackupCode | None = None

    def text(self) -> list[str]:
        """What to tell the user, the new backup code last (failures apart)."""
        if self.new_code is None:
            return self.lines
        return [*self.lines, *code_lines(self.new_code, new=True)]


def after_secret_change(
    store: AccountStore, reason: str, *, old_passphrase: str | None = None
) -> SecretChange:
    """Leave no backup that opens with what may be known, after `reason` (PASSWD,
    DISOWN, RETIRE); after CONFIRM only rewrite them (a recovery key was renewed:
    passphrase and code stay, so the copies are replaced in place).

    Every broker backup this device keeps is rewritten under the current passphrase
    (and, after DISOWN or RETIRE, a new backup code: someone had the backup, maybe the
    code too),
    then its old copy is deleted, signed with the old key; an automatic backup file is
    rewritten. After PASSWD the code stays: it never left this device and the paper,
    and the old copies are gone anyway. An old copy that cannot be deleted now (broker
    down) is remembered and deleted at the next backup to that broker.
    """
    state = store.state()
    report = SecretChange()
    passphrase = store.passphrase()
    old_passphrase = old_passphrase if old_passphrase is not None else passphrase
    old_code = code_of(state.settings)
    targets = broker_targets(state.settings) if old_code is not None else []
    code = old_code
    if reason == DISOWN:
        report.lines.append(
            "Whoever restored your backup knows your passphrase: change it now (pushauth-agent passwd)."
        )
        if any(rec.otp is not None for rec in state.records):
            report.lines.append(OLD_CODES_STILL_WORK)  # and the codes of that backup are theirs
    if reason in (DISOWN, RETIRE) and old_code is not None:
        code = BackupCode.new()
        with _quietly(store):
            store.set_setting(BACKUP_CODE, code.text)
        state.settings[BACKUP_CODE] = code.text
        report.new_code = code
    data: bytes | None = None
    try:
        data = backup_bytes(store, state, passphrase)
    except UsageError as exc:
        if targets or auto_target(state.settings) is not None:
            report.failures.append(f"no new backup was written: {exc}")
    auto = auto_target(state.settings)
    if data is not None and auto is not None and auto["to"] != BROKER:
        try:
            write_file(Path(auto["to"]), data)
            report.lines.append(f"The automatic backup {auto['to']} was rewritten.")
        except UsageError as exc:
            report.failures.append(f"the automatic backup was not rewritten: {exc}")
    stale = []
    for target in targets:
        assert code is not None and old_code is not None
        new, old = blob_keys(passphrase, code, target), blob_keys(old_passphrase, old_code, target)
        if data is not None:
            try:
                broker_http.put_backup(target["broker"], new.seed, backup_keys.wrap(new, data))
                report.lines.append(f"The backup at {_where(target)} was rewritten.")
            except AgentError as exc:
                report.failures.append(f"the backup at {_where(target)} was not rewritten: {exc}")
        if old.seed == new.seed:
            continue
        try:
            broker_http.delete_backup(target["broker"], old.seed)
            report.lines.append(
                f"Its old copy was deleted: the old {_old_secrets(reason)} opens nothing there."
            )
        except AgentError as exc:
            stale.append({"broker": target["broker"], "seed": b64(old.seed)})
            report.failures.append(
                f"the old copy at {_where(target)} could not be deleted yet ({exc}); it is deleted at"
                " the next backup to that broker (pushauth-agent backup --to broker)"
            )
    if stale:
        with _quietly(store), store.change() as now:
            now.settings[STALE_BLOBS] = [*(now.settings.get(STALE_BLOBS) or []), *stale]
    return report


def _old_secrets(reason: str) -> str:
    return "passphrase" if reason == PASSWD else "backup code"


@dataclass(slots=True)
class Recovered:
    """What recover_accounts did: one line per account, by name, and the accounts it
    could not recover only because the broker could not be reached (they keep their
    unused recovery key: `reactivate NAME` tries again)."""

    lines: dict[str, str] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)


def recover_accounts(store: AccountStore, names: list[str], device_name: str) -> Recovered:
    """Register a new credential for each recoverable account with its recovery key.

    An account that cannot recover stays "action required": with a new QR code only if
    the broker refused (the key was used, replaced, or the old device removed); if the
    broker could not be reached, its recovery key is still good, so the account says
    how to try again rather than sending the user to the service for a new QR code.
    """
    report = Recovered()
    for name in names:
        account = store.find(name)
        recovery_seed = store.recovery_seed(name)
        assert recovery_seed is not None
        seed, new_recovery_seed = signing.new_seed(), signing.new_seed()
        try:
            got = broker_http.recover(
                account.broker, account.rp, account.cid, recovery_seed, seed, new_recovery_seed, device_name
            )
        except Unreachable as exc:
            report.unreachable.append(name)
            again = f"pushauth-agent reactivate {shlex.quote(shown(name))}"
            report.lines[name] = (
                f"action required: {shown(name)}: not recovered yet ({exc}); its recovery key is kept here:"
                f" once the broker can be reached, run: {again} (or get a new QR code from"
                f" {shown(account.rp_name)}, then: {again} URI)"
            )
            _set_reason(
                store, name, NOT_RECOVERED_YET.format(name=shlex.quote(name), rp_name=account.rp_name)
            )
            continue
        except WrongClock as exc:
            # Refused before anything was used: the same recovery works once the clock is right.
            again = f"pushauth-agent reactivate {shlex.quote(shown(name))}"
            report.lines[name] = (
                f"action required: {shown(name)}: not recovered yet ({exc}); its recovery key is kept here:"
                f" once this device's clock is right, run: {again} (no new QR code needed)"
            )
            _set_reason(store, name, WRONG_CLOCK.format(name=shlex.quote(name)))
            continue
        except AgentError as exc:
            if exc.code == ErrorCode.TOO_MANY_CREDENTIALS:
                # Refused before anything was used: the same recovery works with a place free.
                again = f"pushauth-agent reactivate {shlex.quote(shown(name))}"
                # Not the backup's own device: removing it revokes the key that recovers.
                old = f'"{account.device_name}"' if account.device_name else "the device of this backup"
                report.lines[name] = (
                    f"action required: {shown(name)}: not recovered yet: {shown(account.rp_name)} allows no"
                    " more devices for this account; its recovery key is kept here: remove a device you no"
                    f" longer use on the service's Security info page, but not {shown(old)} (its key is what"
                    f" recovers this account), then run: {again}"
                )
                _set_reason(
                    store,
                    name,
                    TOO_MANY_DEVICES.format(name=shlex.quote(name), rp_name=account.rp_name, old=old),
                )
                continue
            then = f"pushauth-agent reactivate {shlex.quote(shown(name))} URI"
            report.lines[name] = (
                f"action required: {shown(name)}: it could not recover by itself ({exc}); get a new QR code"
                f" from {shown(account.rp_name)}, then: {then}"
            )
            _set_reason(store, name, ACTION_REASON.format(rp_name=account.rp_name))
            continue
        if (got["rp"], got["user"]) != (account.rp, account.user):
            # A broker must not move an account to another service or user.
            report.lines[name] = f"action required: {shown(name)}: the broker answered for another account"
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
        report.lines[name] = (
            f"recovered: {shown(name)}: this device has its own new key ({shown(account.rp_name)} was told)"
        )
    return report


def _set_reason(store: AccountStore, name: str, reason: str) -> None:
    """What `accounts` and the screen say an "action required" account needs."""
    account = store.find(name)
    if account.status_reason == reason:
        return
    with store.change() as state:
        rec = state.records[state.index(name)]
        if rec.account is not None:
            rec.account = replace(rec.account, status_reason=reason)


def recover_again(store: AccountStore, name: str, device_name: str) -> Recovered:
    """`reactivate NAME` without a URI: try once more the recovery that restore could
    not finish because the broker was down, with the recovery key the backup gave."""
    account = store.find(name)
    if account.active:
        raise UsageError(f'"{account.name}" is active already; nothing to re-activate')
    if account.status != ACTION_REQUIRED or store.recovery_seed(account.name) is None:
        raise UsageError(
            f'"{account.name}" has no recovery key to try: get a new QR code from {account.rp_name},'
            f" then: pushauth-agent reactivate {shlex.quote(account.name)} URI"
        )
    return recover_accounts(store, [account.name], device_name)


def read_file(path: Path) -> bytes:
    try:
        return read_sealed_file(path, "backup file")
    except SealedFileError as exc:
        raise UsageError(exc.message) from None
