"""The production-like Redis test parts work against real processes: a TLS-only server with a
private CA, a server with CONFIG renamed away, and a Sentinel deployment that fails over."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.connection import SSLConnection
from redis.exceptions import ConnectionError, ResponseError
from redis.sentinel import Sentinel

from devstack.redis_server import RedisServer, make_tls_files, no_retry
from devstack.redis_topology import SentinelTopology


def set_and_wait(client: Redis, key: str, replicas: int, timeout_ms: int) -> int:
    """SET, then WAIT on the same connection (WAIT counts only that connection's writes): a pipeline."""
    pipe = client.pipeline(transaction=False)
    pipe.set(key, "1").wait(replicas, timeout_ms)
    return int(pipe.execute()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tls=make_tls_files(tmp_path)) as server:
        yield server


@pytest.fixture(scope="module")
def topology() -> Iterator[SentinelTopology]:
    """Shared by the tests that leave it as they found it (no failover)."""
    with SentinelTopology() as started:
        yield started


@pytest.fixture
def sentinel(topology: SentinelTopology) -> Iterator[Sentinel]:
    client = Sentinel(topology.sentinels, socket_timeout=0.5)
    yield client
    for each in client.sentinels:
        each.close()


def test_tls_only_server_takes_a_rediss_client_that_trusts_its_ca(tls_server: RedisServer) -> None:
    assert tls_server.url.startswith("rediss://127.0.0.1:")
    with Redis.from_url(tls_server.url) as client:
        assert client.ping()
        assert client.connection_pool.connection_class is SSLConnection
    # the certificate names localhost too, and the hostname is checked (no ssl_check_hostname=false here)
    with Redis.from_url(tls_server.url.replace("127.0.0.1", "localhost")) as client:
        assert client.ping()


def test_tls_only_server_refuses_plain_text_and_unverified_clients(tls_server: RedisServer) -> None:
    plain = f"redis://127.0.0.1:{tls_server.port}/0"
    with Redis.from_url(plain, retry=no_retry(), socket_timeout=2) as client, pytest.raises(ConnectionError):
        client.ping()
    no_ca = f"rediss://127.0.0.1:{tls_server.port}/0"  # the system's CAs only: ours is private
    with Redis.from_url(no_ca, retry=no_retry()) as client, pytest.raises(ConnectionError, match="verify failed"):
        client.ping()


def test_config_can_be_renamed_away_like_on_managed_redis() -> None:
    with RedisServer(extra_args=("--rename-command", "CONFIG", "")) as server, server.client() as client:
        assert client.ping()
        with pytest.raises(ResponseError, match="unknown command"):
            client.config_get("maxmemory")


def test_wait_confirms_a_write_on_both_replicas(topology: SentinelTopology) -> None:
    assert len(topology.replicas) == 2
    with topology.primary.client(decode_responses=True) as primary:
        assert set_and_wait(primary, "replicated", 2, 1000) == 2
    for replica in topology.replicas:
        with replica.client(decode_responses=True) as client:
            assert client.get("replicated") == "1"


def test_a_write_paused_replica_is_not_counted_by_wait(topology: SentinelTopology) -> None:
    """CLIENT PAUSE WRITE on a replica stops it applying the replication stream until the pause ends."""
    slow = topology.replicas[0]
    with topology.primary.client(decode_responses=True) as primary:
        slow.client_pause(2000)
        try:
            assert set_and_wait(primary, "paused", 2, 300) == 1
            with slow.client() as client:
                assert client.get("paused") is None
        finally:
            slow.client_unpause()
        assert primary.wait(2, 1000) == 2


def test_sentinel_client_reaches_the_primary(topology: SentinelTopology, sentinel: Sentinel) -> None:
    assert sentinel.discover_master(topology.master_name) == ("127.0.0.1", topology.primary.port)
    with sentinel.master_for(topology.master_name, socket_timeout=1, decode_responses=True) as master:
        master.set("via-sentinel", "1")
    with topology.primary.client(decode_responses=True) as primary:
        assert primary.get("via-sentinel") == "1"


def test_failover_promotes_a_replica_and_the_old_primary_rejoins() -> None:
    # a split vote delays the next election by 2 x failover-timeout: 2 s keeps even that under 10 s
    with SentinelTopology(failover_timeout_ms=2000) as topology:
        sentinel = Sentinel(topology.sentinels, socket_timeout=0.5)
        master = sentinel.master_for(topology.master_name, socket_timeout=1, decode_responses=True)
        try:
            assert set_and_wait(master, "before", 2, 1000) == 2

            old = topology.kill_primary()
            assert not old.running
            assert topology.wait_for_failover(old.port, timeout_s=10) < 10

            new = topology.primary
            assert new.port != old.port
            assert master.set("after", "1")  # the same client: redis-py asks the sentinels again
            with new.client(decode_responses=True) as client:
                assert client.execute_command("ROLE")[0] == "master"
                assert client.mget("before", "after") == ["1", "1"]  # WAIT 2: on whichever was promoted

            topology.restart_as_replica(old)
            with old.client(decode_responses=True) as client:
                role = client.execute_command("ROLE")
                assert (role[0], role[2], role[3]) == ("slave", new.port, "connected")
                assert client.info("replication")["master_link_status"] == "up"
                assert client.get("after") == "1"
            pids = topology.pids
            assert len(pids) == 6
        finally:
            master.close()
            for each in sentinel.sentinels:
                each.close()
    assert not any(alive(pid) for pid in pids)


def test_a_failed_start_leaves_no_process_or_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data nodes are up when a sentinel refuses its config: start() must take them all down."""
    spawned: list[subprocess.Popen[bytes]] = []
    made: list[str] = []

    class RecordedPopen(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            spawned.append(self)

    real_mkdtemp = tempfile.mkdtemp

    def recorded_mkdtemp(*args: Any, **kwargs: Any) -> str:
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    monkeypatch.setattr(tempfile, "mkdtemp", recorded_mkdtemp)
    topology = SentinelTopology(down_after_ms=0)  # "negative or zero time parameter": sentinels exit
    with pytest.raises(RuntimeError, match="negative or zero time"):
        topology.start()
    assert len(spawned) == 6 and len(made) == 6
    assert all(process.poll() is not None for process in spawned)
    assert not any(Path(directory).exists() for directory in made)
    assert topology.pids == []
