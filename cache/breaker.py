"""A minimal circuit breaker for the cache's Redis calls.

Why: while Redis is down every call would pay a connect timeout before falling
back to Clerk. Once a call fails, the breaker skips Redis for ``cooldown_s``;
then exactly one caller probes, and success closes it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RedisBreaker:
    def __init__(self, cooldown_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._probe_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._open

    def allows(self) -> bool:
        """True if this caller should try Redis (closed, or the one probe after a cooldown)."""
        if not self._open:
            return True
        with self._lock:
            now = self._clock()
            if now >= self._probe_at:
                self._probe_at = now + self._cooldown_s  # others keep skipping while we probe
                return True
            return False

    def record_failure(self) -> None:
        with self._lock:
            self._open = True
            self._probe_at = self._clock() + self._cooldown_s

    def record_success(self) -> None:
        if self._open:
            with self._lock:
                self._open = False
