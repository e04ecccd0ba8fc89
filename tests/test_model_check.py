"""A stateful model check of the freshness protocol: Hypothesis chooses the interleavings.

Each rule is one atomic step of one actor against the real Lua scripts (`cache.protocol`)
on the session's private Redis, with Clerk played by the stand-in's in-memory model:

- lookups: the library's own lookup (`cache.read_path.ReadPath.memberships_program`, the program
  both the sync and the async cache run, its Clerk client's read included), driven one effect at
  a time: read the key; take the lease (or wait); the Clerk request *starts* (it sees Clerk as it
  is at that step); its answer *returns*; the fill;
- the intake (`webhook.events.targets_for` + the record script) delivering any event Clerk
  has sent, late, reordered or duplicated;
- drain jobs, split as `worker.refresher` runs them (take pending users; take leases;
  Clerk read starts / returns; fill; and the org patch: lease + stash, org read, fill and
  settle), which may die between any two steps, a later job taking over;
- changes in Clerk (join, leave, a move to another role, org rename, org delete, user delete; a role
  gaining or losing a permission, a permission created, renamed or deleted, a role deleted once no
  member holds it or created again), each followed by its webhook at some later step or not before
  the end; a membership's permissions are its role's, read live, as Clerk's are;
- the worker's role patch (lease + stash, one read of Clerk's role list, fill and settle), as
  `worker.refresher.Refresher.patch_roles` runs it;
- a Redis restart without persistence (everything gone), a lease expiring;
- two app processes with a near-cache (tests/model_near.py): the real `cache.near.NearCache`, its
  control-plane threads not started, each turn of their loops one step: register (subscribe, then
  near_register.lua), renew (extended only once the returned count is handled), its lease running out
  on its own clock, Redis's listing of an id it no longer serves under expiring (within the grace or
  past it), and its listener reading one invalidation, however late (drop, bump the epoch, then
  acknowledge); their lookups are the library's lookup with that near-cache (a local hit first, as
  `MembershipCache.get_memberships` does; else near_get.lua or the fill, each executed at one step and
  its reply handled, kept or refused by the epoch, at a later one);
- the intake's near-cache wait: after the record, `cache.protocol.near_invalidate_program` publishes
  (near_publish.lua) and takes acknowledgements as they come; the event counts as acknowledged (2xx)
  only when the program answers, or when its wait runs out, which lapses each listed process still
  serving on a lease sent before the publish's reply (what the margin guarantees; a lease sent after it
  is assumed to outlive the wait, so only the count check can stop it).

After every step: each stored value agrees, organization by organization, with some Clerk
state no older than the last acknowledged event about it (its role with the membership's events,
its permissions with the role and permission events about the role it names, its name with the
org's); no value outlives the Clerk read it carries by more than the TTL; only the documented keys
live without an expiry. Every finished lookup agrees, permissions included, with Clerk as of the
events acknowledged before it started, and so does every local hit, and what each process's tier would
answer now (checked after every step). At the end, with every event delivered and a drain run,
every value equals Clerk, permissions included.

Size: MODEL_PROFILE=ci (default: 2,000 examples of up to 50 steps) or long (100x).
MODEL_EXAMPLES overrides the profile's number of examples, so the long run can be split into
shards with different seeds (`--hypothesis-seed`), one per core.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis import Redis

from cache import contract
from cache.clerk import ClerkReads
from cache.contract import (
    ROLE_PATCH_TAG,
    CorruptValue,
    Membership,
    decode_memberships,
    membership_from_clerk,
    role_permissions_from_clerk,
    with_org_details,
    with_role_permissions,
)
from cache.effects import HttpGet, HttpResponse, Program, RedisGet, RunScript, Sleep
from cache.io import SyncIO
from cache.protocol import (
    Acquired,
    Fill,
    NearRegistry,
    PatchAction,
    PatchOutcome,
    decode_acquired,
    near_invalidate_program,
    near_margin_s,
    new_token,
    record_program,
)
from cache.read_path import ReadPath, fill_for
from devstack.clerk_standin.model import Model
from devstack.clerk_standin.shapes import StandInError
from devstack.signing import new_message_id
from tests.model_near import (
    LEASE_AGE,
    NEAR_LEASE_MS,
    IntakeNear,
    IntakeWait,
    NearProcess,
    SteppedNearCache,
    expire_listing,
)
from webhook.events import targets_for
from worker.store import RefreshStore

TTL_S = 300
MODEL_CLERK = "http://clerk.model.invalid"  # the lookups' Clerk: its requests are answered from `Model`
LEASE_MS = 15_000
USERS = ("user_2m0", "user_2m1", "user_2m2")
DEFAULT_ROLES = ("org:admin", "org:member")  # Clerk's own: never deleted
CUSTOM_ROLES = {  # the instance's custom roles and the permissions they start with
    "org:billing": ("org:sys_memberships:read", "org:invoices:read", "org:invoices:create"),
    "org:support": ("org:sys_memberships:read", "org:tickets:read", "org:tickets:manage"),
}
ROLES = (*DEFAULT_ROLES, *CUSTOM_ROLES)
MAX_CUSTOM_PERMISSIONS = 6
NOT_EXPIRING = (
    contract.CHANGE_SEQ_KEY,
    contract.PENDING_REFRESH_KEY,
    contract.DRAINS_KEY,
    contract.ORG_PATCHES_KEY,
    contract.REFRESHING_PREFIX,
    contract.ORG_PATCH_PREFIX,
    contract.NEAR_CACHES_KEY,
    contract.NEAR_SEQ_KEY,
    contract.NEAR_LEASE_MS_KEY,
    contract.NEAR_BORN_KEY,
)
NEAR_PROCESSES = 2

settings.register_profile(
    "ci", max_examples=2_000, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "quick", max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "long", max_examples=200_000, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck)
)

SNAPSHOT = """
local keys = redis.call('KEYS', '*')
local ttls, values, expiries = {}, {}, {}
for i, key in ipairs(keys) do ttls[i] = redis.call('PTTL', key) end
for i, key in ipairs(ARGV) do
  values[i] = redis.call('GET', key) or ''
  expiries[i] = redis.call('PEXPIRETIME', key)
