"""Events between nodes of two releases (a rolling upgrade): a newer node's event with
fields this release does not know is read, not skipped, and an older node's event
without the last optional field still is."""

from __future__ import annotations

import msgpack
import pytest

from broker import events
from broker.models import ChallengeRecord, Credential, Notice

NOTICE = Notice(
    "nt_1", "cred-old", "cred-new", "New phone", "rp_1", "alice", "alice@example", 1_700_000_000_000, 42
)


def _with_extra(data: bytes, path: tuple[int, ...]) -> bytes:
    """`data` with one more (unknown) item appended to the list at `path`."""
    message = msgpack.unpackb(data, raw=False)
    target = message
    for i in path:
        target = target[i]
    target.append("a field of a later release")
    return msgpack.packb(message, use_bin_type=True)


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (events.NoticeCreated(NOTICE), (2,)),  # inside the notice
        (events.CredentialConfirmed("cred-1"), ()),  # at the top
        (events.CredentialRevoked("cred-1", "rp_1", "alice", "removed_by_rp"), ()),
        (events.EnrollmentRefused("en_1", "rp_1"), ()),  # RP API 1.11
    ],
)
def test_a_later_releases_extra_fields_are_ignored(event: events.Event, path: tuple[int, ...]) -> None:
    assert events.decode(_with_extra(events.encode("node-b", event), path)) == ("node-b", event)


def test_an_earlier_releases_notice_without_recovery_ts_is_read() -> None:
    message = msgpack.unpackb(events.encode("node-a", events.NoticeCreated(NOTICE)), raw=False)
    message[2] = message[2][:-1]  # as a release before recovery_ts sends it
    _, event = events.decode(msgpack.packb(message, use_bin_type=True))
    assert isinstance(event, events.NoticeCreated) and event.notice.recovery_ts is None
    assert event.notice.id == NOTICE.id


def test_too_few_fields_are_still_malformed() -> None:
    message = msgpack.unpackb(events.encode("node-a", events.NoticeCreated(NOTICE)), raw=False)
    message[2] = message[2][:-2]
    with pytest.raises(events.MalformedEvent):
        events.decode(msgpack.packb(message, use_bin_type=True))


def _challenge(targets: tuple[str, ...]) -> ChallengeRecord:
    return ChallengeRecord(
        "ch_1", "rp_1", "RP", "alice", "42", 2, b"n" * 32, b"r" * 32, {"app": "Mail"}, b"h" * 32, 1, 2,
        targets=targets,
    )  # fmt: skip


@pytest.mark.parametrize("targets", [(), ("cr_a",), ("cr_a", "cr_b")])
def test_a_challenges_targets_reach_other_nodes_and_the_store_whole(targets: tuple[str, ...]) -> None:
    """Whom a challenge is aimed at survives its event and its hash (one string, the ids
    joined by a space: what a node of the release before reads as one id that no
    credential has, so it shows a set's challenge to no one). Each node decides by it
    which of its devices get the frame."""
    record = _challenge(targets)
    _, event = events.decode(events.encode("node-a", events.ChallengeCreated(record)))
    assert isinstance(event, events.ChallengeCreated) and event.record.targets == targets
    fields = record.to_fields()
    raw = {
        str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in zip(fields[::2], fields[1::2], strict=True)
    }
    assert ChallengeRecord.from_hash("ch_1", raw).targets == targets
    for cid, confirmed in (("cr_a", True), ("cr_b", False), ("cr_c", True)):
        cred = Credential(cid, "rp_1", "alice", "a", "d", b"k" * 32, 0, None, "active", confirmed=confirmed)
        assert cred.receives(event.record) is (cid in targets if targets else confirmed)


def test_an_earlier_releases_challenge_without_targets_goes_to_the_confirmed_devices() -> None:
    message = msgpack.unpackb(events.encode("node-a", events.ChallengeCreated(_challenge(()))), raw=False)
    message[2] = message[2][:-1]  # as a release before targets sends it
    _, event = events.decode(msgpack.packb(message, use_bin_type=True))
    assert isinstance(event, events.ChallengeCreated) and event.record.targets == ()
