"""Every setting of every process, read from the environment and validated in one place.

Each process reads only the variables it uses (`READS`), so app code importing
``cache`` is never refused over the web process's ``PORT``. A bad value raises
ConfigError with one line that names the variable and never echoes a secret;
process entry points turn it into exit status 2 (`settings_or_exit`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from cache.errors import ConfigError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_CLERK_API_URL = "https://api.clerk.com"
DEFAULT_TTL_SECONDS = 300
DEFAULT_RETRY_INTERVALS = (2, 10, 30, 60, 120, 300)
DEFAULT_NEAR_CACHE_LEASE_MS = 2000
MIN_NEAR_CACHE_LEASE_MS = 500
MAX_NEAR_CACHE_LEASE_MS = 5000  # with WAIT (<= 3 s) the intake's 2xx stays well inside Svix's 15 s

Process = Literal["library", "web", "worker", "cli"]


@dataclass(frozen=True)
class Settings:
    """What the processes need; build with `Settings.from_env`. Unread variables keep their defaults."""

    redis_url: str = DEFAULT_REDIS_URL
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = field(default="", repr=False)
    redis_wait_replicas: int | None = None  # None: auto (every replica a failover could promote; none on a lone Redis)
    redis_wait_timeout_ms: int = 1000
    clerk_secret_key: str = field(default="", repr=False)
    clerk_api_url: str = DEFAULT_CLERK_API_URL
    webhook_signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    user_orgs_ttl_seconds: int = DEFAULT_TTL_SECONDS
    port: int = 8000
    web_concurrency: int = 2
    metrics_token: str = field(default="", repr=False)
    refresh_concurrency: int = 8
    refresh_retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS
    worker_metrics_port: int | None = None
    worker_sweep_seconds: float = 60.0
    clerk_rate_limit: int = 800
    clerk_rate_limit_reserve: int | None = None  # None: a fiftieth of the limit
    clerk_rate_window_seconds: float = 10.0
    clerk_interactive_wait_ms: int = 2000
    near_cache_size: int = 0  # 0: no near-cache (the default)
    near_cache_lease_ms: int = DEFAULT_NEAR_CACHE_LEASE_MS
    log_format: str = "json"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, process: Process = "library") -> Settings:
        """Read and validate the variables ``process`` uses (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable in VARIABLES:
            required = process in variable.required_by
            if process in variable.read_by or required:
                raw = env.get(variable.name, "").strip()
                if not raw:
                    if required:
                        raise ConfigError(variable.name, f"is not set ({variable.meaning})")
                    continue
                values[variable.field] = variable.parse(raw, variable.name)
        settings = cls(**values)
        if settings.redis_sentinels and not settings.redis_sentinel_master:
            raise ConfigError(
                "REDIS_SENTINEL_MASTER", "is not set (the name the sentinels monitor, with REDIS_SENTINELS)"
            )
        if settings.redis_sentinel_master and not settings.redis_sentinels:
            raise ConfigError("REDIS_SENTINELS", "is not set (host:port of the sentinels, with REDIS_SENTINEL_MASTER)")
        return settings


# -- parsers: (raw non-empty text, variable name) -> value, or ConfigError -------------------------


def _int_in(low: int, high: int) -> Callable[[str, str], int]:
    def parse(raw: str, name: str) -> int:
        if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
            raise ConfigError(name, f"must be a whole number from {low} to {high}")
        return int(raw)

    return parse


def _seconds_in(low: float, high: float) -> Callable[[str, str], float]:
    def parse(raw: str, name: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise ConfigError(name, f"must be a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def _intervals(raw: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(name, "must be comma-separated whole seconds, e.g. 2,10,30") from None
    if not 1 <= len(values) <= 20 or any(not 0 <= v <= 86_400 for v in values):
        raise ConfigError(name, "must list 1 to 20 retries of 0 to 86400 seconds each")
    return values


def _redis_url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(name, "must look like redis://host:port/db (or rediss://, unix://)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(name, "has an invalid port") from None
    return raw


def _host_ports(raw: str, name: str) -> tuple[tuple[str, int], ...]:
    found = []
    for part in raw.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65_535 or any(c.isspace() for c in host):
            raise ConfigError(name, "must be comma-separated host:port pairs, e.g. 10.0.0.1:26379,10.0.0.2:26379")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _name(raw: str, name: str) -> str:
    if any(c.isspace() for c in raw) or len(raw) > 128:
        raise ConfigError(name, "must be a name without whitespace, as in the sentinels' 'sentinel monitor <name>'")
    return raw


def _replicas(raw: str, name: str) -> int | None:
    if raw.lower() == "auto":
        return None
    if not raw.isdigit() or int(raw) > 16:
        raise ConfigError(name, "must be auto or a number of replicas from 0 to 16")
    return int(raw)


def _http_url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, "must be an http(s) URL such as https://api.clerk.com")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(name, "has an invalid port") from None
    return raw.rstrip("/")


def _token(min_length: int) -> Callable[[str, str], str]:
    def parse(raw: str, name: str) -> str:
        if any(c.isspace() for c in raw):
            raise ConfigError(name, "must not contain whitespace")
        if len(raw) < min_length:
            raise ConfigError(name, f"must be at least {min_length} characters long")
        return raw

    return parse


def _signing_secrets(raw: str, name: str) -> tuple[str, ...]:
    secrets = tuple(raw.split())
    for position, secret in enumerate(secrets, start=1):
        if not secret.startswith("whsec_"):
            raise ConfigError(name, f"secret #{position} does not start with whsec_")
        try:
            encoded = secret.removeprefix("whsec_")
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(name, f"secret #{position} is not valid base64") from None
        if not decoded:
            raise ConfigError(name, f"secret #{position} is empty")
    return secrets


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(raw: str, name: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ConfigError(name, "must be one of " + ", ".join(options))
        return value

    return parse


def _log_level(raw: str, name: str) -> str:
    value = raw.upper()
    if not isinstance(logging.getLevelName(value), int):
        raise ConfigError(name, "must be a logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


@dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str, str], Any]
    read_by: frozenset[str]
    meaning: str
    required_by: frozenset[str] = frozenset()


def _v(
    name: str, field_: str, parse: Callable[[str, str], Any], read_by: str, meaning: str, required: str = ""
) -> Variable:
    return Variable(name, field_, parse, frozenset(read_by.split()), meaning, frozenset(required.split()))


ALL = "library web worker cli"
VARIABLES: tuple[Variable, ...] = (
    _v("REDIS_URL", "redis_url", _redis_url, ALL, "the Redis holding the cache and the queue"),
    _v("REDIS_SENTINELS", "redis_sentinels", _host_ports, ALL, "host:port of each sentinel"),
    _v("REDIS_SENTINEL_MASTER", "redis_sentinel_master", _name, ALL, "the name the sentinels monitor"),
    _v("REDIS_SENTINEL_PASSWORD", "redis_sentinel_password", _token(1), ALL, "the sentinels' password"),
    _v("REDIS_WAIT_REPLICAS", "redis_wait_replicas", _replicas, ALL, "replicas a revocation must reach"),
    _v("REDIS_WAIT_TIMEOUT_MS", "redis_wait_timeout_ms", _int_in(1, 3000), ALL, "how long to wait for them"),
    _v(
        "CLERK_SECRET_KEY",
        "clerk_secret_key",
        _token(1),
        "cli",
        "the Clerk Backend API secret key, sk_live_... or sk_test_...",
        required="library worker",
    ),
    _v("CLERK_API_URL", "clerk_api_url", _http_url, "library worker cli", "Clerk's API base URL"),
    _v(
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "webhook_signing_secrets",
        _signing_secrets,
        "cli",
        "one or more whsec_... secrets from Clerk's webhook endpoint, separated by spaces",
        required="web",
    ),
    _v("CLERK_RATE_LIMIT", "clerk_rate_limit", _int_in(1, 100_000), "library worker cli", "Clerk requests per window"),
    _v(
        "CLERK_RATE_LIMIT_RESERVE",
        "clerk_rate_limit_reserve",
        _int_in(0, 100_000),
        "library worker cli",
        "slots re-warming leaves to interactive calls",
    ),
    _v(
        "CLERK_RATE_WINDOW_SECONDS",
        "clerk_rate_window_seconds",
        _seconds_in(0.1, 60),
        "library worker cli",
        "the rate limit's window",
    ),
    _v(
        "CLERK_INTERACTIVE_WAIT_MS",
        "clerk_interactive_wait_ms",
        _int_in(0, 10_000),
        "library worker cli",
        "how long a lookup waits for Clerk budget",
    ),
    _v("USER_ORGS_TTL_SECONDS", "user_orgs_ttl_seconds", _int_in(1, 86_400), "library worker cli", "value lifetime"),
    _v("PORT", "port", _int_in(1, 65_535), "web", "the web process's port"),
    _v("WEB_CONCURRENCY", "web_concurrency", _int_in(1, 256), "web", "gunicorn worker processes"),
    _v("METRICS_TOKEN", "metrics_token", _token(16), "web cli", "bearer token for GET /metrics"),
    _v("REFRESH_CONCURRENCY", "refresh_concurrency", _int_in(1, 64), "worker", "parallel Clerk calls per drain job"),
    _v(
        "REFRESH_RETRY_INTERVALS",
        "refresh_retry_intervals",
        _intervals,
        "web worker cli",
        "seconds between retries of a drain job",
    ),
    _v("WORKER_METRICS_PORT", "worker_metrics_port", _int_in(1, 65_535), "worker", "the worker's metrics port"),
    _v("WORKER_SWEEP_SECONDS", "worker_sweep_seconds", _seconds_in(0.1, 3600), "worker", "maintenance interval"),
    _v("NEAR_CACHE_SIZE", "near_cache_size", _int_in(0, 10_000_000), "library cli", "users kept in-process (0: off)"),
    _v(
        "NEAR_CACHE_LEASE_MS",
        "near_cache_lease_ms",
        _int_in(MIN_NEAR_CACHE_LEASE_MS, MAX_NEAR_CACHE_LEASE_MS),
        "library cli",  # the CLI checks the settings app processes run with
        "the near-cache's registration lease",
    ),
    _v("LOG_FORMAT", "log_format", _choice("json", "text"), "web worker", "json or text"),
    _v("LOG_LEVEL", "log_level", _log_level, "web worker", "a logging level name"),
)


def settings_or_exit(prog: str, process: Process, environ: Mapping[str, str] | None = None) -> Settings:
    """`Settings.from_env`, or exit 2 with one line naming the variable (for process entry points)."""
    try:
        return Settings.from_env(environ, process=process)
    except ConfigError as exc:
        exit_with_config_error(prog, exc)


def exit_with_config_error(prog: str, exc: ConfigError) -> NoReturn:
    print(f"{prog}: {exc}", file=sys.stderr)
    raise SystemExit(2)
