"""A TCP proxy in front of a real redis-server that can hold Redis's replies, as toxiproxy's latency toxic does.

While held, bytes from clients still reach Redis at once (so each command runs when sent) but
Redis's replies wait in the proxy until `release`: a real slow network on the way back, with which
a test can let an invalidation overtake a read's reply without touching the code under test.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReplyHoldingProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://{host}:{self.port}/0"
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[tuple[socket.socket, bytes]] = []
        self.held_bytes = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        with self._lock:
            self._holding = True
            self.held_bytes = 0

    def release(self) -> None:
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
            for client, data in held:
                with contextlib.suppress(OSError):
                    client.sendall(data)

    @contextmanager
    def holding(self) -> Iterator[ReplyHoldingProxy]:
        self.hold()
        try:
            yield self
        finally:
            self.release()

    def close(self) -> None:
        self._closed = True
        self.release()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [])
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        server.sendall(data)
                        continue
                    with self._lock:
                        if self._holding:
                            self._held.append((client, data))
                            self.held_bytes += len(data)
                            continue
                    client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()
