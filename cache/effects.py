"""The I/O a decision needs, written down as data: what the sync and async APIs share.

The lookup, the Clerk client's paging and retries, the Clerk budget and the record
script's fallbacks are each written once, as a generator (a `Program`) that *yields*
an effect below and is *sent* its result, or has the I/O's exception thrown in at the
same ``yield``. Nothing in a program blocks or awaits: a runner carries the effects out,
`cache.io.SyncIO` with ``redis.Redis`` and ``requests``, `cache.aio.io.AsyncIO` with
``redis.asyncio`` and ``httpx``. The two differ only in how they wait, as httpcore and
h11 split a protocol from its sockets. Each cache has one runner, which carries out every
effect of a lookup; a program that needs another's answer yields from it.

Naming rule, so that an unrun program is visible where it is made:

- A function or method that returns a `Program` ends in ``_program``
  (``ReadPath.memberships_program``, ``ClerkReads.user_memberships_program``,
  ``BudgetRules.take_program``, ``record_program``). Calling it does nothing: a runner
  runs it (``io.run(cache.read_path.memberships_program(user_id))``) or another program
  yields from it (``yield from self.clerk.user_memberships_program(user_id)``).
- A function that returns one effect as data ends in ``_call`` (``acquire_call``,
  ``forget_call``); a runner's ``do`` carries it out.
- Every other name does its I/O when called (``MembershipCache.get_memberships``,
  ``ClerkBudget.take``, ``RefreshStore.take_pending``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

ScriptArg = str | int | float


@dataclass(frozen=True, slots=True)
class RedisGet:
    """``GET key``: the raw value or None."""

    key: str


@dataclass(frozen=True, slots=True)
class RunScript:
    """Run ``cache/lua/<name>.lua`` (by SHA, loading it once); ``unflagged``: without its shebang line."""

    name: str
    keys: tuple[str, ...]
    args: tuple[ScriptArg, ...]
    unflagged: bool = False


@dataclass(frozen=True, slots=True)
class RedisCommand:
    """Any other command, e.g. ``("WAIT", 1, 500)``; the reply is parsed as redis-py parses it."""

    args: tuple[ScriptArg, ...]


@dataclass(frozen=True, slots=True)
class SentinelView:
    """What every sentinel of this runner's client says of the primary it follows: a `SentinelViews`,
    or None when the client has no sentinels."""


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SentinelNodes:
    """What one sentinel says: the primary it names (its run id as of the sentinel's last ``INFO`` of it,
    how long ago that was, its address and the sentinel's flags for it, e.g. ``failover_in_progress``),
    its failover timeout, and every replica it lists for that primary, by address, with how long it
    has held each of them subjectively down (``s-down-time``; absent while it holds one up)."""

    master_run_id: str
    master_address: Address
    master_info_age_ms: int
    master_flags: frozenset[str]
    failover_timeout_ms: int
    replicas: frozenset[Address]
    down_ms: dict[Address, int]

    @classmethod
    def from_replies(cls, master: dict[str, Any], replicas: list[dict[str, Any]]) -> SentinelNodes:
        """From ``SENTINEL MASTER`` and ``SENTINEL REPLICAS`` as redis-py parses them."""
        listed = {(str(r["ip"]), int(r["port"])): r for r in replicas}
        return cls(
            master_run_id=str(master.get("runid", "")),
            master_address=(str(master.get("ip", "")), int(master.get("port", 0))),
            master_info_age_ms=int(master.get("info-refresh", 0)),
            master_flags=frozenset(str(master.get("flags", "")).split(",")),
            failover_timeout_ms=int(master.get("failover-timeout", 0)),
            replicas=frozenset(listed),
            down_ms={a: int(r["s-down-time"]) for a, r in listed.items() if "s-down-time" in r},
        )


@dataclass(frozen=True, slots=True)
class SentinelViews:
    """The answers of the sentinels that answered, out of how many were asked."""

    asked: int
    views: tuple[SentinelNodes, ...]


@dataclass(frozen=True, slots=True)
class RedisPipeline:
    """Several commands in one round trip on one connection (so WAIT covers the script before it)."""

    steps: tuple[RunScript | RedisCommand, ...]


@dataclass(frozen=True, slots=True)
class HttpGet:
    """One GET to Clerk. The result is an `HttpResponse`; a transport failure is thrown as `HttpFailed`."""

    url: str
    params: tuple[tuple[str, str | int], ...]
    headers: tuple[tuple[str, str], ...]
    connect_timeout_s: float
    read_timeout_s: float


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: str | None  # Clerk's Retry-After header, as sent


class HttpFailed(Exception):
    """No HTTP response (refused, reset, timed out): ``kind`` names the transport's exception class."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(kind)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long: ``time.sleep`` in the sync API, ``asyncio.sleep`` in the async one."""

    seconds: float


Effect = RedisGet | RunScript | RedisCommand | RedisPipeline | HttpGet | Sleep | SentinelView

Program = Generator[Effect, Any, T]
"""A decision procedure: yields effects, receives their results, returns its answer."""
