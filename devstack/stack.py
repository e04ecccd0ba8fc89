"""Run the Procfile's web and worker processes under honcho, as a host would.

Used by ``./dev serve``, ``./dev demo`` and the process-level tests, so all three
exercise exactly the commands a Procfile host (Heroku, Render) runs.

Nothing of a stack may outlive its owner. ``honcho start`` alone cannot promise
that: it puts every Procfile process in a session of its own (so a signal to
honcho's group never reaches them), it dies with a BrokenPipeError inside its
SIGINT/SIGTERM handler when its stdout reader is gone (``./dev serve | tee``
and Ctrl-C), before it has signalled anything, and nothing stops it when its
owner is SIGKILLed. So ``LocalStack`` runs honcho's own manager inside a small
supervisor (``python -m devstack.stack``, below) that

- follows its owner: the kernel sends it SIGTERM when the owner dies, however
  (``PR_SET_PDEATHSIG``);
- writes honcho's output with writes that never raise, and stops the stack
  as soon as that output's reader is gone, as SIGPIPE would (but cleanly);
- is a child subreaper, so whatever is left below it when honcho is done (a
  process whose parent died first) is still its descendant, and is killed.

Linux only for those guarantees (the project runs on Linux); elsewhere the stack
still runs, with honcho's own clean-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import requests
from redis import Redis
from rq import Worker

REPO = Path(__file__).resolve().parent.parent

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
EXIT_OUTPUT_GONE = 128 + signal.SIGPIPE  # what a shell reports for a writer killed by SIGPIPE


class LocalStack:
    """``honcho start`` on the repo's Procfile with a given environment.

    The stack follows the thread that starts it: if that thread's process dies,
    even by SIGKILL, the stack stops (start it from a thread that lives as long).
    """

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

    @property
    def pid(self) -> int | None:
        """The supervisor's process id: the web and worker processes are among its descendants."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 30.0) -> LocalStack:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "devstack.stack", str(REPO / "Procfile"), str(os.getpid())],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,  # a Ctrl-C meant for us must not reach the processes before stop() does
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
        """SIGTERM the supervisor, which stops the processes and kills what is left; SIGKILL all after ``timeout_s``."""
        process = self._process
        if process is None or process.poll() is not None:
            return  # the supervisor only exits once everything below it has ended
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            left = descendants(process.pid)  # before the kill: orphans would leave the tree
            _kill_group(process.pid)
            for pid in left:
                _kill(pid)
            process.wait()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- process-tree tools (Linux) ----------------------------------------------------------


def procfile_command(process: str) -> list[str]:
    """The Procfile's command for ``process`` (``web``, ``worker``), with ``python`` as this interpreter."""
    for line in (REPO / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name.strip() == process:
            argv = shlex.split(command)
            return [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    raise LookupError(f"the Procfile has no {process!r} process")


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # not C ints: the kernel reads whole longs
    function.restype = ctypes.c_int
    prctl: Callable[..., int] = function
    return prctl


def follow_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` making the child receive ``signum`` when the thread that starts it ends, as it does
    when its process dies, even by SIGKILL; it survives the child's exec. A no-op without ``prctl`` (not Linux)."""
    prctl = _prctl()  # resolved here: the child between fork and exec should do as little as possible
    parent = os.getpid()

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: nobody will send the signal
                os.kill(os.getpid(), signum)

    return preexec


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first, then theirs), read from /proc; [] if there is none."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if fields and fields[0] != b"Z":  # a zombie holds nothing: its parent reaps it
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        found.extend(below)
        todo.extend(below)
    return found


def _kill(pid: int, signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


# -- the supervisor: python -m devstack.stack PROCFILE OWNER_PID --------------------------


class _Output:
    """honcho's stdout, where a write never raises (honcho would die of the BrokenPipeError in the middle of
    stopping its processes): once the reader is gone, ``on_gone`` is called once and output is dropped."""

    def __init__(self, fd: int, on_gone: Callable[[], None]) -> None:
        self._fd = fd
        self._on_gone = on_gone
        self._pending: list[str] = []
        self.gone = False

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, text: str) -> int:
        if not self.gone:
            self._pending.append(text)
        return len(text)

    def watch(self) -> None:
        """Notice the reader going away even while nothing is written (an idle stack logs nothing)."""
        threading.Thread(target=self._watch, name="output-watch", daemon=True).start()

    def _watch(self) -> None:
        poller = select.poll()
        poller.register(self._fd, 0)  # no events asked for: only POLLERR/POLLHUP/POLLNVAL can come back
        poller.poll()  # a pipe's writer gets POLLERR when its reader closes; files and /dev/null never report
        self._gone()

    def flush(self) -> None:
        data, self._pending = "".join(self._pending).encode("utf-8", "replace"), []
        try:
            while data and not self.gone:
                data = data[os.write(self._fd, data) :]
        except BlockingIOError:
            pass  # a full non-blocking pipe: this line is lost, not the stack
        except OSError:  # EPIPE: the reader is gone (Python ignores SIGPIPE); EIO: the terminal is
            self._gone()

    def _gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._on_gone()


def _supervise(procfile: Path, owner: int) -> int:
    from honcho.environ import expand_processes, parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # honcho's own handler then stops everything
        prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.getppid() != owner:
        return 1  # the owner died before we could follow it: start nothing

    def output_gone() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # stop as SIGPIPE would stop a writer, but cleanly

    output = _Output(sys.stdout.fileno(), output_gone)
    output.watch()
    manager = Manager(Printer(output))
    processes = parse_procfile(procfile.read_text()).processes
    for process in expand_processes(processes, env={}, port=int(os.environ.get("PORT", "5000"))):
        manager.add_process(process.name, process.cmd, quiet=process.quiet, env={**os.environ, **process.env})
    # honcho handles SIGINT and SIGTERM; a hang-up means the same here
    signal.signal(signal.SIGHUP, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
    try:
        manager.loop()
    finally:
        _end_descendants(grace_s=1.0)
    return EXIT_OUTPUT_GONE if output.gone else int(manager.returncode or 0)


def _end_descendants(grace_s: float, give_up_s: float = 10.0) -> None:
    """Reap and, after ``grace_s``, SIGKILL every process left below this one, until none is left
    (or ``give_up_s`` has passed: a process stuck in the kernel cannot be helped)."""
    start = time.monotonic()
    while True:
        _reap()
        left = descendants(os.getpid())
        waited = time.monotonic() - start
        if not left or waited > give_up_s:
            return
        if waited > grace_s:
            for pid in left:
                _kill(pid)
        time.sleep(0.02)


def _reap() -> None:
    """Collect exited children (as a subreaper, orphans below us become our children)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m devstack.stack PROCFILE OWNER_PID  (LocalStack runs it)")
    sys.exit(_supervise(Path(sys.argv[1]), int(sys.argv[2])))