end
return {keys, ttls, values, expiries}
"""

SEEN: Counter[str] = Counter()  # how often the interesting steps happened (printed with -s)
# The steps a run must have reached, at least once per 100 examples, for its verdict to mean anything: a
# run in which no fill was ever refused, or no org or role patch ever stored, checked nothing about the races
# the protocol exists for. (2,000 examples reach each 30 to 2,500 times.) "a drain fill refused", "a patch
# refused", "a role patch refused" and "a role patch refreshed in full" (a value naming a role Clerk deleted)
# are counted too, but are rare (0 to 20 in 2,000 examples), so not required. The near-cache's: a local hit, a
# value kept and one refused (the epoch moved or the lease lapsed since its read was sent), an invalidation
# acknowledged, an intake waiting out a lease, a renewal held back until its count is handled. A refusal because an
# invalidation overtook the read ("epoch moved") is counted apart (35 times in one CI run), but not required.
MUST_SEE = (
    "a lookup hit",
    "a lookup waited",
    "a lookup stored",
    "a lookup's fill refused",
    "a drain fill stored",
    "a patch stored",
    "a role patch stored",
    "a local hit",
    "a local fill kept",
    "a local fill refused",
    "an invalidation acknowledged",
    "an intake waited out a lease",
    "a renewal held back by the count",
)

Pair = tuple[str, str]
PairState = tuple[str, str, str | None, tuple[str, ...]] | None  # (role, org name, slug, permissions), or none
Details = tuple[str, str | None] | None  # (org name, slug), or the org is deleted
Grants = tuple[str, ...] | None  # a role's permission keys, in Clerk's order, or the role does not exist


def clerk_answer(memberships: list[Any] | None) -> HttpResponse:
    """What Clerk answers a lookup's read: one page holding every membership, or 404 for a user it does not know."""
    if memberships is None:
        return HttpResponse(404, b'{"errors": [{"message": "not found"}]}', None)
    return HttpResponse(200, json.dumps({"data": memberships, "total_count": len(memberships)}).encode(), None)


@dataclass
class Lookup:
    """A lookup in flight: the library's program, and the effect it waits on."""

    user: str
    started_at: int  # index of the step at which it started (events acknowledged before count)
    program: Program[list[Membership]]
    effect: Any = None  # what the program asked for and has not been given yet
    read: list[Any] | None = None  # Clerk's answer, captured when the read started (None: 404)
    read_started: bool = False
    read_time_ms: int = 0
    process: NearProcess | None = None  # the app process whose near-cache the lookup goes through, if any
    reply: Any = None  # a near lookup's read or fill, executed in Redis, its reply not handled yet
    executed: bool = False


@dataclass
class Job:
    drain_id: str
    stage: str = "take"  # take -> lease -> clerk_start -> clerk_return -> fill -> take ...
    users: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    leased: list[str] = field(default_factory=list)
    reads: dict[str, Any] = field(default_factory=dict)
    read_time_ms: int = 0
    patch: tuple[str, str] | None = None  # (kind, org) being patched; ('r', 'roles') for the role patch
    stashes: dict[str, Any] = field(default_factory=dict)
    org_read: Any = None  # the org object, or for the role patch Clerk's role list (None: not read)


