"""Renewing the recovery keys of recoverable accounts when the old ones may be known
or were used up.

A recovery key (kept in the vault and in every backup) lets a new device register a
credential for its account by itself, once (broker/recovery.py). After a passphrase
change (`passwd`) or a "No, not me" to "was this you?" (someone restored a backup of
ours: they had it and its passphrase) or `backup retire` (a backup was lost), every
backup made before may be in someone else's hands. So each recoverable account gets a
new recovery key: the credential's own key signs it (signing.recovery_key_bytes, with a
newer ts than the last one), the broker replaces the old one, and the RP takes it only
with that signature (relying_party.verify.reconcile). The old recovery keys in old
backups then recover nothing. The new seeds go into the vault, so the next backup
carries them: call this BEFORE backup_actions.after_secret_change rewrites the backups.

A "Yes, it was me" renews one key for another reason: the restore used the account's
recovery key (a recovery key works once), so every backup still holding it recovers
that account no more, and would say "recoverable" for nothing (after_confirm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import signing
from protocol.frames import RecoveryNotice

from . import backup_actions, broker_clock, broker_http
from .errors import AgentError, Refused, RotationTooEarly, Unreachable
from .store import Account, AccountStore

# What to do when a key could not be renewed now (the broker was down).
RETRY = (
    "until it is renewed, the old recovery key in your backups still works for it once: run"
    " pushauth-agent backup retire when the broker can be reached"
)
# The same, after "yes, it was me": the key in the backups was used by that restore.
RETRY_SPENT = (
    "the one in your backups was used by that restore, so they do not recover it: run"
    " pushauth-agent backup retire when the broker can be reached"
)


@dataclass(slots=True)
class Rotation:
    """What rotate_recovery_keys did, for people; `failures` make the command fail."""

    renewed: list[str] = field(default_factory=list)  # account names
    dropped: list[str] = field(default_factory=list)  # the service no longer has it recoverable
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.renewed:
            them = "them" if len(self.renewed) > 1 else "it"
            # Automatic and broker backups are rewritten by the caller; a file made by hand
            # is not known here, and said nothing of being out of date.
            out.append(
                f"New recovery keys for {', '.join(self.renewed)}: the ones in older backups no longer"
                f" recover {them}. Automatic and broker backups get the new ones; write any other"
                " backup again (pushauth-agent backup --to FILE --force)."
            )
        out += [
            f"{name}: the service does not have it as recoverable; its recovery key was deleted here."
            for name in self.dropped
        ]
        return out


def rotate_recovery_keys(
    store: AccountStore,
    names: list[str] | None = None,
    *,
    retry: str = RETRY,
    recovery: RecoveryNotice | None = None,
) -> Rotation:
    """Give every active recoverable push account (or those in `names`) a new recovery key.

    Blocking HTTP, one request per account. An account whose broker cannot be reached
    or refuses keeps its old key (reported in `failures`); the others are renewed.
    `recovery`: the notice of a recovery from these accounts, whose `recovery_ts` the
    new key's ts must follow (signing.rotation_ts).
    """
    report = Rotation()
    new_seeds: dict[str, bytes] = {}  # credential id -> new recovery seed, taken by the broker
    for account in store.active():
        if names is not None and account.name not in names:
            continue
        if store.recovery_seed(account.name) is None:
            continue
        now = broker_http.now_ms()
        ts = signing.rotation_ts(now, recovery.recovery_ts if recovery else None)
        if ts is None:
            assert recovery is not None and recovery.recovery_ts is not None
            offset = broker_clock.measured(store.home, account.broker)
            report.failures.append(
                broker_clock.rotation_too_early(account.name, recovery.recovery_ts, recovery.time, offset)
            )
            continue
        new_seed = signing.new_seed()
        try:
            taken = _name_key(store, account, new_seed, ts)
        except Unreachable as exc:
            report.failures.append(f"the recovery key of {account.name} was NOT renewed ({exc}); {retry}")
            continue
        except AgentError as exc:
            report.failures.append(f"the recovery key of {account.name} was NOT renewed: {exc}")
            continue
        if taken:
            new_seeds[account.cid] = new_seed
            report.renewed.append(account.name)
        else:
            new_seeds[account.cid] = b""  # not recoverable there: keep no key that recovers nothing
            report.dropped.append(account.name)
    if new_seeds:
        # The broker holds the new keys already: if this write failed, nobody would
        # have them (the account is then not recoverable; never the old key again).
        hook, store.on_change = store.on_change, None  # the caller rewrites the backups next
        try:
            with store.change() as state:
                for rec in state.records:
                    if rec.account is not None and rec.account.cid in new_seeds:
                        rec.recovery_seed = new_seeds[rec.account.cid] or None
        finally:
            store.on_change = hook
    return report


def _name_key(store: AccountStore, account: Account, new_seed: bytes, ts: int) -> bool:
    """Name `new_seed` the recovery key of `account`, signed at `ts` (broker_http.set_recovery_key).

    A refusal as not newer than what the broker holds (a recovery from this credential
    signed by a device whose clock was ahead of this one's, or this device's own last
    rotation signed ahead after such a recovery) is tried once more, just after it, as
    after a recovery notice (signing.rotation_ts: at most ROTATION_AHEAD_MAX_MS ahead of
    this device's clock); beyond that a clock is wrong, and the failure says which."""
    seed = store.seed(account.cid)
    try:
        return broker_http.set_recovery_key(account.broker, account.cid, seed, new_seed, ts=ts)
    except RotationTooEarly as exc:
        newer_than = exc.newer_than
        retry_ts = signing.rotation_ts(broker_http.now_ms(), newer_than)
        if retry_ts is not None and retry_ts > ts:
            try:
                return broker_http.set_recovery_key(account.broker, account.cid, seed, new_seed, ts=retry_ts)
            except RotationTooEarly as again:
                newer_than = again.newer_than
        why = broker_clock.rotation_refused(newer_than, broker_clock.measured(store.home, account.broker))
        raise Refused(why, code="conflict") from None


def after_confirm(
    store: AccountStore, notice: RecoveryNotice
) -> tuple[Rotation, backup_actions.SecretChange | None]:
    """ "Yes, it was me" to `notice`, about this device's credential `notice.cid`: the
    restore used that account's recovery key, so it gets a new one (as after `passwd`),
    signed after the restore (the RP orders them so), and the backups this device keeps
    are rewritten with it (same passphrase and backup code: nothing else changed). The
    backup is rewritten only if a key was renewed; when the broker cannot be reached
    the failure says what to run later."""
    account = next((a for a in store.active() if a.cid == notice.cid), None)
    if account is None or store.recovery_seed(account.name) is None:
        return Rotation(), None
    rotation = rotate_recovery_keys(store, [account.name], retry=RETRY_SPENT, recovery=notice)
    if not rotation.renewed and not rotation.dropped:
        return rotation, None
    return rotation, backup_actions.after_secret_change(store, backup_actions.CONFIRM)
