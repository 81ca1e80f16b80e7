"""Push fatigue protection (DESIGN invariant 8): the policy and its refusals.

Pushes since the user's last successful sign-in are capped and rate-limited, so an
attacker with the password cannot wear the user down with prompts; a "this wasn't
me" report mutes push for that user until the RP lifts it or the mute times out.
The counting itself is atomic in Redis (lua.CREATE_CHALLENGE / RECORD_ANSWER).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushPolicy:
    # NIST SP 800-63B-4 allows at most 100 consecutive failed out-of-band attempts;
    # far fewer unanswered prompts already mean something is wrong.
    max_since_sign_in: int = 20
    max_per_window: int = 10
    window_s: int = 60
    fraud_mute_s: int = 24 * 3600  # 0: until the RP lifts it

    def muted_until(self, now_ms: int) -> int:
        """The muted-until value a fraud report at `now_ms` sets (-1: no end)."""
        return -1 if self.fraud_mute_s == 0 else now_ms + self.fraud_mute_s * 1000


class PushRefused(Exception):
    """No push was sent; `code` is the API's problem code."""

    def __init__(self, code: str, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


def refusal(kind: int, value: int, policy: PushPolicy) -> PushRefused:
    """The refusal for CREATE_CHALLENGE's negative result `{kind, value}`."""
    if kind == -1:
        until = (
            "until the service lifts it"
            if value < 0
            else f"until {value} (Unix ms) or until the service lifts it"
        )
        return PushRefused("push_blocked", f"push is muted for this user after a fraud report, {until}")
    if kind == -2:
        return PushRefused(
            "push_blocked",
            f"{value} push requests since the last successful sign-in (the limit is "
            f"{policy.max_since_sign_in}); the service must lift the block or the user signs in another way",
        )
    retry = max(1, -(-value // 1000))
    return PushRefused(
        "rate_limited",
        f"more than {policy.max_per_window} push requests in {policy.window_s} s; try again in {retry} s",
        retry_after_s=retry,
    )
