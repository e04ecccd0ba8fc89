"""Redis settings under which the freshness guarantee does not hold, checked at start-up.

- Eviction (any ``maxmemory-policy`` but ``noeviction``) can drop an ``org-users:*``
  index, rarely read and so first to go; an org event then misses cached members.
- Persistence that can lose acknowledged writes (RDB snapshots, AOF without
  ``appendfsync always``) can bring a revoked value back after a crash. Without any
  persistence a restart comes back empty, which is safe.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

from cache.contract import CONTRACT_VERSION, CONTRACT_VERSION_KEY


class ChecksUnavailable(Exception):
    """CONFIG GET is not allowed (managed Redis) or Redis did not answer."""


def risky_settings(redis: Redis) -> list[str]:
    """One line per risky setting, [] when all is well; raises ChecksUnavailable if CONFIG is refused."""
    try:
        config = redis.config_get("maxmemory-policy")
        config |= redis.config_get("save")
        config |= redis.config_get("appendonly")
        config |= redis.config_get("appendfsync")
    except RedisError as exc:
        raise ChecksUnavailable(type(exc).__name__) from exc
    found = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        found.append(
            f"Redis maxmemory-policy is {policy}: eviction can drop an org index so that an org event "
            "misses cached members; use noeviction"
        )
    if config.get("save"):
        found.append(
            "Redis saves RDB snapshots: after a crash it can restore a value revoked since the last "
            'snapshot; run it without persistence (save "") or with appendonly yes and appendfsync always'
        )
    elif config.get("appendonly") == "yes" and config.get("appendfsync") != "always":
        found.append(
            f"Redis appendfsync is {config.get('appendfsync')}: a crash can lose an acknowledged "
            "revocation; use appendfsync always, or no persistence at all"
        )
    return found


def claim_contract_version(redis: Redis) -> str | None:
    """Write this version of the data contract to ``clerk-org-cache:contract-version`` (so other readers
    can tell what the values hold); a warning line if Redis names a newer one (a newer deploy shares it)."""
    found = redis.get(CONTRACT_VERSION_KEY)
    try:
        theirs = int(found) if found is not None else 0
    except ValueError:
        theirs = 0
    if theirs > CONTRACT_VERSION:
        return (
            f"Redis holds data contract version {theirs}, newer than this process's {CONTRACT_VERSION}: "
            "a newer deploy shares this Redis; finish rolling it out"
        )
    if theirs < CONTRACT_VERSION:
        redis.set(CONTRACT_VERSION_KEY, CONTRACT_VERSION)
    return None


def log_risky_settings(redis: Redis, log: logging.Logger) -> None:
    """The start-up check of web and worker: a warning per risky setting, or one line saying it was skipped;
    then the data contract's version is claimed (`claim_contract_version`)."""
    try:
        newer = claim_contract_version(redis)
    except RedisError as exc:
        log.warning("data contract version not written (%s)", type(exc).__name__)
    else:
        if newer:
            log.warning(newer)
    try:
        warnings = risky_settings(redis)
    except ChecksUnavailable as exc:
        log.warning("Redis settings not checked (CONFIG GET failed: %s, as on managed Redis)", exc)
        return
    for warning in warnings:
        log.warning(warning)
