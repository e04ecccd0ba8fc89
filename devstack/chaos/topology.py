"""Every process of a chaos run: Sentinel (a primary, two replicas, three sentinels), two web processes,
two workers (the Procfile's commands) and three app processes, with the Clerk stand-in in the driver.
The door app reaches Redis through a `PrimaryProxy` in the driver (as an app behind HAProxy would), so
that its connections can be cut; the others find the primary through the sentinels themselves.

Each child runs in a session of its own (a Ctrl-C for the driver's group must not reach it before the
driver stops it in order) and follows the driver when it dies (``PR_SET_PDEATHSIG``). Faults kill whole
sessions (a gunicorn master and its workers together). ``close()`` ends everything, SIGSTOPped processes
included, and is safe to call twice; every pid and port ever used is written to ``processes.json``, so
a test can check that none outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.chaos.proxy import PrimaryProxy
from devstack.chaos.workload import World
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import free_port
from devstack.redis_topology import SentinelTopology
from devstack.stack import REPO, follow_parent, procfile_command
from devstack.waiting import wait_until

CLERK_KEY = "sk_test_chaos_" + "k3y" * 8
APP_MODES = ("sync", "async", "door")
NEAR_APPS = ("sync", "async")  # with the near-cache (cache.near): the door app reads Redis on every hit
NEAR_CACHE_SIZE = 2000
PROXIED_APP = "door"  # reaches Redis through the proxy, without sentinels of its own


@dataclass
class Child:
    """One supervised child process, restartable with the same command and environment."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    spawner: ThreadPoolExecutor
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Spawned by the topology's one long-lived thread: the death signal follows the thread that
        starts a child, and a fault thread that restarted a web process must not take it along when it ends."""
        self.process = self.spawner.submit(self._popen).result()
        self.pids.append(self.process.pid)

    def _popen(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=follow_parent(signal.SIGKILL),
            )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child's whole session (its process group)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the group, as a crash would, and reap the child."""
        if self.process is not None:
            self.signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL after ``grace_s``."""
        if self.process is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace_s)
        self.kill()  # whatever is left of its group (a gunicorn worker) goes too


class ChaosTopology:
    def __init__(
        self, clerk: ClerkStandIn, world: World, out: Path, secret: str, *, ttl_s: int = 60, wait_replicas: str = "auto"
    ) -> None:
        self.wait_replicas = wait_replicas
        self.clerk = clerk
        self.world = world
        self.out = out
        self.secret = secret
        self.ttl_s = ttl_s
        # Without persistence for real: a replica's full sync would otherwise leave dump.rdb in its directory,
        # which it loads when restarted, bringing back values from before acknowledged revocations (found by
        # this soak: docs/chaos.md). swapdb loads the primary's data straight from the socket.
        self.redis = SentinelTopology(
            replicas=2, sentinels=3, failover_timeout_ms=2000, node_args=("--repl-diskless-load", "swapdb")
        )
        self.webs: list[Child] = []
        self.workers: list[Child] = []
        self.apps: list[Child] = []
        self.proxy: PrimaryProxy | None = None
        self.redis_pids: set[int] = set()
        self.redis_ports: set[int] = set()
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

    @property
    def children(self) -> list[Child]:
        return [*self.apps, *self.webs, *self.workers]

    def web_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{web.port}" for web in self.webs]

    def env(self, **extra: str) -> dict[str, str]:
        """What every process of the service reads (docs/reference.md's table), pointed at this run."""
        env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "REDIS_URL")}
        return {
            **env,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.nodes[0].port}/0",  # only the db under Sentinel
            "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in self.redis.sentinels),
            "REDIS_SENTINEL_MASTER": self.redis.master_name,
            "REDIS_WAIT_REPLICAS": self.wait_replicas,
            "REDIS_WAIT_TIMEOUT_MS": "500",
            "CLERK_SECRET_KEY": CLERK_KEY,
            "CLERK_API_URL": self.clerk.url,
            "CLERK_WEBHOOK_SIGNING_SECRET": self.secret,
            "CLERK_RATE_LIMIT": "5000",
            "USER_ORGS_TTL_SECONDS": str(self.ttl_s),
            "WORKER_SWEEP_SECONDS": "1",
            "REFRESH_RETRY_INTERVALS": "1,1,2,3,5",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self) -> ChaosTopology:
        try:
            self.redis.start()
            self._note_redis()
            for i in range(2):
                port = free_port()
                metrics = self.out / f"metrics-web-{i}"
                metrics.mkdir(exist_ok=True)
                settings = {"PORT": str(port), "WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
                env = self.env(**settings, LOG_LEVEL="INFO")  # a line per webhook: its svix id, outcome and status
                log = self.out / f"web-{i}.log"
                self.webs.append(Child(f"web-{i}", procfile_command("web"), env, log, self.spawner, port))
            for i in range(2):
                log = self.out / f"worker-{i}.log"
                self.workers.append(Child(f"worker-{i}", procfile_command("worker"), self.env(), log, self.spawner))
            users, orgs = ",".join(self.world.all_users), ",".join(self.world.orgs)
            self.proxy = PrimaryProxy(self.redis.sentinels, self.redis.master_name).start()
            for mode in APP_MODES:
                name = f"app-{mode}"
                ops = str(self.out / f"ops-{name}.jsonl")
                argv = [sys.executable, "-m", "devstack.chaos.app", mode, ops, users, orgs]
                env = self.env(NEAR_CACHE_SIZE=str(NEAR_CACHE_SIZE if mode in NEAR_APPS else 0))
                if mode == PROXIED_APP:
                    env = {k: v for k, v in env.items() if k not in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER")}
                    env["REDIS_URL"] = self.proxy.url
                self.apps.append(Child(name, argv, env, self.out / f"{name}.log", self.spawner))
            for child in self.children:
                child.start()
            for web in self.webs:
                self.wait_web(web)
        except BaseException:
            self.close()
            raise
        self.write_processes()
        return self

    def wait_web(self, web: Child, timeout_s: float = 30.0) -> None:
        def healthy() -> bool:
            if not web.running:
                raise RuntimeError(f"{web.name} exited: see {web.log}")
            try:
                return requests.get(f"http://127.0.0.1:{web.port}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout_s, what=f"{web.name} to answer /healthz", poll_s=0.05)

    def _note_redis(self) -> None:
        """Remember every Redis pid and port (a restarted node gets a new pid)."""
        self.redis_pids.update(self.redis.pids)
        self.redis_ports.update(node.port for node in self.redis.nodes)
        self.redis_ports.update(port for _, port in self.redis.sentinels)

    def restart(self, child: Child) -> None:
        child.kill()
        child.start()
        self.write_processes()

    def write_processes(self) -> None:
        self._note_redis()
        pids = sorted({pid for child in self.children for pid in child.pids} | self.redis_pids)
        proxy = {self.proxy.port} if self.proxy is not None else set()
        ports = sorted({web.port for web in self.webs if web.port} | self.redis_ports | {self.clerk.port} | proxy)
        (self.out / "processes.json").write_text(json.dumps({"pids": pids, "ports": ports}))

    def stop_apps(self) -> None:
        for app in self.apps:
            app.stop(grace_s=1.0)

    def close(self) -> None:
        """Stop every process (apps first, then web and worker, then Redis); safe to call again."""
        with contextlib.suppress(Exception):
            self.write_processes()
        for child in self.children:
            with contextlib.suppress(Exception):
                child.stop()
        if self.proxy is not None:
            self.proxy.close()
        self.redis.close()
        self._wait_gone()
        self.spawner.shutdown(wait=True)

    def _wait_gone(self) -> None:
        deadline = time.monotonic() + 10
        for child in self.children:
            while child.process is not None and child.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
