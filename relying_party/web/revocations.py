"""Removal pending: a device the user removed whose revocation the broker has not confirmed.

The user's removal on Security info ends the device's trust here at once, whatever the
broker answers (`remove_at_users_word`): its key is deleted, so nothing it signs counts.
But until the broker revokes the credential it may still send that phone sign-in requests
(showing the sign-in's app, address, place and browser) and keep listing it. So such a
removal leaves a record (the pending_revocations table) and the RP asks the broker again:

- whenever it matters to that user, whatever the backoff: before a push request is sent
  to them (push.start: the moment the removed phone would be asked) and when their
  Security info is shown (the moment they look). Within RETRY_WITHIN seconds in all, so a
  hung broker cannot hold the page for long.
- in the background (`run`): a user who removed a stolen phone may not come back for
  weeks, and the phone must not go on getting their requests meanwhile. Exponential
  backoff (Settings.revocation_retry, doubling up to revocation_retry_max) keeps the
  load on a broker that is down or refusing tiny; it is kept in the database, so a
  restart neither forgets a record nor asks for all of them at once. It never gives up:
  the revocation is still owed, and one request an hour per record costs nothing.

A record ends when the broker revokes the credential or answers that it has no such
credential (NotFound: revoked before, removed on the device): gone either way. While it
lasts, the broker's list naming the credential is not taken for a forged device
(credentials.sync says once that it is pending removal), it is never added back, and
push.start sends the user's requests to their one remaining device when there is just one
(the RP API can target one credential, not leave one out).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import BrokerUnavailable, PushAuthError
from ..sdk import PushAuthClient
from . import credentials
from .config import Settings
from .db import Database, PendingRevocation, User, now_ms

log = logging.getLogger(__name__)
RETRY_WITHIN = 2.0  # seconds, all of a user's records together, on the user's own request
BATCH = 50  # records asked per background round: a long outage's backlog goes out in steps


def next_attempt_at(attempts: int, base_s: float, max_s: float, now: int) -> int:
    """When (ms) to ask again after `attempts` revocations the broker did not confirm:
    `base_s` after the first, doubling, at most `max_s`."""
    delay = min(base_s * 2 ** min(max(attempts, 1) - 1, 32), max_s)
    return now + int(delay * 1000)


async def remove_at_users_word(
    client: PushAuthClient, db: Database, settings: Settings, user: User, credential_id: str
) -> PushAuthError | None:
    """The user's own removal of a device (Security info): revoked at the broker if it
    can be, and deleted from our store whatever the broker answers. The broker is trusted
    to deliver, never to keep a device trusted here that its user removed: a stolen phone
    behind a compromised broker that refuses the revocation (or one that cannot be
    reached) must not go on approving sign-ins. Returns the broker's error when it could
    not be told, else None; the revocation is then pending (this module's record)."""
    try:
        await credentials.revoke(client, credential_id)
    except PushAuthError as exc:
        retry_at = next_attempt_at(1, settings.revocation_retry, settings.revocation_retry_max, now_ms())
        db.remove_device_revocation_pending(user.id, credential_id, error=str(exc), next_attempt_at=retry_at)
        return exc
    db.remove_device(user.id, credential_id)
    return None


async def _ask(
    client: PushAuthClient, db: Database, pending: PendingRevocation, within: float | None
) -> None:
    """Ask the broker once more to revoke `pending`'s credential, and end the record once
    it did (or has it no more). Raises PushAuthError (or TimeoutError past `within`
    seconds) with the record unchanged."""
    revoke = credentials.revoke(client, pending.credential_id)
    if within is None:
        await revoke
    else:
        await asyncio.wait_for(revoke, within)
    if db.revocation_done(pending.credential_id):
        log.info(
            "the broker confirmed the revocation of %s (%s), removed here by user %s",
            pending.credential_id,
            pending.name,
            pending.user_id,
        )


async def retry_for_user(
    client: PushAuthClient, db: Database, user: User, *, within: float = RETRY_WITHIN
) -> tuple[list[PendingRevocation], list[PendingRevocation]]:
    """Ask again now for each of `user`'s pending revocations, whatever their backoff (the
    user is here: Security info, a push about to be sent), within `within` seconds in all.
    Returns (those the broker confirmed now, those still pending). A failure here is not
    counted in the background's backoff: a user who reloads a page must not push the
    next background attempt an hour away."""
    confirmed: list[PendingRevocation] = []
    still: list[PendingRevocation] = []
    deadline = time.monotonic() + within
    for pending in db.pending_revocations(user.id):
        left = deadline - time.monotonic()
        if left <= 0:
            still.append(pending)  # out of time: the background asks
            continue
        try:
            await _ask(client, db, pending, left)
        except (PushAuthError, TimeoutError) as exc:
            db.revocation_failed(pending.credential_id, error=str(exc) or "no answer in time")
            log.info(
                "revocation of %s (%s) still not confirmed by the broker: %s",
                pending.credential_id,
                pending.name,
                exc or "no answer in time",
            )
            still.append(pending)
        else:
            confirmed.append(pending)
    return confirmed, still


async def retry_due(client: PushAuthClient, db: Database, settings: Settings) -> int:
    """One background round: ask again for the records whose time has come (at most
    BATCH); the number the broker confirmed. A broker that cannot be reached ends the
    round: the records not asked keep their turn for the next one."""
    done = 0
    for pending in db.due_revocations(now_ms(), limit=BATCH):
        try:
            await _ask(client, db, pending, None)
        except PushAuthError as exc:
            attempts = pending.attempts + 1
            retry_at = next_attempt_at(
                attempts, settings.revocation_retry, settings.revocation_retry_max, now_ms()
            )
            db.revocation_failed(pending.credential_id, error=str(exc), next_attempt_at=retry_at)
            log.info(
                "revocation of %s (%s) not confirmed by the broker (%d attempts), asked again in %.0f s: %s",
                pending.credential_id,
                pending.name,
                attempts,
                (retry_at - now_ms()) / 1000,
                exc,
            )
            if isinstance(exc, BrokerUnavailable):
                break
        else:
            done += 1
    return done


async def run(client: PushAuthClient, db: Database, settings: Settings) -> None:
    """The background retry, for the app's lifetime: a round every revocation_retry
    seconds (the first backoff step, so no record waits much past its time)."""
    while True:
        try:
            await retry_due(client, db, settings)
        except Exception:  # e.g. a locked database: the next round tries again
            log.exception("the background retry of pending revocations failed")
        await asyncio.sleep(settings.revocation_retry)
