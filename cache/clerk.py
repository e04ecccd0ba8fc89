"""A small client for the parts of Clerk's Backend API this cache needs.

Why not Clerk's SDK: we need exact control of paging (Clerk's ``limit`` defaults to
10), timeouts (never infinite), 429 handling within a bounded budget, and error
translation into our own hierarchy at this boundary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import requests

from cache.budget import BudgetRules, ClerkBudget, Priority
from cache.contract import check_org_id, check_user_id
from cache.effects import HttpFailed, HttpGet, HttpResponse, Program, Sleep
from cache.errors import ClerkAuthError, ClerkError, ClerkNotFound, ClerkUnavailable
from cache.io import SyncIO
from cache.metrics import CLERK_REQUESTS, CLERK_RESPONSES

PAGE_LIMIT = 500  # Clerk's maximum page size
MAX_PAGES = 200  # 100,000 memberships: far past any real user; stops a runaway loop


class ClerkOptions(TypedDict, total=False):
    """`ClerkReads`'s tuning, as both clients take it (keyword arguments)."""

    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int
    retry_budget_s: float
    max_retry_after_s: float
    priority: Priority


class ClerkReads:
    """The reads this cache makes from Clerk, as programs (`cache.effects`): paging, retries, budget.

    Retries: a 429 waits for ``Retry-After`` (capped; the fleet's pause uses it whole), a
    connection error, timeout or 5xx backs off briefly; after ``max_attempts`` or past
    ``retry_budget_s`` it raises ClerkUnavailable. Timeouts are never infinite.
    `ClerkClient` runs these with ``requests``, `cache.aio.AsyncClerkClient` with ``httpx``.
    """

    def __init__(
        self,
        secret_key: str,
        api_url: str = "https://api.clerk.com",
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 4,
        retry_budget_s: float = 10.0,
        max_retry_after_s: float = 5.0,
        budget: BudgetRules | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> None:
        self._base = api_url.rstrip("/") + "/v1"
        self._auth = (("Authorization", f"Bearer {secret_key}"), ("Accept", "application/json"))
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_attempts = max_attempts
        self._retry_budget_s = retry_budget_s
        self._max_retry_after_s = max_retry_after_s
        self.budget = budget
        self.priority = priority

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}({self._base!r})"

    def user_memberships_program(self, user_id: str) -> Program[list[dict[str, Any]]]:
        """All of a user's organization memberships, every page."""
        return self._all_pages_program(f"/users/{check_user_id(user_id)}/organization_memberships")

    def organization_program(self, org_id: str) -> Program[dict[str, Any]]:
        body = yield from self._get_program(f"/organizations/{check_org_id(org_id)}", ())
        if not isinstance(body, dict):
            raise ClerkUnavailable("Clerk answered an organization that is not a JSON object")
        return body

    def roles_program(self) -> Program[list[dict[str, Any]]]:
        """Every role of the instance with its permissions (``GET /organization_roles``, every page):
        the one read a role patch needs, however many users hold the role."""
        return self._all_pages_program("/organization_roles")

    def _all_pages_program(self, path: str) -> Program[list[dict[str, Any]]]:
        """Page with the largest limit until ``total_count`` is reached.

        Memberships are de-duplicated by id, since a concurrent change in Clerk can
        shift offsets between pages.
        """
        seen: dict[str, dict[str, Any]] = {}
        offset = 0
        for _ in range(MAX_PAGES):
            body = yield from self._get_program(path, (("limit", PAGE_LIMIT), ("offset", offset)))
            if not isinstance(body, dict):
                raise ClerkUnavailable("Clerk answered a list that is not a JSON object")
            data, total = body.get("data"), body.get("total_count")
            if not isinstance(data, list) or not isinstance(total, int) or isinstance(total, bool):
                raise ClerkUnavailable("Clerk answered a list without data/total_count")
            for item in data:
                if not isinstance(item, dict):
                    raise ClerkUnavailable("Clerk answered a list element that is not an object")
                seen[str(item.get("id", len(seen)))] = item
            offset += len(data)
            if not data or offset >= total:
                return list(seen.values())
        raise ClerkUnavailable(f"Clerk list did not end after {MAX_PAGES} pages")

    def _get_program(self, path: str, params: tuple[tuple[str, str | int], ...]) -> Program[Any]:
        deadline = time.monotonic() + self._retry_budget_s
        request = HttpGet(self._base + path, params, self._auth, self._connect_timeout_s, self._read_timeout_s)
        last: ClerkUnavailable | None = None
        for attempt in range(1, self._max_attempts + 1):
            if self.budget is not None:
                yield from self.budget.take_program(self.priority)  # the fleet's budget (or raises ClerkRateLimited)
            started = time.perf_counter()
            try:
                response: HttpResponse = yield request
            except HttpFailed as exc:
                CLERK_REQUESTS.observe(time.perf_counter() - started)
                CLERK_RESPONSES.labels("error").inc()
                last = ClerkUnavailable(f"Clerk unreachable: {exc.kind}")
                last.__cause__ = exc
                wait = 0.05 * 2**attempt
            else:
                CLERK_REQUESTS.observe(time.perf_counter() - started)
                CLERK_RESPONSES.labels(str(response.status)).inc()
                outcome = self._interpret(response)
                if not isinstance(outcome, _Retry):
                    return outcome
                last, wait = outcome.error, outcome.wait
                if response.status == 429 and self.budget is not None:
                    # every process waits, this one in the budget's take
                    yield from self.budget.pause_program(_retry_after(response))
                    wait = 0.0
            if attempt == self._max_attempts or time.monotonic() + wait > deadline:
                break
            if wait > 0:
                yield Sleep(wait)
        assert last is not None
        raise last

    def _interpret(self, response: HttpResponse) -> Any:
        """The parsed body, a `_Retry`, or a raised non-retryable ClerkError."""
        status = response.status
        if status == 200:
            try:
                return json.loads(response.body)
            except ValueError:
                return _Retry(ClerkUnavailable("Clerk answered a body that is not JSON", status), 0.1)
        if status == 429:
            wait = min(_retry_after(response), self._max_retry_after_s)  # this process's own wait, capped
            return _Retry(ClerkUnavailable("Clerk rate limit (429) persisted", status), wait)
        if status >= 500:
            return _Retry(ClerkUnavailable(f"Clerk answered {status}", status), 0.2)
        if status in (401, 403):
            raise ClerkAuthError(
                f"Clerk rejected CLERK_SECRET_KEY ({status}): check that it is the secret key of this instance",
                status,
            )
        if status == 404:
            raise ClerkNotFound("Clerk does not know this resource (404)", status)
        raise ClerkError(f"Clerk answered {status}: {_clerk_message(response)}", status)


