"""The instance's roles and permissions, as Clerk keeps them: what a membership's ``permissions`` come from.

Clerk's rules that a permission cache must live with (see ../shared/reference/clerk/permissions.md):
a role is ``org:<role>`` and carries permissions ``org:<feature>:<action>``; ``org:admin`` and
``org:member`` exist from the start with system permissions (``org:sys_*``), which no API may create;
a membership's ``permissions`` are its role's, read live; a role cannot be deleted while a member holds
it; ``role.deleted`` and ``permission.deleted`` carry only the id. Callers hold the model's lock.
"""

import re
import secrets
from collections.abc import Callable

from devstack.clerk_standin.records import Permission, Role
from devstack.clerk_standin.shapes import JSON, StandInConflict, StandInNotFound, invalid_param, now_ms

ROLE_KEY = re.compile(r"org:[a-z0-9_]+")
PERMISSION_KEY = re.compile(r"org:[a-z0-9_]+:[a-z0-9_]+")

SYSTEM_PERMISSIONS = {
    "org:sys_profile:manage": "Manage organization",
    "org:sys_profile:delete": "Delete organization",
    "org:sys_memberships:read": "Read members",
    "org:sys_memberships:manage": "Manage members",
    "org:sys_domains:read": "Read domains",
    "org:sys_domains:manage": "Manage domains",
}
ADMIN_PERMISSIONS = list(SYSTEM_PERMISSIONS)
MEMBER_PERMISSIONS = ["org:sys_memberships:read"]

_LEGACY_KEYS = {"admin": "org:admin", "basic_member": "org:member"}  # instances created before the org: prefix
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _rand_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(27))


def _title(key: str) -> str:
    return key.split(":")[-1].replace("_", " ").title()


