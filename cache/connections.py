"""Redis clients with timeouts that fit each caller.

The cache sits on the request path: it must give up on Redis in milliseconds and
fall back to Clerk, so it gets its own client with short timeouts and no retries
(redis-py 8 would otherwise retry for seconds). Never share it with an RQ worker,
which raises its pool's socket timeout to minutes.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def cache_redis(url: str, *, connect_timeout_s: float = 0.25, timeout_s: float = 0.5) -> Redis:
    """A client for lookups: fail fast, never retry (the breaker decides when to try again)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
        client_name="clerk-org-cache",
    )


def intake_redis(url: str) -> Redis:
    """A client for the webhook intake: must answer well inside Svix's 15 s, one quick retry."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
        client_name="clerk-org-cache-intake",
    )
