# ruff: noqa: E501  (tables of test data read best one case a line)
"""Known-answer vectors for the RP's check of a broker's credential list (docs/protocol.md
section 16, "The RP's check"; vectors `rp.reconcile`).

Each case gives the RP's stored credentials of one user, the broker's listing (the body
of GET /v1/users/{user}/credentials, section 16.1), the outcome of every listed entry
and the RP's new store. The outcomes are written here from the table in the text, not
taken from an SDK; the new store is derived from them by the rules of the text
(`_new_store`), so a second RP can check its reconcile with them, and
tests/test_sdk_vectors.py checks the reference SDK (relying_party.verify.reconcile).
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import b64, signing

RP = "rp_example"
USER = "alice"
T0 = 1_767_225_600_000
R_TS = T0 + 50_000  # when the recoveries of these cases were signed
Json = dict[str, Any]


def seed(name: str) -> bytes:
    """The 32-byte seed of the key called `name` in these vectors (A1 and B1 credential
    keys, RA1 A1's recovery key, N1 a new device's key, RN1 its recovery key, ...)."""
    return hashlib.sha256(f"pushauth reconcile vector key {name}".encode()).digest()


def pk(name: str) -> bytes:
    return signing.public_key(seed(name))


def _b(data: bytes) -> str:
    return b64.encode(data)


def recovery_key(name: str, *, ts: int | None = None, cid: str = "", by: str = "") -> Json:
    """A recovery key: named at enrollment or recovery (ts, signature null), or by a
    rotation: `by` (the credential's key) signs recovery_key_bytes(cid, key, ts)."""
    if ts is None:
        return {"public_key": _b(pk(name)), "ts": None, "signature": None}
    sig = signing.sign(seed(by), signing.recovery_key_bytes(cid, pk(name), ts))
    return {"public_key": _b(pk(name)), "ts": ts, "signature": _b(sig)}


def proof(
    from_id: str,
    key: str,
    k: str,
    *,
    ts: int = R_TS,
    device: str = "Alice's new phone",
    rk: str | None = None,
    rp: str = RP,
    by: str | None = None,
    named: bool = True,
) -> Json:
    """A recovery's proof: recover_bytes(rp, from, pk(key), device, pk(k), ts) signed by
    the recovery key `rk` (default R<from's key>) and by the new key `by` (default `key`).
    `named`: the broker kept K as recovery_public_key (else null, an older broker)."""
    message = signing.recover_bytes(rp, from_id, pk(key), device, pk(k), ts)
    return {
        "from": from_id,
        "ts": ts,
        "recovery_signature": _b(signing.sign(seed(rk or "R" + from_id.removeprefix("cred_")), message)),
        "signature": _b(signing.sign(seed(by or key), message)),
        "recovery_public_key": _b(pk(k)) if named else None,
    }


def listed(
    cid: str,
    key: str,
    *,
    user: str = USER,
    name: str = "Alice's phone",
    created_at: int = T0,
    last_used_at: int | None = None,
    recovered_from: str | None = None,
    rkey: Json | None = None,
    recovery: Json | None = None,
    confirmed: bool = True,
) -> Json:
    """One credential of the broker's listing (docs/http-api.md `Credential`)."""
    return {
        "id": cid,
        "user": user,
        "account": "alice@example.com",
        "name": name,
        "public_key": _b(pk(key)),
        "created_at": created_at,
        "last_used_at": last_used_at,
        "recovered_from": recovered_from,
        "binding": None,
        "recovery_key": rkey,
        "recovery": recovery,
        "confirmed": confirmed,
    }


def stored(cid: str, key: str, *, spent_at: int | None = None, **fields: Any) -> Json:
    """One credential as the RP stores it: the listing's fields as the RP accepted them,
    `confirmed` its own record, and `recovery_spent_at` (when a recovery it accepted
    used this credential's recovery key, else null)."""
    return {**listed(cid, key, **fields), "recovery_spent_at": spent_at}


def recovered(cid: str, key: str, k: str, from_id: str = "cred_A1", **changes: Any) -> Json:
    """A credential registered by recovery, as the broker lists it: its key `key`, its
    recovery key K (`k`) as named, and the proof from `from_id`'s recovery key."""
    base: Json = {
        "name": "Alice's new phone",
        "created_at": R_TS,
        "recovered_from": from_id,
        "rkey": recovery_key(k),
        "recovery": proof(from_id, key, k),
    }
    return listed(cid, key, **{**base, **changes})


# -- the store the text's rules make from the outcomes --------------------------------


def _new_store(
    stored_creds: list[Json], listing: list[Json], outcomes: list[Json]
) -> tuple[list[Json], list[str], list[str], list[str]]:
    """The RP's new store (sorted by id), the spent sources, the removed ids and
    `last_used`, by section 16's rules: a stored credential stays as stored except
    for what verified; an accepted recovery is stored as listed with recovered_from =
    recovery.from, recovery_key K (or the verified later key), binding null,
    confirmed true, recovery_spent_at null, and spends its source's recovery key
    (recovery_key null, recovery_spent_at = the latest such recovery's ts); a verified
    rotation replaces the recovery key; a later last_used_at is taken; stored
    credentials not listed are removed."""
    store = {c["id"]: dict(c) for c in stored_creds}
    seen: set[str] = set()
    firsts: list[tuple[Json, Json]] = []
    for cred, out in zip(listing, outcomes, strict=True):
        if cred["id"] not in seen:
            seen.add(cred["id"])
            firsts.append((cred, out))
    spent: list[str] = []
    for cred, out in firsts:
        if out["outcome"] == "accepted":
            store[cred["id"]] = {
                **cred,
                "recovered_from": cred["recovery"]["from"],
                "recovery_key": out["recovery_key"],
                "binding": None,
                "confirmed": True,
                "recovery_spent_at": None,
            }
    for cred, out in firsts:
        if out["outcome"] == "accepted":
            source = store[cred["recovery"]["from"]]
            source["recovery_key"] = None
            source["recovery_spent_at"] = max(source["recovery_spent_at"] or 0, cred["recovery"]["ts"])
            spent.append(source["id"])
    last_used: list[str] = []
    for cred, out in firsts:
        if out["outcome"] == "rotated":
            store[cred["id"]]["recovery_key"] = cred["recovery_key"]
        mine = store.get(cred["id"])
        same_key = (
            out["outcome"] != "accepted" and mine is not None and mine["public_key"] == cred["public_key"]
        )
        if (
            same_key
            and cred["last_used_at"] is not None
            and (mine["last_used_at"] or 0) < cred["last_used_at"]
        ):
            mine["last_used_at"] = cred["last_used_at"]
            last_used.append(cred["id"])
    removed = [c["id"] for c in stored_creds if c["id"] not in seen]
    for cid in removed:
        del store[cid]
    return [store[cid] for cid in sorted(store)], spent, removed, last_used


def _outcome(cred: Json, what: str) -> Json:
    if what in ("kept", "rotated"):
        return {"id": cred["id"], "outcome": what}
    if what in ("accepted", "accepted_renewed"):
        # K, or (accepted_renewed) the later listed key that passed the rotation check.
        k = cred["recovery_key"] if what == "accepted_renewed" else None
        if k is None:
            named = cred["recovery"]["recovery_public_key"] or cred["recovery_key"]["public_key"]
            k = {"public_key": named, "ts": None, "signature": None}
        return {"id": cred["id"], "outcome": "accepted", "recovery_key": k}
    return {"id": cred["id"], "outcome": "refused", "reason": what}


def _case(name: str, rule: str, stored_creds: list[Json], listing: list[Json], outcomes: list[str]) -> Json:
    outs = [_outcome(c, o) for c, o in zip(listing, outcomes, strict=True)]
    new_store, spent, removed, last_used = _new_store(stored_creds, listing, outs)
    # Held as confirmed by the RP, listed (first, with the stored key) as not confirmed.
    held = {c["id"]: c for c in stored_creds}
    firsts = {c["id"]: c for c in reversed(listing)}
    unconfirmed = [
        cid
        for cid, c in firsts.items()
        if cid in held
        and held[cid]["confirmed"]
        and held[cid]["public_key"] == c["public_key"]
        and not c["confirmed"]
    ]
    return {
        "name": name,
        "rule": rule,
        "rp": RP,
        "user": USER,
        "stored": stored_creds,
        "listing": {"credentials": listing},
        "expect": {
            "listed": outs,
            "spent": sorted(spent),
            "removed": sorted(removed),
            "last_used": sorted(last_used),
            "unconfirmed_at_broker": sorted(set(unconfirmed)),
            "stored": new_store,
        },
    }


def reconcile_vectors() -> list[Json]:
    A1 = stored("cred_A1", "A1", rkey=recovery_key("RA1"))  # recoverable, key named at enrollment
    B1 = stored("cred_B1", "B1", name="Alice's laptop")  # not recoverable: no recovery key
    a1 = listed("cred_A1", "A1", rkey=recovery_key("RA1"))  # as the broker lists A1 unchanged
    b1 = listed("cred_B1", "B1", name="Alice's laptop")
    a1_spent = listed("cred_A1", "A1", rkey=None)  # its recovery key used by a recovery
    N1 = recovered("cred_N1", "N1", "RN1")
    rot = T0 + 40_000  # A1's rotation in the earlier rotation cases
    A1_rotated = stored("cred_A1", "A1", rkey=recovery_key("RA1", ts=rot, cid="cred_A1", by="A1"))
    # A1 after an earlier sync accepted N1's recovery: its key spent at R_TS, N1 stored.
    A1_after = stored("cred_A1", "A1", rkey=None, spent_at=R_TS)
    N1_stored = {
        **stored(
            "cred_N1",
            "N1",
            name="Alice's new phone",
            created_at=R_TS,
            recovered_from="cred_A1",
            rkey=recovery_key("RN1"),
            recovery=proof("cred_A1", "N1", "RN1"),
        ),
        "confirmed": True,
    }
    cases: list[Json] = []

    def case(name: str, rule: str, st: list[Json], li: list[Json], outs: list[str]) -> None:
        cases.append(_case(name, rule, st, li, outs))

    # -- a stored id
    case(
        "a stored id listed with the stored key: kept (the stored name stays, the later last_used_at is taken)",
        "stored id",
        [A1, B1],
        [
            listed(
                "cred_A1",
                "A1",
                name="Renamed by the broker",
                last_used_at=T0 + 9_000,
                rkey=recovery_key("RA1"),
            ),
            b1,
        ],
        ["kept", "kept"],
    )
    case(
        "a stored id listed with another public key: key_mismatch, the stored one stays",
        "stored id",
        [A1, B1],
        [listed("cred_A1", "X1", rkey=recovery_key("RA1")), b1],
        ["key_mismatch", "kept"],
    )
    case(
        "the broker's confirmed does not change the RP's: one it holds confirmed, listed unconfirmed, is named",
        "stored id",
        [A1, {**stored("cred_B1", "B1", name="Alice's laptop"), "confirmed": False}],
        [listed("cred_A1", "A1", rkey=recovery_key("RA1"), confirmed=False), b1],
        ["kept", "kept"],
    )
    # -- a rotation
    case(
        "a rotation signed by the stored credential key with a ts newer than the stored key's: rotated",
        "rotation",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot, cid="cred_A1", by="A1"))],
        ["rotated"],
    )
    case(
        "a rotation after an earlier rotation, newer: rotated",
        "rotation",
        [A1_rotated],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot + 1, cid="cred_A1", by="A1"))],
        ["rotated"],
    )
    case(
        "a rotation not signed by the credential key: bad_rotation, the stored key stays",
        "rotation",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot, cid="cred_A1", by="X1"))],
        ["bad_rotation"],
    )
    case(
        "a rotation signed over another credential id: bad_rotation",
        "rotation",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot, cid="cred_B1", by="A1"))],
        ["bad_rotation"],
    )
    case(
        "an older rotation replayed (ts before the stored key's): bad_rotation",
        "rotation",
        [A1_rotated],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot - 1, cid="cred_A1", by="A1"))],
        ["bad_rotation"],
    )
    case(
        "a rotation with the stored key's ts (not newer): bad_rotation",
        "rotation",
        [A1_rotated],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=rot, cid="cred_A1", by="A1"))],
        ["bad_rotation"],
    )
    case(
        "a new recovery key without ts and signature (not a rotation the RP can check): bad_rotation",
        "rotation",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2"))],
        ["bad_rotation"],
    )
    case(
        "a rotation of a credential the RP did not enroll as recoverable: bad_rotation",
        "rotation",
        [B1],
        [
            listed(
                "cred_B1",
                "B1",
                name="Alice's laptop",
                rkey=recovery_key("RB2", ts=rot, cid="cred_B1", by="B1"),
            )
        ],
        ["bad_rotation"],
    )
    # "Another recovery key" is any change of the listed object, not only of its public
    # key: an implementation written from the text compared public keys alone and kept
    # both of these, where the rotation check decides.
    case(
        "the stored recovery key signed again with a newer ts (same public key): a rotation, rotated",
        "rotation",
        [A1_rotated],
        [listed("cred_A1", "A1", rkey=recovery_key("RA1", ts=rot + 1, cid="cred_A1", by="A1"))],
        ["rotated"],
    )
    case(
        "the stored recovery key listed with a ts and a signature not by the credential key (same public key): bad_rotation",
        "rotation",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA1", ts=rot, cid="cred_A1", by="X1"))],
        ["bad_rotation"],
    )
    case(
        "a recovery key listed null (used by a recovery the RP has not seen): not a rotation, nothing changes",
        "rotation",
        [A1],
        [a1_spent],
        ["kept"],
    )
    case(
        "a rotation after a recovery accepted in an earlier sync, signed before it: bad_rotation",
        "rotation",
        [A1_after, N1_stored],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=R_TS, cid="cred_A1", by="A1")), N1],
        ["bad_rotation", "kept"],
    )
    case(
        "a rotation after a recovery accepted in an earlier sync, signed after it (the renewal after confirm): rotated",
        "rotation",
        [A1_after, N1_stored],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=R_TS + 1, cid="cred_A1", by="A1")), N1],
        ["rotated", "kept"],
    )
    case(
        "the recovered credential gone (disowned), the spend remembered: a rotation signed before it is bad_rotation",
        "rotation",
        [A1_after],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=R_TS - 1, cid="cred_A1", by="A1"))],
        ["bad_rotation"],
    )
    case(
        "a stored recovered credential's rotation signed before its own recovery: bad_rotation (its K dates from the recovery)",
        "rotation",
        [A1_after, N1_stored],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2", ts=R_TS - 1, cid="cred_N1", by="N1")}],
        ["kept", "bad_rotation"],
    )
    case(
        "a stored recovered credential's rotation signed after its recovery: rotated",
        "rotation",
        [A1_after, N1_stored],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2", ts=R_TS + 1, cid="cred_N1", by="N1")}],
        ["kept", "rotated"],
    )
    # -- a recovery
    case(
        "a recovery signed by the stored recovery key and the new key: accepted, A1's recovery key spent",
        "recovery",
        [A1, B1],
        [a1_spent, b1, N1],
        ["kept", "kept", "accepted"],
    )
    case(
        "a recovery listed unconfirmed, without recovered_from: accepted as confirmed, recovered_from from the proof",
        "recovery",
        [A1],
        [a1_spent, {**N1, "recovered_from": None, "confirmed": False}],
        ["kept", "accepted"],
    )
    case(
        "a recovery by a broker that kept no recovery_public_key: K is the listed recovery_key (ts, signature null)",
        "recovery",
        [A1],
        [a1_spent, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", named=False))],
        ["kept", "accepted"],
    )
    case(
        "no recovery_public_key, the listed recovery_key rotated (has ts and signature): bad_recovery (cannot be checked)",
        "recovery",
        [A1],
        [
            a1_spent,
            recovered(
                "cred_N1",
                "N1",
                "RN1",
                rkey=recovery_key("RN1", ts=R_TS + 1, cid="cred_N1", by="N1"),
                recovery=proof("cred_A1", "N1", "RN1", named=False),
            ),
        ],
        ["kept", "bad_recovery"],
    )
    case(
        "no recovery_public_key and no recovery_key: bad_recovery",
        "recovery",
        [A1],
        [
            a1_spent,
            recovered("cred_N1", "N1", "RN1", rkey=None, recovery=proof("cred_A1", "N1", "RN1", named=False)),
        ],
        ["kept", "bad_recovery"],
    )
    case(
        "recovered from a credential the RP does not hold: bad_recovery",
        "recovery",
        [A1],
        [a1, recovered("cred_N1", "N1", "RN1", "cred_Z9", recovery=proof("cred_Z9", "N1", "RN1", rk="RA1"))],
        ["kept", "bad_recovery"],
    )
    case(
        "recovered_from and recovery.from differ: bad_recovery",
        "recovery",
        [A1, B1],
        [a1, b1, {**N1, "recovered_from": "cred_B1"}],
        ["kept", "kept", "bad_recovery"],
    )
    case(
        "recovered from a credential of another user: bad_recovery",
        "recovery",
        [A1],
        [a1, {**N1, "user": "mallory"}],
        ["kept", "bad_recovery"],
    )
    case(
        "the recovery signature not by the stored recovery key: bad_recovery, nothing spent",
        "recovery",
        [A1],
        [a1, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", rk="X1"))],
        ["kept", "bad_recovery"],
    )
    case(
        "the new key's signature (proof of possession) does not verify: bad_recovery",
        "recovery",
        [A1],
        [a1, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", by="X1"))],
        ["kept", "bad_recovery"],
    )
    case(
        "signed for another RP: bad_recovery",
        "recovery",
        [A1],
        [a1, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", rp="rp_other"))],
        ["kept", "bad_recovery"],
    )
    case(
        "another device name than signed: bad_recovery",
        "recovery",
        [A1],
        [a1, {**N1, "name": "Mallory's phone"}],
        ["kept", "bad_recovery"],
    )
    case(
        "another K than signed (recovery_public_key replaced): bad_recovery",
        "recovery",
        [A1],
        [
            a1,
            {
                **N1,
                "recovery": {**N1["recovery"], "recovery_public_key": _b(pk("X1"))},
                "recovery_key": recovery_key("X1"),
            },
        ],
        ["kept", "bad_recovery"],
    )
    case(
        "recovered from a credential the RP did not enroll as recoverable: recovery_key_used (the RP holds no unused recovery key)",
        "recovery",
        [B1],
        [b1, recovered("cred_N1", "N1", "RN1", "cred_B1")],
        ["kept", "recovery_key_used"],
    )
    case(
        "recovered from a stored credential the broker no longer lists: accepted, the source removed",
        "recovery",
        [A1],
        [N1],
        ["accepted"],
    )
    # -- recovered_from without recovery, unknown, twice, not listed
    case(
        "not stored, recovered_from but no recovery: bad_recovery",
        "recovered_from without recovery",
        [A1],
        [a1, {**N1, "recovery": None}],
        ["kept", "bad_recovery"],
    )
    case(
        "not stored, neither recovery nor recovered_from: unknown_credential",
        "unknown credential",
        [A1],
        [a1, listed("cred_C1", "C1", name="A new phone")],
        ["kept", "unknown_credential"],
    )
    case(
        "a stored id listed twice: the first is checked, the second is key_mismatch",
        "listed twice",
        [A1],
        [a1, listed("cred_A1", "X1", rkey=recovery_key("RA1"))],
        ["kept", "key_mismatch"],
    )
    case(
        "a stored id listed twice, first with another key: both refused, the stored one stays",
        "listed twice",
        [A1],
        [listed("cred_A1", "X1", rkey=recovery_key("RA1")), a1],
        ["key_mismatch", "key_mismatch"],
    )
    case(
        "a recovery listed twice: the first is checked and accepted, the second key_mismatch",
        "listed twice",
        [A1],
        [a1_spent, N1, N1],
        ["kept", "accepted", "key_mismatch"],
    )
    case("stored, not listed: removed", "removed", [A1, B1], [a1], ["kept"])
    case("nothing listed: every stored credential removed", "removed", [A1, B1], [], [])
    # -- the paragraphs under the table
    n2 = recovered(
        "cred_N2",
        "N2",
        "RN2",
        name="Alice's tablet",
        recovery=proof("cred_A1", "N2", "RN2", ts=R_TS + 1, device="Alice's tablet"),
    )
    case(
        "two recoveries with one key: the earliest ts wins, the later is recovery_key_used (listing order does not matter)",
        "one key, several recoveries",
        [A1],
        [a1_spent, n2, N1],
        ["kept", "recovery_key_used", "accepted"],
    )
    n0 = recovered(
        "cred_N0",
        "N0",
        "RN0",
        name="Alice's tablet",
        recovery=proof("cred_A1", "N0", "RN0", device="Alice's tablet"),
    )
    case(
        "two recoveries with one key and the same ts: the lowest id wins",
        "one key, several recoveries",
        [A1],
        [a1_spent, N1, n0],
        ["kept", "recovery_key_used", "accepted"],
    )
    forged = recovered(
        "cred_N0",
        "N0",
        "RN0",
        name="Alice's tablet",
        recovery=proof("cred_A1", "N0", "RN0", ts=R_TS - 1, device="Alice's tablet", rk="X1"),
    )
    case(
        "an earlier recovery that does not verify spends nothing: the next one wins",
        "one key, several recoveries",
        [A1],
        [a1_spent, forged, N1],
        ["kept", "bad_recovery", "accepted"],
    )
    forged_late = recovered(
        "cred_N2",
        "N2",
        "RN2",
        name="Alice's tablet",
        recovery=proof("cred_A1", "N2", "RN2", ts=R_TS + 1, device="Alice's tablet", rk="X1"),
    )
    case(
        "a later recovery with the spent key that does not verify with it: bad_recovery",
        "one key, several recoveries",
        [A1],
        [a1_spent, N1, forged_late],
        ["kept", "accepted", "bad_recovery"],
    )
    case(
        "a recovery key spent in an earlier sync: a recovery listed later with it is recovery_key_used",
        "spent before",
        [A1_after, N1_stored],
        [a1_spent, N1, n2],
        ["kept", "kept", "recovery_key_used"],
    )
    n2_chain = recovered(
        "cred_N2",
        "N2",
        "RN2",
        "cred_N1",
        name="Alice's tablet",
        recovery=proof("cred_N1", "N2", "RN2", ts=R_TS + 1, device="Alice's tablet"),
    )
    case(
        "a chain in one list (N2 recovered from N1, recovered from A1), listed N2 first: both accepted, checked in order",
        "chain",
        [A1],
        [n2_chain, a1_spent, {**N1, "recovery_key": None}],
        ["accepted", "kept", "accepted"],
    )
    case(
        "a chain whose first recovery does not verify: both bad_recovery",
        "chain",
        [A1],
        [n2_chain, a1, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", rk="X1"))],
        ["bad_recovery", "kept", "bad_recovery"],
    )
    loop_a = recovered("cred_N1", "N1", "RN1", "cred_N2", recovery=proof("cred_N2", "N1", "RN1"))
    loop_b = recovered(
        "cred_N2",
        "N2",
        "RN2",
        "cred_N1",
        name="Alice's tablet",
        recovery=proof("cred_N1", "N2", "RN2", device="Alice's tablet"),
    )
    case(
        "two recoveries from each other (a cycle): both bad_recovery",
        "chain",
        [A1],
        [a1, loop_a, loop_b],
        ["kept", "bad_recovery", "bad_recovery"],
    )
    case(
        "a chain from a credential stored before: accepted with its stored K",
        "chain",
        [A1_after, N1_stored],
        [a1_spent, {**N1, "recovery_key": None}, n2_chain],
        ["kept", "kept", "accepted"],
    )
    case(
        "a listed recovery_key other than K, signed by the new key after the recovery: it replaces K",
        "later key",
        [A1],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2", ts=R_TS + 1, cid="cred_N1", by="N1")}],
        ["kept", "accepted_renewed"],
    )
    case(
        "a listed recovery_key other than K, signed at the recovery's ts (not after): K stays",
        "later key",
        [A1],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2", ts=R_TS, cid="cred_N1", by="N1")}],
        ["kept", "accepted"],
    )
    case(
        "a listed recovery_key other than K, not signed by the new key: K stays",
        "later key",
        [A1],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2", ts=R_TS + 1, cid="cred_N1", by="X1")}],
        ["kept", "accepted"],
    )
    case(
        "a listed recovery_key other than K without ts and signature: K stays",
        "later key",
        [A1],
        [a1_spent, {**N1, "recovery_key": recovery_key("RN2")}],
        ["kept", "accepted"],
    )
    case(
        "the old device renews after the recovery (a rotation newer than it) in the same listing: both",
        "later key",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=R_TS + 1, cid="cred_A1", by="A1")), N1],
        ["rotated", "accepted"],
    )
    case(
        "a rotation of the source not newer than the recovery accepted in the same listing: bad_rotation",
        "later key",
        [A1],
        [listed("cred_A1", "A1", rkey=recovery_key("RA2", ts=R_TS, cid="cred_A1", by="A1")), N1],
        ["bad_rotation", "accepted"],
    )
    case(
        "a rotation the RP never listed, then a recovery with the rotated key: bad_recovery (add the device with a QR code)",
        "unseen rotation",
        [A1],
        [a1_spent, recovered("cred_N1", "N1", "RN1", recovery=proof("cred_A1", "N1", "RN1", rk="RA2"))],
        ["kept", "bad_recovery"],
    )
    return cases