class ClerkClient(ClerkReads):
    """`ClerkReads` over one reused ``requests.Session`` (injectable: tests, custom transports).

    Its own runner serves direct calls (the worker, the CLI); in a lookup, the cache's runner
    carries out the same programs over this session.
    """

    def __init__(
        self,
        secret_key: str,
        api_url: str = "https://api.clerk.com",
        *,
        session: requests.Session | None = None,
        budget: ClerkBudget | None = None,
        **options: Unpack[ClerkOptions],
    ) -> None:
        super().__init__(secret_key, api_url, budget=budget, **options)
        self.session = session or requests.Session()
        self._io = SyncIO(budget.redis if budget else None, http=self.session)

    def list_user_memberships(self, user_id: str) -> list[dict[str, Any]]:
        """All of a user's organization memberships, every page."""
        return self._io.run(self.user_memberships_program(user_id))

    def get_organization(self, org_id: str) -> dict[str, Any]:
        return self._io.run(self.organization_program(org_id))

    def list_roles(self) -> list[dict[str, Any]]:
        """Every role of the instance, with its permissions."""
        return self._io.run(self.roles_program())


@dataclass(frozen=True)
class _Retry:
    """A retryable failure: the error to raise if no attempt is left, and the wait before the next."""

    error: ClerkUnavailable
    wait: float


def _retry_after(response: HttpResponse) -> float:
    """Clerk's Retry-After in seconds (1 when missing or unreadable)."""
    try:
        return max(float(response.retry_after or "1"), 0.0)
    except ValueError:
        return 1.0


def _clerk_message(response: HttpResponse) -> str:
    """The first error message of Clerk's error JSON, for a readable exception."""
    try:
        errors = json.loads(response.body).get("errors") or []
        return str(errors[0].get("message", ""))[:200]
    except (ValueError, AttributeError, IndexError, TypeError):
        return "unreadable error body"
