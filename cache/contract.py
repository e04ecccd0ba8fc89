"""The Redis data contract shared with other services (some in TypeScript).

This module alone owns key names and the stored JSON, so that nothing else in the
project can drift from what other readers expect:

- ``user-orgs:<userId>`` -> JSON array of
  ``{"organizationId","organizationSlug","organizationName","imageUrl","role","permissions"}``
  (``[]`` for a user in no org), expiring after ``USER_ORGS_TTL_SECONDS``.

The contract's version is `CONTRACT_VERSION`, written to ``clerk-org-cache:contract-version``
by every writer. Version 2 added ``permissions`` (an array of permission keys, system ones
included; ``[]`` when Clerk sends null) and changed nothing else, so a reader that ignores
unknown fields reads both versions. A value without ``permissions`` (written by a version 1
writer) is never served by this version: it is answered from Clerk instead.

Everything else below (leases, the org index, intake bookkeeping) lives under other
prefixes, so a plain ``GET user-orgs:<id>`` reader never has to understand it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cache.errors import InvalidId

CONTRACT_VERSION = 2  # bump on any change to the stored value or to a script's keys and arguments
CONTRACT_VERSION_KEY = "clerk-org-cache:contract-version"

USER_ORGS_PREFIX = "user-orgs:"
LEASE_PREFIX = "user-orgs-lease:"
ORG_INDEX_PREFIX = "org-users:"
ROLE_INDEX_PREFIX = "role-users:"
ROLES_INDEXED_KEY = "clerk-org-cache:roles-indexed"
ROLES_CHANGED_KEY = "clerk-org-cache:roles-changed"
ROLE_PATCH_TAG = "roles"  # the stash tag and patch name of a role patch (never an org id: those start org_)
STASH_PREFIX = "user-orgs-stash:"
ORG_PATCH_PREFIX = "clerk-org-cache:org-patch:"
ORG_PATCHES_KEY = "clerk-org-cache:org-patches"
ORG_CHANGED_PREFIX = "clerk-org-cache:org-changed:"
CHANGE_SEQ_KEY = "clerk-org-cache:change-seq"
SEEN_EVENT_PREFIX = "clerk-webhook:seen:"
PENDING_REFRESH_KEY = "clerk-org-cache:pending-refresh"
REFRESHING_PREFIX = "clerk-org-cache:refreshing:"
DRAINS_KEY = "clerk-org-cache:drains"
DRAIN_LEASE_PREFIX = "clerk-org-cache:drain:"
DRAIN_SCHEDULED_KEY = "clerk-org-cache:drain-scheduled"
CLERK_BUDGET_KEY = "clerk-org-cache:clerk-budget"
CLERK_PAUSED_UNTIL_KEY = "clerk-org-cache:clerk-paused-until"
CLERK_INTERACTIVE_WAITING_KEY = "clerk-org-cache:clerk-interactive-waiting"
CLERK_BUDGET_INTERACTIVE_KEY = "clerk-org-cache:clerk-budget-interactive"
CLERK_REWARM_NEXT_KEY = "clerk-org-cache:clerk-rewarm-next"
QUEUE_NAME = "clerk-org-cache"
# the near-cache's control plane (cache/near.py): registrations under a lease, invalidations, acknowledgements
NEAR_CACHES_KEY = "clerk-org-cache:near-caches"  # sorted set: near-cache id -> lease end (Unix ms, Redis's clock)
NEAR_SEQ_KEY = "clerk-org-cache:near-seq"  # hash: id -> invalidations published to it so far
NEAR_LEASE_MS_KEY = "clerk-org-cache:near-lease-ms"  # hash: id -> its lease length in ms
NEAR_BORN_KEY = "clerk-org-cache:near-born"  # when the first registration of this data set was written (Unix ms)
NEAR_INVAL_PREFIX = "clerk-org-cache:near-inval:"  # pub/sub channel of one near-cache id
NEAR_ACK_PREFIX = "clerk-org-cache:near-acks:"  # list: the ids that acknowledged one invalidation

_USER_ID = re.compile(r"user_[A-Za-z0-9]{1,64}")
_ORG_ID = re.compile(r"org_[A-Za-z0-9]{1,64}")
_SVIX_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_ROLE_KEY = re.compile(r"(?:org:)?[a-z0-9_]{1,64}")  # org:<key>; Clerk's examples and legacy instances omit org:
_ROLE_ID = re.compile(r"role_[A-Za-z0-9]{1,64}")
_PERMISSION_KEY = re.compile(r"org:[a-z0-9_]{1,64}:[a-z0-9_]{1,64}")
_PERMISSION_ID = re.compile(r"perm_[A-Za-z0-9]{1,64}")


def _checked(value: object, pattern: re.Pattern[str], what: str) -> str:
    """``value`` if it is a string ``pattern`` matches whole, else InvalidId saying what was expected
    (every id or key that reaches a Redis key name or a script passes one of these)."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise InvalidId(f"not a {what}")


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a Clerk user id (``user_`` + base62), else raise InvalidId."""
    return _checked(user_id, _USER_ID, "Clerk user id (expected user_ followed by letters and digits)")


def is_org_id(value: str) -> bool:
    """Whether ``value`` is shaped like a Clerk organization id (no exception: the door asks on every request)."""
    return _ORG_ID.fullmatch(value) is not None


def check_org_id(org_id: object) -> str:
    """Return ``org_id`` if it is a Clerk organization id (``org_`` + base62), else raise InvalidId."""
    return _checked(org_id, _ORG_ID, "Clerk organization id (expected org_ followed by letters and digits)")


def check_svix_id(svix_id: object) -> str:
    """Return the delivery id if it is safe to embed in a key, else raise InvalidId."""
    return _checked(svix_id, _SVIX_ID, "Svix message id")


def check_role_key(key: object) -> str:
    """Return ``key`` if it is a Clerk role key (``org:`` + lowercase letters, digits, underscores), else raise."""
    return _checked(key, _ROLE_KEY, "Clerk role key (expected org: followed by lowercase letters, digits or _)")


def check_role_id(role_id: object) -> str:
    return _checked(role_id, _ROLE_ID, "Clerk role id (expected role_ followed by letters and digits)")


def check_permission_key(key: object) -> str:
    return _checked(key, _PERMISSION_KEY, "Clerk permission key (expected org:<feature>:<action>)")


def check_permission_id(permission_id: object) -> str:
    return _checked(permission_id, _PERMISSION_ID, "Clerk permission id (expected perm_ and letters or digits)")


def user_orgs_key(user_id: str) -> str:
    return USER_ORGS_PREFIX + user_id


def lease_key(user_id: str) -> str:
    return LEASE_PREFIX + user_id


def org_index_key(org_id: str) -> str:
    return ORG_INDEX_PREFIX + org_id


def role_index_key(role_key: str) -> str:
    return ROLE_INDEX_PREFIX + role_key


def stash_key(user_id: str) -> str:
    return STASH_PREFIX + user_id


def org_patch_key(org_id: str) -> str:
    return ORG_PATCH_PREFIX + org_id


def org_changed_key(org_id: str) -> str:
    return ORG_CHANGED_PREFIX + org_id


def refreshing_key(drain_id: str) -> str:
    return REFRESHING_PREFIX + drain_id


def drain_lease_key(drain_id: str) -> str:
    return DRAIN_LEASE_PREFIX + drain_id


def near_channel(near_id: str) -> str:
    return NEAR_INVAL_PREFIX + near_id


def near_ack_key(token: str) -> str:
    return NEAR_ACK_PREFIX + token


def seen_event_key(svix_id: str) -> str:
    return SEEN_EVENT_PREFIX + svix_id


@dataclass(frozen=True, slots=True)
class Membership:
    """One organization a user belongs to, with the user's role and permissions in it.

    ``role`` is opaque: ``org:admin``, ``org:member``, a custom ``org:<key>``, or a
    legacy ``admin`` / ``basic_member``. ``permissions`` are Clerk's keys for the
    membership (``org:<feature>:<action>``, system ``org:sys_*`` ones included).
    """

    organization_id: str
    organization_slug: str | None
    organization_name: str
    image_url: str | None
    role: str
    permissions: tuple[str, ...] = ()

    def to_json_dict(self) -> dict[str, str | list[str] | None]:
        """The contract's field names and order."""
        return {
            "organizationId": self.organization_id,
            "organizationSlug": self.organization_slug,
            "organizationName": self.organization_name,
            "imageUrl": self.image_url,
            "role": self.role,
            "permissions": list(self.permissions),
        }


