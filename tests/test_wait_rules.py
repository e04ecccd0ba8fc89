"""`cache.durability`'s decisions under Sentinel, on the sentinels' answers as redis-py parses them.

The real-topology tests (tests/test_failover.py) prove each rule where it matters; these pin the edges
a topology cannot be steered to on demand: a sentinel that does not answer, one failing the primary over,
a replica just short of the bound, a sentinel that reports no failover timeout.
"""

from __future__ import annotations

from typing import Any

import pytest

from cache.durability import ReplicaWait, WaitPolicy, promotable_replicas
from cache.effects import SentinelNodes, SentinelViews
from cache.errors import NotReplicated

PRIMARY = ("127.0.0.1", 7000)
R1, R2 = ("127.0.0.1", 7001), ("127.0.0.1", 7002)
RUN_ID = "a" * 40


def sentinel(
    *, down: dict[tuple[str, int], int] | None = None, flags: str = "master", timeout_ms: int = 2000
) -> SentinelNodes:
    """One sentinel's answer, built from the replies redis-py parses (``SENTINEL MASTER``, ``SENTINEL REPLICAS``)."""
    master = {"runid": RUN_ID, "ip": PRIMARY[0], "port": PRIMARY[1], "info-refresh": 100, "flags": flags}
    master["failover-timeout"] = timeout_ms
    replicas: list[dict[str, Any]] = []
    for host, port in (R1, R2):
        replica: dict[str, Any] = {"ip": host, "port": port}
        if down and (host, port) in down:
            replica["s-down-time"] = down[(host, port)]
        replicas.append(replica)
    return SentinelNodes.from_replies(master, replicas)


def replies(acked: dict[tuple[str, int], int], offset: int = 100) -> list[Any]:
    """The pipeline's replies `ReplicaWait.commands` asks for: INFO replication, INFO server, WAIT, INFO
    replication, CLIENT INFO; each listed replica with the offset it acknowledged."""
    info = {"master_repl_offset": offset}
    for i, ((host, port), at) in enumerate(acked.items()):
        info[f"slave{i}"] = {"ip": host, "port": port, "state": "online", "offset": at}
    server = {"run_id": RUN_ID, "uptime_in_seconds": 50}
    return [info, server, len(acked), info, {"laddr": f"{PRIMARY[0]}:{PRIMARY[1]}"}]


def check(views: SentinelViews, acked: dict[tuple[str, int], int]) -> None:
    wait = ReplicaWait(WaitPolicy(replicas=None, timeout_ms=300, under_sentinel=True))
    wait.check(replies(acked), views)


def test_a_replica_is_left_out_only_once_every_sentinel_has_held_it_down_past_twice_its_failover_timeout() -> None:
    past = SentinelViews(3, (sentinel(down={R1: 4001}),) * 3)
    assert promotable_replicas(past) == {R2}
    assert promotable_replicas(SentinelViews(3, (sentinel(down={R1: 3999}),) * 3)) == {R1, R2}  # not yet
    one_holds_it_up = (sentinel(down={R1: 9000}), sentinel(down={R1: 9000}), sentinel())
    assert promotable_replicas(SentinelViews(3, one_holds_it_up)) == {R1, R2}
    a_sentinel_missing = SentinelViews(3, (sentinel(down={R1: 9000}),) * 2)
    assert promotable_replicas(a_sentinel_missing) == {R1, R2}  # the third may see it up
    no_timeout = SentinelViews(3, (sentinel(down={R1: 9000}, timeout_ms=0),) * 3)
    assert promotable_replicas(no_timeout) == {R1, R2}


def test_a_write_stands_only_with_every_listed_replica_and_a_majority_of_sentinels_naming_a_calm_primary() -> None:
    calm = SentinelViews(3, (sentinel(),) * 3)
    check(calm, {R1: 100, R2: 100})  # no error
    with pytest.raises(NotReplicated, match=r"not acknowledged by 127\.0\.0\.1:7002"):
        check(calm, {R1: 100, R2: 99})
    held_down = SentinelViews(3, (sentinel(down={R2: 1500}),) * 3)
    with pytest.raises(NotReplicated, match=r"not acknowledged by 127\.0\.0\.1:7002"):
        check(held_down, {R1: 100})  # held down, gone from the primary's list, and still required
    check(SentinelViews(3, (sentinel(down={R2: 4500}),) * 3), {R1: 100})  # past the bound: left out
    with pytest.raises(NotReplicated, match="1 of 3 sentinels answered"):
        check(SentinelViews(3, (sentinel(),)), {R1: 100, R2: 100})
    check(SentinelViews(3, (sentinel(),) * 2), {R1: 100, R2: 100})  # 2 of 3 is a majority
    failing_over = SentinelViews(3, (sentinel(), sentinel(), sentinel(flags="master,failover_in_progress")))
    with pytest.raises(NotReplicated, match="failing it over"):
        check(failing_over, {R1: 100, R2: 100})
