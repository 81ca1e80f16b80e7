"""Push policy per relying party, kept in Redis, the same on every node.

DESIGN ("Digits and TTL are the RP's policy"; invariant 8; "Policies ... are per RP,
kept in Redis"): push caps, rate, fraud-mute length, digits and TTL bounds, and the
RP's enrollment quota (invariant 13) are settings of an RP, set by the operator with
`pushauth-broker rp set RP_ID ...` and shown to the RP at GET /v1/rp/policy. Fields
the operator never set take the profile's defaults, so a new RP gets a complete policy
without a write.

Why a short per-node cache and no invalidation event: what must agree exactly across
nodes, the counts (pushes since the last sign-in, pushes in the rate window,
consecutive wrong numbers, the fraud mute), lives in Redis and is checked and written
atomically by the Lua scripts; only the limits are cached. A changed policy reaches
every node within CACHE_S, the same bound that already applies to a removed RP's API
key, and an event could be missed while a node resubscribes, so a TTL would be
needed as the backstop anyway. The hot path reads Redis for it at most once per RP
per CACHE_S per node.

The NIST SP 800-63B-4 profile (`nist-800-63b-4`), for out-of-band push with number
matching (sections 3.1.3 and 3.2.2): the number has at least 6 digits, a challenge
lives at most 10 minutes, an answer is accepted once (always so here: invariant 1),
and at most 100 consecutive failed authentication attempts per account, counted
across challenges (a new challenge does not reset the count; only a successful
sign-in or the RP lifting the lock does). What counts as a failed attempt is the
authenticator's output proving wrong: an answer with the wrong number
(`number_mismatch`). A "deny", a "this wasn't me" and a prompt left unanswered
(expired, cancelled, superseded, withdrawn) present no secret, so they are not
attempts in NIST's sense; unanswered prompts are bounded by the push cap instead, and
a report mutes push anyway.

Push without number matching (`allow_numberless_push`, off by default): whether the RP
may create a challenge with `"number_matching": false`, for a client that has no screen
to show a number on (a RADIUS push-only gateway). It is a plain approve/deny prompt,
which proves less (docs/protocol.md section 18.7), so it is the operator's choice per
RP, never the RP's alone, and the NIST profile refuses it: NIST's out-of-band push needs
a secret typed on the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from protocol import numbers
from protocol.challenge import MAX_TTL_S, MIN_TTL_S

log = logging.getLogger(__name__)

PROFILE_DEFAULT = "default"
PROFILE_NIST = "nist-800-63b-4"
PROFILES = (PROFILE_DEFAULT, PROFILE_NIST)
NIST_MIN_DIGITS = numbers.STRICT_MIN_DIGITS  # 6
NIST_MAX_TTL_S = 600  # "valid for at most 10 minutes"
NIST_FAILURE_LIMIT = 100  # "no more than 100 consecutive failed authentication attempts"
MAX_PUSHES_LIMIT = 100  # the cap since the last sign-in never exceeds NIST's 100
RATE_WINDOW_S = 60
# Upper bounds an operator may set: about 1.4 GB of Redis at the longest user and
# account, and a full bucket of that many at once (docs/operations.md, "Enrollments").
MAX_PENDING_ENROLLMENTS = 1_000_000
MAX_ENROLLMENTS_PER_MINUTE = 100_000
# The most devices per user an operator may allow: a challenge is one frame per device.
MAX_CREDENTIALS = 1_000
CACHE_S = 2.0


class PolicyError(ValueError):
    """A policy (or a request under it) that is not allowed; `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class RpPolicy:
    """One RP's policy; field names are the Redis hash fields, the JSON members and
    (with dashes) the `rp set` flags."""

    profile: str = PROFILE_DEFAULT
    max_pushes: int = 20  # challenges since the user's last successful sign-in
    max_pushes_per_minute: int = 10
    fraud_mute: int = 24 * 3600  # seconds a "this wasn't me" mutes push; 0: until lifted
    digits: int = numbers.DEFAULT_DIGITS  # when the request names none
    min_digits: int = numbers.MIN_DIGITS
    ttl: int = 60  # seconds, when the request names none
    max_ttl: int = MAX_TTL_S
    # What one RP may hold of the shared Redis in enrollments (DESIGN invariant 13;
    # broker/enrollment_quota.py): pending at once, and made per minute (a bucket of a
    # minute's worth), which bounds the ended ones kept for reading too.
    max_pending_enrollments: int = 10_000
    enrollments_per_minute: int = 600
    # Active credentials (devices) one user may have at the RP (RP API 1.10; each gets
    # every challenge of the user: broker/credential_cap.py).
    max_credentials: int = 10
    # May the RP create challenges without number matching (RP API 1.9)? Stored as 0/1.
    allow_numberless_push: bool = False

    @property
    def failure_limit(self) -> int | None:
        """Consecutive wrong numbers that lock push (None: not limited by count)."""
        return NIST_FAILURE_LIMIT if self.profile == PROFILE_NIST else None

    @property
    def window_s(self) -> int:
        return RATE_WINDOW_S

    def muted_until(self, now_ms: int) -> int:
        """The muted-until value a fraud report at `now_ms` sets (-1: no end)."""
        return -1 if self.fraud_mute == 0 else now_ms + self.fraud_mute * 1000

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failure_limit": self.failure_limit}

    def validate(self) -> RpPolicy:
        """Self, or PolicyError naming the first setting out of bounds."""
        _between("max_pushes", self.max_pushes, 1, MAX_PUSHES_LIMIT, "(NIST SP 800-63B-4 allows 100)")
        _between("max_pushes_per_minute", self.max_pushes_per_minute, 1, 10_000)
        _between("fraud_mute", self.fraud_mute, 0, 365 * 86400, "seconds (0: until the service lifts it)")
        _between("min_digits", self.min_digits, numbers.MIN_DIGITS, numbers.MAX_DIGITS)
        _between("digits", self.digits, self.min_digits, numbers.MAX_DIGITS, "(at least min_digits)")
        _between("max_ttl", self.max_ttl, MIN_TTL_S, MAX_TTL_S, "seconds")
        _between("ttl", self.ttl, MIN_TTL_S, self.max_ttl, "seconds (at most max_ttl)")
        _between("max_pending_enrollments", self.max_pending_enrollments, 1, MAX_PENDING_ENROLLMENTS)
        _between("enrollments_per_minute", self.enrollments_per_minute, 1, MAX_ENROLLMENTS_PER_MINUTE)
        _between("max_credentials", self.max_credentials, 1, MAX_CREDENTIALS)
        if self.profile not in PROFILES:
            raise PolicyError("profile", f"profile must be one of {', '.join(PROFILES)}")
        if self.profile == PROFILE_NIST:
            if self.min_digits < NIST_MIN_DIGITS:
                raise PolicyError(
                    "min_digits", f"the {PROFILE_NIST} profile needs min_digits of at least {NIST_MIN_DIGITS}"
                )
            if self.max_ttl > NIST_MAX_TTL_S:
                raise PolicyError("max_ttl", f"the {PROFILE_NIST} profile allows max_ttl of at most 600 s")
            if self.allow_numberless_push:
                raise PolicyError(
                    "allow_numberless_push",
                    f"the {PROFILE_NIST} profile needs number matching (a secret typed on the device): "
                    "allow_numberless_push must be off",
                )
        return self

    def check_challenge(self, *, digits: int, ttl: int, number_matching: bool = True) -> None:
        """PolicyError if a challenge's digits or ttl is outside this RP's bounds, or it
        asks for no number matching where the policy does not allow it."""
        if not number_matching and not self.allow_numberless_push:
            how = (
                "a profile that needs number matching"
                if self.profile == PROFILE_NIST
                else "the broker's operator allows it: `pushauth-broker rp set RP_ID --allow-numberless-push`"
            )
            raise PolicyError(
                "number_matching",
                f"'number_matching' false is not allowed by this service's policy{self._profile_note()}: "
                f"allow_numberless_push is off ({how})",
            )
        if digits < self.min_digits:
            raise PolicyError(
                "digits",
                f"'digits' {digits} is below this service's policy minimum of {self.min_digits}"
                f"{self._profile_note()}",
            )
        if ttl > self.max_ttl:
            raise PolicyError(
                "ttl",
                f"'ttl' {ttl} is above this service's policy maximum of {self.max_ttl} seconds"
                f"{self._profile_note()}",
            )

    def _profile_note(self) -> str:
        return f" (profile {self.profile})" if self.profile != PROFILE_DEFAULT else ""


def _between(name: str, value: int, lo: int, hi: int, note: str = "") -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise PolicyError(name, f"{name} must be {lo} to {hi}{' ' + note if note else ''}")


BOOL_FIELDS = ("allow_numberless_push",)
INT_FIELDS = tuple(f.name for f in fields(RpPolicy) if f.name != "profile" and f.name not in BOOL_FIELDS)
FIELDS = ("profile", *INT_FIELDS, *BOOL_FIELDS)


def profile_defaults(profile: str) -> RpPolicy:
    if profile == PROFILE_NIST:
        return RpPolicy(profile=PROFILE_NIST, digits=NIST_MIN_DIGITS, min_digits=NIST_MIN_DIGITS)
    if profile not in PROFILES:
        raise PolicyError("profile", f"profile must be one of {', '.join(PROFILES)}")
    return RpPolicy()


def effective(stored: Mapping[str, Any]) -> RpPolicy:
    """The policy from the settings the operator set (`stored`: field -> value, as
    strings or ints); the others are the profile's defaults. Not validated."""
    profile = str(stored.get("profile") or PROFILE_DEFAULT)
    base = profile_defaults(profile if profile in PROFILES else PROFILE_DEFAULT)
    flags = {k: str(v).lower() in ("1", "true") for k, v in stored.items() if k in BOOL_FIELDS}
    return replace(base, **{k: int(v) for k, v in stored.items() if k in INT_FIELDS}, **flags)


def from_hash(h: Mapping[bytes, bytes]) -> RpPolicy:
    """An RP's policy from its Redis hash. Only `rp set` writes it, validated; a hash
    that is broken anyway (written by hand) falls back to the defaults, loudly."""
    try:
        # Decoded inside: a hash edited by hand with bytes that are not UTF-8 falls back too.
        stored = {k.decode(): v.decode() for k, v in h.items()}
        return effective(stored).validate()
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("the stored policy %r is invalid (%s); using the default policy", dict(h), exc)
        return RpPolicy()


class PolicyCache:
    """Each RP's policy as this node last read it, for at most CACHE_S seconds."""

    def __init__(self, read: Callable[[str], Awaitable[Mapping[bytes, bytes]]], ttl_s: float = CACHE_S):
        self._read = read
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, RpPolicy]] = {}

    async def get(self, rp_id: str) -> RpPolicy:
        now = time.monotonic()
        hit = self._cache.get(rp_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        policy = from_hash(await self._read(rp_id))
        if len(self._cache) > 10_000:  # bounded, whatever happens
            self._cache.clear()
        self._cache[rp_id] = (now + self._ttl_s, policy)
        return policy

    def forget(self, rp_id: str) -> None:
        self._cache.pop(rp_id, None)