class CorruptValue(ValueError):
    """A stored value does not follow the contract (treated as a miss, never served)."""


def encode_memberships(memberships: Iterable[Membership]) -> str:
    """Serialize to the contract's JSON array (compact, field order fixed)."""
    return json.dumps([m.to_json_dict() for m in memberships], separators=(",", ":"), ensure_ascii=False)


def _optional_str(item: Mapping[str, Any], field: str) -> str | None:
    value = item.get(field)
    if value is None or isinstance(value, str):
        return value
    raise CorruptValue(f"{field} is not a string")


def _required_str(item: Mapping[str, Any], field: str) -> str:
    value = item.get(field)
    if isinstance(value, str):
        return value
    raise CorruptValue(f"{field} is missing or not a string")


def _permissions(item: Mapping[str, Any], field: str, *, null_is_empty: bool) -> tuple[str, ...]:
    value = item.get(field)
    if value is None and null_is_empty:
        return ()
    if isinstance(value, list) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise CorruptValue(f"{field} is missing or not an array of strings")


def decode_memberships(raw: str | bytes) -> list[Membership]:
    """Parse a stored value; raise CorruptValue if it breaks the contract.

    Hits read the same bytes again and again, so decoded values are memoized by their
    exact bytes (safe: Memberships are frozen, and different bytes decode afresh).
    """
    return list(_decode_memoized(raw))


