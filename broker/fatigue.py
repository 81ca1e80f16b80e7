"""Push fatigue protection (DESIGN invariant 8): the policy and its refusals.

Pushes since the user's last successful sign-in are capped and rate-limited, so an
attacker with the password cannot wear the user down with prompts; a "this wasn't
me" report mutes push for that user until the RP lifts it or the mute times out.
Under the NIST SP 800-63B-4 profile, consecutive wrong numbers across challenges
lock push too. The counting itself is atomic in Redis (lua.CREATE_CHALLENGE /
RECORD_ANSWER).
"""

from __future__ import annotations

from .policy import RpPolicy


class PushRefused(Exception):
    """No push was sent; `code` is the API's problem code. `retry_after_s`: when a new
    request may succeed, if a time says so (the rate window, or a mute that ends at a
    set time): sent as Retry-After."""

    def __init__(self, code: str, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


def refusal(kind: int, value: int, policy: RpPolicy, now_ms: int) -> PushRefused:
    """The refusal for CREATE_CHALLENGE's negative result `{kind, value}`, at `now_ms`."""
    if kind == -1:
        if value < 0:
            return PushRefused(
                "push_blocked", "push is muted for this user after a fraud report, until the service lifts it"
            )
        # A timed mute: the RP can say "paused until ..." without parsing this text.
        return PushRefused(
            "push_blocked",
            f"push is muted for this user after a fraud report, until {value} (Unix ms) or until "
            "the service lifts it",
            retry_after_s=_seconds_until(value, now_ms),
        )
    if kind == -2:
        return PushRefused(
            "push_blocked",
            f"{value} push requests since the last successful sign-in (the limit is "
            f"{policy.max_pushes}); the service must lift the block or the user signs in another way",
        )
    if kind == -5:
        return PushRefused(
            "push_blocked",
            f"{value} consecutive sign-in requests answered with a wrong number (the limit is "
            f"{policy.failure_limit}, profile {policy.profile}); push is locked until the service lifts it",
        )
    retry = _seconds_until(value, 0)
    return PushRefused(
        "rate_limited",
        f"more than {policy.max_pushes_per_minute} push requests in {policy.window_s} s; "
        f"try again in {retry} s",
        retry_after_s=retry,
    )


def _seconds_until(when_ms: int, now_ms: int) -> int:
    """Whole seconds from `now_ms` to `when_ms`, rounded up, at least 1 (Retry-After)."""
    return max(1, -(-(when_ms - now_ms) // 1000))
