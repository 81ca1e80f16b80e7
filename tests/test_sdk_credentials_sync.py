"""relying_party.verify.reconcile: the broker's list of a user's credentials against
what the RP stored, with forged lists (a compromised broker's). Pure function: no
broker here; tests/test_agent_recovery.py runs sync_credentials against a real one."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import relying_party
from protocol import signing
from relying_party import models
from relying_party.errors import VerificationFailed, VerificationReason
from relying_party.models import (
    Challenge,
    Credential,
    CredentialSync,
    RecoveryKey,
    RecoveryProof,
    credentials_from_json,
)
from relying_party.verify import reconcile

RP = "rp_test"
T0 = 1_767_225_600_000


@dataclass
class Device:
    """A credential as the device holds it: its key and its current recovery key."""

    cred: Credential
    seed: bytes
    recovery_seed: bytes


def enrolled(cid: str = "cr_old", name: str = "old phone") -> Device:
    """A recoverable credential as the RP stored it after wait_enrollment."""
    seed, recovery_seed = signing.new_seed(), signing.new_seed()
    cred = Credential(
        id=cid,
        user="alice",
        name=name,
        public_key=signing.public_key(seed),
        created_at=T0,
        account="alice@example.com",
        binding=b"b" * 64,
        recovery_key=RecoveryKey(signing.public_key(recovery_seed)),
        confirmed=True,  # its test push approved
    )
    return Device(cred, seed, recovery_seed)


def recovered(
    old: Device,
    cid: str = "cr_new",
    ts: int = T0 + 1000,
    *,
    recovery_seed: bytes | None = None,
    rp: str = RP,
    name: str = "new phone",
) -> Device:
    """What the broker lists after a recovery from `old` (signed with `recovery_seed`,
    by default the old credential's recovery key)."""
    seed, new_recovery = signing.new_seed(), signing.new_seed()
    pk, rpk = signing.public_key(seed), signing.public_key(new_recovery)
    message = signing.recover_bytes(rp, old.cred.id, pk, name, rpk, ts)
    cred = Credential(
        id=cid,
        user="alice",
        name=name,
        public_key=pk,
        created_at=ts,
        account="alice@example.com",
        recovered_from=old.cred.id,
        recovery_key=RecoveryKey(rpk),
        recovery=RecoveryProof(
            from_id=old.cred.id,
            ts=ts,
            recovery_signature=signing.sign(recovery_seed or old.recovery_seed, message),
            signature=signing.sign(seed, message),
        ),
        confirmed=True,  # the broker lists a recovered credential as confirmed
    )
    return Device(cred, seed, new_recovery)


def rotated(dev: Device, ts: int, *, signer: bytes | None = None) -> tuple[Credential, bytes]:
    """The credential as listed after the device named a new recovery key at `ts`."""
    new_seed = signing.new_seed()
    pk = signing.public_key(new_seed)
    sig = signing.sign(signer or dev.seed, signing.recovery_key_bytes(dev.cred.id, pk, ts))
    return replace(dev.cred, recovery_key=RecoveryKey(pk, ts, sig)), new_seed


def stored(*devs: Device) -> dict[str, Credential]:
    return {d.cred.id: d.cred for d in devs}


def reasons(sync: CredentialSync) -> dict[str | None, VerificationReason]:
    return {f.credential_id: f.reason for f in sync.refused}


def test_an_unchanged_list_changes_nothing() -> None:
    old = enrolled()
    sync = reconcile([old.cred], stored(old), RP)
    assert sync.current == stored(old) and not sync.changed and not sync.refused
    assert sync.public_keys() == {old.cred.id: old.cred.public_key}


def test_only_a_later_last_use_is_taken_and_confirmed_stays_the_rps() -> None:
    """Of a credential the RP keeps, the broker's later last_used_at is taken (display
    only); an earlier one is not, nor anything of a listing with another key. Its
    `confirmed` is the RP's record: a broker that calls an unconfirmed setup confirmed
    changes nothing; one that calls a confirmed credential unconfirmed is named."""
    mine = replace(enrolled().cred, last_used_at=T0 + 500, confirmed=False)
    used = replace(mine, last_used_at=T0 + 900, confirmed=True)
    sync = reconcile([used], {mine.id: mine}, RP)
    assert sync.current == {mine.id: replace(mine, last_used_at=T0 + 900)}
    assert (sync.last_used, sync.unconfirmed_at_broker, sync.changed) == ([mine.id], [], True)
    for listed in (replace(mine, last_used_at=T0 + 100), replace(mine, last_used_at=None)):
        assert reconcile([listed], {mine.id: mine}, RP).current == {mine.id: mine}
    swapped = replace(used, public_key=signing.public_key(signing.new_seed()))
    assert reconcile([swapped], {mine.id: mine}, RP).current == {mine.id: mine}
    held = replace(mine, confirmed=True)
    sync = reconcile([replace(held, confirmed=False)], {held.id: held}, RP)
    assert sync.unconfirmed_at_broker == [held.id] and sync.current == {held.id: held} and not sync.changed


def test_keys_for_a_challenge_are_the_confirmed_ones_or_the_test_pushs_target() -> None:
    """What to verify a result with, after a sync (docs/protocol.md section 17, step 4):
    an unconfirmed setup in the RP's store approves no sign-in, a test push counts its
    own credential alone, and another user's credential counts for nobody else."""
    done, recovery = enrolled("cr_done"), recovered(enrolled("cr_done"), "cr_restored")
    setup = replace(enrolled("cr_setup").cred, confirmed=False)
    bob = replace(enrolled("cr_bob").cred, user="bob")
    sync = reconcile([done.cred, setup, bob], {c.id: c for c in (done.cred, setup, bob)}, RP)
    sync = replace(sync, current={**sync.current, recovery.cred.id: recovery.cred})
    assert setup.id in sync.public_keys()  # every stored one: not what verifies a sign-in

    def challenge(credential_id: str | None) -> Challenge:
        return Challenge("ch_1", "alice", "42", 2, b"n" * 32, credential_id=credential_id)

    assert sync.keys_for(challenge(None)) == {
        done.cred.id: done.cred.public_key,
        recovery.cred.id: recovery.cred.public_key,
    }
    assert sync.keys_for(challenge(setup.id)) == {setup.id: setup.public_key}
    assert sync.keys_for(challenge("cr_bob")) == {} and sync.keys_for(challenge("cr_gone")) == {}
    assert relying_party.keys_for(challenge(None), sync.current) == sync.keys_for(challenge(None))


def test_a_credential_built_without_confirmed_approves_no_sign_in() -> None:
    """An RP that keeps its devices in columns of its own builds each Credential itself
    (as the demo RP does: relying_party.web.credentials.stored). Leaving `confirmed` out
    made it True, so a setup never finished (no approved test push: a QR code someone
    else scanned) counted for every sign-in in keys_for. Unsaid, it is False now; a JSON
    record from before the flag existed still reads as confirmed."""
    seed = signing.new_seed()
    built = Credential(
        id="cr_x", user="alice", name="phone", public_key=signing.public_key(seed), created_at=T0
    )
    assert not built.confirmed

    def challenge(credential_id: str | None) -> Challenge:
        return Challenge("ch_1", "alice", "42", 2, b"n" * 32, credential_id=credential_id)

    assert relying_party.keys_for(challenge(None), {built.id: built}) == {}
    assert relying_party.keys_for(challenge(built.id), {built.id: built}) == {built.id: built.public_key}
    legacy = {k: v for k, v in built.to_json().items() if k != "confirmed"}
    assert Credential.from_json(legacy).confirmed


def test_an_accepted_recovery_is_confirmed_by_its_proof() -> None:
    old = enrolled()
    new = recovered(old)
    sync = reconcile([old.cred, replace(new.cred, confirmed=False)], stored(old), RP)
    assert [c.id for c in sync.added] == [new.cred.id] and sync.current[new.cred.id].confirmed


def test_a_swapped_key_is_refused_and_the_stored_key_kept() -> None:
    old = enrolled()
    swapped = replace(old.cred, public_key=signing.public_key(signing.new_seed()))
    sync = reconcile([swapped], stored(old), RP)
    assert reasons(sync) == {old.cred.id: VerificationReason.KEY_MISMATCH}
    assert sync.current[old.cred.id] == old.cred
    assert not sync.changed


def test_an_unknown_credential_that_is_no_recovery_is_refused() -> None:
    old, planted = enrolled(), enrolled("cr_planted")
    sync = reconcile([old.cred, planted.cred], stored(old), RP)
    assert reasons(sync) == {"cr_planted": VerificationReason.UNKNOWN_CREDENTIAL}
    assert set(sync.current) == {old.cred.id}


def test_a_verified_recovery_is_added_and_spends_the_old_recovery_key() -> None:
    old = enrolled()
    new = recovered(old)
    # As the real broker lists it: the recovery took the key off the old credential.
    listed = [replace(old.cred, recovery_key=None), new.cred]
    sync = reconcile(listed, stored(old), RP)
    assert not sync.refused
    assert sync.added == [new.cred] and sync.spent == [old.cred.id] and sync.changed
    assert sync.current[old.cred.id].recovery_key is None
    assert sync.current[new.cred.id].recovery_key == RecoveryKey(signing.public_key(new.recovery_seed))
    assert set(sync.public_keys()) == {old.cred.id, new.cred.id}

    # A broker that keeps listing the used key does not bring it back.
    again = reconcile([old.cred, new.cred], stored(old), RP)
    assert again.current[old.cred.id].recovery_key is None and not again.refused

    # Later, a second recovery with the same (now spent) key is refused.
    thief = recovered(old, "cr_thief", ts=T0 + 5000)
    later = reconcile([*listed, thief.cred], sync.current, RP)
    assert reasons(later) == {"cr_thief": VerificationReason.RECOVERY_KEY_USED}
    assert "cr_thief" not in later.current and not later.changed


def test_a_recovered_credentials_own_recovery_key_works_for_the_next_recovery() -> None:
    old = enrolled()
    new = recovered(old)
    spent = replace(old.cred, recovery_key=None)  # as the broker lists it after the recovery
    first = reconcile([spent, new.cred], stored(old), RP)
    newer = recovered(new, "cr_newer", ts=T0 + 9000)
    second = reconcile([spent, new.cred, newer.cred], first.current, RP)
    assert not second.refused and second.added == [newer.cred] and second.spent == [new.cred.id]
    assert second.current["cr_newer"].recovered_from == new.cred.id


def test_a_chain_of_recoveries_in_one_list_verifies_in_order() -> None:
    old = enrolled()
    new = recovered(old)
    newer = recovered(new, "cr_newer", ts=T0 + 9000)
    sync = reconcile([newer.cred, old.cred, new.cred], stored(old), RP)
    assert not sync.refused
    assert [c.id for c in sync.added] == [new.cred.id, "cr_newer"]
    assert sync.spent == [old.cred.id, new.cred.id]


@pytest.mark.parametrize(
    "forge",
    [
        "another_recovery_key",
        "another_rp",
        "no_proof",
        "bad_new_key_signature",
        "renamed",
        "swapped_key",
        "swapped_recovery_key",
        "rotated_recovery_key",
        "no_recovery_key",
        "from_unknown",
        "recovered_from_disagrees",
        "another_user",
    ],
)
def test_a_forged_recovery_is_refused(forge: str) -> None:
    old = enrolled()
    new = recovered(
        old,
        recovery_seed=signing.new_seed() if forge == "another_recovery_key" else None,
        rp="rp_other" if forge == "another_rp" else RP,
    )
    cred, other = new.cred, signing.public_key(signing.new_seed())
    assert cred.recovery is not None
    cred = {
        "no_proof": replace(cred, recovery=None),
        "bad_new_key_signature": replace(cred, recovery=replace(cred.recovery, signature=b"\x01" * 64)),
        "renamed": replace(cred, name="old phone"),
        "swapped_key": replace(cred, public_key=other),
        "swapped_recovery_key": replace(cred, recovery_key=RecoveryKey(other)),
        "rotated_recovery_key": replace(cred, recovery_key=RecoveryKey(other, T0 + 2000, b"\x02" * 64)),
        "no_recovery_key": replace(cred, recovery_key=None),
        "from_unknown": replace(
            cred, recovered_from="cr_gone", recovery=replace(cred.recovery, from_id="cr_gone")
        ),
        "recovered_from_disagrees": replace(cred, recovered_from="cr_gone"),
        "another_user": replace(cred, user="mallory"),
    }.get(forge, cred)
    sync = reconcile([old.cred, cred], stored(old), RP)
    assert reasons(sync) == {cred.id: VerificationReason.BAD_RECOVERY}
    assert set(sync.current) == {old.cred.id} and not sync.changed
    assert sync.current[old.cred.id].recovery_key == old.cred.recovery_key  # not spent by a forgery


def test_no_recovery_from_a_credential_whose_stored_recovery_key_is_none() -> None:
    old = enrolled()
    spent = replace(old.cred, recovery_key=None)  # used already, or never recoverable
    new = recovered(old)
    sync = reconcile([spent, new.cred], {old.cred.id: spent}, RP)
    assert reasons(sync) == {new.cred.id: VerificationReason.RECOVERY_KEY_USED}
    assert set(sync.current) == {old.cred.id}


def test_of_two_recoveries_with_one_key_only_the_earliest_counts() -> None:
    old = enrolled()
    late = recovered(old, "cr_a", ts=T0 + 2000)
    early = recovered(old, "cr_z", ts=T0 + 1000)
    sync = reconcile([old.cred, late.cred, early.cred], stored(old), RP)
    assert [c.id for c in sync.added] == ["cr_z"]
    assert reasons(sync) == {"cr_a": VerificationReason.RECOVERY_KEY_USED}
    # Same ts: the lower id wins.
    tie_a, tie_b = recovered(old, "cr_b", ts=T0), recovered(old, "cr_a", ts=T0)
    sync = reconcile([old.cred, tie_a.cred, tie_b.cred], stored(old), RP)
    assert [c.id for c in sync.added] == ["cr_a"]
    assert reasons(sync) == {"cr_b": VerificationReason.RECOVERY_KEY_USED}
    # A forgery with an earlier ts does not use the key up for the real one.
    forged = recovered(old, "cr_0", ts=T0 - 1, recovery_seed=signing.new_seed())
    sync = reconcile([old.cred, forged.cred, late.cred], stored(old), RP)
    assert [c.id for c in sync.added] == ["cr_a"]
    assert reasons(sync) == {"cr_0": VerificationReason.BAD_RECOVERY}


def test_a_rotation_signed_by_the_credential_and_newer_is_taken() -> None:
    old = enrolled()
    listed, new_seed = rotated(old, T0 + 100)
    sync = reconcile([listed], stored(old), RP)
    assert not sync.refused and sync.rotated == [listed] and sync.changed
    assert sync.current[old.cred.id].recovery_key == listed.recovery_key
    # A recovery with the replaced key is refused now; with the new one it verifies.
    stale = recovered(old)
    after = reconcile([listed, stale.cred], sync.current, RP)
    assert reasons(after) == {stale.cred.id: VerificationReason.BAD_RECOVERY}
    fresh = recovered(Device(listed, old.seed, new_seed))
    after = reconcile([listed, fresh.cred], sync.current, RP)
    assert after.added == [fresh.cred] and not after.refused


def test_a_credential_listed_twice_counts_once() -> None:
    """A broker that lists one credential twice, with two of its device's rotations (the
    older one last), does not get the second listing to replace the first: it is
    refused, and the key the RP takes is the one first listed."""
    dev = enrolled()
    newer, _ = rotated(dev, T0 + 2000)
    older, _ = rotated(dev, T0 + 1000)
    sync = reconcile([newer, older], stored(dev), RP)
    assert reasons(sync) == {dev.cred.id: VerificationReason.KEY_MISMATCH}
    assert sync.current[dev.cred.id].recovery_key == newer.recovery_key
    sync = reconcile([dev.cred, dev.cred], stored(dev), RP)
    assert reasons(sync) == {dev.cred.id: VerificationReason.KEY_MISMATCH}
    assert sync.current == stored(dev)


def test_a_bad_rotation_is_refused_and_the_stored_recovery_key_kept() -> None:
    old = enrolled()
    first, _ = rotated(old, T0 + 100)
    base = reconcile([first], stored(old), RP).current
    dev = Device(base[old.cred.id], old.seed, old.recovery_seed)
    cases = {
        "same ts": rotated(dev, T0 + 100)[0],
        "older ts": rotated(dev, T0 + 50)[0],
        "signed by another key": rotated(dev, T0 + 200, signer=signing.new_seed())[0],
        "unsigned": replace(dev.cred, recovery_key=RecoveryKey(signing.public_key(signing.new_seed()))),
    }
    for why, listed in cases.items():
        sync = reconcile([listed], base, RP)
        assert reasons(sync) == {old.cred.id: VerificationReason.BAD_ROTATION}, why
        assert sync.current == base and not sync.changed, why


def test_a_credential_without_a_recovery_key_takes_none_unless_a_recovery_used_it() -> None:
    plain = replace(enrolled().cred, recovery_key=None)
    dev = Device(plain, signing.new_seed(), signing.new_seed())
    dev.cred = replace(plain, public_key=signing.public_key(dev.seed))
    listed, _ = rotated(dev, T0 + 100)
    sync = reconcile([listed], stored(dev), RP)
    assert reasons(sync) == {dev.cred.id: VerificationReason.BAD_ROTATION}

    # After a recovery used its key, the old device may name a new one, newer than the
    # recovery (after "No, not me", or a passphrase change): not a replayed older one.
    old = enrolled()
    new = recovered(old, ts=T0 + 1000)
    before, _ = rotated(old, T0 + 500)  # signed by the device before the recovery
    after, _ = rotated(old, T0 + 2000)
    first = reconcile([replace(old.cred, recovery_key=None), new.cred], stored(old), RP)
    assert first.current[old.cred.id].recovery_key is None
    replay = reconcile([before, new.cred], first.current, RP)
    assert reasons(replay) == {old.cred.id: VerificationReason.BAD_ROTATION}
    ok = reconcile([after, new.cred], first.current, RP)
    assert ok.rotated == [replace(after, recovery_spent_at=T0 + 1000)] and not ok.refused
    # The recovered credential gone before the RP saw the old device's new key (the old
    # device answered "No, not me", or the user removed the new one): the spend is
    # remembered in the old credential (through to_json too), so the new key is still
    # taken and the replayed older one still refused.
    kept = credentials_from_json(json.loads(json.dumps(first.to_json())))
    spent = {old.cred.id: kept[old.cred.id]}
    gone = reconcile([after], spent, RP)
    assert gone.rotated == [replace(after, recovery_spent_at=T0 + 1000)] and not gone.refused
    assert reasons(reconcile([before], spent, RP)) == {old.cred.id: VerificationReason.BAD_ROTATION}
    # The same in one sync: the recovery is checked with the stored key first.
    both = reconcile([after, new.cred], stored(old), RP)
    assert both.added == [new.cred] and both.spent == [old.cred.id]
    assert both.rotated == [replace(after, recovery_spent_at=T0 + 1000)]
    assert both.current[old.cred.id].recovery_key == after.recovery_key


def test_removed_credentials_leave_and_apply_to_updates_the_rps_mapping() -> None:
    old, other = enrolled(), enrolled("cr_other")
    new = recovered(old)
    # The old device was removed after the recovery: the recovery still verifies.
    sync = reconcile([other.cred, new.cred], stored(old, other), RP)
    assert sync.removed == [old.cred.id] and [c.id for c in sync.added] == [new.cred.id]
    assert set(sync.current) == {other.cred.id, new.cred.id}
    mine = stored(old, other)
    sync.apply_to(mine)
    assert mine == sync.current
    assert credentials_from_json(sync.to_json()) == sync.current


def test_what_an_rps_own_code_needs_is_exported_from_the_package() -> None:
    """The README's RP code imports from `relying_party` alone: the test push's context
    marker, the TOTP parameters' stored form and the keys a result verifies with; and
    the package says it is typed (PEP 561), in the source tree and in what is installed."""
    from protocol import purpose

    for name in ("setup_test_context", "totp_to_json", "totp_from_json", "keys_for"):
        assert name in relying_party.__all__, name
    assert relying_party.setup_test_context is purpose.setup_test_context
    assert (
        relying_party.totp_from_json(relying_party.totp_to_json(params := relying_party.new_totp())) == params
    )
    root = Path(relying_party.__file__).parent.parent
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    for package in ("relying_party", "protocol"):
        assert (root / package / "py.typed").is_file()
        assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"][package]


def test_credentials_from_json_is_exported_where_its_docstrings_send_an_rp() -> None:
    """CredentialSync.to_json names credentials_from_json to read it back: importable from
    the package and named in relying_party.models.__all__, and it reads back JSON text."""
    assert "credentials_from_json" in models.__all__ and "credentials_from_json" in relying_party.__all__
    assert relying_party.credentials_from_json is models.credentials_from_json
    old = enrolled()
    sync = reconcile([replace(old.cred, last_used_at=T0 + 1)], stored(old), RP)
    assert relying_party.credentials_from_json(json.loads(json.dumps(sync.to_json()))) == sync.current


def test_a_refusal_says_which_credential_and_why() -> None:
    old = enrolled()
    sync = reconcile([replace(old.cred, public_key=b"\x00" * 32)], stored(old), RP)
    (failure,) = sync.refused
    assert isinstance(failure, VerificationFailed)
    assert str(failure).startswith(f"credential {old.cred.id}: key_mismatch:")


def test_a_recovery_whose_key_was_renewed_before_the_rp_looked_still_verifies() -> None:
    """The new phone changed its passphrase (renewing its recovery key) before the RP's
    first sync: the broker keeps the key the recovery named in the proof, so the proof
    still checks, and the renewal counts as a rotation signed by the new credential."""
    old = enrolled()
    new = recovered(old)
    assert new.cred.recovery is not None and new.cred.recovery_key is not None
    proof = replace(new.cred.recovery, recovery_public_key=new.cred.recovery_key.public_key)
    named_at_recovery = replace(new, cred=replace(new.cred, recovery=proof))
    renewed, _ = rotated(named_at_recovery, T0 + 5000)
    sync = reconcile([replace(old.cred, recovery_key=None), renewed], stored(old), RP)
    assert not sync.refused
    assert sync.current[new.cred.id].recovery_key == renewed.recovery_key
    # A renewal not signed by the new credential leaves the key the recovery named.
    forged, _ = rotated(named_at_recovery, T0 + 5000, signer=signing.new_seed())
    sync = reconcile([replace(old.cred, recovery_key=None), forged], stored(old), RP)
    assert not sync.refused
    assert sync.current[new.cred.id].recovery_key == RecoveryKey(proof.recovery_public_key or b"")
    # Without the key in the proof, a renewed key cannot be checked: refused.
    bare, _ = rotated(new, T0 + 5000)
    sync = reconcile([replace(old.cred, recovery_key=None), bare], stored(old), RP)
    assert reasons(sync) == {new.cred.id: VerificationReason.BAD_RECOVERY}