@functools.lru_cache(maxsize=512)
def _decode_memoized(raw: str | bytes) -> tuple[Membership, ...]:
    return tuple(_decode(raw))


def _decode(raw: str | bytes) -> list[Membership]:
    try:
        items = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptValue("stored value is not JSON") from exc
    if not isinstance(items, list):
        raise CorruptValue("stored value is not a JSON array")
    out: list[Membership] = []
    for item in items:
        if not isinstance(item, dict):
            raise CorruptValue("array element is not an object")
        out.append(
            Membership(
                organization_id=_required_str(item, "organizationId"),
                organization_slug=_optional_str(item, "organizationSlug"),
                organization_name=_required_str(item, "organizationName"),
                image_url=_optional_str(item, "imageUrl"),
                role=_required_str(item, "role"),
                permissions=_permissions(item, "permissions", null_is_empty=False),
            )
        )
    return out


def membership_from_clerk(obj: Any) -> Membership:
    """Map one Clerk ``organization_membership`` object to the contract.

    Raises CorruptValue when Clerk's object lacks what the contract needs, so a
    malformed answer is never cached.
    """
    if not isinstance(obj, dict):
        raise CorruptValue("membership is not an object")
    org = obj.get("organization")
    if not isinstance(org, dict):
        raise CorruptValue("membership has no organization object")
    org_id = _required_str(org, "id")
    try:
        check_org_id(org_id)
    except InvalidId as exc:
        raise CorruptValue("organization id is not a Clerk id") from exc
    return Membership(
        organization_id=org_id,
        organization_slug=_optional_str(org, "slug"),
        organization_name=_required_str(org, "name"),
        image_url=_optional_str(org, "image_url"),
        role=_required_str(obj, "role"),
        permissions=_permissions(obj, "permissions", null_is_empty=True),
    )


def with_role_permissions(memberships: list[Membership], roles: Mapping[str, tuple[str, ...]]) -> list[Membership]:
    """A user's memberships with each one's permissions replaced by its role's, from Clerk's role list.

    Raises CorruptValue when a membership's role is not in ``roles`` (deleted, or a legacy key the
    list spells differently), so the caller re-reads that user in full instead of guessing.
    """
    out = []
    for m in memberships:
        if m.role not in roles:
            raise CorruptValue("a membership's role is not in Clerk's role list")
        out.append(replace(m, permissions=roles[m.role]))
    return out


def role_permissions_from_clerk(obj: Any) -> tuple[str, tuple[str, ...]]:
    """(key, permission keys) of one Clerk ``role`` object; CorruptValue if it lacks them."""
    if not isinstance(obj, dict):
        raise CorruptValue("role is not an object")
    key = _required_str(obj, "key")
    permissions = obj.get("permissions")
    if permissions is None:
        return key, ()
    if not isinstance(permissions, list) or not all(isinstance(p, dict) for p in permissions):
        raise CorruptValue("role permissions is not an array of objects")
    return key, tuple(_required_str(p, "key") for p in permissions)


def with_org_details(memberships: list[Membership], org_id: str, organization: Any | None) -> list[Membership]:
    """A user's memberships with one org's details replaced from Clerk's organization object,
    or with the org removed when ``organization`` is None (deleted)."""
    if organization is None:
        return [m for m in memberships if m.organization_id != org_id]
    if not isinstance(organization, dict) or organization.get("id") != org_id:
        raise CorruptValue("organization object does not match the org id")
    name = _required_str(organization, "name")
    slug = _optional_str(organization, "slug")
    image_url = _optional_str(organization, "image_url")
    return [
        replace(m, organization_name=name, organization_slug=slug, image_url=image_url)
        if m.organization_id == org_id
        else m
        for m in memberships
    ]
