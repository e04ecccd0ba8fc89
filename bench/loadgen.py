"""A small multi-process HTTP load generator for precomputed requests.

gunicorn's sync workers close the connection after each response, so each request
opens its own connection, as Svix's deliveries do.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from typing import Any


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _fire(port: int, requests: list[bytes], deadline: float, out: Any) -> None:
    ok = failed = 0
    for request in requests:
        if time.perf_counter() > deadline:
            break
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        if answer.startswith(b"HTTP/1.1 2"):
            ok += 1
        else:
            failed += 1
    out.put((ok, failed))


def fire(port: int, requests: list[bytes], *, processes: int = 4, max_seconds: float = 10.0) -> dict[str, float]:
    """Send ``requests`` split over ``processes``; returns ok/s and counts."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    slices = [requests[i::processes] for i in range(processes)]
    started = time.perf_counter()
    workers = [ctx.Process(target=_fire, args=(port, part, started + max_seconds, out)) for part in slices]
    for worker in workers:
        worker.start()
    totals = [out.get() for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    ok = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    return {"ok": ok, "failed": failed, "seconds": elapsed, "per_second": ok / elapsed}
