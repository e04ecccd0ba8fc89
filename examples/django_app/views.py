"""The views: the same three pages in each of Django's view kinds, every check made by cache.authz.

The sync checks look up in the process-wide cache (``cache.get_cached_user_org_memberships``), the
async ones in this event loop's `cache.aio` cache; both are built from the environment. Each page acts
on the membership the check resolved, never on the URL's <org_id>, which may be a slug.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache import Membership, default_cache
from cache.authz.django import current_membership, require_org_permission, require_org_role
from cache.authz.drf import OrgPermission, OrgRolePermission
from examples.clerk_session import SessionVerifier

sessions = SessionVerifier.from_env()  # CLERK_JWT_KEY, CLERK_AUTHORIZED_PARTIES, ...
default_cache()  # built now from REDIS_URL, CLERK_SECRET_KEY, ...: a bad setting is refused at start-up


def signed_in_user(request: HttpRequest) -> str | None:
    return sessions.user_id(request.headers.get("Authorization"), request.COOKIES.get("__session"))


member = require_org_role(user=signed_in_user)
admin = require_org_role("org:admin", user=signed_in_user)
invoicer = require_org_permission("org:invoices:create", user=signed_in_user)


def dashboard_of(membership: Membership) -> dict[str, Any]:
    return {"org": membership.organization_name, "role": membership.role}


def settings_of(membership: Membership) -> dict[str, Any]:
    return {"org_id": membership.organization_id, "slug": membership.organization_slug}


def new_invoice_of(membership: Membership) -> dict[str, Any]:
    return {"org_id": membership.organization_id, "role": membership.role}


# -- function views


@member
def dashboard(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(dashboard_of(current_membership(request)))


@admin
def settings(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(settings_of(current_membership(request)))


@invoicer
def new_invoice(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(new_invoice_of(current_membership(request)))


# -- class-based views: the decorator through method_decorator


@method_decorator(member, name="dispatch")
class DashboardView(View):
    def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
        return JsonResponse(dashboard_of(current_membership(request)))


@method_decorator(admin, name="dispatch")
class SettingsView(View):
    def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
        return JsonResponse(settings_of(current_membership(request)))


@method_decorator(invoicer, name="dispatch")
class NewInvoiceView(View):
    def get(self, request: HttpRequest, org_id: str) -> JsonResponse:
        return JsonResponse(new_invoice_of(current_membership(request)))


# -- async views: the same decorator, which then awaits cache.aio and never blocks the loop


@member
async def dashboard_async(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(dashboard_of(current_membership(request)))


@admin
async def settings_async(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(settings_of(current_membership(request)))


@invoicer
async def new_invoice_async(request: HttpRequest, org_id: str) -> JsonResponse:
    return JsonResponse(new_invoice_of(current_membership(request)))


# -- Django REST framework: the permission class


class DashboardAPI(APIView):
    permission_classes = (OrgRolePermission.with_roles(user=signed_in_user),)

    def get(self, request: Request, org_id: str) -> Response:
        return Response(dashboard_of(current_membership(request)))


class SettingsAPI(APIView):
    permission_classes = (OrgRolePermission.with_roles("org:admin", user=signed_in_user),)

    def get(self, request: Request, org_id: str) -> Response:
        return Response(settings_of(current_membership(request)))


class NewInvoiceAPI(APIView):
    permission_classes = (OrgPermission.with_permission("org:invoices:create", user=signed_in_user),)

    def get(self, request: Request, org_id: str) -> Response:
        return Response(new_invoice_of(current_membership(request)))