class Roles:
    """Roles by key and permissions by id; not thread-safe on its own (the model's lock covers it)."""

    def __init__(self) -> None:
        self._permissions: dict[str, Permission] = {}
        self._roles: dict[str, Role] = {}
        self._seq = 0
        for key, name in SYSTEM_PERMISSIONS.items():
            self._add_permission(key, name, "system")
        self.create("org:admin", "Admin", ADMIN_PERMISSIONS)
        self.create("org:member", "Member", MEMBER_PERMISSIONS)

    # ----------------------------------------------------------------- reads

    def permissions_of(self, role_key: str) -> list[str]:
        """A membership's ``permissions``: its role's keys, as they are now."""
        role = self._roles.get(_LEGACY_KEYS.get(role_key, role_key))
        if role is None:
            return []
        return [self._permissions[pid].key for pid in role.permission_ids]

    def role_name(self, role_key: str) -> str:
        role = self._roles.get(_LEGACY_KEYS.get(role_key, role_key))
        return role.name if role is not None else _title(role_key)

    def list_roles(self) -> list[JSON]:
        """Every role, newest first (Clerk's default ``-created_at``)."""
        ordered = sorted(self._roles.values(), key=lambda r: (r.created_at, r.seq), reverse=True)
        return [self.role_json(r) for r in ordered]

    def list_permissions(self) -> list[JSON]:
        return [permission_json(p) for p in self._permissions.values()]

    def role_by_id(self, role_id: str) -> JSON:
        role = next((r for r in self._roles.values() if r.id == role_id), None)
        if role is None:
            raise StandInNotFound(f"No role was found with id {role_id}")
        return self.role_json(role)

    def role_json(self, role: Role) -> JSON:
        return {
            "object": "role",
            "id": role.id,
            "name": role.name,
            "key": role.key,
            "description": role.description,
            "is_creator_eligible": role.key == "org:admin",
            "permissions": [permission_json(self._permissions[pid]) for pid in role.permission_ids],
            "created_at": role.created_at,
            "updated_at": role.updated_at,
        }

    def ensure(self, role_key: str) -> None:
        """A membership may name a role nobody created here (tests use ``org:billing`` freely): create it
        as Clerk's dashboard would have, with read and manage permissions of its own feature."""
        if role_key in self._roles:
            return
        if not ROLE_KEY.fullmatch(role_key):
            return  # stored as given (roles are opaque to the cache); it simply has no permissions
        feature = role_key.split(":", 1)[1]
        keys = [f"org:{feature}:read", f"org:{feature}:manage"]
        for key in keys:
            if self._permission_by_key(key) is None:
                self.create_permission(key)
        self.create(role_key, _title(role_key), [*MEMBER_PERMISSIONS, *keys])

    # ----------------------------------------------------------------- mutations (each returns the event's data)

    def create(self, key: str, name: str, permissions: list[str], description: str | None = None) -> JSON:
        """role.created's data."""
        if not ROLE_KEY.fullmatch(key):
            raise invalid_param("key", "Must start with 'org:' and contain only lowercase alphanumeric characters")
        if key in self._roles:
            raise StandInConflict("duplicate_record", "already exists", f"A role with key {key} already exists")
        self._seq += 1
        now = now_ms()
        role = Role(_rand_id("role_"), key, name, description, self._ids(permissions), now, now, self._seq)
        self._roles[key] = role
        return self.role_json(role)

    def update(self, key: str, *, permissions: list[str] | None = None, name: str | None = None) -> JSON:
        """role.updated's data: the whole role with its permissions, and no word of who holds it."""
        role = self._get(key)
        if permissions is not None:
            role.permission_ids = self._ids(permissions)
        if name is not None:
            role.name = name
        role.updated_at = max(now_ms(), role.updated_at + 1)
        return self.role_json(role)

    def delete(self, key: str, held: Callable[[str], bool]) -> JSON:
        """role.deleted's data: the id only. Refused while a member holds it, as Clerk does."""
        role = self._get(key)
        if key in ("org:admin", "org:member"):
            raise StandInConflict("role_not_deletable", "cannot be deleted", f"{key} is a default role")
        if held(key):
            raise StandInConflict("role_assigned", "is assigned", f"{key} is assigned to members")
        del self._roles[key]
        return {"object": "role", "id": role.id, "slug": None, "deleted": True}

    def create_permission(self, key: str, name: str | None = None) -> JSON:
        """permission.created's data (a custom permission; ``org:sys_*`` is Clerk's own)."""
        if not PERMISSION_KEY.fullmatch(key) or key.startswith("org:sys_"):
            raise invalid_param("key", "Must be org:<feature>:<action> and must not start with org:sys_")
        if self._permission_by_key(key) is not None:
            raise StandInConflict("duplicate_record", "already exists", f"A permission with key {key} already exists")
        return permission_json(self._add_permission(key, name or _title(key), "custom"))

    def update_permission(self, key: str, *, new_key: str | None = None, name: str | None = None) -> JSON:
        """permission.updated's data; a new key renames it in every role that has it."""
        permission = self._permission(key)
        if new_key is not None:
            if not PERMISSION_KEY.fullmatch(new_key) or new_key.startswith("org:sys_"):
                raise invalid_param("key", "Must be org:<feature>:<action> and must not start with org:sys_")
            permission.key = new_key
        if name is not None:
            permission.name = name
        permission.updated_at = max(now_ms(), permission.updated_at + 1)
        return permission_json(permission)

    def delete_permission(self, key: str) -> JSON:
        """permission.deleted's data: the id only; every role loses it."""
        permission = self._permission(key)
        if permission.type == "system":
            raise StandInConflict("permission_not_deletable", "cannot be deleted", f"{key} is a system permission")
        del self._permissions[permission.id]
        for role in self._roles.values():
            if permission.id in role.permission_ids:
                role.permission_ids.remove(permission.id)
        return {"object": "permission", "id": permission.id, "deleted": True}

    # ----------------------------------------------------------------- helpers

    def _add_permission(self, key: str, name: str, kind: str) -> Permission:
        now = now_ms()
        permission = Permission(_rand_id("perm_"), key, name, f"{name} ({key})", kind, now, now)
        self._permissions[permission.id] = permission
        return permission

    def _get(self, key: str) -> Role:
        role = self._roles.get(key)
        if role is None:
            raise StandInNotFound(f"No role was found with key {key}")
        return role

    def _permission(self, key: str) -> Permission:
        permission = self._permission_by_key(key)
        if permission is None:
            raise StandInNotFound(f"No permission was found with key {key}")
        return permission

    def _permission_by_key(self, key: str) -> Permission | None:
        return next((p for p in self._permissions.values() if p.key == key), None)

    def _ids(self, keys: list[str]) -> list[str]:
        return [self._permission(key).id for key in keys]


def permission_json(permission: Permission) -> JSON:
    return {
        "object": "permission",
        "id": permission.id,
        "name": permission.name,
        "key": permission.key,
        "description": permission.description,
        "type": permission.type,
        "created_at": permission.created_at,
        "updated_at": permission.updated_at,
    }
