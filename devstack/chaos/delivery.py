"""Webhook deliveries as Svix makes them: signed, at least once, sometimes twice or late, retried on failure.

Each change's envelope is signed once (one ``svix-id``) and sent as one or two copies, some held back
for a while (so they land out of order), each copy to a web process chosen at random per attempt (the
load balancer's choice). A copy that gets no 2xx (an error status, a refused connection, a timeout) is
retried on Svix's schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), divided by ``compression``.
Compressed, the whole schedule spans about 100 s, while the faults come at their real rate: a copy whose
eight attempts all met a failover would be "lost" to an outage of seconds, which Svix's 28 hours outlast.
So while faults run (until `quiet`) a copy that has used its schedule goes on at its last interval; once
the faults stop, a copy that runs out of retries is lost, and the oracle reports its change as never
acknowledged.
Every attempt is written to the history; ``acked`` keeps the first 2xx time of each change.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from devstack.chaos.history import History
from devstack.chaos.workload import Change
from devstack.signing import new_message_id, signed_event

SVIX_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 36000)
TIMEOUT_S = 5.0  # Svix waits 15 s; compressed too, but longer than the intake's longest WAIT


@dataclass
class Copy:
    seq: int
    msg_id: str
    body: str
    headers: dict[str, str]
    copy: int
    attempt: int = 0


class Deliverer:
    """Sender threads over a queue of due attempts."""

    def __init__(
        self,
        secret: str,
        targets: Callable[[], list[str]],
        rng: random.Random,
        history: History,
        *,
        compression: float = 1000.0,
        senders: int = 6,
    ) -> None:
        self.secret = secret
        self.targets = targets
        self.rng = rng  # used only by `send`, from the workload's thread: the choices follow the seed
        self.history = history
        self.schedule_s = [s / compression for s in SVIX_SCHEDULE_S]
        self.acked: dict[int, float] = {}
        self.lost: set[int] = set()
        self.sent: set[int] = set()
        self._due: list[tuple[float, int, Copy]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._in_flight = 0
        self._faults_running = True
        self._threads = [threading.Thread(target=self._run, name=f"svix-{i}", daemon=True) for i in range(senders)]

    def start(self) -> Deliverer:
        for thread in self._threads:
            thread.start()
        return self

    def send(self, change: Change) -> None:
        """Queue the change's deliveries: one copy, at once or late; sometimes a second copy."""
        body, headers = signed_event(self.secret, change.envelope, msg_id=new_message_id())
        now = time.time()
        copies = 2 if self.rng.random() < 0.15 else 1
        with self._cond:
            self.sent.add(change.seq)
            for n in range(copies):
                late = self.rng.random() < 0.15 or n > 0
                delay = self.rng.uniform(0.2, 3.0) if late else 0.0
                self._push(now + delay, Copy(change.seq, headers["svix-id"], body, headers, n))

    def quiet(self) -> None:
        """The faults have stopped: from now on a copy that runs out of retries is lost."""
        with self._cond:
            self._faults_running = False

    def outstanding(self) -> int:
        """Changes neither acknowledged nor lost yet."""
        with self._cond:
            return len(self.sent - set(self.acked) - self.lost)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(TIMEOUT_S + 5)

    def _push(self, due: float, copy: Copy) -> None:
        heapq.heappush(self._due, (due, next(self._order), copy))
        self._cond.notify()

    def _next(self) -> Copy | None:
        with self._cond:
            while not self._stop.is_set():
                now = time.time()
                if self._due and self._due[0][0] <= now:
                    copy = heapq.heappop(self._due)[2]
                    self._in_flight += 1
                    return copy
                self._cond.wait(min(0.5, self._due[0][0] - now) if self._due else 0.5)
            return None

    def _run(self) -> None:
        session = requests.Session()
        while (copy := self._next()) is not None:
            try:
                self._attempt(session, copy)
            finally:
                with self._cond:
                    self._in_flight -= 1

    def _attempt(self, session: requests.Session, copy: Copy) -> None:
        url = self.rng_free_choice(self.targets()) + "/webhooks/clerk"
        t0 = time.time()
        error: str | None = None
        try:
            status = session.post(url, data=copy.body, headers=copy.headers, timeout=TIMEOUT_S).status_code
        except requests.RequestException as exc:
            status, error = 0, type(exc).__name__
        t1 = time.time()
        self.history.write(
            "delivery", seq=copy.seq, msg=copy.msg_id, copy=copy.copy, attempt=copy.attempt, url=url,
            t0=t0, t1=t1, status=status, error=error,
        )  # fmt: skip
        with self._cond:
            if 200 <= status < 300:
                self.acked.setdefault(copy.seq, t1)
                return
            if copy.attempt >= len(self.schedule_s) and not self._faults_running:
                if copy.seq not in self.acked:
                    self.lost.add(copy.seq)
                return
            delay = self.schedule_s[min(copy.attempt, len(self.schedule_s) - 1)]
            copy.attempt += 1
            self._push(t1 + delay, copy)

    @staticmethod
    def rng_free_choice(urls: list[str]) -> str:
        """The target of one attempt: random, but not from the seeded generator (threads race for it)."""
        return random.choice(urls)
