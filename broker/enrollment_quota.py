"""What one RP may hold of the shared Redis in enrollments (DESIGN invariant 13).

Every broker node and every RP share one Redis (or Redis Cluster), and each enrollment
costs it about 0.5 KB while pending (1.4 KB at the longest user id and account label)
and is kept 15 minutes after it ends, so that the RP can read how it ended. Unbounded,
one RP key (compromised, or a loop in the RP's code) filled it for everyone: 3,000
pending enrollments in under a second, 2.5 GB in ten minutes. Two settings of the RP's
policy (broker/policy.py) bound it, counted in Redis (lua.RESERVE_ENROLLMENT), so they
hold across nodes:

- `max_pending_enrollments`: pending at once. An enrollment leaves the count when it is
  completed, withdrawn (DELETE /v1/enrollments/{id}, an erased user) or expires, so a
  setup page that is used frees its place at once.
- `enrollments_per_minute`: made per minute, a token bucket of a minute's worth. A
  withdrawn or completed enrollment frees its pending place but is still kept for
  reading, so without a rate, create-and-withdraw would grow Redis without bound all the
  same. The bucket bounds every enrollment record the RP has at a time to its size plus
  the rate times 25 minutes (10 pending, 15 kept).

Both refusals are 429 with Retry-After and store nothing: the cap's says when the oldest
pending enrollment expires (a place frees by then at the latest), the rate's when the
next token comes. The count lives in the RP's own hash slot, the enrollment in its
user's, so on a Redis Cluster they are two atomic steps: the place is taken first, and
given back if the enrollment could not be written; one lost in between (a node that
died) frees itself at the enrollment's expiry, so the count errs high by it for at most
10 minutes (and low by one for a write whose reply was lost: docs/operations.md).
"""

from __future__ import annotations

from .policy import RpPolicy

CAP_CODE = "too_many_enrollments"
RATE_CODE = "rate_limited"


class EnrollmentRefused(Exception):
    """No enrollment was made; `code` is the API's problem code (status 429)."""

    def __init__(self, code: str, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


def refusal(kind: int, wait_ms: int, policy: RpPolicy) -> EnrollmentRefused:
    """The refusal for RESERVE_ENROLLMENT's negative result `{kind, wait_ms}`."""
    retry = max(1, -(-wait_ms // 1000))
    if kind == -1:
        return EnrollmentRefused(
            CAP_CODE,
            f"{policy.max_pending_enrollments} enrollments of this service are pending (its limit); "
            "each ends when a device completes it, the service withdraws it (DELETE "
            f"/v1/enrollments/{{id}}) or it expires: the oldest in {retry} s",
            retry,
        )
    return EnrollmentRefused(
        RATE_CODE,
        f"more than {policy.enrollments_per_minute} enrollments a minute for this service (its limit); "
        f"try again in {retry} s",
        retry,
    )
