"""The whoami views tests/door_apps.py adds to the Django project: unguarded views asking
`current_membership`, one per view kind, answering ``{"membership": null}`` when it raises. Imported
only once the project's settings are in place (DRF reads them when its views are defined)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views import View
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache.authz.django import current_membership
from examples.django_app import urls


def membership(request: HttpRequest) -> dict[str, str | None]:
    try:
        return {"membership": current_membership(request).organization_id}
    except RuntimeError:
        return {"membership": None}


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(membership(request))


class WhoAmI(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(membership(request))


async def whoami_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse(membership(request))


class WhoAmIAPI(APIView):
    permission_classes = ()

    def get(self, request: Request) -> Response:
        return Response(membership(request))


def add_whoami() -> None:
    """Add the views to the project's URLs (before its first request: Django then resolves them)."""
    urls.urlpatterns += [
        path("whoami", whoami),
        path("cbv/whoami", WhoAmI.as_view()),
        path("async/whoami", whoami_async),
        path("api/whoami", WhoAmIAPI.as_view()),
    ]
