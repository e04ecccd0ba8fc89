"""Run the Procfile's web and worker processes under honcho, as a host would.

Used by ``./dev serve``, ``./dev demo`` and the process-level tests, so all three
exercise exactly the commands a Procfile host (Heroku, Render) runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import requests
from redis import Redis
from rq import Worker

REPO = Path(__file__).resolve().parent.parent


class LocalStack:
    """``honcho start`` on the repo's Procfile with a given environment."""

    def __init__(self, env: dict[str, str], *, log: IO[bytes] | None = None) -> None:
        self.env = dict(env)
        bin_dir = str(Path(sys.executable).parent)
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", os.defpath)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.port = int(self.env.get("PORT", "8000"))
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalStack:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", str(REPO / "Procfile"), "-e", os.devnull],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,  # so stop() can signal honcho and its children together
        )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._process.poll() is not None:
                raise RuntimeError(f"the Procfile processes exited (code {self._process.returncode})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Procfile processes did not become ready in time")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            if requests.get(self.url + "/healthz", timeout=1).status_code != 200:
                return False
        except requests.RequestException:
            return False
        redis = Redis.from_url(self.env["REDIS_URL"], socket_timeout=1)
        try:
            return bool(Worker.count(connection=redis) > 0)
        finally:
            redis.close()

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        group = self._process.pid
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        try:
            self._process.wait(timeout=timeout_s)
            while _group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.05)  # honcho can exit before its children have
        except subprocess.TimeoutExpired:
            pass
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)
        self._process.wait()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
