"""The in-memory truth: orgs, users and memberships behind one lock.

Each mutation returns the webhook event envelope Clerk would send for it, so a test
can sign it and post it to the receiver, exactly as Clerk would. The API reads the
same state under the same lock, so a read never sees half a change.
"""

import re
import secrets
import threading

from devstack.clerk_standin.records import Membership, Org, User
from devstack.clerk_standin.roles import Roles
from devstack.clerk_standin.sample import MEMBERSHIPS, ORG_NAMES, PROFILES, SAMPLE_ORG_IDS, SAMPLE_USER_IDS
from devstack.clerk_standin.shapes import (
    JSON,
    StandInConflict,
    StandInNotFound,
    deleted_org_json,
    deleted_user_json,
    envelope,
    membership_json,
    now_ms,
    org_json,
)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _rand_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"


def ordered(ms: list[Membership], newest_first: bool = True) -> list[Membership]:
    """Clerk's default `-created_at`; creation order breaks ties."""
    return sorted(ms, key=lambda m: (m.created_at, m.seq), reverse=newest_first)


class Model:
    """Thread-safe world state. Reads used by the API must hold `lock` while they render."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._orgs: dict[str, Org] = {}
        self._users: dict[str, User] = {}
        self._deleted_users: set[str] = set()
        self._by_user: dict[str, dict[str, Membership]] = {}
        self._by_org: dict[str, dict[str, Membership]] = {}
        self._seq = 0
        self.roles = Roles()

    # ----------------------------------------------------------------- reads

    def org_json(self, org: Org) -> JSON:
        return org_json(org, len(self._by_org.get(org.id, {})))

    def membership_json(self, m: Membership) -> JSON:
        organization, user = self.org_json(self._orgs[m.org_id]), self._user(m.user_id)
        return membership_json(m, organization, user, self.roles.role_name(m.role), self.roles.permissions_of(m.role))

    def find_org(self, id_or_slug: str) -> Org | None:
        """By id, else by slug (Clerk accepts either on GET /organizations/{id})."""
        org = self._orgs.get(id_or_slug)
        if org is None:
            org = next((o for o in self._orgs.values() if o.slug == id_or_slug), None)
        return org

    def user_memberships(self, user_id: str) -> list[Membership]:
        """A user's memberships, newest first (404 for a deleted or malformed user id)."""
        self._check_user(user_id)
        return ordered(list(self._by_user.get(user_id, {}).values()))

    def org_memberships(self, org_id: str) -> list[Membership]:
        return list(self._by_org[org_id].values())

    def org(self, org_id: str) -> JSON:
        """The current org object (raises StandInNotFound)."""
        with self.lock:
            return self.org_json(self._get_org(org_id))

    def memberships_of(self, user_id: str) -> list[JSON]:
        """Current truth for a user, in API order (newest first); the test oracle."""
        with self.lock:
            ms = ordered(list(self._by_user.get(user_id, {}).values()))
            return [self.membership_json(m) for m in ms]

    def role_permissions(self, role_key: str) -> list[str]:
        """The permission keys a holder of the role reads now ([] for a role that does not exist)."""
        with self.lock:
            return self.roles.permissions_of(role_key)

    def _get_org(self, org_id: str) -> Org:
        org = self._orgs.get(org_id)
        if org is None:
            raise StandInNotFound(f"No organization was found with id {org_id}")
        return org

    def _check_user(self, user_id: str) -> None:
        if not user_id.startswith("user_") or user_id in self._deleted_users:
            raise StandInNotFound(f"No user was found with id {user_id}")

    def _user(self, user_id: str) -> User:
        """Any `user_...` id exists implicitly; its profile is made up on first use."""
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = User(user_id, f"{user_id.lower()}@example.com", None, None)
        return user

    def _get_membership(self, user_id: str, org_id: str) -> Membership:
        m = self._by_user.get(user_id, {}).get(org_id)
        if m is None:
            raise StandInNotFound(f"No membership was found for {user_id} in {org_id}")
        return m

    # ----------------------------------------------------------------- mutations

    def create_org(
        self, name: str, slug: str | None = None, org_id: str | None = None, image_url: str | None = None
    ) -> JSON:
        """organization.created; the slug defaults to one derived from the name."""
        with self.lock:
            oid = org_id or _rand_id("org_", 24)
            if oid in self._orgs:
                raise StandInConflict("form_identifier_exists", "already exists", f"Organization {oid} exists")
            taken = {o.slug for o in self._orgs.values()}
            if slug is None:
                slug = base = _slugify(name)
                while slug in taken:
                    slug = f"{base}-{_rand_id('', 6).lower()}"
            elif slug in taken:
                raise StandInConflict("form_identifier_exists", "is taken", "That slug is taken. Please try another.")
            now = now_ms()
            org = self._orgs[oid] = Org(oid, name, slug, image_url, now, now)
            self._by_org[oid] = {}
            return envelope("organization.created", self.org_json(org))

    def update_org(self, org_id: str, *, name: str | None = None, slug: str | None = None) -> JSON:
        """organization.updated with the full org (memberships embed it live, like Clerk)."""
        with self.lock:
            org = self._get_org(org_id)
            if slug is not None and slug != org.slug:
                if any(o.slug == slug for o in self._orgs.values()):
                    raise StandInConflict(
                        "form_identifier_exists", "is taken", "That slug is taken. Please try another."
                    )
                org.slug = slug
            if name is not None:
                org.name = name
            org.updated_at = max(now_ms(), org.updated_at + 1)
            return envelope("organization.updated", self.org_json(org))

    def delete_org(self, org_id: str) -> JSON:
        """organization.deleted; its memberships vanish silently (no membership events)."""
        with self.lock:
            org = self._get_org(org_id)
            for user_id in self._by_org.pop(org_id, {}):
                self._by_user.get(user_id, {}).pop(org_id, None)
            del self._orgs[org_id]
            return envelope("organization.deleted", deleted_org_json(org))

    def add_membership(self, user_id: str, org_id: str, role: str = "org:member") -> JSON:
        """organizationMembership.created (400 already_a_member_in_organization if present)."""
        with self.lock:
            self._get_org(org_id)
            self._check_user(user_id)
            if org_id in self._by_user.get(user_id, {}):
                raise StandInConflict(
                    "already_a_member_in_organization",
                    "already a member",
                    f"{user_id} is already a member of {org_id}",
                )
            self._user(user_id)
            self.roles.ensure(role)
            self._seq += 1
            now = now_ms()
            m = Membership(_rand_id("orgmem_", 27), user_id, org_id, role, now, now, self._seq)
            self._by_user.setdefault(user_id, {})[org_id] = m
            self._by_org[org_id][user_id] = m
            return envelope("organizationMembership.created", self.membership_json(m))

    def update_membership(self, user_id: str, org_id: str, role: str) -> JSON:
        """organizationMembership.updated (role change)."""
        with self.lock:
            m = self._get_membership(user_id, org_id)
            self.roles.ensure(role)
            m.role = role
            m.updated_at = max(now_ms(), m.updated_at + 1)
            return envelope("organizationMembership.updated", self.membership_json(m))

    def remove_membership(self, user_id: str, org_id: str) -> JSON:
        """organizationMembership.deleted; data is the full membership as it was."""
        with self.lock:
            data = self.membership_json(self._get_membership(user_id, org_id))
            del self._by_user[user_id][org_id]
            del self._by_org[org_id][user_id]
            return envelope("organizationMembership.deleted", data)

    def create_role(self, key: str, name: str, permissions: list[str]) -> JSON:
        """role.created."""
        with self.lock:
            return envelope("role.created", self.roles.create(key, name, permissions))

    def update_role(self, key: str, *, permissions: list[str] | None = None, name: str | None = None) -> JSON:
        """role.updated: every member holding the role now reads the new permissions; the event names none."""
        with self.lock:
            return envelope("role.updated", self.roles.update(key, permissions=permissions, name=name))

    def delete_role(self, key: str) -> JSON:
        """role.deleted (id only); refused while a member holds the role."""
        with self.lock:
            return envelope("role.deleted", self.roles.delete(key, self._role_held))

    def create_permission(self, key: str, name: str | None = None) -> JSON:
        """permission.created."""
        with self.lock:
            return envelope("permission.created", self.roles.create_permission(key, name))

    def update_permission(self, key: str, *, new_key: str | None = None, name: str | None = None) -> JSON:
        """permission.updated (a new key renames it in every role)."""
        with self.lock:
            return envelope("permission.updated", self.roles.update_permission(key, new_key=new_key, name=name))

    def delete_permission(self, key: str) -> JSON:
        """permission.deleted (id only): every role, and so every membership, loses it."""
        with self.lock:
            return envelope("permission.deleted", self.roles.delete_permission(key))

    def _role_held(self, role: str) -> bool:
        return any(m.role == role for ms in self._by_org.values() for m in ms.values())

    def delete_user(self, user_id: str) -> JSON:
        """user.deleted; the user's memberships vanish and API reads then answer 404."""
        with self.lock:
            self._check_user(user_id)
            for org_id in self._by_user.pop(user_id, {}):
                self._by_org.get(org_id, {}).pop(user_id, None)
            self._deleted_users.add(user_id)
            return envelope("user.deleted", deleted_user_json(user_id))

    def seed_sample(self) -> None:
        """A small fixed world for demos: 3 orgs, 3 users, mixed roles. Idempotent."""
        with self.lock:
            for key, (first, last) in PROFILES.items():
                uid = SAMPLE_USER_IDS[key]
                if uid not in self._users or uid in self._deleted_users:
                    self._users[uid] = User(uid, f"{key}@example.com", first, last)
                    self._deleted_users.discard(uid)
            for slug, name in ORG_NAMES.items():
                if SAMPLE_ORG_IDS[slug] not in self._orgs:
                    self.create_org(name, slug=slug, org_id=SAMPLE_ORG_IDS[slug])
            for user, slug, role in MEMBERSHIPS:
                uid, oid = SAMPLE_USER_IDS[user], SAMPLE_ORG_IDS[slug]
                if oid not in self._by_user.get(uid, {}):
                    self.add_membership(uid, oid, role)
