"""Clerk's JSON, in one place: org and membership objects, webhook envelopes, error payloads.

The code under test parses exactly these shapes, so they follow Clerk's documented
fields (see /work/shared/reference/clerk-and-svix.md), not the model's layout.
"""

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from devstack.clerk_standin.records import Membership, Org, User

JSON = dict[str, Any]

INSTANCE_ID = "ins_standin"

# Per-status defaults, so an injected failure carries the body Clerk would send.
_DEFAULT_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "Bad request", "The request was malformed."),
    401: (
        "authentication_invalid",
        "Invalid authentication",
        "Unable to authenticate the request, you need to supply an active API key",
    ),
    403: ("authorization_invalid", "Unauthorized request", "You are not authorized."),
    404: ("resource_not_found", "not found", "Resource not found"),
    405: ("method_not_allowed", "Method not allowed", "This method is not supported here."),
    422: ("form_param_value_invalid", "is invalid", "A parameter has an invalid value."),
    429: (
        "too_many_requests",
        "Too Many Requests",
        "Too many requests, please try again later.",
    ),
}
_INTERNAL_ERROR = (
    "internal_clerk_error",
    "Oops, an unexpected error occurred",
    "There was an internal error on our servers. We've been notified.",
)


@dataclass
class Response:
    """One HTTP answer: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def now_ms() -> int:
    return int(time.time() * 1000)


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_payload(
    status: int,
    code: str | None = None,
    message: str | None = None,
    long_message: str | None = None,
    meta: JSON | None = None,
) -> JSON:
    """Clerk's error JSON; defaults per status so injected failures look real."""
    d_code, d_msg, d_long = _DEFAULT_ERRORS.get(status, _INTERNAL_ERROR)
    err: JSON = {"message": message or d_msg, "long_message": long_message or d_long, "code": code or d_code}
    if meta is not None:
        err["meta"] = meta
    return {"errors": [err], "clerk_trace_id": secrets.token_hex(16)}


class StandInError(Exception):
    """A request or mutation Clerk itself would refuse; carries the status and Clerk's error fields."""

    def __init__(self, status: int, code: str, message: str, long_message: str, meta: JSON | None = None) -> None:
        super().__init__(long_message)
        self.status = status
        self.code = code
        self.message = message
        self.long_message = long_message
        self.meta = meta

    def response(self) -> Response:
        payload = error_payload(self.status, self.code, self.message, self.long_message, self.meta)
        return Response(self.status, dumps(payload))


class StandInNotFound(StandInError, LookupError):
    """Unknown (or deleted) org, user or membership."""

    def __init__(self, long_message: str) -> None:
        super().__init__(404, "resource_not_found", "not found", long_message)


class StandInConflict(StandInError, ValueError):
    """The mutation clashes with existing state (duplicate id, slug or membership)."""

    def __init__(self, code: str, message: str, long_message: str) -> None:
        super().__init__(400 if code.startswith("already") else 422, code, message, long_message)


def invalid_param(name: str, long_message: str) -> StandInError:
    """A 422 naming the parameter in `meta.param_name`, as Clerk does."""
    return StandInError(422, "form_param_value_invalid", "is invalid", long_message, {"param_name": name})


def envelope(event_type: str, data: JSON) -> JSON:
    """The webhook event Clerk would deliver for a change."""
    return {
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": now_ms(),
        "instance_id": INSTANCE_ID,
        "event_attributes": {
            "http_request": {"client_ip": "127.0.0.1", "user_agent": "clerk-standin"},
        },
    }


def _image_url(object_id: str) -> str:
    return f"https://img.clerk.com/standin/{object_id}"


def org_json(org: Org, members_count: int) -> JSON:
    return {
        "object": "organization",
        "id": org.id,
        "name": org.name,
        "slug": org.slug,
        "image_url": org.image_url or _image_url(org.id),
        "has_image": org.image_url is not None,
        "members_count": members_count,
        "max_allowed_memberships": 0,
        "admin_delete_enabled": True,
        "public_metadata": {},
        "private_metadata": {},
        "created_at": org.created_at,
        "updated_at": org.updated_at,
    }


def deleted_org_json(org: Org) -> JSON:
    return {"object": "organization", "id": org.id, "deleted": True, "slug": org.slug}


def deleted_user_json(user_id: str) -> JSON:
    return {"object": "user", "id": user_id, "deleted": True}


def membership_json(m: Membership, organization: JSON, user: User, role_name: str, permissions: list[str]) -> JSON:
    """An organization_membership embedding the org and the role's permissions as they are now (Clerk reads both
    live)."""
    return {
        "object": "organization_membership",
        "id": m.id,
        "role": m.role,
        "role_name": role_name,
        "permissions": permissions,
        "public_metadata": {},
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "organization": organization,
        "public_user_data": {
            "user_id": user.id,
            "identifier": user.identifier,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "image_url": _image_url(user.id),
            "has_image": False,
        },
    }
