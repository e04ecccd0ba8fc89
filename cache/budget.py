"""One Clerk rate-limit budget in Redis, shared by every process: interactive lookups first.

Clerk limits an instance to 1,000 Backend API requests per 10 s in production (100 on a
development instance) and answers 429 beyond; every process of ours uses the same key.
Before each request a process takes a slot from one moving window in Redis
(`cache/lua/clerk_budget.lua`). Interactive calls (a user is waiting) may use the whole
budget. Re-warming (the worker, the CLI's ``warm``) gets what the interactive calls of the
last window leave, less a headroom (the reserve, or a quarter of those calls if more), and
gets it as a rate spread over the window, never as a burst at its start: a burst would fill
the window, and interactive calls beyond the reserve would wait until it aged out, most of a
window later. Paced, a slot frees every window/share, and while an interactive caller waits
re-warming takes none. A 429 anywhere pauses every process until ``Retry-After``. An
interactive caller that cannot get a slot within ``CLERK_INTERACTIVE_WAIT_MS`` gets
`ClerkRateLimited` (nothing is stored; the app decides, usually to deny). If Redis cannot be
reached the budget is not enforced (Clerk's own 429s and our retries still apply).

Why not the ``limits`` library: its moving window has no notion of priority, reserve or
a fleet-wide pause, and two of its limiters could not be taken atomically.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from enum import Enum

from redis import Redis
from redis.exceptions import RedisError

from cache.config import Settings
from cache.contract import CLERK_BUDGET_KEY, CLERK_PAUSED_UNTIL_KEY
from cache.effects import Program, Sleep
from cache.errors import ClerkRateLimited as ClerkRateLimited  # re-exported: raised here
from cache.io import SyncIO
from cache.metrics import BUDGET, BUDGET_WAIT, PAUSES
from cache.protocol import clerk_budget_call, clerk_pause_call


class Priority(Enum):
    INTERACTIVE = "i"  # a user is waiting for this answer
    REWARM = "r"  # nobody is: the worker's refreshes, the CLI's warm


@dataclass(frozen=True)
class BudgetPolicy:
    limit: int = 800  # requests per window: 80 % of Clerk's production limit
    window_s: float = 10.0
    reserve: int = 16  # the least headroom re-warming leaves to interactive calls (more when they use more)
    interactive_wait_s: float = 2.0
    rewarm_wait_s: float = 600.0  # re-warming waits as long as it takes (its job slices its work)

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetPolicy:
        limit = settings.clerk_rate_limit
        reserve = settings.clerk_rate_limit_reserve if settings.clerk_rate_limit_reserve is not None else limit // 50
        return cls(
            limit=limit,
            window_s=settings.clerk_rate_window_seconds,
            reserve=min(reserve, limit - 1),
            interactive_wait_s=settings.clerk_interactive_wait_ms / 1000,
        )


class BudgetRules:
    """The budget's decisions as programs (`cache.effects`), shared by the sync and async clients.

    Holds the policy and this process's one piece of state: after a Redis error the budget
    is skipped for a second, so Clerk calls do not each pay Redis's timeout.
    """

    def __init__(self, policy: BudgetPolicy | None = None) -> None:
        self.policy = policy or BudgetPolicy()
        self._unenforced_until = 0.0

    def take_program(self, priority: Priority) -> Program[None]:
        """Return once this process may send one request to Clerk (raises ClerkRateLimited, see above)."""
        policy = self.policy
        started = time.monotonic()
        if started < self._unenforced_until:
            BUDGET.labels(priority.name.lower(), "unenforced").inc()
            return
        deadline = started + (policy.interactive_wait_s if priority is Priority.INTERACTIVE else policy.rewarm_wait_s)
        # a little longer than the window: a request granted near a window's end reaches Clerk a moment later
        window_ms = int(policy.window_s * 1000 * 1.01) + 20
        waited = False
        while True:
            try:
                granted, wait_ms = yield clerk_budget_call(priority.value, policy.limit, window_ms, policy.reserve)
            except RedisError:
                self._unenforced_until = time.monotonic() + 1.0  # do not pay Redis's timeout on every Clerk call
                BUDGET.labels(priority.name.lower(), "unenforced").inc()
                return  # no shared budget without Redis: Clerk's own 429s still apply
            if granted:
                if wait_ms:  # re-warming's slot, booked for a moment ahead: its pace
                    waited = True
                    yield Sleep(int(wait_ms) / 1000)
                BUDGET.labels(priority.name.lower(), "waited" if waited else "granted").inc()
                if waited:
                    BUDGET_WAIT.labels(priority.name.lower()).observe(time.monotonic() - started)
                return
            waited = True
            pause_s = int(wait_ms) / 1000
            if time.monotonic() + pause_s > deadline:
                BUDGET.labels(priority.name.lower(), "refused").inc()
                raise ClerkRateLimited(f"no Clerk budget within {policy.interactive_wait_s:g} s (rate limit)")
            yield Sleep(min(pause_s, 0.25))

    def pause_program(self, seconds: float) -> Program[None]:
        """Clerk answered 429: nobody calls it for ``seconds`` (its Retry-After)."""
        PAUSES.inc()
        with contextlib.suppress(RedisError):  # no fleet pause without Redis: this process still backs off
            yield clerk_pause_call(max(1, int(seconds * 1000)))


class ClerkBudget(BudgetRules):
    """The budget over a blocking Redis client; see the module docstring for the rules."""

    def __init__(self, redis: Redis, policy: BudgetPolicy | None = None) -> None:
        super().__init__(policy)
        self.redis = redis
        self._io = SyncIO(redis)

    def take(self, priority: Priority) -> None:
        """Block until this process may send one request to Clerk (`take_program`)."""
        self._io.run(self.take_program(priority))

    def pause(self, seconds: float) -> None:
        """Pause every process for ``seconds`` (`pause_program`)."""
        self._io.run(self.pause_program(seconds))

    def usage(self) -> dict[str, float]:
        """What the window holds now, for `clerk-org-cache stats`."""
        window_ms = int(self.policy.window_s * 1000)
        now_s, now_us = self.redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        used = int(self.redis.zcount(CLERK_BUDGET_KEY, now_ms - window_ms, "+inf"))
        paused_until = int(self.redis.get(CLERK_PAUSED_UNTIL_KEY) or 0)
        return {
            "limit_per_window": self.policy.limit,
            "window_s": self.policy.window_s,
            "used_in_window": used,
            "paused_for_s": max(0.0, (paused_until - now_ms) / 1000),
        }
