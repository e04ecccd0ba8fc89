"""Django: the time `cache.authz.django`'s check adds to a request, against the same view without it, in
the same run.

In-process, through Django's own test clients (a whole request through Django's handler, no socket): the
sync view with ``Client``, the async view with ``AsyncClient`` on one event loop. Hit path, cache warm.
The three calls alternate call by call:

    plain     GET of a view that answers JSON
    checked   GET of the same view under ``@require_org_role`` (the user id read from a header, so the
              figure is the check's alone: verifying the session token is the app's, with or without it)
    lookup    the lookup the check makes, called directly: its own hit cost (sync: MembershipCache,
              async: cache.aio's AsyncMembershipCache)

``added`` is checked - plain (p50s); the goal is ``added`` ≤ 1.3x the lookup's p50.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from bench.async_api import async_cache
from bench.stats import percentile
from cache import MembershipCache

GOAL = 1.3


def _configure() -> None:
    """Django for this process: no database, no middleware, the URLs each run sets (`_serve`)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench-only",
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            DATABASES={},
            ROOT_URLCONF=types.ModuleType("bench_django_urls"),
        )
        django.setup()


def _serve(*patterns: Any) -> None:
    from django.conf import settings
    from django.urls import clear_url_caches

    module = types.ModuleType("bench_django_urls")
    module.urlpatterns = list(patterns)  # type: ignore[attr-defined]
    settings.ROOT_URLCONF = module
    clear_url_caches()


def _user(request: Any) -> str | None:
    header: str | None = request.META.get("HTTP_X_USER")  # not request.headers: that parses every header
    return header


def _summary(repetitions: list[dict[str, list[float]]]) -> dict[str, float]:
    """Per call name, the median over repetitions of each repetition's p50 and p99 (µs), and what the check adds."""
    result: dict[str, float] = {}
    for name in repetitions[0]:
        for q in (50, 99):
            result[f"{name}_p{q}_us"] = statistics.median(percentile(rep[name], q) for rep in repetitions)
    result["added_p50_us"] = result["checked_p50_us"] - result["plain_p50_us"]
    result["ratio_to_lookup"] = result["added_p50_us"] / result["lookup_p50_us"]
    return result


def sync_check(cache: MembershipCache, user_id: str, org_id: str, n: int, reps: int) -> dict[str, float]:
    """The sync view through ``Client``: plain, checked, and the lookup itself."""
    _configure()
    from django.http import JsonResponse
    from django.test import Client
    from django.urls import path

    from cache.authz.django import current_membership, require_org_role

    def plain(request: Any, org_id: str) -> JsonResponse:
        return JsonResponse({"org": org_id})

    @require_org_role(user=_user, memberships=cache.get_memberships)
    def checked(request: Any, org_id: str) -> JsonResponse:
        return JsonResponse({"org": current_membership(request).organization_id})

    _serve(path("plain/<str:org_id>", plain), path("checked/<str:org_id>", checked))
    client, headers = Client(), {"X-User": user_id}
    calls: dict[str, Callable[[], object]] = {
        "plain": lambda: client.get(f"/plain/{org_id}", headers=headers),
        "checked": lambda: client.get(f"/checked/{org_id}", headers=headers),
        "lookup": lambda: cache.get_memberships(user_id),
    }
    assert client.get(f"/checked/{org_id}", headers=headers).status_code == 200  # warm, and allowed
    repetitions: list[dict[str, list[float]]] = []
    for _ in range(reps):
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(n):
            for name, call in calls.items():
                started = time.perf_counter_ns()
                call()
                samples[name].append((time.perf_counter_ns() - started) / 1000)
        repetitions.append(samples)
    return _summary(repetitions)


async def _async_check(
    redis_url: str, clerk_url: str, user_id: str, org_id: str, n: int, reps: int
) -> dict[str, float]:
    from django.http import JsonResponse
    from django.test import AsyncClient
    from django.urls import path

    from cache.authz.django import current_membership, require_org_role

    cache = async_cache(redis_url, clerk_url)

    async def plain(request: Any, org_id: str) -> JsonResponse:
        return JsonResponse({"org": org_id})

    @require_org_role(user=_user, memberships=cache.get_memberships)
    async def checked(request: Any, org_id: str) -> JsonResponse:
        return JsonResponse({"org": current_membership(request).organization_id})

    _serve(path("plain/<str:org_id>", plain), path("checked/<str:org_id>", checked))
    client, headers = AsyncClient(), {"X-User": user_id}
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "plain": lambda: client.get(f"/plain/{org_id}", headers=headers),
        "checked": lambda: client.get(f"/checked/{org_id}", headers=headers),
        "lookup": lambda: cache.get_memberships(user_id),
    }
    assert (await client.get(f"/checked/{org_id}", headers=headers)).status_code == 200  # warm, and allowed
    repetitions: list[dict[str, list[float]]] = []
    for _ in range(reps):
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(n):
            for name, call in calls.items():
                started = time.perf_counter_ns()
                await call()
                samples[name].append((time.perf_counter_ns() - started) / 1000)
        repetitions.append(samples)
    await cache.aclose()
    return _summary(repetitions)


def async_check(redis_url: str, clerk_url: str, user_id: str, org_id: str, n: int, reps: int) -> dict[str, float]:
    """The async view through ``AsyncClient``, on one event loop: plain, checked, and the async lookup itself."""
    _configure()
    return asyncio.run(_async_check(redis_url, clerk_url, user_id, org_id, n, reps))


def django_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    for kind in ("sync", "async"):
        d = r["django_check"][kind]
        lines.append(
            f"django {kind} view, check added: {d['added_p50_us']:.0f} µs p50 (plain view {d['plain_p50_us']:.0f} µs, "
            f"checked {d['checked_p50_us']:.0f} µs) vs the lookup's hit {d['lookup_p50_us']:.0f} µs: "
            f"{d['ratio_to_lookup']:.2f}x (goal ≤ {GOAL}x)"
        )
    return lines
