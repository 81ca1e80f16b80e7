"""Small pure parts of the agent: backoff, messages, display."""

from __future__ import annotations

import dataclasses
import random

import pytest
import websockets.exceptions as wse
from e2e_helpers import agent_env  # noqa: F401  (autouse: the vault passphrase for every agent run)
from websockets.frames import Close

from device_agent.connection import _closed_error
from device_agent.display import (
    context_lines,
    number_source,
    request_json,
    request_seconds_left,
    request_text,
    seconds_left,
)
from device_agent.listen import BACKOFF_BASE_S, BACKOFF_CAP_S, BACKOFF_TOP_ATTEMPT, backoff_delay
from device_agent.messages import (
    CANCEL_MESSAGES,
    ERROR_MESSAGES,
    OUTCOME_MESSAGES,
    close_message,
    error_message,
    outcome_message,
)
from protocol.challenge import Status
from protocol.errors import CLOSE_CODES, ErrorCode
from protocol.frames import CancelReason
from protocol.vectors import CHALLENGE


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_is_full_jitter_under_a_growing_capped_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    delays = [backoff_delay(attempt, rng) for _ in range(200)]
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter spreads reconnects over the whole range (no thundering herd).
    assert min(delays) < ceiling * 0.2
    assert max(delays) > ceiling * 0.8


def test_backoff_never_exceeds_the_cap_however_long_the_outage() -> None:
    assert max(backoff_delay(1000, random.Random(1)) for _ in range(100)) <= BACKOFF_CAP_S


def test_backoff_is_the_specs_one_second_to_sixty() -> None:
    """docs/protocol.md, section 15: the n-th wait from [0, min(60 s, 1 s x 2^n)]; after
    a 4429 or 4408 close `listen` starts at the largest step."""
    assert (BACKOFF_BASE_S, BACKOFF_CAP_S) == (1.0, 60.0)
    rng = random.Random(7)
    assert max(backoff_delay(0, rng) for _ in range(500)) <= 1.0
    assert max(backoff_delay(5, rng) for _ in range(500)) <= 32.0
    assert max(backoff_delay(BACKOFF_TOP_ATTEMPT, rng) for _ in range(500)) > 32.0
    assert (
        BACKOFF_BASE_S * 2**BACKOFF_TOP_ATTEMPT
        >= BACKOFF_CAP_S
        > BACKOFF_BASE_S * 2 ** (BACKOFF_TOP_ATTEMPT - 1)
    )


def test_every_error_code_has_words() -> None:
    assert set(ErrorCode) <= ERROR_MESSAGES.keys()
    assert error_message("bad_token").startswith("the setup link")
    assert "something new" in error_message("brand_new_code", "something new")


def test_protocol_closes_are_explained_by_their_reason() -> None:
    for code, close in CLOSE_CODES.items():
        assert close_message(close, str(code)) == ERROR_MESSAGES[code]
    assert "restarting" in close_message(1001)
    assert "4999" in close_message(4999, "")
    assert close_message(None) == "the connection was lost"


def test_a_broker_gone_silent_is_not_said_to_have_had_an_internal_error() -> None:
    # websockets ends a connection whose pings go unanswered with its own close 1011
    # ("keepalive ping timeout"): a hung broker said nothing, least of all an error.
    ours = wse.ConnectionClosedError(None, Close(1011, "keepalive ping timeout"))
    message = str(_closed_error("ws://b.example/v1/device", ours))
    assert message.startswith(
        "ws://b.example/v1/device: the broker stopped answering (no reply to a keepalive"
    )
    assert "internal error" not in message
    # The broker's own 1011 still reads as its error.
    theirs = wse.ConnectionClosedError(Close(1011, ""), None)
    assert "the broker had an internal error" in str(_closed_error("ws://b.example/v1/device", theirs))


def test_every_outcome_and_cancel_reason_has_words() -> None:
    assert {s for s in Status if s.final} <= OUTCOME_MESSAGES.keys()
    assert set(CancelReason) <= CANCEL_MESSAGES.keys()


def test_context_shows_known_keys_with_labels_first_and_every_other_key() -> None:
    lines = context_lines(
        {"zeta": "1", "ip": "203.0.113.5", "app": "Mail", "custom": "x", "action": "Test notification"}
    )
    assert lines == [
        ("application", "Mail"),
        ("request", "Test notification"),  # the demo RP's test notification and re-checks
        ("IP address", "203.0.113.5"),
        ("custom", "x"),
        ("zeta", "1"),
    ]


