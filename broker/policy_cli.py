"""`pushauth-broker rp set|show|remove`, and the serve flags that policy replaced.

    pushauth-broker rp set RP_ID [--profile nist-800-63b-4|default] [--max-pushes N]
        [--max-pushes-per-minute N] [--fraud-mute SECONDS] [--digits N] [--min-digits N]
        [--ttl S] [--max-ttl S] [--max-pending-enrollments N]
        [--enrollments-per-minute N] [--max-credentials N]
        [--allow-numberless-push | --no-allow-numberless-push]
        [--reset] [--json]
    pushauth-broker rp show RP_ID [--json]

The serve flags --max-pushes, --max-pushes-per-minute and --fraud-mute made the push
policy a setting of each node, so two nodes could enforce different limits for the
same user. They are deprecated: still accepted (a deployment's scripts keep
starting), they have no effect, and the node logs a warning naming the command
that replaces them. Keeping them as defaults for RPs with no policy set would have
kept exactly that disagreement for every such RP.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import policy

if TYPE_CHECKING:  # the store (Redis, the frame types) only when a command runs, not for the parser
    from .store import Store

DEPRECATED_SERVE_FLAGS = {
    "--max-pushes": "max_pushes",
    "--max-pushes-per-minute": "max_pushes_per_minute",
    "--fraud-mute": "fraud_mute",
}


def add_deprecated_serve_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "deprecated",
        "Push policy (caps, rate, fraud mute, digits, TTL, the NIST SP 800-63B-4 profile) is per RP, "
        "kept in Redis, the same on every node: `pushauth-broker rp set RP_ID ...`.",
    )
    for flag, name in DEPRECATED_SERVE_FLAGS.items():
        group.add_argument(
            flag,
            dest=f"deprecated_{name}",
            metavar="N",
            help=f"no effect; use `pushauth-broker rp set RP_ID {flag} N`",
        )


def deprecated_flags(args: argparse.Namespace) -> list[str]:
    """One warning for each deprecated serve flag given."""
    return [
        f"{flag} {value} has no effect and is deprecated: push policy is per relying party, the same "
        f"on every node; set it with `pushauth-broker rp set RP_ID {flag} {value}`"
        for flag, name in DEPRECATED_SERVE_FLAGS.items()
        if (value := getattr(args, f"deprecated_{name}", None)) is not None
    ]


def add_rp_policy_commands(rp_sub: Any, add_store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """`rp set` and `rp show` (the subparsers of `rp`)."""
    defaults = policy.RpPolicy()
    nist = policy.profile_defaults(policy.PROFILE_NIST)
    s = rp_sub.add_parser(
        "set",
        help="set an RP's policy (push caps, rate, fraud mute, digits, TTL, profile; enrollment quota, "
        "devices per user)",
        description="Set settings of a relying party's policy; settings not named keep their value, "
        "and settings never set take the profile's defaults. Every broker node applies the change within "
        f"{policy.CACHE_S:g} seconds. The {policy.PROFILE_NIST} profile (NIST SP 800-63B-4, out-of-band "
        f"push): at least {policy.NIST_MIN_DIGITS} digits, a challenge lives at most 10 minutes, and "
        f"{policy.NIST_FAILURE_LIMIT} consecutive wrong numbers lock push for that user until the RP lifts "
        "it (DELETE /v1/users/{user}/push-block). The enrollment quota (--max-pending-enrollments, "
        "--enrollments-per-minute) bounds what the RP may hold of the shared Redis in enrollments "
        '(docs/operations.md, "Enrollment quota"); --max-credentials bounds the devices of one user. '
        "A new bound that the setting in force does not fit (--max-ttl below the ttl) is refused: give both.",
        epilog="""examples:
  pushauth-broker rp set rp_Cm-Kvhqvpefc --digits 3 --max-pushes 5
  pushauth-broker rp set rp_Cm-Kvhqvpefc --profile nist-800-63b-4 --max-ttl 300
  pushauth-broker rp set rp_Cm-Kvhqvpefc --max-ttl 30 --ttl 30
  pushauth-broker rp set rp_Cm-Kvhqvpefc --enrollments-per-minute 3000 --max-pending-enrollments 50000
  pushauth-broker rp set rp_Cm-Kvhqvpefc --max-credentials 3
  pushauth-broker rp set rp_Cm-Kvhqvpefc --reset          # back to the defaults""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("rp_id", help="the RP id printed by `rp add`")
    s.add_argument("--profile", choices=policy.PROFILES, help="the named profile (default: default)")
    for name, metavar, what in (
        ("max_pushes", "N", "challenges since the user's last successful sign-in, 1..100"),
        ("max_pushes_per_minute", "N", "challenges per user per minute before 429 rate_limited"),
        ("fraud_mute", "SECONDS", "how long a 'this wasn't me' report mutes push; 0: until the RP lifts it"),
        ("digits", "N", "digits of the number when the request names none"),
        ("min_digits", "N", "the fewest digits a request may ask for"),
        ("ttl", "SECONDS", "a challenge's lifetime when the request names none"),
        ("max_ttl", "SECONDS", "the longest lifetime a request may ask for, at most 600"),
        (
            "max_pending_enrollments",
            "N",
            "enrollments of the RP pending at once before 429 too_many_enrollments, "
            f"1..{policy.MAX_PENDING_ENROLLMENTS:,}",
        ),
        (
            "enrollments_per_minute",
            "N",
            "enrollments the RP may make a minute (a burst of as many) before 429 rate_limited, "
            f"1..{policy.MAX_ENROLLMENTS_PER_MINUTE:,}",
        ),
        (
            "max_credentials",
            "N",
            "devices (active credentials) one user may have at the RP before 409 too_many_credentials; "
            f"each gets every push to the user; a lower value removes none, 1..{policy.MAX_CREDENTIALS:,}",
        ),
    ):
        default, strict = getattr(defaults, name), getattr(nist, name)
        shown = f"{default}" if default == strict else f"{default}; {policy.PROFILE_NIST}: {strict}"
        s.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=int,
            metavar=metavar,
            help=f"{what} (default: {shown})",
        )
    s.add_argument(
        "--allow-numberless-push",
        dest="allow_numberless_push",
        action=argparse.BooleanOptionalAction,
        help='let the RP create challenges without number matching ("number_matching": false: a plain '
        "approve/deny prompt, for clients with no screen to show a number, such as a RADIUS push-only "
        f"gateway; weaker, docs/protocol.md section 18.7); refused under {policy.PROFILE_NIST} "
        "(default: off)",
    )
    s.add_argument("--reset", action="store_true", help="forget every setting first, then apply the flags")
    s.add_argument("--json", action="store_true", help="print the policy now in force as JSON")
    add_store_args(s)
    show = rp_sub.add_parser("show", help="show an RP's policy (push, enrollment quota)")
    show.add_argument("rp_id", help="the RP id printed by `rp add`")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_store_args(show)