class FreshnessModel(RuleBasedStateMachine):
    redis: Redis  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.r = type(self).redis
        self.r.flushall()
        self.store = RefreshStore(self.r)  # the worker's side
        self.io = SyncIO(self.r)
        # the library's lookup, its Clerk client's read included; a waiter answers from Clerk at once (as after
        # its wait ran out)
        self.read_path = ReadPath(
            ClerkReads("sk_test_model", MODEL_CLERK), ttl_seconds=TTL_S, lease_ms=LEASE_MS, fill_wait_s=0.0
        )
        self.clerk = Model()
        self.orgs: list[str] = []
        self.deleted_users: set[str] = set()
        self.version = 0
        self.roles: dict[Pair, list[tuple[int, str | None]]] = {}  # (version, role or not a member)
        self.details: dict[str, list[tuple[int, Details]]] = {}  # org -> (version, (name, slug) or deleted)
        self.grants: dict[str, list[tuple[int, Grants]]] = {}  # role key -> (version, its permissions or deleted)
        self.outbox: list[tuple[dict[str, Any], str, int, tuple[str, ...]]] = []  # event, svix id, version, scope
        self.delivered: list[tuple[dict[str, Any], str, int, tuple[str, ...]]] = []
        self.acked: list[tuple[int, int, tuple[str, ...]]] = []  # (step, version, scope)
        self.step = 0
        self.lookups: list[Lookup] = []
        self.jobs: list[Job] = []
        self.dead_drains: list[str] = []
        self.provenance: dict[str, int] = {}  # user -> server ms at which the Clerk read of its value began
        self.stash_provenance: dict[str, int] = {}
        self.processes: list[NearProcess] = []  # app processes with a near-cache (tests/model_near.py)
        self.inbox: Counter[str] = Counter()  # near id -> invalidations published to it, not yet read
        self.waits: list[IntakeWait] = []  # deliveries recorded, whose 2xx waits on the near-caches
        self.intake_near = IntakeNear(self.r, self.io, NearRegistry())

    # -- Clerk's truth and its history --------------------------------------------------------
    #
    # A cached pair (user, org) has three parts with their own events: the membership (is the user
    # a member, with which role), moved by membership events, user.deleted and organization.deleted;
    # the org's details (name, slug), moved by organization.updated and .deleted; and the permissions,
    # which are the role's (read live), moved by role.* and permission.* events. An org patch
    # legitimately joins a newer org name to a role whose own event has not arrived yet, and a role
    # patch a newer permission set to an older role, so each part is checked against the events
    # acknowledged about it: the permissions against those about the role the value names.

    def pairs_now(self) -> dict[Pair, PairState]:
        now: dict[Pair, PairState] = {}
        for user in USERS:
            for m in [] if user in self.deleted_users else self.clerk.memberships_of(user):
                org = m["organization"]
                now[(user, org["id"])] = (m["role"], org["name"], org.get("slug"), tuple(m["permissions"]))
        return now

    def roles_now(self) -> dict[str, tuple[str, ...]]:
        """Each role of the instance with its permission keys: what GET /organization_roles lists."""
        with self.clerk.lock:
            return dict(role_permissions_from_clerk(role) for role in self.clerk.roles.list_roles())

    def custom_permissions_now(self) -> list[str]:
        with self.clerk.lock:
            return sorted(p["key"] for p in self.clerk.roles.list_permissions() if p["type"] == "custom")

    def record_truth(self) -> None:
        self.version += 1
        now = self.pairs_now()
        for pair in set(now) | set(self.roles):
            state = now.get(pair)
            role = state[0] if state is not None else None
            history = self.roles.setdefault(pair, [(0, None)])
            if history[-1][1] != role:
                history.append((self.version, role))
        for org in set(self.details) | set(self.orgs):
            try:
                found = self.clerk.org(org)
                details: Details = (found["name"], found.get("slug"))
            except StandInError:
                details = None
            history_d = self.details.setdefault(org, [(0, None)])
            if history_d[-1][1] != details:
                history_d.append((self.version, details))
        grants = self.roles_now()
        for key in set(self.grants) | set(grants):
            history_g = self.grants.setdefault(key, [(0, None)])
            if history_g[-1][1] != grants.get(key):
                history_g.append((self.version, grants.get(key)))

    def sent(self, event: dict[str, Any], *scope: str) -> None:
        self.record_truth()
        self.outbox.append((event, new_message_id(), self.version, scope))

    def floor(self, scopes: tuple[tuple[str, ...], ...], before_step: int) -> int:
        """The version of the newest acknowledged event (before ``before_step``) with one of ``scopes``."""
        return max((v for step, v, scope in self.acked if step < before_step and scope in scopes), default=0)

    @staticmethod
    def allowed(history: list[tuple[int, Any]], floor: int) -> list[Any]:
        """The states no older than ``floor``: those set since, and the one in force at it."""
        return [state for version, state in history if version > floor] + [
            state for version, state in history if version <= floor
        ][-1:]

    def agrees(self, user: str, memberships: list[Any], before_step: int) -> list[str]:
        """The parts of ``memberships`` (contract objects) older than the events acknowledged before the step."""
        got = {m.organization_id: m for m in memberships}
        problems = []
        for org in set(got) | {o for (u, o) in self.roles if u == user}:
            floor_m = self.floor((("pair", user, org), ("user", user), ("org_deleted", org)), before_step)
            roles = self.allowed(self.roles.get((user, org), [(0, None)]), floor_m)
            role = got[org].role if org in got else None
            if role not in roles:
                problems.append(f"{user} in {org}: role {role} not in {roles} (since v{floor_m})")
            if org in got:
                floor_o = self.floor((("org", org), ("org_deleted", org)), before_step)
                details = self.allowed(self.details.get(org, [(0, None)]), floor_o)
                if (got[org].organization_name, got[org].organization_slug) not in details:
                    problems.append(f"{org} details {got[org].organization_name} not in {details} (since v{floor_o})")
                # the permissions are the role's as of the role and permission events acknowledged: 'r:<role>'
                # answers for that role, 'R:*' (role.deleted, permission.updated/.deleted) for every role
                floor_g = self.floor((("role", got[org].role), ("any_role",)), before_step)
                grants = self.allowed(self.grants.get(got[org].role, [(0, None)]), floor_g)
                if got[org].permissions not in grants:
                    held = got[org].permissions
                    problems.append(f"{user} in {org} as {role}: permissions {held} not in {grants} (since v{floor_g})")
        return problems

    def server_ms(self) -> int:
        seconds, micros = self.r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- set-up ----------------------------------------------------------------------------------

    @initialize()
    def world(self) -> None:
        for name in ("Acme", "Globex"):
            self.orgs.append(self.clerk.create_org(name)["data"]["id"])
        for key, grants in CUSTOM_ROLES.items():  # before anything is cached: no event needed
            for permission in grants:
                if not permission.startswith("org:sys_"):
                    self.clerk.create_permission(permission)
            self.clerk.create_role(key, key.split(":")[1].title(), list(grants))
        for i, user in enumerate(USERS):
            self.clerk.add_membership(user, self.orgs[i % 2], ROLES[(i + 1) % len(ROLES)])
        self.record_truth()
        for _ in range(NEAR_PROCESSES):
            near = SteppedNearCache(self.r)
            read_path = ReadPath(
                ClerkReads("sk_test_model", MODEL_CLERK),
                ttl_seconds=TTL_S,
                lease_ms=LEASE_MS,
                fill_wait_s=0.0,
                near=near,
            )
            self.processes.append(NearProcess(near, read_path, SyncIO(self.r)))
            self.processes[-1].control_step()  # registered before the intake's first invalidation
        # the intake starts while the data set stands: it knows its near-born stamp (that an intake started after
        # Redis lost the registrations cannot know is the open case docs/architecture.md names)
        self.io.run(self.intake_near.registry.prime_program())

    # -- Clerk changes (each sends a webhook, delivered by `deliver` at some later step) ----------

    @rule(
        change=st.sampled_from(
            ["membership"] * 6
            + ["org_rename"] * 3
            + ["org_delete", "new_org", "user_delete"]
            + ["grant"] * 3
            + ["permission_delete", "permission_create", "permission_rename", "role_delete"]
        ),
        user=st.sampled_from(USERS),
        which=st.integers(0, 5),
        role=st.integers(0, 3),
    )
    def clerk_changes(self, change: str, user: str, which: int, role: int) -> None:
        """Something changes in Clerk; its webhook goes out (delivered by `deliver` at some later step)."""
        if change == "membership":
            self.clerk_membership_change(user, which, role)
        elif change in ("org_rename", "org_delete"):
            self.clerk_org_change(which, change == "org_delete")
        elif change == "new_org":
            self.clerk_new_org()
        elif change == "user_delete":
            self.clerk_user_deleted(user)
        else:
            self.clerk_role_change(change, ROLES[role % len(ROLES)], which)

    def clerk_membership_change(self, user: str, which: int, pick: int) -> None:
        """Join (with any role the instance has), move to another role, or leave."""
        if user in self.deleted_users or not self.orgs:
            return
        org = self.orgs[which % len(self.orgs)]
        roles = sorted(self.roles_now())
        role = roles[pick % len(roles)]
        current = {m["organization"]["id"]: m["role"] for m in self.clerk.memberships_of(user)}
        if org not in current:
            event = self.clerk.add_membership(user, org, role)
        elif current[org] != role:
            event = self.clerk.update_membership(user, org, role)
        else:
            event = self.clerk.remove_membership(user, org)
        self.sent(event, "pair", user, org)

    def clerk_org_change(self, which: int, deleted: bool) -> None:
        if not self.orgs:
            return
        org = self.orgs[which % len(self.orgs)]
        if deleted:
            self.orgs.remove(org)
            self.sent(self.clerk.delete_org(org), "org_deleted", org)
        else:
            event = self.clerk.update_org(org, name=f"Org v{self.version + 1}", slug=f"org-v{self.version + 1}")
            self.sent(event, "org", org)

    def clerk_new_org(self) -> None:
        if len(self.orgs) < 3:
            self.orgs.append(self.clerk.create_org(f"New {self.version}")["data"]["id"])  # no webhook we act on

    def clerk_user_deleted(self, user: str) -> None:
        if user not in self.deleted_users:
            event = self.clerk.delete_user(user)
            self.deleted_users.add(user)
            self.sent(event, "user", user)

    def clerk_role_change(self, change: str, role: str, which: int) -> None:
        """A role or permission changes in Clerk: every holder's permissions change at once, and the
        event names no holder (role.updated names the role, role.deleted and permission.* an id only)."""
        grants = self.roles_now()
        custom = self.custom_permissions_now()
        picked = custom[which % len(custom)] if custom else None
        if role not in grants:  # deleted: created again (the membership rule can then hand it out)
            if change == "role_delete":
                SEEN["a role created again"] += 1
                self.sent(self.clerk.create_role(role, role.split(":")[1].title(), custom[:2]), "role", role)
        elif change == "grant" and picked is not None:  # the role gains or loses a custom permission
            now = [p for p in grants[role] if p != picked] if picked in grants[role] else [*grants[role], picked]
            self.sent(self.clerk.update_role(role, permissions=now), "role", role)
        elif change == "permission_delete" and picked is not None:  # every role loses it
            SEEN["a permission deleted"] += 1
            self.sent(self.clerk.delete_permission(picked), "any_role")
        elif change == "permission_create" and len(custom) < MAX_CUSTOM_PERMISSIONS:  # in no role yet
            self.sent(self.clerk.create_permission(f"org:feature{self.version}:use"), "no_role")
        elif change == "permission_rename" and picked is not None:  # a new key, in every role that has it
            new_key = f"{picked.rsplit('_v', 1)[0]}_v{self.version}"
            self.sent(self.clerk.update_permission(picked, new_key=new_key), "any_role")
        elif change == "role_delete" and role in CUSTOM_ROLES:  # its holders are moved off first (Clerk's rule)
            for (user, org), state in self.pairs_now().items():
                if state is not None and state[0] == role:
                    self.sent(self.clerk.update_membership(user, org, "org:member"), "pair", user, org)
            SEEN["a role deleted"] += 1
            self.sent(self.clerk.delete_role(role), "any_role")

    # -- the intake -------------------------------------------------------------------------------

    @precondition(lambda self: self.outbox or self.delivered)
    @rule(pick=st.integers(0, 1_000), again=st.booleans(), anonymous=st.booleans())
    def deliver(self, pick: int, again: bool, anonymous: bool) -> None:
        """Svix delivers any sent event (reordered), or one delivered before (a duplicate)."""
        if (again and self.delivered) or not self.outbox:
            event, svix_id, version, scope = self.delivered[pick % len(self.delivered)]
        else:
            event, svix_id, version, scope = self.outbox.pop(pick % len(self.outbox))
            if anonymous and event["type"] == "organizationMembership.deleted":
                event = {**event, "data": {k: v for k, v in event["data"].items() if k != "public_user_data"}}
            self.delivered.append((event, svix_id, version, scope))
        targets = targets_for(event)
        assert targets is not None
        existed = {u for u in USERS if self.r.exists(contract.user_orgs_key(u))}
        self.io.run(record_program(targets, svix_id))
        for user in existed:  # values moved aside by an org event keep their provenance for the patch
            if self.r.exists(contract.stash_key(user)) and user in self.provenance:
                self.stash_provenance[user] = self.provenance[user]
        # then, as `webhook.intake.WebhookIntake.record_event`: publish to every registered near-cache, and
        # answer 2xx only once each has acknowledged or its lease has run out
        program = near_invalidate_program(targets, block_s=1.0, registry=self.intake_near.registry)
        wait = IntakeWait((version, scope), program)
        if self.intake_near.start(wait, self.processes, self.inbox):
            self.acked.append((self.step, version, scope))
        else:
            self.waits.append(wait)

    @precondition(lambda self: bool(self.waits))
    @rule(pick=st.integers(0, 10), runs_out=st.sampled_from([False, False, True]))
    def intake_waits(self, pick: int, runs_out: bool) -> None:
        """A delivery waiting on the near-caches takes the acknowledgements pushed so far, or its wait runs out
        (each unacknowledged id's lease, by the intake's clock); once it is over, it answers 2xx."""
        wait = self.waits[pick % len(self.waits)]
        if runs_out:
            if self.intake_near.wait_out(wait, self.processes):
                SEEN["an intake waited out a lease"] += 1
            done = True
        else:
            done = self.intake_near.advance(wait, self.processes, self.inbox)
        if done:
            self.waits.remove(wait)
            self.acked.append((self.step, *wait.event))

    # -- app processes' near-caches (tests/model_near.py) ------------------------------------------

    @rule(
        step=st.sampled_from(["control"] * 3 + ["receive"] * 4 + ["lapse", "listing_expires"]),
        pick=st.integers(0, 10),
        within_grace=st.booleans(),
    )
    def a_process_steps(self, step: str, pick: int, within_grace: bool) -> None:
        """An app process's control plane takes one step (one rule, so the others keep their share of steps)."""
        process = self.processes[pick % NEAR_PROCESSES]
        if step == "control":  # register (subscribe, then register), or renew (extended once the count is handled)
            before = dict(process.near.stats.drops)
            process.control_step()
            for reason in process.near.stats.drops:
                if process.near.stats.drops[reason] != before.get(reason):
                    SEEN[f"a near tier dropped ({reason})"] += 1
            if process.near._pending is not None:
                SEEN["a renewal held back by the count"] += 1
        elif step == "receive":  # its listener reads one invalidation, however late: drops, then acknowledges
            ready = [
                (p, i) for p in self.processes for i in p.listening if self.inbox[i.id] or i is not p.near._incarnation
            ]
            if ready:
                receiver, incarnation = ready[pick % len(ready)]
                if receiver.receive(incarnation, self.inbox):
                    SEEN["an invalidation acknowledged"] += 1
        elif step == "lapse":  # as time passing would: its renewals are late (slow, paused), its lease runs out
            process.lapse()
        else:  # as time passing would: a registration's lease ends by Redis's clock; only one no process serves
            # under, since Redis's lease was renewed no earlier than the process's and is longer
            # (in the order the processes registered them: Redis orders equal lease ends by the ids, which are random)
            order = {near_id: (i, j) for i, p in enumerate(self.processes) for j, near_id in enumerate(p.ids)}
            listed = sorted(
                (
                    str(i)
                    for i in self.r.zrange(contract.NEAR_CACHES_KEY, 0, -1)
                    if not any(p.serving_as(str(i)) for p in self.processes)
                ),
                key=order.__getitem__,
            )
            if listed:
                expire_listing(self.r, listed[pick % len(listed)], within_grace)

    def overtaken(self) -> list[tuple[NearProcess, Any]]:
        """Processes with a lookup in flight and an invalidation on its way to their current subscription."""
        return [
            (p, p.near._incarnation)
            for p in {id(lookup.process): lookup.process for lookup in self.lookups if lookup.process}.values()
            if p.near._incarnation is not None and self.inbox[p.near._incarnation.id]
        ]

    @precondition(lambda self: bool(self.overtaken()))
    @rule(pick=st.integers(0, 10))
    def near_receives_during_a_lookup(self, pick: int) -> None:
        """The same step as a listener's read, offered whenever it can overtake a lookup's read in flight
        (the race the epoch exists for), so that the run reaches it often."""
        process, incarnation = self.overtaken()[pick % len(self.overtaken())]
        if process.receive(incarnation, self.inbox):
            SEEN["an invalidation acknowledged"] += 1

    def replies_pending(self) -> list[NearProcess]:
        """Processes with a lookup whose Redis read or fill has run and whose reply is not handled yet."""
        return [lookup.process for lookup in self.lookups if lookup.process is not None and lookup.executed]

    @precondition(lambda self: bool(self.outbox) and bool(self.replies_pending()))
    @rule(pick=st.integers(0, 1_000), answers=st.booleans())
    def an_event_overtakes_a_reply(self, pick: int, answers: bool) -> None:
        """The intake's delivery and the process's handling of its invalidation, both between a read's execution
        and its reply (the race the epoch exists for), then, if ``answers``, the intake taking the acknowledgements
        (its 2xx); the same steps as `deliver`, a listener's read and `intake_waits`, offered together whenever
        the race is open, so that the run reaches it often. The event is one about a user whose read is
        overtaken, or about an org or a role, if there is one (the others cannot make the kept value stale)."""
        overtaken = self.replies_pending()
        users = {lookup.user for lookup in self.lookups if lookup.process is not None and lookup.executed}
        about = [i for i, sent in enumerate(self.outbox) if sent[3][0] not in ("pair", "user") or sent[3][1] in users]
        self.deliver(about[pick % len(about)] if about else pick, again=False, anonymous=False)
        for process in self.processes:  # each current listener takes it (and acknowledges): the 2xx can follow
            incarnation = process.near._incarnation
            if incarnation is not None and incarnation in process.listening and self.inbox[incarnation.id]:
                process.receive(incarnation, self.inbox)
                if process in overtaken:
                    SEEN["an invalidation overtook a reply"] += 1
        for wait in list(self.waits) if answers else []:
            if self.intake_near.advance(wait, self.processes, self.inbox):
                self.waits.remove(wait)
                self.acked.append((self.step, *wait.event))

    def renewing_behind_a_message(self) -> list[NearProcess]:
        """Processes serving while an invalidation is on its way to their current subscription and a delivery
        waits: a renewal now returns a count their listener has not reached."""
        if not self.waits:
            return []
        return [
            p
            for p in self.processes
            if p.near.serving and p.near._incarnation is not None and self.inbox[p.near._incarnation.id]
        ]

    @precondition(lambda self: bool(self.renewing_behind_a_message()))
    @rule(pick=st.integers(0, 10), runs_out=st.booleans())
    def a_renewal_overtakes_an_invalidation(self, pick: int, runs_out: bool) -> None:
        """A process renews after a publish to it, before its listener has the message (the race the count check
        exists for), then, if ``runs_out``, a waiting delivery's wait runs out; the same steps as a control step
        and `intake_waits`, offered together whenever the race is open, so that the run reaches it often."""
        candidates = self.renewing_behind_a_message()
        process = candidates[pick % len(candidates)]
        process.control_step()
        if process.near._pending is not None:
            SEEN["a renewal held back by the count"] += 1
        if runs_out:
            self.intake_waits(pick, runs_out=True)

    # -- lookups, a step at a time ------------------------------------------------------------------

    @precondition(lambda self: len(self.lookups) < 3)
    @rule(user=st.sampled_from(USERS), where=st.sampled_from([None, *range(NEAR_PROCESSES)]))
    def lookup_starts(self, user: str, where: int | None) -> None:
        """A lookup in the worker-less path (``where`` None) or in an app process: first its near-cache, as
        `cache.MembershipCache.get_memberships` does (a local hit answers at once), then the library's lookup."""
        if where is None:
            program = self.read_path.memberships_program(user)
            self.lookups.append(Lookup(user, self.step, program, next(program)))  # nothing is sent yet
            return
        process = self.processes[where]
        hit = process.near.get(user)
        if hit is not None:
            SEEN["a local hit"] += 1
            problems = self.agrees(user, hit, self.step)
            assert not problems, f"a local hit returned state older than an acknowledged event: {problems}"
            return
        program = process.read_path.memberships_program(user)
        self.lookups.append(Lookup(user, self.step, program, next(program), process=process))

    @precondition(lambda self: bool(self.lookups) or bool(self.jobs))
    @rule(pick=st.integers(0, 10), steps=st.integers(1, 6))
    def an_actor_steps(self, pick: int, steps: int) -> None:
        """One lookup or drain job in flight does its next ``steps`` steps, each one atomic and each
        followed by the invariants (so a whole lookup can happen between two steps of another actor)."""
        actors: list[Lookup | Job] = [*self.lookups, *self.jobs]
        actor = actors[pick % len(actors)]
        for n in range(steps):
            if n:
                self.what_redis_holds_is_fresh()
            if isinstance(actor, Job):
                if actor not in self.jobs:
                    return
                self.job_step(actor)
            else:
                if actor not in self.lookups:
                    return
                self.lookup_step(actor)

    def lookup_step(self, lookup: Lookup) -> None:
        """Carry out the effect the lookup waits on (one atomic step) and hand it the result."""
        user, effect = lookup.user, lookup.effect
        send: Any = None
        if isinstance(effect, HttpGet):  # the lookup's Clerk read (one page: every membership of the user)
            assert effect.url.startswith(MODEL_CLERK)
            if not lookup.read_started:  # the Clerk read starts: it sees Clerk as it is now
                lookup.read_started, lookup.read_time_ms = True, self.server_ms()
                lookup.read = None if user in self.deleted_users else self.clerk.memberships_of(user)
                return
            send = clerk_answer(lookup.read)  # ... and returns
        elif lookup.executed:  # a near lookup's read or fill ran in Redis at an earlier step: its reply arrives
            send, lookup.executed = lookup.reply, False
        else:
            send = self.io.do(effect)
            if isinstance(effect, RedisGet) and send is not None:
                SEEN["a lookup hit"] += 1
            if isinstance(effect, RunScript) and effect.name == "acquire" and decode_acquired(send)[0] is Acquired.WAIT:
                SEEN["a lookup waited"] += 1
            if isinstance(effect, RunScript) and effect.name == "fill":
                SEEN["a lookup stored" if send else "a lookup's fill refused"] += 1
                if send:
                    self.provenance[user] = lookup.read_time_ms
            if lookup.process is not None and isinstance(effect, RunScript) and effect.name in ("near_get", "fill"):
                lookup.reply, lookup.executed = send, True  # the reply is handled (kept or not) at a later step
                return
        near = lookup.process.near if lookup.process is not None else None
        kept, refused = (near.stats.kept, near.stats.refused) if near is not None else (0, 0)
        try:
            lookup.effect = lookup.program.send(send)
            lookup.read_started = False
            while isinstance(lookup.effect, Sleep):  # a waiter's pause takes no step
                lookup.effect = lookup.program.send(None)
            return
        except StopIteration as stop:
            result = stop.value
        finally:
            if near is not None and near.stats.kept > kept:
                SEEN["a local fill kept"] += 1
            if near is not None and near.stats.refused > refused:
                SEEN["a local fill refused"] += 1  # by either guard of `NearCache.keep`:
                SEEN[
                    "a local fill refused (epoch moved)" if near.serving else "a local fill refused (lease lapsed)"
                ] += 1
        self.lookups.remove(lookup)
        problems = self.agrees(user, result, lookup.started_at)
        assert not problems, f"a lookup returned state older than an acknowledged event: {problems}"

    # -- drain jobs, a step at a time -----------------------------------------------------------

    @precondition(lambda self: len(self.jobs) < 2 and bool(self.delivered))
    @rule()
    def job_starts(self) -> None:
        job = Job(new_token())
        self.store.start_drain(job.drain_id)
        self.jobs.append(job)

    def dead_jobs_lease_lapses(self) -> None:
        """As time passing would: the dead job's heartbeat stopped, its 2 s lease runs out."""
        for drain_id in self.dead_drains:
            self.r.delete(contract.drain_lease_key(drain_id))
        self.dead_drains.clear()

    def job_step(self, job: Job) -> None:
        p = self.store
        if job.stage == "take":
            patches = p.org_patches()
            if patches:
                job.patch = patches[0]
                job.users = p.patch_members(job.patch[1], 100)
                if not job.users:
                    p.finish_org_patch(*job.patch)
                    return
                job.stage = "patch_lease"
                return
            job.users = p.take_pending(100, job.drain_id)
            if not job.users:
                p.end_drain(job.drain_id)
                self.jobs.remove(job)
                return
            job.stage = "lease"
        elif job.stage == "lease":
            job.tokens = {u: new_token() for u in job.users}
            states = p.acquire_many(list(job.tokens.items()), LEASE_MS, take_over=True)
            job.leased = [u for u, (state, _) in zip(job.tokens, states, strict=True) if state is Acquired.LEASE]
            job.stage = "clerk_start"
        elif job.stage == "clerk_start":
            job.read_time_ms = self.server_ms()
            job.reads = {u: None if u in self.deleted_users else self.clerk.memberships_of(u) for u in job.leased}
            job.stage = "clerk_return"
        elif job.stage == "clerk_return":
            job.stage = "fill"
        elif job.stage == "fill":
            fills = [
                fill_for(u, job.tokens[u], [membership_from_clerk(m) for m in job.reads[u]])
                for u in job.leased
                if job.reads[u] is not None
            ]
            for user in job.leased:
                if job.reads[user] is None:
                    p.release(user, job.tokens[user])
            for fill, stored in zip(fills, p.fill_many(fills, TTL_S), strict=True):
                SEEN["a drain fill stored" if stored else "a drain fill refused"] += 1
                if stored:
                    self.provenance[fill.user_id] = job.read_time_ms
            p.done(job.drain_id, refreshed=job.users)
            job.stage = "take"
        elif job.stage == "patch_lease":
            assert job.patch is not None
            job.tokens = {u: new_token() for u in job.users}
            acquired = p.acquire_patch_many(list(job.tokens.items()), LEASE_MS)
            job.stashes = {u: stash for u, (_, stash) in zip(job.tokens, acquired, strict=True)}
            job.leased = [u for u, (state, _) in zip(job.tokens, acquired, strict=True) if state is Acquired.LEASE]
            job.stage = "patch_org_read"
        elif job.stage == "patch_org_read":
            assert job.patch is not None
            kind, org = job.patch
            if kind == "r":  # one read of Clerk's role list, as it is now, if any leased holder has a stash
                has_stash = any(job.stashes[u] is not None for u in job.leased)
                with self.clerk.lock:
                    job.org_read = self.clerk.roles.list_roles() if has_stash else None
            else:
                try:
                    job.org_read = None if kind == "x" else self.clerk.org(org)
                except StandInError:
                    job.org_read = None  # deleted since: dropped, as organization.deleted will
            job.stage = "patch_fill"
        elif job.stage == "patch_fill":
            assert job.patch is not None
            if job.patch[0] == "r":
                self.role_patch_fill(job)
            else:
                self.patch_fill(job)
            job.stage = "take"

    def patch_fill(self, job: Job) -> None:
        """What `Refresher.patch_org` does once the org is read: patch, fill, settle."""
        assert job.patch is not None
        org = job.patch[1]
        actions = dict.fromkeys(job.users, PatchAction.DONE)
        fills: list[Fill] = []
        for user in job.leased:
            stash = job.stashes[user]
            if stash is None:
                continue
            try:
                if stash.org_id != org:
                    raise CorruptValue("stashed for another org")
                patched = with_org_details(decode_memberships(stash.value), org, job.org_read)
            except CorruptValue:
                actions[user] = PatchAction.REFRESH
                continue
            f = fill_for(user, job.tokens[user], patched)
            fills.append(replace(f, expire_at_ms=stash.expire_at_ms))
        for fill, stored in zip(fills, self.store.fill_many(fills, TTL_S), strict=True):
            actions[fill.user_id] = PatchAction.DONE if stored else PatchAction.RETRY
            SEEN["a patch stored" if stored else "a patch refused"] += 1
            if stored and fill.user_id in self.stash_provenance:
                self.provenance[fill.user_id] = self.stash_provenance[fill.user_id]
        filled = {f.user_id for f in fills}
        for user in job.leased:
            if user not in filled:
                self.store.release(user, job.tokens[user])
        self.store.finish_patch(org, [PatchOutcome(u, job.stashes[u], actions[u]) for u in job.users])

    def role_patch_fill(self, job: Job) -> None:
        """What `Refresher.patch_roles` does once the role list is read: patch, fill, settle."""
        roles = dict(role_permissions_from_clerk(role) for role in job.org_read or [])
        actions = dict.fromkeys(job.users, PatchAction.DONE)
        fills: list[Fill] = []
        for user in job.leased:
            stash = job.stashes[user]
            if stash is None:
                continue
            try:
                if stash.org_id != ROLE_PATCH_TAG:
                    raise CorruptValue("stashed for an org patch")
                patched = with_role_permissions(decode_memberships(stash.value), roles)
            except CorruptValue:
                actions[user] = PatchAction.REFRESH
                SEEN["a role patch refreshed in full"] += 1
                continue
            f = fill_for(user, job.tokens[user], patched)
            fills.append(replace(f, expire_at_ms=stash.expire_at_ms))
        for fill, stored in zip(fills, self.store.fill_many(fills, TTL_S), strict=True):
            actions[fill.user_id] = PatchAction.DONE if stored else PatchAction.RETRY
            SEEN["a role patch stored" if stored else "a role patch refused"] += 1
            if stored and fill.user_id in self.stash_provenance:
                self.provenance[fill.user_id] = self.stash_provenance[fill.user_id]
        filled = {f.user_id for f in fills}
        for user in job.leased:
            if user not in filled:
                self.store.release(user, job.tokens[user])
        self.store.finish_patch(ROLE_PATCH_TAG, [PatchOutcome(u, job.stashes[u], actions[u]) for u in job.users])

    # -- faults -----------------------------------------------------------------------------------

    @rule(
        fault=st.sampled_from(["lease_expires"] * 3 + ["job_dies"] * 3 + ["dead_lease_lapses"] * 2 + ["restart"]),
        user=st.sampled_from(USERS),
        pick=st.integers(0, 10),
    )
    def a_fault(self, fault: str, user: str, pick: int) -> None:
        if fault == "lease_expires":  # as time passing would: a holder that is slow or dead loses its lease
            self.r.delete(contract.lease_key(user))
        elif fault == "job_dies" and self.jobs:  # its worker is killed between two steps
            self.dead_drains.append(self.jobs.pop(pick % len(self.jobs)).drain_id)
        elif fault == "dead_lease_lapses":
            self.dead_jobs_lease_lapses()
        elif fault == "restart":  # no persistence: every key and every loaded script is gone
            self.r.flushall()
            self.r.script_flush()
            self.provenance.clear()
            self.stash_provenance.clear()

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def what_redis_holds_is_fresh(self) -> None:
        """Values agree with every acknowledged event and expire within the TTL of their Clerk read;
        only the documented keys live without an expiry. One round trip: a script lists it all."""
        self.step += 1
        keys, ttls, values, expiries = self.r.eval(SNAPSHOT, 0, *[contract.user_orgs_key(u) for u in USERS])
        for key, ttl in zip(keys, ttls, strict=True):
            assert ttl != -1 or key.startswith(NOT_EXPIRING), f"{key} lives forever"
        for user, raw, expire_at in zip(USERS, values, expiries, strict=True):
            if not raw:
                continue
            problems = self.agrees(user, decode_memberships(raw), self.step)
            assert not problems, f"Redis holds a value older than an acknowledged event: {problems}"
            read_at = self.provenance.get(user)
            assert read_at is not None, f"a value for {user} that no fill stored"
            assert expire_at <= read_at + TTL_S * 1000, f"{user}'s value outlives its Clerk read by more than the TTL"
        for process in self.processes:  # what a local hit would answer now (the invariant covers every tier)
            process.note_lease_age()
            for user in USERS:
                hit = process.near.get(user)
                if hit is not None:
                    problems = self.agrees(user, hit, self.step)
                    assert not problems, f"a near-cache serves state older than an acknowledged event: {problems}"

    def teardown(self) -> None:
        """Every event delivered and a drain run to the end: every value equals Clerk."""
        if not hasattr(self, "store"):
            return
        for process in self.processes:
            process.close()
        self.processes.clear()
        while self.outbox:
            self.deliver(0, again=False, anonymous=False)
        for job in self.jobs:
            self.dead_drains.append(job.drain_id)
        self.jobs.clear()
        self.dead_jobs_lease_lapses()
        for user in USERS:
            self.r.delete(contract.lease_key(user))  # lookups in flight are abandoned
        job = Job(new_token())
        self.store.start_drain(job.drain_id)
        self.jobs.append(job)
        for _ in range(500):
            if not self.jobs:
                break
            self.job_step(job)
        assert not self.jobs, "the final drain did not finish"
        truth = self.pairs_now()
        for user in USERS:
            raw = self.r.get(contract.user_orgs_key(user))
            if raw is None:
                continue
            got = {
                (user, m.organization_id): (m.role, m.organization_name, m.organization_slug, m.permissions)
                for m in decode_memberships(raw)
            }
            want = {pair: state for pair, state in truth.items() if pair[0] == user}
            assert got == want, f"after the drain {user} is cached as {got}, Clerk says {want}"


