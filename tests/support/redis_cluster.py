"""RedisCluster: a real Redis Cluster of redis-server processes on free ports.

Three masters and one replica each by default, created with `redis-cli --cluster
create` like an operator would (deploy/redis-cluster/). Every wait is on the
cluster's own state (CLUSTER INFO, CLUSTER SHARDS, INFO replication), never a fixed
sleep. A failover is a real one: kill_master() SIGKILLs the master's process and
waits until its replica is promoted and every live node agrees on the new owner of
its slots.

It costs a few seconds to start: tests take it once per module (a module-scoped
fixture) and leave it as they found it (three masters with one replica each).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import redis
from redis.crc import key_slot

from .ports import LOCALHOST, free_port
from .redis_server import RedisServer
from .waiting import DEADLINE, wait_until

# How long a master may be unreachable before its replica takes over. Short for
# quick failovers in tests; long enough that a loaded 2-core machine does not see
# a failover nobody caused.
NODE_TIMEOUT_MS = 2000
# The nodes start from the configuration deploy/ ships (so a line Redis refuses there
# fails these tests); the test's own options (ports, loopback, timings) override it.
DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis-cluster" / "redis.conf"


def redis_cli() -> str:
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not found:
        raise RuntimeError("redis-cli is not on PATH (it creates the cluster)")
    return found


class RedisCluster:
    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        appendonly: bool = False,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self.directory = Path(directory)
        self.masters_wanted = masters
        self.replicas_per_master = replicas
        self.nodes: list[RedisServer] = []
        self.hung: set[int] = set()  # ports of nodes stopped by hang_master (SIGSTOP)
        for i in range(masters * (1 + replicas)):
            self.nodes.append(
                RedisServer(
                    self.directory / f"node{i}",
                    name=f"cluster-node{i}",
                    appendonly=appendonly,
                    config_file=DEPLOY_CONF,
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",  # in its own --dir
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                        # A replica may always take over, however long its link was down
                        # (a loaded test machine), so a failover never stalls the test.
                        "--cluster-replica-validity-factor",
                        "0",
                        "--repl-diskless-sync-delay",
                        "0",
                        # The cluster bus on a claimed port too (by default port + 10000,
                        # which may be in the kernel's ephemeral range, or another test's).
                        "--cluster-port",
                        str(free_port()),
                    ),
                )
            )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{LOCALHOST}:{n.port}" for n in self.nodes]
            created = subprocess.run(
                [
                    redis_cli(),
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    str(self.replicas_per_master),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=DEADLINE,
                stdin=subprocess.DEVNULL,
            )
            if created.returncode != 0 or "[OK] All 16384 slots covered" not in created.stdout:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
            self.wait_healthy()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker's --redis-url: every node as a seed."""
        return "redis+cluster://" + ",".join(f"{LOCALHOST}:{n.port}" for n in self.nodes)

    @property
    def live(self) -> list[RedisServer]:
        """The nodes that run and answer (not killed, not hung)."""
        return [n for n in self.nodes if n.running and n.port not in self.hung]

    def node_at(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        """A synchronous cluster client, for assertions on what the broker stored."""
        seed = self.live[0]
        return redis.RedisCluster(host=LOCALHOST, port=seed.port, **kwargs)

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def _ask(node: RedisServer, *command: Any) -> Any:
        with redis.Redis(host=LOCALHOST, port=node.port, socket_timeout=2) as r:
            return r.execute_command(*command)

    def _try(self, node: RedisServer, *command: Any) -> Any:
        try:
            return self._ask(node, *command)
        except (redis.RedisError, OSError):
            return None

    def slot_owners(self, node: RedisServer) -> dict[int, int] | None:
        """What `node` believes: first slot of each range -> port of its master."""
        reply = self._try(node, "CLUSTER", "SLOTS")
        if reply is None:
            return None
        return {int(r[0]): int(r[2][1]) for r in reply}

    def master_of_slot(self, slot: int) -> RedisServer:
        """The master serving `slot` now, as the live nodes agree."""
        reply = self._ask(self.live[0], "CLUSTER", "SLOTS")
        for start, end, master, *_ in reply:
            if int(start) <= slot <= int(end):
                return self.node_at(int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def master_of_key(self, key: str | bytes) -> RedisServer:
        return self.master_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def replication(self, node: RedisServer) -> dict[str, Any]:
        """INFO replication of `node` (redis-py parses it into a dict); {} if it is down."""
        info = self._try(node, "INFO", "replication")
        return info if isinstance(info, dict) else {}

    def is_master(self, node: RedisServer) -> bool:
        return self.replication(node).get("role") == "master"

    def masters(self) -> list[RedisServer]:
        return [n for n in self.live if self.is_master(n)]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        return [n for n in self.live if self.replication(n).get("master_port") == master.port]

    def topology(self, node: RedisServer) -> dict[int, tuple[str, int | None, bool]] | None:
        """What `node` believes (CLUSTER NODES): port -> (role, its master's port, failing)."""
        text = self._try(node, "CLUSTER", "NODES")
        if not isinstance(text, bytes):
            return None
        rows = [line.split() for line in text.decode().splitlines() if line.strip()]
        port_of = {r[0]: int(r[1].split("@")[0].rsplit(":", 1)[1]) for r in rows}
        view: dict[int, tuple[str, int | None, bool]] = {}
        for r in rows:
            flags = r[2].split(",")
            role = "master" if "master" in flags else "replica"
            view[port_of[r[0]]] = (role, port_of.get(r[3]), "fail" in flags or "fail?" in flags)
        return view

    def _state_ok(self, node: RedisServer) -> bool:
        info = self._try(node, "CLUSTER", "INFO")
        return info is not None and b"cluster_state:ok" in info

    def _agreed(self) -> bool:
        """Every live node: cluster ok, the same slot owners, all live masters with their
        replicas in sync, and no live node flagged as failing."""
        live = self.live
        if not all(self._state_ok(n) for n in live):
            return False
        maps = [self.slot_owners(n) for n in live]
        if any(m is None for m in maps) or any(m != maps[0] for m in maps):
            return False
        owners = set(maps[0].values())  # type: ignore[union-attr]
        live_ports = {n.port for n in live}
        if not owners <= live_ports:
            return False
        views = [self.topology(n) for n in live]
        if any(v is None for v in views):
            return False
        # Every live node sees every live node as healthy, with the same role and master
        # (a replica's master learns of it by gossip; CLUSTER FAILOVER needs that).
        first = {p: v for p, v in views[0].items() if p in live_ports}  # type: ignore[union-attr]
        if set(first) != live_ports or any(
            {p: v for p, v in view.items() if p in live_ports} != first  # type: ignore[union-attr]
            for view in views
        ):
            return False
        if any(flags_failing for _role, _master, flags_failing in first.values()):
            return False
        for port in owners:
            master = self.node_at(port)
            info = self.replication(master)
            online = sum(
                1
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
            if online < len(self.replicas_of(master)):
                return False
        for node in live:
            info = self.replication(node)
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, timeout: float = DEADLINE) -> None:
        """Until every live node agrees on a healthy cluster (after start, a failover, a
        restart): cluster_state ok everywhere, one slot map, replicas linked and in sync."""
        wait_until(
            self._agreed, timeout=timeout, interval=0.05, message="the Redis Cluster healthy and agreed"
        )

    # -- faults ---------------------------------------------------------------------

    def kill_master(self, master: RedisServer, timeout: float = DEADLINE) -> RedisServer:
        """SIGKILL `master` and wait until its replica has taken over its slots on every
        live node; the promoted replica."""
        replicas = self.replicas_of(master)
        if not replicas:
            raise RuntimeError(f"{master!r} has no replica to fail over to")
        slots = [s for s, port in (self.slot_owners(master) or {}).items() if port == master.port]
        master.kill()
        wait_until(
            lambda: self._promoted(replicas, slots),
            timeout=timeout,
            interval=0.05,
            message=f"a replica of the killed master {master.port} promoted",
        )
        self.wait_healthy(timeout)
        return next(r for r in replicas if self.is_master(r))

    def hang_master(self, master: RedisServer, timeout: float = DEADLINE) -> RedisServer:
        """SIGSTOP `master`, a hung host: its connections stay open and it answers
        nothing. Wait until its replica has taken over its slots on every other node;
        the promoted replica. `wake` sends SIGCONT (it then rejoins as a replica)."""
        replicas = self.replicas_of(master)
        if not replicas:
            raise RuntimeError(f"{master!r} has no replica to fail over to")
        slots = [s for s, port in (self.slot_owners(master) or {}).items() if port == master.port]
        master.process.kill(signal.SIGSTOP)
        self.hung.add(master.port)
        wait_until(
            lambda: self._promoted(replicas, slots),
            timeout=timeout,
            interval=0.05,
            message=f"a replica of the hung master {master.port} promoted",
        )
        return next(r for r in replicas if self.is_master(r))

    def wake(self, node: RedisServer, timeout: float = DEADLINE) -> None:
        """SIGCONT a node `hang_master` stopped, and wait until the cluster agrees again."""
        node.process.kill(signal.SIGCONT)
        self.hung.discard(node.port)
        self.wait_healthy(timeout)

    def _promoted(self, replicas: Iterable[RedisServer], slots: list[int]) -> bool:
        ports = {r.port for r in replicas}
        for node in self.live:
            owners = self.slot_owners(node)
            if owners is None or any(owners.get(s) not in ports for s in slots):
                return False
        return True

    def failover(self, replica: RedisServer, timeout: float = DEADLINE) -> None:
        """A manual CLUSTER FAILOVER: `replica` becomes the master of its master's slots
        (no data lost: the old master stops writes until the replica has caught up)."""
        self._ask(replica, "CLUSTER", "FAILOVER")
        wait_until(
            lambda: self.is_master(replica),
            timeout=timeout,
            interval=0.05,
            message=f"{replica.port} promoted by CLUSTER FAILOVER",
        )
        self.wait_healthy(timeout)

    def restart(self, node: RedisServer, timeout: float = DEADLINE) -> None:
        """Start a killed node again (same port and directory: it keeps its nodes.conf)
        and wait until it has rejoined: a killed master comes back as a replica."""
        node.restart()
        self.wait_healthy(timeout)

    def heal(self, timeout: float = DEADLINE) -> None:
        """Restart every node that is down (and wake a hung one), so the next test finds
        a whole cluster."""
        for port in list(self.hung):
            self.node_at(port).process.kill(signal.SIGCONT)
            self.hung.discard(port)
        for node in self.nodes:
            if not node.running:
                node.restart()
        self.wait_healthy(timeout)

    def __repr__(self) -> str:
        return f"<RedisCluster {self.url}>"
