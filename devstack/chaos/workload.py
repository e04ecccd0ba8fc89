"""Random changes in the Clerk stand-in, and the truth each leaves behind, fact by fact.

The oracle compares lookups with Clerk fact by fact, not value by value, because the cache may
legitimately combine parts of different Clerk states: an org patch brings a new org name into a value
whose role's own event is still on its way. The facts:

- ``m|<user>|<org>``: the user's role in the org, or None (not a member);
- ``o|<org>``: the org's [name, slug];
- ``r|<role>``: the permission keys a holder of the role reads.

Each change is applied by this one thread, so the state read after it is the state it made; the
facts it changed get a new version stamped with the change's sequence number and ``applied_at``,
taken *before* the change (the earliest moment any reader could see it).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from devstack.chaos.history import History
from devstack.clerk_standin import ClerkStandIn

ROLES = ("org:admin", "org:member", "org:billing", "org:support")
CUSTOM_ROLES = ("org:member", "org:billing", "org:support")  # update_role picks among these
CUSTOM_PERMISSIONS = (
    "org:billing:read",
    "org:billing:manage",
    "org:support:read",
    "org:support:manage",
    "org:reports:read",
    "org:reports:export",
)
MEMBER_SYSTEM = ["org:sys_memberships:read"]

Fact = str
Value = Any  # JSON: a role (str) or None, [name, slug], or a list of permission keys


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    applied_at: float
    envelope: dict[str, Any]
    facts: dict[Fact, Value]  # the facts it changed, with their new values
    about: str  # a short description for reports


class World:
    """The users, orgs and roles of a run, in a Clerk stand-in; `step` makes one random change."""

    def __init__(self, clerk: ClerkStandIn, rng: random.Random, history: History, *, users: int = 36) -> None:
        self.clerk = clerk
        self.rng = rng
        self.history = history
        self.users = [f"user_2chaos{i:03d}" for i in range(users)]
        self.spare = [f"user_2chaosnew{i:03d}" for i in range(users // 3)]  # born later, as deleted ones go
        self.deleted: set[str] = set()
        self.orgs: list[str] = []
        self.seq = 0
        self.changes: list[Change] = []
        self._facts: dict[Fact, Value] = {}

    @property
    def all_users(self) -> list[str]:
        """Every user id a lookup may ask about (deleted and not yet born ones too): fixed for the run."""
        return self.users + self.spare

    def live_users(self) -> list[str]:
        return [u for u in self.users if u not in self.deleted]

    def setup(self) -> None:
        """Roles, permissions, orgs and memberships before any process starts (so no event is owed)."""
        for key in CUSTOM_PERMISSIONS:
            self.clerk.create_permission(key)
        self.clerk.create_role("org:billing", "Billing", [*MEMBER_SYSTEM, "org:billing:read", "org:billing:manage"])
        self.clerk.create_role("org:support", "Support", [*MEMBER_SYSTEM, "org:support:read"])
        self.orgs = [self.clerk.create_org(f"Chaos {i}")["data"]["id"] for i in range(5)]
        for user in self.users:
            for org in self.rng.sample(self.orgs, 2):
                self.clerk.add_membership(user, org, self.rng.choice(ROLES))
        self._facts = self.read_facts()
        self.history.write("initial", t=time.time(), facts=self._facts, users=self.all_users, orgs=self.orgs)

    def read_facts(self) -> dict[Fact, Value]:
        """Every fact, read from the stand-in now."""
        facts: dict[Fact, Value] = {}
        for user in self.all_users:
            held = {m["organization"]["id"]: m["role"] for m in self.clerk.memberships_of(user)}
            for org in self.orgs:
                facts[f"m|{user}|{org}"] = held.get(org)
        for org in self.orgs:
            data = self.clerk.org(org)
            facts[f"o|{org}"] = [data["name"], data["slug"]]
        for role in ROLES:
            facts[f"r|{role}"] = self.clerk.role_permissions(role)
        return facts

    def step(self) -> Change:
        """One random change in Clerk; returns it, with its envelope and the facts it changed."""
        applied_at = time.time()
        envelope, about = self._random_change()
        after = self.read_facts()
        changed = {fact: value for fact, value in after.items() if self._facts.get(fact) != value}
        self._facts = after
        self.seq += 1
        change = Change(self.seq, envelope["type"], applied_at, envelope, changed, about)
        self.changes.append(change)
        self.history.write(
            "change", seq=change.seq, type=change.kind, applied_at=applied_at, facts=changed, about=about
        )
        return change

    def truth(self) -> dict[Fact, Value]:
        return dict(self._facts)

    def _random_change(self) -> tuple[dict[str, Any], str]:
        rng, clerk = self.rng, self.clerk
        roll = rng.random()
        if roll < 0.08:
            org = rng.choice(self.orgs)
            name = f"Chaos {org[-4:]} v{rng.randrange(10**6)}"
            return clerk.update_org(org, name=name), f"rename {org} to {name!r}"
        if roll < 0.14:
            role = rng.choice(CUSTOM_ROLES)
            base = MEMBER_SYSTEM if role != "org:admin" else []
            permissions = [*base, *rng.sample(CUSTOM_PERMISSIONS, rng.randint(0, 3))]
            return clerk.update_role(role, permissions=permissions), f"role {role} -> {permissions}"
        if roll < 0.17 and len(self.live_users()) > 4:
            user = rng.choice(self.live_users())
            self.deleted.add(user)
            if self.spare:
                self.users.append(self.spare.pop(0))  # a new user signs up (looked up all along, as unknown)
            return clerk.delete_user(user), f"delete {user}"
        user, org = rng.choice(self.live_users()), rng.choice(self.orgs)
        current = self._facts.get(f"m|{user}|{org}")
        if current is None:
            new_role = rng.choice(ROLES)
            return clerk.add_membership(user, org, new_role), f"add {user} to {org} as {new_role}"
        if roll < 0.55:
            return clerk.remove_membership(user, org), f"remove {user} from {org}"
        new_role = rng.choice([r for r in ROLES if r != current])
        return clerk.update_membership(user, org, new_role), f"{user} in {org}: {current} -> {new_role}"
