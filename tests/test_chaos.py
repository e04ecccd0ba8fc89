"""The chaos soak (`devstack.chaos`, ``./dev chaos``), bounded: a short run with a fixed seed must report
no violation and no lost event, and leave no process, port or file behind, also when interrupted.

Plus the oracle itself on a hand-made history: a test of the soak is worth what its oracle can see.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.chaos.faults import KINDS
from devstack.chaos.history import History
from devstack.chaos.oracle import Oracle
from devstack.stack import REPO

log = logging.getLogger(__name__)

SEED = 20261203
MINUTES = 2.0


def run_env(tmp_path: Path, mark: str) -> dict[str, str]:
    """The driver's environment: a mark every process it starts inherits, and a TMPDIR of the test's own,
    so that what is left behind can be found."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "CHAOS_TEST_MARK": mark, "TMPDIR": str(tmp)}


def marked_processes(mark: str) -> list[str]:
    """Every live process whose environment carries ``mark``, with its command line."""
    found = []
    needle = f"CHAOS_TEST_MARK={mark}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry}: {command}")
        except OSError:
            continue  # gone, or not ours to read
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assert_nothing_left(out: Path, tmp_path: Path, mark: str) -> None:
    started = json.loads((out / "processes.json").read_text())
    assert len(started["pids"]) >= 13, started  # 6 Redis, 2 web, 2 worker, 3 app processes at least
    assert marked_processes(mark) == []  # web, worker and app processes, gunicorn's workers included
    assert [pid for pid in started["pids"] if alive(pid)] == []  # Redis and sentinels too
    assert [port for port in started["ports"] if not port_free(port)] == []
    assert list((tmp_path / "tmp").iterdir()) == []  # Redis's and the processes' temp dirs are gone


