"""Events between nodes of two releases (a rolling upgrade): a newer node's event with
fields this release does not know is read, not skipped, and an older node's event
without the last optional field still is."""

from __future__ import annotations

import msgpack
import pytest

from broker import events
from broker.models import Notice

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
