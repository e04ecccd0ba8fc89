"""A TCP proxy that follows the primary the sentinels name, and can cut every connection through it.

One app process of the soak reaches Redis this way, as an app behind HAProxy in front of a Sentinel
deployment does: a plain ``REDIS_URL`` (no sentinels of its own), the proxy connecting each new client
to the primary a sentinel names at that moment, and closing the connections to a node once the sentinels
name another (HAProxy's ``on-marked-down shutdown-sessions``). ``cut`` is the fault: every connection
through it reset at once, and new ones refused for a while, as a flapping network path would.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

from devstack.redis_server import free_port

Address = tuple[str, int]
Pair = tuple[socket.socket, socket.socket, Address]  # client side, upstream side, the node it reaches
POLL_S = 0.1  # how often it asks which primary the sentinels name
CHUNK = 65536


class PrimaryProxy:
    def __init__(self, sentinels: list[Address], master_name: str, host: str = "127.0.0.1") -> None:
        self.sentinels = sentinels
        self.master_name = master_name
        self.host = host
        self.port = free_port()
        self._listener = socket.create_server((host, self.port))
        self._lock = threading.Lock()
        self._pairs: list[Pair] = []
        self._refuse_until = 0.0
        self._target: Address | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, name="proxy-accept", daemon=True),
            threading.Thread(target=self._follow, name="proxy-follow", daemon=True),
        ]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> PrimaryProxy:
        self._target = self._named_primary()
        for thread in self._threads:
            thread.start()
        return self

    def cut(self, hold_s: float) -> int:
        """Reset every connection through the proxy and refuse new ones for ``hold_s``; how many were cut."""
        with self._lock:
            self._refuse_until = time.monotonic() + hold_s
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _reset_pair(pair)
        return len(pairs)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not, on Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut(0.0)
        for thread in self._threads:
            thread.join(5)

    # -- internals ---------------------------------------------------------------------------------

    def _named_primary(self) -> Address | None:
        for host, port in self.sentinels:
            try:
                with Redis(
                    host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True
                ) as sentinel:
                    named = sentinel.sentinel_get_master_addr_by_name(self.master_name)
            except (RedisError, OSError):
                continue
            if named:
                return (str(named[0]), int(named[1]))
        return None

    def _follow(self) -> None:
        """Every POLL_S: the primary the sentinels name; connections to any other node are reset."""
        while not self._stop.wait(POLL_S):
            target = self._named_primary()
            if target is None:
                continue
            with self._lock:
                self._target = target
                stale = [pair for pair in self._pairs if pair[2] != target]
                self._pairs = [pair for pair in self._pairs if pair[2] == target]
            for pair in stale:
                _reset_pair(pair)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused, target = time.monotonic() < self._refuse_until, self._target
            if refused or target is None:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(target, timeout=1.0)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = (client, upstream, target)
            with self._lock:
                self._pairs.append(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair: Pair) -> None:
        """Copy bytes one way until either side closes; then close both (the other pump ends too)."""
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _reset_pair(pair)
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)


def _reset_pair(pair: Pair) -> None:
    client, upstream, _ = pair
    _reset(client)
    _reset(upstream)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a cut path or a killed peer would look to the other side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
