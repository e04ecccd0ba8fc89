"""What each Clerk event means for the cache.

Events are treated as triggers, not deltas: Svix delivers at least once and in no
guaranteed order, so we never apply an event's payload. We only invalidate the
keys it could affect and let the worker re-read Clerk, the source of truth.
"""

from __future__ import annotations

import json
from typing import Any

from cache.contract import check_permission_id, check_permission_key, check_role_id
from cache.errors import InvalidId
from cache.protocol import (
    ANY_ROLE,
    Target,
    drop_org,
    drop_user,
    refresh_org,
    refresh_user,
    repatch_role,
    reread_org_members,
)
from webhook.errors import WebhookRejected

MEMBERSHIP_EVENTS = frozenset(
    {"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted"}
)


ROLE_EVENTS = frozenset({"role.created", "role.updated", "role.deleted"})
PERMISSION_EVENTS = frozenset({"permission.created", "permission.updated", "permission.deleted"})

KNOWN_EVENTS = (
    MEMBERSHIP_EVENTS
    | ROLE_EVENTS
    | PERMISSION_EVENTS
    | {
        "organizationInvitation.accepted",
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "user.created",
        "user.updated",
        "user.deleted",
    }
)


def metric_type(event_type: str) -> str:
    """The event type as a metric label: Clerk's known types, else 'other' (bounded cardinality)."""
    return event_type if event_type in KNOWN_EVENTS or event_type == "unknown" else "other"


def parse_event(body: str) -> dict[str, Any]:
    """The event envelope, after its signature was verified."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "invalid_json", "body is not JSON (or nested too deeply)") from None
    if not isinstance(event, dict):
        raise WebhookRejected(400, "invalid_event", "event is not a JSON object")
    if not isinstance(event.get("type"), str):
        raise WebhookRejected(400, "invalid_event", "event has no string 'type'")
    if not isinstance(event.get("data"), dict):
        raise WebhookRejected(400, "invalid_event", "event has no object 'data'")
    return event


def targets_for(event: dict[str, Any]) -> list[Target] | None:
    """The keys this event invalidates, or None for an event type we ignore."""
    kind: str = event["type"]
    data: dict[str, Any] = event["data"]
    try:
        if kind in MEMBERSHIP_EVENTS:
            user_data = data.get("public_user_data")
            user_id = user_data.get("user_id") if isinstance(user_data, dict) else None
            if user_id is None:
                # no user named: re-read every cached member of the org rather than lose the change
                org = data.get("organization")
                return [reread_org_members(org.get("id") if isinstance(org, dict) else None)]
            return [refresh_user(user_id)]
        if kind == "organizationInvitation.accepted":
            return [refresh_user(data.get("user_id"))]
        if kind == "organization.updated":
            return [refresh_org(data.get("id"))]
        if kind == "organization.deleted":
            return [drop_org(data.get("id"))]
        if kind == "user.deleted":
            return [drop_user(data.get("id"))]
        if kind in ROLE_EVENTS:
            check_role_id(data.get("id"))
            if kind == "role.deleted":
                return [ANY_ROLE]  # the id only: every indexed role is patched (no member can hold a deleted role)
            return [repatch_role(data.get("key"))]
        if kind in PERMISSION_EVENTS:
            check_permission_id(data.get("id"))
            if kind == "permission.deleted":
                return [ANY_ROLE]  # the id only: which roles had it is not said
            check_permission_key(data.get("key"))
            # a new permission is in no role until a role.updated names it; an update may rename the key
            return [] if kind == "permission.created" else [ANY_ROLE]
    except InvalidId as exc:
        raise WebhookRejected(400, "invalid_id", f"{kind}: {exc}") from None
    return None
