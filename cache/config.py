"""Settings read from the environment and validated once, at start-up.

Every process (web, worker, app code importing ``cache``) reads the same variables.
A bad value raises ConfigError with one line that names the variable and never
echoes a secret.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cache.errors import ConfigError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_CLERK_API_URL = "https://api.clerk.com"
DEFAULT_TTL_SECONDS = 300


@dataclass(frozen=True)
class Settings:
    """What every process needs; build with `Settings.from_env`."""

    redis_url: str = DEFAULT_REDIS_URL
    clerk_secret_key: str = field(default="", repr=False)
    clerk_api_url: str = DEFAULT_CLERK_API_URL
    webhook_signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    user_orgs_ttl_seconds: int = DEFAULT_TTL_SECONDS
    port: int = 8000
    refresh_concurrency: int = 8
    refresh_retry_intervals: tuple[int, ...] = (2, 10, 30, 60, 120, 300)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        need_clerk_key: bool = True,
        need_signing_secret: bool = False,
    ) -> Settings:
        """Read and validate the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        return cls(
            redis_url=_redis_url(env),
            clerk_secret_key=_clerk_secret_key(env, required=need_clerk_key),
            clerk_api_url=_http_url(env, "CLERK_API_URL", DEFAULT_CLERK_API_URL),
            webhook_signing_secrets=_signing_secrets(env, required=need_signing_secret),
            user_orgs_ttl_seconds=_int(env, "USER_ORGS_TTL_SECONDS", DEFAULT_TTL_SECONDS, 1, 86_400),
            port=_int(env, "PORT", 8000, 1, 65_535),
            refresh_concurrency=_int(env, "REFRESH_CONCURRENCY", 8, 1, 64),
            refresh_retry_intervals=_intervals(env, "REFRESH_RETRY_INTERVALS", (2, 10, 30, 60, 120, 300)),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be a whole number from {low} to {high}")
    return value


def _intervals(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(name, "must be comma-separated whole seconds, e.g. 2,10,30") from None
    if not 1 <= len(values) <= 20 or any(not 0 <= v <= 86_400 for v in values):
        raise ConfigError(name, "must list 1 to 20 retries of 0 to 86400 seconds each")
    return values


def _redis_url(env: Mapping[str, str]) -> str:
    url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError("REDIS_URL", "must look like redis://host:port/db (or rediss://, unix://)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("REDIS_URL", "has an invalid port") from None
    return url


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env.get(name, "").strip() or default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, "must be an http(s) URL such as https://api.clerk.com")
    return url.rstrip("/")


def _clerk_secret_key(env: Mapping[str, str], *, required: bool) -> str:
    key = env.get("CLERK_SECRET_KEY", "").strip()
    if not key and required:
        raise ConfigError("CLERK_SECRET_KEY", "is not set (the Clerk Backend API secret key, sk_live_... or sk_test_)")
    if key and any(c.isspace() for c in key):
        raise ConfigError("CLERK_SECRET_KEY", "must not contain whitespace")
    return key


def _signing_secrets(env: Mapping[str, str], *, required: bool) -> tuple[str, ...]:
    secrets = tuple(env.get("CLERK_WEBHOOK_SIGNING_SECRET", "").split())
    if not secrets and required:
        raise ConfigError(
            "CLERK_WEBHOOK_SIGNING_SECRET",
            "is not set (one or more whsec_... secrets from Clerk's webhook endpoint, separated by spaces)",
        )
    for position, secret in enumerate(secrets, start=1):
        if not secret.startswith("whsec_"):
            raise ConfigError("CLERK_WEBHOOK_SIGNING_SECRET", f"secret #{position} does not start with whsec_")
        try:
            encoded = secret.removeprefix("whsec_")
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("CLERK_WEBHOOK_SIGNING_SECRET", f"secret #{position} is not valid base64") from None
        if not decoded:
            raise ConfigError("CLERK_WEBHOOK_SIGNING_SECRET", f"secret #{position} is empty")
    return secrets
