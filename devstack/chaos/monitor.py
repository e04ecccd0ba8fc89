"""What the Redis topology looked like, moment by moment: every node's role, its primary, its link, its
replication id and offset, its replicas as it lists them, and which primary each sentinel names.

Polled every 50 ms and written to the history (``topo`` lines) whenever something other than an offset
changes, and once a second in any case, so a violation can be laid next to the topology of its moment:
two nodes answering as primary at once, a replica promoted before it had caught up, a replication id
that changed without a failover.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from devstack.chaos.history import History
from devstack.redis_topology import SentinelTopology

POLL_S = 0.05


def _client(port: int) -> Redis:
    return Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.1, socket_timeout=0.2, retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )  # fmt: skip


def node_view(port: int) -> dict[str, Any]:
    """One node's replication state, or ``{"down": ...}``."""
    try:
        with _client(port) as client:
            info = client.info("replication")
    except RedisError as exc:
        return {"down": type(exc).__name__}
    view: dict[str, Any] = {
        "role": info.get("role"),
        "replid": str(info.get("master_replid", ""))[:8],
        "offset": info.get("master_repl_offset"),
    }
    if info.get("role") == "slave":
        view["of"] = info.get("master_port")
        view["link"] = info.get("master_link_status")
    view["replicas"] = sorted(
        (v.get("port"), v.get("state"), v.get("offset"))
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict)
    )
    return view


def _shape(view: dict[str, Any]) -> Any:
    """A view without its offsets: what counts as a change."""
    return (
        view.get("down"), view.get("role"), view.get("replid"), view.get("of"), view.get("link"),
        tuple((port, state) for port, state, _ in view.get("replicas", ())),
    )  # fmt: skip


class TopologyMonitor:
    def __init__(self, redis: SentinelTopology, history: History) -> None:
        self.redis = redis
        self.history = history
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topology-monitor", daemon=True)

    def start(self) -> TopologyMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sentinels(self) -> list[int | None]:
        named: list[int | None] = []
        for host, port in self.redis.sentinels:
            try:
                with Redis(host=host, port=port, socket_timeout=0.2, socket_connect_timeout=0.1) as sentinel:
                    named.append(int(sentinel.sentinel_get_master_addr_by_name(self.redis.master_name)[1]))
            except (RedisError, TypeError):
                named.append(None)
        return named

    def _run(self) -> None:
        last_shape: Any = None
        last_written = 0.0
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(Exception):  # a monitor must never end the run
                t = time.time()
                nodes = {str(node.port): node_view(node.port) for node in self.redis.nodes}
                sentinels = self._sentinels()
                shape = ({port: _shape(view) for port, view in nodes.items()}, tuple(sentinels))
                if shape != last_shape or t - last_written > 1.0:
                    self.history.write("topo", t=t, nodes=nodes, sentinels=sentinels)
                    last_shape, last_written = shape, t