def test_the_freshness_protocol_holds_in_every_interleaving_hypothesis_finds(redis: Redis) -> None:
    FreshnessModel.redis = Redis(connection_pool=redis.connection_pool)
    SEEN.clear()
    LEASE_AGE[0] = 0.0
    profile = settings.get_profile(PROFILE)
    if os.environ.get("MODEL_EXAMPLES"):
        profile = settings(profile, max_examples=int(os.environ["MODEL_EXAMPLES"]))
    run_state_machine_as_test(FreshnessModel, settings=profile)
    print(f"model check: {profile.max_examples} examples, {dict(SEEN)}")
    lease_s = NEAR_LEASE_MS / 1000 - near_margin_s(NEAR_LEASE_MS)  # when a process's own clock ends it
    print(f"model check: the oldest near-cache lease served on was {LEASE_AGE[0]:.3f} s old (it ends at {lease_s} s)")
    floor = max(1, profile.max_examples // 100)
    rare = [step for step in MUST_SEE if SEEN[step] < floor]
    assert not rare, f"fewer than {floor} times the run reached {rare} (saw {dict(SEEN)}): it proved little about them"


PROFILE = os.environ.get("MODEL_PROFILE", "ci")
# The long profile runs for hours; the others must finish well inside CI's budget.
pytestmark = pytest.mark.timeout(0 if PROFILE == "long" else 600)
