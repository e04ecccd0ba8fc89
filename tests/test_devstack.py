"""``./dev serve`` leaves nothing behind, however it ends, and ``./dev cli`` finds its stack.

Real processes and real time: ``python -m devstack.serve`` starts its own redis-server,
the Clerk stand-in and the Procfile's processes, exactly as ``./dev serve`` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

from devstack.redis_server import free_port
from devstack.stack import REPO, descendants
from devstack.waiting import wait_until

STOP_WITHIN_S = 10.0  # honcho's own SIGKILL comes after 5 s


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: tells a process from a later one with its pid


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    port: int
    redis_port: int
    state: Path
    seen: dict[int, str] = field(default_factory=dict)  # every process of the stack seen: pid -> start time

    def record(self) -> list[int]:
        """The stack's processes now (all of them, also remembered for the clean-up)."""
        pids = descendants(self.process.pid)
        for pid in pids:
            start = _start_time(pid)
            if start is not None:
                self.seen.setdefault(pid, start)
        return pids

    def alive(self, pid: int) -> bool:
        fields = _stat(pid)
        return fields is not None and fields[0] != "Z" and fields[19] == self.seen.get(pid)

    def left(self) -> list[str]:
        return [f"{pid} {_command(pid)}" for pid in self.seen if self.alive(pid)]

    def web_answers(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self) -> None:
        """Until /healthz answers and both Procfile processes are among serve's descendants."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.errors()}")
            commands = [_command(pid) for pid in self.record()]
            return (
                self.web_answers()
                and any("-m webhook" in c for c in commands)
                and any("-m worker" in c for c in commands)
            )

        wait_until(ready, 30, what="the dev stack", poll_s=0.1)

    def wait_all_gone(self) -> None:
        assert len(self.seen) >= 5, self.seen  # redis, the supervisor, web and worker (with their shells)
        try:
            wait_until(
                lambda: self.process.poll() is not None and not self.left() and _port_free(self.port),
                STOP_WITHIN_S,
                what="the whole stack to end",
                poll_s=0.05,
            )
        except TimeoutError:
            raise AssertionError(
                f"left running: {self.left()}; port {self.port} free: {_port_free(self.port)}; {self.errors()}"
            ) from None
        assert _port_free(self.redis_port)

    def errors(self) -> str:
        path = self.state / "serve.err"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill_all(self) -> None:
        """Whatever happened, leave nothing running (only processes of this stack, by pid and start time)."""
        if self.process.poll() is None:
            self.record()
        for pid in list(self.seen):
            if self.alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _serve_env(state: Path, port: int, redis_port: int) -> dict[str, str]:
    """The caller's environment without the service's settings: serve starts Redis and the Clerk stand-in."""
    own = ("REDIS_URL", "PORT", "LOG_FORMAT", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY", "DEVSTACK_STATE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in own and not k.startswith("CLERK_")}
    return {
        **env,
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DEVSTACK_STATE_DIR": str(state),
        "WEB_CONCURRENCY": "1",  # lighter on a small machine; how many does not matter here
    }


@contextmanager
def serve(tmp_path: Path, stdout: IO[bytes] | int) -> Iterator[Serve]:
    state = tmp_path / "state"
    state.mkdir()
    port, redis_port = free_port(), free_port()
    with open(state / "serve.err", "wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.serve"],
            cwd=REPO,
            env=_serve_env(state, port, redis_port),
            stdout=stdout,
            stderr=errors,
        )
    running = Serve(process, port, redis_port, state)
    redis_dirs: list[str] = []
    try:
        running.wait_ready()
        for pid in running.seen:  # a SIGKILLed serve cannot remove its redis-server's directory
            args = _command(pid).split()
            if "--dir" in args:
                redis_dirs.append(args[args.index("--dir") + 1])
        yield running
    finally:
        running.kill_all()
        for path in redis_dirs:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def serve_into_tee(tmp_path: Path) -> Iterator[tuple[Serve, subprocess.Popen[bytes]]]:
    """``./dev serve | tee serve.log``: serve's stdout is a pipe read by a tee process."""
    read_end, write_end = os.pipe()
    tee = subprocess.Popen(["tee", str(tmp_path / "serve.log")], stdin=read_end, stdout=subprocess.DEVNULL)
    os.close(read_end)  # tee holds the only reading end: when it dies, writes to the pipe fail
    try:
        with open(write_end, "wb") as into_tee, serve(tmp_path, into_tee) as running:
            into_tee.close()  # serve holds the only writing end
            yield running, tee
    finally:
        tee.kill()
        tee.wait(10)


def test_ctrl_c_in_a_pipeline_to_tee_ends_every_process(tmp_path: Path) -> None:
    """The reported bug: ``./dev serve | tee log`` and Ctrl-C left gunicorn and the worker holding the port."""
    with serve_into_tee(tmp_path) as (running, tee):
        assert (running.state / "env").exists()
        log = tmp_path / "serve.log"
        wait_until(lambda: "ready:" in log.read_text(), 30, what="serve to say ready through tee")
        tee.kill()  # Ctrl-C reaches the whole pipeline: tee dies too, and serve's stdout is a broken pipe
        tee.wait(10)
        running.process.send_signal(signal.SIGINT)
        running.wait_all_gone()
        assert not (running.state / "env").exists()  # it would point at a stack that is gone


def test_sigkill_of_serve_ends_every_process(tmp_path: Path) -> None:
    with serve_into_tee(tmp_path) as (running, _):
        running.process.kill()  # no clean-up of its own can run: the processes must follow by themselves
        running.wait_all_gone()


def _dev_cli(state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CLERK_")}
    return subprocess.run(
        [str(REPO / "dev"), "cli", *args],
        env={**base, "DEVSTACK_STATE_DIR": str(state), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_cli_runs_the_cli_against_the_stack_serve_runs(tmp_path: Path) -> None:
    missing = _dev_cli(tmp_path / "nowhere", "doctor")
    assert missing.returncode == 2
    assert missing.stdout == ""
    last_line = missing.stderr.splitlines()[-1]  # (setup may have said it installed something first)
    assert last_line.startswith("dev cli: ") and "start ./dev serve" in last_line

    with open(tmp_path / "serve.log", "wb") as log, serve(tmp_path, log) as running:
        env_file = running.state / "env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert set(settings) == {
            "REDIS_URL",
            "CLERK_SECRET_KEY",
            "CLERK_API_URL",
            "CLERK_WEBHOOK_SIGNING_SECRET",
            "PORT",
        }
        assert settings["PORT"] == str(running.port)
        wait_until(lambda: b"ready:" in (tmp_path / "serve.log").read_bytes(), 30, what="serve to say ready")

        doctor = _dev_cli(running.state, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert f"Clerk accepts the key at {settings['CLERK_API_URL']}" in doctor.stdout
        assert "1 worker(s) listening" in doctor.stdout

        # what the caller has set wins over the file
        dead_redis = f"redis://127.0.0.1:{free_port()}/0"
        overridden = _dev_cli(running.state, "doctor", REDIS_URL=dead_redis)
        assert overridden.returncode == 1
        assert "FAIL  redis: nothing answers at REDIS_URL" in overridden.stdout
        assert "ok    clerk" in overridden.stdout
