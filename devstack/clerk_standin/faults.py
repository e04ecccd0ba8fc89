"""Misbehaviour on demand, so tests can make Clerk slow, failing or stuck at a chosen moment.

Latency before an answer, a delay after it is computed (so a read can race a change),
queued error answers, the Gate that holds a user's membership read, and Clerk's own
rate limit (`RateLimit`), so tests and benchmarks meet 429s as production does.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from devstack.clerk_standin.shapes import Response, dumps, error_payload


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: int | None
    body: str | None

    def response(self) -> Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        if self.body is not None:
            return Response(self.status, self.body.encode(), headers)
        return Response(self.status, dumps(error_payload(self.status)), headers)


class Gate:
    """Holds user-membership reads (or an org's reads, keyed by org id) so a test can make Clerk
    'slow' at a chosen moment.

    The held request's answer is computed when it arrives, so it carries the data
    Clerk saw before any change the test makes while it is held.
    """

    def __init__(self, user_id: str, on_release: Callable[["Gate"], None]) -> None:
        self.user_id = user_id
        self._on_release = on_release
        self._cond = threading.Condition()
        self._arrived = 0
        self._released = threading.Event()

    def wait_arrived(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until at least `count` requests are (or were) held here."""
        with self._cond:
            return self._cond.wait_for(lambda: self._arrived >= count, timeout)

    def release(self) -> None:
        """Let all held and future requests through and detach the gate."""
        self._released.set()
        self._on_release(self)

    def block(self) -> None:
        """Called by the server for a read of this user: count the arrival, wait for release."""
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()
        self._released.wait()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


CLERK_LIMITS = {"production": 1000, "development": 100}  # requests per 10 s per instance (Clerk's docs)


class RateLimit:
    """Clerk's per-instance limit: fixed windows of ``window_s``; beyond ``limit``, 429 with Retry-After."""

    def __init__(self) -> None:
        self.limit: int | None = None  # None: no limit (the default)
        self.window_s = 10.0
        self.refused = 0  # 429s answered
        self.busiest = 0  # the most requests any window admitted
        self._lock = threading.Lock()
        self._window = -1
        self._count = 0

    def set(self, limit: str | int | None, window_s: float = 10.0) -> None:
        """``"production"`` (1,000 / 10 s), ``"development"`` (100 / 10 s), a number, or None (off)."""
        with self._lock:
            self.limit = CLERK_LIMITS[limit] if isinstance(limit, str) else limit
            self.window_s = window_s
            self.refused = self.busiest = self._count = 0
            self._window = -1

    def admit(self) -> Response | None:
        """None when this request is within the limit, else Clerk's 429."""
        if self.limit is None:
            return None
        now = time.time()
        window = int(now // self.window_s)
        with self._lock:
            if window != self._window:
                self._window, self._count = window, 0
            if self._count >= self.limit:
                self.refused += 1
                retry_after = max(1, math.ceil((window + 1) * self.window_s - now))
                return Response(429, dumps(error_payload(429)), {"Retry-After": str(retry_after)})
            self._count += 1
            self.busiest = max(self.busiest, self._count)
        return None


class Faults:
    """What the next requests should suffer; thread-safe, shared by all request threads."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s  # before any answer (injected failures included)
        self.answer_delay_s = 0.0  # after a real answer is computed: it may be stale when it lands
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        self._gates: dict[str, Gate] = {}
        self.rate_limit = RateLimit()

    def fail_next(self, n: int, status: int, retry_after: int | None, body: str | None) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, body) for _ in range(n))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def next_failure(self) -> Response | None:
        """The injected answer for this request, if one is queued (consumes it)."""
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        return None if failure is None else failure.response()

    def hold(self, user_id: str) -> Gate:
        with self._lock:
            gate = self._gates.get(user_id)
            if gate is None:
                gate = self._gates[user_id] = Gate(user_id, self._remove_gate)
            return gate

    def gate(self, user_id: str) -> Gate | None:
        with self._lock:
            return self._gates.get(user_id)

    def release_all(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.release()

    def _remove_gate(self, gate: Gate) -> None:
        with self._lock:
            if self._gates.get(gate.user_id) is gate:
                del self._gates[gate.user_id]
