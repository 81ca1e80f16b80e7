"""The user's devices as the SDK sees them, and keeping them in step with the broker.

Our database is the store of record: every answer is verified with the keys in it.
The broker's list of the user's credentials changes it only through the SDK's check
(PushAuthClient.sync_credentials): a device restored from one of ours is added only
if the recovery key we stored for that device signed its recovery (that key is then
spent), a new recovery key only if the device's own key signed it, and credentials
the broker no longer lists (removed on the device, disowned after a restore) are
dropped. Whatever does not verify is a security event, logged and never stored.

Removing a device is one idea everywhere (the Security info page, a setup cancelled,
pushauth-pam/-radius `remove`): revoke it at the broker first, then delete it here
(`remove`). In that order, a failure at the broker leaves both as they were. The one
exception is the user's own removal on Security info: the device goes here whatever the
broker answers, and its revocation is asked again until the broker confirms it
(revocations.py). Until then the broker may still list it: `sync` says so once, neither
raising a security event nor adding it back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from .. import clocks
from ..errors import NotFound, PushAuthError, VerificationFailed, VerificationReason
from ..models import Credential, CredentialSync, RecoveryKey, RecoveryProof
from ..sdk import PushAuthClient
from .db import Database, Device, User, now_ms

# One logger for what only a compromised or misbehaving broker causes: an operator
# may route it to an alert.
security_log = logging.getLogger("relying_party.web.security_events")
log = logging.getLogger(__name__)


def security_event(user: User, what: str, exc: VerificationFailed) -> None:
    security_log.error(
        "SECURITY EVENT: %s for user %s (%s): %s [%s]", what, user.name, user.handle, exc, exc.reason
    )


def answer_refused(
    db: Database, user: User, exc: VerificationFailed, clock: clocks.ClockWatch, what: str = "an answer"
) -> None:
    """An answer that failed end-to-end verification: a security event, which names a
    device the user removed whose revocation is pending (its phone or whoever holds it
    answered a request the broker still sent it). Except one signed at the wrong time:
    a warning naming the clock (`clock_off`)."""
    if exc.reason is VerificationReason.STALE_ANSWER:
        log.warning("%s", clock_off(user, exc, clock))
        return
    pending = {p.credential_id: p for p in db.pending_revocations(user.id)}.get(exc.credential_id or "")
    if pending is None:
        security_event(user, f"{what} failed end-to-end verification", exc)
    else:
        security_event(
            user,
            f"an answer from {pending.name}, a device removed here whose revocation the broker has not"
            " confirmed, was refused",
            exc,
        )


def clock_off(user: User, exc: VerificationFailed, clock: clocks.ClockWatch) -> str:
    """Why an answer was refused as signed outside its request's lifetime (stale_answer):
    a clock, not a forgery. The SDK checks the signature over this request's own values
    first, so the device did sign this very request; only its time was outside the
    lifetime by this server's clock. Before, it was logged as a SECURITY EVENT and the
    page said the answer "could not be verified with the keys of your devices"."""
    off = clock.offset_ms  # the broker's clock minus this server's, at the last create
    if off is not None and abs(off) > clocks.WARN_MS:
        which = clock.wrong_clock(off)
    elif off is not None:
        which = (
            f"this server's clock is within {clocks.WARN_MS // 1000} s of the broker's, so the device's is"
            " the one off (it signed on a wrong estimate of the broker's time): the user should check the"
            " device's date and time"
        )
    else:
        which = (
            "this server's clock or the device's is off (the SDK measures this server's against the"
            " broker's when it creates a request, and has not since this server started)"
        )
    return (
        f"a push answer for user {user.name} ({user.handle}) was refused as signed at the wrong time,"
        f" not forged (it verifies with the device's key): {which} [{exc}]"
    )


def stored(device: Device, handle: str) -> Credential:
    """One of our devices as the SDK's Credential (what sync_credentials checks against)."""
    recovery_key = None
    if device.recovery_public_key is not None:
        recovery_key = RecoveryKey(
            device.recovery_public_key, device.recovery_key_ts, device.recovery_key_signature
        )
    proof = None
    if device.recovery_proof is not None:
        proof = RecoveryProof.from_json(json.loads(device.recovery_proof))
    return Credential(
        id=device.credential_id,
        user=handle,
        name=device.name,
        public_key=device.public_key,
        created_at=device.created_at,
        last_used_at=device.last_used_at,
        recovered_from=device.recovered_from,
        recovery_key=recovery_key,
        recovery=proof,
        confirmed=device.confirmed,
        recovery_spent_at=device.recovery_spent_at,
    )


