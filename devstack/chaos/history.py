"""The history: JSON lines, one per event, appended by many threads and processes at once.

Each line is written with one ``write(2)`` on an ``O_APPEND`` descriptor, so a process killed by
SIGKILL leaves whole lines behind, never half of one, and lines of several writers never interleave.
Times are ``time.time()`` (one machine, one clock for every process).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class History:
    """Append-only JSON lines in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def write(self, kind: str, /, **fields: Any) -> None:
        line = (json.dumps({"k": kind, **fields}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole line of ``path`` (none if it does not exist)."""
    if not path.exists():
        return
    with path.open() as lines:
        for line in lines:
            if line.endswith("\n"):
                yield json.loads(line)