async def rp_policy_command(args: argparse.Namespace, store: Store) -> None:
    """`rp set`, `rp show`, `rp remove`; ValueError for the CLI's one-line message."""
    if args.rp_command == "remove":
        from . import rp_removal

        removal = await rp_removal.remove_rp(store, args.rp_id)
        if removal is None:
            raise ValueError(f"no relying party with id {args.rp_id!r}")
        print(
            f"removed {args.rp_id}: {removal.revoked} credential(s) revoked, "
            f"{removal.ended} pending challenge(s) withdrawn"
        )
        return
    if await store.get_rp(args.rp_id) is None:
        raise ValueError(f"no relying party with id {args.rp_id!r}")
    stored = {k.decode(): v.decode() for k, v in (await store.stored_policy(args.rp_id)).items()}
    if args.rp_command == "set":
        settings: dict[str, str | int] = {} if args.reset else dict(stored)
        if args.profile is not None:
            settings["profile"] = args.profile
        for name in policy.INT_FIELDS:
            if getattr(args, name) is not None:
                settings[name] = getattr(args, name)
        for name in policy.BOOL_FIELDS:  # kept as 0/1 in the hash
            if getattr(args, name) is not None:
                settings[name] = int(getattr(args, name))
        try:
            policy.effective(settings).validate()
        except policy.PolicyError as err:
            flag = "--" + err.field.replace("_", "-")
            if err.field in policy.BOOL_FIELDS and getattr(args, err.field, None) is None:
                flag = "--no-" + err.field.replace("_", "-")  # on in force, and the profile refuses it
            if getattr(args, err.field, None) is not None or err.field == "profile":
                raise ValueError(f"{flag}: {err.message}; nothing was changed") from None
            # The setting that no longer fits was not on this command line: it is the one in
            # force (stored, or the profile's), which the new value conflicts with.
            now = getattr(policy.effective(settings), err.field, None)
            raise ValueError(
                f"{err.message}: the {err.field.replace('_', '-')} in force ({now}) does not fit; "
                f"give {flag} too; nothing was changed"
            ) from None
        await store.set_policy(args.rp_id, settings)
        stored = {k: str(v) for k, v in settings.items()}
    _print(args, policy.effective(stored), stored)


def _print(args: argparse.Namespace, current: policy.RpPolicy, stored: dict[str, str]) -> None:
    if args.json:
        print(json.dumps({"rp": args.rp_id, **current.to_json()}))
        return
    print(f"policy of {args.rp_id} (profile {current.profile}):")
    for name, value in current.to_json().items():
        if name == "profile":
            continue
        origin = "" if name in stored or name == "failure_limit" else "  (profile default)"
        shown = "none" if value is None else value
        print(f"  {name.replace('_', '-'):<24}{shown}{origin}")
