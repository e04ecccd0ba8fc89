"""``./dev serve``: run the whole service on this machine with nothing configured.

- Redis: uses ``REDIS_URL`` if something answers there, else starts a
  redis-server on that (local) port.
- Clerk: with no ``CLERK_SECRET_KEY``, a bundled stand-in with sample users and
  orgs plays Clerk's Backend API (60 ms per call, like the real one).
- Signing secret: with no ``CLERK_WEBHOOK_SIGNING_SECRET``, one is generated and
  kept in ``.devstack/signing-secret`` so ``./dev send-event`` can sign with it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from cache.config import DEFAULT_REDIS_URL, Settings
from cache.errors import ConfigError
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_signing_secret
from devstack.stack import REPO, LocalStack

STATE_DIR = REPO / ".devstack"
STANDIN_KEY = "sk_test_devstack_standin"


def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


def ensure_redis(url: str) -> RedisServer | None:
    """Start a redis-server for ``url`` if nothing answers there; None if one already does."""
    if redis_answers(url):
        return None
    parts = urlsplit(url)
    if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ConfigError("REDIS_URL", f"nothing answers at {parts.hostname}:{parts.port or 6379}")
    return RedisServer(port=parts.port or 6379).start()


def signing_secret_file() -> Path:
    return STATE_DIR / "signing-secret"


def local_signing_secret() -> str:
    """The dev stack's generated secret, made once and kept between runs."""
    path = signing_secret_file()
    if path.exists():
        return path.read_text().strip()
    STATE_DIR.mkdir(exist_ok=True)
    secret = new_signing_secret()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    env = dict(os.environ)
    env["REDIS_URL"] = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    env.setdefault("PORT", "8000")
    env.setdefault("LOG_FORMAT", "text")  # people read these; deployments get JSON
    try:
        Settings.from_env(env, process="cli")
        redis_server = ensure_redis(env["REDIS_URL"])
    except ConfigError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    standin: ClerkStandIn | None = None
    if not env.get("CLERK_SECRET_KEY"):
        standin = ClerkStandIn(secret_key=STANDIN_KEY, latency_s=0.06)
        standin.seed_sample()
        standin.start()
        env.update(CLERK_SECRET_KEY=STANDIN_KEY, CLERK_API_URL=standin.url)
    if not env.get("CLERK_WEBHOOK_SIGNING_SECRET"):
        env["CLERK_WEBHOOK_SIGNING_SECRET"] = local_signing_secret()

    print(f"redis:  {env['REDIS_URL']}" + (" (started for you)" if redis_server else ""))
    print(f"clerk:  {env.get('CLERK_API_URL', 'https://api.clerk.com')}" + (" (stand-in)" if standin else ""))
    stack = LocalStack(env)
    signal.signal(signal.SIGTERM, _interrupt)  # unwind like Ctrl-C, so the finally below stops everything
    try:
        stack.start()
        print(f"ready:  POST signed Clerk events to {stack.url}/webhooks/clerk", flush=True)
        print("        try `./dev send-event` in another shell; Ctrl-C stops everything", flush=True)
        return stack.wait()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if standin:
            standin.stop()
        if redis_server:
            redis_server.close()


if __name__ == "__main__":
    sys.exit(main())
