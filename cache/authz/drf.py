"""Django REST framework: ``permission_classes = [OrgRolePermission.with_roles("org:admin", user=...)]``,
or ``[OrgPermission.with_permission("org:invoices:create", user=...)]``.

Importing this module needs Django and DRF (the ``django`` extra). `OrgRolePermission`
is a DRF ``BasePermission``: `OrgRolePermission.with_roles` makes one configured with
roles, an org URL kwarg (read from ``view.kwargs``: an org id or a slug), the app's user
callable (given the ``HttpRequest``, as for `cache.authz.django.require_org_role`) and a
sync lookup (DRF views are sync; by default the process-wide cache). The check itself is
`cache.authz.django.check_org_role`: the same memo on the ``HttpRequest``, so a DRF view
whose permissions check the org three times costs one lookup, and the view reads the
membership with `cache.authz.django.current_membership`. `OrgPermission` is its twin for a
Clerk permission (`OrgPermission.with_permission`, checked by
`cache.authz.django.check_org_permission`: Clerk's key, normalised as ``has()`` does, validated
when the class is made, system permissions included).

They compose with DRF's ``&``, ``|`` and ``~``. Only the decision is composable: a
member without an allowed role (or permission) and a non-member make `has_permission` return False, so
``A | B`` tries ``B`` and ``~A`` admits them (non-members too: say
``OrgRolePermission.with_roles(user=...) & ~OrgRolePermission.with_roles("org:admin", user=...)``
for "a member who is not an admin"). What is no decision is raised at once, whatever the
operators, as `OrgAccessDenied`: 401 (no signed-in user), 404 (the URL names no possible
org) and 503 (the lookup failed: fail closed, so ``~`` can never turn an outage into access).

Refusals are DRF's usual responses, with the project's body and codes: `OrgAccessDenied`
is an ``APIException`` whose detail is ``{"error": <code>, "message": <text>}`` (401
carries ``WWW-Authenticate: Bearer``), and a False answer is DRF's 403 with that same
detail as the permission's ``message``. Under an operator DRF reads the message of the
composite, which has none: such a 403 carries DRF's own ``{"detail": ...}``.

DRF turns any False permission into ``NotAuthenticated`` when the view has
authentication classes and none of them authenticated the request. The Clerk session is
the app's user callable, not a DRF authenticator, so set ``DEFAULT_AUTHENTICATION_CLASSES``
to ``[]`` (and ``UNAUTHENTICATED_USER`` to None, so DRF needs no ``django.contrib.auth``), as
``examples/django_app/settings.py`` does, or to an authenticator of your own that accepts
Clerk's session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rest_framework.exceptions import APIException
from rest_framework.permissions import BasePermission

from cache import get_cached_user_org_memberships
from cache.authz import Denied, Lookup, allowed_roles, permission_key
from cache.authz.django import UserCallable, check_org_permission, check_org_role

if TYPE_CHECKING:  # importing DRF's views reads Django's settings: only where they are in place
    from rest_framework.request import Request
    from rest_framework.views import APIView

__all__ = ["OrgAccessDenied", "OrgPermission", "OrgPermissionCheck", "OrgRoleCheck", "OrgRolePermission"]


class OrgAccessDenied(APIException):
    """A refusal as DRF answers its own: ``status_code`` is `cache.authz`'s, ``detail`` the
    project's ``{"error", "message"}``, and ``code`` the stable ``error`` string."""

    def __init__(self, denied: Denied) -> None:
        super().__init__(detail=denied.body(), code=denied.code)
        self.status_code = denied.status
        self.code = denied.code
        challenge = denied.headers().get("WWW-Authenticate")
        if challenge is not None:
            self.auth_header = challenge  # DRF's exception handler sends it as WWW-Authenticate


@dataclass(frozen=True)
class OrgRoleCheck:
    """What an `OrgRolePermission` class checks (its ``check``)."""

    roles: frozenset[str]
    org_kwarg: str
    user: UserCallable
    memberships: Lookup


@dataclass(frozen=True)
class OrgPermissionCheck:
    """What an `OrgPermission` class checks (its ``check``)."""

    permission: str
    org_kwarg: str
    user: UserCallable
    memberships: Lookup


class _OrgCheck(BasePermission):
    """What the two permission classes share: the URL's org, and a check's refusal as DRF's answer."""

    def _decided(self, check: Callable[[], object]) -> bool:
        """True, False with the project's 403 body, or a raised undecided refusal."""
        try:
            check()
        except Denied as denied:
            if denied.status != 403:
                raise OrgAccessDenied(denied) from denied  # undecided: no operator may make it access
            self.message = denied.body()  # DRF's 403 then carries the project's body
            self.code = denied.code
            return False
        return True

    def _url_org(self, view: APIView, org_kwarg: str) -> object:
        kwargs = getattr(view, "kwargs", None) or {}
        if org_kwarg not in kwargs:
            raise LookupError(f"the URL pattern has no <{org_kwarg}> ({type(self).__name__}'s org_kwarg)")
        return kwargs[org_kwarg]


class OrgRolePermission(_OrgCheck):
    """Allows a member of the URL's org whose role is one of the check's roles (none: any member).

    Make one with `with_roles`: this class itself has no check, and refuses to run.
    """

    check: ClassVar[OrgRoleCheck | None] = None

    @classmethod
    def with_roles(
        cls,
        *roles: str,
        org_kwarg: str = "org_id",
        user: UserCallable,
        memberships: Lookup = get_cached_user_org_memberships,
    ) -> type[OrgRolePermission]:
        """A permission class for ``roles``, to list in ``permission_classes`` or combine with ``&``, ``|``, ``~``."""
        check = OrgRoleCheck(allowed_roles(roles), org_kwarg, user, memberships)
        name = f"{cls.__name__}[{', '.join(sorted(check.roles)) or 'any member'}]"
        return type(name, (cls,), {"check": check, "__module__": cls.__module__})

    def has_permission(self, request: Request, view: APIView) -> bool:
        check = self.check
        if check is None:
            raise TypeError(f"{type(self).__name__} checks nothing: make one with OrgRolePermission.with_roles")
        org_ref = self._url_org(view, check.org_kwarg)
        return self._decided(
            lambda: check_org_role(request, org_ref, *check.roles, user=check.user, memberships=check.memberships),
        )


class OrgPermission(_OrgCheck):
    """Allows a member of the URL's org whose permissions include the check's permission.

    Make one with `with_permission`: this class itself has no check, and refuses to run.
    """

    check: ClassVar[OrgPermissionCheck | None] = None

    @classmethod
    def with_permission(
        cls,
        permission: str,
        *,
        org_kwarg: str = "org_id",
        user: UserCallable,
        memberships: Lookup = get_cached_user_org_memberships,
    ) -> type[OrgPermission]:
        """A permission class for Clerk's ``permission`` (``org:<feature>:<action>``; a malformed key
        raises ValueError here), to list in ``permission_classes`` or combine with ``&``, ``|``, ``~``."""
        check = OrgPermissionCheck(permission_key(permission), org_kwarg, user, memberships)
        return type(f"{cls.__name__}[{check.permission}]", (cls,), {"check": check, "__module__": cls.__module__})

    def has_permission(self, request: Request, view: APIView) -> bool:
        check = self.check
        if check is None:
            raise TypeError(f"{type(self).__name__} checks nothing: make one with OrgPermission.with_permission")
        org_ref = self._url_org(view, check.org_kwarg)
        return self._decided(
            lambda: check_org_permission(
                request, org_ref, check.permission, user=check.user, memberships=check.memberships
            ),
        )
