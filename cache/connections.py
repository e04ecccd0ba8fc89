"""Every Redis client of every process is built here, with timeouts that fit its caller.

- ``LOOKUP``: the cache sits on the request path; it must give up on Redis in
  milliseconds and fall back to Clerk, so no retries (redis-py 8 would retry for
  seconds; the breaker decides when to try again).
- ``INTAKE``: must answer well inside Svix's 15 s; one quick retry. Its read timeout
  exceeds the longest ``WAIT`` the intake sends.
- ``WORKER``: RQ's own connection (RQ raises the socket timeout for its blocking dequeue).
- ``TOOL``: the operator CLI and start-up checks.
- ``NEAR`` and ``NEAR_SUB``: a near-cache's control plane (`cache.near`): its lease renewals and
  acknowledgements, and its invalidation subscription, on daemon threads of their own. No
  retries: any error empties the near-cache, which then serves from Redis until it registers again.

A target is a ``REDIS_URL`` (``redis://``, ``rediss://`` with certificate checks,
``unix://``), or, with ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` set, the primary
the sentinels name (the URL then only contributes db, username, password and TLS). A
Sentinel client asks the sentinels for the primary on every new connection, so a
process follows a failover without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from cache.config import Settings

if TYPE_CHECKING:  # redis.asyncio is imported only by code that uses it
    from redis.asyncio import Redis as AsyncRedis


class Role(Enum):
    LOOKUP = "clerk-org-cache"
    INTAKE = "clerk-org-cache-intake"
    WORKER = "clerk-org-cache-worker"
    TOOL = "clerk-org-cache-tool"
    NEAR = "clerk-org-cache-near"
    NEAR_SUB = "clerk-org-cache-near-sub"  # the name tests (and operators) find the subscription by


INTAKE_TIMEOUT_S = 4.0  # above the intake's longest WAIT (REDIS_WAIT_TIMEOUT_MS <= 3000)


def _options(role: Role, retry: Any = Retry) -> dict[str, Any]:
    """The timeouts and retries of ``role``; ``retry`` is redis-py's blocking or asyncio ``Retry`` class."""
    if role is Role.LOOKUP:
        return {
            "socket_connect_timeout": 0.25,
            "socket_timeout": 0.5,
            "retry": retry(NoBackoff(), 0),
            "retry_on_error": [],
        }
    if role is Role.INTAKE:
        return {"socket_connect_timeout": 1.0, "socket_timeout": INTAKE_TIMEOUT_S, "retry": retry(NoBackoff(), 1)}
    if role in (Role.NEAR, Role.NEAR_SUB):
        # above the longest WAIT a renewal sends; a renewal this slow has outlived its lease anyway
        return {
            "socket_connect_timeout": 1.0,
            "socket_timeout": INTAKE_TIMEOUT_S,
            "retry": retry(NoBackoff(), 0),
            "retry_on_error": [],
        }
    if role is Role.TOOL:
        return {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "retry": retry(ExponentialBackoff(), 2)}
    return {"socket_connect_timeout": 2.0, "retry": retry(ExponentialBackoff(cap=2.0), 3)}


@dataclass(frozen=True)
class RedisTarget:
    """Where the processes find their Redis: a URL, or a Sentinel-monitored primary."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTarget:
        return cls(
            settings.redis_url,
            settings.redis_sentinels,
            settings.redis_sentinel_master,
            settings.redis_sentinel_password or None,
        )

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)


@dataclass(frozen=True)
class _Flavour:
    """redis-py's blocking or asyncio classes: the one thing the two kinds of client are built with differently."""

    redis: Any
    sentinel: Any
    retry: Any
    ssl_connection: Any
    parse_url: Callable[[str], Any]


_BLOCKING = _Flavour(Redis, Sentinel, Retry, SSLConnection, parse_url)


def _connect(target: RedisTarget | str, role: Role, flavour: _Flavour, overrides: dict[str, Any]) -> Any:
    """A client of ``flavour`` for ``role``: straight to the URL, or to the primary the sentinels name."""
    if isinstance(target, str):
        target = RedisTarget(target)
    options = {**_options(role, flavour.retry), "health_check_interval": 0, "client_name": role.value, **overrides}
    if not target.uses_sentinel:
        return flavour.redis.from_url(target.url, **options)
    url_options = dict(flavour.parse_url(target.url))
    for key in ("host", "port", "path"):
        url_options.pop(key, None)
    if url_options.pop("connection_class", None) is flavour.ssl_connection:
        url_options["ssl"] = True  # the Sentinel pool picks its TLS connection class from this flag
    sentinel_options = {
        "socket_connect_timeout": options["socket_connect_timeout"],
        "socket_timeout": options.get("socket_timeout") or 2.0,
        "password": target.sentinel_password,
        "retry": flavour.retry(NoBackoff(), 0),
    }
    sentinel = flavour.sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    return sentinel.master_for(target.sentinel_master, redis_class=flavour.redis, **url_options, **options)


def redis_client(target: RedisTarget | str, role: Role = Role.LOOKUP, **overrides: Any) -> Redis:
    """A client for ``role`` (a plain URL string is a target without Sentinel)."""
    client: Redis = _connect(target, role, _BLOCKING, overrides)
    return client


def cache_redis(target: RedisTarget | str) -> Redis:
    """A client for lookups: fail fast, never retry."""
    return redis_client(target, Role.LOOKUP)


def intake_redis(target: RedisTarget | str) -> Redis:
    """A client for the webhook intake: must answer well inside Svix's 15 s, one quick retry."""
    return redis_client(target, Role.INTAKE)


def near_redis(target: RedisTarget | str, role: Role = Role.NEAR) -> Redis:
    """A blocking client for a near-cache's control plane (``Role.NEAR`` or ``Role.NEAR_SUB``), also under
    `cache.aio`: its threads are its own, so a local hit never awaits and never does I/O."""
    if role not in (Role.NEAR, Role.NEAR_SUB):
        raise ValueError("a near-cache client is Role.NEAR or Role.NEAR_SUB")
    return redis_client(target, role)


def async_cache_redis(target: RedisTarget | str) -> AsyncRedis:
    """A ``redis.asyncio`` client for `cache.aio`'s lookups, with the same fail-fast options as `cache_redis`."""
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
    from redis.asyncio.connection import parse_url as async_parse_url
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    flavour = _Flavour(AsyncRedis, AsyncSentinel, AsyncRetry, AsyncSSLConnection, async_parse_url)
    client: AsyncRedis = _connect(target, Role.LOOKUP, flavour, {})
    return client