async def revoke(client: PushAuthClient, credential_id: str) -> bool:
    """Revoke a credential at the broker (an online device is told at once, and no
    challenge reaches it again). True if revoked now, False if the broker had it no
    more (removed on the device, or revoked before): done either way. Raises
    PushAuthError when the broker cannot be asked or refuses: nothing changed then."""
    try:
        await client.revoke_credential(credential_id)
    except NotFound:
        return False
    return True


async def remove(client: PushAuthClient, db: Database, user: User, credential_id: str) -> bool:
    """Remove one of `user`'s devices: revoked at the broker (`revoke`), then deleted from
    our store, so its answers and codes no longer count here. Returns what `revoke`
    returns; raises as it does, with our store unchanged."""
    revoked = await revoke(client, credential_id)
    db.remove_device(user.id, credential_id)
    return revoked


@dataclass(frozen=True, slots=True)
class Restored:
    name: str
    source_name: str


@dataclass(slots=True)
class SyncReport:
    restored: list[Restored] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # names of devices the broker no longer has
    refused: int = 0


async def sync(client: PushAuthClient, db: Database, user: User) -> SyncReport:
    """Bring our devices of `user` in step with the broker's list, as far as it verifies.

    Raises what the SDK raises when the broker cannot be asked (PushAuthError);
    our devices are then unchanged."""
    devices = {d.credential_id: d for d in db.devices(user.id)}
    result: CredentialSync = await client.sync_credentials(
        user.handle, {cid: stored(d, user.handle) for cid, d in devices.items()}
    )
    # Removed here by the user, the broker not yet told (revocations.py): still listed
    # is expected, not a forged device, and never a reason to add it back.
    removing = {p.credential_id: p for p in db.pending_revocations(user.id)}
    report = SyncReport()
    for exc in result.refused:
        pending = removing.get(exc.credential_id or "")
        if pending is None:
            security_event(user, "the broker listed a credential that did not verify (not stored)", exc)
            report.refused += 1
        elif db.note_revocation_listed(pending.credential_id):
            log.info(
                "the broker still lists %s (%s) of user %s, removed here: pending removal, its revocation is"
                " asked again until the broker confirms it",
                pending.credential_id,
                pending.name,
                user.handle,
            )
    for cid in result.removed:
        if db.remove_device(user.id, cid):
            report.dropped.append(devices[cid].name)
    for cred in result.added:
        if cred.id in removing:
            continue  # the user removed it: no proof brings it back
        source_id = cred.recovery.from_id if cred.recovery is not None else None
        source = devices.get(source_id or "")
        if source is None or cred.recovery is None or cred.recovery_key is None:
            continue  # the SDK accepts a recovery only from a device we hold, with its proof
        if db.add_recovered_device(
            source,
            cred.id,
            cred.name,
            cred.public_key,
            recovery_public_key=cred.recovery_key.public_key,
            recovery_proof=json.dumps(cred.recovery.to_json()),
            # When the restore was made, as the proof the SDK verified dates it (never
            # later than now): the page is often first seen hours after a restore.
            added_at=min(cred.recovery.ts, now_ms()),
        ):
            report.restored.append(Restored(cred.name, source.name))
    # Recovery keys as the SDK left them: spent by a restore (and when), or rotated by
    # the device.
    for cid, cred in result.current.items():
        device = devices.get(cid)
        if device is None:
            continue
        key = cred.recovery_key
        if key != stored(device, user.handle).recovery_key:
            db.set_recovery_key(
                cid,
                None if key is None else key.public_key,
                None if key is None else key.ts,
                None if key is None else key.signature,
            )
        if cred.recovery_spent_at != device.recovery_spent_at:
            db.set_recovery_spent_at(cid, cred.recovery_spent_at)
    return report


async def follow(client: PushAuthClient, db: Database, user: User, *, within: float = 2.0) -> None:
    """Best effort before a verification code is checked: sync, so that a device removed
    elsewhere (on the phone itself) no longer counts here. A broker that cannot answer
    within `within` seconds leaves the devices as they are: codes work without it."""
    try:
        await asyncio.wait_for(sync(client, db, user), within)
    except (PushAuthError, TimeoutError) as exc:
        log.info("devices of %s not checked with the broker before a code: %s", user.handle, exc or "timeout")
