"""A Redis Sentinel deployment in local processes: a primary, replicas and sentinels.

Why: a failover is where a cache loses acknowledged writes and clients see
``ConnectionError``/``READONLY``; only real processes show what redis-py and RQ do then.
Every process is a ``redis-server`` on a free loopback port with its own temp dir
(sentinels rewrite their config file, so each has its own copy), and ``close()`` kills
them all, also after a start that failed halfway.

Start-up is fast because each sentinel's config already lists the replicas and the other
sentinels (``known-replica``/``known-sentinel``, with ids chosen here): discovery by INFO
and hello messages would otherwise take up to a few seconds.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from devstack.redis_server import RedisServer, find_redis_server, free_port, kill_hard, no_retry, tail

HOST = "127.0.0.1"


def _probe(host: str, port: int) -> Redis:
    """A client that answers fast or fails fast: probes poll, they must not hang on a dead node."""
    return Redis(
        host=host, port=port, socket_connect_timeout=0.2, socket_timeout=0.5, retry=no_retry(), decode_responses=True
    )


def _poll(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02) -> float:
    """Seconds until ``condition()`` held; errors from a node in transition count as not yet."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except RedisError:
            pass
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


class SentinelProcess:
    """One ``redis-server sentinel.conf --sentinel`` with its config in a temp dir of its own."""

    def __init__(self, directives: Sequence[str], *, port: int, binary: str) -> None:
        self.port = port
        self.binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="clerk-org-cache-sentinel-"))
        self.config_path = self._dir / "sentinel.conf"
        head = [f"port {port}", f"bind {HOST}", "daemonize no", f"dir {self._dir}", f"logfile {self._dir}/sentinel.log"]
        self.config_path.write_text("\n".join([*head, *directives]) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def client(self) -> Redis:
        return _probe(HOST, self.port)

    def start(self) -> None:
        """Spawn only: readiness is the topology's business (it waits on all sentinels at once)."""
        with (self._dir / "output.log").open("wb") as output:  # config errors go to stderr, not the log
            self._process = subprocess.Popen(
                [self.binary, str(self.config_path), "--sentinel"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like RedisServer: a Ctrl-C for our group must not reach it first
            )

    def exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def output(self) -> str:
        return tail(self._dir / "output.log") or tail(self._dir / "sentinel.log")

    def kill(self) -> None:
        if self._process is not None:
            kill_hard(self._process)
            self._process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelTopology:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2 by default).

    ``primary`` always asks a sentinel, so after a failover it names the promoted node.
    ``node_args`` go to every data node (e.g. ``("--min-replicas-to-write", "1")``).
    """

    def __init__(
        self,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        master_name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        node_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        if sentinels < quorum:
            raise ValueError(f"{sentinels} sentinels can never reach a quorum of {quorum}")
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.node_args = tuple(node_args)
        self.binary = binary or find_redis_server()
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self.nodes: list[RedisServer] = []  # the first started as primary; roles change with failovers
        self._sentinels: list[SentinelProcess] = []

    # -- start and stop ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> SentinelTopology:
        """Start everything; return once replicas are in sync and every sentinel sees the whole set."""
        try:
            self._start(timeout_s)
        except BaseException:
            self.close()  # never leave a half-started deployment running
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        primary = self._new_node(replica_of=None).start()
        for _ in range(self._replica_count):
            self._new_node(replica_of=(HOST, primary.port)).start()
        taken = {node.port for node in self.nodes}
        ports: list[int] = []
        while len(ports) < self._sentinel_count:  # free_port() may hand out a port twice before anyone binds
            if (port := free_port()) not in taken:
                taken.add(port)
                ports.append(port)
        ids = [secrets.token_hex(20) for _ in ports]
        for port, own_id in zip(ports, ids, strict=True):
            others = [(p, i) for p, i in zip(ports, ids, strict=True) if p != port]
            directives = self._sentinel_directives(own_id, primary.port, others)
            sentinel = SentinelProcess(directives, port=port, binary=self.binary)
            self._sentinels.append(sentinel)
            sentinel.start()
        _poll(self._replicas_in_sync, timeout_s, "replicas in sync with the primary")
        _poll(self._sentinels_ready, timeout_s, "sentinels to see the primary, the replicas and each other")

    def _new_node(self, replica_of: tuple[str, int] | None) -> RedisServer:
        node = RedisServer(binary=self.binary, extra_args=self.node_args, replica_of=replica_of)
        self.nodes.append(node)  # listed before start, so close() also reaps a node that failed to start
        return node

    def _sentinel_directives(self, own_id: str, primary_port: int, others: list[tuple[int, str]]) -> list[str]:
        name = self.master_name
        lines = [
            f"sentinel myid {own_id}",
            # addresses only: no DNS lookups, and the addresses sentinels hand to clients stay IPs
            "sentinel resolve-hostnames no",
            "sentinel announce-hostnames no",
            f"sentinel monitor {name} {HOST} {primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        lines += [f"sentinel known-replica {name} {HOST} {node.port}" for node in self.nodes[1:]]
        lines += [f"sentinel known-sentinel {name} {HOST} {p} {i}" for p, i in others]
        return lines

    def _replicas_in_sync(self) -> bool:
        return all(_link_up(node) for node in self.nodes[1:])  # before the sentinels answer: no asking them

    def _sentinels_ready(self) -> bool:
        for sentinel in self._sentinels:
            if sentinel.exited():
                raise RuntimeError(f"sentinel on port {sentinel.port} exited: {sentinel.output()}")
            with sentinel.client() as client:
                state = client.sentinel_master(self.master_name)
                replicas = client.sentinel_slaves(self.master_name)
                peers = client.sentinel_sentinels(self.master_name)
            if state["flags"] != "master" or int(state["num-other-sentinels"]) != len(self._sentinels) - 1:
                return False
            if len(replicas) != self._replica_count or any(r["flags"] != "slave" for r in replicas):
                return False
            if any(s["flags"] != "sentinel" for s in peers):  # "disconnected" until a link is up
                return False
        return True

    def close(self) -> None:
        """Kill every process and remove every temp dir (safe to call more than once)."""
        for sentinel in self._sentinels:
            sentinel.close()
        for node in self.nodes:
            node.close()
        self._sentinels.clear()
        self.nodes.clear()

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what clients and tests need ----------------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """Addresses for ``redis.sentinel.Sentinel(...)``."""
        return [sentinel.address for sentinel in self._sentinels]

    @property
    def pids(self) -> list[int]:
        """Every process still started, sentinels included (for no-stray-process checks)."""
        pids = [sentinel.pid for sentinel in self._sentinels] + [node.pid for node in self.nodes]
        return [pid for pid in pids if pid is not None]

    def primary_address(self) -> tuple[str, int]:
        """What the first sentinel that answers names as primary (``get-master-addr-by-name``)."""
        for sentinel in self._sentinels:
            try:
                with sentinel.client() as client:
                    host, port = client.sentinel_get_master_addr_by_name(self.master_name)
                return str(host), int(port)
            except (RedisError, TypeError, ValueError):
                continue
        raise RuntimeError("no sentinel named a primary")

    @property
    def primary(self) -> RedisServer:
        """The node the sentinels currently name as primary."""
        return self._node_on(self.primary_address()[1])

    @property
    def replicas(self) -> list[RedisServer]:
        """Every other node, running or not (after a failover the killed old primary is one)."""
        primary_port = self.primary_address()[1]
        return [node for node in self.nodes if node.port != primary_port]

    def _node_on(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"the sentinels name port {port}, which is no node of this topology")

    # -- faults ---------------------------------------------------------------------------------------

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary (a crash, not a handover); return it for ``restart_as_replica``."""
        primary = self.primary
        primary.kill()
        return primary

    def wait_for_failover(self, old_port: int, timeout_s: float = 15.0) -> float:
        """Seconds (from this call) until every sentinel still running names the same new primary
        and that node answers ROLE as master. All of them, so that any client asks any sentinel."""

        def failed_over() -> bool:
            named: set[tuple[str, int]] = set()
            for sentinel in self._sentinels:
                if sentinel.pid is None:
                    continue
                with sentinel.client() as client:
                    host, port = client.sentinel_get_master_addr_by_name(self.master_name)
                named.add((str(host), int(port)))
            if len(named) != 1:
                return False
            ((host, port),) = named
            if port == old_port:
                return False
            with _probe(host, port) as client:
                return bool(client.execute_command("ROLE")[0] == "master")

        return _poll(failed_over, timeout_s, f"the sentinels to promote a replica of port {old_port}")

    def wait_until_settled(self, timeout_s: float = 15.0) -> float:
        """Seconds until every running sentinel names one primary, it answers ROLE as master, and every other
        running node is its replica with the link up: after a restart or failover, whichever happened."""

        def settled() -> bool:
            named: set[int] = set()
            for sentinel in self._sentinels:
                if sentinel.pid is None:
                    continue
                with sentinel.client() as client:
                    named.add(int(client.sentinel_get_master_addr_by_name(self.master_name)[1]))
            if len(named) != 1:
                return False
            (port,) = named
            with _probe(HOST, port) as client:
                if client.execute_command("ROLE")[0] != "master":
                    return False
            for node in self.nodes:
                if node.port == port or not node.running:
                    continue
                with node.client(socket_connect_timeout=0.2, socket_timeout=0.5, retry=no_retry()) as client:
                    info = client.info("replication")
                if not (info.get("master_port") == port and info.get("master_link_status") == "up"):
                    return False
            return True

        return _poll(settled, timeout_s, "one primary named by every sentinel, with every replica linked to it")

    def restart_as_replica(self, server: RedisServer, timeout_s: float = 10.0) -> None:
        """Start a killed node again, on its port and empty, as a replica of the current primary;
        return once its link is up and every sentinel lists it as a healthy replica."""
        if server.running:
            raise RuntimeError(f"node on port {server.port} is still running: kill it first")
        primary = self.primary
        server.replica_of = (HOST, primary.port)
        server.start()
        _poll(lambda: _link_up(server), timeout_s, f"port {server.port} to sync with port {primary.port}")

        def listed_healthy() -> bool:
            for sentinel in self._sentinels:
                with sentinel.client() as client:
                    replicas = client.sentinel_slaves(self.master_name)
                if not any(int(r["port"]) == server.port and r["flags"] == "slave" for r in replicas):
                    return False
            return True

        _poll(listed_healthy, timeout_s, f"the sentinels to list port {server.port} as a healthy replica")


def _link_up(node: RedisServer) -> bool:
    """ROLE says replica and INFO says the link to its primary is up (``master_link_status:up``)."""
    with node.client(socket_connect_timeout=0.2, socket_timeout=0.5, retry=no_retry(), decode_responses=True) as client:
        info = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")
