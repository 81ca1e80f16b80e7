"""`pushauth-loadtest`: load tests of sign-in latency, cross-node overhead and idle connections."""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import psutil

from broker.cli_common import CliError, check_redis_url
from broker.connections import raise_nofile_limit
from broker.cpus import CpusError, check, cpu_list_arg, format_cpus, pin

from .cluster import Cluster, ClusterError, add_rp
from .monitor import usable
from .report import idle_table, signin_table, write_json, write_png
from .runs import RunError, Target, idle_run, recorder_summary, signin_run
from .schedule import Profile, parse_rate
from .stats import Recorder

EXIT_STATUS = """\
exit status:
  0    done: the run completed and every sign-in was verified
  1    the run failed: a process under test could not be started (its last log lines and
       its log are named) or reached, a generator worker or a measured process ended, or
       --broker-cpus / --redis-cpus cannot be applied; no results are written
  2    bad arguments (one line on stderr); nothing was started
  3    the run completed, but sign-ins failed: counted by kind in the summary and results.json
  130, 143  ended by Ctrl-C or SIGTERM; everything it started is stopped, no results written
"""


EPILOG = (
    """\
All traffic goes to 127.0.0.1. Unless --broker-url is given, the tester starts its own
redis-server and broker node(s) on free ports and stops them at the end. Latencies are
counted from each sign-in's intended start (open loop), recorded with HdrHistogram.
Ctrl-C or SIGTERM ends a run early and stops every process it started (exit 130 or
143; no results are written).

examples:
  pushauth-loadtest signin --rate 200 --duration 30
  pushauth-loadtest signin --rate 1500 --duration 60 --devices 2000 --workers 2
  pushauth-loadtest signin --rate 100:2500 --duration 60 --warmup 0        # a ramp
  pushauth-loadtest signin --rate 200 --duration 30 --one-request    # the streamed create
  pushauth-loadtest flows --rate 200 --duration 30 --rounds 2          # two- vs one-request RP
  pushauth-loadtest signin --rate 200 --duration 30 --redis-cluster         # on a Redis Cluster
  pushauth-loadtest signin --rate 200 --duration 30 --broker-cpus 1   # broker on a core of its own
  pushauth-loadtest signin --rate 200 --duration 30 --broker-cpus 1 --redis-cpus 1  # ... with its Redis
  pushauth-loadtest crossnode --rate 200 --duration 30
  pushauth-loadtest routing --nodes 1,2,4,8 --rate 100 --duration 10  # messages per sign-in
  pushauth-loadtest idle --devices 18000 --workers 4
  pushauth-loadtest signin --broker-url http://127.0.0.1:8700 --api-key pak_... --broker-pid PID
      # a running broker, started with --device-connects-per-ip 0 --http-connections-per-ip 0
      # (docs/performance.md, "Commands")

"""
    + EXIT_STATUS
)


MAX_DURATION_S = 3600
FLOW_WORDS = {"two_requests": "create, then long-poll", "one_request": "streamed create"}
MAX_DEVICES = 100_000