def test_a_setup_test_notification_is_worded_as_such_and_shows_its_marker() -> None:
    """docs/protocol.md 15.1: `purpose` = "setup test" asks to finish adding the device,
    with the number on the setup page; the entry itself is still shown (it is signed)."""
    setup = dataclasses.replace(CHALLENGE, ctx={"app": "VPN", "purpose": "setup test"})
    text = request_text(setup, None, CHALLENGE.created)
    assert text.startswith(f"Test notification {CHALLENGE.ch}: finish adding this device?\n"), text
    assert "purpose:" in text and "setup test" in text
    assert number_source(setup) == "the setup page"
    # Its outcome is about adding the device; a sign-in's, and an ending, as before.
    assert (
        outcome_message("approved", purpose="setup test")
        == "approved: the service can now finish adding this device"
    )
    assert outcome_message("approved") == "approved: the sign-in is allowed"
    assert outcome_message("expired", purpose="setup test") == outcome_message("expired")
    assert request_json(setup, None, CHALLENGE.created)["setup_test"] is True
    # Anything else is a sign-in: no purpose, another one, or the marker misspelt.
    for ctx in ({"app": "VPN"}, {"purpose": "Setup test"}, {"action": "setup test"}):
        other = dataclasses.replace(CHALLENGE, ctx=ctx)
        assert request_text(other, None, CHALLENGE.created).startswith(f"Sign-in request {CHALLENGE.ch}\n")
        assert number_source(other) == "the sign-in screen"
        assert request_json(other, None, CHALLENGE.created)["setup_test"] is False


def test_a_verify_request_is_worded_as_such_and_shows_its_marker() -> None:
    """docs/protocol.md 15.1: `purpose` = "verify" (a "verify it's you" of a person already
    signed in) asks whether they are verifying their identity, with the number on the page
    asking them to; the entry is still shown (it is signed), and its outcomes fit."""
    verify = dataclasses.replace(CHALLENGE, ctx={"app": "VPN", "purpose": "verify"})
    text = request_text(verify, None, CHALLENGE.created)
    assert text.startswith(f"Verification request {CHALLENGE.ch}: is this you verifying your identity?\n"), (
        text
    )
    assert "purpose:" in text and "verify" in text
    assert number_source(verify) == "the page asking you to verify"
    assert (
        outcome_message("approved", purpose="verify")
        == "approved: it was you, the service can go on with the change"
    )
    assert "sign-in" not in outcome_message("denied", purpose="verify")
    assert outcome_message("expired", purpose="verify") == "expired: the verification request timed out"
    assert outcome_message("withdrawn", purpose="verify") == outcome_message("withdrawn")
    shown_json = request_json(verify, None, CHALLENGE.created)
    assert shown_json["purpose"] == "verify" and shown_json["setup_test"] is False
    for ctx in ({"purpose": "Verify"}, {"action": "verify"}):
        other = dataclasses.replace(CHALLENGE, ctx=ctx)
        assert request_text(other, None, CHALLENGE.created).startswith(f"Sign-in request {CHALLENGE.ch}\n")
        assert request_json(other, None, CHALLENGE.created)["purpose"] is None


def test_a_request_never_shows_more_than_its_lifetime() -> None:
    # The broker's clock estimated a little early (before the request was made): a 60 s
    # request said "expires in 61 s".
    early = CHALLENGE.created - 400
    assert CHALLENGE.expires - CHALLENGE.created == 60_000
    assert request_seconds_left(CHALLENGE, early) == 60
    assert request_text(CHALLENGE, None, early).endswith(" 60 s")
    assert request_json(CHALLENGE, None, early)["seconds_left"] == 60
    assert request_seconds_left(CHALLENGE, CHALLENGE.created + 30_500) == 30


def test_seconds_left_rounds_up_and_stops_at_zero() -> None:
    assert seconds_left(10_000, 0) == 10
    assert seconds_left(10_000, 9_001) == 1
    assert seconds_left(10_000, 10_000) == 0
    assert seconds_left(10_000, 20_000) == 0


def test_a_clock_offset_is_told_with_the_clock_that_is_off() -> None:
    """Positive: the broker's clock is ahead, so this device is behind (the size's words
    are protocol/durations.py's, tested in test_protocol_durations.py)."""
    from device_agent.broker_clock import describe

    assert describe(-86_399_600) == "1 d 0 h ahead of"
    assert describe(179_600) == "3 min 0 s behind"


def test_a_rotation_the_broker_takes_only_far_ahead_names_the_wrong_clock() -> None:
    # After the one retry just after `newer_than` (recovery_keys._name_key), what is left
    # is a wrong clock: this device's, when measured off the broker's, else the restorer's.
    from device_agent.broker_clock import rotation_refused
    from device_agent.display import local_time

    at = 1_800_000_000_000
    behind = rotation_refused(at, 15 * 60_000)
    assert "this device's clock is 15 min behind the broker's: set it right" in behind
    restorer = rotation_refused(at, None)
    assert f"the device that restored this account had a clock ahead: wait until {local_time(at)}" in restorer
    for why in (behind, restorer):
        assert why.startswith(f"the service takes a new key only if signed after {local_time(at)}")
        assert why.endswith("unless a restore used it)") and "pushauth-agent backup retire" in why
