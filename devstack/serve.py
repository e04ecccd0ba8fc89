"""``./dev serve``: run the whole service on this machine with nothing configured.

- Redis: uses ``REDIS_URL`` if something answers there, else starts a
  redis-server on that (local) port.
- Clerk: with no ``CLERK_SECRET_KEY``, a bundled stand-in with sample users and
  orgs plays Clerk's Backend API (60 ms per call, like the real one).
- Signing secret: with no ``CLERK_WEBHOOK_SIGNING_SECRET``, one is generated and
  kept in ``.devstack/signing-secret`` so ``./dev send-event`` can sign with it.
- ``.devstack/env`` (mode 0600) holds the stack's REDIS_URL, Clerk key and URL,
  signing secret and PORT while it runs, for ``./dev cli`` (the operator CLI).
  ``DEVSTACK_STATE_DIR`` puts these files elsewhere (the tests do).

Whatever ends this process (Ctrl-C, SIGTERM, SIGHUP, its stdout reader going
away, even SIGKILL) ends everything it started: see ``devstack/stack.py``.
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
from devstack.stack import EXIT_OUTPUT_GONE, REPO, LocalStack, follow_parent

STATE_DIR = REPO / ".devstack"
STANDIN_KEY = "sk_test_devstack_standin"
ENV_FILE_KEYS = ("REDIS_URL", "CLERK_SECRET_KEY", "CLERK_API_URL", "CLERK_WEBHOOK_SIGNING_SECRET", "PORT")


def state_dir() -> Path:
    return Path(os.environ.get("DEVSTACK_STATE_DIR") or STATE_DIR)


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
    # the kernel stops it too if this process is SIGKILLed (no thread runs yet: the stand-in starts later)
    return RedisServer(port=parts.port or 6379, preexec_fn=follow_parent()).start()


def signing_secret_file() -> Path:
    return state_dir() / "signing-secret"


def env_file() -> Path:
    return state_dir() / "env"


def local_signing_secret() -> str:
    """The dev stack's generated secret, made once and kept between runs."""
    path = signing_secret_file()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = new_signing_secret()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def write_env_file(env: dict[str, str]) -> str:
    """Write the stack's settings for ``./dev cli`` (only this user may read them); returns what was written."""
    lines = []
    for key in ENV_FILE_KEYS:
        value = env.get(key)
        if value is not None:
            if "\n" in value:
                raise ConfigError(key, "must be a single line")
            lines.append(f"{key}={value}\n")
    text = "".join(lines)
    path = env_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".env.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)
    return text


def remove_env_file(written: str) -> None:
    """Remove ``.devstack/env`` unless another ``./dev serve`` has since written its own."""
    path = env_file()
    try:
        if path.read_text() == written:
            path.unlink()
    except OSError:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM and SIGHUP (the terminal went away) unwind like Ctrl-C, so the finally below stops everything.
    # Set first: whatever has started by the time a signal comes is stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    env = dict(os.environ)
    env["REDIS_URL"] = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    env.setdefault("PORT", "8000")
    env.setdefault("LOG_FORMAT", "text")  # people read these; deployments get JSON
    redis_server: RedisServer | None = None
    standin: ClerkStandIn | None = None
    stack: LocalStack | None = None
    env_written: str | None = None
    try:
        try:
            Settings.from_env(env, process="cli")
            redis_server = ensure_redis(env["REDIS_URL"])
        except ConfigError as exc:
            print(f"serve: {exc}", file=sys.stderr)
            return 2
        if not env.get("CLERK_SECRET_KEY"):
            standin = ClerkStandIn(secret_key=STANDIN_KEY, latency_s=0.06)
            standin.seed_sample()
            standin.start()
            env.update(CLERK_SECRET_KEY=STANDIN_KEY, CLERK_API_URL=standin.url)
        if not env.get("CLERK_WEBHOOK_SIGNING_SECRET"):
            env["CLERK_WEBHOOK_SIGNING_SECRET"] = local_signing_secret()

        print(f"redis:  {env['REDIS_URL']}" + (" (started for you)" if redis_server else ""))
        print(f"clerk:  {env.get('CLERK_API_URL', 'https://api.clerk.com')}" + (" (stand-in)" if standin else ""))
        env_written = write_env_file(env)
        stack = LocalStack(env)
        stack.start()
        print(f"ready:  POST signed Clerk events to {stack.url}/webhooks/clerk", flush=True)
        print("        try `./dev send-event` or `./dev cli doctor` in another shell; Ctrl-C stops all", flush=True)
        return stack.wait()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # whoever read our output is gone: stop, as SIGPIPE would stop us
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exiting flushes nowhere, quietly
        return EXIT_OUTPUT_GONE
    except (RuntimeError, ConfigError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    finally:
        # one signal is enough: another one must not cut the clean-up short
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if stack:
            stack.stop()
        if standin:
            standin.stop()
        if redis_server:
            redis_server.close()
        if env_written is not None:
            remove_env_file(env_written)


if __name__ == "__main__":
    sys.exit(main())