def _positive(kind: type, lo: float, hi: float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is not within {lo:g}..{hi:g}")
        return value

    return parse


def place(args: argparse.Namespace) -> dict[str, str] | None:
    """--broker-cpus: pin this process, so the generator workers (and the Redis it starts,
    unless --redis-cpus) inherit the other CPUs, and have each broker node pin itself to
    the list. --redis-cpus: checked here, applied by Cluster once its Redis runs."""
    if not (args.broker_cpus or args.redis_cpus):
        return None
    if args.redis_cpus and (getattr(args, "redis_url", None) or getattr(args, "broker_url", None)):
        raise ValueError("--redis-cpus needs a Redis the tester starts (not --redis-url, --broker-url)")
    if not hasattr(os, "sched_getaffinity"):
        raise ValueError("--broker-cpus and --redis-cpus need Linux (sched_setaffinity)")
    generator = tuple(sorted(os.sched_getaffinity(0)))
    if args.broker_cpus:
        check(args.broker_cpus, "--broker-cpus")  # here, not when the broker fails to start
        generator = tuple(c for c in generator if c not in args.broker_cpus)
        if not generator:
            raise ValueError("--broker-cpus leaves no CPU for the load generator")
        pin(generator)
        args.broker_option = [*args.broker_option, f"--cpus={format_cpus(args.broker_cpus)}"]
    if args.redis_cpus:
        check(args.redis_cpus, "--redis-cpus")
    return {
        "broker": format_cpus(args.broker_cpus) if args.broker_cpus else "any",
        "generator": format_cpus(generator),
        "redis": format_cpus(args.redis_cpus or generator),
    }


def _cluster(args: argparse.Namespace, workdir: Path, **kwargs: Any) -> Cluster:
    """The processes under test, started with the options every mode shares."""
    return Cluster(workdir, broker_options=args.broker_option, redis_cpus=args.redis_cpus or (), **kwargs)


def _rate(text: str) -> tuple[float, float]:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; every option with a default says it ("(default: ...)"),
    unless its help says it in its own words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, [], argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class UsageError(Exception):
    """Bad arguments found after parsing (exit 2, nothing started)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pushauth-loadtest",
        description="Open-loop load tests of the pushauth broker with real devices (Ed25519 keys, "
        "WebSockets) and a real RP (HTTP API, end-to-end verification).",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    def mode(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, epilog=EXIT_STATUS, formatter_class=_Formatter
        )

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out",
            type=Path,
            help="directory for results.json, the process logs and (signin, crossnode, flows) "
            "report.png (default: loadtest-results/MODE-TIMESTAMP); a failed run removes it "
            "if it stayed empty, else says it kept it",
        )
        p.add_argument("--workers", type=_positive(int, 1, 64), default=2, help="generator processes, 1..64")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument(
            "--broker-option",
            action="append",
            default=[],
            metavar="OPTION",
            help="add OPTION to the `pushauth-broker serve` command of every node started, for A/B "
            "runs of one checkout, e.g. --broker-option=--no-rp-lane (repeat for several; default: none)",
        )
        p.add_argument(
            "--broker-cpus",
            type=cpu_list_arg,
            metavar="LIST",
            help="give the broker node(s) these CPUs (`serve --cpus LIST`) and run the generator and "
            "the Redis it starts (unless --redis-cpus) on the others, e.g. 1 on a two-core machine "
            "(default: no pinning)",
        )
        p.add_argument(
            "--redis-cpus",
            type=cpu_list_arg,
            metavar="LIST",
            help="run the Redis the tester starts (every node of a --redis-cluster) on these CPUs, "
            "e.g. the broker's: with --broker-cpus 1, --redis-cpus 1 puts broker and Redis on CPU 1 "
            "and the generator alone on the others (default: with the generator)",
        )

    def load(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--rate",
            type=_rate,
            default=(200.0, 200.0),
            help="sign-ins per second, more than 0 and at most 50000: RATE, or FROM:TO for a linear "
            "ramp (default: 200)",
        )
        p.add_argument(
            "--duration",
            type=_positive(float, 0.5, MAX_DURATION_S),
            default=30.0,
            help=f"measured seconds, 0.5..{MAX_DURATION_S}",
        )
        p.add_argument(
            "--warmup",
            type=_positive(float, 0, 600),
            default=3.0,
            help="seconds at the start rate before measuring, 0..600; 0 with a FROM:TO ramp",
        )
        p.add_argument(
            "--devices",
            type=_positive(int, 1, MAX_DEVICES),
            default=200,
            help=f"simulated users, one device each, 1..{MAX_DEVICES:,}; a user with a sign-in open "
            "gets no second one (it would supersede the first): make it at least the rate times the latency",
        )
        p.add_argument("--profile", action="store_true", help="sample the broker with py-spy while measuring")

    def flow(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--one-request",
            action="store_true",
            help="the RP signs in with one request: POST /v1/challenges streamed (Accept: "
            "application/x-ndjson), the number then the result (default: create, then long-poll)",
        )

    signin = mode("signin", "sign-ins at a fixed rate or a ramp; per-stage latency")
    common(signin)
    load(signin)
    flow(signin)
    signin.add_argument(
        "--nodes", type=_positive(int, 1, 8), default=1, help="broker nodes on one Redis, 1..8"
    )
    where = signin.add_mutually_exclusive_group()
    where.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a Redis Cluster (three masters, a replica each) instead of one redis-server",
    )
    where.add_argument(
        "--redis-url",
        help="start the broker node(s) on this running Redis instead, e.g. redis://127.0.0.1:PORT/0 or "
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001 (its CPU is not measured)",
    )
    signin.add_argument(
        "--broker-url",
        help="load a running broker at this http://127.0.0.1:PORT instead of starting one: start it "
        "with --device-connects-per-ip 0 --http-connections-per-ip 0 (every simulated device connects "
        "from 127.0.0.1). The run's "
        "users and credentials stay in its Redis; the tester revokes the credentials at the end "
        "(best effort). Its Redis's CPU is not measured, unless it is the embedded Redis of a "
        "--broker-pid",
    )
    signin.add_argument("--api-key", help="the RP API key for --broker-url (shown as pak_... in results)")
    signin.add_argument(
        "--broker-pid",
        type=int,
        action="append",
        metavar="PID",
        help="a --broker-url broker's process, to measure its CPU: repeat for several nodes. Its "
        "descendants are measured with it: give a `serve --workers N` broker's supervisor PID (the "
        "one started) and its N workers count as the broker, its embedded Redis as Redis "
        "(default: the broker's CPU is not measured)",
    )

    cross = mode(
        "crossnode", "the same load with RP and devices on one node, then on two nodes; the difference"
    )
    common(cross)
    load(cross)
    flow(cross)
    cross.add_argument(
        "--rounds", type=_positive(int, 1, 10), default=2, help="pairs of runs, alternating, 1..10"
    )

    flows = mode(
        "flows",
        "the same load with the RP's two requests (create, long-poll), then with one (streamed "
        "create), alternating on one broker; the difference",
    )
    common(flows)
    load(flows)
    flows.add_argument(
        "--rounds", type=_positive(int, 1, 10), default=2, help="pairs of runs, alternating, 1..10"
    )

    routing = mode(
        "routing",
        "event messages received by all nodes per sign-in, for each node count: devices "
        "spread over the nodes but the first, the RP on the first",
    )
    common(routing)
    load(routing)
    routing.add_argument(
        "--nodes",
        type=_node_counts,
        default=(1, 2, 4, 8),
        help="node counts to run, comma-separated, each 1..8 (default: 1,2,4,8)",
    )

    idle = mode(
        "idle",
        "idle devices: broker memory each, and reconnection after a restart (results.json, no report.png)",
    )
    common(idle)
    idle.add_argument(
        "--devices",
        type=_positive(int, 1, MAX_DEVICES),
        default=1000,
        help=f"idle devices, 1..{MAX_DEVICES:,}",
    )
    idle.add_argument(
        "--settle", type=_positive(float, 0, 60), default=2.0, help="seconds before weighing, 0..60"
    )
    idle.add_argument(
        "--profile", action="store_true", help="sample the restarted broker with py-spy while devices return"
    )
    idle.add_argument(
        "--held-socket",
        action="store_true",
        help="hold the broker's listening socket and pass it to each broker started, as systemd socket "
        "activation does (deploy/pushauth-broker@.socket): while no broker runs, devices' connections "
        "wait in its backlog instead of being refused",
    )
    return parser


def _node_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected node counts like 1,2,4,8, not {text!r}") from None
    if not counts or not all(1 <= n <= 8 for n in counts):
        raise argparse.ArgumentTypeError("node counts are 1..8")
    if len(set(counts)) != len(counts):  # one result per count: a repeat failed after the run
        raise argparse.ArgumentTypeError(f"each node count once, not {text!r}")
    return counts


def _out_path(args: argparse.Namespace) -> Path:
    return args.out or Path("loadtest-results") / f"{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}"


def _created_dirs(out: Path) -> list[Path]:
    """The directories a mkdir of `out` makes: those not there yet, the outermost first."""
    made = []
    for path in (out, *out.parents):
        if path.exists():
            break
        made.append(path)
    return made[::-1]


def _leave_failed(out: Path, made: list[Path]) -> None:
    """After a failed or stopped run: its directory goes if the run put nothing in it (no
    process was started); otherwise it stays for the processes' logs, and is named."""
    if not out.is_dir():
        return
    if any(path.is_file() for path in out.rglob("*")):
        print(f"pushauth-loadtest: the run's logs are kept in {out}", file=sys.stderr)
        return
    if made:
        shutil.rmtree(made[0], ignore_errors=True)  # only directories this run made, all empty


API_KEY_SHOWN = "pak_..."


def command_line(argv: list[str], api_key: str | None) -> str:
    """The command as run, for results.json and the report's title, with the RP API key
    replaced by pak_... (as --api-key KEY, --api-key=KEY or an abbreviation of it)."""
    words = []
    for word in argv:
        if api_key and word == api_key:
            word = API_KEY_SHOWN
        elif api_key and word.startswith("--") and word.endswith("=" + api_key):
            word = word[: -len(api_key)] + API_KEY_SHOWN
        words.append(word)
    return "pushauth-loadtest " + " ".join(words)


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot check alone; raises UsageError before anything starts."""
    if redis_url := getattr(args, "redis_url", None):
        # Here, not as the broker it would be given fails to start (exit 1, its log kept).
        try:
            check_redis_url(redis_url)
        except CliError as exc:
            raise UsageError(str(exc)) from None
    for name in ("broker_cpus", "redis_cpus"):
        if cpus := getattr(args, name, None):
            try:
                check(cpus, "--" + name.replace("_", "-"))  # a CPU this machine lacks: exit 2
            except CpusError as exc:
                raise UsageError(str(exc)) from None
    if args.mode in ("signin", "crossnode", "flows", "routing"):
        start, end = args.rate
        if start != end and args.warmup > 0:
            raise UsageError("a ramp is measured from its start: use --warmup 0 with FROM:TO rates")
        if (start + end) / 2 * args.duration < 1:
            # No sign-in to measure: the run went on, then ended in "zip() argument 2 is
            # longer than argument 1" (no CPU reading was taken in its window).
            raise UsageError(
                f"--rate {start:g}{'' if start == end else f':{end:g}'} for --duration {args.duration:g} "
                "makes no sign-in: at least one is needed (raise either)"
            )
    if args.mode != "signin":
        return
    if not args.broker_url:
        for given, name in ((args.api_key, "--api-key"), (args.broker_pid, "--broker-pid")):
            if given:
                raise UsageError(
                    f"{name} is for --broker-url runs (the tester measures the brokers it starts)"
                )
        return
    if not args.api_key:
        raise UsageError("--broker-url needs --api-key")
    args.broker_url = _local(args.broker_url)
    for given, name in (
        (args.nodes != 1, "--nodes"),
        (args.redis_cluster, "--redis-cluster"),
        (args.redis_url, "--redis-url"),
        (args.broker_option, "--broker-option"),
        (args.broker_cpus, "--broker-cpus"),
        (args.redis_cpus, "--redis-cpus"),
    ):
        if given:
            raise UsageError(f"{name} is for brokers the tester starts, not with --broker-url")
    for pid in dict.fromkeys(args.broker_pid or ()):
        problem = usable(pid) if pid > 0 else "not a process id"
        if problem is not None:
            raise UsageError(f"--broker-pid {pid}: {problem}")


def _signin_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return {
        "one_request": getattr(args, "one_request", False),
        "warmup": args.warmup,
        "devices": args.devices,
        "n_workers": args.workers,
        "out_dir": out,
        "profile_broker": args.profile,
        "progress": not args.no_progress,
    }


def _local(url: str) -> str:
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range or not a number: "cannot reach" it before
        port = None
    # Load is only ever sent to this machine; a path or ?query would be put before /v1/...
    if (
        not url.startswith(("http://127.0.0.1:", "http://localhost:"))
        or not port
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise UsageError("--broker-url must be http://127.0.0.1:PORT (load stays on this machine)")
    return url


def _rp_id(url: str, api_key: str) -> str:
    req = urllib.request.Request(url + "/v1/rp", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(json.load(resp)["id"])
    except urllib.error.HTTPError as exc:
        raise ClusterError(f"GET {url}/v1/rp: HTTP {exc.code} (is --api-key right?)") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise ClusterError(f"cannot reach the broker at {url}: {exc}") from None


def _profile(args: argparse.Namespace) -> Profile:
    start, end = args.rate
    return Profile(start, end, args.duration)


def run_signin(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    profile = _profile(args)
    if args.broker_url:
        url = args.broker_url
        pids = tuple(dict.fromkeys(args.broker_pid or ()))
        target = Target(url, url, _rp_id(url, args.api_key), args.api_key, pids)
        # A broker the tester did not start keeps what the run put in its Redis: the
        # credentials at least are revoked at the end (docs/performance.md, "Commands").
        result = signin_run(target, profile, **_signin_kwargs(args, out), revoke=True)
    else:
        with _cluster(
            args,
            out / "processes",
            nodes=args.nodes,
            redis_cluster=args.redis_cluster,
            redis_url=args.redis_url,
        ) as cluster:
            assert cluster.redis is not None
            rp_id, key = add_rp(cluster.redis.url)
            # With several nodes the RP and the devices use the first; the others hear
            # no event of theirs (docs/scaling.md, "Event routing").
            node = cluster.brokers[0]
            pids = tuple(b.pid for b in cluster.brokers)
            target = Target(node.http_url, node.http_url, rp_id, key, pids, cluster.redis.pids)
            result = signin_run(target, profile, **_signin_kwargs(args, out))
    title = f"sign-ins: {out}"
    print(signin_table(result, title))
    if "credentials_revoked" in result:
        revoked = result["credentials_revoked"]
        print(
            f"credentials: revoked {revoked['revoked']} of the {revoked['enrolled']} this run enrolled "
            "at the broker (best effort); their records stay in its Redis (180 days once revoked), "
            "the challenges until they expire"
        )
    write_png(out / "report.png", [("sign-in", result["_recorder"])], args.command)
    return result


def run_crossnode(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    profile = _profile(args)
    kwargs = _signin_kwargs(args, out)
    with _cluster(args, out / "processes", nodes=2) as cluster:
        assert cluster.redis is not None
        rp_id, key = add_rp(cluster.redis.url)
        a, b = cluster.brokers
        pids, redis_pid = (a.pid, b.pid), cluster.redis.pids
        targets = {
            "same_node": Target(a.http_url, a.http_url, rp_id, key, pids, redis_pid),
            "cross_node": Target(b.http_url, a.http_url, rp_id, key, pids, redis_pid),
        }
        order = _alternating(args.rounds, ("same_node", "cross_node"))
        phases = [(kind, signin_run(targets[kind], profile, **kwargs)) for kind in order]
    merged = {kind: Recorder() for kind in targets}
    for kind, res in phases:
        merged[kind].merge_wire(res["_recorder"].to_wire())
    result: dict[str, Any] = {"rounds": args.rounds, "phases": [{"kind": k, **r} for k, r in phases]}
    for kind, rec in merged.items():
        result[kind] = recorder_summary(rec)
    result["cross_node_overhead_ms"] = {
        k: round(
            result["cross_node"]["latency_ms"]["result"][k] - result["same_node"]["latency_ms"]["result"][k],
            3,
        )
        for k in ("p50", "p90", "p99")
    }
    for kind, res in phases:
        print(
            signin_table(
                res,
                f"{kind} (devices on node A, RP on node {'A' if kind == 'same_node' else 'B'})",
            )
        )
        print()
    same, cross = (result[k]["latency_ms"]["result"] for k in ("same_node", "cross_node"))
    print(
        f"all rounds, end to end:  same node p50 {same['p50']:.3f} ms p99 {same['p99']:.3f} ms; "
        f"cross node p50 {cross['p50']:.3f} ms p99 {cross['p99']:.3f} ms"
    )
    overhead = result["cross_node_overhead_ms"]
    print(f"cross-node overhead, end to end: p50 {overhead['p50']:+.3f} ms, p99 {overhead['p99']:+.3f} ms")
    write_png(
        out / "report.png",
        [("same node", merged["same_node"]), ("cross node", merged["cross_node"])],
        args.command,
    )
    return result


def _alternating(rounds: int, kinds: tuple[str, str]) -> list[str]:
    """(a, b, b, a, a, b, ...): a change in the machine's background load during the run
    then falls on both sides alike."""
    return [k for r in range(rounds) for k in (kinds[:: 1 if r % 2 == 0 else -1])]


def run_flows(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    profile = _profile(args)
    kwargs = _signin_kwargs(args, out)
    with _cluster(args, out / "processes", nodes=1) as cluster:
        assert cluster.redis is not None
        rp_id, key = add_rp(cluster.redis.url)
        node = cluster.brokers[0]
        target = Target(node.http_url, node.http_url, rp_id, key, (node.pid,), cluster.redis.pids)
        order = _alternating(args.rounds, ("two_requests", "one_request"))
        phases = [
            (kind, signin_run(target, profile, **{**kwargs, "one_request": kind == "one_request"}))
            for kind in order
        ]
    merged = {kind: Recorder() for kind in ("two_requests", "one_request")}
    for kind, res in phases:
        merged[kind].merge_wire(res["_recorder"].to_wire())
    result: dict[str, Any] = {"rounds": args.rounds, "phases": [{"kind": k, **r} for k, r in phases]}
    for kind, rec in merged.items():
        result[kind] = recorder_summary(rec)
    two, one = (result[k]["latency_ms"]["result"] for k in ("two_requests", "one_request"))
    result["one_request_difference_ms"] = {k: round(one[k] - two[k], 3) for k in ("p50", "p90", "p99")}
    for kind, res in phases:
        print(
            signin_table(
                res,
                f"{kind.replace('_', ' ')} ({FLOW_WORDS[kind]})",
            )
        )
        print()
    print(
        f"all rounds, end to end:  two requests p50 {two['p50']:.3f} ms p99 {two['p99']:.3f} ms; "
        f"one request p50 {one['p50']:.3f} ms p99 {one['p99']:.3f} ms"
    )
    diff = result["one_request_difference_ms"]
    print(f"one request minus two, end to end: p50 {diff['p50']:+.3f} ms, p99 {diff['p99']:+.3f} ms")
    write_png(
        out / "report.png",
        [("two requests", merged["two_requests"]), ("one request", merged["one_request"])],
        args.command,
    )
    return result


def _events_received(urls: list[str]) -> list[int]:
    """Each node's count of event messages received (GET /healthz)."""
    counts = []
    for url in urls:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            counts.append(int(json.load(resp)["events"]["events_received"]))
    return counts


def _count_into(counts: list[int], urls: list[str]) -> None:
    counts.extend(_events_received(urls))


def run_routing(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """For each node count: the RP on node 1, the devices spread over the others (all on
    node 1 when it is alone); the messages every node received during the sign-ins,
    from each node's own counter, per completed sign-in."""
    profile = _profile(args)
    kwargs = _signin_kwargs(args, out)
    rows = []
    for n in args.nodes:
        with _cluster(args, out / f"processes-{n}", nodes=n) as cluster:
            assert cluster.redis is not None
            rp_id, key = add_rp(cluster.redis.url)
            urls = [b.http_url for b in cluster.brokers]
            device_urls = tuple(urls[1:] or urls)
            pids = tuple(b.pid for b in cluster.brokers)
            target = Target(urls[0], device_urls[0], rp_id, key, pids, cluster.redis.pids, device_urls)
            before: list[int] = []
            result = signin_run(
                target, profile, **kwargs, on_ready=functools.partial(_count_into, before, urls)
            )
            time.sleep(0.5)  # the last results' events are on their way to the nodes
            after = _events_received(urls)
        per_node = [a - b for a, b in zip(after, before, strict=True)]
        done = max(1, result["started"] - sum(result["errors"].values()))
        rows.append(
            {
                "nodes": n,
                "sign_ins": done,
                "messages": sum(per_node),
                "per_sign_in": round(sum(per_node) / done, 3),
                "per_node": per_node,
                "errors": result["errors"],
                "result_p50_ms": result["latency_ms"]["result"]["p50"],
            }
        )
        print(
            f"{n} node(s): {sum(per_node)} messages for {done} sign-ins = {sum(per_node) / done:.2f} "
            f"per sign-in (per node: {per_node}); result p50 {rows[-1]['result_p50_ms']:.3f} ms"
        )
    print("\nnodes  sign-ins  messages received (all nodes)  per sign-in")
    for row in rows:
        print(f"{row['nodes']:>5}  {row['sign_ins']:>8}  {row['messages']:>29}  {row['per_sign_in']:>11.2f}")
    return {"runs": rows}


def run_idle(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    with _cluster(args, out / "processes", nodes=1, held_sockets=args.held_socket) as cluster:
        result = idle_run(
            cluster,
            devices=args.devices,
            n_workers=args.workers,
            settle=args.settle,
            out_dir=out,
            profile_broker=args.profile,
            progress=not args.no_progress,
        )
    print(idle_table(result))
    return result


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised in the main thread: the run unwinds and stops what it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> None:
    """SIGTERM (kill, timeout(1), a cancelled CI job) ends a run as Ctrl-C does, instead
    of killing this process and leaving its Redis, brokers and workers running. The
    first signal unwinds; later ones are ignored so that they cannot cut the cleanup
    short. A SIGINT ignored at start (a background job of a script) stays ignored."""

    def interrupted(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, interrupted)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupted)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(words)
    try:
        check_args(args)
    except UsageError as exc:
        print(f"pushauth-loadtest: {exc}", file=sys.stderr)
        return 2
    args.command = command_line(words, getattr(args, "api_key", None))
    _stop_on_signals()
    raise_nofile_limit()
    out = made = None
    try:
        cpus = place(args)
        out = _out_path(args)
        made = _created_dirs(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # before anything starts: say which directory, not only errno
            raise RunError(f"cannot make the results directory {out}: {exc.strerror or exc}") from None
        runner = {
            "signin": run_signin,
            "crossnode": run_crossnode,
            "flows": run_flows,
            "routing": run_routing,
            "idle": run_idle,
        }[args.mode]
        started = time.time()
        result = runner(args, out)
        result = {
            "command": args.command,
            "mode": args.mode,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            **({"cpus": cpus} if cpus else {}),
            **result,
        }
        write_json(out / "results.json", result)
        shown = "" if args.mode in ("idle", "routing") else f", {out / 'report.png'}"
        print(f"results: {out / 'results.json'}" + shown)
    except (ClusterError, RunError, ValueError, OSError, CpusError, psutil.Error) as exc:
        if isinstance(exc, psutil.NoSuchProcess):
            exc = RunError(f"process {exc.pid} (a broker or Redis measured) ended during the run")
        print(f"pushauth-loadtest: {exc}", file=sys.stderr)
        if out is not None:
            _leave_failed(out, made or [])
        return 1
    except KeyboardInterrupt as exc:
        if out is not None:
            _leave_failed(out, made or [])
        return 128 + getattr(exc, "signum", signal.SIGINT)  # the shell's code for a signal's end
    errors = result.get("errors") or {}
    if args.mode == "crossnode":
        errors = {**result["same_node"]["errors"], **result["cross_node"]["errors"]}
    if args.mode == "flows":
        errors = {**result["two_requests"]["errors"], **result["one_request"]["errors"]}
    if args.mode == "routing":
        errors = {k: v for row in result["runs"] for k, v in row["errors"].items()}
    return 3 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