@pytest.mark.timeout(480)  # the run itself is bounded at 420 s
def test_a_short_chaos_run_finds_no_violation_and_loses_no_event(tmp_path: Path) -> None:
    out, mark = tmp_path / "run", secrets.token_hex(8)
    done = subprocess.run(
        [sys.executable, "-m", "devstack.chaos", "--minutes", str(MINUTES), "--seed", str(SEED), "--out", str(out)],
        cwd=REPO, env=run_env(tmp_path, mark), capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    log.info("chaos run: %s", done.stdout[-3000:])
    assert report["violations"] == 0, report["violation_excerpts"][:2]
    assert report["events"]["lost"] == 0
    assert report["events"]["changes"] >= 50 and report["events"]["acknowledged"] == report["events"]["changes"]
    assert report["ops"]["lookups_checked"] > 1000 and report["ops"]["door_decisions_checked"] > 300
    assert set(report["faults"]) == set(KINDS), report["faults"]  # every kind of fault happened at least once
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    cuts = [f for f in history if f["k"] == "fault" and f["kind"] == "redis_cut" and f["ok"]]
    assert any(f["connections"] > 0 for f in cuts), cuts  # the proxied app was connected through it when cut
    assert report["final"]["drained"] and report["final"]["mismatches"] == [], report["final"]
    assert report["final"]["ttl_overruns"] == []
    assert report["ok"] and done.returncode == 0, done.stderr[-2000:]
    assert_nothing_left(out, tmp_path, mark)


def test_ctrl_c_stops_every_process_of_a_chaos_run(tmp_path: Path) -> None:
    out, mark = tmp_path / "run", secrets.token_hex(8)
    driver = subprocess.Popen(
        [sys.executable, "-m", "devstack.chaos", "--minutes", "5", "--seed", str(SEED), "--out", str(out)],
        cwd=REPO, env=run_env(tmp_path, mark), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            if line.startswith("chaos: running"):
                break
        time.sleep(6)  # into the faults: the first comes within 4 s
        assert len(marked_processes(mark)) >= 8  # the driver, web, worker and app processes (Redis rewrites its own)
        driver.send_signal(signal.SIGINT)
        rest = driver.communicate(timeout=120)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    log.info("interrupted chaos run: %s", rest[-2000:])
    assert driver.returncode == 130, rest
    assert "interrupted" in rest
    assert_nothing_left(out, tmp_path, mark)


# -- the oracle on a hand-made history ------------------------------------------------------------------


def history_of(tmp_path: Path, lookups: list[dict[str, Any]]) -> Path:
    """Bob is acme's admin; change 1 (applied at t=10, acknowledged at t=20) removes him."""
    out = tmp_path / "oracle"
    out.mkdir()
    history, ops = History(out / "history.jsonl"), History(out / "ops-app-sync.jsonl")
    facts = {"m|user_bob|org_acme": "org:admin", "o|org_acme": ["Acme", "acme"], "r|org:admin": ["org:sys_x:y"]}
    history.write("initial", t=0, facts=facts, users=["user_bob"], orgs=["org_acme"])
    history.write("change", seq=1, type="x", applied_at=10.0, facts={"m|user_bob|org_acme": None}, about="remove")
    history.write("delivery", seq=1, msg="m", copy=0, attempt=0, url="u", t0=19.0, t1=20.0, status=200, error=None)
    for lookup in lookups:
        ops.write("lookup", u="user_bob", **lookup)
    history.close()
    ops.close()
    return out


ADMIN = [["org_acme", "org:admin", "Acme", "acme", ["org:sys_x:y"]]]


def test_the_oracle_refuses_the_old_state_after_the_2xx_and_allows_it_before(tmp_path: Path) -> None:
    verdict = Oracle(
        history_of(
            tmp_path,
            [
                {"t0": 5.0, "t1": 6.0, "r": ADMIN},  # before the change: the old state
                {"t0": 15.0, "t1": 16.0, "r": ADMIN},  # changed, not acknowledged yet: old allowed
                {"t0": 15.0, "t1": 16.0, "r": []},  # ... and so is the new state
                {"t0": 21.0, "t1": 22.0, "r": []},  # after the 2xx: only the new state
                {"t0": 21.0, "t1": 22.0, "r": ADMIN},  # the violation
                {"t0": 5.0, "t1": 6.0, "r": []},  # from the future: a violation too
            ],
        )
    ).check()
    log.info("oracle: %d lookups, %d violations", verdict.lookups, len(verdict.violations))
    assert verdict.lookups == 6
    assert [(v["op"]["t0"], v["got"]) for v in verdict.violations] == [(21.0, "org:admin"), (5.0, None)]
    assert verdict.violations[0]["history"][-1]["acked_at"] == 20.0
    assert verdict.lost == []


def test_the_oracle_counts_a_change_never_acknowledged_as_lost(tmp_path: Path) -> None:
    out = history_of(tmp_path, [])
    with (out / "history.jsonl").open("a") as lines:
        lines.write(json.dumps({"k": "change", "seq": 2, "type": "x", "applied_at": 30.0, "facts": {}, "about": ""}))
        lines.write("\n")
    verdict = Oracle(out).check()
    log.info("oracle: %d changes, %d lost", verdict.changes, len(verdict.lost))
    assert verdict.lost == [2] and verdict.acked == 1 and verdict.changes == 2


def test_the_proxy_follows_the_primary_through_a_failover_and_its_cut_resets_every_connection() -> None:
    """`redis_cut` is worth what the proxy does: a cut must reset live connections and refuse new ones for its
    hold, and after a failover its connections must reach the new primary, not the old one (which would let
    the proxied app read a stale node)."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from devstack.chaos.proxy import PrimaryProxy
    from devstack.redis_topology import SentinelTopology
    from devstack.waiting import wait_until

    with SentinelTopology(replicas=2, sentinels=3, failover_timeout_ms=2000) as topology:
        proxy = PrimaryProxy(topology.sentinels, topology.master_name).start()
        try:
            client = Redis.from_url(proxy.url, socket_timeout=2, retry_on_timeout=False, retry=None)
            assert client.set("k", "v") and client.get("k") == b"v"
            assert client.info("server")["tcp_port"] == topology.primary.port
            assert proxy.cut(1.5) == 1
            with pytest.raises(RedisConnectionError):
                client.get("k")  # the live connection was reset...
            with pytest.raises(RedisConnectionError):
                Redis.from_url(proxy.url, retry=None).ping()  # ...and a new one is refused during the hold
            wait_until(lambda: _port_reached(proxy.url) is not None, 10, what="the proxy to accept again", poll_s=0.1)
            old = topology.kill_primary()
            topology.wait_for_failover(old.port)
            new = topology.primary.port
            assert new != old.port
            following = "the proxy to follow the new primary"
            wait_until(lambda: _port_reached(proxy.url) == new, 10, what=following, poll_s=0.1)
        finally:
            proxy.close()
        assert port_free(proxy.port)


def _port_reached(url: str) -> int | None:
    """The port of the Redis a fresh connection to ``url`` reaches, or None if it is refused or reset."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        with Redis.from_url(url, socket_timeout=1, retry=None) as client:
            return int(client.info("server")["tcp_port"])
    except RedisConnectionError:
        return None
